"""This process's CPU use, resident memory and thread count, read from /proc (Linux, proc(5)).

``/proc/<pid>/stat`` fields 14-15 are utime/stime in clock ticks (``SC_CLK_TCK``); field 20 is the
thread count. ``/proc/<pid>/status`` ``VmRSS:`` is in kB. CPU % is the CPU time used between two
samples over the wall time between them (100 % = one core busy).
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from pathlib import Path


def status_kb(path: str | Path, keys: tuple[str, ...]) -> dict[str, int]:
    """The ``keys`` fields (in kB, e.g. ``VmRSS``, ``VmHWM``) a ``/proc/<pid>/status`` file has."""
    out = {}
    with open(path, encoding="ascii", errors="replace") as f:
        for line in f:
            key, _, rest = line.partition(":")
            if key in keys:
                out[key] = int(rest.split()[0])
    return out


@dataclass(frozen=True)
class ProcessSample:
    cpu_seconds: float     # user + system CPU time since the process started
    rss_bytes: int
    threads: int
    cpu_percent: float     # since the previous sample; nan for the first


class ProcessReader:
    def __init__(self, proc: str | Path = "/proc", pid: int | str = "self", clock_ticks: int | None = None):
        self.dir = Path(proc) / str(pid)
        self.ticks = clock_ticks or os.sysconf("SC_CLK_TCK")
        self._last: tuple[float, float] | None = None   # (monotonic, cpu seconds)

    def read(self, now: float | None = None) -> ProcessSample:
        now = time.monotonic() if now is None else now
        stat = (self.dir / "stat").read_text()
        # the command name (field 2) is in parentheses and may hold spaces: split after the last ')'
        fields = stat[stat.rindex(")") + 2:].split()
        utime, stime, threads = int(fields[11]), int(fields[12]), int(fields[17])
        cpu = (utime + stime) / self.ticks
        rss = status_kb(self.dir / "status", ("VmRSS",)).get("VmRSS", 0) * 1024
        percent = float("nan")
        if self._last is not None and now > self._last[0]:
            percent = 100.0 * (cpu - self._last[1]) / (now - self._last[0])
        self._last = (now, cpu)
        return ProcessSample(cpu, rss, threads, percent)

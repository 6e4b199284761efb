"""Cold start to first detection, and the daemon's memory, measured on the real ``edge run`` process.

A fresh Python process runs ``edge run`` on the source; the clock starts just before the process
is spawned (so interpreter start, imports, model load and the first frame all count) and stops
when the first detection event appears in its JSONL file. Its memory is read from
``/proc/<pid>/status`` while it runs: VmRSS (resident now) and VmHWM (peak resident).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from edge.bench.statistics import proc_status_mb
from edge.errors import ConfigError


@dataclass(frozen=True)
class ColdStart:
    first_detection_s: float    # spawn → first JSONL event on disk
    first_detection_frame: int  # its frame index: the frames before it were processed too
    frames: int
    rss_mb: float               # the largest VmRSS seen while it ran
    peak_rss_mb: float          # VmHWM, the kernel's own peak

    def as_dict(self) -> dict:
        return asdict(self)


def measure_cold_start(model_args: list[str], source: str = "sample", frames: int = 100,
                       timeout: float = 120.0, poll: float = 0.002) -> ColdStart:
    """Spawn ``edge run`` (as fast as possible, ``frames`` frames) and time its first detection."""
    if frames < 1:
        raise ConfigError(f"cold-start frames = {frames} is not positive")
    with tempfile.TemporaryDirectory(prefix="edge-coldstart-") as tmp:
        events = Path(tmp) / "events.jsonl"
        cmd = [sys.executable, "-m", "edge.cli", "run", *model_args, "--source", source, "--as-fast-as-possible",
               "--jsonl", str(events), "--live", "off", "--max-frames", str(frames)]
        env = dict(os.environ, PYTHONUNBUFFERED="1")
        stderr = Path(tmp) / "stderr.txt"     # a file, not a pipe nobody reads while polling: it cannot fill up
        started = time.monotonic()
        with stderr.open("wb") as err_file:
            proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err_file, env=env, cwd=tmp)
        first = None
        rss = peak = 0.0
        try:
            while proc.poll() is None:
                if first is None and events.exists() and events.stat().st_size > 0:
                    first = time.monotonic() - started
                try:
                    status = proc_status_mb(proc.pid)
                except OSError:   # exited between poll() and the read
                    break
                rss = max(rss, status.get("VmRSS", 0.0))
                peak = max(peak, status.get("VmHWM", 0.0))
                if time.monotonic() - started > timeout:
                    raise ConfigError(f"edge run did not finish {frames} frames within {timeout:.0f} s")
                time.sleep(poll)
            proc.wait(timeout=timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if proc.returncode != 0:
            last = stderr.read_text(errors="replace").strip().splitlines()[-1:] or ["(no output)"]
            raise ConfigError(f"edge run exited with status {proc.returncode} during the cold-start "
                              f"measurement: {last[0]}")
        if first is None:
            if events.exists() and events.stat().st_size > 0:
                first = time.monotonic() - started
            else:
                raise ConfigError(f"no detection in the first {frames} frames of {source!r}",
                                  "cold start is measured to the first detection: use a source with objects")
        first_line = events.read_text(encoding="utf-8").splitlines()[0]
        return ColdStart(first, int(json.loads(first_line)["frame"]), frames, rss, peak)

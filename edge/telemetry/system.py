"""The system monitor: samples power, energy, temperatures, throttling and this process on a timer.

A background thread reads every source every ``interval`` seconds and keeps only the latest
:class:`SystemSample` (bounded memory). A source that cannot be read is reported as unavailable
with its reason — logged once, exported as ``*_available 0`` — and never as a zero reading.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from edge.telemetry import vcgencmd
from edge.telemetry.power import EnergyCounter, PowerReader, Runner, Unavailable, joules_per_inference, make_power
from edge.telemetry.process import ProcessReader, ProcessSample
from edge.telemetry.stats import PipelineStats
from edge.telemetry.thermal import Temperature, ThrottleState, read_temperatures, read_throttle

log = logging.getLogger(__name__)

SOURCES = ("power", "thermal", "throttle", "process")


@dataclass(frozen=True)
class SystemSample:
    time: float = 0.0                            # monotonic seconds of the sample
    watts: float = math.nan
    power_source: str = ""
    rails: dict[str, float] = field(default_factory=dict)
    joules: float = 0.0                          # integrated since start
    joules_per_inference: float = math.nan       # over the last ``jpi_window`` seconds
    watts_avg: float = math.nan                  # Δjoules / Δt over the same window (readings are noisy)
    temperatures: tuple[Temperature, ...] = ()
    throttle: ThrottleState | None = None
    process: ProcessSample | None = None
    unavailable: dict[str, str] = field(default_factory=dict)   # source -> reason

    @property
    def max_celsius(self) -> float:
        return max((t.celsius for t in self.temperatures), default=math.nan)

    def as_dict(self) -> dict:
        """JSON-ready, for /stats, MQTT and JSONL stats lines."""
        out: dict = {"unavailable": dict(self.unavailable)}
        if "power" not in self.unavailable:
            out["power"] = {"watts": round(self.watts, 3), "source": self.power_source,
                            "watts_avg": round(self.watts if math.isnan(self.watts_avg) else self.watts_avg, 3),
                            "joules_total": round(self.joules, 3),
                            "joules_per_inference": None if math.isnan(self.joules_per_inference)
                            else round(self.joules_per_inference, 5)}
        if self.temperatures:
            out["temperatures"] = {t.sensor: round(t.celsius, 1) for t in self.temperatures}
        if self.throttle is not None:
            out["throttle"] = {"now": sorted(self.throttle.throttled.now),
                               "since_boot": sorted(self.throttle.throttled.since_boot),
                               "raw": hex(self.throttle.throttled.raw), "arm_hz": self.throttle.arm_hz}
        if self.process is not None:
            p = self.process
            out["process"] = {"cpu_percent": None if math.isnan(p.cpu_percent) else round(p.cpu_percent, 1),
                              "rss_bytes": p.rss_bytes, "threads": p.threads}
        return out


class SystemMonitor:
    """Reads the system sources; :meth:`sample` once, or :meth:`start` a thread that samples."""

    def __init__(self, stats: PipelineStats, *, interval: float = 2.0, power: str = "auto",
                 sys_root: str | Path = "/sys", proc_root: str | Path = "/proc", runner: Runner = vcgencmd.run,
                 hwmon_chip: str = "", scale: float = 1.0, offset: float = 0.0, static_watts: float = 0.0,
                 jpi_window: float = 10.0):
        self.stats = stats
        self.interval = interval
        self.runner = runner
        self.sys_root = Path(sys_root)
        self.process = ProcessReader(proc_root)
        self.energy = EnergyCounter()
        self.jpi_window = jpi_window
        self._history: deque[tuple[float, float, int]] = deque(maxlen=1024)   # (t, joules, inferred)
        self._reported: set[str] = set()
        self._lock = threading.Lock()
        self._latest = SystemSample()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.power: PowerReader | None = None
        self._power_reason = ""
        if power == "none":
            self._power_reason = "power.source is none"
        else:
            try:
                self.power = make_power(power, runner=runner, hwmon_root=self.sys_root / "class/hwmon",
                                        hwmon_chip=hwmon_chip, scale=scale, offset=offset,
                                        static_watts=static_watts)
            except Unavailable as exc:
                self._power_reason = str(exc)
        if self.power is not None:
            log.info("power from %s", self.power.name)

    def _unavailable(self, reasons: dict[str, str], source: str, reason: str) -> None:
        reasons[source] = reason
        if source not in self._reported:
            self._reported.add(source)
            log.info("%s telemetry unavailable: %s", source, reason)

    def sample(self, now: float | None = None) -> SystemSample:
        now = time.monotonic() if now is None else now
        reasons: dict[str, str] = {}
        watts, source, rails = math.nan, "", {}
        if self.power is None:
            self._unavailable(reasons, "power", self._power_reason)
        else:
            try:
                reading = self.power.read()
                watts, source, rails = reading.watts, reading.source, reading.rails
                if reading.joules is not None:
                    self.energy.add_measured(reading.joules, watts, now)
                else:
                    self.energy.add(watts, now)
            except Unavailable as exc:
                self._unavailable(reasons, "power", str(exc))
        temps: tuple[Temperature, ...] = ()
        try:
            temps = tuple(read_temperatures(self.sys_root))
        except Unavailable as exc:
            self._unavailable(reasons, "thermal", str(exc))
        throttle = None
        try:
            throttle = read_throttle(self.runner)
        except Unavailable as exc:
            self._unavailable(reasons, "throttle", str(exc))
        process = None
        try:
            process = self.process.read(now)
        except (OSError, ValueError, IndexError) as exc:
            self._unavailable(reasons, "process", f"reading /proc: {exc}")
        inferred = self.stats.inferred      # an int read: no need for a whole snapshot (percentiles)
        jpi = avg = math.nan
        if "power" not in reasons:
            self._history.append((now, self.energy.joules, inferred))
            while len(self._history) > 2 and now - self._history[0][0] > self.jpi_window:
                self._history.popleft()
            t0, e0, n0 = self._history[0]
            jpi = joules_per_inference(e0, n0, self.energy.joules, inferred)
            avg = (self.energy.joules - e0) / (now - t0) if now > t0 else watts
        result = SystemSample(now, watts, source, rails, self.energy.joules, jpi, avg, temps, throttle, process,
                              reasons)
        with self._lock:
            self._latest = result
        return result

    def latest(self) -> SystemSample:
        with self._lock:
            return self._latest

    def _loop(self) -> None:
        while not self._stop.wait(self.interval):
            self.sample()

    def start(self) -> SystemMonitor:
        self.sample()
        self._thread = threading.Thread(target=self._loop, name="system-monitor", daemon=True)
        self._thread.start()
        return self

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5.0)
            self._thread = None

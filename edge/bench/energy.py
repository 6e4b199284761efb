"""Energy per inference and average watts while a benchmark runs, from :mod:`edge.telemetry.power`.

A :class:`PowerSampler` reads a power reader on a background thread every ``interval`` seconds
while a measurement runs and integrates the samples into joules (trapezoids, through
:class:`~edge.telemetry.power.EnergyCounter`); J/inference is those joules over the inferences of
the same interval. With a static figure (``--watts``, e.g. read off a USB meter) the energy is
simply watts × time and says nothing the figure did not: reports label its source.
"""

from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from edge.errors import ConfigError
from edge.telemetry.power import EnergyCounter, PowerReader, Unavailable, make_power

log = logging.getLogger(__name__)

SOURCES = ("none", "auto", "pmic", "hwmon", "static")


def make_reader(source: str, watts: float = 0.0, *, hwmon_root: str | Path = "/sys/class/hwmon",
                hwmon_chip: str = "", scale: float = 1.0, offset: float = 0.0) -> PowerReader | None:
    """The reader ``--power`` names (with the ``[power]`` settings); ``none`` → None.

    ``auto`` finding nothing is logged and gives None; an explicit source that cannot read is an error.
    """
    if source not in SOURCES:
        raise ConfigError(f"unknown power source {source!r}", f"valid: {', '.join(SOURCES)}")
    if source == "none":
        return None
    if watts < 0:
        raise ConfigError(f"--watts {watts!r} is negative")
    try:
        return make_power(source, hwmon_root=hwmon_root, hwmon_chip=hwmon_chip, scale=scale, offset=offset,
                          static_watts=watts)
    except Unavailable as exc:
        if source == "auto":
            log.warning("no power reading available (%s): energy is not reported", exc)
            return None
        raise ConfigError(f"power source {source!r} is unavailable: {exc}",
                          "give --watts W with --power static, or --power none") from None


@dataclass(frozen=True)
class Energy:
    source: str
    seconds: float
    joules: float
    samples: int

    @property
    def watts(self) -> float:
        return self.joules / self.seconds if self.seconds > 0 else float("nan")

    def per_inference(self, inferences: int) -> float:
        return self.joules / inferences if inferences > 0 else float("nan")

    def as_dict(self, inferences: int) -> dict:
        return {"source": self.source, "seconds": self.seconds, "samples": self.samples,
                "average_watts": self.watts, "joules": self.joules,
                "mj_per_inference": self.per_inference(inferences) * 1e3}


class PowerSampler:
    """``with PowerSampler(reader) as s: …`` then ``s.energy``: joules while the block ran."""

    def __init__(self, reader: PowerReader, interval: float = 0.1):
        self.reader = reader
        self.interval = interval
        self.energy: Energy | None = None
        self._counter = EnergyCounter()
        self._samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="power", daemon=True)
        self._started = 0.0
        self._error: Exception | None = None

    def _sample(self) -> None:
        reading = self.reader.read()
        self._counter.add(reading.watts, time.monotonic())
        self._samples += 1

    def _run(self) -> None:
        try:
            while not self._stop.wait(self.interval):
                self._sample()
        except Unavailable as exc:   # handed to the measuring thread at exit
            self._error = exc

    def __enter__(self) -> PowerSampler:
        self._started = time.monotonic()
        self._sample()
        self._thread.start()
        return self

    def __exit__(self, *exc_info) -> None:
        self._stop.set()
        self._thread.join()
        if self._error is not None:
            raise ConfigError(f"power source {self.reader.name} stopped reading: {self._error}")
        self._sample()
        self.energy = Energy(self.reader.name, time.monotonic() - self._started, self._counter.joules,
                             self._samples)

"""Power readers (watts) and the energy counter (joules) that J/inference comes from.

Sources, each a small reader whose ``read()`` returns a :class:`PowerReading` or raises
:class:`Unavailable` with the reason:

- :class:`PmicPower` — Raspberry Pi 5 ``vcgencmd pmic_read_adc``: one ``<RAIL>_A current(N)=…A``
  and one ``<RAIL>_V volt(N)=…V`` line per rail (EXT5V_V and BATT_V are voltage only). Rails are
  paired by name, never by line order (firmware does not keep it, and an older one mislabels a
  rail); watts = Σ V×I over the pairs, then a per-unit linear calibration ``scale·W + offset``
  against a USB-C meter (one published fit: 1.145·W + 0.59 W). Caveat: the PMIC measures the
  SoC-side rails only — every 5 V load (USB devices including a USB Coral, HATs, M.2 including an
  M.2 Coral) is not counted.
- :class:`HwmonPower` — Linux hwmon (Documentation/hwmon/sysfs-interface, ina2xx.rst):
  ``power1_input`` in µW, or ``curr1_input`` (mA) × ``in1_input`` (bus mV) when the chip has no
  power channel; ``energy1_input`` (µJ, e.g. INA228/INA238), when present, is the chip's own energy
  counter and is used for joules instead of integrating samples. INA219/INA226/INA260 (ina2xx driver) are found by name; any other chip is named
  by its ``name`` file or given as a path.
- :class:`StaticPower` — a fixed figure from the configuration (e.g. a USB meter reading).

:class:`EnergyCounter` integrates watts over time (trapezoids) into joules; J/inference is
Δjoules / Δinferences over the same interval.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Protocol

from edge.runtime.edgetpu import _read as sysfs_text   # stripped contents, "" when unreadable
from edge.telemetry import vcgencmd

INA_CHIPS = ("ina219", "ina226", "ina260", "ina230", "ina231", "ina209", "ina238")
_PMIC_LINE = re.compile(r"^\s*(\S+)_([AV])\s+(current|volt)\(\d+\)=([-+0-9.eE]+)[AV]\s*$")

Runner = Callable[..., str]   # runner("pmic_read_adc") -> vcgencmd's output


class Unavailable(Exception):
    """A telemetry source cannot be read here; the message is the reason."""


@dataclass(frozen=True)
class PowerReading:
    watts: float
    source: str                                     # "pmic", "hwmon:<chip>", "static"
    rails: dict[str, float] = field(default_factory=dict)   # per-rail watts where known
    joules: float | None = None         # the sensor's own cumulative energy counter, when it has one


class PowerReader(Protocol):
    name: str

    def read(self) -> PowerReading: ...


def parse_pmic(text: str) -> dict[str, tuple[float, float]]:
    """``pmic_read_adc`` output → {rail: (volts, amps)} for rails that have both, paired by name."""
    amps: dict[str, float] = {}
    volts: dict[str, float] = {}
    for line in text.splitlines():
        match = _PMIC_LINE.match(line)
        if not match:
            continue
        rail, suffix, kind, value = match.groups()
        if (suffix, kind) == ("A", "current"):
            amps[rail] = float(value)
        elif (suffix, kind) == ("V", "volt"):
            volts[rail] = float(value)
    return {rail: (volts[rail], amps[rail]) for rail in amps if rail in volts}


class PmicPower:
    """Raspberry Pi 5 PMIC rails through vcgencmd, with ``scale·W + offset`` calibration."""

    name = "pmic"

    def __init__(self, runner: Runner = vcgencmd.run, scale: float = 1.0, offset: float = 0.0):
        self.runner = runner
        self.scale = scale
        self.offset = offset

    def read(self) -> PowerReading:
        try:
            text = self.runner("pmic_read_adc")
        except vcgencmd.VcgencmdError as exc:
            raise Unavailable(f"vcgencmd pmic_read_adc: {exc}") from None
        pairs = parse_pmic(text)
        if not pairs:
            first = text.strip().splitlines()[:1]
            raise Unavailable("vcgencmd pmic_read_adc printed no rail pairs "
                              f"({first[0] if first else 'nothing'!r}; a Raspberry Pi 5 is needed)")
        rails = {rail: v * a for rail, (v, a) in pairs.items()}
        return PowerReading(self.scale * sum(rails.values()) + self.offset, self.name, rails)


def _read_int(path: Path) -> int:
    return int(path.read_text().strip())


def find_hwmon(root: str | Path = "/sys/class/hwmon", chip: str = "") -> Path:
    """The hwmon directory of ``chip`` (a ``name`` or a path); empty: the first INA2xx chip."""
    if chip and "/" in chip:
        path = Path(chip)
        if not path.is_dir():
            raise Unavailable(f"hwmon path {chip!r} does not exist")
        return path
    root = Path(root)
    if not root.is_dir():
        raise Unavailable(f"{root} does not exist (no hwmon support)")
    names = {}
    for entry in sorted(root.iterdir()):
        name = sysfs_text(entry / "name")
        if name:
            names[entry] = name
    wanted = (chip,) if chip else INA_CHIPS
    for entry, name in names.items():
        if name in wanted:
            return entry
    found = ", ".join(sorted(set(names.values()))) or "none"
    raise Unavailable(f"no hwmon chip named {' or '.join(wanted)} (chips present: {found})")


class HwmonPower:
    """A hwmon power monitor: power1_input (µW), else curr1_input (mA) × in1_input (mV)."""

    def __init__(self, root: str | Path = "/sys/class/hwmon", chip: str = ""):
        self.dir = find_hwmon(root, chip)
        self.chip = sysfs_text(self.dir / "name") or self.dir.name
        self.name = f"hwmon:{self.chip}"
        # which channels the chip has is fixed: decided once here, not at every read
        self._power = self.dir / "power1_input"
        if not self._power.exists():
            self._power = None
            if not ((self.dir / "curr1_input").exists() and (self.dir / "in1_input").exists()):
                raise Unavailable(f"hwmon chip {self.chip} ({self.dir}) has neither power1_input nor "
                                  "curr1_input and in1_input")
        energy = self.dir / "energy1_input"
        self._energy = energy if energy.exists() else None

    def read(self) -> PowerReading:
        try:
            if self._power is not None:
                watts = _read_int(self._power) / 1e6
            else:
                watts = _read_int(self.dir / "curr1_input") / 1e3 * _read_int(self.dir / "in1_input") / 1e3
            joules = _read_int(self._energy) / 1e6 if self._energy is not None else None
        except (OSError, ValueError) as exc:
            raise Unavailable(f"reading {self.dir}: {exc}") from None
        return PowerReading(watts, self.name, joules=joules)


class StaticPower:
    """A fixed figure from the configuration (watts measured once, e.g. with a USB meter)."""

    name = "static"

    def __init__(self, watts: float):
        self.watts = watts

    def read(self) -> PowerReading:
        return PowerReading(self.watts, self.name)


def make_power(source: str = "auto", *, runner: Runner = vcgencmd.run, hwmon_root: str | Path = "/sys/class/hwmon",
               hwmon_chip: str = "", scale: float = 1.0, offset: float = 0.0,
               static_watts: float = 0.0) -> PowerReader:
    """The reader ``source`` names (pmic | hwmon | static), or for ``auto`` the first that reads.

    Raises :class:`Unavailable` naming every source tried and why it failed.
    """
    def pmic() -> PowerReader:
        reader = PmicPower(runner, scale, offset)
        reader.read()       # probe once: a Pi 4 or a PC answers with no rails
        return reader

    def hwmon() -> PowerReader:
        reader = HwmonPower(hwmon_root, hwmon_chip)
        reader.read()
        return reader

    def static() -> PowerReader:
        if static_watts <= 0:
            raise Unavailable("power.static_watts is not set")
        return StaticPower(static_watts)

    makers = {"pmic": pmic, "hwmon": hwmon, "static": static}
    order = list(makers) if source == "auto" else [source]
    reasons = []
    for name in order:
        try:
            return makers[name]()
        except Unavailable as exc:
            reasons.append(f"{name}: {exc}")
    raise Unavailable("; ".join(reasons))


class EnergyCounter:
    """Joules integrated from watt samples (trapezoid rule between consecutive samples)."""

    def __init__(self) -> None:
        self.joules = 0.0
        self._last: tuple[float, float] | None = None    # (monotonic s, watts)
        self._sensor: float | None = None                # last sensor energy counter (J)

    def add(self, watts: float, now: float) -> float:
        if self._last is not None and now > self._last[0]:
            t0, w0 = self._last
            self.joules += (w0 + watts) / 2 * (now - t0)
        self._last = (now, watts)
        return self.joules

    def add_measured(self, sensor_joules: float, watts: float, now: float) -> float:
        """Advance by a sensor's own energy counter (its increase since the last call) instead of
        integrating; a counter that went backwards (reset, wrap) falls back to integration once."""
        previous = self._sensor
        self._sensor = sensor_joules
        if previous is None or sensor_joules < previous:
            return self.add(watts, now)
        self.joules += sensor_joules - previous
        self._last = (now, watts)
        return self.joules


def joules_per_inference(e0: float, n0: int, e1: float, n1: int) -> float:
    """Δenergy / Δinferences; nan when no inference happened in between."""
    return (e1 - e0) / (n1 - n0) if n1 > n0 else float("nan")

"""Temperatures (°C) and the Raspberry Pi throttle state / real ARM clock.

Sources (all millidegrees Celsius in sysfs):

- CPU thermal zones: ``/sys/class/thermal/thermal_zone*/{type,temp}`` (Linux thermal sysfs ABI).
- Coral PCIe: ``/sys/class/apex/apex_N/temp`` (gasket-driver apex_driver.c; trip points 85/90/95 °C).
  A USB Coral has no temperature sensor.
- hwmon: ``/sys/class/hwmon/hwmon*/temp*_input`` with ``name`` and optional ``temp*_label``
  (Documentation/hwmon/sysfs-interface).

Throttling comes from ``vcgencmd get_throttled`` and the clock from ``vcgencmd measure_clock arm``
(cpufreq's scaling_cur_freq shows the requested clock, not the firmware-throttled one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from edge.runtime.edgetpu import _read as sysfs_text   # stripped contents, "" when unreadable
from edge.telemetry import vcgencmd
from edge.telemetry.power import Runner, Unavailable


@dataclass(frozen=True)
class Temperature:
    sensor: str      # e.g. "cpu-thermal", "apex_0", "nvme/Composite"
    source: str      # "thermal_zone", "apex", "hwmon"
    celsius: float


def _milli(path: Path) -> float | None:
    try:
        return int(path.read_text().strip()) / 1000.0
    except (OSError, ValueError):
        return None     # a sensor that cannot be read right now (e.g. EIO from a sleeping device)


def thermal_zones(sys_root: str | Path = "/sys") -> list[Temperature]:
    out = []
    for zone in sorted(Path(sys_root, "class/thermal").glob("thermal_zone*")):
        value = _milli(zone / "temp")
        if value is None:
            continue
        out.append(Temperature(sysfs_text(zone / "type") or zone.name, "thermal_zone", value))
    return out


def apex(sys_root: str | Path = "/sys") -> list[Temperature]:
    out = []
    for dev in sorted(Path(sys_root, "class/apex").glob("apex_*")):
        value = _milli(dev / "temp")
        if value is not None:
            out.append(Temperature(dev.name, "apex", value))
    return out


def hwmon(sys_root: str | Path = "/sys") -> list[Temperature]:
    out = []
    for chip in sorted(Path(sys_root, "class/hwmon").glob("hwmon*")):
        name = sysfs_text(chip / "name") or chip.name
        for sensor in sorted(chip.glob("temp*_input")):
            value = _milli(sensor)
            if value is None:
                continue
            prefix = sensor.name[:-len("_input")]
            label = sysfs_text(chip / f"{prefix}_label") or prefix    # optional: most sensors have none
            out.append(Temperature(f"{name}/{label}", "hwmon", value))
    return out


def read_temperatures(sys_root: str | Path = "/sys") -> list[Temperature]:
    """Every readable temperature; :class:`Unavailable` when there is none at all."""
    temps = thermal_zones(sys_root) + apex(sys_root) + hwmon(sys_root)
    if not temps:
        raise Unavailable(f"no thermal zone, Coral apex or hwmon temperature under {sys_root}")
    return temps


@dataclass(frozen=True)
class ThrottleState:
    throttled: vcgencmd.Throttled
    arm_hz: int


def read_throttle(runner: Runner = vcgencmd.run) -> ThrottleState:
    """``get_throttled`` flags and ``measure_clock arm``; :class:`Unavailable` without vcgencmd."""
    try:
        return ThrottleState(vcgencmd.parse_throttled(runner("get_throttled")),
                             vcgencmd.parse_clock(runner("measure_clock", "arm")))
    except vcgencmd.VcgencmdError as exc:
        raise Unavailable(str(exc)) from None

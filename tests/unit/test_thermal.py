"""Temperature and throttle readers against a recorded sysfs tree and recorded vcgencmd output
(formats cited in tests/data/thermal/README.md and tests/data/vcgencmd; no Pi or Coral here)."""

import pytest

from edge.telemetry import thermal
from edge.telemetry.power import Unavailable


def test_every_source_read_in_celsius(data_dir):
    temps = {(t.source, t.sensor): t.celsius for t in thermal.read_temperatures(data_dir / "thermal/sys")}
    assert temps == {("thermal_zone", "cpu-thermal"): 54.6, ("apex", "apex_0"): 47.8,
                     ("hwmon", "nvme/Composite"): 38.85}


def test_hwmon_without_label_uses_the_channel(data_dir):
    temps = thermal.hwmon(data_dir / "power/sys")
    assert [(t.sensor, t.celsius) for t in temps] == [("cpu_thermal/temp1", 51.85)]


def test_no_sensor_is_unavailable_not_zero(tmp_path):
    with pytest.raises(Unavailable, match="no thermal zone, Coral apex or hwmon temperature"):
        thermal.read_temperatures(tmp_path)


def test_throttle_and_real_clock(data_dir):
    answers = {("get_throttled",): (data_dir / "vcgencmd/get_throttled_undervolt.txt").read_text(),
               ("measure_clock", "arm"): (data_dir / "vcgencmd/measure_clock_arm.txt").read_text()}
    state = thermal.read_throttle(lambda *args: answers[args])
    assert state.arm_hz == 1800404352
    assert state.throttled.now == {"under_voltage", "throttled"}


def test_throttle_unavailable_without_vcgencmd():
    with pytest.raises(Unavailable, match="unexpected get_throttled output"):
        thermal.read_throttle(lambda *args: "")

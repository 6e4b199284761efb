"""Power readers against recorded outputs (no Raspberry Pi 5, INA2xx or meter here).

The pmic_read_adc samples are in the format vcgencmd prints on a Pi 5 and the hwmon trees follow
Linux Documentation/hwmon (sources in tests/data/power/README.md). vcgencmd itself is replaced by
a fake runner that returns the recorded text, as the documented command would.
"""

import math

import pytest

from edge.telemetry import power, vcgencmd

PI5_WATTS = 2.472089240270319   # Σ V×I over the 12 rail pairs of pmic_read_adc_pi5.txt


def recorded(path):
    def runner(*args):
        assert args == ("pmic_read_adc",)
        return path.read_text()
    return runner


def test_pmic_pairs_rails_by_name(data_dir):
    pairs = power.parse_pmic((data_dir / "power/pmic_read_adc_pi5.txt").read_text())
    assert len(pairs) == 12
    assert "EXT5V" not in pairs and "BATT" not in pairs        # voltage-only rails
    assert pairs["VDD_CORE"] == (0.88, 1.501)
    reordered = power.parse_pmic((data_dir / "power/pmic_read_adc_reordered.txt").read_text())
    assert reordered == pairs


def test_pmic_watts_and_calibration(data_dir):
    reading = power.PmicPower(recorded(data_dir / "power/pmic_read_adc_pi5.txt")).read()
    assert reading.watts == pytest.approx(PI5_WATTS)
    assert reading.rails["VDD_CORE"] == pytest.approx(1.501 * 0.88)
    calibrated = power.PmicPower(recorded(data_dir / "power/pmic_read_adc_pi5.txt"), 1.145, 0.59).read()
    assert calibrated.watts == pytest.approx(1.145 * PI5_WATTS + 0.59)


def test_pmic_on_a_pi4_is_unavailable_with_the_reason(data_dir):
    with pytest.raises(power.Unavailable, match="no rail pairs.*Command not registered"):
        power.PmicPower(recorded(data_dir / "power/pmic_read_adc_pi4.txt")).read()

    def missing(*args):
        raise vcgencmd.VcgencmdError("vcgencmd not found")
    with pytest.raises(power.Unavailable, match="vcgencmd not found"):
        power.PmicPower(missing).read()


def test_hwmon_power_input_in_microwatts(data_dir):
    reader = power.HwmonPower(data_dir / "power/sys/class/hwmon")     # first INA2xx: the INA226
    assert reader.name == "hwmon:ina226"
    assert reader.read().watts == pytest.approx(4.215)


def test_hwmon_current_times_bus_voltage(data_dir):
    reader = power.HwmonPower(data_dir / "power/sys/class/hwmon", "ina219")
    assert reader.read().watts == pytest.approx(0.512 * 5.080)


def test_hwmon_chip_by_path(data_dir):
    reader = power.HwmonPower(chip=str(data_dir / "power/sys/class/hwmon/hwmon2"))
    assert reader.read().watts == pytest.approx(0.512 * 5.080)


def test_hwmon_chip_without_power_channels(data_dir):
    with pytest.raises(power.Unavailable, match="pwmfan.*neither power1_input"):
        power.HwmonPower(data_dir / "power/sys/class/hwmon", "pwmfan")
    with pytest.raises(power.Unavailable, match=r"no hwmon chip named ina3221 \(chips present: cpu_thermal, "
                                                 r"ina219, ina226, ina238, pwmfan\)"):
        power.HwmonPower(data_dir / "power/sys/class/hwmon", "ina3221")


def test_make_power_auto_falls_through_with_reasons(data_dir, tmp_path):
    pi4 = recorded(data_dir / "power/pmic_read_adc_pi4.txt")
    reader = power.make_power("auto", runner=pi4, hwmon_root=data_dir / "power/sys/class/hwmon")
    assert reader.name == "hwmon:ina226"
    assert power.make_power("auto", runner=pi4, hwmon_root=tmp_path, static_watts=6.5).read().watts == 6.5
    with pytest.raises(power.Unavailable) as err:
        power.make_power("auto", runner=pi4, hwmon_root=tmp_path / "none")
    assert str(err.value).startswith("pmic: ") and "hwmon: " in str(err.value)
    assert "static: power.static_watts is not set" in str(err.value)
    pi5 = recorded(data_dir / "power/pmic_read_adc_pi5.txt")
    assert power.make_power("auto", runner=pi5).name == "pmic"


def test_energy_counter_integrates_and_gives_joules_per_inference():
    energy = power.EnergyCounter()
    assert energy.add(2.0, 10.0) == 0.0
    assert energy.add(4.0, 12.0) == pytest.approx(6.0)     # trapezoid: (2+4)/2 × 2 s
    assert energy.add(4.0, 13.0) == pytest.approx(10.0)
    assert power.joules_per_inference(0.0, 0, 10.0, 40) == pytest.approx(0.25)
    assert math.isnan(power.joules_per_inference(5.0, 7, 9.0, 7))


def test_hwmon_energy_counter_is_used_for_joules(data_dir, tmp_path):
    import shutil

    from edge.telemetry.stats import PipelineStats
    from edge.telemetry.system import SystemMonitor

    root = tmp_path / "sys"
    shutil.copytree(data_dir / "power/sys", root)
    reading = power.HwmonPower(root / "class/hwmon", "ina238").read()
    assert (reading.watts, reading.joules) == (5.12, 183.5)
    monitor = SystemMonitor(PipelineStats(), sys_root=root, power="hwmon", hwmon_chip="ina238",
                            runner=lambda *a: "")
    monitor.sample(now=0.0)
    # 10 s later the chip counted 40 J (4 W on average) while the instantaneous reading still says 5.12 W
    (root / "class/hwmon/hwmon4/energy1_input").write_text("223500000\n")
    sample = monitor.sample(now=10.0)
    assert sample.joules == pytest.approx(40.0) and sample.watts_avg == pytest.approx(4.0)
    # a counter reset falls back to integrating the readings for that interval
    (root / "class/hwmon/hwmon4/energy1_input").write_text("1000\n")
    assert monitor.sample(now=12.0).joules == pytest.approx(40.0 + 5.12 * 2)

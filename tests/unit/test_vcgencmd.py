"""vcgencmd parsers against recorded output (formats from the Raspberry Pi documentation of
`vcgencmd get_throttled` and `measure_clock`; no Raspberry Pi here)."""

import pytest

from edge.telemetry import vcgencmd


def test_throttled_flags_now_and_since_boot(data_dir):
    t = vcgencmd.parse_throttled((data_dir / "vcgencmd/get_throttled_undervolt.txt").read_text())
    assert t.raw == 0x50005
    assert t.now == {"under_voltage", "throttled"}
    assert t.since_boot == {"under_voltage", "throttled"}


def test_not_throttled(data_dir):
    t = vcgencmd.parse_throttled((data_dir / "vcgencmd/get_throttled_ok.txt").read_text())
    assert t.now == frozenset() and t.since_boot == frozenset()


def test_clock(data_dir):
    assert vcgencmd.parse_clock((data_dir / "vcgencmd/measure_clock_arm.txt").read_text()) == 1800404352


@pytest.mark.parametrize("text", ["", "error=2 error_msg=\"Command not registered\""])
def test_unexpected_output(text):
    with pytest.raises(vcgencmd.VcgencmdError, match="unexpected"):
        vcgencmd.parse_throttled(text)


def test_missing_vcgencmd(monkeypatch):
    monkeypatch.setattr(vcgencmd.shutil, "which", lambda name: None)
    with pytest.raises(vcgencmd.VcgencmdError, match="vcgencmd not found"):
        vcgencmd.run("get_throttled")

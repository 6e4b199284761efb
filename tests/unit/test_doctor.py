"""`edge doctor` against recorded machines (tests/data/doctor/<machine>/: the files of /proc, /sys,
/dev, /etc, /usr/lib and dpkg's status that the checks read, recorded from Raspberry Pi set-ups;
device nodes are empty files). Facts that are not files — Python version, installed
distributions, the runtime, the page size, `vcgencmd get_throttled` output (tests/data/vcgencmd/) —
are given to the checks the same way the real machine gives them.
"""

from __future__ import annotations

import io

import pytest

from edge.doctor import Env, report, run_checks
from edge.doctor.checks import check_numpy_abi, check_python, check_runtime, check_throttling
from edge.errors import RuntimeChainError
from edge.telemetry.vcgencmd import VcgencmdError
from tests.helpers import run_edge


def _env(data_dir, machine, **kw):
    defaults = dict(root=data_dir / "doctor" / machine, python=(3, 11),
                    dists={"numpy": "2.2.6", "ai-edge-litert": "1.4.0"},
                    runtime=lambda: ("ai-edge-litert", "1.4.0"), page_size=4096,
                    throttled=lambda: (data_dir / "vcgencmd/get_throttled_ok.txt").read_text())
    defaults.update(kw)
    return Env(**defaults)


def _by_check(findings):
    out = {}
    for f in findings:
        out.setdefault(f.check, []).append(f)
    return out


def _status(findings, check):
    return [f.status for f in _by_check(findings)[check]]


def test_a_set_up_pi4_with_a_usb3_coral_passes(data_dir):
    findings = run_checks(_env(data_dir, "pi4-usb3-ok"))
    out = io.StringIO()
    assert report(findings, out) == 0
    text = out.getvalue()
    assert "[FAIL]" not in text and "[WARN]" not in text, text
    assert "libedgetpu1-std 16.0tf2.17.1-1.bookworm" in text and "built against TF 2.17" in text
    assert "Coral 2-2 at 5000 Mbit/s (USB 3)" in text
    assert "user edge-detect is in plugdev, video" in text
    assert "/dev/video0 (HD Pro Webcam C920)" in text and "video10" not in text   # a codec, not a camera
    assert "/etc/edge-detect/edge.toml is valid" in text and "edge-detect.service installed, enabled" in text
    assert "nothing blocks running" in text


def test_a_pi5_with_an_unset_pcie_coral_and_16k_pages_is_blocked(data_dir):
    findings = run_checks(_env(data_dir, "pi5-pcie-16k", page_size=16384, user="pi"))
    out = io.StringIO()
    assert report(findings, out) == 1
    text = out.getvalue()
    by = _by_check(findings)
    assert [f.status for f in by["libedgetpu"]] == ["fail"] and "libedgetpu1-std" in by["libedgetpu"][0].remedy
    pcie, page = by["pcie"][0], by["page size"][0]
    assert pcie.status == "fail" and "0000:01:00.0" in pcie.detail and "gasket" in pcie.remedy
    assert page.status == "fail" and "16K" in page.detail and "kernel=kernel8.img" in page.remedy
    assert any(f.status == "warn" and "group apex" in f.detail for f in by["groups"])   # user pi
    assert "CSI sensor 10-001a" in by["camera"][0].detail                               # pispbe is no camera
    assert "3 problem(s) block running" in text
    assert _status(findings, "service") == ["info"]


def test_usb2_link_missing_rules_and_firmware_state(data_dir):
    findings = run_checks(_env(data_dir, "pi4-usb2-norules", user="pi"))
    by = _by_check(findings)
    assert _status(findings, "udev") == ["fail"] and "60-edge-detect.rules" in by["udev"][0].remedy
    usb = {f.detail.split()[1]: f for f in by["usb"]}
    assert usb["1-1.2"].status == "warn" and "480 Mbit/s" in usb["1-1.2"].detail and "USB 3" in usb["1-1.2"].remedy
    assert usb["1-1.3"].status == "info" and "firmware not loaded" in usb["1-1.3"].detail
    assert any("group plugdev" in f.detail for f in by["groups"])
    assert _status(findings, "libedgetpu") == ["ok"] and "TF version is unknown" in by["libedgetpu"][0].detail
    assert _status(findings, "service") == ["warn"] and "systemctl enable" in by["service"][0].remedy
    assert _status(findings, "config") == ["fail"] and "source.widht" in by["config"][0].detail


def test_numpy_2_with_tflite_runtime_is_the_known_crash():
    crash = check_numpy_abi(Env(dists={"numpy": "2.1.3", "tflite-runtime": "2.14.0"}))[0]
    assert crash.status == "fail" and "numpy<2" in crash.remedy
    assert check_numpy_abi(Env(dists={"numpy": "1.26.4", "tflite-runtime": "2.14.0"}))[0].status == "ok"
    with_litert = check_numpy_abi(Env(dists={"numpy": "2.1.3", "tflite-runtime": "2.14.0", "ai-edge-litert": "1.4"}))
    assert with_litert[0].status == "warn"


def test_libedgetpu_built_for_another_tf_than_the_runtime(data_dir):
    env = _env(data_dir, "pi4-usb3-ok", dists={"numpy": "1.26.4", "tflite-runtime": "2.14.0"})
    finding = _by_check(run_checks(env))["libedgetpu"][0]
    assert finding.status == "warn" and "TF 2.17" in finding.detail and "2.14.0" in finding.detail


def test_python_and_runtime_checks():
    assert check_python(Env(python=(3, 9)))[0].status == "warn"
    assert check_python(Env(python=(3, 8)))[0].status == "fail"

    def none():
        raise RuntimeChainError("no TFLite runtime could be loaded (ai-edge-litert: not installed)", "pip install x")

    missing = check_runtime(Env(runtime=none))[0]
    assert missing.status == "fail" and missing.remedy == "pip install x"


@pytest.mark.parametrize("recorded, status, words", [
    ("get_throttled_ok.txt", "ok", "no under-voltage"),
    ("get_throttled_undervolt.txt", "warn", "now: throttled, under_voltage"),
])
def test_throttling_from_recorded_vcgencmd(data_dir, recorded, status, words):
    text = (data_dir / "vcgencmd" / recorded).read_text()
    finding = check_throttling(Env(throttled=lambda: text))[0]
    assert finding.status == status and words in finding.detail


def test_throttling_without_vcgencmd_is_not_a_failure():
    def missing():
        raise VcgencmdError("vcgencmd not found", "raspi-utils")
    assert check_throttling(Env(throttled=missing))[0].status == "info"


def test_edge_doctor_cli_on_a_recorded_root(data_dir):
    """The CLI reads files from --root; Python, runtime and page size are this machine's."""
    blocked = run_edge("doctor", "--root", str(data_dir / "doctor" / "pi5-pcie-16k"))
    assert blocked.returncode == 1, blocked.stderr
    assert "[FAIL] pcie: PCIe Edge TPU at 0000:01:00.0" in blocked.stdout and "→ install the gasket" in blocked.stdout
    fine = run_edge("doctor", "--root", str(data_dir / "doctor" / "pi4-usb3-ok"))
    assert fine.returncode == 0, fine.stdout
    assert "nothing blocks running" in fine.stdout


def test_edge_doctor_refuses_a_missing_root(tmp_path):
    done = run_edge("doctor", "--root", str(tmp_path / "nope"))
    assert done.returncode == 2 and "nope" in done.stderr and "not a directory" in done.stderr

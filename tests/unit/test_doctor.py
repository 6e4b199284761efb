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
    """Compared with the runtime edge run uses (not whichever TF distribution is installed)."""
    env = _env(data_dir, "pi4-usb3-ok", dists={"numpy": "1.26.4", "tflite-runtime": "2.14.0", "ai-edge-litert": "2.3.0"},
               runtime=lambda: ("tflite-runtime", "2.14.0"))
    finding = _by_check(run_checks(env))["libedgetpu"][0]
    assert finding.status == "warn" and "TF 2.17" in finding.detail and "tflite-runtime 2.14.0" in finding.detail
    same = _by_check(run_checks(_env(data_dir, "pi4-usb3-ok", runtime=lambda: ("tflite-runtime", "2.17.1"))))
    assert same["libedgetpu"][0].status == "ok" and "as tflite-runtime 2.17.1 that edge run uses" in same["libedgetpu"][0].detail
    litert = _by_check(run_checks(_env(data_dir, "pi4-usb3-ok", dists={"numpy": "2.2.6", "tflite-runtime": "2.14.0",
                                                                       "ai-edge-litert": "2.3.0"},
                                       runtime=lambda: ("ai-edge-litert", "2.3.0"))))["libedgetpu"][0]
    assert litert.status == "info" and "ai-edge-litert 2.3.0" in litert.detail and "tflite-runtime" in litert.remedy


def test_python_and_runtime_checks():
    assert check_python(Env(python=(3, 11)))[0].status == "ok"
    too_old = check_python(Env(python=(3, 10)))[0]       # tomllib is 3.11+
    assert too_old.status == "fail" and "tomllib" in too_old.detail

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


# the service user's access, XNNPACK, the Pi 5 PCIe set-up, numpy shadowing ---------------------

def _copy(data_dir, machine, tmp_path):
    import shutil
    root = tmp_path / machine
    shutil.copytree(data_dir / "doctor" / machine, root, symlinks=True)
    return root


def test_a_config_the_service_user_cannot_read_blocks_running(data_dir, tmp_path):
    """As installed before: /etc/edge-detect/edge.toml 0640 and not in the service's group. Root
    (who runs doctor) can read it; the service cannot, and that is what counts."""
    root = _copy(data_dir, "pi4-usb3-ok", tmp_path)
    config = root / "etc/edge-detect/edge.toml"
    config.chmod(0o640)        # owned by whoever runs the tests, group not edge-detect's 993
    by = _by_check(run_checks(_env(data_dir, "pi4-usb3-ok", root=root)))
    denied = [f for f in by["config"] if f.status == "fail"]
    assert denied and "runs as edge-detect, which cannot read /etc/edge-detect/edge.toml" in denied[0].detail
    assert "chown root:edge-detect" in denied[0].remedy
    config.chmod(0o644)
    ok = _by_check(run_checks(_env(data_dir, "pi4-usb3-ok", root=root)))["config"]
    assert [f.status for f in ok] == ["ok"] and "edge-detect can read it" in ok[0].detail


def test_doctor_user_checks_that_users_access_to_the_model_files(data_dir, tmp_path):
    root = _copy(data_dir, "pi4-usb3-ok", tmp_path)
    models = root / "opt/edge-detect/models/current"
    models.mkdir(parents=True)
    (models / "person_int8.tflite").write_bytes(b"")
    (models / "person_int8.tflite").chmod(0o600)
    config = root / "etc/edge-detect/edge.toml"
    config.write_text(config.read_text().replace('path = ""', 'path = "/opt/edge-detect/models/current/person_int8.tflite"'))
    found = run_checks(_env(data_dir, "pi4-usb3-ok", root=root, user="pi"))
    model = _by_check(found)["model files"]
    assert model[0].status == "fail" and "pi cannot read /opt/edge-detect/models/current/person_int8.tflite" in model[0].detail
    (models / "person_int8.tflite").chmod(0o644)
    models.chmod(0o700)                         # a directory on the way that pi cannot enter
    model = _by_check(run_checks(_env(data_dir, "pi4-usb3-ok", root=root, user="pi")))["model files"]
    assert model[0].status == "fail" and "cannot be entered by pi" in model[0].detail
    models.chmod(0o755)
    model = _by_check(run_checks(_env(data_dir, "pi4-usb3-ok", root=root, user="pi")))["model files"]
    assert [f.status for f in model] == ["ok"]


def test_edge_doctor_user_flag_on_the_cli(data_dir, tmp_path):
    root = _copy(data_dir, "pi4-usb3-ok", tmp_path)
    (root / "etc/edge-detect/edge.toml").chmod(0o600)
    done = run_edge("doctor", "--root", str(root), "--user", "edge-detect")
    assert done.returncode == 1 and "edge-detect, which cannot read /etc/edge-detect/edge.toml" in done.stdout, done.stdout


def test_a_unit_with_proc_subset_pid_is_caught(data_dir):
    """The unit as first shipped (recorded in pi4-usb2-norules) hid /proc/cpuinfo from XNNPACK."""
    found = _by_check(run_checks(_env(data_dir, "pi4-usb2-norules", user="pi")))["xnnpack"]
    assert found[0].status == "fail" and "ProcSubset=pid" in found[0].detail
    assert "not measured" in found[1].detail


def test_xnnpack_measured_on_this_machine():
    from edge.runtime.xnnpack import XnnpackShare
    real = _by_check(run_checks(Env(dists={"numpy": "2.2.6"}, runtime=lambda: ("ai-edge-litert", "2"),
                                    throttled=lambda: "throttled=0x0")))["xnnpack"]
    assert [f.status for f in real] == ["ok"] and "XNNPACK applied to ssdlite_mobilenet_v2_person_int8.tflite" in real[0].detail
    off = _by_check(run_checks(Env(dists={"numpy": "2.2.6"}, runtime=lambda: ("ai-edge-litert", "2"),
                                   throttled=lambda: "throttled=0x0",
                                   xnnpack=lambda: ("m.tflite", XnnpackShare(0, 0, 118)))))["xnnpack"]
    assert off[-1].status == "fail" and "XNNPACK was not applied to m.tflite" in off[-1].detail


def test_pi5_page_size_and_pcie_overlays_read_under_root(data_dir, tmp_path):
    """With --root the page size is what the card's config.txt boots, not this machine's."""
    root = _copy(data_dir, "pi5-pcie-4k", tmp_path)
    by = _by_check(run_checks(_env(data_dir, "pi5-pcie-4k", root=root, page_size=None, user="pi")))
    assert _status(run_checks(_env(data_dir, "pi5-pcie-4k", root=root, page_size=None)), "page size") == ["ok"]
    assert "4K pages (/boot/firmware/config.txt)" in by["page size"][0].detail
    assert [f.status for f in by["pcie"]] == ["ok"]
    txt = root / "boot/firmware/config.txt"
    txt.write_text(txt.read_text().replace("kernel=kernel8.img", "#kernel=kernel8.img")
                   .replace("dtoverlay=pineboards-hat-ai", "dtoverlay=pcie-32bit-dma") + "[pi4]\nkernel=kernel8.img\n")
    by = _by_check(run_checks(_env(data_dir, "pi5-pcie-4k", root=root, page_size=None)))
    assert by["page size"][0].status == "fail" and "16K-page kernel (/boot/firmware/config.txt)" in by["page size"][0].detail
    pcie = {f.status: f for f in by["pcie"]}
    assert "dtoverlay=pineboards-hat-ai" in pcie["warn"].detail and "MSI" in pcie["warn"].detail
    assert "pcie-32bit-dma" in pcie["info"].detail and "I2S" in pcie["info"].detail
    txt.unlink()
    none = _by_check(run_checks(_env(data_dir, "pi5-pcie-4k", root=root, page_size=None)))["page size"][0]
    assert none.status == "info" and "no config.txt" in none.detail


def test_edge_doctor_cli_reads_the_page_size_under_root(data_dir):
    """The CLI on a recorded Pi 5 card with the 4K kernel: no page-size failure from this machine."""
    done = run_edge("doctor", "--root", str(data_dir / "doctor" / "pi5-pcie-4k"))
    assert "[ OK ] page size: 4K pages (/boot/firmware/config.txt)" in done.stdout, done.stdout


def test_numpy_from_the_venv_shadowing_apts_that_picamera2_needs(tmp_path):
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: python3-numpy\nStatus: install ok installed\nVersion: 1:1.24.2-1+deb12u1\n\n"
                      "Package: python3-picamera2\nStatus: install ok installed\nVersion: 0.3.25-1\n\n"
                      "Package: python3-simplejpeg\nStatus: install ok installed\nVersion: 1.6.6-1\n")
    shadowed = check_numpy_abi(Env(root=tmp_path, dists={"numpy": "2.2.6", "ai-edge-litert": "2.3.0"}))[0]
    assert shadowed.status == "fail" and "shadows apt's numpy 1.24.2" in shadowed.detail
    assert "python3-picamera2" in shadowed.detail and "numpy<2" in shadowed.remedy
    assert check_numpy_abi(Env(root=tmp_path, dists={"numpy": "1.26.4"}))[0].status == "ok"   # the pinned venv
    status.write_text(status.read_text().replace("Package: python3-picamera2", "Package: python3-unrelated")
                      .replace("Package: python3-simplejpeg", "Package: python3-other"))
    assert check_numpy_abi(Env(root=tmp_path, dists={"numpy": "2.2.6"}))[0].status == "ok"    # nothing needs apt's

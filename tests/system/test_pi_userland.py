"""Raspberry Pi OS's userland (arm64 bookworm and trixie) under qemu-user-static, as a new user meets it.

Each suite runs in a cached debootstrapped rootfs (``tests/system/arm64.py``), with a Pi 4 and a
Pi 5 /proc/cpuinfo and the matching ``QEMU_CPU``. The working tree is copied in (not PyPI), then:

- the README's quickstart (``python3 -m venv .venv && .venv/bin/pip install . && .venv/bin/edge``)
  with ``--only-binary=:all:`` (every dependency a wheel: no source builds on a Pi), and ``edge``
  finds the person at frame 30 of the sample clip with the default model, on each CPU;
- ``edge info`` and ``edge doctor``; ``edge run --source picamera2`` without picamera2: one line;
- the README's picamera2 route (a ``--system-site-packages`` venv over apt's numpy, with a
  picamera2 stand-in compiled against apt's numpy, see arm64.py): ``edge run --source picamera2``
  detects the person with boxes in main-stream pixels. On bookworm that needs ``'numpy<2'``; without
  it the import breaks ("numpy.dtype size changed") and edge says so in one line, exit 2;
- on bookworm, tflite-runtime 2.14 (cp311 wheel) works as the fall-back with numpy < 2, and under
  numpy 2 is reported unusable by ``edge info`` and refused in one line by ``--runtime``.

Emulation runs the model at about 1-2 fps: enough for correctness, never for speed; runs stop at
frame 31. Not root: skipped. Root: nothing is skipped, a missing tool fails with what to install.
Timings are written to ``/var/cache/edge-detect-tests/pi-userland/timings.json`` and printed.
"""

from __future__ import annotations

import json
import os
import re
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from tests.system import arm64

pytestmark = [pytest.mark.slow, pytest.mark.timeout(3600)]

CHECKOUT = Path(__file__).resolve().parents[2]
PROJECT = "/home/pi/edge-detect"
SCENE = "/home/pi/scene.npy"
# Frame 30 of the sample clip (640x272): the README's JSONL example.
PERSON_AT_30 = np.array([174.9, 3.2, 387.7, 268.8])
# apt's numpy must stay the venv's numpy where apt's C extensions are built against numpy 1.x.
PIN = {"bookworm": " 'numpy<2'", "trixie": ""}
PYTHON = {"bookworm": "3.11", "trixie": "3.13"}
RUN = "--max-frames 31 --as-fast-as-possible --live off"
TIMINGS: dict[str, float | str] = {}
ROOTFS: dict[str, tuple[Path, float]] = {}


def _record(key: str, value) -> None:
    TIMINGS[key] = round(value, 1) if isinstance(value, float) else value


@pytest.fixture(scope="module", autouse=True)
def report_timings(request):
    try:
        figures = request.getfixturevalue("figures")     # the system tests' summary, when it is there
    except pytest.FixtureLookupError:
        figures = {}
    yield
    if not TIMINGS:
        return
    text = json.dumps(TIMINGS, indent=1)
    print(f"\nPi userland timings and results:\n{text}")
    figures.update({f"pi_userland.{k}": v for k, v in TIMINGS.items()})
    try:
        arm64.CACHE.mkdir(parents=True, exist_ok=True)
        (arm64.CACHE / "timings.json").write_text(text + "\n")
    except OSError as exc:
        print(f"(not written to {arm64.CACHE}: {exc})")


SUITES = pytest.mark.parametrize("userland", ["bookworm", "trixie"], indirect=True)
BOOKWORM = pytest.mark.parametrize("userland", ["bookworm"], indirect=True)
TRIXIE = pytest.mark.parametrize("userland", ["trixie"], indirect=True)


@pytest.fixture(scope="module")
def userland(request, tmp_path_factory):
    suite = request.param
    if os.geteuid() != 0:
        pytest.skip("needs root: debootstrap, chroot, mounts and binfmt_misc (CI runs as root)")
    try:
        arm64.require_tools()
        arm64.register_binfmt()
        if not ROOTFS:              # both suites at once: their first builds overlap
            ROOTFS.update(arm64.ensure_rootfses(tuple(PYTHON)))
    except arm64.Missing as exc:
        pytest.fail(str(exc), pytrace=False)
    rootfs, built = ROOTFS[suite]
    _record(f"{suite}.rootfs_build_s", built)
    capture = cv2.VideoCapture(str(CHECKOUT / "models/footage/bikes.mp4"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, frame = capture.read()
    capture.release()
    assert ok, "cannot read frame 30 of models/footage/bikes.mp4"
    with arm64.Userland(suite, rootfs, tmp_path_factory.mktemp(f"pi-{suite}")) as land:
        land.copy_in(CHECKOUT, PROJECT)
        buf = __import__("io").BytesIO()
        np.save(buf, frame)
        land.write(SCENE, buf.getvalue())
        assert PYTHON[suite] in land.ok("python3 --version").stdout
        yield land


def _venv(land: arm64.Userland, name: str, *, system_site: bool = False, extra: str = "") -> arm64.Result:
    """``python3 -m venv [--system-site-packages] NAME && NAME/bin/pip install --only-binary=:all: . EXTRA``."""
    site = " --system-site-packages" if system_site else ""
    result = land.ok(f"python3 -m venv{site} {name} && {name}/bin/pip install --only-binary=:all: .{extra}",
                     cwd=PROJECT, timeout=1800)
    built = set(re.findall(r"Building wheel for (\S+)", result.stdout))
    assert built <= {"edge-detect"}, f"source builds besides the project: {built}\n{result}"
    return result


def _events(land: arm64.Userland, path: str) -> dict[int, dict]:
    events = [json.loads(line) for line in land.read(f"{PROJECT}/{path}").splitlines() if line.strip()]
    return {e["frame"]: e for e in events if "frame" in e}


def _person(event: dict | None) -> dict | None:
    people = [d for d in (event or {}).get("detections", []) if d["label"] == "person" and d["score"] >= 0.5]
    return max(people, key=lambda d: d["score"]) if people else None


def _one_line_error(result: arm64.Result) -> str:
    """The error line of a run that must fail with exit 2 and no traceback."""
    errors = [line for line in result.stderr.splitlines() if line.startswith("edge: error: ")]
    assert result.returncode == 2 and len(errors) == 1 and "Traceback" not in result.stderr, str(result)
    return errors[0]


@pytest.fixture(scope="module")
def quickstart(userland):
    """The README quickstart's venv (numpy from PyPI, no system site packages)."""
    suite = userland.suite
    started = time.monotonic()
    _venv(userland, ".venv")
    _record(f"{suite}.quickstart_pip_install_s", time.monotonic() - started)
    return userland


@SUITES
@pytest.mark.parametrize("cpu", [arm64.PI4, arm64.PI5], ids=["pi4", "pi5"])
def test_quickstart_edge_detects_the_person_at_frame_30(quickstart, cpu):
    land = quickstart
    land.use_cpu(cpu)
    jsonl = f"detections-{cpu.name}.jsonl"
    result = land.ok(f".venv/bin/edge {RUN} --jsonl {jsonl}", cwd=PROJECT, timeout=900)
    assert "Traceback" not in result.stderr
    events = _events(land, jsonl)
    person = _person(events.get(30))
    _record(f"{land.suite}.{cpu.name}.quickstart_run_s", result.seconds)
    _record(f"{land.suite}.{cpu.name}.frame30_person", json.dumps(person))
    assert person is not None, f"no person at frame 30 on {land.suite}/{cpu.name}: {events.get(30)}\n{result}"
    assert np.abs(np.array(person["box"]) - PERSON_AT_30).max() < 15, person


@SUITES
def test_info_and_doctor(quickstart):
    land = quickstart
    land.use_cpu(arm64.PI5)
    info = land.ok(".venv/bin/edge info", cwd=PROJECT, timeout=600)
    assert re.search(r"^  \* ai-edge-litert \S+: loaded \(this one is used", info.stdout, re.M), info.stdout
    assert "input convention" in info.stdout and "Traceback" not in info.stderr
    doctor = land.sh(".venv/bin/edge doctor", cwd=PROJECT, timeout=600)
    assert doctor.returncode in (0, 1) and "Traceback" not in doctor.stderr, str(doctor)
    assert "ai-edge-litert" in doctor.stdout and "numpy" in doctor.stdout, doctor.stdout
    _record(f"{land.suite}.edge_info_s", info.seconds)
    _record(f"{land.suite}.edge_doctor_s", doctor.seconds)


@SUITES
def test_picamera2_missing_is_one_line(quickstart):
    land = quickstart
    result = land.sh(".venv/bin/edge run --source picamera2 --max-frames 1 --live off --jsonl ''", cwd=PROJECT)
    assert "sudo apt install python3-picamera2" in _one_line_error(result)


@TRIXIE
def test_tflite_runtime_has_no_wheel_for_python_3_13(quickstart):
    result = quickstart.sh(".venv/bin/pip install --only-binary=:all: tflite-runtime", cwd=PROJECT, timeout=600)
    assert result.returncode != 0 and "No matching distribution found for tflite-runtime" in result.stderr, str(result)


@TRIXIE
def test_trixie_apt_numpy_is_2_so_the_picamera2_route_needs_no_pin(userland):
    numpy = userland.ok("python3 -c 'import numpy; print(numpy.__version__)'").stdout.strip()
    _record("trixie.apt_numpy", numpy)
    assert numpy.startswith("2."), numpy


@BOOKWORM
def test_tflite_runtime_under_numpy_2_is_unusable_and_says_so(quickstart):
    """tflite-runtime 2.14 imports under numpy 2 with only a warning and then fails: refused up front."""
    land = quickstart
    land.use_cpu(arm64.PI5)
    land.ok(".venv/bin/pip install --only-binary=:all: tflite-runtime", cwd=PROJECT, timeout=900)
    numpy = land.ok(".venv/bin/python -c 'import numpy; print(numpy.__version__)'", cwd=PROJECT).stdout.strip()
    assert numpy.startswith("2."), numpy
    info = land.sh(".venv/bin/edge info --runtime tflite-runtime", cwd=PROJECT, timeout=600)
    if info.returncode != 0:      # the listing first; then the model part, which loads that runtime, fails
        assert "numpy<2" in _one_line_error(info)
    assert re.search(rf"^  ! tflite-runtime 2\.14\S*: built against numpy 1\.x, unusable with numpy {re.escape(numpy)}",
                     info.stdout, re.M), info.stdout
    run = land.sh(f".venv/bin/edge --runtime tflite-runtime {RUN} --jsonl ''", cwd=PROJECT, timeout=600)
    assert "numpy<2" in _one_line_error(run)


@pytest.fixture(scope="module")
def picamera2_venv(userland):
    """The README's picamera2 route: a venv over apt's numpy and picamera2 (the stand-in)."""
    started = time.monotonic()
    result = _venv(userland, ".venv-pi", system_site=True, extra=PIN[userland.suite])
    _record(f"{userland.suite}.picamera2_route_pip_install_s", time.monotonic() - started)
    assert result.returncode == 0
    return userland


@SUITES
def test_picamera2_route_runs_with_boxes_in_main_stream_pixels(picamera2_venv):
    land = picamera2_venv
    land.use_cpu(arm64.PI5)
    numpy = land.ok(".venv-pi/bin/python -c 'import numpy, picamera2; print(numpy.__version__, numpy.__file__)'",
                    cwd=PROJECT, env={"STANDIN_SCENE": SCENE})
    _record(f"{land.suite}.picamera2_route_numpy", numpy.stdout.strip())
    freeze = land.ok(".venv-pi/bin/pip list --format=freeze", cwd=PROJECT).stdout
    _record(f"{land.suite}.picamera2_route_resolved", " ".join(
        line for line in freeze.splitlines() if re.match(r"(numpy|opencv|ml.dtypes|ai.edge.litert)", line, re.I)))
    if land.suite == "bookworm":
        assert numpy.stdout.startswith("1."), numpy.stdout
    result = land.ok(".venv-pi/bin/edge run --source picamera2 --width 1280 --height 544 --max-frames 2 --live off "
                     "--jsonl camera.jsonl", cwd=PROJECT, env={"STANDIN_SCENE": SCENE}, timeout=600)
    events = list(_events(land, "camera.jsonl").values())
    assert events and all((e["width"], e["height"]) == (1280, 544) for e in events), events
    person = _person(events[0])
    _record(f"{land.suite}.picamera2_route_person", json.dumps(person))
    assert person is not None, f"{events}\n{result}"
    assert np.abs(np.array(person["box"]) - 2 * PERSON_AT_30).max() < 30, person    # main = 2x the clip


@BOOKWORM
def test_tflite_runtime_fallback_with_numpy_1(picamera2_venv):
    """bookworm: with numpy < 2, tflite-runtime 2.14 runs the model, by --runtime and as the chain's
    fall-back when ai-edge-litert is absent (on the camera route: the stand-in shows frame 30)."""
    land = picamera2_venv
    land.use_cpu(arm64.PI5)
    land.ok(".venv-pi/bin/pip install --only-binary=:all: tflite-runtime", cwd=PROJECT, timeout=900)
    info = land.ok(".venv-pi/bin/edge info --runtime tflite-runtime", cwd=PROJECT, timeout=600)
    assert re.search(r"^  \* tflite-runtime 2\.14\S*: loaded \(this one is used: --runtime tflite-runtime\)",
                     info.stdout, re.M), info.stdout
    land.ok(".venv-pi/bin/pip uninstall -y ai-edge-litert", cwd=PROJECT)
    result = land.ok(".venv-pi/bin/edge -v run --source picamera2 --width 640 --height 272 --max-frames 2 --live off "
                     "--jsonl tflite.jsonl", cwd=PROJECT, env={"STANDIN_SCENE": SCENE}, timeout=900)
    assert "using TFLite runtime tflite-runtime 2.14" in result.stderr, result.stderr[-3000:]
    events = list(_events(land, "tflite.jsonl").values())
    person = _person(events[0] if events else None)
    _record(f"{land.suite}.pi5.tflite_runtime_person", json.dumps(person))
    _record(f"{land.suite}.pi5.tflite_runtime_run_s", result.seconds)
    assert person is not None and np.abs(np.array(person["box"]) - PERSON_AT_30).max() < 15, person


@BOOKWORM
def test_picamera2_route_runs_files_and_usb_cameras_too(picamera2_venv):
    """The same venv reads the sample clip (capture/opencv.py, as for --source 0)."""
    land = picamera2_venv
    land.use_cpu(arm64.PI5)
    result = land.sh(".venv-pi/bin/edge --max-frames 2 --as-fast-as-possible --live off --jsonl ''", cwd=PROJECT,
                     timeout=600)
    assert result.returncode == 0 and "Traceback" not in result.stderr, str(result)


@BOOKWORM
def test_a_venv_numpy_2_over_apt_numpy_breaks_picamera2_with_a_one_line_error(picamera2_venv):
    """What the README route without the pin does on bookworm: pip puts numpy 2 in the venv, over
    apt's 1.24, and the numpy-1 picamera2 extension fails to import (as simplejpeg does)."""
    land = picamera2_venv
    land.use_cpu(arm64.PI5)
    land.ok(".venv-pi/bin/pip install --only-binary=:all: 'numpy>=2'", cwd=PROJECT, timeout=900)
    probe = land.sh(".venv-pi/bin/python -c 'import picamera2'", cwd=PROJECT, env={"STANDIN_SCENE": SCENE})
    assert "numpy.dtype size changed" in probe.stderr, str(probe)
    result = land.sh(".venv-pi/bin/edge run --source picamera2 --max-frames 1 --live off --jsonl ''",
                     cwd=PROJECT, env={"STANDIN_SCENE": SCENE})
    line = _one_line_error(result)
    assert "numpy.dtype size changed" in line and "pip install 'numpy<2'" in line, line

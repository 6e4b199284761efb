"""`edge run` / `edge info` as a user runs them: real model, real clip, subprocesses."""

import json
import shutil

import pytest

from tests.helpers import edgetpu_twin_dir, fake_edgetpu_model, run_edge


def test_edge_run_on_the_embedded_default(tmp_path):
    result = run_edge("run", "--as-fast-as-possible", "--jsonl", str(tmp_path / "events.jsonl"),
                      "--live", "on", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    assert len(events) >= 40
    first = events[0]
    assert set(first) == {"ts", "frame", "source", "camera", "width", "height", "detections"}
    assert first["camera"] == first["source"] == "bikes.mp4"
    assert first["source"] == "bikes.mp4" and (first["width"], first["height"]) == (640, 272)
    det = first["detections"][0]
    assert det["label"] == "person" and det["score"] >= 0.5 and len(det["box"]) == 4
    assert "fps" in result.stderr and "250 frames" in result.stderr
    assert "no Edge TPU found" in result.stderr          # the device choice is logged with its reason


def test_no_arguments_runs_the_default_in_real_time(tmp_path):
    result = run_edge("--max-frames", "30", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "detections.jsonl").exists()
    assert "30 frames in" in result.stderr


def test_edge_info_reports_runtimes_and_the_model():
    result = run_edge("info")
    assert result.returncode == 0, result.stderr
    assert "* ai-edge-litert" in result.stdout
    assert "tflite-runtime" in result.stdout and "not installed" in result.stdout
    assert "output layout: ssd_postprocess" in result.stdout
    assert "uint8 scale=" in result.stdout


def _one_line_error(result, *fragments):
    # One error line, last; other lines may only be the runtime's own INFO log (LiteRT prints
    # "INFO: Created TensorFlow Lite XNNPACK delegate" to stderr and offers no switch to silence it).
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("edge: error:"), result.stderr
    assert all(line.startswith("INFO: ") for line in lines[:-1]), result.stderr
    for fragment in fragments:
        assert fragment in lines[-1]


def test_missing_model(tmp_path):
    _one_line_error(run_edge("run", "--model", str(tmp_path / "nope.tflite")), "nope.tflite", "does not exist")


def test_corrupt_model(tmp_path):
    bad = tmp_path / "bad.tflite"
    bad.write_bytes(b"\x00" * 64)
    _one_line_error(run_edge("run", "--model", str(bad)), "bad.tflite", "not a valid TFLite model")


def test_unreadable_source(tmp_path):
    _one_line_error(run_edge("run", "--source", str(tmp_path / "missing.mp4")), "missing.mp4",
                    "valid sources")


def test_source_that_is_not_a_video(tmp_path):
    bad = tmp_path / "notes.mp4"
    bad.write_text("hello")
    _one_line_error(run_edge("run", "--source", str(bad), "--jsonl", ""), "notes.mp4")


def test_float_model_runs_on_the_cpu_with_a_warning(float_model, tmp_path):
    result = run_edge("run", "--model", str(float_model), "--as-fast-as-possible", "--max-frames", "3",
                      "--jsonl", "", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "is a float32 model: it runs on the CPU" in result.stderr and "--allow-float" in result.stderr


def test_float_model_on_the_edgetpu_is_refused(float_model):
    _one_line_error(run_edge("run", "--model", str(float_model), "--device", "edgetpu", "--jsonl", ""),
                    "not compiled for the Edge TPU", "edge-host compile")


def test_float_model_allowed_explicitly(float_model, tmp_path):
    result = run_edge("run", "--model", str(float_model), "--allow-float", "--as-fast-as-possible",
                      "--max-frames", "5", "--jsonl", "", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "float32 model" not in result.stderr


def test_edgetpu_model_without_a_tpu_and_no_twin(int8_model, tmp_path):
    model = fake_edgetpu_model(int8_model, tmp_path / "person_edgetpu.tflite")
    _one_line_error(run_edge("run", "--model", str(model), "--jsonl", ""),
                    "compiled for the Edge TPU", "no Edge TPU found", "models.cpu")


def test_edgetpu_model_without_a_tpu_uses_the_cpu_twin(int8_model, model_dir, tmp_path):
    edgetpu_twin_dir(int8_model, model_dir, tmp_path)
    result = run_edge("run", "--model", str(tmp_path / "person_edgetpu.tflite"), "--as-fast-as-possible",
                      "--max-frames", "10", "--jsonl", "", "-v", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "person_int8.tflite on CPU" in result.stderr and "no Edge TPU found" in result.stderr


def test_explicit_edgetpu_without_a_tpu(tmp_path):
    _one_line_error(run_edge("run", "--device", "edgetpu:usb", "--jsonl", ""), "not compiled for the Edge TPU")


@pytest.mark.parametrize("flag, value, fragment", [
    ("--device", "gpu", "unknown device 'gpu'"),
    ("--score-threshold", "2", "above the maximum"),
    ("--classes", "unicorn", "class 'unicorn' is not in the labels"),
    ("--runtime", "tflite", "model.runtime = 'tflite' is not one of"),
    ("--mqtt", "broker:99999", "MQTT broker 'broker:99999' has a bad port"),
    ("--layout", "yolov9000", "yolov9000"),
])
def test_bad_flags(flag, value, fragment):
    _one_line_error(run_edge("run", flag, value, "--jsonl", ""), fragment)


def test_the_person_detector_copied_alone_finds_what_it_finds_with_its_manifest(int8_model, tmp_path):
    """The issue's case: without manifest.json (mean 0 / std 1 saturated the input) it found nobody.
    As a uint8 model with no metadata it now takes raw pixels, as pycoral feeds them."""
    def frames(*args):
        out = tmp_path / "events.jsonl"
        out.unlink(missing_ok=True)
        result = run_edge("run", *args, "--as-fast-as-possible", "--jsonl", str(out), cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        return [json.loads(line) for line in out.read_text().splitlines()]

    alone = shutil.copy(int8_model, tmp_path / "person.tflite")
    bare = frames("-m", str(alone))
    full = frames("-m", str(int8_model))
    assert len(full) == 56 and [e["frame"] for e in bare] == [e["frame"] for e in full]
    assert {d["label"] for e in bare for d in e["detections"]} == {"0"}            # no labels beside it
    (tmp_path / "labels.txt").write_text("person\n")
    assert {d["label"] for e in frames("-m", str(alone)) for d in e["detections"]} == {"person"}


def test_a_second_run_says_it_appends(tmp_path):
    args = ("run", "--max-frames", "40", "--as-fast-as-possible", "--jsonl", "events.jsonl")
    first = run_edge(*args, cwd=tmp_path)
    second = run_edge(*args, cwd=tmp_path)
    assert first.returncode == second.returncode == 0, second.stderr
    assert "appending" not in first.stderr
    assert "appending detection events to events.jsonl, which already holds" in second.stderr


def test_the_error_line_carries_the_journal_priority_under_systemd(tmp_path):
    """journald reads a leading <3> as priority err (sd-daemon(3)); JOURNAL_STREAM names stderr's
    device:inode when stderr is the journal stream. Here stderr is a file standing in for it."""
    import os
    import subprocess
    import sys

    err = tmp_path / "stderr"
    with open(err, "w") as f:
        st = os.fstat(f.fileno())
        env = {**os.environ, "JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}
        rc = subprocess.run([sys.executable, "-m", "edge.cli", "run", "-m", str(tmp_path / "nope.tflite")],
                            stderr=f, stdout=subprocess.DEVNULL, env=env, timeout=120).returncode
    assert rc == 2
    assert err.read_text().splitlines()[-1].startswith("<3>edge: error: model file")

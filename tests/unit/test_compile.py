"""edge-host compile: the edgetpu_compiler wrapper, its log parser, the CPU-op gate and the manifests.

edgetpu_compiler cannot be installed here (x86-64 Debian/Ubuntu only, from Coral's apt repository).
The logs under tests/data/edgetpu_compiler/ are compiler output in its documented format (see the
README there), and the "compiler" run by these tests is a fake executable,
tests/data/edgetpu_compiler/fake_edgetpu_compiler.py, that prints one of those recorded logs,
exits with a chosen code and writes the output model the real compiler would write.
"""

from __future__ import annotations

import json
import shutil
import sys

import pytest

from edge.host import compiler as c
from edge.host.cli import main
from edge.runtime.manifest import find_manifest, load_manifest
from edge.runtime.model import read_model


@pytest.fixture
def logs(data_dir):
    return data_dir / "edgetpu_compiler"


@pytest.fixture
def fake_compiler(tmp_path, logs, monkeypatch):
    """An executable that runs the fake compiler with this interpreter; records its arguments."""
    script = tmp_path / "bin" / "edgetpu_compiler"
    script.parent.mkdir()
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {logs / 'fake_edgetpu_compiler.py'} \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_EDGETPU_ARGS_FILE", str(tmp_path / "args.txt"))
    return script


@pytest.fixture
def work_dir(tmp_path, int8_model):
    """A copy of the default model directory (int8 model, labels, manifest naming it the cpu role)."""
    out = tmp_path / "model"
    out.mkdir()
    for name in ("ssdlite_mobilenet_v2_person_int8.tflite", "labels.txt", "manifest.json"):
        shutil.copy(int8_model.parent / name, out / name)
    data = json.loads((out / "manifest.json").read_text())
    del data["models"]["float"]                     # the float twin is not copied
    (out / "manifest.json").write_text(json.dumps(data))
    return out


def test_parse_success_log(logs):
    log = c.parse_log((logs / "ssdlite_success.log").read_text())
    assert log.succeeded and log.version == "16.0.384591198" and log.errors == ()
    (seg,) = log.segments
    assert seg.output_model == "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite"
    assert (seg.total_ops, log.tpu_ops, log.cpu_ops) == (118, 115, 3)
    assert seg.on_chip_used == round(3.86 * 2**20) and seg.off_chip_used == 0
    assert seg.on_chip_remaining == round(3.63 * 2**20)
    assert seg.edgetpu_subgraphs == 1
    assert ("CONV_2D", 55, "Mapped to Edge TPU") in seg.operators
    assert ("CUSTOM", 1, "Operation is working on an unsupported data type") in seg.operators
    assert sum(n for _, n, _ in seg.operators) == 118


def test_all_mapped_log_has_no_counts_lines(logs):
    log = c.parse_log((logs / "all_mapped.log").read_text())
    assert log.succeeded and (log.tpu_ops, log.cpu_ops) == (66, 0)
    assert log.segments[0].operators == ()


def test_version_15_log_with_mixed_statuses(logs):
    log = c.parse_log((logs / "many_cpu_ops_v15.log").read_text())
    assert log.succeeded and log.version == "15.0.340273435"
    assert (log.tpu_ops, log.cpu_ops) == (83, 10)
    seg = log.segments[0]
    assert seg.on_chip_remaining == round(7.75 * 1024) and seg.off_chip_used == round(1.22 * 2**20)
    assert ("RESIZE_NEAREST_NEIGHBOR", 1, "Operation version not supported") in seg.operators
    assert len(seg.operators) == 11


def test_segments_log(logs):
    log = c.parse_log((logs / "segments.log").read_text())
    assert [s.output_model for s in log.segments] == [
        "ssdlite_mobilenet_v2_person_int8_segment_0_of_2_edgetpu.tflite",
        "ssdlite_mobilenet_v2_person_int8_segment_1_of_2_edgetpu.tflite"]
    assert (log.tpu_ops, log.cpu_ops) == (59 + 56, 3)


@pytest.mark.parametrize("name, error", [
    ("large_activations_failed.log", "large activation tensors"),
    ("internal_error.log", "Internal compiler error"),
])
def test_failure_logs(logs, name, error):
    log = c.parse_log((logs / name).read_text())
    assert not log.succeeded
    assert any(error in e for e in log.errors)


@pytest.mark.parametrize("text, n", [("3.39MiB", round(3.39 * 2**20)), ("1.75KiB", 1792), ("0.00B", 0),
                                     ("2.00GiB", 2 * 2**30)])
def test_parse_size(text, n):
    assert c.parse_size(text) == n


def test_compile_writes_model_and_manifests(work_dir, fake_compiler, tmp_path, capsys):
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--max-cpu-ops", "3"]) == 0
    out = capsys.readouterr().out
    assert "ops on Edge TPU                     115/118" in out
    assert "on-chip memory used                 3.86 MiB" in out
    compiled = work_dir / "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite"
    assert read_model(compiled).edgetpu
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert args[:5] == ["-o", str(work_dir), "-t", "180", "-s"] and args[-1] == str(model)
    # The sidecar is what edge run finds for the compiled model; it names the CPU twin.
    sidecar = find_manifest(compiled)
    assert sidecar == compiled.with_suffix(".json")
    manifest = load_manifest(sidecar)
    assert manifest.model_for("cpu") == model and manifest.labels == work_dir / "labels.txt"
    assert manifest.layout == "ssd_postprocess"
    assert manifest.provenance["edgetpu"]["cpu_ops"] == 3
    # The directory manifest gains the edgetpu role, so --model DIR picks the Edge TPU twin.
    shared = load_manifest(work_dir / "manifest.json")
    assert shared.model_for("edgetpu") == compiled and shared.model_for("cpu") == model


def test_compile_flags_reach_the_compiler(work_dir, fake_compiler, tmp_path, capsys):
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    out = tmp_path / "out"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "-o", str(out), "-m", "13",
                 "-a", "-d", "--timeout", "60"]) == 0
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert args == ["-o", str(out), "-t", "60", "-s", "-m", "13", "-a", "-d", str(model)]
    manifest = load_manifest(out / "ssdlite_mobilenet_v2_person_int8_edgetpu.json")
    assert manifest.model_for("cpu").resolve() == model.resolve()
    assert "edgetpu" not in json.loads((work_dir / "manifest.json").read_text())["models"]


def test_segments_are_written(work_dir, fake_compiler, monkeypatch, tmp_path, capsys):
    monkeypatch.setenv("FAKE_EDGETPU_LOG", "segments.log")
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--num-segments", "2"]) == 0
    assert "--num_segments=2" in (tmp_path / "args.txt").read_text()
    for i in range(2):
        assert (work_dir / f"ssdlite_mobilenet_v2_person_int8_segment_{i}_of_2_edgetpu.tflite").is_file()


def test_gate_fails_with_exit_1(work_dir, fake_compiler, capsys):
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--max-cpu-ops", "2"]) == 1
    assert "FAIL: 3 ops run on the CPU, more than --max-cpu-ops 2" in capsys.readouterr().out


def test_compiler_failure_exit_code_is_checked(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_EDGETPU_LOG", "large_activations_failed.log")
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler)]) == 2
    err = capsys.readouterr().err
    assert "exit code 1" in err and "large activation tensors" in err


def test_success_exit_without_output_is_an_error(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_EDGETPU_LOG", "internal_error.log")     # exit 0, but the log says it failed
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler)]) == 2
    assert "Internal compiler error" in capsys.readouterr().err


def test_float_model_is_refused_before_compiling(float_model, fake_compiler, tmp_path, capsys):
    assert main(["compile", str(float_model), "--compiler", str(fake_compiler), "-o", str(tmp_path)]) == 2
    assert "float32 model" in capsys.readouterr().err
    assert not (tmp_path / "args.txt").exists()


def test_float_model_is_refused_even_without_a_compiler(monkeypatch, float_model, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["compile", str(float_model)]) == 2
    assert "needs a full-integer int8 model" in capsys.readouterr().err


def test_missing_compiler_says_how_to_install(monkeypatch, int8_model, capsys):
    monkeypatch.setenv("PATH", "/nonexistent")
    assert main(["compile", str(int8_model)]) == 2
    err = capsys.readouterr().err
    assert "edgetpu_compiler is not on PATH" in err and "apt-get install edgetpu-compiler" in err


def test_non_x86_host_says_where_the_compiler_runs(monkeypatch):
    monkeypatch.setattr(c.platform, "machine", lambda: "aarch64")
    with pytest.raises(c.CompilerError, match="not available for linux/aarch64.*x86-64 Linux"):
        c.find_compiler()


def test_the_device_loader_finds_both_twins(work_dir, fake_compiler, monkeypatch, capsys):
    """The manifests written after compiling are the ones edge run reads (edge.runtime.loader)."""
    from edge.config import ModelConfig
    from edge.runtime import edgetpu, loader

    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler)]) == 0
    compiled = work_dir / "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite"
    given_file = loader.resolve(ModelConfig(path=str(compiled)))
    assert given_file.requested_role == "edgetpu" and given_file.path_for("cpu") == model
    given_dir = loader.resolve(ModelConfig(path=str(work_dir)))
    assert given_dir.path_for("edgetpu") == compiled
    # No Edge TPU here: --device auto on the compiled model runs its CPU twin for real.
    monkeypatch.setattr(edgetpu, "enumerate_devices", lambda *a, **k: [])
    loaded = loader.load(ModelConfig(path=str(compiled)))
    assert loaded.model.path == model and "no Edge TPU found" in loaded.reason

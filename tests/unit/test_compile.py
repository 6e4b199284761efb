"""edge-host compile: the edgetpu_compiler wrapper, its log parser, the CPU-op gate and the manifests.

edgetpu_compiler cannot be installed here (x86-64 Debian/Ubuntu only, from Coral's apt repository).
The logs under tests/data/edgetpu_compiler/ are real compiler output published by its users, copied
verbatim (sources in the README there); the parser tests assert what those logs say. The
"compiler" run by these tests is tests/data/edgetpu_compiler/fake_edgetpu_compiler.py, which
replays one of those logs unchanged, exits with a chosen code and writes the output model the real
compiler would write. Three formats have no complete published log (all ops mapped, segments,
--search_delegate retries); their tests say so and build the text in the test.
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


def _log(logs, name):
    return c.parse_log((logs / name).read_text())


def test_parse_real_v16_log_with_operator_table(logs):
    """jveitchmichaelis/edgetpu-yolo export.md: edgetpu_compiler 16 -sa on a YOLOv5s at 224."""
    log = _log(logs, "yolov5s_224_v16.log")
    assert log.succeeded and log.version == "16.0.384591198" and log.errors == () and log.retried == ()
    (seg,) = log.segments
    assert (seg.input_model, seg.output_model) == ("yolov5s-int8-224.tflite", "yolov5s-int8-224_edgetpu.tflite")
    assert (seg.input_bytes, seg.output_bytes) == (round(7.37 * 2**20), round(8.34 * 2**20))
    assert (seg.total_ops, log.tpu_ops, log.cpu_ops, seg.edgetpu_subgraphs) == (294, 289, 5, 2)
    assert seg.on_chip_used == round(6.08 * 2**20) and seg.on_chip_remaining == 0
    assert seg.off_chip_used == round(1.70 * 2**20)
    assert len(seg.operators) == 17 and sum(n for _, n, _ in seg.operators) == 294
    assert seg.operators[0] == ("RESIZE_NEAREST_NEIGHBOR", 2, "Mapped to Edge TPU")
    assert seg.operators[-1] == ("CONV_2D", 62, "Mapped to Edge TPU")
    unmapped = {(name, n) for name, n, status in seg.operators if status != "Mapped to Edge TPU"}
    assert unmapped == {("CONCATENATION", 1), ("TRANSPOSE", 1), ("QUANTIZE", 2), ("RESHAPE", 1)}
    assert all(status == "Operation is otherwise supported, but not mapped due to some unspecified limitation"
               for name, n, status in seg.operators if status != "Mapped to Edge TPU")


@pytest.mark.parametrize("name, sizes, counts, rows, row", [
    ("yolov3_tiny_v15.log", (3 * 1024, round(7.67 * 2**20), 0), (36, 2, 34), 9,
     ("LEAKY_RELU", 11, "Operation not supported")),
    ("yolov5s_v15.log", (0, round(8.05 * 2**20), 0), (294, 1, 293), 18,
     ("STRIDED_SLICE", 4, "Only Strided-Slice with unitary strides supported")),
])
def test_parse_real_v15_logs(logs, name, sizes, counts, rows, row):
    """tetutaro/yolo_various_framework weights/README.md: edgetpu_compiler 15 -s, no timer lines."""
    log = _log(logs, name)
    assert log.succeeded and log.version == "15.0.340273435" and log.errors == ()
    (seg,) = log.segments
    assert (seg.on_chip_used, seg.on_chip_remaining, seg.off_chip_used) == sizes
    assert (seg.total_ops, seg.tpu_ops, seg.cpu_ops) == counts and seg.edgetpu_subgraphs == 1
    assert seg.output_model.startswith("/home/") and seg.output_model.endswith("_int8_edgetpu.tflite")
    assert len(seg.operators) == rows and sum(n for _, n, _ in seg.operators) == counts[0]
    assert row in seg.operators
    resize = ("RESIZE_NEAREST_NEIGHBOR", 1 if "tiny" in name else 2, "Operation version not supported")
    assert resize in seg.operators


@pytest.mark.parametrize("name, version, errors", [
    ("large_activations_failed_v16.log", "16.0.384591198",
     ("ERROR: Restored original execution plan after delegate application failure.",
      "Compilation failed: Compilation failed due to large activation tensors in model.",
      "Compilation failed!")),
    ("failed_without_reason_v16.log", "16.0.384591198", ("Compilation failed!",)),
    ("internal_error_v15.log", "15.0.340273435", ("Internal compiler error. Aborting!",)),
    ("model_not_quantized_v15.log", "15.0.340273435", ("Invalid model: heehoo.tflite", "Model not quantized")),
])
def test_parse_real_failure_logs(logs, name, version, errors):
    log = _log(logs, name)
    assert not log.succeeded and log.version == version
    assert log.errors == errors and log.segments == ()


# The three tests below have no complete real log to parse (see tests/data/edgetpu_compiler/README.md):
# their text is the real v16 log's own lines, rearranged into the documented shape of each case.
# The numbers in them are made up for the test; none comes from check-edgetpu.

def _v16_block(stem: str, total: int, cpu: int | None) -> str:
    counts = "" if cpu is None else (
        "\nModel successfully compiled but not all operations are supported by the Edge TPU. A percentage of "
        "the model will instead run on the CPU, which is slower. If possible, consider updating your model "
        "to use only operations supported by the Edge TPU. For details, visit g.co/coral/model-reqs.\n"
        f"Number of operations that will run on Edge TPU: {total - cpu}\n"
        f"Number of operations that will run on CPU: {cpu}\n")
    return ("Started a compilation timeout timer of 180 seconds.\n\nModel compiled successfully in 100 ms.\n\n"
            f"Input model: {stem}.tflite\nInput size: 1.00MiB\nOutput model: {stem}_edgetpu.tflite\n"
            "Output size: 1.50MiB\nOn-chip memory used for caching model parameters: 1.00MiB\n"
            "On-chip memory remaining for caching model parameters: 6.00MiB\n"
            "Off-chip memory used for streaming uncached model parameters: 0.00B\n"
            f"Number of Edge TPU subgraphs: 1\nTotal number of operations: {total}\n"
            f"Operation log: {stem}_edgetpu.log\n{counts}"
            "See the operation log file for individual operation details.\n"
            "Compilation child process completed within timeout period.\nCompilation succeeded!\n")


def test_all_mapped_format_has_no_counts_lines():
    """Documented format, not a real log: when every op maps, the two count lines are absent."""
    log = c.parse_log("Edge TPU Compiler version 16.0.384591198\n" + _v16_block("m", 31, None))
    assert log.succeeded and (log.tpu_ops, log.cpu_ops) == (31, 0)
    assert log.segments[0].operators == ()


def test_segments_format():
    """Documented format, not a real log: --num_segments=2 repeats the block per segment."""
    text = ("Edge TPU Compiler version 16.0.384591198\n" + _v16_block("m_segment_0_of_2", 60, None)
            + _v16_block("m_segment_1_of_2", 59, 3))
    log = c.parse_log(text)
    assert [s.output_model for s in log.segments] == ["m_segment_0_of_2_edgetpu.tflite",
                                                      "m_segment_1_of_2_edgetpu.tflite"]
    assert log.succeeded and (log.tpu_ops, log.cpu_ops) == (60 + 56, 3)


def test_search_delegate_retries_format():
    """Format of google-coral/edgetpu#671 (seen in part only): with -d, failed attempts come before
    the successful one; their messages are retries, not the compile's errors."""
    failed = ("Searching for valid delegate with step 10\nTry to compile segment with 340 ops\n"
              "Started a compilation timeout timer of 180 seconds.\n"
              "ERROR: Restored original execution plan after delegate application failure.\n"
              "Compilation failed: Compilation failed due to large activation tensors in model.\n"
              "Compilation child process completed within timeout period.\nCompilation failed! \n"
              "Try to compile segment with 330 ops\nIntermediate tensors: Reshape,Reshape_8\n")
    text = "Edge TPU Compiler version 16.0.384591198\n" + failed + _v16_block("m", 330, 3)
    log = c.parse_log(text)
    assert log.succeeded and log.errors == () and (log.tpu_ops, log.cpu_ops) == (327, 3)
    assert log.retried[-1] == "Compilation failed!" and len(log.retried) == 3
    # The same attempts without a later success: the compile failed.
    assert not c.parse_log("Edge TPU Compiler version 16.0.384591198\n" + failed).succeeded


@pytest.mark.parametrize("text, n", [("3.39MiB", round(3.39 * 2**20)), ("1.75KiB", 1792), ("0.00B", 0),
                                     ("2.00GiB", 2 * 2**30)])
def test_parse_size(text, n):
    assert c.parse_size(text) == n


def test_compile_writes_model_and_manifests(work_dir, fake_compiler, tmp_path, capsys):
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--max-cpu-ops", "5"]) == 0
    out = capsys.readouterr().out
    # The figures are those of the replayed real log (yolov5s_224_v16.log), whatever the model.
    assert "ops on Edge TPU                     289/294" in out
    assert "on-chip memory used                 6.08 MiB" in out
    assert "off-chip memory (streamed)          1.70 MiB" in out
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
    assert manifest.provenance["edgetpu"]["cpu_ops"] == 5
    assert manifest.provenance["edgetpu"]["compiler_version"] == "16.0.384591198"
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
    manifest = load_manifest(out / "ssdlite_mobilenet_v2_person_int8_edgetpu.json", confine=False)
    assert manifest.model_for("cpu").resolve() == model.resolve()
    assert "edgetpu" not in json.loads((work_dir / "manifest.json").read_text())["models"]


# --segments: tests/unit/test_compile_segments.py (a fake compiler that writes the real Coral segments,
# which the chain check accepts; copies of one model are refused as a chain).


def test_gate_fails_with_exit_1(work_dir, fake_compiler, capsys):
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--max-cpu-ops", "4"]) == 1
    assert "FAIL: 5 ops run on the CPU, more than --max-cpu-ops 4" in capsys.readouterr().out


def test_compiler_failure_exit_code_is_checked(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_EDGETPU_LOG", "large_activations_failed_v16.log")
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler)]) == 2
    err = capsys.readouterr().err
    assert "exit code 1" in err and "large activation tensors" in err


def test_success_exit_without_output_is_an_error(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_EDGETPU_LOG", "internal_error_v15.log")     # exit 0, but the log says it failed
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


def test_model_not_quantized_is_reported(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_EDGETPU_LOG", "model_not_quantized_v15.log")
    monkeypatch.setenv("FAKE_EDGETPU_EXIT", "1")
    model = work_dir / "ssdlite_mobilenet_v2_person_int8.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler)]) == 2
    err = capsys.readouterr().err
    assert "exit code 1" in err and "Invalid model: heehoo.tflite; Model not quantized" in err

"""`edge-host quantize` with real TensorFlow conversions on small real models.

The classifier is a small CNN trained here on scikit-learn's bundled digits (real handwritten
digits, available offline), written as a class-per-subfolder image folder; the SSD is the
default person detector's TF1 frozen graph. Every written model is read back and run.
"""

from __future__ import annotations

import json
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.host import quantize as q
from edge.runtime.manifest import load_manifest
from edge.runtime.model import read_model

pytestmark = [pytest.mark.host]

PRECISION = {"float32": "float32", "float16": "float16", "dynamic": "dynamic-range", "int8": "int8",
             "int16x8": "int16x8"}


def train_digits_classifier(folder: Path, model_path: Path, epochs: int = 4) -> Path:
    """Write the digits as 32x32 PNGs under ``folder`` and train a small Keras 3 CNN on them
    (through the same pre-processing as the device: RGB, (p - 127.5) / 127.5)."""
    import cv2
    import keras

    from edge.host.calibration import labelled_images
    from edge.host.qat import write_digits
    write_digits(folder, 32)
    items = labelled_images(folder)
    x = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p, _ in items]).astype(np.float32)
    x = (x - 127.5) / 127.5
    y = np.array([c for _, c in items])
    keras.utils.set_random_seed(0)
    model = keras.Sequential([
        keras.Input((32, 32, 3)), keras.layers.Conv2D(16, 3, activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(32, 3, activation="relu"), keras.layers.MaxPooling2D(), keras.layers.Flatten(),
        keras.layers.Dense(10, activation="softmax")])
    model.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=32, verbose=0)
    model.save(model_path)
    return model_path


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    root = tmp_path_factory.mktemp("digits")
    model = train_digits_classifier(root / "images", root / "digits.keras")
    return root / "images", model


@pytest.mark.slow
def test_every_mode_from_keras(digits, tmp_path):
    images, model = digits
    options = q.QuantizeOptions(name="digits", modes=q.MODES, calibration=images, samples=30, latency_runs=3,
                                labels=[str(i) for i in range(10)], progress=False)
    results = q.quantize(q.detect_source(model), tmp_path, options)
    assert [r.mode for r in results] == list(q.MODES)
    for r in results:
        info = read_model(r.path)
        assert info.precision == PRECISION[r.mode], r.mode
        assert info.inputs[0].shape == (1, 32, 32, 3) and not info.inputs[0].dynamic
        manifest = load_manifest(r.path.with_suffix(".json"))
        assert manifest.layout == "classification" and manifest.task == "classification"
        assert manifest.model_for("cpu") == r.path and manifest.model_for("float").name == "digits_float32.tflite"
        assert manifest.input.mean == (127.5,) * 3
        prov = manifest.provenance
        assert prov["quantization"]["mode"] == r.mode and len(prov["source_sha256"]) == 64
    int8 = read_model(tmp_path / "digits_int8.tflite")
    assert int8.inputs[0].type == "UINT8" and int8.outputs[0].type == "UINT8"
    conv = next(op for op in int8.ops if op.name == "CONV_2D")
    assert int8.tensors[conv.inputs[1]].quantization.per_channel
    assert load_manifest(tmp_path / "manifest.json").model_for("cpu").name == "digits_int8.tflite"
    assert (tmp_path / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    table = (tmp_path / "comparison.md").read_text()
    assert all(f"| {m} |" in table for m in q.MODES)
    # The int8 model classifies like the float one through the device's own pre-processing.
    from edge.host.evaluate import EvaluateOptions, evaluate
    report = evaluate(tmp_path / "digits_float32.tflite", [tmp_path / "digits_int8.tflite"], tmp_path / "eval",
                      EvaluateOptions(frames=images, samples=200, latency_runs=2))
    assert report["models"][0]["top1"] > 0.9   # (seen in training: the check is the pipeline, not generalisation)
    assert report["models"][1]["agreement_top1"] >= 0.9


def test_labels_must_match_the_classes(digits, tmp_path):
    images, model = digits
    with pytest.raises(q.ConfigError, match="3 labels given but the model predicts 10 classes"):
        q.quantize(q.detect_source(model), tmp_path, q.QuantizeOptions(name="x", modes=("float32",),
                                                                         labels=["a", "b", "c"], latency_runs=1))


def test_int8_io_per_tensor(digits, tmp_path):
    images, model = digits
    options = q.QuantizeOptions(name="pt", modes=("int8",), calibration=images, samples=10, io="int8",
                                per_tensor=True, latency_runs=1, progress=False)
    q.quantize(q.detect_source(model), tmp_path, options)
    info = read_model(tmp_path / "pt_int8.tflite")
    assert info.inputs[0].type == "INT8" and info.outputs[0].type == "INT8"
    conv = next(op for op in info.ops if op.name == "CONV_2D")
    assert not info.tensors[conv.inputs[1]].quantization.per_channel
    saved = json.loads((tmp_path / "pt_int8.json").read_text())
    assert saved["provenance"]["quantization"]["per_channel"] is False
    assert saved["provenance"]["quantization"]["io"] == "int8"


def test_cli_float_io_npy_calibration(digits, tmp_path):
    """The command line end to end: int8 with float I/O calibrated from a .npy array, then evaluate."""
    import cv2
    from edge.host.calibration import labelled_images
    images, model = digits
    x = np.stack([cv2.cvtColor(cv2.imread(str(p)), cv2.COLOR_BGR2RGB) for p, _ in labelled_images(images)[:20]])
    np.save(tmp_path / "calib.npy", (x.astype(np.float32) - 127.5) / 127.5)
    result = _cli("quantize", str(model), "--out", str(tmp_path / "q"), "--mode", "float16,int8", "--io", "float",
                  "--calibration", str(tmp_path / "calib.npy"), "--latency-runs", "1", "--name", "d")
    assert result.returncode == 0, result.stderr[-2000:]
    assert "int8: " in result.stdout and "| float16 |" in result.stdout
    info = read_model(tmp_path / "q" / "d_int8.tflite")
    assert info.precision == "int8" and info.inputs[0].type == "FLOAT32" and info.outputs[0].type == "FLOAT32"
    result = _cli("evaluate", str(tmp_path / "q" / "d_float32.tflite"), str(tmp_path / "q" / "d_int8.tflite"),
                  "--frames", str(images), "--samples", "50", "--out", str(tmp_path / "r"), "--latency-runs", "1")
    assert result.returncode == 0, result.stderr[-2000:]
    report = json.loads((tmp_path / "r" / "report.json").read_text())
    assert report["models"][1]["agreement_top1"] >= 0.9


def test_float_tflite_via_ai_edge_quantizer(digits, tmp_path):
    """A float .tflite (here: this tool's own float32 export, which has a signature) → dynamic,
    float16 and static int8 with ai-edge-quantizer; int8 I/O, still classifies like the float."""
    images, model = digits
    q.quantize(q.detect_source(model), tmp_path / "src",
               q.QuantizeOptions(name="f", modes=("float32",), latency_runs=1, progress=False))
    src = tmp_path / "src" / "f_float32.tflite"
    results = q.quantize(q.detect_source(src), tmp_path / "aeq",
                         q.QuantizeOptions(name="a", modes=("float16", "dynamic", "int8"), calibration=images,
                                           samples=20, latency_runs=1, progress=False))
    assert [r.mode for r in results] == ["float32", "float16", "dynamic", "int8"]
    int8 = read_model(tmp_path / "aeq" / "a_int8.tflite")
    assert int8.inputs[0].type == "INT8" and int8.precision == "int8"
    assert read_model(tmp_path / "aeq" / "a_dynamic.tflite").precision == "dynamic-range"
    assert read_model(tmp_path / "aeq" / "a_float16.tflite").precision == "float16"
    assert load_manifest(tmp_path / "aeq" / "a_int8.json").provenance["quantizer"] == "ai-edge-quantizer"
    # comparison.json: XNNPACK's share per mode next to size and latency (edge.runtime.xnnpack).
    rows = json.loads((tmp_path / "aeq" / "comparison.json").read_text())["modes"]
    assert [r["mode"] for r in rows] == ["float32", "float16", "dynamic", "int8"]
    # XNNPACK runs SOFTMAX in float only: the int8 classifier's last op stays on the reference kernels.
    assert rows[3]["xnnpack"]["partitions"] == 1 and rows[3]["xnnpack"]["cpu_ops"] == {"SOFTMAX": 1}
    assert rows[0]["xnnpack"]["cpu_ops"] == {}
    assert "| XNNPACK partitions |" in (tmp_path / "aeq" / "comparison.md").read_text()
    from edge.host.evaluate import EvaluateOptions, evaluate
    report = evaluate(tmp_path / "aeq" / "a_float32.tflite", [tmp_path / "aeq" / "a_int8.tflite"],
                      tmp_path / "eval", EvaluateOptions(frames=images, samples=100, latency_runs=1))
    assert report["models"][1]["agreement_top1"] >= 0.9


def test_float16_tflite_without_signature_is_normalised(digits, tmp_path):
    """A float .tflite as found in the wild: fp16 weights behind DEQUANTIZE, no signature, opcodes
    only in deprecated_builtin_code (made here from this tool's own float16 export)."""
    from ai_edge_litert.tools import flatbuffer_utils
    images, model = digits
    q.quantize(q.detect_source(model), tmp_path / "src",
               q.QuantizeOptions(name="f", modes=("float16",), latency_runs=1, progress=False))
    wild = flatbuffer_utils.read_model(str(tmp_path / "src" / "f_float16.tflite"))
    wild.signatureDefs = []
    for code in wild.operatorCodes:
        if 0 < code.deprecatedBuiltinCode < 127:
            code.builtinCode = 0
    (tmp_path / "wild.tflite").write_bytes(bytes(flatbuffer_utils.convert_object_to_bytearray(wild)))
    assert read_model(tmp_path / "wild.tflite").precision == "float16"
    changes = q.normalise_float_tflite(tmp_path / "wild.tflite", tmp_path / "normalised.tflite")
    assert len(changes) == 3, changes
    normalised = read_model(tmp_path / "normalised.tflite")
    assert normalised.precision == "float32" and "DEQUANTIZE" not in normalised.op_counts
    assert normalised.signatures[0].key == "serving_default"
    wild_options = q.QuantizeOptions(name="w", modes=("int8",), calibration=images, samples=20, latency_runs=1,
                                     progress=False)
    with pytest.raises(ModelError, match="pass --mean/--std"):     # nothing says its normalisation: no guess
        q.quantize(q.detect_source(tmp_path / "wild.tflite"), tmp_path / "out", wild_options)
    results = q.quantize(q.detect_source(tmp_path / "wild.tflite"), tmp_path / "out",
                         replace(wild_options, spec=q.DEFAULT_SPEC))
    assert read_model(results[1].path).precision == "int8"
    from edge.host.evaluate import EvaluateOptions, evaluate
    report = evaluate(tmp_path / "src" / "f_float32.tflite", [results[0].path, results[1].path], tmp_path / "eval",
                      EvaluateOptions(frames=images, samples=100, latency_runs=1))
    assert report["models"][1]["agreement_top1"] >= 0.98     # the normalised float twin
    assert report["models"][2]["agreement_top1"] >= 0.9


def test_frozen_graph_with_tensor_names(tmp_path):
    """The SSD graph cut at named tensors (the generic frozen-graph path), float32 + dynamic."""
    from edge.host.export_ssd import default_graph
    source = q.detect_source(default_graph(), ("Preprocessor/sub",), ("concat", "concat_1"), (300, 300))
    results = q.quantize(source, tmp_path, q.QuantizeOptions(name="raw", modes=("dynamic",), layout="raw",
                                                              latency_runs=1, progress=False))
    info = read_model(results[1].path)
    assert info.precision == "dynamic-range"
    assert [(t.name, t.shape) for t in info.outputs] == [("concat", (1, 1917, 1, 4)), ("concat_1", (1, 1917, 2))]
    assert load_manifest(results[1].path.with_suffix(".json")).output == {}


def test_frozen_graph_without_the_named_tensor(tmp_path):
    from edge.host.export_ssd import default_graph
    source = q.detect_source(default_graph(), ("Preprocessor/sub",), ("nope",), (300, 300))
    with pytest.raises(q.ConfigError, match="Invalid tensors 'nope'"):
        q.quantize(source, tmp_path, q.QuantizeOptions(name="x", modes=("float32",), latency_runs=1))


@pytest.mark.slow
def test_ssd_graph_every_mode(tmp_path, clip):
    """The default SSDLite person detector from its TF1 graph: all modes, post-processing in the model."""
    from edge.host.export_ssd import default_graph
    options = q.QuantizeOptions(name="ssd", modes=q.MODES, calibration=clip, samples=8, stride=30,
                                labels=["person"], latency_runs=1, progress=False)
    results = q.quantize(q.detect_source(default_graph()), tmp_path, options)
    for r in results:
        info = read_model(r.path)
        assert info.precision == PRECISION[r.mode], r.mode
        assert info.find_op("TFLite_Detection_PostProcess") is not None
    manifest = load_manifest(tmp_path / "manifest.json")
    assert manifest.layout == "ssd_postprocess" and manifest.input.mean[0] == pytest.approx(127.5)
    assert read_model(tmp_path / "ssd_int8.tflite").inputs[0].type == "UINT8"


@pytest.mark.slow
def test_ssd_graph_raw_outputs_with_anchors(tmp_path, clip):
    """--layout ssd_anchors: raw box encodings and class logits, the anchors in the manifest; the
    device's ssd_anchors decoder then finds the same people in int8 as in float."""
    from edge.host.evaluate import EvaluateOptions, evaluate
    from edge.host.export_ssd import default_graph
    q.quantize(q.detect_source(default_graph()), tmp_path,
               q.QuantizeOptions(name="raw", modes=("int8",), calibration=clip, samples=10, stride=20,
                                 labels=["person"], layout="ssd_anchors", latency_runs=1, progress=False))
    manifest = load_manifest(tmp_path / "manifest.json")
    assert manifest.layout == "ssd_anchors" and len(manifest.output["anchors"]) == 1917
    info = read_model(tmp_path / "raw_int8.tflite")
    assert info.find_op("TFLite_Detection_PostProcess") is None and info.inputs[0].type == "UINT8"
    report = evaluate(tmp_path / "raw_float32.tflite", [tmp_path / "raw_int8.tflite"], tmp_path / "eval",
                      EvaluateOptions(samples=125, stride=2, latency_runs=1))
    assert report["models"][0]["detections"] >= 20
    assert report["models"][1]["kept_of_float"] >= 0.9, report["models"][1]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "edge.host.cli", *args], capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args, message", [
    (["quantize", "missing.keras", "--out", "o"], "model 'missing.keras' does not exist"),
    (["quantize", "{model}", "--out", "o", "--mode", "int4"], "unknown mode 'int4'"),
    (["quantize", "{model}", "--out", "o", "--mode", "int8"], "need calibration data"),
    (["quantize", "{model}", "--out", "o", "--mode", "int8", "--calibration", "nowhere.mp4"],
     "calibration data 'nowhere.mp4' does not exist"),
    (["quantize", "{tflite}", "--out", "o", "--io", "uint8"], "--io uint8 is not available for a .tflite"),
    (["quantize", "{graph}", "--out", "o", "--input-tensors", "x"], "give both --input-tensors and --output-tensors"),
    (["quantize", "{int8}", "--out", "o", "--mode", "dynamic"], "is already quantized (int8)"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, float_model, int8_model):
    model = tmp_path / "m.keras"
    model.write_bytes(b"not checked before the mode")
    graph = tmp_path / "g.pb"
    graph.write_bytes(b"")
    args = [a.format(model=model, tflite=float_model, graph=graph, int8=int8_model) for a in args]
    result = _cli(*args)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


@pytest.mark.slow
def test_shipped_float_twin_via_ai_edge_quantizer(float_model, clip, tmp_path):
    """The default model's float .tflite as a model whose source is lost: its manifest gives the
    normalisation, labels and layout; the post-processing outputs stay float; int8 keeps the
    float model's detections on the clip."""
    results = q.quantize(q.detect_source(float_model), tmp_path,
                         q.QuantizeOptions(name="ssd", modes=("int8",), calibration=clip, samples=10, stride=20,
                                           latency_runs=1, progress=False))
    info = read_model(results[1].path)
    assert info.precision == "int8" and info.inputs[0].type == "INT8"
    assert {t.type for t in info.outputs} == {"FLOAT32"}
    manifest = load_manifest(tmp_path / "manifest.json")
    assert manifest.layout == "ssd_postprocess" and manifest.input.mean[0] == pytest.approx(127.5)
    assert (tmp_path / "labels.txt").read_text().split() == ["person"]
    from edge.host.evaluate import EvaluateOptions, evaluate
    report = evaluate(tmp_path / "ssd_float32.tflite", [results[1].path], tmp_path / "eval",
                      EvaluateOptions(samples=250, latency_runs=1))
    assert report["models"][1]["kept_of_float"] >= 0.9, report["models"][1]


def test_labelled_folder_is_interleaved_across_classes(tmp_path):
    """Calibration from a class-per-subfolder folder: any prefix samples every class."""
    import cv2
    from edge.host.calibration import frames, labelled_images
    for cls, n in (("a", 3), ("b", 1), ("c", 2)):
        (tmp_path / cls).mkdir()
        for i in range(n):
            cv2.imwrite(str(tmp_path / cls / f"{i}.png"), np.full((4, 4, 3), 10 * i + ord(cls), np.uint8))
    order = [(p.parent.name, p.name, c) for p, c in labelled_images(tmp_path)]
    assert order == [("a", "0.png", 0), ("b", "0.png", 1), ("c", "0.png", 2), ("a", "1.png", 0),
                     ("c", "1.png", 2), ("a", "2.png", 0)]
    pixels = [int(f.image[0, 0, 0]) for f in frames(tmp_path, limit=4)]
    assert pixels == [ord("a"), ord("b"), ord("c"), ord("a") + 10]

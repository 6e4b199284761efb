"""`edge-host quantize` on models a user brings: MediaPipe's float detectors (fp16 weights behind
DEQUANTIZE, some sparse behind DENSIFY, standalone RELUs, PRELUs), located as data in the
mediapipe wheel. XNNPACK must take the int8 graph whole, the comparison table must give its share
and say why a mode is slower, and int8 must find what float finds.

References are plain LiteRT + numpy (``tests.conformance.conftest.plain_invoke``), never edge's
decoder.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ConfigError
from edge.host import fuse
from edge.host import quantize as q
from edge.runtime import xnnpack
from edge.runtime.manifest import load_manifest
from edge.runtime.model import read_model
from tests.conformance.conftest import coral_dir, mediapipe_model, plain_invoke, read_rgb

pytestmark = [pytest.mark.host]

FACE = "modules/face_detection/face_detection_short_range.tflite"
DETECTORS = {"face_detection_short_range": FACE,
             "face_detection_full_range_sparse": "modules/face_detection/face_detection_full_range_sparse.tflite",
             "palm_detection_lite": "modules/palm_detection/palm_detection_lite.tflite",
             "palm_detection_full": "modules/palm_detection/palm_detection_full.tflite",
             "pose_detection": "modules/pose_detection/pose_detection.tflite"}


def _options(name: str, clip: Path, **kw) -> q.QuantizeOptions:
    values = dict(name=name, modes=("int8",), calibration=clip, samples=30, stride=8, latency_runs=30,
                  progress=False)
    values.update(kw)
    return q.QuantizeOptions(**values)


@pytest.fixture(scope="module")
def face_int8(tmp_path_factory, clip):
    out = tmp_path_factory.mktemp("face")
    return out, q.quantize(q.detect_source(mediapipe_model(FACE)), out, _options("face", clip))


def _invoke(model: Path, frame: np.ndarray) -> list[np.ndarray]:
    """Outputs of ``model`` for a normalised float frame [1, H, W, 3], as float (int8 I/O
    quantized and dequantized with the tensors' own parameters)."""
    from ai_edge_litert.interpreter import Interpreter
    interpreter = Interpreter(model_path=str(model))
    detail = interpreter.get_input_details()[0]
    if detail["dtype"] != np.float32:
        scale, zero = detail["quantization"]
        frame = np.clip(np.round(frame / scale + zero), -128, 127).astype(detail["dtype"])
    outputs = plain_invoke(model, frame)
    values = []
    for value, out in zip(outputs, interpreter.get_output_details()):
        if value.dtype != np.float32:
            scale, zero = out["quantization"]
            value = scale * (value.astype(np.int64) - zero)
        values.append(value.astype(np.float32))
    return values


def _face_outputs(model: Path, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(regressors [896, 16], score logits [896]) of the face detector."""
    by_width = {v.shape[-1]: v for v in _invoke(model, frame)}
    return by_width[16][0], by_width[1][0, :, 0]


def _frame(image: np.ndarray) -> np.ndarray:
    return ((image.astype(np.float32) - 127.5) / 127.5)[None]


def _letterboxed(image: np.ndarray, size: int = 128) -> np.ndarray:
    """As the device feeds MediaPipe detectors (and as calibration saw the clip): aspect kept, black pad."""
    import cv2
    h, w = image.shape[:2]
    s = min(size / w, size / h)
    nw, nh = max(1, round(w * s)), max(1, round(h * s))
    canvas = np.zeros((size, size, 3), np.uint8)
    x, y = (size - nw) // 2, (size - nh) // 2
    canvas[y:y + nh, x:x + nw] = cv2.resize(image, (nw, nh), interpolation=cv2.INTER_LINEAR)
    return canvas


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """IoU of two (x offset, y offset, w, h) boxes around the same anchor."""
    lo = np.maximum(a[:2] - a[2:] / 2, b[:2] - b[2:] / 2)
    hi = np.minimum(a[:2] + a[2:] / 2, b[:2] + b[2:] / 2)
    inter = float(np.prod(np.clip(hi - lo, 0, None)))
    return inter / (float(np.prod(a[2:])) + float(np.prod(b[2:])) - inter)


def test_fusing_the_activations_keeps_the_float_model_exact(tmp_path):
    normalised = tmp_path / "normalised.tflite"
    q.normalise_float_tflite(mediapipe_model(FACE), normalised)
    assert read_model(normalised).op_counts["RELU"] == 17
    changes = fuse.rewrite_for_xnnpack(normalised, tmp_path / "fused.tflite")
    assert changes == ["17 standalone activations fused into the op before them"]
    fused = read_model(tmp_path / "fused.tflite")
    assert "RELU" not in fused.op_counts and len(fused.ops) == 90 - 17
    assert Counter(op.fused_activation for op in fused.ops if op.name in ("ADD", "CONV_2D"))["RELU"] == 17
    frame = _frame(read_rgb(coral_dir() / "grace_hopper.bmp", (128, 128)))
    for before, after in zip(_invoke(normalised, frame), _invoke(tmp_path / "fused.tflite", frame)):
        np.testing.assert_allclose(after, before, atol=1e-4)
    assert fuse.rewrite_for_xnnpack(tmp_path / "fused.tflite", tmp_path / "again.tflite") == []


def test_int8_is_delegated_whole_and_the_table_says_so(face_int8):
    out, results = face_int8
    float32, int8 = results
    assert float32.xnnpack.whole and int8.xnnpack.whole, int8.xnnpack.describe()
    data = json.loads((out / "comparison.json").read_text())
    assert data["latency_threads"] == 1
    row = data["modes"][1]
    assert row["mode"] == "int8" and row["xnnpack"]["partitions"] == 1
    assert row["xnnpack"]["delegated_nodes"] == row["xnnpack"]["total_nodes"] == int8.xnnpack.total_nodes
    table = (out / "comparison.md").read_text()
    assert "XNNPACK partitions" in table and f"| 1 | {int8.xnnpack.total_nodes}/{int8.xnnpack.total_nodes} |" in table
    if int8.latency_ms > float32.latency_ms:   # on this x86 host it is (see the README): the table says why
        assert "although XNNPACK takes it whole" in table and row["slower_because"]
    # The manifest: MediaPipe's anchors and decoding (recognised preset), its [-1, 1] input range.
    manifest = load_manifest(out / "manifest.json")
    assert manifest.layout == "ssd_anchors" and manifest.output["anchor_options"]["num_layers"] == 4
    assert manifest.input.mean == (127.5,) * 3 and manifest.input.std == (127.5,) * 3
    # The score and box heads stay float: logits span hundreds, calibration frames hold no face.
    info = read_model(int8.path)
    assert info.inputs[0].type == "INT8" and {t.type for t in info.outputs} == {"FLOAT32"}


def test_without_fusing_every_relu_splits_the_int8_graph(tmp_path, clip):
    results = q.quantize(q.detect_source(mediapipe_model(FACE)), tmp_path,
                         _options("face", clip, samples=10, stride=20, fuse=False))
    share = results[1].xnnpack
    assert (share.partitions, share.delegated_nodes, share.total_nodes) == (18, 75, 92)
    assert share.cpu_ops == Counter({"RELU": 17})
    table = (tmp_path / "comparison.md").read_text()
    assert "| 18 | 75/92 |" in table
    assert results[1].latency_ms > results[0].latency_ms     # ~4x here: 17 round trips to the reference kernels
    assert "XNNPACK splits it into 18 partitions" in table and "(17 RELU)" in table


def test_int8_finds_grace_hoppers_face_like_float(face_int8):
    """Raw outputs, float vs int8 (calibrated on the sample clip, which has no faces), on the
    Coral test image with a face: the same top anchors, a confident score, the same box."""
    out, _ = face_int8
    frame = _frame(_letterboxed(read_rgb(coral_dir() / "grace_hopper.bmp")))
    boxes_f, logits_f = _face_outputs(out / "face_float32.tflite", frame)
    boxes_q, logits_q = _face_outputs(out / "face_int8.tflite", frame)
    top_f, top_q = np.argsort(-logits_f)[:5], np.argsort(-logits_q)[:5]
    assert 1 / (1 + np.exp(-logits_f[top_f[0]])) > 0.9                 # float: a face, surely
    assert len(set(top_f) & set(top_q)) >= 4, (top_f, top_q)
    assert 1 / (1 + np.exp(-logits_q[top_f[0]])) > 0.75
    assert _iou(boxes_f[top_f[0], :4], boxes_q[top_f[0], :4]) > 0.85
    # Over all 896 anchors, those over the letterbox's black bars included (0.956 measured).
    assert np.corrcoef(boxes_f.ravel(), boxes_q.ravel())[0, 1] > 0.95
    # The positive logits are not clamped at the top of a face-less calibration range.
    assert logits_q.max() > 1.0


def test_int8_raw_outputs_follow_float_on_clip_frames(face_int8, clip_frames):
    import cv2
    out, _ = face_int8
    correlations = []
    for image in clip_frames[::50]:
        frame = _frame(_letterboxed(cv2.cvtColor(image, cv2.COLOR_BGR2RGB)))
        boxes_f, logits_f = _face_outputs(out / "face_float32.tflite", frame)
        boxes_q, logits_q = _face_outputs(out / "face_int8.tflite", frame)
        correlations.append((np.corrcoef(boxes_f.ravel(), boxes_q.ravel())[0, 1],
                             np.corrcoef(logits_f, logits_q)[0, 1]))
    boxes_corr, logits_corr = np.mean(correlations, axis=0)
    assert boxes_corr > 0.97 and logits_corr > 0.9, correlations


def test_anchor_options_from_a_file_or_a_manifest(tmp_path):
    from edge.vision.decode.mediapipe_presets import PRESETS
    options = dict(PRESETS[0].anchor_options)
    (tmp_path / "anchors.json").write_text(json.dumps(options))
    q.quantize(q.detect_source(mediapipe_model(FACE)), tmp_path / "a",
               q.QuantizeOptions(name="f", modes=("float32",), layout="ssd_anchors",
                                 anchor_options=tmp_path / "anchors.json", latency_runs=1))
    manifest = load_manifest(tmp_path / "a" / "f_float32.json")
    assert manifest.layout == "ssd_anchors" and manifest.output["anchor_options"] == options
    # A manifest given as --anchor-options: its whole output table is copied.
    q.quantize(q.detect_source(mediapipe_model(FACE)), tmp_path / "b",
               q.QuantizeOptions(name="f", modes=("float32",), layout="ssd_anchors",
                                 anchor_options=tmp_path / "a" / "f_float32.json", latency_runs=1))
    assert load_manifest(tmp_path / "b" / "f_float32.json").output == manifest.output


def test_anchor_options_that_do_not_fit_are_refused(tmp_path, float_model):
    wrong = {"input_size_width": 128, "input_size_height": 128, "num_layers": 1, "strides": [4],
             "min_scale": 0.1, "max_scale": 0.75, "aspect_ratios": [1.0], "fixed_anchor_size": True}
    (tmp_path / "wrong.json").write_text(json.dumps(wrong))
    with pytest.raises(ConfigError, match=r"makes 2048 anchors but .* outputs have \[896, 896\] rows"):
        q.quantize(q.detect_source(mediapipe_model(FACE)), tmp_path / "o",
                   q.QuantizeOptions(name="f", modes=("float32",), layout="ssd_anchors",
                                     anchor_options=tmp_path / "wrong.json", latency_runs=1))
    # A raw head edge does not recognise, without anchors: an error naming the remedy.
    with pytest.raises(ConfigError, match="comes without anchors.*--anchor-options"):
        q.quantize(q.detect_source(float_model), tmp_path / "p",
                   q.QuantizeOptions(name="s", modes=("float32",), layout="ssd_anchors", latency_runs=1))
    with pytest.raises(ConfigError, match="--anchor-options is given with a ssd_graph source"):
        q.quantize(q.SourceModel(tmp_path / "g.pb", "ssd_graph"), tmp_path / "q",
                   q.QuantizeOptions(name="s", modes=("float32",), anchor_options=tmp_path / "wrong.json"))


def test_sparse_weights_are_densified_exactly(tmp_path):
    source = mediapipe_model(DETECTORS["face_detection_full_range_sparse"])
    assert read_model(source).op_counts["DENSIFY"] == 46
    changes = q.normalise_float_tflite(source, tmp_path / "dense.tflite")
    assert "46 sparse weights densified (their DENSIFY ops removed)" in changes
    dense = read_model(tmp_path / "dense.tflite")
    assert "DENSIFY" not in dense.op_counts and "DEQUANTIZE" not in dense.op_counts
    frame = np.random.default_rng(0).uniform(-1, 1, (1, 192, 192, 3)).astype(np.float32)
    for before, after in zip(plain_invoke(source, frame), plain_invoke(tmp_path / "dense.tflite", frame)):
        np.testing.assert_array_equal(after, before)


@pytest.mark.parametrize("name", list(DETECTORS))
def test_every_mediapipe_detector_runs_whole_on_xnnpack_in_int8(name, tmp_path, clip):
    """Each detector quantized as a user would: XNNPACK takes the int8 graph whole (one
    partition); comparison.json says why whenever int8 is slower than float32."""
    results = q.quantize(q.detect_source(mediapipe_model(DETECTORS[name])), tmp_path,
                         _options(name, clip, samples=10, stride=20, latency_runs=20))
    float32, int8 = results
    assert int8.xnnpack.whole, int8.xnnpack.describe()
    assert xnnpack.measure(int8.path) == int8.xnnpack
    row = json.loads((tmp_path / "comparison.json").read_text())["modes"][1]
    assert (row["slower_because"] is not None) == (int8.latency_ms > float32.latency_ms)
    assert load_manifest(tmp_path / "manifest.json").layout == "ssd_anchors"

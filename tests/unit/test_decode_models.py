"""Every layout's decoder on real model outputs, against references computed by TensorFlow.

The models under tests/data/models/ were built by ``edge-host build-test-models`` (tiny networks
with seeded, untrained weights in the exact output layouts of real exports). Their
``reference.json`` holds the detections TensorFlow's own ops computed at build time
(``tf.image.non_max_suppression`` per class, the box coder in tf ops, ``tf.math.top_k``) on the
outputs of TensorFlow's TFLite interpreter for real frames of bikes.mp4. Here the models run in
ai-edge-litert and the numpy decoders must reproduce those references.
"""

import json
from pathlib import Path

import numpy as np
import pytest

from edge.capture.base import Frame
from edge.runtime.backend import TFLiteBackend
from edge.runtime.interpreter import load_runtime
from edge.runtime.manifest import load_manifest
from edge.runtime.model import read_model
from edge.vision.decode import DecodeParams, identify_layout, make_decoder
from edge.vision.decode.ssd_postprocess import ROLES, output_roles
from edge.vision.labels import load_labels
from edge.vision.preprocess import Preprocessor

MODELS = Path(__file__).parent.parent / "data" / "models"
LAYOUTS = ("yolov8", "yolov8_pixels", "yolov5", "ssd_anchors", "ssd_postprocess", "classification")


def run_layout(layout, kind, frames):
    directory = MODELS / layout
    manifest = load_manifest(directory / "manifest.json")
    reference = json.loads((directory / "reference.json").read_text())
    model = read_model(directory / f"{layout}_{kind}.tflite")
    backend = TFLiteBackend(model, load_runtime(), threads=1)
    pre = Preprocessor(manifest.input, model.inputs[0], backend.input_shape)
    p = reference["params"]
    params = DecodeParams(score_threshold=p.get("score_threshold", 0.0), iou_threshold=p.get("iou_threshold", 0.0),
                          max_detections=p.get("max_detections", p.get("top_k", 0)),
                          num_classes=len(load_labels(manifest.labels)))
    decoder = make_decoder(model, manifest, params)
    got = []
    for index in reference["frames"]:
        view = backend.input_view()
        pre(Frame(frames[index], index, 0.0, 0), view)
        del view
        backend.invoke()
        got.append(decoder(backend.outputs()))
    backend.close()
    return decoder, got, reference["models"][kind], model


@pytest.mark.parametrize("kind", ["int8", "float"])
@pytest.mark.parametrize("layout", LAYOUTS)
def test_decoder_matches_the_tensorflow_reference(layout, kind, clip_frames):
    decoder, got, expected, _ = run_layout(layout, kind, clip_frames)
    assert decoder.layout == layout.split("_pixels")[0]
    assert sum(len(e) for e in expected) > 0, "the reference has no detections to compare"
    for raw, ref in zip(got, expected):
        if layout == "classification":
            assert raw.class_ids.tolist() == [r["class_id"] for r in ref]
            assert raw.scores.tolist() == pytest.approx([r["score"] for r in ref], abs=1e-5)
            continue
        assert raw.class_ids.tolist() == [r["class_id"] for r in ref]
        assert raw.scores.tolist() == pytest.approx([r["score"] for r in ref], abs=1e-5)
        assert np.allclose(raw.boxes, np.array([r["box"] for r in ref]).reshape(-1, 4), atol=1e-5)


def test_layouts_are_identified_from_the_models_themselves():
    """Without a manifest: the post-processing op, Ultralytics metadata, a [1, C] output."""
    from edge.runtime.manifest import Manifest
    bare = Manifest(path=None, name="bare")
    assert identify_layout(read_model(MODELS / "yolov8/yolov8_int8.tflite"), bare) == "yolov8"
    assert identify_layout(read_model(MODELS / "ssd_postprocess/ssd_postprocess_int8.tflite"), bare) \
        == "ssd_postprocess"
    assert identify_layout(read_model(MODELS / "classification/classification_int8.tflite"), bare) \
        == "classification"


def test_tf2_output_order_is_read_from_the_op_not_assumed():
    model = read_model(MODELS / "ssd_postprocess/ssd_postprocess_int8.tflite")
    roles = output_roles(model)
    # This export orders its outputs count, boxes, classes, scores (by signature name), not the op's order.
    assert [roles[r] for r in ROLES] == [1, 2, 3, 0]
    # ...and the decoder's results above match TensorFlow's, read by signature name (detection_boxes...).


def test_int8_yolo_is_dequantised_from_its_own_parameters():
    model = read_model(MODELS / "yolov8/yolov8_int8.tflite")
    out = model.outputs[0]
    assert out.type == "INT8" and out.quantization.zero_point[0] != 0
    assert read_model(MODELS / "yolov5/yolov5_int8.tflite").outputs[0].type == "UINT8"

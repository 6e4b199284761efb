"""Ultralytics TFLite exports run with zero configuration, end to end on real frames.

No real Ultralytics export is reachable here (only PyPI, no GitHub release assets), so these are
supplements in Ultralytics' convention, built in the test: the project's tiny YOLOv8-layout test
models (tests/data/models/yolov8*, classification) with the metadata zip appended exactly as each
Ultralytics version writes it (``temp_meta.txt`` as ``str(dict)`` behind the flatbuffer for 8.0 –
8.3.116, ``metadata.json`` with ``json.dumps(indent=2)`` for 8.3.117+; see
tests/unit/test_ultralytics.py for the builders). The models run in ai-edge-litert with no
manifest for the decoder, and must give the detections in their ``reference.json`` (computed by
TensorFlow's own ops when the models were built).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from edge.capture.base import Frame
from edge.cli import main
from edge.runtime.backend import TFLiteBackend
from edge.runtime.interpreter import load_runtime
from edge.runtime.manifest import Manifest, load_manifest
from edge.runtime.model import read_model
from edge.vision.decode import DecodeParams, identify_layout, make_decoder
from edge.vision.preprocess import Preprocessor
from tests.unit.test_ultralytics import MODELS, coco_names, exporter_dict, flatbuffer_of, write_export
from tests.conformance.conftest import metadata_schema

BARE = Manifest(path=None, name="bare")
EXPORTS = [("temp_meta.txt", "8.0.200", None),               # tflite-support era, str(dict)
           ("temp_meta.txt", "8.2.50", None),
           ("temp_meta.txt", "8.3.40", {"batch": 1, "half": False, "int8": True, "nms": False, "fraction": 1.0}),
           ("metadata.json", "8.3.170", {"batch": 1, "half": False, "int8": True, "nms": False, "fraction": 1.0})]


def export(tmp_path: Path, source: str, name: str, meta: dict) -> Path:
    return write_export(tmp_path / Path(source).name, flatbuffer_of(MODELS / source), name, meta)


def run(path: Path, input_from: str, frames: list[np.ndarray], params: dict) -> tuple[object, list]:
    """The decoder made with no manifest, and its outputs on the reference frames. The input
    convention (pixels / 255, letterbox, pad 114) is taken from the test model's manifest: the
    same one Ultralytics uses."""
    reference = json.loads((MODELS / input_from / "reference.json").read_text())
    spec = load_manifest(MODELS / input_from / "manifest.json").input
    model = read_model(path)
    backend = TFLiteBackend(model, load_runtime(), threads=1)
    pre = Preprocessor(spec, model.inputs[0], backend.input_shape)
    decoder = make_decoder(model, BARE, DecodeParams(params.get("score_threshold", 0.0),
                                                     params.get("iou_threshold", 0.0),
                                                     params.get("max_detections", params.get("top_k", 0))))
    got = []
    for index in reference["frames"]:
        view = backend.input_view()
        pre(Frame(frames[index], index, 0.0, 0), view)
        del view
        backend.invoke()
        got.append(decoder(backend.outputs()))
    backend.close()
    return decoder, got


def assert_detections(got, expected):
    assert sum(len(e) for e in expected) > 0, "the reference has no detections to compare"
    for raw, ref in zip(got, expected):
        assert raw.class_ids.tolist() == [r["class_id"] for r in ref]
        assert raw.scores.tolist() == pytest.approx([r["score"] for r in ref], abs=1e-5)
        assert np.allclose(raw.boxes, np.array([r["box"] for r in ref]).reshape(-1, 4), atol=1e-5)


@pytest.mark.parametrize("kind", ["int8", "float"])
@pytest.mark.parametrize("name, version, args", EXPORTS)
def test_detect_export_runs_without_a_manifest(tmp_path, clip_frames, kind, name, version, args):
    path = export(tmp_path, f"yolov8/yolov8_{kind}.tflite", name, exporter_dict(version, "detect", coco_names(),
                                                                               args=args))
    assert identify_layout(read_model(path), BARE) == "yolov8"
    reference = json.loads((MODELS / "yolov8/reference.json").read_text())
    decoder, got = run(path, "yolov8", clip_frames, reference["params"])
    assert decoder.layout == "yolov8" and decoder.num_classes == 80 and decoder.box_divisor is None
    assert_detections(got, reference["models"][kind])


def test_an_8_0_export_with_pixel_boxes_runs_without_a_manifest(tmp_path, clip_frames):
    """yolov8_pixels keeps input pixels, as the TFLite head did before PR #3837 (8.0.13x)."""
    path = export(tmp_path, "yolov8_pixels/yolov8_pixels_float.tflite", "temp_meta.txt",
                  exporter_dict("8.0.100", "detect", coco_names()))
    reference = json.loads((MODELS / "yolov8_pixels/reference.json").read_text())
    decoder, got = run(path, "yolov8_pixels", clip_frames, reference["params"])
    assert decoder.box_divisor is not None and not decoder.channels_first
    assert_detections(got, reference["models"]["float"])


@pytest.mark.parametrize("kind", ["int8", "float"])
def test_a_yolov5_repository_export_runs_without_a_manifest(tmp_path, clip_frames, kind):
    """The YOLOv5 repository's export.py zips ``meta.txt`` = str({'stride', 'names'}) behind the model."""
    names = dict(enumerate((MODELS / "yolov5/labels.txt").read_text().splitlines()))
    path = write_export(tmp_path / "yolov5s-int8.tflite", flatbuffer_of(MODELS / f"yolov5/yolov5_{kind}.tflite"),
                        "meta.txt", {"stride": 32, "names": names})
    reference = json.loads((MODELS / "yolov5/reference.json").read_text())
    decoder, got = run(path, "yolov5", clip_frames, reference["params"])
    assert decoder.layout == "yolov5" and decoder.num_classes == 80
    assert_detections(got, reference["models"][kind])


@pytest.mark.parametrize("name", ["temp_meta.txt", "metadata.json"])
def test_classify_export_runs_without_a_manifest(tmp_path, clip_frames, name):
    names = {i: f"class_{i}" for i in range(10)}
    path = export(tmp_path, "classification/classification_int8.tflite", name,
                  exporter_dict("8.3.40", "classify", names))
    reference = json.loads((MODELS / "classification/reference.json").read_text())
    decoder, got = run(path, "classification", clip_frames, reference["params"])
    assert decoder.layout == "classification"
    for raw, ref in zip(got, reference["models"]["int8"]):
        assert raw.class_ids.tolist() == [r["class_id"] for r in ref]
        assert raw.scores.tolist() == pytest.approx([r["score"] for r in ref], abs=1e-5)


# ---- the whole tflite-support packing of ultralytics 8.0 – 8.3.116 ----

def tflite_support_export(path: Path, source: str, meta: dict) -> Path:
    """What ``Exporter._add_tflite_metadata`` did through tflite-support's MetadataPopulator: a
    TFLITE_METADATA buffer (model name/version/author/license, an RGB image input, the output
    tensor's associated file temp_meta.txt typed TENSOR_AXIS_LABELS) in the flatbuffer, and the
    file ``str(metadata)`` zipped behind it."""
    import flatbuffers
    from ai_edge_litert import schema_py_generated as tfl

    ms = metadata_schema()
    label = ms.AssociatedFileT()
    label.name, label.type = "temp_meta.txt", ms.AssociatedFileType.TENSOR_AXIS_LABELS
    image = ms.ImagePropertiesT()
    image.colorSpace = ms.ColorSpaceType.RGB
    tensor_in = ms.TensorMetadataT()
    tensor_in.name, tensor_in.description, tensor_in.content = "image", "Input image to be detected.", ms.ContentT()
    tensor_in.content.contentProperties = image
    tensor_in.content.contentPropertiesType = ms.ContentProperties.ImageProperties
    tensor_out = ms.TensorMetadataT()
    tensor_out.name, tensor_out.associatedFiles = "output", [label]
    subgraph = ms.SubGraphMetadataT()
    subgraph.inputTensorMetadata, subgraph.outputTensorMetadata = [tensor_in], [tensor_out]
    model_meta = ms.ModelMetadataT()
    model_meta.name, model_meta.version = meta["description"], meta["version"]
    model_meta.author, model_meta.license = meta["author"], meta["license"]
    model_meta.subgraphMetadata = [subgraph]
    builder = flatbuffers.Builder(0)
    builder.Finish(model_meta.Pack(builder), file_identifier=b"M001")

    model = tfl.ModelT.InitFromPackedBuf(flatbuffer_of(MODELS / source), 0)
    buffer = tfl.BufferT()
    buffer.data = list(bytes(builder.Output()))
    model.buffers.append(buffer)
    entry = tfl.MetadataT()
    entry.name, entry.buffer = "TFLITE_METADATA", len(model.buffers) - 1
    model.metadata = list(model.metadata or []) + [entry]
    builder = flatbuffers.Builder(0)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    return write_export(path, bytes(builder.Output()), "temp_meta.txt", meta)


def test_a_tflite_support_packed_export_runs_without_a_manifest(tmp_path, clip_frames):
    path = tflite_support_export(tmp_path / "yolov8n_full_integer_quant.tflite", "yolov8/yolov8_int8.tflite",
                                 exporter_dict("8.2.50", "detect", coco_names()))
    model = read_model(path)
    assert "TFLITE_METADATA" in model.metadata and model.associated_files == ("temp_meta.txt",)
    assert identify_layout(model, BARE) == "yolov8"
    reference = json.loads((MODELS / "yolov8/reference.json").read_text())
    decoder, got = run(path, "yolov8", clip_frames, reference["params"])
    assert decoder.num_classes == 80
    assert_detections(got, reference["models"]["int8"])


def test_a_tflite_support_packed_export_is_labelled_with_its_names(tmp_path):
    from edge.config import ModelConfig
    from edge.runtime import loader

    path = tflite_support_export(tmp_path / "yolov8n_full_integer_quant.tflite", "yolov8/yolov8_int8.tflite",
                                 exporter_dict("8.2.50", "detect", coco_names()))
    labels = loader.resolve(ModelConfig(path=str(path))).labels
    assert labels.rule == "ultralytics" and labels.load() == coco_names()


# ---- the CLI: `edge info -m` / `edge run -m` on a bare export ----

def test_edge_info_names_the_layout_of_a_bare_export(tmp_path, capsys):
    path = export(tmp_path, "yolov8/yolov8_int8.tflite", "temp_meta.txt", exporter_dict("8.2.50", "detect",
                                                                                      coco_names()))
    assert main(["info", "-m", str(path)]) == 0
    out = capsys.readouterr().out
    assert "temp_meta.txt" in out and "output layout: yolov8" in out


@pytest.mark.parametrize("task", ["segment", "obb"])
@pytest.mark.parametrize("command", ["info", "run"])
def test_segment_and_obb_exports_fail_with_exit_status_2(tmp_path, capsys, clip, task, command):
    """The refusal comes from the metadata's task, before any output is decoded (the flatbuffer
    here is the detect test model's: what matters is that nothing decodes it as something else)."""
    path = export(tmp_path, "yolov8/yolov8_int8.tflite", "metadata.json", exporter_dict("8.3.170", task,
                                                                                      coco_names()))
    argv = [command, "-m", str(path)]
    if command == "run":
        argv += ["--source", str(clip), "--max-frames", "2", "--jsonl", "", "--live", "off"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and f"Ultralytics {task} models are not supported" in err[0], err
    assert "export a detect" in err[0]


# ---- pose: a small pose head built with TensorFlow, int8 as Ultralytics' full_integer_quant ----

POSE_SIZE, POSE_GRID = 64, 8          # input 64x64, one 8x8 level: N = 64 anchors


def build_pose_tflite(frames: list[np.ndarray]) -> bytes:
    """A seeded, untrained network ending in the Ultralytics pose head layout [1, 56, N]:
    cx, cy, w, h (sigmoid, normalised), person score (sigmoid), 17 × (x, y, visibility) (sigmoid)."""
    import tensorflow as tf

    tf.keras.utils.set_random_seed(7)
    inputs = tf.keras.Input((POSE_SIZE, POSE_SIZE, 3), batch_size=1)
    x = tf.keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu")(inputs)
    x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu")(x)
    x = tf.keras.layers.Conv2D(56, 1, activation="sigmoid")(x)             # [1, 8, 8, 56]
    x = tf.keras.layers.Reshape((POSE_GRID * POSE_GRID, 56))(x)
    outputs = tf.keras.layers.Permute((2, 1))(x)                            # [1, 56, 64]
    model = tf.keras.Model(inputs, outputs)

    def representative():
        for frame in frames[::25]:
            image = tf.image.resize(frame[:, :, ::-1].astype(np.float32), (POSE_SIZE, POSE_SIZE)) / 255.0
            yield [image[None]]

    converter = tf.lite.TFLiteConverter.from_keras_model(model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.representative_dataset = representative
    converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    return converter.convert()


@pytest.mark.host
@pytest.mark.slow
def test_pose_export_decodes_keypoints_like_numpy(tmp_path, clip_frames):
    """Reference: plain LiteRT outputs, fully dequantised, thresholded and NMS'd in numpy (the test's
    own code, tests/unit/test_ultralytics.py:reference_pose); the decoder dequantises candidates only."""
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    from tests.unit.test_ultralytics import COCO_POSE_NAMES, reference_pose

    path = tmp_path / "yolov8n-pose_full_integer_quant.tflite"
    path.write_bytes(build_pose_tflite(clip_frames))
    write_export(path, path.read_bytes(), "metadata.json",
                 exporter_dict("8.3.40", "pose", COCO_POSE_NAMES, (POSE_SIZE, POSE_SIZE), (17, 3)))
    model = read_model(path)
    assert identify_layout(model, BARE) == "yolov8_pose"
    decoder = make_decoder(model, BARE, DecodeParams(0.3, 0.45, 100))
    interpreter = Interpreter(model_path=str(path), num_threads=1)
    interpreter.allocate_tensors()
    inp, out = interpreter.get_input_details()[0], interpreter.get_output_details()[0]
    scale, zero_point = out["quantization"]
    total = 0
    for frame in clip_frames[::50]:
        rgb = cv2.resize(cv2.cvtColor(frame, cv2.COLOR_BGR2RGB), (POSE_SIZE, POSE_SIZE))
        interpreter.set_tensor(inp["index"], (rgb.astype(np.int16) - 128).astype(np.int8)[None])
        interpreter.invoke()
        raw_out = interpreter.get_tensor(out["index"]).copy()
        real = scale * (raw_out[0].astype(np.int64) - zero_point)
        boxes, scores, points = reference_pose(real, 0.3, 0.45, size=(POSE_SIZE, POSE_SIZE))
        got = decoder((raw_out,))
        total += len(scores)
        assert got.scores.tolist() == pytest.approx(scores.tolist(), abs=1e-6)
        assert np.allclose(got.boxes, boxes, atol=1e-6)
        assert got.keypoints.shape == (len(scores), 17, 2) and np.allclose(got.keypoints, points, atol=1e-6)
    assert total > 0, "the seeded network gave no candidate above the threshold"

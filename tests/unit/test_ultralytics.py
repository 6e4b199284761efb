"""Ultralytics TFLite exports with zero configuration: their metadata under every name and format.

No real Ultralytics export can be downloaded here (only PyPI is reachable, not GitHub release
assets), so the files below are supplements in Ultralytics' convention, built in the test: the
project's own test models (tests/data/models/) with the metadata appended exactly as the
exporters do (read in ultralytics/engine/exporter.py and the YOLOv5 export.py):

* ``temp_meta.txt``: ``str(metadata)`` (a Python-literal dict), packed by tflite-support's
  MetadataPopulator as a zip concatenated behind the flatbuffer (ultralytics 8.0 – 8.3.116; the
  populator's TFLITE_METADATA buffer itself is not reproduced here);
* ``metadata.json``: ``json.dumps(metadata, indent=2)`` written with
  ``zipfile.ZipFile(file, "a", ZIP_DEFLATED)`` (ultralytics 8.3.117+);
* ``meta.txt``: ``str({"stride": .., "names": ..})`` (the YOLOv5 repository's exports).

The pose decoder is checked on synthetic head tensors against a numpy reference written here.
"""

from __future__ import annotations

import io
import json
import logging
import zipfile
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.runtime import ultralytics
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo, Quantization, TensorInfo, read_model
from edge.vision.decode import DecodeParams, identify_layout, make_decoder

MODELS = Path(__file__).parent.parent / "data" / "models"
COCO_POSE_NAMES = {0: "person"}
BARE = Manifest(path=None, name="bare")


# ---- builders in Ultralytics' convention (shared with tests/conformance/test_ultralytics.py) ----

def flatbuffer_of(path: Path) -> bytes:
    """The model bytes without any zip appended behind them."""
    data = path.read_bytes()
    try:
        with zipfile.ZipFile(path) as archive:
            start = min(info.header_offset for info in archive.infolist())
    except zipfile.BadZipFile:
        return data
    return data[:start]


def exporter_dict(version: str, task: str, names: dict[int, str], imgsz=(128, 128), kpt_shape=None,
                  args: dict | None = None) -> dict:
    """The ``self.metadata`` dict of Ultralytics' Exporter (keys as its versions write them)."""
    meta = {"description": f"Ultralytics YOLOv8n{'' if task == 'detect' else '-' + task} model trained on data.yaml",
            "author": "Ultralytics", "date": "2024-05-01T10:00:00.000000", "version": version,
            "license": "AGPL-3.0 License (https://ultralytics.com/license)", "docs": "https://docs.ultralytics.com",
            "stride": 32, "task": task, "batch": 1, "imgsz": list(imgsz), "names": dict(names)}
    if args is not None:                  # 8.3.x: the format's export arguments, and the channel count
        meta["args"] = args
        meta["channels"] = 3
    if kpt_shape is not None:
        meta["kpt_shape"] = list(kpt_shape)
    return meta


def appended(flatbuffer: bytes, name: str, text: str, compression=zipfile.ZIP_STORED) -> bytes:
    """``flatbuffer`` + a zip holding ``name`` (what tflite-support's populator leaves behind)."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression) as archive:
        archive.writestr(name, text)
    return flatbuffer + buffer.getvalue()


def write_export(path: Path, flatbuffer: bytes, name: str, meta: dict) -> Path:
    """An export carrying ``meta`` under ``name`` in the format its exporter used."""
    if name == "metadata.json":          # 8.3.117+: zipfile in append mode on the .tflite itself
        path.write_bytes(flatbuffer)
        with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
            archive.writestr(name, json.dumps(meta, indent=2))
    else:                                # str(dict) packed by tflite-support (temp_meta.txt, meta.txt)
        path.write_bytes(appended(flatbuffer, name, str(meta)))
    return path


def yolov8_export(tmp_path: Path, name: str, meta: dict, source: str = "yolov8/yolov8_int8.tflite") -> Path:
    return write_export(tmp_path / f"export_{name.replace('.', '_')}.tflite", flatbuffer_of(MODELS / source),
                        name, meta)


def coco_names() -> dict[int, str]:
    lines = (MODELS / "yolov8" / "labels.txt").read_text().splitlines()
    return dict(enumerate(lines))


# ---- reading the metadata ----

@pytest.mark.parametrize("name", ["metadata.json", "temp_meta.txt", "metadata.txt"])
def test_every_file_name_and_format_reads_the_same(tmp_path, name):
    meta = exporter_dict("8.3.40", "detect", coco_names(), imgsz=(128, 96), args={"batch": 1, "int8": True})
    got = ultralytics.read_metadata(read_model(yolov8_export(tmp_path, name, meta)))
    assert got is not None and got.source == name
    assert got.task == "detect" and got.names == coco_names() and len(got.names) == 80
    assert got.imgsz == (128, 96) and got.stride == 32 and got.kpt_shape is None
    assert got.version == (8, 3, 40) and got.export_args == {"batch": 1, "int8": True}


def test_yolov5_meta_txt_has_stride_and_names_only(tmp_path):
    names = [f"c{i}" for i in range(80)]
    path = write_export(tmp_path / "v5.tflite", flatbuffer_of(MODELS / "yolov5/yolov5_int8.tflite"), "meta.txt",
                        {"stride": 32, "names": names})
    model = read_model(path)
    got = ultralytics.read_metadata(model)
    assert got.source == "meta.txt" and got.task == "detect" and got.names == dict(enumerate(names))
    assert got.imgsz == (128, 128)                 # from the model's input: the file has no imgsz
    assert identify_layout(model, BARE) == "yolov5"


def test_no_metadata_is_none():
    assert ultralytics.read_metadata(read_model(MODELS / "yolov5/yolov5_int8.tflite")) is None


@pytest.mark.parametrize("name, text, why", [
    ("metadata.json", "{not json", "malformed"),
    ("temp_meta.txt", "{'names': {0: 'a'}, 'task': __import__('os')}", "malformed"),   # never evaluated
    ("temp_meta.txt", "['a', 'b']", "not a dict"),
    ("metadata.json", json.dumps({"task": "detect"}), "not Ultralytics metadata"),
    ("metadata.json", json.dumps({"task": "depth", "names": {"0": "a"}}), "not Ultralytics metadata"),
    ("metadata.json", json.dumps({"names": {"0": "a"}, "imgsz": "big"}), "not Ultralytics metadata"),
    ("metadata.json", json.dumps({"names": {"0": "a"}, "task": "pose", "kpt_shape": [17, 4]}), "not Ultralytics"),
    ("metadata.json", b"\xff\xfe{}", "not UTF-8"),
])
def test_malformed_metadata_is_ignored_with_a_warning_naming_the_file(tmp_path, caplog, name, text, why):
    path = tmp_path / "bad.tflite"
    path.write_bytes(appended(flatbuffer_of(MODELS / "yolov8/yolov8_int8.tflite"), name, text))
    with caplog.at_level(logging.WARNING, logger="edge.runtime.ultralytics"):
        assert ultralytics.read_metadata(read_model(path)) is None
    assert any(name in r.getMessage() and why in r.getMessage() for r in caplog.records), caplog.text


def test_a_member_over_1_mb_is_refused(tmp_path, caplog):
    meta = exporter_dict("8.3.40", "detect", coco_names())
    meta["description"] = "x" * (ultralytics.MAX_BYTES + 1)
    path = yolov8_export(tmp_path, "metadata.json", meta)
    with caplog.at_level(logging.WARNING, logger="edge.runtime.ultralytics"):
        assert ultralytics.read_metadata(read_model(path)) is None
    assert "metadata.json" in caplog.text and "more than" in caplog.text


# ---- units, from the exporting version and arguments ----

@pytest.mark.parametrize("version, args, boxes, keypoints", [
    ("8.0.100", None, "pixels", "pixels"),               # before PR #3837: pixel boxes
    ("8.1.0", None, "normalized", "pixels"),              # before 8.3.26: pixel keypoints
    ("8.3.25", {"int8": True}, "normalized", "pixels"),
    ("8.3.26", {"int8": True}, "normalized", "normalized"),
    ("8.3.170", {"batch": 1, "int8": True, "keras": False, "nms": False}, "pixels", "pixels"),  # format=saved_model
])
def test_units_follow_the_exporter(version, args, boxes, keypoints):
    meta = ultralytics._meta("metadata.json", exporter_dict(version, "pose", COCO_POSE_NAMES, kpt_shape=(17, 3),
                                                            args=args), ())
    assert ultralytics.box_units(meta)[0] == boxes
    assert ultralytics.keypoint_units(meta)[0] == keypoints


def test_an_8_0_export_decodes_pixel_boxes_without_a_manifest(tmp_path):
    """The float twin in tests/data/models/yolov8_pixels keeps pixel boxes, as 8.0.x exports did."""
    path = yolov8_export(tmp_path, "temp_meta.txt", exporter_dict("8.0.100", "detect", coco_names()),
                         source="yolov8_pixels/yolov8_pixels_float.tflite")
    decoder = make_decoder(read_model(path), BARE, DecodeParams(0.5, 0.45, 50))
    assert decoder.box_divisor is not None and decoder.box_divisor.tolist() == [128, 128, 128, 128]
    pinned = make_decoder(read_model(path), Manifest(path=None, name="m", output={"box_units": "normalized"}),
                          DecodeParams(0.5, 0.45, 50))
    assert pinned.box_divisor is None                    # output.box_units is the manual override


# ---- tasks: detect, classify, segment and obb ----

def test_detect_export_needs_no_manifest(tmp_path):
    model = read_model(yolov8_export(tmp_path, "temp_meta.txt", exporter_dict("8.2.0", "detect", coco_names())))
    assert identify_layout(model, BARE) == "yolov8"
    decoder = make_decoder(model, BARE, DecodeParams(0.5, 0.45, 50))
    assert decoder.layout == "yolov8" and decoder.num_classes == 80 and decoder.channels_first


@pytest.mark.parametrize("task", ["segment", "obb"])
@pytest.mark.parametrize("name", ["metadata.json", "temp_meta.txt"])
def test_segment_and_obb_are_refused_in_one_line(tmp_path, task, name):
    model = read_model(yolov8_export(tmp_path, name, exporter_dict("8.3.40", task, coco_names())))
    for call in (lambda: identify_layout(model, BARE), lambda: make_decoder(model, BARE),
                 lambda: make_decoder(model, BARE, layout="yolov8"),
                 lambda: make_decoder(model, BARE, layout="classification")):
        with pytest.raises(ModelError, match=f"Ultralytics {task} models are not supported") as err:
            call()
        assert "\n" not in str(err.value) and "export a detect" in str(err.value)


def test_in_model_nms_is_refused(tmp_path):
    meta = exporter_dict("8.3.170", "detect", coco_names(), args={"batch": 1, "int8": True, "nms": True})
    with pytest.raises(ModelError, match="nms=False"):
        identify_layout(read_model(yolov8_export(tmp_path, "metadata.json", meta)), BARE)


def classify_export(tmp_path: Path, names: dict[int, str], name: str = "metadata.json") -> ModelInfo:
    flat = flatbuffer_of(MODELS / "classification/classification_int8.tflite")   # [1, 10] uint8
    meta = exporter_dict("8.3.40", "classify", names, imgsz=(128, 128))
    return read_model(write_export(tmp_path / "cls.tflite", flat, name, meta))


@pytest.mark.parametrize("name", ["metadata.json", "temp_meta.txt"])
def test_classify_export_is_the_classification_layout_with_its_names(tmp_path, name):
    names = {i: f"class_{i}" for i in range(10)}
    model = classify_export(tmp_path, names, name)
    assert identify_layout(model, BARE) == "classification"
    assert make_decoder(model, BARE).layout == "classification"
    assert ultralytics.read_metadata(model).names == names


def test_classify_names_must_match_the_output(tmp_path):
    model = classify_export(tmp_path, {i: f"c{i}" for i in range(7)})
    with pytest.raises(ModelError, match="7 names.*one probability per name"):
        make_decoder(model, BARE)


# ---- pose: the decoder on synthetic heads, against a numpy reference written here ----

K, D, N = 17, 3, 60


def pose_model(tmp_path: Path, tensor: TensorInfo, meta: dict | None) -> ModelInfo:
    """A ModelInfo whose file is only the metadata zip (the decoder reads nothing else)."""
    path = tmp_path / "pose.tflite"
    files: tuple[str, ...] = ()
    if meta is not None:
        path.write_bytes(appended(b"", "metadata.json", json.dumps(meta)))
        files = ("metadata.json",)
    inp = TensorInfo(0, "images", (1, 320, 256, 3), "FLOAT32", None)
    return ModelInfo(path, 0, "", (inp,), (tensor,), (inp, tensor), (), 1, (), (), files)


def synthetic_head(rng: np.random.Generator, box_units: str, point_units: str) -> np.ndarray:
    """[56, N]: cx, cy, w, h, person score, 17 × (x, y, visibility); clusters so that NMS matters."""
    pixels = np.array([256, 320], np.float32)
    scale = pixels if box_units == "pixels" else np.ones(2, np.float32)
    point_scale = pixels if point_units == "pixels" else np.ones(2, np.float32)
    centres = rng.uniform(0.2, 0.8, (N // 4, 2)).repeat(4, axis=0) + rng.normal(0, 0.01, (N, 2))
    sizes = rng.uniform(0.1, 0.3, (N, 2))
    score = rng.uniform(0, 1, (N, 1))
    points = np.concatenate([rng.uniform(0, 1, (N, K, 2)) * point_scale, rng.uniform(0, 1, (N, K, 1))], axis=2)
    head = np.concatenate([centres * scale, sizes * scale, score, points.reshape(N, K * D)], axis=1)
    return head.T.astype(np.float32)


def reference_pose(head: np.ndarray, threshold: float, iou_threshold: float, size=(256, 320),
                   box_pixels=False, point_pixels=False):
    """Plain numpy: threshold, xyxy, greedy NMS by score, keypoints x, y; all normalised."""
    rows = head.T.astype(np.float64)
    div = np.array([*size, *size]) if box_pixels else np.ones(4)
    boxes = np.stack([rows[:, 0] - rows[:, 2] / 2, rows[:, 1] - rows[:, 3] / 2,
                      rows[:, 0] + rows[:, 2] / 2, rows[:, 1] + rows[:, 3] / 2], 1) / div
    scores = rows[:, 4]
    points = rows[:, 5:].reshape(-1, K, D)[:, :, :2] / (np.array(size) if point_pixels else 1)
    order = [i for i in np.argsort(-scores, kind="stable") if scores[i] >= threshold]
    kept: list[int] = []
    for i in order:
        def iou(j):
            x1, y1 = max(boxes[i, 0], boxes[j, 0]), max(boxes[i, 1], boxes[j, 1])
            x2, y2 = min(boxes[i, 2], boxes[j, 2]), min(boxes[i, 3], boxes[j, 3])
            inter = max(0, x2 - x1) * max(0, y2 - y1)
            area = lambda b: (b[2] - b[0]) * (b[3] - b[1])   # noqa: E731
            return inter / (area(boxes[i]) + area(boxes[j]) - inter)
        if all(iou(j) <= iou_threshold for j in kept):
            kept.append(i)
    return boxes[kept], scores[kept], points[kept]


@pytest.mark.parametrize("version, box_units, point_units", [
    ("8.3.40", "normalized", "normalized"), ("8.2.0", "normalized", "pixels"), ("8.0.100", "pixels", "pixels")])
def test_pose_float_head_matches_numpy(tmp_path, version, box_units, point_units):
    head = synthetic_head(np.random.default_rng(3), box_units, point_units)
    tensor = TensorInfo(1, "Identity", (1, 4 + 1 + K * D, N), "FLOAT32", None)
    model = pose_model(tmp_path, tensor, exporter_dict(version, "pose", COCO_POSE_NAMES, (320, 256), (K, D)))
    assert identify_layout(model, BARE) == "yolov8_pose"
    decoder = make_decoder(model, BARE, DecodeParams(0.5, 0.45, 100))
    raw = decoder((head[None],))
    boxes, scores, points = reference_pose(head, 0.5, 0.45, box_pixels=box_units == "pixels",
                                           point_pixels=point_units == "pixels")
    assert len(scores) > 3 and len(scores) < (head[4] >= 0.5).sum()       # NMS removed some
    assert raw.scores.tolist() == pytest.approx(scores.tolist(), abs=1e-6)
    assert np.allclose(raw.boxes, boxes, atol=1e-6) and raw.class_ids.tolist() == [0] * len(scores)
    assert raw.keypoints.shape == (len(scores), K, 2) and raw.keypoints.dtype == np.float32
    assert np.allclose(raw.keypoints, points, atol=1e-6)


def test_pose_int8_head_dequantises_only_candidates_and_matches_numpy(tmp_path):
    head = synthetic_head(np.random.default_rng(5), "normalized", "normalized")
    scale, zero_point = 1 / 255, -128
    q = np.clip(np.round(head / scale) + zero_point, -128, 127).astype(np.int8)
    real = (scale * (q.astype(np.int64) - zero_point)).astype(np.float32)
    tensor = TensorInfo(1, "Identity", (1, N, 4 + 1 + K * D), "INT8", Quantization((scale,), (zero_point,)))
    model = pose_model(tmp_path, tensor, exporter_dict("8.3.40", "pose", COCO_POSE_NAMES, (320, 256), (K, D)))
    decoder = make_decoder(model, BARE, DecodeParams(0.5, 0.45, 100))
    assert not decoder.channels_first                     # [1, N, 56]: transposed export
    raw = decoder((q.T[None].copy(),))
    boxes, scores, points = reference_pose(real, 0.5, 0.45)
    assert raw.scores.tolist() == pytest.approx(scores.tolist(), abs=1e-6)
    assert np.allclose(raw.boxes, boxes, atol=1e-6) and np.allclose(raw.keypoints, points, atol=1e-6)


def test_pose_needs_kpt_shape_and_the_right_channel_count(tmp_path):
    tensor = TensorInfo(1, "Identity", (1, 56, N), "FLOAT32", None)
    meta = exporter_dict("8.3.40", "pose", COCO_POSE_NAMES, (320, 256))
    with pytest.raises(ModelError, match="kpt_shape"):
        make_decoder(pose_model(tmp_path, tensor, meta), BARE)
    pinned = Manifest(path=None, name="m", output={"layout": "yolov8_pose", "num_classes": 1, "kpt_shape": [17, 3]})
    assert make_decoder(pose_model(tmp_path, tensor, None), pinned).kpt_shape == (17, 3)
    wrong = exporter_dict("8.3.40", "pose", COCO_POSE_NAMES, (320, 256), (17, 2))
    with pytest.raises(ModelError, match=r"17x2 keypoints expects \[1, 39, N\]"):
        make_decoder(pose_model(tmp_path, tensor, wrong), BARE)


def test_a_yolov5_classify_export_with_meta_txt_is_a_classifier(tmp_path):
    """YOLOv5's export.py zips meta.txt (no task key) behind every TFLite export, classifiers too."""
    names = {i: f"c{i}" for i in range(10)}
    flat = flatbuffer_of(MODELS / "classification/classification_int8.tflite")
    path = write_export(tmp_path / "yolov5s-cls.tflite", flat, "meta.txt", {"stride": 32, "names": names})
    model = read_model(path)
    assert identify_layout(model, BARE) == "classification"
    assert make_decoder(model, BARE).layout == "classification"

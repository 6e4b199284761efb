"""Small TFLite models, one per output layout, int8 and float, with references for the decoders.

``edge-host build-test-models --out tests/data/models`` writes, per layout, a directory with
``<layout>_int8.tflite``, ``<layout>_float.tflite``, ``labels.txt``, ``manifest.json`` and
``reference.json``. The networks are tiny convolution stacks with fixed, seeded weights (no
training: their detections mean nothing, but their *layouts* are those of real exports), run
on real frames of the sample clip. ``reference.json`` holds, per model and frame, the results
computed here with TensorFlow's own operations (``tf.image.non_max_suppression`` per class,
``tf.math.top_k``, the box coder in tf ops) on the outputs of TensorFlow's TFLite interpreter,
so the runtime's numpy decoders are checked against an independent reference by tests that need
no TensorFlow.

Layouts: ``yolov8`` ([1, 84, N], int8 I/O, Ultralytics ``metadata.json`` zipped behind it),
``yolov8_pixels`` ([1, N, 84] with boxes in
input pixels, float I/O around an int8 body, no metadata), ``yolov5`` ([1, N, 85] with objectness,
uint8 I/O), ``ssd_anchors`` (box encodings + class logits,
MediaPipe anchor options, int8 outputs), ``ssd_postprocess`` (TFLite_Detection_PostProcess with
TF2-style named outputs), ``classification`` ([1, 10] softmax, uint8 I/O).
"""

from __future__ import annotations

import json
import logging
import math
import tempfile
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from edge.capture.base import Frame
from edge.host import manifests
from edge.host.calibration import representative_dataset
from edge.host.tf import tensorflow
from edge.runtime.manifest import FORMAT, InputSpec
from edge.runtime.model import read_model
from edge.vision.decode import mediapipe_anchors as anchor_gen
from edge.vision.decode.base import dequantize
from edge.vision.preprocess import Preprocessor

log = logging.getLogger(__name__)

SIZE = 128
COCO80 = ["person", "bicycle", "car", "motorcycle", "airplane", "bus", "train", "truck", "boat", "traffic light",
          "fire hydrant", "stop sign", "parking meter", "bench", "bird", "cat", "dog", "horse", "sheep", "cow",
          "elephant", "bear", "zebra", "giraffe", "backpack", "umbrella", "handbag", "tie", "suitcase", "frisbee",
          "skis", "snowboard", "sports ball", "kite", "baseball bat", "baseball glove", "skateboard", "surfboard",
          "tennis racket", "bottle", "wine glass", "cup", "fork", "knife", "spoon", "bowl", "banana", "apple",
          "sandwich", "orange", "broccoli", "carrot", "hot dog", "pizza", "donut", "cake", "chair", "couch",
          "potted plant", "bed", "dining table", "toilet", "tv", "laptop", "mouse", "remote", "keyboard",
          "cell phone", "microwave", "oven", "toaster", "sink", "refrigerator", "book", "clock", "vase",
          "scissors", "teddy bear", "hair drier", "toothbrush"]
REFERENCE_FRAMES = (0, 60, 120, 180, 240)
ANCHOR_OPTIONS = {"input_size_width": SIZE, "input_size_height": SIZE, "num_layers": 4, "min_scale": 0.15,
                  "max_scale": 0.75, "strides": [8, 16, 16, 16], "aspect_ratios": [1.0],
                  "interpolated_scale_aspect_ratio": 1.0, "fixed_anchor_size": False}
SSD_CLASSES = ["person", "bicycle", "car"]
BOX_SCALES = [10.0, 10.0, 5.0, 5.0]
LAYOUTS = ("yolov8", "yolov8_pixels", "yolov5", "ssd_anchors", "ssd_postprocess", "classification")


class Net:
    """Convolutions with seeded constant weights; layer i always gets the same weights, so every
    trace of the function builds the same network (constants, not variables: nothing to lose)."""

    def __init__(self, seed: int):
        self.seed = seed
        self.layer = 0
        self.tf = tensorflow()

    def reset(self) -> None:
        self.layer = 0

    def conv(self, x, cout: int, k: int = 3, stride: int = 1, act: bool = True, bias: float = 0.0,
             gain: float = 1.0):
        tf = self.tf
        rng = np.random.default_rng([self.seed, self.layer])
        self.layer += 1
        cin = int(x.shape[-1])
        w = rng.normal(0, gain * math.sqrt(2.0 / (k * k * cin)), (k, k, cin, cout)).astype(np.float32)
        b = (rng.normal(0, 0.1, cout) + bias).astype(np.float32)
        y = tf.nn.conv2d(x, tf.constant(w), stride, "SAME") + tf.constant(b)
        return tf.nn.relu6(y) if act else y

    def backbone(self, x):
        """[1, 128, 128, 3] → feature maps at strides 8, 16 and 32."""
        self.reset()
        x = self.conv(x, 8, stride=2)
        x = self.conv(x, 16, stride=2)
        p3 = self.conv(x, 24, stride=2)
        p4 = self.conv(p3, 32, stride=2)
        p5 = self.conv(p4, 48, stride=2)
        return p3, p4, p5


def _grid(tf, h: int, w: int):
    ys, xs = np.meshgrid(np.arange(h, dtype=np.float32), np.arange(w, dtype=np.float32), indexing="ij")
    return tf.constant(xs.reshape(1, h, w, 1)), tf.constant(ys.reshape(1, h, w, 1))


def _yolo_rows(net: Net, feature, anchors: int, channels: int, objectness: bool):
    tf = net.tf
    _, h, w, _ = feature.shape
    t = tf.reshape(net.conv(feature, anchors * channels, k=1, act=False, gain=2.0), [1, h, w, anchors, channels])
    gx, gy = _grid(tf, h, w)
    gx, gy = gx[..., None], gy[..., None]
    cx = (gx + 0.5 + tf.tanh(t[..., 0:1])) / w
    cy = (gy + 0.5 + tf.tanh(t[..., 1:2])) / h
    size = tf.sigmoid(t[..., 2:4]) * 0.6
    scores = tf.sigmoid(t[..., 4:] - (1.5 if objectness else 4.5))   # v5: a product of two
    return tf.reshape(tf.concat([cx, cy, size, scores], -1), [1, h * w * anchors, channels])


def yolov8_forward(net: Net):
    tf = net.tf

    def forward(image):
        rows = [_yolo_rows(net, f, 1, 84, False) for f in net.backbone(image)]
        return tf.transpose(tf.concat(rows, 1), [0, 2, 1])          # [1, 84, N]
    return forward


def yolov8_pixels_forward(net: Net):
    """Older Ultralytics exports: [1, N, 84] rows, boxes in input pixels."""
    tf = net.tf
    scale = tf.constant(np.array([SIZE, SIZE, SIZE, SIZE] + [1.0] * 80, np.float32))

    def forward(image):
        return tf.concat([_yolo_rows(net, f, 1, 84, False) for f in net.backbone(image)], 1) * scale
    return forward


def yolov5_forward(net: Net):
    tf = net.tf

    def forward(image):
        return tf.concat([_yolo_rows(net, f, 3, 85, True) for f in net.backbone(image)], 1)   # [1, 3N, 85]
    return forward


def _ssd_raw(net: Net, image):
    """Box encodings [1, 896, 4] and class logits [1, 896, 1 + classes] on the MediaPipe anchors."""
    tf = net.tf
    p3, p4, _ = net.backbone(image)
    c = len(SSD_CLASSES) + 1
    boxes, logits = [], []
    for feature, k in ((p3, 2), (p4, 6)):
        _, h, w, _ = feature.shape
        boxes.append(tf.reshape(net.conv(feature, k * 4, k=1, act=False, gain=0.5), [1, h * w * k, 4]))
        logits.append(tf.reshape(net.conv(feature, k * c, k=1, act=False, bias=-1.0, gain=2.0), [1, h * w * k, c]))
    return tf.concat(boxes, 1), tf.concat(logits, 1)


def ssd_anchors_forward(net: Net):
    def forward(image):
        boxes, logits = _ssd_raw(net, image)
        return {"box_encodings": boxes, "class_logits": logits}
    return forward


def _implements(max_detections: int, score_threshold: float, iou: float) -> str:
    y, x, h, w = BOX_SCALES
    attrs = [("max_detections", f"i: {max_detections}"), ("max_classes_per_detection", "i: 1"),
             ("detections_per_class", "i: 100"), ("use_regular_nms", "b: false"),
             ("nms_score_threshold", f"f: {score_threshold:f}"), ("nms_iou_threshold", f"f: {iou:f}"),
             ("y_scale", f"f: {y:f}"), ("x_scale", f"f: {x:f}"), ("h_scale", f"f: {h:f}"),
             ("w_scale", f"f: {w:f}"), ("num_classes", f"i: {len(SSD_CLASSES)}")]
    return " ".join(['name: "TFLite_Detection_PostProcess"'] +
                    [f'attr {{ key: "{k}" value {{ {v} }} }}' for k, v in attrs])


def ssd_postprocess_forward(net: Net):
    tf = net.tf
    anchors = tf.constant(_anchors())

    @tf.function(experimental_implements=_implements(10, 0.3, 0.5))
    def detection_postprocess(box_encodings, class_predictions, anchor_boxes):
        zero = tf.constant(0.0, dtype=tf.float32)      # replaced by the TFLite custom op
        return zero, zero, zero, zero

    def forward(image):
        boxes, logits = _ssd_raw(net, image)
        outputs = detection_postprocess(boxes, tf.sigmoid(logits), anchors)
        # TF2 OD API exports name the outputs; the converter orders them by these names, which is
        # not the op's order (boxes, classes, scores, count).
        return {"detection_boxes": outputs[0], "detection_classes": outputs[1],
                "detection_scores": outputs[2], "num_detections": outputs[3]}
    return forward


def classification_forward(net: Net):
    tf = net.tf

    def forward(image):
        _, _, p5 = net.backbone(image)
        pooled = tf.reduce_mean(p5, axis=[1, 2], keepdims=True)
        logits = net.conv(pooled, 10, k=1, act=False, gain=3.0)
        return tf.nn.softmax(tf.reshape(logits, [1, 10]))
    return forward


def _anchors() -> np.ndarray:
    return anchor_gen.generate(anchor_gen.AnchorOptions.from_dict(ANCHOR_OPTIONS))


@dataclass(frozen=True)
class Spec:
    layout: str
    forward: Callable
    io: str                    # "int8", "uint8" (the int8 model's input, and output unless float_outputs) or "float"
    float_outputs: bool
    labels: list[str]
    output: dict
    reference: dict            # decoding parameters of the reference
    name: str = ""             # directory and file stem when several models share a layout

    @property
    def key(self) -> str:
        return self.name or self.layout


def specs() -> list[Spec]:
    classes = [f"class{i}" for i in range(10)]
    return [
        Spec("yolov8", yolov8_forward, "int8", False, COCO80, {"layout": "yolov8"},
             {"score_threshold": 0.5, "iou_threshold": 0.45, "max_detections": 50}),
        Spec("yolov8", yolov8_pixels_forward, "float", True, COCO80,
             {"layout": "yolov8", "num_classes": 80, "box_units": "pixels"},
             {"score_threshold": 0.5, "iou_threshold": 0.45, "max_detections": 50}, name="yolov8_pixels"),
        Spec("yolov5", yolov5_forward, "uint8", False, COCO80, {"layout": "yolov5", "num_classes": 80},
             {"score_threshold": 0.2, "iou_threshold": 0.45, "max_detections": 50}),
        Spec("ssd_anchors", ssd_anchors_forward, "uint8", False, SSD_CLASSES,
             {"layout": "ssd_anchors", "anchor_options": ANCHOR_OPTIONS, "box_scales": BOX_SCALES,
              "score": "sigmoid", "background_class": True, "num_classes": len(SSD_CLASSES)},
             {"score_threshold": 0.6, "iou_threshold": 0.6, "max_detections": 50}),
        Spec("ssd_postprocess", ssd_postprocess_forward, "uint8", True, SSD_CLASSES,
             {"layout": "ssd_postprocess", "max_detections": 10}, {"score_threshold": 0.5}),
        Spec("classification", classification_forward, "uint8", False, classes, {"layout": "classification"},
             {"top_k": 3}),
    ]


def _saved_model(spec: Spec, directory: Path) -> Path:
    tf = tensorflow()
    net = Net(seed=sum(map(ord, spec.layout)))     # variants of a layout share its weights
    forward = spec.forward(net)
    signature = tf.TensorSpec([1, SIZE, SIZE, 3], tf.float32, name="images")

    @tf.function(input_signature=[signature])
    def serve(images):
        return forward(images)

    module = tf.Module()
    module.serve = serve
    path = directory / spec.key
    tf.saved_model.save(module, str(path), signatures={"serving_default": serve.get_concrete_function()})
    return path


def _convert(saved: Path, spec: Spec, int8: bool, calibration: Path) -> bytes:
    tf = tensorflow()
    converter = tf.lite.TFLiteConverter.from_saved_model(str(saved))
    if int8:
        converter.optimizations = [tf.lite.Optimize.DEFAULT]
        converter.representative_dataset = representative_dataset(
            calibration, InputSpec(mean=(0.0,) * 3, std=(255.0,) * 3), (SIZE, SIZE), samples=40, stride=6,
            progress=False)
        converter.target_spec.supported_ops = [tf.lite.OpsSet.TFLITE_BUILTINS_INT8]
        if spec.io != "float":          # "float": int8 inside, float32 I/O (Ultralytics' *_int8.tflite)
            io_type = tf.int8 if spec.io == "int8" else tf.uint8
            converter.inference_input_type = io_type
            if not spec.float_outputs:
                converter.inference_output_type = io_type
    return converter.convert()


def _frames(calibration: Path) -> list[np.ndarray]:
    import cv2
    cap = cv2.VideoCapture(str(calibration))
    frames = []
    index, last = 0, max(REFERENCE_FRAMES)
    ok, image = cap.read()
    while ok:                       # keep only the reference frames, stop after the last one
        if index in REFERENCE_FRAMES:
            frames.append(image)
        if index == last:
            break
        index += 1
        ok, image = cap.read()
    cap.release()
    return frames


def input_spec(layout: str) -> InputSpec:
    return InputSpec(colour="RGB", mean=(0.0,) * 3, std=(255.0,) * 3,
                     resize="letterbox" if layout.startswith("yolo") else "stretch", pad_value=114)


def _run(path: Path, images: list[np.ndarray], spec: InputSpec) -> list[list[np.ndarray]]:
    """Raw outputs of TensorFlow's TFLite interpreter, in model-output order, per frame."""
    tf = tensorflow()
    interpreter = tf.lite.Interpreter(model_path=str(path))
    interpreter.allocate_tensors()
    detail = interpreter.get_input_details()[0]
    info = read_model(path)
    pre = Preprocessor(spec, info.inputs[0], tuple(detail["shape"]))
    results = []
    for image in images:
        buffer = np.zeros(detail["shape"], detail["dtype"])
        pre(Frame(image, 0, 0.0, 0), buffer)
        interpreter.set_tensor(detail["index"], buffer)
        interpreter.invoke()
        results.append([interpreter.get_tensor(o["index"]).copy() for o in interpreter.get_output_details()])
    return results


def _tf_class_nms(boxes_xyxy: np.ndarray, scores: np.ndarray, classes: np.ndarray, ref: dict) -> list[dict]:
    """Per-class tf.image.non_max_suppression, merged by score: the reference for class-aware NMS."""
    tf = tensorflow()
    kept = []
    for c in np.unique(classes):
        idx = np.flatnonzero(classes == c)
        yxyx = boxes_xyxy[idx][:, [1, 0, 3, 2]]
        sel = tf.image.non_max_suppression(yxyx, scores[idx], max_output_size=len(idx),
                                           iou_threshold=ref["iou_threshold"]).numpy()
        kept += [int(i) for i in idx[sel]]
    kept.sort(key=lambda i: (-float(scores[i]), i))
    kept = kept[:ref["max_detections"]]
    return [{"box": [round(float(v), 6) for v in boxes_xyxy[i]], "score": round(float(scores[i]), 6),
             "class_id": int(classes[i])} for i in kept]


def _reference(spec: Spec, path: Path, outputs: list[np.ndarray]) -> list[dict]:
    tf = tensorflow()
    info = read_model(path)
    real = [dequantize(a, t) for a, t in zip(outputs, info.outputs)]
    ref = spec.reference
    if spec.layout in ("yolov8", "yolov5"):
        rows = real[0][0].T if spec.key == "yolov8" else real[0][0]     # only yolov8 is channels-first
        first = 4 if spec.layout == "yolov8" else 5
        probs = rows[:, first:] * (rows[:, 4:5] if spec.layout == "yolov5" else 1.0)
        classes = tf.argmax(probs, axis=1).numpy()
        scores = tf.reduce_max(probs, axis=1).numpy()
        keep = scores >= ref["score_threshold"]
        cx, cy, w, h = (rows[keep, i] for i in range(4))
        boxes = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], 1)
        if spec.output.get("box_units") == "pixels":
            boxes = boxes / SIZE
        return _tf_class_nms(boxes, scores[keep], classes[keep], ref)
    if spec.layout == "ssd_anchors":
        roles = {n: info.output_position(t) for n, t in info.signatures[0].outputs.items()}
        enc = real[roles["box_encodings"]].reshape(-1, 4) / np.array(BOX_SCALES, np.float32)
        logits = real[roles["class_logits"]].reshape(enc.shape[0], -1)
        a = _anchors()
        yc = enc[:, 0] * a[:, 2] + a[:, 0]
        xc = enc[:, 1] * a[:, 3] + a[:, 1]
        hh = tf.exp(enc[:, 2]).numpy() * a[:, 2]
        ww = tf.exp(enc[:, 3]).numpy() * a[:, 3]
        probs = tf.sigmoid(logits).numpy()[:, 1:]
        classes, scores = probs.argmax(1), probs.max(1)
        keep = scores >= ref["score_threshold"]
        boxes = np.stack([xc - ww / 2, yc - hh / 2, xc + ww / 2, yc + hh / 2], 1)[keep]
        return _tf_class_nms(boxes, scores[keep], classes[keep], ref)
    if spec.layout == "ssd_postprocess":
        sig = info.signatures[0].outputs
        by = {n: real[info.output_position(t)] for n, t in sig.items()}
        n = int(by["num_detections"].reshape(-1)[0])
        out = []
        for i in range(n):
            ymin, xmin, ymax, xmax = by["detection_boxes"].reshape(-1, 4)[i]
            score = float(by["detection_scores"].reshape(-1)[i])
            if score >= ref["score_threshold"]:
                out.append({"box": [round(float(v), 6) for v in (xmin, ymin, xmax, ymax)],
                            "score": round(score, 6), "class_id": int(by["detection_classes"].reshape(-1)[i])})
        return out
    values, indices = tf.math.top_k(real[0].reshape(-1), k=ref["top_k"])
    return [{"class_id": int(i), "score": round(float(v), 6)} for v, i in zip(values.numpy(), indices.numpy())]


def _add_ultralytics_metadata(path: Path, labels: list[str]) -> None:
    """What Ultralytics' exporter appends: a zip holding metadata.json behind the flatbuffer."""
    meta = {"description": "edge test model in the Ultralytics YOLOv8 TFLite layout", "task": "detect",
            "stride": 32, "batch": 1, "imgsz": [SIZE, SIZE], "names": dict(enumerate(labels))}
    with zipfile.ZipFile(path, "a", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", json.dumps(meta, indent=2))


def build(spec: Spec, out_dir: Path, calibration: Path) -> dict:
    """Build one layout's models, manifest and reference; returns the reference."""
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {"int8": out_dir / f"{spec.key}_int8.tflite", "float": out_dir / f"{spec.key}_float.tflite"}
    with tempfile.TemporaryDirectory(prefix="edge-testmodels-") as tmp:
        saved = _saved_model(spec, Path(tmp))
        for kind, path in paths.items():
            log.info("converting %s (%s)", spec.key, kind)
            path.write_bytes(_convert(saved, spec, kind == "int8", calibration))
            if spec.key == "yolov8":
                _add_ultralytics_metadata(path, spec.labels)
    manifest = {"format": FORMAT, "name": f"test-{spec.key}",
                "task": "classification" if spec.layout == "classification" else "detection",
                "models": {"cpu": paths["int8"].name, "float": paths["float"].name},
                "labels": manifests.write_labels(out_dir, spec.labels),
                "input": manifests.input_dict(input_spec(spec.layout), SIZE, SIZE),
                "output": dict(spec.output),
                "provenance": {"exporter": "edge-host build-test-models", "tensorflow": tensorflow().__version__,
                               "weights": "seeded random, untrained: tests the layout, not accuracy"}}
    if spec.key == "yolov8":
        del manifest["output"]        # the Ultralytics metadata identifies the layout and classes
    (out_dir / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    images = _frames(calibration)
    reference = {"frames": list(REFERENCE_FRAMES[:len(images)]), "params": spec.reference, "models": {}}
    for kind, path in paths.items():
        runs = _run(path, images, input_spec(spec.layout))
        reference["models"][kind] = [_reference(spec, path, outputs) for outputs in runs]
    (out_dir / "reference.json").write_text(json.dumps(reference, indent=1) + "\n", encoding="utf-8")
    return reference


def build_all(out: Path, calibration: Path, names: tuple[str, ...] = LAYOUTS) -> dict[str, dict]:
    from tqdm import tqdm
    results = {}
    for spec in tqdm([s for s in specs() if s.key in names], desc="test models", unit="model"):
        results[spec.key] = build(spec, out / spec.key, calibration)
    return results

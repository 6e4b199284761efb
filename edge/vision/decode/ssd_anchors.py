"""Raw SSD heads: box encodings [1, N, 4] and class logits [1, N, C] decoded against anchors.

The anchors are stored in the manifest (``anchors``, [N, 4] y_center, x_center, height, width,
as ``edge-host export-ssd --postprocess raw`` writes them) or generated from MediaPipe
SsdAnchorsCalculator options (``anchor_options``, see :mod:`edge.vision.decode.anchors`).
Boxes follow the TF Object Detection API box coder (``box_order = "yxhw"``, ``exp_box_size``)
or MediaPipe's (``"xywh"``, linear sizes); ``box_scales`` are (y, x, h, w) divisors. Scores are
``sigmoid``, ``softmax`` or ``none`` (already probabilities), with an optional background column.

Output roles come from the manifest (``boxes_output``/``scores_output``: signature or tensor
names), else from well-known names: TF2 signatures (box_encodings, class_logits), TF1 tensors
(raw_outputs/box_encodings, raw_outputs/class_predictions), MediaPipe (regressors, classificators).
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo
from edge.vision.decode import anchors as anchor_gen
from edge.vision.decode.base import EMPTY, DecodeParams, RawDetections, dequantize, first_set, output_params
from edge.vision.decode.nms import batched_nms

LAYOUT = "ssd_anchors"
SPEC = {"anchors": None, "anchor_format": "ycenter_xcenter_height_width", "anchor_options": None,
        "box_scales": [10.0, 10.0, 5.0, 5.0], "box_order": "yxhw", "exp_box_size": True, "score": "sigmoid",
        "background_class": False, "num_classes": 0, "iou_threshold": 0.0, "max_detections": 0,
        "boxes_output": "", "scores_output": ""}
BOX_NAMES = ("box_encodings", "raw_outputs/box_encodings", "regressors")
SCORE_NAMES = ("class_logits", "class_predictions", "raw_outputs/class_predictions", "classificators")
DEFAULT_IOU = 0.6
DEFAULT_MAX = 100


def _position(model: ModelInfo, name: str) -> int | None:
    for sig in model.signatures:
        if name in sig.outputs:
            return model.output_position(sig.outputs[name])
    return next((i for i, t in enumerate(model.outputs) if t.name == name or t.name.split(":")[0] == name), None)


def output_roles(model: ModelInfo, boxes_name: str = "", scores_name: str = "") -> tuple[int, int]:
    """(boxes position, scores position) among the model outputs, from names, never from sizes."""
    found = []
    for given, names, role in ((boxes_name, BOX_NAMES, "boxes"), (scores_name, SCORE_NAMES, "scores")):
        candidates = (given,) if given else names
        pos = next((p for p in (_position(model, n) for n in candidates) if p is not None), None)
        if pos is None:
            outputs = ", ".join(t.name for t in model.outputs)
            raise ModelError(f"{model.path.name} has no {role} output named {' or '.join(candidates)} "
                             f"(outputs: {outputs})", f"set output.{role}_output in the manifest to the "
                             "signature or tensor name")
        found.append(pos)
    return found[0], found[1]


class SsdAnchorsDecoder:
    layout = LAYOUT
    task = "detection"

    def __init__(self, model: ModelInfo, opts: dict, anchors: np.ndarray, params: DecodeParams):
        self.boxes_pos, self.scores_pos = output_roles(model, opts["boxes_output"], opts["scores_output"])
        self.boxes_tensor = model.outputs[self.boxes_pos]
        self.scores_tensor = model.outputs[self.scores_pos]
        n = anchors.shape[0]
        box_shape, score_shape = self.boxes_tensor.shape, self.scores_tensor.shape
        if int(np.prod(box_shape)) != n * 4 or len(score_shape) < 2 or score_shape[-2] != n:
            raise ModelError(f"{model.path.name}: box encodings {list(box_shape)} and scores {list(score_shape)} "
                             f"do not match {n} anchors", "check output.anchors / anchor_options in the manifest")
        self.anchors = anchors.astype(np.float32)
        if opts["box_order"] not in ("yxhw", "xywh"):
            raise ModelError(f"output.box_order = {opts['box_order']!r} is not one of yxhw, xywh")
        self.order = [0, 1, 2, 3] if opts["box_order"] == "yxhw" else [1, 0, 3, 2]
        scales = opts["box_scales"]
        if not (isinstance(scales, list) and len(scales) == 4 and all(s for s in scales)):
            raise ModelError(f"output.box_scales = {scales!r} is not 4 non-zero numbers (y, x, h, w)")
        self.scales = np.asarray(scales, np.float32)
        self.exp = bool(opts["exp_box_size"])
        if opts["score"] not in ("sigmoid", "softmax", "none"):
            raise ModelError(f"output.score = {opts['score']!r} is not one of sigmoid, softmax, none")
        self.score = opts["score"]
        self.background = bool(opts["background_class"])
        self.threshold = first_set(params.score_threshold, 0.5)
        self.iou_threshold = first_set(params.iou_threshold, opts["iou_threshold"], DEFAULT_IOU)
        self.max_detections = int(first_set(params.max_detections, opts["max_detections"], DEFAULT_MAX))

    def _best(self, raw: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(class id, score) of every anchor's best class, background excluded.

        Sigmoid and "none" scores are monotonic in the logit, so the best class is found on the
        raw values (integers for a quantized output) and only those N values are dequantised and
        activated; softmax needs every logit.
        """
        raw = raw.reshape(self.anchors.shape[0], -1)
        if self.score == "softmax":
            logits = dequantize(raw, self.scores_tensor)
            e = np.exp(logits - logits.max(axis=1, keepdims=True))
            probs = e / e.sum(axis=1, keepdims=True)
            if self.background:
                probs = probs[:, 1:]
            class_ids = probs.argmax(axis=1)
            return class_ids, probs[np.arange(len(probs)), class_ids]
        classes = raw[:, 1:] if self.background else raw
        class_ids = classes.argmax(axis=1)
        best = dequantize(classes[np.arange(len(classes)), class_ids], self.scores_tensor)
        if self.score == "sigmoid":
            best = 1.0 / (1.0 + np.exp(-best))
        return class_ids, best

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections:
        class_ids, scores = self._best(outputs[self.scores_pos])
        idx = np.flatnonzero(scores >= self.threshold)
        if idx.size == 0:
            return EMPTY
        enc = dequantize(outputs[self.boxes_pos], self.boxes_tensor).reshape(-1, 4)[idx][:, self.order]
        enc = enc / self.scales
        a = self.anchors[idx]
        yc = enc[:, 0] * a[:, 2] + a[:, 0]
        xc = enc[:, 1] * a[:, 3] + a[:, 1]
        h = (np.exp(enc[:, 2]) if self.exp else enc[:, 2]) * a[:, 2]
        w = (np.exp(enc[:, 3]) if self.exp else enc[:, 3]) * a[:, 3]
        boxes = np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1).astype(np.float32)
        scores, class_ids = scores[idx], class_ids[idx]
        keep = batched_nms(boxes, scores, class_ids, self.iou_threshold, self.max_detections)
        return RawDetections(boxes[keep], scores[keep].astype(np.float32), class_ids[keep].astype(np.int64))


def _anchors(opts: dict) -> np.ndarray:
    if opts["anchors"] is not None and opts["anchor_options"] is not None:
        raise ModelError("the manifest gives both output.anchors and output.anchor_options", "keep one")
    if opts["anchors"] is not None:
        if opts["anchor_format"] != "ycenter_xcenter_height_width":
            raise ModelError(f"output.anchor_format = {opts['anchor_format']!r} is not supported",
                             "store anchors as ycenter_xcenter_height_width")
        anchors = np.asarray(opts["anchors"], np.float32)
        if anchors.ndim != 2 or anchors.shape[1] != 4:
            raise ModelError(f"output.anchors has shape {list(anchors.shape)}; expected [N, 4]")
        return anchors
    if isinstance(opts["anchor_options"], dict):
        return anchor_gen.generate(anchor_gen.AnchorOptions.from_dict(opts["anchor_options"]))
    raise ModelError(f"layout {LAYOUT} needs anchors", "set output.anchors ([N, 4] ycenter, xcenter, height, "
                     "width) or output.anchor_options (MediaPipe SsdAnchorsCalculator options) in the manifest")


def build(model: ModelInfo, manifest: Manifest, params: DecodeParams) -> SsdAnchorsDecoder:
    opts = output_params(manifest, LAYOUT, SPEC)
    if len(model.outputs) != 2:
        raise ModelError(f"{model.path.name} has {len(model.outputs)} outputs; layout {LAYOUT} needs 2 "
                         "(box encodings, class logits)", "check --layout / output.layout")
    return SsdAnchorsDecoder(model, opts, _anchors(opts), params)


def identify(model: ModelInfo) -> bool:
    return False   # raw heads need anchors from the manifest, so the manifest names the layout

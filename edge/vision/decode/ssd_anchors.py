"""Raw SSD heads: box encodings [1, N, 4 + V·K] and class logits [1, N, C] decoded against anchors.

The anchors are stored in the manifest (``anchors``, [N, 4] y_center, x_center, height, width,
as ``edge-host export-ssd --postprocess raw`` writes them) or generated from MediaPipe
SsdAnchorsCalculator options (``anchor_options``, see :mod:`edge.vision.decode.mediapipe_anchors`).
Boxes follow the TF Object Detection API box coder (``box_order = "yxhw"``, ``exp_box_size``)
or MediaPipe's (``"xywh"``, linear sizes); ``box_scales`` are (y, x, h, w) divisors. Scores are
``sigmoid`` (logits optionally clipped to ±``score_clipping_thresh`` first, as MediaPipe does),
``softmax`` or ``none`` (already probabilities), with an optional background column.

Keypoints (MediaPipe's TensorsToDetectionsCalculator): after the 4 box values come K keypoints of
V = ``num_values_per_keypoint`` values each, the first two being the point in the box centre's
order and units (x, y for ``xywh``; y, x for ``yxhw``), decoded like the centre against the anchor.
``num_keypoints`` defaults to what the shape says; they come out as [N, K, 2] (x, y), normalised.

Output roles come from the manifest (``boxes_output``/``scores_output``: signature or tensor
names), else from well-known names: TF2 signatures (box_encodings, class_logits), TF1 tensors
(raw_outputs/box_encodings, raw_outputs/class_predictions), MediaPipe (regressors, classificators).
MediaPipe's own detectors (face short/full range, palm, pose) are recognised without a manifest
(:mod:`edge.vision.decode.mediapipe_presets`), which then supplies the roles, anchors and decoding
options the manifest does not give.
"""

from __future__ import annotations

import logging

import numpy as np

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo, TensorInfo
from edge.vision.decode import mediapipe_anchors as anchor_gen
from edge.vision.decode import mediapipe_presets as presets
from edge.vision.decode.base import EMPTY, DecodeParams, RawDetections, dequantize, first_set, output_params
from edge.vision.decode.nms import batched_nms

log = logging.getLogger(__name__)

LAYOUT = "ssd_anchors"
SPEC = {"anchors": None, "anchor_format": "ycenter_xcenter_height_width", "anchor_options": None,
        "box_scales": [10.0, 10.0, 5.0, 5.0], "box_order": "yxhw", "exp_box_size": True, "score": "sigmoid",
        "score_clipping_thresh": 0.0, "background_class": False, "num_classes": 0, "num_keypoints": -1,
        "num_values_per_keypoint": 2, "iou_threshold": 0.0, "max_detections": 0,
        "boxes_output": "", "scores_output": ""}
ANCHOR_KEYS = ("anchors", "anchor_options")
BOX_NAMES = ("box_encodings", "raw_outputs/box_encodings", "regressors")
SCORE_NAMES = ("class_logits", "class_predictions", "raw_outputs/class_predictions", "classificators")
DEFAULT_IOU = 0.6
DEFAULT_MAX = 100
DEFAULT_THRESHOLD = 0.5


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


def keypoint_count(model_name: str, shape: tuple[int, ...], n: int, given: int, values: int) -> int:
    """K, the keypoints per anchor, from box encodings ``shape`` [1, N, 4 + values·K] for ``n`` anchors.

    ``given`` (``output.num_keypoints``) is checked against the shape; -1 takes it from the shape.
    """
    if values < 2:
        raise ModelError(f"output.num_values_per_keypoint = {values} is less than 2",
                         "a keypoint has at least x and y (MediaPipe: 2)")
    if len(shape) < 3 or shape[0] != 1 or shape[1] != n:
        raise ModelError(f"{model_name}: box encodings {list(shape)} do not match {n} anchors "
                         f"(expected [1, {n}, 4 + {values}×K])",
                         "check output.anchors / anchor_options in the manifest")
    width = int(np.prod(shape[2:]))
    if given >= 0:
        if width != 4 + values * given:
            raise ModelError(f"{model_name}: box encodings {list(shape)} have {width} values per anchor; "
                             f"output.num_keypoints = {given} expects 4 + {values}×{given} = {4 + values * given}",
                             "fix output.num_keypoints (or omit it to take it from the shape)")
        return given
    if width < 4 or (width - 4) % values:
        raise ModelError(f"{model_name}: box encodings {list(shape)} have {width} values per anchor; expected "
                         f"4 (box) or 4 + {values}×K (box, then K keypoints of {values} values)",
                         "check the boxes output (output.boxes_output) and output.num_values_per_keypoint")
    return (width - 4) // values


def _check_choice(key: str, value: str, valid: tuple[str, ...]) -> str:
    if value not in valid:
        raise ModelError(f"output.{key} = {value!r} is not one of {', '.join(valid)}")
    return value


def _check_scales(scales: object) -> np.ndarray:
    if not (isinstance(scales, list) and len(scales) == 4 and all(
            isinstance(s, (int, float)) and not isinstance(s, bool) and np.isfinite(s) and s for s in scales)):
        raise ModelError(f"output.box_scales = {scales!r} is not 4 non-zero numbers (y, x, h, w)")
    return np.asarray(scales, np.float32)


class SsdAnchorsDecoder:
    layout = LAYOUT
    task = "detection"

    def __init__(self, model: ModelInfo, opts: dict, anchors: np.ndarray, params: DecodeParams,
                 roles: tuple[int, int], default_threshold: float = DEFAULT_THRESHOLD):
        self.boxes_pos, self.scores_pos = roles
        self.boxes_tensor: TensorInfo = model.outputs[self.boxes_pos]
        self.scores_tensor: TensorInfo = model.outputs[self.scores_pos]
        n = anchors.shape[0]
        score_shape = self.scores_tensor.shape
        if len(score_shape) < 2 or score_shape[-2] != n:
            raise ModelError(f"{model.path.name}: box encodings {list(self.boxes_tensor.shape)} and scores "
                             f"{list(score_shape)} do not match {n} anchors",
                             "check output.anchors / anchor_options in the manifest")
        self.values = int(opts["num_values_per_keypoint"])
        self.keypoints = keypoint_count(model.path.name, self.boxes_tensor.shape, n, int(opts["num_keypoints"]),
                                        self.values)
        self.width = 4 + self.values * self.keypoints
        self.anchors = anchors.astype(np.float32)
        self.xy_order = _check_choice("box_order", opts["box_order"], ("yxhw", "xywh")) == "xywh"
        self.order = [1, 0, 3, 2] if self.xy_order else [0, 1, 2, 3]
        self.scales = _check_scales(opts["box_scales"])
        self.exp = bool(opts["exp_box_size"])
        self.score = _check_choice("score", opts["score"], ("sigmoid", "softmax", "none"))
        self.clip = float(opts["score_clipping_thresh"])
        self.background = bool(opts["background_class"])
        self.threshold = first_set(params.score_threshold, default_threshold)
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
            if self.clip > 0:
                best = np.clip(best, -self.clip, self.clip)
            # sigmoid as tanh: no overflow for any logit (exp(100), MediaPipe's bound, overflows float32).
            best = (0.5 + 0.5 * np.tanh(0.5 * best.astype(np.float64))).astype(np.float32)
        return class_ids, best

    def _boxes(self, enc: np.ndarray, a: np.ndarray) -> np.ndarray:
        """[M, 4] xmin, ymin, xmax, ymax (normalised) from [M, 4+] codes and their [M, 4] anchors."""
        box = enc[:, :4][:, self.order] / self.scales
        yc = box[:, 0] * a[:, 2] + a[:, 0]
        xc = box[:, 1] * a[:, 3] + a[:, 1]
        h = (np.exp(box[:, 2]) if self.exp else box[:, 2]) * a[:, 2]
        w = (np.exp(box[:, 3]) if self.exp else box[:, 3]) * a[:, 3]
        return np.stack([xc - w / 2, yc - h / 2, xc + w / 2, yc + h / 2], axis=1).astype(np.float32)

    def _keypoints(self, enc: np.ndarray, a: np.ndarray) -> np.ndarray:
        """[M, K, 2] x, y (normalised) from the codes after the box, decoded like the box centre."""
        points = enc[:, 4:self.width].reshape(len(enc), self.keypoints, self.values)[:, :, :2]
        x, y = (points[..., 0], points[..., 1]) if self.xy_order else (points[..., 1], points[..., 0])
        kx = x / self.scales[1] * a[:, None, 3] + a[:, None, 1]
        ky = y / self.scales[0] * a[:, None, 2] + a[:, None, 0]
        return np.stack([kx, ky], axis=-1).astype(np.float32)

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections:
        class_ids, scores = self._best(outputs[self.scores_pos])
        idx = np.flatnonzero(scores >= self.threshold)
        if idx.size == 0:
            return EMPTY
        enc = dequantize(outputs[self.boxes_pos].reshape(self.anchors.shape[0], -1)[idx], self.boxes_tensor)
        a = self.anchors[idx]
        boxes = self._boxes(enc, a)
        # Linear sizes can come out negative; MediaPipe drops such boxes (and NaN ones) before NMS.
        valid = np.flatnonzero((boxes[:, 2] >= boxes[:, 0]) & (boxes[:, 3] >= boxes[:, 1]))
        enc, a, boxes, idx = enc[valid], a[valid], boxes[valid], idx[valid]
        scores, class_ids = scores[idx], class_ids[idx]
        keep = batched_nms(boxes, scores, class_ids, self.iou_threshold, self.max_detections)
        points = self._keypoints(enc[keep], a[keep]) if self.keypoints else None
        return RawDetections(boxes[keep], scores[keep].astype(np.float32), class_ids[keep].astype(np.int64), points)


def _describe_outputs(model: ModelInfo) -> str:
    return ", ".join(f"{t.name} {list(t.shape)}" for t in model.outputs)


def _anchors(model: ModelInfo, opts: dict) -> np.ndarray:
    """[N, 4] anchors (y_center, x_center, height, width) from ``output.anchors`` or ``anchor_options``."""
    if opts["anchors"] is not None and opts["anchor_options"] is not None:
        raise ModelError("the manifest gives both output.anchors and output.anchor_options", "keep one")
    if opts["anchors"] is not None:
        if opts["anchor_format"] != "ycenter_xcenter_height_width":
            raise ModelError(f"output.anchor_format = {opts['anchor_format']!r} is not supported",
                             "store anchors as ycenter_xcenter_height_width")
        try:
            anchors = np.asarray(opts["anchors"], np.float32)
        except (TypeError, ValueError):     # ragged rows, strings, objects
            raise ModelError("output.anchors is not a list of [ycenter, xcenter, height, width] rows of numbers",
                             "store anchors as [N, 4] numbers") from None
        if anchors.ndim != 2 or anchors.shape[1] != 4 or not np.isfinite(anchors).all():
            raise ModelError(f"output.anchors has shape {list(anchors.shape)}; expected [N, 4]")
        return anchors
    if opts["anchor_options"] is not None:
        return anchor_gen.generate(anchor_gen.AnchorOptions.from_dict(opts["anchor_options"]))
    known = ", ".join(p.name for p in presets.PRESETS)
    raise ModelError(f"{model.path.name} needs anchors to decode its raw SSD head ({_describe_outputs(model)}): "
                     f"the model does not hold them, the manifest gives none, and it is not one of the MediaPipe "
                     f"detectors edge recognises ({known})",
                     "give them in the model's manifest: output.anchors ([N, 4] ycenter, xcenter, height, width, "
                     "as the exporter computed them) or output.anchor_options (MediaPipe SsdAnchorsCalculator "
                     "options); see Output layouts in README.md")


def _spec(manifest: Manifest, preset: presets.Preset | None) -> dict:
    """SPEC with the preset's values as defaults; its anchors only when the manifest gives none."""
    if preset is None:
        return SPEC
    values = presets.preset_output(preset)
    given = [k for k in ANCHOR_KEYS if manifest.output.get(k) is not None]
    if given:
        log.info("output.%s from the manifest replaces the %s preset's anchor options", given[0], preset.name)
        values = {k: v for k, v in values.items() if k not in ANCHOR_KEYS}
    return {**SPEC, **values}


def _roles(model: ModelInfo, opts: dict, preset: presets.Preset | None) -> tuple[int, int]:
    """Output positions: manifest names first, then the preset's (by shape), then well-known names."""
    if preset is not None and not (opts["boxes_output"] or opts["scores_output"]):
        found = presets.roles(model, preset)
        if found is not None:
            return found
    return output_roles(model, opts["boxes_output"], opts["scores_output"])


def build(model: ModelInfo, manifest: Manifest, params: DecodeParams) -> SsdAnchorsDecoder:
    preset = presets.find_preset(model)
    if preset is not None:
        log.info("%s: MediaPipe %s; decoding options the manifest does not give come from %s",
                 model.path.name, preset.name, preset.source)
    opts = output_params(manifest, LAYOUT, _spec(manifest, preset))
    if len(model.outputs) != 2:
        raise ModelError(f"{model.path.name} has {len(model.outputs)} outputs; layout {LAYOUT} needs 2 "
                         "(box encodings, class logits)", "check --layout / output.layout")
    anchors = _anchors(model, opts)
    threshold = preset.min_score_thresh if preset else DEFAULT_THRESHOLD
    return SsdAnchorsDecoder(model, opts, anchors, params, _roles(model, opts, preset), threshold)


def identify(model: ModelInfo) -> bool:
    """True only for MediaPipe detectors edge knows; other raw heads need anchors from a manifest."""
    return presets.find_preset(model) is not None


def named_raw_head(model: ModelInfo) -> bool:
    """True when two outputs carry the well-known box-encoding and class-score names (for error
    messages: such a model needs anchors, which only a manifest or a preset can give)."""
    try:
        output_roles(model)
    except ModelError:
        return False
    return len(model.outputs) == 2

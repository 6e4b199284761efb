"""SSD models with post-processing inside the model (TFLite_Detection_PostProcess, 4 outputs).

The op always emits boxes [1,N,4] (ymin, xmin, ymax, xmax, normalised), classes [1,N] (0-based,
background removed), scores [1,N] and the count [1]; exports order the model outputs differently
(TF1 keeps the op's order, TF2 SavedModel exports sort them by signature name). Roles therefore
come from the op's outputs when the op is in the graph, else from TF2 signature names or the TF1
tensor names, never from sizes.
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import DETECTION_POSTPROCESS_OP, ModelInfo
from edge.vision.decode.base import EMPTY, DecodeParams, RawDetections, dequantize, output_params

LAYOUT = "ssd_postprocess"
ROLES = ("boxes", "classes", "scores", "count")
_TF2_NAMES = {"detection_boxes": "boxes", "detection_classes": "classes", "detection_scores": "scores",
              "num_detections": "count"}
_TF1_NAMES = {DETECTION_POSTPROCESS_OP: "boxes", f"{DETECTION_POSTPROCESS_OP}:1": "classes",
              f"{DETECTION_POSTPROCESS_OP}:2": "scores", f"{DETECTION_POSTPROCESS_OP}:3": "count"}


def output_roles(model: ModelInfo) -> dict[str, int]:
    """Role → position among the model outputs, from the op, the signature, or TF1 names."""
    op = model.find_op(DETECTION_POSTPROCESS_OP)
    if op is not None and len(op.outputs) == 4:
        return {role: model.output_position(t) for role, t in zip(ROLES, op.outputs)}
    for sig in model.signatures:
        if set(_TF2_NAMES) <= set(sig.outputs):
            return {_TF2_NAMES[name]: model.output_position(sig.outputs[name]) for name in _TF2_NAMES}
    names = {t.name: i for i, t in enumerate(model.outputs)}
    if set(_TF1_NAMES) <= set(names):
        return {role: names[name] for name, role in _TF1_NAMES.items()}
    raise ModelError(f"{model.path.name} has no {DETECTION_POSTPROCESS_OP} op, no detection_* signature "
                     "outputs and no TF1 post-processing output names",
                     "it is not an SSD with in-model post-processing; set output.layout in its manifest")


class SsdPostprocessDecoder:
    layout = LAYOUT
    task = "detection"

    def __init__(self, model: ModelInfo):
        if len(model.outputs) != 4:
            raise ModelError(f"{model.path.name} has {len(model.outputs)} outputs; layout {LAYOUT} needs 4 "
                             "(boxes, classes, scores, count)", "check --layout / output.layout")
        roles = output_roles(model)
        self._pos = [roles[r] for r in ROLES]
        self._tensors = [model.outputs[p] for p in self._pos]

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawDetections:
        boxes, classes, scores, count = (dequantize(outputs[p], t) for p, t in zip(self._pos, self._tensors))
        n = int(count.reshape(-1)[0])
        if n <= 0:
            return EMPTY
        yxyx = boxes.reshape(-1, 4)[:n]
        return RawDetections(yxyx[:, [1, 0, 3, 2]], scores.reshape(-1)[:n],
                             classes.reshape(-1)[:n].astype(np.int64))


def build(model: ModelInfo, manifest: Manifest, params: DecodeParams | None = None) -> SsdPostprocessDecoder:
    # NMS, its IoU and the model's own limit happen inside the op; max_detections is informative.
    output_params(manifest, LAYOUT, {"max_detections": 0})
    return SsdPostprocessDecoder(model)


def identify(model: ModelInfo) -> bool:
    """True when the model itself shows this layout."""
    return model.find_op(DETECTION_POSTPROCESS_OP) is not None

"""Classifiers: one [1, C] output (probabilities or logits) → the top-k classes, dequantised.

Only the k best raw values are dequantised: for a positive scale the order of the integers is
the order of the real values; ties keep the lower class id first (as ``tf.math.top_k``). ``score = "softmax"`` turns logits into probabilities first.
"""

from __future__ import annotations

import numpy as np

from edge.errors import ModelError
from edge.runtime import ultralytics
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo
from edge.vision.decode.base import DecodeParams, RawClasses, dequantize, first_set, output_params

LAYOUT = "classification"
SPEC = {"top_k": 0, "score": "none", "background_class": False, "max_detections": 0}
DEFAULT_TOP_K = 5


class ClassifyDecoder:
    layout = LAYOUT
    task = "classification"

    def __init__(self, model: ModelInfo, top_k: int, score: str, background: bool):
        self.tensor = model.outputs[0]
        self.top_k = top_k
        self.softmax = score == "softmax"
        self.offset = 1 if background else 0
        self.num_classes = int(self.tensor.shape[-1]) - self.offset

    def __call__(self, outputs: tuple[np.ndarray, ...]) -> RawClasses:
        raw = outputs[0].reshape(-1)[self.offset:]
        if self.softmax:
            logits = dequantize(raw, self.tensor)
            e = np.exp(logits - logits.max())
            probs = e / e.sum()
            top = np.argsort(-probs, kind="stable")[:self.top_k]
            return RawClasses(top.astype(np.int64), probs[top].astype(np.float32))
        # A stable sort, so that equal (quantized) scores keep the lower class id first, as top_k does.
        top = np.argsort(-raw.astype(np.float32), kind="stable")[:self.top_k]   # widened: -int8(-128) overflows
        return RawClasses(top.astype(np.int64), dequantize(raw[top], self.tensor))


def build(model: ModelInfo, manifest: Manifest, params: DecodeParams) -> ClassifyDecoder:
    opts = output_params(manifest, LAYOUT, SPEC)
    _check_ultralytics(model)
    if len(model.outputs) != 1 or int(np.prod(model.outputs[0].shape)) != model.outputs[0].shape[-1]:
        shapes = ", ".join(str(list(t.shape)) for t in model.outputs)
        raise ModelError(f"{model.path.name} has outputs {shapes}; layout {LAYOUT} needs one [1, classes] output",
                         "check --layout / output.layout")
    if opts["score"] not in ("none", "softmax"):
        raise ModelError(f"output.score = {opts['score']!r} is not one of none, softmax")
    top_k = int(first_set(params.max_detections, opts["top_k"], opts["max_detections"], DEFAULT_TOP_K))
    return ClassifyDecoder(model, top_k, opts["score"], bool(opts["background_class"]))


def _check_ultralytics(model: ModelInfo) -> None:
    """An Ultralytics export must be a classify one whose [1, nc] output has one value per name."""
    meta = ultralytics.read_metadata(model)
    if meta is None:
        return
    ultralytics.refuse_unsupported(meta, model.path.name)
    classes = model.outputs[0].shape[-1]
    if (meta.task_recorded and meta.task != "classify") or classes != len(meta.names):
        raise ModelError(f"{model.path.name} is an Ultralytics {meta.task} export with {len(meta.names)} names "
                         f"({meta.source}); layout {LAYOUT} needs a classify export with [1, {classes}] = one "
                         "probability per name", "drop --layout / output.layout to use the model's own layout")


def identify(model: ModelInfo) -> bool:
    """One 2-D output and no detection op: what every image classifier export looks like (an
    Ultralytics export must say task ``classify``; its output is softmax probabilities)."""
    meta = ultralytics.read_metadata(model)
    if meta is not None and meta.task_recorded and meta.task != "classify":
        return False
    return (len(model.outputs) == 1 and len(model.outputs[0].shape) == 2 and model.outputs[0].shape[0] == 1
            and model.outputs[0].shape[1] > 1)

"""Decoders from model outputs to detections or classes, one module per output layout.

:data:`LAYOUTS` maps a layout name (``output.layout`` in the manifest, ``--layout``) to a
:class:`Layout`: ``build(model, manifest, params)`` makes the decoder, ``identify(model)`` says
whether the model itself shows the layout (an op, Ultralytics metadata), ``summary`` is for
help texts. Adding a layout is one module plus one line here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Callable

import numpy as np

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo
from edge.vision.decode import classify, ssd_anchors, ssd_postprocess, yolo
from edge.vision.decode.base import (Classification, DecodeParams, Decoder, Detection, FinishParams, RawClasses,
                                     RawDetections, finish, finish_classes)

__all__ = ["Decoder", "Detection", "Classification", "DecodeParams", "FinishParams", "RawDetections",
           "RawClasses", "finish", "finish_classes", "LAYOUTS", "Layout", "make_decoder", "identify_layout", "resolve_layout",
           "describe_layout", "check_layout",
           "make_postprocess"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Layout:
    build: Callable[[ModelInfo, Manifest, DecodeParams], Decoder]
    identify: Callable[[ModelInfo], bool]
    summary: str


# Order matters for identification: the most specific evidence first.
LAYOUTS: dict[str, Layout] = {
    ssd_postprocess.LAYOUT: Layout(ssd_postprocess.build, ssd_postprocess.identify,
                                   "SSD with TFLite_Detection_PostProcess in the model (Coral zoo, TF1/TF2 exports)"),
    yolo.V8: Layout(yolo.build_v8, yolo.identify_v8, "YOLOv8/v11 raw head [1, 4+nc, N] or transposed"),
    yolo.POSE: Layout(yolo.build_pose, yolo.identify_pose, "Ultralytics pose head [1, 4+nc+K*D, N] with keypoints"),
    yolo.V5: Layout(yolo.build_v5, yolo.identify_v5, "YOLOv5 raw head [1, N, 5+nc] with objectness"),
    ssd_anchors.LAYOUT: Layout(ssd_anchors.build, ssd_anchors.identify,
                               "raw SSD box encodings + class logits decoded against anchors (MediaPipe style)"),
    classify.LAYOUT: Layout(classify.build, classify.identify, "image classifier [1, classes] → top-k"),
}
ALIASES = {"yolov11": yolo.V8, "yolo11": yolo.V8, "yolov5u": yolo.V8}
AUTO = "auto"


def check_layout(name: str) -> str:
    """The canonical layout name for ``name`` (or ``auto``); an error lists the valid ones."""
    return name if name == AUTO else _known(name)


def _known(name: str) -> str:
    name = ALIASES.get(name, name)
    if name not in LAYOUTS:
        raise ModelError(f"unknown output layout {name!r}",
                         f"valid layouts: {', '.join(sorted([*LAYOUTS, *ALIASES]))}")
    return name


def resolve_layout(model: ModelInfo, manifest: Manifest, layout: str = AUTO) -> tuple[str, str]:
    """(layout, why): ``layout`` when given, else the manifest's, else the one the model shows;
    otherwise an error."""
    if layout and layout != AUTO:
        return _known(layout), "--layout"
    if manifest.layout:
        return _known(manifest.layout), f"manifest {manifest.path}"
    for name, entry in LAYOUTS.items():
        if entry.identify(model):
            return name, "identified from the model"
    if ssd_anchors.named_raw_head(model):
        raise ModelError(f"{model.path.name} is a raw SSD head (box encodings and class scores by name) that edge "
                         "does not recognise: its anchors are what is missing",
                         "write a manifest with output.layout = ssd_anchors and output.anchors ([N, 4] ycenter, "
                         "xcenter, height, width) or output.anchor_options (MediaPipe SsdAnchorsCalculator options)")
    raise ModelError(f"cannot tell the output layout of {model.path.name} from the model itself",
                     f"set output.layout in its manifest or pass --layout (one of {', '.join(sorted(LAYOUTS))})")


def identify_layout(model: ModelInfo, manifest: Manifest, layout: str = AUTO) -> str:
    """``layout`` when given, else the manifest's, else the one the model shows; otherwise an error."""
    name, why = resolve_layout(model, manifest, layout)
    if why == "identified from the model":
        log.info("%s: output layout %s identified from the model", model.path.name, name)
    return name


def describe_layout(model: ModelInfo, manifest: Manifest, layout: str = AUTO) -> str:
    name, why = resolve_layout(model, manifest, layout)
    return f"{name} ({why})"


def make_decoder(model: ModelInfo, manifest: Manifest, params: DecodeParams | None = None, *,
                 layout: str = AUTO, detect: object | None = None, num_classes: int = 0) -> Decoder:
    """The decoder for ``model``; ``detect`` (a DetectConfig) fills ``params`` when not given."""
    if params is None:
        params = DecodeParams(score_threshold=getattr(detect, "score_threshold", 0.0),
                              iou_threshold=getattr(detect, "iou_threshold", 0.0),
                              max_detections=getattr(detect, "max_detections", 0), num_classes=num_classes)
    name = identify_layout(model, manifest, layout)
    return LAYOUTS[name].build(model, manifest, params)


def make_postprocess(decoder: Decoder, params: FinishParams):
    """outputs, transform → final results: detections in frame pixels, or the top classes."""
    if decoder.task == "classification":
        def classes(outputs: tuple[np.ndarray, ...], transform: object) -> tuple[Classification, ...]:
            return finish_classes(decoder(outputs), params)
        return classes

    def detections(outputs: tuple[np.ndarray, ...], transform) -> tuple[Detection, ...]:
        return finish(decoder(outputs), transform, params)
    return detections

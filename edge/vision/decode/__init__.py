"""Decoders from model outputs to detections, one module per output layout.

:data:`LAYOUTS` maps a layout name (``output.layout`` in the manifest) to its module, which
provides ``build(model, manifest, detect=...)`` and ``identify(model)`` (whether the model itself
shows the layout, e.g. by an op). Adding a layout is one module plus one line here.
"""

from __future__ import annotations

from types import ModuleType

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo
from edge.vision.decode import ssd_postprocess
from edge.vision.decode.base import Decoder, Detection, FinishParams, RawDetections, finish

__all__ = ["Decoder", "Detection", "FinishParams", "RawDetections", "finish", "LAYOUTS", "make_decoder",
           "identify_layout"]

LAYOUTS: dict[str, ModuleType] = {
    ssd_postprocess.LAYOUT: ssd_postprocess,
}


def identify_layout(model: ModelInfo, manifest: Manifest) -> str:
    """The manifest's layout, else the one the model shows; an error says what to set otherwise."""
    if manifest.layout:
        if manifest.layout not in LAYOUTS:
            raise ModelError(f"unknown output layout {manifest.layout!r}",
                             f"valid layouts: {', '.join(sorted(LAYOUTS))}")
        return manifest.layout
    for name, module in LAYOUTS.items():
        if module.identify(model):
            return name
    raise ModelError(f"cannot tell the output layout of {model.path.name} from the model itself",
                     f"set output.layout in its manifest or pass --layout (one of {', '.join(sorted(LAYOUTS))})")


def make_decoder(model: ModelInfo, manifest: Manifest, **params: object) -> Decoder:
    layout = identify_layout(model, manifest)
    return LAYOUTS[layout].build(model, manifest, **params)

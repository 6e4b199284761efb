"""The embedded int8 detector on real frames of the sample clip (no TensorFlow needed)."""

import pytest

from edge.capture.base import Frame
from edge.config import DetectConfig
from edge.runtime.backend import TFLiteBackend
from edge.runtime.interpreter import load_runtime
from edge.runtime.manifest import load_manifest
from edge.runtime.model import read_model
from edge.vision.decode import FinishParams, finish, make_decoder
from edge.vision.decode.ssd_postprocess import output_roles
from edge.vision.preprocess import Preprocessor


class Detector:
    def __init__(self, path, manifest):
        self.model = read_model(path)
        self.backend = TFLiteBackend(self.model, load_runtime(), threads=2)
        self.pre = Preprocessor(manifest.input, self.model.inputs[0], self.backend.input_shape)
        self.decode = make_decoder(self.model, manifest, detect=DetectConfig())
        self.params = FinishParams(0.5, 0, {0: "person"}, None)

    def __call__(self, image):
        view = self.backend.input_view()
        transform = self.pre(Frame(image, 0, 0.0, 0), view)
        del view
        self.backend.invoke()
        return finish(self.decode(self.backend.outputs()), transform, self.params)


@pytest.fixture(scope="module")
def manifest(model_dir):
    return load_manifest(model_dir / "manifest.json")


@pytest.fixture(scope="module")
def int8(int8_model, manifest):
    return Detector(int8_model, manifest)


@pytest.fixture(scope="module")
def float32(float_model, manifest):
    return Detector(float_model, manifest)


def test_finds_the_cyclist_in_frame_120(int8, clip_frames):
    (person,) = int8(clip_frames[120])
    assert person.label == "person" and person.score > 0.8
    x0, y0, x1, y1 = person.box
    # The cyclist stands at x ≈ 340..485 of the 640x272 frame (checked by eye on the frame).
    assert 320 < x0 < 360 and 460 < x1 < 500 and y0 < 20 and y1 > 250


def test_no_person_in_an_empty_street_frame(int8, clip_frames):
    assert int8(clip_frames[0]) == ()


def test_int8_agrees_with_the_float_twin(int8, float32, clip_frames):
    """Frames where float finds a person ≥0.5: int8 finds one too in ≥90% of them, same place."""
    float_hits = matched = 0
    for image in clip_frames:
        f = float32(image)
        if not f:
            continue
        float_hits += 1
        q = int8(image)
        if q and _iou(f[0].box, q[0].box) >= 0.5:
            matched += 1
    assert float_hits >= 40
    assert matched / float_hits >= 0.9, f"{matched}/{float_hits}"


def _iou(a, b):
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def test_roles_come_from_the_op_not_the_output_order(int8, clip_frames):
    int8(clip_frames[120])
    outputs = int8.backend.outputs()
    roles = output_roles(int8.model)
    assert outputs[roles["boxes"]].shape == (1, 20, 4)
    assert outputs[roles["count"]].shape == (1,)
    # The TF2 SavedModel export orders the outputs unlike the op: guessing by position would fail.
    assert roles != {"boxes": 0, "classes": 1, "scores": 2, "count": 3}

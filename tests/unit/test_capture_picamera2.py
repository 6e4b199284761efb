"""The picamera2 source against a fake of picamera2's documented API (no camera module here).

The fake implements what the source uses of ``Picamera2`` (create_preview_configuration,
align_configuration, configure, start, capture_array, stop, close) and ``picamera2.platform``
(get_platform, Platform.VC4 / PISP), returning arrays shaped as picamera2 documents them:
RGB888 as H×W×3 in B, G, R byte order (with row padding possible), YUV420 as I420 planes
(H*3/2 × stride).
"""

import sys
import types
from enum import Enum

import cv2
import numpy as np
import pytest

from edge.capture import make_source
from edge.capture.picamera2 import Picamera2Source
from edge.config import SourceConfig
from edge.errors import SourceError
from edge.runtime.manifest import InputSpec
from edge.runtime.model import Quantization, TensorInfo
from edge.vision.preprocess import Preprocessor


class Platform(Enum):
    VC4 = 0
    PISP = 1


def fake_picamera2(monkeypatch, platform, scene_bgr, stride_pad=0):
    calls = []

    class Picamera2:
        def __init__(self, camera_num=0):
            calls.append(("init", camera_num))
            self.config = None

        def create_preview_configuration(self, main=None, lores=None, buffer_count=4, queue=True, controls=None):
            calls.append(("create", main, lores, buffer_count, queue, controls))
            config = {"main": dict(main), "lores": dict(lores) if lores else None, "queue": queue}
            config["main"].setdefault("size", (640, 480))
            return config

        def align_configuration(self, config):
            calls.append(("align",))

        def configure(self, config):
            self.config = config

        def start(self):
            calls.append(("start",))

        def capture_array(self, name="main"):
            calls.append(("capture", name))
            stream = self.config[name]
            w, h = stream["size"]
            bgr = cv2.resize(scene_bgr, (w, h))
            if stream["format"] == "RGB888":          # B, G, R in memory
                if stride_pad:
                    padded = np.zeros((h, w + stride_pad, 3), np.uint8)
                    padded[:, :w] = bgr
                    return padded
                return bgr
            i420 = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
            if not stride_pad:
                return i420
            stride = w + stride_pad
            out = np.zeros((h * 3 // 2, stride), np.uint8)
            out[:h, :w] = i420[:h]
            chroma = i420[h:].reshape(-1)
            q = (h // 2) * (w // 2)
            flat = out[h:].reshape(-1)
            for plane in range(2):
                src = chroma[plane * q:(plane + 1) * q].reshape(h // 2, w // 2)
                dst = flat[plane * (h // 2) * (stride // 2):(plane + 1) * (h // 2) * (stride // 2)]
                dst.reshape(h // 2, stride // 2)[:, :w // 2] = src
            return out

        def stop(self):
            calls.append(("stop",))

        def close(self):
            calls.append(("close",))

    module = types.ModuleType("picamera2")
    module.Picamera2 = Picamera2
    plat = types.ModuleType("picamera2.platform")
    plat.Platform = Platform
    plat.get_platform = lambda: platform
    monkeypatch.setitem(sys.modules, "picamera2", module)
    monkeypatch.setitem(sys.modules, "picamera2.platform", plat)
    return calls


@pytest.fixture
def scene():
    image = np.zeros((480, 640, 3), np.uint8)
    image[:, :320] = (0, 0, 220)       # red left half (BGR)
    image[:, 320:] = (220, 0, 0)       # blue right half
    return image


def model_input(frame):
    tensor = TensorInfo(0, "in", (1, 96, 128, 3), "UINT8", Quantization((1 / 255,), (0,)))
    pre = Preprocessor(InputSpec(colour="RGB", std=(255.0,) * 3), tensor, (1, 96, 128, 3))
    out = np.zeros((1, 96, 128, 3), np.uint8)
    pre(frame, out)
    return out[0]


@pytest.mark.parametrize("pad", [0, 64])
def test_pi4_lores_is_yuv420_at_the_model_size_and_converts_to_rgb(monkeypatch, scene, pad):
    calls = fake_picamera2(monkeypatch, Platform.VC4, scene, stride_pad=pad)
    source = make_source(SourceConfig(uri="picamera2", width=1280, height=720, fps=15))
    source.set_model_size(128, 96)
    source.open()
    frame = source.read()
    source.close()
    create = next(c for c in calls if c[0] == "create")
    assert create[1] == {"format": "RGB888", "size": (1280, 720)}
    assert create[2] == {"size": (128, 96), "format": "YUV420"}
    assert create[4] is False and create[5] == {"FrameRate": 15}      # queue=False: no stale frames
    assert ("capture", "lores") in calls and calls[-2:] == [("stop",), ("close",)]
    assert frame.format == "YUV420" and frame.size == (128, 96) and frame.image.shape == (144, 128)
    rgb = model_input(frame)
    assert rgb[48, 10, 0] > 180 and rgb[48, 10, 2] < 40          # left half red, in RGB order
    assert rgb[48, 120, 2] > 180 and rgb[48, 120, 0] < 40


def test_pi5_lores_is_rgb888_which_is_bgr_in_memory(monkeypatch, scene):
    calls = fake_picamera2(monkeypatch, Platform.PISP, scene, stride_pad=32)
    source = Picamera2Source(1, model_size=(128, 96))
    source.open()
    frame = source.read()
    source.close()
    assert calls[0] == ("init", 1)
    assert next(c for c in calls if c[0] == "create")[2]["format"] == "RGB888"
    assert frame.format == "BGR" and frame.image.shape == (96, 128, 3)
    rgb = model_input(frame)
    assert rgb[48, 10, 0] > 180 and rgb[48, 120, 2] > 180


def test_without_a_model_size_frames_come_from_main(monkeypatch, scene):
    fake_picamera2(monkeypatch, Platform.PISP, scene)
    source = Picamera2Source(0)
    source.open()
    frame = source.read()
    source.close()
    assert frame.format == "BGR" and frame.size == (640, 480)


def test_missing_picamera2_names_the_apt_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)        # import fails as if not installed
    source = make_source(SourceConfig(uri="picamera2:0"))
    with pytest.raises(SourceError, match="sudo apt install python3-picamera2"):
        source.open()

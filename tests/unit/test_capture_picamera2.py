"""The picamera2 source against a fake of picamera2's documented API (no camera module here).

The fake implements what the source uses of ``Picamera2`` (create_preview_configuration,
align_configuration, configure, camera_configuration, start, capture_array, capture_arrays, stop,
close) and ``picamera2.platform`` (get_platform, Platform.VC4 / PISP), with picamera2's own rules:
``align_stream(optimal=True)`` truncates widths to 32 (VC4) or 64 (PiSP) pixels, twice that for
YUV420, heights to even; ``configure`` refuses odd sizes, a lores larger than main and, on VC4, a
lores that is not YUV. Arrays are shaped as picamera2 documents them: RGB888 as H×W×3 in B, G, R
byte order (with row padding possible), YUV420 as I420 planes (H*3/2 × stride). Every stream is
the same field of view (the ``scene``, standing for the sensor's crop) scaled to its size, as the
ISP does with lores' default ``preserve_ar=False``.
"""

import copy
import json
import logging
import sys
import types
from enum import Enum

import cv2
import numpy as np
import pytest

from edge.capture import make_source
from edge.capture.base import Frame
from edge.capture.picamera2 import CameraFrame, MainStreamPreprocessor, Picamera2Source, lores_size
from edge.config import SourceConfig
from edge.errors import SourceError
from edge.runtime.manifest import InputSpec
from edge.runtime.model import Quantization, TensorInfo
from edge.vision.preprocess import Preprocessor

ROOT = __import__("pathlib").Path(__file__).resolve().parents[2]


@pytest.fixture
def cli_logging():
    """cli.main() sets the `edge.runtime` logger to WARNING (no -v); put it back for the next tests."""
    logger = logging.getLogger("edge.runtime")
    level = logger.level
    yield
    logger.setLevel(level)


class Platform(Enum):
    VC4 = 0
    PISP = 1


def _align(stream, platform):
    align = 32 if platform == Platform.VC4 else 64
    if stream["format"] in ("YUV420", "YVU420"):
        align *= 2
    w, h = stream["size"]
    stream["size"] = (w - w % align, h - h % 2)


def fake_picamera2(monkeypatch, platform, scene_bgr, stride_pad=0):
    calls = []

    def render(stream):
        w, h = stream["size"]
        bgr = cv2.resize(scene_bgr, (w, h), interpolation=cv2.INTER_AREA)
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

    class Picamera2:
        def __init__(self, camera_num=0):
            calls.append(("init", camera_num))
            self.config = None

        def create_preview_configuration(self, main={}, lores=None, buffer_count=4, queue=True, controls={}):
            calls.append(("create", copy.deepcopy(main), copy.deepcopy(lores), buffer_count, queue, controls))
            main = {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True} | main
            if lores is not None:
                lores = {"format": "YUV420", "size": main["size"], "preserve_ar": False} | lores
            return {"main": main, "lores": lores, "queue": queue, "buffer_count": buffer_count}

        def align_configuration(self, config, optimal=True):
            calls.append(("align",))
            _align(config["main"], platform)
            if config.get("lores") is not None:
                _align(config["lores"], platform)

        def configure(self, config):
            for name in ("main", "lores"):
                if config[name] is not None and any(n % 2 for n in config[name]["size"]):
                    raise RuntimeError("width and height should be even")
            if config["lores"] is not None:
                (mw, mh), (lw, lh) = config["main"]["size"], config["lores"]["size"]
                if lw > mw or lh > mh:
                    raise RuntimeError("lores stream dimensions may not exceed main stream")
                if platform == Platform.VC4 and config["lores"]["format"] != "YUV420":
                    raise RuntimeError("lores stream must be YUV")
            calls.append(("configure", copy.deepcopy(config)))
            self.config = copy.deepcopy(config)     # picamera2 keeps its own copy

        def camera_configuration(self):
            return self.config

        def start(self):
            calls.append(("start",))

        def capture_array(self, name="main"):
            calls.append(("capture", name))
            return render(self.config[name])

        def capture_arrays(self, names=["main"]):
            calls.append(("capture_arrays", tuple(names)))
            return [render(self.config[name]) for name in names], {"SensorTimestamp": 0}

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


def _configured(calls):
    return next(c for c in calls if c[0] == "configure")[1]


def preprocessor(width, height, resize="stretch"):
    tensor = TensorInfo(0, "in", (1, height, width, 3), "UINT8", Quantization((1 / 255,), (0,)))
    return Preprocessor(InputSpec(colour="RGB", std=(255.0,) * 3, resize=resize), tensor, (1, height, width, 3))


def model_input(frame, width=128, height=96, resize="stretch"):
    out = np.zeros((1, height, width, 3), np.uint8)
    transform = MainStreamPreprocessor(preprocessor(width, height, resize))(frame, out)
    return out[0], transform


@pytest.mark.parametrize("pad", [0, 64])
def test_pi4_lores_is_yuv420_at_the_main_aspect_ratio_and_converts_to_rgb(monkeypatch, scene, pad):
    calls = fake_picamera2(monkeypatch, Platform.VC4, scene, stride_pad=pad)
    source = make_source(SourceConfig(uri="picamera2", width=1280, height=720, fps=15))
    source.set_model_size(300, 300)
    source.open()
    frame = source.read()
    source.close()
    create = next(c for c in calls if c[0] == "create")
    assert create[1] == {"format": "RGB888", "size": (1280, 720)}
    assert create[4] is False and create[5] == {"FrameRate": 15}      # queue=False: no stale frames
    config = _configured(calls)
    # A stretched 300x300 model: lores covers the input at 16:9, the width a multiple of 64.
    assert config["lores"]["size"] == (576, 324) and config["lores"]["format"] == "YUV420"
    assert ("capture_arrays", ("main", "lores")) in calls and calls[-2:] == [("stop",), ("close",)]
    assert isinstance(frame, CameraFrame)
    assert frame.format == "BGR" and frame.size == (1280, 720) and frame.image.shape == (720, 1280, 3)
    assert frame.lores_format == "YUV420" and frame.lores.shape == (486, 576)
    rgb, _ = model_input(frame)
    assert rgb[48, 10, 0] > 180 and rgb[48, 10, 2] < 40          # left half red, in RGB order
    assert rgb[48, 120, 2] > 180 and rgb[48, 120, 0] < 40


def test_pi5_lores_is_rgb888_which_is_bgr_in_memory(monkeypatch, scene):
    calls = fake_picamera2(monkeypatch, Platform.PISP, scene, stride_pad=32)
    source = Picamera2Source(1, model_size=(128, 96))
    source.open()
    frame = source.read()
    source.close()
    assert calls[0] == ("init", 1)
    config = _configured(calls)
    assert config["main"]["size"] == (640, 480) and config["lores"]["format"] == "RGB888"
    assert config["lores"]["size"] == (128, 96)
    assert frame.format == "BGR" and frame.lores_format == "BGR" and frame.lores.shape == (96, 128, 3)
    assert frame.image.shape == (480, 640, 3)
    rgb, _ = model_input(frame)
    assert rgb[48, 10, 0] > 180 and rgb[48, 120, 2] > 180


def test_without_a_model_size_frames_come_from_main(monkeypatch, scene):
    calls = fake_picamera2(monkeypatch, Platform.PISP, scene)
    source = Picamera2Source(0)
    source.open()
    frame = source.read()
    source.close()
    assert _configured(calls)["lores"] is None and ("capture", "main") in calls
    assert type(frame) is Frame and frame.format == "BGR" and frame.size == (640, 480)


@pytest.mark.parametrize("main", [(640, 480), (1280, 720), (1920, 1080), (1536, 864), (2304, 1296), (800, 600),
                                  (1456, 1088), (320, 240), (96, 64)])
@pytest.mark.parametrize("model", [(300, 300), (320, 320), (640, 640), (192, 192), (224, 128), (128, 224)])
@pytest.mark.parametrize("letterbox", [False, True])
def test_lores_size_respects_the_isp_and_keeps_the_aspect_ratio(main, model, letterbox):
    w, h = lores_size(main, model, letterbox=letterbox)
    assert w <= main[0] and h <= main[1] and w % 2 == 0 and h % 2 == 0
    if main[0] >= 64:
        assert w % 64 == 0                              # what align_configuration keeps unchanged
    assert abs(h - w * main[1] / main[0]) <= 1.0        # main's aspect ratio, to the pixel
    # Near the model input: fitting it (letterbox) or covering it (stretch), the width rounded up to
    # the next multiple of 64, unless main itself is narrower.
    target = main[0] * (min if letterbox else max)(model[0] / main[0], model[1] / main[1])
    widest = main[0] - main[0] % 64
    if target <= widest:
        assert target - 1e-6 <= w < target + 64
    else:
        assert w == widest or main[0] < 64


def test_a_letterboxed_model_gets_a_lores_that_fits_its_input(monkeypatch, scene):
    calls = fake_picamera2(monkeypatch, Platform.VC4, scene)
    source = Picamera2Source(0, width=1280, height=720)
    source.set_model_size(320, 320, letterbox=True)
    source.open()
    source.close()
    assert _configured(calls)["lores"]["size"] == (320, 180)      # 16:9, padded to 320x320 by the preprocessor


def _rectangle_scene(size=(2028, 1140), box=(0.40, 0.25, 0.58, 0.75)):
    """A grey sensor view with one white rectangle at fractional (x0, y0, x1, y1)."""
    w, h = size
    image = np.full((h, w, 3), 60, np.uint8)
    x0, y0, x1, y1 = box
    image[round(y0 * h):round(y1 * h), round(x0 * w):round(x1 * w)] = 255
    return image, box


def _bright_box(rgb, transform):
    """The white rectangle found in the model input, mapped to frame pixels by ``transform``."""
    ys, xs = np.nonzero(rgb[..., 1] > 160)
    h, w = rgb.shape[:2]
    norm = np.array([[xs.min() / w, ys.min() / h, (xs.max() + 1) / w, (ys.max() + 1) / h]], np.float32)
    return transform.boxes_to_frame(norm)[0], (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)


@pytest.mark.parametrize("platform,resize,model", [(Platform.VC4, "letterbox", (320, 320)),
                                                  (Platform.VC4, "stretch", (300, 300)),
                                                  (Platform.PISP, "letterbox", (640, 640)),
                                                  (Platform.PISP, "stretch", (224, 128))])
def test_boxes_land_in_main_stream_pixels(monkeypatch, platform, resize, model):
    """A drawn rectangle, seen by main and lores with known geometry, comes back in main's pixels."""
    image, (x0, y0, x1, y1) = _rectangle_scene()
    calls = fake_picamera2(monkeypatch, platform, image)
    source = Picamera2Source(0, width=1280, height=720)
    source.set_model_size(*model, letterbox=resize == "letterbox")
    source.open()
    frame = source.read()
    source.close()
    lores = _configured(calls)["lores"]["size"]
    assert frame.size == (1280, 720)
    rgb, transform = model_input(frame, *model, resize=resize)
    assert (transform.frame_w, transform.frame_h) == (1280, 720)
    box, in_input = _bright_box(rgb, transform)
    expected = np.array([x0 * 1280, y0 * 720, x1 * 1280, y1 * 720])
    px = max(1280 / lores[0], 720 / lores[1]) * max(1280 / model[0], 720 / model[1]) / 2 + 2
    assert np.abs(box - expected).max() <= px, (box, expected)
    if resize == "letterbox":       # aspect ratio kept in the input: as wide/high as in main pixels
        width, height = in_input[2] - in_input[0], in_input[3] - in_input[1]
        assert abs(width / height - (x1 - x0) * 1280 / ((y1 - y0) * 720)) < 0.06
        pad_rows = rgb[:, model[0] // 2, 1]
        assert (pad_rows[:5] == 0).all() and (pad_rows[-5:] == 0).all()     # padded above and below


def test_edge_run_on_the_camera_reports_boxes_in_main_stream_pixels(monkeypatch, tmp_path, cli_logging):
    """`edge run --source picamera2` end to end (the default model, frame 30 of the clip as the
    camera's view): JSONL width/height are the main stream's, the person's box is in its pixels."""
    from edge import cli

    capture = cv2.VideoCapture(str(ROOT / "models/footage/bikes.mp4"))
    capture.set(cv2.CAP_PROP_POS_FRAMES, 30)
    ok, clip_frame = capture.read()
    capture.release()
    assert ok and clip_frame.shape == (272, 640, 3)
    fake_picamera2(monkeypatch, Platform.VC4, clip_frame)
    jsonl = tmp_path / "d.jsonl"
    rc = cli.main(["run", "--source", "picamera2", "--width", "1280", "--height", "544", "--max-frames", "2",
                   "--jsonl", str(jsonl), "--live", "off"])
    assert rc == 0
    events = [json.loads(line) for line in jsonl.read_text().splitlines()]
    assert events and all((e["width"], e["height"]) == (1280, 544) for e in events)
    people = [d for d in events[0]["detections"] if d["label"] == "person"]
    assert people
    # The README's example for frame 30 of the clip (640x272): [174.9, 3.2, 387.7, 268.8], here x2.
    best = max(people, key=lambda d: d["score"])
    assert np.abs(np.array(best["box"]) - 2 * np.array([174.9, 3.2, 387.7, 268.8])).max() < 30, best


def test_missing_picamera2_names_the_apt_package(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)        # import fails as if not installed
    source = make_source(SourceConfig(uri="picamera2:0"))
    with pytest.raises(SourceError, match="sudo apt install python3-picamera2"):
        source.open()


def _picamera2_import_raises(monkeypatch, exc):
    class Finder:
        def find_spec(self, name, path=None, target=None):
            if name == "picamera2":
                raise exc
            return None

    monkeypatch.delitem(sys.modules, "picamera2", raising=False)
    monkeypatch.setattr(sys, "meta_path", [Finder()] + sys.meta_path)


# What apt's simplejpeg (Cython, built against numpy 1.24) raises under a venv's numpy 2.
DTYPE_SIZE = ValueError("numpy.dtype size changed, may indicate binary incompatibility. "
                        "Expected 96 from C header, got 88 from PyObject")


def test_picamera2_broken_by_a_venv_numpy_2_gives_the_remedy(monkeypatch):
    _picamera2_import_raises(monkeypatch, DTYPE_SIZE)
    with pytest.raises(SourceError, match=r"numpy.dtype size changed.*pip install 'numpy<2'"):
        Picamera2Source(0).open()


def test_picamera2_c_extension_for_numpy_1_raising_import_error_gives_the_remedy(monkeypatch):
    _picamera2_import_raises(monkeypatch, ImportError("numpy.core.multiarray failed to import"))
    with pytest.raises(SourceError, match=r"numpy.core.multiarray failed.*numpy<2"):
        Picamera2Source(0).open()


def test_cli_broken_picamera2_is_one_line_exit_2(monkeypatch, capsys, tmp_path, cli_logging):
    from edge import cli

    _picamera2_import_raises(monkeypatch, DTYPE_SIZE)
    monkeypatch.chdir(tmp_path)
    rc = cli.main(["run", "--source", "picamera2", "--max-frames", "1", "--live", "off"])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("edge: error: --source picamera2: importing picamera2")
    assert "numpy<2" in err[0]


def test_an_unrelated_value_error_is_not_disguised(monkeypatch):
    _picamera2_import_raises(monkeypatch, ValueError("something else"))
    with pytest.raises(ValueError, match="something else"):
        Picamera2Source(0).open()

"""Raspberry Pi camera modules (CSI, libcamera) through picamera2.

Two streams from one request. ``main`` is the picture at ``--width/--height``: it is the frame the
sinks see (JSONL width/height, the live view), and boxes are given in its pixels. ``lores`` is the
same field of view scaled by the ISP to the main stream's aspect ratio and near the model's input
size; that is what the model gets, so the CPU only finishes the resize (and letterboxes, when the
manifest asks for it). Having the ISP stretch lores straight to the model's input size would
distort the picture (bypassing a manifest's ``letterbox``, which YOLO models need).

ISP constraints: lores is never larger than main; picamera2's ``align_configuration`` truncates
widths to 64 pixels for lores (YUV420 on a Pi 4, RGB888 on a Pi 5) and heights to even, so the
width is chosen a multiple of 64 first and the height follows the aspect ratio. On a Pi 4 (VC4
platform) lores must be YUV420 (I420 planes; the preprocessor converts it); on a Pi 5 (PiSP) it can
be RGB. lores keeps picamera2's default ``preserve_ar=False``: it takes main's crop, so the two
streams differ by a scale only. ``queue=False`` makes a capture wait for a frame that starts after
the call, so a slow model never receives a stale queued frame (picamera2#426, #849).

Byte order: picamera2's ``RGB888`` is B, G, R in memory (the format names follow libcamera/DRM
fourcc, little-endian words), i.e. OpenCV order; frames are therefore tagged ``BGR``.

picamera2 is imported only when this source opens; it comes from apt (python3-picamera2) on
Raspberry Pi OS, so a venv needs ``--system-site-packages`` to see it, and its C extensions
(simplejpeg) need apt's numpy: a numpy 2 in the venv breaks them on bookworm (numpy 1.24).
"""

from __future__ import annotations

import functools
import importlib
import logging
import math
import time
from dataclasses import dataclass

import numpy as np

from edge.capture.base import Frame
from edge.errors import SourceError
from edge.vision.preprocess import Transform

log = logging.getLogger(__name__)

APT_PACKAGE = "python3-picamera2"
# picamera2 align_stream(optimal=True): VC4 aligns YUV420 to 32 * 2, PiSP RGB888 to 64.
LORES_ALIGN = 64
NUMPY_REMEDY = ("apt's picamera2 and simplejpeg are built against apt's numpy: pin it in the venv with "
                ".venv/bin/pip install 'numpy<2' (Raspberry Pi OS bookworm)")
_NUMPY_ABI = ("dtype size changed", "compiled using NumPy", "_ARRAY_API", "numpy.core.multiarray failed")


def _numpy_abi_error(exc: BaseException) -> SourceError | None:
    """The one-line error for an extension built against another numpy, or None if it is not that."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if not any(marker in str(exc) for marker in _NUMPY_ABI):
        return None
    return SourceError(f"--source picamera2: importing picamera2 failed with numpy {np.__version__} from "
                       f"{np.__file__.rsplit('/numpy/', 1)[0]} ({type(exc).__name__}: {text})", NUMPY_REMEDY)


def _import_picamera2():
    try:
        module = importlib.import_module("picamera2")
    except ImportError as exc:
        abi = _numpy_abi_error(exc)
        if abi is not None:
            raise abi from None
        raise SourceError(f"--source picamera2 needs the picamera2 library ({exc})",
                          f"sudo apt install {APT_PACKAGE}, and create the venv with --system-site-packages") from None
    except ValueError as exc:    # Cython's check: "numpy.dtype size changed, may indicate binary incompatibility"
        abi = _numpy_abi_error(exc)
        if abi is None:
            raise
        raise abi from None
    try:
        platform = importlib.import_module("picamera2.platform")
        vc4 = platform.get_platform() == platform.Platform.VC4
    except (ImportError, AttributeError) as exc:
        log.warning("cannot tell the camera platform (%s); assuming a Pi 4 (VC4): lores as YUV420", exc)
        vc4 = True
    return module, vc4


def _even(n: int) -> int:
    return max(2, n - n % 2)


def lores_size(main: tuple[int, int], model: tuple[int, int], *, letterbox: bool,
               align: int = LORES_ALIGN) -> tuple[int, int]:
    """(width, height) of a lores stream at ``main``'s aspect ratio near the ``model`` input.

    Letterboxed models: the picture fits the input (the preprocessor pads it); stretched models: it
    covers the input (the preprocessor only scales down). The width is rounded up to ``align`` (the
    preprocessor absorbs the few extra pixels) and the height follows the aspect ratio, even; neither
    exceeds main's.
    """
    main_w, main_h = main
    scale = (min if letterbox else max)(model[0] / main_w, model[1] / main_h)
    widest = max(align, main_w - main_w % align)
    width = min(widest, max(align, math.ceil(main_w * scale / align) * align))
    if width > main_w:          # a main stream narrower than one alignment step
        width = _even(main_w)
    height = min(_even(main_h), max(2, 2 * round(width * main_h / main_w / 2)))   # nearest even
    return width, height


@dataclass(frozen=True, slots=True)
class CameraFrame(Frame):
    """The main-stream picture (what sinks see; boxes are in its pixels) and the lores one for the model."""

    lores: np.ndarray | None = None   # (h*3/2)xW I420 or HxWx3 BGR, like Frame.image
    lores_format: str = "YUV420"

    def model_frame(self) -> Frame:
        return Frame(self.lores, self.index, self.timestamp, self.captured_ns, self.lores_format)


@functools.lru_cache(maxsize=8)
def to_main_stream(transform: Transform, main_size: tuple[int, int]) -> Transform:
    """``transform`` (model input → lores pixels) re-expressed for the main stream: the two streams
    share their field of view, so only the scale changes."""
    main_w, main_h = main_size
    return Transform(main_w, main_h, transform.input_w, transform.input_h,
                     transform.scale_x * transform.frame_w / main_w, transform.scale_y * transform.frame_h / main_h,
                     transform.pad_x, transform.pad_y)


class MainStreamPreprocessor:
    """Feeds a :class:`CameraFrame`'s lores picture to ``inner``; the transform maps to main pixels."""

    def __init__(self, inner):
        self.inner = inner

    def __call__(self, frame: Frame, out: np.ndarray) -> Transform:
        if not isinstance(frame, CameraFrame) or frame.lores is None:
            return self.inner(frame, out)
        return to_main_stream(self.inner(frame.model_frame(), out), frame.size)

    def __getattr__(self, name):
        return getattr(self.inner, name)


def _packed(array: np.ndarray, size: tuple[int, int], fmt: str) -> np.ndarray:
    """Drop row padding: RGB888 rows may be wider than the picture, I420 planes strided."""
    w, h = size
    if fmt != "YUV420":
        return array[:, :w, :3] if array.shape[1] != w or array.shape[2] != 3 else array
    stride = array.shape[1]
    if stride == w:
        return array
    # I420 with padded rows: Y is h rows of `stride`, U and V are h/2 rows of stride/2 each.
    # A new array per frame: frames are handed to other threads and must not change afterwards.
    packed = np.empty((h * 3 // 2, w), np.uint8)
    packed[:h] = array[:h, :w]
    chroma = array[h:h * 3 // 2].reshape(-1)
    half = (h // 2) * (stride // 2)
    for plane in range(2):
        rows = chroma[plane * half:(plane + 1) * half].reshape(h // 2, stride // 2)[:, :w // 2]
        dst = packed[h:].reshape(-1)[plane * (h // 2) * (w // 2):(plane + 1) * (h // 2) * (w // 2)]
        dst.reshape(h // 2, w // 2)[:] = rows
    return packed


class Picamera2Source:
    """A CSI camera: main-stream frames, carrying the lores picture when a model size is set."""

    def __init__(self, camera: int = 0, *, width: int = 0, height: int = 0, fps: float = 0.0,
                 model_size: tuple[int, int] | None = None, letterbox: bool = False):
        self.camera = camera
        self.name = f"picamera2:{camera}"
        self.live = True
        self.request = (width, height, fps)
        self.model_size = model_size
        self.letterbox = letterbox
        self.lores_format = "BGR"
        self._cam = None
        self._index = 0
        self.main_size = (0, 0)
        self.lores_size: tuple[int, int] | None = None

    def set_model_size(self, width: int, height: int, *, letterbox: bool = False) -> None:
        """Ask the ISP for a lores stream for a model input of width x height (before :meth:`open`);
        ``letterbox``: the model keeps the aspect ratio (padding), so lores fits inside the input."""
        self.model_size = (width, height)
        self.letterbox = letterbox

    def wrap_preprocessor(self, preprocessor):
        """The model gets the lores picture; boxes come back in main-stream pixels."""
        return MainStreamPreprocessor(preprocessor)

    def open(self) -> None:
        module, vc4 = _import_picamera2()
        width, height, fps = self.request
        try:
            cam = module.Picamera2(self.camera)
        except (IndexError, RuntimeError) as exc:
            raise SourceError(f"cannot open camera module {self.camera} ({exc})",
                              "check the ribbon cable, `rpicam-hello --list-cameras`, and that no other "
                              "process holds the camera") from None
        main = {"format": "RGB888"}
        if width and height:
            main["size"] = (width, height)
        kwargs = {"main": main, "buffer_count": 2, "queue": False}
        if self.model_size:
            self.lores_format = "YUV420" if vc4 else "BGR"
            kwargs["lores"] = {"size": (_even(self.model_size[0]), _even(self.model_size[1])),
                               "format": "YUV420" if vc4 else "RGB888"}
        if fps:
            kwargs["controls"] = {"FrameRate": fps}
        config = cam.create_preview_configuration(**kwargs)
        cam.align_configuration(config)          # the ISP's alignment rules may adjust the main size
        if self.model_size:                      # lores at the aligned main stream's aspect ratio
            config["lores"]["size"] = lores_size(tuple(config["main"]["size"]), self.model_size,
                                                 letterbox=self.letterbox)
            cam.align_configuration(config)
        try:
            cam.configure(config)
        except RuntimeError as exc:
            cam.close()
            raise SourceError(f"camera module {self.camera} refused the configuration main {config['main']['size']}"
                              f"{', lores ' + str(config['lores']['size']) if self.model_size else ''} ({exc})",
                              "try another --width/--height") from None
        actual = cam.camera_configuration()      # what libcamera granted
        self.main_size = tuple(actual["main"]["size"])
        self.lores_size = tuple(actual["lores"]["size"]) if self.model_size else None
        if self.model_size:
            log.info("picamera2 camera %d: main %s (frames, box pixels), lores %s %s for the %dx%d model input (%s)%s",
                     self.camera, self.main_size, self.lores_size, self.lores_format, *self.model_size,
                     "letterboxed" if self.letterbox else "stretched", " (Pi 4: YUV420 lores)" if vc4 else "")
        else:
            log.info("picamera2 camera %d: main %s", self.camera, self.main_size)
        cam.start()
        self._cam = cam

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError(f"source {self.name} is not open")
        if self.lores_size is None:
            frame = Frame.captured_now(_packed(self._cam.capture_array("main"), self.main_size, "BGR"), self._index)
        else:
            (main, lores), _metadata = self._cam.capture_arrays(["main", "lores"])   # one request: same instant
            frame = CameraFrame(_packed(main, self.main_size, "BGR"), self._index, time.time(), time.monotonic_ns(),
                                "BGR", _packed(lores, self.lores_size, self.lores_format), self.lores_format)
        self._index += 1
        return frame

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.stop()
            cam.close()

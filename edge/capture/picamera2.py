"""Raspberry Pi camera modules (CSI, libcamera) through picamera2.

The ISP does the resizing: besides the ``main`` stream (the requested capture size, for display),
a ``lores`` stream is configured at the model's input size, and that is what the model gets. On a
Pi 4 (VC4 platform) lores must be YUV420 (I420 planes; the preprocessor converts it); on a Pi 5
(PiSP) it can be RGB. ``queue=False`` makes ``capture_array`` wait for a frame that starts after
the call, so a slow model never receives a stale queued frame (picamera2#426, #849).

Byte order: picamera2's ``RGB888`` is B, G, R in memory (the format names follow libcamera/DRM
fourcc, little-endian words), i.e. OpenCV order; frames are therefore tagged ``BGR``.

picamera2 is imported only when this source opens; it comes from apt (python3-picamera2) on
Raspberry Pi OS, so a venv needs ``--system-site-packages`` to see it.
"""

from __future__ import annotations

import importlib
import logging

import numpy as np

from edge.capture.base import Frame
from edge.errors import SourceError

log = logging.getLogger(__name__)

APT_PACKAGE = "python3-picamera2"


def _import_picamera2():
    try:
        module = importlib.import_module("picamera2")
    except ImportError as exc:
        raise SourceError(f"--source picamera2 needs the picamera2 library ({exc})",
                          f"sudo apt install {APT_PACKAGE}, and create the venv with --system-site-packages") from None
    try:
        platform = importlib.import_module("picamera2.platform")
        vc4 = platform.get_platform() == platform.Platform.VC4
    except (ImportError, AttributeError) as exc:
        log.warning("cannot tell the camera platform (%s); assuming a Pi 4 (VC4): lores as YUV420", exc)
        vc4 = True
    return module, vc4


def _even(n: int) -> int:
    return max(2, n - n % 2)


class Picamera2Source:
    """A CSI camera; frames are the lores stream (model size) or, without a model size, main."""

    def __init__(self, camera: int = 0, *, width: int = 0, height: int = 0, fps: float = 0.0,
                 model_size: tuple[int, int] | None = None):
        self.camera = camera
        self.name = f"picamera2:{camera}"
        self.live = True
        self.request = (width, height, fps)
        self.model_size = model_size
        self.stream = "main"
        self.format = "BGR"
        self._cam = None
        self._index = 0
        self._size = (0, 0)

    def set_model_size(self, width: int, height: int) -> None:
        """Ask the ISP for a lores stream at the model's input size (before :meth:`open`)."""
        self.model_size = (width, height)

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
            w, h = self.model_size
            lores_format = "YUV420" if vc4 else "RGB888"
            kwargs["lores"] = {"size": (_even(w), _even(h)), "format": lores_format}
            self.stream, self.format = "lores", ("YUV420" if vc4 else "BGR")
        if fps:
            kwargs["controls"] = {"FrameRate": fps}
        config = cam.create_preview_configuration(**kwargs)
        cam.align_configuration(config)          # the ISP's alignment rules may adjust the sizes
        cam.configure(config)
        self._size = tuple(config[self.stream]["size"])
        log.info("picamera2 camera %d: main %s, frames from %s %s %s%s", self.camera, config["main"]["size"],
                 self.stream, self._size, self.format, " (Pi 4: YUV420 lores)" if vc4 and self.model_size else "")
        cam.start()
        self._cam = cam

    def _as_frame_image(self, array: np.ndarray) -> np.ndarray:
        """Drop row padding: RGB888 rows may be wider than the picture, I420 planes strided."""
        w, h = self._size
        if self.format != "YUV420":
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

    def read(self) -> Frame | None:
        if self._cam is None:
            raise SourceError(f"source {self.name} is not open")
        array = self._cam.capture_array(self.stream)
        frame = Frame.captured_now(self._as_frame_image(array), self._index, self.format)
        self._index += 1
        return frame

    def close(self) -> None:
        cam, self._cam = self._cam, None
        if cam is not None:
            cam.stop()
            cam.close()

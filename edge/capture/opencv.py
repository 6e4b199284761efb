"""OpenCV sources: video files, V4L2/UVC cameras (index or /dev/videoN), and network streams.

CSI cameras on the libcamera stack do not work through ``cv2.VideoCapture`` (opencv#22820); use
the picamera2 source for them.
"""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import struct
import sys
import time
from pathlib import Path
from typing import Callable

# FFmpeg's own messages ("moov atom not found") would precede and duplicate our errors, which say
# what failed and what to do; OPENCV_FFMPEG_LOGLEVEL=32 in the environment shows them again.
# OpenCV reads this once, when its FFmpeg backend first opens something.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

import cv2  # noqa: E402

from edge.capture.base import Frame
from edge.errors import SourceError

log = logging.getLogger(__name__)


class VideoFileSource:
    """A video file, paced at its frame rate (``realtime``) or read as fast as it is consumed."""

    def __init__(self, path: str | Path, *, realtime: bool = True, loop: bool = False):
        self.path = Path(path)
        self.name = self.path.name
        self.live = realtime
        self.loop = loop
        self.fps = 0.0
        self._cap: cv2.VideoCapture | None = None
        self._index = 0
        self._start = 0.0
        self._since_start = 0

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video file {str(self.path)!r} does not exist",
                              "give an existing file, a camera index, a URL or an image folder")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"cannot open {str(self.path)!r} as a video",
                              "give a video OpenCV's FFmpeg backend can decode (mp4, mkv, avi...)")
        self._cap = cap
        self.fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        if self.live and not self.fps > 0:
            log.warning("%s does not state its frame rate; pacing at 25 fps", self.name)
            self.fps = 25.0
        self._restart_clock()

    def _restart_clock(self) -> None:
        self._start = time.monotonic()
        self._since_start = 0

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"source {self.name} is not open")
        ok, image = self._cap.read()
        if not ok and self.loop and self._index > 0:
            log.info("%s: end of file, looping", self.name)
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._restart_clock()
            ok, image = self._cap.read()
        if not ok:
            if self._index == 0:
                raise SourceError(f"{str(self.path)!r} contains no decodable frame")
            return None
        if self.live:
            due = self._start + self._since_start / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._since_start += 1
        frame = Frame.captured_now(image, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


# VIDIOC_ENUM_FMT = _IOWR('V', 2, struct v4l2_fmtdesc): index, type, flags (u32 ×3), description
# (32 bytes), pixelformat, mbus_code (u32 ×2), reserved (u32 ×3) = 64 bytes (linux/videodev2.h).
_FMTDESC = struct.Struct("<III32sII3I")
VIDIOC_ENUM_FMT = (3 << 30) | (_FMTDESC.size << 16) | (ord("V") << 8) | 2
V4L2_BUF_TYPE_VIDEO_CAPTURE = 1


def device_path(device: int | str) -> str:
    return f"/dev/video{device}" if isinstance(device, int) else device


def v4l2_formats(path: str, ioctl: Callable = fcntl.ioctl) -> list[str] | None:
    """FourCCs the V4L2 device offers for capture (VIDIOC_ENUM_FMT), or None when it cannot be asked."""
    try:
        fd = os.open(path, os.O_RDWR | os.O_NONBLOCK)
    except OSError as exc:
        log.debug("cannot open %s to list its formats: %s", path, exc)
        return None
    formats = []
    try:
        for index in range(64):
            buf = bytearray(_FMTDESC.pack(index, V4L2_BUF_TYPE_VIDEO_CAPTURE, 0, b"", 0, 0, 0, 0, 0))
            try:
                ioctl(fd, VIDIOC_ENUM_FMT, buf)
            except OSError as exc:
                if exc.errno == errno.EINVAL:    # past the last format
                    break
                log.debug("cannot list the formats of %s: %s", path, exc)
                return None
            pixelformat = _FMTDESC.unpack(bytes(buf))[4]
            formats.append(pixelformat.to_bytes(4, "little").decode("ascii", "replace"))
    finally:
        os.close(fd)
    return formats


class CameraSource:
    """A V4L2/UVC camera through OpenCV: buffer of 1, MJPG where offered, requested size/fps.

    MJPG is asked for only when the device lists it (VIDIOC_ENUM_FMT): at USB 2 bandwidth it is
    what allows 720p/1080p at full frame rate, and a device without it keeps its own format.
    """

    def __init__(self, device: int | str, *, width: int = 0, height: int = 0, fps: float = 0.0):
        self.device = device
        self.name = f"camera:{device}"
        self.live = True
        self.request = (width, height, fps)
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        backend = cv2.CAP_V4L2 if sys.platform.startswith("linux") else cv2.CAP_ANY
        cap = cv2.VideoCapture(self.device, backend)
        if not cap.isOpened():
            raise SourceError(f"cannot open camera {self.device!r}",
                              "check `ls /dev/video*`, that the user is in the 'video' group, and that "
                              "no other process holds the camera; CSI cameras need --source picamera2")
        width, height, fps = self.request
        formats = v4l2_formats(device_path(self.device)) if sys.platform.startswith("linux") else None
        if formats is None or "MJPG" in formats:
            cap.set(cv2.CAP_PROP_FOURCC, cv2.VideoWriter_fourcc(*"MJPG"))
        else:
            log.info("camera %s offers %s, not MJPG: keeping its own format", self.device, ", ".join(formats))
        if width and height:
            cap.set(cv2.CAP_PROP_FRAME_WIDTH, width)
            cap.set(cv2.CAP_PROP_FRAME_HEIGHT, height)
        if fps:
            cap.set(cv2.CAP_PROP_FPS, fps)
        # Ignored by some drivers: the capture thread keeps only the newest frame anyway.
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        fourcc = int(cap.get(cv2.CAP_PROP_FOURCC)).to_bytes(4, "little").decode("ascii", "replace")
        log.info("camera %s: %dx%d @ %.1f fps, %s", self.device, cap.get(cv2.CAP_PROP_FRAME_WIDTH),
                 cap.get(cv2.CAP_PROP_FRAME_HEIGHT), cap.get(cv2.CAP_PROP_FPS), fourcc)
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"source {self.name} is not open")
        ok, image = self._cap.read()
        if not ok:
            raise SourceError(f"camera {self.device!r} stopped delivering frames",
                              "check the cable and `dmesg` for USB resets")
        frame = Frame.captured_now(image, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None


class StreamSource:
    """An RTSP/HTTP stream through OpenCV's FFmpeg backend; live, so old frames are dropped."""

    def __init__(self, url: str):
        self.url = url
        self.name = url.split("@")[-1]  # never log credentials
        self.live = True
        self._cap: cv2.VideoCapture | None = None
        self._index = 0

    def open(self) -> None:
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG)
        if not cap.isOpened():
            raise SourceError(f"cannot open stream {self.name!r}",
                              "check the URL, credentials and that the server is reachable")
        self._cap = cap

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"source {self.name} is not open")
        ok, image = self._cap.read()
        if not ok:
            log.info("stream %s ended", self.name)
            return None
        frame = Frame.captured_now(image, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

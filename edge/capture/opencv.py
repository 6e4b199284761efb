"""OpenCV sources: video files, V4L2/UVC cameras (index or /dev/videoN), and network streams.

CSI cameras on the libcamera stack do not work through ``cv2.VideoCapture`` (opencv#22820); use
the picamera2 source for them.
"""

from __future__ import annotations

import atexit
import ctypes
import errno
import fcntl
import logging
import os
import struct
import sys
import time
from pathlib import Path
from typing import Callable

# FFmpeg's own messages ("moov atom not found", "[h264 @ 0x…] error while decoding MB …") would
# go to stderr by the hundred for one corrupt file. OpenCV reads this once, when its FFmpeg backend
# first opens something: until then only fatal ones print; after that :func:`route_libav_log` sends
# them through logging (``edge.capture.libav``), rate-limited.
os.environ.setdefault("OPENCV_FFMPEG_LOGLEVEL", "8")

import cv2  # noqa: E402

from edge.capture.base import Frame  # noqa: E402
from edge.errors import SourceError  # noqa: E402
from edge.telemetry.stats import LogLimiter, count_process  # noqa: E402

log = logging.getLogger(__name__)


def _quiet_opencv() -> None:
    """OpenCV's own "[ WARN:0@0.3] global cap.cpp…" lines duplicate our errors: errors only, unless the
    user set OPENCV_LOG_LEVEL. OpenCV 5 has ``cv2.utils.logging``; 4.x (4.11 is what Raspberry Pi OS
    bookworm's numpy<2 pin resolves to) has only ``cv2.setLogLevel`` (2 = LOG_LEVEL_ERROR)."""
    if "OPENCV_LOG_LEVEL" in os.environ:
        return
    utils_logging = getattr(getattr(cv2, "utils", None), "logging", None)
    if utils_logging is not None and hasattr(utils_logging, "setLogLevel"):
        utils_logging.setLogLevel(utils_logging.LOG_LEVEL_ERROR)
    elif hasattr(cv2, "setLogLevel"):
        cv2.setLogLevel(2)      # cv::utils::logging::LOG_LEVEL_ERROR
    else:
        log.debug("OpenCV %s has no log-level setting: its warnings stay on", cv2.__version__)


_quiet_opencv()
libav_log = logging.getLogger("edge.capture.libav")

AV_LOG_QUIET, AV_LOG_ERROR, AV_LOG_WARNING = -8, 16, 24
MAX_UNCOUNTED_FAILURES = 32     # failed reads in a row that end a file that does not state its frame count
STREAM_RETRIES = 5              # failed reads in a row that end a stream …
STREAM_RETRY_SECONDS = 2.0      # … or failed reads for this long (a read that hangs to FFmpeg's timeout)


class _LibavLog:
    """FFmpeg's av_log messages → logging, through ``av_log_set_callback`` on the libavutil that
    OpenCV loaded (found in /proc/self/maps; ctypes, no extra dependency).

    Errors are logged at INFO at most once per ``period`` seconds with the count held back, warnings at
    DEBUG; the source's own warning says what it did about them (frames skipped, stream ended).
    Installed once, after OpenCV's FFmpeg backend has set its own level and callback (at its first
    open); reset to silence at exit, so that a decoder thread outliving the interpreter calls no Python.
    """

    def __init__(self, period: float = 10.0):
        self.installed = False
        self.tried = False
        self._limiter = LogLimiter(period)
        self._lib = None
        self._callback = None

    def install(self) -> None:
        if self.tried:
            return
        self.tried = True
        try:
            path = next((line.split()[-1] for line in open("/proc/self/maps", encoding="utf-8", errors="replace")
                         if "libavutil" in line and line.split()[-1].startswith("/")), None)
        except OSError as exc:
            log.info("FFmpeg messages stay silent (OPENCV_FFMPEG_LOGLEVEL): cannot read /proc/self/maps: %s", exc)
            return
        if path is None:
            log.info("FFmpeg messages stay silent (OPENCV_FFMPEG_LOGLEVEL): OpenCV's libavutil is not a "
                     "shared library here")
            return
        try:
            lib = ctypes.CDLL(path)
            proto = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p)
            lib.av_log_format_line2.argtypes = [ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_void_p,
                                                ctypes.c_char_p, ctypes.c_int, ctypes.POINTER(ctypes.c_int)]
            lib.av_log_set_callback.argtypes = [ctypes.c_void_p]
            lib.av_log_set_level.argtypes = [ctypes.c_int]
            default = ctypes.cast(lib.av_log_default_callback, ctypes.c_void_p)
        except (OSError, AttributeError) as exc:
            log.info("FFmpeg messages stay silent (OPENCV_FFMPEG_LOGLEVEL): %s: %s", path, exc)
            return
        self._lib, self._callback = lib, proto(self._message)
        lib.av_log_set_callback(ctypes.cast(self._callback, ctypes.c_void_p))
        lib.av_log_set_level(AV_LOG_WARNING)
        atexit.register(self._uninstall, default)
        self.installed = True
        log.debug("FFmpeg messages routed to logging from %s", path)

    def _uninstall(self, default) -> None:
        self._lib.av_log_set_level(AV_LOG_QUIET)
        self._lib.av_log_set_callback(default)

    def _message(self, avcl, level, fmt, va_list) -> None:
        """av_log callback (any FFmpeg thread; ctypes takes the GIL)."""
        if level > AV_LOG_WARNING or (level > AV_LOG_ERROR and not libav_log.isEnabledFor(logging.DEBUG)):
            return
        buf = ctypes.create_string_buffer(512)
        prefix = ctypes.c_int(1)
        self._lib.av_log_format_line2(avcl, level, fmt, va_list, buf, len(buf), ctypes.byref(prefix))
        text = buf.value.decode("utf-8", "replace").strip()
        if level > AV_LOG_ERROR:
            libav_log.debug("%s", text)
        elif libav_log.isEnabledFor(logging.INFO):
            self._limiter.log(libav_log, logging.INFO, "%s", text)


LIBAV_LOG = _LibavLog()


def route_libav_log() -> None:
    """Route FFmpeg's messages through logging (once; after OpenCV's FFmpeg backend initialised)."""
    if not LIBAV_LOG.tried:
        LIBAV_LOG.install()


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
        self.frame_count = 0        # as the container states it; 0: unknown
        self.corrupt = 0            # frames skipped because they did not decode
        self._reads = 0             # reads since the start of the file, failed ones included
        self._warn = LogLimiter(30.0)

    def open(self) -> None:
        if not self.path.is_file():
            raise SourceError(f"video file {str(self.path)!r} does not exist",
                              "give an existing file, a camera index, a URL or an image folder")
        cap = cv2.VideoCapture(str(self.path))
        if not cap.isOpened():
            raise SourceError(f"cannot open {str(self.path)!r} as a video",
                              "give a video OpenCV's FFmpeg backend can decode (mp4, mkv, avi...)")
        route_libav_log()
        self._cap = cap
        self.frame_count = max(0, int(cap.get(cv2.CAP_PROP_FRAME_COUNT) or 0))
        self._reads = 0
        self.fps = cap.get(cv2.CAP_PROP_FPS) or 0.0
        self._opened_at = time.time()
        if self.live and not self.fps > 0:
            log.warning("%s does not state its frame rate; pacing at 25 fps", self.name)
            self.fps = 25.0
        self._restart_clock()

    def _restart_clock(self) -> None:
        self._start = time.monotonic()
        self._since_start = 0

    def _grab(self) -> tuple[bool, object]:
        """The next decodable frame, skipping (and counting) frames that do not decode.

        OpenCV's ``read`` fails both at the end and at a frame it cannot decode, and its position
        does not move past a failed frame, so the end is told by the container's frame count: every
        read, failed or not, consumes at least one frame of it, and a failed read is the end only once
        as many reads as frames were made. A file that states no count ends after
        ``MAX_UNCOUNTED_FAILURES`` failed reads in a row. A failed read before the end is a corrupt
        frame: skipped, counted (``edge_frames_corrupt_total``), and warned about at most every 30 s.
        """
        failed = 0
        while True:
            ok, image = self._cap.read()
            self._reads += 1
            if ok:
                break
            if self.frame_count and self._reads > self.frame_count:
                break                               # past the last frame: the end
            failed += 1
            if self.frame_count:
                if self._reads == self.frame_count:     # the last frame did not decode either
                    break
            elif failed >= MAX_UNCOUNTED_FAILURES:
                failed -= MAX_UNCOUNTED_FAILURES     # taken as the end, not as corrupt frames
                break
        if failed:
            self.corrupt += failed
            count_process("corrupt", failed)
            self._warn.warning(log, "%s: %d frame(s) could not be decoded and were skipped (%d so far)",
                               self.name, failed, self.corrupt)
        return ok, image

    def read(self) -> Frame | None:
        if self._cap is None:
            raise SourceError(f"source {self.name} is not open")
        ok, image = self._grab()
        if not ok and self.loop and self._index > 0:
            log.info("%s: end of file, looping", self.name)
            self._cap.set(cv2.CAP_PROP_POS_FRAMES, 0)
            self._reads = 0
            self._restart_clock()
            ok, image = self._grab()
        if not ok:
            if self._index == 0:
                raise SourceError(f"{str(self.path)!r} contains no decodable frame")
            if self.corrupt:
                log.warning("%s: end of file; %d frame(s) did not decode and were skipped", self.name, self.corrupt)
            return None
        if self.live:
            due = self._start + self._since_start / self.fps
            delay = due - time.monotonic()
            if delay > 0:
                time.sleep(delay)
        self._since_start += 1
        if self.live or not self.fps > 0:
            frame = Frame.captured_now(image, self._index)
        else:   # read as fast as possible: stamped with the clip's own time, so seconds (a tracker's
            # max_age, event durations) mean what they mean in the clip, whatever the reading speed
            frame = Frame(image, self._index, self._opened_at + self._index / self.fps, time.monotonic_ns())
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
        self._delivered = 0       # frames since the last open
        self.corrupt = 0          # failed reads followed by a frame: skipped pictures
        self._warn = LogLimiter(30.0)

    def open(self) -> None:
        cap = cv2.VideoCapture(self.url, cv2.CAP_FFMPEG)
        route_libav_log()
        if not cap.isOpened():
            raise SourceError(f"cannot open stream {self.name!r}",
                              "check the URL, credentials and that the server is reachable")
        self._cap = cap
        self._delivered = 0

    def read(self) -> Frame | None:
        """The next frame. A read that fails is retried (a corrupt picture in the stream, skipped and
        counted) up to STREAM_RETRIES times in a row within STREAM_RETRY_SECONDS; then the stream has
        ended, or, before any frame, it is not a stream of pictures (SourceError)."""
        if self._cap is None:
            raise SourceError(f"source {self.name} is not open")
        failed, first_failure = 0, 0.0
        while True:
            ok, image = self._cap.read()
            if ok:
                break
            now = time.monotonic()
            failed, first_failure = failed + 1, first_failure or now
            if failed < STREAM_RETRIES and now - first_failure < STREAM_RETRY_SECONDS:
                continue
            if self._delivered == 0:     # opened, but nothing in it decodes: not a stream of pictures
                raise SourceError(f"stream {self.name!r} gave no decodable frame",
                                  "check that the URL serves video (RTSP H.264, HTTP MJPEG), not a page or garbage")
            log.warning("stream %s ended after %d frames", self.name, self._delivered)
            return None
        if failed:
            self.corrupt += failed
            count_process("corrupt", failed)
            self._warn.warning(log, "stream %s: %d frame(s) could not be decoded and were skipped (%d so far)",
                               self.name, failed, self.corrupt)
        self._delivered += 1
        frame = Frame.captured_now(image, self._index)
        self._index += 1
        return frame

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()
            self._cap = None

"""The V4L2 camera source against fakes of OpenCV's VideoCapture and the VIDIOC_ENUM_FMT ioctl.

No camera exists here. The fakes follow the documented interfaces: ``cv2.VideoCapture(index,
cv2.CAP_V4L2)`` with isOpened/set/get/read/release, and linux/videodev2.h's struct v4l2_fmtdesc
(the driver fills ``pixelformat`` for ``index`` and fails with EINVAL past the last format).
"""

import errno
import struct

import cv2
import numpy as np
import pytest

from edge.capture import opencv
from edge.capture.opencv import CameraSource, v4l2_formats
from edge.errors import SourceError


def fake_ioctl(formats):
    def ioctl(fd, request, buf):
        assert request == 0xC0405602
        index, type_ = struct.unpack_from("<II", buf)
        assert type_ == 1
        if index >= len(formats):
            raise OSError(errno.EINVAL, "Invalid argument")
        struct.pack_into("<I", buf, 44, int.from_bytes(formats[index].encode(), "little"))
        return 0
    return ioctl


def test_enum_formats_reads_fourccs(tmp_path):
    node = tmp_path / "video0"
    node.write_bytes(b"")
    assert v4l2_formats(str(node), ioctl=fake_ioctl(["YUYV", "MJPG"])) == ["YUYV", "MJPG"]
    assert v4l2_formats(str(tmp_path / "missing")) is None


class FakeCapture:
    instances = []

    def __init__(self, device, backend):
        self.device, self.backend = device, backend
        self.props = {cv2.CAP_PROP_FOURCC: float(int.from_bytes(b"YUYV", "little")),
                      cv2.CAP_PROP_FRAME_WIDTH: 640.0, cv2.CAP_PROP_FRAME_HEIGHT: 480.0, cv2.CAP_PROP_FPS: 30.0}
        self.sets = []
        self.opened = device != 7
        self.frames = 3
        FakeCapture.instances.append(self)

    def isOpened(self):
        return self.opened

    def set(self, prop, value):
        self.sets.append((prop, value))
        self.props[prop] = float(value)
        return True

    def get(self, prop):
        return self.props.get(prop, 0.0)

    def read(self):
        if self.frames == 0:
            return False, None
        self.frames -= 1
        return True, np.zeros((int(self.props[cv2.CAP_PROP_FRAME_HEIGHT]),
                               int(self.props[cv2.CAP_PROP_FRAME_WIDTH]), 3), np.uint8)

    def release(self):
        self.opened = False


@pytest.fixture
def fake_cv2(monkeypatch):
    FakeCapture.instances.clear()
    monkeypatch.setattr(opencv.cv2, "VideoCapture", FakeCapture)
    return FakeCapture


@pytest.mark.parametrize("offered, mjpg", [(["YUYV", "MJPG"], True), (["YUYV"], False), (None, True)])
def test_camera_requests_buffer_1_size_fps_and_mjpg_when_offered(monkeypatch, fake_cv2, offered, mjpg):
    monkeypatch.setattr(opencv, "v4l2_formats", lambda path: offered)
    source = CameraSource(0, width=1280, height=720, fps=30)
    source.open()
    cap = fake_cv2.instances[-1]
    assert cap.device == 0 and cap.backend == cv2.CAP_V4L2
    sets = dict(cap.sets)
    assert sets[cv2.CAP_PROP_BUFFERSIZE] == 1
    assert (sets[cv2.CAP_PROP_FRAME_WIDTH], sets[cv2.CAP_PROP_FRAME_HEIGHT], sets[cv2.CAP_PROP_FPS]) == (1280, 720, 30)
    assert (cv2.CAP_PROP_FOURCC in sets) == mjpg
    frame = source.read()
    assert frame.size == (1280, 720) and frame.index == 0 and frame.format == "BGR"
    source.close()
    source.close()                                    # safe twice


def test_camera_that_cannot_open_or_stops(monkeypatch, fake_cv2):
    monkeypatch.setattr(opencv, "v4l2_formats", lambda path: None)
    with pytest.raises(SourceError, match="cannot open camera 7 .*video' group"):
        CameraSource(7).open()
    source = CameraSource(0)
    source.open()
    for _ in range(3):
        source.read()
    with pytest.raises(SourceError, match="stopped delivering frames"):
        source.read()

import threading
import time

import numpy as np
import pytest

from edge.capture import make_source
from edge.capture.base import END, CaptureThread, Frame, FrameSlot
from edge.capture.opencv import VideoFileSource
from edge.config import SourceConfig
from edge.errors import SourceError


def frame(i):
    return Frame(np.zeros((2, 2, 3), np.uint8), i, 0.0, time.monotonic_ns())


def test_slot_keeps_only_the_newest_frame_and_counts_drops():
    slot = FrameSlot()
    for i in range(5):
        slot.put(frame(i))
    assert slot.get(0.1).index == 4
    assert (slot.captured, slot.dropped) == (5, 4)
    assert slot.get(0.01) is None
    slot.end()
    assert slot.get(0.01) is END


def test_lockstep_slot_never_drops():
    slot = FrameSlot(lockstep=True)
    stop = threading.Event()
    got = []

    def consume():
        while True:
            item = slot.get(1.0)
            if item is END:
                return
            got.append(item.index)
            time.sleep(0.002)

    consumer = threading.Thread(target=consume)
    consumer.start()
    for i in range(30):
        slot.put(frame(i), stop)
    slot.end()
    consumer.join(5)
    assert got == list(range(30)) and slot.dropped == 0


def test_capture_errors_reach_the_consumer():
    class Broken:
        name, live = "broken", True

        def read(self):
            raise SourceError("camera unplugged")

    slot, stop = FrameSlot(), threading.Event()
    CaptureThread(Broken(), slot, stop).run()
    with pytest.raises(SourceError, match="unplugged"):
        slot.get(0.1)


def test_video_file_as_fast_as_possible(clip):
    source = VideoFileSource(clip, realtime=False)
    source.open()
    indices = []
    while (f := source.read()) is not None:
        indices.append(f.index)
    source.close()
    assert indices == list(range(250)) and f is None


def test_video_file_realtime_pacing(clip):
    source = VideoFileSource(clip, realtime=True)
    source.open()
    start = time.monotonic()
    for _ in range(13):
        source.read()
    elapsed = time.monotonic() - start
    source.close()
    assert source.fps == 25.0
    assert elapsed >= 12 / 25 - 0.02          # paced at the file's 25 fps


def test_video_file_loops(clip):
    source = VideoFileSource(clip, realtime=False, loop=True)
    source.open()
    for _ in range(260):
        f = source.read()
    source.close()
    assert f.index == 259


def test_source_kinds(clip, tmp_path):
    assert make_source(SourceConfig(uri="sample")).name == "bikes.mp4"
    assert make_source(SourceConfig(uri=str(clip))).name == "bikes.mp4"
    assert make_source(SourceConfig(uri="0")).name == "camera:0"
    assert make_source(SourceConfig(uri="/dev/video2")).name == "camera:/dev/video2"
    assert make_source(SourceConfig(uri="rtsp://user:pw@cam.local/stream")).name == "cam.local/stream"
    assert make_source(SourceConfig(uri=str(tmp_path))).live is False


def test_unknown_and_unreadable_sources(tmp_path):
    with pytest.raises(SourceError, match="is not an existing file or a known source form"):
        make_source(SourceConfig(uri=str(tmp_path / "missing.mp4")))
    bad = tmp_path / "not-a-video.mp4"
    bad.write_bytes(b"this is text, not H.264")
    with pytest.raises(SourceError, match="cannot open .* as a video|contains no decodable frame"):
        source = make_source(SourceConfig(uri=str(bad)))
        source.open()
        source.read()

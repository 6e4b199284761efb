"""The scheduler: round robin over cameras, a pool of detectors, fail-over, ordering, the frame limit.

Fakes stand in for sources and accelerators (an Edge TPU cannot run here; the real model runs in
the integration tests): each frame carries (camera, index) in its pixels, the fake preprocessor
writes them into the input, and a fake detector outputs what its input held when invoked, so a
frame inferred on another frame's pixels, lost, duplicated or published out of order shows.
"""

from __future__ import annotations

import threading
import time

import numpy as np
import pytest

from edge.capture.base import Frame
from edge.pipeline import Camera, Detector, Scheduler
from edge.telemetry.stats import PipelineStats


class Source:
    def __init__(self, cam: int, n: int, live: bool = False, delay: float = 0.0, stall: threading.Event | None = None):
        self.name, self.live, self.cam, self.n, self.delay, self.i = f"fake{cam}", live, cam, n, delay, 0
        self.stall = stall

    def open(self) -> None: ...

    def read(self) -> Frame | None:
        if self.stall is not None:
            self.stall.wait()            # a camera whose source hangs until the run stops
            return None
        if self.i >= self.n:
            return None
        if self.delay:
            time.sleep(self.delay)
        image = np.zeros((2, 2, 3), np.uint8)
        image[0, 0, 0], image[0, 0, 1], image[0, 0, 2] = self.cam, self.i % 256, self.i // 256
        frame = Frame(image, self.i, time.time(), time.monotonic_ns())
        self.i += 1
        return frame

    def close(self) -> None:
        if self.stall is not None:
            self.stall.set()


def preprocess(frame, out):
    out[...] = 0
    out.flat[:3] = frame.image[0, 0]
    return (int(frame.image[0, 0, 0]), frame.index)


class Backend:
    def __init__(self, name="edgetpu:usb:0", seconds=0.0, fail_at=None):
        self.name, self.seconds, self.fail_at = name, seconds, fail_at
        self.input_shape = (1, 2, 2, 3)
        self._input = np.zeros(self.input_shape, np.uint8)
        self._out = np.zeros(3, np.int64)
        self.invokes, self.closed = 0, False

    def input_view(self):
        return self._input

    def invoke(self):
        if self.fail_at is not None and self.invokes >= self.fail_at:
            raise RuntimeError("Failed to invoke: USB transfer error 5")
        self.invokes += 1
        self._out = self._input.reshape(-1)[:3].astype(np.int64)
        if self.seconds:
            time.sleep(self.seconds)

    def outputs(self):
        return (self._out.copy(),)

    def close(self):
        self.closed = True


def cameras(n_cams, frames, published, mismatches, **source):
    out = []
    for c in range(n_cams):
        def post(outputs, transform, c=c):
            cam, index = transform
            got = (int(outputs[0][0]), int(outputs[0][1]) + 256 * int(outputs[0][2]))
            if got != (cam, index):
                mismatches.append((transform, got))
            published.setdefault(c, []).append(index)
            return ()
        out.append(Camera(f"cam{c}", Source(c, frames, **source), preprocess, post))
    return out


def test_two_detectors_serve_every_frame_of_two_cameras_in_order():
    published, mismatches = {}, []
    fast, slow = Backend("edgetpu:usb:0", 0.001), Backend("edgetpu:pci:0", 0.003)
    scheduler = Scheduler(cameras(2, 60, published, mismatches),
                          [Detector("usb", {"": fast}), Detector("pci", {"": slow})])
    results = []
    scheduler.on_published.append(lambda r: results.append(r.camera))
    summary = scheduler.run()
    assert mismatches == []
    assert published == {0: list(range(60)), 1: list(range(60))}    # per camera in order, none lost
    assert summary.frames == 120 and summary.cameras == {"cam0": 60, "cam1": 60}
    assert fast.invokes > 0 and slow.invokes > 0 and fast.invokes + slow.invokes == 120
    assert set(results) == {"cam0", "cam1"}                             # results carry their camera
    stats = scheduler.stats
    assert set(stats.cameras) == {"cam0", "cam1"} and stats.camera("cam0").snapshot().published == 60


def test_round_robin_gives_each_camera_its_share():
    published, mismatches = {}, []
    # the 1 ms model is slower than the sources, so every camera has a frame at each turn
    scheduler = Scheduler(cameras(4, 1000, published, mismatches), [Detector("tpu", {"": Backend(seconds=0.001)})],
                          max_frames=400)
    summary = scheduler.run()
    assert summary.frames == 400 and mismatches == []
    # a camera whose next frame is not read yet when its turn comes is skipped that turn, not waited for
    assert all(85 <= len(v) <= 115 for v in published.values()) and len(published) == 4, \
        {c: len(v) for c, v in published.items()}


def test_a_stalled_camera_costs_the_others_nothing():
    published, mismatches = {}, []
    stall = threading.Event()
    cams = cameras(1, 50, published, mismatches)
    cams.append(Camera("stalled", Source(9, 0, stall=stall), preprocess, lambda o, t: ()))
    scheduler = Scheduler(cams, [Detector("tpu", {"": Backend()})])
    done = threading.Thread(target=scheduler.run)
    done.start()
    deadline = time.monotonic() + 20
    while len(published.get(0, [])) < 50 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert published[0] == list(range(50))
    scheduler.stop()
    done.join(10)
    assert not done.is_alive()


def test_a_failing_detector_is_taken_out_its_frame_rerun_elsewhere_and_retried(caplog):
    published, mismatches = {}, []
    broken, other, again = Backend("edgetpu:usb:0", 0.001, fail_at=5), Backend("edgetpu:pci:0", 0.001), Backend()
    clock = [0.0]
    opened = []

    def reopen():
        opened.append(clock[0])
        return {"": again}

    scheduler = Scheduler(cameras(1, 200, published, mismatches),
                          [Detector("usb", {"": broken}, opener=reopen, retry=10, kind="edgetpu"),
                           Detector("pci", {"": other}, kind="edgetpu")], clock=lambda: clock[0])
    scheduler.on_published.append(lambda r: clock.__setitem__(0, clock[0] + 0.5 if r.frame.index > 100 else 0))
    summary = scheduler.run()
    assert mismatches == [] and published[0] == list(range(200)) and summary.frames == 200
    assert broken.closed and opened, "the failed detector was reopened after its retry time"
    assert again.invokes > 0, "and served again"
    counts = scheduler.stats.snapshot().counts
    assert counts["detector_failures"] == 1 and counts["tpu_fallbacks"] == 1
    assert "detector usb failed (RuntimeError: Failed to invoke: USB transfer error 5)" in caplog.text


def test_edge_tpu_to_cpu_standby_fail_over_loses_no_frame():
    """The service's fail-over as a case of the pool: the CPU twin stands by, opened at the failure."""
    published, mismatches = {}, []
    tpu, cpu = Backend("edgetpu:usb", fail_at=3), Backend("cpu/xnnpack x4")
    opened = []

    def open_cpu():
        opened.append("cpu")
        return {"": cpu}

    stats = PipelineStats()
    scheduler = Scheduler(cameras(1, 20, published, mismatches),
                          [Detector("edgetpu:usb", {"": tpu}, retry=0, kind="edgetpu"),
                           Detector("cpu", opener=open_cpu, standby=True, kind="cpu")], stats)
    assert stats.backend == "edgetpu:usb" and opened == []          # the standby is not opened before it is needed
    scheduler.run()
    assert published[0] == list(range(20)) and mismatches == []
    assert tpu.invokes == 3 and cpu.invokes == 17 and opened == ["cpu"]
    assert stats.snapshot().counts["tpu_fallbacks"] == 1
    assert stats.backend == "cpu/xnnpack x4 (Edge TPU fallback)"


def test_the_standby_stops_serving_when_the_edge_tpu_is_back():
    published, mismatches = {}, []
    cpu, tpu_again = Backend("cpu", 0.002), Backend("edgetpu:usb", 0.002)
    clock = [0.0]
    tpu = Detector("edgetpu:usb", opener=lambda: {"": tpu_again}, retry=10, kind="edgetpu")
    tpu.up, tpu.next_retry = False, 10.0           # unusable at start (as --device auto found it)
    scheduler = Scheduler(cameras(1, 300, published, mismatches),
                          [tpu, Detector("cpu", {"": cpu}, standby=True, kind="cpu")], clock=lambda: clock[0])
    scheduler.on_published.append(lambda r: clock.__setitem__(0, 20.0) if r.frame.index == 50 else None)
    scheduler.run()
    assert published[0] == list(range(300)) and mismatches == []
    assert 50 <= cpu.invokes < 150 and tpu_again.invokes > 150    # back within a few polls of 50 ms


def test_no_detector_left_fails_the_run_with_the_error():
    published, mismatches = {}, []
    scheduler = Scheduler(cameras(1, 20, published, mismatches),
                          [Detector("edgetpu:usb", {"": Backend(fail_at=2)}, retry=0)])
    with pytest.raises(RuntimeError, match="USB transfer error"):
        scheduler.run()
    assert published[0] == [0, 1]


def test_the_frame_limit_is_exact_and_only_inferred_frames_are_preprocessed():
    prepared = []

    def counting(frame, out):
        prepared.append(frame.index)
        return preprocess(frame, out)

    cams = [Camera(f"c{i}", Source(i, 500, live=True, delay=0.0002), counting, lambda o, t: ()) for i in range(2)]
    scheduler = Scheduler(cams, [Detector("a", {"": Backend(seconds=0.002)}), Detector("b", {"": Backend(seconds=0.002)})],
                          max_frames=60)
    summary = scheduler.run()
    assert summary.frames == 60
    assert summary.dropped > 0
    assert len(prepared) <= 60 + 2      # at most one frame prepared ahead per detector, then abandoned


def test_camera_names_must_be_unique():
    with pytest.raises(ValueError, match="repeat"):
        Scheduler([Camera("a", Source(0, 1), preprocess, lambda o, t: ()),
                   Camera("a", Source(1, 1), preprocess, lambda o, t: ())], [Detector("x", {"": Backend()})])

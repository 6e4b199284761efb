"""A pipelined detector (Coral's real 2-segment SSD MobileNet v2) in the multi-camera scheduler.

The segment files and their tensor wiring are real; the stages are SIMULATED (libedgetpu and an
Edge TPU are absent here, and the segments' edgetpu-custom-op cannot run without them). Each frame
carries its index in its pixels; a simulated stage's outputs are a function of its input bytes, so
the reference outputs of each frame come from running the chain sequentially on the same input.
"""

from __future__ import annotations

import time

import numpy as np

from edge.capture.base import Frame
from edge.pipeline import Camera, Detector, PipelinedDetector, RunnerPort, Scheduler
from edge.runtime.segments import PipelinedRunner, SegmentChain, SimulatedSegment, run_sequential, simulated_stages
from tests.conformance.conftest import coral_dir


def _chain() -> SegmentChain:
    return SegmentChain.find(coral_dir() / "ssd_mobilenet_v2_coco_quant_postprocess_segment_0_of_2_edgetpu.tflite")


class Clip:
    def __init__(self, n: int):
        self.name, self.live, self.n, self.i = "clip", False, n, 0

    def open(self) -> None: ...

    def read(self):
        if self.i >= self.n:
            return None
        frame = Frame(np.full((2, 2, 3), self.i % 256, np.uint8), self.i, time.time(), time.monotonic_ns())
        self.i += 1
        return frame

    def close(self) -> None: ...


def _preprocess(frame, out):
    out[...] = frame.image[0, 0, 0]
    return frame.index


class Failing(SimulatedSegment):
    def __init__(self, model, seconds, fail_at):
        super().__init__(model, seconds)
        self.fail_at = fail_at

    def invoke(self) -> None:
        if self.invocations >= self.fail_at:
            raise RuntimeError("Failed to invoke: USB transfer error 5")
        super().invoke()


def _reference(chain: SegmentChain, index: int) -> np.ndarray:
    frame = np.full((1, 300, 300, 3), index % 256, np.uint8)
    return run_sequential(chain, simulated_stages(chain, 0.0), frame)[2]     # the scores


def _scheduler(chain, stages, n, got, other=None):
    def post(outputs, index):
        got.append((index, outputs[2].copy()))
        return ()

    port = RunnerPort(PipelinedRunner(stages, chain, queue_size=2), "SIMULATED edgetpu:pci:0+edgetpu:pci:1")
    detectors = [PipelinedDetector("segments", {"": port}, retry=0, kind="edgetpu")]
    if other is not None:
        detectors.append(other)
    return Scheduler([Camera("cam", Clip(n), _preprocess, post)], detectors)


def test_frames_go_through_both_segments_in_order():
    chain = _chain()
    got: list = []
    scheduler = _scheduler(chain, simulated_stages(chain, [0.002, 0.001]), 60, got)
    summary = scheduler.run()
    assert summary.frames == 60 and [i for i, _ in got] == list(range(60))
    for index, scores in got[:5] + got[-5:]:
        np.testing.assert_array_equal(scores, _reference(chain, index))


class Echo:
    """A plain detector standing in for a second accelerator: the chain, run sequentially."""

    def __init__(self, chain):
        self.chain, self.name = chain, "SIMULATED edgetpu:usb:0 (whole model)"
        self.input_shape = (1, 300, 300, 3)
        self._input = np.zeros(self.input_shape, np.uint8)
        self.invokes = 0

    def input_view(self):
        return self._input

    def invoke(self):
        self.invokes += 1
        self._out = run_sequential(self.chain, simulated_stages(self.chain, 0.0), self._input.copy())

    def outputs(self):
        return self._out

    def close(self): ...


def test_a_failing_segment_sends_its_frames_to_another_detector_in_order():
    chain = _chain()
    got: list = []
    stages = [SimulatedSegment(chain.segments[0].model, 0.002), Failing(chain.segments[1].model, 0.002, 10)]
    echo = Echo(chain)
    scheduler = _scheduler(chain, stages, 80, got, other=Detector("usb", {"": echo}, kind="edgetpu", retry=0))
    summary = scheduler.run()
    assert [i for i, _ in got] == list(range(80)) and summary.frames == 80
    assert echo.invokes > 0
    for index, scores in got:
        np.testing.assert_array_equal(scores, _reference(chain, index))
    assert scheduler.stats.snapshot().counts["detector_failures"] == 1

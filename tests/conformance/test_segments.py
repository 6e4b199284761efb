"""Pipelined segments on Coral's real 2-segment SSD MobileNet v2 (``../shared/models/coral``, made by the
real ``edgetpu_compiler --num_segments 2``).

The segments' graphs, tensor names, shapes, dtypes and quantization are read from the real files.
Their ``edgetpu-custom-op`` cannot run here: libedgetpu and an Edge TPU are absent
(``test_segments_cannot_run_without_libedgetpu`` shows it), so every invoke of a segment is done by
:class:`SimulatedSegment`, a SIMULATED stage that sleeps and returns outputs of the real shapes and
dtypes, derived from its input bytes. The runner's threading, queues and ordering are real; one test
runs a real CPU model (Coral's MobileNet v1) through the runner on LiteRT and compares with plain LiteRT.
"""

from __future__ import annotations

import dataclasses
import random
import shutil
import threading
import time

import numpy as np
import pytest

from edge.errors import ConfigError, DelegateError, ModelError
from edge.runtime.model import read_model
from edge.runtime.segments import (MODEL_INPUT, PipelinedRunner, PipelineError, SegmentChain, SimulatedSegment,
                                   StageError, TFLiteStage, check_devices, open_segments, run_sequential,
                                   simulated_stages)
from tests.conformance.conftest import plain_invoke, read_rgb

SSD = "ssd_mobilenet_v2_coco_quant_postprocess"
SEGMENTS = [f"{SSD}_segment_{i}_of_2_edgetpu.tflite" for i in range(2)]


@pytest.fixture(scope="module")
def files(coral):
    return [coral / name for name in SEGMENTS]


@pytest.fixture(scope="module")
def chain(files):
    return SegmentChain.from_files(files)


@pytest.fixture(scope="module")
def cat(coral):
    return read_rgb(coral / "cat.bmp", (300, 300))[None]


def _frame(i: int) -> np.ndarray:
    """A distinct uint8 input per index."""
    return np.full((1, 300, 300, 3), i % 251, np.uint8) + np.arange(3, dtype=np.uint8)


def _same(a: tuple[np.ndarray, ...], b: tuple[np.ndarray, ...]) -> bool:
    return len(a) == len(b) and all(x.dtype == y.dtype and np.array_equal(x, y) for x, y in zip(a, b))


class Recording:
    """Wraps a stage; keeps the inputs it was given, can fail on one tag-numbered call, counts close()."""

    def __init__(self, stage, fail_at: int | None = None):
        self.stage, self.fail_at = stage, fail_at
        self.model, self.name = stage.model, stage.name
        self.seen: list[list[np.ndarray]] = []
        self.closed = 0

    def set_inputs(self, arrays):
        self.seen.append([a.copy() for a in arrays])
        self.stage.set_inputs(arrays)

    def invoke(self):
        if self.fail_at is not None and len(self.seen) - 1 == self.fail_at:
            raise RuntimeError("USB transfer failed (simulated fault)")
        self.stage.invoke()

    def outputs(self):
        return self.stage.outputs()

    def close(self):
        self.closed += 1
        self.stage.close()


# --- the real files ----------------------------------------------------------------------------------


def test_segments_cannot_run_without_libedgetpu(files):
    """Why the invokes below are simulated: plain LiteRT cannot resolve the compiled segment."""
    from ai_edge_litert.interpreter import Interpreter

    with pytest.raises(RuntimeError, match="edgetpu-custom-op"):
        Interpreter(model_path=str(files[0])).allocate_tensors()


def test_chain_wires_segment_1_to_segment_0_by_name(files):
    chain = SegmentChain.from_files(reversed(files))            # order comes from the file names
    assert chain.k == 2 and [s.path for s in chain.segments] == files
    seg0, seg1 = (read_model(f) for f in files)
    # pycoral's rule, computed here from the files: segment 1's inputs are outputs of segment 0.
    assert {t.name for t in seg1.inputs} <= {t.name for t in seg0.outputs}
    produced = {t.name: p for p, t in enumerate(seg0.outputs)}
    assert [(s.segment, s.position) for s in chain.segments[1].sources] == \
        [(0, produced[t.name]) for t in seg1.inputs]
    assert [(s.segment, s.position) for s in chain.segments[0].sources] == [(MODEL_INPUT, 0)]
    for t in seg1.inputs:
        p = seg0.outputs[produced[t.name]]
        assert (p.shape, p.type, p.quantization) == (t.shape, t.type, t.quantization)
    assert [(t.name, t.shape, t.type) for t in chain.inputs] == \
        [("normalized_input_image_tensor", (1, 300, 300, 3), "UINT8")]
    # The final outputs are the last segment's, in its order (TFLite_Detection_PostProcess on the CPU).
    assert chain.output_names == ("TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:1",
                                  "TFLite_Detection_PostProcess:2", "TFLite_Detection_PostProcess:3")
    assert [t.shape for t in chain.outputs] == [(1, 20, 4), (1, 20), (1, 20), (1,)]
    assert chain.keep_after[0] == frozenset(t.name for t in seg1.inputs) and chain.keep_after[1] == frozenset()
    assert SegmentChain.find(files[1]).segments[0].path == files[0]


def test_simulated_invoke_passes_tensors_by_name_not_position(chain, cat):
    """Segment 1's inputs listed in reverse order: each must still get the segment-0 output of its name."""
    seg0, seg1 = (s.model for s in chain.segments)
    swapped = dataclasses.replace(seg1, inputs=tuple(reversed(seg1.inputs)))
    reordered = SegmentChain([seg0, swapped])
    first = Recording(SimulatedSegment(seg0, 0.0))
    second = Recording(SimulatedSegment(swapped, 0.0))
    outputs = run_sequential(reordered, [first, second], cat)
    produced = dict(zip((t.name for t in seg0.outputs), first.stage.outputs()))
    assert len(second.seen[0]) == 3
    for tensor, got in zip(swapped.inputs, second.seen[0]):
        assert np.array_equal(got, produced[tensor.name]) and got.shape == tensor.shape
    # Plausible post-processed detections of the final segment's shapes and dtypes.
    boxes, classes, scores, count = outputs
    assert [(o.shape, o.dtype) for o in outputs] == [(t.shape, np.float32) for t in chain.outputs]
    n = int(count[0])
    assert 0 <= n <= 20 and np.all(boxes[0, :n, :2] <= boxes[0, :n, 2:]) and np.all((boxes >= 0) & (boxes <= 1))
    assert np.all(np.diff(scores[0, :n]) <= 0) and np.all(scores[0, n:] == 0)
    assert np.array_equal(classes, np.round(classes))
    assert "SIMULATED" in first.name


def test_push_checks_the_input(chain):
    with PipelinedRunner(simulated_stages(chain, 0.0), chain) as runner:
        with pytest.raises(ModelError, match=r"normalized_input_image_tensor.*\[300, 300, 3\].*expected "
                                             r"\[1, 300, 300, 3\] uint8"):
            runner.push(np.zeros((300, 300, 3), np.uint8))
        with pytest.raises(ModelError, match="float32"):
            runner.push(np.zeros((1, 300, 300, 3), np.float32))
        with pytest.raises(ModelError, match="'image' is not an input"):
            runner.push({"image": np.zeros((1, 300, 300, 3), np.uint8)})


# --- the runner --------------------------------------------------------------------------------------


def test_results_in_order_under_random_stage_delays(chain):
    reference_stages = simulated_stages(chain, 0.0)
    expected = [run_sequential(chain, reference_stages, _frame(i)) for i in range(60)]
    rng = random.Random(15)
    lock = threading.Lock()

    def jitter() -> float:
        with lock:
            return rng.choice([0.0, 0.0005, 0.004, 0.012])

    runner = PipelinedRunner(simulated_stages(chain, 0.0005, jitter=jitter), chain, queue_size=3)

    def produce():
        for i in range(60):
            runner.push(_frame(i), tag=("cam", i))
        runner.finish()

    producer = threading.Thread(target=produce)
    producer.start()
    results = []
    while (item := runner.pop()) is not None:
        results.append(item)
    producer.join(10)
    runner.close()
    assert [tag for tag, _ in results] == [("cam", i) for i in range(60)]
    assert all(_same(out, expected[i]) for i, (_, out) in enumerate(results))
    assert runner.runs == [60, 60] and runner.pending == 0


def test_back_pressure_bounds_what_is_in_flight(chain):
    runner = PipelinedRunner(simulated_stages(chain, 0.001), chain, queue_size=2)
    assert runner.capacity == 2 * 3 + 2
    pushed = []

    def produce():
        for i in range(40):
            runner.push(_frame(i), i)
            pushed.append(i)
        runner.finish()

    producer = threading.Thread(target=produce, daemon=True)
    producer.start()
    deadline = time.monotonic() + 10
    while len(pushed) < runner.capacity and time.monotonic() < deadline:
        time.sleep(0.01)
    time.sleep(0.3)                              # nobody pops: the producer must stay blocked
    assert len(pushed) == runner.capacity and runner.pending == runner.capacity
    assert producer.is_alive()
    tags = []
    while (item := runner.pop()) is not None:
        tags.append(item[0])
        assert runner.pending <= runner.capacity
    producer.join(5)
    assert tags == list(range(40)) and len(pushed) == 40
    runner.close()


def test_stage_error_surfaces_on_pop_and_push(chain):
    stages = [Recording(s) for s in simulated_stages(chain, 0.0)]
    stages[1].fail_at = 5
    runner = PipelinedRunner(stages, chain)
    producer = threading.Thread(target=lambda: [runner.push(_frame(i), i) for i in range(6)])
    producer.start()
    assert [runner.pop()[0] for _ in range(5)] == [0, 1, 2, 3, 4]
    with pytest.raises(StageError) as err:
        runner.pop()
    message = str(err.value)
    assert "\n" not in message
    assert f"stage 1 (SIMULATED Edge TPU segment {SEGMENTS[1]}" in message
    assert "input 5" in message and "RuntimeError: USB transfer failed" in message
    producer.join(5)
    with pytest.raises(StageError):
        runner.push(_frame(6), 6)
    with pytest.raises(StageError):
        runner.pop()
    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 2 and [s.closed for s in stages] == [1, 1]


def test_stage_error_frees_a_blocked_push(chain):
    """Stage 0 fails on the first input while nobody pops: a push blocked on the full queue raises."""
    stages = [Recording(s) for s in simulated_stages(chain, 0.0)]
    stages[0].fail_at = 0
    stages[0].stage.seconds = 0.2
    runner = PipelinedRunner(stages, chain, queue_size=1)
    errors = []

    def produce():
        try:
            for i in range(10):
                runner.push(_frame(i), i)
        except StageError as exc:
            errors.append(exc)

    producer = threading.Thread(target=produce)
    producer.start()
    producer.join(5)
    assert not producer.is_alive() and len(errors) == 1 and "stage 0" in str(errors[0])
    with pytest.raises(StageError):
        runner.pop()
    runner.close()


def test_close_discards_unpopped_results_and_stops(chain, caplog):
    stages = [Recording(s) for s in simulated_stages(chain, 0.001)]
    runner = PipelinedRunner(stages, chain)
    for i in range(5):
        runner.push(_frame(i), i)
    started = time.monotonic()
    runner.close()
    assert time.monotonic() - started < 2
    assert not any(t.is_alive() for t in runner._threads)
    assert [s.closed for s in stages] == [1, 1] and "5 result(s) not popped" in caplog.text
    runner.close()                                           # safe twice
    assert [s.closed for s in stages] == [1, 1]
    with pytest.raises(PipelineError):
        runner.push(_frame(0), 0)
    assert runner.pop() is None


def test_runner_refuses_stages_of_other_segments(chain):
    stages = simulated_stages(chain, 0.0)
    with pytest.raises(ConfigError, match="stage 0 .* whose tensors are not those of segment 0"):
        PipelinedRunner(stages[::-1], chain)
    with pytest.raises(ConfigError, match="1 stage"):
        PipelinedRunner(stages[:1], chain)
    with pytest.raises(ConfigError, match="queue_size = 0"):
        PipelinedRunner(stages, chain, queue_size=0)


def test_real_cpu_model_through_the_runner(coral):
    """A real interpreter in the stage thread: Coral's MobileNet v1 (CPU) as a chain of one, via
    TFLiteBackend; each result equals plain LiteRT's for its input, in order."""
    from edge.runtime.backend import TFLiteBackend
    from edge.runtime.interpreter import load_runtime

    path = coral / "mobilenet_v1_0.25_128_quant.tflite"
    chain = SegmentChain.from_files([path])
    images = [read_rgb(coral / f"{n}.bmp", (128, 128))[None] for n in ("cat", "bird", "sunflower", "grace_hopper")]
    stage = TFLiteStage(TFLiteBackend(chain.segments[0].model, load_runtime("auto"), threads=1))
    with PipelinedRunner([stage], chain, queue_size=1) as runner:
        assert runner.capacity == 3          # a 4th push would block until a pop: push from a thread
        producer = threading.Thread(target=lambda: [runner.push(image, i) for i, image in enumerate(images)])
        producer.start()
        producer.join(0.5)
        assert producer.is_alive()           # back-pressure: blocked on the 4th
        results = [runner.pop() for _ in images]
        producer.join(5)
        runner.finish()
        assert runner.pop() is None
    assert [tag for tag, _ in results] == [0, 1, 2, 3]
    for (_, outputs), image in zip(results, images):
        (reference,) = plain_invoke(path, image)
        assert np.array_equal(outputs[0], reference)
    assert results[0][1][0].argmax() != results[2][1][0].argmax()      # the inputs were not mixed up


# --- impossible chains: one line at start, naming the file or tensor ----------------------------------


def _one_line(excinfo) -> str:
    text = str(excinfo.value)
    assert "\n" not in text
    return text


def test_missing_segment(files):
    with pytest.raises(ModelError) as err:
        SegmentChain.from_files(files[:1])
    assert f"segment 1 of 2 of '{SSD}' is missing" in _one_line(err)


def test_same_file_twice(files):
    with pytest.raises(ModelError) as err:
        SegmentChain.from_files([files[0], files[0], files[1]])
    assert f"{files[0]}' is given twice" in _one_line(err)


def test_same_segment_from_two_files(files, tmp_path):
    other = tmp_path / SEGMENTS[0]
    shutil.copy(files[0], other)
    with pytest.raises(ModelError) as err:
        SegmentChain.from_files([files[0], other, files[1]])
    assert "segment 0 of 2" in _one_line(err) and "given twice" in str(err.value) and str(other) in str(err.value)


def test_count_mismatch(files, tmp_path):
    renamed = tmp_path / f"{SSD}_segment_1_of_3_edgetpu.tflite"
    shutil.copy(files[1], renamed)
    with pytest.raises(ModelError) as err:
        SegmentChain.from_files([files[0], renamed])
    assert f"'{renamed.name}' says 3 segments but '{SEGMENTS[0]}' says 2" in _one_line(err)


def test_unsegmented_name_in_a_chain(files, coral):
    with pytest.raises(ModelError) as err:
        SegmentChain.from_files([files[0], coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite"])
    assert "'mobilenet_v1_0.25_128_quant_edgetpu.tflite' is not named <model>_segment_<i>_of_<K>" in _one_line(err)


def test_input_nobody_provides(files, coral, tmp_path):
    """A real compiled classifier posing as segment 1: its input 'input' comes from nowhere."""
    impostor = tmp_path / SEGMENTS[1]
    shutil.copy(coral / "mobilenet_v1_0.25_128_quant_edgetpu.tflite", impostor)
    name = read_model(impostor).inputs[0].name
    with pytest.raises(ModelError) as err:
        SegmentChain.from_files([files[0], impostor])
    assert f"segment 1 ('{SEGMENTS[1]}') input '{name}' is neither a model input nor an output of an earlier " \
           "segment" in _one_line(err)


@pytest.mark.parametrize("change, expected", [
    ({"shape": (1, 19, 19, 575)}, r"is \[1, 19, 19, 575\] uint8 .* but segment 0 .* gives \[1, 19, 19, 576\] uint8"),
    ({"type": "INT8"}, r"is \[1, 19, 19, 576\] int8 .* but segment 0 .* gives \[1, 19, 19, 576\] uint8"),
    ({"quantization": None}, r"is quantized as \[1, 19, 19, 576\] uint8 but segment 0 .* gives .* scale=0.0235"),
])
def test_producer_consumer_mismatch(chain, change, expected):
    """The real segment 1 with one input tensor's description changed (in the parsed model, not the file)."""
    seg0, seg1 = (s.model for s in chain.segments)
    changed = dataclasses.replace(seg1.inputs[0], **change)
    seg1 = dataclasses.replace(seg1, inputs=(changed, *seg1.inputs[1:]))
    with pytest.raises(ModelError, match=expected) as err:
        SegmentChain([seg0, seg1])
    assert f"segment 1 ('{SEGMENTS[1]}') input 'FeatureExtractor/MobilenetV2/expanded_conv_13" in _one_line(err)


# --- opening on Edge TPUs ----------------------------------------------------------------------------


@pytest.mark.parametrize("devices, expected", [
    (["edgetpu:pci:0"], "1 device(s) given (edgetpu:pci:0) for 2 segments"),
    (["edgetpu:pci:0", "cpu"], "segment device 'cpu' is not an Edge TPU"),
    (["edgetpu:pci:0", "edgetpu:pci:0"], "segment device 'edgetpu:pci:0' is named twice"),
    (["edgetpu", "edgetpu:usb:0"], "segment device 'edgetpu' does not say which Edge TPU"),
    (["edgetpu:pci:0", "edgetpu:gpu"], "unknown device 'edgetpu:gpu'"),
])
def test_device_list_is_checked(devices, expected):
    with pytest.raises(ConfigError) as err:
        check_devices(devices, 2)
    assert expected in _one_line(err)


def test_open_segments_without_an_edge_tpu(chain):
    """No libedgetpu and no Edge TPU here: the first delegate load fails with its one-line remedy."""
    from edge.runtime.interpreter import load_runtime

    with pytest.raises(DelegateError) as err:
        open_segments(chain, ["edgetpu:pci:0", "edgetpu:pci:1"], load_runtime("auto"))
    assert "edgetpu:pci:0" in _one_line(err)


def test_open_segments_refuses_a_cpu_model(coral):
    chain = SegmentChain.from_files([coral / "mobilenet_v1_0.25_128_quant.tflite"])
    with pytest.raises(ModelError, match="segment 0 .* is not compiled for the Edge TPU"):
        open_segments(chain, ["edgetpu:usb:0"], runtime=None)

"""XNNPACK's delegated share (edge.runtime.xnnpack) on real models, and its graph walk on fakes."""

from __future__ import annotations

from collections import Counter

import pytest

from edge.runtime import xnnpack
from edge.runtime.interpreter import load_runtime
from tests.conformance.conftest import mediapipe_model

MEDIAPIPE = ("face_detection/face_detection_short_range", "face_detection/face_detection_full_range_sparse",
             "palm_detection/palm_detection_lite", "palm_detection/palm_detection_full",
             "pose_detection/pose_detection")


@pytest.mark.parametrize("name", MEDIAPIPE)
def test_mediapipe_float_detectors_are_delegated_whole(name):
    """fp16 weights behind DEQUANTIZE and all: XNNPACK takes every node as one partition."""
    path = mediapipe_model(f"modules/{name}.tflite")
    share = xnnpack.measure(path)
    from edge.runtime.model import read_model
    assert share.total_nodes == len(read_model(path).ops)
    assert share.applied and share.whole and share.cpu_ops == Counter(), share.describe()
    assert share.describe() == f"1 partition, {share.total_nodes}/{share.total_nodes} nodes delegated"


def test_shipped_int8_ssd_leaves_the_postprocessing_on_the_cpu(int8_model):
    """The shipped int8 SSD: the box/class CONCATENATIONs, the output QUANTIZE and the custom
    TFLite_Detection_PostProcess stay on the reference kernels; the MobileNet body is one partition."""
    share = xnnpack.measure(int8_model)
    assert share.partitions == 2 and share.total_nodes == 118 and share.delegated_nodes == 114
    assert share.cpu_ops == Counter({"CONCATENATION": 2, "QUANTIZE": 1, "TFLite_Detection_PostProcess": 1})
    assert share.as_dict()["cpu_ops"]["CONCATENATION"] == 2
    assert 0.96 < share.fraction < 0.97


def test_shipped_float_ssd(float_model):
    share = xnnpack.measure(float_model, threads=2)
    assert (share.partitions, share.delegated_nodes, share.total_nodes) == (2, 112, 115)
    assert share.cpu_ops["TFLite_Detection_PostProcess"] == 1 and not share.whole


def test_without_xnnpack_nothing_is_delegated(int8_model):
    interpreter = load_runtime().make_interpreter(str(int8_model), num_threads=1, xnnpack=False)
    interpreter.allocate_tensors()
    share = xnnpack.delegation(interpreter)
    assert (share.partitions, share.delegated_nodes, share.total_nodes) == (0, 0, 118)
    assert not share.applied and not share.whole
    assert sum(share.cpu_ops.values()) == 118 and share.fraction == 0.0


class _FakeInterpreter:
    def __init__(self, ops):
        self._ops = [{"index": i, "op_name": name, "inputs": ins, "outputs": outs}
                     for i, (name, ins, outs) in enumerate(ops)]

    def _get_ops_details(self):
        return self._ops


def test_partitions_are_walked_back_to_their_inputs():
    """conv -> relu (CPU) -> conv -> add: two partitions around the RELU; -1 marks an absent input."""
    ops = [("CONV_2D", [0, 1, -1], [2]), ("RELU", [2], [3]), ("CONV_2D", [3, 4, 5], [6]),
           ("ADD", [6, 3], [7]),
           ("DELEGATE", [0, 1], [2]), ("DELEGATE", [3, 4, 5], [7])]
    share = xnnpack.delegation(_FakeInterpreter(ops))
    assert (share.partitions, share.delegated_nodes, share.total_nodes) == (2, 3, 4)
    assert share.cpu_ops == Counter({"RELU": 1})
    assert share.describe() == "2 partitions, 3/4 nodes delegated; on the CPU: 1 RELU"

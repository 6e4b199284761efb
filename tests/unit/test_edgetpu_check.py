"""check-edgetpu on the real default model and on variants of it that break one documented rule each.

The variants are the default int8 model rewritten with the TFLite schema's own object API
(ai_edge_litert.schema_py_generated + flatbuffers, both installed with ai-edge-litert): one field
changed per test, so each rule of https://coral.ai/docs/edgetpu/models-intro/ is exercised on an
otherwise real graph. No TensorFlow and no Edge TPU compiler are needed.
"""

from __future__ import annotations

import json

import flatbuffers
import numpy as np
import pytest
from ai_edge_litert import schema_py_generated as schema

from edge.host import edgetpu_check as ec
from edge.host.cli import main
from edge.runtime.tflite_schema import BUILTIN_OPERATORS


@pytest.fixture(scope="module")
def default_report(int8_model):
    return ec.check_file(int8_model)


def _variant(src, dst, change):
    model = schema.ModelT.InitFromPackedBuf(src.read_bytes(), 0)
    change(model)
    builder = flatbuffers.Builder(1 << 20)
    builder.Finish(model.Pack(builder), file_identifier=b"TFL3")
    dst.write_bytes(builder.Output())
    return dst


def _ops(model, name):
    graph = model.subgraphs[0]
    codes = model.operatorCodes
    return [(i, op) for i, op in enumerate(graph.operators)
            if BUILTIN_OPERATORS[max(codes[op.opcodeIndex].builtinCode,
                                     codes[op.opcodeIndex].deprecatedBuiltinCode)] == name]


def test_default_model_maps_all_but_the_postprocessing(default_report):
    report = default_report
    assert (report.tpu_ops, report.cpu_ops) == (115, 3)
    first = report.first_cpu_op
    assert (first.index, first.name, first.reason) == (114, "DEQUANTIZE", ec.UNSUPPORTED_OP)
    cpu = [v.name for v in report.verdicts if not v.on_tpu]
    assert cpu == ["DEQUANTIZE", "DEQUANTIZE", "TFLite_Detection_PostProcess"]
    # LOGISTIC comes after the first DEQUANTIZE in graph order but does not depend on it.
    assert next(v for v in report.verdicts if v.name == "LOGISTIC").on_tpu
    assert report.problems == ()
    table = {(name, status): n for name, n, status in report.table()}
    assert table[("CONV_2D", "Mapped to Edge TPU")] == 55


def test_float_model_is_reported_not_quantized(float_model):
    report = ec.check_file(float_model)
    assert report.tpu_ops == 0
    assert any("float32" in p and "Model not quantized" in p for p in report.problems)
    assert report.first_cpu_op.reason == ec.UNSUPPORTED_TYPE
    assert "float32 tensor" in report.first_cpu_op.detail


def test_fused_activation_on_concatenation(tmp_path, int8_model):
    def change(model):
        i, op = _ops(model, "CONCATENATION")[0]
        op.builtinOptions.fusedActivationFunction = schema.ActivationFunctionType.RELU
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    first = report.first_cpu_op
    assert first.name == "CONCATENATION" and first.reason == ec.LIMITATION
    assert "RELU" in first.detail
    blocked = [v for v in report.verdicts if v.blocked_by == first.index]
    assert [v.name for v in blocked] == ["RESHAPE"]          # the box branch after the concat
    assert blocked[0].status == ec.AFTER_CPU_OP
    assert (report.tpu_ops, report.cpu_ops) == (113, 5)


def test_unequal_dilation_blocks_everything_after_it(tmp_path, int8_model):
    def change(model):
        i, op = _ops(model, "CONV_2D")[0]
        op.builtinOptions.dilationWFactor = 2
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    assert report.first_cpu_op.name == "CONV_2D" and "dilation 2x1" in report.first_cpu_op.detail
    assert report.tpu_ops == 1                       # only the input QUANTIZE precedes it


def test_unsupported_builtin_op(tmp_path, int8_model):
    def change(model):
        code = schema.OperatorCodeT()
        code.builtinCode = code.deprecatedBuiltinCode = BUILTIN_OPERATORS.index("HARD_SWISH")
        code.version = 1
        model.operatorCodes.append(code)
        i, op = _ops(model, "LOGISTIC")[0]
        op.opcodeIndex = len(model.operatorCodes) - 1
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    swish = next(v for v in report.verdicts if v.name == "HARD_SWISH")
    assert swish.reason == ec.UNSUPPORTED_OP and not swish.on_tpu
    assert (report.tpu_ops, report.cpu_ops) == (114, 4)


def test_dynamic_input_shape(tmp_path, int8_model):
    def change(model):
        graph = model.subgraphs[0]
        graph.tensors[graph.inputs[0]].shapeSignature = np.array([-1, 300, 300, 3], dtype=np.int32)
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    assert report.first_cpu_op.index == 0 and report.first_cpu_op.reason == ec.DYNAMIC_SHAPE
    assert report.tpu_ops == 0


def test_batch_of_two_has_too_many_dimensions(tmp_path, int8_model):
    def change(model):
        graph = model.subgraphs[0]
        quantize = graph.operators[0]
        graph.tensors[quantize.outputs[0]].shape = np.array([2, 300, 300, 3], dtype=np.int32)
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    assert report.first_cpu_op.reason == ec.TOO_MANY_DIMS
    assert "[2, 300, 300, 3]" in report.first_cpu_op.detail


def test_float_input_quantize_stays_on_cpu_without_blocking(tmp_path, int8_model):
    def change(model):
        graph = model.subgraphs[0]
        tensor = graph.tensors[graph.inputs[0]]
        tensor.type = schema.TensorType.FLOAT32
        tensor.quantization = None
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    assert report.verdicts[0].input_conversion and not report.verdicts[0].on_tpu
    assert (report.tpu_ops, report.cpu_ops) == (114, 4)
    assert report.first_cpu_op.name == "DEQUANTIZE"


def test_second_subgraph_is_a_problem(tmp_path, int8_model):
    def change(model):
        model.subgraphs.append(schema.SubGraphT.InitFromPackedBuf(
            _packed_subgraph(model.subgraphs[0]), 0))
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    assert any("2 subgraphs" in p for p in report.problems)


def _packed_subgraph(graph) -> bytes:
    builder = flatbuffers.Builder(1 << 16)
    builder.Finish(graph.Pack(builder))
    return bytes(builder.Output())


def test_cli_gate_and_json(int8_model, capsys):
    assert main(["check-edgetpu", str(int8_model), "--max-cpu-ops", "3"]) == 0
    assert main(["check-edgetpu", str(int8_model), "--max-cpu-ops", "2"]) == 1
    assert "FAIL: 3 ops would run on the CPU" in capsys.readouterr().out
    assert main(["check-edgetpu", str(int8_model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["tpu_ops"] == 115 and data["first_cpu_op"]["name"] == "DEQUANTIZE"


def test_cli_float_model_fails_and_bad_path_is_exit_2(float_model, tmp_path, capsys):
    assert main(["check-edgetpu", str(float_model)]) == 1
    assert "no operation would run on the Edge TPU" in capsys.readouterr().out
    assert main(["check-edgetpu", str(tmp_path / "missing.tflite")]) == 2
    assert "does not exist" in capsys.readouterr().err


def test_json_reports_cpu_op_counts_and_one_edge_tpu_subgraph(int8_model, capsys):
    assert main(["check-edgetpu", str(int8_model), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert data["cpu_op_counts"] == {"DEQUANTIZE": 2, "TFLite_Detection_PostProcess": 1}
    assert data["tpu_subgraphs"] == 1 and data["size_dependent"] == []


def test_assume_cpu_moves_an_op_and_what_depends_on_it(default_report, int8_model):
    from edge.runtime.model import read_model

    model = read_model(int8_model)
    logistic = next(v.index for v in default_report.verdicts if v.name == "LOGISTIC")
    report = ec.check_model(model, assume_cpu={logistic})
    assert report.verdicts[logistic].reason == ec.ASSUMED_CPU
    assert report.cpu_op_counts() == {"DEQUANTIZE": 2, "TFLite_Detection_PostProcess": 1, "LOGISTIC": 1}
    with pytest.raises(ValueError, match="no op #9999"):
        ec.check_model(model, assume_cpu={9999})


def test_int16_activation_outside_an_lstm_cell_state_is_refused(tmp_path, int8_model):
    """int16 is accepted only as an LSTM's cell state (tests/conformance/test_edgetpu_twins.py)."""
    def change(model):
        graph = model.subgraphs[0]
        graph.tensors[graph.operators[0].outputs[0]].type = schema.TensorType.INT16
    report = ec.check_file(_variant(int8_model, tmp_path / "m.tflite", change))
    assert report.first_cpu_op.index == 0 and report.first_cpu_op.reason == ec.UNSUPPORTED_TYPE
    assert "int16 tensor" in report.first_cpu_op.detail

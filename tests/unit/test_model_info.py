"""ModelInfo is read from the flatbuffer itself; checked against the interpreter's own view."""

import pytest

from edge.errors import ModelError
from edge.runtime.interpreter import load_runtime
from edge.runtime.model import read_model


def test_int8_default_model(int8_model):
    info = read_model(int8_model)
    assert info.precision == "int8"
    assert not info.edgetpu
    assert info.subgraphs == 1
    (inp,) = info.inputs
    assert inp.shape == (1, 300, 300, 3) and inp.type == "UINT8"
    scale, zero_point = inp.quantization.scalar()
    assert scale == pytest.approx(2 / 255, rel=1e-3) and zero_point in (127, 128)
    assert info.find_op("TFLite_Detection_PostProcess") is not None
    assert info.op_counts["CONV_2D"] > 50
    assert [s.key for s in info.signatures] == ["serving_default"]


def test_float_twin_is_float32(float_model):
    assert read_model(float_model).precision == "float32"


def test_matches_the_interpreter(int8_model):
    info = read_model(int8_model)
    interpreter = load_runtime().make_interpreter(str(int8_model))
    details = interpreter.get_input_details()[0]
    assert details["index"] == info.inputs[0].index
    assert [d["index"] for d in interpreter.get_output_details()] == [t.index for t in info.outputs]
    assert details["quantization"][0] == pytest.approx(info.inputs[0].quantization.scale[0])
    ops = [op["op_name"] for op in interpreter._get_ops_details()]
    assert ops == [op.name for op in info.ops]


def test_missing_file(tmp_path):
    with pytest.raises(ModelError, match="does not exist"):
        read_model(tmp_path / "nope.tflite")


@pytest.mark.parametrize("mangle", [
    lambda b: b"not a model at all",
    lambda b: b[:4] + b"XXXX" + b[8:],          # wrong file identifier
    lambda b: b[:2000],                         # truncated
])
def test_corrupt_files_are_model_errors(tmp_path, int8_model, mangle):
    path = tmp_path / "bad.tflite"
    path.write_bytes(mangle(int8_model.read_bytes()))
    with pytest.raises(ModelError, match="is not a valid TFLite model"):
        read_model(path)

"""`edge-host qat` on real data available offline: scikit-learn's digits as a class-per-subfolder
image folder, tf_keras + tensorflow-model-optimization in the child process (real training)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from edge.host import qat
from edge.runtime.manifest import load_manifest
from edge.runtime.model import read_model

pytestmark = [pytest.mark.host]


@pytest.fixture(scope="module")
def digits(tmp_path_factory):
    folder = tmp_path_factory.mktemp("digits")
    assert qat.write_digits(folder, 16) == 1797
    return folder


@pytest.mark.slow
def test_qat_int8_meets_the_edgetpu_requirements(digits, tmp_path):
    options = qat.QatOptions(data=str(digits), out=str(tmp_path), name="digits", size=(16, 16), epochs=1,
                             float_epochs=4, batch_size=64, learning_rate=3e-3)
    report = qat.run(options)
    acc = report["accuracy"]
    assert set(acc) == {"float_keras", "ptq_int8", "qat_keras", "qat_int8"}
    assert acc["qat_int8"] >= 0.85, acc
    # The int8 file computes what the fake-quant Keras model computes.
    assert abs(acc["qat_int8"] - acc["qat_keras"]) <= 0.03, acc
    path = tmp_path / "digits_qat_int8.tflite"
    info = read_model(path)
    assert info.inputs[0].type == "UINT8" and info.outputs[0].type == "UINT8"
    assert info.inputs[0].shape == (1, 16, 16, 3) and not info.inputs[0].dynamic
    assert qat.edgetpu_problems(path) == []
    from edge.host.edgetpu_check import check_file
    check = check_file(path)
    assert check.cpu_ops == 0 and not check.problems, check.lines()
    manifest = load_manifest(tmp_path / "manifest.json")
    assert manifest.layout == "classification" and manifest.model_for("cpu") == path
    assert manifest.model_for("float").name == "digits_float.tflite"
    assert (tmp_path / "labels.txt").read_text().split() == [str(i) for i in range(10)]
    assert load_manifest(tmp_path / "digits_ptq_int8.json").provenance["quantization"]["mode"] == "int8"
    saved = json.loads((tmp_path / "qat_report.json").read_text())
    assert saved["edgetpu_requirements"] == "met" and saved["val_samples"] == 449
    assert "| QAT int8 |" in (tmp_path / "qat_report.md").read_text()


def test_edgetpu_problems_of_a_float_model(float_model):
    problems = qat.edgetpu_problems(float_model)
    assert any("FLOAT32" in p for p in problems)


@pytest.mark.parametrize("args, message", [
    (["qat", "--data", "nowhere", "--out", "o"], "training data 'nowhere' is not a folder"),
    (["qat", "--data", "{flat}", "--out", "o"], "has 0 class subfolders"),
    (["qat", "--data", "{digits}", "--out", "o", "--model", "missing.h5"], "model 'missing.h5' does not exist"),
    (["qat", "--data", "{digits}", "--out", "o", "--validation-split", "1.5"], "validation split 1.5"),
    (["qat", "--data", "{digits}", "--out", "o", "--model", "{bad}"], "cannot load"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, digits):
    flat = tmp_path / "flat"
    flat.mkdir()
    bad = tmp_path / "bad.h5"
    bad.write_bytes(b"not an HDF5 file")
    args = [a.format(flat=flat, digits=digits, bad=bad) for a in args]
    result = subprocess.run([sys.executable, "-m", "edge.host.cli", *args], capture_output=True, text=True,
                            timeout=300, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr


@pytest.mark.slow
def test_qat_fine_tunes_a_given_tf_keras_model(digits, tmp_path):
    """--model: a tf_keras Functional model trained (briefly) and saved as .h5 in a Keras 2 process."""
    import os
    model = tmp_path / "given.h5"
    script = f"""
import numpy as np, tf_keras as keras
from pathlib import Path
from edge.host.qat import QatOptions, _load_data
x, y, _, _ = _load_data(QatOptions(data={str(digits)!r}, out=""), (16, 16))
inp = keras.Input((16, 16, 3))
h = keras.layers.Conv2D(16, 3, activation="relu")(inp)
h = keras.layers.MaxPooling2D()(h)
h = keras.layers.Flatten()(h)
out = keras.layers.Dense(10, activation="softmax")(h)
m = keras.Model(inp, out)
m.compile(keras.optimizers.Adam(3e-3), "sparse_categorical_crossentropy")
m.fit(x, y, epochs=2, batch_size=64, verbose=0)
m.save({str(model)!r})
"""
    env = dict(os.environ, TF_USE_LEGACY_KERAS="1")
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    cli = subprocess.run([sys.executable, "-m", "edge.host.cli", "qat", "--data", str(digits), "--out",
                          str(tmp_path / "out"), "--model", str(model), "--epochs", "1", "--batch-size", "64",
                          "--io", "int8"], capture_output=True, text=True, timeout=600)
    assert cli.returncode == 0, cli.stderr[-2000:]
    assert "qat_int8" in cli.stdout
    report = json.loads((tmp_path / "out" / "qat_report.json").read_text())
    assert report["input_size"] == [16, 16] and report["float_epochs"] == 0
    assert report["accuracy"]["qat_int8"] >= 0.85, report["accuracy"]
    info = read_model(tmp_path / "out" / "qat_qat_int8.tflite")
    assert info.inputs[0].type == "INT8" and qat.edgetpu_problems(info.path) == []
    assert load_manifest(tmp_path / "out" / "manifest.json").provenance["source"] == "given.h5"

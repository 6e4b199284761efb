"""Coral's MobileNet v1 classifiers, given with no manifest and no flags, answer as plain LiteRT does.

References: (1) the top-5 of plain LiteRT on the same picture (cv2 bilinear resize, RGB uint8 pixels
as pycoral feeds them), computed here without edge; (2) pycoral's published expectation: on
``cat.bmp`` resized with PIL's NEAREST filter, as pycoral's tests/classify_test.py does, MobileNet v1
0.5_160 answers "Egyptian cat" (ImageNet id 286) above 0.67. The ``_edgetpu`` twins cannot run here
(no Edge TPU): they are read, paired and described.
"""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from PIL import Image

from tests.conformance.conftest import coral_dir, plain_invoke, read_rgb
from tests.helpers import run_edge

MODELS = ["mobilenet_v1_0.25_128_quant", "mobilenet_v1_0.5_160_quant", "mobilenet_v1_0.75_192_quant"]
EGYPTIAN_CAT = 286


def _reference_top5(model, image_rgb: np.ndarray) -> list[tuple[int, float]]:
    from ai_edge_litert.interpreter import Interpreter

    interpreter = Interpreter(model_path=str(model))
    size = tuple(interpreter.get_input_details()[0]["shape"][1:3][::-1])
    tensor = cv2.resize(image_rgb, size, interpolation=cv2.INTER_LINEAR)[None]
    out = plain_invoke(model, tensor)[0].reshape(-1)
    scale, zero_point = interpreter.get_output_details()[0]["quantization"]
    top = np.argsort(-out.astype(np.int64), kind="stable")[:5]
    return [(int(i), float(scale * (int(out[i]) - zero_point))) for i in top]


def _edge_classes(model, source, tmp_path) -> list[dict]:
    out = tmp_path / "events.jsonl"
    result = run_edge("run", "-m", str(model), "-s", str(source), "--score-threshold", "0", "--max-detections", "5",
                      "--jsonl", str(out), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "input tflite-metadata" in result.stderr
    lines = out.read_text().splitlines()
    assert len(lines) == 1
    return json.loads(lines[0])["detections"]


@pytest.mark.parametrize("name", MODELS)
def test_top5_equals_plain_litert(name, coral, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.bmp").write_bytes((coral / "cat.bmp").read_bytes())
    model = coral / f"{name}.tflite"
    got = _edge_classes(model, folder, tmp_path)
    want = _reference_top5(model, read_rgb(coral / "cat.bmp"))
    assert [(c["class_id"], c["score"]) for c in got] == [(i, pytest.approx(s, abs=1e-4)) for i, s in want]
    labels = (coral / "imagenet_labels.txt").read_text().splitlines()
    assert [c["label"] for c in got] == [labels[i] for i, _ in want]        # 1001 labels, background first


def test_pycorals_published_expectation(coral, tmp_path):
    model = coral / "mobilenet_v1_0.5_160_quant.tflite"
    folder = tmp_path / "images"
    folder.mkdir()
    Image.open(coral / "cat.bmp").convert("RGB").resize((160, 160), Image.NEAREST).save(folder / "cat.png")
    top = _edge_classes(model, folder, tmp_path)[0]
    assert (top["class_id"], top["label"]) == (EGYPTIAN_CAT, "Egyptian cat")
    assert top["score"] > 0.67


@pytest.mark.parametrize("name", MODELS)
def test_edge_info_on_the_compiled_twin(name, tmp_path):
    result = run_edge("info", "-m", str(coral_dir() / f"{name}_edgetpu.tflite"))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert f"cpu: {coral_dir() / (name + '.tflite')}" in out                    # the twin beside it
    assert "Edge TPU compiled" in out and "ops: edgetpu-custom-op×1" in out
    assert "input convention: tflite-metadata" in out and "real = (pixel - 128) / 128, RGB, stretch" in out
    assert "labels: tflite-metadata (imagenet_labels.txt)" in out
    assert "output layout: classification (identified from the model)" in out
    assert f"XNNPACK on the CPU ({name}.tflite): " in out and "nodes delegated" in out


def test_compiled_twin_without_a_tpu_runs_its_cpu_twin(coral, tmp_path):
    folder = tmp_path / "images"
    folder.mkdir()
    (folder / "cat.bmp").write_bytes((coral / "cat.bmp").read_bytes())
    result = run_edge("run", "-m", str(coral / "mobilenet_v1_0.5_160_quant_edgetpu.tflite"), "-s", str(folder),
                      "--jsonl", str(tmp_path / "e.jsonl"), "--score-threshold", "0.3", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert "mobilenet_v1_0.5_160_quant.tflite" in result.stderr and "no Edge TPU found" in result.stderr
    assert json.loads((tmp_path / "e.jsonl").read_text())["detections"][0]["label"] == "Egyptian cat"

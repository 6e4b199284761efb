"""`edge-host evaluate`: metrics (pure, hand-computed values) and real runs.

Real runs: the default person detector's float twin vs its int8 model on the embedded street
clip (the issue's acceptance figure), mAP from COCO JSON and YOLO annotations, and a digits
classifier with the per-layer error of QuantizationDebugger.
"""

from __future__ import annotations

import json
import subprocess
import sys

import cv2
import numpy as np
import pytest

from edge.host import evaluate as ev


def test_iou_and_greedy_matching():
    a = np.array([[0, 0, 10, 10], [20, 20, 30, 30]], np.float32)
    b = np.array([[0, 0, 10, 5], [20, 20, 30, 30], [0, 0, 10, 10]], np.float32)
    iou = ev.iou_matrix(a, b)
    assert iou[0, 0] == pytest.approx(0.5) and iou[1, 1] == pytest.approx(1.0) and iou[0, 1] == 0
    # The higher-scored detection takes the reference box; the other one stays unmatched.
    pairs = ev.match(a, np.array([0, 0]), b, np.array([0.6, 0.9, 0.8]), np.array([0, 0, 0]), 0.5)
    assert sorted(pairs) == [(0, 2, 1.0), (1, 1, 1.0)]
    # Another class never matches.
    assert ev.match(a, np.array([0, 0]), b[1:2], np.array([0.9]), np.array([1]), 0.5) == []


def test_average_precision_hand_computed():
    # recall 0.5, 0.5, 1.0; interpolated precision 1 up to recall 0.5, then 2/3 (101-point COCO).
    ap = ev.average_precision(np.array([1, 0, 1]), np.array([0.9, 0.8, 0.7]), 2)
    assert ap == pytest.approx((51 * 1.0 + 50 * 2 / 3) / 101)
    assert ev.average_precision(np.array([1, 1]), np.array([0.9, 0.8]), 2) == pytest.approx(1.0)
    assert ev.average_precision(np.array([0]), np.array([0.9]), 1) == 0.0


def test_map_over_iou_thresholds():
    gt = [(np.array([[0, 0, 10, 10]], np.float32), np.array([0]))]
    det = [(np.array([[0, 0, 10, 7]], np.float32), np.array([0.9], np.float32), np.array([0]))]  # IoU 0.7
    m = ev.mean_average_precision(gt, det)
    assert [m[t] for t in sorted(m)] == [1.0] * 5 + [0.0] * 5
    assert np.mean(list(m.values())) == pytest.approx(0.5)


@pytest.mark.host
@pytest.mark.slow
def test_default_model_int8_keeps_float_detections(model_dir, tmp_path):
    """Acceptance: int8 keeps >= 95% of the float model's detections (IoU >= 0.5, same class,
    score >= 0.5) on every frame of the sample clip."""
    report = ev.evaluate(model_dir / "ssdlite_mobilenet_v2_person_float.tflite",
                         [model_dir / "ssdlite_mobilenet_v2_person_int8.tflite"], tmp_path,
                         ev.EvaluateOptions(samples=250, latency_runs=3))
    float_entry, int8 = report["models"]
    assert report["frames"] == 250
    assert float_entry["kept_of_float"] == 1.0 and float_entry["detections"] >= 40
    assert int8["float_detections"] == float_entry["detections"]
    assert int8["kept_of_float"] >= 0.95
    assert int8["mean_iou"] > 0.8
    assert int8["size_bytes"] < float_entry["size_bytes"] / 2
    saved = json.loads((tmp_path / "report.json").read_text())
    assert saved["models"][1]["kept_of_float"] == int8["kept_of_float"]
    assert "| ssdlite_mobilenet_v2_person_int8.tflite |" in (tmp_path / "report.md").read_text()
    png = (tmp_path / "accuracy_vs_size.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


@pytest.mark.host
def test_map_from_coco_and_yolo_annotations(model_dir, clip_frames, tmp_path):
    """Ground truth = the float model's own detections (score >= 0.5) on the clip frames with people (every 5th) and two without, written
    as COCO JSON and as YOLO files: the float model's mAP must then be exactly 1, and the two
    formats must give the int8 model the same mAP."""
    images = tmp_path / "images"
    images.mkdir()
    float_model = model_dir / "ssdlite_mobilenet_v2_person_float.tflite"
    runner = ev.Runner(float_model)
    coco = {"images": [], "annotations": [], "categories": [{"id": 1, "name": "person"}]}
    yolo = tmp_path / "yolo"
    yolo.mkdir()
    from edge.capture.base import Frame
    empty = 0
    for i in range(0, 250, 5):       # frames with people, plus two without
        image = clip_frames[i]
        h, w = image.shape[:2]
        boxes, scores, classes = runner(Frame(image=image, index=i, timestamp=0.0, captured_ns=0))
        keep = scores >= 0.5
        if not keep.any():
            empty += 1
            if empty > 2:
                continue
        name = f"f{i:03d}.png"
        cv2.imwrite(str(images / name), image)
        n = len(coco["images"])
        coco["images"].append({"id": n, "file_name": name, "width": w, "height": h})
        lines = []
        for b, c in zip(boxes[keep], classes[keep]):
            coco["annotations"].append({"id": len(coco["annotations"]), "image_id": n, "category_id": 1,
                                        "bbox": [float(b[0]), float(b[1]), float(b[2] - b[0]), float(b[3] - b[1])]})
            lines.append(f"{c} {(b[0] + b[2]) / 2 / w} {(b[1] + b[3]) / 2 / h} {(b[2] - b[0]) / w} {(b[3] - b[1]) / h}")
        (yolo / f"f{i:03d}.txt").write_text("\n".join(lines) + "\n")
    assert len(coco["annotations"]) >= 4
    (tmp_path / "coco.json").write_text(json.dumps(coco))
    results = {}
    for name, truth in (("coco", tmp_path / "coco.json"), ("yolo", yolo)):
        report = ev.evaluate(float_model, [model_dir / "ssdlite_mobilenet_v2_person_int8.tflite"], tmp_path / name,
                             ev.EvaluateOptions(frames=images, annotations=truth, latency_runs=1))
        assert report["models"][0]["mAP50"] == pytest.approx(1.0)
        assert report["models"][0]["mAP50_95"] > 0.99
        results[name] = report["models"][1]
    assert 0.5 < results["coco"]["mAP50"] <= 1.0
    assert results["coco"]["mAP50"] == pytest.approx(results["yolo"]["mAP50"], abs=1e-6)
    assert results["coco"]["mAP50_95"] == pytest.approx(results["yolo"]["mAP50_95"], abs=1e-3)


@pytest.mark.host
@pytest.mark.slow
def test_classifier_top1_and_worst_layers(tmp_path):
    from edge.host import quantize as q
    from tests.host.test_quantize import train_digits_classifier
    model = train_digits_classifier(tmp_path / "images", tmp_path / "digits.keras", epochs=3)
    q.quantize(q.detect_source(model), tmp_path / "q",
               q.QuantizeOptions(name="d", modes=("int8",), calibration=tmp_path / "images", samples=30,
                                 latency_runs=1, progress=False))
    report = ev.evaluate(tmp_path / "q" / "d_float32.tflite", [tmp_path / "q" / "d_int8.tflite"], tmp_path / "r",
                         ev.EvaluateOptions(frames=tmp_path / "images", samples=100, latency_runs=1,
                                            debug_source=model, debug_samples=4))
    assert report["task"] == "classification"
    assert report["models"][0]["top1"] > 0.8 and report["models"][1]["agreement_top1"] >= 0.9
    layers = report["worst_layers"]
    assert 3 <= len(layers) <= 10
    assert {r["op"] for r in layers} & {"CONV_2D", "FULLY_CONNECTED"}
    ratios = [r["rmse_per_scale"] for r in layers]
    assert ratios == sorted(ratios, reverse=True) and ratios[0] > 0
    assert "Worst layers" in (tmp_path / "r" / "report.md").read_text()


@pytest.mark.parametrize("args, message", [
    (["evaluate", "missing.tflite", "x.tflite", "--out", "o"], "model 'missing.tflite' does not exist"),
    (["evaluate", "{float}", "{int8}", "--out", "o", "--frames", "nowhere"], "frames 'nowhere' do not exist"),
    (["evaluate", "{orphan}", "{int8}", "--out", "o"], "has no manifest"),
])
def test_bad_input_is_one_line_and_exit_2(args, message, tmp_path, model_dir):
    orphan = tmp_path / "orphan.tflite"
    orphan.write_bytes((model_dir / "ssdlite_mobilenet_v2_person_int8.tflite").read_bytes())
    args = [a.format(float=model_dir / "ssdlite_mobilenet_v2_person_float.tflite", orphan=orphan,
                     int8=model_dir / "ssdlite_mobilenet_v2_person_int8.tflite") for a in args]
    result = subprocess.run([sys.executable, "-m", "edge.host.cli", *args], capture_output=True, text=True,
                            timeout=120, cwd=tmp_path)
    assert result.returncode == 2, result.stderr
    assert message in result.stderr and "Traceback" not in result.stderr

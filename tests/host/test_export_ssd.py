"""`edge-host export-ssd` on the real SSDLite person detector (TensorFlow on the host).

The float export is checked against the original TF1 graph run by TensorFlow itself (its own
anchors, box decoding and NMS): an independent reference for the whole conversion.
"""

import json

import numpy as np
import pytest

from edge.host import export_ssd as ex
from edge.resources import sample_clip
from tests.helpers import run_edge

pytestmark = [pytest.mark.host]


@pytest.fixture(scope="module")
def graph():
    return ex.default_graph()


@pytest.fixture(scope="module")
def exported(graph, tmp_path_factory):
    out = tmp_path_factory.mktemp("export")
    options = ex.ExportOptions(name="person", labels=["person"], calibration=sample_clip(), samples=20, stride=12)
    manifest = ex.export(graph, out, options)
    return out, manifest


def _tf_reference(graph, image_rgb):
    import tensorflow as tf
    graph_def = ex.load_graph_def(graph)
    wrapped = ex._wrap(graph_def)
    g = wrapped.graph
    fn = wrapped.prune(feeds=[g.get_tensor_by_name("image_tensor:0")],
                       fetches=[g.get_tensor_by_name(n) for n in
                                ("detection_boxes:0", "detection_scores:0", "num_detections:0")])
    boxes, scores, n = (t.numpy() for t in fn(tf.constant(image_rgb[None])))
    n = int(n[0])
    return boxes[0, :n], scores[0, :n]


@pytest.mark.slow
def test_float_export_matches_tensorflow_on_real_frames(graph, exported, clip_frames):
    import cv2
    from ai_edge_litert.interpreter import Interpreter

    out, manifest = exported
    interpreter = Interpreter(str(out / manifest["models"]["float"]))
    interpreter.allocate_tensors()
    from edge.runtime.model import read_model
    from edge.vision.decode.ssd_postprocess import output_roles
    info = read_model(out / manifest["models"]["float"])
    roles = output_roles(info)
    compared = 0
    for i in (30, 80, 120, 190):
        rgb = cv2.cvtColor(cv2.resize(clip_frames[i], (300, 300)), cv2.COLOR_BGR2RGB)
        ref_boxes, ref_scores = _tf_reference(graph, rgb)
        interpreter.set_tensor(info.inputs[0].index, (rgb.astype(np.float32) / 127.5 - 1)[None])
        interpreter.invoke()
        outs = [interpreter.get_tensor(t.index) for t in info.outputs]
        n = int(outs[roles["count"]][0])
        boxes, scores = outs[roles["boxes"]][0, :n], outs[roles["scores"]][0, :n]
        keep = ref_scores >= 0.5
        assert (scores >= 0.5).sum() == keep.sum(), f"frame {i}"
        for box, score in zip(ref_boxes[keep], ref_scores[keep]):
            assert np.abs(boxes[: keep.sum()] - box).max(axis=1).min() < 0.01
            assert np.abs(scores[: keep.sum()] - score).min() < 0.01
            compared += 1
    assert compared >= 3


@pytest.mark.slow
def test_int8_export_runs_in_edge(exported, tmp_path):
    out, manifest = exported
    assert manifest["output"]["layout"] == "ssd_postprocess"
    assert manifest["input"]["mean"][0] == pytest.approx(127.5)
    result = run_edge("run", "--model", str(out), "--as-fast-as-possible", "--jsonl",
                      str(tmp_path / "e.jsonl"), cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert len((tmp_path / "e.jsonl").read_text().splitlines()) >= 40


@pytest.mark.slow
def test_raw_export_keeps_anchors_in_the_manifest(graph, tmp_path):
    options = ex.ExportOptions(name="raw", labels=["person"], calibration=sample_clip(), samples=4, stride=50,
                               postprocess=False)
    manifest = ex.export(graph, tmp_path, options)
    saved = json.loads((tmp_path / "manifest.json").read_text())
    assert saved["output"]["layout"] == "ssd_anchors"
    assert len(saved["output"]["anchors"]) == 1917
    assert saved["output"]["box_scales"] == [10.0, 10.0, 5.0, 5.0]
    assert saved["output"]["score"] == "sigmoid"
    assert manifest["models"]["cpu"] == "raw_int8.tflite"


def test_labels_must_match_the_graph(graph, tmp_path):
    options = ex.ExportOptions(name="x", labels=["person", "car"], calibration=sample_clip())
    with pytest.raises(ex.ConfigError, match="2 labels given but the graph predicts 1 classes"):
        ex.export(graph, tmp_path, options)


def test_missing_tensor_is_named(graph, tmp_path):
    options = ex.ExportOptions(name="x", labels=["person"], calibration=sample_clip(),
                               tensors=ex.GraphTensors(boxes="nope:0"))
    with pytest.raises(ex.ConfigError, match="has no tensor 'nope:0'"):
        ex.export(graph, tmp_path, options)

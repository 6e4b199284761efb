"""Decoders on hand-made arrays whose right answer is computed by hand in the test."""

import math
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo, Quantization, Signature, TensorInfo
from edge.vision.decode import DecodeParams, FinishParams, identify_layout, make_decoder, make_postprocess
from edge.vision.decode.mediapipe_anchors import AnchorOptions, generate
from edge.vision.preprocess import Transform

IDENTITY = Transform(100, 100, 100, 100, 1.0, 1.0, 0.0, 0.0)


def model(outputs, inputs=(1, 64, 64, 3), signatures=()):
    tensors = tuple(outputs)
    return ModelInfo(Path("m.tflite"), 0, "", (TensorInfo(99, "in", inputs, "UINT8", None),), tensors, tensors, (),
                     1, signatures, (), ())


def out(shape, type_="FLOAT32", q=None, name="out", index=0):
    return TensorInfo(index, name, shape, type_, Quantization(*q) if q else None)


def manifest(**output):
    return Manifest(path=None, name="m", output=output)


def test_mediapipe_face_detection_anchors():
    # face_detection_short_range.pbtxt: 128x128, strides 8,16,16,16, aspect ratio 1.0, fixed size → 896 anchors.
    opts = AnchorOptions(input_size_width=128, input_size_height=128, num_layers=4, min_scale=0.1484375,
                         max_scale=0.75, strides=(8, 16, 16, 16), aspect_ratios=(1.0,), fixed_anchor_size=True)
    a = generate(opts)
    assert a.shape == (896, 4)
    assert a[0].tolist() == pytest.approx([0.5 / 16, 0.5 / 16, 1.0, 1.0])
    assert a[1].tolist() == a[0].tolist()                      # 2 anchors per cell in layer 0
    assert a[512].tolist() == pytest.approx([0.5 / 8, 0.5 / 8, 1.0, 1.0])   # first cell of the 8x8 layers
    assert np.allclose(a[512:518], a[512])                     # 6 anchors per cell there


def test_anchor_scales_and_aspect_ratios():
    opts = AnchorOptions(input_size_width=300, input_size_height=300, num_layers=2, min_scale=0.2, max_scale=0.9,
                         strides=(150, 300), aspect_ratios=(1.0, 2.0), interpolated_scale_aspect_ratio=1.0)
    a = generate(opts)
    # layer 0: 2x2 cells × 3 anchors (1.0, 2.0, interpolated sqrt(0.2*0.9)); layer 1: 1 cell × 3.
    assert a.shape == (15, 4)
    assert a[0].tolist() == pytest.approx([0.25, 0.25, 0.2, 0.2])
    assert a[1].tolist() == pytest.approx([0.25, 0.25, 0.2 / math.sqrt(2), 0.2 * math.sqrt(2)])
    assert a[2, 2] == pytest.approx(math.sqrt(0.2 * 0.9))
    assert a[12].tolist() == pytest.approx([0.5, 0.5, 0.9, 0.9])
    assert a[14, 2] == pytest.approx(math.sqrt(0.9 * 1.0))


def yolo_v8_array(nc=3, n=6):
    a = np.zeros((4 + nc, n), np.float32)
    a[:4, 0] = [0.5, 0.5, 0.2, 0.4]; a[4 + 1, 0] = 0.9       # class 1 at the centre
    a[:4, 1] = [0.51, 0.5, 0.2, 0.4]; a[4 + 1, 1] = 0.8      # its duplicate → suppressed
    a[:4, 2] = [0.51, 0.5, 0.2, 0.4]; a[4 + 2, 2] = 0.7      # same place, other class → kept
    a[:4, 3] = [0.1, 0.1, 0.1, 0.1]; a[4 + 0, 3] = 0.3       # below 0.5
    return a[None]


def test_yolov8_float_channels_first_and_transposed():
    arr = yolo_v8_array()
    params = DecodeParams(score_threshold=0.5, num_classes=3)
    for data, shape in ((arr, (1, 7, 6)), (arr.transpose(0, 2, 1).copy(), (1, 6, 7))):
        dec = make_decoder(model([out(shape)]), manifest(layout="yolov8"), params)
        raw = dec((data,))
        assert raw.class_ids.tolist() == [1, 2]
        assert raw.scores.tolist() == pytest.approx([0.9, 0.7])
        assert raw.boxes[0].tolist() == pytest.approx([0.4, 0.3, 0.6, 0.7])


def test_yolov8_int8_thresholds_raw_codes_and_pixels():
    scale, zp = 1 / 200, -100                      # real = (q + 100) / 200, in [−0.14, 1.14]
    arr = yolo_v8_array() * 64                     # boxes in pixels of a 64x64 input
    arr[:, 4:] /= 64
    q = np.clip(np.round(arr / scale + zp), -128, 127).astype(np.int8)
    q[:, :4] = np.clip(np.round(arr[:, :4] / 64 / scale + zp), -128, 127)   # int8 holds normalised boxes
    tensor = out((1, 7, 6), "INT8", ((scale,), (zp,)))
    dec = make_decoder(model([tensor]), manifest(layout="yolov8", num_classes=3), DecodeParams(score_threshold=0.5))
    assert dec.raw_threshold == 0                  # 0.5 / (1/200) − 100
    raw = dec((q,))
    assert raw.class_ids.tolist() == [1, 2] and raw.scores.tolist() == pytest.approx([0.9, 0.7], abs=scale)
    assert raw.boxes[0].tolist() == pytest.approx([0.4, 0.3, 0.6, 0.7], abs=2 * scale)
    # The same boxes stored in pixels, as a float head with box_units = pixels.
    dec = make_decoder(model([out((1, 7, 6))]), manifest(layout="yolov8", num_classes=3, box_units="pixels"),
                       DecodeParams(score_threshold=0.5))
    px = yolo_v8_array(); px[:, :4] *= 64
    assert dec((px,)).boxes[0].tolist() == pytest.approx([0.4, 0.3, 0.6, 0.7])


def test_yolov5_objectness_multiplies():
    a = np.zeros((1, 3, 5 + 2), np.float32)
    a[0, 0] = [0.5, 0.5, 0.2, 0.2, 0.9, 0.1, 0.8]   # 0.72 class 1
    a[0, 1] = [0.2, 0.2, 0.1, 0.1, 0.6, 0.7, 0.0]   # 0.42 < 0.5 although the class prob is 0.7
    a[0, 2] = [0.8, 0.8, 0.1, 0.1, 0.4, 0.0, 1.0]   # objectness 0.4 cannot pass
    dec = make_decoder(model([out((1, 3, 7))]), manifest(layout="yolov5", num_classes=2),
                       DecodeParams(score_threshold=0.5))
    raw = dec((a,))
    assert raw.class_ids.tolist() == [1] and raw.scores.tolist() == pytest.approx([0.72])


def test_yolo_wrong_model_errors_name_the_expectation():
    with pytest.raises(ModelError, match=r"with 80 classes expects \[1, 84, N\] or \[1, N, 84\]"):
        make_decoder(model([out((1, 85, 100))]), manifest(layout="yolov8"), DecodeParams(num_classes=80))
    with pytest.raises(ModelError, match="cannot tell how many classes"):
        make_decoder(model([out((1, 84, 100))]), manifest(layout="yolov8"), DecodeParams())
    with pytest.raises(ModelError, match="output.box_unit is not a parameter of layout yolov8"):
        make_decoder(model([out((1, 84, 100))]), manifest(layout="yolov8", box_unit="px"), DecodeParams())
    with pytest.raises(ModelError, match="unknown output layout 'yolov9'"):
        identify_layout(model([out((1, 84, 100))]), manifest(), "yolov9")
    with pytest.raises(ModelError, match="cannot tell the output layout"):
        identify_layout(model([out((1, 84, 100))]), manifest())


def test_ssd_anchors_decode_by_hand():
    anchors = [[0.5, 0.5, 0.2, 0.4], [0.25, 0.25, 0.1, 0.1]]
    boxes_t = out((1, 2, 4), name="boxes", index=0)
    scores_t = out((1, 2, 3), name="scores", index=1)
    sig = Signature("serving_default", {}, {"box_encodings": 0, "class_logits": 1})
    m = model([boxes_t, scores_t], signatures=(sig,))
    dec = make_decoder(m, manifest(layout="ssd_anchors", anchors=anchors, background_class=True),
                       DecodeParams(score_threshold=0.5))
    enc = np.array([[[1.0, 2.0, 5 * math.log(2), 0.0], [0, 0, 0, 0]]], np.float32)  # ty, tx, th, tw
    logits = np.array([[[9.0, -5.0, 2.0], [9.0, -5.0, -5.0]]], np.float32)        # col 0: background
    raw = dec((enc, logits))
    # yc = 1/10*0.2 + 0.5 = 0.52, xc = 2/10*0.4 + 0.5 = 0.58, h = 2*0.2, w = 0.4
    assert len(raw.boxes) == 1 and raw.boxes[0].tolist() == pytest.approx([0.38, 0.32, 0.78, 0.72])
    assert raw.class_ids.tolist() == [1] and raw.scores[0] == pytest.approx(1 / (1 + math.exp(-2)))


def test_ssd_anchors_mediapipe_options_and_roles():
    m = model([out((1, 896, 16), name="regressors", index=0), out((1, 896, 1), name="classificators", index=1)],
              inputs=(1, 128, 128, 3))
    opts = {"input_size_width": 128, "input_size_height": 128, "num_layers": 4, "min_scale": 0.1484375,
            "max_scale": 0.75, "strides": [8, 16, 16, 16], "aspect_ratios": [1.0],
            "fixed_anchor_size": True}
    # BlazeFace: x, y, w, h in input pixels (scales 128), linear sizes; 16 values per anchor = box + 6 keypoints.
    dec = make_decoder(m, manifest(layout="ssd_anchors", anchor_options=opts), DecodeParams())
    assert dec.keypoints == 6
    with pytest.raises(ModelError, match="do not match 2016 anchors"):
        make_decoder(m, manifest(layout="ssd_anchors", anchor_options={**opts, "input_size_width": 192,
                                                                       "input_size_height": 192}), DecodeParams())
    with pytest.raises(ModelError, match="no boxes output named box_encodings"):
        make_decoder(model([out((1, 896, 4), name="a"), out((1, 896, 1), name="b", index=1)]),
                     manifest(layout="ssd_anchors", anchor_options=opts), DecodeParams())
    # Not a MediaPipe detector edge knows (64x64 input): the anchors must come from the manifest.
    head = model([out((1, 896, 16), name="regressors", index=0), out((1, 896, 1), name="classificators", index=1)])
    with pytest.raises(ModelError, match="needs anchors"):
        make_decoder(head, manifest(layout="ssd_anchors"), DecodeParams())


def test_classification_top_k_int8_and_postprocess():
    t = out((1, 5), "UINT8", ((1 / 255,), (0,)))
    dec = make_decoder(model([t]), manifest(), DecodeParams(max_detections=2))
    assert dec.layout == "classification" and dec.task == "classification"
    raw = dec((np.array([[10, 200, 30, 250, 0]], np.uint8),))
    assert raw.class_ids.tolist() == [3, 1] and raw.scores.tolist() == pytest.approx([250 / 255, 200 / 255])
    post = make_postprocess(dec, FinishParams(0.5, 0, {3: "cat", 1: "dog"}, None))
    assert [(c.label, round(c.score, 3)) for c in post((np.array([[10, 200, 30, 250, 0]], np.uint8),), IDENTITY)] \
        == [("cat", 0.98), ("dog", 0.784)]
    int8 = out((1, 4), "INT8", ((0.1,), (-128,)))
    dec = make_decoder(model([int8]), manifest(layout="classification", score="softmax"), DecodeParams())
    raw = dec((np.array([[-128, -118, -128, -128]], np.int8),))   # logits 0, 1, 0, 0
    assert raw.class_ids[0] == 1 and raw.scores[0] == pytest.approx(math.e / (math.e + 3))


def test_mediapipe_box_order_linear_sizes_and_pixel_scales():
    # BlazeFace style: x, y, w, h relative to the anchor, divided by the input size (128), no exp.
    m = model([out((1, 1, 4), name="regressors", index=0), out((1, 1, 1), name="classificators", index=1)],
              inputs=(1, 128, 128, 3))
    dec = make_decoder(m, manifest(layout="ssd_anchors", anchors=[[0.5, 0.25, 1.0, 1.0]], box_order="xywh",
                                   box_scales=[128, 128, 128, 128], exp_box_size=False),
                       DecodeParams(score_threshold=0.5))
    raw = dec((np.array([[[12.8, -6.4, 32.0, 64.0]]], np.float32), np.array([[[3.0]]], np.float32)))
    # xc = 0.25 + 12.8/128 = 0.35, yc = 0.5 − 0.05 = 0.45, w = 0.25, h = 0.5
    assert raw.boxes[0].tolist() == pytest.approx([0.225, 0.2, 0.475, 0.7])
    assert raw.class_ids.tolist() == [0] and raw.scores[0] == pytest.approx(1 / (1 + math.exp(-3)))


def test_ssd_anchors_int8_logits_pick_the_class_on_raw_codes():
    boxes_t = out((1, 2, 4), name="box_encodings", index=0)
    scores_t = out((1, 2, 3), "INT8", ((0.1,), (0,)), name="class_logits", index=1)
    dec = make_decoder(model([boxes_t, scores_t]),
                       manifest(layout="ssd_anchors", anchors=[[0.5, 0.5, 0.2, 0.2]] * 2, background_class=True),
                       DecodeParams(score_threshold=0.5))
    logits = np.array([[[100, 5, 20], [127, -50, -60]]], np.int8)     # anchor 0: class 1 (logit 2.0)
    raw = dec((np.zeros((1, 2, 4), np.float32), logits))
    assert raw.class_ids.tolist() == [1] and raw.scores[0] == pytest.approx(1 / (1 + math.exp(-2.0)))


def test_ssd_postprocess_roles_without_the_op_from_signature_or_tf1_names():
    from edge.vision.decode.ssd_postprocess import ROLES, output_roles
    # TF2 export order (scores, boxes, count, classes) told by the signature names.
    names = ["s", "b", "n", "c"]
    outs = [out((1, 10), name=n, index=i) for i, n in enumerate(names)]
    sig = Signature("serving_default", {}, {"detection_scores": 0, "detection_boxes": 1, "num_detections": 2,
                                            "detection_classes": 3})
    roles = output_roles(model(outs, signatures=(sig,)))
    assert [roles[r] for r in ROLES] == [1, 3, 0, 2]
    # TF1 (Coral zoo) names, in any order.
    tf1 = ["TFLite_Detection_PostProcess:3", "TFLite_Detection_PostProcess", "TFLite_Detection_PostProcess:2",
           "TFLite_Detection_PostProcess:1"]
    roles = output_roles(model([out((1,), name=n, index=i) for i, n in enumerate(tf1)]))
    assert [roles[r] for r in ROLES] == [1, 3, 2, 0]
    with pytest.raises(ModelError, match="no TFLite_Detection_PostProcess op"):
        output_roles(model([out((1,), name=f"o{i}", index=i) for i in range(4)]))

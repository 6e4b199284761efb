"""ssd_anchors keypoints (4 + V·K regressor values), MediaPipe presets, and the errors, on hand-made arrays."""

import math
import warnings
from pathlib import Path

import numpy as np
import pytest

from edge.errors import ModelError
from edge.runtime.manifest import Manifest
from edge.runtime.model import ModelInfo, TensorInfo
from edge.vision.decode import DecodeParams, FinishParams, finish, identify_layout, make_decoder
from edge.vision.decode.mediapipe_anchors import AnchorOptions, generate
from edge.vision.decode.mediapipe_presets import PRESETS, find_preset, preset_labels
from edge.vision.preprocess import Transform


def model(outputs, inputs=(1, 64, 64, 3), name="m.tflite"):
    tensors = tuple(TensorInfo(i, n, shape, "FLOAT32", None) for i, (n, shape) in enumerate(outputs))
    return ModelInfo(Path(name), 0, "", (TensorInfo(99, "in", inputs, "FLOAT32", None),), tensors, tensors, (),
                     1, (), (), ())


def manifest(**output):
    return Manifest(path=None, name="m", output=output)


def head(width, n=2):
    return model([("regressors", (1, n, width)), ("classificators", (1, n, 1))])


ANCHORS = [[0.5, 0.25, 1.0, 1.0], [0.5, 0.75, 0.5, 0.5]]      # y, x, h, w
MEDIAPIPE = dict(anchors=ANCHORS, box_order="xywh", box_scales=[100, 100, 100, 100], exp_box_size=False)


def test_two_keypoints_xywh_are_decoded_like_the_box_centre():
    dec = make_decoder(head(8), manifest(layout="ssd_anchors", **MEDIAPIPE), DecodeParams(score_threshold=0.5))
    assert dec.keypoints == 2
    codes = np.array([[[10, -20, 40, 60, 5, 10, -50, 0], [0] * 8]], np.float32)
    raw = dec((codes, np.array([[[2.0], [-3.0]]], np.float32)))
    # anchor 0 (xc 0.25, yc 0.5, w = h = 1): xc 0.35, yc 0.3, w 0.4, h 0.6; points (0.3, 0.6), (-0.25, 0.5)
    assert raw.boxes.tolist() == [pytest.approx([0.15, 0.0, 0.55, 0.6])]
    assert raw.keypoints.shape == (1, 2, 2)
    assert raw.keypoints[0].tolist() == [pytest.approx([0.3, 0.6]), pytest.approx([-0.25, 0.5])]


def test_yxhw_keypoints_are_y_then_x_and_extra_values_are_skipped():
    # TF-style order (y, x, h, w) with 3 values per keypoint (y, x, visibility): 4 + 3·1 = 7 values.
    dec = make_decoder(head(7), manifest(layout="ssd_anchors", anchors=ANCHORS, num_values_per_keypoint=3,
                                         box_scales=[10, 10, 5, 5]), DecodeParams(score_threshold=0.5))
    codes = np.array([[[0, 0, 0, 0, 1.0, -2.0, 9.0], [0] * 7]], np.float32)
    raw = dec((codes, np.array([[[5.0], [-5.0]]], np.float32)))
    # y = 0.5 + 1/10·1.0 = 0.6, x = 0.25 − 2/10·1.0 = 0.05
    assert raw.keypoints[0].tolist() == [pytest.approx([0.05, 0.6])]


def test_keypoints_reach_frame_pixels_through_finish():
    dec = make_decoder(head(6), manifest(layout="ssd_anchors", **MEDIAPIPE), DecodeParams(score_threshold=0.5))
    codes = np.array([[[0, 0, 20, 20, 10, 10], [0] * 6]], np.float32)
    raw = dec((codes, np.array([[[4.0], [-4.0]]], np.float32)))
    # A 200x100 frame stretched to a 100x100 input: x pixels double.
    dets = finish(raw, Transform(200, 100, 100, 100, 0.5, 1.0, 0.0, 0.0), FinishParams(0.5, 0, {0: "face"}, None))
    assert dets[0].label == "face" and dets[0].keypoints == (pytest.approx((70.0, 60.0)),)


def test_a_width_that_is_not_4_plus_2k_is_refused_naming_what_was_expected():
    with pytest.raises(ModelError, match=r"have 7 values per anchor; expected 4 \(box\) or 4 \+ 2×K"):
        make_decoder(head(7), manifest(layout="ssd_anchors", **MEDIAPIPE), DecodeParams())
    with pytest.raises(ModelError, match=r"have 3 values per anchor"):
        make_decoder(head(3), manifest(layout="ssd_anchors", **MEDIAPIPE), DecodeParams())


def test_num_keypoints_from_the_manifest_must_match_the_shape():
    dec = make_decoder(head(16), manifest(layout="ssd_anchors", num_keypoints=6, **MEDIAPIPE), DecodeParams())
    assert dec.keypoints == 6
    with pytest.raises(ModelError, match=r"output.num_keypoints = 5 expects 4 \+ 2×5 = 14"):
        make_decoder(head(16), manifest(layout="ssd_anchors", num_keypoints=5, **MEDIAPIPE), DecodeParams())
    with pytest.raises(ModelError, match="num_values_per_keypoint = 1 is less than 2"):
        make_decoder(head(16), manifest(layout="ssd_anchors", num_values_per_keypoint=1, **MEDIAPIPE),
                     DecodeParams())


def test_rows_that_do_not_match_the_anchors_are_refused():
    with pytest.raises(ModelError, match="do not match 2 anchors"):
        make_decoder(head(16, n=3), manifest(layout="ssd_anchors", **MEDIAPIPE), DecodeParams())


def test_a_plain_4_value_head_has_no_keypoints():
    dec = make_decoder(head(4), manifest(layout="ssd_anchors", **MEDIAPIPE), DecodeParams(score_threshold=0.5))
    raw = dec((np.zeros((1, 2, 4), np.float32) + [0, 0, 10, 10], np.array([[[1.0], [-1.0]]], np.float32)))
    assert dec.keypoints == 0 and raw.keypoints is None and len(raw.boxes) == 1


def test_negative_sizes_are_dropped_and_huge_logits_do_not_overflow():
    dec = make_decoder(head(4), manifest(layout="ssd_anchors", score_clipping_thresh=100.0, **MEDIAPIPE),
                       DecodeParams(score_threshold=0.5))
    codes = np.array([[[0, 0, -10, 10], [0, 0, 10, 10]]], np.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        raw = dec((codes, np.array([[[1e4], [1e4]]], np.float32)))
    assert len(raw.boxes) == 1 and raw.scores[0] == 1.0
    assert raw.boxes[0].tolist() == pytest.approx([0.725, 0.475, 0.775, 0.525])   # anchor 1: w = h = 0.05


def test_an_unknown_raw_head_says_the_anchors_are_missing_and_how_to_give_them():
    unknown = model([("boxes", (1, 2034, 4)), ("scores", (1, 2034, 91))], inputs=(1, 320, 320, 3), name="h.tflite")
    with pytest.raises(ModelError) as caught:
        make_decoder(unknown, manifest(layout="ssd_anchors"), DecodeParams())
    message = str(caught.value)
    assert "h.tflite needs anchors" in message and "boxes [1, 2034, 4], scores [1, 2034, 91]" in message
    assert "output.anchors" in message and "output.anchor_options" in message
    # Without a manifest or --layout it is not taken for any layout: no guessing from sizes.
    with pytest.raises(ModelError, match="cannot tell the output layout of h.tflite"):
        identify_layout(unknown, manifest())


def mediapipe_like(preset, swap=False, names=None):
    width, height = preset.input_size
    outs = [(preset.output_names[0], (1, preset.num_anchors, preset.num_coords)),
            (preset.output_names[1], (1, preset.num_anchors, 1))]
    if names:
        outs = [(n, shape) for n, (_, shape) in zip(names, outs)]
    return model(outs[::-1] if swap else outs, inputs=(1, height, width, 3), name=f"{preset.name}.tflite")


@pytest.mark.parametrize("preset", PRESETS, ids=lambda p: p.name)
def test_presets_are_recognised_by_names_and_shapes_and_their_anchors_fit(preset):
    assert len(generate(AnchorOptions.from_dict(preset.anchor_options))) == preset.num_anchors
    for swap in (False, True):
        m = mediapipe_like(preset, swap)
        assert find_preset(m) is preset and identify_layout(m, manifest()) == "ssd_anchors"
        dec = make_decoder(m, manifest(), DecodeParams())
        assert (dec.boxes_pos, dec.scores_pos) == ((1, 0) if swap else (0, 1))
        assert dec.keypoints == preset.num_keypoints and dec.threshold == preset.min_score_thresh
        assert dec.iou_threshold == 0.3 and not dec.exp and dec.xy_order
        assert dec.scales.tolist() == [preset.input_size[1], preset.input_size[0]] * 2
    assert preset_labels(mediapipe_like(preset)) == {0: preset.label}


def test_near_misses_are_not_presets():
    face = PRESETS[0]
    assert find_preset(mediapipe_like(face, names=("a", "b"))) is None             # other names
    other_input = model([("regressors", (1, 896, 16)), ("classificators", (1, 896, 1))], inputs=(1, 96, 96, 3))
    assert find_preset(other_input) is None and preset_labels(other_input) is None
    full = next(p for p in PRESETS if p.name == "face_detection_full_range")
    wider = model([("Identity", (1, 2304, 18)), ("Identity_1", (1, 2304, 1))], inputs=(1, 192, 192, 3))
    assert find_preset(wider) is None and find_preset(mediapipe_like(full)) is full


def test_the_manifest_overrides_the_preset_key_by_key():
    m = mediapipe_like(PRESETS[0])
    anchors = [[0.5, 0.5, 1.0, 1.0]] * 896
    dec = make_decoder(m, manifest(layout="ssd_anchors", anchors=anchors, box_scales=[64, 64, 64, 64]),
                       DecodeParams(score_threshold=0.7))
    assert dec.anchors.shape == (896, 4) and np.allclose(dec.anchors, 0.5 * np.array([1, 1, 2, 2]))
    assert dec.scales.tolist() == [64] * 4 and dec.threshold == 0.7 and dec.keypoints == 6
    # The preset's sigmoid with clipping: a logit of 1000 is a score of 1, -1000 of 0.
    codes = np.zeros((1, 896, 16), np.float32)
    logits = np.full((1, 896, 1), -1000.0, np.float32)
    logits[0, 3] = 1000.0
    raw = dec((codes, logits))
    assert raw.scores.tolist() == [1.0] and raw.keypoints.shape == (1, 6, 2)
    assert math.isclose(float(raw.keypoints[0, 0, 0]), 0.5)


def test_anchor_options_take_the_proto_defaults_and_check_feature_maps():
    # ssd_anchors_calculator.proto: aspect_ratios is repeated (none by default); the interpolated
    # anchor (ratio 1.0 by default) is then the only one per layer: 16x16 + 3 layers x 8x8 = 448.
    base = {"input_size_width": 128, "input_size_height": 128, "num_layers": 4, "min_scale": 0.1484375,
            "max_scale": 0.75, "strides": [8, 16, 16, 16], "fixed_anchor_size": True}
    assert len(generate(AnchorOptions.from_dict(base))) == 16 * 16 + 3 * 8 * 8
    assert len(generate(AnchorOptions.from_dict({**base, "aspect_ratios": [1.0]}))) == 896
    with pytest.raises(ModelError, match="feature_map_height/width have 1/1 entries for num_layers = 4"):
        AnchorOptions.from_dict({**base, "feature_map_height": [16], "feature_map_width": [16]})

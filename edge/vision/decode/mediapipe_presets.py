"""MediaPipe's own detectors, recognised from the model so they run without a manifest.

A :class:`Preset` holds what MediaPipe's graph configs give its ``SsdAnchorsCalculator`` and
``TensorsToDetectionsCalculator`` for one detector (values copied from the .pbtxt files of
github.com/google-ai-edge/mediapipe, cited per preset). A model matches a preset only when ALL of
these agree: the input shape [1, H, W, 3], exactly two outputs named as MediaPipe exports them, the
anchor count N and the regressor width 4 + 2K. Within a matched preset (and only there) the two
outputs' roles are told by their shapes: regressors [1, N, 4 + 2K], classificators [1, N, 1].
Unknown models are never matched by size alone.

:func:`preset_output` gives the ``ssd_anchors`` decoder's ``output`` defaults (a manifest's
``output`` keys override them one by one); :func:`preset_labels` gives the single class's label.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from edge.runtime.model import ModelInfo

MEDIAPIPE = "github.com/google-ai-edge/mediapipe"


@dataclass(frozen=True)
class Preset:
    """One MediaPipe detector: how to recognise it, how its outputs decode, what it finds."""

    name: str                          # model family, e.g. "face_detection_short_range"
    label: str                         # the single class (class id 0)
    input_size: tuple[int, int]        # (width, height) in pixels
    num_anchors: int                   # N: rows of both outputs
    num_keypoints: int                 # K: regressors are [1, N, 4 + 2K]
    output_names: tuple[str, str]      # the two output tensor names as exported (roles follow the shapes)
    anchor_options: dict[str, Any]     # SsdAnchorsCalculatorOptions
    min_score_thresh: float            # TensorsToDetectionsCalculatorOptions.min_score_thresh
    iou_threshold: float               # NonMaxSuppressionCalculatorOptions.min_suppression_threshold
    input_range: tuple[float, float]   # ImageToTensorCalculatorOptions.output_tensor_float_range
    source: str                        # the .pbtxt files the values come from
    keep_aspect_ratio: bool = True     # ImageToTensorCalculatorOptions: MediaPipe letterboxes (BORDER_ZERO)

    @property
    def num_coords(self) -> int:
        """Values per anchor in the regressors: box (4) then K keypoints (x, y)."""
        return 4 + 2 * self.num_keypoints


def _anchors(width: int, height: int, strides: list[int], interpolated: float) -> dict[str, Any]:
    """SsdAnchorsCalculatorOptions shared by all four detectors (min/max scale, offsets 0.5,
    aspect ratio 1.0, fixed anchor size) with each one's input size, strides and interpolation."""
    return {"input_size_width": width, "input_size_height": height, "num_layers": len(strides),
            "strides": strides, "min_scale": 0.1484375, "max_scale": 0.75, "anchor_offset_x": 0.5,
            "anchor_offset_y": 0.5, "aspect_ratios": [1.0], "fixed_anchor_size": True,
            "interpolated_scale_aspect_ratio": interpolated}


# Where each value comes from (github.com/google-ai-edge/mediapipe, mediapipe/modules/...):
# * face_detection/face_detection.pbtxt, shared by both face models: SsdAnchorsCalculator min_scale
#   0.1484375, max_scale 0.75, anchor offsets 0.5, aspect_ratios 1.0, fixed_anchor_size true;
#   TensorsToDetectionsCalculator num_classes 1, num_coords 16, box_coord_offset 0,
#   keypoint_coord_offset 4, num_keypoints 6, num_values_per_keypoint 2, sigmoid_score true,
#   score_clipping_thresh 100, reverse_output_order true (x, y, w, h); NonMaxSuppression
#   min_suppression_threshold 0.3; ImageToTensor output_tensor_float_range [-1, 1]. Every graph's
#   ImageToTensorCalculator has keep_aspect_ratio true and border_mode BORDER_ZERO (letterbox).
# * face_detection/face_detection_short_range.pbtxt: tensor 128x128, num_layers 4, strides 8,16,16,16,
#   interpolated_scale_aspect_ratio 1.0, num_boxes 896, x/y/w/h_scale 128, min_score_thresh 0.5.
# * face_detection/face_detection_full_range.pbtxt (model face_detection_full_range_sparse.tflite):
#   tensor 192x192, num_layers 1, stride 4, interpolated_scale_aspect_ratio 0.0, num_boxes 2304,
#   scales 192, min_score_thresh 0.6.
# * palm_detection/palm_detection_cpu.pbtxt (lite and full, chosen by model_complexity): 192x192,
#   num_layers 4, strides 8,16,16,16, min/max scale 0.1484375/0.75, offsets 0.5, aspect_ratios 1.0,
#   fixed_anchor_size true; num_boxes 2016, num_coords 18, 7 keypoints, sigmoid, clipping 100,
#   reverse_output_order, scales 192, min_score_thresh 0.5; NMS 0.3; float range [0, 1].
# * pose_detection/pose_detection_cpu.pbtxt: 224x224, num_layers 5, strides 8,16,32,32,32, same
#   scales/offsets/ratio/fixed size; num_boxes 2254, num_coords 12, 4 keypoints (mid hip, full-body
#   size/rotation point, mid shoulder, upper-body size/rotation point), sigmoid, clipping 100,
#   reverse_output_order, scales 224, min_score_thresh 0.2; NMS 0.3; float range [-1, 1].
_FACE = "mediapipe/modules/face_detection/face_detection.pbtxt"

PRESETS: tuple[Preset, ...] = (
    Preset("face_detection_short_range", "face", (128, 128), 896, 6, ("regressors", "classificators"),
           _anchors(128, 128, [8, 16, 16, 16], 1.0), 0.5, 0.3, (-1.0, 1.0),
           f"{MEDIAPIPE} {_FACE} + face_detection_short_range.pbtxt"),
    Preset("face_detection_full_range", "face", (192, 192), 2304, 6, ("Identity", "Identity_1"),
           _anchors(192, 192, [4], 0.0), 0.6, 0.3, (-1.0, 1.0),
           f"{MEDIAPIPE} {_FACE} + face_detection_full_range.pbtxt"),
    Preset("palm_detection", "palm", (192, 192), 2016, 7, ("Identity", "Identity_1"),
           _anchors(192, 192, [8, 16, 16, 16], 1.0), 0.5, 0.3, (0.0, 1.0),
           f"{MEDIAPIPE} mediapipe/modules/palm_detection/palm_detection_cpu.pbtxt"),
    Preset("pose_detection", "person", (224, 224), 2254, 4, ("Identity", "Identity_1"),
           _anchors(224, 224, [8, 16, 32, 32, 32], 1.0), 0.2, 0.3, (-1.0, 1.0),
           f"{MEDIAPIPE} mediapipe/modules/pose_detection/pose_detection_cpu.pbtxt"),
)


def _input_matches(model: ModelInfo, preset: Preset) -> bool:
    width, height = preset.input_size
    return len(model.inputs) == 1 and tuple(model.inputs[0].shape) == (1, height, width, 3)


def roles(model: ModelInfo, preset: Preset) -> tuple[int, int] | None:
    """(regressors position, classificators position) when the outputs are the preset's, else None.

    Both names must be the preset's and the shapes [1, N, 4 + 2K] and [1, N, 1]; the roles follow
    the shapes (MediaPipe's Identity/Identity_1 names do not say which is which).
    """
    if len(model.outputs) != 2 or {t.name for t in model.outputs} != set(preset.output_names):
        return None
    boxes = (1, preset.num_anchors, preset.num_coords)
    scores = (1, preset.num_anchors, 1)
    shapes = [tuple(t.shape) for t in model.outputs]
    if shapes == [boxes, scores]:
        return 0, 1
    if shapes == [scores, boxes]:
        return 1, 0
    return None


def find_preset(model: ModelInfo) -> Preset | None:
    """The MediaPipe detector ``model`` is (input shape, output names and shapes all agree), or None."""
    return next((p for p in PRESETS if _input_matches(model, p) and roles(model, p) is not None), None)


def preset_output(preset: Preset) -> dict[str, Any]:
    """``ssd_anchors`` ``output`` values for ``preset`` (MediaPipe's decoding, see the module doc).

    Box and keypoint codes are x, y (w, h) in input pixels relative to the anchor, so every scale
    is the input size; sizes are linear (no exp); scores are sigmoids of logits clipped to ±100.
    """
    width, height = preset.input_size
    return {"anchor_options": dict(preset.anchor_options), "box_order": "xywh",
            "box_scales": [float(height), float(width), float(height), float(width)], "exp_box_size": False,
            "score": "sigmoid", "score_clipping_thresh": 100.0, "background_class": False, "num_classes": 1,
            "num_keypoints": preset.num_keypoints, "iou_threshold": preset.iou_threshold}


def preset_labels(model: ModelInfo) -> dict[int, str] | None:
    """{0: label} for a recognised MediaPipe detector ("face", "palm", "person"), else None.

    For the labels resolution: a run of such a model without a labels file names its detections
    by this label instead of "0". The pose detector's label is "person" (its box is the face's, its
    keypoints the hips and shoulders, per pose_detection_cpu.pbtxt).
    """
    preset = find_preset(model)
    return {0: preset.label} if preset else None


__all__ = ["Preset", "PRESETS", "find_preset", "preset_labels", "preset_output", "roles"]

"""Frame → model input, written straight into the interpreter's input tensor.

Resizing (stretch or letterbox), colour order, normalisation and the model's own input
quantization are applied with OpenCV into the destination view, with no per-frame allocation in
the steady state: normalisation and quantization are folded into one 256-entry lookup table per
channel (``q = round(((p - mean) / std) / scale + zero_point)``, clipped to the tensor's type),
which covers uint8, int8 (through its zero point) and float32 inputs alike. When that table is
the identity to within half a quantization step (Coral-zoo uint8 models) the resize writes the
tensor directly.

:meth:`Preprocessor.__call__` returns the :class:`Transform` that maps model-input coordinates
back to the frame; :meth:`Transform.boxes_to_frame` is the one place where that happens.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from edge.capture.base import Frame
from edge.errors import ModelError
from edge.runtime.manifest import InputSpec
from edge.runtime.model import TensorInfo

_TO_MODEL = {  # (frame format, model colour) -> cv2 conversion, None: already in order
    ("BGR", "RGB"): cv2.COLOR_BGR2RGB, ("RGB", "BGR"): cv2.COLOR_RGB2BGR,
    ("BGR", "BGR"): None, ("RGB", "RGB"): None,
    ("YUV420", "RGB"): cv2.COLOR_YUV2RGB_I420, ("YUV420", "BGR"): cv2.COLOR_YUV2BGR_I420,
}


@dataclass(frozen=True, slots=True)
class Transform:
    """frame_xy = (input_xy - pad) / scale, in pixels; boxes are clipped to the frame."""

    frame_w: int
    frame_h: int
    input_w: int
    input_h: int
    scale_x: float     # input pixels per frame pixel
    scale_y: float
    pad_x: float       # padding, in input pixels, left and top
    pad_y: float

    def boxes_to_frame(self, boxes: np.ndarray) -> np.ndarray:
        """[N, 4] (xmin, ymin, xmax, ymax) normalised to the model input → frame pixels."""
        out = np.empty_like(boxes, dtype=np.float32)
        out[:, 0::2] = (boxes[:, 0::2] * self.input_w - self.pad_x) / self.scale_x
        out[:, 1::2] = (boxes[:, 1::2] * self.input_h - self.pad_y) / self.scale_y
        np.clip(out[:, 0::2], 0, self.frame_w, out=out[:, 0::2])
        np.clip(out[:, 1::2], 0, self.frame_h, out=out[:, 1::2])
        return out

    def points_to_frame(self, points: np.ndarray) -> np.ndarray:
        """[..., 2] (x, y) normalised to the model input → frame pixels (not clipped: a keypoint may
        lie outside the frame, e.g. an occluded joint)."""
        out = np.empty_like(points, dtype=np.float32)
        out[..., 0] = (points[..., 0] * self.input_w - self.pad_x) / self.scale_x
        out[..., 1] = (points[..., 1] * self.input_h - self.pad_y) / self.scale_y
        return out


def quantization_lut(spec: InputSpec, tensor: TensorInfo) -> np.ndarray | None:
    """[256, 1, 3] table pixel → tensor value per channel, or None when it is the identity."""
    pixels = np.arange(256, dtype=np.float64)[:, None]
    real = (pixels - np.asarray(spec.mean)[None, :]) / np.asarray(spec.std)[None, :]
    dtype = tensor.dtype
    if dtype in (np.float32, np.float16):
        return real.astype(np.float32).reshape(256, 1, 3)
    if dtype not in (np.uint8, np.int8):
        raise ModelError(f"input tensor {tensor.name!r} has type {tensor.type}; edge feeds uint8, int8 or "
                         "float32 inputs")
    scale, zero_point = tensor.quantization.scalar() if tensor.quantization else (1.0, 0)
    info = np.iinfo(dtype)
    exact = real / scale + zero_point
    # Within half a step of the raw pixel everywhere (e.g. scale 2/255 with zero point 127 or 128,
    # where the exact value lies halfway between two codes): the pixel itself is as good a code.
    if dtype == np.uint8 and np.abs(exact - pixels).max() <= 0.5 + 1e-3:
        return None
    return np.clip(np.round(exact), info.min, info.max).astype(dtype).reshape(256, 1, 3)


def _into(dst: np.ndarray, result: np.ndarray) -> None:
    # OpenCV writes into ``dst`` when its shape and type fit; copy if it ever had to reallocate.
    if result is not dst and not np.shares_memory(result, dst):
        np.copyto(dst, result)


class Preprocessor:
    """Writes frames into a model input of shape [1, H, W, 3]; buffers are reused between frames."""

    def __init__(self, spec: InputSpec, tensor: TensorInfo, input_shape: tuple[int, ...]):
        if len(input_shape) != 4 or input_shape[0] != 1 or input_shape[3] != 3:
            raise ModelError(f"input tensor {tensor.name!r} has shape {list(input_shape)}; edge expects an "
                             "image input [1, height, width, 3] (NHWC)")
        self.spec = spec
        self.height, self.width = int(input_shape[1]), int(input_shape[2])
        if (spec.width and spec.width != self.width) or (spec.height and spec.height != self.height):
            raise ModelError(f"the manifest says input {spec.width}x{spec.height} but the model takes "
                             f"{self.width}x{self.height}", "fix input.width/height in the manifest")
        self.lut = quantization_lut(spec, tensor)
        self.dtype = tensor.dtype
        self._pad_value = self._quantized_pad(spec.pad_value)
        self._buffers: dict[tuple, np.ndarray] = {}
        self._geometry: dict[tuple[int, int], tuple[Transform, int, int, int, int]] = {}

    def _quantized_pad(self, value: int) -> float | int:
        if self.lut is None:
            return value
        return self.lut[value, 0, 0].item()

    def _buffer(self, key: str, shape: tuple[int, ...], dtype=np.uint8) -> np.ndarray:
        buf = self._buffers.get((key, shape))
        if buf is None:
            buf = self._buffers[(key, shape)] = np.empty(shape, dtype)
        return buf

    def geometry(self, frame_w: int, frame_h: int) -> tuple[Transform, int, int, int, int]:
        """(transform, x, y, w, h): where the resized picture lands inside the input (for ``crop``:
        the centred window of the frame, in frame pixels, that is resized to the whole input)."""
        key = (frame_w, frame_h)
        if key not in self._geometry:
            if self.spec.resize == "letterbox":
                s = min(self.width / frame_w, self.height / frame_h)
                w, h = max(1, round(frame_w * s)), max(1, round(frame_h * s))
                x, y = (self.width - w) // 2, (self.height - h) // 2
                transform = Transform(frame_w, frame_h, self.width, self.height, w / frame_w, h / frame_h, x, y)
            elif self.spec.resize == "crop":
                s = max(self.width / frame_w, self.height / frame_h)
                w, h = min(frame_w, max(1, round(self.width / s))), min(frame_h, max(1, round(self.height / s)))
                x, y = (frame_w - w) // 2, (frame_h - h) // 2
                sx, sy = self.width / w, self.height / h
                transform = Transform(frame_w, frame_h, self.width, self.height, sx, sy, -x * sx, -y * sy)
            else:
                x, y, w, h = 0, 0, self.width, self.height
                transform = Transform(frame_w, frame_h, self.width, self.height,
                                      self.width / frame_w, self.height / frame_h, 0.0, 0.0)
            self._geometry[key] = (transform, x, y, w, h)
        return self._geometry[key]

    def _picture(self, frame: Frame) -> np.ndarray:
        """The frame as packed 3-channel pixels (YUV420 converted), not yet in model colour order."""
        if frame.format != "YUV420":
            return frame.image
        w, h = frame.size
        rgb = self._buffer("yuv", (h, w, 3))
        _into(rgb, cv2.cvtColor(frame.image, _TO_MODEL[("YUV420", self.spec.colour)], dst=rgb))
        return rgb

    def __call__(self, frame: Frame, out: np.ndarray) -> Transform:
        """Preprocess ``frame`` into ``out`` (the [1, H, W, 3] input view) and return the transform."""
        frame_w, frame_h = frame.size
        transform, x, y, w, h = self.geometry(frame_w, frame_h)
        picture = self._picture(frame)
        conversion = None if frame.format == "YUV420" else _TO_MODEL[(frame.format, self.spec.colour)]
        dst = out[0]
        if self.spec.resize == "crop":       # a centred window of the frame fills the input
            picture = picture[y:y + h, x:x + w]
            frame_w, frame_h = w, h
            x, y, w, h = 0, 0, self.width, self.height
        if (w, h) != (self.width, self.height):
            dst[:y].fill(self._pad_value)
            dst[y + h:].fill(self._pad_value)
            dst[y:y + h, :x].fill(self._pad_value)
            dst[y:y + h, x + w:].fill(self._pad_value)
        region = dst[y:y + h, x:x + w]
        staging = region if self.lut is None else self._buffer("resized", (h, w, 3))
        if (frame_w, frame_h) == (w, h):
            np.copyto(staging, picture)
        else:
            _into(staging, cv2.resize(picture, (w, h), dst=staging, interpolation=cv2.INTER_LINEAR))
        if conversion is not None:
            _into(staging, cv2.cvtColor(staging, conversion, dst=staging))
        if self.lut is not None:
            _into(region, cv2.LUT(staging, self.lut, dst=region))
        return transform

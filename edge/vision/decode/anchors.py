"""SSD anchors generated like MediaPipe's SsdAnchorsCalculator (ssd_anchors_calculator.cc).

Options mirror ``SsdAnchorsCalculatorOptions`` with its proto defaults (ssd_anchors_calculator.proto:
anchor offsets 0.5, no aspect ratios, interpolated_scale_aspect_ratio 1.0, no fixed size); anchors
come out as [N, 4] (y_center, x_center, height, width), normalised, in the calculator's order
(layer, row, column, anchor). The multiscale (RetinaNet) generation is not supported.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields

import numpy as np

from edge.errors import ModelError


@dataclass(frozen=True)
class AnchorOptions:
    input_size_width: int
    input_size_height: int
    num_layers: int
    min_scale: float
    max_scale: float
    strides: tuple[int, ...]
    anchor_offset_x: float = 0.5
    anchor_offset_y: float = 0.5
    feature_map_width: tuple[int, ...] = ()
    feature_map_height: tuple[int, ...] = ()
    aspect_ratios: tuple[float, ...] = ()    # repeated in the proto: none unless given
    reduce_boxes_in_lowest_layer: bool = False
    interpolated_scale_aspect_ratio: float = 1.0
    fixed_anchor_size: bool = False

    @classmethod
    def from_dict(cls, table: dict) -> "AnchorOptions":
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - names)
        if unknown:
            raise ModelError(f"output.anchor_options.{unknown[0]} is not an SsdAnchorsCalculator option",
                             f"valid: {', '.join(sorted(names))}")
        values = {k: tuple(v) if isinstance(v, list) else v for k, v in table.items()}
        try:
            options = cls(**values)
        except TypeError as exc:
            raise ModelError(f"output.anchor_options is incomplete ({exc})",
                             "give input_size_width/height, num_layers, min_scale, max_scale, strides") from None
        if len(options.strides) != options.num_layers:
            raise ModelError(f"output.anchor_options: {len(options.strides)} strides for num_layers = "
                             f"{options.num_layers}", "give one stride per layer")
        maps = (len(options.feature_map_height), len(options.feature_map_width))
        if any(maps) and maps != (options.num_layers,) * 2:
            raise ModelError(f"output.anchor_options: feature_map_height/width have {maps[0]}/{maps[1]} entries "
                             f"for num_layers = {options.num_layers}", "give one of each per layer, or neither")
        return options


def _scale(min_scale: float, max_scale: float, index: int, count: int) -> float:
    if count == 1:
        return (min_scale + max_scale) * 0.5
    return min_scale + (max_scale - min_scale) * index / (count - 1.0)


def generate(o: AnchorOptions) -> np.ndarray:
    """[N, 4] float32 anchors (y_center, x_center, height, width)."""
    out: list[np.ndarray] = []
    layer = 0
    n = len(o.strides)
    while layer < o.num_layers:
        ratios: list[float] = []
        scales: list[float] = []
        last = layer
        while last < n and o.strides[last] == o.strides[layer]:
            scale = _scale(o.min_scale, o.max_scale, last, n)
            if last == 0 and o.reduce_boxes_in_lowest_layer:
                ratios += [1.0, 2.0, 0.5]
                scales += [0.1, scale, scale]
            else:
                for ratio in o.aspect_ratios:
                    ratios.append(ratio)
                    scales.append(scale)
                if o.interpolated_scale_aspect_ratio > 0.0:
                    following = 1.0 if last == n - 1 else _scale(o.min_scale, o.max_scale, last + 1, n)
                    scales.append(math.sqrt(scale * following))
                    ratios.append(o.interpolated_scale_aspect_ratio)
            last += 1
        heights = np.array([s / math.sqrt(r) for s, r in zip(scales, ratios)], np.float32)
        widths = np.array([s * math.sqrt(r) for s, r in zip(scales, ratios)], np.float32)
        if o.feature_map_height:
            fh, fw = o.feature_map_height[layer], o.feature_map_width[layer]
        else:
            stride = o.strides[layer]
            fh = math.ceil(o.input_size_height / stride)
            fw = math.ceil(o.input_size_width / stride)
        ys = (np.arange(fh, dtype=np.float32) + o.anchor_offset_y) / fh
        xs = (np.arange(fw, dtype=np.float32) + o.anchor_offset_x) / fw
        k = len(heights)
        grid = np.empty((fh, fw, k, 4), np.float32)
        grid[..., 0] = ys[:, None, None]
        grid[..., 1] = xs[None, :, None]
        grid[..., 2] = 1.0 if o.fixed_anchor_size else heights
        grid[..., 3] = 1.0 if o.fixed_anchor_size else widths
        out.append(grid.reshape(-1, 4))
        layer = last
    return np.concatenate(out) if out else np.zeros((0, 4), np.float32)


__all__ = ["AnchorOptions", "generate"]

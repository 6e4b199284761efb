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

from edge.bounded import show
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
        if not isinstance(table, dict):
            raise ModelError(f"output.anchor_options = {show(table)} is not an object of SsdAnchorsCalculator options")
        names = {f.name for f in fields(cls)}
        unknown = sorted(set(table) - names)
        if unknown:
            raise ModelError(f"output.anchor_options.{unknown[0][:60]} is not an SsdAnchorsCalculator option",
                             f"valid: {', '.join(sorted(names))}")
        values = {k: _checked(k, v) for k, v in table.items()}
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
        count = anchor_count(options)
        if count > MAX_ANCHORS:
            raise ModelError(f"output.anchor_options give {count} anchors, more than the {MAX_ANCHORS} any SSD "
                             "head has", "check input_size_width/height, strides and feature_map_width/height")
        return options


# Bounds that no real SsdAnchorsCalculator configuration comes near; beyond them a typo (a stride
# of 0, a feature map of 10^6) would divide by zero or allocate terabytes.
MAX_ANCHORS = 1_000_000
MAX_SIDE = 16384
MAX_LAYERS = 64
MAX_RATIOS = 64
# option -> (kind, low, high); kind "int", "float", "bool", or "ints"/"floats" for lists.
_LIMITS: dict[str, tuple[str, float, float]] = {
    "input_size_width": ("int", 1, MAX_SIDE), "input_size_height": ("int", 1, MAX_SIDE),
    "num_layers": ("int", 1, MAX_LAYERS), "min_scale": ("float", 0.0, 100.0), "max_scale": ("float", 0.0, 100.0),
    "strides": ("ints", 1, MAX_SIDE), "anchor_offset_x": ("float", 0.0, 1.0), "anchor_offset_y": ("float", 0.0, 1.0),
    "feature_map_width": ("ints", 1, MAX_SIDE), "feature_map_height": ("ints", 1, MAX_SIDE),
    "aspect_ratios": ("floats", 1e-3, 1e3), "reduce_boxes_in_lowest_layer": ("bool", 0, 0),
    "interpolated_scale_aspect_ratio": ("float", 0.0, 1e3), "fixed_anchor_size": ("bool", 0, 0),
}


def _number_ok(kind: str, value: object, low: float, high: float) -> bool:
    if isinstance(value, bool):
        return False
    if kind == "int" and not isinstance(value, int):
        return False
    if kind == "float" and not isinstance(value, (int, float)):
        return False
    return math.isfinite(value) and low <= value <= high


def _checked(key: str, value: object) -> object:
    """``value`` of option ``key`` checked for type and range (lists become tuples)."""
    kind, low, high = _LIMITS[key]
    if kind == "bool":
        if not isinstance(value, bool):
            raise ModelError(f"output.anchor_options.{key} = {show(value)} is not true or false")
        return value
    if kind in ("ints", "floats"):
        scalar = kind[:-1]
        if not isinstance(value, list) or len(value) > MAX_RATIOS or \
                not all(_number_ok(scalar, v, low, high) for v in value):
            raise ModelError(f"output.anchor_options.{key} = {show(value)} is not a list of at most {MAX_RATIOS} "
                             f"{'integers' if scalar == 'int' else 'numbers'} from {low:g} to {high:g}")
        return tuple(float(v) if scalar == "float" else v for v in value)
    if not _number_ok(kind, value, low, high):
        raise ModelError(f"output.anchor_options.{key} = {show(value)} is not "
                         f"{'an integer' if kind == 'int' else 'a number'} from {low:g} to {high:g}")
    return float(value) if kind == "float" else value


def _layer_grid(o: "AnchorOptions", layer: int) -> tuple[int, int]:
    if o.feature_map_height:
        return o.feature_map_height[layer], o.feature_map_width[layer]
    stride = o.strides[layer]
    return math.ceil(o.input_size_height / stride), math.ceil(o.input_size_width / stride)


def _per_cell(o: "AnchorOptions", first: int, last: int) -> int:
    """Anchors per grid cell of the layers ``first``..``last - 1`` that share a stride (see generate)."""
    k = 0
    for index in range(first, last):
        if index == 0 and o.reduce_boxes_in_lowest_layer:
            k += 3
        else:
            k += len(o.aspect_ratios) + (1 if o.interpolated_scale_aspect_ratio > 0.0 else 0)
    return k


def anchor_count(o: "AnchorOptions") -> int:
    """How many anchors :func:`generate` would make, computed without allocating them."""
    total, layer, n = 0, 0, len(o.strides)
    while layer < o.num_layers:
        last = layer
        while last < n and o.strides[last] == o.strides[layer]:
            last += 1
        fh, fw = _layer_grid(o, layer)
        total += fh * fw * _per_cell(o, layer, last)
        layer = last
    return total


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
        fh, fw = _layer_grid(o, layer)
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


__all__ = ["AnchorOptions", "anchor_count", "generate", "MAX_ANCHORS"]

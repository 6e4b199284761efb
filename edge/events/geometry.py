"""Zones and counting lines in frame pixels: their validation and the tests on a track's position.

A track's position is the bottom centre of its box (where a person's feet or a car's wheels touch
the ground, as Frigate does): a zone contains the track when that point is inside its polygon, a
line is crossed when that point moves from one side of the segment to the other through it.

Direction of a line: look from its first point A towards its second point B, on the picture
(x to the right, y down). A crossing from your left-hand side to your right-hand side is ``in``,
the other way ``out``. For A = (0, 100), B = (640, 100), a horizontal line, ``in`` is downwards
(from the top of the picture to the bottom); swap the points to swap the directions.

Static checks (types, point counts, self-intersection, names) run when the configuration is
parsed (:func:`parse_zone`, :func:`parse_line`); whether the points lie inside the frame can only
be known once the source is open and its frame size read: :func:`check_geometry`.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any, Iterable, Sequence

from edge.errors import ConfigError

Point = tuple[float, float]

NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")   # names end up in MQTT topics and Prometheus labels
WHOLE_FRAME = "all"                          # the zone name reserved for the whole frame
MAX_POINTS = 100
MAX_INERTIA = 1000
ZONE_KEYS = ("name", "points", "inertia", "labels", "cameras")
LINE_KEYS = ("name", "points", "labels", "cameras")


@dataclass(frozen=True)
class Zone:
    """A polygon in frame pixels. A track is in it once its bottom centre has been inside for
    ``inertia`` consecutive frames (with a detection), and leaves it after ``inertia`` consecutive
    frames outside. ``labels``: only tracks of these labels can be in it (empty: any)."""

    name: str
    points: tuple[Point, ...]
    inertia: int = 3
    labels: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()     # the cameras it is drawn on (their names); empty: every camera

    def on(self, camera: str) -> bool:
        return not self.cameras or camera in self.cameras

    def contains(self, x: float, y: float) -> bool:
        """Point-in-polygon, the edges included: a box touching the bottom of the frame has its
        reference point on the frame's edge, inside a zone drawn up to that edge."""
        return point_in_polygon(self.points, x, y)

    def applies_to(self, label: str) -> bool:
        return not self.labels or label in self.labels


@dataclass(frozen=True)
class Line:
    """A counting segment from ``a`` to ``b``; ``in`` crosses from the left of A→B to its right
    (see the module's docstring). ``labels``: only these labels are counted (empty: any)."""

    name: str
    a: Point
    b: Point
    labels: tuple[str, ...] = ()
    cameras: tuple[str, ...] = ()     # the cameras it is drawn on (their names); empty: every camera

    def on(self, camera: str) -> bool:
        return not self.cameras or camera in self.cameras

    def side(self, p: Point) -> int:
        """+1 right of A→B on the picture (y down), -1 left, 0 on the line through A and B."""
        c = cross(self.a, self.b, p)
        return (c > 0) - (c < 0)

    def crossing(self, before: Point, after: Point) -> str | None:
        """``"in"``, ``"out"`` or None for a reference point that moved from ``before`` to ``after``.

        Both points must lie strictly on opposite sides of the line and the path between them must
        pass through the segment itself (not its extension). A point exactly on the line is on
        neither side: keep the last point that was on a side (see :class:`edge.events.lifecycle`).
        """
        s0, s1 = self.side(before), self.side(after)
        if s0 == 0 or s1 == 0 or s0 == s1:
            return None
        t0, t1 = cross(before, after, self.a), cross(before, after, self.b)
        if (t0 > 0 and t1 > 0) or (t0 < 0 and t1 < 0):
            return None              # the path passes beyond A or beyond B
        return "in" if s0 < 0 else "out"

    def applies_to(self, label: str) -> bool:
        return not self.labels or label in self.labels


def reference_point(box: Sequence[float]) -> Point:
    """Bottom centre of an (xmin, ymin, xmax, ymax) box."""
    return ((box[0] + box[2]) / 2.0, float(box[3]))


def cross(a: Point, b: Point, p: Point) -> float:
    """z of (b - a) × (p - a)."""
    return (b[0] - a[0]) * (p[1] - a[1]) - (b[1] - a[1]) * (p[0] - a[0])


def point_in_polygon(points: Sequence[Point], x: float, y: float) -> bool:
    """Inside the closed polygon (its edges included), by ray casting."""
    inside = False
    n = len(points)
    x0, y0 = points[n - 1]
    for x1, y1 in points:
        if (x1 - x0) * (y - y0) == (y1 - y0) * (x - x0) and _on_segment((x0, y0), (x1, y1), (x, y)):
            return True
        if (y1 > y) != (y0 > y) and x < (x0 - x1) * (y - y1) / (y0 - y1) + x1:
            inside = not inside
        x0, y0 = x1, y1
    return inside


def segments_intersect(p1: Point, p2: Point, q1: Point, q2: Point) -> bool:
    """True when the closed segments p1p2 and q1q2 share a point (touching and overlap included)."""
    d1, d2 = cross(q1, q2, p1), cross(q1, q2, p2)
    d3, d4 = cross(p1, p2, q1), cross(p1, p2, q2)
    if ((d1 > 0) != (d2 > 0) and d1 != 0 and d2 != 0) and ((d3 > 0) != (d4 > 0) and d3 != 0 and d4 != 0):
        return True
    return ((d1 == 0 and _on_segment(q1, q2, p1)) or (d2 == 0 and _on_segment(q1, q2, p2))
            or (d3 == 0 and _on_segment(p1, p2, q1)) or (d4 == 0 and _on_segment(p1, p2, q2)))


def _on_segment(a: Point, b: Point, p: Point) -> bool:
    """``p``, collinear with a and b, lies within their bounding box."""
    return min(a[0], b[0]) <= p[0] <= max(a[0], b[0]) and min(a[1], b[1]) <= p[1] <= max(a[1], b[1])


def self_intersection(points: Sequence[Point]) -> tuple[int, int] | None:
    """Indices (i, j) of two edges of the closed polygon that cross or touch (other than adjacent
    edges at their shared corner, or overlapping when adjacent and folding back); None if simple."""
    n = len(points)
    edges = [(points[i], points[(i + 1) % n]) for i in range(n)]
    for i in range(n):
        for j in range(i + 1, n):
            adjacent = j == i + 1 or (i == 0 and j == n - 1)
            a, b = edges[i]
            c, d = edges[j]
            if adjacent:
                # adjacent edges share one corner; they fold back onto each other when collinear and
                # pointing in opposite directions (a spike)
                shared, p, q = (b, a, d) if j == i + 1 else (a, b, c)
                if cross(p, shared, q) == 0 and _dot(p, shared, q) > 0:
                    return i, j
                continue
            if segments_intersect(a, b, c, d):
                return i, j
    return None


def _dot(p: Point, shared: Point, q: Point) -> float:
    """(p - shared) · (q - shared): positive when both rays leave ``shared`` on the same side."""
    return (p[0] - shared[0]) * (q[0] - shared[0]) + (p[1] - shared[1]) * (q[1] - shared[1])


# --- parsing and validation --------------------------------------------------------------------

def parse_zone(table: Any, index: int) -> Zone:
    """One ``[[events.zones]]`` entry: {name, points = [[x, y], …] (≥ 3), inertia, labels}."""
    where = f"events.zones[{index}]"
    table = _table(where, table, ZONE_KEYS, required=("name", "points"))
    name = _name(where, table["name"])
    where = f"zone {name!r}"
    points = _points(where, table["points"])
    if len(points) < 3:
        raise ConfigError(f"{where} has {len(points)} point(s)", "a zone is a polygon of at least 3 [x, y] points")
    if len(points) > MAX_POINTS:
        raise ConfigError(f"{where} has {len(points)} points", f"at most {MAX_POINTS}")
    for i in range(len(points)):
        if points[i] == points[(i + 1) % len(points)]:
            raise ConfigError(f"{where} repeats the point {_show(points[i])} (points {i} and "
                              f"{(i + 1) % len(points)})", "give each corner once")
    if all(cross(points[0], points[1], p) == 0 for p in points[2:]):
        raise ConfigError(f"{where} has no area (its points are on one line)")
    bad = self_intersection(points)
    if bad is not None:
        i, j = bad
        n = len(points)
        raise ConfigError(f"{where} is self-intersecting: edge {_show(points[i])}-{_show(points[(i + 1) % n])} "
                          f"meets edge {_show(points[j])}-{_show(points[(j + 1) % n])}",
                          "list the corners in order around the polygon")
    inertia = table.get("inertia", 3)
    if isinstance(inertia, bool) or not isinstance(inertia, int) or not 1 <= inertia <= MAX_INERTIA:
        raise ConfigError(f"{where}: inertia = {inertia!r} is not an integer from 1 to {MAX_INERTIA}",
                          "frames a track must be inside (or outside) before it enters (or leaves)")
    return Zone(name, points, inertia, _labels(where, table.get("labels", [])),
                _labels(where, table.get("cameras", []), "cameras"))


def parse_line(table: Any, index: int) -> Line:
    """One ``[[events.lines]]`` entry: {name, points = [[xa, ya], [xb, yb]], labels}."""
    where = f"events.lines[{index}]"
    table = _table(where, table, LINE_KEYS, required=("name", "points"))
    name = _name(where, table["name"])
    where = f"line {name!r}"
    points = _points(where, table["points"])
    if len(points) != 2:
        raise ConfigError(f"{where} has {len(points)} point(s)", "a line is 2 points [[xa, ya], [xb, yb]]")
    if points[0] == points[1]:
        raise ConfigError(f"{where} has the same point twice {_show(points[0])}", "give two distinct points")
    return Line(name, points[0], points[1], _labels(where, table.get("labels", [])),
                _labels(where, table.get("cameras", []), "cameras"))


def check_names(zones: Iterable[Zone], lines: Iterable[Line]) -> None:
    """Zone names unique and not ``all``; line names unique."""
    for kind, items in (("zone", zones), ("line", lines)):
        seen: set[str] = set()
        for item in items:
            if item.name in seen:
                raise ConfigError(f"two {kind}s are named {item.name!r}", f"give each {kind} its own name")
            if kind == "zone" and item.name == WHOLE_FRAME:
                raise ConfigError(f"a zone is named {WHOLE_FRAME!r}", "that name stands for the whole frame; choose another")
            seen.add(item.name)


def check_geometry(zones: Iterable[Zone], lines: Iterable[Line], width: int, height: int) -> None:
    """Every point of every zone and line within a ``width`` x ``height`` frame (0 ≤ x ≤ width,
    0 ≤ y ≤ height); a ConfigError names the first that is not. Call once the source is open."""
    for kind, item, points in ([("zone", z, z.points) for z in zones] + [("line", l, (l.a, l.b)) for l in lines]):
        for p in points:
            if not (0 <= p[0] <= width and 0 <= p[1] <= height):
                raise ConfigError(f"{kind} {item.name!r} has the point {_show(p)} outside the {width}x{height} frame",
                                  f"points are frame pixels, x from 0 to {width}, y from 0 to {height}")


def _table(where: str, table: Any, keys: tuple[str, ...], required: tuple[str, ...]) -> dict:
    if not isinstance(table, dict):
        raise ConfigError(f"{where} = {_short(table)} is not a table", f"keys: {', '.join(keys)}")
    unknown = sorted(set(table) - set(keys))
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}", f"valid keys: {', '.join(keys)}")
    for key in required:
        if key not in table:
            raise ConfigError(f"{where} has no {key}", f"keys: {', '.join(keys)}")
    return table


def _name(where: str, name: Any) -> str:
    if not isinstance(name, str) or not NAME.fullmatch(name):
        raise ConfigError(f"{where}.name = {_short(name)} is not a name",
                          "1 to 64 letters, digits, '_' or '-' (it appears in MQTT topics)")
    return name


def _points(where: str, value: Any) -> tuple[Point, ...]:
    if not isinstance(value, list) or len(value) > MAX_POINTS:
        raise ConfigError(f"{where}: points = {_short(value)} is not a list of [x, y] pairs",
                          f"e.g. [[10, 20], [300, 20], [300, 200]], at most {MAX_POINTS}")
    points = []
    for i, p in enumerate(value):
        if (not isinstance(p, list) or len(p) != 2
                or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in p)):
            raise ConfigError(f"{where}: point {i} = {_short(p)} is not an [x, y] pair of numbers")
        x, y = float(p[0]), float(p[1])
        if not (math.isfinite(x) and math.isfinite(y)) or x < 0 or y < 0:
            raise ConfigError(f"{where}: point {i} = {_short(p)} is outside any frame",
                              "frame pixels are finite and ≥ 0, from the top-left corner")
        points.append((x, y))
    return tuple(points)


def _labels(where: str, value: Any, key: str = "labels") -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v and "\0" not in v for v in value):
        example = '["person", "car"]' if key == "labels" else '["front", "garden"] (camera names)'
        raise ConfigError(f"{where}: {key} = {_short(value)} is not a list of names", f"e.g. {example}")
    return tuple(value)


def for_camera(zones: Iterable[Zone], lines: Iterable[Line], camera: str) -> tuple[tuple[Zone, ...], tuple[Line, ...]]:
    """The zones and lines drawn on ``camera``."""
    return tuple(z for z in zones if z.on(camera)), tuple(l for l in lines if l.on(camera))


def check_cameras(zones: Iterable[Zone], lines: Iterable[Line], cameras: Iterable[str]) -> None:
    """Every camera a zone or line names exists; a ConfigError names the first that does not."""
    known = set(cameras)
    for kind, item in [("zone", z) for z in zones] + [("line", l) for l in lines]:
        for name in item.cameras:
            if name not in known:
                raise ConfigError(f"{kind} {item.name!r} names the camera {name!r}, which is not one of "
                                  f"{', '.join(sorted(known)) or 'none'}", "use the [[cameras]] names (or the "
                                  "source's name for one source)")


def _show(p: Point) -> str:
    return f"[{p[0]:g}, {p[1]:g}]"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

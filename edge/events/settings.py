"""The events layer's settings: the ``[events]`` table, its ``[[events.zones]]`` and ``[[events.lines]]``.

    [events]
    enabled = true
    jsonl = "events.jsonl"
    snapshot_dir = "snapshots"

    [[events.zones]]
    name = "crossing"
    points = [[0, 150], [640, 150], [640, 272], [0, 272]]   # frame pixels, ≥ 3 corners in order
    inertia = 3                                            # frames to enter or to leave
    labels = ["person"]                                    # optional; empty: every label

    [[events.lines]]
    name = "kerb"
    points = [[0, 200], [640, 200]]   # A → B; "in" crosses from the left of A→B to its right
    labels = ["person"]

Every field has a help text (``metadata["help"]``, with ``choices``/``minimum``/``maximum``, the
same shape as :mod:`edge.config`, so ``edge.config.describe(EventsSettings, "events.")`` lists them).
The tracker's own settings are the nested ``[events.tracker]`` table (:func:`parse_tracker`).
This module imports nothing from :mod:`edge.config`, so that module can import this one.
"""

from __future__ import annotations

import dataclasses
import typing
from dataclasses import dataclass
from typing import Any

from edge.errors import ConfigError
from edge.fields import INT_LIMIT, check_value
from edge.fields import setting as _setting
from edge.events.geometry import check_names, parse_line, parse_zone

MAX_ZONES = 64
MAX_LINES = 64


@dataclass(frozen=True)
class EventsSettings:
    enabled: bool = _setting(False, "Track objects and publish events (new / update / end), zone counts, "
                                    "line crossings and snapshots.")
    jsonl: str = _setting("events.jsonl", "JSONL file of events (one line per new/update/end message, zone "
                                          "count and line crossing change); empty: none.")
    min_score: float = _setting(0.6, "A track becomes an event only once its top score reaches this; "
                                     "tracks that never do are flickers, never published.",
                                minimum=0.0, maximum=1.0)
    min_frames: int = _setting(3, "A track becomes an event only once it has been detected in this many "
                                  "frames.", minimum=1, maximum=10000)
    stationary_frames: int = _setting(50, "Frames a track must stay in place (IoU with the box where it "
                                          "stopped above stationary_iou) to be stationary.",
                                      minimum=1, maximum=1_000_000)
    stationary_iou: float = _setting(0.7, "IoU with the box where a track stopped above which it is still "
                                          "in place.", minimum=0.0, maximum=0.99)
    update_every: int = _setting(10, "A higher top score is published (update message, new snapshot) at "
                                     "most once per this many frames per track; zone and stationary "
                                     "changes are published at once.", minimum=1, maximum=100000)
    snapshot_dir: str = _setting("snapshots", "Directory of the best snapshot of each event (<id>.jpg with "
                                              "the box drawn, <id>-crop.jpg); empty: no snapshots.")
    snapshot_max_count: int = _setting(1000, "At most this many events' snapshots are kept (the oldest "
                                             "removed first); 0: no limit.", minimum=0, maximum=INT_LIMIT)
    snapshot_max_bytes: int = _setting(200_000_000, "At most this many bytes of snapshots are kept (the "
                                                    "oldest removed first); 0: no limit.",
                                       minimum=0, maximum=INT_LIMIT)
    snapshot_max_age_days: float = _setting(14.0, "Snapshots older than this many days are removed; 0: no "
                                                  "limit.", minimum=0.0, maximum=36500.0)
    jpeg_quality: int = _setting(85, "JPEG quality of the snapshots (1-100).", minimum=1, maximum=100)
    crop: bool = _setting(True, "Also save a crop around the box (<id>-crop.jpg).")
    zones: tuple = _setting((), "Zones: [[events.zones]] tables with name, points ([[x, y], …] frame "
                                "pixels, ≥ 3, not self-intersecting), inertia (frames to enter or leave, "
                                "default 3), labels (default: all).")
    lines: tuple = _setting((), "Counting lines: [[events.lines]] tables with name, points ([[xa, ya], "
                                "[xb, yb]]; \"in\" crosses from the left of A→B to its right on the "
                                "picture), labels (default: all).")
    tracker: Any = _setting(None, "The tracker's settings ([events.tracker] table: kind, min_hits, max_age, "
                                  "iou_threshold, high_score; see edge.events.tracker); None: its defaults.")


FIELDS = tuple(f.name for f in dataclasses.fields(EventsSettings))
_SCALARS = tuple(name for name in FIELDS if name not in ("zones", "lines", "tracker"))


def parse_events(table: Any, zones: Any = None, lines: Any = None) -> EventsSettings:
    """EventsSettings from the ``[events]`` table of a TOML file.

    Zones and lines are the table's ``zones`` and ``lines`` arrays (TOML ``[[events.zones]]``,
    ``[[events.lines]]``), or given apart as ``zones``/``lines`` (not both). Unknown keys, wrong
    types and values out of bounds are a ConfigError naming the key and what was expected. The
    ``tracker`` sub-table is handed to :func:`parse_tracker`.
    """
    if not isinstance(table, dict):
        raise ConfigError(f"[events] must be a table, got {_short(table)}")
    table = dict(table)
    unknown = sorted(set(table) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown key events.{unknown[0]}", f"valid keys: {', '.join(FIELDS)}")
    hints = typing.get_type_hints(EventsSettings)
    fields = {f.name: f for f in dataclasses.fields(EventsSettings)}
    values = {name: _check(fields[name], hints[name], table[name]) for name in _SCALARS if name in table}
    zone_tables = _array("zones", table.get("zones"), zones, MAX_ZONES)
    line_tables = _array("lines", table.get("lines"), lines, MAX_LINES)
    parsed_zones = tuple(parse_zone(z, i) for i, z in enumerate(zone_tables))
    parsed_lines = tuple(parse_line(l, i) for i, l in enumerate(line_tables))
    check_names(parsed_zones, parsed_lines)
    tracker = parse_tracker(table["tracker"]) if "tracker" in table else None
    return EventsSettings(**values, zones=parsed_zones, lines=parsed_lines, tracker=tracker)


def parse_tracker(table: Any) -> Any:
    """The ``[events.tracker]`` table as :class:`edge.events.tracker.TrackerSettings` (which checks
    its values); unknown keys are a ConfigError listing the valid ones."""
    from edge.events.tracker import TrackerSettings
    if not isinstance(table, dict):
        raise ConfigError(f"[events.tracker] must be a table, got {_short(table)}")
    valid = [f.name for f in dataclasses.fields(TrackerSettings)]
    unknown = sorted(set(table) - set(valid))
    if unknown:
        raise ConfigError(f"unknown key events.tracker.{unknown[0]}", f"valid keys: {', '.join(valid)}")
    return TrackerSettings(**table)


def _array(name: str, inside: Any, apart: Any, limit: int) -> list:
    if inside is not None and apart is not None:
        raise ConfigError(f"events.{name} is given twice (in [events] and apart)")
    value = inside if inside is not None else apart if apart is not None else []
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list):
        raise ConfigError(f"events.{name} = {_short(value)} is not an array of tables",
                          f"write [[events.{name}]] tables")
    if len(value) > limit:
        raise ConfigError(f"{len(value)} events.{name} given", f"at most {limit}")
    return value


def _check(f: dataclasses.Field, hint: Any, value: Any) -> Any:
    return check_value("events", f, hint, value)


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Zones and lines: parsing, static checks, frame checks, point-in-polygon and crossings."""

import pytest

from edge.errors import ConfigError
from edge.events.geometry import (Line, Zone, check_geometry, parse_line, parse_zone, reference_point,
                                  segments_intersect)
from edge.events.settings import EventsSettings, parse_events

SQUARE = [[100, 100], [200, 100], [200, 200], [100, 200]]


def test_zone_contains_by_ray_casting():
    zone = parse_zone({"name": "square", "points": SQUARE}, 0)
    assert zone.contains(150, 150)
    assert not zone.contains(50, 150) and not zone.contains(250, 150) and not zone.contains(150, 250)
    # a concave L: the notch is outside
    ell = parse_zone({"name": "ell", "points": [[0, 0], [100, 0], [100, 50], [50, 50], [50, 100], [0, 100]]}, 0)
    assert ell.contains(25, 75) and ell.contains(75, 25)
    assert not ell.contains(75, 75)


def test_points_on_the_edges_are_inside():
    zone = parse_zone({"name": "bottom", "points": [[0, 150], [640, 150], [640, 272], [0, 272]]}, 0)
    # a box touching the bottom of a 640x272 frame has its reference point on the frame's edge
    assert zone.contains(*reference_point((300, 100, 340, 272)))
    assert zone.contains(0, 200) and zone.contains(640, 150)
    assert not zone.contains(300, 272.5) and not zone.contains(641, 200)


def test_reference_point_is_the_bottom_centre():
    assert reference_point((10, 20, 30, 100)) == (20.0, 100.0)


def test_line_direction_convention():
    # A→B to the right along y = 100: its right-hand side on the picture (y down) is below it
    line = Line("kerb", (0.0, 100.0), (640.0, 100.0))
    assert line.side((50, 150)) == 1 and line.side((50, 50)) == -1 and line.side((50, 100)) == 0
    assert line.crossing((50, 50), (50, 150)) == "in"        # top to bottom: left of A→B to its right
    assert line.crossing((50, 150), (50, 50)) == "out"
    swapped = Line("kerb", (640.0, 100.0), (0.0, 100.0))
    assert swapped.crossing((50, 50), (50, 150)) == "out"


def test_crossing_must_pass_through_the_segment():
    line = Line("gate", (100.0, 100.0), (200.0, 100.0))
    assert line.crossing((150, 90), (150, 110)) == "in"
    assert line.crossing((250, 90), (250, 110)) is None       # beyond B: the line's extension
    assert line.crossing((50, 90), (50, 110)) is None         # before A
    assert line.crossing((150, 90), (150, 95)) is None        # same side
    assert line.crossing((150, 100), (150, 110)) is None      # from on the line: no side to come from
    assert line.crossing((90, 90), (210, 110)) == "in"        # diagonal through the middle


def test_segments_intersect_cases():
    assert segments_intersect((0, 0), (10, 10), (0, 10), (10, 0))
    assert not segments_intersect((0, 0), (10, 0), (0, 1), (10, 1))
    assert segments_intersect((0, 0), (10, 0), (10, 0), (10, 5))      # touching at an end
    assert segments_intersect((0, 0), (10, 0), (5, 0), (15, 0))       # collinear overlap
    assert not segments_intersect((0, 0), (10, 0), (11, 0), (15, 0))  # collinear apart


@pytest.mark.parametrize("points, fragment", [
    ([[0, 0], [10, 0]], "has 2 point(s)"),
    ([[0, 0], [10, 10], [10, 0], [0, 10]], "self-intersecting"),                # a bow tie
    ([[0, 0], [10, 0], [20, 0]], "no area"),
    ([[0, 0], [10, 0], [10, 0], [0, 10]], "repeats the point [10, 0]"),
    ([[0, 0], [10, 0], [5, 0], [5, 10]], "self-intersecting"),                  # folds back on an edge
    ([[0, 0], [20, 0], [20, 20], [10, 0], [0, 20]], "self-intersecting"),       # touches its own edge
    ([[0, 0], [10, "a"], [0, 10]], "point 1 = [10, 'a'] is not an [x, y] pair"),
    ([[0, 0], [10, -1], [0, 10]], "point 1 = [10, -1] is outside any frame"),
    ([[0, 0], [10, float("nan")], [0, 10]], "outside any frame"),
    ([[0, 0], [10, 0, 3], [0, 10]], "not an [x, y] pair"),
    ("0,0 10,0 0,10", "is not a list of [x, y] pairs"),
])
def test_bad_zone_points(points, fragment):
    with pytest.raises(ConfigError) as err:
        parse_zone({"name": "z", "points": points}, 0)
    assert fragment in str(err.value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("table, fragment", [
    ({"points": SQUARE}, "events.zones[0] has no name"),
    ({"name": "a b", "points": SQUARE}, "is not a name"),
    ({"name": "z", "points": SQUARE, "inertia": 0}, "inertia = 0 is not an integer from 1"),
    ({"name": "z", "points": SQUARE, "inertia": True}, "inertia = True"),
    ({"name": "z", "points": SQUARE, "labels": "person"}, "labels = 'person' is not a list of names"),
    ({"name": "z", "points": SQUARE, "colour": "red"}, "unknown key events.zones[0].colour"),
    ("zone", "events.zones[0] = 'zone' is not a table"),
])
def test_bad_zone_tables(table, fragment):
    with pytest.raises(ConfigError) as err:
        parse_zone(table, 0)
    assert fragment in str(err.value)


def test_bad_lines():
    with pytest.raises(ConfigError, match="has 3 point"):
        parse_line({"name": "l", "points": [[0, 0], [1, 1], [2, 2]]}, 0)
    with pytest.raises(ConfigError, match=r"the same point twice \[5, 5\]"):
        parse_line({"name": "l", "points": [[5, 5], [5, 5]]}, 0)
    with pytest.raises(ConfigError, match="unknown key events.lines.0..direction"):
        parse_line({"name": "l", "points": [[0, 0], [1, 1]], "direction": "in"}, 0)


def test_check_geometry_against_the_frame():
    zone = parse_zone({"name": "street", "points": [[0, 0], [640, 0], [640, 272]]}, 0)
    line = parse_line({"name": "kerb", "points": [[0, 200], [641, 200]]}, 0)
    check_geometry([zone], [], 640, 272)                   # on the border is inside
    with pytest.raises(ConfigError) as err:
        check_geometry([zone], [line], 640, 272)
    assert str(err.value).startswith("line 'kerb' has the point [641, 200] outside the 640x272 frame")
    with pytest.raises(ConfigError, match="zone 'street' has the point \\[640, 272\\] outside the 640x200 frame"):
        check_geometry([zone], [], 640, 200)


def test_parse_events_reads_the_toml_shape():
    import tomllib
    table = tomllib.loads("""
        [events]
        enabled = true
        min_score = 0.7
        snapshot_max_age_days = 2
        [[events.zones]]
        name = "street"
        points = [[0, 150], [640, 150], [640, 272], [0, 272]]
        inertia = 5
        labels = ["person"]
        [[events.lines]]
        name = "kerb"
        points = [[0, 200], [640, 200]]
    """)["events"]
    settings = parse_events(table)
    assert settings.enabled and settings.min_score == 0.7 and settings.snapshot_max_age_days == 2.0
    assert settings.zones == (Zone("street", ((0.0, 150.0), (640.0, 150.0), (640.0, 272.0), (0.0, 272.0)), 5,
                                   ("person",)),)
    assert settings.lines == (Line("kerb", (0.0, 200.0), (640.0, 200.0)),)
    assert parse_events({}) == EventsSettings()
    apart = parse_events({"enabled": True}, zones=table["zones"], lines=table["lines"])
    assert apart.zones == settings.zones and apart.lines == settings.lines


@pytest.mark.parametrize("table, fragment", [
    ({"min_scor": 0.5}, "unknown key events.min_scor (valid keys: enabled, jsonl, min_score"),
    ({"min_score": 1.5}, "events.min_score = 1.5 is above the maximum 1.0"),
    ({"min_score": "high"}, "events.min_score = 'high' is not a number"),
    ({"min_frames": 2.5}, "events.min_frames = 2.5 is not an integer"),
    ({"min_frames": 0}, "events.min_frames = 0 is below the minimum 1"),
    ({"enabled": "yes"}, "events.enabled = 'yes' is not a boolean"),
    ({"jpeg_quality": 101}, "events.jpeg_quality = 101 is above the maximum 100"),
    ({"snapshot_max_age_days": float("inf")}, "is not a finite number"),
    ({"zones": {"name": "z"}}, "events.zones = {'name': 'z'} is not an array of tables"),
    ({"zones": [{"name": "all", "points": SQUARE}]}, "a zone is named 'all'"),
    ({"zones": [{"name": "z", "points": SQUARE}, {"name": "z", "points": SQUARE}]}, "two zones are named 'z'"),
    ({"lines": [{"name": "l", "points": [[0, 0], [1, 1]]}] * 2}, "two lines are named 'l'"),
])
def test_parse_events_refuses(table, fragment):
    with pytest.raises(ConfigError) as err:
        parse_events(table)
    assert fragment in str(err.value)


def test_the_tracker_table_becomes_tracker_settings():
    from edge.events.tracker import TrackerSettings
    settings = parse_events({"tracker": {"min_hits": 5, "max_age": 2.5}})
    assert settings.tracker == TrackerSettings(min_hits=5, max_age=2.5)
    with pytest.raises(ConfigError, match=r"unknown key events.tracker.maxage \(valid keys: kind, min_hits"):
        parse_events({"tracker": {"maxage": 2}})
    with pytest.raises(ConfigError, match="tracker max_age -1 is invalid"):
        parse_events({"tracker": {"max_age": -1}})
    with pytest.raises(ConfigError, match=r"\[events.tracker\] must be a table"):
        parse_events({"tracker": 3})


def test_settings_have_help_texts_for_describe():
    from edge.config import describe
    rows = describe(EventsSettings, "events.")
    assert len(rows) == len(EventsSettings.__dataclass_fields__)
    assert all(help_text for _, _, help_text in rows)


def test_the_shipped_demo_config_parses_and_fits_the_sample_clip():
    import tomllib
    from pathlib import Path
    demo = tomllib.loads((Path(__file__).parents[2] / "examples" / "demo.toml").read_text())
    settings = parse_events(demo["events"])
    assert settings.enabled and [z.name for z in settings.zones] == ["kerb"]
    assert [l.name for l in settings.lines] == ["middle"] and settings.tracker.max_age == 1.5
    check_geometry(settings.zones, settings.lines, 640, 272)
    assert settings.lines[0].crossing((300, 270), (340, 270)) == "in"      # rightwards

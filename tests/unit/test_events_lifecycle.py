"""The event lifecycle (new → update… → end), zones with inertia, stationary, line crossings, counts,
and the EventsSink around it.

The tracker here is a scripted fake (:class:`ScriptedTracker`): it returns the track states each test
lays out frame by frame, so each rule of the lifecycle is tested on its own. The real tracker is
exercised in ``test_real_tracker_through_the_sink`` below and in tests/integration/test_events_clip.py.
"""

from __future__ import annotations

import dataclasses
import json
import re

import cv2
import numpy as np
import pytest

from edge.capture.base import Frame
from edge.errors import ConfigError
from edge.events.geometry import Line, Zone
from edge.events.lifecycle import EventLifecycle
from edge.events.settings import EventsSettings
from edge.events.sink import EventsSink
from edge.events.types import TrackedObject, TrackUpdate
from edge.results import FrameResult, Timings
from edge.vision.decode import Detection

FRIGATE_KEYS = {"id", "camera", "frame_time", "label", "sub_label", "top_score", "score", "false_positive",
                "start_time", "end_time", "box", "area", "ratio", "region", "current_zones", "entered_zones",
                "thumbnail", "has_snapshot", "has_clip", "active", "stationary", "motionless_count",
                "position_changes", "attributes", "snapshot"}
W, H = 640, 272
IMAGE = np.full((H, W, 3), 90, np.uint8)
# the lower half of the frame, and a horizontal line across it at y = 200 ("in" is downwards)
STREET = Zone("street", ((0.0, 150.0), (640.0, 150.0), (640.0, 272.0), (0.0, 272.0)), inertia=3)
KERB = Line("kerb", (0.0, 200.0), (640.0, 200.0))


class Recorder:
    """An EventListener that keeps everything it is given."""

    def __init__(self):
        self.messages, self.snapshots, self.zone_counts, self.line_counts = [], [], [], []

    def event(self, message, snapshot):
        self.messages.append(json.loads(json.dumps(message)))      # as a JSON consumer would see it
        self.snapshots.append(snapshot)

    def counts(self, camera, zone, counts):
        self.zone_counts.append((camera, zone, counts))

    def crossings(self, camera, line, counts):
        self.line_counts.append((camera, line, counts))

    def types(self, event_id=None):
        return [m["type"] for m in self.messages if event_id is None or m["after"]["id"] == event_id]

    def last_counts(self, zone):
        return [c for _, z, c in self.zone_counts if z == zone][-1]


def frame(i: int, t0: float = 1_700_000_000.0) -> Frame:
    return Frame(IMAGE, i, t0 + i * 0.04, 0)


def track(tid, box, score=0.9, hits=1, age=1, detection=0, confirmed=True, label="person"):
    return TrackedObject(tid, label, tuple(float(v) for v in box), score if detection is not None else 0.0,
                         detection, hits, age, confirmed)


def box_at(x, y_bottom, w=40, h=100):
    """A box whose bottom centre is (x, y_bottom)."""
    return (x - w / 2, y_bottom - h, x + w / 2, y_bottom)


def settings(**kw):
    base = dict(enabled=True, min_score=0.6, min_frames=3, stationary_frames=10, stationary_iou=0.8,
                update_every=5, snapshot_dir="", jsonl="", zones=(STREET,), lines=(KERB,))
    base.update(kw)
    return EventsSettings(**base)


class Walk:
    """Drives an EventLifecycle with one or more scripted tracks, one frame at a time."""

    def __init__(self, lifecycle):
        self.lc = lifecycle
        self.i = 0
        self.hits = {}
        self.ages = {}

    def step(self, *tracks, ended=()):
        """``tracks``: (id, box, score) or (id, box, None) for a frame where the track coasts."""
        active = []
        for tid, box, score in tracks:
            self.ages[tid] = self.ages.get(tid, 0) + 1
            if score is not None:
                self.hits[tid] = self.hits.get(tid, 0) + 1
            hits = self.hits.get(tid, 0)
            active.append(track(tid, box, score or 0.0, hits, self.ages[tid], None if score is None else 0,
                                confirmed=hits >= 2))
        gone = [track(tid, box, 0.0, self.hits.get(tid, 0), self.ages.get(tid, 0), None) for tid, box in ended]
        self.lc.step(TrackUpdate(tuple(active), tuple(gone)), frame(self.i))
        self.i += 1


def make(rec=None, **kw):
    rec = rec or Recorder()
    return EventLifecycle(settings(**kw), "porch", [rec]), rec


def test_new_updates_end_in_frigate_format():
    lc, rec = make()
    walk = Walk(lc)
    box = box_at(100, 120)                       # above the street zone
    for _ in range(4):
        walk.step((1, box, 0.8))
    walk.step(ended=[(1, box)])
    assert rec.types() == ["new", "end"]
    new, end = rec.messages
    assert set(new) == {"type", "before", "after"}
    assert set(new["after"]) == FRIGATE_KEYS and new["before"] == new["after"]
    after = new["after"]
    assert re.fullmatch(r"1700000000\.000000-[a-z0-9]{6}", after["id"])
    assert after["camera"] == "porch" and after["label"] == "person" and after["sub_label"] is None
    assert after["box"] == [80, 20, 120, 120] and after["area"] == 4000 and after["ratio"] == 0.4
    assert after["region"] == after["box"] and after["end_time"] is None and after["false_positive"] is False
    assert after["frame_time"] == pytest.approx(1_700_000_000.08)       # confirmed at the third frame
    assert after["snapshot"]["score"] == 0.8 and after["snapshot"]["box"] == after["box"]
    assert end["before"] == after                            # the last message's "after"
    assert end["after"]["id"] == after["id"]
    assert end["after"]["end_time"] == pytest.approx(1_700_000_000.12)  # last detected at frame 3
    assert lc.open_events == [] and lc.published == {"new": 1, "update": 0, "end": 1}


def test_flickers_are_suppressed():
    lc, rec = make()
    walk = Walk(lc)
    for _ in range(6):
        walk.step((1, box_at(100, 120), 0.55))              # never reaches min_score 0.6
    walk.step((2, box_at(300, 120), 0.95))                  # one strong frame, then lost
    walk.step(ended=[(1, box_at(100, 120)), (2, box_at(300, 120))])
    assert rec.messages == [] and lc.suppressed == 2


def test_a_track_lost_before_confirmation_leaves_no_crossing():
    lc, rec = make(min_frames=5)
    walk = Walk(lc)
    walk.step((1, box_at(100, 190), 0.9))
    walk.step((1, box_at(100, 210), 0.9))                   # crosses the kerb, not yet an event
    walk.step(ended=[(1, box_at(100, 210))])
    assert lc.crossings["kerb"] == {} and rec.messages == []


def test_zone_inertia_and_entered_zones():
    lc, rec = make()
    walk = Walk(lc)
    above, inside = box_at(100, 120), box_at(100, 180)
    for _ in range(3):
        walk.step((1, above, 0.9))                          # new at frame 3, outside
    walk.step((1, inside, 0.9))                             # 1 and 2 frames inside: not yet
    walk.step((1, inside, 0.9))
    walk.step((1, above, 0.9))                              # a blip out resets the count
    assert rec.types() == ["new"]
    for _ in range(3):
        walk.step((1, inside, 0.9))
    assert rec.types() == ["new", "update"]
    update = rec.messages[-1]
    assert update["before"]["current_zones"] == [] and update["after"]["current_zones"] == ["street"]
    assert update["after"]["entered_zones"] == ["street"]
    assert rec.last_counts("street") == {"person": 1} and rec.last_counts("all") == {"person": 1}
    for _ in range(2):
        walk.step((1, above, 0.9))
    assert rec.messages[-1]["after"]["current_zones"] == ["street"]      # 2 frames out: still in
    walk.step((1, above, 0.9))
    left = rec.messages[-1]["after"]
    assert left["current_zones"] == [] and left["entered_zones"] == ["street"]
    assert rec.last_counts("street") == {"person": 0}


def test_a_coasting_track_neither_enters_nor_crosses():
    lc, rec = make()
    walk = Walk(lc)
    for _ in range(3):
        walk.step((1, box_at(100, 120), 0.9))
    for _ in range(5):
        walk.step((1, box_at(100, 230), None))              # predicted into the zone, across the kerb
    assert rec.types() == ["new"] and lc.crossings["kerb"] == {}


def test_a_track_predicted_out_of_the_picture_ends_there():
    lc, rec = make()
    walk = Walk(lc)
    for x in (560, 600, 630):
        walk.step((1, box_at(x, 120), 0.9))
    walk.step((1, box_at(650, 120), None))                  # coasting, still overlapping the frame
    assert rec.types() == ["new"]
    walk.step((1, box_at(700, 120), None))                  # wholly right of a 640-wide frame
    assert rec.types() == ["new", "end"]
    end = rec.messages[-1]["after"]
    assert end["box"] == [610, 20, 650, 120]                # the last detected box, not the prediction
    assert end["end_time"] == pytest.approx(1_700_000_000.08)
    walk.step((1, box_at(740, 120), None))                  # the tracker still coasts it: nothing more
    assert rec.types() == ["new", "end"] and lc.open_events == []
    for _ in range(3):
        walk.step((1, box_at(620, 120), 0.9))               # detected again: a new event
    assert rec.types() == ["new", "end", "new"] and rec.messages[-1]["after"]["id"] != end["id"]


def test_zone_label_filter():
    cars = Zone("parking", STREET.points, inertia=1, labels=("car",))
    lc, rec = make(zones=(cars,))
    walk = Walk(lc)
    for _ in range(4):
        walk.step((1, box_at(100, 180), 0.9))
    assert rec.messages[-1]["after"]["current_zones"] == []
    assert rec.last_counts("parking") == {"car": 0}


def test_stationary_and_moving_again():
    lc, rec = make(stationary_frames=10)
    walk = Walk(lc)
    still = box_at(100, 120)
    for _ in range(11):
        walk.step((1, still, 0.9))
    assert rec.types() == ["new", "update"]
    became = rec.messages[-1]["after"]
    assert became["stationary"] is True and became["active"] is False and became["motionless_count"] == 10
    walk.step((1, box_at(300, 120), 0.9))                   # moved away
    moved = rec.messages[-1]["after"]
    assert moved["stationary"] is False and moved["active"] is True and moved["position_changes"] == 1
    assert moved["motionless_count"] == 0


def test_line_crossings_counted_per_label_and_direction():
    lc, rec = make(lines=(KERB, Line("gate", (300.0, 0.0), (300.0, 272.0), ("car",))))
    walk = Walk(lc)
    walk.step((1, box_at(100, 190), 0.9), (2, box_at(500, 230), 0.9))
    walk.step((1, box_at(100, 210), 0.9), (2, box_at(500, 230), 0.9))   # 1 crosses down before confirmation
    walk.step((1, box_at(100, 210), 0.9), (2, box_at(500, 230), 0.9))   # both become events
    assert lc.crossings["kerb"] == {"person": {"in": 1, "out": 0}}
    walk.step((1, box_at(100, 200), 0.9), (2, box_at(500, 230), 0.9))   # 1 on the line: no side
    walk.step((1, box_at(100, 180), 0.9), (2, box_at(500, 180), 0.9))   # both up: out
    walk.step((1, box_at(100, 180), 0.9), (2, box_at(200, 180), 0.9))   # 2 crosses x=300 (cars only)
    assert lc.crossings["kerb"] == {"person": {"in": 1, "out": 2}}
    assert lc.crossings["gate"] == {"car": {"in": 0, "out": 0}}
    published = [c for _, line, c in rec.line_counts if line == "kerb"]
    assert published == [{}, {"person": {"in": 1, "out": 0}}, {"person": {"in": 1, "out": 2}}]


def test_counts_per_zone_and_label_go_back_to_zero():
    lc, rec = make()
    walk = Walk(lc)
    for _ in range(6):
        walk.step((1, box_at(100, 230), 0.9), (2, box_at(300, 230), 0.9), (3, box_at(500, 100), 0.8))
    assert lc.counts == {"all": {"person": 3}, "street": {"person": 2}}
    walk.step((3, box_at(500, 100), 0.8), ended=[(1, box_at(100, 230)), (2, box_at(300, 230))])
    assert lc.counts == {"all": {"person": 1}, "street": {"person": 0}}
    assert [c for _, z, c in rec.zone_counts if z == "street"] == [{}, {"person": 2}, {"person": 0}]


def test_score_rises_are_published_at_most_every_update_every_frames():
    lc, rec = make(update_every=5, stationary_frames=1000)
    lc.encode_snapshots = True
    walk = Walk(lc)
    for i in range(20):
        walk.step((1, box_at(100, 120), 0.6 + i * 0.01))    # a higher score every frame
    walk.step(ended=[(1, box_at(100, 120))])
    types = rec.types()
    assert types[0] == "new" and types[-1] == "end"
    updates = [m for m in rec.messages if m["type"] == "update"]
    times = [m["after"]["frame_time"] for m in updates]
    assert len(updates) == 3 and all(b - a >= 5 * 0.04 - 1e-6 for a, b in zip(times, times[1:]))
    assert all(m["after"]["top_score"] > m["before"]["top_score"] for m in updates)
    # the end carries the true best (frame 19), whatever the rate limit held back
    assert rec.messages[-1]["after"]["snapshot"]["score"] == 0.79
    jpegs = [s for s in rec.snapshots if s is not None]
    assert len(jpegs) == 5                                  # new, 3 updates, end
    picture = cv2.imdecode(np.frombuffer(jpegs[-1], np.uint8), cv2.IMREAD_COLOR)
    assert picture.shape == (H, W, 3)
    assert (picture[120, 80] != 90).any()                   # the box is drawn at its bottom-left corner


def test_drain_ends_every_open_event_even_those_the_tracker_forgot():
    lc, rec = make()
    walk = Walk(lc)
    for _ in range(4):
        walk.step((1, box_at(100, 120), 0.9), (2, box_at(300, 120), 0.9), (3, box_at(500, 120), 0.9))
    assert len(lc.open_events) == 3
    lc.drain([track(1, box_at(100, 120), 0.0, 4, 4, None)])   # the tracker returned only one of them
    assert lc.open_events == []
    ids = {m["after"]["id"] for m in rec.messages}
    assert len(ids) == 3 and all(rec.types(i) == ["new", "end"] for i in ids)
    assert rec.last_counts("all") == {"person": 0}


def test_a_failing_listener_does_not_stop_the_others(caplog):
    class Broken:
        def event(self, message, snapshot):
            raise RuntimeError("broker gone")

        def counts(self, *a):
            raise RuntimeError("broker gone")

        def crossings(self, *a):
            raise RuntimeError("broker gone")

    rec, errors = Recorder(), []
    lc = EventLifecycle(settings(), "porch", [Broken(), rec], errors=errors.append)
    walk = Walk(lc)
    for _ in range(4):
        walk.step((1, box_at(100, 120), 0.9))
    assert rec.types() == ["new"] and errors and set(errors) == {"events_listener"}
    assert "RuntimeError: broker gone" in caplog.text


# --- the sink -----------------------------------------------------------------------------------

class ScriptedTracker:
    """A fake tracker: hands out the scripted updates in order; drain() ends what is still active."""

    def __init__(self, script):
        self.script = list(script)
        self.calls = []
        self.active = ()

    def update(self, detections, timestamp, *, frame_size=None):
        self.calls.append((tuple(detections), timestamp))
        update = self.script.pop(0) if self.script else TrackUpdate(self.active, ())
        self.active = update.active
        return update

    def drain(self):
        active, self.active = self.active, ()
        return active


def result(i, camera="", size=(W, H)):
    image = np.zeros((size[1], size[0], 3), np.uint8)
    det = (Detection("person", 0, 0.9, box_at(100, 120)),)
    res = FrameResult(Frame(image, i, 1_700_000_000.0 + i, 0), det, Timings(0, 0, 0, 0, 0), "cpu")
    if camera:
        res = dataclasses.replace(res, camera=camera)
    return res


def confirmed_script(n, tid=1):
    return [TrackUpdate((track(tid, box_at(100, 120), 0.9, k + 1, k + 1),), ()) for k in range(n)]


def test_sink_writes_the_events_file_and_drains_on_close(tmp_path):
    rec = Recorder()
    trackers = []

    def factory():
        trackers.append(ScriptedTracker(confirmed_script(5)))
        return trackers[-1]

    sink = EventsSink(settings(jsonl=str(tmp_path / "events.jsonl"), snapshot_dir=str(tmp_path / "snaps")),
                      factory, "bikes.mp4", listeners=[rec])
    for i in range(5):
        sink.publish(result(i))
    assert len(sink.open_events) == 1
    assert trackers[0].calls[0][1] == 1_700_000_000.0 and len(trackers[0].calls[0][0]) == 1
    sink.close()
    sink.close()                                             # idempotent
    assert sink.open_events == []
    lines = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
    events = [line for line in lines if line["type"] in ("new", "update", "end")]
    assert [e["type"] for e in events] == ["new", "end"] == rec.types()
    assert events[0]["after"]["camera"] == "bikes.mp4" and events[0]["after"]["has_snapshot"] is True
    assert {"counts", "crossings"} <= {line["type"] for line in lines}
    event_id = events[0]["after"]["id"]
    assert sink.snapshots.read(event_id)[:2] == b"\xff\xd8"
    assert sink.snapshots.read(event_id, crop=True)[:2] == b"\xff\xd8"


def test_sink_keeps_one_tracker_per_camera(tmp_path):
    made = []

    def factory():
        made.append(ScriptedTracker(confirmed_script(3)))
        return made[-1]

    rec = Recorder()
    sink = EventsSink(settings(), factory, "source", listeners=[rec], snapshots=False)
    for i in range(3):
        sink.publish(result(i, camera="front"))
        sink.publish(result(i, camera="back"))
    sink.close()
    assert len(made) == 2
    assert sorted({m["after"]["camera"] for m in rec.messages}) == ["back", "front"]
    assert len({m["after"]["id"] for m in rec.messages}) == 2 and rec.types().count("end") == 2


def test_sink_checks_geometry_on_the_first_frame():
    sink = EventsSink(settings(), lambda: ScriptedTracker([]), "tiny.mp4", snapshots=False)
    with pytest.raises(ConfigError, match="zone 'street' has the point \\[640, 150\\] outside the 320x240 frame"):
        sink.publish(result(0, size=(320, 240)))


def test_sink_refuses_an_unwritable_events_file(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError) as err:
        EventsSink(settings(jsonl=str(blocker / "events.jsonl")), lambda: ScriptedTracker([]), "x", snapshots=False)
    assert "cannot write events to" in str(err.value) and "events.jsonl" in str(err.value)


def test_real_tracker_through_the_sink(tmp_path):
    """Detections of one person walking down across the kerb, through edge.events.tracker."""
    tracker_module = pytest.importorskip("edge.events.tracker")
    rec = Recorder()
    sink = EventsSink(settings(), lambda: tracker_module.make_tracker(), "walk", listeners=[rec], snapshots=False)
    for i in range(30):
        y = 120 + i * 4                                      # bottom centre from y=120 to y=236
        det = (Detection("person", 0, 0.9, box_at(320, y)),)
        image = np.zeros((H, W, 3), np.uint8)
        sink.publish(FrameResult(Frame(image, i, 1_700_000_000.0 + i * 0.04, 0), det, Timings(0, 0, 0, 0, 0), "cpu"))
    sink.close()
    ids = {m["after"]["id"] for m in rec.messages}
    assert len(ids) == 1
    (event_id,) = ids
    types = rec.types(event_id)
    assert types[0] == "new" and types[-1] == "end" and types.count("new") == 1 and types.count("end") == 1
    assert rec.messages[-1]["after"]["entered_zones"] == ["street"]
    assert sink.cameras["walk"][1].crossings["kerb"] == {"person": {"in": 1, "out": 0}}


def test_zones_and_lines_apply_to_the_cameras_they_name(tmp_path):
    """`cameras = [...]` on a zone or line: drawn on those cameras only; the others' events never
    enter it and their frame size is not checked against it."""
    from edge.events.geometry import for_camera, parse_line, parse_zone

    gate = parse_zone({"name": "gate", "points": [[0, 0], [100, 0], [100, 100]], "cameras": ["front"]}, 0)
    yard = parse_zone({"name": "yard", "points": [[0, 0], [10, 0], [10, 10]]}, 1)
    kerb = parse_line({"name": "kerb", "points": [[0, 5], [10, 5]], "cameras": ["back"]}, 0)
    assert for_camera([gate, yard], [kerb], "front") == ((gate, yard), ())
    assert for_camera([gate, yard], [kerb], "back") == ((yard,), (kerb,))
    with pytest.raises(ConfigError, match="cameras = 'front' is not a list of names"):
        parse_zone({"name": "z", "points": [[0, 0], [1, 0], [1, 1]], "cameras": "front"}, 0)

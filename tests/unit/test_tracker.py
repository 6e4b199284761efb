"""The events layer's tracker (edge.events.tracker): behaviour on hand-made frames, settings
validation, and accuracy on the synthetic sequences of tests/mot_synth.py scored with motmetrics."""

from __future__ import annotations

import dataclasses

import pytest

from edge.errors import ConfigError
from edge.events.tracker import FIELD_HELP, TrackerSettings, make_tracker
from edge.vision.decode import Detection
from tests import mot_synth

DT = 0.04   # 25 fps


def person(x: float, y: float = 100.0, score: float = 0.9, w: float = 40.0, h: float = 100.0) -> Detection:
    return Detection("person", 0, score, (x, y, x + w, y + h))


def car(x: float, y: float = 100.0, score: float = 0.9) -> Detection:
    return Detection("car", 2, score, (x, y, x + 40.0, y + 100.0))


def feed(tracker, frames, start: float = 0.0):
    """Update ``tracker`` with each frame's detections at 25 fps; the updates."""
    return [tracker.update(dets, start + i * DT) for i, dets in enumerate(frames)]


def test_a_track_is_tentative_until_min_hits_then_confirmed():
    tracker = make_tracker(TrackerSettings(min_hits=3))
    updates = feed(tracker, [[person(100 + 2 * i)] for i in range(4)])
    assert [u.active[0].confirmed for u in updates] == [False, False, True, True]
    assert [u.active[0].hits for u in updates] == [1, 2, 3, 4]
    assert [u.active[0].age for u in updates] == [1, 2, 3, 4]
    assert [u.active[0].detection for u in updates] == [0, 0, 0, 0]
    assert len({u.active[0].id for u in updates}) == 1


def test_min_hits_of_one_confirms_at_once():
    update = make_tracker(TrackerSettings(min_hits=1)).update([person(10)], 0.0)
    assert update.active[0].confirmed


def test_ids_are_stable_while_objects_move_and_detections_are_shuffled():
    tracker = make_tracker()
    seen = {}
    for i in range(30):
        dets = [person(50 + 3 * i, y=100), person(400 - 3 * i, y=300), car(700, y=500 + i)]
        if i % 2:
            dets.reverse()
        update = tracker.update(dets, i * DT)
        for obj in update.active:
            key = dets[obj.detection].box[1] // 200   # which object: its lane
            assert seen.setdefault(key, obj.id) == obj.id
            assert obj.box == dets[obj.detection].box
    assert len(seen) == 3 and len(set(seen.values())) == 3


def test_tracks_are_per_class():
    tracker = make_tracker(TrackerSettings(min_hits=1))
    first = tracker.update([person(100)], 0.0)
    second = tracker.update([car(100)], DT)   # the same place, another class
    assert second.active[-1].label == "car" and second.active[-1].id != first.active[0].id
    person_track = next(o for o in second.active if o.label == "person")
    assert person_track.detection is None and person_track.score == 0.0   # coasting, not taking the car


def test_a_confirmed_track_coasts_through_a_short_gap_on_its_predicted_box():
    tracker = make_tracker(TrackerSettings(min_hits=3, max_age=0.5))
    frames = [[person(100 + 4 * i)] for i in range(10)] + [[]] * 5 + [[person(100 + 4 * i)] for i in range(15, 20)]
    updates = feed(tracker, frames)
    ids = {o.id for u in updates for o in u.active}
    assert len(ids) == 1 and not any(u.ended for u in updates)
    coasting = updates[12].active[0]
    assert coasting.detection is None and coasting.hits == 10 and coasting.age == 13
    assert coasting.box[0] == pytest.approx(100 + 4 * 12, abs=3)   # moved on at the track's velocity


def test_a_box_cut_by_the_frame_edge_is_followed_by_its_uncut_side():
    """An object entering at the left edge: its box grows from x = 0, its centre moves at half its
    speed; with the frame's size the track follows the right side, which moves with the object."""
    def entering(i):   # a 120-pixel wide object, its right side at 20 + 4 i (100 px/s), cut at x = 0
        return [person(0.0, w=20.0 + 4 * i)] if i < 15 else []

    boxes = {}
    for size in (None, (640, 480)):
        tracker = make_tracker(TrackerSettings(min_hits=1))
        updates = [tracker.update(entering(i), i * DT, frame_size=size) for i in range(18)]
        boxes[size] = updates[-1].active[0].box   # coasting 3 frames after the last detection
    assert boxes[(640, 480)][2] == pytest.approx(20 + 4 * 17, abs=2)
    assert abs(boxes[None][2] - (20 + 4 * 17)) > 5   # the centre's filter lags behind


def test_a_confirmed_track_ends_after_max_age_seconds_without_a_match():
    tracker = make_tracker(TrackerSettings(min_hits=1, max_age=0.2))
    tracker.update([person(100)], 0.0)
    assert tracker.update([], 0.2).ended == ()            # 0.2 s unseen: still alive
    update = tracker.update([], 0.25)
    assert update.active == () and len(update.ended) == 1
    assert update.ended[0].box == person(100).box and update.ended[0].detection is None
    # max_age is in seconds, whatever the frame rate: one late frame ends it as many fast ones do
    slow = make_tracker(TrackerSettings(min_hits=1, max_age=0.2))
    slow.update([person(100)], 0.0)
    assert len(slow.update([], 0.5).ended) == 1


def test_a_tentative_track_ends_at_its_first_miss():
    tracker = make_tracker(TrackerSettings(min_hits=3))
    tracker.update([person(100)], 0.0)
    update = tracker.update([], DT)
    assert update.active == () and [o.confirmed for o in update.ended] == [False]


def test_weak_detections_keep_tracks_alive_but_start_none():
    tracker = make_tracker(TrackerSettings(min_hits=1, high_score=0.5))
    assert tracker.update([person(100, score=0.3)], 0.0).active == ()   # too weak to start a track
    started = tracker.update([person(100, score=0.8)], DT).active[0]
    kept = tracker.update([person(102, score=0.3)], 2 * DT).active
    assert len(kept) == 1 and kept[0].id == started.id and kept[0].detection == 0 and kept[0].score == 0.3


def test_ids_are_never_reused():
    tracker = make_tracker(TrackerSettings(min_hits=1, max_age=0.1))
    ids = []
    for i in range(5):
        ids += [o.id for o in tracker.update([person(100), car(500)], i * 1.0).active]
    assert len(ids) == len(set(ids)) == 10


def test_drain_ends_every_track_and_empties_the_tracker():
    tracker = make_tracker(TrackerSettings(min_hits=2))
    feed(tracker, [[person(100), car(500)], [person(102), car(502), person(900)]])
    ended = tracker.drain()
    assert sorted((o.label, o.confirmed) for o in ended) == [("car", True), ("person", False), ("person", True)]
    assert all(o.detection is None for o in ended)
    assert tracker.drain() == ()
    assert tracker.update([], 1.0) == tracker.update([], 1.04) and tracker.update([], 1.1).active == ()


@pytest.mark.parametrize("field, value, message", [
    ("kind", "sort", "tracker kind 'sort' is unknown: expected one of bytetrack"),
    ("min_hits", 0, "tracker min_hits 0 is invalid: expected a whole number >= 1"),
    ("min_hits", 2.5, "tracker min_hits 2.5 is invalid"),
    ("min_hits", True, "tracker min_hits True is invalid"),
    ("max_age", 0, "tracker max_age 0 is invalid: expected a number of seconds > 0"),
    ("max_age", float("inf"), "tracker max_age inf is invalid"),
    ("max_age", "1s", "tracker max_age '1s' is invalid"),
    ("iou_threshold", 1.0, "tracker iou_threshold 1.0 is invalid: expected a number > 0 and < 1"),
    ("high_score", -0.1, "tracker high_score -0.1 is invalid: expected a number from 0 to 1"),
])
def test_settings_validation_names_the_bad_value(field, value, message):
    with pytest.raises(ConfigError) as error:
        TrackerSettings(**{field: value})
    assert str(error.value).startswith(message)
    assert "\n" not in str(error.value)


def test_every_setting_has_a_one_line_help():
    names = [f.name for f in dataclasses.fields(TrackerSettings)]
    assert list(FIELD_HELP) == names
    assert all(text and "\n" not in text for text in FIELD_HELP.values())


def test_the_synthetic_sequences_are_deterministic_and_what_they_say():
    a, b = mot_synth.generate("occlusions", seed=3, seconds=4), mot_synth.generate("occlusions", seed=3, seconds=4)
    assert a == b and a != mot_synth.generate("occlusions", seed=4, seconds=4)
    assert len(a.frames) == 100 and a.frames[1].timestamp == pytest.approx(DT)
    for frame in a.frames:   # nothing visible or detected behind the band
        assert not any(mot_synth.BAND[0] <= (b[0] + b[2]) / 2 <= mot_synth.BAND[1] for _, _, b in frame.truth)
    many = mot_synth.generate("many", seed=0, seconds=4)
    assert min(len(f.truth) for f in many.frames) >= 15
    assert {lbl for f in many.frames for _, lbl, _ in f.truth} == {"person", "bicycle", "car"}
    truth = sum(len(f.truth) for f in many.frames)
    detected = sum(1 for f in many.frames for d in f.detections)
    assert 0.8 * truth < detected < truth   # ~10 % missed, a few false positives


def test_evaluate_scores_a_perfect_and_a_swapping_tracker():
    """The scoring itself: ids that follow the truth score 1.0; ids swapped halfway cost switches."""
    sequence = mot_synth.generate("crossings", seed=1, seconds=6, miss=0.0, noise=0.0, false_positives=0)

    class Oracle:   # reports the truth as confirmed tracks, optionally with two ids swapped at 3 s
        def __init__(self, swap):
            self.swap = swap

        def update(self, detections, timestamp, *, frame_size=None):
            from edge.events.types import TrackedObject, TrackUpdate
            frame = next(f for f in sequence.frames if f.timestamp == timestamp)
            objs = []
            for oid, label, box in frame.truth:
                i = next(i for i, d in enumerate(detections) if d.box == box)
                if self.swap and timestamp >= 3.0 and oid in (1, 2):
                    oid = 3 - oid
                objs.append(TrackedObject(oid, label, box, 0.9, i, 1, 1, True))
            return TrackUpdate(tuple(objs), ())

    perfect = mot_synth.evaluate(Oracle(False), sequence)
    assert (perfect.mota, perfect.idf1, perfect.switches) == (1.0, 1.0, 0)
    swapped = mot_synth.evaluate(Oracle(True), sequence)
    assert swapped.switches == 2 and swapped.idf1 < 1.0


# Issue 16's goal is <= 1 ID switch per 100 ground-truth tracks; the tracker makes 0.6 / 0.0 / 1.7
# (many / crossings / occlusions: 1, 0 and 2 switches) on these sequences (measured by
# scripts/bench_tracker.py, which fails on the goal; the sequences are seeded, so the figures are
# exact), so this test guards against regressions at the measured level.
SWITCHES_PER_100 = 1.7


@pytest.mark.parametrize("scenario", mot_synth.SCENARIOS)
def test_accuracy_on_synthetic_sequences(scenario):
    sequence = mot_synth.generate(scenario, seed=0)
    scores = mot_synth.evaluate(make_tracker(), sequence)
    print(f"{scenario}: MOTA {scores.mota:.3f} IDF1 {scores.idf1:.3f} ID switches {scores.switches} "
          f"of {scores.truth_tracks} tracks")
    assert scores.idf1 >= 0.90
    assert scores.switches_per_100 <= SWITCHES_PER_100, f"{scores.switches} ID switches in {scores.truth_tracks} tracks"

"""Event metrics: the listener's counts, crossings, events and durations as Prometheus families, read
back through prometheus_client's own exposition and parser, and scraped over HTTP from a real
PrometheusExporter."""

import math
import threading
import urllib.request

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from edge.events.metrics import EventMetrics
from edge.telemetry.prometheus import PrometheusExporter
from edge.telemetry.stats import PipelineStats


def message(kind, camera="front", label="person", start=100.0, end=None, id="1-abc"):
    after = {"id": id, "camera": camera, "label": label, "start_time": start, "end_time": end,
             "current_zones": [], "entered_zones": [], "score": 0.8, "top_score": 0.9}
    return {"type": kind, "before": dict(after), "after": after}


def samples(registry) -> dict[tuple, float]:
    """Every sample of the exposition: (name, sorted label items) → value."""
    text = generate_latest(registry).decode()
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text) for s in family.samples}


@pytest.fixture()
def metrics():
    stats = PipelineStats()
    m = EventMetrics(stats)
    registry = CollectorRegistry(auto_describe=True)
    assert m.register(registry) is m
    return m, registry, stats


def test_counts_crossings_events_and_durations(metrics):
    m, registry, stats = metrics
    m.counts("front", "all", {"person": 2, "car": 0})
    m.counts("front", "porch", {"person": 1})
    m.counts("front", "porch", {"person": 0})
    m.crossings("front", "gate", {"person": {"in": 3, "out": 1}})
    m.event(message("new"), b"\xff\xd8jpeg")
    m.event(message("update"), None)
    m.event(message("update"), None)
    m.event(message("end", end=103.5), None)
    m.event(message("new", label="car", id="2"), None)
    m.event(message("end", label="car", id="2", start=10.0, end=10.0 + 700), None)
    got = samples(registry)
    zone = "edge_zone_objects"
    assert got[(zone, (("camera", "front"), ("label", "person"), ("zone", "all")))] == 2
    assert got[(zone, (("camera", "front"), ("label", "car"), ("zone", "all")))] == 0
    assert got[(zone, (("camera", "front"), ("label", "person"), ("zone", "porch")))] == 0
    assert got[("edge_line_crossings_total", (("camera", "front"), ("direction", "in"), ("label", "person"),
                                              ("line", "gate")))] == 3
    assert got[("edge_line_crossings_total", (("camera", "front"), ("direction", "out"), ("label", "person"),
                                              ("line", "gate")))] == 1
    person = (("camera", "front"), ("label", "person"))
    assert [got[("edge_events_total", (*person, ("type", t)))] for t in ("new", "update", "end")] == [1, 2, 1]
    assert got[("edge_track_duration_seconds_count", person)] == 1
    assert got[("edge_track_duration_seconds_sum", person)] == pytest.approx(3.5)
    assert got[("edge_track_duration_seconds_bucket", (*person, ("le", "2.0")))] == 0
    assert got[("edge_track_duration_seconds_bucket", (*person, ("le", "5.0")))] == 1
    assert got[("edge_track_duration_seconds_bucket", (*person, ("le", "+Inf")))] == 1
    car = (("camera", "front"), ("label", "car"))
    assert got[("edge_track_duration_seconds_bucket", (*car, ("le", "600.0")))] == 0
    assert got[("edge_track_duration_seconds_bucket", (*car, ("le", "1800.0")))] == 1
    assert stats.snapshot().errors == {}


def test_crossings_stay_monotonic_when_counting_starts_again(metrics):
    m, registry, _ = metrics
    key = ("edge_line_crossings_total", (("camera", "c"), ("direction", "in"), ("label", "person"), ("line", "l")))
    for n in (1, 4):
        m.crossings("c", "l", {"person": {"in": n, "out": 0}})
    assert samples(registry)[key] == 4
    for n in (0, 2):                  # a new events layer (reload) counts from zero again
        m.crossings("c", "l", {"person": {"in": n, "out": 0}})
    assert samples(registry)[key] == 6


@pytest.mark.parametrize("bad, reason", [
    ({"type": "new"}, "KeyError: 'after'"),
    ({"type": "moved", "after": {"camera": "c", "label": "p"}}, "type 'moved' is not one of new, update, end"),
    (message("end", end=None), "end_time None are not finite"),
    (message("end", start=5.0, end=1.0), "start_time 5.0 and end_time 1.0"),
    (message("end", end=math.nan), "end_time nan"),
])
def test_a_message_it_cannot_read_is_counted_not_raised(metrics, caplog, bad, reason):
    m, registry, stats = metrics
    m.event(bad, None)
    assert stats.snapshot().errors == {"event_metrics": 1}
    assert reason in caplog.text
    assert not [k for k in samples(registry) if k[0].startswith(("edge_events", "edge_track"))]


def test_bad_counts_and_crossings_are_counted(metrics):
    m, registry, stats = metrics
    m.counts("c", "z", {"person": "many"})
    m.crossings("c", "l", {"person": {"in": 1}})          # no "out"
    assert stats.snapshot().errors == {"event_metrics": 2}
    assert not [k for k in samples(registry) if k[0].startswith(("edge_zone", "edge_line"))]


def test_bad_buckets_are_refused():
    with pytest.raises(ValueError, match=r"buckets \(5.0, 1.0, inf\) must increase and end with inf"):
        EventMetrics(PipelineStats(), (5.0, 1.0, math.inf))


def test_scrapes_during_updates_see_consistent_totals():
    """The listener on one thread, scrapes on another: every scrape parses, and totals only grow."""
    stats = PipelineStats()
    m = EventMetrics(stats)
    registry = CollectorRegistry(auto_describe=False)
    m.register(registry)
    done = threading.Event()

    def listener():
        for i in range(3000):
            m.event(message("new", id=str(i)), None)
            m.event(message("end", id=str(i), end=100.0 + i % 50), None)
            m.counts("front", "all", {"person": i % 4})
            m.crossings("front", "gate", {"person": {"in": i, "out": i // 2}})
        done.set()
    thread = threading.Thread(target=listener)
    thread.start()
    seen = []
    while not done.is_set():
        got = samples(registry)
        person = (("camera", "front"), ("label", "person"))
        count = got.get(("edge_track_duration_seconds_count", person), 0)
        inf = got.get(("edge_track_duration_seconds_bucket", (*person, ("le", "+Inf"))), 0)
        assert count == inf
        seen.append(got.get(("edge_events_total", (*person, ("type", "new"))), 0))
    thread.join()
    assert seen == sorted(seen)
    final = samples(registry)
    assert final[("edge_events_total", (("camera", "front"), ("label", "person"), ("type", "end")))] == 3000
    assert stats.snapshot().errors == {}


def test_served_by_the_prometheus_exporter():
    stats = PipelineStats()
    exporter = PrometheusExporter(stats, None, 0)
    try:
        EventMetrics(stats).register(exporter.registry).counts("front", "all", {"person": 3})
        with urllib.request.urlopen(f"http://127.0.0.1:{exporter.port}/metrics", timeout=10) as response:
            text = response.read().decode()
    finally:
        exporter.close()
    assert 'edge_zone_objects{camera="front",label="person",zone="all"} 3.0' in text
    assert "edge_frames_captured_total" in text           # the pipeline's families are still there

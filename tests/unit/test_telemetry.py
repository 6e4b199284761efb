"""Pipeline statistics, JSONL rotation and stats lines, the live line, /proc reading and the system
monitor. The monitor runs on the recorded sysfs trees and vcgencmd outputs in tests/data (no Pi
here): vcgencmd is replaced by a runner returning the recorded text."""

import json
import math

import numpy as np
import pytest

from edge.telemetry import stats as stats_mod
from edge.telemetry.jsonl import JsonlSink
from edge.telemetry.live import format_line
from edge.telemetry.process import ProcessReader
from edge.telemetry.stats_payload import stats_payload
from edge.telemetry.stats import PipelineStats
from edge.telemetry.system import SystemMonitor
from tests.helpers import frame_result as result


def test_cumulative_histograms_and_windowed_percentiles():
    stats = PipelineStats(window=4)
    for seconds in (0.001, 0.004, 0.009, 0.2, 0.3, 20.0):
        stats.published_frame({"invoke": seconds}, [])
    snap = stats.snapshot()
    hist = dict(snap.histograms["invoke"].buckets)
    assert hist[0.001] == 1 and hist[0.005] == 2 and hist[0.01] == 3 and hist[0.25] == 4
    assert hist[10.0] == 5 and hist[math.inf] == 6 == snap.histograms["invoke"].count
    assert snap.histograms["invoke"].sum == pytest.approx(20.514)
    # the window holds the last 4 only: 0.009, 0.2, 0.3, 20.0
    assert snap.latency["invoke"][50] == pytest.approx(0.25)


def test_stage_percentiles_in_one_call_match_numpy_per_stage():
    rng = np.random.default_rng(0)
    stats = PipelineStats(window=64)
    for _ in range(100):
        stats.published_frame(dict(zip(stats_mod.STAGES, rng.exponential(0.01, len(stats_mod.STAGES)))), [])
    snap = stats.snapshot()
    for stage in stats_mod.STAGES:
        window = stats.latency[stage].values()
        assert len(window) == 64
        expected = np.percentile(window, (50, 95, 99))
        assert [snap.latency[stage][q] for q in (50, 95, 99)] == pytest.approx(expected)
    # windows of unequal length (a stage never recorded) fall back to one call per stage
    partial = stats_mod.stage_percentiles({"invoke": (0.1, 0.3), "publish": ()})
    assert partial["invoke"][50] == pytest.approx(0.2) and math.isnan(partial["publish"][95])


def test_counters_list_is_extensible(monkeypatch):
    monkeypatch.setattr(stats_mod, "COUNTERS", stats_mod.COUNTERS + ["widgets"])
    stats = PipelineStats()
    stats.count("widgets", 3)
    stats.capture_counts(10, 2)
    counts = stats.snapshot().counts
    assert counts["widgets"] == 3 and counts["captured"] == 10 and counts["dropped"] == 2


def test_jsonl_rotates_by_size_and_keeps_whole_lines(tmp_path):
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, "clip.mp4", max_bytes=400, backups=2)
    for i in range(20):
        sink.publish(result(i))
    sink.close()
    files = sorted(tmp_path.iterdir())
    assert [f.name for f in files] == ["events.jsonl", "events.jsonl.1", "events.jsonl.2"]
    frames = []
    for f in reversed(files):                                # oldest (.2) first
        assert 0 < f.stat().st_size <= 400
        frames += [json.loads(line)["frame"] for line in f.read_text().splitlines()]
    assert frames == list(range(20 - len(frames), 20))       # consecutive, newest last
    assert len(frames) < 20                                  # the oldest rotated away


def test_jsonl_stats_lines(tmp_path):
    stats = PipelineStats()
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, "clip.mp4", stats=lambda: stats_payload(stats.snapshot()), stats_interval=1e-9)
    sink.publish(result(0))
    sink.publish(result(1, labels=()))
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    kinds = [line.get("type", "event") for line in lines]
    assert kinds == ["stats", "event", "stats", "stats"]
    assert set(lines[0]["latency_ms"]) == set(stats_mod.STAGES)


def test_process_reader(tmp_path):
    # /proc/<pid>/stat with a command name holding spaces and ')' (proc(5))
    (tmp_path / "42").mkdir()
    fields = ["S"] + ["0"] * 10 + ["250", "50"] + ["0"] * 4 + ["7"] + ["0"] * 30
    (tmp_path / "42/stat").write_text("42 (my (odd) cmd) " + " ".join(fields) + "\n")
    (tmp_path / "42/status").write_text("Name:\tx\nVmRSS:\t  1024 kB\nThreads:\t7\n")
    reader = ProcessReader(tmp_path, 42, clock_ticks=100)
    first = reader.read(now=10.0)
    assert (first.cpu_seconds, first.rss_bytes, first.threads) == (3.0, 1024 * 1024, 7)
    assert math.isnan(first.cpu_percent)
    fields[11] = "350"
    (tmp_path / "42/stat").write_text("42 (my (odd) cmd) " + " ".join(fields) + "\n")
    assert reader.read(now=12.0).cpu_percent == pytest.approx(50.0)


def test_live_process_reader_reads_this_process():
    sample = ProcessReader().read()
    assert sample.rss_bytes > 10 * 2**20 and sample.threads >= 1


def recorded_vcgencmd(data_dir):
    answers = {("pmic_read_adc",): data_dir / "power/pmic_read_adc_pi5.txt",
               ("get_throttled",): data_dir / "vcgencmd/get_throttled_undervolt.txt",
               ("measure_clock", "arm"): data_dir / "vcgencmd/measure_clock_arm.txt"}
    return lambda *args: answers[args].read_text()


def test_system_monitor_on_a_recorded_pi5(data_dir):
    stats = PipelineStats()
    monitor = SystemMonitor(stats, sys_root=data_dir / "thermal/sys", runner=recorded_vcgencmd(data_dir),
                            jpi_window=100)
    assert monitor.power.name == "pmic"
    monitor.sample(now=0.0)
    for _ in range(40):
        stats.inferred_frame()
    sample = monitor.sample(now=10.0)
    assert sample.unavailable == {}
    assert sample.watts == pytest.approx(2.472089, rel=1e-5)
    assert sample.joules == pytest.approx(24.72089, rel=1e-5)           # constant watts over 10 s
    assert sample.joules_per_inference == pytest.approx(24.72089 / 40, rel=1e-5)
    assert sample.watts_avg == pytest.approx(2.472089, rel=1e-5)
    assert sample.max_celsius == 54.6
    assert sample.throttle.throttled.now == {"under_voltage", "throttled"}
    line = format_line(stats.snapshot(), sample)
    assert "2.47 W 0.618 J/inf" in line and "54.6 °C" in line and "THROTTLED throttled,under_voltage" in line
    payload = stats_payload(stats.snapshot(), sample)
    assert payload["power"]["source"] == "pmic" and payload["temperatures"]["apex_0"] == 47.8
    assert payload["throttle"]["arm_hz"] == 1800404352


def test_system_monitor_reports_missing_sources_once_not_zeros(tmp_path, data_dir, caplog):
    def absent(*args):
        from edge.telemetry.vcgencmd import VcgencmdError
        raise VcgencmdError("vcgencmd not found")
    monitor = SystemMonitor(PipelineStats(), sys_root=tmp_path, runner=absent)
    with caplog.at_level("INFO", logger="edge.telemetry.system"):
        first = monitor.sample(now=1.0)
        second = monitor.sample(now=2.0)
    assert set(first.unavailable) == {"power", "thermal", "throttle"} == set(second.unavailable)
    assert "vcgencmd not found" in first.unavailable["power"]
    assert math.isnan(first.watts) and first.temperatures == ()
    assert len([r for r in caplog.records if "unavailable" in r.message]) == 3
    assert "power" not in stats_payload(PipelineStats().snapshot(), second)
    assert format_line(PipelineStats().snapshot(), second).count(" W") == 0


def test_static_power_when_nothing_else(tmp_path):
    monitor = SystemMonitor(PipelineStats(), sys_root=tmp_path, runner=lambda *a: "", power="auto",
                            static_watts=5.5)
    assert monitor.sample(now=0.0).watts == 5.5 and monitor.sample(now=2.0).joules == pytest.approx(11.0)


def test_prometheus_families_on_a_recorded_pi5(data_dir):
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families

    from edge.telemetry.prometheus import EdgeCollector

    stats = PipelineStats()
    stats.published_frame({"invoke": 0.01, "end_to_end": 0.02}, ["person", "person"])
    stats.error("mqtt_publish")
    monitor = SystemMonitor(stats, sys_root=data_dir / "thermal/sys", runner=recorded_vcgencmd(data_dir))
    monitor.sample(now=0.0)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(EdgeCollector(stats, monitor))
    families = {f.name: f for f in text_string_to_metric_families(generate_latest(registry).decode())}
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for f in families.values() for s in f.samples}
    assert samples[("edge_detections_total", (("label", "person"),))] == 2
    assert samples[("edge_errors_total", (("kind", "mqtt_publish"),))] == 1
    assert samples[("edge_power_watts", (("source", "pmic"),))] == pytest.approx(2.472089, rel=1e-5)
    assert samples[("edge_power_rail_watts", (("rail", "VDD_CORE"),))] == pytest.approx(1.501 * 0.88)
    assert samples[("edge_throttle", (("flag", "under_voltage"), ("when", "now")))] == 1
    assert samples[("edge_throttle", (("flag", "soft_temp_limit"), ("when", "since_boot")))] == 0
    assert samples[("edge_arm_clock_hertz", ())] == 1800404352
    assert samples[("edge_end_to_end_seconds_bucket", (("le", "0.02"),))] == 1
    assert samples[("edge_end_to_end_seconds_bucket", (("le", "0.01"),))] == 0
    for source in ("power", "thermal", "throttle", "process"):
        assert samples[(f"edge_{source}_available", (("reason", ""),))] == 1


def two_cameras() -> PipelineStats:
    """An aggregate with two camera children fed by hand, as the scheduler feeds them: front 3 frames with
    a person each at 15 fps, back 2 frames with two cars each at 5 fps (rates over the last 2 s)."""
    import time
    stats = PipelineStats()
    now = time.monotonic()
    for name, frames, labels, fps in (("front", 3, ["person"], 15), ("back", 2, ["car", "car"], 5)):
        cam = stats.camera(name)
        cam.capture_counts(frames + 1, 1)
        for i in range(frames):
            cam.inferred_frame()
            cam.published_frame({"invoke": 0.01 * (i + 1), "end_to_end": 0.05}, labels)
            stats.inferred_frame()
            stats.published_frame({"invoke": 0.01 * (i + 1), "end_to_end": 0.05}, labels)
        cam.rates["inference"] = stats_mod.RateMeter()          # a known rate, not the microseconds above
        cam.rates["inference"].observe(0, now=now - 2.0)
        cam.rates["inference"].observe(2 * fps, now=now)
    stats.capture_counts(7, 2)
    return stats


def test_stats_payload_has_each_cameras_figures():
    from edge.telemetry.stats_payload import pipeline_payload
    payload = json.loads(json.dumps(pipeline_payload(two_cameras())))      # JSON-ready
    assert list(payload["cameras"]) == ["front", "back"]                    # configured order
    front, back = payload["cameras"]["front"], payload["cameras"]["back"]
    assert front["counts"] == {"captured": 4, "dropped": 1, "inferred": 3, "published": 3}
    assert back["counts"] == {"captured": 3, "dropped": 1, "inferred": 2, "published": 2}
    assert front["detections"] == {"person": 3} and back["detections"] == {"car": 4}
    assert front["fps"]["inference"] == pytest.approx(15.0) and back["fps"]["inference"] == pytest.approx(5.0)
    assert front["latency_ms"]["invoke"]["p50"] == pytest.approx(20.0)     # 10, 20, 30 ms
    assert back["latency_ms"]["invoke"]["p50"] == pytest.approx(15.0)      # 10, 20 ms
    assert front["latency_ms"]["publish"]["p95"] is None                   # never recorded: null, not 0
    assert payload["counts"]["published"] == 5 and payload["detections"] == {"person": 3, "car": 4}
    # one camera: the aggregate is the camera's, no "cameras"
    assert "cameras" not in pipeline_payload(PipelineStats())


def test_live_line_shows_each_cameras_fps():
    from edge.telemetry.stats_payload import camera_snapshots
    stats = two_cameras()
    line = format_line(stats.snapshot(), None, camera_snapshots(stats))
    assert " fps [front 15.0 back 5.0] | invoke" in line, line
    assert "[" not in format_line(PipelineStats().snapshot(), None, camera_snapshots(PipelineStats()))


def test_jsonl_events_carry_the_camera(tmp_path):
    from dataclasses import replace
    path = tmp_path / "events.jsonl"
    sink = JsonlSink(path, "edge")
    sink.publish(replace(result(0), camera="front"))
    sink.publish(replace(result(0), camera="back"))         # the same frame index from another camera
    sink.publish(result(1))                                 # no camera: the source's name
    sink.close()
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert [(line["camera"], line["source"], line["frame"]) for line in lines] == \
        [("front", "edge", 0), ("back", "edge", 0), ("edge", "edge", 1)]


def scrape_collector(collector) -> dict:
    from prometheus_client import CollectorRegistry, generate_latest
    from prometheus_client.parser import text_string_to_metric_families
    registry = CollectorRegistry(auto_describe=False)
    registry.register(collector)
    return {(s.name, tuple(sorted(s.labels.items()))): s.value
            for f in text_string_to_metric_families(generate_latest(registry).decode()) for s in f.samples}


def test_prometheus_camera_families_with_one_camera_use_its_name():
    from edge.telemetry.prometheus import EdgeCollector
    stats = PipelineStats()
    stats.capture_counts(5, 1)
    stats.inferred_frame()
    stats.published_frame({"invoke": 0.01, "end_to_end": 0.02}, ["person", "person"])
    samples = scrape_collector(EdgeCollector(stats, camera="bikes.mp4"))
    cam = (("camera", "bikes.mp4"),)
    assert samples[("edge_camera_frames_captured_total", cam)] == 5 == samples[("edge_frames_captured_total", ())]
    assert samples[("edge_camera_frames_dropped_total", cam)] == 1
    assert samples[("edge_camera_frames_inferred_total", cam)] == 1
    assert samples[("edge_camera_detections_total", cam + (("label", "person"),))] == 2
    assert samples[("edge_camera_stage_seconds_count", cam + (("stage", "end_to_end"),))] == 1
    assert samples[("edge_camera_stage_seconds_bucket", cam + (("le", "0.01"), ("stage", "invoke")))] == 1
    assert samples[("edge_camera_recent_latency_seconds", cam + (("quantile", "0.5"), ("stage", "invoke")))] == \
        pytest.approx(0.01)
    # no name given: the unlabelled families only
    assert not [key for key in scrape_collector(EdgeCollector(stats)) if key[0].startswith("edge_camera_")]

"""`edge run` on the default model and clip serving /metrics, scraped over HTTP and parsed with
prometheus_client's own text parser. Power and temperatures come from the recorded sysfs tree in
tests/data/thermal (an INA260 hwmon, a CPU zone, a Coral apex); vcgencmd does not exist here, so
the throttle source must show up as unavailable with its reason."""

import signal
import socket
import subprocess
import sys
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.helpers import free_port, wait_for


def scrape(port: int) -> dict:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(family, **labels):
    return next(s.value for s in family.samples if all(s.labels.get(k) == v for k, v in labels.items()))


@pytest.fixture()
def daemon(tmp_path, data_dir):
    port = free_port()
    config = tmp_path / "edge.toml"
    config.write_text(f'[telemetry]\ninterval = 0.2\nsys_root = "{data_dir / "thermal/sys"}"\n')
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--config", str(config), "--loop",
                             "--prometheus", str(port), "--jsonl", "", "--live", "off"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=tmp_path)
    yield proc, port
    if proc.poll() is None:
        proc.kill()
    proc.communicate()


def test_metrics_have_every_family(daemon):
    proc, port = daemon

    def enough():
        assert proc.poll() is None, proc.communicate()[1]
        families = scrape(port)
        det = families.get("edge_detections")
        if det and det.samples and value(families["edge_frames_inferred"]) >= 30:
            return families
    families = wait_for(enough, timeout=90, ignore=(OSError,), interval=0.3)

    assert families["edge_frames_inferred"].type == "counter"
    for name in ("edge_frames_captured", "edge_frames_dropped", "edge_frames_published"):
        assert families[name].type == "counter"
    assert value(families["edge_detections"], label="person") > 0
    assert families["edge_errors"].type == "counter"
    for stage in ("capture", "inference", "published"):
        assert value(families["edge_fps"], stage=stage) > 0
    stages = families["edge_stage_seconds"]
    assert stages.type == "histogram"
    for stage in ("preprocess", "invoke", "postprocess", "publish"):
        count = value(stages, stage=stage, le="+Inf")
        assert count >= 30 and value(stages, stage=stage, le="10.0") <= count
    for name in ("edge_end_to_end_seconds", "edge_frame_age_seconds"):
        assert families[name].type == "histogram"
    assert value(families["edge_recent_latency_seconds"], stage="invoke", quantile="0.95") > 0
    assert families["edge_pipeline_info"].samples[0].labels["backend"].startswith("cpu")
    # power from the recorded INA260 (3.9 W), integrated into joules
    assert value(families["edge_power_available"]) == 1
    assert value(families["edge_power_watts"], source="hwmon:ina260") == pytest.approx(3.9)
    assert families["edge_energy_joules"].type == "counter"
    assert families["edge_energy_per_inference_joules"].samples
    temps = families["edge_temperature_celsius"]
    assert value(temps, sensor="cpu-thermal", source="thermal_zone") == pytest.approx(54.6)
    assert value(temps, sensor="apex_0", source="apex") == pytest.approx(47.8)
    # no vcgencmd here: unavailable with the reason, and no throttle samples at all
    throttle = families["edge_throttle_available"].samples[0]
    assert throttle.value == 0 and "vcgencmd not found" in throttle.labels["reason"]
    assert "edge_throttle" not in families and "edge_arm_clock_hertz" not in families
    assert value(families["edge_process_resident_memory_bytes"]) > 10 * 2**20
    assert value(families["edge_process_threads"]) >= 3
    assert families["edge_process_cpu_seconds"].type == "counter"

    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 0, err
    with pytest.raises(OSError):          # the server went away with the pipeline
        scrape(port)


def test_metrics_port_in_use_is_a_clear_error(tmp_path):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "edge.cli", "run", "--prometheus", str(port),
                                 "--jsonl", "", "--max-frames", "1"], capture_output=True, text=True,
                                cwd=tmp_path, timeout=120)
    assert result.returncode == 2
    assert f"cannot serve Prometheus metrics on 127.0.0.1:{port}" in result.stderr


def test_two_cameras_each_have_camera_labelled_families():
    """Two cameras through the real scheduler (fake sources and detector: tests/fake_cameras.py), the real
    exporter scraped over HTTP: every per-camera figure under its camera label, adding up to the
    unlabelled aggregate, which keeps its names."""
    from edge.telemetry.prometheus import PrometheusExporter
    from tests import fake_cameras

    frames = 50
    scheduler = fake_cameras.scheduler({"front": ("person",), "back door": ("car", "car")}, frames)
    exporter = PrometheusExporter(scheduler.stats, None, free_port())
    try:
        assert scheduler.run().frames == 2 * frames
        families = scrape(exporter.port)
    finally:
        exporter.close()

    for name in ("captured", "inferred", "published"):
        family = families[f"edge_camera_frames_{name}"]
        assert family.type == "counter"
        assert {s.labels["camera"]: s.value for s in family.samples} == {"front": frames, "back door": frames}
        assert value(families[f"edge_frames_{name}"]) == 2 * frames          # the aggregate, unlabelled
    assert {s.labels["camera"] for s in families["edge_camera_frames_dropped"].samples} == {"front", "back door"}
    detections = {(s.labels["camera"], s.labels["label"]): s.value for s in families["edge_camera_detections"].samples}
    assert detections == {("front", "person"): frames, ("back door", "car"): 2 * frames}
    assert value(families["edge_detections"], label="car") == 2 * frames
    fps = families["edge_camera_fps"]
    assert {(s.labels["camera"], s.labels["stage"]) for s in fps.samples} == \
        {(c, s) for c in ("front", "back door") for s in ("capture", "inference", "published")}
    assert value(fps, camera="front", stage="inference") > 0
    stages = families["edge_camera_stage_seconds"]
    assert stages.type == "histogram"
    for camera in ("front", "back door"):
        for stage in ("preprocess", "invoke", "postprocess", "publish", "end_to_end", "frame_age"):
            assert value(stages, camera=camera, stage=stage, le="+Inf") == frames
        # the fake detector sleeps 1 ms a frame: no invoke is faster
        assert value(stages, camera=camera, stage="invoke", le="0.001") == 0
        assert value(families["edge_camera_recent_latency_seconds"], camera=camera, stage="invoke",
                     quantile="0.95") >= 0.001
    assert value(families["edge_stage_seconds"], stage="invoke", le="+Inf") == 2 * frames

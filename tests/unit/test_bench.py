"""edge bench pieces that need no model: statistics, ratios, argument checks, reports, power, simulation."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from edge.bench import report as reports
from edge.bench.passes import steady_fps
from edge.bench.pipeline import median_ratios
from edge.bench.energy import PowerSampler, make_reader
from edge.bench.raw import Variant, parse_threads
from edge.bench.runner import Options
from edge.bench.statistics import ratio, summarize
from edge.config import Config
from edge.errors import ConfigError
from edge.runtime.simulated import SimulatedBackend
from edge.telemetry.power import StaticPower


def test_summary_matches_numpy_and_benchmark_model_conventions():
    samples = np.arange(1, 101) / 1000.0          # 1..100 ms
    s = summarize(samples)
    assert s.count == 100
    assert s.mean == pytest.approx(0.0505)
    assert s.std == pytest.approx(np.std(samples))     # population std, as benchmark_model prints
    assert (s.min, s.max) == (0.001, 0.1)
    assert s.p50 == pytest.approx(0.0505)
    assert s.p5 == pytest.approx(0.00595)               # linear interpolation between the 5th and 6th
    assert s.p95 == pytest.approx(0.09505) and s.p99 == pytest.approx(0.09901)
    assert s.throughput == pytest.approx(1 / 0.0505)
    assert s.as_ms()["p50"] == pytest.approx(50.5) and s.as_ms()["count"] == 100


def test_summary_of_one_sample_and_of_none():
    s = summarize([0.002])
    assert s.std == 0 and s.p5 == s.p99 == s.mean == 0.002
    with pytest.raises(ConfigError, match="no latency samples"):
        summarize([])
    with pytest.raises(ConfigError, match="non-finite"):
        summarize([0.001, float("nan")])


def test_steady_fps_ignores_the_time_before_the_first_frame():
    assert steady_fps([10.0, 10.1, 10.2, 10.3, 10.4]) == pytest.approx(10.0)
    assert steady_fps([5.0]) == 0.0
    assert math.isnan(ratio(1.0, 0.0)) and ratio(3.0, 2.0) == 1.5


def test_median_ratios_over_rounds():
    out = median_ratios([{"a": 1.0, "b": 2.0}, {"a": 3.0}, {"a": 2.0}])
    assert out["a"]["median"] == 2.0 and (out["a"]["min"], out["a"]["max"]) == (1.0, 3.0)
    assert out["b"]["rounds"] == [2.0]


def test_thread_lists():
    assert parse_threads("1,2") == [1, 2]
    assert parse_threads("1-3,2") == [1, 2, 3]
    assert parse_threads("")[0] == 1
    for bad in ("a", "0", "1-x", "65"):
        with pytest.raises(ConfigError, match="thread list"):
            parse_threads(bad)


@pytest.mark.parametrize("changes, message", [
    ({"runs": 0}, "--runs 0 is not positive"),
    ({"rounds": 0}, "--rounds 0 is not positive"),
    ({"warmup": -1}, "--warmup -1 is negative"),
    ({"modes": ("raw", "fast")}, "unknown mode 'fast'"),
    ({"modes": ()}, "no mode selected"),
    ({"simulate_ms": 0.0}, "--simulate-ms 0.0 is not positive"),
    ({"frames": -5}, "--frames -5 is negative"),
])
def test_bad_options_are_named(changes, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        Options(Config(), **changes).validate()


def test_variant_labels_say_what_runs():
    assert Variant("cpu", threads=2).label == "int8 cpu/xnnpack x2"
    assert Variant("cpu-builtin", threads=1).label == "int8 cpu/builtin x1"
    assert Variant("float", threads=4).label == "float32 cpu/xnnpack x4"
    assert Variant("simulated", simulated_ms=7.2).label == "SIMULATED 7.2 ms"
    assert Variant("edgetpu", device="edgetpu:usb").label == "int8 edgetpu:usb"


class _Model:
    path = "fake.tflite"


def test_simulated_backend_is_labelled_and_replays_real_outputs():
    outputs = (np.arange(4, dtype=np.float32), np.array([3.0], np.float32))
    sim = SimulatedBackend(_Model(), (1, 8, 8, 3), np.dtype(np.uint8), outputs, 0.0001)
    assert sim.name.startswith("SIMULATED") and "0.1 ms" in sim.name
    assert sim.input_view().shape == (1, 8, 8, 3) and sim.input_view().dtype == np.uint8
    sim.invoke()
    got = sim.outputs()
    np.testing.assert_array_equal(got[0], outputs[0])
    got[0][0] = 99                              # callers get copies
    assert sim.outputs()[0][0] == 0
    with pytest.raises(ConfigError, match="not positive"):
        SimulatedBackend(_Model(), (1, 8, 8, 3), np.dtype(np.uint8), outputs, 0.0)


def test_power_sources():
    assert make_reader("none") is None
    with pytest.raises(ConfigError, match="unknown power source 'mains'"):
        make_reader("mains")
    with pytest.raises(ConfigError, match="'static' is unavailable"):
        make_reader("static", 0.0)
    assert make_reader("static", 4.5).read().watts == 4.5


def test_power_sampler_integrates_watts_into_joules():
    with PowerSampler(StaticPower(3.0), interval=0.01) as sampler:
        sum(range(200000))
    energy = sampler.energy
    assert energy.samples >= 2 and energy.source == "static"
    assert energy.watts == pytest.approx(3.0, rel=0.02)
    assert energy.per_inference(10) == pytest.approx(energy.joules / 10)
    assert energy.as_dict(10)["mj_per_inference"] == pytest.approx(energy.joules / 10 * 1e3)


def _report() -> dict:
    lat = {"count": 10, "mean": 7.0, "std": 0.5, "min": 6.0, "max": 9.0, "p5": 6.1, "p50": 7.0, "p95": 8.5,
           "p99": 8.9}
    stages = {"invoke": lat, "preprocess": dict(lat, p50=0.3, p95=0.4)}
    passed = {"mode": "pipeline", "backend": "cpu/xnnpack x2", "simulated": False, "frames": 250, "seconds": 2.0,
              "fps": 125.0, "captured": 250, "dropped": 0, "stages_ms": stages}
    return {
        "edge": "0.1", "created": "2026-12-01T00:00:00+00:00", "runtime": "ai-edge-litert 2.3.0",
        "model": "m_int8.tflite", "source": "sample",
        "host": {"machine": "x86_64", "cpus": 2, "load_average": [0.5, 0.4, 0.3]},
        "settings": {"pipeline_threads": [2]},
        "raw": [{"label": "int8 cpu/xnnpack x2", "simulated": False, "init_ms": 20.0, "first_inference_ms": 9.0,
                 "latency_ms": lat, "throughput_per_s": 142.9, "peak_rss_mb": 120.0},
                {"label": "SIMULATED 7.2 ms", "simulated": True, "init_ms": 20.0, "first_inference_ms": 7.3,
                 "latency_ms": lat, "throughput_per_s": 136.0, "peak_rss_mb": 120.0}],
        "rounds": [{"raw_invoke_ms": lat, "raw_throughput_per_s": 142.9, "pipeline": passed,
                    "sim_pipeline": dict(passed, backend="SIMULATED accelerator 7.2 ms", simulated=True)}],
        "ratios": {"pipeline_over_raw x2": {"median": 0.875, "min": 0.8, "max": 0.9, "rounds": [0.875]}},
        "int8_over_float": {"2": 0.41},
        "goals": [{"goal": "pipeline / raw invoke (CPU, x2)", "value": 0.875, "target": ">= 0.95", "met": False}],
        "coldstart": {"first_detection_s": 0.9, "first_detection_frame": 30, "frames": 100, "rss_mb": 110.0,
                      "peak_rss_mb": 112.0},
        "power": {"source": None, "note": "no power reader configured"},
    }


def test_terminal_and_markdown_reports():
    report = _report()
    text = reports.format_terminal(report)
    assert "Raw invoke latency (ms)" in text and "int8 cpu/xnnpack x2" in text and "+RSS MiB" in text
    assert "pipeline_over_raw x2" in text and "0.88" in text
    assert "SIMULATED rows use a backend that sleeps" in text
    assert "first detection 0.90 s (in frame 30" in text and "NO" in text
    md = reports.format_markdown(report)
    assert md.startswith("# edge 0.1 bench")
    assert "| backend | init ms | first ms | mean |" in md
    assert "| SIMULATED 7.2 ms |" in md
    assert "| pipeline (SIMULATED accelerator 7.2 ms) |" in md
    assert "| int8_over_float (2 thr) | 0.41 |" in md


def test_json_report_is_strict_json(tmp_path):
    report = _report()
    report["ratios"]["nan_ratio"] = {"median": float("nan"), "min": 1.0, "max": 1.0, "rounds": [float("nan")]}
    path = tmp_path / "bench.json"
    reports.write_json(report, path)
    loaded = json.loads(path.read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert loaded["ratios"]["nan_ratio"]["median"] is None
    assert loaded["raw"][1]["simulated"] is True


def test_unwritable_report_path_is_an_error(tmp_path):
    with pytest.raises(ConfigError, match="cannot write"):
        reports.write_markdown(_report(), tmp_path / "missing-dir" / "bench.md")
    with pytest.raises(ConfigError, match="its folder does not exist"):
        reports.check_outputs(str(tmp_path / "bench.json"), str(tmp_path / "missing-dir" / "bench.md"))
    reports.check_outputs(str(tmp_path / "bench.json"), None)


def test_plot_writes_a_png(tmp_path):
    pytest.importorskip("matplotlib", reason="the plot extra is not installed")
    samples = {"raw": {"int8 cpu/xnnpack x2": [0.007, 0.008, 0.0075]},
               "pipeline": {"pipeline cpu": {"invoke": [0.007, 0.008], "preprocess": [0.0003, 0.0004]}},
               "serial": {}}
    path = tmp_path / "bench.png"
    reports.write_plot(_report(), samples, path)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ConfigError, match="nothing to plot"):
        reports.write_plot(_report(), {"raw": {}, "pipeline": {}, "serial": {}}, tmp_path / "empty.png")


class _CountingBackend:
    """Records the order of invokes across backends (to check that runs are interleaved)."""

    def __init__(self, name: str, log: list[str]):
        self.name, self.log = name, log
        self.model = type("M", (), {"path": f"{name}.tflite"})()
        self.input_shape = (1, 2, 2, 3)
        self.closed = False

    def input_view(self):
        return np.zeros(self.input_shape, np.uint8)

    def invoke(self) -> None:
        self.log.append(self.name)

    def outputs(self):
        return ()

    def close(self) -> None:
        self.closed = True


def test_raw_runs_are_interleaved_across_variants_in_rounds():
    from edge.bench.raw import measure
    calls: list[str] = []
    backends = {}

    def opener(name):
        def open_backend():
            backends[name] = _CountingBackend(name, calls)
            return backends[name]
        return open_backend

    openers = [(Variant("cpu", threads=1), opener("a")), (Variant("float", threads=1), opener("b"))]
    results = measure(openers, lambda backend: None, warmup=2, runs=7, rounds=3, runtime="fake 1.0")
    # per variant: first inference + 2 warm-up, then chunks of 3, 3, 1 taken in turn
    assert calls == ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a"] * 3 + ["b"] * 3 + ["a", "b"]
    assert [r.latency.count for r, _ in results] == [7, 7]
    assert [r.variant.kind for r, _ in results] == ["cpu", "float"] and results[0][0].model == "a.tflite"
    assert all(b.closed for b in backends.values())
    with pytest.raises(ConfigError, match="runs = 0 is not positive"):
        measure(openers, lambda backend: None, warmup=0, runs=0)


def test_power_from_a_hwmon_chip(tmp_path):
    # A recorded-style hwmon tree: an INA226 reporting 4.2 W in power1_input (µW).
    chip = tmp_path / "hwmon3"
    chip.mkdir()
    (chip / "name").write_text("ina226\n")
    (chip / "power1_input").write_text("4200000\n")
    reader = make_reader("hwmon", hwmon_root=tmp_path)
    assert reader.name == "hwmon:ina226" and reader.read().watts == pytest.approx(4.2)
    with pytest.raises(ConfigError, match="power source 'hwmon' is unavailable"):
        make_reader("hwmon", hwmon_root=tmp_path / "nothing")

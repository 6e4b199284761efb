"""`edge bench` and scripts/benchmark.py as a user runs them: the real default model and clip, few runs.

Only the shape and sanity of the figures are checked, never their speed (no timed assertions).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.helpers import run_edge

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_short_bench_on_the_default_model(tmp_path):
    out = tmp_path / "bench.json"
    md = tmp_path / "bench.md"
    result = run_edge("bench", "--modes", "raw,pipeline,serial,simulated,coldstart",
                      "--backends", "cpu,cpu-builtin,float,simulated", "--raw-threads", "1", "--runs", "5",
                      "--warmup", "1", "--rounds", "1", "--frames", "30", "--coldstart-frames", "40",
                      "--simulate-ms", "7.2", "--power", "static", "--watts", "5",
                      "--json", str(out), "--markdown", str(md), timeout=600)
    assert result.returncode == 0, result.stderr
    report = json.loads(out.read_text())
    labels = [r["label"] for r in report["raw"]]
    assert labels == ["int8 cpu/xnnpack x1", "int8 cpu/builtin x1", "float32 cpu/xnnpack x1", "SIMULATED 7.2 ms"]
    assert [r["simulated"] for r in report["raw"]] == [False, False, False, True]
    for r in report["raw"]:
        lat = r["latency_ms"]
        assert lat["count"] == 5 and lat["min"] <= lat["p5"] <= lat["p50"] <= lat["p95"] <= lat["p99"] <= lat["max"]
        assert r["init_ms"] > 0 and r["first_inference_ms"] > 0 and r["peak_rss_mb"] > 0
        assert r["added_rss_mb"] is not None
        assert r["runtime"].startswith("ai-edge-litert") and r["energy"]["average_watts"] == pytest.approx(5, rel=0.01)
    assert report["raw"][0]["model"].endswith("_int8.tflite") and report["raw"][2]["model"].endswith("_float.tflite")
    assert set(report["int8_over_float"]) == {"1"} and report["int8_over_float"]["1"] > 0
    rnd = report["rounds"][0]
    assert rnd["pipeline"]["frames"] == 30 and rnd["serial"]["frames"] == 30
    assert rnd["pipeline"]["energy"]["average_watts"] == pytest.approx(5, rel=0.01)
    assert rnd["pipeline"]["energy"]["mj_per_inference"] > 0
    assert rnd["sim_pipeline"]["backend"].startswith("SIMULATED") and rnd["sim_pipeline"]["simulated"] is True
    # a file read as fast as possible: every frame, but for the one read ahead when --frames stops the pass
    assert rnd["pipeline"]["dropped"] <= 1
    assert {"invoke", "preprocess", "postprocess", "end_to_end"} <= set(rnd["pipeline"]["stages_ms"])
    assert {"read", "invoke", "draw", "total"} <= set(rnd["serial"]["stages_ms"])
    threads = report["settings"]["pipeline_threads"][0]
    for key in (f"pipeline_over_raw x{threads}", f"pipeline_over_serial x{threads}", "sim_pipeline_over_nominal",
                "sim_pipeline_over_sim_serial", "sim_serial_ceiling"):
        assert report["ratios"][key]["median"] > 0
    cold = report["coldstart"]
    assert cold["first_detection_frame"] == 30        # the first person of the sample clip
    assert cold["first_detection_s"] > 0 and cold["rss_mb"] > 0 and cold["peak_rss_mb"] >= cold["rss_mb"] * 0.99
    assert {g["goal"] for g in report["goals"]} >= {"cold start to first detection (s)", "daemon RSS (MiB)"}
    assert "Raw invoke latency (ms)" in result.stdout and "SIMULATED 7.2 ms" in result.stdout
    assert md.read_text().startswith("# edge ")


def _fails(result, *fragments):
    assert result.returncode == 2, (result.stdout, result.stderr)
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("edge: error:"), result.stderr
    for fragment in fragments:
        assert fragment in last, last


def test_missing_model_fails_clearly(tmp_path):
    _fails(run_edge("bench", "--model", str(tmp_path / "nope.tflite"), "--modes", "raw"), "nope.tflite",
           "does not exist")


def test_zero_runs_fails_clearly():
    _fails(run_edge("bench", "--runs", "0"), "--runs 0 is not positive")


def test_unavailable_backend_requested_explicitly_fails_clearly():
    # No Edge TPU (and no compiled model) exists on this machine.
    _fails(run_edge("bench", "--modes", "raw", "--backends", "edgetpu"), "backend 'edgetpu' was requested but is "
                                                                         "unavailable")


def test_unknown_backend_and_mode_fail_clearly():
    _fails(run_edge("bench", "--modes", "raw", "--backends", "gpu"), "unknown backend 'gpu'", "cpu-builtin")
    _fails(run_edge("bench", "--modes", "raw,turbo"), "unknown mode 'turbo'")


def test_the_script_runs_the_same_code():
    result = subprocess.run([sys.executable, str(ROOT / "scripts" / "benchmark.py"), "--rounds", "0"],
                            capture_output=True, text=True, timeout=120)
    _fails(result, "--rounds 0 is not positive")


def test_scaling_mode_reports_every_scenario_and_ratio(tmp_path):
    """The scaling mode runs (a benchmark: its figures are reported, not asserted here), with
    SIMULATED detectors named as such in the report."""
    out = tmp_path / "scaling.json"
    result = run_edge("bench", "--modes", "scaling", "--rounds", "1", "--frames", "150", "--json", str(out),
                      cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    scaling = json.loads(out.read_text())["scaling"]
    scenarios = scaling["rounds"][0]
    assert set(scenarios) == {"2cam-1tpu", "2cam-2tpu", "ceiling", "4cam-2tpu", "stalled"}
    assert all(d.startswith("SIMULATED") for s in scenarios.values() for d in s["detectors"])
    assert len(scenarios["4cam-2tpu"]["cameras"]) == 4 and set(scenarios["stalled"]["cameras"]) == {"cam0", "cam1"}
    assert set(scaling["ratios"]) >= {"2cam_1tpu_over_nominal", "2tpu_over_1tpu", "stalled_others_over_2cam_2tpu"}
    assert "Scaling (SIMULATED accelerators)" in result.stdout

"""scripts/bench_telemetry.py's accounting: which thread is whose, per-round pairing, telemetry's own CPU.

The benchmark itself (minutes of rounds) is not run here; these check the arithmetic it reports
and its reading of /proc/self/task on this (Linux) machine.
"""

from __future__ import annotations

import importlib.util
import json
import sys
import threading
import time
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "bench_telemetry.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_telemetry", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize(("name", "group"), [
    ("MainThread", "inference"), ("python", "inference"), ("capture:bikes.mp4", "capture"),
    ("av:h264:df0", "capture"), ("postprocess", "post-process"), ("paho-mqtt-client-edge-pi-12", "telemetry"),
    ("system-monitor", "telemetry"), ("Thread-7 (process_request_thread)", "telemetry"),
    ("bench-viewer", "bench clients")])
def test_threads_are_grouped_by_name(bench, name, group):
    assert bench.thread_group(name) == group


@pytest.mark.skipif(not Path("/proc/self/task").is_dir(), reason="reads Linux /proc/self/task")
def test_thread_cpu_reads_a_named_thread_of_this_process(bench):
    ready, done = threading.Event(), threading.Event()

    def spin():
        end = time.thread_time() + 0.05
        while time.thread_time() < end:
            pass
        ready.set()
        done.wait(5)
    worker = threading.Thread(target=spin, name="bench-spinner")
    worker.start()
    ready.wait(5)
    try:
        reading = bench.thread_cpu()
    finally:
        done.set()
        worker.join()
    name, cpu = reading[worker.native_id]
    assert name == "bench-spinner"
    assert cpu >= 0.05
    assert reading[threading.main_thread().native_id][0] == "MainThread"


def test_cpu_by_group_counts_deltas_new_threads_and_ended_ones(bench):
    before = {1: ("MainThread", 10.0), 2: ("postprocess", 1.0), 3: ("old-server", 4.0)}
    after = {1: ("MainThread", 12.0), 2: ("postprocess", 1.5),
             3: ("system-monitor", 0.1),        # the id was reused by a new thread: all of it is new
             4: ("bench-scraper", 0.2), 5: ("capture:clip.mp4", 0.7)}
    groups = bench.cpu_by_group(before, after, process_cpu=3.8)
    assert groups == pytest.approx({"inference": 2.0, "capture": 0.7, "post-process": 0.5,
                                    "telemetry": 0.1 + 0.3,     # 0.3 s of threads that ended in between
                                    "bench clients": 0.2})


def test_summarize_pairs_each_setting_with_the_off_run_of_its_round(bench):
    def run(round_, setting, fps, cpu, post, telemetry):
        return {"round": round_, "setting": setting, "fps": fps, "cpu_ms_per_frame": cpu,
                "cpu_ms_per_frame_by_thread": {"inference": cpu - post - telemetry, "capture": 0.0,
                                               "post-process": post, "telemetry": telemetry,
                                               "bench clients": 0.0}}
    rounds = [run(0, "off", 200.0, 10.0, 0.2, 0.0), run(0, "exporters", 196.0, 10.1, 0.25, 0.05),
              run(0, "exporters+web", 190.0, 10.3, 0.3, 0.2),
              run(1, "exporters", 150.0, 12.0, 0.25, 0.05), run(1, "exporters+web", 147.0, 12.2, 0.3, 0.2),
              run(1, "off", 150.0, 12.0, 0.2, 0.0)]
    result = bench.summarize(rounds)
    exporters = result["ratio_to_off"]["exporters"]
    assert exporters["fps"][0] == pytest.approx((0.98 + 1.0) / 2)    # paired by round, not by position
    assert exporters["fps_at_least_0.97"] == 2
    assert result["ratio_to_off"]["exporters+web"]["fps_at_least_0.97"] == 1      # 0.95 and 0.98
    own = result["telemetry_cpu_ms_per_frame"]["exporters"]
    assert own["ms"][0] == pytest.approx(0.1)                       # 0.05 in its threads + 0.05 inline
    assert own["share_of_off_cpu"][0] == pytest.approx((0.1 / 10 + 0.1 / 12) / 2)
    assert result["median"]["off"]["fps"] == 175.0


def test_bad_round_counts_are_refused(bench, monkeypatch, capsys):
    monkeypatch.setattr(sys, "argv", ["bench_telemetry.py", "--rounds", "0"])
    with pytest.raises(SystemExit) as exit_:
        bench.main()
    assert exit_.value.code == 2
    assert "--rounds must be at least 1, got 0" in capsys.readouterr().err


def test_pool_keeps_each_round_paired_with_the_off_run_of_its_own_file(bench, tmp_path):
    def run(round_, setting, fps):
        return {"round": round_, "setting": setting, "fps": fps, "cpu_ms_per_frame": 10.0,
                "cpu_ms_per_frame_by_thread": dict.fromkeys(bench.GROUPS, 1.0)}
    first, second, old = tmp_path / "a.json", tmp_path / "b.json", tmp_path / "old.json"
    first.write_text(json.dumps({"rounds": [run(0, "off", 200.0), run(0, "exporters", 196.0),
                                            run(0, "exporters+web", 190.0)]}))
    second.write_text(json.dumps({"rounds": [run(0, "off", 100.0), run(0, "exporters", 99.0),
                                             run(0, "exporters+web", 90.0)]}))     # the same round number
    rounds = bench.pooled_rounds([str(first), str(second)])
    result = bench.summarize(rounds)
    assert result["ratio_to_off"]["exporters"]["fps"][0] == pytest.approx((0.98 + 0.99) / 2)
    old.write_text(json.dumps({"rounds": [{"setting": "off", "fps": 1.0}]}))
    with pytest.raises(SystemExit, match="not a --json file of this script"):
        bench.pooled_rounds([str(old)])

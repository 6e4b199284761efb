"""`edge run --service` as systemd runs it: a subprocess, a real AF_UNIX notify socket, signals.

Real model (the embedded int8 SSDLite on XNNPACK), real clip. The faults come from tests/faults.py,
used only by the test entry point: a stalling source (registered through the source registry)
and an invoke that never returns (the Edge TPU is absent here; a wedged USB transfer is simulated
by blocking the interpreter's invoke).
"""

from __future__ import annotations

import json
import os
import re
import signal
import time

import pytest

from tests.e2e.service_harness import Daemon, NotifyListener
from tests.helpers import fake_edgetpu_model, run_edge, wait_for


def _daemon(tmp_path, listener, *args, watchdog_usec=None):
    return Daemon(list(args), tmp_path, listener.address, watchdog_usec)


def test_ready_only_after_the_first_inference_then_watchdog_and_status(tmp_path, listener):
    daemon = _daemon(tmp_path, listener, "--jsonl", "events.jsonl", watchdog_usec=1_000_000)
    try:
        ready = listener.wait_for("READY", "1", proc=daemon)[0]
        # Before READY: the model load announced (EXTEND_TIMEOUT_USEC), no watchdog ping yet.
        before = [m for t, m in listener.messages if t < ready[0]]
        assert any("EXTEND_TIMEOUT_USEC" in m for m in before)
        assert not any("WATCHDOG" in m for m in before)
        assert "first frame processed" in daemon.log()
        assert re.match(r"[\d.]+ fps on cpu/xnnpack x\d+, [1-9]\d* frames", ready[1]["STATUS"])
        listener.wait_for("WATCHDOG", "1", count=4, proc=daemon)   # (rate limit: tests/unit/test_service_units.py)
        assert daemon.stop() == 0
        assert "STOPPING" in listener.messages[-1][1]
    finally:
        daemon.kill()


@pytest.mark.parametrize("what", ["source", "invoke"])
def test_watchdog_pings_stop_when_the_source_or_invoke_hangs(tmp_path, what):
    # An abstract-namespace socket, as systemd uses by default.
    listener = NotifyListener(f"@edge-test-{os.getpid()}-{time.monotonic_ns()}")
    marker = tmp_path / "stalled"
    if what == "source":
        daemon = Daemon(["--source", f"fault:stall-after=40,marker={marker}", "--jsonl", ""], tmp_path,
                        listener.address, 400_000)
    else:
        daemon = Daemon(["--jsonl", ""], tmp_path, listener.address, 400_000,
                        faults=(f"--hang-invoke-after=40,marker={marker}",))
    try:
        listener.wait_for("READY", "1", proc=daemon)
        deadline = time.monotonic() + 60
        while not marker.exists():
            assert time.monotonic() < deadline and daemon.proc.poll() is None, daemon.log()
            time.sleep(0.02)
        stalled_at = time.monotonic()
        time.sleep(3.0)
        pings = [t for t, _ in listener.having("WATCHDOG", "1")]
        assert any(t < stalled_at for t in pings), "pings flowed while frames did"
        late = [round(t - stalled_at, 2) for t in pings if t > stalled_at + 2.0]
        assert not late, f"watchdog pings {late} s after the source stalled"
        assert daemon.proc.poll() is None   # still running: systemd, not the daemon, acts on the stall
    finally:
        daemon.kill()
        listener.close()


def _events(path):
    return [e for e in map(json.loads, path.read_text().splitlines()) if "frame" in e]


def test_sigterm_drains_and_every_processed_frame_is_in_the_jsonl(tmp_path, listener):
    # --as-fast-as-possible: lock-step, no frame skipped, so the frames processed are 0..N-1 and a
    # plain `edge run --max-frames N` gives the events they must have produced.
    daemon = _daemon(tmp_path, listener, "--jsonl", "events.jsonl", "--as-fast-as-possible")
    try:
        listener.wait_for("READY", "1", proc=daemon)
        # Stop a few events in (people appear from frame 30): well before the clip's 250 frames
        # end, where the service would read it again from the start and a plain run would not.
        wait_for(lambda: len(_events(tmp_path / "events.jsonl")) >= 3, 60, "three detection events", 0.02,
                 ignore=(OSError, ValueError))
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.kill()
    log = daemon.log()
    inferred, published = map(int, re.search(r"service ends: (\d+) frames inferred, (\d+) published", log).groups())
    assert inferred == published > 30 and published < 250, log
    reference = run_edge("run", "--as-fast-as-possible", "--max-frames", str(published), "--jsonl", "ref.jsonl",
                         cwd=tmp_path)
    assert reference.returncode == 0, reference.stderr
    got, want = _events(tmp_path / "events.jsonl"), _events(tmp_path / "ref.jsonl")
    assert want and [e["frame"] for e in got] == [e["frame"] for e in want]
    assert [e["detections"] for e in got] == [e["detections"] for e in want]


def test_sighup_with_a_broken_config_keeps_the_running_one(tmp_path, listener, int8_model):
    config = tmp_path / "edge.toml"
    config.write_text('[detect]\nscore_threshold = 0.6\n[output]\njsonl = ""\n')
    daemon = _daemon(tmp_path, listener, "--config", str(config), watchdog_usec=1_000_000)
    try:
        listener.wait_for("READY", "1", proc=daemon)
        config.write_text('[detect]\nscore_threshold = 7\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("reload refused, keeping the running configuration")
        assert "detect.score_threshold = 7" in daemon.log()
        pings = len(listener.having("WATCHDOG", "1"))
        listener.wait_for("WATCHDOG", "1", count=pings + 2, proc=daemon)   # frames still flow
        assert any("reload refused" in m.get("STATUS", "") for _, m in listener.messages)
        assert not listener.having("RELOADING", "1")         # the running pipeline was never stopped

        # Valid, but fails to load (an Edge TPU model, no Edge TPU, no CPU twin): refused before the
        # running pipeline is touched (the new model is loaded beside it).
        compiled = fake_edgetpu_model(int8_model, tmp_path / "alone_edgetpu.tflite")
        config.write_text(f'[model]\npath = "{compiled}"\n[output]\njsonl = ""\n')
        daemon.signal(signal.SIGHUP)
        wait_for(lambda: daemon.log().count("reload refused, keeping the running configuration") == 2, 60)
        assert "compiled for the Edge TPU and no Edge TPU found" in daemon.log()
        pings = len(listener.having("WATCHDOG", "1"))
        listener.wait_for("WATCHDOG", "1", count=pings + 2, proc=daemon)

        config.write_text('[detect]\nscore_threshold = 0.4\n[output]\njsonl = "after.jsonl"\n')
        daemon.signal(signal.SIGHUP)
        daemon.wait_log("configuration reloaded (#1)")
        listener.wait_for("RELOADING", "1", proc=daemon)
        listener.wait_for("READY", "1", count=2, proc=daemon)   # start and the reload: the refusals never stopped it
        assert len(listener.having("RELOADING", "1")) == 1
        deadline = time.monotonic() + 30
        while not (tmp_path / "after.jsonl").exists() or not (tmp_path / "after.jsonl").read_text():
            assert time.monotonic() < deadline, daemon.log()
            time.sleep(0.1)
        assert daemon.stop() == 0
    finally:
        daemon.kill()


def _bad_model_dirs(root, model_dir) -> dict[str, object]:
    """One model directory per class of bad manifest or model the hostile-input review fed to reloads."""
    import shutil

    cases = {}

    def variant(name, edit=None, model_bytes=None, extra=None):
        d = root / name
        d.mkdir()
        for f in ("ssdlite_mobilenet_v2_person_int8.tflite", "labels.txt"):
            shutil.copy(model_dir / f, d / f)
        manifest = json.loads((model_dir / "manifest.json").read_text())
        manifest["models"].pop("float", None)
        if edit:
            edit(manifest)
        (d / "manifest.json").write_text(json.dumps(manifest))
        if model_bytes is not None:
            (d / "ssdlite_mobilenet_v2_person_int8.tflite").write_bytes(model_bytes)
        cases[name] = d

    model = (model_dir / "ssdlite_mobilenet_v2_person_int8.tflite").read_bytes()
    variant("provenance_not_an_object", lambda m: m.update(provenance="abc"))
    variant("width_a_string", lambda m: m["input"].update(width="300"))
    variant("unknown_layout", lambda m: m["output"].update(layout="yolov9"))
    variant("labels_outside", lambda m: m.update(labels="../../../etc/passwd"))
    variant("anchor_stride_zero", lambda m: m.update(output={
        "layout": "ssd_anchors", "anchor_options": {"num_layers": 1, "min_scale": 0.2, "max_scale": 0.9,
                                                    "input_size_width": 300, "input_size_height": 300,
                                                    "strides": [0]}}))
    variant("truncated_model", model_bytes=model[:len(model) // 2])
    variant("nan_threshold", lambda m: m["output"].update(max_detections=float("nan")))
    return cases


def test_every_bad_reload_keeps_the_running_pipeline(tmp_path, listener, model_dir):
    """Reload is a transaction: each bad manifest or model is refused while frames keep flowing,
    counted in edge_reloads_refused_total, and the process never restarts."""
    config = tmp_path / "edge.toml"
    config.write_text('[output]\njsonl = ""\n')
    daemon = _daemon(tmp_path, listener, "--config", str(config), watchdog_usec=1_000_000)
    cases = _bad_model_dirs(tmp_path, model_dir)
    try:
        listener.wait_for("READY", "1", proc=daemon)
        for i, (name, directory) in enumerate(cases.items(), start=1):
            config.write_text(f'[model]\npath = "{directory}"\n[output]\njsonl = ""\n')
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: daemon.log().count("reload refused, keeping the running configuration") == i, 60,
                     what=f"the refusal of {name}")
            pings = len(listener.having("WATCHDOG", "1"))
            listener.wait_for("WATCHDOG", "1", count=pings + 2, proc=daemon)      # frames still flow
        assert not listener.having("RELOADING", "1")
        assert "Traceback" not in daemon.log()
        assert "root:x:0:0" not in daemon.log()                                 # no file content echoed
        assert daemon.stop() == 0
    finally:
        daemon.kill()

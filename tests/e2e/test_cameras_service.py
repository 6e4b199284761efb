"""Several cameras over a pool of detectors, as a service (issue 15) with the events layer (issue 16).

Real: the embedded model and clip, the service's signal handling and notify socket, the events
sink. SIMULATED: the two detectors (device = "simulated": 7.2 ms per frame, outputs of one real CPU
inference per second replayed), since no Edge TPU exists here.
"""

from __future__ import annotations

import json
import signal
from pathlib import Path

from tests.e2e.service_harness import Daemon
from tests.helpers import run_edge, wait_for

CAMERAS = """
[[cameras]]
name = "north"
source = "sample"
[[cameras]]
name = "south"
source = "sample"
"""
DETECTORS = """
[[detectors]]
device = "simulated"
name = "tpu0"
invoke_ms = 7.2
[[detectors]]
device = "simulated"
name = "tpu1"
invoke_ms = 7.2
"""
EVENTS = """
[output]
jsonl = "detections.jsonl"
[events]
enabled = true
jsonl = "events.jsonl"
snapshot_dir = "snapshots"
[[events.zones]]
name = "kerb"
points = [[300, 150], [640, 150], [640, 272], [300, 272]]
"""


def _lines(path):
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_two_cameras_two_detectors_with_events_survive_bad_reloads_and_drain(tmp_path, listener):
    config = tmp_path / "edge.toml"
    good = CAMERAS + DETECTORS + EVENTS
    config.write_text(good)
    daemon = Daemon(["--config", str(config)], tmp_path, listener.address, 1_000_000)
    try:
        listener.wait_for("READY", "1", proc=daemon)
        wait_for(lambda: {e.get("camera") for e in _lines(tmp_path / "detections.jsonl")} >= {"north", "south"},
                 60, "detections from both cameras", ignore=(OSError, ValueError))
        bad = {"zone outside the frame": good.replace("[640, 150], [640, 272]", "[900, 150], [900, 272]"),
               "unknown detector": good.replace('device = "simulated"\nname = "tpu1"', 'device = "tpu"\nname = "tpu1"'),
               "camera without a source": good.replace('name = "south"\nsource = "sample"', 'name = "south"'),
               "zone on an unknown camera": good + 'cameras = ["west"]\n',
               "self-intersecting zone": good.replace("[[300, 150], [640, 150], [640, 272], [300, 272]]",
                                                      "[[300, 150], [640, 272], [640, 150], [300, 272]]")}
        for i, (what, text) in enumerate(bad.items(), start=1):
            config.write_text(text)
            daemon.signal(signal.SIGHUP)
            wait_for(lambda: daemon.log().count("reload refused, keeping the running configuration") == i, 60,
                     what=f"the refusal of a {what}")
            pings = len(listener.having("WATCHDOG", "1"))
            listener.wait_for("WATCHDOG", "1", count=pings + 2, proc=daemon)    # frames still flow
        assert not listener.having("RELOADING", "1"), "a refused reload never stops the running pipeline"
        log = daemon.log()
        assert "outside the 640x272 frame" in log and "'tpu' is not a detector" in log
        assert "camera 'south' has no source" in log and "names the camera 'west'" in log
        assert daemon.stop() == 0, daemon.log()
    finally:
        daemon.kill()
    events = [e for e in _lines(tmp_path / "events.jsonl") if e["type"] in ("new", "update", "end")]
    by_id: dict[str, list[str]] = {}
    for e in events:
        by_id.setdefault(e["after"]["id"], []).append(e["type"])
    assert by_id, "no event on the street clip"
    assert {e["after"]["camera"] for e in events} == {"north", "south"}
    for types in by_id.values():          # new → (updates) → end, none left open after SIGTERM
        assert types[0] == "new" and types[-1] == "end" and types.count("new") == 1 and types.count("end") == 1
    assert "Traceback" not in daemon.log()


def test_a_bad_camera_detector_or_zone_is_one_line_and_exit_2_at_start(tmp_path):
    cases = {
        "camera": (CAMERAS.replace('name = "south"', 'name = "north"'), "is used by an earlier camera"),
        "detector": (CAMERAS + DETECTORS.replace('device = "simulated"\nname = "tpu0"', 'device = "edgetpu:usb:x"\nname = "tpu0"'),
                     "edgetpu:usb:x"),
        "zone": (CAMERAS + EVENTS.replace("[[300, 150], [640, 150], [640, 272], [300, 272]]", "[[300, 150], [640, 150]]"),
                 "kerb"),
        "outside": (CAMERAS + EVENTS.replace("[640, 272], [300, 272]", "[640, 999], [300, 272]"),
                    "outside the 640x272 frame"),
        "both": (CAMERAS, "both name sources"),
        "zone camera": (CAMERAS + EVENTS + 'cameras = ["west"]\n', "names the camera 'west', which is not one of"),
    }
    for name, (text, expected) in cases.items():
        config = tmp_path / f"{name}.toml"
        config.write_text(text)
        extra = ["--source", "sample"] if name == "both" else []
        done = run_edge("run", "--config", str(config), "--live", "off", *extra, cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("edge: error:")]
        assert done.returncode == 2 and len(errors) == 1 and expected in errors[0], (name, done.stderr)
        assert "Traceback" not in done.stderr


def test_an_impossible_segment_chain_is_one_line_and_exit_2_at_start(tmp_path):
    """Coral's real 2-segment SSD files, wired wrong in a manifest: refused before any model loads."""
    import shutil

    from tests.conformance.conftest import coral_dir

    coral = coral_dir()
    seg = "ssd_mobilenet_v2_coco_quant_postprocess_segment_{}_of_2_edgetpu.tflite"
    default = Path(__file__).resolve().parents[2] / "models" / "ssdlite_mobilenet_v2_person"
    cases = {
        "twice": ([seg.format(0), seg.format(0)], 2, "segment"),
        "k": ([seg.format(0), seg.format(1)], 3, "names 3 Edge TPUs for the 2 segments"),
        "order": ([seg.format(1), "other_segment_0_of_2_edgetpu.tflite"], 2, "segment"),
    }
    for name, (files, tpus, expected) in cases.items():
        model = tmp_path / name
        shutil.copytree(default, model)
        for f in set(files):
            target = model / f
            shutil.copy(coral / (seg.format(0) if f.startswith("other") else f), target)
        manifest = json.loads((model / "manifest.json").read_text())
        manifest["segments"] = files
        (model / "manifest.json").write_text(json.dumps(manifest))
        devices = ", ".join(f'"edgetpu:pci:{i}"' for i in range(tpus))
        config = tmp_path / f"{name}.toml"
        config.write_text(f'[model]\npath = "{model}"\n[[detectors]]\nsegments = [{devices}]\n')
        done = run_edge("run", "--config", str(config), "--live", "off", cwd=tmp_path)
        errors = [line for line in done.stderr.splitlines() if line.startswith("edge: error:")]
        assert done.returncode == 2 and len(errors) == 1 and expected in errors[0], (name, done.stderr)
        assert "Traceback" not in done.stderr

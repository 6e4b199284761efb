"""JSONL survives a crash: a child process writing events (with size rotation) is killed with
SIGKILL mid-stream, and every line of every file is still whole, valid JSON."""

import json
import signal
import subprocess
import sys
import time

CHILD = r"""
import sys, numpy as np
from edge.capture.base import Frame
from edge.results import FrameResult, Timings
from edge.telemetry.jsonl import JsonlSink
from edge.vision.decode.base import Detection
sink = JsonlSink(sys.argv[1], "cam", max_bytes=20000, backups=2)
dets = tuple(Detection("person", 0, 0.5, (1.0, 2.0, 3.0, 4.0)) for _ in range(20))
image = np.zeros((4, 4, 3), np.uint8)
i = 0
while True:
    sink.publish(FrameResult(Frame(image, i, 0.0, 0), dets, Timings(0, 0, 0, 0, 0), "cpu"))
    i += 1
    if i == 50:
        print("writing", flush=True)
"""


def test_every_line_whole_after_sigkill(tmp_path):
    path = tmp_path / "events.jsonl"
    child = subprocess.Popen([sys.executable, "-c", CHILD, str(path)], stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline().strip() == "writing"
        deadline = time.monotonic() + 30
        while not path.with_name("events.jsonl.2").exists() and time.monotonic() < deadline:
            time.sleep(0.01)      # until it has rotated twice
    finally:
        child.send_signal(signal.SIGKILL)
        child.wait()
    # killed mid-rotation, one of the names may be missing: what exists must be whole and in order
    files = [f for f in (path.with_name("events.jsonl.2"), path.with_name("events.jsonl.1"), path) if f.exists()]
    assert len(files) >= 2
    frames = []
    for f in files:
        text = f.read_text()
        assert text == "" or text.endswith("\n")
        mine = [json.loads(line)["frame"] for line in text.splitlines()]
        if mine:
            assert mine == list(range(mine[0], mine[0] + len(mine)))
        frames += mine
    assert len(frames) > 10 and frames == sorted(frames)

"""Test helpers shared by several test modules."""

from __future__ import annotations

import json
import socket
import struct
import subprocess
import sys
import time
from pathlib import Path


def frame_result(index: int = 0, labels: tuple[str, ...] = ("person",)):
    """A pipeline result for frame ``index`` (a 64×48 black image) with one detection per label."""
    import numpy as np

    from edge.capture.base import Frame
    from edge.results import FrameResult, Timings
    from edge.vision.decode.base import Detection
    frame = Frame(np.zeros((48, 64, 3), np.uint8), index, 1.7e9 + index, 0)
    dets = tuple(Detection(label, 0, 0.9, (1.0, 2.0, 30.0, 40.0)) for label in labels)
    return FrameResult(frame, dets, Timings(0, 1, 2, 3, 4, 5), "cpu")


def fake_edgetpu_model(src: Path, dst: Path) -> Path:
    """A stand-in for an ``_edgetpu`` model: ``src`` with its custom op renamed edgetpu-custom-op.

    edgetpu_compiler output carries its compiled subgraph as the custom op "edgetpu-custom-op";
    renaming an existing custom-op code (the flatbuffer string is length-prefixed, so a shorter
    name fits in place) gives a file that, like a real one, no interpreter can run without
    libedgetpu. No Edge TPU compiler or device exists on this machine.
    """
    data = bytearray(src.read_bytes())
    old = b"TFLite_Detection_PostProcess"
    at = data.find(old)
    assert at > 4 and struct.unpack_from("<I", data, at - 4)[0] == len(old)
    new = b"edgetpu-custom-op"
    struct.pack_into("<I", data, at - 4, len(new))
    data[at:at + len(old)] = new + b"\0" * (len(old) - len(new))
    dst.write_bytes(bytes(data))
    return dst


def edgetpu_twin_dir(int8_model: Path, model_dir: Path, dst: Path) -> Path:
    """A model directory like ``edge-host compile`` leaves: ``person_edgetpu.tflite`` (a stand-in,
    see :func:`fake_edgetpu_model`) with its CPU twin ``person_int8.tflite`` named in manifest.json."""
    fake_edgetpu_model(int8_model, dst / "person_edgetpu.tflite")
    (dst / "person_int8.tflite").write_bytes(int8_model.read_bytes())
    manifest = json.loads((model_dir / "manifest.json").read_text())
    manifest["models"] = {"edgetpu": "person_edgetpu.tflite", "cpu": "person_int8.tflite"}
    (dst / "labels.txt").write_bytes((model_dir / "labels.txt").read_bytes())   # beside it: manifests are confined
    manifest["labels"] = "labels.txt"
    (dst / "manifest.json").write_text(json.dumps(manifest))
    return dst


def run_edge(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``edge`` CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago (for servers a test starts)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_for(predicate, timeout: float = 60.0, what: str = "condition", interval: float = 0.1,
             ignore: tuple[type[BaseException], ...] = ()):
    """Poll ``predicate`` until it returns something truthy (returned); AssertionError at ``timeout``.

    Exceptions of the types in ``ignore`` (e.g. OSError while a server starts) count as "not yet".
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            got = predicate()
        except ignore:
            got = None
        if got:
            return got
        time.sleep(interval)
    raise AssertionError(f"{what} not reached within {timeout} s")

"""Test helpers shared by several test modules."""

from __future__ import annotations

import struct
import subprocess
import sys
from pathlib import Path


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


def run_edge(*args: str, cwd: Path | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    """Run the ``edge`` CLI in a subprocess, as a user would."""
    return subprocess.run([sys.executable, "-m", "edge.cli", *args], capture_output=True, text=True,
                          cwd=cwd, timeout=timeout)

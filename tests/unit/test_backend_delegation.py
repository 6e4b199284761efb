"""The CPU backend names what was applied: ``cpu/xnnpack`` only when the XNNPACK delegate is in the
graph, ``cpu/builtin`` with a warning when it was asked for and the runtime went on without it.

The real failure: XNNPACK cannot initialise when /proc/cpuinfo is unreadable (systemd's
``ProcSubset=pid``); the runtime prints "Error in cpuinfo" and runs the reference kernels. That is
reproduced for real by mounting a proc with ``subset=pid`` (what ProcSubset=pid does) in private mount
and PID namespaces (needs root).
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys

import pytest

from edge.runtime.backend import TFLiteBackend
from edge.runtime.interpreter import load_runtime
from edge.runtime.model import read_model


def test_xnnpack_applied_is_named_and_measured(int8_model):
    backend = TFLiteBackend(read_model(int8_model), load_runtime(), threads=1)
    assert backend.name == "cpu/xnnpack x1"
    assert backend.xnnpack is not None and backend.xnnpack.partitions >= 1


def test_xnnpack_asked_for_but_absent_is_reported_and_warned(int8_model, caplog):
    """A runtime that silently drops the delegate (as when cpuinfo fails) is caught from the graph."""
    runtime = load_runtime()
    make = runtime.make_interpreter

    class Dropping:
        name, version = runtime.name, runtime.version

        def make_interpreter(self, path, **kw):
            kw["xnnpack"] = False
            return make(path, **kw)

    with caplog.at_level(logging.WARNING, logger="edge.runtime.backend"):
        backend = TFLiteBackend(read_model(int8_model), Dropping(), threads=1)
    assert backend.name == "cpu/builtin x1"
    assert backend.xnnpack.partitions == 0
    assert any("XNNPACK was asked for but not applied" in r.message for r in caplog.records)


def test_xnnpack_not_asked_for_is_builtin_without_a_warning(int8_model, caplog):
    with caplog.at_level(logging.WARNING, logger="edge.runtime.backend"):
        backend = TFLiteBackend(read_model(int8_model), load_runtime(), threads=1, xnnpack=False)
    assert backend.name == "cpu/builtin x1" and backend.xnnpack is None
    assert not caplog.records


PROBE = """
import logging, sys
logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(message)s")
from edge.runtime.backend import TFLiteBackend
from edge.runtime.interpreter import load_runtime
from edge.runtime.model import read_model
print("NAME", TFLiteBackend(read_model(sys.argv[1]), load_runtime(), threads=1).name, flush=True)
"""


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to mount a proc in a new mount namespace")
def test_proc_subset_pid_really_turns_xnnpack_off(int8_model):
    """What ProcSubset=pid did under systemd: without /proc/cpuinfo, XNNPACK does not start."""
    assert shutil.which("unshare"), "unshare (util-linux) is missing"
    hidden = subprocess.run(
        ["unshare", "--mount", "--pid", "--fork", "--propagation", "private", "sh", "-c",
         'mount -t proc -o subset=pid proc /proc && exec "$0" -c "$1" "$2"', sys.executable, PROBE, str(int8_model)],
        capture_output=True, text=True, timeout=120)
    assert hidden.returncode == 0, hidden.stderr
    assert "NAME cpu/builtin x1" in hidden.stdout, hidden.stdout + hidden.stderr
    assert "Error in cpuinfo" in hidden.stderr and "XNNPACK was asked for but not applied" in hidden.stderr
    shown = subprocess.run([sys.executable, "-c", PROBE, str(int8_model)], capture_output=True, text=True, timeout=120)
    assert "NAME cpu/xnnpack x1" in shown.stdout, shown.stdout + shown.stderr

"""Fuzz suite fixtures: fixed seeds, a fixed budget, the real shipped model and a Coral one.

``EDGE_FUZZ_SCALE`` multiplies every case count (default 1: about 3 minutes on 2 cores, as CI runs
it); ``EDGE_FUZZ_SAVE=1`` writes each failing case into ``tests/fuzz/corpus/`` so that it becomes a
regression case (commit it). ``EDGE_FUZZ_REPORT=FILE`` writes the figures as JSON.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import pytest

from edge.resources import default_model_dir
from tests.fuzz import harness

SEED = 14                                  # issue 14; every suite derives its own from it
SCALE = float(os.environ.get("EDGE_FUZZ_SCALE", "1"))
INT8 = "ssdlite_mobilenet_v2_person_int8.tflite"
CORAL_DEFAULT = Path(__file__).resolve().parents[3] / "shared" / "models" / "coral"


def count(n: int) -> int:
    return max(1, int(n * SCALE))


@pytest.fixture(autouse=True)
def _restore_logging():
    """edge.cli.main() in-process sets the "edge.runtime" logger's level (quiet without -v): restore
    it, so that tests after these still see that logger's INFO records in caplog."""
    import logging

    logger = logging.getLogger("edge.runtime")
    level = logger.level
    yield
    logger.setLevel(level)


@pytest.fixture(scope="session")
def person_dir(tmp_path_factory) -> Path:
    """A private copy of the shipped model directory (manifest, int8 model, labels, licence)."""
    src = default_model_dir()
    out = tmp_path_factory.mktemp("fuzz-person") / "ssdlite_mobilenet_v2_person"
    out.mkdir()
    for name in ("manifest.json", INT8, "labels.txt", "LICENSE"):
        shutil.copy(src / name, out / name)
    return out


@pytest.fixture(scope="session")
def coral_dir() -> Path:
    folder = Path(os.environ.get("EDGE_CORAL_MODELS", CORAL_DEFAULT))
    if not (folder / "mobilenet_v1_0.25_128_quant_edgetpu.tflite").is_file():
        pytest.skip(f"Coral's test-data models are not in {folder} (set EDGE_CORAL_MODELS)")
    return folder


@pytest.fixture(scope="session")
def workers(tmp_path_factory):
    """Two crash-isolating worker processes (tests/fuzz/worker.py), one per core."""
    from tests.fuzz.worker import Worker

    pool = [Worker(tmp_path_factory.mktemp("fuzz-worker")) for _ in range(2)]
    for worker in pool:     # warm up: the first `edge info` imports every runtime (seconds, more under load)
        worker.run(["info", "-m", str(default_model_dir())], 300)
    yield pool
    for worker in pool:
        worker.close()


def pytest_terminal_summary(terminalreporter):
    if not harness.FIGURES:
        return
    tr = terminalreporter
    tr.section("fuzz figures (cases by outcome)")
    total = sum(sum(c.values()) for c in harness.FIGURES.values())
    for suite, counter in sorted(harness.FIGURES.items()):
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(counter.items()))
        tr.write_line(f"{suite:<22} {sum(counter.values()):>5} cases: {kinds}")
    tr.write_line(f"{'total':<22} {total:>5} cases, {len(harness.FAILURES)} not accepted")
    for suite, case, detail in harness.FAILURES[:20]:
        tr.write_line(f"  FAIL {suite} {case}: {detail[:300]}")
    for suite, case, detail in harness.FINDINGS[:20]:
        tr.write_line(f"  unexpected (one line from the guard) {suite} {case[:80]}: {detail[:240]}")
    report = os.environ.get("EDGE_FUZZ_REPORT")
    if report:
        Path(report).write_text(json.dumps({"figures": {s: dict(c) for s, c in harness.FIGURES.items()},
                                            "failures": harness.FAILURES,
                                            "unexpected": harness.FINDINGS}, indent=1))

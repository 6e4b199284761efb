"""Mutated models through the whole of ``edge run --max-frames 3`` — the TFLite interpreter included —
in crash-isolating worker processes (two, one per core; tests/fuzz/worker.py): a native crash is a
dead worker, recorded and restarted, never a dead test run. The first cases of each model run as
plain subprocesses (``python -m edge.cli``), as a user runs them."""

from __future__ import annotations

import json
import random
from concurrent.futures import ThreadPoolExecutor

import pytest

from tests.fuzz import harness
from tests.fuzz.conftest import INT8, SEED, count

TIMEOUT = 60.0


def _cases(base: bytes, n: int, seed: str, scratch) -> list[list]:
    """``n`` mutation recipes whose result still parses as a model (edge's own reader, in-process):
    the others end at that reader, which the in-process suite covers; these reach the interpreter."""
    from edge.errors import ModelError
    from edge.runtime.model import read_model

    rng = random.Random(seed)
    cases = []
    for _ in range(n * 20):
        ops = harness.mutation_ops(len(base), rng)
        scratch.write_bytes(harness.apply_ops(base, ops))
        try:
            read_model(scratch)
        except ModelError:
            continue
        cases.append(ops)
        if len(cases) == n:
            break
    return cases


@pytest.mark.parametrize("which", ["person", "coral_cpu"])
def test_fuzz_models_run(which, person_dir, request, tmp_path, workers):
    if which == "person":
        src, n = person_dir / INT8, count(30)
    else:
        src, n = request.getfixturevalue("coral_dir") / "mobilenet_v1_0.25_128_quant.tflite", count(24)
    base = src.read_bytes()
    cases = _cases(base, n, f"{SEED}-models-run-{which}", tmp_path / "scratch.tflite")
    for i, ops in enumerate(cases):
        case = tmp_path / f"case{i}"
        case.mkdir()
        (case / "model.tflite").write_bytes(harness.apply_ops(base, ops))
        if which == "person":            # its labels beside it, as the Coral zoo ships them
            (case / "labels.txt").write_bytes((person_dir / "labels.txt").read_bytes())

    def one(i: int) -> harness.Result:
        case = tmp_path / f"case{i}"
        model = str(case / "model.tflite")
        args = ["info", "-m", model] if i % 8 == 1 else \
            ["run", "-m", model, "--max-frames", "3", "--live", "off", "--as-fast-as-possible",
             "--device", "cpu", "--threads", "1", "--jsonl", str(case / "events.jsonl")]
        before = harness.listing(case)
        # the first two cases as the user runs them (a process each, `edge info` probes every runtime:
        # seconds); the others in the crash-isolating workers
        result = harness.run_subprocess(args, TIMEOUT, cwd=case) if i < 2 else workers[i % 2].run(args, TIMEOUT)
        torn = harness.check_jsonl(case / "events.jsonl")
        if torn:
            result = harness.Result("torn", torn)
        written = harness.listing(case) - before - {"events.jsonl"}
        if written:
            result = harness.Result("escaped", f"unexpected files {sorted(written)}")
        return result

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(one, range(len(cases))))
    failures = []
    for i, (ops, result) in enumerate(zip(cases, results)):
        harness.record(f"model-run:{which}", f"#{i} {json.dumps(ops)[:200]}", result)
        if not result.accepted:
            failures.append(f"#{i} {json.dumps(ops)[:200]}: {result.kind}: {result.detail[:400]}")
            import os
            if os.environ.get("EDGE_FUZZ_SAVE"):
                folder = harness.CORPUS / "models"
                folder.mkdir(parents=True, exist_ok=True)
                (folder / f"run-{which}-{i}.json").write_text(json.dumps({"base": which, "ops": ops, "run": True}))
    assert not failures, f"{len(failures)} cases not accepted:\n" + "\n".join(failures[:15])

"""Replay the regression corpus (tests/fuzz/corpus/README.md): every case that ever failed."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from edge.host import bundle as b
from tests.fuzz import harness
from tests.fuzz.conftest import INT8

TIMEOUT = 30.0
RUN = ["run", "--max-frames", "3", "--live", "off", "--as-fast-as-possible", "--device", "cpu", "--threads", "1",
       "--jsonl", ""]


def _ids(kind: str) -> list[Path]:
    return harness.corpus_entries(kind)


def _expect_error(suite: str, path: Path, result: harness.Result) -> None:
    harness.record(f"corpus:{suite}", path.name, result)
    assert result.kind == "error", f"{path.name}: {result.kind}: {result.detail}"


@pytest.mark.parametrize("case", _ids("manifests"), ids=lambda p: p.name)
def test_corpus_manifest(case, person_dir, data_dir, tmp_path):
    base, _ = case.name.split("__", 1)
    src = person_dir if base == "person" else data_dir / "models" / base
    work = tmp_path / "model"
    shutil.copytree(src, work)
    shutil.copy(case, work / "manifest.json")
    # `edge info` describes the output layout without building the decoder: ok or an error line;
    # `edge run` builds everything: an error line.
    info = harness.record("corpus:manifests", case.name + " info",
                          harness.run_inprocess(["info", "-m", str(work)], TIMEOUT))
    assert info.kind in ("ok", "error"), f"{case.name}: edge info: {info.kind}: {info.detail}"
    _expect_error("manifests", case, harness.run_inprocess([*RUN, "-m", str(work)], TIMEOUT))
    assert harness.listing(tmp_path) == harness.listing(tmp_path) & ({"model"} | {f"model/{p.name}" for p in
                                                                                  work.iterdir()})


@pytest.mark.parametrize("case", _ids("configs"), ids=lambda p: p.name)
def test_corpus_config(case, person_dir):
    _expect_error("configs", case, harness.run_inprocess([*RUN, "-c", str(case), "-m", str(person_dir)], TIMEOUT))


@pytest.mark.parametrize("case", _ids("labels"), ids=lambda p: p.name)
def test_corpus_labels(case, person_dir):
    result = harness.run_inprocess([*RUN, "-m", str(person_dir), "--labels", str(case), "--classes", "person"],
                                   TIMEOUT)
    _expect_error("labels", case, result)
    for line in case.read_bytes().splitlines():     # the message never echoes the file's lines
        text = line.decode("utf-8", "replace").strip()
        if len(text) > 8:
            assert text not in result.detail


@pytest.mark.parametrize("case", _ids("models"), ids=lambda p: p.name)
def test_corpus_model(case, person_dir, request, tmp_path):
    recipe = json.loads(case.read_text())
    if recipe["base"] == "person":
        src = person_dir / INT8
    else:
        coral = request.getfixturevalue("coral_dir")
        src = coral / ("mobilenet_v1_0.25_128_quant" + ("_edgetpu" if recipe["base"] == "coral_edgetpu" else "")
                       + ".tflite")
    model = tmp_path / "model.tflite"
    model.write_bytes(harness.apply_ops(src.read_bytes(), recipe["ops"]))
    result = harness.record("corpus:models", case.name, harness.run_inprocess(["info", "-m", str(model)], TIMEOUT))
    assert result.accepted, f"{case.name}: edge info: {result.kind}: {result.detail}"
    if recipe.get("run"):
        result = harness.run_subprocess(["run", "-m", "model.tflite", "--max-frames", "3", "--live", "off",
                                         "--as-fast-as-possible", "--device", "cpu", "--threads", "1",
                                         "--jsonl", "events.jsonl"], 60, cwd=tmp_path)
        harness.record("corpus:models", case.name + " run", result)
        assert result.accepted, f"{case.name}: edge run: {result.kind}: {result.detail}"
        assert harness.check_jsonl(tmp_path / "events.jsonl") is None


@pytest.mark.parametrize("case", _ids("bundles"), ids=lambda p: p.name)
def test_corpus_bundle(case, tmp_path):
    dest = tmp_path / "dest"
    with pytest.raises(b.BundleError) as info:
        b.unpack_bundle(case, dest)
    harness.record("corpus:bundles", case.name, harness.Result("error", str(info.value)))
    assert "\n" not in str(info.value)
    assert not (tmp_path / "escaped.txt").exists() and not Path("/tmp/edge-escaped.txt").exists()
    assert not dest.exists() or all(p.is_file() and not p.is_symlink() for p in dest.rglob("*") if p.is_file())

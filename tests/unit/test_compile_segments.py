"""edge-host compile --segments K: the flag reaches edgetpu_compiler as --num_segments, the K output files
are found and checked as a chain, and the manifests list them as ``segments``.

edgetpu_compiler cannot be installed here (x86-64 Debian/Ubuntu only). The compiler these tests run is
a fake written below: it records its arguments, prints a log in the compiler's documented
``--num_segments`` format (one block per segment; no complete real log of a segmented compile was
found, see tests/data/edgetpu_compiler/README.md), and writes as its outputs copies of Coral's REAL
2-segment SSD MobileNet v2 (../shared/models/coral, made by the real compiler), so the files the
wrapper checks and the manifests name are real segments. $FAKE_SEGMENTS_MODE makes it misbehave.
"""

from __future__ import annotations

import json
import sys

import pytest

from edge.errors import ModelError
from edge.host.cli import main
from edge.runtime.manifest import find_manifest, load_manifest
from edge.runtime.segments import SegmentChain
from tests.conformance.conftest import coral_dir
from tests.unit.test_compile import work_dir  # noqa: F401  (the fixture: a copy of the default model directory)

SSD = "ssd_mobilenet_v2_coco_quant_postprocess"

FAKE = r'''
import argparse, os, shutil, sys
from pathlib import Path
p = argparse.ArgumentParser(prog="edgetpu_compiler")
p.add_argument("model")
p.add_argument("-o", "--out_dir", default=".")
p.add_argument("-s", action="store_true")
p.add_argument("-t", type=int)
p.add_argument("--num_segments", type=int, default=1)
args = p.parse_args()
Path(os.environ["FAKE_ARGS"]).write_text("\n".join(sys.argv[1:]))
stem, k, mode = Path(args.model).stem, args.num_segments, os.environ.get("FAKE_SEGMENTS_MODE", "")
print("Edge TPU Compiler version 16.0.384591198")
for i in range(k):
    name = f"{stem}_segment_{i}_of_{k}"
    print("Started a compilation timeout timer of 180 seconds.\n\nModel compiled successfully in 100 ms.\n\n"
          f"Input model: {name}.tflite\nInput size: 3.00MiB\nOutput model: {name}_edgetpu.tflite\n"
          "Output size: 3.50MiB\nOn-chip memory used for caching model parameters: 3.00MiB\n"
          "On-chip memory remaining for caching model parameters: 4.00MiB\n"
          "Off-chip memory used for streaming uncached model parameters: 0.00B\n"
          f"Number of Edge TPU subgraphs: 1\nTotal number of operations: {60 + i}\n"
          f"Operation log: {name}_edgetpu.log\n"
          "Compilation child process completed within timeout period.\nCompilation succeeded!")
coral = Path(os.environ["FAKE_CORAL"])
for i in range(k):
    if mode == "forget-last" and i == k - 1:
        continue
    real = 0 if mode == "segment-0-twice" else i        # the real files exist for K = 2 only
    src = coral / f"ssd_mobilenet_v2_coco_quant_postprocess_segment_{real}_of_2_edgetpu.tflite"
    shutil.copyfile(src, Path(args.out_dir) / f"{stem}_segment_{i}_of_{k}_edgetpu.tflite")
'''


@pytest.fixture
def fake_compiler(tmp_path, monkeypatch):
    script = tmp_path / "bin" / "edgetpu_compiler"
    script.parent.mkdir()
    (tmp_path / "bin" / "fake.py").write_text(FAKE)
    script.write_text(f"#!/bin/sh\nexec {sys.executable} {tmp_path / 'bin' / 'fake.py'} \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("FAKE_ARGS", str(tmp_path / "args.txt"))
    monkeypatch.setenv("FAKE_CORAL", str(coral_dir()))
    return script


STEM = "ssdlite_mobilenet_v2_person_int8"


def test_segments_flag_output_files_and_manifests(work_dir, fake_compiler, tmp_path, capsys):
    model = work_dir / f"{STEM}.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--segments", "2"]) == 0
    args = (tmp_path / "args.txt").read_text().split("\n")
    assert "--num_segments=2" in args and args[-1] == str(model)
    out = capsys.readouterr().out
    names = [f"{STEM}_segment_{i}_of_2_edgetpu.tflite" for i in range(2)]
    assert f"edgetpu segment 0: {work_dir / names[0]}" in out and f"edgetpu segment 1: {work_dir / names[1]}" in out
    # The sidecar of segment 0 lists the segments in order; there is no single edgetpu model.
    sidecar = find_manifest(work_dir / names[0])
    assert sidecar == work_dir / f"{STEM}_segment_0_of_2_edgetpu.json"
    manifest = load_manifest(sidecar)
    assert manifest.segments == tuple(work_dir / n for n in names)
    assert manifest.models == {"cpu": model} and manifest.labels == work_dir / "labels.txt"
    assert manifest.layout == "ssd_postprocess"
    provenance = manifest.provenance["edgetpu"]
    assert provenance["segments"] == names and set(provenance["sha256"]) == {*names, model.name}
    assert "--num_segments=2" in provenance["command"]
    # What the device opens from it: the real segments, wired by name.
    chain = SegmentChain.from_files(manifest.segments)
    assert chain.k == 2 and chain.output_names[0] == "TFLite_Detection_PostProcess"
    # The directory manifest gains the segments and keeps its cpu model.
    shared = load_manifest(work_dir / "manifest.json")
    assert shared.segments == manifest.segments and shared.model_for("cpu") == model
    assert shared.model_for("edgetpu") is None


def test_old_flag_name_still_works(work_dir, fake_compiler, tmp_path):
    model = work_dir / f"{STEM}.tflite"
    assert main(["compile", str(model), "--compiler", str(fake_compiler), "--num-segments", "2", "-o",
                 str(tmp_path / "out")]) == 0
    assert load_manifest(tmp_path / "out" / f"{STEM}_segment_0_of_2_edgetpu.json", confine=False).segments[1].name \
        == f"{STEM}_segment_1_of_2_edgetpu.tflite"


@pytest.mark.parametrize("value", ["0", "9", "two"])
def test_segments_out_of_range(work_dir, fake_compiler, tmp_path, capsys, value):
    with pytest.raises(SystemExit) as exc:
        main(["compile", str(work_dir / f"{STEM}.tflite"), "--compiler", str(fake_compiler), "--segments", value])
    assert exc.value.code == 2
    assert f"{value!r} is not an integer from 1 to 8" in capsys.readouterr().err
    assert not (tmp_path / "args.txt").exists()


def test_impossible_chain_from_the_compiler_is_refused(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SEGMENTS_MODE", "segment-0-twice")
    assert main(["compile", str(work_dir / f"{STEM}.tflite"), "--compiler", str(fake_compiler),
                 "--segments", "2"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "is an output of both segment 0" in err[0] and "segment 1" in err[0]
    assert not (work_dir / f"{STEM}_segment_0_of_2_edgetpu.json").exists()


def test_missing_segment_file_is_an_error(work_dir, fake_compiler, monkeypatch, capsys):
    monkeypatch.setenv("FAKE_SEGMENTS_MODE", "forget-last")
    assert main(["compile", str(work_dir / f"{STEM}.tflite"), "--compiler", str(fake_compiler),
                 "--segments", "2"]) == 2
    assert f"did not write {work_dir / (STEM + '_segment_1_of_2_edgetpu.tflite')}" in capsys.readouterr().err


# --- the manifest field ------------------------------------------------------------------------------


def _manifest(tmp_path, segments) -> str:
    (tmp_path / "m.tflite").write_bytes(b"")
    for name in ("a.tflite", "b.tflite"):
        (tmp_path / name).write_bytes(b"")
    path = tmp_path / "manifest.json"
    path.write_text(json.dumps({"format": "edge-manifest/1", "models": {"cpu": "m.tflite"}, "segments": segments}))
    with pytest.raises(ModelError) as err:
        load_manifest(path)
    assert "\n" not in str(err.value)
    return str(err.value)


@pytest.mark.parametrize("segments, expected", [
    ("a.tflite", "segments = 'a.tflite' is not a list of 2 to 8 file names"),
    (["a.tflite"], "is not a list of 2 to 8 file names"),
    ([f"s{i}.tflite" for i in range(9)], "is not a list of 2 to 8 file names"),
    (["a.tflite", "a.tflite"], "segments[1] = 'a.tflite' repeats segments[0]"),
    (["a.tflite", 3], "segments[1] = 3 is not a non-empty string"),
    (["a.tflite", "../b.tflite"], "segments[1] = '../b.tflite' resolves outside the manifest's directory"),
])
def test_manifest_segments_are_validated(tmp_path, segments, expected):
    assert expected in _manifest(tmp_path, segments)

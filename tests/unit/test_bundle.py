"""edge-host bundle: what goes in, the checksums (checked by coreutils sha256sum too), and the
refusals on unpack. Runs on the real default model directory; no TensorFlow needed."""

from __future__ import annotations

import io
import json
import shutil
import subprocess
import tarfile

import pytest

from edge.host import bundle as b
from edge.host.cli import main
from edge.runtime.manifest import load_manifest
from tests.helpers import fake_edgetpu_model

INT8 = "ssdlite_mobilenet_v2_person_int8.tflite"


@pytest.fixture
def work_dir(tmp_path, int8_model):
    """The default model directory with an Edge TPU twin added (the compiled-model stand-in of helpers)."""
    out = tmp_path / "model"
    out.mkdir()
    for name in (INT8, "labels.txt", "manifest.json", "LICENSE"):
        shutil.copy(int8_model.parent / name, out / name)
    fake_edgetpu_model(out / INT8, out / "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite")
    data = json.loads((out / "manifest.json").read_text())
    data["models"]["edgetpu"] = "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite"
    (out / "manifest.json").write_text(json.dumps(data))
    return out


def test_bundle_contents_and_sums(work_dir, tmp_path, capsys):
    out = tmp_path / "bundle.tar.gz"
    assert main(["bundle", str(work_dir), "-o", str(out)]) == 0
    assert "bundle: " in capsys.readouterr().out
    with tarfile.open(out) as tar:
        names = sorted(tar.getnames())
    top = "ssdlite_mobilenet_v2_person"
    assert names == sorted(f"{top}/{n}" for n in (
        "manifest.json", INT8, "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite", "labels.txt", "LICENSE",
        "bundle.json", "SHA256SUMS"))
    unpacked = b.unpack_bundle(out, tmp_path / "unpacked")
    assert unpacked == tmp_path / "unpacked" / top
    # The device checks with coreutils, not with Python.
    subprocess.run(["sha256sum", "--check", "--strict", "--quiet", "SHA256SUMS"], cwd=unpacked, check=True)
    info = json.loads((unpacked / "bundle.json").read_text())
    assert info["format"] == "edge-bundle/1"
    assert info["files"][INT8]["sha256"] == b.sha256(work_dir / INT8)
    manifest = load_manifest(unpacked / "manifest.json")
    assert manifest.model_for("edgetpu").is_file() and manifest.model_for("cpu").is_file()


def test_float_twin_stays_on_the_host(model_dir, tmp_path):
    bundle = b.build_bundle(model_dir, tmp_path / "b.tar.gz")
    assert "ssdlite_mobilenet_v2_person_float.tflite" not in bundle.files
    assert INT8 in bundle.files


def test_config_is_validated_and_shipped(work_dir, tmp_path, capsys):
    good = tmp_path / "edge.toml"
    good.write_text('[detect]\nscore_threshold = 0.6\n')
    bundle = b.build_bundle(work_dir, tmp_path / "b.tar.gz", config=good)
    assert "config.toml" in bundle.files
    bad = tmp_path / "bad.toml"
    bad.write_text('[detect]\nscore_treshold = 0.6\n')
    assert main(["bundle", str(work_dir), "-o", str(tmp_path / "c.tar.gz"), "--config", str(bad)]) == 2
    assert "score_treshold" in capsys.readouterr().err
    assert not (tmp_path / "c.tar.gz").exists()


def test_missing_model_is_refused(work_dir, tmp_path):
    (work_dir / "ssdlite_mobilenet_v2_person_int8_edgetpu.tflite").unlink()
    with pytest.raises(b.ConfigError, match="edgetpu model .*missing"):
        b.build_bundle(work_dir, tmp_path / "b.tar.gz")


def test_directory_without_manifest(tmp_path, capsys):
    assert main(["bundle", str(tmp_path), "-o", str(tmp_path / "b.tar.gz")]) == 2
    assert "has no manifest.json" in capsys.readouterr().err


def _rewrite(src, dst, change):
    """Copy a bundle member by member, letting ``change(name, data)`` alter or add members."""
    with tarfile.open(src) as tin, tarfile.open(dst, "w:gz") as tout:
        for member in tin.getmembers():
            data = tin.extractfile(member).read()
            for name, payload in change(member.name, data):
                info = tarfile.TarInfo(name)
                info.size = len(payload)
                tout.addfile(info, io.BytesIO(payload))


def test_tampered_file_fails_verification(work_dir, tmp_path):
    good = b.build_bundle(work_dir, tmp_path / "good.tar.gz").path

    def flip(name, data):
        if name.endswith("labels.txt"):
            data = data.replace(b"person", b"perxon")
        yield name, data
    _rewrite(good, tmp_path / "bad.tar.gz", flip)
    with pytest.raises(b.BundleError, match="checksum mismatch .*labels.txt"):
        b.unpack_bundle(tmp_path / "bad.tar.gz", tmp_path / "out")


def test_path_traversal_is_refused(work_dir, tmp_path):
    good = b.build_bundle(work_dir, tmp_path / "good.tar.gz").path

    def evil(name, data):
        yield name, data
        if name.endswith("labels.txt"):
            yield "ssdlite_mobilenet_v2_person/../../evil.sh", b"echo owned\n"
    _rewrite(good, tmp_path / "evil.tar.gz", evil)
    with pytest.raises(b.BundleError, match="refusing member"):
        b.unpack_bundle(tmp_path / "evil.tar.gz", tmp_path / "out")
    assert not (tmp_path / "evil.sh").exists()


def test_truncated_bundle(work_dir, tmp_path):
    good = b.build_bundle(work_dir, tmp_path / "good.tar.gz").path
    cut = tmp_path / "cut.tar.gz"
    cut.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(b.BundleError, match="truncated or corrupt|cannot extract"):
        b.unpack_bundle(cut, tmp_path / "out")

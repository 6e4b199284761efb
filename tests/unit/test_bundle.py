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
from edge.errors import EdgeError
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


# --- confinement and limits (issue 14) --------------------------------------------------------------

def test_labels_symlinked_out_of_the_model_dir_are_not_bundled(work_dir, tmp_path):
    secret = tmp_path / "host_secret.txt"
    secret.write_text("root:x:0:0\n")
    (work_dir / "labels.txt").unlink()
    (work_dir / "labels.txt").symlink_to(secret)
    with pytest.raises(EdgeError, match="resolves outside"):
        b.build_bundle(work_dir, tmp_path / "b.tar.gz")
    assert not (tmp_path / "b.tar.gz").exists()


def test_licence_symlinked_out_of_the_model_dir_is_refused(work_dir, tmp_path):
    (tmp_path / "passwd").write_text("root:x:0:0\n")
    (work_dir / "LICENSE.evil").symlink_to(tmp_path / "passwd")
    with pytest.raises(b.ConfigError, match="licence file .*LICENSE.evil' resolves outside"):
        b.build_bundle(work_dir, tmp_path / "b.tar.gz")


def test_too_many_members_are_refused_before_extracting(work_dir, tmp_path):
    good = b.build_bundle(work_dir, tmp_path / "good.tar.gz").path

    def many(name, data):
        yield name, data
        if name.endswith("labels.txt"):
            for i in range(b.MAX_MEMBERS + 1):
                yield f"ssdlite_mobilenet_v2_person/x{i}", b""
    _rewrite(good, tmp_path / "many.tar.gz", many)
    with pytest.raises(b.BundleError, match="holds more than a bundle can"):
        b.unpack_bundle(tmp_path / "many.tar.gz", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_device_file_is_not_a_bundle(tmp_path):
    with pytest.raises(b.BundleError, match="is not a regular file"):
        b.unpack_bundle("/dev/zero", tmp_path / "out")


# --- signatures (issue 14): real ssh-keygen keys -----------------------------------------------------

def _keypair(directory, name):
    key = directory / name
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(key)], check=True)
    return key


@pytest.fixture
def keys(tmp_path):
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is missing: apt install openssh-client")
    d = tmp_path / "keys"
    d.mkdir()
    trusted, other = _keypair(d, "builder"), _keypair(d, "intruder")
    allowed = d / "trusted_keys"
    allowed.write_text(f'builder namespaces="{b.NAMESPACE}" {(d / "builder.pub").read_text()}')
    return {"trusted": trusted, "other": other, "allowed": allowed}


def test_signed_bundle_verifies_against_the_trusted_keys(work_dir, tmp_path, keys, capsys):
    out = tmp_path / "signed.tar.gz"
    assert main(["bundle", str(work_dir), "-o", str(out), "--sign", str(keys["trusted"])]) == 0
    assert b.SIG in capsys.readouterr().out
    top = b.unpack_bundle(out, tmp_path / "unpacked", trusted_keys=keys["allowed"])
    assert (top / b.SIG).read_bytes().startswith(b"-----BEGIN SSH SIGNATURE-----")
    # The signature is over SHA256SUMS exactly: OpenSSH itself agrees.
    with open(top / b.SUMS, "rb") as sums:
        subprocess.run(["ssh-keygen", "-Y", "verify", "-f", str(keys["allowed"]), "-I", "builder", "-n",
                        b.NAMESPACE, "-s", str(top / b.SIG)], stdin=sums, check=True, capture_output=True)
    # A signed bundle still unpacks without keys (the checksums are checked as before).
    b.unpack_bundle(out, tmp_path / "no-keys")


def test_unsigned_bundle_is_refused_when_keys_are_configured(work_dir, tmp_path, keys):
    plain = b.build_bundle(work_dir, tmp_path / "plain.tar.gz").path
    with pytest.raises(b.BundleError, match="is not signed .*SHA256SUMS.sig is missing"):
        b.unpack_bundle(plain, tmp_path / "out", trusted_keys=keys["allowed"])
    assert not (tmp_path / "out").exists()      # verified before anything is extracted


def test_bundle_signed_by_an_untrusted_key_is_refused(work_dir, tmp_path, keys):
    bundle = b.build_bundle(work_dir, tmp_path / "b.tar.gz", sign_key=keys["other"]).path
    with pytest.raises(b.BundleError, match="signature's key is not in the trusted keys"):
        b.unpack_bundle(bundle, tmp_path / "out", trusted_keys=keys["allowed"])


def test_changed_model_with_recomputed_checksums_is_refused(work_dir, tmp_path, keys):
    """What an attacker with write access does: a changed model, every checksum recomputed, the old
    signature kept (or replaced by one from their own key)."""
    good = b.build_bundle(work_dir, tmp_path / "good.tar.gz", sign_key=keys["trusted"]).path
    evil_model = b"TFL3 not the model that was signed"
    with tarfile.open(good) as tar:
        members = {m.name.split("/", 1)[1]: tar.extractfile(m).read() for m in tar.getmembers()}
    members[INT8] = evil_model
    sums = dict(b.read_sums(members[b.SUMS].decode(), "test"))
    sums[INT8] = __import__("hashlib").sha256(evil_model).hexdigest()
    members[b.SUMS] = "".join(f"{digest}  {n}\n" for n, digest in sums.items()).encode()
    for variant, sig in (("kept", members[b.SIG]), ("resigned", b.sign(members[b.SUMS], keys["other"]))):
        members[b.SIG] = sig
        path = tmp_path / f"evil-{variant}.tar.gz"
        with tarfile.open(path, "w:gz") as tout:
            for n, payload in members.items():
                info = tarfile.TarInfo(f"ssdlite_mobilenet_v2_person/{n}")
                info.size = len(payload)
                tout.addfile(info, io.BytesIO(payload))
        b.unpack_bundle(path, tmp_path / f"nokeys-{variant}")     # checksums alone cannot tell
        with pytest.raises(b.BundleError, match="signature does not match|not in the trusted keys"):
            b.unpack_bundle(path, tmp_path / f"out-{variant}", trusted_keys=keys["allowed"])
        assert not (tmp_path / f"out-{variant}").exists()


def test_sign_with_a_missing_key(work_dir, tmp_path, capsys):
    assert main(["bundle", str(work_dir), "-o", str(tmp_path / "b.tar.gz"), "--sign", str(tmp_path / "nokey")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--sign" in err[0] and "does not exist" in err[0]

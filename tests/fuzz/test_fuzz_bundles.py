"""Fuzz the unpack of bundles (what ``edge-host deploy`` stages, in-process: tarfile is pure Python):
byte-level mutations of a real signed bundle and structural ones (links, devices, absolute and
``..`` names, duplicates, oversized headers, extra members). Every case is unpacked with and without
trusted keys; it must succeed or raise BundleError, within the time limit, and write nothing
outside its destination."""

from __future__ import annotations

import gzip
import io
import json
import random
import shutil
import signal
import subprocess
import tarfile
import time

import pytest

from edge.host import bundle as b
from tests.fuzz import harness
from tests.fuzz.conftest import SEED, count

TIMEOUT = 20.0


@pytest.fixture(scope="module")
def signed(person_dir, coral_dir, tmp_path_factory):
    """A small real bundle (Coral's 16 kB LSTM model stands in for the model: unpack never parses it),
    so that mutations hit tar headers and gzip framing often and each case is cheap."""
    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen is missing: apt install openssh-client")
    d = tmp_path_factory.mktemp("fuzz-bundle")
    model_dir = d / "tiny"
    model_dir.mkdir()
    shutil.copy(coral_dir / "keras_lstm_mnist_ptq.tflite", model_dir / "model.tflite")
    shutil.copy(person_dir / "labels.txt", model_dir / "labels.txt")
    manifest = json.loads((person_dir / "manifest.json").read_text())
    manifest.update(models={"cpu": "model.tflite"}, labels="labels.txt")
    (model_dir / "manifest.json").write_text(json.dumps(manifest))
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(d / "key")], check=True)
    (d / "trusted_keys").write_text(f'fuzz namespaces="{b.NAMESPACE}" {(d / "key.pub").read_text()}')
    bundle = b.build_bundle(model_dir, d / "bundle.tar.gz", sign_key=d / "key").path
    with tarfile.open(bundle) as tar:
        members = [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]
    return {"path": bundle, "members": members, "keys": d / "trusted_keys"}


def _structural(members: list[tuple[str, bytes]], rng: random.Random) -> tuple[bytes, str]:
    """A bundle rebuilt member by member with one hostile change; returns (bytes, description)."""
    top = members[0][0].split("/")[0]
    change = rng.choice(("dotdot", "absolute", "symlink", "hardlink", "device", "fifo", "dir", "dup", "extra",
                         "deep", "rename-top", "empty-name", "big-header", "drop", "nul"))
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w:gz") as tar:
        for name, data in members:
            if change == "drop" and name.endswith("SHA256SUMS"):
                continue
            info = tarfile.TarInfo(name if change != "rename-top" else name.replace(top, "other", 1)
                                   if rng.random() < 0.5 else name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
        info = tarfile.TarInfo({"dotdot": f"{top}/../escaped.txt", "absolute": "/tmp/edge-fuzz-escaped.txt",
                                "deep": f"{top}/sub/dir/x.txt", "empty-name": "", "nul": f"{top}/a\0b",
                                "dup": members[0][0]}.get(change, f"{top}/added.bin"))
        payload = b"escaped\n"
        if change == "symlink":
            info.type, info.linkname = tarfile.SYMTYPE, "/etc/passwd"
        elif change == "hardlink":
            info.type, info.linkname = tarfile.LNKTYPE, "/etc/passwd"
        elif change == "device":
            info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 5
        elif change == "fifo":
            info.type = tarfile.FIFOTYPE
        elif change == "dir":
            info.type = tarfile.DIRTYPE
        if change in ("symlink", "hardlink", "device", "fifo", "dir"):
            info.size = 0
            payload = b""
        else:
            info.size = len(payload)
        if change not in ("drop", "rename-top"):
            tar.addfile(info, io.BytesIO(payload) if payload else None)
    data = out.getvalue()
    if change == "big-header":         # a member claiming 2**40 bytes: refused before reading on
        data = _claim_size(members, 1 << 40)
    return data, change


def _claim_size(members, size: int) -> bytes:
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w") as tar:
        for name, data in members:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    blob = bytearray(raw.getvalue())
    blob[124:136] = f"{size:011o}\0".encode()          # the first header's size field
    checksum = sum(blob[:148]) + 8 * 32 + sum(blob[156:512])
    blob[148:156] = f"{checksum:06o}\0 ".encode()
    return gzip.compress(bytes(blob))


def _unpack(path, dest, keys) -> harness.Result:
    def alarm(signum, frame):
        raise harness.CaseTimeout()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, TIMEOUT)
    start = time.monotonic()
    try:
        b.unpack_bundle(path, dest, trusted_keys=keys)
        return harness.Result("ok", seconds=time.monotonic() - start)
    except b.BundleError as exc:
        text = str(exc)
        kind = "error" if "\n" not in text else "lines"
        return harness.Result(kind, text, seconds=time.monotonic() - start)
    except harness.CaseTimeout:
        return harness.Result("hang", f"over {TIMEOUT} s")
    except Exception as exc:                   # noqa: BLE001 - the harness records what escaped
        return harness.Result("traceback", f"{type(exc).__name__}: {exc}")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_fuzz_bundle_unpack(signed, tmp_path):
    rng = random.Random(f"{SEED}-bundles")
    base = signed["path"].read_bytes()
    raw = gzip.decompress(base)
    failures: list[str] = []
    escaped = tmp_path.parent / "escaped.txt"
    for i in range(count(300)):
        case = tmp_path / f"case{i}"
        case.mkdir()
        if i % 4 == 1:       # the gzip stream itself
            ops = harness.mutation_ops(len(base), rng)
            data, what = harness.apply_ops(base, ops), f"gz bytes {json.dumps(ops)[:160]}"
        elif i % 4 == 3:     # the tar inside a valid gzip stream: headers, sizes, names, padding
            ops = harness.mutation_ops(len(raw), rng)
            data, what = gzip.compress(harness.apply_ops(raw, ops)), f"tar bytes {json.dumps(ops)[:160]}"
        else:
            data, what = _structural(signed["members"], rng)
        (case / "bundle.tar.gz").write_bytes(data)
        for keys in (None, signed["keys"]):
            dest = case / ("dest-keys" if keys else "dest")
            result = _unpack(case / "bundle.tar.gz", dest, keys)
            if result.kind == "ok" and i % 2 == 0 and what != "rename-top":
                # every structural change adds, drops or repoints a member: it must never unpack
                result = harness.Result("accepted", f"hostile bundle ({what}) unpacked")
            inside = {p for p in harness.listing(case) if p.split("/")[0] in ("dest", "dest-keys")}
            outside = harness.listing(case) - {"bundle.tar.gz"} - inside
            if outside or escaped.exists() or (tmp_path.parent / "edge-fuzz-escaped.txt").exists():
                result = harness.Result("escaped", f"{what}: {sorted(outside)}")
            harness.record("bundle-unpack", f"#{i} {what}", result)
            if not result.accepted:
                failures.append(f"#{i} {what} keys={bool(keys)}: {result.kind}: {result.detail[:300]}")
        shutil.rmtree(case)
    assert not failures, f"{len(failures)} cases not accepted:\n" + "\n".join(failures[:15])

"""Deployable bundles: a model directory (+ config) packed as a .tar.gz with SHA-256 sums.

Layout inside the archive, all under one top-level directory named after the manifest::

    <name>/manifest.json            the edge-manifest/1 file (CPU and Edge TPU twins, labels...)
    <name>/<model>.tflite ...       every model the manifest names for the device (cpu, edgetpu)
    <name>/labels.txt, LICENSE*     labels and the licence files found next to the models
    <name>/config.toml              the edge configuration, when given (validated first)
    <name>/bundle.json              format, name, creation time, edge version, size and sha256 per file
    <name>/SHA256SUMS               ``sha256sum -c`` format, so the device can check with coreutils
    <name>/SHA256SUMS.sig           with ``--sign KEY``: an SSH signature of SHA256SUMS (``ssh-keygen -Y
                                    sign``, namespace ``edge-detect-bundle``), so it authenticates every file

Every file comes from inside the model directory (resolved: no ``..``, absolute path or symlink
leading out), except ``--config`` and ``--include`` files, which the user names explicitly.
The float twin stays on the host (it is only for accuracy comparisons). :func:`unpack_bundle`
refuses members outside the top directory, links and devices, oversized members; with trusted keys
(an ``allowed_signers`` file, ``/etc/edge-detect/trusted_keys`` on the device) it verifies the
signature before extracting anything and refuses an unsigned bundle; then it verifies every checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import shutil
import subprocess
import tarfile
import tempfile
import time
import zlib
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edge import __version__, bounded
from edge.errors import ConfigError, EdgeError
from edge.host.manifests import sha256
from edge.runtime.manifest import load_manifest

log = logging.getLogger(__name__)

FORMAT = "edge-bundle/1"
SUMS = "SHA256SUMS"
SIG = "SHA256SUMS.sig"
INFO = "bundle.json"
DEVICE_ROLES = ("cpu", "edgetpu")
NAMESPACE = "edge-detect-bundle"               # ssh-keygen -Y sign/verify -n: a signature for nothing else
TRUSTED_KEYS = "/etc/edge-detect/trusted_keys"  # on the device: an ssh-keygen allowed_signers file
SSH_KEYGEN_TIMEOUT_S = 30
# Unpacking limits: a bundle holds a handful of files; a model is at most 2 GiB.
MAX_MEMBERS = 256
MAX_TOTAL = 4 * bounded.GB
SMALL_MAX = bounded.MB                          # SHA256SUMS and its signature


class BundleError(EdgeError):
    """A bundle is corrupt, incomplete or does not match its checksums."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    files: tuple[str, ...]          # names inside the top directory, SHA256SUMS and bundle.json last
    size_bytes: int


def _inside(model_dir: Path, path: Path, what: str) -> Path:
    """``path`` when it resolves inside ``model_dir`` (no '..', absolute path or symlink leading out)."""
    if not path.resolve().is_relative_to(model_dir.resolve()):
        raise ConfigError(f"{what} {str(path)!r} resolves outside {str(model_dir)!r}",
                          "a bundle holds only files of the model directory: copy it there")
    return path


def _add(files: dict[str, Path], path: Path, name: str | None = None) -> None:
    name = name or path.name
    if name in files and files[name].resolve() != path.resolve():
        raise ConfigError(f"two different files would be bundled as {name!r}: {files[name]} and {path}")
    if not path.is_file():
        raise ConfigError(f"{str(path)!r} does not exist or is not a file")
    files[name] = path


def collect(model_dir: Path, config: Path | None = None, extra: list[Path] | None = None) -> tuple[str, dict]:
    """(bundle name, {name in bundle: source path}) for a model directory."""
    manifest_path = model_dir / "manifest.json"
    if not manifest_path.is_file():
        raise ConfigError(f"{str(model_dir)!r} has no manifest.json",
                          "give a model directory written by edge-host (export-ssd, quantize, compile)")
    manifest = load_manifest(manifest_path)
    files: dict[str, Path] = {}
    _add(files, manifest_path)
    for role, path in manifest.models.items():
        if role not in DEVICE_ROLES:
            log.info("not bundling the %s twin %s: the device does not use it", role, path.name)
            continue
        if path.parent.resolve() != model_dir.resolve():
            raise ConfigError(f"manifest model {role}={str(path)!r} is outside {str(model_dir)!r}",
                              "keep the models next to manifest.json")
        if not path.is_file():
            raise ConfigError(f"manifest names {role} model {path.name!r}, which is missing in {str(model_dir)!r}")
        _add(files, _inside(model_dir, path, f"manifest model {role}"))
    if manifest.labels is not None:
        _add(files, _inside(model_dir, manifest.labels, "manifest labels"))
    for licence in sorted(model_dir.glob("LICENSE*")):
        _add(files, _inside(model_dir, licence, "licence file"))
    if config is not None:
        from edge.config import load as load_config
        load_config(config)            # a configuration the device would reject never leaves the host
        _add(files, config, "config.toml")
    for path in extra or []:
        _add(files, path)
    for reserved in (SUMS, INFO, SIG):
        if reserved in files:
            raise ConfigError(f"{reserved!r} is reserved for the bundle's own checksums")
    return manifest.name, files


def _tar_add_bytes(tar: tarfile.TarFile, name: str, data: bytes, mtime: float) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    info.mtime = int(mtime)
    info.mode = 0o644
    tar.addfile(info, io.BytesIO(data))


def build_bundle(model_dir: Path, out: Path, config: Path | None = None,
                 extra: list[Path] | None = None, sign_key: Path | None = None) -> Bundle:
    """Write the bundle of ``model_dir`` to ``out`` (.tar.gz); with ``sign_key`` (an ssh private key,
    ed25519 recommended) SHA256SUMS is signed into ``SHA256SUMS.sig``."""
    if sign_key is not None and not Path(sign_key).is_file():
        raise ConfigError(f"--sign {str(sign_key)!r} does not exist", "give an ssh private key, e.g. "
                          "ssh-keygen -t ed25519 -f ~/.ssh/edge-bundle")
    name, files = collect(model_dir, config, extra)
    now = time.time()
    sums = {n: sha256(p) for n, p in sorted(files.items())}
    info = {"format": FORMAT, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "edge_version": __version__,
            "files": {n: {"sha256": sums[n], "bytes": files[n].stat().st_size} for n in sums}}
    info_bytes = (json.dumps(info, indent=2) + "\n").encode()
    sums[INFO] = hashlib.sha256(info_bytes).hexdigest()
    sums_text = "".join(f"{digest}  {n}\n" for n, digest in sums.items())
    signature = sign(sums_text.encode(), Path(sign_key)) if sign_key is not None else None
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for n, path in sorted(files.items()):
            tar.add(path, arcname=f"{name}/{n}", recursive=False,
                    filter=_normalise)
        _tar_add_bytes(tar, f"{name}/{INFO}", info_bytes, now)
        _tar_add_bytes(tar, f"{name}/{SUMS}", sums_text.encode(), now)
        if signature is not None:
            _tar_add_bytes(tar, f"{name}/{SIG}", signature, now)
    tmp.replace(out)
    names = (*sorted(files), INFO, SUMS, *((SIG,) if signature is not None else ()))
    return Bundle(out, name, names, out.stat().st_size)


def _ssh_keygen(args: list[str], data: bytes, what: str) -> subprocess.CompletedProcess:
    tool = shutil.which("ssh-keygen")
    if tool is None:
        raise BundleError("ssh-keygen is not installed, so bundle signatures cannot be made or checked",
                          "sudo apt install openssh-client")
    try:
        return subprocess.run([tool, *args], input=data, capture_output=True, timeout=SSH_KEYGEN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise BundleError(f"ssh-keygen did not finish {what} within {SSH_KEYGEN_TIMEOUT_S} s "
                          "(a key with a passphrase needs ssh-agent)") from None


def _tool_message(proc: subprocess.CompletedProcess) -> str:
    lines = [line.strip() for line in proc.stderr.decode(errors="replace").splitlines() if line.strip()]
    return "; ".join(lines[-3:]) or f"exit code {proc.returncode}"


def sign(data: bytes, key: Path) -> bytes:
    """An SSH signature (``ssh-keygen -Y sign -n edge-detect-bundle``) of ``data`` with private ``key``."""
    proc = _ssh_keygen(["-Y", "sign", "-f", str(key), "-n", NAMESPACE], data, "signing")
    if proc.returncode != 0 or not proc.stdout.startswith(b"-----BEGIN SSH SIGNATURE-----"):
        raise BundleError(f"cannot sign the bundle with {str(key)!r}: {_tool_message(proc)}",
                          "give an unencrypted ssh private key, or load it into ssh-agent")
    return proc.stdout


def verify_signature(data: bytes, signature: bytes | None, trusted_keys: Path, where: str) -> str:
    """Check ``signature`` over ``data`` against the allowed_signers file ``trusted_keys``; returns the
    signer's principal. Raises BundleError when unsigned, signed by an untrusted key, or altered."""
    keys = Path(trusted_keys)
    try:
        bounded.read_bytes(keys, SMALL_MAX, "trusted keys file", BundleError)
    except FileNotFoundError:
        raise BundleError(f"trusted keys file {str(keys)!r} does not exist",
                          "an ssh-keygen allowed_signers file: '<name> namespaces=\"edge-detect-bundle\" ssh-ed25519 AAAA…'") from None
    if signature is None:
        raise BundleError(f"{where} is not signed ({SIG} is missing) and trusted keys are configured "
                          f"({str(keys)!r})", "sign it: edge-host bundle --sign KEY")
    with tempfile.TemporaryDirectory(prefix="edge-sig-") as tmp:
        sig_path = Path(tmp) / SIG
        sig_path.write_bytes(signature)
        found = _ssh_keygen(["-Y", "find-principals", "-s", str(sig_path), "-f", str(keys)], b"", "finding the signer")
        principals = found.stdout.decode(errors="replace").split()
        if found.returncode != 0 or not principals:
            raise BundleError(f"{where}: the signature's key is not in the trusted keys {str(keys)!r}",
                              "sign with a trusted key, or add its public key there")
        proc = _ssh_keygen(["-Y", "verify", "-f", str(keys), "-I", principals[0], "-n", NAMESPACE,
                            "-s", str(sig_path)], data, "verifying")
    if proc.returncode != 0:
        raise BundleError(f"{where}: the signature does not match {SUMS} ({_tool_message(proc)})",
                          "the bundle was altered after signing: rebuild and sign it again")
    return principals[0]


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def read_sums(text: str, where: str) -> dict[str, str]:
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name or name in (".", "..", SUMS, SIG):
            raise BundleError(f"{where}: line {number} of {SUMS} is not '<sha256>  <name>': {bounded.show(line)}")
        sums[name] = digest
    return sums


def verify_dir(directory: Path) -> list[str]:
    """Check every file against SHA256SUMS; returns the names checked, raises on any difference."""
    sums_path = directory / SUMS
    if not sums_path.is_file():
        raise BundleError(f"{str(directory)!r} has no {SUMS}")
    sums = read_sums(bounded.read_text(sums_path, SMALL_MAX, SUMS, BundleError), str(directory))
    bad = [n for n, digest in sums.items() if not (directory / n).is_file() or sha256(directory / n) != digest]
    if bad:
        raise BundleError(f"checksum mismatch or missing file in {str(directory)!r}: {', '.join(bad)}",
                          "the bundle is corrupt: rebuild or copy it again")
    unlisted = sorted(p.name for p in directory.iterdir() if p.name not in sums and p.name not in (SUMS, SIG))
    if unlisted:
        raise BundleError(f"{str(directory)!r} holds files not in {SUMS}: {', '.join(unlisted)}")
    return sorted(sums)


def _members(tar: tarfile.TarFile, bundle: Path) -> list[tarfile.TarInfo]:
    """The members, checked one by one as they are read (count and sizes bounded before any data)."""
    members: list[tarfile.TarInfo] = []
    total = 0
    try:
        for m in tar:
            members.append(m)
            total += m.size
            if len(members) > MAX_MEMBERS or m.size > bounded.MODEL_MAX or total > MAX_TOTAL:
                raise BundleError(f"{str(bundle)!r} holds more than a bundle can ({len(members)} members, "
                                  f"{total} bytes so far)", "rebuild it with edge-host bundle")
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{str(bundle)!r} is truncated or corrupt ({bounded.show(str(exc), 120)})") from None
    return members


def _member_bytes(tar: tarfile.TarFile, member: tarfile.TarInfo | None) -> bytes | None:
    if member is None:
        return None
    if member.size > SMALL_MAX:
        raise BundleError(f"{member.name!r} has {member.size} bytes, more than {SMALL_MAX}")
    f = tar.extractfile(member)
    return f.read() if f is not None else None


def unpack_bundle(bundle: Path, dest: Path, trusted_keys: Path | None = None) -> Path:
    """Extract ``bundle`` into ``dest`` and verify it; returns the bundle's top directory.

    With ``trusted_keys`` (an ssh allowed_signers file) the signature of SHA256SUMS is verified
    before anything is extracted, and an unsigned bundle is refused."""
    try:
        bounded.check_regular(Path(bundle), bounded.MODEL_MAX * 2, "bundle", BundleError)
        tar = tarfile.open(bundle, "r:gz")
    except FileNotFoundError:
        raise BundleError(f"bundle {str(bundle)!r} does not exist") from None
    except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
        raise BundleError(f"{str(bundle)!r} is not a .tar.gz bundle ({bounded.show(str(exc), 120)})") from None
    with tar:
        members = _members(tar, bundle)
        tops = {PurePosixPath(m.name).parts[0] for m in members if PurePosixPath(m.name).parts}
        if len(tops) != 1:
            raise BundleError(f"{str(bundle)!r} must hold one top directory, found "
                              f"{bounded.show(sorted(tops), 120)}")
        (top,) = tops
        for m in members:
            parts = PurePosixPath(m.name).parts
            if not m.isfile() or len(parts) != 2 or m.name.startswith("/") or ".." in parts or "\0" in m.name:
                raise BundleError(f"{str(bundle)!r}: refusing member {bounded.show(m.name)} "
                                  f"(only plain files under {bounded.show(top)}/)")
        names = [PurePosixPath(m.name).parts[1] for m in members]
        if len(set(names)) != len(names):
            raise BundleError(f"{str(bundle)!r} holds a file twice", "rebuild it with edge-host bundle")
        try:
            if trusted_keys is not None:
                by_name = dict(zip(names, members))
                sums = _member_bytes(tar, by_name.get(SUMS))
                if sums is None:
                    raise BundleError(f"{str(bundle)!r} has no {SUMS}")
                verify_signature(sums, _member_bytes(tar, by_name.get(SIG)), trusted_keys, str(bundle))
            # Members were checked above; the "data" filter (Python ≥ 3.11.4) checks again.
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kwargs)
        except (tarfile.TarError, OSError, EOFError, zlib.error) as exc:
            raise BundleError(f"cannot extract {str(bundle)!r}: {bounded.show(str(exc), 160)}") from None
    verify_dir(dest / top)
    return dest / top

"""Deployable bundles: a model directory (+ config) packed as a .tar.gz with SHA-256 sums.

Layout inside the archive, all under one top-level directory named after the manifest::

    <name>/manifest.json            the edge-manifest/1 file (CPU and Edge TPU twins, labels...)
    <name>/<model>.tflite ...       every model the manifest names for the device (cpu, edgetpu)
    <name>/labels.txt, LICENSE*     labels and the licence files found next to the models
    <name>/config.toml              the edge configuration, when given (validated first)
    <name>/bundle.json              format, name, creation time, edge version, size and sha256 per file
    <name>/SHA256SUMS               ``sha256sum -c`` format, so the device can check with coreutils

The float twin stays on the host (it is only for accuracy comparisons). :func:`unpack_bundle`
refuses members outside the top directory, links and devices, and verifies every checksum.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from edge import __version__
from edge.errors import ConfigError, EdgeError
from edge.host.manifests import sha256
from edge.runtime.manifest import load_manifest

log = logging.getLogger(__name__)

FORMAT = "edge-bundle/1"
SUMS = "SHA256SUMS"
INFO = "bundle.json"
DEVICE_ROLES = ("cpu", "edgetpu")


class BundleError(EdgeError):
    """A bundle is corrupt, incomplete or does not match its checksums."""


@dataclass(frozen=True)
class Bundle:
    path: Path
    name: str
    files: tuple[str, ...]          # names inside the top directory, SHA256SUMS and bundle.json last
    size_bytes: int


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
        _add(files, path)
    if manifest.labels is not None:
        _add(files, manifest.labels)
    for licence in sorted(model_dir.glob("LICENSE*")):
        _add(files, licence)
    if config is not None:
        from edge.config import load as load_config
        load_config(config)            # a configuration the device would reject never leaves the host
        _add(files, config, "config.toml")
    for path in extra or []:
        _add(files, path)
    for reserved in (SUMS, INFO):
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
                 extra: list[Path] | None = None) -> Bundle:
    """Write the bundle of ``model_dir`` to ``out`` (.tar.gz)."""
    name, files = collect(model_dir, config, extra)
    now = time.time()
    sums = {n: sha256(p) for n, p in sorted(files.items())}
    info = {"format": FORMAT, "name": name, "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(now)),
            "edge_version": __version__,
            "files": {n: {"sha256": sums[n], "bytes": files[n].stat().st_size} for n in sums}}
    info_bytes = (json.dumps(info, indent=2) + "\n").encode()
    sums[INFO] = hashlib.sha256(info_bytes).hexdigest()
    sums_text = "".join(f"{digest}  {n}\n" for n, digest in sums.items())
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    with tarfile.open(tmp, "w:gz", compresslevel=6) as tar:
        for n, path in sorted(files.items()):
            tar.add(path, arcname=f"{name}/{n}", recursive=False,
                    filter=_normalise)
        _tar_add_bytes(tar, f"{name}/{INFO}", info_bytes, now)
        _tar_add_bytes(tar, f"{name}/{SUMS}", sums_text.encode(), now)
    tmp.replace(out)
    return Bundle(out, name, (*sorted(files), INFO, SUMS), out.stat().st_size)


def _normalise(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.uid = info.gid = 0
    info.uname = info.gname = ""
    info.mode = 0o644
    return info


def read_sums(text: str, where: str) -> dict[str, str]:
    sums = {}
    for number, line in enumerate(text.splitlines(), 1):
        digest, sep, name = line.partition("  ")
        if not sep or len(digest) != 64 or not name or "/" in name:
            raise BundleError(f"{where}: line {number} of {SUMS} is not '<sha256>  <name>': {line!r}")
        sums[name] = digest
    return sums


def verify_dir(directory: Path) -> list[str]:
    """Check every file against SHA256SUMS; returns the names checked, raises on any difference."""
    sums_path = directory / SUMS
    if not sums_path.is_file():
        raise BundleError(f"{str(directory)!r} has no {SUMS}")
    sums = read_sums(sums_path.read_text(encoding="utf-8"), str(directory))
    bad = [n for n, digest in sums.items() if not (directory / n).is_file() or sha256(directory / n) != digest]
    if bad:
        raise BundleError(f"checksum mismatch or missing file in {str(directory)!r}: {', '.join(bad)}",
                          "the bundle is corrupt: rebuild or copy it again")
    unlisted = sorted(p.name for p in directory.iterdir() if p.name not in sums and p.name != SUMS)
    if unlisted:
        raise BundleError(f"{str(directory)!r} holds files not in {SUMS}: {', '.join(unlisted)}")
    return sorted(sums)


def unpack_bundle(bundle: Path, dest: Path) -> Path:
    """Extract ``bundle`` into ``dest`` and verify it; returns the bundle's top directory."""
    try:
        tar = tarfile.open(bundle, "r:gz")
    except FileNotFoundError:
        raise BundleError(f"bundle {str(bundle)!r} does not exist") from None
    except (tarfile.TarError, OSError) as exc:
        raise BundleError(f"{str(bundle)!r} is not a .tar.gz bundle ({exc})") from None
    with tar:
        try:
            members = tar.getmembers()
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"{str(bundle)!r} is truncated or corrupt ({exc})") from None
        tops = {PurePosixPath(m.name).parts[0] for m in members if m.name}
        if len(tops) != 1:
            raise BundleError(f"{str(bundle)!r} must hold one top directory, found {sorted(tops)}")
        (top,) = tops
        for m in members:
            parts = PurePosixPath(m.name).parts
            if not m.isfile() or len(parts) != 2 or m.name.startswith("/") or ".." in parts:
                raise BundleError(f"{str(bundle)!r}: refusing member {m.name!r} (only plain files under {top}/)")
        try:
            # Members were checked above; the "data" filter (Python ≥ 3.11.4) checks again.
            kwargs = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
            tar.extractall(dest, members=members, **kwargs)
        except (tarfile.TarError, OSError, EOFError) as exc:
            raise BundleError(f"cannot extract {str(bundle)!r}: {exc}") from None
    verify_dir(dest / top)
    return dest / top

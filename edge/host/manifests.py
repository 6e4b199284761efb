"""Writing ``edge-manifest/1`` files on the host (the format lives in :mod:`edge.runtime.manifest`).

Every host command that writes a model writes its manifest through :func:`write_manifest`, which
validates the result with the device's own reader before returning, so a manifest the device
would reject never leaves the host.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path
from typing import Any

from edge.runtime.manifest import FORMAT, InputSpec, load_manifest


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def source_sha256(path: Path) -> str:
    """SHA-256 of a file, or of a directory's files (names and contents, in sorted order)."""
    if path.is_file():
        return sha256(path)
    digest = hashlib.sha256()
    for f in sorted(p for p in path.rglob("*") if p.is_file()):
        digest.update(str(f.relative_to(path)).encode() + b"\0" + bytes.fromhex(sha256(f)))
    return digest.hexdigest()


def input_dict(spec: InputSpec, width: int, height: int) -> dict[str, Any]:
    """The manifest's ``input`` table for a model of input size ``width`` x ``height``."""
    table: dict[str, Any] = {"width": width, "height": height, "colour": spec.colour,
                             "mean": list(spec.mean), "std": list(spec.std), "resize": spec.resize}
    if spec.resize == "letterbox":
        table["pad_value"] = spec.pad_value
    return table


def write_labels(out_dir: Path, labels: list[str] | None, name: str = "labels.txt") -> str | None:
    """labels.txt (one per line) in ``out_dir``; returns its manifest name, None without labels."""
    if not labels:
        return None
    (out_dir / name).write_text("\n".join(labels) + "\n", encoding="utf-8")
    return name


def read_labels(path: str | Path) -> list[str]:
    """A labels file (any format :func:`edge.vision.labels.load_labels` reads) as a list indexed by
    class id. Ids the file does not use (the gaps of COCO's 90-id files) are empty strings, which
    :func:`write_labels` writes as blank lines: the device's reader keeps their index, so class ids
    survive the round trip and the list's length is the model's class count."""
    from edge.vision.labels import load_labels
    table = load_labels(path)
    return [table.get(i, "") for i in range(max(table) + 1)]


def copy_licence(out_dir: Path, licence: Path | None) -> None:
    if licence:
        shutil.copyfile(licence, out_dir / "LICENSE")


def write_manifest(path: Path, *, name: str, task: str, models: dict[str, str], labels: str | None,
                   input: dict[str, Any], output: dict[str, Any], provenance: dict[str, Any]) -> dict:
    """Write the manifest (model paths relative to its directory, SHA-256 of each model added to
    the provenance) and read it back with the device's loader; returns the written dict."""
    base = path.parent
    provenance = dict(provenance)
    provenance["sha256"] = {file: sha256(base / file) for file in sorted(set(models.values()))}
    manifest = {"format": FORMAT, "name": name, "task": task, "models": dict(models)}
    if labels:
        manifest["labels"] = labels
    manifest.update({"input": input, "output": output, "provenance": provenance})
    path.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    load_manifest(path)
    return manifest

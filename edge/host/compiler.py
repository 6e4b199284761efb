"""``edgetpu_compiler``: run it, check its exit code, and read its log into numbers.

The compiler (https://coral.ai/docs/edgetpu/compiler/) exists only for x86-64 Debian/Ubuntu, from
Coral's apt repository (package ``edgetpu-compiler``). Its standard output for each compiled model,
as published (tests/data/edgetpu_compiler/yolov5s_224_v16.log, real output of version 16)::

    Edge TPU Compiler version 16.0.384591198
    Started a compilation timeout timer of 180 seconds.

    Model compiled successfully in 3173 ms.

    Input model: yolov5s-int8-224.tflite
    Input size: 7.37MiB
    Output model: yolov5s-int8-224_edgetpu.tflite
    Output size: 8.34MiB
    On-chip memory used for caching model parameters: 6.08MiB
    On-chip memory remaining for caching model parameters: 0.00B
    Off-chip memory used for streaming uncached model parameters: 1.70MiB
    Number of Edge TPU subgraphs: 2
    Total number of operations: 294
    Operation log: yolov5s-int8-224_edgetpu.log

    Model successfully compiled but not all operations are supported by the Edge TPU. ...
    Number of operations that will run on Edge TPU: 289
    Number of operations that will run on CPU: 5

    Operator                       Count      Status          (with -s / --show_operations)

    RESIZE_NEAREST_NEIGHBOR        2          Mapped to Edge TPU
    CONCATENATION                  1          Operation is otherwise supported, but not mapped due to ...
    ...
    Compilation child process completed within timeout period.
    Compilation succeeded!

Version 15 prints neither the timer lines nor "Compilation succeeded!". When every op is mapped the
two "Number of operations that will run" lines are absent. With ``--num_segments N`` the block
repeats per segment (``<stem>_segment_<i>_of_<N>``); with ``--search_delegate`` failed attempts
("Try to compile segment with N ops" ... "Compilation failed!") may precede the successful one.
Failures print ``ERROR: ...``, ``Compilation failed: ...``, ``Compilation failed!``,
``Internal compiler error. Aborting!`` or ``Invalid model: ...`` / ``Model not quantized`` and
exit non-zero.
"""

from __future__ import annotations

import json
import logging
import os
import platform
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import EdgeError, ModelError
from edge.host.manifests import sha256
from edge.runtime.model import read_model

log = logging.getLogger(__name__)

COMPILER = "edgetpu_compiler"
INSTALL_REMEDY = ("edgetpu_compiler runs only on x86-64 Linux (Debian/Ubuntu): add Coral's apt repository "
                  "(echo 'deb https://packages.cloud.google.com/apt coral-edgetpu-stable main' | sudo tee "
                  "/etc/apt/sources.list.d/coral-edgetpu.list; curl https://packages.cloud.google.com/apt/doc/"
                  "apt-key.gpg | sudo apt-key add -), then: sudo apt-get update && sudo apt-get install "
                  "edgetpu-compiler (https://coral.ai/docs/edgetpu/compiler/); or give its path with --compiler")

_UNITS = {"B": 1, "KiB": 1 << 10, "MiB": 1 << 20, "GiB": 1 << 30}
_ERROR_MARKERS = ("ERROR:", "Compilation failed", "Internal compiler error", "Model not quantized",
                  "Invalid model", "Aborting")


class CompilerError(EdgeError):
    """edgetpu_compiler is missing, failed, or timed out."""


class CompileGateError(EdgeError):
    """The model compiled, but more ops run on the CPU than allowed (a finding, not bad input)."""

    exit_code = 1


@dataclass(frozen=True)
class CompileOptions:
    out_dir: Path
    show_operations: bool = True                # -s
    min_runtime_version: int | None = None      # -m
    multiple_subgraphs: bool = False            # -a (experimental in the compiler)
    search_delegate: bool = False               # -d
    num_segments: int | None = None             # --num_segments (pipelining over N Edge TPUs)
    timeout_s: int = 180                        # -t, the compiler's own timer

    def arguments(self) -> list[str]:
        args = ["-o", str(self.out_dir), "-t", str(self.timeout_s)]
        if self.show_operations:
            args.append("-s")
        if self.min_runtime_version is not None:
            args += ["-m", str(self.min_runtime_version)]
        if self.multiple_subgraphs:
            args.append("-a")
        if self.search_delegate:
            args.append("-d")
        if self.num_segments is not None:
            args.append(f"--num_segments={self.num_segments}")
        return args


@dataclass(frozen=True)
class SegmentLog:
    """The compiler's report on one output model."""

    input_model: str = ""
    output_model: str = ""
    input_bytes: int = 0
    output_bytes: int = 0
    on_chip_used: int = 0              # bytes of parameters cached on the Edge TPU
    on_chip_remaining: int = 0
    off_chip_used: int = 0             # bytes streamed from host memory at every inference
    edgetpu_subgraphs: int = 0
    total_ops: int = 0
    tpu_ops: int | None = None         # None: the log has no counts (then all ops are mapped)
    cpu_ops: int | None = None
    operators: tuple[tuple[str, int, str], ...] = ()   # (operator, count, status) with -s

    @property
    def mapped(self) -> int:
        return self.total_ops if self.tpu_ops is None else self.tpu_ops

    @property
    def on_cpu(self) -> int:
        return 0 if self.cpu_ops is None else self.cpu_ops


@dataclass(frozen=True)
class CompileLog:
    version: str = ""
    succeeded: bool = False
    errors: tuple[str, ...] = ()
    segments: tuple[SegmentLog, ...] = ()
    retried: tuple[str, ...] = ()      # messages of failed attempts a later attempt replaced (-d)

    @property
    def tpu_ops(self) -> int:
        return sum(s.mapped for s in self.segments)

    @property
    def cpu_ops(self) -> int:
        return sum(s.on_cpu for s in self.segments)

    def lines(self) -> list[str]:
        out = [f"Edge TPU Compiler {self.version or '(version not reported)'}: "
               f"{'succeeded' if self.succeeded else 'FAILED'}"]
        out += [f"error: {e}" for e in self.errors]
        if self.retried:
            out.append(f"earlier attempts that failed ({len(self.retried)} messages), replaced by a later "
                       f"successful one: {self.retried[0]}")
        for s in self.segments:
            out.append(f"{s.input_model} -> {s.output_model} ({_size(s.input_bytes)} -> {_size(s.output_bytes)})")
            out.append(f"  {'ops on Edge TPU':<36}{s.mapped}/{s.total_ops}")
            out.append(f"  {'ops on CPU':<36}{s.on_cpu}")
            out.append(f"  {'Edge TPU subgraphs':<36}{s.edgetpu_subgraphs}")
            out.append(f"  {'on-chip memory used':<36}{_size(s.on_chip_used)}")
            out.append(f"  {'on-chip memory remaining':<36}{_size(s.on_chip_remaining)}")
            out.append(f"  {'off-chip memory (streamed)':<36}{_size(s.off_chip_used)}")
            if s.operators:
                out.append(f"  {'Operator':<32}{'Count':<8}Status")
                out += [f"  {name:<32}{n:<8}{status}" for name, n, status in s.operators]
        return out

    def as_dict(self) -> dict:
        return {"version": self.version, "succeeded": self.succeeded, "errors": list(self.errors),
                "retried": list(self.retried),
                "tpu_ops": self.tpu_ops, "cpu_ops": self.cpu_ops,
                "segments": [{"input_model": s.input_model, "output_model": s.output_model,
                              "input_bytes": s.input_bytes, "output_bytes": s.output_bytes,
                              "on_chip_used": s.on_chip_used, "on_chip_remaining": s.on_chip_remaining,
                              "off_chip_used": s.off_chip_used, "edgetpu_subgraphs": s.edgetpu_subgraphs,
                              "total_ops": s.total_ops, "tpu_ops": s.mapped, "cpu_ops": s.on_cpu,
                              "operators": [{"operator": o, "count": n, "status": st}
                                            for o, n, st in s.operators]}
                             for s in self.segments]}


def _size(n: int) -> str:
    for unit in ("GiB", "MiB", "KiB"):
        if n >= _UNITS[unit]:
            return f"{n / _UNITS[unit]:.2f} {unit}"
    return f"{n} B"


def parse_size(text: str) -> int:
    """``3.39MiB`` / ``1.75KiB`` / ``0.00B`` → bytes."""
    m = re.fullmatch(r"\s*([0-9.]+)\s*([KMG]iB|B)\s*", text)
    if not m:
        raise ValueError(f"not a compiler size: {text!r}")
    return round(float(m.group(1)) * _UNITS[m.group(2)])


_FIELDS = {
    "Input model": ("input_model", str), "Output model": ("output_model", str),
    "Input size": ("input_bytes", parse_size), "Output size": ("output_bytes", parse_size),
    "On-chip memory used for caching model parameters": ("on_chip_used", parse_size),
    "On-chip memory remaining for caching model parameters": ("on_chip_remaining", parse_size),
    "Off-chip memory used for streaming uncached model parameters": ("off_chip_used", parse_size),
    "Number of Edge TPU subgraphs": ("edgetpu_subgraphs", int),
    "Total number of operations": ("total_ops", int),
    "Number of operations that will run on Edge TPU": ("tpu_ops", int),
    "Number of operations that will run on CPU": ("cpu_ops", int),
}
_SUCCEEDED = "Compilation succeeded!"
_OPERATOR_ROW = re.compile(r"^([A-Z][A-Za-z0-9_]*)\s+(\d+)\s+(\S.*?)\s*$")


def parse_log(text: str) -> CompileLog:
    """Read the compiler's standard output into a :class:`CompileLog` (one segment per output model).

    Errors of an attempt that a later "Compilation succeeded!" replaced (``--search_delegate``
    retries) are kept in ``retried``, not in ``errors``.
    """
    version = ""
    errors: list[str] = []
    retried: list[str] = []
    segments: list[dict] = []
    in_table = False
    for raw in text.splitlines():
        line = raw.strip()
        if not line:
            continue
        m = re.match(r"Edge TPU Compiler version (\S+)", line)
        if m:
            version = m.group(1)
            continue
        if in_table:
            row = _OPERATOR_ROW.match(line)
            if row:
                segments[-1]["operators"].append((row.group(1), int(row.group(2)), row.group(3)))
                continue
            in_table = False
        if line == _SUCCEEDED:
            retried += errors
            errors = []
            continue
        if any(marker in line for marker in _ERROR_MARKERS):
            errors.append(line)
            continue
        key, sep, value = line.partition(":")
        if sep and key in _FIELDS:
            name, convert = _FIELDS[key]
            if name == "input_model":
                segments.append({})
                in_table = False
            if not segments:
                segments.append({})
            try:
                segments[-1][name] = convert(value.strip())
            except ValueError:
                errors.append(f"unreadable compiler line: {line}")
            continue
        if line.split()[:3] == ["Operator", "Count", "Status"]:
            in_table = True
            if not segments:
                segments.append({})
            segments[-1].setdefault("operators", [])
            continue
    parsed = tuple(SegmentLog(**{**s, "operators": tuple(s.get("operators", ()))}) for s in segments)
    ok_marker = _SUCCEEDED in text or "Model compiled successfully" in text
    return CompileLog(version, ok_marker and not errors, tuple(errors), parsed, tuple(retried))


def find_compiler(explicit: str | None = None) -> Path:
    """The compiler executable: ``explicit`` if given, else ``edgetpu_compiler`` on PATH (x86-64 Linux)."""
    if explicit:
        path = Path(explicit)
        if not (path.is_file() and os.access(path, os.X_OK)):
            raise CompilerError(f"--compiler {explicit!r} is not an executable file", INSTALL_REMEDY)
        return path
    machine = platform.machine().lower()
    if not sys.platform.startswith("linux") or machine not in ("x86_64", "amd64"):
        raise CompilerError(f"edgetpu_compiler is not available for {sys.platform}/{machine}", INSTALL_REMEDY)
    found = shutil.which(COMPILER)
    if found is None:
        raise CompilerError(f"{COMPILER} is not on PATH", INSTALL_REMEDY)
    return Path(found)


def output_models(model: Path, options: CompileOptions) -> list[Path]:
    """The files the compiler writes for ``model``."""
    stem = model.stem
    if options.num_segments and options.num_segments > 1:
        n = options.num_segments
        return [options.out_dir / f"{stem}_segment_{i}_of_{n}_edgetpu.tflite" for i in range(n)]
    return [options.out_dir / f"{stem}_edgetpu.tflite"]


@dataclass(frozen=True)
class CompileResult:
    command: list[str]
    log: CompileLog
    outputs: list[Path] = field(default_factory=list)
    stdout: str = ""


def validate_source(model: Path) -> None:
    """Refuse what the compiler would reject: missing, already compiled, or not full-integer int8."""
    info = read_model(model)
    if info.edgetpu:
        raise ModelError(f"{str(model)!r} is already compiled for the Edge TPU",
                         "give the CPU (int8) model it was compiled from")
    if info.precision != "int8":
        raise ModelError(f"{str(model)!r} is a {info.precision} model; edgetpu_compiler needs a full-integer "
                         "int8 model (it would fail with \"Model not quantized\")",
                         "quantize it first: edge-host quantize --mode int8")


def compile_model(model: Path, options: CompileOptions, compiler: Path) -> CompileResult:
    """Run the compiler on a full-integer model; raise :class:`CompilerError` when it fails."""
    validate_source(model)
    options.out_dir.mkdir(parents=True, exist_ok=True)
    command = [str(compiler), *options.arguments(), str(model)]
    log.info("running %s", " ".join(command))
    try:
        proc = subprocess.run(command, capture_output=True, text=True, timeout=options.timeout_s + 60)
    except subprocess.TimeoutExpired:
        raise CompilerError(f"{COMPILER} did not finish within {options.timeout_s + 60} s",
                            "raise --timeout or try --search-delegate") from None
    except OSError as exc:
        raise CompilerError(f"cannot run {str(compiler)!r}: {exc.strerror}", INSTALL_REMEDY) from None
    text = proc.stdout + ("\n" + proc.stderr if proc.stderr else "")
    parsed = parse_log(text)
    if proc.returncode != 0 or not parsed.succeeded:
        reasons = "; ".join(parsed.errors) or (text.strip().splitlines() or ["no output"])[-1]
        raise CompilerError(f"{COMPILER} failed on {str(model)!r} (exit code {proc.returncode}): {reasons}",
                            "see the operation log; edge-host check-edgetpu says which ops cannot map")
    outputs = output_models(model, options)
    missing = [str(p) for p in outputs if not p.is_file()]
    if missing:
        raise CompilerError(f"{COMPILER} reported success but did not write {', '.join(missing)}")
    if len(outputs) > 1:
        from edge.runtime.segments import SegmentChain

        SegmentChain.from_files(outputs)     # the device's own check: names, wiring, dtypes and shapes
        if len(parsed.segments) != len(outputs):
            log.warning("%s wrote %d segments but its log describes %d", COMPILER, len(outputs), len(parsed.segments))
    return CompileResult(command, parsed, outputs, text)


def write_manifests(source: Path, result: CompileResult) -> list[Path]:
    """Manifests naming the compiled model and its CPU twin, so ``edge run`` picks either.

    A model compiled into segments (``--segments K``) gets ``"segments": [...]`` (segment 0 first)
    instead of an ``edgetpu`` role, in the sidecar of segment 0 (``<stem>_segment_0_of_K_edgetpu.json``)
    and in the directory manifest.

    Always a sidecar ``<stem>_edgetpu.json`` next to the compiled model (``find_manifest`` reads it
    first); when the compiled model sits in the source's directory and that directory's
    ``manifest.json`` names the source, the ``edgetpu`` role is added there too. Labels, input and
    output sections are carried over from the source's manifest when it has one.
    """
    from edge.runtime.manifest import FORMAT, find_manifest, load_manifest

    compiled = result.outputs[0]
    segmented = len(result.outputs) > 1
    source_manifest = find_manifest(source)
    base: dict = {}
    if source_manifest is not None:
        base = json.loads(source_manifest.read_text(encoding="utf-8"))
    provenance = {"compiler": "edgetpu_compiler", "compiler_version": result.log.version,
                  "command": " ".join(Path(c).name if i == 0 else c for i, c in enumerate(result.command)),
                  "tpu_ops": result.log.tpu_ops, "cpu_ops": result.log.cpu_ops,
                  "segments": [p.name for p in result.outputs],
                  "sha256": {**{p.name: sha256(p) for p in result.outputs}, source.name: sha256(source)}}
    written = []
    sidecar = compiled.with_suffix(".json")
    rel = lambda p: os.path.relpath(p, compiled.parent)  # noqa: E731 - paths relative to the manifest
    data = {"format": FORMAT, "name": base.get("name", source.stem), "task": base.get("task", "detection"),
            "models": {"edgetpu": compiled.name, "cpu": rel(source)}}
    if segmented:       # no single edgetpu model: segment 0 alone is not the model
        data["models"] = {"cpu": rel(source)}
        data["segments"] = [p.name for p in result.outputs]
    if source_manifest is not None:
        src_dir = source_manifest.parent
        if base.get("labels"):
            data["labels"] = rel(src_dir / base["labels"])
        for key in ("input", "output"):
            if key in base:
                data[key] = base[key]
        if base.get("models", {}).get("float"):
            data["models"]["float"] = rel(src_dir / base["models"]["float"])
    data["provenance"] = {**base.get("provenance", {}), "edgetpu": provenance}
    sidecar.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    # what the device would read; raises if it is not valid. Not confined: with --out elsewhere the
    # sidecar names the source twin in its own directory (a bundle then refuses it, as the device would).
    load_manifest(sidecar, confine=False)
    written.append(sidecar)
    shared = compiled.parent / "manifest.json"
    if source_manifest == shared and load_manifest(shared).role_of(source) == "cpu":
        if segmented:
            base["segments"] = [p.name for p in result.outputs]
        else:
            base.setdefault("models", {})["edgetpu"] = compiled.name
        base.setdefault("provenance", {})["edgetpu"] = provenance
        shared.write_text(json.dumps(base, indent=2) + "\n", encoding="utf-8")
        load_manifest(shared)
        written.append(shared)
    return written

"""The TFLite runtime chain: ai-edge-litert, then tflite-runtime, then tensorflow.lite.

LiteRT (``ai-edge-litert``) is the maintained successor of ``tflite-runtime`` and works with
numpy 2; ``tflite-runtime`` is frozen at 2.14 (numpy<2, Python <= 3.11); full TensorFlow is the
last resort. :func:`load_runtime` returns the first that imports, logs why the earlier ones did
not, and :func:`probe_runtimes` reports every candidate for ``edge info``.

A runtime built against numpy 1.x is refused under numpy 2 before it is imported: tflite-runtime
2.14 imports with only a printed warning there, and its first interpreter then fails with a
SystemError (numpy's C API is not initialised in its extension).
"""

from __future__ import annotations

import functools
import importlib
import importlib.metadata
import logging
import re
from dataclasses import dataclass
from typing import Any, Callable

from edge.errors import ConfigError, RuntimeChainError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Candidate:
    name: str          # distribution name on PyPI
    module: str        # module that holds Interpreter and load_delegate
    dist: str          # distribution whose version is reported


CANDIDATES = (
    Candidate("ai-edge-litert", "ai_edge_litert.interpreter", "ai-edge-litert"),
    Candidate("tflite-runtime", "tflite_runtime.interpreter", "tflite-runtime"),
    Candidate("tensorflow", "tensorflow", "tensorflow"),   # its public tf.lite API
)
NAMES = tuple(c.name for c in CANDIDATES)

# Runtime -> its last release built against numpy 1.x (tflite-runtime's last release is 2.14.0).
NUMPY1_ONLY = {"tflite-runtime": (2, 14)}
NUMPY1_REMEDY = "pip install 'numpy<2' in this environment, or use ai-edge-litert"


class Unusable(Exception):
    """A runtime that is installed but cannot work here; the message says why."""


@dataclass(frozen=True)
class Runtime:
    """A loaded TFLite runtime: its Interpreter class and delegate loader."""

    name: str
    version: str
    Interpreter: type
    load_delegate: Callable[..., Any]
    OpResolverType: Any  # enum with BUILTIN_WITHOUT_DEFAULT_DELEGATES (XNNPACK off), or None

    def make_interpreter(self, model_path: str, *, num_threads: int | None = None,
                         delegates: list | None = None, xnnpack: bool = True) -> Any:
        kwargs: dict[str, Any] = {"model_path": model_path, "num_threads": num_threads}
        if delegates:
            kwargs["experimental_delegates"] = delegates
        if not xnnpack:
            if self.OpResolverType is None:
                raise ConfigError(f"runtime {self.name} {self.version} cannot disable XNNPACK")
            kwargs["experimental_op_resolver_type"] = self.OpResolverType.BUILTIN_WITHOUT_DEFAULT_DELEGATES
        try:
            return self.Interpreter(**kwargs)
        except SystemError as exc:   # a C extension whose numpy C API failed to initialise
            raise RuntimeChainError(f"{self.name} {self.version} cannot create an interpreter with numpy "
                                    f"{_numpy_version()} ({first_line(exc)})", NUMPY1_REMEDY) from None


@dataclass(frozen=True)
class Probe:
    name: str
    version: str | None
    error: str | None   # why it did not load; None when it did


def _dist_version(dist: str) -> str | None:
    try:
        return importlib.metadata.version(dist)
    except importlib.metadata.PackageNotFoundError:
        return None


def _numpy_version() -> str:
    import numpy
    return numpy.__version__


def _release(version: str) -> tuple[int, int]:
    """(major, minor) of a version string such as '2.14.0' or '2.0.0rc1'."""
    match = re.match(r"(\d+)(?:\.(\d+))?", version)
    return (int(match[1]), int(match[2] or 0)) if match else (0, 0)


def numpy_conflict(name: str, version: str | None, numpy_version: str) -> str | None:
    """Why runtime ``name`` at ``version`` cannot work with ``numpy_version``, or None when it can."""
    last = NUMPY1_ONLY.get(name)
    if last is None or version is None or _release(numpy_version)[0] < 2 or _release(version) > last:
        return None
    return (f"built against numpy 1.x, unusable with numpy {numpy_version} (it imports with a warning, then "
            f"fails with a SystemError); {NUMPY1_REMEDY}")


def _import(candidate: Candidate) -> Runtime:
    """Import one candidate; raises ImportError (or the runtime's own load error), or
    :class:`Unusable` without importing it when it cannot work with this numpy."""
    conflict = numpy_conflict(candidate.name, _dist_version(candidate.dist), _numpy_version())
    if conflict:
        raise Unusable(conflict)
    module = importlib.import_module(candidate.module)
    if candidate.name == "tensorflow":
        # tf.lite is the public API; the package tensorflow.lite itself has no Interpreter.
        module = module.lite
        interpreter_cls = module.Interpreter
        load_delegate = module.experimental.load_delegate
        resolver = getattr(module.experimental, "OpResolverType", None)
    else:
        interpreter_cls = module.Interpreter
        load_delegate = module.load_delegate
        resolver = getattr(module, "OpResolverType", None)
    version = _dist_version(candidate.dist)
    if candidate.name == "tensorflow":
        version = version or _dist_version("tensorflow-cpu") or getattr(module, "__version__", "?")
    return Runtime(candidate.name, version or "?", interpreter_cls, load_delegate, resolver)


def first_line(exc: BaseException) -> str:
    """The first line of an exception's message, or its type name when the message is empty."""
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _describe_failure(exc: BaseException) -> str:
    text = first_line(exc)
    if isinstance(exc, Unusable):
        return text
    if isinstance(exc, ModuleNotFoundError):
        return "not installed"
    # tflite-runtime 2.14 is built against numpy 1.x and fails to import under numpy 2.
    if "numpy" in text.lower() and ("_ARRAY_API" in text or "multiarray" in text or "compiled using NumPy 1" in text):
        return f"built for numpy 1.x, incompatible with the installed numpy ({text})"
    return f"{type(exc).__name__}: {text}"


def probe_runtimes() -> list[Probe]:
    """Try to import every candidate; report what loaded and why the others did not."""
    probes = []
    for candidate in CANDIDATES:
        try:
            runtime = _import(candidate)
        except (ImportError, AttributeError, RuntimeError, OSError, Unusable) as exc:
            probes.append(Probe(candidate.name, _dist_version(candidate.dist), _describe_failure(exc)))
        else:
            probes.append(Probe(candidate.name, runtime.version, None))
    return probes


def used_runtime(probes: list[Probe], prefer: str = "auto") -> str | None:
    """The runtime :func:`load_runtime` (``prefer``) would use, from ``probes``; None: it would fail."""
    usable = [p.name for p in probes if p.error is None and (prefer == "auto" or p.name == prefer)]
    return usable[0] if usable else None


def describe_runtimes(probes: list[Probe], prefer: str = "auto") -> list[str]:
    """``edge info``'s lines: every candidate, the one used (``--runtime``'s when given) marked."""
    used = used_runtime(probes, prefer)
    lines = []
    for probe in probes:
        name = f"{probe.name}{' ' + probe.version if probe.version else ''}"
        if probe.name == used:
            why = f"--runtime {prefer}" if prefer != "auto" else "the first that loads"
            lines.append(f"  * {name}: loaded (this one is used: {why})")
        elif probe.error is None:
            lines.append(f"    {name}: available, not used" + (f" ({used} is used)" if used else ""))
        elif probe.name == prefer:
            lines.append(f"  ! {name}: {probe.error} (asked for by --runtime: edge run fails)")
        else:
            lines.append(f"    {name}: {probe.error}")
    return lines


@functools.cache
def load_runtime(prefer: str = "auto") -> Runtime:
    """The first runtime of the chain that imports (or exactly ``prefer`` when it is not 'auto')."""
    if prefer != "auto" and prefer not in NAMES:
        raise ConfigError(f"unknown runtime {prefer!r}", f"choose one of auto, {', '.join(NAMES)}")
    chain = CANDIDATES if prefer == "auto" else [c for c in CANDIDATES if c.name == prefer]
    failures = []
    for candidate in chain:
        try:
            runtime = _import(candidate)
        except (ImportError, AttributeError, RuntimeError, OSError, Unusable) as exc:
            reason = _describe_failure(exc)
            failures.append(f"{candidate.name}: {reason}")
            if prefer == "auto":
                log.info("runtime %s unavailable (%s); trying the next one", candidate.name, reason)
            continue
        log.info("using TFLite runtime %s %s", runtime.name, runtime.version)
        return runtime
    raise RuntimeChainError(
        "no TFLite runtime could be loaded (" + "; ".join(failures) + ")",
        "pip install ai-edge-litert (or tflite-runtime with numpy<2 on Python <= 3.11)")

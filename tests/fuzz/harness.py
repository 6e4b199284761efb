"""The fuzz harness: run one case, classify how it ended, and keep the figures.

A case ends in one of the accepted outcomes — ``ok`` (exit 0) or ``error`` (exit 2 with exactly one
``edge: error:`` line and no traceback), and ``unexpected``, the same line from the top-level guard
(accepted, but counted apart and listed: an input nothing checked earlier) — or in a failure:
``traceback``, ``lines``
(zero or several error lines), ``exit`` (another exit status), ``hang`` (over the time limit),
``crash`` (killed by a signal: a native crash), ``torn`` (a JSONL line that is not whole) or
``escaped`` (a file written outside the case's own directory).

Cheap cases run in-process (``edge.cli.main`` with stderr captured and a SIGALRM time limit); those
that can reach native code with hostile bytes (a mutated model given to the TFLite interpreter) run
as subprocesses, where a native crash is a negative return code and cannot take the test run down.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import random
import signal
import subprocess
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# "unexpected": one line and exit 2 from the top-level guard: accepted by the contract, but counted
# apart and listed, since each is an input nothing checked before the guard (a finding to fix).
ACCEPTED = ("ok", "error", "unexpected")
FIGURES: dict[str, Counter] = {}          # suite -> Counter of outcome kinds (printed at the end)
FAILURES: list[tuple[str, str, str]] = []  # (suite, case, detail)
FINDINGS: list[tuple[str, str, str]] = []  # "unexpected" cases: accepted, listed for a proper check
CORPUS = Path(__file__).parent / "corpus"


class CaseTimeout(BaseException):
    """Raised by SIGALRM in an in-process case over its limit (BaseException: no guard catches it)."""


@dataclass
class Result:
    kind: str
    detail: str = ""
    stdout: str = ""
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)

    @property
    def accepted(self) -> bool:
        return self.kind in ACCEPTED


def classify(code: int | None, stderr: str, prog: str = "edge") -> Result:
    lines = [line for line in stderr.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(f"{prog}: error:")]
    if "Traceback (most recent call last)" in stderr:
        return Result("traceback", _tail(stderr))
    if code is not None and code < 0:
        return Result("crash", f"signal {-code}: {_tail(stderr)}")
    if code == 0:
        return Result("ok")
    if code == 2 and len(errors) == 1:
        if errors[0].startswith(f"{prog}: error: unexpected "):
            return Result("unexpected", errors[0])
        return Result("error", errors[0])
    if code == 2 and not errors and any(line.startswith("usage:") for line in lines):
        return Result("error", "argparse usage error")
    if code == 2:
        return Result("lines", f"{len(errors)} error lines: {_tail(stderr)}")
    return Result("exit", f"exit {code}: {_tail(stderr)}")


def _tail(text: str, n: int = 6) -> str:
    return " | ".join(line for line in text.strip().splitlines()[-n:])


def run_inprocess(argv: list[str], timeout: float, prog: str = "edge") -> Result:
    """``edge ARGV`` (or ``edge-host``) in this process, stderr captured, at most ``timeout`` seconds."""
    if prog == "edge":
        from edge.cli import main
    else:
        from edge.host.cli import main
    err, out = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise CaseTimeout()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    start = time.monotonic()
    code: int | None
    try:
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(out):
            try:
                code = main(argv)
            except SystemExit as exc:              # argparse
                code = exc.code if isinstance(exc.code, int) else 2
            except CaseTimeout:
                return Result("hang", f"over {timeout} s", seconds=time.monotonic() - start)
            except Exception:                      # noqa: BLE001 - the harness records what escaped main()
                import traceback
                return Result("traceback", _tail(traceback.format_exc()), seconds=time.monotonic() - start)
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    result = classify(code, err.getvalue(), prog)
    result.stdout = out.getvalue()
    result.seconds = time.monotonic() - start
    result.extra["argv"] = argv
    return result


def run_subprocess(argv: list[str], timeout: float, cwd: Path, prog: str = "edge") -> Result:
    module = "edge.cli" if prog == "edge" else "edge.host.cli"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3", "PYTHONFAULTHANDLER": "0"}
    start = time.monotonic()
    try:
        proc = subprocess.run([sys.executable, "-m", module, *argv], cwd=cwd, capture_output=True, text=True,
                              timeout=timeout, env=env, errors="replace")
    except subprocess.TimeoutExpired:
        return Result("hang", f"over {timeout} s", seconds=time.monotonic() - start)
    result = classify(proc.returncode, proc.stderr, prog)
    result.stdout = proc.stdout
    result.seconds = time.monotonic() - start
    return result


def check_jsonl(path: Path) -> str | None:
    """None when every line of ``path`` is a whole JSON object ending in a newline."""
    if not path.exists():
        return None
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        return f"{path.name}: the last line is not terminated"
    for number, line in enumerate(data.splitlines(), 1):
        try:
            json.loads(line)
        except ValueError:
            return f"{path.name}: line {number} is not JSON"
    return None


def listing(directory: Path) -> set[str]:
    return {str(p.relative_to(directory)) for p in directory.rglob("*")}


def record(suite: str, case: str, result: Result) -> Result:
    FIGURES.setdefault(suite, Counter())[result.kind] += 1
    if not result.accepted:
        FAILURES.append((suite, case, result.detail))
    elif result.kind == "unexpected":
        FINDINGS.append((suite, case, result.detail))
    return result


# --- mutations ----------------------------------------------------------------------------------------

def mutation_ops(size: int, rng: random.Random) -> list[list]:
    """A reproducible recipe of byte-level mutations for ``size`` bytes (kept in the corpus as JSON)."""
    kind = rng.choice(("flip", "flip", "flip", "truncate", "zero", "word", "word", "splice"))
    if kind == "flip":
        return [["flip", rng.randrange(size), 1 << rng.randrange(8)] for _ in range(rng.randint(1, 24))]
    if kind == "truncate":
        return [["truncate", rng.randrange(size)]]
    if kind == "zero":
        start = rng.randrange(size)
        return [["zero", start, rng.randint(1, 4096)]]
    if kind == "word":         # flatbuffer offsets and lengths are 32-bit words: make one absurd
        value = rng.choice((0, 0xFFFFFFFF, 0x7FFFFFFF, 0x80000000, rng.randrange(1 << 32), size, size + 4))
        return [["word", rng.randrange(max(1, size // 4)) * 4, value] for _ in range(rng.randint(1, 4))]
    start, length = rng.randrange(size), rng.randint(1, 256)
    return [["splice", start, length, rng.randrange(size)]]


def apply_ops(data: bytes, ops: list[list]) -> bytes:
    buf = bytearray(data)
    for op in ops:
        name = op[0]
        if name == "flip" and op[1] < len(buf):
            buf[op[1]] ^= op[2]
        elif name == "truncate":
            del buf[op[1]:]
        elif name == "zero":
            end = min(len(buf), op[1] + op[2])
            buf[op[1]:end] = bytes(end - op[1])
        elif name == "word" and op[1] + 4 <= len(buf):
            buf[op[1]:op[1] + 4] = int(op[2]).to_bytes(4, "little")
        elif name == "splice":
            chunk = bytes(buf[op[1]:op[1] + op[2]])
            buf[op[3]:op[3]] = chunk
    return bytes(buf)


def corpus_entries(kind: str) -> list[Path]:
    folder = CORPUS / kind
    return sorted(p for p in folder.iterdir() if p.is_file() and p.name != "README.md") if folder.is_dir() else []

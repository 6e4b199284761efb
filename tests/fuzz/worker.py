"""A long-lived child process that runs ``edge`` cases one after another (``python -m tests.fuzz.worker``).

Cases that hand hostile bytes to native code (the TFLite interpreter: ``edge run``, and ``edge
info``, which measures XNNPACK's share) run here rather than in the test process: a native crash
kills only the worker, which the parent sees as a negative return code, records as ``crash`` and
restarts. Paying Python's and the runtimes' start-up once keeps the budget for more cases.

Protocol: one JSON request per stdin line ``{"argv": [...], "timeout": s}``; one reply per case on
stdout, on a line starting with :data:`MARK` (native code prints to the same stdout).
"""

from __future__ import annotations

import json
import os
import select
import subprocess
import sys
import time
from dataclasses import asdict
from pathlib import Path

MARK = "@@edge-fuzz@@ "


def serve() -> None:
    from tests.fuzz import harness

    for line in sys.stdin:
        request = json.loads(line)
        result = harness.run_inprocess(request["argv"], request["timeout"], request.get("prog", "edge"))
        reply = {k: v for k, v in asdict(result).items() if k != "stdout"}
        sys.stdout.write(MARK + json.dumps(reply) + "\n")
        sys.stdout.flush()


class Worker:
    """The parent's handle: ``run(argv, timeout)`` → Result; restarts the child after a crash or hang."""

    def __init__(self, cwd):
        self.cwd = cwd
        self.proc: subprocess.Popen | None = None
        self.restarts = 0

    def _start(self) -> None:
        root = str(Path(__file__).resolve().parents[2])
        env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "3",
               "PYTHONPATH": os.pathsep.join(filter(None, (root, os.environ.get("PYTHONPATH"))))}
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.fuzz.worker"], cwd=self.cwd, env=env,
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                                     text=True, bufsize=1)

    def run(self, argv: list[str], timeout: float):
        from tests.fuzz.harness import Result

        if self.proc is None or self.proc.poll() is not None:
            self._start()
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(json.dumps({"argv": argv, "timeout": timeout}) + "\n")
        self.proc.stdin.flush()
        deadline = time.monotonic() + timeout + 30           # the child's own alarm fires first
        while True:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([self.proc.stdout], [], [], max(0.0, left))
            if not ready:
                self.close(kill=True)
                return Result("hang", f"the worker did not answer within {timeout + 30:.0f} s")
            line = self.proc.stdout.readline()
            if not line:                                      # EOF: the child died (a native crash)
                code = self.proc.wait()
                self.proc = None
                self.restarts += 1
                return Result("crash" if code < 0 else "exit", f"the worker died with status {code}")
            if MARK in line:                                  # native output may precede it on the line
                return Result(**json.loads(line[line.index(MARK) + len(MARK):]))

    def close(self, kill: bool = False) -> None:
        if self.proc is None:
            return
        if kill:
            self.proc.kill()
        else:
            self.proc.stdin.close()
        self.proc.wait(timeout=30)
        self.proc = None


if __name__ == "__main__":
    serve()

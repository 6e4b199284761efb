"""Runs ``edge run --service`` as systemd would: a subprocess with a real AF_UNIX notify socket."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class NotifyListener:
    """Binds $NOTIFY_SOCKET (a path, or an abstract '@name') and records every datagram."""

    def __init__(self, address: str):
        self.address = address
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
        self.sock.settimeout(0.2)
        self.messages: list[tuple[float, dict[str, str]]] = []   # (monotonic arrival, assignments)
        self._lock = threading.Lock()
        self._closed = False
        self._thread = threading.Thread(target=self._collect, daemon=True)
        self._thread.start()

    def _collect(self) -> None:
        while not self._closed:
            try:
                data = self.sock.recv(65536)
            except socket.timeout:
                continue
            except OSError:
                return
            fields = dict(line.split("=", 1) for line in data.decode().splitlines() if "=" in line)
            with self._lock:
                self.messages.append((time.monotonic(), fields))

    def having(self, key: str, value: str | None = None) -> list[tuple[float, dict[str, str]]]:
        with self._lock:
            return [(t, m) for t, m in self.messages if key in m and (value is None or m[key] == value)]

    def wait_for(self, key: str, value: str | None = None, *, count: int = 1, timeout: float = 60.0,
                 proc: "Daemon | None" = None) -> list[tuple[float, dict[str, str]]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = self.having(key, value)
            if len(found) >= count:
                return found
            if proc is not None and proc.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({proc.proc.returncode}) before {key}={value}:\n{proc.log()}")
            time.sleep(0.05)
        raise AssertionError(f"no {count}× {key}={value} within {timeout} s; got {self.messages[-5:]}"
                             + (f"\n{proc.log()}" if proc else ""))

    def close(self) -> None:
        self._closed = True
        self._thread.join(2)
        self.sock.close()


class Daemon:
    """``python -m tests.faults edge run --service ARGS`` (tests.faults adds the fault: source kind)."""

    def __init__(self, args: list[str], cwd: Path, notify: str, watchdog_usec: int | None = None,
                 faults: tuple[str, ...] = ()):
        env = dict(os.environ, NOTIFY_SOCKET=notify, PYTHONPATH=str(ROOT))
        env.pop("WATCHDOG_PID", None)
        if watchdog_usec:
            env["WATCHDOG_USEC"] = str(watchdog_usec)
        self.log_path = cwd / "daemon.log"
        self._log = self.log_path.open("w")
        self.proc = subprocess.Popen([sys.executable, "-m", "tests.faults", "edge", *faults, "run", "--service", *args],
                                     cwd=cwd, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def log(self) -> str:
        return self.log_path.read_text()

    def wait_log(self, text: str, timeout: float = 60.0, count: int = 1) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.log().count(text) >= count:
                return
            if self.proc.poll() is not None:
                raise AssertionError(f"daemon exited ({self.proc.returncode}) before logging {text!r}:\n{self.log()}")
            time.sleep(0.05)
        raise AssertionError(f"{text!r} not logged within {timeout} s:\n{self.log()}")

    def signal(self, signum: int) -> None:
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 30.0) -> int:
        self.proc.send_signal(signal.SIGTERM)
        return self.proc.wait(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()

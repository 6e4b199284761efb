"""sd_notify without a dependency: one AF_UNIX datagram per message to ``$NOTIFY_SOCKET``.

systemd (Type=notify) reads newline-separated ``KEY=VALUE`` assignments: ``READY=1``,
``STATUS=…``, ``WATCHDOG=1``, ``STOPPING=1``, ``RELOADING=1``, ``EXTEND_TIMEOUT_USEC=…``. A socket
path starting with ``@`` is in the abstract namespace (a leading NUL byte). Without
``$NOTIFY_SOCKET`` (not under systemd) every call is a no-op, so the same code runs by hand.

``$WATCHDOG_USEC`` (and ``$WATCHDOG_PID``, which must be ours when set) gives the watchdog period;
systemd's advice is to ping at half of it.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time

log = logging.getLogger(__name__)


def watchdog_period(environ: dict[str, str] | None = None) -> float | None:
    """Seconds after which systemd declares us hung, or None when no watchdog applies to us."""
    env = os.environ if environ is None else environ
    usec = env.get("WATCHDOG_USEC", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    pid = env.get("WATCHDOG_PID", "")
    if pid and pid.isdigit() and int(pid) != os.getpid():
        return None
    return int(usec) / 1e6


class Notifier:
    """Sends notifications to the service manager; silent when there is none."""

    def __init__(self, address: str | None = None):
        address = os.environ.get("NOTIFY_SOCKET", "") if address is None else address
        self.address = address
        self.sent = 0
        self._lock = threading.Lock()
        self._sock: socket.socket | None = None
        self._target: str | bytes = b"\0" + address[1:].encode() if address.startswith("@") else address
        if address:
            if address[0] not in "/@":
                log.warning("NOTIFY_SOCKET=%r is neither a path nor an abstract name ('@…'); "
                            "not notifying systemd", address)
                self.address = ""
            else:
                self._sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)

    @property
    def enabled(self) -> bool:
        return self._sock is not None

    def send(self, *assignments: str) -> bool:
        """Send ``KEY=VALUE`` lines in one datagram; False (logged once per failure) if it failed."""
        if self._sock is None:
            return False
        message = "\n".join(assignments).encode("utf-8", "replace")
        with self._lock:
            try:
                self._sock.sendto(message, self._target)
            except OSError as exc:
                log.warning("sd_notify %r to %s failed: %s", assignments[0], self.address, exc)
                return False
            self.sent += 1
        return True

    def ready(self, status: str = "") -> bool:
        return self.send("READY=1", *([f"STATUS={status}"] if status else []))

    def status(self, text: str) -> bool:
        return self.send(f"STATUS={text}")

    def watchdog(self) -> bool:
        return self.send("WATCHDOG=1")

    def stopping(self, status: str = "") -> bool:
        return self.send("STOPPING=1", *([f"STATUS={status}"] if status else []))

    def reloading(self) -> bool:
        # MONOTONIC_USEC lets systemd ≥ 253 (Type=notify-reload) match the reload to this message.
        return self.send("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")

    def extend_timeout(self, seconds: float) -> bool:
        """Ask for ``seconds`` more before the start/stop timeout fires (slow model loads)."""
        return self.send(f"EXTEND_TIMEOUT_USEC={int(seconds * 1e6)}")

    def close(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None

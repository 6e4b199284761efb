"""Raw malformed HTTP requests to the live view (``edge run --web PORT``) on 127.0.0.1.

Each request is sent on its own connection, then the connection is half-closed, so an incomplete
request ends at EOF rather than waiting for an idle timeout. Each must get a response or a close
within the time limit; the view must keep answering ``GET /stats``; at the end SIGTERM must stop
``edge`` with status 0 and no traceback."""

from __future__ import annotations

import random
import signal
import socket
import subprocess
import sys
import time

import pytest

from tests.fuzz import harness
from tests.fuzz.conftest import SEED, count
from tests.helpers import free_port, wait_for

TIMEOUT = 5.0
PATHS = ["/", "/stats", "/snapshot.jpg", "/stream.mjpg", "/index.html", "/../../etc/passwd", "/%2e%2e/%2e%2e/etc/passwd",
         "//etc/passwd", "*", "", "/stats?" + "a=" * 3000, "/" + "A" * 70000, "/\x00", "/%00", "/\udcff".encode(
             "utf-8", "surrogateescape").decode("latin-1"), "http://127.0.0.1/", "/stats#frag"]
METHODS = ["GET", "HEAD", "POST", "PUT", "DELETE", "OPTIONS", "TRACE", "CONNECT", "GET\x00", "get", "X" * 5000, ""]
VERSIONS = ["HTTP/1.1", "HTTP/1.0", "HTTP/0.9", "HTTP/2.0", "HTTP/9.9", "HTTP/1.1x", "", "HTTP/"]
HEADERS = ["Host: 127.0.0.1", "Content-Length: -1", "Content-Length: 99999999999999999999", "Content-Length: 5",
           "Transfer-Encoding: chunked", "Connection: keep-alive", "Expect: 100-continue", "X: " + "y" * 70000,
           "Authorization: Basic !!!", "Authorization: Basic " + "QQ==" * 1000, "Range: bytes=-1",
           "NoColonHere", ": empty-name", "Host:\x00", "\xff\xfe: \xff"]


def _request(rng: random.Random) -> bytes:
    kind = rng.random()
    if kind < 0.15:
        return bytes(rng.randrange(256) for _ in range(rng.randint(0, 3000)))
    line = f"{rng.choice(METHODS)} {rng.choice(PATHS)} {rng.choice(VERSIONS)}"
    headers = [rng.choice(HEADERS) for _ in range(rng.randint(0, 6))]
    if rng.random() < 0.05:
        headers += [f"X-{i}: {i}" for i in range(300)]
    text = "\r\n".join([line, *headers]) + "\r\n" + ("\r\n" if rng.random() < 0.85 else "")
    if rng.random() < 0.2:
        text += "".join(rng.choice("0123456789abcdef\r\n;xyz") for _ in range(rng.randint(1, 200)))
    data = text.encode("latin-1", "replace")
    if rng.random() < 0.2:
        data = harness.apply_ops(data, harness.mutation_ops(len(data), rng))
    return data


def _exchange(port: int, data: bytes) -> harness.Result:
    start = time.monotonic()
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            try:
                s.sendall(data)
                s.shutdown(socket.SHUT_WR)
            except OSError as exc:        # EPIPE, ECONNRESET, ENOTCONN: it answered or closed early
                got = _drain(s)
                if got:
                    return harness.Result("ok" if got.startswith(b"HTTP/") else "error", got[:60].decode("latin-1"))
                return harness.Result("error", f"the server closed while the request was sent ({exc.strerror})")
            got = b""
            while time.monotonic() - start < TIMEOUT:
                chunk = s.recv(65536)
                if not chunk:
                    break
                got += chunk
                if b"multipart/x-mixed-replace" in got or b"image/jpeg" in got or len(got) > 1 << 20:
                    break                     # the endless MJPEG stream (HTTP/0.9: no headers): it answers
            else:
                return harness.Result("hang", f"no response or close within {TIMEOUT} s")
    except socket.timeout:
        return harness.Result("hang", f"no response or close within {TIMEOUT} s")
    except ConnectionResetError:
        return harness.Result("error", "connection reset")
    except ConnectionRefusedError:
        return harness.Result("crash", "connection refused: the server is gone")
    if not got:
        return harness.Result("error", "closed without a response")
    return harness.Result("ok" if got.startswith(b"HTTP/") else "error", got[:60].decode("latin-1"))


def _drain(s: socket.socket) -> bytes:
    try:
        return s.recv(65536)
    except OSError:
        return b""


def _alive(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=TIMEOUT) as s:
            s.sendall(b"GET /stats HTTP/1.0\r\nHost: x\r\n\r\n")
            s.settimeout(TIMEOUT)
            head = s.recv(64)
            return head.startswith(b"HTTP/1.") and head[8:13] == b" 200 "
    except OSError:
        return False


def test_fuzz_web_view(tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "edge.cli", "run", "--web", str(port), "--loop", "--live", "off",
                             "--jsonl", str(tmp_path / "events.jsonl"), "--device", "cpu", "--threads", "1"],
                            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        wait_for(lambda: _alive(port) or proc.poll() is not None, timeout=60, what="the live view")
        if proc.poll() is not None:
            pytest.fail(f"edge run --web exited {proc.returncode}: {proc.stderr.read()[-2000:]}")
        rng = random.Random(f"{SEED}-http")
        failures = []
        for i in range(count(400)):
            data = _request(rng)
            result = _exchange(port, data)
            if i % 25 == 24 and not _alive(port):
                result = harness.Result("crash", "GET /stats no longer answers")
            harness.record("http", f"#{i} {data[:80]!r}", result)
            if not result.accepted:
                failures.append(f"#{i} {data[:120]!r}: {result.kind}: {result.detail}")
                if result.kind == "crash":
                    break
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            _, stderr = proc.communicate(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            _, stderr = proc.communicate()
            failures.append("edge did not stop within 20 s of SIGTERM")
    ended = harness.classify(proc.returncode, stderr)
    harness.record("http-shutdown", "SIGTERM", ended)
    assert ended.kind == "ok", f"after the fuzzing: {ended.kind}: {ended.detail}"
    torn = harness.check_jsonl(tmp_path / "events.jsonl")
    assert torn is None, torn
    assert not failures, f"{len(failures)} requests not accepted:\n" + "\n".join(failures[:15])

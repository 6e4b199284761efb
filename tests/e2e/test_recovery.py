"""A source that disappears mid-run is reopened without a restart, and the reconnects are counted.

Real daemon subprocess, real model; real files and a real HTTP MJPEG server (tests/faults.py)
that is killed and started again.
"""

from __future__ import annotations

import re
import shutil
import signal
import subprocess
import sys
import time

import cv2

from tests.e2e.service_harness import ROOT, Daemon
from tests.helpers import free_port

FAST_BACKOFF = "[service]\nreconnect_initial = 0.1\nreconnect_max = 0.4\nstatus_interval = 0.5\n[output]\njsonl = \"\"\n"


def _short_clip(path, clip_frames, n=20):
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 25, (640, 272))
    for frame in clip_frames[:n]:
        writer.write(frame)
    writer.release()
    return path


def _frames_after(listener, proc, count=3):
    """Wait until ``count`` more watchdog pings arrive."""
    seen = len(listener.having("WATCHDOG", "1"))
    listener.wait_for("WATCHDOG", "1", count=seen + count, proc=proc)


def _wait_status_reconnects(listener, proc, timeout=30.0):
    """The STATUS= line systemctl shows counts the reconnects."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if any(re.search(r", [1-9]\d* reconnects", m["STATUS"]) for _, m in listener.having("STATUS")):
            return
        assert proc.proc.poll() is None, proc.log()
        time.sleep(0.1)
    raise AssertionError(f"no STATUS with reconnects: {listener.having('STATUS')[-3:]}")


def _reconnects(daemon_log: str) -> int:
    return int(re.search(r"service ends: .* (\d+) reconnects", daemon_log).group(1))


def test_a_removed_and_recreated_file_is_picked_up_again(tmp_path, listener, clip_frames):
    original = _short_clip(tmp_path / "original.mp4", clip_frames)
    video = tmp_path / "camera.mp4"
    shutil.copy(original, video)
    (tmp_path / "edge.toml").write_text(FAST_BACKOFF)
    daemon = Daemon(["--config", "edge.toml", "--source", str(video)], tmp_path, listener.address, 1_000_000)
    try:
        listener.wait_for("READY", "1", proc=daemon)
        video.unlink()
        daemon.wait_log("reopen attempt 2 failed")          # gone: retried with backoff, still running
        assert "does not exist" in daemon.log()
        _frames_after(listener, daemon)    # no frames, yet the watchdog is fed: recovering, not hung
        assert "reopened after" not in daemon.log()
        assert any("reconnecting" in m["STATUS"] for _, m in listener.having("STATUS"))
        shutil.copy(original, video)
        daemon.wait_log("reopened after")
        assert re.search(r"reopened after [1-9]\d* failed attempt", daemon.log())
        _frames_after(listener, daemon)
        _wait_status_reconnects(listener, daemon)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
    assert _reconnects(daemon.log()) >= 1


def _start_server(port: int) -> subprocess.Popen:
    server = subprocess.Popen([sys.executable, "-m", "tests.faults", "mjpeg-server", str(port)], cwd=ROOT,
                              stdout=subprocess.PIPE, text=True)
    assert server.stdout.readline().startswith("serving"), "MJPEG server did not start"
    return server


def test_a_killed_and_restarted_stream_server_is_reconnected(tmp_path, listener):
    port = free_port()
    server = _start_server(port)
    (tmp_path / "edge.toml").write_text(FAST_BACKOFF)
    daemon = Daemon(["--config", "edge.toml", "--source", f"http://127.0.0.1:{port}/stream.mjpg"], tmp_path,
                    listener.address, 1_000_000)
    try:
        listener.wait_for("READY", "1", proc=daemon)
        _frames_after(listener, daemon)
        server.send_signal(signal.SIGKILL)
        server.wait(10)
        daemon.wait_log("reopen attempt 2 failed")          # server down: backoff, still running
        server = _start_server(port)
        daemon.wait_log("reopened after")
        _frames_after(listener, daemon)
        _wait_status_reconnects(listener, daemon)
        assert daemon.stop() == 0
    finally:
        daemon.kill()
        server.kill()
        server.wait(10)
    assert _reconnects(daemon.log()) >= 1


def test_sigterm_while_reconnecting_exits_cleanly(tmp_path, listener, clip_frames):
    video = _short_clip(tmp_path / "camera.mp4", clip_frames)
    (tmp_path / "edge.toml").write_text(FAST_BACKOFF)
    daemon = Daemon(["--config", "edge.toml", "--source", str(video)], tmp_path, listener.address, 1_000_000)
    try:
        listener.wait_for("READY", "1", proc=daemon)
        video.unlink()
        daemon.wait_log("reopen attempt 2 failed")
        assert daemon.stop() == 0          # the backoff wait is interrupted, not sat out
    finally:
        daemon.kill()
    assert "service ends" in daemon.log()

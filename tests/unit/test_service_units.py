"""Pure parts of the service: sd_notify datagrams, watchdog rate limit, backoff, reconnecting source,
Edge TPU fail-over.

The Edge TPU is absent here: the fail-over tests use fake backends that fail the way the
interpreter does when libedgetpu loses its USB device (``invoke`` raises RuntimeError) and
:class:`~edge.errors.DelegateError` when the delegate cannot load.
"""

from __future__ import annotations

import os
import random
import socket
import sys
import threading
import time

import numpy as np
import pytest

from edge.capture.base import Frame
from edge.capture.reconnect import Backoff, ReconnectingSource
from edge.errors import DelegateError, SourceError
from edge.service.notify import Notifier, watchdog_period
from edge.service.watchdog import FrameWatchdog
from edge.telemetry.stats import PipelineStats


# sd_notify -------------------------------------------------------------------------------------

def _bound(address: str) -> socket.socket:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + address[1:].encode() if address.startswith("@") else address)
    sock.settimeout(2)
    return sock


@pytest.mark.parametrize("abstract", [False, True])
def test_notifier_sends_one_datagram_per_message(tmp_path, abstract):
    address = f"@edge-unit-{os.getpid()}-{abstract}" if abstract else str(tmp_path / "n.sock")
    sock = _bound(address)
    notifier = Notifier(address)
    assert notifier.ready("1.0 fps")
    assert sock.recv(4096) == b"READY=1\nSTATUS=1.0 fps"
    notifier.extend_timeout(1.5)
    assert sock.recv(4096) == b"EXTEND_TIMEOUT_USEC=1500000"
    notifier.stopping()
    assert sock.recv(4096) == b"STOPPING=1"
    notifier.close()
    sock.close()


def test_notifier_without_systemd_is_silent(monkeypatch):
    monkeypatch.delenv("NOTIFY_SOCKET", raising=False)
    notifier = Notifier()
    assert not notifier.enabled and not notifier.watchdog()


def test_notifier_reports_a_vanished_socket(tmp_path, caplog):
    notifier = Notifier(str(tmp_path / "gone.sock"))
    assert not notifier.status("x")
    assert "gone.sock" in caplog.text


def test_watchdog_period_honours_watchdog_pid():
    assert watchdog_period({"WATCHDOG_USEC": "30000000"}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": str(os.getpid())}) == 30.0
    assert watchdog_period({"WATCHDOG_USEC": "30000000", "WATCHDOG_PID": "1"}) is None
    assert watchdog_period({}) is None and watchdog_period({"WATCHDOG_USEC": "0"}) is None


class _Clock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


class _CountingNotifier(Notifier):
    def __init__(self):
        super().__init__("")
        self.pings = 0

    def watchdog(self) -> bool:
        self.pings += 1
        return True


def test_frame_watchdog_rate_limits_to_a_quarter_period():
    clock, notifier = _Clock(), _CountingNotifier()
    dog = FrameWatchdog(notifier, 8.0, clock=clock)
    for _ in range(100):          # 100 frames at 10 fps = 10 s
        dog()
        clock.now += 0.1
    assert notifier.pings == 5    # at 0, 2, 4, 6, 8 s
    clock.now += 7
    assert dog.stalled_for() == pytest.approx(7.1)


# backoff and reconnecting ----------------------------------------------------------------------

def test_backoff_doubles_up_to_the_cap_with_jitter():
    b = Backoff(0.5, 8.0, jitter=0.5)
    assert [b.ceiling(i) for i in range(6)] == [0.5, 1, 2, 4, 8, 8]
    rng = random.Random(1)
    delays = [b.delay(3, rng) for _ in range(200)]
    assert 2.0 <= min(delays) < 2.5 and 3.5 < max(delays) <= 4.0


def _frame(i: int) -> Frame:
    return Frame(np.zeros((2, 2, 3), np.uint8), i, time.time(), time.monotonic_ns())


class FlakySource:
    """Scripted: each open() delivers the next batch of frames, then ends or raises; some opens fail."""

    def __init__(self, script):
        self.name, self.live = "flaky", True
        self.script = list(script)   # items: ("open-fails",) | (n_frames, "end" | "error")
        self.opens = 0
        self._batch: list[Frame] = []
        self._ending = "end"

    def open(self):
        self.opens += 1
        step = self.script.pop(0)
        if step == "open-fails":
            raise SourceError("device unplugged")
        n, self._ending = step
        self._batch = [_frame(i) for i in range(n)]

    def read(self):
        if self._batch:
            return self._batch.pop(0)
        if self._ending == "error":
            raise SourceError("read failed")
        return None

    def close(self):
        pass


def test_reconnecting_source_reopens_counts_and_renumbers():
    inner = FlakySource([(3, "error"), "open-fails", "open-fails", (2, "end"), (4, "end")])
    counted = []
    source = ReconnectingSource(inner, Backoff(0.001, 0.004), on_reconnect=lambda: counted.append(1))
    source.open()
    frames = [source.read() for _ in range(9)]
    assert [f.index for f in frames] == list(range(9))
    assert source.reconnects == 2 and len(counted) == 2 and source.failed_attempts == 2
    assert inner.opens == 5


def test_reconnecting_source_stops_waiting_when_closed():
    inner = FlakySource([(1, "end")] + ["open-fails"] * 1000)
    source = ReconnectingSource(inner, Backoff(0.05, 0.05))
    source.open()
    assert source.read() is not None
    threading.Timer(0.3, source.close).start()
    assert source.read() is None        # returned because closed, not because it gave up
    assert source.reconnects == 0


# journald priorities, and -v before the subcommand ---------------------------------------------

def test_journal_lines_carry_their_syslog_priority():
    """Under systemd each line starts <N> (sd-daemon(3)), so `journalctl -p warning` filters."""
    import logging

    from edge.service.journal import JournalFormatter

    fmt = JournalFormatter()

    def line(level, msg):
        return fmt.format(logging.LogRecord("edge.x", level, __file__, 1, msg, None, None))

    assert line(logging.ERROR, "reload refused") == "<3>ERROR edge.x: reload refused"
    assert line(logging.WARNING, "w").startswith("<4>") and line(logging.INFO, "i").startswith("<6>")
    assert line(logging.DEBUG, "d").startswith("<7>") and line(logging.CRITICAL, "c").startswith("<2>")
    assert line(logging.ERROR, "two\nlines") == "<3>ERROR edge.x: two\n<3>lines"   # a traceback stays an error


def test_journal_format_only_when_stderr_is_the_journal_stream(tmp_path):
    """$JOURNAL_STREAM names the stream's device:inode; another stderr (a terminal, a pipe, a file
    the unit redirects to) keeps the plain format."""
    import logging

    from edge.service.journal import JournalFormatter, stream_is_journal, use_journal_priorities

    with open(tmp_path / "err", "w") as stream:
        st = os.fstat(stream.fileno())
        assert stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"})
        assert not stream_is_journal(stream, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino + 1}"})
        assert not stream_is_journal(stream, {})
    logger = logging.getLogger("edge.test.journal")
    handler = logging.StreamHandler(sys.stderr)
    logger.addHandler(handler)
    try:
        st = os.fstat(sys.stderr.fileno())
        assert use_journal_priorities(logger, {"JOURNAL_STREAM": "1:2"}) == 0
        assert use_journal_priorities(logger, {"JOURNAL_STREAM": f"{st.st_dev}:{st.st_ino}"}) == 1
        assert isinstance(handler.formatter, JournalFormatter)
    finally:
        logger.removeHandler(handler)


@pytest.mark.parametrize("argv, verbosity", [(["-v", "run"], 1), (["run", "-v"], 1), (["-v", "run", "-v"], 2),
                                             (["-vv", "doctor"], 2), (["run"], 0), (["-v"], 1)])
def test_verbose_counts_before_and_after_the_subcommand(argv, verbosity, monkeypatch):
    """`edge -v run` gave verbosity 0: the subcommand's default reset the count."""
    from edge import cli

    seen = {}
    monkeypatch.setattr(cli, "_setup_logging", lambda v: seen.setdefault("v", v))
    monkeypatch.setattr(cli, "cmd_run", lambda args: 0)
    monkeypatch.setattr(cli, "cmd_doctor", lambda args: 0)
    cli.main(argv)
    assert seen["v"] == verbosity


def test_appending_to_an_existing_jsonl_is_logged(tmp_path, caplog):
    import logging

    from edge.service.daemon import note_appending

    events = tmp_path / "detections.jsonl"
    with caplog.at_level(logging.INFO, logger="edge.service.daemon"):
        assert not note_appending(str(events)) and not note_appending("")
        events.write_text('{"frame": 1}\n')
        assert note_appending(str(events))
    assert [r.message for r in caplog.records] == [f"appending detection events to {events}, which already holds 13 bytes"]


# Edge TPU fail-over as detectors of the scheduler (the pool's behaviour: tests/unit/test_scheduler.py)

def test_service_wiring_when_the_delegate_fails_at_start(int8_model, model_dir, tmp_path, monkeypatch):
    """--device auto, a USB Coral enumerated (faked: none here) but libedgetpu unloadable (really
    absent here): the real CPU twin runs as the standby, and the Edge TPU detector is retried."""
    from edge import config as configuration
    from edge.app import prepare_all
    from edge.runtime import edgetpu
    from tests.helpers import edgetpu_twin_dir

    edgetpu_twin_dir(int8_model, model_dir, tmp_path)
    monkeypatch.setattr(edgetpu, "enumerate_devices",
                        lambda *a, **k: [edgetpu.TpuDevice("usb", "/sys/bus/usb/devices/2-1", "usb")])
    cfg = configuration.load(None, {"model": {"path": str(tmp_path)}, "service": {"tpu_retry": 0.01}})
    plan = prepare_all(cfg, service=True)
    try:
        cpu, tpu = plan.detectors
        assert cpu.up and cpu.standby and cpu.backend_name.startswith("cpu")
        assert plan.loaded.model.path.name == "person_int8.tflite"
        assert tpu.kind == "edgetpu" and not tpu.up and tpu.retry == 0.01 and tpu.next_retry < float("inf")
        with pytest.raises(DelegateError):
            tpu.reopen()                 # no libedgetpu here: the retry fails, and is tried again later
    finally:
        plan.close()

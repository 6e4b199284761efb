"""Issue 14, sinks and counters: a sink's failure never reaches the pipeline, JSONL lines are whole
(short writes cut back, a torn last line cut on open), a full disk and a deleted file are survived
and counted, and the capture counters stay monotonic across reloads."""

from __future__ import annotations

import errno
import json
import logging
import os
import subprocess
from pathlib import Path

import pytest

from edge.telemetry import jsonl as jsonl_mod
from edge.telemetry.jsonl import JsonlSink
from edge.telemetry.stats import LogLimiter, PipelineStats
from tests.helpers import frame_result


def lines(path: Path) -> list[dict]:
    text = path.read_bytes()
    assert not text or text.endswith(b"\n"), "the file ends in a torn line"
    return [json.loads(line) for line in text.decode("ascii").splitlines()]


def sink(path, **kw) -> tuple[JsonlSink, PipelineStats]:
    stats = PipelineStats()
    return JsonlSink(path, "cam", errors=stats.error, **kw), stats


def test_torn_last_line_is_cut_on_open(tmp_path, caplog):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b'{"frame":1}\n{"frame":2}\n{"fra')
    with caplog.at_level(logging.WARNING):
        s, _ = sink(path)
    assert "torn line" in caplog.text
    s.publish(frame_result(3))
    s.close()
    assert [r["frame"] for r in lines(path)] == [1, 2, 3]


def test_torn_file_without_any_newline_is_emptied(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_bytes(b"x" * 200_000)         # longer than one backwards read
    s, _ = sink(path)
    s.publish(frame_result(0))
    s.close()
    assert [r["frame"] for r in lines(path)] == [0]


def test_short_write_is_cut_back_to_the_last_whole_line(tmp_path, monkeypatch):
    path = tmp_path / "d.jsonl"
    s, stats = sink(path)
    s.publish(frame_result(0))
    real_write = os.write
    calls = {"n": 0}

    def short_then_enospc(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data[:10]))       # a short write …
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))   # … and the reason for it

    monkeypatch.setattr(jsonl_mod.os, "write", short_then_enospc)
    s.publish(frame_result(1))                            # dropped, not raised
    monkeypatch.setattr(jsonl_mod.os, "write", real_write)
    s.publish(frame_result(2))                            # resumes
    s.close()
    assert [r["frame"] for r in lines(path)] == [0, 2]
    assert stats.snapshot().errors == {"jsonl_write": 1}
    assert s.dropped == 1


def _tmpfs(tmp_path: Path) -> Path:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", str(mount)], capture_output=True,
                          text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return mount


def test_full_disk_drops_and_counts_then_resumes(tmp_path, caplog):
    mount = _tmpfs(tmp_path)
    try:
        path = mount / "d.jsonl"
        s, stats = sink(path)
        filler = mount / "filler"
        with caplog.at_level(logging.WARNING):
            fd = os.open(filler, os.O_WRONLY | os.O_CREAT)     # fill the disk to the last page
            try:
                for block in (4096, 1):
                    try:
                        while True:
                            os.write(fd, b"\0" * block)
                    except OSError as exc:
                        assert exc.errno == errno.ENOSPC
            finally:
                os.close(fd)
            for i in range(50):
                s.publish(frame_result(i, labels=("person",) * 20))     # ~2 KB lines: never fit
        assert stats.snapshot().errors["jsonl_write"] == 50
        warnings = [r for r in caplog.records if "cannot write" in r.getMessage()]
        assert len(warnings) == 1, "the warning is rate-limited"
        filler.unlink()                          # space returns
        s.publish(frame_result(100))
        s.close()
        assert [r["frame"] for r in lines(path)] == [100]
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.parametrize("check_period", [0.0, 3600.0])   # found by the periodic check, or at rotation
def test_deleted_active_file_with_rotation_is_survived(tmp_path, monkeypatch, check_period):
    monkeypatch.setattr(JsonlSink, "CHECK_PERIOD", check_period)
    path = tmp_path / "d.jsonl"
    s, stats = sink(path, max_bytes=600, backups=2)
    for i in range(3):
        s.publish(frame_result(i))
    path.unlink()
    for i in range(3, 30):                       # rotates several times
        s.publish(frame_result(i))
    s.close()
    frames = [r["frame"] for f in (path.with_name("d.jsonl.2"), path.with_name("d.jsonl.1"), path)
              if f.exists() for r in lines(f)]
    assert frames == list(range(frames[0], 30)) and len(frames) > 5


def test_deleted_active_file_is_reopened_at_its_path(tmp_path, monkeypatch):
    monkeypatch.setattr(JsonlSink, "CHECK_PERIOD", 0.0)
    path = tmp_path / "d.jsonl"
    s, _ = sink(path, max_bytes=10_000_000)
    s.publish(frame_result(0))
    path.unlink()
    s.publish(frame_result(1))
    s.close()
    assert [r["frame"] for r in lines(path)] == [1]


def test_unwritable_directory_at_run_time_counts_not_raises(tmp_path, monkeypatch):
    monkeypatch.setattr(JsonlSink, "CHECK_PERIOD", 0.0)
    folder = tmp_path / "out"
    path = folder / "d.jsonl"
    s, stats = sink(path)
    path.unlink()
    folder.rmdir()
    folder.write_text("now a file")              # the path cannot be made again
    s.publish(frame_result(0))
    s.publish(frame_result(1))
    s.close()
    assert stats.snapshot().errors["jsonl_write"] == 2


def test_log_limiter_counts_held_back_lines(caplog):
    limiter = LogLimiter(period=3600)
    logger = logging.getLogger("t")
    with caplog.at_level(logging.WARNING):
        assert limiter.warning(logger, "x %d", 1)
        assert not limiter.warning(logger, "x %d", 2)
        limiter._next = 0.0
        assert limiter.warning(logger, "x %d", 3)
    assert [r.getMessage() for r in caplog.records] == ["x 1", "x 3 (1 more like it in the last 3600 s)"]


# ---- counters across reloads ----

def test_capture_counters_monotonic_across_generations():
    stats = PipelineStats()
    first, second = object(), object()
    for n in range(1, 101):                      # generation 1: 100 captured, 40 dropped
        stats.capture_counts(n, n * 2 // 5, generation=first)
    assert (stats.captured, stats.dropped) == (100, 40)
    seen = []
    for n in range(1, 51):                       # after SIGHUP a new pipeline's slot counts from 0
        stats.capture_counts(n, n // 5, generation=second)
        seen.append(stats.snapshot().captured)
    assert seen == sorted(seen) and seen[0] == 101
    snap = stats.snapshot()
    assert (snap.captured, snap.dropped) == (150, 50)
    assert snap.counts["captured"] == 150 and snap.fps_capture >= 0


def test_capture_counters_monotonic_without_a_generation_key():
    """pipeline.py passes (slot.captured, slot.dropped) only: a count going down starts a generation."""
    stats = PipelineStats()
    for n in range(0, 80):
        stats.capture_counts(n, n // 4)
    totals = []
    for n in range(0, 30):
        stats.capture_counts(n, n // 4)
        totals.append((stats.captured, stats.dropped))
    assert totals == sorted(totals)
    assert totals[-1] == (79 + 29, 19 + 7)


def test_reload_keeps_captured_total(clip):
    """Two real pipelines on one PipelineStats (what the service does on SIGHUP)."""
    from edge.app import assemble
    from edge.config import Config, OutputConfig, SourceConfig
    config = Config(source=SourceConfig(uri=str(clip), realtime=False),
                    output=OutputConfig(jsonl="", live="off", max_frames=5))
    stats = PipelineStats()
    assemble(config, stats=stats).pipeline.run()
    first = stats.snapshot().captured
    assemble(config, stats=stats).pipeline.run()
    snap = stats.snapshot()
    assert first >= 5 and snap.captured >= first + 5
    assert snap.inferred == 10


# ---- every sink: its failure stays in the sink ----

def test_mqtt_publish_never_raises_into_the_pipeline(monkeypatch):
    from edge.telemetry import mqtt as mqtt_mod
    stats = PipelineStats()
    exporter = mqtt_mod.MqttExporter(stats, dict, "cam", host="127.0.0.1", port=1, send_interval=0.01)
    try:
        monkeypatch.setattr(mqtt_mod, "event_line", lambda *a: (_ for _ in ()).throw(ValueError("boom")))
        exporter.publish(frame_result(0))        # an encoding failure: counted, not raised
        assert stats.snapshot().errors.get("mqtt_sink") == 1
    finally:
        exporter.close()


def test_web_jpeg_failure_stays_in_the_viewer_thread():
    import urllib.error
    import urllib.request

    from edge.web.server import WebServer
    stats = PipelineStats()
    server = WebServer(stats, dict, port=0)
    try:
        bad = frame_result(0)
        object.__setattr__(bad.frame, "format", "YUV420")   # a BGR image taken for I420: cannot convert
        server.publish(bad)                      # the pipeline's call: never raises
        with pytest.raises(urllib.error.HTTPError) as err:
            urllib.request.urlopen(f"http://127.0.0.1:{server.port}/snapshot.jpg", timeout=5)
        assert err.value.code == 500
        assert stats.snapshot().errors.get("web") == 1
    finally:
        server.close()

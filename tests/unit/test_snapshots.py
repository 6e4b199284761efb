"""SnapshotStore: JPEGs with the box and a crop, atomic replacement, retention by count, bytes and
age, a full or read-only disk survived, and event-id-only access for the web view."""

from __future__ import annotations

import logging
import os
import subprocess
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from edge.errors import ConfigError
from edge.events.lifecycle import new_event_id
from edge.events.snapshots import SnapshotStore, list_snapshots, path_for, read_snapshot, to_bgr

BOX = (200.0, 50.0, 300.0, 250.0)


def picture(seed: int = 0) -> np.ndarray:
    """A textured 640x272 BGR frame (noise compresses badly: files of a predictable, sizeable size)."""
    return np.random.default_rng(seed).integers(0, 255, (272, 640, 3), dtype=np.uint8)


def ids(n: int, t0: float = 1_700_000_000.0) -> list[str]:
    return [new_event_id(t0 + i) for i in range(n)]


def test_saves_the_frame_with_its_box_and_a_crop(tmp_path):
    store = SnapshotStore(tmp_path / "snaps", quality=90)
    image = np.full((272, 640, 3), 40, np.uint8)
    (event_id,) = ids(1)
    jpeg = store.save(event_id, image, BOX, "person", 0.87)
    on_disk = path_for(store.directory, event_id).read_bytes()
    assert jpeg == on_disk and store.has(event_id) and store.count == 1
    full = cv2.imdecode(np.frombuffer(on_disk, np.uint8), cv2.IMREAD_COLOR)
    assert full.shape == (272, 640, 3)
    assert full[150, 200, 1] > 150 and full[150, 250, 1] < 80          # the green edge, the inside untouched
    crop = cv2.imread(str(path_for(store.directory, event_id, crop=True)))
    assert crop.shape == (272, 150, 3)          # 100x200 box + 25 % margin each side, clipped to the frame in y
    assert store.total_bytes == len(on_disk) + path_for(store.directory, event_id, crop=True).stat().st_size
    assert [s.event_id for s in store.list()] == [event_id] and store.read(event_id, crop=True)[:2] == b"\xff\xd8"
    # the web view reads with the directory alone
    assert [s.event_id for s in list_snapshots(store.directory)] == [event_id]
    assert read_snapshot(store.directory, event_id) == on_disk
    assert list_snapshots(tmp_path / "none") == []


def test_replacing_a_snapshot_is_atomic_and_counted_once(tmp_path):
    store = SnapshotStore(tmp_path, crop=False)
    (event_id,) = ids(1)
    store.save(event_id, picture(0), BOX)
    first = store.read(event_id)
    store.save(event_id, picture(1), BOX)
    assert store.read(event_id) != first and store.count == 1
    assert store.total_bytes == path_for(tmp_path, event_id).stat().st_size
    assert sorted(os.listdir(tmp_path)) == [f"{event_id}.jpg"]          # no temporary file left behind


def test_retention_by_count_removes_the_oldest_events_whole(tmp_path):
    store = SnapshotStore(tmp_path, max_count=3)
    events = ids(5)
    for event_id in events:
        store.save(event_id, picture(), BOX)
        time.sleep(0.01)                          # distinct mtimes
    assert store.count == 3 and store.removed == 2
    assert sorted(os.listdir(tmp_path)) == sorted(f"{e}{c}.jpg" for e in events[2:] for c in ("", "-crop"))


def test_retention_by_bytes(tmp_path):
    one = len(SnapshotStore(tmp_path / "probe", crop=False).save(ids(1)[0], picture(), BOX))
    store = SnapshotStore(tmp_path / "snaps", max_count=0, max_bytes=int(one * 2.5), crop=False)
    events = ids(6)
    for event_id in events:
        store.save(event_id, picture(), BOX)
        time.sleep(0.01)
    assert store.count == 2 and store.total_bytes <= int(one * 2.5)
    assert {s.event_id for s in store.list()} == set(events[-2:])


def test_retention_by_age_at_start_and_while_running(tmp_path, monkeypatch):
    old, recent = ids(2)
    store = SnapshotStore(tmp_path, max_age=3600.0)
    store.save(old, picture(), BOX)
    store.save(recent, picture(), BOX)
    two_hours_ago = time.time() - 7200
    for name in os.listdir(tmp_path):
        if name.startswith(old):
            os.utime(tmp_path / name, (two_hours_ago, two_hours_ago))
    restarted = SnapshotStore(tmp_path, max_age=3600.0)        # the scan at start removes it
    assert [s.event_id for s in restarted.list()] == [recent]
    # while running: checked at most every AGE_CHECK_PERIOD seconds
    store2 = SnapshotStore(tmp_path / "b", max_age=3600.0)
    a, b = ids(2, 1_800_000_000.0)
    store2.save(a, picture(), BOX)
    store2._index[a][0] = two_hours_ago          # as if written two hours ago
    store2._next_age_check = 0.0
    store2.save(b, picture(), BOX)
    assert not store2.has(a) and not path_for(store2.directory, a).exists() and store2.has(b)


def test_leftover_temporary_files_are_removed_and_foreign_files_kept(tmp_path):
    (tmp_path / ".tmp-123-1700000000.000000-abcdef.jpg").write_bytes(b"half")
    (tmp_path / "notes.txt").write_text("mine")
    store = SnapshotStore(tmp_path)
    assert sorted(os.listdir(tmp_path)) == ["notes.txt"] and store.count == 0


@pytest.mark.parametrize("bad", ["../../etc/passwd", "1700000000.000000-abcdef/../../x", "1700000000.000000-ABCDEF",
                                 "1700000000.0-abcdef", "1700000000.000000-abcdef\0", "", None, 17,
                                 "1700000000.000000-abcdef.jpg", "/etc/passwd"])
def test_path_for_refuses_anything_but_an_event_id(tmp_path, bad):
    store = SnapshotStore(tmp_path)
    with pytest.raises(ValueError, match="is not an event id"):
        path_for(tmp_path, bad)
    with pytest.raises(ValueError):
        store.read(bad)


def test_read_does_not_follow_links(tmp_path):
    secret = tmp_path / "secret.jpg"
    secret.write_bytes(b"\xff\xd8 not yours")
    store = SnapshotStore(tmp_path / "snaps")
    (event_id,) = ids(1)
    os.symlink(secret, path_for(store.directory, event_id))
    assert store.read(event_id) is None
    assert store.read(ids(1, 1_600_000_000.0)[0]) is None           # no such snapshot


def test_an_unwritable_directory_is_a_config_error(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("")
    with pytest.raises(ConfigError, match="cannot keep snapshots in .*file/snaps.*events.snapshot_dir"):
        SnapshotStore(blocker / "snaps")


def test_frame_formats_are_converted_to_bgr():
    bgr = np.zeros((4, 6, 3), np.uint8)
    bgr[..., 2] = 255                                                # red
    assert (to_bgr(bgr[..., ::-1].copy(), "RGB") == bgr).all()
    yuv = cv2.cvtColor(bgr, cv2.COLOR_BGR2YUV_I420)
    assert abs(int(to_bgr(yuv, "YUV420")[0, 0, 2]) - 255) < 8
    with pytest.raises(ValueError, match="'NV12' is not one of"):
        to_bgr(bgr, "NV12")


def _tmpfs(tmp_path: Path, size: str = "256k") -> Path:
    mount = tmp_path / "small"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    return mount


def test_a_full_disk_is_logged_once_counted_and_survived(tmp_path, caplog):
    mount = _tmpfs(tmp_path)
    try:
        errors = []
        store = SnapshotStore(mount, max_count=0, max_bytes=0, crop=True, quality=95, errors=errors.append)
        events = ids(40)
        with caplog.at_level(logging.WARNING):
            for event_id in events:                                   # ~100 KB each: most do not fit
                store.save(event_id, picture(), BOX)
        assert 0 < store.count < 40 and store.failed == 40 - store.count
        assert errors == ["snapshot_write"] * store.failed
        warnings = [r for r in caplog.records if "cannot write snapshot" in r.getMessage()]
        assert len(warnings) == 1 and "No space left on device" in warnings[0].getMessage()
        assert not [n for n in os.listdir(mount) if n.startswith(".tmp-")]     # no partial file left
        for info in store.list():                                     # every event kept has both whole files
            for crop in (False, True):
                assert cv2.imdecode(np.frombuffer(store.read(info.event_id, crop), np.uint8),
                                    cv2.IMREAD_COLOR) is not None
        kept = {s.event_id for s in store.list()}
        assert kept == {e for e in events if store.has(e)}
        for event_id in list(kept):                                   # space returns: writing resumes
            store.remove(event_id)
        store.save(events[-1], picture(), BOX)
        assert store.has(events[-1])
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def test_a_read_only_disk_is_survived(tmp_path, caplog):
    mount = _tmpfs(tmp_path)
    try:
        store = SnapshotStore(mount)
        first, second = ids(2)
        store.save(first, picture(), BOX)
        subprocess.run(["mount", "-o", "remount,ro", str(mount)], check=True)
        with caplog.at_level(logging.WARNING):
            jpeg = store.save(second, picture(), BOX)
        assert jpeg[:2] == b"\xff\xd8"                    # the listeners still get the picture
        assert not store.has(second) and store.failed == 1 and store.has(first)
        assert "Read-only file system" in caplog.text
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)

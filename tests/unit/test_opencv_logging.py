"""OpenCV's own warnings are turned to errors-only on both OpenCV APIs: 5.x has cv2.utils.logging,
4.x (4.11.0.86 is what Raspberry Pi OS bookworm's numpy<2 pin resolves to) only cv2.setLogLevel.
Fakes of the two module shapes stand in for the version not installed here."""

from __future__ import annotations

import types

from edge.capture import opencv


def test_opencv_4_has_only_setloglevel(monkeypatch):
    calls = []
    fake = types.SimpleNamespace(setLogLevel=calls.append, __version__="4.11.0")
    monkeypatch.setattr(opencv, "cv2", fake)
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    opencv._quiet_opencv()
    assert calls == [2]                      # LOG_LEVEL_ERROR


def test_opencv_5_uses_utils_logging(monkeypatch):
    calls = []
    logging_ns = types.SimpleNamespace(setLogLevel=calls.append, LOG_LEVEL_ERROR=2)
    fake = types.SimpleNamespace(utils=types.SimpleNamespace(logging=logging_ns), __version__="5.1.0")
    monkeypatch.setattr(opencv, "cv2", fake)
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)
    opencv._quiet_opencv()
    assert calls == [2]


def test_the_users_level_is_left_alone(monkeypatch):
    calls = []
    monkeypatch.setattr(opencv, "cv2", types.SimpleNamespace(setLogLevel=calls.append, __version__="4.11.0"))
    monkeypatch.setenv("OPENCV_LOG_LEVEL", "DEBUG")
    opencv._quiet_opencv()
    assert calls == []

"""Fixtures of the daemon tests."""

import pytest

from tests.e2e.service_harness import NotifyListener


@pytest.fixture
def listener(tmp_path):
    """A real AF_UNIX datagram socket standing in for systemd's $NOTIFY_SOCKET."""
    listener = NotifyListener(str(tmp_path / "notify.sock"))
    yield listener
    listener.close()

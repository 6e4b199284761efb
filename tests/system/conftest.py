"""System tests: the project in real environments (a booted systemd in systemd-nspawn).

They need root. Not root: skipped with the reason. Root: nothing is skipped; a missing tool fails
the test with what to install. The figures they measure are printed at the end of the run and
written to ``$EDGE_SYSTEM_CACHE/figures.json``.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest

from tests.system import nspawn

FIGURES: dict[str, object] = {}


@pytest.fixture(scope="session")
def figures() -> dict[str, object]:
    return FIGURES


@pytest.fixture(scope="session")
def rootfs() -> Path:
    if os.geteuid() != 0:
        pytest.skip("needs root: systemd-nspawn, debootstrap and mounts (CI runs as root)")
    try:
        nspawn.require_tools()
    except nspawn.Missing as exc:
        pytest.fail(str(exc), pytrace=False)
    started = time.monotonic()
    path = nspawn.ensure_rootfs()
    FIGURES["rootfs_ready_s"] = round(time.monotonic() - started, 1)
    return path


def pytest_terminal_summary(terminalreporter):
    if not FIGURES:
        return
    terminalreporter.section("system test figures")
    for key, value in FIGURES.items():
        terminalreporter.write_line(f"{key}: {value}")
    try:
        nspawn.CACHE.mkdir(parents=True, exist_ok=True)
        (nspawn.CACHE / "figures.json").write_text(json.dumps(FIGURES, indent=1) + "\n")
    except OSError as exc:
        terminalreporter.write_line(f"(figures not written to {nspawn.CACHE}: {exc})")

"""scripts/install-pi.sh: --dry-run prints every action and changes nothing; a real run into a
staging root (--root, as when preparing an image) installs everything, and a second run does nothing.

apt and pip are left out of the real runs (--no-apt --no-pip: no network here); the dry run shows them.
"""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "scripts" / "install-pi.sh"

pytestmark = pytest.mark.skipif(shutil.which("systemd-sysusers") is None or shutil.which("systemctl") is None,
                                reason="needs systemd-sysusers and systemctl (apt install systemd)")


def _install(*args: str) -> subprocess.CompletedProcess:
    done = subprocess.run(["bash", str(SCRIPT), *args], capture_output=True, text=True, timeout=180)
    assert done.returncode == 0, done.stdout + done.stderr
    return done


def _actions(done) -> list[str]:
    return [line[2:] for line in done.stdout.splitlines() if line.startswith("+ ")]


def test_dry_run_prints_every_action_and_changes_nothing(tmp_path):
    done = _install("--dry-run", "--root", str(tmp_path))
    actions = "\n".join(_actions(done))
    for expected in (f"python3 -m venv --system-site-packages {tmp_path}/opt/edge-detect/venv",
                     f"{tmp_path}/opt/edge-detect/venv/bin/pip install --quiet {ROOT}",
                     f"install -D -m 0644 {ROOT}/systemd/edge-detect.sysusers {tmp_path}/etc/sysusers.d/edge-detect.conf",
                     f"systemd-sysusers --root={tmp_path}",
                     f"{tmp_path}/etc/udev/rules.d/60-edge-detect.rules",
                     f"install -D -m 0640 {ROOT}/systemd/edge.toml {tmp_path}/etc/edge-detect/edge.toml",
                     f"{tmp_path}/etc/systemd/system/edge-detect.service",
                     f"systemctl --root={tmp_path} enable edge-detect.service"):
        assert expected in actions, actions
    assert "dry run: nothing was changed" in done.stdout
    assert list(tmp_path.iterdir()) == []


@pytest.mark.slow
def test_install_into_a_root_then_again_changes_nothing(tmp_path):
    first = _install("--root", str(tmp_path), "--no-apt", "--no-pip")
    assert len(_actions(first)) == 7
    assert (tmp_path / "opt/edge-detect/venv/bin/python").exists()
    assert "edge-detect:x:" in (tmp_path / "etc/passwd").read_text()
    assert "apex:x:" in (tmp_path / "etc/group").read_text()
    wants = tmp_path / "etc/systemd/system/multi-user.target.wants/edge-detect.service"
    assert wants.is_symlink() and os.readlink(wants) == "/etc/systemd/system/edge-detect.service"
    config = tmp_path / "etc/edge-detect/edge.toml"
    assert stat.S_IMODE(config.stat().st_mode) == 0o640
    assert (tmp_path / "etc/systemd/system/edge-detect.service").read_text() == (ROOT / "systemd/edge-detect.service").read_text()

    config.write_text(config.read_text().replace('uri = "/dev/video0"', 'uri = "rtsp://cam.local/stream"'))
    again = _install("--root", str(tmp_path), "--no-apt", "--no-pip")
    assert _actions(again) == [], again.stdout            # idempotent
    assert "rtsp://cam.local/stream" in config.read_text()   # the user's configuration is kept


def test_another_prefix_is_followed_by_the_unit(tmp_path):
    done = _install("--dry-run", "--root", str(tmp_path), "--prefix", "/srv/edge", "--no-apt")
    assert f"python3 -m venv --system-site-packages {tmp_path}/srv/edge/venv" in _actions(done)
    _install("--root", str(tmp_path), "--prefix", "/srv/edge", "--no-apt", "--no-pip")
    unit = (tmp_path / "etc/systemd/system/edge-detect.service").read_text()
    assert "ExecStart=/srv/edge/venv/bin/edge run --service" in unit and "/opt/edge-detect" not in unit


def test_unknown_option_is_refused():
    done = subprocess.run(["bash", str(SCRIPT), "--colour"], capture_output=True, text=True, timeout=30)
    assert done.returncode == 2 and "unknown option '--colour'" in done.stderr

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


def _gid(root: Path, group: str) -> int:
    return next(int(line.split(":")[2]) for line in (root / "etc/group").read_text().splitlines()
                if line.split(":")[0] == group)


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
                     f"install -D -m 0640 -o root -g edge-detect {ROOT}/systemd/edge.toml {tmp_path}/etc/edge-detect/edge.toml",
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
    assert config.stat().st_gid == _gid(tmp_path, "edge-detect") and config.stat().st_uid == 0   # readable by the service
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


@pytest.mark.skipif(os.geteuid() != 0, reason="chown needs root")
def test_a_config_left_root_only_by_an_earlier_install_is_given_to_the_service_group(tmp_path):
    _install("--root", str(tmp_path), "--no-apt", "--no-pip")
    config = tmp_path / "etc/edge-detect/edge.toml"
    os.chown(config, 0, 0)
    config.chmod(0o640)
    again = _install("--root", str(tmp_path), "--no-apt", "--no-pip")
    assert "not readable by edge-detect" in again.stdout
    assert config.stat().st_gid == _gid(tmp_path, "edge-detect") and stat.S_IMODE(config.stat().st_mode) == 0o640


def _fake_venv(root: Path, edge_file: str, with_bin: bool = True) -> Path:
    """A venv whose python prints ``edge_file`` for `import edge` when run isolated from /, and
    otherwise what importing the checkout in the working directory would print (its version)."""
    from edge import __version__
    bin_dir = root / "opt/edge-detect/venv/bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "python").write_text(f"#!/bin/sh\nif [ \"$1\" = -I ] && [ \"$PWD\" = / ]; then echo {edge_file}; "
                                    f"else echo {__version__}; fi\n")
    (bin_dir / "python").chmod(0o755)
    if with_bin:
        (bin_dir / "edge").write_text("#!/bin/sh\n")
        (bin_dir / "edge").chmod(0o755)
    return bin_dir.parent


def test_an_edge_importable_from_the_checkout_is_not_taken_for_installed(tmp_path):
    """The old check ran `python -c 'import edge'` in the checkout, which imports the checkout."""
    _fake_venv(tmp_path, f"{ROOT}/edge/__init__.py")
    done = _install("--dry-run", "--root", str(tmp_path), "--no-apt")
    assert f"{tmp_path}/opt/edge-detect/venv/bin/pip install --quiet {ROOT}" in _actions(done), done.stdout


def test_installed_from_this_checkout_is_kept_and_a_changed_checkout_reinstalled(tmp_path):
    venv = _fake_venv(tmp_path, f"{tmp_path}/opt/edge-detect/venv/lib/python3.11/site-packages/edge/__init__.py")
    pip_line = f"{venv}/bin/pip install --quiet {ROOT}"
    assert pip_line in _actions(_install("--dry-run", "--root", str(tmp_path), "--no-apt"))   # no stamp yet
    digest = subprocess.run(["bash", "-c", f"source <(sed -n '/^source_digest()/,/^}}/p' {SCRIPT}); SRC={ROOT}; "
                             "source_digest"], capture_output=True, text=True, check=True).stdout.strip()
    (venv / "edge-detect.source-sha256").write_text(digest + "\n")
    kept = _install("--dry-run", "--root", str(tmp_path), "--no-apt")
    assert pip_line not in _actions(kept) and "edge from this checkout is installed" in kept.stdout
    (venv / "edge-detect.source-sha256").write_text("0" * 64 + "\n")     # the checkout changed since
    assert pip_line in _actions(_install("--dry-run", "--root", str(tmp_path), "--no-apt"))


def test_apt_numpy_1_under_system_site_packages_pins_numpy_below_2(tmp_path):
    """Raspberry Pi OS bookworm: apt's numpy 1.24 with picamera2 built against it."""
    venv = _fake_venv(tmp_path, "/nowhere", with_bin=False)
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = true\n")
    status = tmp_path / "var/lib/dpkg/status"
    status.parent.mkdir(parents=True)
    status.write_text("Package: python3-numpy\nStatus: install ok installed\nVersion: 1:1.24.2-1+deb12u1\n"
                      "Architecture: arm64\n\n")
    done = _install("--dry-run", "--root", str(tmp_path), "--no-apt")
    assert f"{venv}/bin/pip install --quiet {ROOT} numpy<2" in _actions(done), done.stdout
    assert "apt's numpy is 1.24.2" in done.stdout
    (venv / "pyvenv.cfg").write_text("home = /usr/bin\ninclude-system-site-packages = false\n")
    assert f"{venv}/bin/pip install --quiet {ROOT}" in _actions(_install("--dry-run", "--root", str(tmp_path), "--no-apt"))
    (venv / "pyvenv.cfg").unlink()           # no venv yet: step 2 will make it with --system-site-packages
    assert f"{venv}/bin/pip install --quiet {ROOT} numpy<2" in _actions(_install("--dry-run", "--root", str(tmp_path), "--no-apt"))
    status.write_text(status.read_text().replace("1:1.24.2-1+deb12u1", "1:2.2.4+ds-1"))   # trixie
    assert f"{venv}/bin/pip install --quiet {ROOT}" in _actions(_install("--dry-run", "--root", str(tmp_path), "--no-apt"))


def _fake_bin(tmp_path: Path, **scripts: str) -> dict:
    bin_dir = tmp_path / "fakebin"
    bin_dir.mkdir(exist_ok=True)
    for name, body in scripts.items():
        (bin_dir / name).write_text("#!/bin/sh\n" + body + "\n")
        (bin_dir / name).chmod(0o755)
    return {**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}"}


def test_plain_debian_without_python3_picamera2_installs_with_a_warning_or_the_flag(tmp_path):
    """Plain Debian has no python3-picamera2: reported and skipped, or left out by --no-picamera2."""
    env = _fake_bin(tmp_path, **{"apt-cache": 'echo "N: Unable to locate package $2" >&2; exit 100'})
    root = tmp_path / "root"
    root.mkdir()
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--root", str(root)], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    assert "python3-picamera2 is in none of this system's apt sources" in done.stderr
    assert "apt-get install -y --no-install-recommends python3-venv" in done.stdout
    assert "python3-picamera2" not in "\n".join(_actions(done))
    flagged = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--root", str(root), "--no-picamera2"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert flagged.returncode == 0 and "skipped: python3-picamera2 (--no-picamera2)" in flagged.stdout
    assert "python3-picamera2 is in none" not in flagged.stderr


def test_without_a_running_udevd_the_rules_are_installed_and_not_reloaded(tmp_path):
    """A container or chroot has no udevd: `udevadm control --reload-rules` fails there, and set -e
    used to abort the install. Dry run on / with a udevadm that cannot reach udevd."""
    env = _fake_bin(tmp_path, udevadm='echo "Failed to connect to udev daemon" >&2; exit 1')
    done = subprocess.run(["bash", str(SCRIPT), "--dry-run", "--no-apt", "--no-pip"], capture_output=True,
                          text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    actions = "\n".join(_actions(done))
    if "60-edge-detect.rules" in actions:     # rules not installed on this machine yet
        assert "udevd is not running" in done.stderr and "udevadm control" not in actions


def test_pyproject_build_requirements_can_build_it_and_python_is_the_one_tomllib_needs():
    """install-pi.sh builds the checkout with pip, in an isolated build environment that takes
    pyproject's [build-system] requirement at its word: a `license = "MIT"` string (PEP 639) needs
    setuptools >= 77, and edge reads its configuration with tomllib (Python >= 3.11)."""
    import re
    import tomllib

    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (setuptools,) = [r for r in meta["build-system"]["requires"] if r.startswith("setuptools")]
    minimum = tuple(int(x) for x in re.search(r">=\s*([\d.]+)", setuptools).group(1).split("."))
    if isinstance(meta["project"]["license"], str):
        assert minimum >= (77,), setuptools
    assert meta["project"]["requires-python"] == ">=3.11"
    assert "import tomllib" in (ROOT / "edge/config.py").read_text()


BENCH_FROM_A_CHECKOUT = """
import runpy, sys
# as in a checkout that was never installed: no editable-install finder maps edge.models to models/
sys.meta_path[:] = [f for f in sys.meta_path if not getattr(f, "__module__", "").startswith("__editable__")]
sys.argv = [sys.argv[1], "--help"]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_scripts_benchmark_runs_from_a_checkout_that_is_not_installed(tmp_path):
    """It failed with "No module named 'edge.models'": models/ is edge.models only once installed."""
    import sys
    done = subprocess.run([sys.executable, "-c", BENCH_FROM_A_CHECKOUT, str(ROOT / "scripts/benchmark.py")],
                          capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "usage: edge bench" in done.stdout
    probe = ("import runpy, sys\n" + BENCH_FROM_A_CHECKOUT.split("sys.argv")[0] +
             f"sys.argv = ['{ROOT}/scripts/benchmark.py']\n"
             f"g = runpy.run_path('{ROOT}/scripts/benchmark.py', run_name='probe')\n"
             "from edge.resources import default_model_dir\nprint(default_model_dir())\n")
    where = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert where.returncode == 0 and where.stdout.strip() == str(ROOT / "models/ssdlite_mobilenet_v2_person"), where.stderr

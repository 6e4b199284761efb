"""The systemd unit, sysusers file, udev rules and example config, checked with systemd's own tools.

`systemd-analyze verify/security --offline=yes` and `systemd-sysusers --root=` (Debian package
systemd) work without systemd as PID 1.
"""

from __future__ import annotations

import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from edge import config as configuration
from edge.cli import build_parser

SYSTEMD = Path(__file__).resolve().parents[2] / "systemd"
UNIT = SYSTEMD / "edge-detect.service"
INSTALLED_EDGE = "/opt/edge-detect/venv/bin/edge"

needs_analyze = pytest.mark.skipif(shutil.which("systemd-analyze") is None,
                                   reason="systemd-analyze missing (apt install systemd)")


def _directives(text: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for line in text.splitlines():
        if "=" in line and not line.lstrip().startswith(("#", "[")):
            key, value = line.split("=", 1)
            found.setdefault(key.strip(), []).append(value.strip())
    return found


@pytest.fixture
def unit_here(tmp_path) -> Path:
    """The unit with ExecStart pointing at this venv's `edge`, so verify checks a real executable."""
    edge = Path(sys.executable).with_name("edge")
    if not edge.exists():
        pytest.skip(f"{edge} missing: install the package into the venv (pip install -e .)")
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace(INSTALLED_EDGE, str(edge)))
    return unit


@needs_analyze
def test_systemd_analyze_verify_is_clean(unit_here):
    done = subprocess.run(["systemd-analyze", "verify", str(unit_here)], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and not done.stdout.strip() and not done.stderr.strip(), done.stderr


@needs_analyze
def test_security_exposure_is_at_most_1_5(unit_here):
    done = subprocess.run(["systemd-analyze", "security", "--offline=yes", str(unit_here)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    score = float(re.search(r"Overall exposure level for \S+: (\d+\.\d+)", done.stdout).group(1))
    assert score <= 1.5, done.stdout


def test_unit_essentials():
    d = _directives(UNIT.read_text())
    assert d["Type"] == ["notify"] and d["Restart"] == ["on-failure"]
    assert int(d["WatchdogSec"][0]) > 0 and d["ExecReload"] == ["/bin/sh -c 'kill -HUP $MAINPID'"]
    assert "StartLimitBurst" in d and "StartLimitIntervalSec" in d
    assert d["DevicePolicy"] == ["closed"] and d["ProtectSystem"] == ["strict"]
    allowed = " ".join(d["DeviceAllow"])
    for device in ("video4linux", "media", "dma_heap", "usb_device", "apex", "i2c", "/dev/vcio"):
        assert device in allowed
    assert set(d["SupplementaryGroups"][0].split()) == {"video", "plugdev", "apex", "i2c"}
    assert d["StateDirectory"] == ["edge-detect"] and d["ConfigurationDirectory"] == ["edge-detect"]
    assert "MALLOC_ARENA_MAX=2" in d["Environment"]


def test_proc_stays_visible_enough_for_xnnpack():
    """ProcSubset=pid hides /proc/cpuinfo: XNNPACK then does not start (tests/unit/test_backend_delegation.py)."""
    d = _directives(UNIT.read_text())
    assert "ProcSubset" not in d or d["ProcSubset"] == ["all"]


def test_exec_reload_needs_nothing_but_the_shell(tmp_path):
    """ExecReload= must work in a minbase system without procps (/bin/kill): the command, run as
    systemd runs it (MAINPID in the environment) with no PATH at all, signals the main process."""
    argv = shlex.split(_directives(UNIT.read_text())["ExecReload"][0])
    assert argv[0] == "/bin/sh"
    target = subprocess.Popen([sys.executable, "-c", "import signal, sys, time\n"
                               "signal.signal(signal.SIGHUP, lambda *a: sys.exit(42))\n"
                               "print('armed', flush=True)\ntime.sleep(60)"], stdout=subprocess.PIPE, text=True)
    try:
        assert target.stdout.readline().strip() == "armed"
        done = subprocess.run(argv, env={"MAINPID": str(target.pid)}, capture_output=True, text=True, timeout=30)
        assert done.returncode == 0, done.stderr
        assert target.wait(timeout=30) == 42
    finally:
        target.kill()
        target.wait()


def test_exec_start_is_a_valid_edge_command_and_the_example_config_loads():
    argv = shlex.split(_directives(UNIT.read_text())["ExecStart"][0])
    assert argv[0] == INSTALLED_EDGE
    args = build_parser().parse_args(argv[1:])
    assert args.service and args.config == "/etc/edge-detect/edge.toml"
    cfg = configuration.load(SYSTEMD / "edge.toml")
    assert cfg.output.jsonl.startswith("/var/lib/edge-detect/")   # inside StateDirectory=, writable
    assert cfg.service.reconnect


@pytest.mark.skipif(shutil.which("systemd-sysusers") is None, reason="apt install systemd")
def test_sysusers_creates_the_user_in_the_unit_groups(tmp_path):
    (tmp_path / "etc").mkdir()
    (tmp_path / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/bash\n")
    (tmp_path / "etc/group").write_text("root:x:0:\nvideo:x:44:\nplugdev:x:46:\n")
    done = subprocess.run(["systemd-sysusers", f"--root={tmp_path}", str(SYSTEMD / "edge-detect.sysusers")],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert re.search(r"^edge-detect:x:\d+:\d+:.*:/usr/sbin/nologin$", (tmp_path / "etc/passwd").read_text(), re.M)
    groups = {line.split(":")[0]: line.split(":")[3].split(",") for line in
              (tmp_path / "etc/group").read_text().splitlines()}
    unit_groups = _directives(UNIT.read_text())["SupplementaryGroups"][0].split()
    for group in unit_groups:
        assert "edge-detect" in groups[group], group
    assert _directives(UNIT.read_text())["User"] == ["edge-detect"]


def test_udev_rules_cover_both_coral_usb_ids_and_apex():
    rules = [line for line in (SYSTEMD / "60-edge-detect.rules").read_text().splitlines()
             if line.strip() and not line.startswith("#")]
    ids = {(re.search(r'idVendor}=="(\w+)"', r).group(1), re.search(r'idProduct}=="(\w+)"', r).group(1))
           for r in rules if "idVendor" in r}
    assert ids == {("1a6e", "089a"), ("18d1", "9302")}
    assert any('SUBSYSTEM=="apex"' in r and 'GROUP="apex"' in r for r in rules)
    for rule in rules:   # every clause is KEY==value, KEY=value or KEY+=value
        for clause in rule.split(", "):
            assert re.fullmatch(r'[A-Z]+(\{\w+\})?(==|\+=|=)"[^"]*"', clause.strip()), clause


PR_SET_MDWE, PR_MDWE_REFUSE_EXEC_GAIN = 65, 1


def test_pipeline_runs_with_memory_deny_write_execute(tmp_path):
    """MemoryDenyWriteExecute=yes in the unit: the CPU pipeline must not need W+X memory.

    The kernel's PR_SET_MDWE (Linux ≥ 6.3) enforces the same rule for the process and its children.
    """
    code = ("import ctypes, sys\n"
            f"r = ctypes.CDLL(None, use_errno=True).prctl({PR_SET_MDWE}, {PR_MDWE_REFUSE_EXEC_GAIN}, 0, 0, 0)\n"
            "if r != 0: sys.exit(77)\n"
            "from edge.cli import main\n"
            "sys.exit(main(['run', '--max-frames', '10', '--as-fast-as-possible', '--jsonl', '']))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=tmp_path)
    if done.returncode == 77:
        pytest.skip("kernel without PR_SET_MDWE (Linux < 6.3)")
    assert done.returncode == 0, done.stderr
    assert "10 frames in" in done.stderr

"""The service runs inside the unit's sandbox: its system-call filter and no writable code.

systemd is not PID 1 here, so the filter is built the way systemd builds it: the syscalls of
``SystemCallFilter=@system-service`` minus ``~@privileged @resources`` as listed by this systemd's
own `systemd-analyze syscall-filter`, denied with EPERM (``SystemCallErrorNumber=EPERM``), loaded
with libseccomp (Debian python3-seccomp, for the system Python) together with no_new_privs
(``NoNewPrivileges=yes``) and PR_SET_MDWE (``MemoryDenyWriteExecute=yes``); then `edge run
--service` is exec'd inside it, with a real notify socket.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.e2e.service_harness import ROOT, NotifyListener

UNIT = ROOT / "systemd" / "edge-detect.service"
SYSTEM_PYTHON = "/usr/bin/python3"


def _has_seccomp() -> bool:
    if not Path(SYSTEM_PYTHON).exists():
        return False
    return subprocess.run([SYSTEM_PYTHON, "-c", "import seccomp"], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(shutil.which("systemd-analyze") is None or not _has_seccomp(),
                                reason="needs systemd-analyze and libseccomp for the system Python "
                                       "(apt install systemd python3-seccomp)")


@functools.cache
def _expand(group: str) -> frozenset[str]:
    out = subprocess.run(["systemd-analyze", "syscall-filter", group], capture_output=True, text=True,
                         check=True).stdout
    names: set[str] = set()
    for line in out.splitlines()[1:]:
        entry = line.strip()
        if not entry or entry.startswith("#"):
            continue
        names |= _expand(entry) if entry.startswith("@") else {entry}
    return frozenset(names)


def _unit_filter() -> tuple[set[str], set[str]]:
    """(allowed, denied) groups from the unit's SystemCallFilter= lines."""
    allowed, denied = set(), set()
    for line in UNIT.read_text().splitlines():
        match = re.fullmatch(r"SystemCallFilter=(~?)(.+)", line.strip())
        if match:
            (denied if match.group(1) else allowed).update(match.group(2).split())
    return allowed, denied


SANDBOX = r"""
import ctypes, errno, json, os, sys
import seccomp
allowed = json.load(open(sys.argv[1]))
f = seccomp.SyscallFilter(defaction=seccomp.ERRNO(errno.EPERM))   # sets no_new_privs on load
for name in allowed:
    try:
        f.add_rule(seccomp.ALLOW, name)
    except (RuntimeError, ValueError, OSError):   # not a syscall of this architecture/libseccomp
        pass
f.load()
if ctypes.CDLL(None, use_errno=True).prctl(65, 1, 0, 0, 0) != 0:   # PR_SET_MDWE, REFUSE_EXEC_GAIN
    print("no PR_SET_MDWE: running without the W^X part", file=sys.stderr)
os.execv(sys.argv[2], sys.argv[2:])
"""


def test_the_service_runs_under_the_units_syscall_filter(tmp_path):
    allowed_groups, denied_groups = _unit_filter()
    assert allowed_groups == {"@system-service"} and {"@privileged", "@resources"} <= denied_groups
    allowed = set().union(*map(_expand, allowed_groups)) - set().union(*map(_expand, denied_groups))
    assert "execve" in allowed and "sched_setaffinity" not in allowed and "mount" not in allowed
    (tmp_path / "allowed.json").write_text(json.dumps(sorted(allowed)))
    (tmp_path / "sandbox.py").write_text(SANDBOX)

    listener = NotifyListener(str(tmp_path / "notify.sock"))
    env = {"NOTIFY_SOCKET": listener.address, "PATH": "/usr/bin:/bin", "HOME": str(tmp_path),
           "MALLOC_ARENA_MAX": "2"}
    try:
        done = subprocess.run([SYSTEM_PYTHON, str(tmp_path / "sandbox.py"), str(tmp_path / "allowed.json"),
                               sys.executable, "-m", "edge.cli", "run", "--service", "--as-fast-as-possible",
                               "--max-frames", "60", "--jsonl", "events.jsonl"],
                              cwd=tmp_path, env=env, capture_output=True, text=True, timeout=180)
        assert done.returncode == 0, done.stderr
        assert listener.having("READY", "1"), done.stderr
        assert "Operation not permitted" not in done.stderr
        assert "60 frames inferred, 60 published" in done.stderr
        events = [json.loads(line) for line in (tmp_path / "events.jsonl").read_text().splitlines()]
        assert events and all(e["detections"] for e in events)
    finally:
        listener.close()


def test_the_filter_really_denies(tmp_path):
    """The same sandbox refuses what the unit forbids (sched_setaffinity is in @resources)."""
    allowed = set().union(*map(_expand, _unit_filter()[0])) - set().union(*map(_expand, _unit_filter()[1]))
    (tmp_path / "allowed.json").write_text(json.dumps(sorted(allowed)))
    (tmp_path / "sandbox.py").write_text(SANDBOX)
    code = "import os; os.sched_setaffinity(0, os.sched_getaffinity(0))"
    done = subprocess.run([SYSTEM_PYTHON, str(tmp_path / "sandbox.py"), str(tmp_path / "allowed.json"),
                           sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "Operation not permitted" in done.stderr

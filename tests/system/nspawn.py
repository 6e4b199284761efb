"""A real systemd (Debian bookworm, systemd 252) booted in ``systemd-nspawn``, for the system tests.

- The rootfs: ``debootstrap --variant=minbase`` of bookworm from the mirror in this host's apt
  sources, cached in ``/var/cache/edge-detect-tests/`` (``$EDGE_SYSTEM_CACHE``) between runs on one
  machine and built again when missing. Each boot works on an overlay over it, so the cache stays
  pristine.
- The boot: ``systemd-nspawn --register=no --keep-unit -b`` (this host runs no systemd or D-Bus),
  with the unified cgroup hierarchy and the ``bpf`` syscall allowed, so that IPAddressDeny= and
  DevicePolicy= are enforced. Commands run inside with ``nsenter`` into the container's PID 1.
- pip inside sees the package index the way this host's pip does: resolv.conf and the hosts
  entries, the CA certificates of /usr/local/share/ca-certificates, the pip configuration files
  and ``PIP_*`` variables, and the local directories they name (bind-mounted read-only).

Everything missing on a machine that should run these tests (root, systemd-nspawn, debootstrap)
raises :class:`Missing` with what to install.
"""

from __future__ import annotations

import fcntl
import json
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("EDGE_SYSTEM_CACHE", "/var/cache/edge-detect-tests"))
SUITE = "bookworm"
INCLUDE = "systemd,systemd-sysv,dbus,python3,python3-venv,python3-pip,ca-certificates"
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
# Left out of the copy of the working tree: what is not the project (venvs, VCS, build leftovers).
NOT_COPIED = {".venv", ".git", "__pycache__", "build", ".pytest_cache", "detections.jsonl"}


class Missing(RuntimeError):
    """Something this machine lacks for the system tests; the message says what to install."""


def require_tools() -> None:
    if os.geteuid() != 0:
        raise Missing("the systemd system tests need root (systemd-nspawn, debootstrap, mounts)")
    lacking = [(tool, pkg) for tool, pkg in (("systemd-nspawn", "systemd-container"), ("debootstrap", "debootstrap"),
                                             ("nsenter", "util-linux"))
               if shutil.which(tool) is None]
    if lacking:
        raise Missing("missing " + ", ".join(t for t, _ in lacking) + ": apt-get install -y " +
                      " ".join(sorted({p for _, p in lacking})) + " (scripts/test.sh does it as root)")


def apt_mirror(sources_dir: Path = Path("/etc/apt")) -> str:
    """The Debian archive URI of this host's apt sources (one-line and deb822 formats)."""
    found: list[tuple[str, str]] = []   # (uri, suites)
    lists = [sources_dir / "sources.list", *sorted((sources_dir / "sources.list.d").glob("*.list"))]
    for path in lists:
        if path.is_file():
            for line in path.read_text().splitlines():
                m = re.match(r"\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)\s+(\S+)", line)
                if m:
                    found.append((m.group(1), m.group(2)))
    for path in sorted((sources_dir / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            uris = re.search(r"^URIs:\s*(.+)$", stanza, re.M)
            suites = re.search(r"^Suites:\s*(.+)$", stanza, re.M)
            if uris and suites and re.search(r"^Types:.*\bdeb\b", stanza, re.M):
                found += [(u, suites.group(1)) for u in uris.group(1).split()]
    for uri, suites in found:
        if any(s == SUITE or s in ("stable",) for s in suites.split()) and "security" not in uri:
            return uri.rstrip("/")
    for uri, _ in found:
        if "security" not in uri:
            return uri.rstrip("/")
    raise Missing(f"no Debian mirror in {sources_dir}/sources.list*: cannot debootstrap {SUITE}")


def ensure_rootfs(cache: Path = CACHE) -> Path:
    """The cached minbase rootfs, built when missing (about 2 minutes, 330 MB)."""
    rootfs = cache / f"{SUITE}-minbase"
    if (rootfs / "usr/lib/systemd/systemd").exists():
        return rootfs
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{SUITE}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another test run may be building it
        if (rootfs / "usr/lib/systemd/systemd").exists():
            return rootfs
        partial = cache / f"{SUITE}-minbase.partial"
        if partial.exists():
            log.info("removing a partial rootfs left by an interrupted build: %s", partial)
            shutil.rmtree(partial)
        mirror = apt_mirror()
        log.info("debootstrap %s minbase from %s into %s", SUITE, mirror, partial)
        done = subprocess.run(["debootstrap", "--variant=minbase", f"--include={INCLUDE}", SUITE, str(partial),
                               mirror], capture_output=True, text=True, timeout=1800)
        if done.returncode != 0:
            raise RuntimeError(f"debootstrap failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        partial.rename(rootfs)
    return rootfs


@dataclass
class PipSetup:
    """How this host's pip reaches its package index, to be repeated inside the container."""

    files: list[Path] = field(default_factory=list)       # configuration (and constraint) files
    dirs: list[Path] = field(default_factory=list)        # local indexes / wheel folders named
    env: dict[str, str] = field(default_factory=dict)     # PIP_* variables


def host_pip_setup() -> PipSetup:
    done = subprocess.run([sys.executable, "-m", "pip", "config", "debug"], capture_output=True, text=True,
                          timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"pip config debug failed: {done.stderr}")
    setup = PipSetup(env={k: v for k, v in os.environ.items() if k.startswith("PIP_")})
    values = list(setup.env.values())
    for line in done.stdout.splitlines():
        m = re.match(r"\s+(/\S+), exists: True$", line)
        if m:
            setup.files.append(Path(m.group(1)))
        m = re.match(r"\s+[\w.-]+: (.+)$", line)
        if m:
            values.append(m.group(1))
    for value in values:
        for word in value.split():
            path = Path(word[len("file://"):] if word.startswith("file://") else word)
            if not path.is_absolute() or not path.exists() or path == Path("/etc/ssl/certs/ca-certificates.crt"):
                continue
            if path.is_dir() and path.name == "simple":
                path = path.parent       # a PEP 503 index links its files relative to it (../../files/…)
            (setup.dirs if path.is_dir() else setup.files).append(path)
    setup.dirs = sorted(set(setup.dirs))
    setup.files = sorted(set(setup.files))
    return setup


def copy_tree(src: Path, dst: Path) -> None:
    """The working tree as it is (uncommitted changes included), without venvs and build output."""
    shutil.copytree(src, dst, symlinks=True,
                    ignore=lambda _d, names: [n for n in names if n in NOT_COPIED or n.endswith(".egg-info")])


class Container:
    """One booted container: ``run`` executes a bash command line inside as root."""

    def __init__(self, rootfs: Path, work: Path, pip: PipSetup):
        self.lower = rootfs
        self.work = work
        self.pip = pip
        self.merged = work / "merged"
        self.proc: subprocess.Popen | None = None
        self.leader = 0
        self.mounted = False

    # set-up ------------------------------------------------------------------------------------
    def prepare(self, checkout: Path, dest: str = "/root/edge-detect") -> None:
        upper, scratch = self.work / "upper", self.work / "overlay-work"
        for d in (upper, scratch, self.merged):
            d.mkdir(parents=True, exist_ok=True)
        subprocess.run(["mount", "-t", "overlay", "overlay", "-o",
                        f"lowerdir={self.lower},upperdir={upper},workdir={scratch}", str(self.merged)],
                       check=True, capture_output=True, text=True)
        self.mounted = True
        root = self.merged
        shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
        own = (root / "etc/hosts").read_text() if (root / "etc/hosts").exists() else ""
        extra = [line for line in Path("/etc/hosts").read_text().splitlines()
                 if line.strip() and not line.startswith("#") and line not in own.splitlines()]
        (root / "etc/hosts").write_text(own + "".join(f"{line}\n" for line in extra))
        cas = Path("/usr/local/share/ca-certificates")
        if cas.is_dir():
            shutil.copytree(cas, root / cas.relative_to("/"), dirs_exist_ok=True)
        for f in self.pip.files:
            target = root / f.relative_to("/")
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(f, target)
        for d in self.pip.dirs:
            (root / d.relative_to("/")).mkdir(parents=True, exist_ok=True)
        copy_tree(checkout, root / dest.lstrip("/"))

    def boot(self, timeout: float = 120) -> None:
        cmd = ["systemd-nspawn", "-D", str(self.merged), "--register=no", "--keep-unit", "-b",
               "--console=pipe", "--system-call-filter=bpf", "--machine=edge-system-test",
               *[f"--bind-ro={d}" for d in self.pip.dirs]]
        env = {**os.environ, "SYSTEMD_NSPAWN_UNIFIED_HIERARCHY": "1"}
        self.boot_log = open(self.work / "boot.log", "wb")
        self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=self.boot_log, stderr=subprocess.STDOUT,
                                     env=env, start_new_session=True)
        deadline = time.monotonic() + timeout
        while not self.leader:
            self._alive_or_raise()
            children = Path(f"/proc/{self.proc.pid}/task/{self.proc.pid}/children").read_text().split()
            if children and Path(f"/proc/{children[0]}/comm").read_text().strip() == "systemd":
                self.leader = int(children[0])
            elif time.monotonic() > deadline:
                raise RuntimeError(f"the container's systemd did not start:\n{self.boot_text()}")
            else:
                time.sleep(0.2)
        state = ""
        while time.monotonic() < deadline:
            self._alive_or_raise()
            state = self.run("systemctl is-system-running", check=False).stdout.strip()
            if state in ("running", "degraded"):
                break
            time.sleep(0.5)
        else:
            raise RuntimeError(f"boot did not finish (is-system-running: {state}):\n{self.boot_text()}")
        self.run("update-ca-certificates >/dev/null")

    def _alive_or_raise(self) -> None:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"systemd-nspawn exited ({self.proc.returncode}):\n{self.boot_text()}")

    def boot_text(self) -> str:
        path = self.work / "boot.log"
        return path.read_text(errors="replace")[-4000:] if path.exists() else ""

    # use ---------------------------------------------------------------------------------------
    def run(self, script: str, *, check: bool = True, timeout: float = 300) -> subprocess.CompletedProcess:
        env = ["env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8", *[f"{k}={v}" for k, v in self.pip.env.items()]]
        done = subprocess.run(["nsenter", "-t", str(self.leader), "-a", *env, "bash", "-c", script],
                              capture_output=True, text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"in the container, `{script}` exited {done.returncode}:\n"
                                 f"{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
        return done

    def show(self, unit: str, *props: str) -> dict[str, str]:
        out = self.run(f"systemctl show {unit} " + " ".join(f"-p {p}" for p in props)).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def cursor(self) -> str:
        """The journal position now: :meth:`journal` after it gives only what came later."""
        out = self.run("journalctl --show-cursor -n 0 --no-pager -q").stdout
        m = re.search(r"-- cursor: (\S+)", out)
        return m.group(1) if m else ""

    def journal(self, unit: str, after: str = "") -> list[dict]:
        """The unit's journal entries (as journalctl -o json gives them) after a cursor."""
        since = f"--after-cursor='{after}'" if after else ""
        out = self.run(f"journalctl -u {unit} -o json --no-pager {since}").stdout
        return [json.loads(line) for line in out.splitlines() if line.startswith("{")]

    def messages(self, unit: str, after: str = "") -> list[str]:
        return [e["MESSAGE"] if isinstance(e.get("MESSAGE"), str) else "" for e in self.journal(unit, after)]

    def wait_journal(self, unit: str, pattern: str, after: str, timeout: float) -> dict:
        """The first entry after ``after`` whose MESSAGE matches ``pattern`` (a regex)."""
        deadline = time.monotonic() + timeout
        while True:
            for entry in self.journal(unit, after):
                if isinstance(entry.get("MESSAGE"), str) and re.search(pattern, entry["MESSAGE"]):
                    return entry
            if time.monotonic() > deadline:
                tail = "\n".join(self.messages(unit, after)[-40:])
                raise AssertionError(f"{pattern!r} not in the journal of {unit} within {timeout} s:\n{tail}")
            time.sleep(0.5)

    def wait_for(self, what: str, predicate, timeout: float, interval: float = 0.5):
        deadline = time.monotonic() + timeout
        while True:
            value = predicate()
            if value:
                return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}: not within {timeout} s")
            time.sleep(interval)

    # tear-down ---------------------------------------------------------------------------------
    def close(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            if self.leader:
                self.run("systemctl poweroff --no-block", check=False, timeout=30)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                log.warning("the container did not power off in 60 s: killing systemd-nspawn %d", self.proc.pid)
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)
        if self.mounted:
            done = subprocess.run(["umount", str(self.merged)], capture_output=True, text=True)
            if done.returncode != 0:
                log.warning("umount %s failed (%s): detaching it lazily", self.merged, done.stderr.strip())
                subprocess.run(["umount", "-l", str(self.merged)], capture_output=True, text=True)
            self.mounted = False
        if hasattr(self, "boot_log"):
            self.boot_log.close()

"""Raspberry Pi OS's userland (Debian arm64) under qemu-user-static, for the system tests.

- The rootfs: ``debootstrap --arch=arm64 --variant=minbase`` of a suite (bookworm: Python 3.11 and
  apt numpy 1.24; trixie: Python 3.13 and numpy 2.2), from the mirror in this host's apt sources,
  with what a Pi user has (python3-venv, python3-pip, python3-numpy) plus a stand-in for apt's
  ``python3-picamera2`` built in it (below). Cached in ``/var/cache/edge-detect-tests/pi-userland/``
  (``$EDGE_SYSTEM_CACHE``) between runs on one machine, rebuilt when missing or when its recipe
  (:data:`RECIPE`) changes. Each :class:`Userland` works on an overlay over it, so the cache stays
  pristine, with /proc, /dev and /sys mounted and a user ``pi``.
- binfmt_misc is mounted and qemu-aarch64 enabled by :func:`register_binfmt` (fix-binary, so the
  interpreter need not be inside the rootfs).
- LiteRT's XNNPACK segfaults under qemu when it reads this host's x86 /proc/cpuinfo (cpuinfo's
  parser finds no ARM processor): an emulation artefact. A Pi-shaped cpuinfo (:data:`PI4`,
  :data:`PI5`) is bind-mounted over the rootfs' /proc/cpuinfo, with as many processors as this host
  has, and ``QEMU_CPU`` names the matching core (cortex-a72, cortex-a76).
- pip inside reaches PyPI as this host's pip does: resolv.conf, /etc/hosts entries, this host's CA
  bundle (which holds /usr/local/share/ca-certificates), /etc/pip.conf, the ``PIP_*`` variables that
  name nothing local; downloads are cached in the cache directory (a cache, not an index: resolution
  is PyPI's).

The picamera2 stand-in: Debian has no python3-picamera2 (it comes from the Raspberry Pi archive,
which cannot be reached from here). What breaks on bookworm is that apt's picamera2 and simplejpeg
are C extensions built against apt's numpy 1.24, and a numpy 2 in a ``--system-site-packages`` venv
makes their import fail with Cython's "numpy.dtype size changed" ValueError. The stand-in has the
same shape: a Cython module that cimports numpy, compiled inside the rootfs with apt's cython3,
python3-dev and python3-numpy, installed where apt puts python3-picamera2
(/usr/lib/python3/dist-packages/picamera2). Its ``Picamera2`` implements the part of picamera2's
documented API that edge uses and shows a scene (an .npy image named by ``$STANDIN_SCENE``) as the
camera's field of view on every stream, scaled to each stream's size (I420 for YUV420 streams).
"""

from __future__ import annotations

import fcntl
import hashlib
import logging
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

log = logging.getLogger(__name__)

CACHE = Path(os.environ.get("EDGE_SYSTEM_CACHE", "/var/cache/edge-detect-tests")) / "pi-userland"
PACKAGES = ("python3", "python3-venv", "python3-pip", "ca-certificates", "python3-numpy",
            # to build the picamera2 stand-in against apt's numpy, as apt's own extensions are
            "python3-dev", "cython3", "gcc", "libc6-dev")
PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
USER, UID = "pi", 1000
QEMU = Path("/usr/bin/qemu-aarch64-static")
NOT_COPIED = {".venv", ".git", "__pycache__", "build", "dist", ".pytest_cache", "detections.jsonl", "out"}


class Missing(RuntimeError):
    """Something this machine lacks for these tests; the message says what to install."""


@dataclass(frozen=True)
class Cpu:
    """A Raspberry Pi's CPU as /proc/cpuinfo shows it (Raspberry Pi OS 64-bit) and qemu's model of it."""

    name: str
    qemu_cpu: str
    part: str
    variant: str
    revision: str
    features: str
    model: str
    board_revision: str

    def cpuinfo(self, processors: int) -> str:
        core = ("BogoMIPS\t: 108.00\nFeatures\t: {features}\nCPU implementer\t: 0x41\nCPU architecture: 8\n"
                "CPU variant\t: {variant}\nCPU part\t: {part}\nCPU revision\t: {revision}\n")
        body = "".join(f"processor\t: {i}\n" + core.format(**vars(self)) + "\n" for i in range(processors))
        return body + f"Revision\t: {self.board_revision}\nSerial\t\t: 10000000deadbeef\nModel\t\t: {self.model}\n"


PI4 = Cpu("pi4", "cortex-a72", "0xd08", "0x0", "3", "fp asimd evtstrm crc32 cpuid",
          "Raspberry Pi 4 Model B Rev 1.5", "d03115")
PI5 = Cpu("pi5", "cortex-a76", "0xd0b", "0x4", "1",
          "fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid asimdrdm lrcpc dcpop asimddp",
          "Raspberry Pi 5 Model B Rev 1.0", "d04170")


# ---- the picamera2 stand-in ---------------------------------------------------------------------

STANDIN_PYX = r'''# cython: language_level=3
"""Stand-in for apt's python3-picamera2: a C extension built against apt's numpy (cimport numpy)."""
cimport numpy as cnp
import os
import numpy as np

cnp.import_array()


cdef cnp.ndarray _scaled(cnp.ndarray scene, int width, int height):
    ys = (np.arange(height) * scene.shape[0]) // height
    xs = (np.arange(width) * scene.shape[1]) // width
    return np.ascontiguousarray(scene[ys[:, None], xs])


def _i420(bgr):
    b, g, r = [bgr[..., i].astype(np.float32) for i in range(3)]
    h, w = bgr.shape[:2]
    y = 0.299 * r + 0.587 * g + 0.114 * b
    u = (b - y) * 0.564 + 128
    v = (r - y) * 0.713 + 128
    out = np.empty((h * 3 // 2, w), np.uint8)
    out[:h] = np.clip(np.rint(y), 0, 255)
    sub = lambda c: c.reshape(h // 2, 2, w // 2, 2).mean(axis=(1, 3))
    out[h:].reshape(-1)[:(h // 2) * (w // 2)] = np.clip(np.rint(sub(u)), 0, 255).reshape(-1)
    out[h:].reshape(-1)[(h // 2) * (w // 2):] = np.clip(np.rint(sub(v)), 0, 255).reshape(-1)
    return out


class Picamera2:
    def __init__(self, camera_num=0):
        if camera_num != 0:
            raise IndexError("list index out of range")
        self.camera_config = None
        self._scene = np.load(os.environ["STANDIN_SCENE"])

    def create_preview_configuration(self, main={}, lores=None, buffer_count=4, queue=True, controls={}):
        main = {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True, **main}
        if lores is not None:
            lores = {"format": "YUV420", "size": main["size"], "preserve_ar": False, **lores}
        return {"main": main, "lores": lores, "buffer_count": buffer_count, "queue": queue, "controls": controls}

    def align_configuration(self, config, optimal=True):
        for name in ("main", "lores"):
            stream = config.get(name)
            if stream is not None:
                align = 32 * (2 if stream["format"] == "YUV420" else 1)
                w, h = stream["size"]
                stream["size"] = (w - w % align, h - h % 2)

    def configure(self, config):
        if config["lores"] is not None:
            (mw, mh), (lw, lh) = config["main"]["size"], config["lores"]["size"]
            if lw > mw or lh > mh:
                raise RuntimeError("lores stream dimensions may not exceed main stream")
            if config["lores"]["format"] != "YUV420":
                raise RuntimeError("lores stream must be YUV")
        self.camera_config = {k: (dict(v) if isinstance(v, dict) else v) for k, v in config.items()}

    def camera_configuration(self):
        return self.camera_config

    def start(self):
        pass

    def _array(self, name):
        stream = self.camera_config[name]
        width, height = stream["size"]
        bgr = _scaled(self._scene, width, height)
        return _i420(bgr) if stream["format"] == "YUV420" else bgr

    def capture_array(self, name="main"):
        return self._array(name)

    def capture_arrays(self, names=["main"]):
        return [self._array(n) for n in names], {}

    def stop(self):
        pass

    def close(self):
        pass
'''

STANDIN_INIT = '''"""Stand-in for apt's python3-picamera2 (edge's system tests)."""
from picamera2._standin import Picamera2  # noqa: F401  (fails as apt's C extensions do under a foreign numpy)
'''
STANDIN_PLATFORM = '''import enum


class Platform(enum.Enum):
    VC4 = "vc4"
    PISP = "pisp"


def get_platform():
    return Platform.VC4
'''
# Built in the rootfs, where apt's python3-picamera2 would be.
STANDIN_BUILD = r'''set -e
dest=/usr/lib/python3/dist-packages/picamera2
mkdir -p $dest /tmp/standin && cd /tmp/standin
cython3 -3 -o _standin.c _standin.pyx
gcc -shared -fPIC -O1 $(python3-config --includes) -I$(python3 -c 'import numpy; print(numpy.get_include())') \
    _standin.c -o $dest/_standin$(python3-config --extension-suffix)
cp __init__.py platform.py $dest/
cd / && rm -rf /tmp/standin
python3 -c 'import picamera2, numpy; print("picamera2 stand-in built against numpy", numpy.__version__)'
'''

RECIPE = hashlib.sha256("\n".join([",".join(PACKAGES), STANDIN_PYX, STANDIN_INIT, STANDIN_PLATFORM, STANDIN_BUILD,
                                   USER, str(UID)]).encode()).hexdigest()[:16]


# ---- the machine ---------------------------------------------------------------------------------

def require_tools() -> None:
    """Raise :class:`Missing` with what to install when this machine cannot run these tests."""
    if os.geteuid() != 0:
        raise Missing("the Pi userland tests need root (debootstrap, chroot, mounts, binfmt_misc)")
    lacking = [pkg for tool, pkg in (("debootstrap", "debootstrap"), (str(QEMU), "qemu-user-static"),
                                     ("update-binfmts", "binfmt-support"), ("chroot", "coreutils"))
               if shutil.which(tool) is None]
    if lacking:
        raise Missing(f"missing {', '.join(lacking)}: apt-get install -y {' '.join(lacking)} "
                      "(scripts/test.sh does it as root)")


def register_binfmt() -> str:
    """Mount binfmt_misc and enable qemu-aarch64; its registration (flags must include F)."""
    misc = Path("/proc/sys/fs/binfmt_misc")
    if not (misc / "register").exists():
        run(["mount", "binfmt_misc", "-t", "binfmt_misc", str(misc)])
    entry = misc / "qemu-aarch64"
    if not entry.exists() or not entry.read_text().startswith("enabled"):
        run(["update-binfmts", "--enable", "qemu-aarch64"])
    text = entry.read_text()
    if not text.startswith("enabled") or not re.search(r"^flags: \w*F", text, re.M):
        raise Missing(f"qemu-aarch64 is not registered with binfmt_misc as fix-binary (F):\n{text}"
                      "(apt-get install -y qemu-user-static binfmt-support)")
    return text


def apt_mirror(sources: Path = Path("/etc/apt")) -> str:
    """The Debian archive of this host's apt sources (one-line and deb822 formats), security excluded."""
    uris = []
    for path in [sources / "sources.list", *sorted((sources / "sources.list.d").glob("*.list"))]:
        if path.is_file():
            uris += re.findall(r"^\s*deb\s+(?:\[[^\]]*\]\s+)?(\S+)", path.read_text(), re.M)
    for path in sorted((sources / "sources.list.d").glob("*.sources")):
        for stanza in re.split(r"\n\s*\n", path.read_text()):
            found = re.search(r"^URIs:\s*(.+)$", stanza, re.M)
            if found and re.search(r"^Types:.*\bdeb\b", stanza, re.M):
                uris += found.group(1).split()
    for uri in uris:
        if "security" not in uri and uri.startswith(("http://", "https://")):
            return uri.rstrip("/")
    raise Missing(f"no Debian mirror in {sources}/sources.list*: cannot debootstrap")


def run(cmd: list[str], *, timeout: float = 120, **kwargs) -> subprocess.CompletedProcess:
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kwargs)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} exited {done.returncode}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}")
    return done


def ensure_rootfs(suite: str, cache: Path = CACHE) -> tuple[Path, float]:
    """The cached rootfs of ``suite`` and the seconds spent building it (0 when it was cached)."""
    rootfs = cache / f"{suite}-arm64"
    stamp = rootfs / ".edge-recipe"
    if stamp.is_file() and stamp.read_text().strip() == RECIPE:
        return rootfs, 0.0
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / f".{suite}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)          # another test run may be building it
        if stamp.is_file() and stamp.read_text().strip() == RECIPE:
            return rootfs, 0.0
        started = time.monotonic()
        partial = cache / f"{suite}-arm64.partial"
        for stale in (partial, rootfs):
            if stale.exists():
                log.info("removing %s (partial, or built from another recipe)", stale)
                shutil.rmtree(stale)
        mirror = apt_mirror()
        log.info("debootstrap %s arm64 minbase from %s into %s", suite, mirror, partial)
        run(["debootstrap", "--arch=arm64", "--variant=minbase", f"--include={','.join(PACKAGES)}", suite,
             str(partial), mirror], timeout=3600)
        _provision(partial)
        (partial / ".edge-recipe").write_text(RECIPE + "\n")
        partial.rename(rootfs)
        return rootfs, time.monotonic() - started


def ensure_rootfses(suites: tuple[str, ...], cache: Path = CACHE) -> dict[str, tuple[Path, float]]:
    """:func:`ensure_rootfs` of every suite at once: on a machine without the cache, the builds
    (mostly downloads and emulated maintainer scripts) overlap instead of adding up."""
    with ThreadPoolExecutor(max_workers=len(suites)) as pool:
        futures = {suite: pool.submit(ensure_rootfs, suite, cache) for suite in suites}
        return {suite: future.result() for suite, future in futures.items()}


def _provision(root: Path) -> None:
    """The user ``pi`` and the picamera2 stand-in, built inside the rootfs against apt's numpy."""
    work = root / "tmp/standin"
    work.mkdir(parents=True, exist_ok=True)
    (work / "_standin.pyx").write_text(STANDIN_PYX)
    (work / "__init__.py").write_text(STANDIN_INIT)
    (work / "platform.py").write_text(STANDIN_PLATFORM)
    with _mounted(root, PI4.cpuinfo(os.cpu_count() or 1)):
        env = ["env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8", f"QEMU_CPU={PI4.qemu_cpu}"]
        run(["chroot", str(root), *env, "bash", "-c",
             f"id {USER} >/dev/null 2>&1 || useradd --create-home --uid {UID} --shell /bin/bash {USER}"])
        run(["chroot", str(root), *env, "bash", "-c", STANDIN_BUILD], timeout=1800)


class _mounted:
    """/proc (with a Pi cpuinfo over /proc/cpuinfo), /dev and /sys inside ``root``; undone on exit."""

    def __init__(self, root: Path, cpuinfo: str, cpuinfo_file: Path | None = None):
        self.root = root
        self.cpuinfo_file = cpuinfo_file or root.parent / f".{root.name}.cpuinfo"
        self.cpuinfo_file.write_text(cpuinfo)
        self.mounts: list[Path] = []

    def __enter__(self):
        try:
            self._mount(["-t", "proc", "proc"], "proc")
            self._mount(["--bind", str(self.cpuinfo_file)], "proc/cpuinfo")
            for name in ("dev", "sys"):
                self._mount(["--rbind", f"/{name}"], name)
                run(["mount", "--make-rslave", str(self.root / name)])
        except BaseException:
            self.__exit__()
            raise
        return self

    def _mount(self, args: list[str], where: str) -> None:
        target = self.root / where
        target.mkdir(parents=True, exist_ok=True) if where != "proc/cpuinfo" else None
        run(["mount", *args, str(target)])
        self.mounts.append(target)

    def __exit__(self, *exc) -> None:
        for target in reversed(self.mounts):
            done = subprocess.run(["umount", "-R", str(target)], capture_output=True, text=True)
            if done.returncode != 0:
                log.warning("umount %s failed (%s): detaching it lazily", target, done.stderr.strip())
                subprocess.run(["umount", "-R", "-l", str(target)], capture_output=True, text=True)
        self.mounts.clear()


@dataclass
class Result:
    cmd: str
    returncode: int
    stdout: str
    stderr: str
    seconds: float

    def __str__(self) -> str:
        return (f"`{self.cmd}` exited {self.returncode} after {self.seconds:.0f} s\n--- stdout\n{self.stdout[-4000:]}"
                f"\n--- stderr\n{self.stderr[-4000:]}")


class Userland:
    """One session on an overlay over a cached rootfs: :meth:`sh` runs bash as ``pi`` under qemu."""

    def __init__(self, suite: str, rootfs: Path, work: Path, cpu: Cpu = PI4):
        self.suite = suite
        self.lower = rootfs
        self.work = work
        self.root = work / "merged"
        self.cpu = cpu
        self._overlay = False
        self._mounts: _mounted | None = None

    def __enter__(self) -> Userland:
        upper, scratch = self.work / "upper", self.work / "overlay-work"
        for d in (upper, scratch, self.root):
            d.mkdir(parents=True, exist_ok=True)
        try:
            run(["mount", "-t", "overlay", "overlay", "-o", f"lowerdir={self.lower},upperdir={upper},workdir={scratch}",
                 str(self.root)])
            self._overlay = True
            self._network()
            self._mounts = _mounted(self.root, self.cpu.cpuinfo(os.cpu_count() or 1), self.work / "cpuinfo")
            self._mounts.__enter__()
            pip_cache = CACHE / "pip-cache"
            pip_cache.mkdir(parents=True, exist_ok=True)
            os.chown(pip_cache, UID, UID)
            target = self.root / f"home/{USER}/.cache/pip"
            target.mkdir(parents=True, exist_ok=True)
            run(["mount", "--bind", str(pip_cache), str(target)])
            self._mounts.mounts.append(target)
        except BaseException:
            self.__exit__()
            raise
        return self

    def _network(self) -> None:
        """resolv.conf, hosts, this host's CA bundle and pip configuration, as SYSTEM-TESTS.md says."""
        root = self.root
        shutil.copy2("/etc/resolv.conf", root / "etc/resolv.conf")
        own = (root / "etc/hosts").read_text() if (root / "etc/hosts").exists() else ""
        extra = [line for line in Path("/etc/hosts").read_text().splitlines()
                 if line.strip() and not line.startswith("#") and line not in own.splitlines()]
        (root / "etc/hosts").write_text(own + "".join(f"{line}\n" for line in extra))
        bundle = Path("/etc/ssl/certs/ca-certificates.crt")
        if not bundle.is_file():
            raise Missing(f"{bundle} is missing (apt-get install -y ca-certificates)")
        shutil.copy2(bundle, root / "etc/ssl/certs/ca-certificates.crt")
        if Path("/etc/pip.conf").is_file():
            shutil.copy2("/etc/pip.conf", root / "etc/pip.conf")

    def use_cpu(self, cpu: Cpu) -> None:
        """Show ``cpu`` in /proc/cpuinfo (rewritten in place under the bind mount) and to qemu."""
        assert self._mounts is not None
        self._mounts.cpuinfo_file.write_text(cpu.cpuinfo(os.cpu_count() or 1))
        self.cpu = cpu

    def env(self) -> list[str]:
        pip = {k: v for k, v in os.environ.items()
               if k.startswith("PIP_") and not re.search(r"(^|\s|file://)/(?!etc/ssl/certs/ca-certificates.crt)", v)}
        return ["env", "-i", f"PATH={PATH}", f"HOME=/home/{USER}", f"USER={USER}", "LANG=C.UTF-8",
                f"QEMU_CPU={self.cpu.qemu_cpu}", *[f"{k}={v}" for k, v in sorted(pip.items())]]

    def sh(self, script: str, *, timeout: float = 600, user: str = USER, cwd: str = f"/home/{USER}",
           env: dict[str, str] | None = None) -> Result:
        """Run ``script`` with bash in ``cwd`` inside the userland (``env`` added to its environment)."""
        cmd = ["chroot", f"--userspec={user}:{user}" if user != "root" else "--userspec=0:0", str(self.root),
               *self.env(), *[f"{k}={v}" for k, v in (env or {}).items()], "bash", "-c", f"cd {cwd} && {script}"]
        started = time.monotonic()
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
        return Result(script, done.returncode, done.stdout, done.stderr, time.monotonic() - started)

    def ok(self, script: str, **kwargs) -> Result:
        result = self.sh(script, **kwargs)
        if result.returncode != 0:
            raise AssertionError(f"in the {self.suite} arm64 userland ({self.cpu.name}): {result}")
        return result

    def copy_in(self, src: Path, dest: str) -> None:
        """A copy of ``src`` (the working tree: uncommitted changes included, venvs left out), owned by pi."""
        target = self.root / dest.lstrip("/")
        shutil.copytree(src, target, symlinks=True,
                        ignore=lambda _d, names: [n for n in names if n in NOT_COPIED or n.endswith(".egg-info")])
        for path in [target, *target.rglob("*")]:
            os.lchown(path, UID, UID)

    def write(self, dest: str, data: bytes) -> None:
        target = self.root / dest.lstrip("/")
        target.write_bytes(data)
        os.chown(target, UID, UID)

    def read(self, path: str) -> str:
        return (self.root / path.lstrip("/")).read_text()

    def __exit__(self, *exc) -> None:
        if self._mounts is not None:
            self._mounts.__exit__()
            self._mounts = None
        if self._overlay:
            done = subprocess.run(["umount", str(self.root)], capture_output=True, text=True)
            if done.returncode != 0:
                log.warning("umount %s failed (%s): detaching it lazily", self.root, done.stderr.strip())
                subprocess.run(["umount", "-l", str(self.root)], capture_output=True, text=True)
            self._overlay = False

"""The checks of ``edge doctor``: each reads one thing and says what to do about it.

Every check takes an :class:`Env`: the filesystem root to read (``/`` on the device, a recorded
tree under tests/data/doctor/ in tests) and the few facts that are not files (Python version,
installed distributions, runtime probes, page size, ``vcgencmd`` output), so that every check
runs against recorded machines.
"""

from __future__ import annotations

import getpass
import importlib.metadata
import os
import re
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from edge.errors import RuntimeChainError
from edge.runtime import edgetpu
from edge.telemetry import vcgencmd

OK, WARN, FAIL, INFO = "ok", "warn", "fail", "info"

CORAL_PCI = ("0x1ac1", "0x089a")             # vendor, device of the M.2 / mini-PCIe Edge TPU
LIB_DIRS = ("usr/lib/aarch64-linux-gnu", "usr/lib/arm-linux-gnueabihf", "usr/lib/x86_64-linux-gnu",
            "usr/lib", "usr/local/lib", "lib")
RULE_DIRS = ("etc/udev/rules.d", "lib/udev/rules.d", "usr/lib/udev/rules.d")
# V4L2 nodes of a Pi that are codecs or ISP stages, not cameras
NOT_CAMERAS = ("bcm2835-codec", "bcm2835-isp", "rpivid", "pispbe", "hevc", "rpi-hevc-dec")


@dataclass(frozen=True)
class Finding:
    check: str
    status: str          # ok | info | warn | fail (fail: `edge run` cannot work as set up)
    detail: str
    remedy: str = ""


def _default_dists() -> dict[str, str]:
    found = {}
    for name in ("numpy", "ai-edge-litert", "tflite-runtime", "tensorflow", "tensorflow-cpu", "opencv-python-headless",
                 "opencv-python", "picamera2"):
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            pass
    return found


def _default_runtime() -> tuple[str, str]:
    """(name, version) of the runtime `edge run` would use; RuntimeChainError says why there is none."""
    from edge.runtime.interpreter import load_runtime
    runtime = load_runtime("auto")
    return runtime.name, runtime.version


def _default_throttled() -> str:
    return vcgencmd.run("get_throttled")


def _default_xnnpack():
    """XNNPACK's share of the default model on this machine's runtime (an XnnpackShare)."""
    from edge.resources import default_model_dir
    from edge.runtime import xnnpack
    model = next(default_model_dir().glob("*_int8.tflite"))
    return model.name, xnnpack.measure(model)


@dataclass
class Env:
    root: Path = Path("/")
    python: tuple[int, int] = sys.version_info[:2]
    dists: dict[str, str] = field(default_factory=_default_dists)
    runtime: Callable[[], tuple[str, str]] = _default_runtime
    page_size: int | None = None   # None: this machine's with root /, else from config.txt under root
    throttled: Callable[[], str] = _default_throttled
    user: str = ""       # whose groups and file access to check; empty: the service user if it exists
    xnnpack: Callable[[], tuple] = _default_xnnpack   # (model name, XnnpackShare) measured here

    @property
    def live(self) -> bool:
        """Whether root is this running machine (not a mounted card or a recorded tree)."""
        return self.root.resolve() == Path("/")

    def path(self, relative: str) -> Path:
        return self.root / relative.lstrip("/")

    def read(self, relative: str) -> str:
        try:
            return self.path(relative).read_text(errors="replace").strip().strip("\0")
        except OSError:
            return ""


# helpers ---------------------------------------------------------------------------------------

def usb_corals(env: Env) -> list[tuple[str, str, str]]:
    """(sysfs dir name, 'vid:pid', speed in Mbit/s) of every USB Coral."""
    return [(dev.name, ":".join(ids), speed) for dev, ids, speed in edgetpu.usb_corals(env.path("sys"))]


def pci_corals(env: Env) -> list[str]:
    base = env.path("sys/bus/pci/devices")
    if not base.is_dir():
        return []
    return [d.name for d in sorted(base.iterdir())
            if (env.read(f"sys/bus/pci/devices/{d.name}/vendor"),
                env.read(f"sys/bus/pci/devices/{d.name}/device")) == CORAL_PCI]


def apex_nodes(env: Env) -> list[str]:
    """Names of the /dev/apex_N nodes the gasket driver made for PCIe Edge TPUs."""
    return sorted(p.name for p in env.path("dev").glob("apex_*"))


def board(env: Env) -> str:
    return env.read("proc/device-tree/model") or env.read("sys/firmware/devicetree/base/model")


def _version_tuple(text: str) -> tuple[int, ...]:
    return tuple(int(p) for p in re.findall(r"\d+", text)[:3])


# checks ----------------------------------------------------------------------------------------

def check_python(env: Env) -> list[Finding]:
    version = ".".join(map(str, env.python))
    if env.python >= (3, 11):
        return [Finding("python", OK, f"Python {version}")]
    return [Finding("python", FAIL, f"Python {version} is too old: edge reads its configuration with tomllib "
                                    "(Python ≥ 3.11)", "use Python ≥ 3.11 (Raspberry Pi OS bookworm has 3.11)")]


def check_numpy_abi(env: Env) -> list[Finding]:
    numpy = env.dists.get("numpy")
    if numpy is None:
        return [Finding("numpy", FAIL, "numpy is not installed", "pip install numpy")]
    tflite = env.dists.get("tflite-runtime")
    if tflite and _version_tuple(numpy)[:1] >= (2,) and _version_tuple(tflite) < (2, 15):
        status = WARN if "ai-edge-litert" in env.dists else FAIL
        return [Finding("numpy", status, f"numpy {numpy} with tflite-runtime {tflite}, which is built for "
                                         "numpy 1.x and crashes on import under numpy 2",
                        "pip install ai-edge-litert (works with numpy 2), or pip install 'numpy<2'")]
    shadow = _numpy_shadowing(env, numpy)
    return shadow or [Finding("numpy", OK, f"numpy {numpy}")]


# apt packages with C extensions built against apt's numpy (python3-numpy's ABI)
NUMPY_DEPENDENTS = ("python3-picamera2", "python3-simplejpeg", "python3-opencv", "python3-scipy")


def _numpy_shadowing(env: Env, numpy: str) -> list[Finding]:
    """A venv's numpy hiding apt's, while apt's C extensions need apt's: with a different major
    version they fail to import ("numpy.dtype size changed", picamera2 #1088, #1211)."""
    apt = _dpkg_version(env, ("python3-numpy",))
    if apt is None:
        return []
    apt_version = re.sub(r"^\d+:", "", apt[1])
    users = [p for p in NUMPY_DEPENDENTS if _dpkg_version(env, (p,))]
    if not users or _version_tuple(apt_version)[:1] == _version_tuple(numpy)[:1]:
        return []
    status = FAIL if "python3-picamera2" in users or "python3-simplejpeg" in users else WARN
    pin = f"'numpy<{_version_tuple(apt_version)[0] + 1}'"
    return [Finding("numpy", status, f"numpy {numpy} (this environment) shadows apt's numpy {apt_version}, which "
                                     f"{', '.join(users)} are built against: they fail to import "
                                     "(numpy.dtype size changed)",
                    f"pip install {pin} in the venv (scripts/install-pi.sh pins it), or a venv without "
                    "--system-site-packages and no picamera2")]


def check_runtime(env: Env) -> list[Finding]:
    try:
        name, version = env.runtime()
    except RuntimeChainError as exc:
        return [Finding("runtime", FAIL, exc.message, exc.remedy or "")]
    return [Finding("runtime", OK, f"{name} {version} (used by edge run; `edge info` lists the others)")]


def _dpkg_version(env: Env, packages: tuple[str, ...]) -> tuple[str, str] | None:
    status = env.read("var/lib/dpkg/status")
    for block in status.split("\n\n"):
        name = re.search(r"^Package: (\S+)$", block, re.M)
        if name and name.group(1) in packages and re.search(r"^Status: .* installed$", block, re.M):
            return name.group(1), re.search(r"^Version: (\S+)$", block, re.M).group(1)
    return None


def check_libedgetpu(env: Env) -> list[Finding]:
    libs = [d for d in LIB_DIRS if any(env.path(d).glob("libedgetpu.so.1*"))]
    tpus = usb_corals(env) or pci_corals(env) or apex_nodes(env)
    if not libs:
        if tpus:
            return [Finding("libedgetpu", FAIL, "an Edge TPU is connected but libedgetpu.so.1 is not installed",
                            "add Coral's apt repository and `sudo apt install libedgetpu1-std`")]
        return [Finding("libedgetpu", INFO, "libedgetpu not installed (no Edge TPU either: CPU only)")]
    package = _dpkg_version(env, ("libedgetpu1-std", "libedgetpu1-max"))
    where = f"/{libs[0]}/libedgetpu.so.1"
    if package is None:
        return [Finding("libedgetpu", OK, f"{where} (not from a Debian package; its TF version is unknown)")]
    name, version = package
    built_for = re.search(r"tf(\d+\.\d+)", version)
    detail = f"{name} {version} at {where}"
    if not built_for:
        return [Finding("libedgetpu", OK, detail)]
    tf = built_for.group(1)
    try:
        runtime, version = env.runtime()
    except RuntimeChainError:
        return [Finding("libedgetpu", OK, f"{detail}, built against TF {tf} (no runtime to compare with)")]
    if runtime == "ai-edge-litert":
        # LiteRT's version numbers are its own (1.x, 2.x), not TensorFlow's; the delegate ABI it
        # loads libedgetpu through is TFLite's, so only loading it tells.
        return [Finding("libedgetpu", INFO, f"{detail}, built against TF {tf}; edge run uses ai-edge-litert "
                                            f"{version}, whose TF base is not versioned like TF",
                        "if the Edge TPU delegate fails to load, install tflite-runtime matching TF "
                        f"{tf} (`edge run --runtime tflite-runtime`) or a libedgetpu build for it")]
    if _version_tuple(tf)[:2] != _version_tuple(version)[:2]:
        return [Finding("libedgetpu", WARN, f"{detail}: built against TF {tf}, edge run uses {runtime} {version}; "
                                            "a delegate built for another TF version may fail to load",
                        "install the libedgetpu build matching the runtime, or the runtime matching it")]
    return [Finding("libedgetpu", OK, f"{detail}, built against TF {tf}, as {runtime} {version} that edge run uses")]


def _groups_of(env: Env, user: str) -> set[str]:
    primary = ""
    for line in env.read("etc/passwd").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user:
            primary = parts[3]
    groups = set()
    for line in env.read("etc/group").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and (user in parts[3].split(",") or parts[2] == primary):
            groups.add(parts[0])
    return groups


def _user(env: Env) -> str:
    if env.user:
        return env.user
    if re.search(r"^edge-detect:", env.read("etc/passwd"), re.M):
        return "edge-detect"
    return getpass.getuser()


def _grants_coral(rule: Path) -> bool:
    text = rule.read_text(errors="replace")
    return "18d1" in text and "9302" in text


def check_access(env: Env) -> list[Finding]:
    """udev rules for the Coral and the groups that open the camera, the Coral and vcgencmd."""
    findings = []
    rules = [f for d in RULE_DIRS if env.path(d).is_dir() for f in sorted(env.path(d).glob("*.rules"))]
    coral_rules = [f for f in rules if _grants_coral(f)]
    usb = usb_corals(env)
    if usb and not coral_rules:
        findings.append(Finding("udev", FAIL, "USB Coral connected but no udev rule gives access to 18d1:9302",
                                "sudo cp systemd/60-edge-detect.rules /etc/udev/rules.d/ && "
                                "sudo udevadm control --reload && replug the Coral"))
    elif coral_rules:
        findings.append(Finding("udev", OK, f"Coral rules in /{coral_rules[0].relative_to(env.root)}"))
    user = _user(env)
    if user == "root":
        return findings + [Finding("groups", OK, "running as root (the service runs as edge-detect)")]
    groups = _groups_of(env, user)
    needed = {"video": "cameras and vcgencmd"}
    if usb:
        needed["plugdev"] = "the USB Coral"
    if pci_corals(env) or apex_nodes(env):
        needed["apex"] = "/dev/apex_N"
    missing = {g: why for g, why in needed.items() if g not in groups}
    if missing:
        for group, why in missing.items():
            findings.append(Finding("groups", WARN, f"user {user} is not in group {group} ({why})",
                                    f"sudo usermod -aG {group} {user}, then log in again"))
    else:
        findings.append(Finding("groups", OK, f"user {user} is in {', '.join(sorted(needed))}"))
    return findings


def check_pcie(env: Env) -> list[Finding]:
    pci = pci_corals(env)
    apex = apex_nodes(env)
    findings = []
    if not pci and not apex:
        return [Finding("pcie", INFO, "no PCIe Edge TPU")]
    modules = [m for m in ("gasket", "apex") if env.path(f"sys/module/{m}").is_dir()]
    if pci and not apex:
        findings.append(Finding("pcie", FAIL, f"PCIe Edge TPU at {pci[0]} but no /dev/apex_N "
                                              f"(driver modules loaded: {', '.join(modules) or 'none'})",
                                "install the gasket driver (gasket-dkms), `sudo modprobe apex`, and add the "
                                "udev rule SUBSYSTEM==\"apex\", GROUP=\"apex\""))
    else:
        findings.append(Finding("pcie", OK, f"{', '.join('/dev/' + a for a in apex)} "
                                            f"(driver: {', '.join(modules) or 'built in'})"))
    model = board(env)
    if "Raspberry Pi 5" in model:
        findings += _pi5_pcie(env, model)
    return findings


def boot_config(env: Env) -> tuple[str, list[str]]:
    """(path, lines) of the firmware's config.txt under root that a Pi 5 applies (outside
    conditional sections other than [all] and [pi5]); ('', []) when there is none."""
    for where in ("boot/firmware/config.txt", "boot/config.txt"):
        if env.path(where).is_file():
            active, section = [], "all"
            for line in env.read(where).splitlines():
                line = line.split("#", 1)[0].strip()
                if line.startswith("[") and line.endswith("]"):
                    section = line[1:-1].strip().lower()
                elif line and section in ("all", "pi5"):   # other filters are other boards
                    active.append(line)
            return "/" + where, active
    return "", []


def page_size(env: Env) -> tuple[int | None, str]:
    """The kernel's page size and where it was read: this machine's own when root is /, else what
    config.txt under root boots on a Pi 5 (kernel_2712.img, 16K, unless kernel=kernel8.img)."""
    if env.page_size is not None:
        return env.page_size, "given"
    if env.live:
        return os.sysconf("SC_PAGE_SIZE"), "the running kernel"
    path, lines = boot_config(env)
    if not path:
        return None, "no config.txt under the root"
    kernels = [line.split("=", 1)[1].strip() for line in lines if line.startswith("kernel=")]
    return (4096 if kernels and kernels[-1] == "kernel8.img" else 16384), path


def _pi5_pcie(env: Env, model: str) -> list[Finding]:
    """A PCIe Coral on a Pi 5 (raspberrypi/linux#6126, google-coral on the Pi 5): the gasket driver
    needs the 4K-page kernel, and its interrupts need the MSI parent that the pineboards-hat-ai
    overlay sets. pcie-32bit-dma is not needed (the Edge TPU does 64-bit DMA) and on a Pi 5 it
    restricts every RP1 peripheral's DMA (I2S breaks, raspberrypi/linux#7317)."""
    findings = []
    size, source = page_size(env)
    if size is None:
        findings.append(Finding("page size", INFO, f"not checked: {source}"))
    elif size != 4096:
        findings.append(Finding("page size", FAIL, f"{model} runs a {size // 1024}K-page kernel ({source}); the "
                                                   "Coral PCIe driver needs 4K pages",
                                "add `kernel=kernel8.img` to /boot/firmware/config.txt and reboot"))
    else:
        findings.append(Finding("page size", OK, f"4K pages ({source})"))
    path, lines = boot_config(env)
    if not path:
        return findings
    overlays = {line.split("=", 1)[1].split(",")[0].strip() for line in lines if line.startswith("dtoverlay=")}
    if "pineboards-hat-ai" not in overlays:
        findings.append(Finding("pcie", WARN, f"{path} has no dtoverlay=pineboards-hat-ai: on a Pi 5 the gasket "
                                              "driver cannot set up the Edge TPU's interrupts without its MSI "
                                              "parent change", "add `dtoverlay=pineboards-hat-ai` (any Coral "
                                              "PCIe HAT; with dtparam=pciex1 if the HAT does not enable the "
                                              "connector) and reboot"))
    if overlays & {"pcie-32bit-dma", "pcie-32bit-dma-pi5"}:
        findings.append(Finding("pcie", INFO, f"{path} loads a pcie-32bit-dma overlay: the Edge TPU does not need "
                                              "it, and on a Pi 5 it limits the DMA of every RP1 peripheral "
                                              "(I2S audio breaks)", "remove it unless another PCIe device needs "
                                              "32-bit DMA"))
    return findings


def check_usb_speed(env: Env) -> list[Finding]:
    findings = []
    for name, ids, speed in usb_corals(env):
        if ids == "1a6e:089a":
            findings.append(Finding("usb", INFO, f"Coral {name} ({ids}): firmware not loaded yet; it re-enumerates "
                                                 "as 18d1:9302 when a model first loads"))
        elif speed.isdigit() and int(speed) >= 5000:
            findings.append(Finding("usb", OK, f"Coral {name} at {speed} Mbit/s (USB 3)"))
        else:
            findings.append(Finding("usb", WARN, f"Coral {name} at {speed or '?'} Mbit/s: a USB 2 link makes "
                                                 "inference several times slower",
                                    "plug it into a USB 3 (blue) port with a USB 3 cable"))
    return findings


def check_camera(env: Env) -> list[Finding]:
    nodes = sorted(env.path("dev").glob("video*"), key=lambda p: (len(p.name), p.name))
    cameras = []
    for node in nodes:
        name = env.read(f"sys/class/video4linux/{node.name}/name")
        if not any(codec in name for codec in NOT_CAMERAS):
            cameras.append(f"/dev/{node.name}" + (f" ({name})" if name else ""))
    csi = [p.name for p in env.path("sys/bus/i2c/drivers").glob("*/*-00*")
           if re.match(r"(imx|ov)\d+", p.parent.name)] if env.path("sys/bus/i2c/drivers").is_dir() else []
    if cameras or csi:
        what = cameras + [f"CSI sensor {c} (use --source picamera2)" for c in csi]
        return [Finding("camera", OK, ", ".join(what))]
    return [Finding("camera", WARN, "no camera found (no capture /dev/video*, no CSI sensor)",
                    "connect a camera (`libcamera-hello --list-cameras` for CSI), or use a file/URL source")]


def check_throttling(env: Env) -> list[Finding]:
    try:
        state = vcgencmd.parse_throttled(env.throttled())
    except vcgencmd.VcgencmdError as exc:
        return [Finding("throttling", INFO, f"not checked: {exc.message}")]
    if state.now:
        return [Finding("throttling", WARN, f"now: {', '.join(sorted(state.now))} (throttled={state.raw:#x})",
                        "use the official 5 V/5 A (Pi 5) or 3 A (Pi 4) supply and a heatsink or fan")]
    if state.since_boot:
        return [Finding("throttling", WARN, f"since boot: {', '.join(sorted(state.since_boot))} "
                                            f"(throttled={state.raw:#x})",
                        "check the power supply and cooling; a USB Coral draws up to 900 mA")]
    return [Finding("throttling", OK, "no under-voltage or throttling since boot")]


def _ids(env: Env, user: str) -> tuple[int, set[int]] | None:
    """(uid, gids) of ``user`` from the passwd and group files under root; None if unknown."""
    uid = primary = None
    for line in env.read("etc/passwd").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and parts[0] == user and parts[2].isdigit() and parts[3].isdigit():
            uid, primary = int(parts[2]), int(parts[3])
    if uid is None:
        return None
    gids = {primary}
    for line in env.read("etc/group").splitlines():
        parts = line.split(":")
        if len(parts) > 3 and user in parts[3].split(",") and parts[2].isdigit():
            gids.add(int(parts[2]))
    return uid, gids


def _allowed(st: os.stat_result, uid: int, gids: set[int], bit: int) -> bool:
    """Whether the permission ``bit`` (4 read, 1 search/execute) is granted to uid/gids."""
    if st.st_uid == uid:
        return bool(st.st_mode & (bit << 6))
    if st.st_gid in gids:
        return bool(st.st_mode & (bit << 3))
    return bool(st.st_mode & bit)


def cannot_access(env: Env, user: str, absolute: str, bit: int = 4) -> str:
    """Why ``user`` cannot read (bit 4) or execute (bit 1) ``absolute`` under root, from the file
    modes and the passwd/group files under root; "" when it can. Every directory on the way needs
    search permission. Symbolic links are followed (their own modes do not matter)."""
    ids = _ids(env, user)
    if ids is None:
        return f"user {user} does not exist"
    uid, gids = ids
    if uid == 0:
        return ""
    parts = Path(absolute).parts[1:]
    for depth in range(len(parts) + 1):
        here = env.root.joinpath(*parts[:depth])
        try:
            st = here.stat()
        except OSError as exc:
            return f"/{'/'.join(parts[:depth])}: {exc.strerror}"
        last = depth == len(parts)
        if not _allowed(st, uid, gids, bit if last else 1):
            mode = f"{st.st_uid}:{st.st_gid} {oct(st.st_mode & 0o777)[2:]}"
            what = "read" if bit == 4 else "execute"
            return (f"/{'/'.join(parts[:depth])} ({mode}) cannot be " + (f"{what} by {user}" if last else
                                                                          f"entered by {user}"))
    return ""


def _service_user(env: Env) -> str:
    """The unit's User= (edge-detect), unless --user names another."""
    if env.user:
        return env.user
    m = re.search(r"^User=(\S+)", env.read("etc/systemd/system/edge-detect.service"), re.M)
    return m.group(1) if m else "edge-detect"


def _model_files(env: Env, cfg) -> list[str]:
    """The files the configuration names (model, manifest, labels); the embedded model when the
    configuration names none and root is this machine."""
    named = [p for p in (cfg.model.path, cfg.model.manifest, cfg.model.labels) if p]
    if not cfg.model.path and env.live:
        from edge.resources import default_model_dir
        named += [str(p) for p in sorted(default_model_dir().iterdir()) if p.suffix in (".tflite", ".json", ".txt")]
    return named


def check_xnnpack(env: Env) -> list[Finding]:
    """XNNPACK, the CPU path's speed: present in the graph, and nothing in the unit hiding
    /proc/cpuinfo from it (ProcSubset=pid: XNNPACK does not start, ~170x slower)."""
    findings = []
    unit = env.read("etc/systemd/system/edge-detect.service")
    if re.search(r"^ProcSubset=pid", unit, re.M):
        findings.append(Finding("xnnpack", FAIL, "/etc/systemd/system/edge-detect.service has ProcSubset=pid: it "
                                                 "hides /proc/cpuinfo, XNNPACK cannot start and the model runs on "
                                                 "the reference kernels, ~170x slower",
                                "remove the ProcSubset=pid line (scripts/install-pi.sh installs the unit "
                                "without it), then systemctl daemon-reload and restart"))
    if not env.live:
        return findings + [Finding("xnnpack", INFO, "not measured: --root is not this machine")]
    if not env.read("proc/cpuinfo"):
        findings.append(Finding("xnnpack", FAIL, "/proc/cpuinfo cannot be read here: XNNPACK will not start",
                                "run where /proc is fully mounted (not with ProcSubset=pid / subset=pid)"))
    try:
        model, share = env.xnnpack()
    except (RuntimeChainError, OSError, ValueError, RuntimeError, StopIteration) as exc:
        return findings + [Finding("xnnpack", INFO, f"not measured: {exc}")]
    if share.partitions == 0:
        findings.append(Finding("xnnpack", FAIL, f"XNNPACK was not applied to {model}: the CPU runs it on the "
                                                 "reference kernels, many times slower",
                                "check that /proc/cpuinfo is readable (`cat /proc/cpuinfo`); `edge run -v` "
                                "logs the runtime's reason"))
    else:
        findings.append(Finding("xnnpack", OK, f"XNNPACK applied to {model}: {share.describe()}"))
    return findings


def check_service(env: Env) -> list[Finding]:
    """The installed unit and its configuration file (what `systemctl start edge-detect` would read)."""
    from edge import config as configuration
    from edge.errors import ConfigError

    unit = "etc/systemd/system/edge-detect.service"
    if not env.path(unit).is_file():
        return [Finding("service", INFO, "edge-detect.service not installed",
                        "sudo scripts/install-pi.sh (see README, Deployment on a Raspberry Pi)")]
    enabled = env.path("etc/systemd/system/multi-user.target.wants/edge-detect.service").is_symlink()
    findings = [Finding("service", OK if enabled else WARN,
                        f"/{unit} installed, {'enabled' if enabled else 'not enabled'}",
                        "" if enabled else "sudo systemctl enable --now edge-detect")]
    config = env.path("etc/edge-detect/edge.toml")
    if not config.is_file():
        findings.append(Finding("config", FAIL, "/etc/edge-detect/edge.toml is missing (the unit reads it)",
                                "sudo install -m 0640 systemd/edge.toml /etc/edge-detect/edge.toml"))
        return findings
    # The service reads these as its user, not as root: check that user's access, from the modes.
    user = _service_user(env)
    denied = cannot_access(env, user, "/etc/edge-detect/edge.toml")
    if denied:
        findings.append(Finding("config", FAIL, f"the service runs as {user}, which cannot read "
                                                f"/etc/edge-detect/edge.toml: {denied}",
                                f"sudo chown root:{user} /etc/edge-detect/edge.toml && "
                                "sudo chmod 0640 /etc/edge-detect/edge.toml"))
    try:
        cfg = configuration.load(config)
    except ConfigError as exc:
        findings.append(Finding("config", FAIL, f"/etc/edge-detect/edge.toml: {exc.message}",
                                exc.remedy or "fix the value; `edge config` lists every key"))
        return findings
    if not denied:
        findings.append(Finding("config", OK, f"/etc/edge-detect/edge.toml is valid and {user} can read it"))
    unreadable = [(f, why) for f in _model_files(env, cfg) if (why := cannot_access(env, user, f))]
    for name, why in unreadable:
        findings.append(Finding("model files", FAIL, f"{user} cannot read {name}: {why}",
                                f"make it readable by {user} (e.g. chmod o+r, or chgrp {user} and chmod g+r)"))
    exec_start = re.search(r"^ExecStart=(\S+)", env.read("etc/systemd/system/edge-detect.service"), re.M)
    if exec_start and (why := cannot_access(env, user, exec_start.group(1), bit=1)):
        findings.append(Finding("service", FAIL, f"{user} cannot run {exec_start.group(1)}: {why}",
                                "reinstall with scripts/install-pi.sh"))
    elif not unreadable and cfg.model.path:
        findings.append(Finding("model files", OK, f"{user} can read the model files the configuration names"))
    return findings


CHECKS: list[Callable[[Env], list[Finding]]] = [
    check_python, check_numpy_abi, check_runtime, check_libedgetpu, check_access, check_pcie,
    check_usb_speed, check_camera, check_throttling, check_xnnpack, check_service,
]

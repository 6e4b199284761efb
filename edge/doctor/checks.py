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


@dataclass
class Env:
    root: Path = Path("/")
    python: tuple[int, int] = sys.version_info[:2]
    dists: dict[str, str] = field(default_factory=_default_dists)
    runtime: Callable[[], tuple[str, str]] = _default_runtime
    page_size: int = os.sysconf("SC_PAGE_SIZE")
    throttled: Callable[[], str] = _default_throttled
    user: str = ""       # whose groups to check; empty: the service user if it exists, else ours

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
    if env.python >= (3, 10):
        return [Finding("python", OK, f"Python {version}")]
    if env.python >= (3, 9):
        return [Finding("python", WARN, f"Python {version}: ai-edge-litert has no wheels before 3.10",
                        "use Python ≥ 3.10 (Raspberry Pi OS bookworm has 3.11), or install tflite-runtime")]
    return [Finding("python", FAIL, f"Python {version} is too old", "edge needs Python ≥ 3.9; use ≥ 3.10")]


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
    return [Finding("numpy", OK, f"numpy {numpy}")]


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
    runtime = env.dists.get("tflite-runtime") or env.dists.get("tensorflow") or env.dists.get("tensorflow-cpu")
    if built_for and runtime and _version_tuple(built_for.group(1))[:2] != _version_tuple(runtime)[:2]:
        return [Finding("libedgetpu", WARN, f"{detail}: built against TF {built_for.group(1)}, the runtime is "
                                            f"{runtime}; a delegate built for another TF version may fail to load",
                        "install the libedgetpu build matching the runtime, or the runtime matching it")]
    if built_for:
        detail += f", built against TF {built_for.group(1)}"
    return [Finding("libedgetpu", OK, detail)]


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
    if "Raspberry Pi 5" in model and env.page_size != 4096:
        findings.append(Finding("page size", FAIL, f"{model} runs a {env.page_size // 1024}K-page kernel; the "
                                                   "Coral PCIe driver needs 4K pages",
                                "add `kernel=kernel8.img` to /boot/firmware/config.txt and reboot"))
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
    try:
        configuration.load(config)
    except ConfigError as exc:
        findings.append(Finding("config", FAIL, f"/etc/edge-detect/edge.toml: {exc.message}",
                                exc.remedy or "fix the value; `edge config` lists every key"))
    else:
        findings.append(Finding("config", OK, "/etc/edge-detect/edge.toml is valid"))
    return findings


CHECKS: list[Callable[[Env], list[Finding]]] = [
    check_python, check_numpy_abi, check_runtime, check_libedgetpu, check_access, check_pcie,
    check_usb_speed, check_camera, check_throttling, check_service,
]

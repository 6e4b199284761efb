"""Everything Edge TPU: device strings, enumeration from sysfs/devfs, the delegate library, loading.

Device strings follow libedgetpu's ``device`` option (as pycoral's ``make_interpreter`` does):
``usb``, ``usb:N``, ``pci``, ``pci:N`` or ``:N`` (the N-th TPU of any kind). On the command line
they are written ``edgetpu``, ``edgetpu:usb``, ``edgetpu:pci:1``, ``edgetpu:0``.

USB Coral accelerators enumerate as 1a6e:089a (Global Unichip) until the runtime loads their
firmware, then as 18d1:9302 (Google). PCIe/M.2 modules appear as /dev/apex_N (gasket driver).
"""

from __future__ import annotations

import ctypes
import logging
import platform
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from edge.errors import ConfigError, DelegateError

log = logging.getLogger(__name__)

USB_IDS = {("1a6e", "089a"): "usb (firmware not loaded yet)", ("18d1", "9302"): "usb"}
DELEGATE_LIBRARIES = {"Linux": "libedgetpu.so.1", "Darwin": "libedgetpu.1.dylib", "Windows": "edgetpu.dll"}
INSTALL_REMEDY = ("install libedgetpu1-std from Coral's apt repository "
                  "(https://coral.ai/docs/accelerator/get-started/), or run with --device cpu")


@dataclass(frozen=True)
class TpuDevice:
    kind: str            # "usb" or "pci"
    path: str            # sysfs directory (usb) or /dev/apex_N (pci)
    detail: str = ""     # e.g. firmware state, link speed

    def __str__(self) -> str:
        return f"{self.kind} {self.path}{' (' + self.detail + ')' if self.detail else ''}"


@dataclass(frozen=True)
class DeviceSpec:
    """A parsed ``--device`` value."""

    backend: str                 # "auto", "cpu" or "edgetpu"
    tpu_kind: str | None = None  # "usb", "pci" or None (any)
    tpu_index: int | None = None

    @property
    def delegate_option(self) -> str:
        """The libedgetpu ``device`` option: usb, usb:N, pci, pci:N, :N, or '' (first found)."""
        kind = self.tpu_kind or ""
        if self.tpu_index is None:
            return kind
        return f"{kind}:{self.tpu_index}"

    def __str__(self) -> str:
        if self.backend != "edgetpu":
            return self.backend
        option = self.delegate_option
        return f"edgetpu:{option.lstrip(':')}" if option else "edgetpu"


def parse_device(text: str) -> DeviceSpec:
    """Parse ``auto``, ``cpu`` or ``edgetpu[:usb|:pci][:N]``; errors list the valid forms."""
    valid = "auto, cpu, edgetpu, edgetpu:usb, edgetpu:pci, edgetpu:usb:N, edgetpu:pci:N, edgetpu:N"
    parts = text.strip().lower().split(":")
    if parts[0] in ("auto", "cpu") and len(parts) == 1:
        return DeviceSpec(parts[0])
    if parts[0] != "edgetpu" or len(parts) > 3:
        raise ConfigError(f"unknown device {text!r}", f"valid forms: {valid}")
    kind, index = None, None
    for part in parts[1:]:
        if part in ("usb", "pci") and kind is None and index is None:
            kind = part
        elif part.isdigit() and index is None:
            index = int(part)
        else:
            raise ConfigError(f"unknown device {text!r}: bad part {part!r}", f"valid forms: {valid}")
    return DeviceSpec("edgetpu", kind, index)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace").strip()
    except OSError:
        return ""


def usb_corals(sys_root: Path = Path("/sys")) -> list[tuple[Path, tuple[str, str], str]]:
    """(sysfs directory, (vendor id, product id), link speed in Mbit/s or '') of every USB Coral."""
    usb_dir = sys_root / "bus" / "usb" / "devices"
    if not usb_dir.is_dir():
        return []
    found = []
    for device in sorted(usb_dir.iterdir()):
        ids = (_read(device / "idVendor"), _read(device / "idProduct"))
        if ids in USB_IDS:
            found.append((device, ids, _read(device / "speed")))
    return found


def enumerate_devices(sys_root: Path = Path("/sys"), dev_root: Path = Path("/dev")) -> list[TpuDevice]:
    """Edge TPUs visible to this machine (roots are injectable for recorded sysfs trees)."""
    found = []
    for device, ids, speed in usb_corals(sys_root):
        detail = USB_IDS[ids] + (f", {speed} Mbit/s" if speed else "")
        found.append(TpuDevice("usb", str(device), detail))
    for apex in sorted(dev_root.glob("apex_*")):
        found.append(TpuDevice("pci", str(apex)))
    return found


def delegate_library() -> str:
    system = platform.system()
    try:
        return DELEGATE_LIBRARIES[system]
    except KeyError:
        raise DelegateError(f"the Edge TPU runtime does not support {system}") from None


def library_loadable(library: str) -> None:
    """Raise OSError when ``library`` cannot be loaded.

    Checked before the runtime's ``load_delegate``: LiteRT's ``Delegate`` object, when the library is
    missing, also fails in its ``__del__`` and prints a second, confusing traceback.
    """
    ctypes.CDLL(library)


def load_delegate(runtime: Any, spec: DeviceSpec, options: dict[str, str] | None = None) -> Any:
    """Load the libedgetpu delegate for ``spec``; :class:`DelegateError` carries the remedy."""
    library = delegate_library()
    opts = dict(options or {})
    if spec.delegate_option:
        opts["device"] = spec.delegate_option
    try:
        library_loadable(library)
        delegate = runtime.load_delegate(library, opts)
    except (ValueError, OSError, RuntimeError) as exc:
        devices = enumerate_devices()
        if not devices:
            raise DelegateError(f"no Edge TPU found for device {spec} ({library}: {exc})",
                                "plug in the Coral (check `lsusb` for 18d1:9302 or 1a6e:089a, or "
                                "/dev/apex_0), or run with --device cpu") from None
        raise DelegateError(f"cannot load the Edge TPU delegate {library} for device {spec}: {exc}",
                            INSTALL_REMEDY + "; `edge doctor` checks the set-up") from None
    log.info("Edge TPU delegate %s loaded (device %s)", library, spec)
    return delegate

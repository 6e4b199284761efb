"""``vcgencmd`` (Raspberry Pi firmware mailbox tool): run it and parse what it prints.

Parsers are pure functions over the command's text output, tested against recorded output.
``vcgencmd`` needs /dev/vcio, which the ``video`` group may open.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass

from edge.errors import EdgeError

# get_throttled bits (Raspberry Pi documentation, "vcgencmd get_throttled"); bits 16-19 latch the
# same conditions since boot.
THROTTLE_FLAGS = {0: "under_voltage", 1: "arm_frequency_capped", 2: "throttled", 3: "soft_temp_limit"}


class VcgencmdError(EdgeError):
    """vcgencmd is missing, not permitted, or printed something unexpected."""


@dataclass(frozen=True)
class Throttled:
    raw: int
    now: frozenset[str]
    since_boot: frozenset[str]


def parse_throttled(text: str) -> Throttled:
    """``throttled=0x50005`` → flags now and since boot."""
    match = re.search(r"throttled=(0x[0-9a-fA-F]+)", text)
    if not match:
        raise VcgencmdError(f"unexpected get_throttled output {text.strip()!r}", "expected throttled=0x...")
    raw = int(match.group(1), 16)
    now = frozenset(name for bit, name in THROTTLE_FLAGS.items() if raw & (1 << bit))
    since = frozenset(name for bit, name in THROTTLE_FLAGS.items() if raw & (1 << (bit + 16)))
    return Throttled(raw, now, since)


def parse_clock(text: str) -> int:
    """``frequency(48)=1800404352`` → Hz."""
    match = re.search(r"frequency\(\d+\)=(\d+)", text)
    if not match:
        raise VcgencmdError(f"unexpected measure_clock output {text.strip()!r}", "expected frequency(N)=Hz")
    return int(match.group(1))


def run(*args: str, timeout: float = 2.0) -> str:
    """Run ``vcgencmd args`` and return its output; :class:`VcgencmdError` says why it could not."""
    exe = shutil.which("vcgencmd")
    if exe is None:
        raise VcgencmdError("vcgencmd not found", "it ships with Raspberry Pi OS (package raspi-utils)")
    try:
        done = subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise VcgencmdError(f"vcgencmd {' '.join(args)} timed out after {timeout} s") from None
    if done.returncode != 0:
        detail = (done.stderr or done.stdout).strip().splitlines()[:1]
        raise VcgencmdError(f"vcgencmd {' '.join(args)} failed: {detail[0] if detail else done.returncode}",
                            "the user needs access to /dev/vcio (group video)")
    return done.stdout

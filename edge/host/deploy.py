"""Deploy a bundle to a Raspberry Pi over ssh + rsync, verify it there, swap it in, reload the unit.

Steps (each one a command whose exit code is checked; ``--dry-run`` prints them instead):

1. unpack the bundle locally and verify its SHA-256 sums (a corrupt bundle never leaves the host);
2. ``rsync -a --delete --checksum`` it to ``<path>.incoming/`` on the Pi (over ssh, BatchMode);
3. on the Pi, in ``<path>.incoming``: when the trusted keys file (``--trusted-keys``, default
   ``/etc/edge-detect/trusted_keys``, an ssh allowed_signers file) is not empty, the signature
   ``SHA256SUMS.sig`` is verified with ``ssh-keygen -Y verify`` (OpenSSH, on every Pi OS) and an
   unsigned bundle is refused; then ``sha256sum -c SHA256SUMS`` (coreutils) and no file beyond it;
4. on the Pi: swap directories — ``<path>`` → ``<path>.previous``, ``<path>.incoming`` → ``<path>``
   (the previous model stays for a manual roll-back);
5. with ``--reload UNIT``: ``systemctl reload UNIT`` — ``edge run --service`` re-reads its
   configuration and loads the new model without dropping the process, and keeps the running one
   if the new one does not load — or with ``--restart UNIT`` ``systemctl restart UNIT``; either
   through ``sudo -n`` when not root, then ``systemctl is-active UNIT``.
"""

from __future__ import annotations

import logging
import re
import shlex
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from edge.errors import ConfigError, EdgeError
from edge.host.bundle import NAMESPACE, SIG, SUMS, TRUSTED_KEYS, build_bundle, unpack_bundle

log = logging.getLogger(__name__)

SSH_DEFAULTS = ("BatchMode=yes", "ConnectTimeout=15")
TIMEOUT_S = 600


class DeployError(EdgeError):
    """A remote step failed (ssh, rsync, checksum on the device, restart)."""


@dataclass(frozen=True)
class Target:
    host: str                          # [user@]host
    path: str                          # absolute directory on the Pi
    port: int | None = None
    identity: str | None = None
    ssh_options: tuple[str, ...] = field(default_factory=tuple)

    @classmethod
    def parse(cls, host: str, path: str, *, port: int | None = None, identity: str | None = None,
              ssh_options: list[str] | None = None) -> "Target":
        if not re.fullmatch(r"(?:[A-Za-z0-9_.-]+@)?[A-Za-z0-9_][A-Za-z0-9_.-]*", host):
            raise ConfigError(f"host {host!r} is not [user@]host", "e.g. pi@raspberrypi.local")
        if not path.startswith("/") or path.rstrip("/") in ("", "/") or ".." in path.split("/"):
            raise ConfigError(f"--path {path!r} must be an absolute directory below /, without '..'",
                              "e.g. /opt/edge-detect/models/current")
        if identity and not Path(identity).is_file():
            raise ConfigError(f"--identity {identity!r} does not exist")
        for option in ssh_options or []:
            if "=" not in option:
                raise ConfigError(f"--ssh-option {option!r} is not KEY=VALUE", "e.g. -O StrictHostKeyChecking=yes")
        return cls(host, path.rstrip("/"), port, identity, tuple(ssh_options or ()))

    def ssh_command(self) -> list[str]:
        cmd = ["ssh"]
        if self.port:
            cmd += ["-p", str(self.port)]
        if self.identity:
            cmd += ["-i", self.identity]
        for option in (*SSH_DEFAULTS, *self.ssh_options):
            cmd += ["-o", option]
        return cmd


def _need(tool: str, package: str) -> None:
    if shutil.which(tool) is None:
        raise DeployError(f"{tool} is not installed on this host", f"sudo apt install {package}")


def _run(cmd: list[str], what: str, dry_run: bool, report: list[str]) -> str:
    report.append("$ " + shlex.join(cmd))
    if dry_run:
        return ""
    log.info("%s: %s", what, shlex.join(cmd))
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        raise DeployError(f"{what} did not finish within {TIMEOUT_S} s") from None
    if proc.returncode != 0:
        lines = [line.strip() for line in (proc.stdout + "\n" + proc.stderr).splitlines() if line.strip()]
        detail = "; ".join(lines[-5:]) or "no output"      # e.g. sha256sum's "labels.txt: FAILED"
        raise DeployError(f"{what} failed (exit code {proc.returncode}): {detail}")
    return proc.stdout


# Where install-pi.sh puts edge on the device; else the first `edge` on its PATH.
DEVICE_EDGE = "/opt/edge-detect/venv/bin/edge"


def remote_script(target: Target, unit: str | None, action: str = "reload",
                  trusted_keys: str = TRUSTED_KEYS, device_edge: str | None = None) -> str:
    """The shell run on the Pi after the copy: verify (signature when trusted keys are configured,
    then checksums), swap, then ``systemctl <action> <unit>``. Nothing is swapped in unless every
    check passes; a refusal exits 3 with one line on stderr."""
    device_edge = device_edge or DEVICE_EDGE
    path = shlex.quote(target.path)
    incoming = shlex.quote(target.path + ".incoming")
    previous = shlex.quote(target.path + ".previous")
    keys = shlex.quote(trusted_keys)
    lines = [
        "set -e",
        f"cd {incoming}",
        'refuse() { echo "refused: $1" >&2; exit 3; }',
        f"if [ -s {keys} ]; then",
        f"  [ -f {SIG} ] || refuse \"the bundle is not signed ({SIG} missing) and {trusted_keys} lists trusted keys\"",
        f"  signer=$(ssh-keygen -Y find-principals -s {SIG} -f {keys} | head -n 1) || signer=''",
        f"  [ -n \"$signer\" ] || refuse \"the bundle's signing key is not in {trusted_keys}\"",
        f"  ssh-keygen -Y verify -f {keys} -I \"$signer\" -n {NAMESPACE} -s {SIG} < {SUMS} >&2 "
        f"|| refuse \"the signature does not match {SUMS}: the bundle was altered after signing\"",
        f"  echo \"signature verified: signed by $signer\"",
        "else",
        f"  echo \"no trusted keys in {trusted_keys}: signature not checked\"",
        "fi",
        f"sha256sum --check --quiet --strict {SUMS}",
        # nothing beyond what SHA256SUMS lists (names start at column 67: 64 hex digits, two spaces)
        f"[ \"$(cut -c67- {SUMS} | LC_ALL=C sort)\" = \"$(ls -A | grep -vxE '{SUMS}|{SIG}' | LC_ALL=C sort)\" ] "
        f"|| refuse \"files not listed in {SUMS}\"",
        # The device's own edge loads the new model (manifest, input rules, layout, interpreter) before
        # the swap: a model it cannot run is never installed, so no restart loops into it.
        f"EDGE={shlex.quote(device_edge)}; [ -x \"$EDGE\" ] || EDGE=$(command -v edge || true)",
        'if [ -n "$EDGE" ]; then',
        '  out=$("$EDGE" info -m . 2>&1 >/dev/null) '
        '|| refuse "the device\'s edge ($EDGE) cannot load the new model: $(printf \'%s\' "$out" | tail -n 1)"',
        '  echo "model loaded by $EDGE"',
        "else",
        '  echo "no edge on the device: the new model is not test-loaded before the swap"',
        "fi",
        f"rm -rf {previous}",
        f"if [ -e {path} ]; then mv {path} {previous}; fi",
        f"mv {incoming} {path}",
        f"echo verified and installed in {path}",
    ]
    if unit:
        quoted = shlex.quote(unit)
        lines += [
            'SUDO=""; if [ "$(id -u)" -ne 0 ]; then SUDO="sudo -n"; fi',
            f"$SUDO systemctl {action} {quoted}",
            f"echo \"{unit}: $(systemctl is-active {quoted})\"",
        ]
    return "\n".join(lines)


ACTIONS = ("reload", "restart")


def deploy(bundle: Path | None, model_dir: Path | None, target: Target, *, unit: str | None = None,
           action: str = "reload", dry_run: bool = False, sign_key: Path | None = None,
           trusted_keys: str = TRUSTED_KEYS, local_keys: Path | None = None) -> list[str]:
    """Copy, verify and install a bundle (or a model directory, bundled on the fly and signed with
    ``sign_key`` when given) on ``target``, then ``systemctl <action> <unit>`` when a unit is given.

    ``trusted_keys`` is the allowed_signers file on the device; ``local_keys`` one on this host, to
    refuse an unsigned or untrusted bundle before it is copied."""
    if action not in ACTIONS:
        raise ConfigError(f"unit action {action!r} is not one of {', '.join(ACTIONS)}")
    if unit is not None and (not unit or unit.startswith("-") or any(c.isspace() for c in unit)):
        raise ConfigError(f"--{action} {unit!r} is not a systemd unit name", "e.g. edge-detect")
    _need("rsync", "rsync")
    _need("ssh", "openssh-client")
    report: list[str] = []
    with tempfile.TemporaryDirectory(prefix="edge-deploy-") as tmp:
        tmp_dir = Path(tmp)
        if bundle is None:
            bundle = build_bundle(model_dir, tmp_dir / "bundle.tar.gz", sign_key=sign_key).path
            report.append(f"bundled {model_dir}" + (f", signed with {sign_key}" if sign_key else ""))
        elif sign_key is not None:
            raise ConfigError("--sign applies to --model-dir (a bundle is signed when it is built)",
                              "edge-host bundle DIR -o FILE --sign KEY")
        staged = unpack_bundle(bundle, tmp_dir / "staged", trusted_keys=local_keys)
        report.append(f"verified {bundle} locally ({len(list(staged.iterdir()))} files)")
        ssh = target.ssh_command()
        parent = shlex.quote(str(Path(target.path).parent))
        _run([*ssh, target.host, f"mkdir -p {parent}"], "creating the target directory", dry_run, report)
        _run(["rsync", "-a", "--delete", "--checksum", "-e", shlex.join(ssh), f"{staged}/",
              f"{target.host}:{target.path}.incoming/"], "rsync", dry_run, report)
        out = _run([*ssh, target.host, "sh -c " + shlex.quote(remote_script(target, unit, action, trusted_keys))],
                   "verifying and installing on the device", dry_run, report)
        report += [line for line in out.splitlines() if line]
    return report

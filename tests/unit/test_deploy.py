"""edge-host deploy, for real: ssh + rsync to an OpenSSH server on the loopback interface.

The fixture starts Debian's sshd (package openssh-server; rsync from the rsync package) on a free
port with a freshly generated host key and client key, as root, and stops it afterwards. The
remote is this machine, so the test reads the deployed files directly. The Pi's
``systemctl`` is replaced, on the server's PATH (sshd ``SetEnv``), by a script that records its
arguments: there is no systemd running as PID 1 here.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time

import pytest

from edge.host import deploy as d
from edge.host.bundle import build_bundle
from edge.host.cli import main
from tests.helpers import free_port

SSHD = "/usr/sbin/sshd"


@pytest.fixture(scope="module")
def sshd(tmp_path_factory):
    if os.geteuid() != 0:
        pytest.skip("the loopback sshd fixture logs in as root: run as root")
    for tool, package in ((SSHD, "openssh-server"), ("rsync", "rsync"), ("ssh", "openssh-client")):
        if shutil.which(tool) is None:
            pytest.skip(f"{tool} is missing: apt install {package}")
    root = tmp_path_factory.mktemp("sshd")
    for key in ("host_key", "client_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(root / key)], check=True)
    (root / "authorized_keys").write_text((root / "client_key.pub").read_text())
    fakebin = root / "bin"
    fakebin.mkdir()
    (fakebin / "systemctl").write_text(f'#!/bin/sh\necho "$@" >> {root}/systemctl.log\n'
                                       'if [ "$1" = is-active ]; then echo active; fi\n')
    (fakebin / "systemctl").chmod(0o755)
    port = free_port()
    (root / "sshd_config").write_text(f"""Port {port}
ListenAddress 127.0.0.1
HostKey {root}/host_key
PidFile {root}/sshd.pid
AuthorizedKeysFile {root}/authorized_keys
PermitRootLogin prohibit-password
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
SetEnv PATH={fakebin}:/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin
""")
    os.makedirs("/run/sshd", exist_ok=True)       # sshd's privilege-separation directory
    proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(root / "sshd_config")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    for _ in range(100):                           # bounded wait for the listening socket
        if proc.poll() is not None:
            pytest.fail(f"sshd exited: {proc.stdout.read().decode()}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.05)
    host_key = (root / "host_key.pub").read_text().split()
    (root / "known_hosts").write_text(f"[127.0.0.1]:{port} {host_key[0]} {host_key[1]}\n")
    yield {"port": port, "root": root, "identity": str(root / "client_key"),
           "options": [f"UserKnownHostsFile={root}/known_hosts", "StrictHostKeyChecking=yes"]}
    proc.terminate()
    proc.wait(timeout=10)


def _args(sshd, dest):
    args = ["root@127.0.0.1", "--path", str(dest), "--port", str(sshd["port"]), "-i", sshd["identity"]]
    for option in sshd["options"]:
        args += ["-O", option]
    return args


def test_deploy_bundle_installs_verifies_and_restarts(sshd, model_dir, tmp_path, capsys):
    bundle = build_bundle(model_dir, tmp_path / "b.tar.gz")
    dest = tmp_path / "pi" / "models" / "current"
    assert main(["deploy", *_args(sshd, dest), "--bundle", str(bundle.path), "--restart", "edge-detect"]) == 0
    out = capsys.readouterr().out
    assert f"verified and installed in {dest}" in out
    assert "edge-detect: active" in out
    assert sorted(p.name for p in dest.iterdir()) == sorted(bundle.files)
    subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=dest, check=True)
    assert (sshd["root"] / "systemctl.log").read_text().splitlines()[-2:] == [
        "restart edge-detect", "is-active edge-detect"]


def test_deploy_reloads_the_service_so_it_picks_up_the_new_model(sshd, model_dir, tmp_path, capsys):
    """--reload: `systemctl reload` (SIGHUP: edge run --service reloads config and model in place)."""
    dest = tmp_path / "pi" / "models" / "current"
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir), "--reload", "edge-detect"]) == 0
    assert "edge-detect: active" in capsys.readouterr().out
    assert (sshd["root"] / "systemctl.log").read_text().splitlines()[-2:] == [
        "reload edge-detect", "is-active edge-detect"]


def test_redeploy_keeps_the_previous_version(sshd, model_dir, tmp_path, capsys):
    dest = tmp_path / "pi" / "current"
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir)]) == 0
    (dest / "marker").write_text("first deployment")
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir)]) == 0
    assert (dest.parent / "current.previous" / "marker").is_file()
    assert not (dest / "marker").exists()


def test_corruption_on_the_device_is_caught(sshd, model_dir, tmp_path, monkeypatch, capsys):
    """A file damaged in transit fails sha256sum on the device, and nothing is swapped in."""
    dest = tmp_path / "pi" / "current"
    real_run = d._run

    def corrupt_after_rsync(cmd, what, dry_run, report):
        out = real_run(cmd, what, dry_run, report)
        if cmd[0] == "rsync":
            labels = tmp_path / "pi" / "current.incoming" / "labels.txt"
            labels.write_text("not the labels\n")
        return out
    monkeypatch.setattr(d, "_run", corrupt_after_rsync)
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir)]) == 2
    err = capsys.readouterr().err
    assert "verifying and installing on the device failed" in err and "labels.txt" in err
    assert not dest.exists()


def test_unknown_host_key_is_refused(sshd, model_dir, tmp_path, capsys):
    empty = tmp_path / "known_hosts"
    empty.write_text("")
    args = ["root@127.0.0.1", "--path", str(tmp_path / "x"), "--port", str(sshd["port"]), "-i", sshd["identity"],
            "-O", f"UserKnownHostsFile={empty}", "-O", "StrictHostKeyChecking=yes", "--model-dir", str(model_dir)]
    assert main(["deploy", *args]) == 2
    assert "Host key verification failed" in capsys.readouterr().err


def test_dry_run_prints_commands_only(model_dir, tmp_path, capsys):
    dest = tmp_path / "never"
    assert main(["deploy", "pi@raspberrypi.local", "--path", str(dest), "--model-dir", str(model_dir),
                 "--restart", "edge-detect", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "$ rsync -a --delete --checksum" in out and "systemctl restart edge-detect" in out
    assert not dest.exists()


@pytest.mark.parametrize("args, message", [
    (["pi@host", "--path", "relative/dir"], "must be an absolute directory"),
    (["pi@host", "--path", "/"], "must be an absolute directory"),
    (["pi@host;reboot", "--path", "/opt/x"], "is not [user@]host"),
    (["pi@host", "--path", "/opt/x", "-O", "BatchMode"], "is not KEY=VALUE"),
    (["pi@host", "--path", "/opt/x", "--restart", "edge detect"], "is not a systemd unit name"),
    (["pi@host", "--path", "/opt/x"], "needs --bundle FILE or --model-dir DIR"),
])
def test_bad_arguments(args, message, model_dir, capsys):
    if "needs" not in message:
        args = [*args, "--model-dir", str(model_dir)]
    assert main(["deploy", *args]) == 2
    assert message in capsys.readouterr().err


def test_missing_bundle(tmp_path, capsys):
    assert main(["deploy", "pi@host", "--bundle", str(tmp_path / "nope.tar.gz"), "--dry-run"]) == 2
    assert "does not exist" in capsys.readouterr().err


# --- signed bundles (issue 14): the device verifies against its trusted keys before swapping in -----

@pytest.fixture(scope="module")
def signing(tmp_path_factory):
    d = tmp_path_factory.mktemp("signing")
    for name in ("builder", "intruder"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", name, "-f", str(d / name)], check=True)
    allowed = d / "trusted_keys"       # the device's /etc/edge-detect/trusted_keys (allowed_signers)
    allowed.write_text(f'builder namespaces="edge-detect-bundle" {(d / "builder.pub").read_text()}')
    return {"key": d / "builder", "other": d / "intruder", "allowed": allowed, "empty": d / "empty_keys"}


def test_signed_deploy_is_verified_on_the_device(sshd, model_dir, tmp_path, signing, capsys):
    dest = tmp_path / "pi" / "current"
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir), "--sign", str(signing["key"]),
                 "--trusted-keys", str(signing["allowed"]), "--local-trusted-keys", str(signing["allowed"])]) == 0
    out = capsys.readouterr().out
    assert "signature verified: signed by builder" in out and f"verified and installed in {dest}" in out
    assert (dest / "SHA256SUMS.sig").is_file()


def test_device_with_trusted_keys_refuses_an_unsigned_bundle(sshd, model_dir, tmp_path, signing, capsys):
    dest = tmp_path / "pi" / "current"
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir),
                 "--trusted-keys", str(signing["allowed"])]) == 2
    err = capsys.readouterr().err
    assert "refused: the bundle is not signed" in err and len(err.strip().splitlines()) == 1
    assert not dest.exists()


def test_device_without_trusted_keys_takes_unsigned_bundles(sshd, model_dir, tmp_path, signing, capsys):
    dest = tmp_path / "pi" / "current"
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir),
                 "--trusted-keys", str(signing["empty"])]) == 0
    out = capsys.readouterr().out
    assert "signed by builder" not in out and f"no trusted keys in {signing['empty']}: signature not checked" in out


def test_untrusted_signer_is_refused_on_the_device(sshd, model_dir, tmp_path, signing, capsys):
    dest = tmp_path / "pi" / "current"
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir), "--sign", str(signing["other"]),
                 "--trusted-keys", str(signing["allowed"])]) == 2
    assert "signing key is not in" in capsys.readouterr().err
    assert not dest.exists()


def test_model_changed_with_recomputed_checksums_is_refused_on_the_device(sshd, model_dir, tmp_path, signing,
                                                                          monkeypatch, capsys):
    """An attacker between host and device swaps the model and rewrites SHA256SUMS to match: the
    checksums pass, the signature does not, and nothing is installed."""
    import hashlib

    dest = tmp_path / "pi" / "current"
    real_run = d._run

    def tamper_after_rsync(cmd, what, dry_run, report):
        out = real_run(cmd, what, dry_run, report)
        if cmd[0] == "rsync":
            incoming = tmp_path / "pi" / "current.incoming"
            model = next(incoming.glob("*_int8.tflite"))
            model.write_bytes(model.read_bytes()[:-16] + b"\x00" * 16)
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
            lines = [f"{digest}  {model.name}" if line.endswith("  " + model.name) else line
                     for line in (incoming / "SHA256SUMS").read_text().splitlines()]
            (incoming / "SHA256SUMS").write_text("\n".join(lines) + "\n")
            subprocess.run(["sha256sum", "--check", "--quiet", "SHA256SUMS"], cwd=incoming, check=True)
        return out
    monkeypatch.setattr(d, "_run", tamper_after_rsync)
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir), "--sign", str(signing["key"]),
                 "--trusted-keys", str(signing["allowed"])]) == 2
    assert "the signature does not match SHA256SUMS" in capsys.readouterr().err
    assert not dest.exists()


def test_local_trusted_keys_refuse_before_copying(model_dir, tmp_path, signing, capsys):
    bundle = build_bundle(model_dir, tmp_path / "b.tar.gz")
    assert main(["deploy", "pi@raspberrypi.local", "--path", str(tmp_path / "x"), "--bundle", str(bundle.path),
                 "--local-trusted-keys", str(signing["allowed"]), "--dry-run"]) == 2
    err = capsys.readouterr().err
    assert "is not signed" in err and "rsync" not in err


def test_a_model_the_devices_edge_cannot_load_is_never_swapped_in(sshd, model_dir, tmp_path, monkeypatch,
                                                                    capsys):
    """No trusted keys, checksums recomputed to match a truncated model: sha256sum passes, but the
    device's own edge (here this venv's) cannot load it, so nothing is installed and the running
    model stays (no restart into a bad file)."""
    import hashlib
    import sys
    from pathlib import Path

    dest = tmp_path / "pi" / "current"
    monkeypatch.setattr(d, "DEVICE_EDGE", str(Path(sys.executable).with_name("edge")))
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir)]) == 0
    assert "model loaded by" in capsys.readouterr().out
    real_run = d._run

    def truncate_after_rsync(cmd, what, dry_run, report):
        out = real_run(cmd, what, dry_run, report)
        if cmd[0] == "rsync":
            incoming = tmp_path / "pi" / "current.incoming"
            model = next(incoming.glob("*_int8.tflite"))
            model.write_bytes(model.read_bytes()[:4096])
            digest = hashlib.sha256(model.read_bytes()).hexdigest()
            lines = [f"{digest}  {model.name}" if line.endswith("  " + model.name) else line
                     for line in (incoming / "SHA256SUMS").read_text().splitlines()]
            (incoming / "SHA256SUMS").write_text("\n".join(lines) + "\n")
        return out
    monkeypatch.setattr(d, "_run", truncate_after_rsync)
    before = (dest / "manifest.json").read_text()
    log = sshd["root"] / "systemctl.log"
    calls = log.read_text() if log.exists() else ""
    assert main(["deploy", *_args(sshd, dest), "--model-dir", str(model_dir), "--reload", "edge-detect"]) == 2
    err = capsys.readouterr().err
    assert "cannot load the new model" in err and "not a valid TFLite model" in err
    assert (dest / "manifest.json").read_text() == before
    assert (log.read_text() if log.exists() else "") == calls          # no reload was asked for

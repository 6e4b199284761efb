#!/usr/bin/env bash
# Install edge-detect as a systemd service on a Raspberry Pi (Raspberry Pi OS / Debian).
#
#   sudo scripts/install-pi.sh [--dry-run] [--start] [--no-apt] [--no-pip] [--prefix DIR] [--root DIR]
#
# Steps, each skipped when already done (running it again changes nothing):
#   1. apt packages: python3-venv, python3-picamera2 (CSI cameras come from apt, not PyPI)
#   2. a venv at PREFIX/venv with --system-site-packages (so picamera2/libcamera are visible)
#   3. pip install of this checkout into it
#   4. the service user and its groups (systemd/edge-detect.sysusers → /etc/sysusers.d/)
#   5. udev rules for the Coral (systemd/60-edge-detect.rules → /etc/udev/rules.d/)
#   6. /etc/edge-detect/edge.toml from systemd/edge.toml, only if there is none (never overwritten)
#   7. the unit (systemd/edge-detect.service → /etc/systemd/system/), enabled; --start starts it
#
# --dry-run prints every action without doing any. --root DIR installs into DIR as if it were /
# (an image being prepared, or a test); then nothing is started and udev is not reloaded.
# Afterwards: `edge doctor` checks the set-up, `journalctl -u edge-detect -f` follows the service.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DRY_RUN=0 START=0 APT=1 PIP=1 PREFIX=/opt/edge-detect ROOT=/
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --start) START=1 ;;
        --no-apt) APT=0 ;;
        --no-pip) PIP=0 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift ;;
        --root) ROOT="${2:?--root needs a directory}"; shift ;;
        -h|--help) sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install-pi.sh: unknown option '$1' (see --help)" >&2; exit 2 ;;
    esac
    shift
done
ROOT="${ROOT%/}"
OFFLINE=0; [ -n "$ROOT" ] && OFFLINE=1      # --root other than /: no running system to talk to

VENV="$PREFIX/venv"
UNIT=/etc/systemd/system/edge-detect.service
SYSUSERS=/etc/sysusers.d/edge-detect.conf
RULES=/etc/udev/rules.d/60-edge-detect.rules
CONFIG=/etc/edge-detect/edge.toml

say() { echo "$*"; }
# Print an action, then do it (unless --dry-run).
act() {
    echo "+ $*"
    ((DRY_RUN)) || "$@"
}
# Install FILE at DEST (under ROOT) if it is missing or differs.
put() {
    local mode="$1" file="$2" dest="$ROOT$3"
    if [ -f "$dest" ] && cmp -s "$file" "$dest"; then
        say "ok: $3 is up to date"
        return 1
    fi
    act install -D -m "$mode" "$file" "$dest"
}

if ((!DRY_RUN)) && [ "$(id -u)" != 0 ] && [ -z "$ROOT" ]; then
    echo "install-pi.sh: run as root (sudo), or with --dry-run to see what it would do" >&2
    exit 2
fi

# 1. apt packages
if ((APT)); then
    need=()
    for pkg in python3-venv python3-picamera2; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || need+=("$pkg")
    done
    if ((${#need[@]})); then
        act apt-get install -y --no-install-recommends "${need[@]}"
    else
        say "ok: apt packages python3-venv python3-picamera2 are installed"
    fi
fi

# 2. venv
if [ -x "$ROOT$VENV/bin/python" ]; then
    say "ok: venv $VENV exists"
else
    act python3 -m venv --system-site-packages "$ROOT$VENV"
fi

# 3. the package
if ((PIP)); then
    installed="$( { "$ROOT$VENV/bin/python" -c 'import edge; print(edge.__version__)' 2>/dev/null; } || true)"
    wanted="$(sed -n 's/^__version__ = "\(.*\)"/\1/p' "$SRC/edge/__init__.py")"
    if [ -n "$installed" ] && [ "$installed" = "$wanted" ]; then
        say "ok: edge $installed is installed in $VENV"
    else
        act "$ROOT$VENV/bin/pip" install --quiet "$SRC"
    fi
fi

# 4. service user and groups
if put 0644 "$SRC/systemd/edge-detect.sysusers" "$SYSUSERS" || ! grep -q '^edge-detect:' "$ROOT/etc/passwd" 2>/dev/null; then
    if ((OFFLINE)); then
        act systemd-sysusers --root="$ROOT" "$ROOT$SYSUSERS"
    else
        act systemd-sysusers "$SYSUSERS"
    fi
else
    say "ok: user edge-detect exists"
fi

# 5. udev rules
if put 0644 "$SRC/systemd/60-edge-detect.rules" "$RULES" && ((!OFFLINE)); then
    act udevadm control --reload-rules
    act udevadm trigger --subsystem-match=usb --subsystem-match=apex
fi

# 6. configuration (kept if present: it is the user's)
if [ -f "$ROOT$CONFIG" ]; then
    say "ok: $CONFIG exists (kept; compare with $SRC/systemd/edge.toml after upgrades)"
else
    act install -D -m 0640 "$SRC/systemd/edge.toml" "$ROOT$CONFIG"
fi

# 7. the unit
unit_changed=0
if [ "$PREFIX" = /opt/edge-detect ]; then
    put 0644 "$SRC/systemd/edge-detect.service" "$UNIT" && unit_changed=1
else   # another prefix: the unit's ExecStart follows it
    tmp="$(mktemp)"; trap 'rm -f "$tmp"' EXIT
    sed "s#/opt/edge-detect/venv#$VENV#g" "$SRC/systemd/edge-detect.service" > "$tmp"
    put 0644 "$tmp" "$UNIT" && unit_changed=1
fi
if ((OFFLINE)); then
    if [ -L "$ROOT/etc/systemd/system/multi-user.target.wants/edge-detect.service" ]; then
        say "ok: edge-detect.service is enabled"
    else
        act systemctl --root="$ROOT" enable edge-detect.service
    fi
else
    ((unit_changed)) && act systemctl daemon-reload
    if systemctl is-enabled --quiet edge-detect.service 2>/dev/null; then
        say "ok: edge-detect.service is enabled"
    else
        act systemctl enable edge-detect.service
    fi
    if ((START)); then
        act systemctl restart edge-detect.service
    fi
fi

((DRY_RUN)) && say "dry run: nothing was changed"
say "done. Check the set-up with: $VENV/bin/edge doctor"

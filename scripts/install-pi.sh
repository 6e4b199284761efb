#!/usr/bin/env bash
# Install edge-detect as a systemd service on a Raspberry Pi (Raspberry Pi OS / Debian).
#
#   sudo scripts/install-pi.sh [--dry-run] [--start] [--no-apt] [--no-picamera2] [--no-pip]
#                              [--prefix DIR] [--root DIR]
#
# Steps, each skipped when already done (running it again changes nothing):
#   1. apt packages: python3-venv, python3-picamera2 (CSI cameras come from apt, not PyPI)
#   2. a venv at PREFIX/venv with --system-site-packages (so picamera2/libcamera are visible)
#   3. pip install of this checkout into it (again whenever the checkout changed); with apt's
#      numpy older than 2 (Raspberry Pi OS bookworm) pinned to 'numpy<2', which apt's picamera2
#      and simplejpeg are built against
#   4. the service user and its groups (systemd/edge-detect.sysusers → /etc/sysusers.d/)
#   5. udev rules for the Coral (systemd/60-edge-detect.rules → /etc/udev/rules.d/)
#   6. /etc/edge-detect/edge.toml from systemd/edge.toml, only if there is none (never overwritten),
#      root:edge-detect 0640 so that the service user can read it
#   7. the unit (systemd/edge-detect.service → /etc/systemd/system/), enabled; --start starts it
#
# --dry-run prints every action without doing any. --root DIR installs into DIR as if it were /
# (an image being prepared, or a test); then nothing is started and udev is not reloaded.
# --no-picamera2 leaves out python3-picamera2 (not a Raspberry Pi, or no CSI camera: plain Debian
# has no such package; without the flag a missing one is reported and skipped).
# Afterwards: `edge doctor` checks the set-up, `journalctl -u edge-detect -f` follows the service.
set -euo pipefail

SRC="$(cd "$(dirname "$0")/.." && pwd)"
DRY_RUN=0 START=0 APT=1 PICAMERA2=1 PIP=1 PREFIX=/opt/edge-detect ROOT=/
while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --start) START=1 ;;
        --no-apt) APT=0 ;;
        --no-picamera2) PICAMERA2=0 ;;
        --no-pip) PIP=0 ;;
        --prefix) PREFIX="${2:?--prefix needs a directory}"; shift ;;
        --root) ROOT="${2:?--root needs a directory}"; shift ;;
        -h|--help) sed -n '2,25p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
warn() { echo "warning: $*" >&2; }
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
DPKG_ADMIN="$ROOT/var/lib/dpkg"
dpkg_installed() { dpkg-query --admindir="$DPKG_ADMIN" -W -f='${Status}' "$1" 2>/dev/null | grep -q "ok installed"; }
if ((APT)); then
    wanted_pkgs=(python3-venv)
    if ((PICAMERA2)); then
        wanted_pkgs+=(python3-picamera2)
    else
        say "skipped: python3-picamera2 (--no-picamera2)"
    fi
    need=()
    for pkg in "${wanted_pkgs[@]}"; do
        dpkg_installed "$pkg" && continue
        if [ "$pkg" = python3-picamera2 ] && ! apt-cache show python3-picamera2 >/dev/null 2>&1; then
            warn "python3-picamera2 is in none of this system's apt sources (it comes from the Raspberry Pi" \
                 "archive); skipped: --source picamera2 will not work (pass --no-picamera2 to say so)"
            continue
        fi
        need+=("$pkg")
    done
    if ((${#need[@]})); then
        act apt-get install -y --no-install-recommends "${need[@]}"
    else
        say "ok: apt packages ${wanted_pkgs[*]} are installed"
    fi
fi

# 2. venv
if [ -x "$ROOT$VENV/bin/python" ]; then
    say "ok: venv $VENV exists"
else
    act python3 -m venv --system-site-packages "$ROOT$VENV"
fi

# 3. the package
# What was installed is recorded as a digest of the checkout's package files (STAMP); the check
# runs the venv's Python isolated (-I) from /, so that a checkout in the working directory cannot
# stand in for the installed package, and needs the venv's bin/edge.
STAMP="$VENV/edge-detect.source-sha256"
source_digest() {
    local parts=() p
    for p in edge models pyproject.toml README.md; do [ -e "$SRC/$p" ] && parts+=("$p"); done
    (cd "$SRC" && find "${parts[@]}" -type f \
        ! -name '*.pyc' ! -path '*/__pycache__/*' ! -path '*.egg-info/*' -print0 \
        | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1)
}
edge_in_venv() {
    local where
    where="$(cd / && "$ROOT$VENV/bin/python" -I -c 'import edge; print(edge.__file__)' 2>/dev/null)" || return 1
    case "$where" in "$ROOT$VENV"/*|"$VENV"/*) [ -x "$ROOT$VENV/bin/edge" ] ;; *) return 1 ;; esac
}
if ((PIP)); then
    digest="$(source_digest)"
    if edge_in_venv && [ "$(cat "$ROOT$STAMP" 2>/dev/null)" = "$digest" ]; then
        say "ok: edge from this checkout is installed in $VENV"
    else
        extra=()
        # apt's numpy 1.x (Raspberry Pi OS bookworm) seen through --system-site-packages: apt's
        # picamera2/simplejpeg are built against it, and opencv/ml_dtypes would pull numpy 2 over it.
        apt_numpy="$(dpkg-query --admindir="$DPKG_ADMIN" -W -f='${Status} ${Version}' python3-numpy 2>/dev/null \
                     | sed -n 's/^install ok installed \([0-9]*:\)\{0,1\}\([0-9][0-9.]*\).*/\2/p' || true)"
        system_site=1   # step 2 makes the venv with --system-site-packages; an older one may lack it
        if [ -f "$ROOT$VENV/pyvenv.cfg" ] && ! grep -q '^include-system-site-packages = true' "$ROOT$VENV/pyvenv.cfg"; then
            system_site=0
        fi
        if [ -n "$apt_numpy" ] && [ "${apt_numpy%%.*}" -lt 2 ] && ((system_site)); then
            say "apt's numpy is $apt_numpy: pinning numpy<2 in the venv (apt's picamera2 and simplejpeg need numpy 1)"
            extra=('numpy<2')
        fi
        act "$ROOT$VENV/bin/pip" install --quiet "$SRC" "${extra[@]}"
        ((DRY_RUN)) || echo "$digest" > "$ROOT$STAMP"
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
    # Without a running udevd (a container, a chroot) there is nothing to reload: the rules apply
    # from the next boot on.
    if command -v udevadm >/dev/null && udevadm control --ping >/dev/null 2>&1; then
        act udevadm control --reload-rules
        act udevadm trigger --subsystem-match=usb --subsystem-match=apex
    else
        warn "udevd is not running (or udevadm is missing): the rules in $RULES apply from the next boot"
    fi
fi

# 6. configuration (kept if present: it is the user's)
# root:edge-detect 0640: the service user reads it, nobody else. The group's number comes from
# the target's /etc/group (with --root the host may have no such group).
gid="$(awk -F: '$1 == "edge-detect" {print $3}' "$ROOT/etc/group" 2>/dev/null || true)"
uid="$(awk -F: '$1 == "edge-detect" {print $3}' "$ROOT/etc/passwd" 2>/dev/null || true)"
if { [ -z "$gid" ] || [ -z "$uid" ]; } && ((!DRY_RUN)); then
    echo "install-pi.sh: user or group edge-detect missing under $ROOT/etc after systemd-sysusers" >&2
    exit 1
fi
gid="${gid:-edge-detect}"
# Whether the service user can read FILE (owner, group or other read bit).
service_can_read() {
    local owner group mode
    read -r owner group mode < <(stat -c '%u %g %a' "$1")
    mode=$((8#$mode))
    (( (owner == uid && (mode & 8#400)) || (group == gid && (mode & 8#040)) || (mode & 8#004) ))
}
if [ -f "$ROOT$CONFIG" ]; then
    say "ok: $CONFIG exists (kept; compare with $SRC/systemd/edge.toml after upgrades)"
    if ((!DRY_RUN)) && ! service_can_read "$ROOT$CONFIG"; then
        say "$CONFIG is not readable by edge-detect (an earlier install made it root:root 0640): fixing"
        act chown "root:$gid" "$ROOT$CONFIG"
        act chmod 0640 "$ROOT$CONFIG"
    fi
else
    act install -D -m 0640 -o root -g "$gid" "$SRC/systemd/edge.toml" "$ROOT$CONFIG"
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
    if ((START)) && ! act systemctl restart edge-detect.service; then
        echo "install-pi.sh: edge-detect.service did not start; \`journalctl -u edge-detect -n 20\` says why" \
             "and \`$VENV/bin/edge doctor\` checks the set-up" >&2
        exit 1
    fi
fi

((DRY_RUN)) && say "dry run: nothing was changed"
say "done. Check the set-up with: $VENV/bin/edge doctor"

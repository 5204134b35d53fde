#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian, for the browser checks of the book
# (scripts/check_html.py, tests marked `browser`/`book`). Idempotent: does nothing if both exist.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    exit 0
fi

if [[ "$(id -u)" -eq 0 ]]; then
    SUDO=""
elif command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
else
    echo "setup_chromium.sh: /usr/bin/chromium or /usr/bin/chromedriver is missing and this user is" >&2
    echo "not root and has no sudo. Install them as root:" >&2
    echo "    apt-get update && apt-get install -y chromium chromium-driver" >&2
    exit 1
fi

echo "setup_chromium.sh: installing Debian's chromium and chromium-driver ..."
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null

if [[ ! -x /usr/bin/chromium || ! -x /usr/bin/chromedriver ]]; then
    echo "setup_chromium.sh: apt-get finished but /usr/bin/chromium or /usr/bin/chromedriver is still missing" >&2
    exit 1
fi
echo "setup_chromium.sh: $(/usr/bin/chromium --version 2>/dev/null || echo chromium) installed"

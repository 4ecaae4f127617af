#!/usr/bin/env bash
# Install Debian's chromium for the browser test of the demo app (tests/test_app_browser.py).
#
# Idempotent: does nothing when /usr/bin/chromium already exists. Needs root (CI runs as root) and
# apt-get; Playwright's own browser download is not used, the test launches /usr/bin/chromium.
set -euo pipefail

BROWSER=/usr/bin/chromium

if [ -x "$BROWSER" ]; then
    echo "install_browser: $BROWSER is already installed"
    exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
    echo "install_browser: $BROWSER is missing; run this as root (or: sudo apt-get install chromium)" >&2
    exit 1
fi
if ! command -v apt-get >/dev/null 2>&1; then
    echo "install_browser: apt-get not found; install chromium with this system's package manager" >&2
    exit 1
fi

export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
# a font package too, so that a minimal image renders page text (screenshots) instead of boxes
apt-get install -y -qq --no-install-recommends chromium fonts-dejavu-core
"$BROWSER" --version 2>/dev/null || true

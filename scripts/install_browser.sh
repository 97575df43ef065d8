#!/usr/bin/env bash
# Debian's Chromium + ChromeDriver (and a small CJK font) for the browser tests of the review page and
# the Dagster UI. Needs root; without them those tests skip and say why.
set -euo pipefail
if command -v chromium >/dev/null && command -v chromedriver >/dev/null && fc-list 2>/dev/null | grep -qi wqy; then
    exit 0
fi
if [ "$(id -u)" != 0 ]; then
    echo "install_browser.sh: not root, skipping (apt-get install chromium chromium-driver fonts-wqy-microhei)" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends chromium chromium-driver fonts-wqy-microhei >/dev/null

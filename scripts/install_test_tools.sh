#!/usr/bin/env bash
# Debian packages madef drives for real: bubblewrap (the HumanEval sandbox, also for `make run`), and for
# the tests Chromium + ChromeDriver (and a small CJK font) for the review page and the Dagster UI,
# docker-compose (v1) to validate docker/ without an engine, redis-server (the broker of the Celery tests'
# workers) and postgresql (the DuckLake catalog of the storage tests); those tests start their own servers
# on free ports. Arguments: the packages to install (default: all of them). Needs root; without it nothing
# is installed, the tests that need a package skip and say why, and HumanEval fails naming the
# `sandbox.isolation` setting.
set -euo pipefail
packages=("$@")
[ ${#packages[@]} -eq 0 ] && packages=(bubblewrap chromium chromium-driver fonts-wqy-microhei docker-compose redis-server postgresql)
missing=()
for package in "${packages[@]}"; do
    dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" != 0 ]; then
    echo "install_test_tools.sh: not root, skipping: apt-get install ${missing[*]}" >&2
    exit 0
fi
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null

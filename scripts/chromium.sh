#!/usr/bin/env bash
# Makes sure Debian's headless Chromium and its chromedriver are installed
# (the browser tests drive them; nothing else is downloaded at test time).
set -euo pipefail
if [ -x /usr/bin/chromium ] && [ -x /usr/bin/chromedriver ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "the browser tests need Debian's chromium and chromium-driver: sudo apt-get install -y chromium chromium-driver" >&2
  exit 1
fi
apt-get update -q
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends chromium chromium-driver

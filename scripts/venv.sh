#!/usr/bin/env bash
# Creates (or refreshes) the project-local virtualenv .venv with the pinned
# test tools of requirements-test.txt (which includes requirements-lambda.txt).
# Needs only python3.
set -euo pipefail
cd "$(dirname "$0")/.."
req=requirements-test.txt
stamp=.venv/.installed-$(cat "$req" requirements-lambda.txt | sha256sum | cut -c1-16)
if [ -f "$stamp" ]; then
  exit 0
fi
python3 -m venv .venv
.venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
rm -f .venv/.installed-*
touch "$stamp"
echo "virtualenv ready: .venv ($(.venv/bin/python --version))"

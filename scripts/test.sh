#!/usr/bin/env bash
# The test command (`make test`): sets up what the tests need on a machine
# that has only cargo and python3, then runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/toolchain.sh
scripts/venv.sh
echo "== Rust tests (unit, handlers, end to end on moto) =="
scripts/with-moto.sh cargo test --workspace --no-fail-fast
echo "== API fuzz: schemathesis against webhooks dev (no 5xx) =="
scripts/schemathesis.sh
echo "== Portal in Debian's headless Chromium, against webhooks dev =="
scripts/chromium.sh
cargo build --quiet -p webhooks --bin webhooks
.venv/bin/pytest tests/browser -q -p no:cacheprovider
echo "== Deploy path: sam validate --lint, sam build of every function =="
scripts/sam-build.sh
echo "== Infrastructure: template wiring, SAM transform and cfn-lint =="
.venv/bin/pytest tests/infra -q

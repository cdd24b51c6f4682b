#!/usr/bin/env bash
# OpenAPI-driven fuzz of the management API: schemathesis (pinned in
# requirements-fuzz.txt) generates requests from docs/openapi.yaml and sends
# them to `webhooks dev` on a free loopback port; any 5xx fails the run.
#   scripts/schemathesis.sh                            # 25 examples per operation
#   MAX_EXAMPLES=200 TIME_LIMIT=1200 scripts/schemathesis.sh
#   SEED=123 scripts/schemathesis.sh                   # another seed (default fixed)
#   CHECKS=all scripts/schemathesis.sh                 # every check, not only 5xx
#   NO_NAMESPACE=1 scripts/schemathesis.sh             # force the hook instead of unshare
#
# Deliveries must not leave the machine: fuzzed endpoints get arbitrary URLs,
# and published events are delivered to them. Where it can, the script runs
# the server and schemathesis in a network namespace that has only loopback
# (`unshare -rn`); elsewhere a schemathesis hook points every endpoint URL
# it sends at the local server (scripts/schemathesis_hooks.py).
set -euo pipefail
cd "$(dirname "$0")/.."

max_examples=${MAX_EXAMPLES:-25}
time_limit=${TIME_LIMIT:-240}
seed=${SEED:-20261127}
checks=${CHECKS:-not_a_server_error}
bin="${CARGO_TARGET_DIR:-target}/debug/webhooks"
report_dir=.tmp/schemathesis

if [ -z "${WEBHOOKS_SCHEMATHESIS_INNER:-}" ]; then
  scripts/venv.sh
  req=requirements-fuzz.txt
  stamp=.venv/.fuzz-installed-$(sha256sum "$req" | cut -c1-16)
  if [ ! -f "$stamp" ]; then
    .venv/bin/pip install --quiet --disable-pip-version-check -r "$req"
    rm -f .venv/.fuzz-installed-*
    touch "$stamp"
  fi
  cargo build --quiet -p webhooks --bin webhooks
  mkdir -p "$report_dir"
  if [ -z "${NO_NAMESPACE:-}" ] && command -v unshare > /dev/null && command -v ip > /dev/null \
      && unshare -rn true 2> /dev/null; then
    echo "== schemathesis in a loopback-only network namespace =="
    exec unshare -rn env WEBHOOKS_SCHEMATHESIS_INNER=isolated "$0" "$@"
  fi
  echo "== schemathesis (no network namespace here: endpoint URLs are rewritten to loopback) =="
  export WEBHOOKS_SCHEMATHESIS_INNER=hooked
fi

if [ "$WEBHOOKS_SCHEMATHESIS_INNER" = isolated ]; then
  ip link set lo up
fi

port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
export WEBHOOKS_JWT_SECRET="schemathesis-$(python3 -c 'import secrets; print(secrets.token_hex(16))')"
# One attempt, a short timeout: deliveries to fuzzed URLs fail fast.
"$bin" dev --listen "127.0.0.1:$port" --retry-schedule none --request-timeout 2s \
  > "$report_dir/webhooks-dev.log" 2>&1 &
server=$!
trap 'kill "$server" 2> /dev/null || true; wait "$server" 2> /dev/null || true' EXIT
for _ in $(seq 1 300); do
  if grep -q "^listening on" "$report_dir/webhooks-dev.log"; then
    break
  fi
  if ! kill -0 "$server" 2> /dev/null; then
    echo "webhooks dev failed to start:" >&2
    cat "$report_dir/webhooks-dev.log" >&2
    exit 1
  fi
  sleep 0.2
done
grep -q "^listening on" "$report_dir/webhooks-dev.log" || { echo "webhooks dev did not start" >&2; exit 1; }
token=$("$bin" dev token --org fuzz --scope "webhooks:manage events:write")

if [ "$WEBHOOKS_SCHEMATHESIS_INNER" = hooked ]; then
  export SCHEMATHESIS_HOOKS=schemathesis_hooks
  export PYTHONPATH="$PWD/scripts${PYTHONPATH:+:$PYTHONPATH}"
  export WEBHOOKS_FUZZ_SINK="http://127.0.0.1:$port/fuzz-sink"
fi

echo "webhooks dev on 127.0.0.1:$port; $max_examples examples per operation, seed $seed, checks: $checks"
status=0
timeout "$time_limit" .venv/bin/schemathesis run docs/openapi.yaml \
  --url "http://127.0.0.1:$port" \
  --header "Authorization: Bearer $token" \
  --checks "$checks" \
  --max-examples "$max_examples" \
  --seed "$seed" \
  --generation-database "$report_dir/examples" \
  --workers 2 \
  --request-timeout 10 \
  --report junit \
  --report-dir "$report_dir" \
  --no-color || status=$?
if [ "$status" -eq 124 ]; then
  echo "schemathesis did not finish within ${time_limit} s" >&2
fi
served_5xx=$(sed 's/\x1b\[[0-9;]*m//g' "$report_dir/webhooks-dev.log" | grep -E 'served status=5[0-9]{2}' || true)
if [ -n "$served_5xx" ]; then
  echo "the API logged 5xx answers (see $report_dir/webhooks-dev.log):" >&2
  echo "$served_5xx" | head -20 >&2
  [ "$status" -ne 0 ] || status=1
fi
exit "$status"

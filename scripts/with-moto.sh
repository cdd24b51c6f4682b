#!/usr/bin/env bash
# Runs a command with a moto server on a free loopback port, reached through
# AWS_ENDPOINT_URL, and stops the server afterwards whatever happens.
#   scripts/with-moto.sh cargo test --workspace
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/venv.sh
mkdir -p .tmp
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()')
# moto with DynamoDB requests made atomic (scripts/moto-server.py says why).
.venv/bin/python scripts/moto-server.py -H 127.0.0.1 -p "$port" > .tmp/moto.log 2>&1 &
moto_pid=$!
trap 'kill "$moto_pid" 2>/dev/null || true; wait "$moto_pid" 2>/dev/null || true' EXIT
for _ in $(seq 1 100); do
  if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$port/moto-api/', timeout=1)" 2>/dev/null; then
    break
  fi
  if ! kill -0 "$moto_pid" 2>/dev/null; then
    echo "moto server failed to start:" >&2; cat .tmp/moto.log >&2; exit 1
  fi
  sleep 0.2
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$port"
export AWS_ACCESS_KEY_ID=testing AWS_SECRET_ACCESS_KEY=testing
export AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1
export AWS_EC2_METADATA_DISABLED=true
echo "moto server on $AWS_ENDPOINT_URL (pid $moto_pid)"
"$@"

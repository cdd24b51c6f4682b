#!/usr/bin/env bash
# Instructions each Lambda runs from exec to its first Runtime API request
# (callgrind): the init figure a busy machine does not move. The Runtime
# API is a closed loopback port, so each function exits at its first
# `GET /next`; the environment is the cold-start benchmark's (every table
# and queue variable, dummy credentials, no network call at start).
#
#   scripts/init-instructions.sh [BIN_DIR]    # default: $CARGO_TARGET_DIR/release
set -euo pipefail
cd "$(dirname "$0")/.."
dir=${1:-${CARGO_TARGET_DIR:-target}/release}
command -v valgrind >/dev/null || { echo "init-instructions: needs valgrind" >&2; exit 1; }
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
for fn in api inbound fanout sender sweeper; do
  env -i AWS_LAMBDA_RUNTIME_API=127.0.0.1:9 AWS_LAMBDA_FUNCTION_NAME="webhooks-$fn" \
    AWS_LAMBDA_FUNCTION_MEMORY_SIZE=256 'AWS_LAMBDA_FUNCTION_VERSION=$LATEST' \
    AWS_LAMBDA_LOG_GROUP_NAME="/aws/lambda/webhooks-$fn" AWS_LAMBDA_LOG_STREAM_NAME=bench \
    AWS_REGION=us-east-1 AWS_DEFAULT_REGION=us-east-1 AWS_ACCESS_KEY_ID=bench \
    AWS_SECRET_ACCESS_KEY=bench AWS_SESSION_TOKEN=bench AWS_EC2_METADATA_DISABLED=true \
    AWS_ENDPOINT_URL=http://127.0.0.1:9 \
    WHATSAPP_VERIFY_TOKEN_ARN=arn:aws:secretsmanager:us-east-1:123456789012:secret:verify \
    WEBHOOKS_PUBLIC_BASE_URL=https://bench.example.com \
    DELIVERY_QUEUE_URL=http://127.0.0.1:9/123456789012/deliveries \
    DELIVERY_DLQ_URL=http://127.0.0.1:9/123456789012/dead-letters \
    ENDPOINT_SECRETS_KEY_ARN=arn:aws:kms:us-east-1:123456789012:key/bench \
    EVENTS_TABLE=events ENDPOINTS_TABLE=endpoints DELIVERIES_TABLE=deliveries \
    CURSORS_TABLE=cursors IDEMPOTENCY_TABLE=idempotency INBOUND_TABLE=inbound STATS_TABLE=stats \
    valgrind --tool=callgrind --callgrind-out-file="$tmp/out.$fn" "$dir/$fn" >/dev/null 2>"$tmp/err.$fn" || true
  n=$(sed -n 's/.*Collected : \([0-9]*\).*/\1/p' "$tmp/err.$fn")
  printf '%-8s %s instructions to the first Runtime API request\n' "$fn" "${n:-?}"
done

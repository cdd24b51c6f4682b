#!/usr/bin/env bash
# Where `webhooks dev` spends its CPU while it delivers: a sampling profile
# (Linux perf) of the real `webhooks dev` binary, driven by
# `webhooks-bench dev-rss` (publisher and receiver in processes of their
# own, so only the pipeline's process is reported). Prints the top functions
# and the top crates by self time, and writes the raw data to
# target/bench/perf.data for `perf report -i`.
#
#   scripts/profile.sh                # 200 000 deliveries, 1 endpoint per event
#   scripts/profile.sh 500000 5       # 500 000 deliveries, 5 endpoints per event
#   PROFILE_TOP=25 scripts/profile.sh
#   PROFILE_TOOL=callgrind scripts/profile.sh 5000
#
# PROFILE_TOOL=callgrind counts instructions instead (valgrind): the same
# count for the same binary and input whatever else the machine is doing,
# so two builds can be compared on a busy machine; it prints the program's
# total and the top functions, inclusive and self. Under valgrind sha2 runs
# its portable code (no SHA extensions), so hashing weighs more than on
# the hardware; perf's percentages are the ones to quote for where time goes.
#
# Builds the `bloat` profile (Cargo.toml: the release build with its symbols)
# of `webhooks` and `webhooks-bench` into their own directory of the target
# dir; the shipped binaries are not touched. Needs perf (Debian's linux-perf;
# installed here when run as root) and a kernel that lets this user sample
# its own processes (kernel.perf_event_paranoid <= 2).
set -euo pipefail
cd "$(dirname "$0")/.."

deliveries=${1:-200000}
endpoints=${2:-1}
top=${PROFILE_TOP:-15}
target=${CARGO_TARGET_DIR:-target}
out=target/bench
mkdir -p "$out"

if ! command -v perf >/dev/null; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "profile: needs perf: sudo apt-get install -y linux-perf" >&2
    exit 1
  fi
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends linux-perf
fi

cargo build --profile bloat -p webhooks --bin webhooks
cargo build --profile bloat -p webhooks-bench --bin webhooks-bench

if [ "${PROFILE_TOOL:-perf}" = callgrind ]; then
  command -v valgrind >/dev/null || { echo "profile: needs valgrind (Debian's valgrind)" >&2; exit 1; }
  rm -f "$out"/callgrind.out.*
  wrapper="$out/webhooks-under-callgrind"
  printf '#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file=%s/callgrind.out.%%p %s "$@"\n' \
    "$(realpath "$out")" "$(realpath "$target/bloat/webhooks")" >"$wrapper"
  chmod +x "$wrapper"
  echo "== callgrind on webhooks dev: $deliveries deliveries, $endpoints endpoint(s) per event =="
  "$target/bloat/webhooks-bench" dev-rss --deliveries "$deliveries" --endpoints "$endpoints" \
    --webhooks-bin "$wrapper" --timeout-secs 3600 >"$out/profile-run.log"
  report=$(ls "$out"/callgrind.out.* | head -n 1)
  callgrind_annotate "$report" 2>/dev/null | grep 'PROGRAM TOTALS'
  echo "-- top $top functions, inclusive --"
  callgrind_annotate --inclusive=yes "$report" 2>/dev/null | grep -E '^ *[0-9,]+ \(' \
    | grep -v -E 'PROGRAM TOTALS|tokio::runtime|std::sys|pthread_create|core::ops::function' | head -n "$top"
  echo "-- top $top functions, self --"
  callgrind_annotate "$report" 2>/dev/null | grep -E '^ *[0-9,]+ \(' | grep -v 'PROGRAM TOTALS' | head -n "$top"
  exit 0
fi

data="$out/perf.data"
echo "== profiling webhooks dev: $deliveries deliveries, $endpoints endpoint(s) per event =="
perf record --quiet -F 997 -o "$data" -- \
  "$target/bloat/webhooks-bench" dev-rss --deliveries "$deliveries" --endpoints "$endpoints" \
  --webhooks-bin "$target/bloat/webhooks" >"$out/profile-run.log"
grep '^dev-rss: .* deliveries in ' "$out/profile-run.log" || true

# The `webhooks` process: the one dev-rss names (`webhooks dev pid N`).
pid=$(sed -n 's/.*webhooks dev pid \([0-9]*\).*/\1/p' "$out/profile-run.log" | head -n 1)
if [ -z "$pid" ]; then
  echo "profile: dev-rss did not name the webhooks process (see $out/profile-run.log)" >&2
  exit 1
fi
perf report -i "$data" --pid "$pid" --no-children --sort dso,sym --percentage relative --stdio -q \
  --percent-limit 0 2>/dev/null >"$out/profile.txt"
python3 scripts/profile_summary.py "$out/profile.txt" "$top"

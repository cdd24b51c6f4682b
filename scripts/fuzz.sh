#!/usr/bin/env bash
# Fuzzes each parser of untrusted input with cargo-fuzz (libFuzzer):
#   scripts/fuzz.sh                      # every target for 10 s (CI)
#   scripts/fuzz.sh 600                  # every target for 10 minutes
#   scripts/fuzz.sh 60 inbound_request   # one target for a minute
# Targets (fuzz/fuzz_targets): standard_webhooks, api_request, inbound_request.
#
# cargo-fuzz is installed into .tools/ on first use. It needs nightly
# features; RUSTC_BOOTSTRAP=1 lets the stable toolchain provide them.
# FUZZ_SANITIZER=address builds with AddressSanitizer (default: none; the
# code under test is safe Rust, and panics are what is looked for).
# The committed seeds (fuzz/corpus/<target>) are read, never written: new
# inputs go to .tmp/fuzz-corpus/<target>; a crash is saved under
# fuzz/artifacts/<target>/ — add it to fuzz/corpus/<target>/ once fixed, and
# `cargo test` replays it from then on (tests/it/fuzz_corpus.rs).
set -euo pipefail
cd "$(dirname "$0")/.."

seconds=${1:-10}
shift || true
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=(standard_webhooks api_request inbound_request)
fi
sanitizer=${FUZZ_SANITIZER:-none}
target_dir=${FUZZ_TARGET_DIR:-fuzz/target}
cargo_fuzz_version=0.13.2

if [ ! -x .tools/bin/cargo-fuzz ]; then
  echo "== installing cargo-fuzz $cargo_fuzz_version into .tools/ =="
  cargo install cargo-fuzz --locked --version "$cargo_fuzz_version" --root .tools
fi
export RUSTC_BOOTSTRAP=1

echo "== building the fuzz targets (sanitizer: $sanitizer) =="
mkdir -p .tmp
started=$(date +%s)
for t in "${targets[@]}"; do
  if ! .tools/bin/cargo-fuzz build -s "$sanitizer" --target-dir "$target_dir" "$t" > .tmp/fuzz-build.log 2>&1; then
    cat .tmp/fuzz-build.log >&2
    exit 1
  fi
done
echo "built in $(( $(date +%s) - started )) s"

failed=()
for t in "${targets[@]}"; do
  echo "== fuzzing $t for ${seconds} s =="
  mkdir -p ".tmp/fuzz-corpus/$t" "fuzz/artifacts/$t"
  if ! .tools/bin/cargo-fuzz run -s "$sanitizer" --target-dir "$target_dir" "$t" \
      ".tmp/fuzz-corpus/$t" "fuzz/corpus/$t" -- \
      -max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048 \
      -print_final_stats=1 2> ".tmp/fuzz-$t.log"; then
    failed+=("$t")
    tail -n 40 ".tmp/fuzz-$t.log"
  fi
  grep -E '^stat::(number_of_executed_units|average_exec_per_sec|new_units_added)|^Done|^INFO: -max_total_time' ".tmp/fuzz-$t.log" || true
done

if [ ${#failed[@]} -gt 0 ]; then
  echo "fuzzing found failures in: ${failed[*]} (inputs under fuzz/artifacts/, logs in .tmp/fuzz-*.log)" >&2
  exit 1
fi
echo "fuzzing: no failure in ${targets[*]}"

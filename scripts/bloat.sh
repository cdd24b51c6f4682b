#!/usr/bin/env bash
# Prints, for each Lambda function, the crates that take the most room in its
# release binary (`cargo bloat --crates`: the .text each crate's code adds
# after LTO), so a size regression can be traced to its crate.
#
#   scripts/bloat.sh                 # every function, top 15 crates
#   scripts/bloat.sh 25 sender api   # top 25, these functions only
#
# The release profile strips symbols, which cargo-bloat needs, so it builds
# the `bloat` profile (Cargo.toml: release with symbols) into its own
# directory of the target dir; the shipped binaries are not touched. Built
# per function (`-p`), as `make bench` and cargo-lambda build them, so the
# features are the ones each function ships with.
# cargo-bloat is installed into .tools/ on first use.
set -euo pipefail
cd "$(dirname "$0")/.."

top=${1:-15}
shift || true
if [ $# -gt 0 ]; then
  functions=("$@")
else
  functions=(api inbound fanout sender sweeper)
fi
for name in "${functions[@]}"; do
  if [ ! -f "functions/$name/Cargo.toml" ]; then
    echo "bloat: no function '$name' (expected functions/$name/Cargo.toml)" >&2
    exit 2
  fi
done
cargo_bloat_version=0.12.1

if [ ! -x .tools/bin/cargo-bloat ]; then
  echo "== installing cargo-bloat $cargo_bloat_version into .tools/ =="
  cargo install cargo-bloat --locked --version "$cargo_bloat_version" --root .tools
fi

for name in "${functions[@]}"; do
  echo "== $name: top $top crates by code size (cargo bloat --crates, profile bloat) =="
  .tools/bin/cargo-bloat bloat --profile bloat -p "webhooks-fn-$name" --bin "$name" \
    --crates -n "$top" --message-format table 2>&1 |
    grep -v '^\s*\(Compiling\|Finished\|Analyzing\|Blocking\)'
  echo
done

#!/usr/bin/env bash
# Makes the toolchain pinned in rust-toolchain.toml available under its name
# when the machine's stable toolchain is that version (a machine with only
# `stable` installed would otherwise try to download it, and cannot).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v rustup >/dev/null 2>&1 || exit 0
want=$(sed -n 's/^channel = "\(.*\)"$/\1/p' rust-toolchain.toml)
if rustup toolchain list | grep -q "^$want"; then
  exit 0
fi
sysroot=$(RUSTUP_TOOLCHAIN=stable rustc --print sysroot)
have=$(RUSTUP_TOOLCHAIN=stable rustc --version | awk '{print $2}')
if [ "$have" != "$want" ]; then
  echo "rust-toolchain.toml pins $want but this machine's stable toolchain is $have" >&2
  exit 1
fi
rustup toolchain link "$want" "$sysroot"
echo "toolchain $want linked to the machine's stable toolchain"

#!/usr/bin/env bash
# Builds the Lambda functions' release binaries with cargo-lambda and zips each
# one for deployment, then prints every function's binary and zip size.
#
#   scripts/build-lambdas.sh              # every function, for arm64 (Graviton)
#   scripts/build-lambdas.sh api sender   # only these
#   NATIVE=1 scripts/build-lambdas.sh     # for the host's architecture instead
#
# Output: <target dir>/lambda/<name>/bootstrap and .../bootstrap.zip, the
# layout cargo-lambda and SAM use. cargo-lambda and zig come from PyPI
# (requirements-lambda.txt) and are installed into .venv (or $VENV) first.
# Extra flags for `cargo lambda build` can be given in CARGO_LAMBDA_FLAGS.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

ALL_FUNCTIONS=(api inbound fanout sender sweeper)
if (($# > 0)); then
    FUNCTIONS=("$@")
else
    FUNCTIONS=("${ALL_FUNCTIONS[@]}")
fi
for name in "${FUNCTIONS[@]}"; do
    if [[ ! -f "functions/$name/Cargo.toml" ]]; then
        echo "build-lambdas: no function '$name' (expected functions/$name/Cargo.toml)" >&2
        exit 2
    fi
done

# --- tools ------------------------------------------------------------------
VENV="${VENV:-$ROOT/.venv}"
if [[ ! -x "$VENV/bin/python" ]]; then
    echo "==> creating $VENV"
    "${PYTHON:-python3}" -m venv "$VENV"
fi
echo "==> installing requirements-lambda.txt into $VENV"
"$VENV/bin/python" -m pip install --disable-pip-version-check --quiet -r "$ROOT/requirements-lambda.txt"

export PATH="$VENV/bin:$PATH"
# cargo-zigbuild (inside cargo-lambda) runs `python -m ziglang` from this Python.
export CARGO_ZIGBUILD_PYTHON_PATH="$VENV/bin/python"
echo "==> $(cargo-lambda --version 2>/dev/null || cargo lambda --version), zig $("$VENV/bin/python" -m ziglang version)"

# --- target -----------------------------------------------------------------
BUILD_FLAGS=(--release)
if [[ "${NATIVE:-0}" == "1" ]]; then
    echo "==> NATIVE=1: building for $(uname -m), not arm64 (the stack's functions run on arm64)"
else
    BUILD_FLAGS+=(--arm64)
    arm_target="aarch64-unknown-linux-gnu"
    if command -v rustup >/dev/null 2>&1 && ! rustup target list --installed | grep -qx "$arm_target"; then
        echo "==> adding Rust target $arm_target"
        if ! rustup target add "$arm_target"; then
            echo "build-lambdas: cannot install the $arm_target Rust target; run with NATIVE=1 to build for this machine" >&2
            exit 1
        fi
    fi
fi
# --package keeps the build to the functions' own crates, so features that
# only webhooks dev and the tests turn on (webhooks-aws/dev) stay out.
for name in "${FUNCTIONS[@]}"; do
    BUILD_FLAGS+=(--package "webhooks-fn-$name" --bin "$name")
done
# shellcheck disable=SC2206 # word splitting of the extra flags is intended
BUILD_FLAGS+=(${CARGO_LAMBDA_FLAGS:-})

# --- build ------------------------------------------------------------------
echo "==> cargo lambda build ${BUILD_FLAGS[*]}"
cargo lambda build "${BUILD_FLAGS[@]}"

TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
LAMBDA_DIR="$TARGET_DIR/lambda"

# --- zip --------------------------------------------------------------------
# One executable entry named bootstrap, with a fixed timestamp so that the same
# binary always gives the same zip (and the same hash).
zip_bootstrap() {
    "$VENV/bin/python" - "$1" "$2" <<'PY'
import sys, zipfile
binary, archive = sys.argv[1], sys.argv[2]
entry = zipfile.ZipInfo("bootstrap", date_time=(1980, 1, 1, 0, 0, 0))
entry.external_attr = 0o100755 << 16
entry.compress_type = zipfile.ZIP_DEFLATED
with open(binary, "rb") as f, zipfile.ZipFile(archive, "w") as z:
    z.writestr(entry, f.read(), compresslevel=9)
PY
}

# Size in bytes; `wc -c` works alike on GNU, BSD and busybox (`stat -c` is GNU's).
bytes() {
    wc -c <"$1" | tr -d ' '
}

human() {
    awk -v b="$1" 'BEGIN { if (b >= 1048576) printf "%.2f MiB", b / 1048576; else printf "%.1f KiB", b / 1024 }'
}

rows=()
for name in "${FUNCTIONS[@]}"; do
    binary="$LAMBDA_DIR/$name/bootstrap"
    archive="$LAMBDA_DIR/$name/bootstrap.zip"
    if [[ ! -f "$binary" ]]; then
        echo "build-lambdas: cargo lambda did not produce $binary" >&2
        exit 1
    fi
    rm -f "$archive"
    zip_bootstrap "$binary" "$archive"
    rows+=("$name $(bytes "$binary") $(bytes "$archive")")
done

# --- report -----------------------------------------------------------------
echo
printf '%-10s %14s %12s %14s %12s\n' function "binary bytes" binary "zip bytes" zip
printf '%-10s %14s %12s %14s %12s\n' -------- ------------ ------ --------- ---
for row in "${rows[@]}"; do
    read -r name binary_size zip_size <<<"$row"
    printf '%-10s %14d %12s %14d %12s\n' "$name" "$binary_size" "$(human "$binary_size")" \
        "$zip_size" "$(human "$zip_size")"
done
echo
echo "zips: $LAMBDA_DIR/<function>/bootstrap.zip"

#!/usr/bin/env bash
# The deploy path's build, as the test command runs it: `sam validate --lint`
# and `sam build` of every function of infra/template.yaml with the SAM CLI and
# cargo-lambda pinned in .venv (requirements-test.txt), then a check of each
# function's built artifact. Needs no AWS account and no network.
#
#   scripts/sam-build.sh                      # x86_64
#   SAM_ARCHITECTURE=arm64 scripts/sam-build.sh
#
# SAM_ARCHITECTURE (arm64 or x86_64, default x86_64) becomes the template's
# Architecture parameter. The stack deploys arm64 by default, but building it
# needs the aarch64-unknown-linux-gnu Rust target, which comes from the Rust
# toolchain server, not a package registry: cargo-lambda would download it
# (`rustup target add`) in the middle of the test command. x86_64 builds with
# the host's toolchain alone; SAM_ARCHITECTURE=arm64 is for machines that have
# the target (cargo-lambda cross-compiles with the pinned ziglang).
# CARGO_TARGET_DIR is honoured: SAM's cargo-lambda builder compiles into it and
# copies each binary out of <target dir>/lambda/<name>/bootstrap.
# Release builds with LTO: several minutes per function on two cores.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

scripts/venv.sh
VENV="$ROOT/.venv"
export PATH="$VENV/bin:$PATH"
# cargo-zigbuild (inside cargo-lambda) runs `python -m ziglang` with this Python
# when it cross-compiles.
export CARGO_ZIGBUILD_PYTHON_PATH="$VENV/bin/python"
# No telemetry or update checks from a test run; a region for the translator
# (nothing is called in it).
export SAM_CLI_TELEMETRY=0
export AWS_DEFAULT_REGION="${AWS_DEFAULT_REGION:-us-east-1}"

FUNCTIONS=(ApiFunction:api InboundFunction:inbound FanoutFunction:fanout SenderFunction:sender SweeperFunction:sweeper)
BUILD_DIR="$ROOT/infra/.aws-sam/build" # samconfig.toml's build_dir

arch="${SAM_ARCHITECTURE:-x86_64}"
if [[ "$arch" == x86_64 ]]; then
    echo "==> building for x86_64 (the stack's default is arm64: deploy this build with Architecture=x86_64)"
fi
case "$arch" in
    arm64) elf_machine=183 ;;  # EM_AARCH64
    x86_64) elf_machine=62 ;;  # EM_X86_64
    *) echo "sam-build: SAM_ARCHITECTURE must be arm64 or x86_64, not '$arch'" >&2; exit 2 ;;
esac

echo "==> $(sam --version), $(cargo-lambda --version 2>/dev/null || cargo lambda --version)"
echo "==> sam validate --lint"
sam validate --lint

# sam build compiles one function after another (samconfig.toml: parallel =
# false, since they share one Cargo target directory), and each release binary
# ends in a single-threaded LTO link. Compiling the five in one cargo-lambda
# run first, with the flags SAM's builder passes, lets cargo link two at a
# time; sam build's own cargo-lambda runs then find them up to date (same
# workspace-wide feature resolution, same flags) and only copy them.
# SAM_PREBUILD=0 leaves all the compiling to sam build.
start=$SECONDS
if [[ "${SAM_PREBUILD:-1}" != 0 ]]; then
    prebuild=(--release)
    [[ "$arch" == arm64 ]] && prebuild+=(--arm64)
    for entry in "${FUNCTIONS[@]}"; do
        prebuild+=(--bin "${entry#*:}")
    done
    echo "==> cargo lambda build ${prebuild[*]}"
    cargo lambda build "${prebuild[@]}"
    echo "==> compiled in $((SECONDS - start)) s"
fi

echo "==> sam build --parameter-overrides Architecture=$arch (CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-<workspace>/target})"
rm -rf "$BUILD_DIR"
sam_start=$SECONDS
sam build --parameter-overrides "Architecture=$arch"
echo "==> sam build took $((SECONDS - sam_start)) s ($((SECONDS - start)) s with the compile)"

# Where cargo put the binaries: <workspace>/target, or CARGO_TARGET_DIR.
CARGO_METADATA_TARGET_DIR="$(cargo metadata --format-version 1 --no-deps |
    "$VENV/bin/python" -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])')"
export CARGO_METADATA_TARGET_DIR

# Each function's artifact: an executable ELF `bootstrap` for the chosen
# architecture, linked against no glibc newer than provided.al2023's (2.34),
# in the directory the built template points the function at.
"$VENV/bin/python" - "$BUILD_DIR" "$elf_machine" "${FUNCTIONS[@]}" <<'PY'
import os, re, struct, sys
import yaml

build_dir, machine, functions = sys.argv[1], int(sys.argv[2]), sys.argv[3:]
AL2023_GLIBC = (2, 34)


class Loader(yaml.SafeLoader):
    pass


# The built template keeps CloudFormation's short-form tags (!Ref, !GetAtt...).
Loader.add_multi_constructor("!", lambda loader, suffix, node: None)
with open(os.path.join(build_dir, "template.yaml"), encoding="utf-8") as f:
    template = yaml.load(f, Loader=Loader)

failures = []
rows = []
target_dir = os.environ["CARGO_METADATA_TARGET_DIR"]
for entry in functions:
    logical_id, binary = entry.split(":")
    props = template["Resources"][logical_id]["Properties"]
    code_uri = props.get("CodeUri")
    if code_uri != logical_id:
        failures.append(f"{logical_id}: built template's CodeUri is {code_uri!r}, not {logical_id!r}")
    path = os.path.join(build_dir, logical_id, "bootstrap")
    if not os.path.isfile(path):
        failures.append(f"{logical_id}: no {path}")
        continue
    with open(path, "rb") as f:
        data = f.read()
    size = len(data)
    if data[:4] != b"\x7fELF":
        failures.append(f"{logical_id}: {path} is not an ELF executable")
        continue
    # SAM copied it from cargo-lambda's output in the Cargo target directory,
    # wherever CARGO_TARGET_DIR puts that.
    compiled = os.path.join(target_dir, "lambda", binary, "bootstrap")
    if not os.path.isfile(compiled) or open(compiled, "rb").read() != data:
        failures.append(f"{logical_id}: {path} is not the binary cargo-lambda built at {compiled}")
    (e_machine,) = struct.unpack_from("<H", data, 18)
    if e_machine != machine:
        failures.append(f"{logical_id}: {path} is for ELF machine {e_machine}, not {machine}")
    if not os.access(path, os.X_OK):
        failures.append(f"{logical_id}: {path} is not executable")
    versions = {tuple(int(p) for p in v.split(b".")) for v in re.findall(rb"GLIBC_(\d+\.\d+(?:\.\d+)?)", data)}
    newest = max(versions, default=(0,))
    if newest > AL2023_GLIBC:
        failures.append(f"{logical_id}: needs GLIBC_{'.'.join(map(str, newest))}, provided.al2023 has 2.34")
    rows.append((logical_id, binary, size, ".".join(map(str, newest))))

for logical_id, binary, size, glibc in rows:
    print(f"  {logical_id:16} {binary:8} {size:>10} bytes  newest glibc symbol {glibc}")
if failures:
    print("sam-build: " + "\n sam-build: ".join(failures), file=sys.stderr)
    sys.exit(1)
print(f"sam build: {len(rows)} functions built and checked in {build_dir}")
PY

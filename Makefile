# The two commands of README.md, and the pieces they are made of.
.PHONY: dev test test-rust test-infra sam-build portal-screenshots lint fmt build-lambdas bench

# The whole system in one process on the embedded backend.
dev:
	cargo run --release --bin webhooks -- dev

# Every test: Rust unit, handler and end-to-end tests (with a moto server on
# a free loopback port), `sam validate --lint` and `sam build` of every
# function, the template checks (also after the SAM transform), and cfn-lint.
test:
	scripts/test.sh

test-rust:
	scripts/with-moto.sh cargo test --workspace

# The portal's browser tests alone (Debian's chromium), refreshing the
# screenshots in docs/.
portal-screenshots:
	scripts/venv.sh
	scripts/chromium.sh
	cargo build --quiet -p webhooks --bin webhooks
	PORTAL_SCREENSHOT_DIR=docs .venv/bin/pytest tests/browser -q -p no:cacheprovider

test-infra:
	scripts/venv.sh
	.venv/bin/pytest tests/infra -q

# sam validate --lint and sam build, for x86_64 (SAM_ARCHITECTURE=arm64 where
# the aarch64 Rust target is installed), checking each artifact.
sam-build:
	scripts/sam-build.sh

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings
	python3 scripts/unused-deps.py

fmt:
	cargo fmt --all

# Builds every Lambda with cargo-lambda and prints each zip's size.
build-lambdas:
	scripts/build-lambdas.sh

# The benchmarks of BENCHMARKS.md (the per-function size table comes from
# `make bloat`, a release build of its own): release builds (the Lambdas alone, as
# they ship), every figure with moto on a free loopback port, then the plot.
# Writes target/bench/results.json and docs/bench-endpoints.png.
bench:
	cargo build --release --bins -p webhooks-fn-api -p webhooks-fn-inbound -p webhooks-fn-fanout -p webhooks-fn-sender -p webhooks-fn-sweeper
	cargo build --release -p webhooks-bench -p webhooks --bins
	scripts/with-moto.sh $${CARGO_TARGET_DIR:-target}/release/webhooks-bench all --out target/bench/results.json
	.venv/bin/pip install --quiet --disable-pip-version-check -r requirements-bench.txt
	.venv/bin/python scripts/plot_bench.py target/bench/results.json docs/bench-endpoints.png

# The top crates by code size in each Lambda's release binary (cargo bloat;
# installs it into .tools/ on first use). BLOAT_TOP crates per function.
.PHONY: bloat
BLOAT_TOP ?= 15
bloat:
	scripts/bloat.sh $(BLOAT_TOP)

# Where `webhooks dev` spends its CPU while delivering: a perf profile of
# the real binary under `webhooks-bench dev-rss` (PROFILE_DELIVERIES,
# PROFILE_ENDPOINTS), its top functions and crates by self time.
.PHONY: profile
PROFILE_DELIVERIES ?= 200000
PROFILE_ENDPOINTS ?= 1
profile:
	scripts/profile.sh $(PROFILE_DELIVERIES) $(PROFILE_ENDPOINTS)

# The deterministic simulation, longer than the test command runs it: 1 000
# seeds (SIM_SEEDS) of 20 000 deliveries, optimized. A failure prints each
# seed and the command that replays it.
.PHONY: sim-long
SIM_SEEDS ?= 1000
sim-long:
	cargo run --release -p webhooks-sim -- --seeds $(SIM_SEEDS) --deliveries 20000

# Fuzzing, longer than the test command runs it.
.PHONY: fuzz schemathesis
# cargo-fuzz on every parser of untrusted input, FUZZ_SECONDS (default 10)
# per target; installs cargo-fuzz into .tools/ on first use. The committed
# corpus also runs as regression tests in `make test` (tests/it/fuzz_corpus.rs).
FUZZ_SECONDS ?= 10
fuzz:
	scripts/fuzz.sh $(FUZZ_SECONDS)

# schemathesis (requirements-fuzz.txt) against `webhooks dev`, driven by
# docs/openapi.yaml: no 5xx. MAX_EXAMPLES=200 for a longer run.
schemathesis:
	scripts/schemathesis.sh

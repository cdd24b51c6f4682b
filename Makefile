# The two commands of README.md, and the pieces they are made of.
.PHONY: dev test test-rust test-infra lint fmt build-lambdas bench

# The whole system in one process on the embedded backend.
dev:
	cargo run --release --bin webhooks -- dev

# Every test: Rust unit, handler and end-to-end tests (with a moto server on
# a free loopback port), the template checks, and cfn-lint.
test:
	scripts/test.sh

test-rust:
	scripts/with-moto.sh cargo test --workspace

test-infra:
	scripts/venv.sh
	.venv/bin/pytest tests/infra -q

lint:
	cargo fmt --all -- --check
	cargo clippy --workspace --all-targets -- -D warnings

fmt:
	cargo fmt --all

# Builds every Lambda with cargo-lambda and prints each zip's size.
build-lambdas:
	scripts/build-lambdas.sh

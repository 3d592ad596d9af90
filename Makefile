# templar-rs entry points. Every target sources scripts/setup.sh, which installs what is
# missing (torch virtualenv, later Garage and Python test tools) into ~/.cache/templar-rs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
SETUP := source scripts/setup.sh
STEPS ?= 30
HPARAMS ?= hparams/small.toml

.PHONY: demo test lint unit bench-codec setup

setup:
	$(SETUP)

## The main job on the embedded default corpus.
demo:
	$(SETUP) && cargo run -q -p templar-node -- train --hparams $(HPARAMS) --steps $(STEPS)

## Everything CI checks: formatting, clippy, all tests.
test: lint unit

lint:
	$(SETUP) && cargo fmt --all -- --check && cargo clippy --workspace --all-targets -- -D warnings

unit:
	$(SETUP) --garage && scripts/run-tests.sh

bench-codec:
	$(SETUP) && cargo run -q -p templar-node -- bench codec --model 150M --json

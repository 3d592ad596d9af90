# templar-rs entry points. Every target sources scripts/setup.sh, which installs what is
# missing (torch virtualenv, later Garage and Python test tools) into ~/.cache/templar-rs.
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
SETUP := source scripts/setup.sh
MINERS ?= 3
WINDOWS ?= 10
HPARAMS ?= hparams/devnet.toml
STEPS ?= 30

.PHONY: demo devnet train test lint unit bench-codec bench-train bench-operator crds setup images e2e-cluster

setup:
	$(SETUP)

## The main job: a local network (miners + validator) on the embedded corpus.
## S3=1 runs it against the S3 endpoint in TEMPLAR_S3_* (see README).
demo:
	$(SETUP) && cargo build -q -p templar-node && \
	  "$$CARGO_TARGET_DIR/debug/templar-node" devnet --miners $(MINERS) --windows $(WINDOWS) \
	    --hparams $(HPARAMS) $(if $(S3),--s3,)

devnet: demo

## One node training alone (no network).
train:
	$(SETUP) && cargo run -q -p templar-node -- train --hparams hparams/small.toml --steps $(STEPS)

## Everything CI checks: formatting, clippy, all tests.
test: lint unit

lint:
	$(SETUP) && cargo fmt --all -- --check && scripts/check-crate-graph.sh && \
	  cargo clippy --workspace --all-targets -- -D warnings

unit:
	$(SETUP) --garage --pytools && scripts/run-tests.sh

## The codec (release build, CPU) next to the plain-PyTorch baseline on the same shapes.
bench-codec:
	$(SETUP) && cargo build -q --release -p templar-node && \
	  scripts/bench/codec-vs-pytorch.sh "$$CARGO_TARGET_DIR/release/templar-node" --model 150M

## Training throughput and MFU (release build; on a GPU: scripts/gpu-check.sh).
bench-train:
	$(SETUP) && cargo run -q --release -p templar-node -- bench train --model tiny --seq 256 --json

## The operator's pure pipeline over 1000 generated resources (throughput, peak RSS).
bench-operator:
	$(SETUP) && cargo run -q --release -p templar-operator -- bench --crs 1000 --json

## Regenerate the checked-in CRD YAML from the types (and the chart's copy).
crds:
	$(SETUP) && cargo run -q -p templar-operator -- crd > crds/templar.tplr.ai.yaml && \
	  cp crds/templar.tplr.ai.yaml charts/templar-operator/crds/templar.tplr.ai.yaml

## Container images of the node and the operator (needs docker or podman; none runs on the
## project's CI machines, where e2e/tests/images.rs checks the Dockerfiles instead).
CONTAINER_ENGINE ?= $(shell command -v docker || command -v podman)
IMAGE_REPO ?= ghcr.io/templar-rs
VERSION := $(shell sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
images:
	@if [ -z "$(CONTAINER_ENGINE)" ]; then \
	  echo "make images: no container engine (docker or podman) on this machine" >&2; exit 2; fi
	$(CONTAINER_ENGINE) build -f images/node/Dockerfile -t $(IMAGE_REPO)/templar-node:$(VERSION) .
	$(CONTAINER_ENGINE) build -f images/operator/Dockerfile -t $(IMAGE_REPO)/templar-operator:$(VERSION) .

## The cluster suite against the current kube context (kind or k3d; see e2e/README.md).
e2e-cluster:
	$(SETUP) && cargo test -p templar-e2e --test cluster -- --ignored --nocapture

#!/usr/bin/env bash
# Runs the whole test suite (expects scripts/setup.sh to have been sourced).
set -euo pipefail
# Tests share 2 cores with libtorch's own threads: one intra-op thread per test process.
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
export TEMPLAR_DEVICE="${TEMPLAR_DEVICE:-cpu}"
if cargo nextest --version >/dev/null 2>&1; then
  cargo nextest run --workspace --no-fail-fast --test-threads 2 "$@"
else
  cargo test --workspace --no-fail-fast "$@"
fi

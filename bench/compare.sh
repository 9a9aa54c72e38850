#!/usr/bin/env bash
# bench/compare.sh — qkv beside PyTorch on the same shapes, alternating, with medians and ratios:
# GPT-2 124M training (B=4, T=64 and 256), the small char model, prompt forward and KV-cache decode,
# attention alone up to T=8192. Takes about 20 minutes on 2 cores (--quick: about 8).
#
#   bash scripts/install-deps.sh --bench   # once: also OpenBLAS, without which PyTorch's GEMM is the slow reference BLAS
#   bash bench/compare.sh [--quick] [--cases train64,infer] [--rounds N] [--out results.json]
#
# Builds qkv first if build/qkv is missing. Everything else: bench/compare.py --help.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ ! -x build/qkv ]; then
    cmake -S . -B build -DCMAKE_BUILD_TYPE=Release
    cmake --build build -j
fi
exec /usr/bin/python3 bench/compare.py "$@"

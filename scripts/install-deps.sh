#!/usr/bin/env bash
# install-deps.sh — installs every system package qkv needs on Debian/Ubuntu (apt-get), nothing else.
# Why each one is in docs/ARCHITECTURE.md ("Dependencies"). Safe to run again; uses sudo when not root.
# --bench adds what bench/compare.sh needs to measure PyTorch at its best: OpenBLAS (without it Debian's
# torch multiplies matrices with the reference BLAS, ~30x slower). qkv itself never uses a BLAS.
set -euo pipefail
pkgs=(
    build-essential   # gcc (C11 compiler, libgomp for OpenMP threads), make
    g++               # the public headers are compiled as C++ in the tests too
    cmake             # the build
    pkg-config        # how CMake finds PCRE2
    libpcre2-dev      # PCRE2 regex with Unicode classes: GPT-2's pre-tokenisation pattern (src/text/bpe.c)
    python3-torch     # PyTorch 1.13: the committed golden-file scripts (tests only, never at run time)
    python3-numpy     # used by those scripts to write golden files
)
if [ "${1:-}" = "--bench" ]; then
    pkgs+=(libopenblas0-openmp) # PyTorch's GEMM in bench/compare.sh (chosen there by LD_LIBRARY_PATH)
elif [ $# -gt 0 ]; then
    echo "install-deps: unknown option '$1' (the only one is --bench)" >&2
    exit 2
fi
if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
missing=()
for p in "${pkgs[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -eq 0 ]; then
    echo "install-deps: all packages present"
    exit 0
fi
echo "install-deps: installing ${missing[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}"

#!/usr/bin/env bash
# bench/llama_setup.sh — the llama.cpp side of bench/compare.sh: builds llama.cpp's own `llama-bench` from
# source on this machine and writes a random-weight GPT-2 124M float32 model for it, so that compare.sh can
# run `llama-bench -p 64 -n 128` beside qkv and PyTorch in the same run (the anchor measure of
# ../shared/bench/README.md, which was taken with llama.cpp built here from source).
#
#   bash bench/llama_setup.sh          # once, about 5 minutes on 2 cores; then bash bench/compare.sh
#
# Where the source comes from: only Debian and npm are reachable here, and the npm package node-llama-cpp
# carries the llama.cpp source it was released with as a git bundle (llama/gitRelease.bundle). This script
# fetches that one tarball with `npm pack` (no dependencies, no install scripts, nothing prebuilt is used:
# node-llama-cpp's prebuilt CPU binaries measured 2.5x slower than a native build here), clones the bundle
# and builds the llama-bench target with cmake, -DGGML_NATIVE=ON (AVX-512 on this machine) and OpenMP.
# Everything goes to bench/.llama/ (git-ignored): src/, build/, gpt2-124m-f32.gguf (bench/make_gguf.py).
# Idempotent: what is already there is kept. Needs git, cmake, a C++ compiler, npm and python3-numpy.
set -euo pipefail
cd "$(dirname "$0")/.."
VERSION=3.22.1 # node-llama-cpp release whose bundled llama.cpp source is built
DIR=bench/.llama
BENCH=$DIR/build/bin/llama-bench
MODEL=$DIR/gpt2-124m-f32.gguf

die() { echo "llama_setup.sh: $*" >&2; exit 1; }
for t in git cmake c++ npm; do command -v "$t" >/dev/null || die "$t not found"; done
mkdir -p "$DIR"

if [ -x "$BENCH" ]; then
    echo "llama_setup.sh: $BENCH already built"
else
    if [ ! -d "$DIR/src/.git" ]; then
        echo "llama_setup.sh: npm pack node-llama-cpp@$VERSION (for its llama.cpp source bundle)"
        rm -rf "$DIR/pack" && mkdir -p "$DIR/pack"
        (cd "$DIR/pack" && npm pack --silent "node-llama-cpp@$VERSION" >/dev/null) || die "npm pack failed"
        tar -xzf "$DIR"/pack/node-llama-cpp-"$VERSION".tgz -C "$DIR/pack" package/llama/gitRelease.bundle \
            package/llama/llama.cpp.info.json || die "no llama/gitRelease.bundle in node-llama-cpp $VERSION"
        rm -rf "$DIR/src"
        git clone --quiet "$DIR/pack/package/llama/gitRelease.bundle" "$DIR/src" || die "git clone of the bundle failed"
        cp "$DIR/pack/package/llama/llama.cpp.info.json" "$DIR/src/.node-llama-cpp-info.json"
        rm -rf "$DIR/pack"
    fi
    echo "llama_setup.sh: building llama-bench from $DIR/src ($(git -C "$DIR/src" log --oneline -1 | cut -c1-7), $(tr -d ' \n' < "$DIR/src/.node-llama-cpp-info.json"))"
    cmake -S "$DIR/src" -B "$DIR/build" -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DGGML_OPENMP=ON \
        -DLLAMA_CURL=OFF -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=OFF \
        >"$DIR/cmake.log" 2>&1 || die "cmake configure failed: see $DIR/cmake.log"
    cmake --build "$DIR/build" --target llama-bench -j "$(nproc)" >"$DIR/build.log" 2>&1 \
        || die "build failed: see $DIR/build.log"
    [ -x "$BENCH" ] || die "build finished but $BENCH is missing"
    echo "llama_setup.sh: built $BENCH"
fi

if [ -f "$MODEL" ]; then
    echo "llama_setup.sh: $MODEL already there"
else
    /usr/bin/python3 bench/make_gguf.py "$MODEL" || die "make_gguf.py failed"
fi

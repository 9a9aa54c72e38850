#!/usr/bin/env bash
# test.sh — builds qkv with warnings as errors and runs the whole test suite (CTest), PyTorch goldens
# regenerated first by the committed scripts. The README's test command.
#   QKV_SANITIZE=1 scripts/test.sh    same with AddressSanitizer + UndefinedBehaviorSanitizer (build-asan/)
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "${QKV_SANITIZE:-0}" = 1 ]; then
    dir=build-asan
    cfg=(-DQKV_SANITIZE=ON -DCMAKE_BUILD_TYPE=RelWithDebInfo)
    # Leak checking is on; UBSan stops at the first error so a report can never be missed.
    export ASAN_OPTIONS=detect_leaks=1:abort_on_error=0 UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1
else
    dir=build
    cfg=(-DCMAKE_BUILD_TYPE=Release)
fi
cmake -S . -B "$dir" -DQKV_WERROR=ON "${cfg[@]}" > /dev/null
cmake --build "$dir" -j"$(nproc)"
ctest --test-dir "$dir" --output-on-failure -j1 "$@"

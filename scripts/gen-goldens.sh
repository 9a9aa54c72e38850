#!/usr/bin/env bash
# gen-goldens.sh DIR — regenerates every PyTorch golden file into DIR by running the committed
# scripts tests/torch/gen_*.py with Debian's python3-torch (/usr/bin/python3). Goldens are never
# committed: they are made fresh on every test run, so none can be stale.
# Exit 77 (skipped) when PyTorch is not installed; the tests that need goldens then skip loudly.
set -euo pipefail
dir=${1:-build/golden}
here=$(cd "$(dirname "$0")/.." && pwd)
py=${QKV_PYTHON:-/usr/bin/python3}
if ! "$py" -c "import torch" 2>/dev/null; then
    echo "*** SKIPPED: $py cannot import torch (sudo apt-get install python3-torch); PyTorch parity tests will skip ***" >&2
    exit 77
fi
mkdir -p "$dir"
for s in "$here"/tests/torch/gen_*.py; do
    [ -e "$s" ] || continue
    echo "goldens: $(basename "$s")"
    "$py" "$s" "$dir"
done
echo "goldens written to $dir"

#!/usr/bin/env bash
# demo.sh — the main job: train a small GPT on this repository's own C sources (code autocomplete),
# about 3 minutes on 2 cores, then let it complete a line of C. Needs nothing but the built qkv.
#   bash scripts/demo.sh [OUT]      (default OUT: runs/code-demo; a second run starts afresh)
# Writes OUT/model.safetensors + config.json + tokenizer, OUT/log.jsonl, OUT/loss.svg, checkpoints.
set -euo pipefail
cd "$(dirname "$0")/.."
qkv=${QKV:-./build/qkv}
out=${1:-runs/code-demo}
if [ ! -x "$qkv" ]; then
    echo "demo.sh: $qkv not found; build first: cmake -S . -B build && cmake --build build -j" >&2
    exit 1
fi
echo "== training a 4-layer GPT on src/ and include/ (the .c and .h files of this repository) =="
"$qkv" train --preset code-demo --data src --data include --ext .c,.h --out "$out" --overwrite
echo
echo "== completing C from the trained model =="
for prompt in 'static int ' 'qkv_tensor *'; do
    "$qkv" generate --model "$out" --prompt "$prompt" --max-new-tokens 120 --temperature 0.8 --top-k 40 --seed 1
    echo; echo "--"
done
echo "loss curve: $out/loss.svg   training log: $out/log.jsonl   model: $out/ (Hugging Face GPT-2 layout)"

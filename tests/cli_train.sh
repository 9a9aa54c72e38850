#!/usr/bin/env bash
# cli_train.sh — `qkv train` the way a user runs it: a tiny model on a generated text, exact resume
# (log.jsonl losses and model.safetensors bytes compared with cmp), fine-tuning with --init, and every
# kind of bad input: exit status non-zero, exactly one line on stderr naming the file or flag, no
# crash, and no output folder left behind.
# Usage: bash tests/cli_train.sh /path/to/qkv     (exit 0 pass, 1 fail)
set -u
QKV=${1:?usage: cli_train.sh /path/to/qkv}
T=$(mktemp -d /tmp/qkv_cli_train.XXXXXX)
trap 'rm -rf "$T"' EXIT
fails=0
checks=0
ok() { checks=$((checks + 1)); echo "ok   $1"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL $1"; }

# A small text with structure (a tiny model learns it in a few steps).
python3 - "$T/data.txt" <<'EOF' 2>/dev/null || awk 'BEGIN { srand(3); split("the cat|a dog|my bird|the fox", s, "|"); split("sees|likes|eats", v, "|"); split("the hat.|a ball.|some corn.", o, "|"); for (i = 0; i < 500; i++) print s[int(rand()*4)+1], v[int(rand()*3)+1], o[int(rand()*3)+1] }' > "$T/data.txt"
import random, sys
random.seed(3)
s = ["the cat", "a dog", "my bird", "the fox"]; v = ["sees", "likes", "eats"]; o = ["the hat.", "a ball.", "some corn."]
with open(sys.argv[1], "w") as f:
    for _ in range(500):
        f.write(f"{random.choice(s)} {random.choice(v)} {random.choice(o)}\n")
EOF

TINY=(--tokenizer chars --n-layer 1 --n-head 2 --n-embd 16 --block-size 16 --batch-size 4 --grad-accum 2
      --steps 12 --eval-every 4 --eval-batches 2 --save-every 4 --seed 7 --dropout 0.1 --lr 3e-3
      --warmup-steps 2 --weight-decay 0.1 --quiet)

# ---- --help ----
help=$("$QKV" train --help)
rc=$?
n_flags=$(printf '%s\n' "$help" | grep -c '^  --[a-z]')
n_defaults=$(printf '%s\n' "$help" | grep -c '(default:')
if [ $rc -eq 0 ] && [ "$n_flags" -ge 30 ] && [ "$n_defaults" -eq $((n_flags - 1)) ]; then
    ok "--help lists $n_flags flags, each (but --help) with its default"
else
    bad "--help: rc $rc, $n_flags flags, $n_defaults defaults"
fi
for f in data ext val-fraction tokenizer init n-layer n-head n-embd block-size dropout lr lr-schedule warmup-steps \
         weight-decay beta1 beta2 max-grad-norm steps epochs batch-size grad-accum seed eval-every eval-batches \
         save-every log-every time-limit out resume preset; do
    printf '%s\n' "$help" | grep -q -- "--$f" || bad "--help does not mention --$f"
done

# ---- a run, then the same run interrupted and resumed ----
"$QKV" train --data "$T/data.txt" --out "$T/full" "${TINY[@]}" > "$T/full.stdout" 2> "$T/full.stderr"
rc=$?
if [ $rc -eq 0 ] && [ -f "$T/full/model.safetensors" ] && [ -f "$T/full/config.json" ] && [ -f "$T/full/vocab.json" ] &&
   [ -f "$T/full/checkpoint-12/optimizer.safetensors" ] && [ -f "$T/full/checkpoint-8/trainer_state.json" ] &&
   [ -f "$T/full/loss.svg" ] && [ -f "$T/full/tokens.bin" ]; then
    ok "training run wrote the model, checkpoints 4/8/12, loss.svg and tokens.bin"
else
    bad "training run: rc $rc: $(cat "$T/full.stderr")"
fi
n_steps=$(grep -c '"loss"' "$T/full/log.jsonl" 2>/dev/null)
n_evals=$(grep -c '"eval_loss"' "$T/full/log.jsonl" 2>/dev/null)
[ "$n_steps" = 12 ] && [ "$n_evals" = 3 ] && ok "log.jsonl: 12 step lines, 3 eval lines" ||
    bad "log.jsonl: $n_steps step lines, $n_evals eval lines"
grep -q '"step":1,"loss":.*"grad_norm":.*"learning_rate":.*"epoch":.*"tokens_per_sec":' "$T/full/log.jsonl" &&
    ok "log.jsonl step lines carry loss, grad_norm, learning_rate, epoch, tokens_per_sec" || bad "log.jsonl fields"
pts=$(grep -o 'points="[^"]*"' "$T/full/loss.svg" | tr ' ' '\n' | grep -c ',')
grep -q '<svg' "$T/full/loss.svg" && grep -q '</svg>' "$T/full/loss.svg" && [ "$pts" = 12 ] &&
    ok "loss.svg: one polyline point per logged step ($pts)" || bad "loss.svg: $pts points"
grep -q '^model: ' "$T/full.stdout" && ok "summary line on stdout" || bad "no summary line on stdout"

"$QKV" train --data "$T/data.txt" --out "$T/part" "${TINY[@]}" --stop-after 5 2> "$T/part.stderr" > /dev/null
rc1=$?
"$QKV" train --resume --out "$T/part" --quiet > /dev/null 2>> "$T/part.stderr"   # every option from the checkpoint
rc2=$?
grep -o '"loss":[^,]*' "$T/full/log.jsonl" > "$T/full.losses"
grep -o '"loss":[^,]*' "$T/part/log.jsonl" > "$T/part.losses"
if [ $rc1 -eq 0 ] && [ $rc2 -eq 0 ] && cmp -s "$T/full.losses" "$T/part.losses" &&
   cmp -s "$T/full/model.safetensors" "$T/part/model.safetensors"; then
    ok "stop after 5 + --resume: identical losses (12 lines) and model.safetensors (cmp)"
else
    bad "resume: rc $rc1/$rc2, $(cat "$T/part.stderr")"
    diff "$T/full.losses" "$T/part.losses" | head -5
fi
sed 's/,"tokens_per_sec":[^}]*//' "$T/full/log.jsonl" > "$T/a.log"
sed 's/,"tokens_per_sec":[^}]*//' "$T/part/log.jsonl" > "$T/b.log"
cmp -s "$T/a.log" "$T/b.log" && ok "resumed log.jsonl equals the uninterrupted one (but tokens_per_sec)" ||
    bad "resumed log.jsonl differs"

# resume from an older checkpoint of a finished run (log lines past it are dropped and redone)
cp -r "$T/full" "$T/again"
rm -rf "$T/again/checkpoint-12"
"$QKV" train --resume "$T/again/checkpoint-8" --quiet > /dev/null 2> "$T/again.stderr"
rc=$?
sed 's/,"tokens_per_sec":[^}]*//' "$T/again/log.jsonl" > "$T/c.log"
[ $rc -eq 0 ] && cmp -s "$T/a.log" "$T/c.log" && cmp -s "$T/full/model.safetensors" "$T/again/model.safetensors" &&
    ok "--resume DIR/checkpoint-8 of a finished run: same log and model" || bad "resume from checkpoint-8: $(cat "$T/again.stderr")"

# ---- Ctrl-C: the step finishes, a checkpoint is saved, exit 130; --resume finishes like an uninterrupted run ----
SIG=(--data "$T/data.txt" --tokenizer chars --n-layer 1 --n-head 2 --n-embd 32 --block-size 32 --batch-size 8
     --steps 800 --eval-every 0 --save-every 0 --seed 3 --quiet)
"$QKV" train "${SIG[@]}" --out "$T/sig" > /dev/null 2> "$T/sig.stderr" &
pid=$!
for _ in $(seq 500); do   # signal once the loop runs (the first step line is in the log)
    [ -s "$T/sig/log.jsonl" ] && break
    sleep 0.01
done
kill -INT $pid 2> /dev/null
wait $pid
rc=$?
if [ $rc -eq 0 ]; then
    echo "skip Ctrl-C check: the run finished before the signal arrived"
else
    k=$(grep -c '"loss"' "$T/sig/log.jsonl")
    [ $rc -eq 130 ] && [ -d "$T/sig/checkpoint-$k" ] && [ "$k" -lt 800 ] && grep -q 'interrupted' "$T/sig.stderr" &&
        ok "Ctrl-C after step $k: exit 130, checkpoint-$k saved" || bad "Ctrl-C: rc $rc, $k steps: $(cat "$T/sig.stderr")"
    "$QKV" train --resume --out "$T/sig" > /dev/null 2>&1
    "$QKV" train "${SIG[@]}" --out "$T/nosig" > /dev/null 2>&1
    grep -o '"loss":[^,]*' "$T/sig/log.jsonl" > "$T/sig.losses"
    grep -o '"loss":[^,]*' "$T/nosig/log.jsonl" > "$T/nosig.losses"
    cmp -s "$T/sig.losses" "$T/nosig.losses" && cmp -s "$T/sig/model.safetensors" "$T/nosig/model.safetensors" &&
        ok "resumed after Ctrl-C: same 800 losses and model as an uninterrupted run" || bad "resume after Ctrl-C differs"
fi

# ---- generate from the trained model (the command of another module; checks OUT is a model dir) ----
gen=$("$QKV" generate --model "$T/full" --prompt "the " --max-new-tokens 8 2> "$T/gen.stderr")
rc=$?
[ $rc -eq 0 ] && [ -n "$gen" ] && ok "qkv generate --model OUT works: '$(printf '%s' "$gen" | head -1)'" ||
    bad "qkv generate --model OUT: rc $rc: $(head -1 "$T/gen.stderr")"

# ---- fine-tuning with --init ----
"$QKV" train --data "$T/data.txt" --out "$T/ft" --init "$T/full" --steps 3 --block-size 16 --batch-size 2 --quiet \
    > /dev/null 2> "$T/ft.stderr"
rc=$?
[ $rc -eq 0 ] && grep -q '"lr": 4.99999987e-05' "$T/ft/checkpoint-3/trainer_state.json" &&
    ok "--init fine-tunes (lr default 5e-5)" || bad "--init: rc $rc: $(cat "$T/ft.stderr")"

# ---- GPT-2's tokenizer (--tokenizer DIR, 50257 ids) from ../shared/data, then fine-tuning that model ----
G2=${QKV_SHARED_DATA:-/work/shared/data}/gpt2-tokenizer
if [ -f "$G2/vocab.json" ] && [ -f "$G2/merges.txt" ]; then
    "$QKV" train --data "$T/data.txt" --tokenizer "$G2" --out "$T/g2" --steps 2 --n-layer 1 --n-head 1 --n-embd 8 \
        --block-size 16 --batch-size 2 --quiet > /dev/null 2> "$T/g2.stderr" &&
    "$QKV" train --data "$T/data.txt" --init "$T/g2" --out "$T/g2ft" --steps 2 --block-size 16 --batch-size 2 \
        --quiet > /dev/null 2>> "$T/g2.stderr"
    rc=$?
    [ $rc -eq 0 ] && cmp -s "$G2/merges.txt" "$T/g2ft/merges.txt" && cmp -s "$G2/vocab.json" "$T/g2ft/vocab.json" &&
        grep -q '"vocab_size": 50257' "$T/g2ft/config.json" &&
        ok "--tokenizer GPT-2 dir, then --init: 50257-token model, tokenizer files byte-identical to GPT-2's" ||
        bad "GPT-2 tokenizer run: rc $rc: $(cat "$T/g2.stderr")"
else
    echo "skip GPT-2 tokenizer check: $G2 not found (set QKV_SHARED_DATA)"
fi

# ---- folders: --ext, a binary file skipped with a note ----
mkdir -p "$T/src/sub"
head -c 3000 "$T/data.txt" > "$T/src/a.c"
tail -c 3000 "$T/data.txt" > "$T/src/sub/b.h"
printf 'not code\n' > "$T/src/readme.txt"
printf '\x7fELF\x00\x00\x01' > "$T/src/zz.c"
"$QKV" train --data "$T/src" --ext .c,.h --out "$T/folder" --steps 2 --n-layer 1 --n-head 1 --n-embd 8 \
    --block-size 8 --batch-size 2 --log-every 1 --tokenizer bpe:300 > /dev/null 2> "$T/folder.stderr"
rc=$?
[ $rc -eq 0 ] && grep -q 'zz.c: looks binary' "$T/folder.stderr" && [ -f "$T/folder/merges.txt" ] &&
    ok "folder walk (--ext .c,.h, --tokenizer bpe:300): binary zz.c skipped with a note" ||
    bad "folder walk: rc $rc: $(cat "$T/folder.stderr")"
grep -q '^step 1/2 loss' "$T/folder.stderr" && ok "non-TTY progress: a plain line per --log-every steps" ||
    bad "no plain progress line"

# ---- bad input: exit status, one line on stderr naming the culprit, no crash, nothing left behind ----
# expect NAME WANT_RC PATTERN -- args...   (WANT_RC: 1, 2 or "nz" for any non-zero)
expect() {
    local name=$1 want=$2 pat=$3
    shift 4
    local out="$T/out_$checks"
    "$QKV" train "$@" --out "$out" > "$T/e.stdout" 2> "$T/e.stderr"
    local rc=$?
    local lines
    lines=$(wc -l < "$T/e.stderr")
    if { [ "$want" = nz ] && [ $rc -ne 0 ] || [ "$rc" = "$want" ]; } && [ $rc -lt 128 ] && [ "$lines" = 1 ] &&
       grep -q -- "$pat" "$T/e.stderr" && grep -q '^qkv train: ' "$T/e.stderr" && [ ! -e "$out" ]; then
        ok "$name: exit $rc, '$(cat "$T/e.stderr")'"
    else
        bad "$name: exit $rc (want $want), $lines stderr lines, out left: $([ -e "$out" ] && echo yes || echo no): $(cat "$T/e.stderr")"
    fi
}
D=(--data "$T/data.txt")
: > "$T/empty.txt"
printf 'short\n' > "$T/short.txt"
printf 'good text\nthen \xff\xfe bad\n' > "$T/latin.txt"
expect "missing data file" 1 "nope.txt" -- --data "$T/nope.txt"
expect "empty data file" 1 "empty.txt: empty file" -- --data "$T/empty.txt"
expect "data shorter than one block" 1 "fewer than one block" -- --data "$T/short.txt" --block-size 16
expect "malformed UTF-8" 1 "latin.txt: invalid UTF-8 at byte 15" -- --data "$T/latin.txt"
if [ "$(id -u)" != 0 ]; then
    printf 'unreadable\n' > "$T/secret.txt"
    chmod 000 "$T/secret.txt"
    expect "unreadable data file" 1 "secret.txt" -- --data "$T/secret.txt"
else
    echo "skip unreadable-file check: running as root (permissions do not apply)"
fi
expect "--steps 0" 2 "--steps" -- "${D[@]}" --steps 0
expect "--steps -5" 2 "--steps" -- "${D[@]}" --steps -5
expect "--steps abc" 2 "--steps: 'abc' is not an integer" -- "${D[@]}" --steps abc
expect "--lr -1" 2 "--lr" -- "${D[@]}" --lr -1
expect "--lr nan" 2 "--lr: 'nan' is not a finite number" -- "${D[@]}" --lr nan
expect "--batch-size 0" 2 "--batch-size" -- "${D[@]}" --batch-size 0
expect "--n-embd not divisible by --n-head" 2 "--n-embd: 30 is not divisible by --n-head 4" -- "${D[@]}" --n-embd 30 --n-head 4
expect "unknown flag" 2 "--frobnicate: unknown option" -- "${D[@]}" --frobnicate 3
expect "missing value" 2 "--lr: missing value" -- "${D[@]}" --lr
expect "--lr-schedule bogus" 2 "--lr-schedule" -- "${D[@]}" --lr-schedule bogus
expect "no --data" 2 "--data" -- --steps 3
expect "--tokenizer with --init" 2 "--tokenizer: not allowed with --init" -- "${D[@]}" --init "$T/full" --tokenizer bytes
expect "--block-size over the --init model's n_positions" 1 "--block-size: 32 is larger than n_positions 16" -- \
    "${D[@]}" --init "$T/full" --block-size 32
expect "--init folder missing" 1 "--init: .*nothere" -- "${D[@]}" --init "$T/nothere"
mkdir -p "$T/trunc"
cp "$T/full/config.json" "$T/full/vocab.json" "$T/trunc/"
head -c 200 "$T/full/model.safetensors" > "$T/trunc/model.safetensors"
expect "--init with a truncated model" 1 "--init: .*model.safetensors" -- "${D[@]}" --init "$T/trunc" --block-size 16
# a tokenizer larger than the model: the full model's weights (vocab = the data's characters) with a 256-id byte vocab
"$QKV" train --data "$T/data.txt" --out "$T/bytes" --steps 1 --n-layer 1 --n-head 1 --n-embd 8 --block-size 8 \
    --batch-size 1 --quiet > /dev/null 2>&1
mkdir -p "$T/bigvocab"
cp "$T/full/config.json" "$T/full/model.safetensors" "$T/bytes/vocab.json" "$T/bytes/merges.txt" "$T/bigvocab/"
expect "tokenizer vocab larger than the --init model" 1 "--init: .*256" -- "${D[@]}" --init "$T/bigvocab" --block-size 16

# a fresh run into a folder that holds one
"$QKV" train "${D[@]}" --out "$T/full" "${TINY[@]}" > /dev/null 2> "$T/e.stderr"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l < "$T/e.stderr")" = 1 ] && grep -q 'already holds a training run' "$T/e.stderr" &&
    cmp -s "$T/full/model.safetensors" "$T/part/model.safetensors" &&
    ok "fresh run into a used OUT refused, nothing touched: $(cat "$T/e.stderr")" || bad "used OUT: rc $rc: $(cat "$T/e.stderr")"
# resume with a conflicting flag
"$QKV" train --resume --out "$T/part" --lr 0.1 > /dev/null 2> "$T/e.stderr"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l < "$T/e.stderr")" = 1 ] && grep -q -- '--lr: the checkpoint' "$T/e.stderr" &&
    ok "resume with another --lr refused: $(cat "$T/e.stderr")" || bad "resume --lr: rc $rc: $(cat "$T/e.stderr")"
"$QKV" train --resume --out "$T/nothing_here" > /dev/null 2> "$T/e.stderr"
rc=$?
[ $rc -eq 1 ] && [ "$(wc -l < "$T/e.stderr")" = 1 ] && grep -q -- '--resume' "$T/e.stderr" &&
    ok "resume without a checkpoint: $(cat "$T/e.stderr")" || bad "resume nothing: rc $rc: $(cat "$T/e.stderr")"

echo "cli_train: $checks checks, $fails failed"
[ $fails -eq 0 ]

#!/usr/bin/env bash
# cli_generate.sh QKV — `qkv generate`, `qkv tokenize` and `qkv bench --tiny` as a user runs them.
#
# Checks: every flag is in --help; bad flags and bad files give exit 2 / 1 with exactly one line on
# stderr naming the flag or file (and no crash, no sanitizer report); `generate --greedy --json`
# prints exactly the ids and text of the plain-torch greedy reference (tests/torch/gen_generate.py:
# a tiny HF GPT-2 directory with the real GPT-2 tokenizer, and a byte-level one whose output is mostly
# invalid UTF-8); the streamed text equals the JSON text; seeds; the context limit; `tokenize --json`
# equals the tiktoken oracle of ../shared/data; bench --tiny prints its fields.
# The reference directories come from $QKV_GOLDEN_DIR/generate, or are made here into a temporary
# folder when absent. Parts whose inputs are missing (no torch, no ../shared/data) are skipped loudly.
set -u
Q=${1:?usage: cli_generate.sh path/to/qkv}
here=$(cd "$(dirname "$0")" && pwd)
SD=${QKV_SHARED_DATA:-$here/../../shared/data}
GD=${QKV_GOLDEN_DIR:-build/golden}
PY=${QKV_PYTHON:-/usr/bin/python3}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
checks=0 fails=0 skipped=0

ok() { checks=$((checks + 1)); echo "ok   $*"; }
bad() { checks=$((checks + 1)); fails=$((fails + 1)); echo "FAIL $*"; }
skip() { skipped=$((skipped + 1)); echo "*** SKIPPED (not passed): $* ***" | tee /dev/stderr; }

# expect_err CODE PATTERN CMD... — CMD must exit with CODE, print nothing on stdout (unless it is a
# streamed generation), exactly one line on stderr containing PATTERN, and no sanitizer report.
expect_err() {
    local code=$1 pat=$2
    shift 2
    "$@" > "$tmp/out" 2> "$tmp/err"
    local rc=$? lines
    lines=$(wc -l < "$tmp/err")
    if [ "$rc" -ne "$code" ] || [ "$lines" -ne 1 ] || ! grep -qF -- "$pat" "$tmp/err" ||
        grep -qE 'Sanitizer|runtime error' "$tmp/err"; then
        bad "exit $rc (want $code), $lines stderr lines, want '$pat': ${*:2}"
        sed 's/^/       /' "$tmp/err" | head -5
    else
        ok "exit $code: $(head -c 150 "$tmp/err")"
    fi
}

# ---------------------------------------------------------------- help
for cmd in generate tokenize bench; do
    if "$Q" $cmd --help > "$tmp/help" 2> "$tmp/err" && [ ! -s "$tmp/err" ]; then
        ok "qkv $cmd --help"
    else
        bad "qkv $cmd --help failed"
    fi
done
for f in --model --prompt --prompt-file --max-new-tokens --greedy --temperature --top-k --top-p --seed \
    --no-special --json --quiet "default 50" "default 1.0"; do
    "$Q" generate --help | grep -qF -- "$f" || bad "generate --help does not mention $f"
done
for f in --model --text --file --decode --json --no-special; do
    "$Q" tokenize --help | grep -qF -- "$f" || bad "tokenize --help does not mention $f"
done
for f in --train --prefill --decode --attention --model --iters --warmup --threads --b --t --dropout --prompt \
    --gen --heads --tiny --json; do
    "$Q" bench --help | grep -qF -- "$f" || bad "bench --help does not mention $f"
done
ok "every flag is documented in the three --help texts"

# ---------------------------------------------------------------- bad flags (exit 2, before any file is read)
M0=$tmp/no-such-model
expect_err 2 "--max-new-tokens" "$Q" generate --model "$M0" --prompt hi --max-new-tokens -1
expect_err 2 "--max-new-tokens" "$Q" generate --model "$M0" --prompt hi --max-new-tokens abc
expect_err 2 "--max-new-tokens" "$Q" generate --model "$M0" --prompt hi --max-new-tokens 99999999999999999999999
expect_err 2 "--max-new-tokens" "$Q" generate --model "$M0" --prompt hi --max-new-tokens 2000000
expect_err 2 "--max-new-tokens" "$Q" generate --model "$M0" --prompt hi --max-new-tokens ""
expect_err 2 "--temperature" "$Q" generate --model "$M0" --prompt hi --temperature -0.5
expect_err 2 "--temperature" "$Q" generate --model "$M0" --prompt hi --temperature nan
expect_err 2 "--temperature" "$Q" generate --model "$M0" --prompt hi --temperature inf
expect_err 2 "--temperature" "$Q" generate --model "$M0" --prompt hi --temperature 1x
expect_err 2 "--top-p" "$Q" generate --model "$M0" --prompt hi --top-p 0
expect_err 2 "--top-p" "$Q" generate --model "$M0" --prompt hi --top-p 1.5
expect_err 2 "--top-p" "$Q" generate --model "$M0" --prompt hi --top-p nan
expect_err 2 "--top-k" "$Q" generate --model "$M0" --prompt hi --top-k -3
expect_err 2 "--top-k" "$Q" generate --model "$M0" --prompt hi --top-k 2.5
expect_err 2 "--seed" "$Q" generate --model "$M0" --prompt hi --seed -1
expect_err 2 "--seed" "$Q" generate --model "$M0" --prompt hi --seed 18446744073709551616
expect_err 2 "--bogus" "$Q" generate --model "$M0" --prompt hi --bogus
expect_err 2 "--prompt" "$Q" generate --model "$M0" --prompt
expect_err 2 "--model" "$Q" generate --prompt hi
expect_err 2 "--prompt" "$Q" generate --model "$M0"
expect_err 2 "--prompt-file" "$Q" generate --model "$M0" --prompt hi --prompt-file x
expect_err 2 "--model" "$Q" tokenize --text hi
expect_err 2 "--text" "$Q" tokenize --model "$M0"
expect_err 2 "--decode" "$Q" tokenize --model "$M0" --decode "1 two 3"
expect_err 2 "--frobnicate" "$Q" tokenize --model "$M0" --text hi --frobnicate
expect_err 2 "--iters" "$Q" bench --tiny --iters 0
expect_err 2 "--gen" "$Q" bench --tiny --gen 1000
expect_err 2 "--threads" "$Q" bench --tiny --threads abc
expect_err 2 "--what" "$Q" bench --what
expect_err 2 "--model" "$Q" bench --model gpt3
expect_err 2 "--dropout" "$Q" bench --tiny --dropout 1.5
expect_err 2 "--heads" "$Q" bench --attention --heads 0
expect_err 2 "--t" "$Q" bench --attention --t 100000

# ---------------------------------------------------------------- missing things that need no model
expect_err 1 "no such directory" "$Q" generate --model "$M0" --prompt hi
expect_err 1 "not a directory" "$Q" generate --model "$0" --prompt hi
expect_err 1 "no such directory" "$Q" tokenize --model "$M0" --text hi

# ---------------------------------------------------------------- the reference model directories
gold=$GD/generate
if [ ! -f "$gold/expected.json" ] && "$PY" -c "import torch" 2> /dev/null && [ -d "$SD/gpt2-tokenizer" ]; then
    echo "note: $gold/expected.json absent: running tests/torch/gen_generate.py into a temporary folder"
    QKV_SHARED_DATA=$SD "$PY" "$here/torch/gen_generate.py" "$tmp/golden" > /dev/null && gold=$tmp/golden/generate
fi
if [ ! -f "$gold/expected.json" ]; then
    skip "no generate goldens ($GD/generate/expected.json; needs python3-torch and ../shared/data): golden and model-file checks"
else
    M=$gold/model B=$gold/bytes_model E=$gold/expected.json
    # compare_json CASE_JSON_KEY OUT_FILE: prompt_ids, ids, text of qkv's --json equal the reference
    "$PY" - "$E" "$Q" "$M" "$B" "$tmp" << 'EOF'
import json, subprocess, sys
exp_path, q, model, bmodel, tmp = sys.argv[1:]
exp = json.load(open(exp_path, encoding="utf-8"))
fails = 0
def run(args):
    p = subprocess.run([q, "generate"] + args, capture_output=True)
    return p.returncode, p.stdout, p.stderr
def check(ok, what):
    global fails
    print(("ok   " if ok else "FAIL ") + what)
    fails += not ok
def golden(case, mdir, extra=()):
    args = ["--model", mdir, "--prompt", case["prompt"], "--greedy", "--max-new-tokens", str(case["max_new_tokens"]),
            "--json", "--quiet"] + list(extra)
    rc, out, err = run(args)
    lines = out.decode("utf-8").split("\n")
    got = json.loads(lines[0]) if rc == 0 and len(lines) == 2 and lines[1] == "" else None
    same = got is not None and got["prompt_ids"] == case["prompt_ids"] and got["ids"] == case["ids"] and \
        got["text"] == case["text"] and not err
    check(same, "generate --greedy --json %-8s: %d prompt ids, %d new ids and the text equal torch's%s" % (
        case.get("name", "bytes"), len(case["prompt_ids"]), len(case["ids"]),
        "" if same else "\n       got %r (rc %d, stderr %r)\n       want %r" % (got, rc, err[:300], case["ids"])))
    return got
cases = {c["name"]: c for c in exp["cases"]}
for c in exp["cases"]:
    golden(c, model)
golden(exp["bytes"], bmodel)
# the context case stops at n_positions with a note on stderr
c = cases["context"]
rc, out, err = run(["--model", model, "--prompt", c["prompt"], "--greedy", "--max-new-tokens", "20", "--json"])
check(rc == 0 and len(json.loads(out)["ids"]) == exp["n_positions"] - len(c["prompt_ids"]) and b"context" in err,
      "prompt %d tokens + 20 with n_positions %d: stops after %d new ids, stderr says context (%r)" % (
          len(c["prompt_ids"]), exp["n_positions"], exp["n_positions"] - len(c["prompt_ids"]), err.strip()[:120]))
# streaming prints prompt + the same text (U+FFFD for invalid UTF-8) + newline; speed line on stderr
for c, mdir in ((cases["hello"], model), (cases["accents"], model), (exp["bytes"], bmodel)):
    rc, out, err = run(["--model", mdir, "--prompt", c["prompt"], "--greedy", "--max-new-tokens",
                        str(c["max_new_tokens"])])
    want = (c["prompt"] + c["text"] + "\n").encode("utf-8")
    check(rc == 0 and out == want and b"tokens/s" in err and err.count(b"\n") == 1,
          "streamed output == prompt + torch text + newline (%d bytes), one speed line on stderr" % len(want))
# --temperature 0 is greedy; --top-k 1 sampling is greedy; seeds repeat and differ
h = cases["hello"]
base = ["--model", model, "--prompt", h["prompt"], "--max-new-tokens", "20", "--json", "--quiet"]
def ids(extra):
    rc, out, err = run(base + extra)
    return json.loads(out)["ids"] if rc == 0 else None
check(ids(["--temperature", "0"]) == h["ids"], "--temperature 0 == --greedy")
check(ids(["--top-k", "1", "--seed", "5"]) == h["ids"], "--top-k 1 sampling == greedy")
a, b, c2 = ids(["--seed", "1"]), ids(["--seed", "1"]), ids(["--seed", "2"])
check(a is not None and a == b and a != c2 and len(a) == 20, "--seed 1 twice: same ids; --seed 2: different")
d = ids([])
check(d is not None and d == ids(["--seed", "0", "--top-k", "50", "--top-p", "1", "--temperature", "1"]),
      "the documented defaults (seed 0, top-k 50, top-p 1, temperature 1) are the defaults")
e = ids(["--temperature", "0.7", "--top-k", "0", "--top-p", "0.9", "--seed", "3"])
check(e is not None and len(e) == 20 and all(0 <= i < 50257 for i in e), "top-p 0.9 / T 0.7 sampling runs")
check(ids(["--max-new-tokens", "0"]) == [], "--max-new-tokens 0 gives no ids")
rc, out, err = run(base + ["--greedy"])
check(rc == 0 and err == b"" and out.count(b"\n") == 1, "--json --quiet: one line on stdout, nothing on stderr")
# --prompt-file reads the same prompt
open(tmp + "/prompt.txt", "w", encoding="utf-8").write(h["prompt"])
rc, out, err = run(["--model", model, "--prompt-file", tmp + "/prompt.txt", "--greedy", "--max-new-tokens", "20",
                    "--json", "--quiet"])
check(rc == 0 and json.loads(out)["ids"] == h["ids"], "--prompt-file gives the same ids as --prompt")
sys.exit(1 if fails else 0)
EOF
    if [ $? -eq 0 ]; then ok "golden generation checks (above)"; else bad "golden generation checks (above)"; fi

    # bad model files: each one line naming the file
    mk() { rm -rf "$tmp/$1"; mkdir -p "$tmp/$1"; cp "$M"/* "$tmp/$1/"; }
    mk nost && rm "$tmp/nost/model.safetensors"
    expect_err 1 "model.safetensors" "$Q" generate --model "$tmp/nost" --prompt hi
    mk trunc && head -c 5000 "$M/model.safetensors" > "$tmp/trunc/model.safetensors"
    expect_err 1 "model.safetensors" "$Q" generate --model "$tmp/trunc" --prompt hi
    mk tiny && head -c 4 "$M/model.safetensors" > "$tmp/tiny/model.safetensors"
    expect_err 1 "model.safetensors" "$Q" generate --model "$tmp/tiny" --prompt hi
    mk short && { head -c 1000000 "$M/model.safetensors" > "$tmp/short/model.safetensors"; }
    expect_err 1 "model.safetensors" "$Q" generate --model "$tmp/short" --prompt hi
    mk notok && rm "$tmp/notok/vocab.json" "$tmp/notok/merges.txt"
    expect_err 1 "vocab.json" "$Q" generate --model "$tmp/notok" --prompt hi
    mk badcfg && echo '{"n_embd": 32,' > "$tmp/badcfg/config.json"
    expect_err 1 "config.json" "$Q" generate --model "$tmp/badcfg" --prompt hi
    mk nocfg && rm "$tmp/nocfg/config.json"
    expect_err 1 "config.json" "$Q" generate --model "$tmp/nocfg" --prompt hi
    long=$("$PY" -c "import json, sys
c = json.load(open(sys.argv[1]))['cases']
print([x for x in c if x['name'] == 'context'][0]['prompt'] * 2)" "$E")
    expect_err 1 "more than the model's context" "$Q" generate --model "$M" --prompt "$long" --json
    expect_err 1 "invalid UTF-8 at byte 0" "$Q" generate --model "$M" --prompt $'\xff' --json
    expect_err 1 "invalid UTF-8 at byte 3" "$Q" generate --model "$M" --prompt $'abc\xc3(' --json
    expect_err 1 "invalid UTF-8 at byte 2" "$Q" generate --model "$M" --prompt $'ab\xed\xa0\x80' --json
    printf 'ok \xe2\x82' > "$tmp/badprompt.txt"
    expect_err 1 "badprompt.txt: invalid UTF-8 at byte 3" "$Q" generate --model "$M" --prompt-file "$tmp/badprompt.txt" --json
    expect_err 1 "no-such-prompt" "$Q" generate --model "$M" --prompt-file "$tmp/no-such-prompt" --json
    expect_err 1 "no <|endoftext|>" "$Q" generate --model "$B" --prompt "" --json
    expect_err 1 "vocab.json" "$Q" tokenize --model "$tmp/notok" --text hi
    expect_err 1 "99999" "$Q" tokenize --model "$M" --decode "15496 99999"
    expect_err 1 "invalid UTF-8" "$Q" tokenize --model "$M" --text $'\xc3'
    # no half-written output in --json mode
    "$Q" generate --model "$tmp/trunc" --prompt hi --json > "$tmp/out" 2> /dev/null
    if [ ! -s "$tmp/out" ]; then
        ok "a failed --json run prints nothing on stdout"
    else
        bad "a failed --json run printed to stdout"
    fi
fi

# ---------------------------------------------------------------- tokenize vs the tiktoken oracle
if [ -f "$SD/gpt2-tokenizer/oracle/gpt2_oracle.json" ]; then
    "$PY" - "$Q" "$SD/gpt2-tokenizer" "$tmp" << 'EOF'
import json, os, shutil, subprocess, sys
q, tdir, tmp = sys.argv[1:]
cases = json.load(open(os.path.join(tdir, "oracle", "gpt2_oracle.json"), encoding="utf-8"))["cases"]
# a tokenizer-only directory (no model files)
only = os.path.join(tmp, "tokenizer-only")
os.makedirs(only, exist_ok=True)
for f in ("vocab.json", "merges.txt"):
    shutil.copy(os.path.join(tdir, f), only)
n = bad = 0
for c in cases:
    if "\0" in c["text"]:
        continue  # a NUL cannot be passed in argv
    flags = ["--no-special"] if "<|endoftext|>" in c["text"] else []
    p = subprocess.run([q, "tokenize", "--model", only, "--text", c["text"], "--json"] + flags, capture_output=True)
    got = json.loads(p.stdout)["ids"] if p.returncode == 0 else None
    n += 1
    if got != c["ids"]:
        bad += 1
        print("FAIL tokenize %s: got %s want %s (%s)" % (c["id"], got, c["ids"], p.stderr[:200]))
    elif c["ids"]:
        d = subprocess.run([q, "tokenize", "--model", only, "--decode", " ".join(map(str, c["ids"])), "--json"],
                           capture_output=True)
        if d.returncode != 0 or json.loads(d.stdout)["text"] != c["text"]:
            bad += 1
            print("FAIL tokenize --decode %s round trip" % c["id"])
p = subprocess.run([q, "tokenize", "--model", only, "--text", "Hello world<|endoftext|>"], capture_output=True)
plain_ok = p.stdout == b"15496 995 50256\n"
print(("ok   " if plain_ok else "FAIL ") +
      "plain output '15496 995 50256' (<|endoftext|> special by default): %r" % p.stdout)
print(("ok   " if not bad else "FAIL ") +
      "tokenize --json == tiktoken oracle for %d texts, --decode round trips (%d failed)" % (n, bad))
sys.exit(1 if bad or not plain_ok else 0)
EOF
    if [ $? -eq 0 ]; then ok "tokenizer oracle checks (above)"; else bad "tokenizer oracle checks (above)"; fi
else
    skip "$SD/gpt2-tokenizer/oracle/gpt2_oracle.json not found (set QKV_SHARED_DATA): tokenizer oracle checks"
fi

# ---------------------------------------------------------------- bench smoke run
if "$Q" bench --tiny > "$tmp/bench" 2> "$tmp/err"; then
    miss=""
    for f in "threads: " "train B=4 T=64" "ms/step" "prefill T=64" "decode 128 after 64" "tokens/s" \
        "min-max" "peak RSS" "arena peak"; do
        grep -qF -- "$f" "$tmp/bench" || miss="$miss '$f'"
    done
    if [ -z "$miss" ] && [ ! -s "$tmp/err" ]; then
        ok "bench --tiny prints every field"
    else
        bad "bench --tiny misses$miss"
        cat "$tmp/bench" "$tmp/err"
    fi
else
    bad "bench --tiny failed: $(cat "$tmp/err")"
fi
if "$Q" bench --tiny --json --decode --threads 1 > "$tmp/bench" 2> "$tmp/err" &&
    "$PY" -c "import json, sys
d = json.load(open(sys.argv[1]))
dec = d['decode']
assert d['threads'] == 1 and dec['tokens_per_s'] > 0 and 'train' not in d and d['peak_rss_mib'] > 0
assert len(dec['ms']) == 1 and dec['tokens'] == 128 and abs(dec['ms_median'] - dec['ms'][0]) < 1e-3" \
        "$tmp/bench"; then
    ok "bench --tiny --json --decode --threads 1: one JSON object with the decode fields only"
else
    bad "bench --tiny --json: $(head -c 300 "$tmp/bench") $(cat "$tmp/err")"
fi
if "$Q" bench --attention --t 256 --heads 2 --iters 3 --warmup 0 --json > "$tmp/bench" 2> "$tmp/err" &&
    "$PY" -c "import json, sys
d = json.load(open(sys.argv[1]))
f, b = d['attention_fwd'], d['attention_bwd']
assert d['model'] == 'none' and f['T'] == 256 and f['H'] == 2 and len(f['ms']) == 3 and len(b['ms']) == 3
assert 0 < f['arena_peak_mib'] < 64 and min(f['ms'] + b['ms']) > 0" "$tmp/bench"; then
    ok "bench --attention --json: forward and backward times of every repetition, arena peak"
else
    bad "bench --attention --json: $(head -c 300 "$tmp/bench") $(cat "$tmp/err")"
fi
if "$Q" bench --model small --train --t 32 --b 2 --iters 2 --warmup 0 > "$tmp/bench" 2> "$tmp/err" &&
    grep -qF "small char model" "$tmp/bench" && grep -qF "train B=2 T=32" "$tmp/bench"; then
    ok "bench --model small --train runs the char model"
else
    bad "bench --model small: $(cat "$tmp/bench" "$tmp/err")"
fi

echo "cli_generate: $checks checks, $fails failed, $skipped parts skipped"
[ "$fails" -eq 0 ] || exit 1
exit 0

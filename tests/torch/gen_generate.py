"""gen_generate.py - a tiny Hugging Face GPT-2 directory and its greedy continuations, for
tests/cli_generate.sh (`qkv generate --greedy --json` must print exactly these ids and this text).

Writes <golden dir>/generate/model/ as save_pretrained would for GPT2LMHeadModel: config.json, an F32
model.safetensors (written here by hand per the safetensors spec: u64 header length, JSON header
with "__metadata__" {"format": "pt"}, tensors "transformer.*" sorted by name, packed data; no
lm_head.weight since GPT-2's head is tied to wte), and the real GPT-2 vocab.json + merges.txt copied
from ../shared/data/gpt2-tokenizer. The model is small (2 layers, C 32, 4 heads) with the real
50,257-token vocabulary, and weights larger than GPT-2's init so the argmax is never a near-tie.

The reference is GPT-2's forward written out in plain torch (HF GPT2LMHeadModel semantics: pre-LN
blocks, fused c_attn with Conv1D [in, out] weights, causal softmax(q k^T / sqrt(D)), gelu_new,
ln_f, logits = x wte^T) and greedy decoding that re-runs the whole sequence for every token (no
cache), stopping after <|endoftext|> (kept, as HF does), after max_new_tokens, or when the sequence
fills n_positions. Prompt ids come from the tokenizer oracle (gpt2_oracle.json, tiktoken), never from
qkv. The new text is the ids decoded with GPT-2's byte decoder and bytes.decode(errors="replace").
Writes <golden dir>/generate/expected.json. Without ../shared/data it writes nothing and says so.
"""
import json
import math
import os
import shutil
import struct
import sys

import torch
import torch.nn.functional as F

from golden import setup

EOS = 50256


def shared_data():
    d = os.environ.get("QKV_SHARED_DATA")
    if not d:
        d = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "..", "shared", "data")
    return d


def bytes_to_unicode():
    """GPT-2's reversible map from the 256 byte values to printable code points."""
    printable = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + \
        list(range(ord("®"), ord("ÿ") + 1))
    mapping, extra = {}, 0
    for b in range(256):
        if b in printable:
            mapping[b] = chr(b)
        else:
            mapping[b] = chr(256 + extra)
            extra += 1
    return mapping


def make_weights(cfg, seed, wpe_std):
    g = torch.Generator().manual_seed(seed)
    C, V, P, L = cfg["n_embd"], cfg["vocab_size"], cfg["n_positions"], cfg["n_layer"]

    def rnd(*shape, std):
        return torch.randn(*shape, generator=g) * std

    # wpe larger than wte: the position, not the last token, dominates the tied head's choice, so
    # greedy text varies instead of repeating the previous token.
    w = {"wte.weight": rnd(V, C, std=0.5), "wpe.weight": rnd(P, C, std=wpe_std)}
    for i in range(L):
        p = "h.%d." % i
        w[p + "ln_1.weight"] = 1 + rnd(C, std=0.2)
        w[p + "ln_1.bias"] = rnd(C, std=0.1)
        w[p + "attn.c_attn.weight"] = rnd(C, 3 * C, std=0.3)
        w[p + "attn.c_attn.bias"] = rnd(3 * C, std=0.1)
        w[p + "attn.c_proj.weight"] = rnd(C, C, std=0.2)
        w[p + "attn.c_proj.bias"] = rnd(C, std=0.1)
        w[p + "ln_2.weight"] = 1 + rnd(C, std=0.2)
        w[p + "ln_2.bias"] = rnd(C, std=0.1)
        w[p + "mlp.c_fc.weight"] = rnd(C, 4 * C, std=0.2)
        w[p + "mlp.c_fc.bias"] = rnd(4 * C, std=0.1)
        w[p + "mlp.c_proj.weight"] = rnd(4 * C, C, std=0.1)
        w[p + "mlp.c_proj.bias"] = rnd(C, std=0.1)
    w["ln_f.weight"] = 2 + rnd(C, std=0.2)
    w["ln_f.bias"] = rnd(C, std=0.1)
    return {k: v.float().contiguous() for k, v in w.items()}


def forward(w, cfg, ids):
    """Logits (T, V) of GPT2LMHeadModel for one sequence, float32."""
    C, H, eps = cfg["n_embd"], cfg["n_head"], cfg["layer_norm_epsilon"]
    D, T = C // H, len(ids)
    x = w["wte.weight"][torch.tensor(ids)] + w["wpe.weight"][:T]
    mask = torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)
    for i in range(cfg["n_layer"]):
        p = "h.%d." % i
        h = F.layer_norm(x, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        q, k, v = (h @ w[p + "attn.c_attn.weight"] + w[p + "attn.c_attn.bias"]).split(C, dim=-1)
        q, k, v = (t.view(T, H, D).transpose(0, 1) for t in (q, k, v))
        att = (q @ k.transpose(-1, -2)) / math.sqrt(D)
        att = att.masked_fill(mask, float("-inf")).softmax(dim=-1)
        y = (att @ v).transpose(0, 1).reshape(T, C)
        x = x + (y @ w[p + "attn.c_proj.weight"] + w[p + "attn.c_proj.bias"])
        h = F.layer_norm(x, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        h = F.gelu(h @ w[p + "mlp.c_fc.weight"] + w[p + "mlp.c_fc.bias"], approximate="tanh")
        x = x + (h @ w[p + "mlp.c_proj.weight"] + w[p + "mlp.c_proj.bias"])
    x = F.layer_norm(x, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    return x @ w["wte.weight"].t()


def greedy(w, cfg, prompt_ids, max_new):
    seq, new, margins = list(prompt_ids), [], []
    while len(new) < max_new and len(seq) < cfg["n_positions"]:
        logits = forward(w, cfg, seq)[-1]
        top = torch.topk(logits, 2).values
        margins.append(float(top[0] - top[1]))
        nxt = int(torch.argmax(logits))
        new.append(nxt)
        seq.append(nxt)
        if nxt == EOS:
            break
    return new, min(margins) if margins else float("inf")


def write_safetensors(path, tensors):
    names = sorted(tensors)
    header, offset = {"__metadata__": {"format": "pt"}}, 0
    for n in names:
        nbytes = tensors[n].numel() * 4
        header[n] = {"dtype": "F32", "shape": list(tensors[n].shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    hb = json.dumps(header, separators=(",", ":")).encode()
    hb += b" " * ((8 - len(hb) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(hb)))
        f.write(hb)
        for n in names:
            f.write(tensors[n].numpy().astype("<f4").tobytes())
    os.replace(tmp, path)


def write_text(path, text):
    with open(path + ".tmp", "w", encoding="utf-8") as f:
        f.write(text)
    os.replace(path + ".tmp", path)


def main():
    setup()
    out_dir = os.path.join(sys.argv[1] if len(sys.argv) > 1 else "build/golden", "generate")
    tok_dir = os.path.join(shared_data(), "gpt2-tokenizer")
    if not os.path.exists(os.path.join(tok_dir, "vocab.json")):
        print("gen_generate: %s not found: no generate goldens (the CLI golden check will skip)" % tok_dir)
        return
    oracle = {c["id"]: c for c in json.load(open(os.path.join(tok_dir, "oracle", "gpt2_oracle.json")))["cases"]}
    vocab = json.load(open(os.path.join(tok_dir, "vocab.json"), encoding="utf-8"))
    id_to_token = {i: t for t, i in vocab.items()}
    byte_decoder = {u: b for b, u in bytes_to_unicode().items()}

    long_case = oracle["arabic_hebrew_hindi_thai"]
    cfg = {
        "activation_function": "gelu_new", "architectures": ["GPT2LMHeadModel"], "attn_pdrop": 0.1,
        "bos_token_id": EOS, "embd_pdrop": 0.1, "eos_token_id": EOS, "initializer_range": 0.02,
        "layer_norm_epsilon": 1e-05, "model_type": "gpt2", "n_embd": 32, "n_head": 4, "n_inner": None,
        "n_layer": 2, "n_positions": len(long_case["ids"]) + 4, "resid_pdrop": 0.1, "vocab_size": 50257,
    }
    w = make_weights(cfg, 7, 1.5)

    cases = [
        ("hello", oracle["hello_world"]["text"], oracle["hello_world"]["ids"], 20),
        ("accents", oracle["accents_latin"]["text"], oracle["accents_latin"]["ids"], 30),
        ("empty", "", [EOS], 10),
        ("context", long_case["text"], long_case["ids"], 20),
    ]
    expected = {"n_positions": cfg["n_positions"], "cases": []}
    worst = float("inf")
    for name, text, ids, max_new in cases:
        new, margin = greedy(w, cfg, ids, max_new)
        worst = min(worst, margin)
        if margin < 1e-3:
            raise SystemExit("gen_generate: case %s has a near-tie argmax (margin %g): change the seed" % (name, margin))
        text_ids = new[:-1] if new and new[-1] == EOS else new
        raw = bytes(byte_decoder[ch] for i in text_ids for ch in id_to_token[i])
        expected["cases"].append({"name": name, "prompt": text, "prompt_ids": ids, "max_new_tokens": max_new,
                                  "ids": new, "text": raw.decode("utf-8", errors="replace")})

    # A byte-level model (what `qkv train` writes with a bytes tokenizer: vocab.json of the 256 bytes in
    # order, merges.txt with no merges). Its random bytes are mostly not UTF-8: the streamed text and
    # --json "text" must both be Python's errors="replace" decoding of the ids.
    bcfg = dict(cfg, vocab_size=256, n_positions=64, bos_token_id=EOS, eos_token_id=EOS)
    bw = make_weights(bcfg, 11, 1.5)
    bprompt = "h\u00e9llo w\u00f6rld \u2713 "
    bids = list(bprompt.encode("utf-8"))
    bnew, margin = greedy(bw, bcfg, bids, 40)
    worst = min(worst, margin)
    if margin < 1e-3:
        raise SystemExit("gen_generate: bytes case has a near-tie argmax (margin %g): change the seed" % margin)
    expected["bytes"] = {"n_positions": 64, "prompt": bprompt, "prompt_ids": bids, "max_new_tokens": 40,
                         "ids": bnew, "text": bytes(bnew).decode("utf-8", errors="replace")}
    bytes_dir = os.path.join(out_dir, "bytes_model")
    os.makedirs(bytes_dir, exist_ok=True)
    write_safetensors(os.path.join(bytes_dir, "model.safetensors"), {"transformer." + k: v for k, v in bw.items()})
    write_text(os.path.join(bytes_dir, "config.json"), json.dumps(bcfg, indent=2) + "\n")
    b2u = bytes_to_unicode()
    write_text(os.path.join(bytes_dir, "vocab.json"), json.dumps({b2u[b]: b for b in range(256)}, ensure_ascii=False))
    write_text(os.path.join(bytes_dir, "merges.txt"), "#version: 0.2\n")

    model_dir = os.path.join(out_dir, "model")
    os.makedirs(model_dir, exist_ok=True)
    write_safetensors(os.path.join(model_dir, "model.safetensors"), {"transformer." + k: v for k, v in w.items()})
    write_text(os.path.join(model_dir, "config.json"), json.dumps(cfg, indent=2) + "\n")
    for f in ("vocab.json", "merges.txt"):
        shutil.copyfile(os.path.join(tok_dir, f), os.path.join(model_dir, f + ".tmp"))
        os.replace(os.path.join(model_dir, f + ".tmp"), os.path.join(model_dir, f))
    write_text(os.path.join(out_dir, "expected.json"), json.dumps(expected, ensure_ascii=False, indent=1) + "\n")
    print("gen_generate: %d GPT-2 vocabulary cases + 1 byte-level case, smallest argmax margin %.3g" %
          (len(cases), worst))


if __name__ == "__main__":
    main()

#!/usr/bin/python3
"""make_gguf.py - writes a GPT-2 124M-shaped model with random float32 weights as a GGUF v3 file, for
measuring llama.cpp (its own llama-bench) beside qkv: bench/llama_setup.sh runs this once.

    /usr/bin/python3 bench/make_gguf.py OUT.gguf [--vocab-dir DIR] [--seed N]

The shape is GPT-2 small: vocab 50257, 1024 positions, width 768, 12 layers of 12 heads, MLP 3072,
LayerNorm eps 1e-5, 124,439,808 parameters, every tensor F32 (about 500 MB). Weights are normal with
std 0.02 (LayerNorm weights 1, every bias 0) from --seed; speed does not depend on the values. The LM
head is tied: there is no output.weight, so llama.cpp reuses token_embd.weight for it. The tokenizer
(tokens, token types, merges, <|endoftext|> = 50256 as BOS and EOS) is the real GPT-2 one, read from
DIR/vocab.json and DIR/merges.txt (default: $QKV_SHARED_DATA/gpt2-tokenizer, else
../shared/data/gpt2-tokenizer beside the repository).

Key names, tensor names and dimension order are those llama.cpp reads for architecture "gpt2"
(src/llama-arch.cpp, src/models/gpt2.cpp; the file layout from ggml/include/gguf.h). Dimensions are
written in ggml order, fastest-varying first: a row-major numpy (rows, cols) matrix is {cols, rows}.
Linear weights are (out, in) rows, as llama.cpp multiplies them: attn_qkv {768, 2304}, attn_output
{768, 768}, ffn_up {768, 3072}, ffn_down {3072, 768}; token_embd {768, 50257}, position_embd {768, 1024}.

Not a converter: no real GPT-2 weights, so the model's output is noise (fine for timing, nothing else).
Written tensor by tensor to OUT.tmp, renamed to OUT at the end.
"""
import argparse
import json
import os
import struct
import sys

import numpy as np

V, P, C, L, H, FF, EPS = 50257, 1024, 768, 12, 12, 3072, 1e-5
ALIGN = 32  # GGUF_DEFAULT_ALIGNMENT; we also write general.alignment

# gguf value types (ggml/include/gguf.h)
T_UINT32, T_INT32, T_FLOAT32, T_STRING, T_ARRAY = 4, 5, 6, 8, 9
GGML_TYPE_F32 = 0
LLAMA_FTYPE_ALL_F32 = 0


def gstr(s):
    b = s.encode("utf-8") if isinstance(s, str) else s
    return struct.pack("<Q", len(b)) + b


def kv(key, vtype, value):
    """One key-value pair: key, type, value (scalars, strings, and arrays of uint32/int32/string)."""
    out = [gstr(key), struct.pack("<I", vtype)]
    if vtype == T_UINT32:
        out.append(struct.pack("<I", value))
    elif vtype == T_FLOAT32:
        out.append(struct.pack("<f", value))
    elif vtype == T_STRING:
        out.append(gstr(value))
    elif vtype == T_ARRAY:
        etype, items = value
        out.append(struct.pack("<IQ", etype, len(items)))
        if etype == T_STRING:
            out.extend(gstr(s) for s in items)
        elif etype == T_INT32:
            out.append(np.asarray(items, dtype="<i4").tobytes())
        else:
            raise ValueError(etype)
    else:
        raise ValueError(vtype)
    return b"".join(out)


def pad(n):
    return (n + ALIGN - 1) // ALIGN * ALIGN


def tensors():
    """(name, ggml dims, init) in file order; init is 'normal', 'ones' or 'zeros'."""
    t = [("token_embd.weight", (C, V), "normal"),
         ("position_embd.weight", (C, P), "normal")]
    for i in range(L):
        b = "blk.%d." % i
        t += [(b + "attn_norm.weight", (C,), "ones"), (b + "attn_norm.bias", (C,), "zeros"),
              (b + "attn_qkv.weight", (C, 3 * C), "normal"), (b + "attn_qkv.bias", (3 * C,), "zeros"),
              (b + "attn_output.weight", (C, C), "normal"), (b + "attn_output.bias", (C,), "zeros"),
              (b + "ffn_norm.weight", (C,), "ones"), (b + "ffn_norm.bias", (C,), "zeros"),
              (b + "ffn_up.weight", (C, FF), "normal"), (b + "ffn_up.bias", (FF,), "zeros"),
              (b + "ffn_down.weight", (FF, C), "normal"), (b + "ffn_down.bias", (C,), "zeros")]
    t += [("output_norm.weight", (C,), "ones"), ("output_norm.bias", (C,), "zeros")]
    return t


def load_tokenizer(d):
    with open(os.path.join(d, "vocab.json"), encoding="utf-8") as f:
        vocab = json.load(f)
    tokens = [None] * len(vocab)
    for s, i in vocab.items():
        tokens[i] = s
    if len(tokens) != V or None in tokens:
        sys.exit("make_gguf.py: %s/vocab.json: expected ids 0..%d" % (d, V - 1))
    with open(os.path.join(d, "merges.txt"), encoding="utf-8") as f:
        merges = [ln.rstrip("\r\n") for ln in f]
    merges = [m for m in merges if m and not m.startswith("#version")]
    types = [1] * V  # LLAMA_TOKEN_TYPE_NORMAL
    types[V - 1] = 3  # <|endoftext|>: LLAMA_TOKEN_TYPE_CONTROL
    return tokens, types, merges


def main():
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    shared = os.environ.get("QKV_SHARED_DATA") or os.path.join(root, "..", "shared", "data")
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("out")
    ap.add_argument("--vocab-dir", default=os.path.join(shared, "gpt2-tokenizer"))
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    for f in ("vocab.json", "merges.txt"):
        if not os.path.isfile(os.path.join(a.vocab_dir, f)):
            sys.exit("make_gguf.py: no %s in %s (give --vocab-dir)" % (f, a.vocab_dir))
    tokens, types, merges = load_tokenizer(a.vocab_dir)

    meta = [
        kv("general.architecture", T_STRING, "gpt2"),
        kv("general.name", T_STRING, "gpt2-124m-random-f32"),
        kv("general.file_type", T_UINT32, LLAMA_FTYPE_ALL_F32),
        kv("general.alignment", T_UINT32, ALIGN),
        kv("gpt2.context_length", T_UINT32, P),
        kv("gpt2.embedding_length", T_UINT32, C),
        kv("gpt2.feed_forward_length", T_UINT32, FF),
        kv("gpt2.block_count", T_UINT32, L),
        kv("gpt2.attention.head_count", T_UINT32, H),
        kv("gpt2.attention.layer_norm_epsilon", T_FLOAT32, EPS),
        kv("tokenizer.ggml.model", T_STRING, "gpt2"),
        kv("tokenizer.ggml.pre", T_STRING, "gpt-2"),
        kv("tokenizer.ggml.tokens", T_ARRAY, (T_STRING, tokens)),
        kv("tokenizer.ggml.token_type", T_ARRAY, (T_INT32, types)),
        kv("tokenizer.ggml.merges", T_ARRAY, (T_STRING, merges)),
        kv("tokenizer.ggml.bos_token_id", T_UINT32, V - 1),
        kv("tokenizer.ggml.eos_token_id", T_UINT32, V - 1),
    ]
    ts = tensors()
    info, offset = [], 0
    for name, dims, _ in ts:
        info.append(gstr(name) + struct.pack("<I", len(dims)) + struct.pack("<%dQ" % len(dims), *dims)
                    + struct.pack("<IQ", GGML_TYPE_F32, offset))
        offset += pad(4 * int(np.prod(dims)))
    head = b"GGUF" + struct.pack("<IQQ", 3, len(ts), len(meta)) + b"".join(meta) + b"".join(info)
    head += b"\0" * (pad(len(head)) - len(head))

    rng = np.random.default_rng(a.seed)
    tmp = a.out + ".tmp"
    try:
        n_params, size = write_body(tmp, head, ts, rng)
    except BaseException as e:  # a full disk, a bad path, an interrupt: nothing half-written stays behind
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            sys.exit("make_gguf.py: %s: %s" % (a.out, e.strerror))
        raise
    if size != len(head) + offset:
        os.unlink(tmp)
        sys.exit("make_gguf.py: internal error: wrote %d bytes, expected %d" % (size, len(head) + offset))
    os.replace(tmp, a.out)
    print("make_gguf.py: wrote %s: %d tensors, %d parameters, %.1f MB" % (a.out, len(ts), n_params, size / 1e6))


def write_body(tmp, head, ts, rng):
    """The header, then every tensor (padded to ALIGN); returns (parameters, bytes written)."""
    n_params = 0
    with open(tmp, "wb") as f:
        f.write(head)
        for name, dims, init in ts:
            n = int(np.prod(dims))
            n_params += n
            if init == "normal":
                x = rng.standard_normal(n, dtype=np.float32)
                x *= 0.02
            else:
                x = np.full(n, 1.0 if init == "ones" else 0.0, dtype=np.float32)
            b = x.astype("<f4", copy=False).tobytes()
            f.write(b + b"\0" * (pad(len(b)) - len(b)))
        return n_params, f.tell()


if __name__ == "__main__":
    main()

"""gen_gpt2.py - three random GPT-2 models as Hugging Face directories, and what Hugging Face's
GPT2LMHeadModel computes for them, for tests/test_torch_gpt2.c.

transformers is not installed (Debian's torch 1.13 only), so GPT2LMHeadModel is re-implemented here
in plain PyTorch, following modeling_gpt2.py operation by operation:
  h = wte[ids] + wpe[arange(T)]
  per block:  a = ln_1(h); qkv = a @ c_attn.weight + c_attn.bias   (Conv1D: weight [in, out])
              q, k, v = qkv.split(C, dim=2), each viewed (B, H, T, D)
              w = (q @ k^T) / sqrt(D), causal positions set to finfo(float32).min, softmax in float32
              h = h + (w @ v merged back to (B, T, C)) @ c_proj.weight + c_proj.bias
              m = ln_2(h) @ c_fc.weight + c_fc.bias; m = gelu_new(m) (the tanh form)
              h = h + m @ mlp.c_proj.weight + mlp.c_proj.bias
  logits = ln_f(h) @ wte^T   (lm_head tied to wte, no bias); LayerNorm eps from config.json.
Every weight is random, biases and LayerNorm weights/biases included, at scales that give logits of
a few units (not saturated, not trivial).

Models (each dir/<name>/config.json + model.safetensors, written by hand per the safetensors spec:
u64 LE header length, JSON header, data; the header padded with spaces to a multiple of 8):
  gpt2_a  V 300, C 64, H 4 (D 16), L 2, P 128. Names with the "transformer." prefix, the old
          h.N.attn.bias / h.N.attn.masked_bias buffers and a tied lm_head.weight included (what
          transformers < 4.x wrote); F32, header sorted by name (HF's writer order).
  gpt2_b  V 150, C 42, H 3 (D 14, not a multiple of 8), L 3, P 96, eps 1e-6. GPT2Model names (no
          prefix), no activation_function key, header in state-dict order (not sorted); F32.
  gpt2_c  V 200, C 32, H 2 (D 16), L 2, P 64 (given as the old "n_ctx" key only); stored as F16
          (the reference runs on the F16 values widened to float32, exactly what the loader sees).
Goldens gpt2_<x>.bin: prompt<i> (int32 ids) and logits<i> (T, V) for prompts of length 1, a few
middle lengths and the full context P; batch_ids (3, 20) and batch_logits (3, 20, V); greedy_prompt
and greedy_ids: 16 tokens chosen by argmax, each step a full forward over everything so far.
"""
import json
import math
import os
import struct

import torch

from golden import out_path, setup, write_golden


def gelu_new(x):
    return 0.5 * x * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi) * (x + 0.044715 * torch.pow(x, 3.0))))


def random_weights(V, P, C, L, g):
    def n(*shape, std=0.2):
        return torch.randn(*shape, generator=g) * std

    w = {"wte.weight": n(V, C, std=0.3), "wpe.weight": n(P, C, std=0.2)}
    for i in range(L):
        p = "h.%d." % i
        w[p + "ln_1.weight"] = 1.0 + n(C, std=0.1)
        w[p + "ln_1.bias"] = n(C, std=0.1)
        w[p + "attn.c_attn.weight"] = n(C, 3 * C, std=0.15)
        w[p + "attn.c_attn.bias"] = n(3 * C, std=0.1)
        w[p + "attn.c_proj.weight"] = n(C, C, std=0.15)
        w[p + "attn.c_proj.bias"] = n(C, std=0.1)
        w[p + "ln_2.weight"] = 1.0 + n(C, std=0.1)
        w[p + "ln_2.bias"] = n(C, std=0.1)
        w[p + "mlp.c_fc.weight"] = n(C, 4 * C, std=0.15)
        w[p + "mlp.c_fc.bias"] = n(4 * C, std=0.1)
        w[p + "mlp.c_proj.weight"] = n(4 * C, C, std=0.1)
        w[p + "mlp.c_proj.bias"] = n(C, std=0.1)
    w["ln_f.weight"] = 1.0 + n(C, std=0.1)
    w["ln_f.bias"] = n(C, std=0.1)
    return w


def gpt2_logits(w, cfg, ids):
    """ids (B, T) int64 -> logits (B, T, V) float32, HF GPT2LMHeadModel in eval mode."""
    C, H, L, eps = cfg["n_embd"], cfg["n_head"], cfg["n_layer"], cfg["eps"]
    D = C // H
    B, T = ids.shape
    h = w["wte.weight"][ids] + w["wpe.weight"][torch.arange(T)]
    causal = torch.tril(torch.ones(T, T, dtype=torch.bool))
    for i in range(L):
        p = "h.%d." % i
        a = torch.nn.functional.layer_norm(h, (C,), w[p + "ln_1.weight"], w[p + "ln_1.bias"], eps)
        qkv = torch.addmm(w[p + "attn.c_attn.bias"], a.reshape(-1, C), w[p + "attn.c_attn.weight"]).view(B, T, 3 * C)
        q, k, v = qkv.split(C, dim=2)
        q, k, v = (t.view(B, T, H, D).permute(0, 2, 1, 3) for t in (q, k, v))
        att = torch.matmul(q, k.transpose(-1, -2)) / torch.full([], v.size(-1) ** 0.5)
        att = torch.where(causal, att, torch.tensor(torch.finfo(att.dtype).min))
        att = torch.softmax(att, dim=-1)
        y = torch.matmul(att, v).permute(0, 2, 1, 3).reshape(B, T, C)
        y = torch.addmm(w[p + "attn.c_proj.bias"], y.reshape(-1, C), w[p + "attn.c_proj.weight"]).view(B, T, C)
        h = h + y
        m = torch.nn.functional.layer_norm(h, (C,), w[p + "ln_2.weight"], w[p + "ln_2.bias"], eps)
        m = torch.addmm(w[p + "mlp.c_fc.bias"], m.reshape(-1, C), w[p + "mlp.c_fc.weight"])
        m = gelu_new(m)
        m = torch.addmm(w[p + "mlp.c_proj.bias"], m, w[p + "mlp.c_proj.weight"]).view(B, T, C)
        h = h + m
    h = torch.nn.functional.layer_norm(h, (C,), w["ln_f.weight"], w["ln_f.bias"], eps)
    return torch.matmul(h, w["wte.weight"].t())


DTYPE_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.uint8: "U8"}


def write_safetensors(path, tensors, sort_names):
    """tensors: list of (name, tensor). Header keys in name order when sort_names (what HF's writer
    does for one dtype), else in the order given; data packed in header order from offset 0."""
    items = sorted(tensors, key=lambda kv: kv[0]) if sort_names else list(tensors)
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for name, t in items:
        t = t.contiguous()
        b = (t.view(torch.int16) if t.dtype in (torch.float16, torch.bfloat16) else t).numpy().tobytes()
        header[name] = {"dtype": DTYPE_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [off, off + len(b)]}
        off += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":")).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def write_json(path, obj):
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
    os.replace(tmp, path)


def build(name, V, P, C, H, L, eps, g, variant):
    w = random_weights(V, P, C, L, g)
    d = out_path(name)
    os.makedirs(d, exist_ok=True)
    cfg = {"model_type": "gpt2", "architectures": ["GPT2LMHeadModel"], "vocab_size": V, "n_embd": C, "n_head": H,
           "n_layer": L, "layer_norm_epsilon": eps, "n_inner": None, "activation_function": "gelu_new",
           "attn_pdrop": 0.1, "embd_pdrop": 0.1, "resid_pdrop": 0.1, "initializer_range": 0.02,
           "bos_token_id": V - 1, "eos_token_id": V - 1}
    if variant == "c":
        cfg["n_ctx"] = P
    else:
        cfg["n_positions"] = P
    if variant == "b":
        del cfg["activation_function"]
    write_json(os.path.join(d, "config.json"), cfg)

    if variant == "a":
        items = [("transformer." + k, v) for k, v in w.items()]
        for i in range(L):  # the causal-mask buffers older transformers saved
            items.append(("transformer.h.%d.attn.bias" % i, torch.tril(torch.ones(P, P, dtype=torch.uint8)).view(1, 1, P, P)))
            items.append(("transformer.h.%d.attn.masked_bias" % i, torch.tensor(-1e4).to(torch.float16)))
        items.append(("lm_head.weight", w["wte.weight"].clone()))
        write_safetensors(os.path.join(d, "model.safetensors"), items, sort_names=True)
    elif variant == "b":
        write_safetensors(os.path.join(d, "model.safetensors"), list(w.items()), sort_names=False)
    else:
        w = {k: v.to(torch.float16) for k, v in w.items()}
        write_safetensors(os.path.join(d, "model.safetensors"), list(w.items()), sort_names=True)
        w = {k: v.float() for k, v in w.items()}  # what the loader widens them to

    ref = {"n_embd": C, "n_head": H, "n_layer": L, "eps": eps}
    out = {}
    lengths = [1, 7, P // 2 + 3, P]
    for i, T in enumerate(lengths):
        ids = torch.randint(0, V, (1, T), generator=g)
        out["prompt%d" % i] = ids[0].to(torch.int32)
        out["logits%d" % i] = gpt2_logits(w, ref, ids)[0]
    bids = torch.randint(0, V, (3, 20), generator=g)
    out["batch_ids"] = bids.to(torch.int32)
    out["batch_logits"] = gpt2_logits(w, ref, bids)
    prompt = torch.randint(0, V, (1, P - 16 if variant == "c" else 5), generator=g)
    seq = prompt
    for _ in range(16):
        nxt = gpt2_logits(w, ref, seq)[0, -1].argmax().view(1, 1)
        seq = torch.cat([seq, nxt], dim=1)
    out["greedy_prompt"] = prompt[0].to(torch.int32)
    out["greedy_ids"] = seq[0, prompt.shape[1]:].to(torch.int32)
    write_golden(out_path(name + ".bin"), out)


def main():
    setup()
    g = torch.Generator().manual_seed(20240601)
    with torch.no_grad():
        build("gpt2_a", 300, 128, 64, 4, 2, 1e-5, g, "a")
        build("gpt2_b", 150, 96, 42, 3, 3, 1e-6, g, "b")
        build("gpt2_c", 200, 64, 32, 2, 2, 1e-5, g, "c")


if __name__ == "__main__":
    main()

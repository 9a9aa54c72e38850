#!/usr/bin/python3
"""torch_ref.py - the PyTorch side of bench/compare.py: the same measurements as `qkv bench --json`,
on the same shapes, printed as one JSON object of the same form.

Run with Debian's python3-torch (/usr/bin/python3). compare.py starts it with PyTorch's best setting on
these machines (see ../shared/bench/README.md): OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset,
OMP_WAIT_POLICY=PASSIVE, and torch.set_num_threads(--threads).

The model is a plain-PyTorch GPT-2 (what a PyTorch user writes, nanoGPT-style): token + learned
position embeddings, pre-LN blocks, fused qkv projection, causal attention by explicit scores + mask +
softmax (torch 1.13 has no fused scaled_dot_product_attention), GELU-tanh MLP, final LayerNorm, LM head
tied to the token embedding, AdamW. Dropout as asked (0 by default, as in the ../shared/bench anchors).
Generation uses a preallocated key/value cache (PyTorch at its best: no re-forward of the prompt, no
torch.cat per token), under torch.no_grad.

Measurements (each repeated --iters times after --warmup):
  train      forward with the cross-entropy loss, backward, AdamW step, zero_grad (set_to_none)
  prefill    the prompt forward (batch 1) filling the cache, next-token logits of the last position
  decode     --gen single-token steps after the prompt, the next id by argmax; per repetition
  attention  causal attention of q, k, v (1, H, T, 64) with requires_grad: forward, then backward of
             out.sum(); memory is the growth of the process's peak RSS during the measurement
"""
import argparse
import json
import math
import os
import resource
import sys
import time

import torch
import torch.nn as nn
import torch.nn.functional as F

MODELS = {  # vocab, positions, layers, heads, width
    "gpt2": (50257, 1024, 12, 12, 768),
    "small": (256, 128, 4, 4, 128),
    "tiny": (512, 256, 2, 4, 64),
}


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB


class Block(nn.Module):
    def __init__(self, C, H, P, p):
        super().__init__()
        self.H, self.p = H, p
        self.ln_1, self.ln_2 = nn.LayerNorm(C), nn.LayerNorm(C)
        self.c_attn, self.c_proj = nn.Linear(C, 3 * C), nn.Linear(C, C)
        self.c_fc, self.mlp_proj = nn.Linear(C, 4 * C), nn.Linear(4 * C, C)
        self.register_buffer("causal", torch.ones(P, P, dtype=torch.bool).tril())

    def attend(self, x, cache=None, pos=0):
        B, T, C = x.shape
        H, D = self.H, C // self.H
        q, k, v = (t.view(B, T, H, D).transpose(1, 2) for t in self.c_attn(x).split(C, dim=2))
        if cache is not None:  # write the new keys/values, attend over everything so far
            kc, vc = cache
            kc[:, :, pos:pos + T] = k
            vc[:, :, pos:pos + T] = v
            k, v = kc[:, :, :pos + T], vc[:, :, :pos + T]
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        mask = self.causal[pos:pos + T, :pos + T]
        att = att.masked_fill(~mask, float("-inf")).softmax(dim=-1)
        att = F.dropout(att, self.p, self.training)
        y = (att @ v).transpose(1, 2).reshape(B, T, C)
        return F.dropout(self.c_proj(y), self.p, self.training)

    def forward(self, x, cache=None, pos=0):
        x = x + self.attend(self.ln_1(x), cache, pos)
        h = F.gelu(self.c_fc(self.ln_2(x)), approximate="tanh")
        return x + F.dropout(self.mlp_proj(h), self.p, self.training)


class GPT(nn.Module):
    def __init__(self, V, P, L, H, C, p):
        super().__init__()
        self.p = p
        self.wte, self.wpe = nn.Embedding(V, C), nn.Embedding(P, C)
        self.h = nn.ModuleList(Block(C, H, P, p) for _ in range(L))
        self.ln_f = nn.LayerNorm(C)
        for name, w in self.named_parameters():
            if w.dim() == 2:
                nn.init.normal_(w, 0.0, 0.02)

    def forward(self, ids, caches=None, pos=0, last_only=False):
        T = ids.shape[1]
        x = self.wte(ids) + self.wpe(torch.arange(pos, pos + T))
        x = F.dropout(x, self.p, self.training)
        for i, b in enumerate(self.h):
            x = b(x, None if caches is None else caches[i], pos)
        if last_only:
            x = x[:, -1:]
        return self.ln_f(x) @ self.wte.weight.t()  # tied head


def repeat(fn, warmup, iters):
    ms = []
    for i in range(warmup + iters):
        t = fn()
        if i >= warmup:
            ms.append(t * 1e3)
    return ms


def entry(ms, tokens, **extra):
    s = sorted(ms)
    med = s[len(s) // 2] if len(s) % 2 else 0.5 * (s[len(s) // 2 - 1] + s[len(s) // 2])
    return dict(extra, tokens=tokens, ms_median=med, tokens_per_s=tokens / (med * 1e-3), ms=ms)


def bench_train(m, a, out):
    V = m.wte.weight.shape[0]
    opt = torch.optim.AdamW(m.parameters(), lr=1e-5, betas=(0.9, 0.999), weight_decay=0.01, foreach=a.foreach)
    g = torch.Generator().manual_seed(1)
    data = torch.randint(0, V, (a.B, a.T + 1), generator=g)
    x, y = data[:, :-1].contiguous(), data[:, 1:].contiguous()
    m.train()

    def step():
        t0 = time.perf_counter()
        logits = m(x)
        loss = F.cross_entropy(logits.view(-1, V), y.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        return time.perf_counter() - t0

    out["train"] = entry(repeat(step, a.warmup, a.iters), a.B * a.T, B=a.B, T=a.T, dropout=a.dropout)


@torch.no_grad()
def bench_infer(m, a, out, do_prefill, do_decode):
    V, C = m.wte.weight.shape
    L, H = len(m.h), m.h[0].H
    D = C // H
    m.eval()
    g = torch.Generator().manual_seed(2)
    ids = torch.randint(0, V, (1, a.prompt), generator=g)
    n = a.prompt + (a.gen if do_decode else 0)
    caches = [(torch.zeros(1, H, n, D), torch.zeros(1, H, n, D)) for _ in range(L)]

    def prefill():
        t0 = time.perf_counter()
        logits = m(ids, caches, 0, last_only=True)
        return time.perf_counter() - t0, logits

    if do_prefill:
        out["prefill"] = entry(repeat(lambda: prefill()[0], a.warmup, a.iters), a.prompt, T=a.prompt)
    if do_decode:
        def decode():
            _, logits = prefill()
            t0 = time.perf_counter()
            for i in range(a.gen):
                nxt = logits[:, -1].argmax(-1, keepdim=True)
                logits = m(nxt, caches, a.prompt + i)
            return time.perf_counter() - t0

        out["decode"] = entry(repeat(decode, a.warmup, a.iters), a.gen, prompt=a.prompt, new_tokens=a.gen)


def bench_attention(a, out):
    H, T, D = a.heads, a.T, 64
    g = torch.Generator().manual_seed(1)
    mask = torch.ones(T, T, dtype=torch.bool).tril()
    fwd, bwd = [], []
    rss0 = peak_rss_mib()
    for i in range(a.warmup + a.iters):
        q, k, v = (torch.randn(1, H, T, D, generator=g).requires_grad_() for _ in range(3))
        t0 = time.perf_counter()
        att = (q @ k.transpose(-2, -1)) * (1.0 / math.sqrt(D))
        o = att.masked_fill(~mask, float("-inf")).softmax(dim=-1) @ v
        t1 = time.perf_counter()
        o.sum().backward()
        t2 = time.perf_counter()
        if i >= a.warmup:
            fwd.append((t1 - t0) * 1e3)
            bwd.append((t2 - t1) * 1e3)
        del q, k, v, att, o
    grew = peak_rss_mib() - rss0
    out["attention_fwd"] = entry(fwd, T, T=T, H=H, D=D, peak_rss_growth_mib=grew)
    out["attention_bwd"] = entry(bwd, T, T=T, H=H, D=D, peak_rss_growth_mib=grew)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--train", action="store_true")
    ap.add_argument("--prefill", action="store_true")
    ap.add_argument("--decode", action="store_true")
    ap.add_argument("--attention", action="store_true")
    ap.add_argument("--model", choices=sorted(MODELS), default="gpt2")
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=64)
    ap.add_argument("--dropout", type=float, default=0.0)
    ap.add_argument("--prompt", type=int, default=64)
    ap.add_argument("--gen", type=int, default=128)
    ap.add_argument("--heads", type=int, default=12)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--foreach", type=int, default=0, help="AdamW foreach implementation (0 or 1)")
    a = ap.parse_args()
    a.foreach = bool(a.foreach)
    torch.set_num_threads(a.threads)
    out = {"torch": torch.__version__, "threads": torch.get_num_threads(),
           "env": {k: os.environ.get(k, "(unset)") for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE", "OMP_WAIT_POLICY")}}
    if a.train or a.prefill or a.decode:
        V, P, L, H, C = MODELS[a.model]
        torch.manual_seed(0)
        m = GPT(V, P, L, H, C, a.dropout)
        out["model"] = a.model
        out["params"] = sum(p.numel() for p in m.parameters())
        if a.train:
            bench_train(m, a, out)
        if a.prefill or a.decode:
            bench_infer(m, a, out, a.prefill, a.decode)
    if a.attention:
        bench_attention(a, out)
    out["peak_rss_mib"] = peak_rss_mib()
    json.dump(out, sys.stdout)
    print()


if __name__ == "__main__":
    main()

"""gen_blocks.py - PyTorch references for the nn blocks and the ops under them (read by
tests/test_torch_blocks.c): scaled dot-product attention, nn.MultiheadAttention, nn.TransformerEncoderLayer /
DecoderLayer and their stacks, LayerNorm, Linear, GELU (erf and tanh), softmax, log_softmax,
cross-entropy, embeddings with learned positions, Bahdanau and Luong attention.

Every case is a set of entries "<case>/<what>":
  in/<name>   float inputs (the C test feeds them, gradients wanted)     gin/<name>  their gradients
  p/<name>    parameters under the module's state-dict key               gp/<name>   their gradients
  out         forward output                                             w           random W; loss = sum(out * W)
  weights     per-head attention probabilities, when the case has them
  kpm, mkpm   key padding masks (uint8, 1 = padding, PyTorch True = blocked)
  ids, targets  int32 inputs
  cfg         int32 settings the C side needs (see each builder)
Gradients come from backward() of sum(out * W), so every input and parameter gradient is checked.

Modules run in training mode with dropout 0: that keeps PyTorch 1.13 off its inference "fast path"
(which differs numerically and has no backward), and dropout 0 makes training mode deterministic.
F.scaled_dot_product_attention does not exist in 1.13: the attention reference is written out.
Parameters are randomised away from their initial values (LayerNorm ones/zeros, MHA zero biases,
and the identical copies nn.TransformerEncoder makes of its layer) so that each one matters.
"""
import math

import torch
import torch.nn as nn
import torch.nn.functional as F

from golden import out_path, setup, write_golden

G = {}


def put(case, what, v):
    G["%s/%s" % (case, what)] = v


def lengths_mask(lengths, T):
    """(B,T) bool, True at padded positions (t >= length)."""
    return torch.arange(T)[None, :] >= torch.tensor(lengths)[:, None]


def randomize(module):
    with torch.no_grad():
        for p in module.parameters():
            p.add_(0.1 * torch.randn_like(p))


def finish(case, out, inputs, module=None, extra=None):
    """Draws W, backprops sum(out * W), stores inputs, params, out, W and every gradient."""
    w = torch.randn_like(out)
    (out * w).sum().backward()
    put(case, "out", out)
    put(case, "w", w)
    for name, t in inputs.items():
        put(case, "in/" + name, t)
        put(case, "gin/" + name, t.grad if t.grad is not None else torch.zeros_like(t))
    if module is not None:
        for name, p in module.named_parameters():
            put(case, "p/" + name, p)
            put(case, "gp/" + name, p.grad if p.grad is not None else torch.zeros_like(p))
    for name, t in (extra or {}).items():
        put(case, name, t)


def leaf(*shape, scale=1.0, shift=0.0):
    return (torch.randn(*shape) * scale + shift).requires_grad_(True)


# ---- scaled dot-product attention (qkv_attention) ----

def ref_attention(q, k, v, H, causal, kpm):
    """softmax(q k^T / sqrt(D) + mask) v per head; q (B,Tq,H*D) -> (B,Tq,H*Dv). causal aligns the
    last query with the last key (query i sees keys j <= i + Tk - Tq), as qkv_attn_opts says."""
    B, Tq, E = q.shape
    Tk = k.shape[1]
    D, Dv = E // H, v.shape[2] // H
    qh = q.view(B, Tq, H, D).transpose(1, 2)
    kh = k.view(B, Tk, H, D).transpose(1, 2)
    vh = v.view(B, Tk, H, Dv).transpose(1, 2)
    s = torch.matmul(qh, kh.transpose(-1, -2)) * (1.0 / math.sqrt(D))
    blocked = torch.zeros(B, 1, Tq, Tk, dtype=torch.bool)
    if causal:
        i = torch.arange(Tq)[:, None]
        j = torch.arange(Tk)[None, :]
        blocked = blocked | (j > i + (Tk - Tq))[None, None]
    if kpm is not None:
        blocked = blocked | kpm[:, None, None, :]
    p = torch.softmax(s.masked_fill(blocked, float("-inf")), dim=-1)
    o = torch.matmul(p, vh).transpose(1, 2).reshape(B, Tq, H * Dv)
    return o, p


def case_attention(case, B, Tq, Tk, E, H, causal, lengths=None, Ev=None):
    q, k, v = leaf(B, Tq, E), leaf(B, Tk, E), leaf(B, Tk, Ev or E)
    kpm = lengths_mask(lengths, Tk) if lengths else None
    o, p = ref_attention(q, k, v, H, causal, kpm)
    extra = {"cfg": torch.tensor([H, causal], dtype=torch.int32), "weights": p}
    if kpm is not None:
        extra["kpm"] = kpm
    finish(case, o, {"q": q, "k": k, "v": v}, None, extra)


# ---- nn.MultiheadAttention ----

def case_mha(case, B, Tq, Tk, E, H, self_attn, causal, lengths=None):
    mha = nn.MultiheadAttention(E, H, dropout=0.0, batch_first=True)
    randomize(mha)
    mha.train()
    query = leaf(B, Tq, E)
    inputs = {"query": query}
    if self_attn:
        key = query
    else:
        key = leaf(B, Tk, E)
        inputs["key"] = key
    kpm = lengths_mask(lengths, Tk) if lengths else None
    mask = torch.triu(torch.ones(Tq, Tk, dtype=torch.bool), diagonal=1) if causal else None
    out, wts = mha(query, key, key, key_padding_mask=kpm, attn_mask=mask, need_weights=True,
                   average_attn_weights=False)
    with torch.no_grad():  # the written-out reference agrees with PyTorch's own module
        wq, wk, wv = mha.in_proj_weight.chunk(3)
        bq, bk, bv = mha.in_proj_bias.chunk(3)
        o, p = ref_attention(F.linear(query, wq, bq), F.linear(key, wk, bk), F.linear(key, wv, bv), H, causal, kpm)
        assert torch.allclose(mha.out_proj(o), out, atol=1e-5) and torch.allclose(p, wts, atol=1e-6), case
    extra = {"cfg": torch.tensor([H, causal, self_attn], dtype=torch.int32), "weights": wts}
    if kpm is not None:
        extra["kpm"] = kpm
    finish(case, out, inputs, mha, extra)


# ---- Transformer layers and stacks ----

ACT = {"relu": 0, "gelu": 1}


def causal_mask(T):
    return torch.triu(torch.ones(T, T, dtype=torch.bool), diagonal=1)


def case_encoder(case, B, T, E, H, F_, norm_first, act, causal, lengths, n_layers=0, final_norm=False):
    """n_layers 0: a single nn.TransformerEncoderLayer; otherwise nn.TransformerEncoder(n_layers, norm)."""
    layer = nn.TransformerEncoderLayer(E, H, dim_feedforward=F_, dropout=0.0, activation=act, batch_first=True,
                                       norm_first=norm_first)
    if n_layers:
        mod = nn.TransformerEncoder(layer, n_layers, norm=nn.LayerNorm(E) if final_norm else None,
                                    enable_nested_tensor=False)
    else:
        mod = layer
    randomize(mod)
    mod.train()
    x = leaf(B, T, E)
    kpm = lengths_mask(lengths, T) if lengths else None
    mask = causal_mask(T) if causal else None
    if n_layers:
        out = mod(x, mask=mask, src_key_padding_mask=kpm)
    else:
        out = mod(x, src_mask=mask, src_key_padding_mask=kpm)
    cfg = [H, F_, int(norm_first), ACT[act], int(causal), n_layers, int(final_norm)]
    extra = {"cfg": torch.tensor(cfg, dtype=torch.int32)}
    if kpm is not None:
        extra["kpm"] = kpm
    finish(case, out, {"x": x}, mod, extra)


def case_decoder(case, B, T, S, E, H, F_, norm_first, act, causal, tgt_lengths, mem_lengths, n_layers=0,
                 final_norm=False):
    layer = nn.TransformerDecoderLayer(E, H, dim_feedforward=F_, dropout=0.0, activation=act, batch_first=True,
                                       norm_first=norm_first)
    if n_layers:
        mod = nn.TransformerDecoder(layer, n_layers, norm=nn.LayerNorm(E) if final_norm else None)
    else:
        mod = layer
    randomize(mod)
    mod.train()
    x, memory = leaf(B, T, E), leaf(B, S, E)
    kpm = lengths_mask(tgt_lengths, T) if tgt_lengths else None
    mkpm = lengths_mask(mem_lengths, S) if mem_lengths else None
    out = mod(x, memory, tgt_mask=causal_mask(T) if causal else None, tgt_key_padding_mask=kpm,
              memory_key_padding_mask=mkpm)
    cfg = [H, F_, int(norm_first), ACT[act], int(causal), n_layers, int(final_norm)]
    extra = {"cfg": torch.tensor(cfg, dtype=torch.int32)}
    if kpm is not None:
        extra["kpm"] = kpm
    if mkpm is not None:
        extra["mkpm"] = mkpm
    finish(case, out, {"x": x, "memory": memory}, mod, extra)


# ---- single ops and small modules ----

def case_layernorm(case):
    ln = nn.LayerNorm(20, eps=1e-5)
    randomize(ln)
    x = leaf(2, 7, 20, scale=2.0, shift=3.0)  # an offset mean tests the variance formula
    finish(case, ln(x), {"x": x}, ln)


def case_linear(case):
    lin = nn.Linear(20, 13)
    x = leaf(2, 7, 20)
    finish(case, lin(x), {"x": x}, lin)


def case_unary(case, fn, *shape, scale=1.0, spike=None):
    x = torch.randn(*shape) * scale
    if spike is not None:  # a row with a large offset: softmax must subtract the max
        x[0] += spike
    x.requires_grad_(True)
    finish(case, fn(x), {"x": x})


def case_cross_entropy(case):
    B, T, V = 2, 5, 11
    logits = leaf(B, T, V, scale=2.0)
    targets = torch.randint(0, V, (B, T))
    targets[0, 1] = -100
    targets[1, 3] = -100
    targets[1, 4] = -100
    loss = F.cross_entropy(logits.view(-1, V), targets.view(-1), ignore_index=-100)
    finish(case, loss, {"logits": logits}, None, {"targets": targets})


class Positions(nn.Module):
    """token embedding + learned positions (GPT-2 wte + wpe); state dict tok.weight, pos.weight."""

    def __init__(self, V, P, C):
        super().__init__()
        self.tok = nn.Embedding(V, C)
        self.pos = nn.Embedding(P, C)

    def forward(self, ids, offset):
        T = ids.shape[1]
        return self.tok(ids) + self.pos(torch.arange(offset, offset + T))[None]


def case_embedding(case):
    V, P, C, B, T, offset = 13, 10, 6, 2, 5, 3
    mod = Positions(V, P, C)
    ids = torch.randint(0, V, (B, T))
    ids[1, 2] = ids[0, 0]  # a repeated id: its gradient rows must add up
    finish(case, mod(ids, offset), {}, mod, {"ids": ids, "cfg": torch.tensor([offset], dtype=torch.int32)})


class Bahdanau(nn.Module):
    def __init__(self, Cq, Ck, A):
        super().__init__()
        self.W = nn.Linear(Cq, A, bias=False)
        self.U = nn.Linear(Ck, A, bias=False)
        self.v = nn.Linear(A, 1, bias=False)

    def forward(self, s, h, kpm):
        scores = self.v(torch.tanh(self.W(s)[:, :, None, :] + self.U(h)[:, None, :, :])).squeeze(-1)
        p = torch.softmax(scores.masked_fill(kpm[:, None, :], float("-inf")), dim=-1)
        return torch.matmul(p, h), p


class Luong(nn.Module):
    def __init__(self, Cq, Ck, general):
        super().__init__()
        self.W = nn.Linear(Ck, Cq, bias=False) if general else None

    def forward(self, s, h, kpm):
        hk = self.W(h) if self.W is not None else h
        scores = torch.matmul(s, hk.transpose(1, 2))
        p = torch.softmax(scores.masked_fill(kpm[:, None, :], float("-inf")), dim=-1)
        return torch.matmul(p, h), p


def case_rnn_attention(case, mod, Cq, Ck):
    B, Tq, Tk = 2, 4, 7
    s, h = leaf(B, Tq, Cq), leaf(B, Tk, Ck)
    kpm = lengths_mask([7, 5], Tk)
    out, p = mod(s, h, kpm)
    finish(case, out, {"query": s, "keys": h}, mod, {"kpm": kpm, "weights": p})


def main():
    setup()
    # attention kernel: D = 5 (not a multiple of 8), T = 64, padding, cross, a one-query decode step
    case_attention("attn_nomask", 2, 7, 7, 20, 4, 0)
    case_attention("attn_causal64", 2, 64, 64, 20, 4, 1)
    case_attention("attn_pad", 3, 9, 9, 24, 3, 0, lengths=[9, 5, 1])
    case_attention("attn_cross", 2, 5, 11, 20, 2, 0, lengths=[11, 6])
    case_attention("attn_cross_causal", 2, 4, 10, 16, 2, 1, Ev=24)
    case_attention("attn_decode", 2, 1, 9, 20, 4, 1, lengths=[9, 6])
    # nn.MultiheadAttention
    case_mha("mha_self_pad", 3, 6, 6, 20, 4, 1, 0, lengths=[6, 3, 1])
    case_mha("mha_causal64", 2, 64, 64, 16, 2, 1, 1)
    case_mha("mha_cross", 2, 5, 8, 20, 4, 0, 0, lengths=[8, 4])
    # Transformer layers: post-LN / pre-LN x relu / gelu
    for nf in (False, True):
        for act in ("relu", "gelu"):
            tag = ("pre" if nf else "post") + "_" + act
            case_encoder("enc_" + tag, 2, 7, 20, 4, 40, nf, act, False, [7, 4])
            case_decoder("dec_" + tag, 2, 6, 8, 20, 4, 40, nf, act, True, [6, 4] if nf else None, [8, 5])
    case_encoder("enc_pre_gelu_causal64", 2, 64, 20, 4, 40, True, "gelu", True, None)
    # stacks
    case_encoder("encstack_pre_gelu", 2, 7, 20, 4, 40, True, "gelu", False, [7, 3], n_layers=2, final_norm=True)
    case_encoder("encstack_post_relu", 2, 7, 20, 4, 40, False, "relu", False, [5, 7], n_layers=2)
    case_decoder("decstack_pre_relu", 2, 6, 8, 20, 4, 40, True, "relu", True, None, [8, 5], n_layers=2,
                 final_norm=True)
    # ops and small modules
    case_layernorm("layernorm")
    case_linear("linear")
    case_unary("gelu", lambda x: F.gelu(x), 3, 50, scale=3.0)
    case_unary("gelu_tanh", lambda x: F.gelu(x, approximate="tanh"), 3, 50, scale=3.0)
    case_unary("softmax", lambda x: torch.softmax(x, dim=-1), 2, 3, 13, scale=3.0, spike=50.0)
    case_unary("log_softmax", lambda x: torch.log_softmax(x, dim=-1), 2, 3, 13, scale=3.0, spike=50.0)
    case_cross_entropy("cross_entropy")
    case_embedding("embedding_positions")
    case_rnn_attention("bahdanau", Bahdanau(6, 10, 8), 6, 10)
    case_rnn_attention("luong_dot", Luong(10, 10, False), 10, 10)
    case_rnn_attention("luong_general", Luong(6, 10, True), 6, 10)
    write_golden(out_path("blocks.bin"), G)


if __name__ == "__main__":
    main()

"""gen_sampling.py - golden filtered distributions for the sampler (tests/test_torch_sampling.c).

Re-implements, in PyTorch, the three Hugging Face logits warpers that generate(do_sample=True)
applies, in generate()'s order, with HF's own tensor operations:
  TemperatureLogitsWarper  scores / temperature
  TopKLogitsWarper         scores < topk(scores, k).values[-1]  ->  -inf
  TopPLogitsWarper         sort ascending, cumsum of softmax, remove where cum <= 1 - top_p,
                           always keep the last (most probable) one, scatter back  ->  -inf
then softmax. Each case's logits are random; a case is only kept when no id sits within 1e-4 of a
top-k or top-p decision boundary (float32 here vs double in C must not flip a decision).
Writes sampling.bin: case{i}_logits (V), case{i}_opts [temperature, top_k, top_p], case{i}_probs (V).
"""
import torch

from golden import out_path, setup, write_golden


def temperature_warp(scores, t):
    return scores / t


def top_k_warp(scores, k):
    k = min(max(k, 1), scores.size(-1))
    kth = torch.topk(scores, k)[0][..., -1, None]
    return scores.masked_fill(scores < kth, -float("inf"))


def top_p_warp(scores, p):
    sorted_logits, sorted_indices = torch.sort(scores, descending=False)
    cum = sorted_logits.softmax(dim=-1).cumsum(dim=-1)
    remove = cum <= (1 - p)
    remove[..., -1:] = 0
    remove = remove.scatter(-1, sorted_indices, remove)
    return scores.masked_fill(remove, -float("inf"))


def hf_probs(logits, t, k, p):
    s = logits.clone()[None, :]
    if t != 1.0:
        s = temperature_warp(s, t)
    if k != 0:
        s = top_k_warp(s, k)
    if p < 1.0:
        s = top_p_warp(s, p)
    return s.softmax(dim=-1)[0]


def safe(logits, t, k, p):
    """No decision within 1e-4 of its boundary, computed in float64."""
    x = logits.double() / t
    if k != 0 and k < x.numel():
        v = torch.sort(x, descending=True).values
        if v[k - 1] - v[k] < 1e-4 * max(1.0, abs(float(v[k - 1]))):
            return False
        x = x.masked_fill(x < v[k - 1], -float("inf"))
    if p < 1.0:
        probs = torch.sort(x.softmax(-1), descending=True).values
        cum = probs.cumsum(-1)
        if torch.min(torch.abs(cum - p)) < 1e-4:
            return False
    return True


def main():
    setup()
    g = torch.Generator().manual_seed(2024)
    settings = [
        (64, 1.0, 0, 1.0, 1.0),
        (64, 0.7, 0, 1.0, 2.0),
        (64, 1.0, 10, 1.0, 2.0),
        (64, 1.0, 0, 0.9, 2.0),
        (64, 0.8, 20, 0.8, 2.0),
        (64, 1.5, 5, 0.5, 3.0),
        (300, 1.2, 50, 0.95, 4.0),
        (300, 0.5, 0, 0.6, 1.0),
        (1000, 1.0, 0, 0.9, 5.0),
        (1000, 0.9, 40, 0.92, 5.0),
        (17, 2.0, 17, 0.99, 1.0),
        (17, 1.0, 1, 0.5, 1.0),
    ]
    out = {}
    for i, (V, t, k, p, scale) in enumerate(settings):
        for _ in range(100):
            logits = (torch.randn(V, generator=g) * scale).float()
            if safe(logits, t, k, p):
                break
        else:
            raise SystemExit("gen_sampling: no safe logits for case %d" % i)
        out["case%d_logits" % i] = logits
        out["case%d_opts" % i] = torch.tensor([t, float(k), p], dtype=torch.float32)
        out["case%d_probs" % i] = hf_probs(logits, t, k, p)
    out["n_cases"] = torch.tensor([len(settings)], dtype=torch.int32)
    write_golden(out_path("sampling.bin"), out)


if __name__ == "__main__":
    main()

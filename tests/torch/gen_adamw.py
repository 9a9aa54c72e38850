"""gen_adamw.py - optimizer parity goldens (adamw.bin) for tests/test_torch_adamw.c.

A small MLP, x (8,6) -> Linear(6,16) -> GELU (exact) -> Linear(16,5) -> cross_entropy with one
target ignored (-100), trained from random weights by
  adamw.*: 10 steps of AdamW(lr 1e-2, betas (0.9, 0.999), eps 1e-8, weight_decay 0.1), biases in a
           no-decay group, clip_grad_norm_(MAX_NORM = 0.95) before each step, and the Hugging Face linear
           warmup/decay schedule (warmup 3, total 10) written out as a LambdaLR;
  sgd.*:   5 steps of SGD(lr 0.05, momentum 0.9, weight_decay 0.01) from the same weights, same clipping.
Per step s it records the loss and the total gradient norm (before clipping) of the forward/backward
at the weights before the step, the lr the step used, and every parameter after the step.
The inputs are scaled so that clipping triggers in the early steps and not in all of them.
"""
import torch
import torch.nn.functional as F

from golden import out_path, setup, write_golden

# Gradient norms here run from 1.04 down to 0.85: 0.95 clips the first steps of both runs and not
# the later ones, so both paths of clip_grad_norm_ (scaled, left alone) are compared.
MAX_NORM = 0.95


def model_and_data():
    setup()
    model = torch.nn.Sequential(torch.nn.Linear(6, 16), torch.nn.GELU(), torch.nn.Linear(16, 5))
    x = torch.randn(8, 6) * 1.5
    targets = torch.randint(0, 5, (8,), dtype=torch.int64)
    targets[5] = -100  # ignored position
    return model, x, targets


def linear_warmup_decay(warmup, total):
    # transformers.get_linear_schedule_with_warmup
    def f(step):
        if step < warmup:
            return float(step) / float(max(1, warmup))
        return max(0.0, float(total - step) / float(max(1, total - warmup)))
    return f


def train(prefix, model, x, targets, opt, sched, steps, out):
    for s in range(steps):
        opt.zero_grad()
        loss = F.cross_entropy(model(x), targets, ignore_index=-100)
        loss.backward()
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), MAX_NORM)
        lr = opt.param_groups[0]["lr"]
        opt.step()
        if sched is not None:
            sched.step()
        out["%s.step%d.loss" % (prefix, s)] = loss.detach().reshape(1)
        out["%s.step%d.grad_norm" % (prefix, s)] = norm.detach().reshape(1)
        out["%s.step%d.lr" % (prefix, s)] = torch.tensor([lr], dtype=torch.float32)
        for name, p in model.named_parameters():
            out["%s.step%d.%s" % (prefix, s, name)] = p.detach().clone()
        print("%s step %d: loss %.6f grad_norm %.6f (%s) lr %.6g" % (
            prefix, s, loss.item(), norm.item(), "clipped" if norm.item() > MAX_NORM else "not clipped", lr))


def main():
    model, x, targets = model_and_data()
    out = {"x": x, "targets": targets.to(torch.int32), "max_norm": torch.tensor([MAX_NORM])}
    init = {name: p.detach().clone() for name, p in model.named_parameters()}
    for name, p in init.items():
        out["init." + name] = p

    decay = [p for n, p in model.named_parameters() if not n.endswith("bias")]
    no_decay = [p for n, p in model.named_parameters() if n.endswith("bias")]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": 0.1},
                             {"params": no_decay, "weight_decay": 0.0}],
                            lr=1e-2, betas=(0.9, 0.999), eps=1e-8, foreach=False)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, linear_warmup_decay(3, 10))
    train("adamw", model, x, targets, opt, sched, 10, out)

    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(init[name])
    opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=0.01, foreach=False)
    train("sgd", model, x, targets, opt, None, 5, out)

    write_golden(out_path("adamw.bin"), out)


if __name__ == "__main__":
    main()

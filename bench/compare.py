#!/usr/bin/python3
"""compare.py - qkv beside PyTorch on the same shapes, in the same run (bench/compare.sh starts it).

For each case it runs `qkv bench --json` and bench/torch_ref.py alternately (qkv first in odd rounds,
PyTorch first in even ones, so neither always gets the cooler machine), each in its own process, and
pools every timed repetition of every round. For prompt forward and decode, llama.cpp's own llama-bench
(built here from source by bench/llama_setup.sh, on a GPT-2 124M-shaped float32 GGUF) takes its turn in
the same rotation when it is set up: `-p 64 -n 128 -d 0,64`, so that its prompt forward from an empty
cache and its 128 decode steps after 64 cached positions are the same work as qkv's and PyTorch's, and
its tg128 from an empty cache (the README anchor's measure) is printed too. It prints, per case, the median and min-max of both sides,
the ratio qkv / PyTorch of the medians (below 1: qkv is faster) and the speed-up PyTorch / qkv, tokens/s,
for training steps the achieved GFLOP/s and the share of the machine's measured fp32 FMA peak, and the
peak resident memory of each process. Attention cases also print the memory the computation itself took:
qkv's arena peak (q, k, v, out, their gradients, workspace) and the growth of PyTorch's peak RSS.

Not a test: nothing is asserted. Figures move with the machine's load; run it on an idle machine and
look at the min-max ranges before believing a ratio.
"""
import argparse
import json
import os
import re
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)

GPT2 = dict(V=50257, L=12, C=768)
SMALL = dict(V=256, L=4, C=128)


def run_json(cmd, env):
    t0 = time.time()
    p = subprocess.run(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    if p.returncode != 0:
        raise SystemExit("compare: %s failed (exit %d): %s" % (" ".join(cmd), p.returncode, p.stderr.strip()[-400:]))
    lines = [l for l in p.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise SystemExit("compare: %s printed no JSON: %s" % (" ".join(cmd), p.stdout[-400:]))
    d = json.loads(lines[-1])
    d["_wall_s"] = time.time() - t0
    return d


def run_llama(cmd):
    """llama-bench -o json: its samples (ns) per test, and the peak RSS of that one process (wait4)."""
    t0 = time.time()
    with open(os.devnull, "w") as null:
        p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=null, text=True)
        out = p.stdout.read()
        _, status, ru = os.wait4(p.pid, 0)
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit("compare: %s failed (exit %d)" % (" ".join(cmd), p.returncode))
    tests = json.loads(out)

    def ms(n_prompt, n_gen, depth):
        for t in tests:
            if t["n_prompt"] == n_prompt and t["n_gen"] == n_gen and t.get("n_depth", 0) == depth:
                return [x / 1e6 for x in t["samples_ns"]]
        raise SystemExit("compare: llama-bench printed no test p=%d n=%d d=%d" % (n_prompt, n_gen, depth))

    return {"prefill": {"ms": ms(64, 0, 0)}, "decode": {"ms": ms(0, 128, 64)}, "decode_d0": {"ms": ms(0, 128, 0)},
            "peak_rss_mib": ru.ru_maxrss / 1024.0, "build": tests[0].get("build_commit"),
            "type_k": tests[0].get("type_k"), "flash_attn": tests[0].get("flash_attn"), "_wall_s": time.time() - t0}


def med(xs):
    return statistics.median(xs)


def fmt_range(xs, unit_fmt="%.1f"):
    return (unit_fmt + " [" + unit_fmt + "-" + unit_fmt + "]") % (med(xs), min(xs), max(xs))


def measured_peak(qkv_build):
    exe = os.path.join(qkv_build, "bench_peak")
    if not os.path.exists(exe):
        return None
    out = subprocess.run([exe, "5"], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"1 thread ([0-9.]+) GFLOP/s, 2 threads ([0-9.]+) GFLOP/s", out)
    return (float(m.group(1)), float(m.group(2))) if m else None


def measured_bandwidth(qkv_build, threads):
    exe = os.path.join(qkv_build, "bench_stream")
    if not os.path.exists(exe):
        return None
    out = subprocess.run([exe, "5"], stdout=subprocess.PIPE, text=True).stdout
    m = re.search(r"^%d threads?: ([0-9.]+) GB/s" % min(threads, 2), out, re.M)
    return float(m.group(1)) if m else None


def main():
    ap = argparse.ArgumentParser(description="qkv beside PyTorch, alternating, on the same shapes")
    ap.add_argument("--qkv", default=os.path.join(ROOT, "build", "qkv"), help="the qkv binary")
    ap.add_argument("--rounds", type=int, default=2, help="alternations per case (default 2)")
    ap.add_argument("--threads", type=int, default=2, help="threads for both sides (default 2)")
    ap.add_argument("--quick", action="store_true", help="fewer repetitions, attention up to T=2048 only")
    ap.add_argument("--cases", default="all",
                    help="comma-separated subset of: train64, train256, small, infer, attention")
    ap.add_argument("--max-torch-attn-gib", type=float, default=12.0,
                    help="skip PyTorch attention cases whose T x T matrices (5 live) would exceed this")
    ap.add_argument("--llama", default=os.path.join(HERE, ".llama"),
                    help="where bench/llama_setup.sh put llama.cpp (build/bin/llama-bench, gpt2-124m-f32.gguf); "
                         "'none' leaves llama.cpp out")
    ap.add_argument("--out", help="also write every raw result here as JSON")
    a = ap.parse_args()
    if not os.path.exists(a.qkv):
        raise SystemExit("compare: %s not found: build first (cmake -S . -B build && cmake --build build -j)" % a.qkv)
    cases = {"train64", "train256", "small", "infer", "attention"} if a.cases == "all" else set(a.cases.split(","))
    bad = cases - {"train64", "train256", "small", "infer", "attention"}
    if bad:
        raise SystemExit("compare: unknown case(s) %s" % ", ".join(sorted(bad)))

    torch_env = dict(os.environ)
    for k in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
        torch_env.pop(k, None)
    torch_env["OMP_WAIT_POLICY"] = "PASSIVE"
    blas = "/usr/lib/x86_64-linux-gnu/openblas-openmp"
    if os.path.exists(os.path.join(blas, "libblas.so.3")):
        torch_env["LD_LIBRARY_PATH"] = blas + ((":" + torch_env["LD_LIBRARY_PATH"]) if torch_env.get("LD_LIBRARY_PATH") else "")
        blas_note = "OpenBLAS (OpenMP build, %s)" % blas
    else:
        blas_note = "WARNING: libopenblas0-openmp is not installed, PyTorch falls back to whatever libblas.so.3 is " \
                    "(the reference BLAS is ~30x slower): run scripts/install-deps.sh --bench"
    qkv_env = dict(os.environ)
    qkv_env["OMP_NUM_THREADS"] = str(a.threads)
    torch_cmd = ["/usr/bin/python3", os.path.join(HERE, "torch_ref.py"), "--threads", str(a.threads)]
    qkv_cmd = [a.qkv, "bench", "--json", "--threads", str(a.threads)]

    llama_bench = os.path.join(a.llama, "build", "bin", "llama-bench")
    llama_model = os.path.join(a.llama, "gpt2-124m-f32.gguf")
    have_llama = a.llama != "none" and os.path.exists(llama_bench) and os.path.exists(llama_model)

    peak = measured_peak(os.path.dirname(a.qkv))
    print("qkv vs PyTorch, %d threads each, %d alternating rounds per case%s" %
          (a.threads, a.rounds, " (quick)" if a.quick else ""))
    print("machine: %s, %d cores; load average at start %.2f" %
          (open("/proc/cpuinfo").read().split("model name")[1].split(":")[1].split("\n")[0].strip()
           if os.path.exists("/proc/cpuinfo") else "?", os.cpu_count(), os.getloadavg()[0]))
    if peak:
        print("measured fp32 FMA peak (build/bench_peak): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s" % peak)
    print("qkv:     %s   (OMP_NUM_THREADS=%d)" % (" ".join(qkv_cmd), a.threads))
    print("PyTorch: %s   (env: OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset, OMP_WAIT_POLICY=PASSIVE, "
          "torch.set_num_threads(%d); BLAS: %s)" % (" ".join(torch_cmd), a.threads, blas_note))
    print("PyTorch's setting: the best of those measured on these machines (../shared/bench/README.md); "
          "AdamW foreach=False, which measured faster here than foreach=True.")
    if have_llama:
        print("llama.cpp: %s -m %s -t %d (built from source with -DGGML_NATIVE=ON by bench/llama_setup.sh; "
              "float32 weights, its default F16 KV cache and flash attention 'auto')" % (llama_bench, llama_model, a.threads))
    elif "infer" in cases:
        print("llama.cpp: not set up (bash bench/llama_setup.sh adds it to the prompt forward and decode rows)")
    print("Each cell: median [min-max] over every timed repetition of every round. ratio = qkv / PyTorch "
          "(medians; < 1 means qkv is faster), speed-up = PyTorch / qkv.\n", flush=True)

    raw = {"threads": a.threads, "peak_gflops": peak, "cases": []}
    peak2 = peak[1] if peak and a.threads >= 2 else (peak[0] if peak else None)

    def both(label, qargs, targs, lcmd=None):
        """Every round runs each side once; the order rotates so that no side always goes first."""
        res = {"qkv": [], "torch": []}
        sides = [("qkv", qkv_cmd + qargs, qkv_env), ("torch", torch_cmd + targs, torch_env)]
        if lcmd:
            res["llama"] = []
            sides.append(("llama", lcmd, None))
        for r in range(a.rounds):
            k = r % len(sides)
            for side, cmd, env in sides[k:] + sides[:k] if len(sides) > 2 else (sides[::-1] if r % 2 else sides):
                res[side].append(run_llama(cmd) if side == "llama" else run_json(cmd, env))
        raw["cases"].append({"case": label, "qkv_args": qargs, "torch_args": targs, "llama_cmd": lcmd, **res})
        return res

    def pool(runs, key, field="ms"):
        return [x for d in runs for x in d[key][field]]

    def row(label, q, t, unit, tokens=None, flop=None):
        rq, rt = med(q) / med(t), med(t) / med(q)
        print("%-42s qkv %-26s PyTorch %-28s ratio %.3f  speed-up %.2fx" %
              (label + " " + unit, fmt_range(q), fmt_range(t), rq, rt))
        if tokens:
            extra = "    tokens/s qkv %.1f, PyTorch %.1f" % (tokens / (med(q) * 1e-3), tokens / (med(t) * 1e-3))
            if flop:
                gq, gt = flop / (med(q) * 1e-3) / 1e9, flop / (med(t) * 1e-3) / 1e9
                extra += "; GFLOP/s qkv %.1f, PyTorch %.1f" % (gq, gt)
                if peak2:
                    extra += " (%.0f%% and %.0f%% of the measured peak %.0f)" % (100 * gq / peak2, 100 * gt / peak2, peak2)
            print(extra)

    def llama_row(label, q, l, tokens):
        print("    vs llama.cpp, %s: qkv %s ms, llama.cpp %s ms; ratio qkv / llama.cpp %.3f, tokens/s qkv %.1f, "
              "llama.cpp %.1f" % (label, fmt_range(q), fmt_range(l), med(q) / med(l), tokens / (med(q) * 1e-3),
                                  tokens / (med(l) * 1e-3)))

    def rss(res):
        return "    peak RSS per process (MiB): qkv %s, PyTorch %s" % (
            fmt_range([d["peak_rss_mib"] for d in res["qkv"]], "%.0f"),
            fmt_range([d["peak_rss_mib"] for d in res["torch"]], "%.0f"))

    def train_case(label, model, B, T, qi, ti):
        shape = GPT2 if model == "gpt2" else SMALL
        # two warm-up steps on both sides: the first steps grow the allocators (qkv's arena reaches its
        # single peak-sized block on the second step) and fault their pages in
        res = both(label, ["--model", model, "--train", "--b", str(B), "--t", str(T), "--dropout", "0",
                           "--iters", str(qi), "--warmup", "2"],
                   ["--model", model, "--train", "--B", str(B), "--T", str(T), "--dropout", "0",
                    "--iters", str(ti), "--warmup", "2"])
        n = res["qkv"][0]["params"]
        tokens = B * T
        flop = tokens * (6.0 * n + 6.0 * shape["L"] * T * shape["C"])
        row(label, pool(res["qkv"], "train"), pool(res["torch"], "train"), "ms/step", tokens, flop)
        print("    FLOP per step = tokens x (6 N + 6 L T C) = %.1f GFLOP (N = %d parameters, causal attention)" %
              (flop / 1e9, n))
        print(rss(res), flush=True)

    q = a.quick
    if "train64" in cases:
        train_case("GPT-2 124M train B=4 T=64", "gpt2", 4, 64, 3 if q else 5, 2 if q else 3)
    if "train256" in cases:
        train_case("GPT-2 124M train B=4 T=256", "gpt2", 4, 256, 2 if q else 3, 1 if q else 2)
    if "small" in cases:
        train_case("small char model train B=16 T=128", "small", 16, 128, 10 if q else 20, 5 if q else 10)
    if "infer" in cases:
        it = "2" if q else "3"
        lcmd = [llama_bench, "-m", llama_model, "-p", "64", "-n", "128", "-d", "0,64", "-t", str(a.threads),
                "-r", it, "-o", "json"] if have_llama else None
        res = both("GPT-2 124M prefill T=64 + decode 128",
                   ["--prefill", "--decode", "--prompt", "64", "--gen", "128", "--iters", it, "--warmup", "2"],
                   ["--prefill", "--decode", "--prompt", "64", "--gen", "128", "--iters", it, "--warmup", "2"], lcmd)
        row("GPT-2 124M prompt forward T=64", pool(res["qkv"], "prefill"), pool(res["torch"], "prefill"), "ms", 64)
        if lcmd:
            llama_row("prompt forward T=64", pool(res["qkv"], "prefill"), pool(res["llama"], "prefill"), 64)
        bw = measured_bandwidth(os.path.dirname(a.qkv), a.threads)
        row("GPT-2 124M decode 128 after 64", pool(res["qkv"], "decode"), pool(res["torch"], "decode"),
            "ms/128 tok", 128)
        if lcmd:
            llama_row("decode 128 after 64", pool(res["qkv"], "decode"), pool(res["llama"], "decode"), 128)
            lt = pool(res["llama"], "decode_d0")
            print("    llama.cpp tg128 from an empty cache (llama-bench's own measure, the README anchor's 103): "
                  "%s ms, %.1f tokens/s" % (fmt_range(lt), 128 / (med(lt) * 1e-3)))
        if bw:
            wbytes = res["qkv"][0]["params"] * 4.0
            print("    DRAM read bandwidth right after (build/bench_stream): %.1f GB/s; every weight once per token "
                  "(%.0f MB) caps decode at %.1f tokens/s" % (bw, wbytes / 1e6, bw * 1e9 / wbytes))
        print(rss(res) + ("" if not lcmd else ", llama.cpp %s" % fmt_range([d["peak_rss_mib"] for d in res["llama"]], "%.0f")),
              flush=True)
    if "attention" in cases:
        print("\nattention alone, causal, B=1 D=64, forward + backward of sum(out), weights not requested")
        maxt = 2048 if q else 8192
        for H in (1, 12):
            T = 256
            while T <= maxt:
                label = "attention H=%d T=%d" % (H, T)
                its = "3" if T <= 2048 else "2"
                qargs = ["--attention", "--heads", str(H), "--t", str(T), "--iters", its, "--warmup", "1"]
                tmat = 4.0 * T * T * H / 2 ** 30
                if 5 * tmat > a.max_torch_attn_gib:
                    d = run_json(qkv_cmd + qargs, qkv_env)
                    f, b = d["attention_fwd"], d["attention_bwd"]
                    tot = [x + y for x, y in zip(f["ms"], b["ms"])]
                    print("%-42s qkv %-26s PyTorch skipped: its 5 live T x T matrices would need %.1f GiB "
                          "(> --max-torch-attn-gib %.0f)" % (label + " fwd+bwd ms", fmt_range(tot), 5 * tmat,
                                                             a.max_torch_attn_gib))
                    print("    memory: qkv arena peak %.1f MiB, peak RSS %.0f MiB; one T x T matrix would be %.0f MiB"
                          % (f["arena_peak_mib"], d["peak_rss_mib"], tmat * 1024), flush=True)
                    raw["cases"].append({"case": label, "qkv": [d], "torch": []})
                    T *= 2
                    continue
                titers = its if T <= 2048 else "1"
                res = both(label, qargs, ["--attention", "--heads", str(H), "--T", str(T), "--iters", titers,
                                          "--warmup", "0" if T > 2048 else "1"])

                def tot(runs):
                    return [x + y for d in runs for x, y in zip(d["attention_fwd"]["ms"], d["attention_bwd"]["ms"])]

                row(label, tot(res["qkv"]), tot(res["torch"]), "fwd+bwd ms")
                print("    memory: qkv arena peak %.1f MiB; PyTorch peak RSS grew %.0f MiB; one T x T matrix %.0f MiB"
                      % (res["qkv"][0]["attention_fwd"]["arena_peak_mib"],
                         max(d["attention_fwd"]["peak_rss_growth_mib"] for d in res["torch"]), tmat * 1024),
                      flush=True)
                T *= 2
    print("\nload average at the end %.2f" % os.getloadavg()[0])
    if a.out:
        tmp = a.out + ".tmp"
        with open(tmp, "w") as f:
            json.dump(raw, f, indent=1)
        os.replace(tmp, a.out)
        print("raw results: %s" % a.out)


if __name__ == "__main__":
    main()

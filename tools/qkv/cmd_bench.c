/* cmd_bench.c — `qkv bench`: how fast this machine trains and runs a GPT with qkv, and in how much
 * memory; also attention alone. bench/compare.py runs it beside PyTorch (--json) for the ratios.
 *
 * Models (random weights: speed does not depend on the values):
 *   gpt2   GPT-2 124M's configuration (qkv_gpt_config_gpt2)
 *   small  the small char model: vocab 256, 128 positions, 4 layers, 4 heads, 128 wide
 *   tiny   vocab 512, 256 positions, 2 layers, 4 heads, 64 wide (a seconds-long smoke run)
 * Measurements, each selectable:
 *   train      one optimisation step at B×T: forward with the loss, backward, AdamW, zero grad
 *              (dropout --dropout, default the config's 0.1, as in fine-tuning), run as qkv train
 *              runs it: the per-op NaN scans off, the loss checked instead
 *   prefill    the prompt forward (batch 1) through qkv_gpt_step, filling the KV cache
 *   decode     generation with the KV cache: --gen single-token steps after the prompt (like
 *              llama-bench -p 64 -n 128), the next id by argmax; one repetition = one prompt + gen
 *   attention  qkv_attention alone, causal, weights not requested, B 1, D 64, --heads H, T = --t:
 *              forward, then backward of sum(out); its arena peak holds q, k, v, out, their
 *              gradients and the kernel workspace — linear in T (the T×T matrix is never formed)
 * Each is repeated --iters times after --warmup; the table shows medians, --json every repetition.
 * Not here: comparisons with other programs (bench/compare.py), correctness (the tests do that).
 *
 * Convention a reader needs: every time is wall-clock (CLOCK_MONOTONIC) around the library calls only;
 * tokens/s is tokens processed per second of that time.
 */
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "qkv.h"
#include "qkv/gpt.h"
#include "qkv/infer.h"
#include "qkv/ops.h"
#include "cli_util.h"
#include "commands.h"

static const char *const usage_text =
    "usage: qkv bench [--train] [--prefill] [--decode] [--attention] [options]\n"
    "\n"
    "Times a GPT (random weights, float32) on this machine and prints medians, tokens/s and memory.\n"
    "With none of --train/--prefill/--decode/--attention, the first three run. About a minute with the\n"
    "defaults on 2 cores.\n"
    "\n"
    "  --train          measure the training step (forward, backward, AdamW)\n"
    "  --prefill        measure the prompt forward\n"
    "  --decode         measure generation with the KV cache\n"
    "  --attention      measure causal attention alone, forward + backward (no model is built)\n"
    "  --model NAME     gpt2 (GPT-2 124M, default), small (V 256, P 128, C 128, 4 layers, 4 heads) or\n"
    "                   tiny (V 512, P 256, C 64, 2 layers, 4 heads)\n"
    "  --tiny           the same as --model tiny, with --iters 1 --warmup 0 unless given\n"
    "  --iters N        timed repetitions of each measurement, 1..1000 (default 5)\n"
    "  --warmup N       untimed repetitions first, 0..100 (default 1)\n"
    "  --threads N      OpenMP threads, 1..1024 (default: OMP_NUM_THREADS or all cores)\n"
    "  --b B            training batch size, 1..1024 (default 4)\n"
    "  --t T            training (and attention) sequence length, 1..n_positions (default 64)\n"
    "  --dropout P      training dropout (embeddings, attention, residual), 0..0.9 (default 0.1)\n"
    "  --prompt N       prompt tokens for prefill and decode, 1..n_positions (default 64)\n"
    "  --gen N          new tokens per decode repetition, 1..n_positions-prompt (default 128)\n"
    "  --heads H        attention heads of 64 for --attention, 1..256 (default 12)\n"
    "  --json           print one JSON object (every repetition's time) instead of the table\n"
    "  --help           this text\n"
    "\n"
    "Output: the thread count, then per measurement the median and min-max times and tokens/s, then peak\n"
    "RSS and the arena peaks. Exit status: 0 ok, 2 bad usage, 1 a failed run (message on stderr).\n";

static int usage_error(const char *what, const char *why) { return cli_usage_error("bench", what, why); }

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

#define MIB(x) ((double)(x) / (1024.0 * 1024.0))
#define MAX_ITERS 1000

/* One measurement: the time of each repetition (ms) and what one repetition processes. */
typedef struct {
    int ran, n;
    double ms[MAX_ITERS], sorted[MAX_ITERS];
    double tokens; /* tokens per repetition */
    double arena_mib;
} result;

static double med_of(result *r) {
    memcpy(r->sorted, r->ms, (size_t)r->n * sizeof *r->ms);
    qsort(r->sorted, (size_t)r->n, sizeof *r->sorted, cmp_double);
    return r->n % 2 ? r->sorted[r->n / 2] : 0.5 * (r->sorted[r->n / 2 - 1] + r->sorted[r->n / 2]);
}

static int fail(const char *what, const char *why) {
    fprintf(stderr, "qkv bench: %s: %s\n", what, why);
    return 1;
}

static int bench_train(qkv_gpt *m, long B, long T, long warmup, long iters, result *r) {
    const int64_t V = qkv_gpt_get_config(m)->vocab_size;
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids), *tgt = malloc((size_t)(B * T) * sizeof *tgt);
    qkv_adamw_opts ao = qkv_adamw_default_opts();
    qkv_optim *opt = qkv_adamw_new(qkv_gpt_params(m), &ao);
    qkv_ctx *ctx = qkv_ctx_new(0);
    int rc = 0;
    if (!ids || !tgt || !opt || !ctx) {
        rc = fail("train", opt && ctx ? "out of memory" : qkv_last_error());
        goto done;
    }
    qkv_rng rng;
    qkv_rng_seed(&rng, 1);
    for (long i = 0; i < B * T; i++) ids[i] = (int32_t)(qkv_rng_u64(&rng) % (uint64_t)V);
    for (long i = 0; i < B * T; i++) tgt[i] = i % T == T - 1 ? -100 : ids[i + 1];
    qkv_ctx_set_training(ctx, 1);
    qkv_ctx_set_check_finite(ctx, 0); /* as qkv train runs: no per-op NaN scans, the loss is checked */
    for (long it = 0; it < warmup + iters; it++) {
        double t0 = now_seconds();
        qkv_ctx_reset(ctx);
        qkv_tensor *loss = NULL;
        qkv_gpt_forward(ctx, m, ids, B, T, tgt, &loss);
        if (!loss || qkv_backward(ctx, loss) != QKV_OK || qkv_optim_step(opt, 1e-5f) != QKV_OK) {
            rc = fail("train", qkv_ctx_status(ctx) != QKV_OK ? qkv_ctx_error(ctx) : qkv_last_error());
            goto done;
        }
        if (!isfinite(loss->data[0])) {
            rc = fail("train", "the loss is not finite");
            goto done;
        }
        qkv_params_zero_grad(qkv_gpt_params(m));
        double t1 = now_seconds();
        if (it >= warmup) r->ms[r->n++] = 1e3 * (t1 - t0);
    }
    r->ran = 1;
    r->tokens = (double)(B * T);
    r->arena_mib = MIB(qkv_ctx_arena_peak(ctx));
done:
    qkv_ctx_free(ctx);
    qkv_optim_free(opt);
    free(ids);
    free(tgt);
    return rc;
}

/* Prefill: each repetition times the prompt forward from an empty cache. Decode: each repetition
 * refills the cache with the prompt (untimed) and times gen single-token steps. */
static int bench_infer(qkv_gpt *m, int do_prefill, int do_decode, long prompt, long gen, long warmup, long iters,
                       result *pre, result *dec) {
    const int64_t V = qkv_gpt_get_config(m)->vocab_size;
    int32_t *ids = malloc((size_t)prompt * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_gpt_cache *c = ctx ? qkv_gpt_cache_new(m, prompt + (do_decode ? gen : 0)) : NULL;
    int rc = 0;
    if (!ids || !logits || !c) {
        rc = fail("inference", c ? "out of memory" : qkv_last_error());
        goto done;
    }
    qkv_rng rng;
    qkv_rng_seed(&rng, 2);
    for (long i = 0; i < prompt; i++) ids[i] = (int32_t)(qkv_rng_u64(&rng) % (uint64_t)V);
    for (int phase = 0; phase < 2; phase++) {
        if (phase == 0 ? !do_prefill : !do_decode) continue;
        result *r = phase == 0 ? pre : dec;
        for (long it = 0; it < warmup + iters; it++) {
            qkv_gpt_cache_reset(c);
            double t0 = now_seconds();
            if (qkv_gpt_step(ctx, m, c, ids, prompt, logits, 0) != QKV_OK) {
                rc = fail("prefill", qkv_ctx_error(ctx));
                goto done;
            }
            if (phase == 1) {
                t0 = now_seconds();
                for (long g = 0; g < gen; g++) {
                    int32_t id = (int32_t)qkv_argmax(logits, V);
                    if (id < 0 || qkv_gpt_step(ctx, m, c, &id, 1, logits, 0) != QKV_OK) {
                        rc = fail("decode", id < 0 ? qkv_last_error() : qkv_ctx_error(ctx));
                        goto done;
                    }
                }
            }
            if (it >= warmup) r->ms[r->n++] = 1e3 * (now_seconds() - t0);
        }
        r->ran = 1;
        r->tokens = (double)(phase == 0 ? prompt : gen);
        r->arena_mib = MIB(qkv_ctx_arena_peak(ctx));
    }
done:
    qkv_gpt_cache_free(c);
    qkv_ctx_free(ctx);
    free(logits);
    free(ids);
    return rc;
}

static qkv_tensor *attn_input(qkv_ctx *ctx, qkv_rng *r, int64_t T, int64_t C) {
    qkv_tensor *t = qkv_tensor_new3(ctx, 1, T, C);
    if (!t) return NULL;
    for (int64_t i = 0; i < T * C; i++) t->data[i] = qkv_rng_normal(r);
    t->requires_grad = 1;
    return t;
}

/* fwd, bwd: the forward and the backward time of each repetition; total in bwd's twin. */
static int bench_attention(long T, long H, long warmup, long iters, result *fwd, result *bwd) {
    const int64_t D = 64, C = H * D;
    qkv_ctx *ctx = qkv_ctx_new(0);
    if (!ctx) return fail("attention", qkv_last_error());
    qkv_rng r;
    qkv_rng_seed(&r, 1);
    for (long it = 0; it < warmup + iters; it++) {
        qkv_ctx_reset(ctx);
        qkv_tensor *q = attn_input(ctx, &r, T, C), *k = attn_input(ctx, &r, T, C), *v = attn_input(ctx, &r, T, C);
        qkv_attn_opts o = {.n_head = (int)H, .causal = 1};
        double t0 = now_seconds();
        qkv_tensor *out = qkv_attention(ctx, q, k, v, &o);
        double t1 = now_seconds();
        qkv_tensor *loss = qkv_sum(ctx, out);
        double t2 = now_seconds();
        qkv_status st = loss ? qkv_backward(ctx, loss) : QKV_ERR_ARG;
        double t3 = now_seconds();
        if (!out || st != QKV_OK) {
            int rc = fail("attention", qkv_ctx_error(ctx));
            qkv_ctx_free(ctx);
            return rc;
        }
        if (it >= warmup) {
            fwd->ms[fwd->n++] = 1e3 * (t1 - t0);
            bwd->ms[bwd->n++] = 1e3 * (t3 - t2);
        }
    }
    fwd->ran = bwd->ran = 1;
    fwd->tokens = bwd->tokens = (double)T;
    fwd->arena_mib = bwd->arena_mib = MIB(qkv_ctx_arena_peak(ctx));
    qkv_ctx_free(ctx);
    return 0;
}

static void print_row(const char *label, result *r, const char *unit) {
    const double med = med_of(r);
    printf("%-22s %9.2f %s (median of %d, min-max %.2f-%.2f)  %9.1f tokens/s  arena peak %.1f MiB\n", label, med,
           unit, r->n, r->sorted[0], r->sorted[r->n - 1], r->tokens / (med * 1e-3), r->arena_mib);
}

static void print_json(const char *name, result *r, const char *extra) {
    const double med = med_of(r);
    printf(",\"%s\":{%s\"tokens\":%.0f,\"ms_median\":%.4f,\"tokens_per_s\":%.3f,\"arena_peak_mib\":%.3f,\"ms\":[",
           name, extra, r->tokens, med, r->tokens / (med * 1e-3), r->arena_mib);
    for (int i = 0; i < r->n; i++) printf("%s%.4f", i ? "," : "", r->ms[i]);
    printf("]}");
}

int qkv_cmd_bench(int argc, char **argv) {
    int do_train = 0, do_prefill = 0, do_decode = 0, do_attn = 0, json = 0, tiny = 0;
    long iters = -1, warmup = -1, threads = 0, B = 4, T = 64, prompt = 64, gen = 128, heads = 12;
    float dropout = 0.1f;
    const char *model = "gpt2";
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(a, "--train") == 0) do_train = 1;
        else if (strcmp(a, "--prefill") == 0) do_prefill = 1;
        else if (strcmp(a, "--decode") == 0) do_decode = 1;
        else if (strcmp(a, "--attention") == 0) do_attn = 1;
        else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--tiny") == 0) tiny = 1, model = "tiny";
        else {
            static const char *const valued[] = {"--iters", "--warmup", "--threads", "--b",       "--t",
                                                 "--prompt", "--gen",   "--heads",   "--dropout", "--model"};
            static const long lo[] = {1, 0, 1, 1, 1, 1, 1, 1}, hi[] = {MAX_ITERS, 100, 1024, 1024, 1 << 24,
                                                                       1 << 24,  1 << 24, 256};
            long *slot[] = {&iters, &warmup, &threads, &B, &T, &prompt, &gen, &heads};
            const char *v = NULL;
            int k = cli_valued_flag(argc, argv, &i, valued, 10, &v);
            if (k < 0) return cli_unknown_option("bench", a);
            if (!v) return usage_error(valued[k], "missing value");
            if (k == 9) {
                if (strcmp(v, "gpt2") && strcmp(v, "small") && strcmp(v, "tiny"))
                    return usage_error("--model", "must be gpt2, small or tiny");
                model = v;
            } else if (k == 8) {
                if (cli_parse_f32("bench", "--dropout", v, &dropout)) return 2;
                if (dropout < 0.0f || dropout > 0.9f) return usage_error("--dropout", "must be in [0, 0.9]");
            } else {
                int64_t x;
                if (cli_parse_i64("bench", valued[k], v, lo[k], hi[k], &x)) return 2;
                *slot[k] = (long)x;
            }
        }
    }
    if (!do_train && !do_prefill && !do_decode && !do_attn) do_train = do_prefill = do_decode = 1;
    if (iters < 0) iters = tiny ? 1 : 5;
    if (warmup < 0) warmup = tiny ? 0 : 1;
    qkv_gpt_config cfg = qkv_gpt_config_gpt2();
    const char *name = "GPT-2 124M";
    if (strcmp(model, "small") == 0) {
        cfg.vocab_size = 256, cfg.n_positions = 128, cfg.n_embd = 128, cfg.n_layer = 4, cfg.n_head = 4;
        name = "small char model (V 256, P 128, C 128, L 4, H 4)";
    } else if (strcmp(model, "tiny") == 0) {
        cfg.vocab_size = 512, cfg.n_positions = 256, cfg.n_embd = 64, cfg.n_layer = 2, cfg.n_head = 4;
        name = "tiny GPT-2 (V 512, P 256, C 64, L 2, H 4)";
    }
    cfg.embd_pdrop = cfg.attn_pdrop = cfg.resid_pdrop = dropout;
    const int need_model = do_train || do_prefill || do_decode;
    const long P = (long)cfg.n_positions;
    char why[120];
    snprintf(why, sizeof why, "must be at most n_positions %ld", P);
    if (need_model && T > P) return usage_error("--t", why);
    if ((do_prefill || do_decode) && prompt > P) return usage_error("--prompt", why);
    if (do_attn && T > 65536) return usage_error("--t", "must be at most 65536 for --attention");
    if (do_decode && prompt + gen > P) {
        snprintf(why, sizeof why, "--prompt + --gen = %ld must be at most n_positions %ld", prompt + gen, P);
        return usage_error("--gen", why);
    }
    if (threads > 0) omp_set_num_threads((int)threads);
    const int n_threads = omp_get_max_threads();

    qkv_gpt *m = NULL;
    int64_t n_params = 0;
    if (need_model) {
        m = qkv_gpt_new(&cfg, 1);
        if (!m) return fail("model", qkv_last_error());
        n_params = qkv_params_numel_real(qkv_gpt_params(m));
    }
    if (!json) {
        if (m) printf("qkv bench: %s, %.2fM parameters, random weights, float32\n", name, (double)n_params / 1e6);
        printf("threads: %d\n", n_threads);
        fflush(stdout);
    }
    static result tr, pre, dec, af, ab;
    int rc = 0;
    char label[80];
    if (do_train) rc = bench_train(m, B, T, warmup, iters, &tr);
    if (!rc && !json && tr.ran) {
        snprintf(label, sizeof label, "train B=%ld T=%ld", B, T);
        print_row(label, &tr, "ms/step");
        fflush(stdout);
    }
    if (!rc && (do_prefill || do_decode)) { /* as qkv generate runs: projections in the inference layout */
        if (qkv_gpt_set_inference_layout(m, 1) != QKV_OK) rc = fail("inference", qkv_last_error());
        if (!rc) rc = bench_infer(m, do_prefill, do_decode, prompt, gen, warmup, iters, &pre, &dec);
    }
    if (!rc && !json) {
        if (pre.ran) {
            snprintf(label, sizeof label, "prefill T=%ld", prompt);
            print_row(label, &pre, "ms     ");
        }
        if (dec.ran) {
            snprintf(label, sizeof label, "decode %ld after %ld", gen, prompt);
            print_row(label, &dec, "ms     ");
        }
        fflush(stdout);
    }
    if (!rc && do_attn) rc = bench_attention(T, heads, warmup, iters, &af, &ab);
    if (!rc && !json && af.ran) {
        snprintf(label, sizeof label, "attention H=%ld T=%ld fwd", heads, T);
        print_row(label, &af, "ms     ");
        snprintf(label, sizeof label, "attention H=%ld T=%ld bwd", heads, T);
        print_row(label, &ab, "ms     ");
        printf("attention T x T matrix (never formed): %.1f MiB\n", 4.0 * (double)T * (double)T * (double)heads / 1048576.0);
    }
    if (!rc && !json) printf("memory peak RSS %.1f MiB\n", peak_rss_mib());
    if (!rc && json) {
        printf("{\"model\":\"%s\",\"params\":%lld,\"threads\":%d", m ? model : "none", (long long)n_params, n_threads);
        char extra[160];
        if (tr.ran) {
            snprintf(extra, sizeof extra, "\"B\":%ld,\"T\":%ld,\"dropout\":%g,", B, T, (double)dropout);
            print_json("train", &tr, extra);
        }
        if (pre.ran) {
            snprintf(extra, sizeof extra, "\"T\":%ld,", prompt);
            print_json("prefill", &pre, extra);
        }
        if (dec.ran) {
            snprintf(extra, sizeof extra, "\"prompt\":%ld,\"new_tokens\":%ld,", prompt, gen);
            print_json("decode", &dec, extra);
        }
        if (af.ran) {
            snprintf(extra, sizeof extra, "\"T\":%ld,\"H\":%ld,\"D\":64,", T, heads);
            print_json("attention_fwd", &af, extra);
            print_json("attention_bwd", &ab, extra);
        }
        printf(",\"peak_rss_mib\":%.1f}\n", peak_rss_mib());
    }
    qkv_gpt_free(m);
    return rc;
}

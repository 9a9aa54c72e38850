/* cmd_bench.c — `qkv bench`: how fast this machine trains and runs GPT-2 124M with qkv, and in how much
 * memory.
 *
 * The model is GPT-2 124M's configuration (qkv_gpt_config_gpt2) with random weights: speed does not
 * depend on the values. Three measurements, each selectable:
 *   train    one optimisation step at B=4, T=64: forward with the loss, backward, AdamW, zero grad
 *            (dropout on, as in fine-tuning); the median of --iters steps after --warmup steps
 *   prefill  the prompt forward at T=64 (batch 1) through qkv_gpt_step, filling the KV cache
 *   decode   generation with the KV cache: 128 single-token steps after a 64-token prompt (like
 *            llama-bench -p 64 -n 128), the next id by argmax
 * and the peak resident memory (getrusage ru_maxrss) and activation-arena peaks.
 * Not here: comparisons with other programs (see ../shared/bench), correctness (the tests do that).
 *
 * Convention a reader needs: every time is wall-clock (CLOCK_MONOTONIC) around the library calls only;
 * tokens/s is tokens processed per second of that time.
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

#include "qkv.h"
#include "qkv/gpt.h"
#include "qkv/infer.h"
#include "cli_util.h"
#include "commands.h"

static const char *const usage_text =
    "usage: qkv bench [--train] [--prefill] [--decode] [options]\n"
    "\n"
    "Measures GPT-2 124M (random weights) on this machine: a training step (forward + backward + AdamW),\n"
    "the prompt forward (prefill) and KV-cache generation (decode), with peak memory. Without\n"
    "--train/--prefill/--decode all three run. Takes about a minute with the defaults on 2 cores.\n"
    "\n"
    "options:\n"
    "  --train          measure the training step\n"
    "  --prefill        measure the prompt forward\n"
    "  --decode         measure generation with the KV cache\n"
    "  --iters N        timed repetitions for train and prefill, 1..1000 (default 5; the median is shown)\n"
    "  --warmup N       untimed repetitions first, 0..100 (default 1)\n"
    "  --threads N      OpenMP threads, 1..1024 (default: OMP_NUM_THREADS or all cores)\n"
    "  --b B            training batch size, 1..1024 (default 4)\n"
    "  --t T            training sequence length, 1..n_positions (default 64)\n"
    "  --prompt N       prompt tokens for prefill and decode, 1..n_positions (default 64)\n"
    "  --gen N          new tokens for decode, 1..n_positions-prompt (default 128)\n"
    "  --tiny           a small model (V 512, n_positions 256, C 64, 2 layers, 4 heads) and --iters 1,\n"
    "                   --warmup 0 unless given: a seconds-long smoke run\n"
    "  --json           print one JSON object instead of the table\n"
    "  --help           this text\n"
    "\n"
    "Output: the thread count, then per measurement the median time and tokens/s, then peak RSS and the\n"
    "arena peaks. Exit status: 0 ok, 2 bad usage, 1 a failed run (message on stderr).\n";

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

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof *x, cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

static double peak_rss_mib(void) {
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return (double)ru.ru_maxrss / 1024.0; /* Linux: KiB */
}

#define MIB(x) ((double)(x) / (1024.0 * 1024.0))

typedef struct {
    int ran;
    double ms_median, ms_min, tokens_per_s, arena_mib;
} result;

static int fail(const char *what, const char *why) {
    fprintf(stderr, "qkv bench: %s: %s\n", what, why);
    return 1;
}

static int bench_train(qkv_gpt *m, long B, long T, long warmup, long iters, result *r) {
    const int64_t V = qkv_gpt_get_config(m)->vocab_size;
    int32_t *ids = malloc((size_t)(B * T) * sizeof *ids), *tgt = malloc((size_t)(B * T) * sizeof *tgt);
    double *ms = malloc((size_t)iters * sizeof *ms);
    qkv_adamw_opts ao = qkv_adamw_default_opts();
    qkv_optim *opt = qkv_adamw_new(qkv_gpt_params(m), &ao);
    qkv_ctx *ctx = qkv_ctx_new(0);
    int rc = 0;
    if (!ids || !tgt || !ms || !opt || !ctx) {
        rc = fail("train", opt && ctx ? "out of memory" : qkv_last_error());
        goto done;
    }
    qkv_rng rng;
    qkv_rng_seed(&rng, 1);
    for (long i = 0; i < B * T; i++) ids[i] = (int32_t)(qkv_rng_u64(&rng) % (uint64_t)V);
    for (long i = 0; i < B * T; i++) tgt[i] = i % T == T - 1 ? -100 : ids[i + 1];
    qkv_ctx_set_training(ctx, 1);
    for (long it = 0; it < warmup + iters; it++) {
        double t0 = now_seconds();
        qkv_ctx_reset(ctx);
        qkv_tensor *loss = NULL;
        qkv_gpt_forward(ctx, m, ids, B, T, tgt, &loss);
        if (!loss || qkv_backward(ctx, loss) != QKV_OK || qkv_optim_step(opt, 1e-5f) != QKV_OK) {
            rc = fail("train", qkv_ctx_status(ctx) != QKV_OK ? qkv_ctx_error(ctx) : qkv_last_error());
            goto done;
        }
        qkv_params_zero_grad(qkv_gpt_params(m));
        double t1 = now_seconds();
        if (it >= warmup) ms[it - warmup] = 1e3 * (t1 - t0);
    }
    r->ran = 1;
    r->ms_median = median(ms, (int)iters);
    r->ms_min = ms[0];
    r->tokens_per_s = (double)(B * T) / (r->ms_median * 1e-3);
    r->arena_mib = MIB(qkv_ctx_arena_peak(ctx));
done:
    qkv_ctx_free(ctx);
    qkv_optim_free(opt);
    free(ms);
    free(ids);
    free(tgt);
    return rc;
}

/* Prefill (median of iters) and decode (gen steps once, after warmup prefill runs). */
static int bench_infer(qkv_gpt *m, int do_prefill, int do_decode, long prompt, long gen, long warmup, long iters,
                       result *pre, result *dec) {
    const int64_t V = qkv_gpt_get_config(m)->vocab_size;
    int32_t *ids = malloc((size_t)prompt * sizeof *ids);
    float *logits = malloc((size_t)V * sizeof *logits);
    double *ms = malloc((size_t)(iters > gen ? iters : gen) * sizeof *ms);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_gpt_cache *c = ctx ? qkv_gpt_cache_new(m, prompt + (do_decode ? gen : 0)) : NULL;
    int rc = 0;
    if (!ids || !logits || !ms || !c) {
        rc = fail("inference", c ? "out of memory" : qkv_last_error());
        goto done;
    }
    qkv_rng rng;
    qkv_rng_seed(&rng, 2);
    for (long i = 0; i < prompt; i++) ids[i] = (int32_t)(qkv_rng_u64(&rng) % (uint64_t)V);
    const long n_prefill = do_prefill ? warmup + iters : warmup + 1;
    for (long it = 0; it < n_prefill; it++) {
        qkv_gpt_cache_reset(c);
        double t0 = now_seconds();
        if (qkv_gpt_step(ctx, m, c, ids, prompt, logits, 0) != QKV_OK) {
            rc = fail("prefill", qkv_ctx_error(ctx));
            goto done;
        }
        if (it >= warmup && do_prefill) ms[it - warmup] = 1e3 * (now_seconds() - t0);
    }
    if (do_prefill) {
        pre->ran = 1;
        pre->ms_median = median(ms, (int)iters);
        pre->ms_min = ms[0];
        pre->tokens_per_s = (double)prompt / (pre->ms_median * 1e-3);
        pre->arena_mib = MIB(qkv_ctx_arena_peak(ctx));
    }
    if (do_decode) {
        /* the cache holds the prompt from the last prefill */
        double total = 0;
        for (long g = 0; g < gen; g++) {
            double t0 = now_seconds();
            int32_t id = (int32_t)qkv_argmax(logits, V);
            if (id < 0 || qkv_gpt_step(ctx, m, c, &id, 1, logits, 0) != QKV_OK) {
                rc = fail("decode", id < 0 ? qkv_last_error() : qkv_ctx_error(ctx));
                goto done;
            }
            ms[g] = 1e3 * (now_seconds() - t0);
            total += ms[g];
        }
        dec->ran = 1;
        dec->tokens_per_s = (double)gen / (total * 1e-3);
        dec->ms_median = median(ms, (int)gen);
        dec->ms_min = ms[0];
        dec->arena_mib = MIB(qkv_ctx_arena_peak(ctx));
    }
done:
    qkv_gpt_cache_free(c);
    qkv_ctx_free(ctx);
    free(ms);
    free(logits);
    free(ids);
    return rc;
}

int qkv_cmd_bench(int argc, char **argv) {
    int do_train = 0, do_prefill = 0, do_decode = 0, json = 0, tiny = 0;
    long iters = -1, warmup = -1, threads = 0, B = 4, T = 64, prompt = 64, gen = 128;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(a, "--train") == 0) do_train = 1;
        else if (strcmp(a, "--prefill") == 0) do_prefill = 1;
        else if (strcmp(a, "--decode") == 0) do_decode = 1;
        else if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--tiny") == 0) tiny = 1;
        else {
            static const char *const valued[] = {"--iters", "--warmup", "--threads", "--b", "--t", "--prompt", "--gen"};
            static const long lo[] = {1, 0, 1, 1, 1, 1, 1}, hi[] = {1000, 100, 1024, 1024, 1 << 24, 1 << 24, 1 << 24};
            long *slot[] = {&iters, &warmup, &threads, &B, &T, &prompt, &gen};
            const char *v = NULL;
            int k = cli_valued_flag(argc, argv, &i, valued, 7, &v);
            if (k < 0) return cli_unknown_option("bench", a);
            if (!v) return usage_error(valued[k], "missing value");
            int64_t x;
            if (cli_parse_i64("bench", valued[k], v, lo[k], hi[k], &x)) return 2;
            *slot[k] = (long)x;
        }
    }
    if (!do_train && !do_prefill && !do_decode) do_train = do_prefill = do_decode = 1;
    if (iters < 0) iters = tiny ? 1 : 5;
    if (warmup < 0) warmup = tiny ? 0 : 1;
    qkv_gpt_config cfg = qkv_gpt_config_gpt2();
    if (tiny) cfg.vocab_size = 512, cfg.n_positions = 256, cfg.n_embd = 64, cfg.n_layer = 2, cfg.n_head = 4;
    const long P = (long)cfg.n_positions;
    char why[120];
    snprintf(why, sizeof why, "must be at most n_positions %ld", P);
    if (T > P) return usage_error("--t", why);
    if (prompt > P) return usage_error("--prompt", why);
    if (do_decode && prompt + gen > P) {
        snprintf(why, sizeof why, "--prompt + --gen = %ld must be at most n_positions %ld", prompt + gen, P);
        return usage_error("--gen", why);
    }
    if (threads > 0) omp_set_num_threads((int)threads);
    const int n_threads = omp_get_max_threads();

    qkv_gpt *m = qkv_gpt_new(&cfg, 1);
    if (!m) return fail("model", qkv_last_error());
    const char *name = tiny ? "tiny GPT-2 (V 512, P 256, C 64, L 2, H 4)" : "GPT-2 124M";
    const int64_t n_params = qkv_params_numel_real(qkv_gpt_params(m));
    if (!json) {
        printf("qkv bench: %s, %.1fM parameters, random weights, float32\n", name, (double)n_params / 1e6);
        printf("threads: %d\n", n_threads);
        fflush(stdout);
    }
    result tr = {0}, pre = {0}, dec = {0};
    int rc = 0;
    if (do_train) rc = bench_train(m, B, T, warmup, iters, &tr);
    if (!rc && !json && tr.ran)
        printf("train    B=%ld T=%ld: %9.1f ms/step (median of %ld, min %.1f)  %9.1f tokens/s  arena peak %.1f MiB\n",
               B, T, tr.ms_median, iters, tr.ms_min, tr.tokens_per_s, tr.arena_mib);
    fflush(stdout);
    if (!rc && (do_prefill || do_decode))
        rc = bench_infer(m, do_prefill, do_decode, prompt, gen, warmup, iters, &pre, &dec);
    if (!rc && !json) {
        if (pre.ran)
            printf("prefill  T=%ld:     %9.1f ms (median of %ld, min %.1f)       %9.1f tokens/s  arena peak %.1f MiB\n",
                   prompt, pre.ms_median, iters, pre.ms_min, pre.tokens_per_s, pre.arena_mib);
        if (dec.ran)
            printf("decode   %ld after %ld: %7.2f ms/token (median)              %9.1f tokens/s  arena peak %.1f MiB\n",
                   gen, prompt, dec.ms_median, dec.tokens_per_s, dec.arena_mib);
        printf("memory   peak RSS %.1f MiB\n", peak_rss_mib());
    }
    if (!rc && json) {
        printf("{\"model\":\"%s\",\"params\":%lld,\"threads\":%d", tiny ? "tiny" : "gpt2-124M", (long long)n_params,
               n_threads);
        if (tr.ran)
            printf(",\"train\":{\"B\":%ld,\"T\":%ld,\"iters\":%ld,\"step_ms_median\":%.3f,\"step_ms_min\":%.3f,"
                   "\"tokens_per_s\":%.3f,\"arena_peak_mib\":%.3f}",
                   B, T, iters, tr.ms_median, tr.ms_min, tr.tokens_per_s, tr.arena_mib);
        if (pre.ran)
            printf(",\"prefill\":{\"T\":%ld,\"iters\":%ld,\"ms_median\":%.3f,\"ms_min\":%.3f,\"tokens_per_s\":%.3f,"
                   "\"arena_peak_mib\":%.3f}",
                   prompt, iters, pre.ms_median, pre.ms_min, pre.tokens_per_s, pre.arena_mib);
        if (dec.ran)
            printf(",\"decode\":{\"prompt\":%ld,\"new_tokens\":%ld,\"ms_per_token_median\":%.3f,\"tokens_per_s\":%.3f,"
                   "\"arena_peak_mib\":%.3f}",
                   prompt, gen, dec.ms_median, dec.tokens_per_s, dec.arena_mib);
        printf(",\"peak_rss_mib\":%.1f}\n", peak_rss_mib());
    }
    qkv_gpt_free(m);
    return rc;
}

/* bench_adamw.c — one AdamW step over GPT-2 124M's parameters (the real tensor list: 124,439,808
 * floats, biases and LayerNorm marked no_decay), in ms and GB/s, against the memory-bandwidth floor
 * measured here by a plain stream copy.
 *
 * Not a test (tests/test_optim.c and test_torch_adamw.c check the numbers) and not a comparison with
 * PyTorch. AdamW reads p, g, m, v and writes p, m, v: 28 bytes per parameter, 3.48 GB a step, and
 * every store goes to a line it has just read, so 28 bytes is also what crosses the memory bus. The floor
 * is those bytes at the best bandwidth this program measures on blocks of the same size:
 *   stream copy, streaming stores   dst[i] = src[i] with non-temporal stores (8 bytes/float on the bus);
 *   stream copy, plain stores       the same with ordinary stores (counted as 8 bytes/float as STREAM
 *                                   does, although the bus also carries a write-allocate read);
 *   same traffic, no arithmetic     AdamW's seven streams without the arithmetic (p += g; m += g;
 *                                   v += g): what the memory system does with this access pattern.
 * On the 2-core Zen 5 machine one copy stream per core reaches well below what seven streams do, so the
 * last one usually sets the floor.
 *
 * Each figure is the median and min–max of `runs` timed repetitions (default 7) after one warm-up,
 * for 1 and 2 threads. The machine may be shared: check `uptime` and rerun when a range looks wide.
 *
 * Usage: bench_adamw [runs] */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkv/core.h"
#include "qkv/optim.h"

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static void add(qkv_params *p, const char *name, int64_t r, int64_t c, int no_decay) {
    int64_t shape[2] = {r, c};
    qkv_init init = {QKV_INIT_ZEROS, 0.0f};
    if (!qkv_params_add(p, name, c ? 2 : 1, shape, init, no_decay)) {
        fprintf(stderr, "bench_adamw: %s\n", qkv_last_error());
        exit(1);
    }
}

/* GPT-2 124M: C 768, 12 layers, vocab 50257, 1024 positions, head tied to wte. */
static qkv_params *gpt2_params(void) {
    qkv_params *p = qkv_params_new();
    if (!p) exit(1);
    const int64_t C = 768, V = 50257, T = 1024;
    char name[64];
    add(p, "wte", V, C, 0);
    add(p, "wpe", T, C, 0);
    for (int l = 0; l < 12; l++) {
#define ADD(what, r, c, nd) (snprintf(name, sizeof name, "h.%d.%s", l, what), add(p, name, r, c, nd))
        ADD("ln_1.weight", C, 0, 1);
        ADD("ln_1.bias", C, 0, 1);
        ADD("attn.c_attn.weight", C, 3 * C, 0);
        ADD("attn.c_attn.bias", 3 * C, 0, 1);
        ADD("attn.c_proj.weight", C, C, 0);
        ADD("attn.c_proj.bias", C, 0, 1);
        ADD("ln_2.weight", C, 0, 1);
        ADD("ln_2.bias", C, 0, 1);
        ADD("mlp.c_fc.weight", C, 4 * C, 0);
        ADD("mlp.c_fc.bias", 4 * C, 0, 1);
        ADD("mlp.c_proj.weight", 4 * C, C, 0);
        ADD("mlp.c_proj.bias", C, 0, 1);
#undef ADD
    }
    add(p, "ln_f.weight", C, 0, 1);
    add(p, "ln_f.bias", C, 0, 1);
    if (qkv_params_alloc(p, 1) != QKV_OK) {
        fprintf(stderr, "bench_adamw: %s\n", qkv_last_error());
        exit(1);
    }
    return p;
}

/* The references: explicit 16-float SIMD (n is a multiple of 16 and the blocks are 64-byte aligned,
 * as parameter-layout blocks are), split across threads like the optimizer, so they run at the speed
 * of memory and not of a scalar loop. */
#define AVX512 __attribute__((target("avx512f")))

AVX512 static void copy_plain(float *restrict dst, const float *restrict src, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += 16) _mm512_store_ps(dst + i, _mm512_load_ps(src + i));
}

AVX512 static void copy_stream(float *restrict dst, const float *restrict src, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += 16) _mm512_stream_ps(dst + i, _mm512_load_ps(src + i));
    _mm_sfence();
}

AVX512 static void same_traffic(float *restrict p, const float *restrict g, float *restrict m,
                                float *restrict v, int64_t n) {
#pragma omp parallel for schedule(static)
    for (int64_t i = 0; i < n; i += 16) {
        __m512 gi = _mm512_load_ps(g + i);
        _mm512_store_ps(p + i, _mm512_add_ps(_mm512_load_ps(p + i), gi));
        _mm512_store_ps(m + i, _mm512_add_ps(_mm512_load_ps(m + i), gi));
        _mm512_store_ps(v + i, _mm512_add_ps(_mm512_load_ps(v + i), gi));
    }
}

/* Sorts t, prints the median and range, returns the median's bandwidth in bytes/s. */
static double report(const char *what, double *t, int runs, double bytes, double floor_s) {
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    double med = t[runs / 2];
    printf("  %-34s %7.1f ms [%6.1f-%6.1f]  %6.1f GB/s", what, 1e3 * med, 1e3 * t[0], 1e3 * t[runs - 1],
           bytes / med / 1e9);
    if (floor_s > 0) printf("  %5.2fx the floor", med / floor_s);
    printf("\n");
    return bytes / med;
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 7;
    if (runs < 3) runs = 3;
    qkv_params *p = gpt2_params();
    int64_t n = qkv_params_numel(p), nreal = qkv_params_numel_real(p);
    float *g = qkv_params_grad(p), *w = qkv_params_data(p);
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) {
        fprintf(stderr, "bench_adamw: the reference loops need AVX-512F, which this CPU lacks\n");
        return 1;
    }
    if (n % 16) { /* the parameter layout pads every tensor to 16 floats */
        fprintf(stderr, "bench_adamw: block of %lld floats is not a multiple of 16\n", (long long)n);
        return 1;
    }
    /* Gradients of a plausible size; every page of every block touched before timing. */
    for (int64_t i = 0; i < n; i++) g[i] = (float)((i * 2654435761u) % 2001) * 1e-6f - 1e-3f;
    qkv_adamw_opts o = qkv_adamw_default_opts();
    qkv_optim *opt = qkv_adamw_new(p, &o);
    if (!opt) {
        fprintf(stderr, "bench_adamw: %s\n", qkv_last_error());
        return 1;
    }
    float *m = qkv_optim_state(opt, 0), *v = qkv_optim_state(opt, 1);
    double *t = malloc((size_t)runs * sizeof(double));
    if (!t) return 1;
    const double adam_bytes = 28.0 * (double)nreal, copy_bytes = 8.0 * (double)n;
    printf("bench_adamw: %lld parameters (%.1f MB a block), AdamW moves %.2f GB a step; %d runs after 1 "
           "warm-up, median [min-max]\n",
           (long long)nreal, 4.0 * (double)n / 1e6, adam_bytes / 1e9, runs);
    int maxt = omp_get_max_threads();
    for (int nt = 1; nt <= 2 && nt <= omp_get_num_procs(); nt++) {
        omp_set_num_threads(nt);
        printf("%d thread%s:\n", nt, nt > 1 ? "s" : "");
        /* The references write into v (state the optimizer then restarts from zero). Each reports
         * its bandwidth; the floor is AdamW's bytes at the best of them. */
        double best_bw = 0.0, bw;
        for (int r = -1; r < runs; r++) {
            double t0 = omp_get_wtime();
            copy_stream(v, g, n);
            if (r >= 0) t[r] = omp_get_wtime() - t0;
        }
        bw = report("stream copy, streaming stores", t, runs, copy_bytes, 0);
        if (bw > best_bw) best_bw = bw;
        for (int r = -1; r < runs; r++) {
            double t0 = omp_get_wtime();
            copy_plain(v, g, n);
            if (r >= 0) t[r] = omp_get_wtime() - t0;
        }
        bw = report("stream copy, plain stores", t, runs, copy_bytes, 0);
        if (bw > best_bw) best_bw = bw;
        for (int r = -1; r < runs; r++) {
            double t0 = omp_get_wtime();
            same_traffic(w, g, m, v, n);
            if (r >= 0) t[r] = omp_get_wtime() - t0;
        }
        bw = report("same traffic, no arithmetic", t, runs, adam_bytes, 0);
        if (bw > best_bw) best_bw = bw;
        double floor_s = adam_bytes / best_bw;
        printf("  %-34s %7.1f ms  (%.2f GB at %.1f GB/s, the best bandwidth above)\n", "floor", 1e3 * floor_s,
               adam_bytes / 1e9, best_bw / 1e9);
        memset(m, 0, (size_t)n * sizeof(float));
        memset(v, 0, (size_t)n * sizeof(float));
        qkv_optim_set_steps(opt, 0);
        for (int r = -1; r < runs; r++) {
            double t0 = omp_get_wtime();
            if (qkv_optim_step(opt, 1e-4f) != QKV_OK) {
                fprintf(stderr, "bench_adamw: %s\n", qkv_last_error());
                return 1;
            }
            if (r >= 0) t[r] = omp_get_wtime() - t0;
        }
        report("qkv_optim_step (AdamW)", t, runs, adam_bytes, floor_s);
    }
    omp_set_num_threads(maxt);
    free(t);
    qkv_optim_free(opt);
    qkv_params_free(p);
    return 0;
}

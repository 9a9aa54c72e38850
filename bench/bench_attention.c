/* bench_attention.c — time and arena memory of qkv_attention, forward and backward, causal, without
 * weights (the tiled online-softmax path), B = 1, D = 64, H = 1 and H = 12, T = 256 .. 8192.
 *
 * Not a test (tests/test_attention.c checks results). Each time is the median of `runs` (default 3)
 * forward and backward calls on a fresh arena step, after one warm-up; GFLOP/s counts the nominal
 * causal work (forward 2 T^2 D H: QK^T and PV over half the matrix; backward 5 T^2 D H: QK^T, dO V^T,
 * dV, dQ, dK — the kernel actually recomputes QK^T and dO V^T once more, in its dk/dv pass). The arena
 * peak covers q, k, v, out, their gradients, the logsumexp rows and the kernel workspace: it must
 * grow linearly in T (the T x T matrix would be 4 T^2 H bytes, printed beside it).
 *
 * Usage: bench_attention [runs] [max_T]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "kernels/attention.h"
#include "qkv/ops.h"

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static qkv_tensor *input(qkv_ctx *ctx, qkv_rng *r, int64_t T, int64_t C) {
    qkv_tensor *t = qkv_tensor_new3(ctx, 1, T, C);
    if (!t) return NULL;
    for (int64_t i = 0; i < T * C; i++) t->data[i] = qkv_rng_normal(r);
    t->requires_grad = 1;
    return t;
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 3;
    int64_t max_t = argc > 2 ? atoll(argv[2]) : 8192;
    if (runs < 1 || runs > 100 || max_t < 256) {
        fprintf(stderr, "usage: bench_attention [runs 1..100] [max_T >= 256]\n");
        return 2;
    }
    const int64_t D = 64;
    printf("qkv_attention causal, B=1 D=64, no weights; tiles %s %dx%d, %d threads, median of %d\n",
           qkv__attention_isa_name(&(qkv__attn){.nthreads = 1}), QKV__ATTN_BQ, QKV__ATTN_BK, omp_get_max_threads(),
           runs);
    printf("%3s %6s %10s %10s %10s %9s %9s %12s %12s\n", "H", "T", "fwd ms", "bwd ms", "total ms", "fwd GF/s",
           "bwd GF/s", "arena MiB", "TxT MiB");
    const int heads[2] = {1, 12};
    for (int hi = 0; hi < 2; hi++) {
        const int64_t H = heads[hi], C = H * D;
        for (int64_t T = 256; T <= max_t; T *= 2) {
            qkv_ctx *ctx = qkv_ctx_new(0);
            if (!ctx) {
                fprintf(stderr, "bench_attention: %s\n", qkv_last_error());
                return 1;
            }
            double tf[101], tb[101];
            qkv_rng r;
            qkv_rng_seed(&r, 1);
            for (int it = -1; it < runs; it++) {
                qkv_ctx_reset(ctx);
                qkv_tensor *q = input(ctx, &r, T, C), *k = input(ctx, &r, T, C), *v = input(ctx, &r, T, C);
                qkv_attn_opts o = {.n_head = (int)H, .causal = 1};
                double t0 = now();
                qkv_tensor *out = qkv_attention(ctx, q, k, v, &o);
                double t1 = now();
                qkv_tensor *loss = qkv_sum(ctx, out);
                double t2 = now();
                qkv_status st = qkv_backward(ctx, loss);
                double t3 = now();
                if (!out || st != QKV_OK) {
                    fprintf(stderr, "bench_attention: %s\n", qkv_ctx_error(ctx));
                    return 1;
                }
                if (it >= 0) tf[it] = t1 - t0, tb[it] = t3 - t2;
            }
            qsort(tf, (size_t)runs, sizeof(double), cmp_double);
            qsort(tb, (size_t)runs, sizeof(double), cmp_double);
            const double f = tf[runs / 2], b = tb[runs / 2], work = (double)T * T * D * H;
            printf("%3lld %6lld %10.2f %10.2f %10.2f %9.1f %9.1f %12.2f %12.0f\n", (long long)H, (long long)T, f * 1e3,
                   b * 1e3, (f + b) * 1e3, 2 * work / f * 1e-9, 5 * work / b * 1e-9,
                   qkv_ctx_arena_peak(ctx) / 1048576.0, 4.0 * T * T * H / 1048576.0);
            fflush(stdout);
            qkv_ctx_free(ctx);
        }
    }
    return 0;
}

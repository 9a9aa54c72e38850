/* bench_gemm.c — GFLOP/s of qkv__gemm on GPT-2-small training shapes (B*T = 1024 rows, C = 768,
 * 3C = 2304, 4C = 3072), forward and both backward forms, with 1 and 2 threads; the batched attention
 * products; and the M = 1 matrix-vector products of generation in GB/s of weights read.
 *
 * Not a test (tests/test_gemm.c checks results) and not a comparison with other libraries.
 * Each figure is the median and min–max of `runs` timed calls (default 9, at least 7) after two
 * warm-up calls. The machine may be shared: rerun when a min–max range looks wide. The "% peak"
 * columns divide each median by the fp32 FMA peak of the same thread count, measured here first the
 * way bench/bench_peak.c does (16 independent zmm FMA chains per thread, median of 7), so the figures
 * stay comparable when the clock differs from run to run.
 *
 * Usage: bench_gemm [runs [filter]]   (filter: only shapes whose name contains it, e.g. "bwd")
 * Shapes are written M×N×K: C (M,N) = op(A) (M,K) @ op(B) (K,N). For a linear layer x (1024,C) and
 * w (OC,C): forward is (0,1) 1024×OC×C, dx = dy @ w is (0,0) 1024×C×OC, and
 * dw = dy^T @ x is (1,0) OC×C×1024. */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"

typedef struct {
    const char *what;
    int ta, tb;
    int64_t M, N, K, batch;
} shape_t;

static const shape_t shapes[] = {
    {"fwd  qkv   x@w.T", 0, 1, 1024, 2304, 768, 1},
    {"fwd  fc    x@w.T", 0, 1, 1024, 3072, 768, 1},
    {"fwd  proj  x@w.T", 0, 1, 1024, 768, 3072, 1},
    {"bwd  qkv   dy@w", 0, 0, 1024, 768, 2304, 1},
    {"bwd  fc    dy@w", 0, 0, 1024, 768, 3072, 1},
    {"bwd  proj  dy@w", 0, 0, 1024, 3072, 768, 1},
    {"bwd  qkv   dy.T@x", 1, 0, 2304, 768, 1024, 1},
    {"bwd  fc    dy.T@x", 1, 0, 3072, 768, 1024, 1},
    {"bwd  proj  dy.T@x", 1, 0, 768, 3072, 1024, 1},
    {"attn q@k.T  12 heads", 0, 1, 1024, 1024, 64, 12},
    {"attn att@v  12 heads", 0, 0, 1024, 64, 1024, 12},
};

static const shape_t matvecs[] = {
    {"gen  qkv   x@w.T", 0, 1, 1, 2304, 768, 1},
    {"gen  head  x@wte.T", 0, 1, 1, 50257, 768, 1},
    {"gen  qkv   x@W (HF Conv1D)", 0, 0, 1, 2304, 768, 1},
    {"gen  attnp x@W (HF Conv1D)", 0, 0, 1, 768, 768, 1},
    {"gen  fc    x@W (HF Conv1D)", 0, 0, 1, 3072, 768, 1},
    {"gen  proj  x@W (HF Conv1D)", 0, 0, 1, 768, 3072, 1},
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

/* 64-byte aligned like the library's arena tensors: with malloc's 16-byte alignment every C row
 * store would straddle two cache lines and the figures would understate the kernel by ~5%. */
static float *filled(size_t n) {
    float *p = aligned_alloc(64, (n * sizeof(float) + 63) / 64 * 64);
    if (!p) {
        fprintf(stderr, "bench_gemm: out of memory\n");
        exit(1);
    }
    for (size_t i = 0; i < n; i++) p[i] = (float)((i * 2654435761u) % 1000) / 1000.0f - 0.5f;
    return p;
}

/* 16 independent FMA chains on zmm registers, nothing else: the arithmetic ceiling of one core. */
__attribute__((target("avx512f"))) static float fma_chains(long iters) {
    __m512 acc[16];
    const __m512 x = _mm512_set1_ps(1.0f - 1.0f / 1048576.0f), y = _mm512_set1_ps(1.0f / 1048576.0f);
#pragma GCC unroll 16
    for (int i = 0; i < 16; i++) acc[i] = _mm512_set1_ps(1.0f + (float)i / 64.0f);
    for (long t = 0; t < iters; t++) {
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) acc[i] = _mm512_fmadd_ps(acc[i], x, y);
#pragma GCC unroll 16
        for (int i = 0; i < 16; i++) __asm__ volatile("" : "+v"(acc[i]));
    }
    __m512 s = acc[0];
#pragma GCC unroll 16
    for (int i = 1; i < 16; i++) s = _mm512_add_ps(s, acc[i]);
    return _mm512_reduce_add_ps(s);
}

static volatile float g_sink;

/* Median GFLOP/s of 7 runs of the FMA chains on nt threads (0 when the CPU has no AVX-512). */
static double fma_peak(int nt) {
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512f")) return 0.0;
    const long iters = 1L << 23; /* 16 FMAs a trip: about 16 ms at 2 FMAs a cycle */
    double gf[7];
    for (int r = -1; r < 7; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
        {
            float v = fma_chains(iters);
            if (v == 12345.0f) g_sink = v;
        }
        double dt = omp_get_wtime() - t0;
        if (r >= 0) gf[r] = 512.0 * (double)iters * nt / dt / 1e9;
    }
    qsort(gf, 7, sizeof(double), cmp_double);
    return gf[3];
}

/* Times `runs` calls; fills t[] (seconds, sorted). */
static void time_shape(const shape_t *s, int runs, double *t) {
    size_t na = (size_t)(s->M * s->K * s->batch), nb = (size_t)(s->K * s->N * s->batch);
    size_t nc = (size_t)(s->M * s->N * s->batch);
    float *A = filled(na), *B = filled(nb), *C = filled(nc);
    int64_t lda = s->ta ? s->M : s->K, ldb = s->tb ? s->K : s->N;
    for (int r = -2; r < runs; r++) {
        double t0 = omp_get_wtime();
        if (s->batch == 1)
            qkv__gemm(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, B, ldb, 0.0f, C, s->N);
        else
            qkv__gemm_batched(s->ta, s->tb, s->M, s->N, s->K, 1.0f, A, lda, s->M * s->K, B, ldb,
                              s->K * s->N, 0.0f, C, s->N, s->M * s->N, s->batch);
        double dt = omp_get_wtime() - t0;
        if (r >= 0) t[r] = dt;
    }
    qsort(t, (size_t)runs, sizeof(double), cmp_double);
    free(A);
    free(B);
    free(C);
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 9;
    const char *filter = argc > 2 ? argv[2] : "";
    if (runs < 7) runs = 7;
    double *t = malloc((size_t)runs * sizeof(double));
    int maxt = omp_get_max_threads();
    printf("bench_gemm: path %s, up to %d threads, %d runs after 2 warm-ups, median [min-max]\n",
           qkv__gemm_isa(), maxt, runs);
    double peak[3] = {0.0, fma_peak(1), fma_peak(2)};
    printf("fp32 FMA peak (zmm, median of 7): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", peak[1],
           peak[2]);
    printf("%-22s %2s %2s %18s %8s  %-28s %-28s\n", "shape", "ta", "tb", "M x N x K", "batch",
           "1 thread GFLOP/s     %peak", "2 threads GFLOP/s    %peak");
    const int nshapes = (int)(sizeof shapes / sizeof shapes[0]);
    for (int i = 0; i < nshapes; i++) {
        const shape_t *s = &shapes[i];
        if (!strstr(s->what, filter)) continue;
        double flop = 2.0 * (double)s->M * (double)s->N * (double)s->K * (double)s->batch;
        char dims[64], col[2][64];
        snprintf(dims, sizeof dims, "%lldx%lldx%lld", (long long)s->M, (long long)s->N, (long long)s->K);
        for (int nt = 1; nt <= 2; nt++) {
            omp_set_num_threads(nt);
            time_shape(s, runs, t);
            double med = flop / t[runs / 2] / 1e9;
            snprintf(col[nt - 1], sizeof col[0], "%6.1f [%5.1f-%5.1f] %4.0f%%", med, flop / t[runs - 1] / 1e9,
                     flop / t[0] / 1e9, peak[nt] > 0.0 ? 100.0 * med / peak[nt] : 0.0);
        }
        printf("%-22s %2d %2d %18s %8lld  %-28s %-28s\n", s->what, s->ta, s->tb, dims, (long long)s->batch,
               col[0], col[1]);
        fflush(stdout);
    }
    printf("\n%-22s %2s %2s %18s %8s  %-26s %-26s\n", "matvec (M = 1)", "ta", "tb", "M x N x K", "MB",
           "1 thread GB/s of w", "2 threads GB/s of w");
    for (int i = 0; i < (int)(sizeof matvecs / sizeof matvecs[0]); i++) {
        const shape_t *s = &matvecs[i];
        if (!strstr(s->what, filter)) continue;
        double bytes = 4.0 * (double)s->N * (double)s->K;
        char dims[64], col[2][64];
        snprintf(dims, sizeof dims, "%lldx%lldx%lld", (long long)s->M, (long long)s->N, (long long)s->K);
        for (int nt = 1; nt <= 2; nt++) {
            omp_set_num_threads(nt);
            time_shape(s, runs, t);
            snprintf(col[nt - 1], sizeof col[0], "%6.1f [%5.1f-%5.1f]", bytes / t[runs / 2] / 1e9,
                     bytes / t[runs - 1] / 1e9, bytes / t[0] / 1e9);
        }
        printf("%-22s %2d %2d %18s %8.1f  %-26s %-26s\n", s->what, s->ta, s->tb, dims, bytes / 1e6, col[0],
               col[1]);
        fflush(stdout);
    }
    printf("\nfp32 FMA peak again at the end: 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n", fma_peak(1),
           fma_peak(2));
    omp_set_num_threads(maxt);
    free(t);
    return 0;
}

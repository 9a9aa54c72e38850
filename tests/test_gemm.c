/* test_gemm.c — qkv__gemm and qkv__gemm_batched against the double-precision triple loop
 * qkv__gemm_ref, on edge-tile shapes, all four transpose combinations, padded leading dimensions,
 * alpha/beta variants, NaN-filled outputs with beta = 0, the M = 1 matrix-vector path, the copying
 * packers on odd K slices and several cache blocks, and batches;
 * plus bit-determinism of repeated calls and a call from inside a parallel region.
 *
 * Not a benchmark (bench/bench_gemm.c is) and not a PyTorch comparison: the reference is the
 * definition itself. Run without arguments it tests the path the CPU selects and then re-runs itself
 * with QKV_GEMM_ISA=avx2 and =scalar so the slower paths stay covered on machines that have AVX-512.
 *
 * Tolerance: max|C - Cref| / (max|Cref| + 1e-30) <= 1e-5 per case. The kernel accumulates in float32
 * over K <= ~3000 in an order that differs from the reference (KC slices, FMA contraction); with
 * inputs in [-1,1] the rounding error grows like sqrt(K) * 2^-24 relative to the result's scale,
 * about 3e-6 at K = 3000, so 1e-5 passes every correct kernel and catches any wrong element. */
#include <math.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "kernels/gemm.h"

#define TOL 1e-5

static int g_failures;

static _Thread_local uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static float frand(void) { /* uniform in [-1,1), a fixed stream */
    g_rng = g_rng * 6364136223846793005ull + 1442695040888963407ull;
    return (float)((double)(g_rng >> 40) / 8388608.0 - 1.0);
}

static float *rand_buf(size_t n) {
    float *p = malloc((n ? n : 1) * sizeof(float));
    if (!p) {
        fprintf(stderr, "out of memory\n");
        exit(2);
    }
    for (size_t i = 0; i < n; i++) p[i] = frand();
    return p;
}

/* Normalised max error over the M×N block of C (row stride ldc). NaN anywhere counts as infinite. */
static double norm_err(int64_t M, int64_t N, const float *C, const float *R, int64_t ldc) {
    double emax = 0.0, rmax = 0.0;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double c = C[i * ldc + j], r = R[i * ldc + j];
            if (isnan(c) != isnan(r)) return INFINITY;
            if (isnan(c)) continue;
            if (fabs(c - r) > emax) emax = fabs(c - r);
            if (fabs(r) > rmax) rmax = fabs(r);
        }
    return emax / (rmax + 1e-30);
}

typedef struct {
    const char *name;
    int cases, failed;
    double worst;
} group_t;

static void group_begin(group_t *g, const char *name) {
    g->name = name;
    g->cases = g->failed = 0;
    g->worst = 0.0;
}

static void group_end(const group_t *g) {
    printf("  %-44s %4d cases  max err %.2e  (tol %.0e)  %s\n", g->name, g->cases, g->worst, TOL,
           g->failed ? "FAIL" : "ok");
    g_failures += g->failed;
}

/* One GEMM case: random A, B, C (with padded leading dimensions), run both, compare, and also check
 * that the elements of C outside the M×N block (the ldc padding) were not touched. */
static void check_case(group_t *g, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                       float beta, int64_t pad, int nan_c) {
    int64_t lda = (ta ? M : K) + pad, ldb = (tb ? K : N) + pad, ldc = N + pad;
    int64_t arows = ta ? K : M, brows = tb ? N : K;
    float *A = rand_buf((size_t)(arows * lda)), *B = rand_buf((size_t)(brows * ldb));
    float *C = rand_buf((size_t)(M * ldc)), *R = malloc((size_t)(M * ldc + 1) * sizeof(float));
    if (nan_c)
        for (int64_t i = 0; i < M * ldc; i++) C[i] = NAN;
    memcpy(R, C, (size_t)(M * ldc) * sizeof(float));
    qkv__gemm(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, C, ldc);
    qkv__gemm_ref(ta, tb, M, N, K, alpha, A, lda, B, ldb, beta, R, ldc);
    double e = norm_err(M, N, C, R, ldc);
    int pad_ok = 1;
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = N; j < ldc; j++)
            if (memcmp(&C[i * ldc + j], &R[i * ldc + j], sizeof(float)) != 0) pad_ok = 0;
    g->cases++;
    if (e > g->worst) g->worst = e;
    if (!(e <= TOL) || !pad_ok) {
        g->failed++;
        printf("    FAIL ta=%d tb=%d M=%lld N=%lld K=%lld alpha=%g beta=%g pad=%lld nanC=%d: err %.3e%s\n",
               ta, tb, (long long)M, (long long)N, (long long)K, alpha, beta, (long long)pad, nan_c, e,
               pad_ok ? "" : " (wrote outside the M×N block)");
    }
    free(A);
    free(B);
    free(C);
    free(R);
}

static void check_batched(group_t *g, int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                          float beta, int64_t batch) {
    int64_t lda = (ta ? M : K) + 1, ldb = (tb ? K : N) + 2, ldc = N + 3;
    int64_t sA = (ta ? K : M) * lda + 5, sB = (tb ? N : K) * ldb + 7, sC = M * ldc + 11;
    float *A = rand_buf((size_t)(sA * batch)), *B = rand_buf((size_t)(sB * batch));
    float *C = rand_buf((size_t)(sC * batch)), *R = malloc((size_t)(sC * batch) * sizeof(float));
    memcpy(R, C, (size_t)(sC * batch) * sizeof(float));
    qkv__gemm_batched(ta, tb, M, N, K, alpha, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
    double e = 0.0;
    for (int64_t b = 0; b < batch; b++) {
        qkv__gemm_ref(ta, tb, M, N, K, alpha, A + b * sA, lda, B + b * sB, ldb, beta, R + b * sC, ldc);
        double eb = norm_err(M, N, C + b * sC, R + b * sC, ldc);
        if (eb > e) e = eb;
    }
    /* Everything outside the batch's M×N blocks must be untouched. */
    int pad_ok = 1;
    for (int64_t b = 0; b < batch; b++)
        for (int64_t q = 0; q < sC; q++) {
            int64_t i = q / ldc, j = q % ldc;
            if ((i >= M || j >= N) && memcmp(&C[b * sC + q], &R[b * sC + q], sizeof(float)) != 0) pad_ok = 0;
        }
    g->cases++;
    if (e > g->worst) g->worst = e;
    if (!(e <= TOL) || !pad_ok) {
        g->failed++;
        printf("    FAIL batched ta=%d tb=%d M=%lld N=%lld K=%lld batch=%lld: err %.3e%s\n", ta, tb,
               (long long)M, (long long)N, (long long)K, (long long)batch, e,
               pad_ok ? "" : " (wrote outside)");
    }
    free(A);
    free(B);
    free(C);
    free(R);
}

/* Two identical calls must give bit-identical C; returns 1 when they do. */
/* The second call runs on `threads2` OpenMP threads (0: the same as the first). */
static int same_twice(int ta, int tb, int64_t M, int64_t N, int64_t K, float beta, int threads2) {
    int64_t lda = ta ? M : K, ldb = tb ? K : N;
    float *A = rand_buf((size_t)(M * K)), *B = rand_buf((size_t)(K * N));
    float *C0 = rand_buf((size_t)(M * N)), *C1 = malloc((size_t)(M * N) * sizeof(float));
    memcpy(C1, C0, (size_t)(M * N) * sizeof(float));
    qkv__gemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C0, N);
    const int saved = omp_get_max_threads();
    if (threads2 > 0) omp_set_num_threads(threads2);
    qkv__gemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C1, N);
    omp_set_num_threads(saved);
    int same = memcmp(C0, C1, (size_t)(M * N) * sizeof(float)) == 0;
    free(A);
    free(B);
    free(C0);
    free(C1);
    return same;
}

static int run_all(void) {
    printf("test_gemm: path %s, %d threads\n", qkv__gemm_isa(), omp_get_max_threads());
    group_t g;
    static const int64_t small[][3] = {
        {1, 1, 1},    {1, 1, 7},    {2, 3, 1},     {17, 31, 13},  {13, 17, 31},  {14, 32, 16},
        {15, 33, 17}, {28, 64, 5},  {64, 64, 64},  {130, 257, 65}, {65, 130, 257}, {3, 100, 40},
        {100, 3, 40}, {6, 16, 300}, {29, 47, 513}, {1, 40, 33},    {2, 40, 33},   {45, 1, 20},
    };
    const int nsmall = (int)(sizeof small / sizeof small[0]);

    group_begin(&g, "edge shapes, all ta/tb, alpha 1, beta 0");
    for (int s = 0; s < nsmall; s++)
        for (int t = 0; t < 4; t++)
            check_case(&g, t >> 1, t & 1, small[s][0], small[s][1], small[s][2], 1.0f, 0.0f, 0, 0);
    group_end(&g);

    group_begin(&g, "edge shapes, padded ld, alpha/beta variants");
    static const float ab[][2] = {{1.0f, 1.0f}, {0.5f, 0.3f}, {0.5f, 0.0f}, {-2.0f, 1.0f}, {1.0f, 0.3f}};
    for (int s = 0; s < nsmall; s++)
        for (int t = 0; t < 4; t++)
            for (int v = 0; v < 5; v++)
                check_case(&g, t >> 1, t & 1, small[s][0], small[s][1], small[s][2], ab[v][0], ab[v][1],
                           3 + v, 0);
    group_end(&g);

    group_begin(&g, "beta 0 with C prefilled with NaN");
    for (int s = 0; s < nsmall; s++)
        for (int t = 0; t < 4; t++)
            check_case(&g, t >> 1, t & 1, small[s][0], small[s][1], small[s][2], 0.5f, 0.0f, 1, 1);
    group_end(&g);

    group_begin(&g, "alpha 0 / K 0 (C = beta*C)");
    for (int t = 0; t < 4; t++) {
        check_case(&g, t >> 1, t & 1, 17, 31, 13, 0.0f, 0.3f, 2, 0);
        check_case(&g, t >> 1, t & 1, 17, 31, 0, 1.0f, 0.3f, 2, 0);
        check_case(&g, t >> 1, t & 1, 17, 31, 0, 1.0f, 0.0f, 2, 1);
    }
    group_end(&g);

    group_begin(&g, "M=1 matrix-vector (x @ W^T and x @ W)");
    for (int t = 0; t < 4; t++) {
        check_case(&g, t >> 1, t & 1, 1, 2304, 768, 1.0f, 0.0f, 0, 0);
        check_case(&g, t >> 1, t & 1, 1, 777, 250, 0.5f, 0.3f, 5, 0);
        check_case(&g, t >> 1, t & 1, 1, 3, 1000, 1.0f, 1.0f, 1, 0);
        check_case(&g, t >> 1, t & 1, 1, 1000, 3, 1.0f, 0.0f, 1, 1);
        /* rows in four quarters of each thread's range, with a remainder of 1-3 rows */
        check_case(&g, t >> 1, t & 1, 1, 5003, 97, 1.0f, 0.0f, 0, 0);
        check_case(&g, t >> 1, t & 1, 1, 4102, 40, 0.5f, 0.3f, 2, 0);
    }
    group_end(&g);

    group_begin(&g, "blocked sizes (several MC/KC/NC blocks)");
    check_case(&g, 0, 1, 700, 3200, 600, 1.0f, 0.0f, 0, 0);
    check_case(&g, 0, 0, 350, 300, 1500, 0.5f, 0.3f, 4, 0);
    check_case(&g, 1, 0, 400, 200, 1024, 1.0f, 1.0f, 0, 0);
    check_case(&g, 1, 1, 341, 333, 555, 1.0f, 0.0f, 1, 1);
    check_case(&g, 0, 1, 128, 192, 3072, 1.0f, 0.0f, 0, 0);
    group_end(&g);

    /* The packers that copy (op(A) stored K×M, op(B) stored K×N) work through PF_ROWS = 8 source
     * rows at a time across the whole block: K slices that are not a multiple of 8 or shorter than 8,
     * partial micro-panels on both edges, several MC / KC / NC blocks, leading dimensions with padding
     * and ones that are a multiple of 1024 floats. */
    group_begin(&g, "copy packers: odd K, partial panels, blocks");
    static const int64_t cp[][5] = {
        /* ta tb M N K */
        {1, 0, 30, 3100, 530}, {1, 0, 200, 70, 1037}, {0, 0, 45, 3200, 9}, {1, 0, 15, 33, 7},
        {1, 1, 181, 40, 515},  {0, 0, 7, 1025, 1100},  {1, 0, 1, 50, 3},    {1, 0, 2, 1, 1030},
    };
    for (int c = 0; c < (int)(sizeof cp / sizeof cp[0]); c++)
        for (int v = 0; v < 3; v++)
            check_case(&g, (int)cp[c][0], (int)cp[c][1], cp[c][2], cp[c][3], cp[c][4], ab[v][0], ab[v][1],
                       v == 2 ? 0 : 2 * v + 1, 0);
    /* lda = ldb = ldc = 1024: every row of a panel in the same cache set */
    check_case(&g, 1, 0, 1000, 1000, 200, 1.0f, 0.0f, 24, 0);
    group_end(&g);

    group_begin(&g, "batched (strided, batch 1/2/3/12)");
    for (int t = 0; t < 4; t++) {
        check_batched(&g, t >> 1, t & 1, 17, 31, 13, 1.0f, 0.0f, 3);
        check_batched(&g, t >> 1, t & 1, 64, 64, 32, 0.5f, 0.3f, 12);
        check_batched(&g, t >> 1, t & 1, 130, 70, 65, 1.0f, 1.0f, 2);
        check_batched(&g, t >> 1, t & 1, 1, 300, 64, 1.0f, 0.0f, 12);
        check_batched(&g, t >> 1, t & 1, 200, 100, 50, 1.0f, 0.0f, 1);
        check_batched(&g, t >> 1, t & 1, 5, 7, 9, 1.0f, 0.0f, 0);
    }
    group_end(&g);

    group_begin(&g, "called inside a parallel region (runs serial)");
    int inner_fail = 0;
    double inner_worst = 0.0;
#pragma omp parallel num_threads(2) reduction(+ : inner_fail) reduction(max : inner_worst)
    {
        group_t gi;
        group_begin(&gi, "inner");
        check_case(&gi, 0, 1, 150, 200, 300, 1.0f, 0.0f, 0, 0);
        check_case(&gi, 1, 0, 1, 500, 64, 1.0f, 0.3f, 2, 0);
        inner_fail += gi.failed;
        inner_worst = gi.worst;
    }
    g.cases = 4;
    g.failed = inner_fail;
    g.worst = inner_worst;
    group_end(&g);

    /* Determinism: K is cut only where the shape alone fixes the cut (the x @ W matrix-vector
     * case), never by thread, so calls must agree to the bit, on the same thread count and on 1 or 3
     * threads, including the M = 1 paths and shapes with edge tiles. */
    static const int64_t det[][5] = {{0, 1, 1024, 768, 768}, {1, 0, 300, 301, 1024}, {0, 0, 1, 2304, 768},
                                     {1, 1, 77, 1000, 333},  {0, 0, 1, 777, 3001},   {1, 0, 1, 50, 1037},
                                     {0, 1, 1, 3000, 333}};
    static const int thr[] = {0, 1, 3};
    const int ndet = (int)(sizeof det / sizeof det[0]);
    int det_fail = 0;
    for (int d = 0; d < ndet; d++)
        for (int t = 0; t < 3; t++)
            if (!same_twice((int)det[d][0], (int)det[d][1], det[d][2], det[d][3], det[d][4], 0.0f, thr[t])) {
                det_fail++;
                printf("    FAIL not bit-identical across two calls (second on %d threads): ta=%d tb=%d M=%lld "
                       "N=%lld K=%lld\n",
                       thr[t] ? thr[t] : omp_get_max_threads(), (int)det[d][0], (int)det[d][1],
                       (long long)det[d][2], (long long)det[d][3], (long long)det[d][4]);
            }
    printf("  %-44s %4d cases  %s\n", "bit-identical across calls and thread counts", 3 * ndet,
           det_fail ? "FAIL" : "ok");
    g_failures += det_fail;
    return g_failures;
}

int main(int argc, char **argv) {
    int fails = run_all();
    /* Cover the other paths when this process picked the fastest one itself. */
    if (!getenv("QKV_GEMM_ISA") && argc >= 1 && !strchr(argv[0], '\'')) {
        static const char *const others[] = {"avx2", "scalar"};
        for (int i = 0; i < 2; i++) {
            if (strcmp(qkv__gemm_isa(), others[i]) == 0) continue;
            char cmd[4096];
            snprintf(cmd, sizeof cmd, "QKV_GEMM_ISA=%s '%s'", others[i], argv[0]);
            fflush(stdout);
            int rc = system(cmd);
            if (rc != 0) {
                printf("test_gemm: run with QKV_GEMM_ISA=%s failed (status %d)\n", others[i], rc);
                fails++;
            }
        }
    }
    printf("test_gemm: %s\n", fails ? "FAILED" : "all passed");
    return fails ? 1 : 0;
}

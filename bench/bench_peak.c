/* bench_peak.c — the fp32 FMA peak of this machine with 1 and 2 threads: the ceiling that
 * bench_gemm's figures are judged against.
 *
 * Each thread runs a loop of nothing but independent FMAs on registers: acc[i] = acc[i] * x + y for
 * i in [0, n), with n accumulators. An FMA has a latency of about 4 cycles and (on Zen 5 with AVX-512)
 * two pipes, so at least 4 × 2 = 8 chains must be in flight to keep both pipes busy; we time 8, 12, 16
 * and 24 chains so the table shows the plateau rather than assuming where it is. zmm (16 floats) and
 * ymm (8 floats) are timed separately; the ymm kernels are compiled for AVX2, which has 16 registers,
 * so they stop at 12 chains (more would spill to the stack and measure the spills). x = 1 - 2^-20 and
 * y = 2^-20 keep every accumulator near 1 (no overflow, no denormals, no constant folding).
 *
 * Not a test and not a GEMM: no loads or stores in the loop, so this is the arithmetic ceiling only.
 * Each figure is the median and min–max of `runs` timed repetitions (default 9) of about 16 ms each,
 * after one warm-up (which also lets the clock settle). The machine may be shared: check `uptime` and
 * rerun when a range looks wide.
 *
 * The implied clock assumes two FMA pipes per core that take a whole zmm each (64 flop/cycle with zmm,
 * 32 with ymm, as on Zen 5): a figure to sanity-check against the CPU's advertised clock, not a
 * measurement of it. If zmm and ymm imply about the same clock the pipes are 512 bits wide; if zmm
 * implies half the ymm clock they are 256 bits wide.
 *
 * Usage: bench_peak [runs] */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FMAS_PER_REP (1L << 27) /* FMA instructions per thread per timed repetition (~16 ms at 2 per cycle) */

/* One kernel per (register width, chain count). The asm barrier at the end of each trip keeps gcc
 * from reordering or merging chains, and the final sum keeps the chains alive. */
#define PEAK_KERNEL(NAME, TARGET, VT, SET1, FMA, ADD, STORE, W, N)                                   \
    __attribute__((target(TARGET))) static float NAME(long iters) {                                 \
        VT acc[N];                                                                                  \
        const VT x = SET1(1.0f - 1.0f / 1048576.0f), y = SET1(1.0f / 1048576.0f);                  \
        _Pragma("GCC unroll 24") for (int i = 0; i < N; i++) acc[i] = SET1(1.0f + (float)i / 64.0f); \
        for (long t = 0; t < iters; t++) {                                                          \
            _Pragma("GCC unroll 24") for (int i = 0; i < N; i++) acc[i] = FMA(acc[i], x, y);         \
            _Pragma("GCC unroll 24") for (int i = 0; i < N; i++) __asm__ volatile("" : "+v"(acc[i])); \
        }                                                                                           \
        VT s = acc[0];                                                                              \
        _Pragma("GCC unroll 24") for (int i = 1; i < N; i++) s = ADD(s, acc[i]);                    \
        float out[W];                                                                               \
        STORE(out, s);                                                                              \
        return out[0];                                                                              \
    }

#define ZMM(NAME, N) \
    PEAK_KERNEL(NAME, "avx512f", __m512, _mm512_set1_ps, _mm512_fmadd_ps, _mm512_add_ps, _mm512_storeu_ps, 16, N)
#define YMM(NAME, N) \
    PEAK_KERNEL(NAME, "avx2,fma", __m256, _mm256_set1_ps, _mm256_fmadd_ps, _mm256_add_ps, _mm256_storeu_ps, 8, N)

ZMM(zmm8, 8)
ZMM(zmm12, 12)
ZMM(zmm16, 16)
ZMM(zmm24, 24)
YMM(ymm8, 8)
YMM(ymm10, 10)
YMM(ymm12, 12)

typedef struct {
    const char *name;
    float (*fn)(long);
    int lanes, chains;
    const char *need; /* cpu feature */
} variant_t;

static const variant_t variants[] = {
    {"zmm", zmm8, 16, 8, "avx512f"},   {"zmm", zmm12, 16, 12, "avx512f"}, {"zmm", zmm16, 16, 16, "avx512f"},
    {"zmm", zmm24, 16, 24, "avx512f"}, {"ymm", ymm8, 8, 8, "avx2"},       {"ymm", ymm10, 8, 10, "avx2"},
    {"ymm", ymm12, 8, 12, "avx2"},
};

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static volatile float g_sink;

/* GFLOP/s of each repetition (all threads together), sorted ascending. */
static void measure(const variant_t *v, int nt, int runs, double *gf) {
    long iters = FMAS_PER_REP / v->chains;
    double flop = 2.0 * (double)v->lanes * (double)v->chains * (double)iters * nt;
    for (int r = -1; r < runs; r++) {
        double t0 = omp_get_wtime();
#pragma omp parallel num_threads(nt)
        {
            float s = v->fn(iters);
            if (s == 12345.0f) g_sink = s;
        }
        double dt = omp_get_wtime() - t0;
        if (r >= 0) gf[r] = flop / dt / 1e9;
    }
    qsort(gf, (size_t)runs, sizeof(double), cmp_double);
}

static int cpu_has(const char *f) {
    __builtin_cpu_init();
    if (f[4] == '5') return __builtin_cpu_supports("avx512f");
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int main(int argc, char **argv) {
    int runs = argc > 1 ? atoi(argv[1]) : 9;
    if (runs < 3) runs = 3;
    double *gf = malloc((size_t)runs * sizeof(double));
    if (!gf) return 1;
    int maxt = omp_get_num_procs();
    printf("bench_peak: fp32 FMA throughput, %d runs after 1 warm-up, median [min-max] GFLOP/s\n", runs);
    printf("implied GHz = GFLOP/s per core / (2 FMA pipes x lanes x 2 flop): / 64 for zmm, / 32 for ymm\n");
    printf("%-4s %6s %8s  %-24s %8s\n", "reg", "chains", "threads", "GFLOP/s", "GHz/core");
    double best[2] = {0, 0};
    for (int nt = 1; nt <= 2 && nt <= maxt; nt++)
        for (size_t i = 0; i < sizeof variants / sizeof variants[0]; i++) {
            const variant_t *v = &variants[i];
            if (!cpu_has(v->need)) {
                printf("%-4s %6d %8d  (not supported by this CPU)\n", v->name, v->chains, nt);
                continue;
            }
            measure(v, nt, runs, gf);
            double med = gf[runs / 2];
            if (v->lanes == 16 && med > best[nt - 1]) best[nt - 1] = med;
            printf("%-4s %6d %8d  %6.1f [%6.1f-%6.1f]   %8.2f\n", v->name, v->chains, nt, med, gf[0],
                   gf[runs - 1], med / nt / (4.0 * v->lanes));
            fflush(stdout);
        }
    printf("\nzmm peak (best median over chain counts): 1 thread %.1f GFLOP/s, 2 threads %.1f GFLOP/s\n",
           best[0], best[1]);
    printf("80%% of the 2-thread peak: %.1f GFLOP/s\n", 0.8 * best[1]);
    free(gf);
    return 0;
}

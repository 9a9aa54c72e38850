/* bench_stream.c — the DRAM read bandwidth of this machine with 1 and 2 threads: the ceiling for
 * generation with a KV cache, which reads every weight once per token (GPT-2 124M in float32: 475 MiB,
 * so tokens/s can be at most bandwidth / 498 MB).
 *
 * Each thread sums its contiguous half of a 512 MiB buffer (far larger than any cache) with
 * AVX-512 loads and a software prefetch 4 KiB ahead, the access pattern of the decode matrix-vector
 * products. Not a test. Each figure is the median and min-max of `runs` passes (default 7) after one
 * warm-up pass. The machine may be shared (its neighbours' memory traffic moves this figure by a
 * third from one hour to the next here): compare a decode figure only with a bandwidth measured in the
 * same run, as bench/compare.py does.
 *
 * Usage: bench_stream [runs]
 */
#include <immintrin.h>
#include <omp.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define AVX512 __attribute__((target("avx512f")))

static double now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

AVX512 static float sum_avx512(const float *a, size_t n) {
    __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
    for (size_t i = 0; i + 64 <= n; i += 64) {
        _mm_prefetch((const char *)(a + i + 1024), _MM_HINT_T0);
        s0 = _mm512_add_ps(s0, _mm512_load_ps(a + i));
        s1 = _mm512_add_ps(s1, _mm512_load_ps(a + i + 16));
        s2 = _mm512_add_ps(s2, _mm512_load_ps(a + i + 32));
        s3 = _mm512_add_ps(s3, _mm512_load_ps(a + i + 48));
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(_mm512_add_ps(s0, s1), _mm512_add_ps(s2, s3)));
}

static float sum_plain(const float *a, size_t n) {
    float s[8] = {0};
    for (size_t i = 0; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) s[j] += a[i + j];
    return s[0] + s[1] + s[2] + s[3] + s[4] + s[5] + s[6] + s[7];
}

int main(int argc, char **argv) {
    const int runs = argc > 1 ? atoi(argv[1]) : 7;
    if (runs < 1 || runs > 1000) {
        fprintf(stderr, "usage: bench_stream [runs 1..1000]\n");
        return 2;
    }
    const size_t n = (size_t)128 << 20; /* floats: 512 MiB */
    float *a = aligned_alloc(64, n * sizeof(float));
    if (!a) {
        fprintf(stderr, "bench_stream: out of memory (512 MiB)\n");
        return 1;
    }
    memset(a, 0, n * sizeof(float));
    __builtin_cpu_init();
    const int avx512 = __builtin_cpu_supports("avx512f");
    printf("bench_stream: read bandwidth, 512 MiB buffer, %s loads, median [min-max] of %d passes\n",
           avx512 ? "AVX-512" : "plain", runs);
    const int maxt = omp_get_max_threads();
    volatile float sink = 0.0f;
    for (int nt = 1; nt <= (maxt < 2 ? maxt : 2); nt++) {
        double gbs[1000];
        for (int r = -1; r < runs; r++) {
            float tot = 0.0f;
            double t0 = now();
#pragma omp parallel num_threads(nt) reduction(+ : tot)
            {
                const size_t t = (size_t)omp_get_thread_num(), k = (size_t)omp_get_num_threads();
                const size_t lo = n * t / k / 64 * 64, hi = t + 1 == k ? n : n * (t + 1) / k / 64 * 64;
                tot += avx512 ? sum_avx512(a + lo, hi - lo) : sum_plain(a + lo, hi - lo);
            }
            double dt = now() - t0;
            sink += tot;
            if (r >= 0) gbs[r] = (double)n * sizeof(float) / dt / 1e9;
        }
        qsort(gbs, (size_t)runs, sizeof(double), cmp_double);
        printf("%d thread%s: %.1f GB/s [%.1f-%.1f]\n", nt, nt > 1 ? "s" : " ", gbs[runs / 2], gbs[0], gbs[runs - 1]);
    }
    free(a);
    return sink == 1.0f; /* never: keeps the sums alive */
}

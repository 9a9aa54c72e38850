/* gemm.c — single-precision GEMM, GotoBLAS/BLIS style: op(B) is packed into KC×NC panels, op(A)
 * into MC×KC blocks, and a register-blocked micro-kernel computes one MR×NR tile of C from a packed
 * A micro-panel (MR rows, k-major) and a packed B micro-panel (NR columns, k-major). Three micro-kernel
 * paths are chosen at run time: AVX-512 (14×32, the fast one), AVX2+FMA (6×16) and portable scalar
 * (4×4); the matrix-vector case M == 1 has its own streaming path that reads each weight once.
 *
 * What it is not: a BLAS. No column-major API, no complex or double types, no argument checking
 * (callers are library code that has already validated shapes), and no -ffast-math: every sum is an
 * ordinary float FMA chain in a fixed order.
 *
 * The one convention: loops are named after the GotoBLAS ones, outermost first — jc over NC-wide
 * column panels of C, pc over KC-deep slices of K, ic over MC-tall row blocks, then jr / ir over the
 * NR / MR micro-tiles of one block. Threads split C into rectangles in whole micro-tiles (never K), and
 * the KC blocking depends on K alone, so every element of C is the same sequence of FMAs whichever
 * thread computes it: results are bit-identical run to run.
 *
 * Where the time goes (AVX-512, 2-core Zen 5, GPT-2 shapes with 1024 rows): the micro-kernel alone
 * runs at 98% of the FMA peak with its operands in L1/L2, whole calls at 90-93% of the 1-thread peak
 * and about 90% of the 2-thread peak (bench/bench_gemm.c prints both). The rest is packing (3-6%:
 * the operands come from memory) and cache misses on C; so a different tile shape cannot gain much. */
#include "kernels/gemm.h"

#include <immintrin.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>
#include <threads.h>

/* ------------------------------------------------------------------------------------------------
 * Reference: the definition, in double precision. Tests compare everything below against it. */

static void scale_c(int64_t M, int64_t N, float beta, float *C, int64_t ldc) {
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) C[i * ldc + j] = beta == 0.0f ? 0.0f : beta * C[i * ldc + j];
}

void qkv__gemm_ref(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb,
                   float beta, float *C, int64_t ldc) {
    if (alpha == 0.0f || K <= 0) {
        scale_c(M, N, beta, C, ldc);
        return;
    }
    for (int64_t i = 0; i < M; i++)
        for (int64_t j = 0; j < N; j++) {
            double s = 0.0;
            for (int64_t k = 0; k < K; k++) {
                double a = ta ? A[k * lda + i] : A[i * lda + k];
                double b = tb ? B[j * ldb + k] : B[k * ldb + j];
                s += a * b;
            }
            double c = (double)alpha * s;
            if (beta != 0.0f) c += (double)beta * C[i * ldc + j];
            C[i * ldc + j] = (float)c;
        }
}

/* ------------------------------------------------------------------------------------------------
 * One micro-kernel path: tile shape, cache blocks and the three functions that depend on them. */

/* C tile (m,n) (m <= mr, n <= nr) = alpha * a (mr,k) @ b (k,nr) + beta * C; a and b packed k-major.
 * beta == 0: C not read. Full tiles go straight to C; edge tiles go through a local tile. */
typedef void (*kernel_fn)(int64_t k, const float *a, const float *b, float *c, int64_t ldc,
                          int64_t m, int64_t n, float alpha, float beta);
/* op(A) block (m,k) -> ceil(m/mr) micro-panels of (k,mr), zero-padded to mr rows. */
typedef void (*pack_a_fn)(int ta, const float *A, int64_t lda, int64_t m, int64_t k, float *out);
/* op(B) panel (k,n) -> ceil(n/nr) micro-panels of (k,nr), zero-padded to nr columns. */
typedef void (*pack_b_fn)(int tb, const float *B, int64_t ldb, int64_t k, int64_t n, float *out);
/* y[j] for j in [j0,j1): y (1,N) = alpha * x (1,K) @ op(B) (K,N) + beta * y, x contiguous. */
typedef void (*gemv_fn)(int tb, int64_t j0, int64_t j1, int64_t K, float alpha, const float *x,
                        const float *B, int64_t ldb, float beta, float *y);
/* y (1,n) += x (1,k) @ B (k,n), B row-major with row stride ldb: the rows of B stream past in
 * memory order. Each y[j] is updated by the same operations in the same order whatever n is, so a
 * caller may cut the columns anywhere without changing a bit of the result. */
typedef void (*gemv_rows_fn)(int64_t k, int64_t n, const float *x, const float *B, int64_t ldb, float *y);

typedef struct {
    const char *name;
    int64_t mr, nr;     /* micro-tile */
    int64_t kc, mc, nc; /* largest blocks; mc a multiple of mr, nc of nr */
    int64_t gemv_align; /* columns per gemv work unit when threads split N */
    kernel_fn kernel;
    pack_a_fn pack_a;
    pack_b_fn pack_b;
    gemv_fn gemv;
    gemv_rows_fn gemv_rows;
} isa_t;

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t cdiv(int64_t a, int64_t b) { return (a + b - 1) / b; }

/* Splits n into equal blocks no larger than maxb, each rounded up to a multiple of unit. Equal
 * blocks avoid a thin last block (K = 768 with KC 512 would leave a 256-deep slice). */
static int64_t balanced_block(int64_t n, int64_t maxb, int64_t unit) {
    int64_t nblk = cdiv(n, maxb);
    return cdiv(cdiv(n, nblk), unit) * unit;
}

/* ------------------------------------------------------------------------------------------------
 * Portable scalar path (4×4). Also the packers and gemv that the AVX2 path borrows. */

/* op(A)[i][k] and op(B)[k][j] for the stored layouts. */
#define AT(i, k) (ta ? A[(k) * lda + (i)] : A[(i) * lda + (k)])
#define BT(k, j) (tb ? B[(j) * ldb + (k)] : B[(k) * ldb + (j)])

static void pack_a_plain(int64_t mr, int ta, const float *A, int64_t lda, int64_t m, int64_t k,
                         float *out) {
    for (int64_t i0 = 0; i0 < m; i0 += mr, out += mr * k) {
        int64_t mm = min64(mr, m - i0);
        for (int64_t p = 0; p < k; p++)
            for (int64_t i = 0; i < mr; i++) out[p * mr + i] = i < mm ? AT(i0 + i, p) : 0.0f;
    }
}

static void pack_b_plain(int64_t nr, int tb, const float *B, int64_t ldb, int64_t k, int64_t n,
                         float *out) {
    for (int64_t j0 = 0; j0 < n; j0 += nr, out += nr * k) {
        int64_t nn = min64(nr, n - j0);
        for (int64_t p = 0; p < k; p++)
            for (int64_t j = 0; j < nr; j++) out[p * nr + j] = j < nn ? BT(p, j0 + j) : 0.0f;
    }
}

static void pack_a_4(int ta, const float *A, int64_t lda, int64_t m, int64_t k, float *out) {
    pack_a_plain(4, ta, A, lda, m, k, out);
}
static void pack_b_4(int tb, const float *B, int64_t ldb, int64_t k, int64_t n, float *out) {
    pack_b_plain(4, tb, B, ldb, k, n, out);
}

static void kernel_4x4(int64_t k, const float *a, const float *b, float *c, int64_t ldc, int64_t m,
                       int64_t n, float alpha, float beta) {
    float acc[4][4] = {{0}};
    for (int64_t p = 0; p < k; p++, a += 4, b += 4)
        for (int i = 0; i < 4; i++)
            for (int j = 0; j < 4; j++) acc[i][j] += a[i] * b[j];
    for (int64_t i = 0; i < m; i++)
        for (int64_t j = 0; j < n; j++) {
            float *cij = &c[i * ldc + j];
            *cij = beta == 0.0f ? alpha * acc[i][j] : alpha * acc[i][j] + beta * *cij;
        }
}

static void gemv_plain(int tb, int64_t j0, int64_t j1, int64_t K, float alpha, const float *x,
                       const float *B, int64_t ldb, float beta, float *y) {
    if (tb) {
        /* y[j] = dot(x, row j of B): four partial sums break the add dependency chain. */
        for (int64_t j = j0; j < j1; j++) {
            const float *w = B + j * ldb;
            float s[4] = {0, 0, 0, 0};
            int64_t p = 0;
            for (; p + 4 <= K; p += 4)
                for (int q = 0; q < 4; q++) s[q] += x[p + q] * w[p + q];
            for (; p < K; p++) s[0] += x[p] * w[p];
            float d = (s[0] + s[1]) + (s[2] + s[3]);
            y[j] = beta == 0.0f ? alpha * d : alpha * d + beta * y[j];
        }
    } else {
        /* y += x[p] * row p of B, in chunks of columns kept in a local accumulator. */
        for (int64_t c0 = j0; c0 < j1; c0 += 64) {
            int64_t w = min64(64, j1 - c0);
            float acc[64] = {0};
            for (int64_t p = 0; p < K; p++)
                for (int64_t j = 0; j < w; j++) acc[j] += x[p] * B[p * ldb + c0 + j];
            for (int64_t j = 0; j < w; j++)
                y[c0 + j] = beta == 0.0f ? alpha * acc[j] : alpha * acc[j] + beta * y[c0 + j];
        }
    }
}

static void gemv_rows_plain(int64_t k, int64_t n, const float *x, const float *B, int64_t ldb, float *y) {
    for (int64_t p = 0; p < k; p++)
        for (int64_t j = 0; j < n; j++) y[j] += x[p] * B[p * ldb + j];
}

static const isa_t isa_scalar = {"scalar", 4, 4, 256, 128, 2048, 16,
                                 kernel_4x4, pack_a_4, pack_b_4, gemv_plain, gemv_rows_plain};

/* ------------------------------------------------------------------------------------------------
 * AVX2 + FMA path: 6×16 tile, 12 ymm accumulators. Packing is the plain code above. */

#define AVX2 __attribute__((target("avx2,fma")))

static void pack_a_6(int ta, const float *A, int64_t lda, int64_t m, int64_t k, float *out) {
    pack_a_plain(6, ta, A, lda, m, k, out);
}
static void pack_b_16(int tb, const float *B, int64_t ldb, int64_t k, int64_t n, float *out) {
    pack_b_plain(16, tb, B, ldb, k, n, out);
}

AVX2 static void kernel_avx2_6x16(int64_t k, const float *restrict a, const float *restrict b,
                                  float *restrict c, int64_t ldc, int64_t m, int64_t n, float alpha,
                                  float beta) {
    __m256 acc[6][2];
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) acc[i][0] = acc[i][1] = _mm256_setzero_ps();
    for (int64_t p = 0; p < k; p++, a += 6, b += 16) {
        __m256 b0 = _mm256_loadu_ps(b), b1 = _mm256_loadu_ps(b + 8);
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++) {
            __m256 av = _mm256_broadcast_ss(a + i);
            acc[i][0] = _mm256_fmadd_ps(av, b0, acc[i][0]);
            acc[i][1] = _mm256_fmadd_ps(av, b1, acc[i][1]);
        }
    }
    __m256 va = _mm256_set1_ps(alpha), vb = _mm256_set1_ps(beta);
    if (m == 6 && n == 16) {
#pragma GCC unroll 6
        for (int i = 0; i < 6; i++)
            for (int h = 0; h < 2; h++) {
                float *cp = c + i * ldc + 8 * h;
                __m256 r = beta == 0.0f ? _mm256_mul_ps(acc[i][h], va)
                                        : _mm256_fmadd_ps(acc[i][h], va,
                                                          _mm256_mul_ps(_mm256_loadu_ps(cp), vb));
                _mm256_storeu_ps(cp, r);
            }
        return;
    }
    /* Edge tile: same arithmetic, through a local tile and masked loads/stores. */
    float t[6][16];
#pragma GCC unroll 6
    for (int i = 0; i < 6; i++) {
        _mm256_storeu_ps(t[i], acc[i][0]);
        _mm256_storeu_ps(t[i] + 8, acc[i][1]);
    }
    for (int64_t h = 0; h < 2; h++) {
        int64_t w = min64(8, n - 8 * h);
        if (w <= 0) break;
        __m256i msk =
            _mm256_cmpgt_epi32(_mm256_set1_epi32((int)w), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
        for (int64_t i = 0; i < m; i++) {
            float *cp = c + i * ldc + 8 * h;
            __m256 x = _mm256_loadu_ps(t[i] + 8 * h);
            __m256 r = beta == 0.0f ? _mm256_mul_ps(x, va)
                                    : _mm256_fmadd_ps(x, va, _mm256_mul_ps(_mm256_maskload_ps(cp, msk), vb));
            _mm256_maskstore_ps(cp, msk, r);
        }
    }
}

AVX2 static void gemv_avx2(int tb, int64_t j0, int64_t j1, int64_t K, float alpha, const float *x,
                           const float *B, int64_t ldb, float beta, float *y) {
    if (!tb) {
        gemv_plain(tb, j0, j1, K, alpha, x, B, ldb, beta, y);
        return;
    }
    for (int64_t j = j0; j < j1; j++) {
        const float *w = B + j * ldb;
        __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
        int64_t p = 0;
        for (; p + 16 <= K; p += 16) {
            s0 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p), _mm256_loadu_ps(w + p), s0);
            s1 = _mm256_fmadd_ps(_mm256_loadu_ps(x + p + 8), _mm256_loadu_ps(w + p + 8), s1);
        }
        float t[8];
        _mm256_storeu_ps(t, _mm256_add_ps(s0, s1));
        float d = ((t[0] + t[1]) + (t[2] + t[3])) + ((t[4] + t[5]) + (t[6] + t[7]));
        for (; p < K; p++) d += x[p] * w[p];
        y[j] = beta == 0.0f ? alpha * d : alpha * d + beta * y[j];
    }
}

static const isa_t isa_avx2 = {"avx2", 6, 16, 256, 144, 3072, 16,
                               kernel_avx2_6x16, pack_a_6, pack_b_16, gemv_avx2, gemv_rows_plain};

/* ------------------------------------------------------------------------------------------------
 * AVX-512 path: 14×32 tile = 28 zmm accumulators + 2 for the B row + 1 broadcast. Every shape tried
 * (6×64, 8×48, 10×48, 12×32, 14×32) reaches FMA peak on Zen 5 in isolation; 14×32 has the fewest C
 * loads/stores per FMA and its KC×32 B micro-panel (32 KiB at KC = 256) stays in the 48 KiB L1. */

#define AVX512 __attribute__((target("avx512f,avx512dq,fma")))
#define MR16 14
#define NR16 32

static inline __mmask16 mask16(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* In-register transpose of a 16×16 block: r[i] (row i) becomes column i. */
AVX512 static inline __attribute__((always_inline)) void transpose16(__m512 r[16]) {
    __m512 t[16];
#pragma GCC unroll 8
    for (int i = 0; i < 8; i++) {
        t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
#pragma GCC unroll 4
    for (int i = 0; i < 4; i++) {
        __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 1]);
        __m512d c = _mm512_castps_pd(t[4 * i + 2]), d = _mm512_castps_pd(t[4 * i + 3]);
        r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, c));
        r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, c));
        r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(b, d));
        r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(b, d));
    }
    /* Now r[4g + c], 128-bit lane L, holds column 4L + c of rows 4g..4g+3. */
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        t[c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x88);
        t[4 + c] = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xdd);
        t[8 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x88);
        t[12 + c] = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xdd);
    }
#pragma GCC unroll 4
    for (int c = 0; c < 4; c++) {
        r[c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0x88);
        r[8 + c] = _mm512_shuffle_f32x4(t[c], t[8 + c], 0xdd);
        r[4 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0x88);
        r[12 + c] = _mm512_shuffle_f32x4(t[4 + c], t[12 + c], 0xdd);
    }
}

/* Packing reads op(A) and op(B) straight from memory (they are rarely cached), a few lines from
 * each of up to 16 rows at a time; the hardware prefetcher does not follow that many streams, so the
 * packers prefetch explicitly: PF_AHEAD floats further along each row when transposing, PF_ROWS rows
 * ahead when copying rows. Measured: 30-45% faster packing from cold memory. */
#define PF_AHEAD 64
#define PF_ROWS 8

/* Operands stored the way the kernel reads them (A as K×M, B as K×N) are packed by copying, in row
 * order: the block is cut into strips of whole micro-panels about PACK_STRIP floats (1 KB) wide, and
 * each strip is copied PF_ROWS source rows at a time, each row read from left to right across the strip
 * while the next PF_ROWS rows of the strip are prefetched (8 KB in flight). Copying one micro-panel at
 * a time instead reads 14 or 32 floats from each of kb rows before moving on; when the row stride is a
 * multiple of 4 KB those rows fall in the same cache sets and lines are fetched again for the next
 * panel: dy (1024,3072) of the MLP weight gradient dy^T @ x packed 2x slower that way (0.51 vs 0.26 ns
 * a float). Strips rather than whole rows keep the prefetched rows in L1: prefetching 8 full rows of a
 * 1536-wide block is 48 KB, the whole L1, and packed B of dx = dy @ w (w (768,3072)) ran at 0.26-0.35
 * ns a float instead of 0.19. */
#define PACK_STRIP 256

AVX512 static void pack_rows_avx512(const float *S, int64_t lds, int64_t k, int64_t w, int64_t r,
                                    float *out) {
    const int64_t npan = cdiv(w, r), per_strip = PACK_STRIP / r;
    const __mmask16 st0 = mask16(r), st1 = mask16(r - 16);
    for (int64_t q0 = 0; q0 < npan; q0 += per_strip) {
        const int64_t q1 = min64(npan, q0 + per_strip), c0 = q0 * r, c1 = min64(w, q1 * r);
        for (int64_t p0 = 0; p0 < k; p0 += PF_ROWS) {
            const int64_t p1 = min64(k, p0 + PF_ROWS);
            for (int64_t p = p1; p < min64(k, p1 + PF_ROWS); p++)
                for (int64_t c = c0; c < c1; c += 16) _mm_prefetch((const char *)(S + p * lds + c), _MM_HINT_T0);
            for (int64_t q = q0; q < q1; q++) {
                const int64_t left = min64(w - q * r, r);
                const __mmask16 m0 = mask16(left), m1 = mask16(left - 16);
                const float *src = S + q * r;
                float *o = out + q * r * k;
                for (int64_t p = p0; p < p1; p++) {
                    _mm512_mask_storeu_ps(o + p * r, st0, _mm512_maskz_loadu_ps(m0, src + p * lds));
                    if (r > 16)
                        _mm512_mask_storeu_ps(o + p * r + 16, st1, _mm512_maskz_loadu_ps(m1, src + p * lds + 16));
                }
            }
        }
    }
}

/* A micro-panel: out[p*14 + i] = op(A)[i0+i][p]. Stored K×M (ta = 1) this is a copy of 14 contiguous
 * floats per p (pack_rows_avx512); stored M×K (ta = 0, the x of x @ w.T) it is a transpose, done 16×16
 * in registers. */
AVX512 static void pack_a_avx512(int ta, const float *A, int64_t lda, int64_t m, int64_t k,
                                 float *out) {
    if (ta) {
        pack_rows_avx512(A, lda, k, m, MR16, out);
        return;
    }
    const __mmask16 st = mask16(MR16);
    for (int64_t i0 = 0; i0 < m; i0 += MR16, out += MR16 * k) {
        int64_t mm = min64(MR16, m - i0);
        for (int64_t p0 = 0; p0 < k; p0 += 16) {
            int64_t kw = min64(16, k - p0);
            __mmask16 km = mask16(kw);
            __m512 r[16];
            if (p0 + PF_AHEAD < k)
                for (int64_t i = 0; i < mm; i++)
                    _mm_prefetch((const char *)(A + (i0 + i) * lda + p0 + PF_AHEAD), _MM_HINT_T0);
            if (mm == MR16 && kw == 16) { /* full block, the common case */
#pragma GCC unroll 16
                for (int i = 0; i < 16; i++)
                    r[i] = i < MR16 ? _mm512_loadu_ps(A + (i0 + i) * lda + p0) : _mm512_setzero_ps();
                transpose16(r);
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++) _mm512_mask_storeu_ps(out + (p0 + c) * MR16, st, r[c]);
                continue;
            }
#pragma GCC unroll 16
            for (int i = 0; i < 16; i++)
                r[i] = i < mm ? _mm512_maskz_loadu_ps(km, A + (i0 + i) * lda + p0) : _mm512_setzero_ps();
            transpose16(r);
#pragma GCC unroll 16
            for (int c = 0; c < 16; c++)
                if (c < kw) _mm512_mask_storeu_ps(out + (p0 + c) * MR16, st, r[c]);
        }
    }
}

/* B micro-panel: out[p*32 + j] = op(B)[p][j0+j]. Stored K×N (tb = 0) it is two row copies per p
 * (pack_rows_avx512); stored N×K (tb = 1, the w of x @ w.T) it is a transpose, 16×16 in registers. */
AVX512 static void pack_b_avx512(int tb, const float *B, int64_t ldb, int64_t k, int64_t n,
                                 float *out) {
    if (!tb) {
        pack_rows_avx512(B, ldb, k, n, NR16, out);
        return;
    }
    for (int64_t j0 = 0; j0 < n; j0 += NR16, out += NR16 * k) {
        int64_t nn = min64(NR16, n - j0);
        for (int64_t h = 0; h < 2; h++) {
            int64_t cnt = min64(16, nn - 16 * h);
            for (int64_t p0 = 0; p0 < k; p0 += 16) {
                int64_t kw = min64(16, k - p0);
                __mmask16 km = mask16(kw);
                __m512 r[16];
                if (p0 + PF_AHEAD < k)
                    for (int64_t j = 0; j < cnt; j++)
                        _mm_prefetch((const char *)(B + (j0 + 16 * h + j) * ldb + p0 + PF_AHEAD),
                                     _MM_HINT_T0);
                const float *src = B + (j0 + 16 * h) * ldb + p0;
                if (cnt == 16 && kw == 16) { /* full block, the common case */
#pragma GCC unroll 16
                    for (int j = 0; j < 16; j++) r[j] = _mm512_loadu_ps(src + j * ldb);
                    transpose16(r);
#pragma GCC unroll 16
                    for (int c = 0; c < 16; c++) _mm512_store_ps(out + (p0 + c) * NR16 + 16 * h, r[c]);
                    continue;
                }
#pragma GCC unroll 16
                for (int j = 0; j < 16; j++)
                    r[j] = j < cnt ? _mm512_maskz_loadu_ps(km, src + j * ldb) : _mm512_setzero_ps();
                transpose16(r);
#pragma GCC unroll 16
                for (int c = 0; c < 16; c++)
                    if (c < kw) _mm512_store_ps(out + (p0 + c) * NR16 + 16 * h, r[c]);
            }
        }
    }
}

/* The micro-kernel body for R live rows (R <= 14, a compile-time constant once inlined): tiles on
 * the bottom edge of C run only the FMAs of their real rows, so M = 1024 = 73×14 + 2 costs 73 full
 * tiles plus 2/14 of one, not 74. Columns beyond n (right edge) are computed and dropped by masks.
 * Loops run to the constant MR16 and test i < R, so that gcc and clang both unroll them completely
 * and keep acc in registers. */
AVX512 static inline __attribute__((always_inline)) void
kernel_avx512_rows(const int R, int64_t k, const float *restrict a, const float *restrict b,
                   float *restrict c, int64_t ldc, int64_t n, float alpha, float beta) {
    __m512 acc[MR16][2];
#pragma GCC unroll 14
    for (int i = 0; i < MR16; i++)
        if (i < R) acc[i][0] = acc[i][1] = _mm512_setzero_ps();
    /* C is touched once per KC slice; start fetching it now so the stores below do not wait. */
#pragma GCC unroll 14
    for (int i = 0; i < MR16; i++)
        if (i < R) {
            _mm_prefetch((const char *)(c + i * ldc), _MM_HINT_T0);
            _mm_prefetch((const char *)(c + i * ldc + n - 1), _MM_HINT_T0);
        }
    for (int64_t p = 0; p < k; p++, a += MR16, b += NR16) {
        __m512 b0 = _mm512_load_ps(b), b1 = _mm512_load_ps(b + 16);
#pragma GCC unroll 14
        for (int i = 0; i < MR16; i++)
            if (i < R) {
                __m512 av = _mm512_set1_ps(a[i]);
                acc[i][0] = _mm512_fmadd_ps(av, b0, acc[i][0]);
                acc[i][1] = _mm512_fmadd_ps(av, b1, acc[i][1]);
            }
    }
    /* C = alpha*acc + beta*C as one rounding of fma(acc, alpha, beta*C); beta == 0 never reads C. */
    const __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    if (n == NR16) {
        if (beta == 0.0f) {
#pragma GCC unroll 14
            for (int i = 0; i < MR16; i++)
                if (i < R) {
                    _mm512_storeu_ps(c + i * ldc, _mm512_mul_ps(acc[i][0], va));
                    _mm512_storeu_ps(c + i * ldc + 16, _mm512_mul_ps(acc[i][1], va));
                }
        } else {
#pragma GCC unroll 14
            for (int i = 0; i < MR16; i++)
                if (i < R) {
                    float *cp = c + i * ldc;
                    _mm512_storeu_ps(cp, _mm512_fmadd_ps(acc[i][0], va,
                                                         _mm512_mul_ps(_mm512_loadu_ps(cp), vb)));
                    _mm512_storeu_ps(cp + 16, _mm512_fmadd_ps(acc[i][1], va,
                                                              _mm512_mul_ps(_mm512_loadu_ps(cp + 16), vb)));
                }
        }
        return;
    }
    const __mmask16 m0 = mask16(n), m1 = mask16(n - 16);
#pragma GCC unroll 14
    for (int i = 0; i < MR16; i++)
        if (i < R) {
            float *cp = c + i * ldc;
            __m512 r0 = _mm512_mul_ps(acc[i][0], va), r1 = _mm512_mul_ps(acc[i][1], va);
            if (beta != 0.0f) {
                r0 = _mm512_fmadd_ps(acc[i][0], va, _mm512_mul_ps(_mm512_maskz_loadu_ps(m0, cp), vb));
                r1 = _mm512_fmadd_ps(acc[i][1], va, _mm512_mul_ps(_mm512_maskz_loadu_ps(m1, cp + 16), vb));
            }
            _mm512_mask_storeu_ps(cp, m0, r0);
            _mm512_mask_storeu_ps(cp + 16, m1, r1);
        }
}

AVX512 static void kernel_avx512_14x32(int64_t k, const float *restrict a, const float *restrict b,
                                       float *restrict c, int64_t ldc, int64_t m, int64_t n,
                                       float alpha, float beta) {
    switch (m) {
#define ROWS_CASE(R) \
    case R: kernel_avx512_rows(R, k, a, b, c, ldc, n, alpha, beta); break;
        ROWS_CASE(14) ROWS_CASE(13) ROWS_CASE(12) ROWS_CASE(11) ROWS_CASE(10) ROWS_CASE(9) ROWS_CASE(8)
        ROWS_CASE(7) ROWS_CASE(6) ROWS_CASE(5) ROWS_CASE(4) ROWS_CASE(3) ROWS_CASE(2) ROWS_CASE(1)
#undef ROWS_CASE
    default: break;
    }
}

/* One output of the tb = 1 gemv: y[j] from the dot of row w with x (the same arithmetic whichever
 * rows it is computed beside, so the grouping below cannot change a result). */
AVX512 static inline void dot4_avx512(const float *const w[4], int nrow, int64_t K, const float *x,
                                      float alpha, float beta, float *const y[4]) {
    __m512 s[4][2];
    for (int r = 0; r < 4; r++) s[r][0] = s[r][1] = _mm512_setzero_ps();
    int64_t p = 0;
    for (; p + 32 <= K; p += 32) {
        __m512 x0 = _mm512_loadu_ps(x + p), x1 = _mm512_loadu_ps(x + p + 16);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++) {
            s[r][0] = _mm512_fmadd_ps(x0, _mm512_loadu_ps(w[r] + p), s[r][0]);
            s[r][1] = _mm512_fmadd_ps(x1, _mm512_loadu_ps(w[r] + p + 16), s[r][1]);
        }
    }
    for (; p < K; p += 16) {
        __mmask16 km = mask16(K - p);
        __m512 x0 = _mm512_maskz_loadu_ps(km, x + p);
#pragma GCC unroll 4
        for (int r = 0; r < 4; r++)
            s[r][0] = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(km, w[r] + p), s[r][0]);
    }
    for (int r = 0; r < nrow; r++) {
        float d = _mm512_reduce_add_ps(_mm512_add_ps(s[r][0], s[r][1]));
        *y[r] = beta == 0.0f ? alpha * d : alpha * d + beta * *y[r];
    }
}

/* M == 1 (generation with a KV cache): memory-bound, so the point is to stream each weight exactly
 * once at full bandwidth. tb = 1 (x @ W^T: the tied LM head, and GPT-2's projections in the
 * inference layout): a thread's rows [j0, j1) are dotted with x four per pass, one from each quarter
 * of the range, so that four long sequential streams run side by side; four adjacent rows (one
 * 12 KB stream that jumps every 3 KB) measured 15-20% slower on the GPT-2 head (50257 x 768, two
 * threads, in-process alternation). tb = 0: y is kept in registers 128 columns at a time while the
 * rows of B stream past. */
AVX512 static void gemv_avx512(int tb, int64_t j0, int64_t j1, int64_t K, float alpha, const float *x,
                               const float *B, int64_t ldb, float beta, float *y) {
    if (tb) {
        const int64_t q = (j1 - j0) / 4;
        const float *w[4];
        float *yp[4];
        for (int64_t i = 0; i < q; i++) {
            for (int r = 0; r < 4; r++) {
                w[r] = B + (j0 + r * q + i) * ldb;
                yp[r] = y + j0 + r * q + i;
            }
            dot4_avx512(w, 4, K, x, alpha, beta, yp);
        }
        for (int64_t j = j0 + 4 * q; j < j1; j += 4) { /* the last (j1 - j0) % 4 rows */
            int nrow = (int)min64(4, j1 - j);
            for (int r = 0; r < 4; r++) {
                w[r] = B + (j + (r < nrow ? r : 0)) * ldb;
                yp[r] = y + j + (r < nrow ? r : 0);
            }
            dot4_avx512(w, nrow, K, x, alpha, beta, yp);
        }
        return;
    }
    __m512 va = _mm512_set1_ps(alpha), vb = _mm512_set1_ps(beta);
    for (int64_t c0 = j0; c0 < j1; c0 += 128) {
        int64_t w = min64(128, j1 - c0);
        __mmask16 msk[8];
        for (int q = 0; q < 8; q++) msk[q] = mask16(w - 16 * q);
        __m512 acc[8];
        for (int q = 0; q < 8; q++) acc[q] = _mm512_setzero_ps();
        if (w == 128) {
            for (int64_t p = 0; p < K; p++) {
                __m512 xv = _mm512_set1_ps(x[p]);
                const float *row = B + p * ldb + c0;
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++)
                    acc[q] = _mm512_fmadd_ps(xv, _mm512_loadu_ps(row + 16 * q), acc[q]);
            }
        } else {
            for (int64_t p = 0; p < K; p++) {
                __m512 xv = _mm512_set1_ps(x[p]);
                const float *row = B + p * ldb + c0;
#pragma GCC unroll 8
                for (int q = 0; q < 8; q++)
                    acc[q] = _mm512_fmadd_ps(xv, _mm512_maskz_loadu_ps(msk[q], row + 16 * q), acc[q]);
            }
        }
        for (int q = 0; q < 8; q++) {
            if (!msk[q]) break;
            float *yp = y + c0 + 16 * q;
            __m512 r = _mm512_mul_ps(acc[q], va);
            if (beta != 0.0f)
                r = _mm512_fmadd_ps(acc[q], va, _mm512_mul_ps(_mm512_maskz_loadu_ps(msk[q], yp), vb));
            _mm512_mask_storeu_ps(yp, msk[q], r);
        }
    }
}

/* Four rows of B per pass over y (y stays in L1: n is at most a few thousand here), and a prefetch
 * of the next four rows (worth about 8% in a stand-alone test of the same loop). With the K split of
 * gemv_split_k, the 48 block products of a GPT-2 decode step went from 45 to 51-54 GB/s of weights
 * read from DRAM (two threads, when a plain streaming sum read 56-59 GB/s). */
AVX512 static void gemv_rows_avx512(int64_t k, int64_t n, const float *x, const float *B, int64_t ldb,
                                    float *y) {
    int64_t p = 0;
    for (; p + 4 <= k; p += 4) {
        const __m512 x0 = _mm512_set1_ps(x[p]), x1 = _mm512_set1_ps(x[p + 1]);
        const __m512 x2 = _mm512_set1_ps(x[p + 2]), x3 = _mm512_set1_ps(x[p + 3]);
        const float *b0 = B + p * ldb, *b1 = b0 + ldb, *b2 = b1 + ldb, *b3 = b2 + ldb;
        const int pf = p + 8 <= k; /* the next group exists */
        int64_t c = 0;
        for (; c + 16 <= n; c += 16) {
            if (pf) {
                _mm_prefetch((const char *)(b0 + 4 * ldb + c), _MM_HINT_T0);
                _mm_prefetch((const char *)(b1 + 4 * ldb + c), _MM_HINT_T0);
                _mm_prefetch((const char *)(b2 + 4 * ldb + c), _MM_HINT_T0);
                _mm_prefetch((const char *)(b3 + 4 * ldb + c), _MM_HINT_T0);
            }
            __m512 a = _mm512_loadu_ps(y + c);
            a = _mm512_fmadd_ps(x0, _mm512_loadu_ps(b0 + c), a);
            a = _mm512_fmadd_ps(x1, _mm512_loadu_ps(b1 + c), a);
            a = _mm512_fmadd_ps(x2, _mm512_loadu_ps(b2 + c), a);
            a = _mm512_fmadd_ps(x3, _mm512_loadu_ps(b3 + c), a);
            _mm512_storeu_ps(y + c, a);
        }
        if (c < n) {
            __mmask16 m = mask16(n - c);
            __m512 a = _mm512_maskz_loadu_ps(m, y + c);
            a = _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, b0 + c), a);
            a = _mm512_fmadd_ps(x1, _mm512_maskz_loadu_ps(m, b1 + c), a);
            a = _mm512_fmadd_ps(x2, _mm512_maskz_loadu_ps(m, b2 + c), a);
            a = _mm512_fmadd_ps(x3, _mm512_maskz_loadu_ps(m, b3 + c), a);
            _mm512_mask_storeu_ps(y + c, m, a);
        }
    }
    for (; p < k; p++) {
        const __m512 x0 = _mm512_set1_ps(x[p]);
        const float *b0 = B + p * ldb;
        for (int64_t c = 0; c < n; c += 16) {
            __mmask16 m = mask16(n - c);
            _mm512_mask_storeu_ps(y + c, m, _mm512_fmadd_ps(x0, _mm512_maskz_loadu_ps(m, b0 + c),
                                                             _mm512_maskz_loadu_ps(m, y + c)));
        }
    }
}

/* KC 512: the B micro-panel (32×512, 64 KB) no longer fits L1 and streams from L2 next to the A
 * micro-panel, which the kernel sustains (97% of peak measured with both in L2), while C is read and
 * written half as often as with KC 256 and a K of 768 or 1024 is cut into 2 slices instead of 3 or 4.
 * MC 168 keeps the packed A block (168×512, 344 KB) in a third of the 1 MB L2. Measured against
 * KC 256 / MC 336 on the nine GPT-2 training shapes: +1% on one thread, +1.5% per thread on two. */
static const isa_t isa_avx512 = {"avx512", MR16, NR16, 512, 168, 3072, 64,
                                 kernel_avx512_14x32, pack_a_avx512, pack_b_avx512, gemv_avx512,
                                 gemv_rows_avx512};

/* ------------------------------------------------------------------------------------------------
 * Run-time dispatch. QKV_GEMM_ISA=avx2|scalar selects a slower path (tests use it to cover them). */

static const isa_t *g_isa;
static once_flag g_isa_once = ONCE_FLAG_INIT;

static void isa_init(void) {
    __builtin_cpu_init();
    int has512 = __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq");
    int has2 = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
    const char *want = getenv("QKV_GEMM_ISA");
    g_isa = has512 ? &isa_avx512 : has2 ? &isa_avx2 : &isa_scalar;
    if (want && strcmp(want, "scalar") == 0) g_isa = &isa_scalar;
    if (want && strcmp(want, "avx2") == 0 && has2) g_isa = &isa_avx2;
}

static const isa_t *get_isa(void) {
    call_once(&g_isa_once, isa_init);
    return g_isa;
}

const char *qkv__gemm_isa(void) { return get_isa()->name; }

/* ------------------------------------------------------------------------------------------------
 * Packing buffers: one A block and one B panel per thread, allocated on first use, kept for the
 * thread's lifetime and freed by the thread-exit destructor. Sized for the largest blocks of any
 * path, so switching paths never reallocates. Nothing is allocated in steady state.
 * (Sharing one packed A or B among the threads was tried: with barriers per block it measured
 * 3-10% slower here than each thread packing what it needs.) */

#define BUF_A_FLOATS (168 * 512 + 64)  /* max mc*kc over the paths, plus slack */
#define BUF_B_FLOATS (3072 * 512 + 64) /* max nc*kc */

typedef struct {
    float *a, *b;
} bufs_t;

static tss_t g_bufs_key;
static int g_bufs_key_ok;
static once_flag g_bufs_once = ONCE_FLAG_INIT;

static void bufs_free(void *p) {
    bufs_t *bf = p;
    if (!bf) return;
    free(bf->a);
    free(bf->b);
    free(bf);
}

static void bufs_key_init(void) { g_bufs_key_ok = tss_create(&g_bufs_key, bufs_free) == thrd_success; }

static float *alloc_floats(size_t n) {
    size_t bytes = (n * sizeof(float) + 63) / 64 * 64; /* aligned_alloc wants a multiple of 64 */
    return aligned_alloc(64, bytes);
}

/* NULL when memory is short; the caller then falls back to the reference loop. */
static bufs_t *thread_bufs(void) {
    call_once(&g_bufs_once, bufs_key_init);
    if (!g_bufs_key_ok) return NULL;
    bufs_t *bf = tss_get(g_bufs_key);
    if (bf) return bf;
    bf = malloc(sizeof *bf);
    if (!bf) return NULL;
    bf->a = alloc_floats(BUF_A_FLOATS);
    bf->b = alloc_floats(BUF_B_FLOATS);
    if (!bf->a || !bf->b || tss_set(g_bufs_key, bf) != thrd_success) {
        bufs_free(bf);
        return NULL;
    }
    return bf;
}

/* ------------------------------------------------------------------------------------------------
 * Drivers. A "problem" is one GEMM; a task is a rectangle of its C in whole micro-tiles. */

typedef struct {
    int ta, tb;
    int64_t M, N, K;
    float alpha, beta;
    const float *A;
    int64_t lda, sA;
    const float *B;
    int64_t ldb, sB;
    float *C;
    int64_t ldc, sC;
} prob_t;

/* op(A) starting at row i, column k; op(B) starting at row k, column j. */
static const float *a_at(const prob_t *p, const float *A, int64_t i, int64_t k) {
    return p->ta ? A + k * p->lda + i : A + i * p->lda + k;
}
static const float *b_at(const prob_t *p, const float *B, int64_t k, int64_t j) {
    return p->tb ? B + j * p->ldb + k : B + k * p->ldb + j;
}

/* C (m,n) block at rows [i0,i0+m), columns [j0,j0+n) of problem b, single-threaded. */
static void gemm_block(const isa_t *isa, const prob_t *p, int64_t b, int64_t i0, int64_t m,
                       int64_t j0, int64_t n) {
    const float *A = p->A + b * p->sA, *B = p->B + b * p->sB;
    float *C = p->C + b * p->sC + i0 * p->ldc + j0;
    const int64_t K = p->K, mr = isa->mr, nr = isa->nr;
    bufs_t *bf = thread_bufs();
    if (!bf) {
        qkv__gemm_ref(p->ta, p->tb, m, n, K, p->alpha, a_at(p, A, i0, 0), p->lda, b_at(p, B, 0, j0),
                      p->ldb, p->beta, C, p->ldc);
        return;
    }
    if (m == 1) {
        /* Matrix-vector: x must be contiguous; a strided x (ta = 1) is gathered first. */
        const float *x = a_at(p, A, i0, 0);
        if (p->ta && p->lda != 1 && K <= BUF_A_FLOATS) {
            for (int64_t q = 0; q < K; q++) bf->a[q] = x[q * p->lda];
            x = bf->a;
        }
        if (!p->ta || p->lda == 1 || x == bf->a) {
            isa->gemv(p->tb, 0, n, K, p->alpha, x, b_at(p, B, 0, j0), p->ldb, p->beta, C);
            return;
        }
    }
    /* The KC slicing depends on K alone, never on the task, so results do not depend on how C
     * was divided among threads. */
    const int64_t kc = balanced_block(K, isa->kc, 1);
    const int64_t nc = balanced_block(n, isa->nc, nr);
    const int64_t mc = balanced_block(m, isa->mc, mr);
    for (int64_t jc = 0; jc < n; jc += nc) {
        int64_t nb = min64(nc, n - jc);
        for (int64_t pc = 0; pc < K; pc += kc) {
            int64_t kb = min64(kc, K - pc);
            float beta = pc == 0 ? p->beta : 1.0f;
            isa->pack_b(p->tb, b_at(p, B, pc, j0 + jc), p->ldb, kb, nb, bf->b);
            for (int64_t ic = 0; ic < m; ic += mc) {
                int64_t mb = min64(mc, m - ic);
                isa->pack_a(p->ta, a_at(p, A, i0 + ic, pc), p->lda, mb, kb, bf->a);
                for (int64_t jr = 0; jr < nb; jr += nr)
                    for (int64_t ir = 0; ir < mb; ir += mr)
                        isa->kernel(kb, bf->a + ir * kb, bf->b + jr * kb, C + (ic + ir) * p->ldc + jc + jr,
                                    p->ldc, min64(mr, mb - ir), min64(nr, nb - jr), p->alpha, beta);
            }
        }
    }
}

/* How C of one problem is cut into sm × sn rectangles of whole micro-tiles (the gemv path cuts
 * only N, in units of gemv_align columns). */
typedef struct {
    int64_t sm, sn, um, un; /* pieces along M and N, and the unit each piece is a multiple of */
} split_t;

/* Rough time of the slowest piece, in FMA-slot units: its padded flops plus its packing (each
 * packed float costs about as much as 16 FMAs: a load, a shuffle share and a store). */
static double split_cost(const isa_t *isa, const prob_t *p, int64_t sm, int64_t sn) {
    int64_t tm = cdiv(p->M, isa->mr), tn = cdiv(p->N, isa->nr);
    double m = (double)cdiv(tm, sm) * isa->mr, n = (double)cdiv(tn, sn) * isa->nr, k = (double)p->K;
    double a_packs = (double)cdiv((int64_t)n, isa->nc);
    return m * n * k + 16.0 * (k * n + k * m * a_packs);
}

static split_t choose_split(const isa_t *isa, const prob_t *p, int64_t parts) {
    split_t s = {1, 1, isa->mr, isa->nr};
    if (p->M == 1) {
        s.sn = min64(parts, cdiv(p->N, isa->gemv_align));
        s.un = isa->gemv_align;
        return s;
    }
    int64_t tm = cdiv(p->M, isa->mr), tn = cdiv(p->N, isa->nr);
    double best = -1.0;
    for (int64_t sm = 1; sm <= parts; sm++) {
        if (parts % sm) continue;
        int64_t sn = parts / sm;
        if (sm > tm || sn > tn) continue;
        double c = split_cost(isa, p, sm, sn);
        if (best < 0.0 || c < best) {
            best = c;
            s.sm = sm;
            s.sn = sn;
        }
    }
    if (best < 0.0) { /* fewer tiles than parts: split the longer way as far as it goes */
        if (tm >= tn) s.sm = min64(parts, tm);
        else s.sn = min64(parts, tn);
    }
    return s;
}

static void run_task(const isa_t *isa, const prob_t *p, split_t s, int64_t t) {
    int64_t per = s.sm * s.sn, b = t / per, r = t % per, im = r / s.sn, jn = r % s.sn;
    int64_t tm = cdiv(p->M, s.um), tn = cdiv(p->N, s.un);
    int64_t i0 = tm * im / s.sm * s.um, i1 = min64(p->M, tm * (im + 1) / s.sm * s.um);
    int64_t j0 = tn * jn / s.sn * s.un, j1 = min64(p->N, tn * (jn + 1) / s.sn * s.un);
    if (i1 > i0 && j1 > j0) gemm_block(isa, p, b, i0, i1 - i0, j0, j1 - j0);
}

/* Below this many flops a second thread costs more to wake than it saves. Measured on the 2-core
 * Zen 5 machine: entering a parallel region costs about 4 µs; 64³ (0.5 MFLOP) takes 3.7 µs on one
 * thread and 6.2 µs on two, 96³ (1.8 MFLOP) breaks even, 128³ (4.2 MFLOP) is 20% faster on two. */
#define GEMM_PAR_MIN_FLOPS (1 << 21)

static int threads_for(double flops) {
    if (omp_in_parallel() || flops < GEMM_PAR_MIN_FLOPS) return 1;
    int nt = omp_get_max_threads();
    return nt < 1 ? 1 : nt;
}

/* M == 1 with op(B) = B stored K×N (x @ W in Hugging Face's Conv1D layout: every GPT-2 block
 * weight during generation). Cutting N would give each thread a strip of every row; instead K is cut
 * in two halves, each streamed row after row into its own partial (y stays in L1), and the two
 * partials are added. The halves are the same whatever the thread count, so the result does not
 * depend on it; threads beyond two cut the columns as well. Measured on the 2-core machine, the 48
 * block products of one GPT-2 124M decode step (340 MB of weights from DRAM): 7.5 ms with column
 * strips, 6.0-6.2 ms this way. Returns 0 (nothing done) when the partials do not fit the buffer. */
static int gemv_split_k(const isa_t *isa, const prob_t *p, int64_t batch, int nt) {
    const int64_t N = p->N, K = p->K;
    bufs_t *bf = thread_bufs();
    if (!bf || K < 2 || batch * 2 * N > BUF_B_FLOATS) return 0;
    const int strided = p->ta && p->lda != 1;
    if (strided && (batch > 1 || K > BUF_A_FLOATS)) return 0;
    if (strided)
        for (int64_t q = 0; q < K; q++) bf->a[q] = p->A[q * p->lda];
    float *part = bf->b;
    const int64_t kh = K / 2, cp = nt >= 4 ? nt / 2 : 1, ntask = batch * 2 * cp;
#pragma omp parallel num_threads(nt) if (nt > 1)
    {
        const int64_t t = omp_get_thread_num(), nth = omp_get_num_threads();
        for (int64_t q = t; q < ntask; q += nth) {
            const int64_t b = q / (2 * cp), h = q / cp % 2, pc = q % cp;
            const int64_t j0 = N * pc / cp / 16 * 16, j1 = pc == cp - 1 ? N : N * (pc + 1) / cp / 16 * 16;
            const int64_t k0 = h ? kh : 0, k1 = h ? K : kh;
            const float *x = strided ? bf->a : p->A + b * p->sA;
            float *y = part + (b * 2 + h) * N + j0;
            memset(y, 0, (size_t)(j1 - j0) * sizeof *y);
            isa->gemv_rows(k1 - k0, j1 - j0, x + k0, p->B + b * p->sB + k0 * p->ldb + j0, p->ldb, y);
        }
#pragma omp barrier
        const int64_t j0 = N * t / nth, j1 = N * (t + 1) / nth;
        for (int64_t b = 0; b < batch; b++) {
            const float *p0 = part + b * 2 * N, *p1 = p0 + N;
            float *c = p->C + b * p->sC;
            if (p->beta == 0.0f)
                for (int64_t j = j0; j < j1; j++) c[j] = p->alpha * (p0[j] + p1[j]);
            else
                for (int64_t j = j0; j < j1; j++) c[j] = p->alpha * (p0[j] + p1[j]) + p->beta * c[j];
        }
    }
    return 1;
}

static void run(const prob_t *p, int64_t batch) {
    if (batch <= 0 || p->M <= 0 || p->N <= 0) return;
    if (p->alpha == 0.0f || p->K <= 0) {
        for (int64_t b = 0; b < batch; b++) scale_c(p->M, p->N, p->beta, p->C + b * p->sC, p->ldc);
        return;
    }
    const isa_t *isa = get_isa();
    int nt = threads_for(2.0 * (double)p->M * (double)p->N * (double)p->K * (double)batch);
    if (p->M == 1 && !p->tb && gemv_split_k(isa, p, batch, nt)) return;
    /* Enough pieces that every thread gets an equal share: a single problem is cut into exactly
     * nt pieces; a batch is cut only if it does not already divide evenly (or is large). */
    int64_t parts = 1;
    if (nt > 1) {
        parts = nt;
        for (int64_t q = 1; q <= nt; q++)
            if ((batch * q) % nt == 0 || batch * q >= 8 * nt) {
                parts = q;
                break;
            }
    }
    split_t s = choose_split(isa, p, parts);
    int64_t ntask = batch * s.sm * s.sn;
    if (nt == 1 || ntask == 1) {
        for (int64_t t = 0; t < ntask; t++) run_task(isa, p, s, t);
        return;
    }
    if (ntask <= nt) {
#pragma omp parallel for num_threads(nt) schedule(static, 1)
        for (int64_t t = 0; t < ntask; t++) run_task(isa, p, s, t);
    } else {
#pragma omp parallel for num_threads(nt) schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++) run_task(isa, p, s, t);
    }
}

void qkv__gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb,
               float beta, float *C, int64_t ldc) {
    prob_t p = {ta, tb, M, N, K, alpha, beta, A, lda, 0, B, ldb, 0, C, ldc, 0};
    run(&p, 1);
}

void qkv__gemm_batched(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, int64_t sA, const float *B, int64_t ldb, int64_t sB,
                       float beta, float *C, int64_t ldc, int64_t sC, int64_t batch) {
    prob_t p = {ta, tb, M, N, K, alpha, beta, A, lda, sA, B, ldb, sB, C, ldc, sC};
    run(&p, batch);
}

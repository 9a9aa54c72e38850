/* attention.c — fused multi-head attention: tiled online-softmax forward, recomputing backward,
 * an optional materialised-probabilities path, and the plain reference the tests hold them to.
 *
 * Not here: shape checks, errors, the autograd node (src/ops/attention.c), any allocation on the
 * fast paths (the caller's workspace holds every tile).
 *
 * The one convention a reader needs: every tile is a small row-major float block in the thread's
 * workspace, and all the arithmetic is two matrix shapes:
 *   abt:  C (m,n)  = alpha * A (m,K) @ Bt (K,n)   A: rows of q, k, v or dout (D or Dv long),
 *                                                  Bt: a transposed block made once per task
 *   acc:  C (m,n) += A (m,K) @ X (K,n)            A: a tile of probabilities (any strides),
 *                                                  X: rows of k, v, q or dout
 * Both vectorise over the contiguous n dimension and never need a horizontal sum. Which block is
 * transposed is chosen so that it is transposed once per task, not once per tile:
 *   forward, dq pass   task = (b,h,query block): Q^T (and dO^T) made once; tiles are S^T (keys x
 *                      queries), so the online softmax runs down columns with vertical max/sum;
 *   dk/dv pass         task = (b,h,key block) or, fused with dq, (b,h): K^T, V^T made once per key
 *                      block; tiles are S (queries x keys), whose rows need lse and D_i only as
 *                      broadcast scalars.
 * Heads are read where they lie in (B,T,H*D), never copied to (B,H,T,D); only a 64-row block that a
 * kernel re-reads is first packed into a contiguous (64,D) tile (rows H*D*4 bytes apart share a few
 * cache sets and would evict one another).
 *
 * Each ISA provides the same small table of tile functions (isa_ops): plain C and AVX-512 (chosen at
 * run time; QKV_ATTN_ISA=scalar forces plain C). The scalar table is the fast path's own reference,
 * same tiling; qkv__attention_ref at the bottom (materialising, double) is the independent one.
 */
#include "kernels/attention.h"

#include <assert.h>
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_int.h"
#include "kernels/simd.h"

#define BQ QKV__ATTN_BQ
#define BK QKV__ATTN_BK
#define BMAX (BQ > BK ? BQ : BK)

_Static_assert(BQ % 16 == 0 && BK % 16 == 0, "tile sizes are whole AVX-512 vectors");

static inline int64_t min64(int64_t a, int64_t b) { return a < b ? a : b; }
static inline int64_t max64(int64_t a, int64_t b) { return a > b ? a : b; }
static inline int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }

/* ---- the tile functions, one table per ISA ---- */

typedef struct {
    const char *name;
    /* C (m,n) = alpha * A (m,K) @ Bt (K,n). Bt rows are read whole up to n rounded up to 16 (the
     * caller pads them); only n columns of C are written. */
    void (*abt)(int m, int n, int64_t K, float alpha, const float *A, int64_t lda, const float *Bt, int64_t ldb,
                float *C, int64_t ldc);
    /* C (m,n) += A (m,K) @ X (K,n) with A(r,k) = A[r*ars + k*aks]. */
    void (*acc)(int m, int64_t n, int K, const float *A, int64_t ars, int64_t aks, const float *X, int64_t ldx,
                float *C, int64_t ldc);
    /* x[i] = exp(x[i] - s); returns the sum of the new x. */
    float (*exp_sub)(float *x, int64_t n, float s);
    /* x[i] = exp(x[i] - s[i]); sum[i] += x[i] when sum != NULL. */
    void (*exp_sub_v)(float *x, int n, const float *s, float *sum);
    void (*max_v)(float *m, const float *x, int n);                              /* m[i] = max(m[i], x[i]) */
    void (*ds)(float *ds, const float *p, const float *dp, int n, float d);         /* p * (dp - d) */
    void (*ds_v)(float *ds, const float *p, const float *dp, int n, const float *d); /* p * (dp - d[i]) */
    void (*scale)(float *x, int64_t n, float s);
    float (*max)(const float *x, int64_t n); /* -inf for n == 0 */
    float (*dot)(const float *a, const float *b, int64_t n);
    /* out[j] = alpha * dot(q, k + j*ldk, D) for j < n, each dot computed exactly as dot() does. */
    void (*dots)(const float *q, const float *k, int64_t ldk, int64_t n, int64_t D, float alpha, float *out);
    /* Dropout of n elements whose mask indices are idx0, idx0 + stride, ...: x[i] (and y[i] when
     * y != NULL) *= 1/(1-p) when qkv__hash_uniform(seed, index) >= p, else 0. */
    void (*drop)(float *x, float *y, int n, uint64_t seed, uint64_t idx0, uint64_t stride, float p);
} isa_ops;

/* -- plain C -- */

static void abt_c(int m, int n, int64_t K, float alpha, const float *A, int64_t lda, const float *Bt, int64_t ldb,
                  float *C, int64_t ldc) {
    for (int r = 0; r < m; r++) {
        float *c = C + r * ldc;
        const float *ar = A + r * lda;
        for (int j = 0; j < n; j++) c[j] = 0.0f;
        for (int64_t kk = 0; kk < K; kk++) {
            const float av = ar[kk], *b = Bt + kk * ldb;
            for (int j = 0; j < n; j++) c[j] += av * b[j];
        }
        for (int j = 0; j < n; j++) c[j] *= alpha;
    }
}

static void acc_c(int m, int64_t n, int K, const float *A, int64_t ars, int64_t aks, const float *X, int64_t ldx,
                  float *C, int64_t ldc) {
    for (int r = 0; r < m; r++) {
        float *c = C + r * ldc;
        for (int kk = 0; kk < K; kk++) {
            const float av = A[r * ars + kk * aks], *x = X + kk * ldx;
            for (int64_t j = 0; j < n; j++) c[j] += av * x[j];
        }
    }
}

static float exp_sub_c(float *x, int64_t n, float s) {
    float sum = 0.0f;
    for (int64_t i = 0; i < n; i++) {
        x[i] = expf(x[i] - s);
        sum += x[i];
    }
    return sum;
}

static void exp_sub_v_c(float *x, int n, const float *s, float *sum) {
    for (int i = 0; i < n; i++) x[i] = expf(x[i] - s[i]);
    if (sum)
        for (int i = 0; i < n; i++) sum[i] += x[i];
}

static void max_v_c(float *m, const float *x, int n) {
    for (int i = 0; i < n; i++) m[i] = x[i] > m[i] ? x[i] : m[i];
}

static void ds_c(float *ds, const float *p, const float *dp, int n, float d) {
    for (int i = 0; i < n; i++) ds[i] = p[i] * (dp[i] - d);
}

static void ds_v_c(float *ds, const float *p, const float *dp, int n, const float *d) {
    for (int i = 0; i < n; i++) ds[i] = p[i] * (dp[i] - d[i]);
}

static void scale_c(float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] *= s;
}

static float max_c(const float *x, int64_t n) {
    float m = -INFINITY;
    for (int64_t i = 0; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

static float dot_c(const float *a, const float *b, int64_t n) {
    float s = 0.0f;
    for (int64_t i = 0; i < n; i++) s += a[i] * b[i];
    return s;
}

static void dots_c(const float *q, const float *k, int64_t ldk, int64_t n, int64_t D, float alpha, float *out) {
    for (int64_t j = 0; j < n; j++) out[j] = alpha * dot_c(q, k + j * ldk, D);
}

static void drop_c(float *x, float *y, int n, uint64_t seed, uint64_t idx0, uint64_t stride, float p) {
    const float inv = 1.0f / (1.0f - p);
    for (int i = 0; i < n; i++) {
        const float m = qkv__hash_uniform(seed, idx0 + (uint64_t)i * stride) >= p ? inv : 0.0f;
        x[i] *= m;
        if (y) y[i] *= m;
    }
}

static const isa_ops scalar_ops = {"scalar", abt_c, acc_c, exp_sub_c, exp_sub_v_c, max_v_c,
                                   ds_c,     ds_v_c, scale_c, max_c,    dot_c,       dots_c, drop_c};

/* -- AVX-512 -- */

#define AVX512 __attribute__((target("avx512f")))
#define AVX512_INLINE static inline __attribute__((always_inline, target("avx512f")))

/* The low n lanes (n clamped to [0,16]). */
static inline __mmask16 lanes(int64_t n) {
    return n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1u);
}

/* R rows x NV vectors of C from A rows and Bt: R*NV accumulators live in registers for the whole K
 * loop (R, NV are constants after inlining, the loops unroll fully). */
AVX512_INLINE void abt_tile(const int R, const int NV, int64_t K, float alpha, const float *A, int64_t lda,
                            const float *Bt, int64_t ldb, float *C, int64_t ldc, const __mmask16 *mk) {
    __m512 c[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) c[r][u] = _mm512_setzero_ps();
    for (int64_t kk = 0; kk < K; kk++) {
        __m512 b[4];
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) b[u] = _mm512_loadu_ps(Bt + kk * ldb + 16 * u);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512 av = _mm512_set1_ps(A[r * lda + kk]);
#pragma GCC unroll 4
            for (int u = 0; u < NV; u++) c[r][u] = _mm512_fmadd_ps(av, b[u], c[r][u]);
        }
    }
    const __m512 al = _mm512_set1_ps(alpha);
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) _mm512_mask_storeu_ps(C + r * ldc + 16 * u, mk[u], _mm512_mul_ps(al, c[r][u]));
}

AVX512 static void abt_avx512(int m, int n, int64_t K, float alpha, const float *A, int64_t lda, const float *Bt,
                              int64_t ldb, float *C, int64_t ldc) {
    for (int c0 = 0; c0 < n; c0 += 64) {
        const int nc = n - c0 < 64 ? n - c0 : 64;
        const __mmask16 mk[4] = {lanes(nc), lanes(nc - 16), lanes(nc - 32), lanes(nc - 48)};
        const float *B0 = Bt + c0;
        float *C0 = C + c0;
        int r = 0;
#define ABT_CASE(NV)                                                                                      \
    case NV:                                                                                              \
        for (; r + 4 <= m; r += 4) abt_tile(4, NV, K, alpha, A + r * lda, lda, B0, ldb, C0 + r * ldc, ldc, mk); \
        for (; r < m; r++) abt_tile(1, NV, K, alpha, A + r * lda, lda, B0, ldb, C0 + r * ldc, ldc, mk);         \
        break;
        switch ((nc + 15) >> 4) {
            ABT_CASE(1)
            ABT_CASE(2)
            ABT_CASE(3)
            ABT_CASE(4)
        }
#undef ABT_CASE
    }
}

AVX512_INLINE void acc_tile(const int R, const int NV, int K, const float *A, int64_t ars, int64_t aks,
                            const float *X, int64_t ldx, float *C, int64_t ldc, const __mmask16 *mk) {
    __m512 c[4][4];
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) c[r][u] = _mm512_maskz_loadu_ps(mk[u], C + r * ldc + 16 * u);
    for (int kk = 0; kk < K; kk++) {
        __m512 x[4];
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) x[u] = _mm512_maskz_loadu_ps(mk[u], X + kk * ldx + 16 * u);
#pragma GCC unroll 4
        for (int r = 0; r < R; r++) {
            const __m512 av = _mm512_set1_ps(A[r * ars + kk * aks]);
#pragma GCC unroll 4
            for (int u = 0; u < NV; u++) c[r][u] = _mm512_fmadd_ps(av, x[u], c[r][u]);
        }
    }
#pragma GCC unroll 4
    for (int r = 0; r < R; r++)
#pragma GCC unroll 4
        for (int u = 0; u < NV; u++) _mm512_mask_storeu_ps(C + r * ldc + 16 * u, mk[u], c[r][u]);
}

AVX512 static void acc_avx512(int m, int64_t n, int K, const float *A, int64_t ars, int64_t aks, const float *X,
                              int64_t ldx, float *C, int64_t ldc) {
    for (int64_t c0 = 0; c0 < n; c0 += 64) {
        const int nc = (int)min64(n - c0, 64);
        const __mmask16 mk[4] = {lanes(nc), lanes(nc - 16), lanes(nc - 32), lanes(nc - 48)};
        const float *X0 = X + c0;
        float *C0 = C + c0;
        int r = 0;
#define ACC_CASE(NV)                                                                                       \
    case NV:                                                                                               \
        for (; r + 4 <= m; r += 4) acc_tile(4, NV, K, A + r * ars, ars, aks, X0, ldx, C0 + r * ldc, ldc, mk); \
        for (; r < m; r++) acc_tile(1, NV, K, A + r * ars, ars, aks, X0, ldx, C0 + r * ldc, ldc, mk);         \
        break;
        switch ((nc + 15) >> 4) {
            ACC_CASE(1)
            ACC_CASE(2)
            ACC_CASE(3)
            ACC_CASE(4)
        }
#undef ACC_CASE
    }
}

AVX512 static float exp_sub_avx512(float *x, int64_t n, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    __m512 sum = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        __m512 e = qkv__exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), vs));
        _mm512_mask_storeu_ps(x + i, k, e);
        sum = _mm512_mask_add_ps(sum, k, sum, e);
    }
    return _mm512_reduce_add_ps(sum);
}

AVX512 static void exp_sub_v_avx512(float *x, int n, const float *s, float *sum) {
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        __m512 e = qkv__exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + i), _mm512_maskz_loadu_ps(k, s + i)));
        _mm512_mask_storeu_ps(x + i, k, e);
        if (sum) _mm512_mask_storeu_ps(sum + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, sum + i), e));
    }
}

AVX512 static void max_v_avx512(float *m, const float *x, int n) {
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        _mm512_mask_storeu_ps(m + i, k, _mm512_max_ps(_mm512_maskz_loadu_ps(k, m + i), _mm512_maskz_loadu_ps(k, x + i)));
    }
}

AVX512 static void ds_avx512(float *ds, const float *p, const float *dp, int n, float d) {
    const __m512 vd = _mm512_set1_ps(d);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        __m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + i), _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + i), vd));
        _mm512_mask_storeu_ps(ds + i, k, r);
    }
}

AVX512 static void ds_v_avx512(float *ds, const float *p, const float *dp, int n, const float *d) {
    for (int i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        __m512 r = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, p + i),
                                 _mm512_sub_ps(_mm512_maskz_loadu_ps(k, dp + i), _mm512_maskz_loadu_ps(k, d + i)));
        _mm512_mask_storeu_ps(ds + i, k, r);
    }
}

AVX512 static void scale_avx512(float *x, int64_t n, float s) {
    const __m512 vs = _mm512_set1_ps(s);
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        _mm512_mask_storeu_ps(x + i, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, x + i), vs));
    }
}

AVX512 static float max_avx512(const float *x, int64_t n) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    for (int64_t i = 0; i < n; i += 16) m = _mm512_mask_max_ps(m, lanes(n - i), m, _mm512_maskz_loadu_ps(lanes(n - i), x + i));
    return _mm512_reduce_max_ps(m);
}

AVX512 static float dot_avx512(const float *a, const float *b, int64_t n) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t i = 0; i < n; i += 16) {
        const __mmask16 k = lanes(n - i);
        s = _mm512_fmadd_ps(_mm512_maskz_loadu_ps(k, a + i), _mm512_maskz_loadu_ps(k, b + i), s);
    }
    return _mm512_reduce_add_ps(s);
}

/* Sixteen keys at a time, one accumulator each: the sixteen FMA chains and reductions overlap, where
 * a dot() per key waits on each reduction in turn (4-5x slower for D = 64). */
AVX512 static void dots_avx512(const float *q, const float *k, int64_t ldk, int64_t n, int64_t D, float alpha,
                               float *out) {
    for (int64_t j0 = 0; j0 < n; j0 += 16) {
        const int nk = (int)min64(16, n - j0);
        const float *kb = k + j0 * ldk;
        __m512 acc[16];
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
        for (int64_t d = 0; d < D; d += 16) {
            const __mmask16 m = lanes(D - d);
            const __m512 qv = _mm512_maskz_loadu_ps(m, q + d);
#pragma GCC unroll 16
            for (int j = 0; j < 16; j++)
                if (j < nk) acc[j] = _mm512_fmadd_ps(qv, _mm512_maskz_loadu_ps(m, kb + j * ldk + d), acc[j]);
        }
#pragma GCC unroll 16
        for (int j = 0; j < 16; j++)
            if (j < nk) out[j0 + j] = alpha * _mm512_reduce_add_ps(acc[j]);
    }
}

#define AVX512DQ __attribute__((target("avx512f,avx512dq")))
#define AVX512DQ_INLINE static inline __attribute__((always_inline, target("avx512f,avx512dq")))

/* qkv__hash_uniform for 8 indices at once (splitmix64 finaliser, 64-bit lane multiplies); returns
 * the 24-bit integers u * 2^24, exactly those of the scalar function. */
AVX512DQ_INLINE __m512i hash8(__m512i seed, __m512i idx1) {
    __m512i z = _mm512_add_epi64(seed, _mm512_mullo_epi64(_mm512_set1_epi64((long long)0x9E3779B97F4A7C15ull), idx1));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 30)),
                           _mm512_set1_epi64((long long)0xBF58476D1CE4E5B9ull));
    z = _mm512_mullo_epi64(_mm512_xor_si512(z, _mm512_srli_epi64(z, 27)),
                           _mm512_set1_epi64((long long)0x94D049BB133111EBull));
    z = _mm512_xor_si512(z, _mm512_srli_epi64(z, 31));
    return _mm512_srli_epi64(z, 40);
}

AVX512DQ static void drop_avx512(float *x, float *y, int n, uint64_t seed, uint64_t idx0, uint64_t stride, float p) {
    const __m512i vseed = _mm512_set1_epi64((long long)seed), step = _mm512_set1_epi64((long long)(8 * stride));
    /* index + 1 of lanes 0..7 (the hash adds 1) */
    __m512i idx = _mm512_add_epi64(_mm512_set1_epi64((long long)(idx0 + 1)),
                                   _mm512_mullo_epi64(_mm512_set_epi64(7, 6, 5, 4, 3, 2, 1, 0),
                                                      _mm512_set1_epi64((long long)stride)));
    const __m512 vp = _mm512_set1_ps(p), inv = _mm512_set1_ps(1.0f / (1.0f - p)),
                 two24 = _mm512_set1_ps(1.0f / 16777216.0f);
    for (int i = 0; i < n; i += 16) {
        const __m512i lo = hash8(vseed, idx);
        idx = _mm512_add_epi64(idx, step);
        const __m512i hi = hash8(vseed, idx);
        idx = _mm512_add_epi64(idx, step);
        const __m512i u = _mm512_inserti64x4(_mm512_castsi256_si512(_mm512_cvtepi64_epi32(lo)),
                                             _mm512_cvtepi64_epi32(hi), 1);
        const __mmask16 in = lanes(n - i);
        const __mmask16 keep = _mm512_cmp_ps_mask(_mm512_mul_ps(_mm512_cvtepi32_ps(u), two24), vp, _CMP_GE_OQ) & in;
        _mm512_mask_storeu_ps(x + i, in, _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(in, x + i), inv));
        if (y) _mm512_mask_storeu_ps(y + i, in, _mm512_maskz_mul_ps(keep, _mm512_maskz_loadu_ps(in, y + i), inv));
    }
}

static const isa_ops avx512_ops = {"avx512",  abt_avx512,   acc_avx512, exp_sub_avx512, exp_sub_v_avx512,
                                   max_v_avx512, ds_avx512, ds_v_avx512, scale_avx512, max_avx512,
                                   dot_avx512, dots_avx512, drop_avx512};

static const isa_ops *pick_isa(const qkv__attn *a) {
    if (a->isa == QKV__ATTN_ISA_SCALAR) return &scalar_ops;
    const char *env = getenv("QKV_ATTN_ISA");
    if (env && strcmp(env, "scalar") == 0) return &scalar_ops;
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq")) return &avx512_ops;
    return &scalar_ops;
}

const char *qkv__attention_isa_name(const qkv__attn *a) { return pick_isa(a)->name; }

void qkv__attention_vexp(const qkv__attn *a, float *x, int64_t n) { pick_isa(a)->exp_sub(x, n, 0.0f); }

/* ---- workspace ---- */

/* Per thread: two transposed blocks (D and Dv rows of BMAX columns), three score tiles, two
 * accumulators, four packed row blocks and a few row vectors, about 200 KiB at D = 64. In front of
 * all threads: D_i = dO_i . O_i for the backward, (B,H,Tq). */
typedef struct {
    float *t1;   /* Q^T (D, BQ) in forward/dq pass; K^T (D, BK) in dk/dv pass and weights forward */
    float *t2;   /* dO^T (Dv, BQ) in the dq pass; V^T (Dv, BK) in the dk/dv pass */
    float *s;    /* scores / probabilities tile */
    float *dp;   /* dP, then dS */
    float *pd;   /* dropped probabilities (dk/dv pass), copies of stored weights */
    float *acc1; /* O (BQ, Dv) in forward; dQ (BQ, D) in dq pass; dK (BK, D) in dk/dv pass */
    float *acc2; /* dV (BK, Dv) */
    float *pk, *pv, *pq, *pdo; /* packed row blocks of k (BMAX, D), v (BMAX, Dv), q (BMAX, D), dout (BMAX, Dv) */
    float *vec;  /* 8 row vectors of BMAX */
} tile_ws;

static int64_t thread_floats(const qkv__attn *a) {
    const int64_t dm = a->D > a->Dv ? a->D : a->Dv;
    return round16(a->D * BMAX) + round16(a->Dv * BMAX) + 3 * round16(BQ * BK) + round16(BMAX * dm) +
           round16(BK * a->Dv) + 2 * round16(BMAX * a->D) + 2 * round16(BMAX * a->Dv) + 8 * round16(BMAX);
}

/* The one-query forward (forward_decode) keeps the scores of every head, H rows of Tk, after the
 * per-thread blocks. */
static int64_t decode_floats(const qkv__attn *a) { return a->Tq == 1 ? round16(a->H * a->Tk) : 0; }

size_t qkv__attention_ws_bytes(const qkv__attn *a) {
    return (size_t)(round16(a->B * a->H * a->Tq) + (int64_t)a->nthreads * thread_floats(a) + decode_floats(a)) *
           sizeof(float);
}

static tile_ws tile_ws_of(const qkv__attn *a, void *ws, int tid) {
    float *p = (float *)ws + round16(a->B * a->H * a->Tq) + (int64_t)tid * thread_floats(a);
    const int64_t dm = a->D > a->Dv ? a->D : a->Dv;
    tile_ws w;
    w.t1 = p, p += round16(a->D * BMAX);
    w.t2 = p, p += round16(a->Dv * BMAX);
    w.s = p, p += round16(BQ * BK);
    w.dp = p, p += round16(BQ * BK);
    w.pd = p, p += round16(BQ * BK);
    w.acc1 = p, p += round16(BMAX * dm);
    w.acc2 = p, p += round16(BK * a->Dv);
    w.pk = p, p += round16(BMAX * a->D);
    w.pv = p, p += round16(BMAX * a->Dv);
    w.pq = p, p += round16(BMAX * a->D);
    w.pdo = p, p += round16(BMAX * a->Dv);
    w.vec = p;
    return w;
}

/* ---- tile helpers shared by all paths ---- */

/* Everything a task reads and writes. */
typedef struct {
    const qkv__attn *a;
    const isa_ops *isa;
    const float *q, *k, *v;
    int64_t C, Cv, off; /* H*D, H*Dv, Tk - Tq (causal alignment) */
    /* forward */
    float *out, *lse, *w;
    /* backward */
    const float *o, *dout, *lse_in, *w_in;
    float *dsum, *dq, *dk, *dv;
} job;

/* dst[c*ldd + r] = src[r*lds + c] for r < rows, c < cols; columns rows..pad of dst are zeroed so the
 * abt kernels may read whole vectors. */
static void load_t(float *dst, int64_t ldd, const float *src, int64_t lds, int rows, int64_t cols, int pad) {
    for (int r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++) dst[c * ldd + r] = src[r * lds + c];
    for (int64_t c = 0; c < cols; c++)
        for (int r = rows; r < pad; r++) dst[c * ldd + r] = 0.0f;
}

/* dst (rows, cols) contiguous = rows of src at stride lds. The acc kernel re-reads its X block once per
 * group of 4 output rows; read in place, rows H*D*4 bytes apart (a multiple of 1-4 KiB) fall into a
 * handful of L1 sets and evict one another, so blocks that are re-read are packed first. */
static void pack(float *dst, const float *src, int64_t lds, int rows, int64_t cols) {
    for (int r = 0; r < rows; r++) memcpy(dst + r * cols, src + r * lds, sizeof(float) * (size_t)cols);
}

static int all_padded(const uint8_t *pad, int64_t j0, int64_t nk) {
    if (!pad) return 0;
    for (int64_t j = 0; j < nk; j++)
        if (!pad[j0 + j]) return 0;
    return 1;
}

static int any_padded(const uint8_t *pad, int64_t j0, int64_t nk) {
    if (!pad) return 0;
    for (int64_t j = 0; j < nk; j++)
        if (pad[j0 + j]) return 1;
    return 0;
}

/* Keys the queries [i0, i0+mq) may see at all: [0, kend). */
static int64_t key_end(const job *J, int64_t i0, int mq) {
    return J->a->causal ? min64(J->a->Tk, i0 + mq + J->off) : J->a->Tk;
}

/* Blocks entries of an S^T tile (rows keys j0+j, columns queries i0+i) with -inf. */
static void mask_st(const job *J, float *st, int ld, int nk, int mq, int64_t j0, int64_t i0, const uint8_t *pad) {
    const int causal_cut = J->a->causal && j0 + nk - 1 > i0 + J->off;
    if (!causal_cut && !any_padded(pad, j0, nk)) return;
    for (int j = 0; j < nk; j++) {
        int64_t pre = 0; /* columns [0, pre) of this row are blocked */
        if (pad && pad[j0 + j])
            pre = mq;
        else if (causal_cut)
            pre = max64(0, min64(mq, j0 + j - J->off - i0));
        for (int64_t i = 0; i < pre; i++) st[(int64_t)j * ld + i] = -INFINITY;
    }
}

/* Blocks entries of an S tile (rows queries i0+i, columns keys j0+j) with -inf. */
static void mask_s(const job *J, float *s, int64_t ld, int mq, int nk, int64_t i0, int64_t j0, const uint8_t *pad) {
    const int causal_cut = J->a->causal && j0 + nk - 1 > i0 + J->off;
    const int padded = any_padded(pad, j0, nk);
    if (!causal_cut && !padded) return;
    for (int i = 0; i < mq; i++) {
        float *row = s + i * ld;
        if (causal_cut)
            for (int64_t j = max64(0, i0 + i + J->off - j0 + 1); j < nk; j++) row[j] = -INFINITY;
        if (padded)
            for (int j = 0; j < nk; j++)
                if (pad[j0 + j]) row[j] = -INFINITY;
    }
}

/* Dropout on an S^T-oriented tile t (rows keys j0+j, columns queries i0+i): mask index
 * ((bh*Tq + i)*Tk + j) steps by Tk along a row. */
static void drop_t(const job *J, float *t, int ld, int nk, int mq, int64_t bh, int64_t i0, int64_t j0) {
    const qkv__attn *a = J->a;
    for (int j = 0; j < nk; j++)
        J->isa->drop(t + j * ld, NULL, mq, a->seed, (uint64_t)((bh * a->Tq + i0) * a->Tk + j0 + j), (uint64_t)a->Tk,
                     a->dropout);
}

/* Dropout on S-oriented tiles x and y (rows queries i0+i, columns keys j0+j; y may be NULL). */
static void drop_s(const job *J, float *x, float *y, int ld, int mq, int nk, int64_t bh, int64_t i0, int64_t j0) {
    const qkv__attn *a = J->a;
    for (int i = 0; i < mq; i++)
        J->isa->drop(x + i * ld, y ? y + i * ld : NULL, nk, a->seed, (uint64_t)((bh * a->Tq + i0 + i) * a->Tk + j0), 1,
                     a->dropout);
}

/* ---- forward ---- */

/* One (b, h, query block) with the online softmax over key blocks. Tiles are S^T (keys x queries),
 * so the running max m, sum l and rescale factor are per column and the updates are vertical. */
static void forward_task(const job *J, tile_ws *w, int64_t b, int64_t h, int64_t i0, int mq) {
    const qkv__attn *a = J->a;
    const isa_ops *isa = J->isa;
    const int64_t D = a->D, Dv = a->Dv, C = J->C, Cv = J->Cv, bh = b * a->H + h;
    const float *qb = J->q + (b * a->Tq + i0) * C + h * D; /* query i at qb + i*C */
    const float *kb = J->k + b * a->Tk * C + h * D;         /* key j at kb + j*C */
    const float *vb = J->v + b * a->Tk * Cv + h * Dv;
    const uint8_t *pad = a->key_padding_mask ? a->key_padding_mask + b * a->Tk : NULL;
    float *m = w->vec, *l = m + BMAX, *mnew = l + BMAX, *muse = mnew + BMAX, *alpha = muse + BMAX,
          *lsum = alpha + BMAX, *o = w->acc1, *st = w->s;

    load_t(w->t1, BQ, qb, C, mq, D, BQ);
    for (int i = 0; i < mq; i++) m[i] = -INFINITY, l[i] = 0.0f;
    memset(o, 0, sizeof(float) * (size_t)(mq * Dv));

    const int64_t kend = key_end(J, i0, mq);
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int nk = (int)min64(BK, kend - j0);
        if (all_padded(pad, j0, nk)) continue;
        /* S^T = scale * K_blk Q^T, blocked entries -inf */
        pack(w->pk, kb + j0 * C, C, nk, D);
        isa->abt(nk, mq, D, a->scale, w->pk, D, w->t1, BQ, st, BQ);
        mask_st(J, st, BQ, nk, mq, j0, i0, pad);
        /* online softmax down the columns: m' = max(m, colmax), P = exp(S - m'), l = l e^(m-m') + colsum */
        memcpy(mnew, m, sizeof(float) * (size_t)mq);
        for (int j = 0; j < nk; j++) isa->max_v(mnew, st + j * BQ, mq);
        for (int i = 0; i < mq; i++) {
            muse[i] = mnew[i] == -INFINITY ? 0.0f : mnew[i]; /* all blocked so far: exp(-inf - 0) = 0 */
            alpha[i] = m[i];
            lsum[i] = 0.0f;
        }
        isa->exp_sub_v(alpha, mq, muse, NULL);
        for (int j = 0; j < nk; j++) isa->exp_sub_v(st + j * BQ, mq, muse, lsum);
        for (int i = 0; i < mq; i++) {
            if (alpha[i] != 1.0f && l[i] > 0.0f) isa->scale(o + i * Dv, Dv, alpha[i]);
            l[i] = l[i] * alpha[i] + lsum[i];
            m[i] = mnew[i];
        }
        /* O += dropout(P) V: P^T is the tile, so A(i,j) = st[j*BQ + i] */
        if (a->dropout > 0.0f) drop_t(J, st, BQ, nk, mq, bh, i0, j0);
        pack(w->pv, vb + j0 * Cv, Cv, nk, Dv);
        isa->acc(mq, Dv, nk, st, 1, BQ, w->pv, Dv, o, Dv);
    }
    for (int i = 0; i < mq; i++) {
        float *orow = J->out + (b * a->Tq + i0 + i) * Cv + h * Dv;
        if (l[i] > 0.0f) {
            const float inv = 1.0f / l[i];
            for (int64_t c = 0; c < Dv; c++) orow[c] = o[i * Dv + c] * inv;
        } else {
            memset(orow, 0, sizeof(float) * (size_t)Dv);
        }
        if (J->lse) J->lse[bh * a->Tq + i0 + i] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

/* The same for a block of fewer than ROWS_MAX queries (decode: one query against a KV cache). The
 * S^T tile would use mq of its 16 lanes, so the tile is S (queries x keys) instead: each score is a
 * dot product over D, and the online softmax runs along rows with scalar m and l. */
#define ROWS_MAX 8

static void forward_rows_task(const job *J, tile_ws *w, int64_t b, int64_t h, int64_t i0, int mq) {
    const qkv__attn *a = J->a;
    const isa_ops *isa = J->isa;
    const int64_t D = a->D, Dv = a->Dv, C = J->C, Cv = J->Cv, bh = b * a->H + h;
    const float *qb = J->q + (b * a->Tq + i0) * C + h * D;
    const float *kb = J->k + b * a->Tk * C + h * D;
    const float *vb = J->v + b * a->Tk * Cv + h * Dv;
    const uint8_t *pad = a->key_padding_mask ? a->key_padding_mask + b * a->Tk : NULL;
    float *m = w->vec, *l = m + BMAX, *o = w->acc1, *s = w->s;

    for (int i = 0; i < mq; i++) m[i] = -INFINITY, l[i] = 0.0f;
    memset(o, 0, sizeof(float) * (size_t)(mq * Dv));
    const int64_t kend = key_end(J, i0, mq);
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int nk = (int)min64(BK, kend - j0);
        if (all_padded(pad, j0, nk)) continue;
        for (int i = 0; i < mq; i++) isa->dots(qb + i * C, kb + j0 * C, C, nk, D, a->scale, s + i * BK);
        mask_s(J, s, BK, mq, nk, i0, j0, pad);
        for (int i = 0; i < mq; i++) {
            float *row = s + i * BK;
            const float mx = isa->max(row, nk), mnew = mx > m[i] ? mx : m[i];
            if (mnew == -INFINITY) { /* every key so far blocked */
                memset(row, 0, sizeof(float) * (size_t)nk);
                continue;
            }
            const float alpha = expf(m[i] - mnew), sum = isa->exp_sub(row, nk, mnew);
            if (alpha != 1.0f && l[i] > 0.0f) isa->scale(o + i * Dv, Dv, alpha);
            l[i] = l[i] * alpha + sum;
            m[i] = mnew;
        }
        if (a->dropout > 0.0f) drop_s(J, s, NULL, BK, mq, nk, bh, i0, j0);
        isa->acc(mq, Dv, nk, s, BK, 1, vb + j0 * Cv, Cv, o, Dv); /* one row group: v is read once, in place */
    }
    for (int i = 0; i < mq; i++) {
        float *orow = J->out + (b * a->Tq + i0 + i) * Cv + h * Dv;
        if (l[i] > 0.0f) {
            const float inv = 1.0f / l[i];
            for (int64_t c = 0; c < Dv; c++) orow[c] = o[i * Dv + c] * inv;
        } else {
            memset(orow, 0, sizeof(float) * (size_t)Dv);
        }
        if (J->lse) J->lse[bh * a->Tq + i0 + i] = l[i] > 0.0f ? m[i] + logf(l[i]) : -INFINITY;
    }
}

/* The weights-requested forward: the probabilities of (b, h, query block) are materialised in
 * place in weights (B,H,Tq,Tk) (S-oriented, row stride Tk), normalised row by row, then O = P V. */
static void forward_weights_task(const job *J, tile_ws *w, int64_t b, int64_t h, int64_t i0, int mq) {
    const qkv__attn *a = J->a;
    const isa_ops *isa = J->isa;
    const int64_t D = a->D, Dv = a->Dv, C = J->C, Cv = J->Cv, Tk = a->Tk, bh = b * a->H + h;
    const float *qb = J->q + (b * a->Tq + i0) * C + h * D;
    const float *kb = J->k + b * Tk * C + h * D;
    const float *vb = J->v + b * Tk * Cv + h * Dv;
    const uint8_t *pad = a->key_padding_mask ? a->key_padding_mask + b * Tk : NULL;
    float *pb = J->w + (bh * a->Tq + i0) * Tk, *o = w->acc1;
    const int64_t kend = key_end(J, i0, mq);

    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int nk = (int)min64(BK, kend - j0);
        load_t(w->t1, BK, kb + j0 * C, C, nk, D, BK);
        isa->abt(mq, nk, D, a->scale, qb, C, w->t1, BK, pb + j0, Tk);
        mask_s(J, pb + j0, Tk, mq, nk, i0, j0, pad);
    }
    for (int i = 0; i < mq; i++) {
        float *row = pb + i * Tk;
        const float mx = kend > 0 ? isa->max(row, kend) : -INFINITY;
        float *lse = J->lse ? J->lse + bh * a->Tq + i0 + i : NULL;
        if (mx == -INFINITY) {
            memset(row, 0, sizeof(float) * (size_t)Tk);
            if (lse) *lse = -INFINITY;
            continue;
        }
        const float sum = isa->exp_sub(row, kend, mx);
        isa->scale(row, kend, 1.0f / sum);
        if (kend < Tk) memset(row + kend, 0, sizeof(float) * (size_t)(Tk - kend));
        if (lse) *lse = mx + logf(sum);
    }
    memset(o, 0, sizeof(float) * (size_t)(mq * Dv));
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int nk = (int)min64(BK, kend - j0);
        pack(w->pv, vb + j0 * Cv, Cv, nk, Dv);
        if (a->dropout > 0.0f) {
            for (int i = 0; i < mq; i++) memcpy(w->pd + i * BK, pb + i * Tk + j0, sizeof(float) * (size_t)nk);
            drop_s(J, w->pd, NULL, BK, mq, nk, bh, i0, j0);
            isa->acc(mq, Dv, nk, w->pd, BK, 1, w->pv, Dv, o, Dv);
        } else {
            isa->acc(mq, Dv, nk, pb + j0, Tk, 1, w->pv, Dv, o, Dv);
        }
    }
    for (int i = 0; i < mq; i++)
        memcpy(J->out + (b * a->Tq + i0 + i) * Cv + h * Dv, o + i * Dv, sizeof(float) * (size_t)Dv);
}

/* One query per (b, h) — generation with a key/value cache — without weights or dropout. The keys
 * and values of all heads share each row of k and v (row stride H*D), so a task per head would read
 * every row in 256-byte pieces H times over. Here each thread takes a contiguous range of heads and
 * walks the rows in memory order, its heads' segment of a row at a time: pass 1 the scores of its
 * heads (kept whole, Tk per head: a two-pass softmax, no rescaling), pass 2 the weighted sum of the
 * value rows, 16 keys at a time. With dots() this took the 12 layers of GPT-2 124M attention for one
 * new token (2 threads, cache evicted) from 0.68 to 0.52 ms at 128 cached positions and from 4.1 to
 * 2.9 ms at 900. */
static void forward_decode(const job *J, float *scores, int64_t h0, int64_t h1) {
    const qkv__attn *a = J->a;
    const isa_ops *isa = J->isa;
    const int64_t D = a->D, Dv = a->Dv, C = J->C, Cv = J->Cv, Tk = a->Tk, kend = key_end(J, 0, 1);
    for (int64_t b = 0; b < a->B; b++) {
        const float *qb = J->q + b * C, *kb = J->k + b * Tk * C, *vb = J->v + b * Tk * Cv;
        const uint8_t *pad = a->key_padding_mask ? a->key_padding_mask + b * Tk : NULL;
        for (int64_t j0 = 0; j0 < kend; j0 += 16) {
            const int64_t nk = min64(16, kend - j0);
            for (int64_t h = h0; h < h1; h++) {
                float *sc = scores + h * Tk + j0;
                isa->dots(qb + h * D, kb + j0 * C + h * D, C, nk, D, a->scale, sc);
                if (pad)
                    for (int64_t j = 0; j < nk; j++)
                        if (pad[j0 + j]) sc[j] = -INFINITY;
            }
        }
        for (int64_t h = h0; h < h1; h++) {
            float *sc = scores + h * Tk, *orow = J->out + b * Cv + h * Dv;
            const float mx = kend > 0 ? isa->max(sc, kend) : -INFINITY;
            memset(orow, 0, sizeof(float) * (size_t)Dv);
            if (mx == -INFINITY) { /* every key blocked: zero output, as the tiled path gives */
                memset(sc, 0, sizeof(float) * (size_t)kend);
                if (J->lse) J->lse[b * a->H + h] = -INFINITY;
                continue;
            }
            const float sum = isa->exp_sub(sc, kend, mx);
            isa->scale(sc, kend, 1.0f / sum);
            if (J->lse) J->lse[b * a->H + h] = mx + logf(sum);
        }
        for (int64_t j0 = 0; j0 < kend; j0 += 16) {
            const int nk = (int)min64(16, kend - j0);
            for (int64_t h = h0; h < h1; h++)
                isa->acc(1, Dv, nk, scores + h * Tk + j0, 0, 1, vb + j0 * Cv + h * Dv, Cv, J->out + b * Cv + h * Dv,
                         Dv);
        }
    }
}

void qkv__attention_forward(const qkv__attn *a, const float *q, const float *k, const float *v, float *out,
                            float *lse, float *weights, void *ws) {
    assert(a->nthreads >= 1);
    job J = {.a = a, .isa = pick_isa(a), .q = q, .k = k, .v = v, .C = a->H * a->D, .Cv = a->H * a->Dv,
             .off = a->Tk - a->Tq, .out = out, .lse = lse, .w = weights};
    if (a->Tq == 1 && !weights && a->dropout == 0.0f) {
        float *scores = (float *)ws + round16(a->B * a->H * a->Tq) + (int64_t)a->nthreads * thread_floats(a);
        const int nt = (int)min64(a->nthreads, a->H);
#pragma omp parallel num_threads(nt) if (nt > 1 && a->Tk * a->H * a->D > 4096)
        {
            const int64_t t = omp_get_thread_num(), n = omp_get_num_threads();
            forward_decode(&J, scores, a->H * t / n, a->H * (t + 1) / n);
        }
        return;
    }
    const int64_t nqb = (a->Tq + BQ - 1) / BQ, ntask = a->B * a->H * nqb;
#pragma omp parallel num_threads(a->nthreads)
    {
        tile_ws w = tile_ws_of(a, ws, omp_get_thread_num());
        /* Last query blocks first: under a causal mask they see the most keys. */
#pragma omp for schedule(dynamic, 1)
        for (int64_t t = 0; t < ntask; t++) {
            const int64_t bh = t / nqb, qb = nqb - 1 - t % nqb, i0 = qb * BQ;
            const int mq = (int)min64(BQ, a->Tq - i0);
            if (weights)
                forward_weights_task(&J, &w, bh / a->H, bh % a->H, i0, mq);
            else if (mq < ROWS_MAX)
                forward_rows_task(&J, &w, bh / a->H, bh % a->H, i0, mq);
            else
                forward_task(&J, &w, bh / a->H, bh % a->H, i0, mq);
        }
    }
}

/* ---- backward ---- */

/* dQ for one (b, h, query block), S^T-oriented like the forward:
 *   P^T = exp(S^T - lse), dP^T = V dO^T (dropout mask applied), dS^T = P^T (dP^T - D),
 *   dQ += scale dS K. */
static void backward_q_task(const job *J, tile_ws *w, int64_t b, int64_t h, int64_t i0, int mq) {
    const qkv__attn *a = J->a;
    const isa_ops *isa = J->isa;
    const int64_t D = a->D, Dv = a->Dv, C = J->C, Cv = J->Cv, Tk = a->Tk, bh = b * a->H + h;
    const float *qb = J->q + (b * a->Tq + i0) * C + h * D;
    const float *dob = J->dout + (b * a->Tq + i0) * Cv + h * Dv;
    const float *kb = J->k + b * Tk * C + h * D;
    const float *vb = J->v + b * Tk * Cv + h * Dv;
    const float *wb = J->w_in ? J->w_in + (bh * a->Tq + i0) * Tk : NULL;
    const uint8_t *pad = a->key_padding_mask ? a->key_padding_mask + b * Tk : NULL;
    float *lse = w->vec, *dvec = lse + BMAX, *st = w->s, *dp = w->dp, *dqa = w->acc1;

    int any = 0;
    for (int i = 0; i < mq; i++) {
        const float x = J->lse_in[bh * a->Tq + i0 + i];
        lse[i] = x == -INFINITY ? INFINITY : x; /* fully blocked row: exp(s - inf) = 0 */
        dvec[i] = J->dsum[bh * a->Tq + i0 + i];
        any |= x != -INFINITY;
    }
    if (!any) return;
    if (!wb) load_t(w->t1, BQ, qb, C, mq, D, BQ);
    load_t(w->t2, BQ, dob, Cv, mq, Dv, BQ);
    memset(dqa, 0, sizeof(float) * (size_t)(mq * D));

    const int64_t kend = key_end(J, i0, mq);
    for (int64_t j0 = 0; j0 < kend; j0 += BK) {
        const int nk = (int)min64(BK, kend - j0);
        if (all_padded(pad, j0, nk)) continue;
        if (wb) {
            for (int j = 0; j < nk; j++)
                for (int i = 0; i < mq; i++) st[j * BQ + i] = wb[i * Tk + j0 + j];
        } else {
            isa->abt(nk, mq, D, a->scale, kb + j0 * C, C, w->t1, BQ, st, BQ);
            mask_st(J, st, BQ, nk, mq, j0, i0, pad);
            for (int j = 0; j < nk; j++) isa->exp_sub_v(st + j * BQ, mq, lse, NULL);
        }
        isa->abt(nk, mq, Dv, 1.0f, vb + j0 * Cv, Cv, w->t2, BQ, dp, BQ);
        if (a->dropout > 0.0f) drop_t(J, dp, BQ, nk, mq, bh, i0, j0);
        for (int j = 0; j < nk; j++) isa->ds_v(dp + j * BQ, st + j * BQ, dp + j * BQ, mq, dvec);
        pack(w->pk, kb + j0 * C, C, nk, D);
        isa->acc(mq, D, nk, dp, 1, BQ, w->pk, D, dqa, D);
    }
    for (int i = 0; i < mq; i++) {
        float *dqr = J->dq + (b * a->Tq + i0 + i) * C + h * D;
        for (int64_t c = 0; c < D; c++) dqr[c] += a->scale * dqa[i * D + c];
    }
}

/* dK, dV for one (b, h, key block), S-oriented (rows queries, columns keys):
 *   P = exp(S - lse), dP = dO V^T, dV += Pd^T dO, dS = P (dP * mask - D), dK += scale dS^T Q,
 * and with with_dq also dQ += scale dS K straight into dq: then the caller must run the key blocks
 * of one (b, h) one after another on one thread (they all add into the same dq rows). */
static void backward_kv_task(const job *J, tile_ws *w, int64_t b, int64_t h, int64_t j0, int nk, int with_dq) {
    const qkv__attn *a = J->a;
    const isa_ops *isa = J->isa;
    const int64_t D = a->D, Dv = a->Dv, C = J->C, Cv = J->Cv, Tq = a->Tq, Tk = a->Tk, bh = b * a->H + h;
    const float *qbase = J->q + b * Tq * C + h * D;
    const float *dobase = J->dout + b * Tq * Cv + h * Dv;
    const float *kb = J->k + (b * Tk + j0) * C + h * D;
    const float *vb = J->v + (b * Tk + j0) * Cv + h * Dv;
    const uint8_t *pad = a->key_padding_mask ? a->key_padding_mask + b * Tk : NULL;
    float *s = w->s, *dp = w->dp, *dka = w->acc1, *dva = w->acc2;

    if (all_padded(pad, j0, nk)) return;
    if (!J->w_in) load_t(w->t1, BK, kb, C, nk, D, BK);
    load_t(w->t2, BK, vb, Cv, nk, Dv, BK);
    if (with_dq) pack(w->pk, kb, C, nk, D);
    memset(dka, 0, sizeof(float) * (size_t)(nk * D));
    memset(dva, 0, sizeof(float) * (size_t)(nk * Dv));

    const int64_t qstart = a->causal ? max64(0, j0 - J->off) : 0; /* first query that sees key j0 */
    for (int64_t i0 = qstart; i0 < Tq; i0 += BQ) {
        const int mq = (int)min64(BQ, Tq - i0);
        const float *lse = J->lse_in + bh * Tq + i0, *dsum = J->dsum + bh * Tq + i0;
        const float *qb = w->pq, *dob = w->pdo; /* packed: rows D and Dv apart */
        pack(w->pq, qbase + i0 * C, C, mq, D);
        pack(w->pdo, dobase + i0 * Cv, Cv, mq, Dv);
        if (J->w_in) {
            const float *wb = J->w_in + (bh * Tq + i0) * Tk + j0;
            for (int i = 0; i < mq; i++) memcpy(s + i * BK, wb + i * Tk, sizeof(float) * (size_t)nk);
        } else {
            isa->abt(mq, nk, D, a->scale, qb, D, w->t1, BK, s, BK);
            mask_s(J, s, BK, mq, nk, i0, j0, pad);
            for (int i = 0; i < mq; i++) {
                if (lse[i] == -INFINITY)
                    memset(s + i * BK, 0, sizeof(float) * (size_t)nk);
                else
                    isa->exp_sub(s + i * BK, nk, lse[i]);
            }
        }
        isa->abt(mq, nk, Dv, 1.0f, dob, Dv, w->t2, BK, dp, BK);
        const float *pdrop = s;
        if (a->dropout > 0.0f) {
            for (int i = 0; i < mq; i++) memcpy(w->pd + i * BK, s + i * BK, sizeof(float) * (size_t)nk);
            drop_s(J, w->pd, dp, BK, mq, nk, bh, i0, j0); /* Pd = P * mask, dP *= mask */
            pdrop = w->pd;
        }
        /* dV (key j) += sum_i Pd[i][j] dO_i: A(j,i) = pdrop[i*BK + j] */
        isa->acc(nk, Dv, mq, pdrop, 1, BK, dob, Dv, dva, Dv);
        for (int i = 0; i < mq; i++) {
            isa->ds(dp + i * BK, s + i * BK, dp + i * BK, nk, dsum[i]);
            isa->scale(dp + i * BK, nk, a->scale); /* dS of the unscaled scores */
        }
        isa->acc(nk, D, mq, dp, 1, BK, qb, D, dka, D);
        /* dQ (query i) += sum_j dS[i][j] K_j */
        if (with_dq) isa->acc(mq, D, nk, dp, BK, 1, w->pk, D, J->dq + (b * Tq + i0) * C + h * D, C);
    }
    for (int j = 0; j < nk; j++) {
        if (J->dk) {
            float *r = J->dk + (b * Tk + j0 + j) * C + h * D;
            for (int64_t c = 0; c < D; c++) r[c] += dka[j * D + c];
        }
        if (J->dv) {
            float *r = J->dv + (b * Tk + j0 + j) * Cv + h * Dv;
            for (int64_t c = 0; c < Dv; c++) r[c] += dva[j * Dv + c];
        }
    }
}

void qkv__attention_backward(const qkv__attn *a, const float *q, const float *k, const float *v, const float *out,
                             const float *lse, const float *weights, const float *dout, float *dq, float *dk,
                             float *dv, void *ws) {
    assert(a->nthreads >= 1);
    job J = {.a = a, .isa = pick_isa(a), .q = q, .k = k, .v = v, .C = a->H * a->D, .Cv = a->H * a->Dv,
             .off = a->Tk - a->Tq, .o = out, .dout = dout, .lse_in = lse, .w_in = weights, .dsum = (float *)ws,
             .dq = dq, .dk = dk, .dv = dv};
    const int64_t B = a->B, H = a->H, Tq = a->Tq, Dv = a->Dv;
    const int64_t nqb = (Tq + BQ - 1) / BQ, nkb = (a->Tk + BK - 1) / BK;
    /* With enough (b, h) pairs to share out, one pass per pair computes dq, dk, dv together (5 tile
     * products); otherwise a pass over query blocks for dq and one over key blocks for dk, dv keep
     * every thread busy at the price of computing S and dP twice (7 tile products). The choice
     * depends on the shape only, so the bits do not depend on the thread count. */
    const int fused = B * H >= QKV__ATTN_FUSED_MIN_BH;
#pragma omp parallel num_threads(a->nthreads)
    {
        tile_ws w = tile_ws_of(a, ws, omp_get_thread_num());
        /* D_i = dO_i . O_i  (= sum_j P_ij dP_ij, dropout included) */
#pragma omp for schedule(static)
        for (int64_t r = 0; r < B * Tq; r++)
            for (int64_t h = 0; h < H; h++)
                J.dsum[((r / Tq) * H + h) * Tq + r % Tq] =
                    J.isa->dot(dout + r * J.Cv + h * Dv, out + r * J.Cv + h * Dv, Dv);
        if (fused) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t bh = 0; bh < B * H; bh++)
                for (int64_t j0 = 0; j0 < a->Tk; j0 += BK)
                    backward_kv_task(&J, &w, bh / H, bh % H, j0, (int)min64(BK, a->Tk - j0), dq != NULL);
        }
        if (!fused && dq) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < B * H * nqb; t++) {
                const int64_t bh = t / nqb, i0 = (nqb - 1 - t % nqb) * BQ;
                backward_q_task(&J, &w, bh / H, bh % H, i0, (int)min64(BQ, Tq - i0));
            }
        }
        if (!fused && (dk || dv)) {
#pragma omp for schedule(dynamic, 1)
            for (int64_t t = 0; t < B * H * nkb; t++) {
                const int64_t bh = t / nkb, j0 = (t % nkb) * BK;
                backward_kv_task(&J, &w, bh / H, bh % H, j0, (int)min64(BK, a->Tk - j0), 0);
            }
        }
    }
}

/* ---- reference: materialised, double accumulation, single thread ---- */

static int ref_blocked(const qkv__attn *a, int64_t b, int64_t i, int64_t j) {
    if (a->causal && j > i + (a->Tk - a->Tq)) return 1;
    return a->key_padding_mask && a->key_padding_mask[b * a->Tk + j];
}

static double ref_keep(const qkv__attn *a, int64_t bh, int64_t i, int64_t j) {
    if (a->dropout <= 0.0f) return 1.0;
    uint64_t idx = ((uint64_t)bh * (uint64_t)a->Tq + (uint64_t)i) * (uint64_t)a->Tk + (uint64_t)j;
    return qkv__hash_uniform(a->seed, idx) >= a->dropout ? 1.0 / (1.0 - (double)a->dropout) : 0.0;
}

/* p[j] = softmax row (b,h,i); returns 0 when every key is blocked (p all 0). */
static int ref_row(const qkv__attn *a, const float *q, const float *k, int64_t b, int64_t h, int64_t i, double *p) {
    const int64_t C = a->H * a->D;
    const float *qi = q + (b * a->Tq + i) * C + h * a->D;
    double mx = -INFINITY;
    for (int64_t j = 0; j < a->Tk; j++) {
        if (ref_blocked(a, b, i, j)) {
            p[j] = -INFINITY;
            continue;
        }
        const float *kj = k + (b * a->Tk + j) * C + h * a->D;
        double s = 0;
        for (int64_t d = 0; d < a->D; d++) s += (double)qi[d] * kj[d];
        p[j] = s * a->scale;
        if (p[j] > mx) mx = p[j];
    }
    if (mx == -INFINITY) {
        for (int64_t j = 0; j < a->Tk; j++) p[j] = 0;
        return 0;
    }
    double sum = 0;
    for (int64_t j = 0; j < a->Tk; j++) sum += p[j] = p[j] == -INFINITY ? 0 : exp(p[j] - mx);
    for (int64_t j = 0; j < a->Tk; j++) p[j] /= sum;
    return 1;
}

void qkv__attention_ref(const qkv__attn *a, const float *q, const float *k, const float *v, float *out,
                        float *weights) {
    const int64_t Cv = a->H * a->Dv;
    double *p = malloc(sizeof(double) * (size_t)a->Tk), *o = malloc(sizeof(double) * (size_t)a->Dv);
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < a->H; h++)
            for (int64_t i = 0; i < a->Tq; i++) {
                const int64_t bh = b * a->H + h;
                ref_row(a, q, k, b, h, i, p);
                if (weights)
                    for (int64_t j = 0; j < a->Tk; j++) weights[(bh * a->Tq + i) * a->Tk + j] = (float)p[j];
                for (int64_t c = 0; c < a->Dv; c++) o[c] = 0;
                for (int64_t j = 0; j < a->Tk; j++) {
                    const double pj = p[j] * ref_keep(a, bh, i, j);
                    if (pj == 0) continue;
                    const float *vj = v + (b * a->Tk + j) * Cv + h * a->Dv;
                    for (int64_t c = 0; c < a->Dv; c++) o[c] += pj * vj[c];
                }
                float *orow = out + (b * a->Tq + i) * Cv + h * a->Dv;
                for (int64_t c = 0; c < a->Dv; c++) orow[c] = (float)o[c];
            }
    free(p);
    free(o);
}

void qkv__attention_ref_backward(const qkv__attn *a, const float *q, const float *k, const float *v,
                                 const float *dout, float *dq, float *dk, float *dv) {
    const int64_t C = a->H * a->D, Cv = a->H * a->Dv, Tk = a->Tk;
    double *p = malloc(sizeof(double) * (size_t)Tk), *dp = malloc(sizeof(double) * (size_t)Tk);
    double *dqr = malloc(sizeof(double) * (size_t)a->D);
    double *dkd = calloc((size_t)(a->B * Tk * C), sizeof(double));
    double *dvd = calloc((size_t)(a->B * Tk * Cv), sizeof(double));
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < a->H; h++)
            for (int64_t i = 0; i < a->Tq; i++) {
                const int64_t bh = b * a->H + h;
                if (!ref_row(a, q, k, b, h, i, p)) continue;
                const float *doi = dout + (b * a->Tq + i) * Cv + h * a->Dv;
                const float *qi = q + (b * a->Tq + i) * C + h * a->D;
                double Di = 0;
                for (int64_t j = 0; j < Tk; j++) {
                    const double keep = ref_keep(a, bh, i, j);
                    const float *vj = v + (b * Tk + j) * Cv + h * a->Dv;
                    double s = 0;
                    for (int64_t c = 0; c < a->Dv; c++) s += (double)doi[c] * vj[c];
                    dp[j] = s * keep; /* d loss / d P[i][j] */
                    Di += p[j] * dp[j];
                    double *dvj = dvd + (b * Tk + j) * Cv + h * a->Dv;
                    for (int64_t c = 0; c < a->Dv; c++) dvj[c] += p[j] * keep * doi[c];
                }
                for (int64_t d = 0; d < a->D; d++) dqr[d] = 0;
                for (int64_t j = 0; j < Tk; j++) {
                    const double ds = p[j] * (dp[j] - Di) * a->scale;
                    if (ds == 0) continue;
                    const float *kj = k + (b * Tk + j) * C + h * a->D;
                    double *dkj = dkd + (b * Tk + j) * C + h * a->D;
                    for (int64_t d = 0; d < a->D; d++) {
                        dqr[d] += ds * kj[d];
                        dkj[d] += ds * qi[d];
                    }
                }
                if (dq)
                    for (int64_t d = 0; d < a->D; d++) dq[(b * a->Tq + i) * C + h * a->D + d] += (float)dqr[d];
            }
    if (dk)
        for (int64_t x = 0; x < a->B * Tk * C; x++) dk[x] += (float)dkd[x];
    if (dv)
        for (int64_t x = 0; x < a->B * Tk * Cv; x++) dv[x] += (float)dvd[x];
    free(p);
    free(dp);
    free(dqr);
    free(dkd);
    free(dvd);
}

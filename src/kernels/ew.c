/* ew.c — element-wise, row (softmax, log-softmax, LayerNorm), reduction and loss kernels, forward
 * and backward side by side.
 *
 * What it is not: the ops (src/ops/ validate shapes and record the tape) nor GEMM or attention. No
 * -ffast-math anywhere: the reference loops use libm (expf, erff, tanhf) and accumulate row sums in
 * double, so they are what the fast path and the tests are measured against.
 *
 * The one convention a reader needs: parallel loops are `schedule(static)` over rows, or over
 * blocks of columns when many rows are summed into one vector (bias, LayerNorm weight, embedding
 * gradients). Each output float is then produced by exactly one thread in a fixed order, so every
 * result is bit-identical for any thread count, with no per-thread partial sums at all. The AVX-512
 * paths (softmax, log-softmax, LayerNorm, both GELUs, cross-entropy) use a Cephes-style expf (about
 * 1 ulp) with 16-lane float accumulators; they differ from the reference loops by a few ulp, which
 * the op tests measure.
 */
#include "kernels/ew.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_int.h"
#include "kernels/simd.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#define HAVE_AVX512 1
#else
#define HAVE_AVX512 0
#endif

#define COL_BLOCK 64 /* columns per task when rows are summed into a vector: one thread owns a block */
#define SUM_PARTS 64 /* fixed partition of qkv__sum, independent of the thread count */

#define GELU_BETA 0.7978845608028654f   /* sqrt(2 / pi) */
#define GELU_KAPPA 0.044715f
#define INV_SQRT2 0.70710678118654752f
#define INV_SQRT_2PI 0.39894228040143268f

/* ---- dispatch ---- */

/* -1: not yet decided (read QKV_EW_ISA); 0: dispatch on the CPU; 1: reference loops forced. */
static _Atomic int force_scalar = -1;

static int use_avx512(void) {
#if HAVE_AVX512
    int f = force_scalar;
    if (f < 0) {
        const char *e = getenv("QKV_EW_ISA");
        f = e && strcmp(e, "scalar") == 0;
        force_scalar = f;
    }
    return !f && __builtin_cpu_supports("avx512f");
#else
    return 0;
#endif
}

const char *qkv__ew_isa(void) { return use_avx512() ? "avx512" : "scalar"; }
void qkv__ew_force_scalar(int on) { force_scalar = on ? 1 : -1; }

/* The kernel for this call: the AVX-512 one when the CPU has it (and it is not forced off), else
 * the reference loop, which has the same signature. */
#if HAVE_AVX512
#define PICK(ref, fast) (use_avx512() ? (fast) : (ref))
#else
#define PICK(ref, fast) (ref)
#endif

#if HAVE_AVX512
#define AVX512 __attribute__((target("avx512f")))

/* Lanes [0, n) set, n in [0, 16]: the tail of a row. */
AVX512 static inline __mmask16 tail_mask(int64_t n) { return (__mmask16)((1u << n) - 1u); }

AVX512 static float row_max_avx512(const float *x, int64_t C) {
    __m512 m = _mm512_set1_ps(-INFINITY);
    int64_t c = 0;
    for (; c + 16 <= C; c += 16) m = _mm512_max_ps(m, _mm512_loadu_ps(x + c));
    if (c < C) m = _mm512_max_ps(m, _mm512_mask_loadu_ps(m, tail_mask(C - c), x + c));
    return _mm512_reduce_max_ps(m);
}

/* sum_c exp(x[c] - m), optionally storing each exp into out. */
AVX512 static float row_sumexp_avx512(float *out, const float *x, float m, int64_t C) {
    const __m512 vm = _mm512_set1_ps(m);
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= C; c += 32) {
        __m512 e0 = qkv__exp512(_mm512_sub_ps(_mm512_loadu_ps(x + c), vm));
        __m512 e1 = qkv__exp512(_mm512_sub_ps(_mm512_loadu_ps(x + c + 16), vm));
        if (out) {
            _mm512_storeu_ps(out + c, e0);
            _mm512_storeu_ps(out + c + 16, e1);
        }
        s0 = _mm512_add_ps(s0, e0);
        s1 = _mm512_add_ps(s1, e1);
    }
    for (; c < C; c += 16) {
        __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : tail_mask(C - c);
        __m512 e = qkv__exp512(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm));
        if (out) _mm512_mask_storeu_ps(out + c, k, e);
        s0 = _mm512_mask_add_ps(s0, k, s0, e);
    }
    return _mm512_reduce_add_ps(_mm512_add_ps(s0, s1));
}
#endif

/* ---- element-wise with broadcast ---- */

void qkv__add_forward(float *out, const float *a, const float *b, int64_t R, int64_t b_rows, int64_t C,
                      float sign) {
    int64_t bstride = b_rows == 1 ? 0 : C;
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        const float *ar = a + r * C, *br = b + r * bstride;
        float *o = out + r * C;
        for (int64_t c = 0; c < C; c++) o[c] = ar[c] + sign * br[c];
    }
}

void qkv__colsum(float *db, const float *dout, int64_t R, int64_t C, float sign) {
    int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN && nb > 1)
    for (int64_t k = 0; k < nb; k++) {
        int64_t c0 = k * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int64_t r = 0; r < R; r++) {
            const float *g = dout + r * C;
            for (int64_t c = c0; c < c1; c++) db[c] += sign * g[c];
        }
    }
}

void qkv__add_backward(float *da, float *db, const float *dout, int64_t R, int64_t b_rows, int64_t C,
                       float sign) {
    int64_t n = R * C;
    if (da) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
        for (int64_t i = 0; i < n; i++) da[i] += dout[i];
    }
    if (!db) return;
    if (b_rows == 1) {
        qkv__colsum(db, dout, R, C, sign);
    } else {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
        for (int64_t i = 0; i < n; i++) db[i] += sign * dout[i];
    }
}

void qkv__mul_forward(float *out, const float *a, const float *b, int64_t R, int64_t b_rows, int64_t C) {
    int64_t bstride = b_rows == 1 ? 0 : C;
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        const float *ar = a + r * C, *br = b + r * bstride;
        float *o = out + r * C;
        for (int64_t c = 0; c < C; c++) o[c] = ar[c] * br[c];
    }
}

void qkv__mul_backward(float *da, float *db, const float *dout, const float *a, const float *b, int64_t R,
                       int64_t b_rows, int64_t C) {
    int64_t bstride = b_rows == 1 ? 0 : C;
    if (da) {
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
        for (int64_t r = 0; r < R; r++) {
            const float *g = dout + r * C, *br = b + r * bstride;
            float *d = da + r * C;
            for (int64_t c = 0; c < C; c++) d[c] += g[c] * br[c];
        }
    }
    if (!db) return;
    if (b_rows == 1) {
        int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN && nb > 1)
        for (int64_t k = 0; k < nb; k++) {
            int64_t c0 = k * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
            for (int64_t r = 0; r < R; r++) {
                const float *g = dout + r * C, *ar = a + r * C;
                for (int64_t c = c0; c < c1; c++) db[c] += g[c] * ar[c];
            }
        }
    } else {
        int64_t n = R * C;
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
        for (int64_t i = 0; i < n; i++) db[i] += dout[i] * a[i];
    }
}

/* ---- scale, activations ---- */

void qkv__scale_forward(float *out, const float *x, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = s * x[i];
}

void qkv__scale_backward(float *dx, const float *dout, int64_t n, float s) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += s * dout[i];
}

void qkv__relu_forward(float *out, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = x[i] > 0.0f ? x[i] : 0.0f;
}

void qkv__relu_backward(float *dx, const float *dout, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += x[i] > 0.0f ? dout[i] : 0.0f;
}

/* GELU reference, the PyTorch formulas term by term. */
static void gelu_erf_forward_ref(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) out[i] = 0.5f * x[i] * (1.0f + erff(x[i] * INV_SQRT2));
}

static void gelu_erf_backward_ref(float *dx, const float *dout, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i];
        float cdf = 0.5f * (1.0f + erff(v * INV_SQRT2));
        float pdf = INV_SQRT_2PI * expf(-0.5f * v * v);
        dx[i] += dout[i] * (cdf + v * pdf);
    }
}

static void gelu_tanh_forward_ref(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], inner = GELU_BETA * (v + GELU_KAPPA * v * v * v);
        out[i] = 0.5f * v * (1.0f + tanhf(inner));
    }
}

static void gelu_tanh_backward_ref(float *dx, const float *dout, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i++) {
        float v = x[i], v2 = v * v;
        float t = tanhf(GELU_BETA * (v + GELU_KAPPA * v2 * v));
        float left = 0.5f * (1.0f + t); /* d/dx of 0.5 x (.) */
        float right = 0.5f * v * (1.0f - t * t) * GELU_BETA * (1.0f + 3.0f * GELU_KAPPA * v2);
        dx[i] += dout[i] * (left + right);
    }
}

#if HAVE_AVX512
/* Tanh GELU as 0.5 x (1 + tanh u) = x * sigmoid(2u) = x / (1 + exp(-2u)): one exp and no
 * cancellation near u = 0 (1 + tanh u would lose the low bits of tanh). exp(-2u) is capped at
 * exp(GELU_EXP_CAP): beyond it the result is 0 to float precision anyway, and an infinite e would
 * make the backward's e * s^2 an inf * 0 = NaN. */
#define GELU_EXP_CAP 80.0f
AVX512 static void gelu_tanh_forward_avx512(float *out, const float *x, int64_t n) {
    const __m512 beta2 = _mm512_set1_ps(-2.0f * GELU_BETA), kappa = _mm512_set1_ps(GELU_KAPPA);
    const __m512 cap = _mm512_set1_ps(GELU_EXP_CAP);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(kappa, v), _mm512_mul_ps(v, v), v);
        __m512 e = qkv__exp512(_mm512_min_ps(cap, _mm512_mul_ps(beta2, inner)));
        _mm512_mask_storeu_ps(out + i, k, _mm512_div_ps(v, _mm512_add_ps(one, e)));
    }
}

/* With s = sigmoid(2u), e = exp(-2u): 0.5 (1 + tanh u) = s and 1 - tanh^2 u = 4 s (1 - s) = 4 e s^2. */
AVX512 static void gelu_tanh_backward_avx512(float *dx, const float *dout, const float *x, int64_t n) {
    const __m512 beta2 = _mm512_set1_ps(-2.0f * GELU_BETA), kappa = _mm512_set1_ps(GELU_KAPPA);
    const __m512 kappa3 = _mm512_set1_ps(3.0f * GELU_KAPPA), beta = _mm512_set1_ps(2.0f * GELU_BETA);
    const __m512 one = _mm512_set1_ps(1.0f), cap = _mm512_set1_ps(GELU_EXP_CAP);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i), v2 = _mm512_mul_ps(v, v);
        __m512 inner = _mm512_fmadd_ps(_mm512_mul_ps(kappa, v), v2, v);
        __m512 e = qkv__exp512(_mm512_min_ps(cap, _mm512_mul_ps(beta2, inner)));
        __m512 s = _mm512_div_ps(one, _mm512_add_ps(one, e));
        /* right = x * 2 e s^2 * beta * (1 + 3 kappa x^2) */
        __m512 right = _mm512_mul_ps(_mm512_mul_ps(v, _mm512_mul_ps(e, _mm512_mul_ps(s, s))),
                                     _mm512_mul_ps(beta, _mm512_fmadd_ps(kappa3, v2, one)));
        __m512 d = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dout + i), _mm512_add_ps(s, right));
        _mm512_mask_storeu_ps(dx + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dx + i), d));
    }
}

/* Exact GELU as x * Phi(x), with the normal CDF from erfc: Phi(x) = 0.5 erfc(|x|/sqrt 2) for x < 0
 * and 1 - that for x >= 0, so the negative tail keeps its relative precision. erfc(z), z >= 0, is
 * Numerical Recipes' erfcc (Chebyshev fit, fractional error < 1.2e-7 everywhere):
 * erfc(z) = t exp(-z^2 + P(t)), t = 1 / (1 + z/2). */
AVX512 static inline __m512 normal_cdf512(__m512 x) {
    const __m512 half = _mm512_set1_ps(0.5f), one = _mm512_set1_ps(1.0f);
    __m512 z = _mm512_mul_ps(_mm512_abs_ps(x), _mm512_set1_ps(INV_SQRT2));
    __m512 t = _mm512_div_ps(one, _mm512_fmadd_ps(half, z, one));
    __m512 p = _mm512_set1_ps(0.17087277f);
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.82215223f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.48851587f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.13520398f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.27886807f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-0.18628806f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.09678418f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(0.37409196f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(1.00002368f));
    p = _mm512_fmadd_ps(p, t, _mm512_set1_ps(-1.26551223f));
    __m512 tail = _mm512_mul_ps(half, _mm512_mul_ps(t, qkv__exp512(_mm512_fnmadd_ps(z, z, p)))); /* Phi(-|x|) */
    __mmask16 pos = _mm512_cmp_ps_mask(x, _mm512_setzero_ps(), _CMP_GE_OQ);
    return _mm512_mask_sub_ps(tail, pos, one, tail);
}

AVX512 static void gelu_erf_forward_avx512(float *out, const float *x, int64_t n) {
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        _mm512_mask_storeu_ps(out + i, k, _mm512_mul_ps(v, normal_cdf512(v)));
    }
}

/* d/dx x Phi(x) = Phi(x) + x phi(x), phi the normal density. */
AVX512 static void gelu_erf_backward_avx512(float *dx, const float *dout, const float *x, int64_t n) {
    const __m512 mhalf = _mm512_set1_ps(-0.5f), c = _mm512_set1_ps(INV_SQRT_2PI);
    for (int64_t i = 0; i < n; i += 16) {
        __mmask16 k = n - i >= 16 ? (__mmask16)0xFFFF : tail_mask(n - i);
        __m512 v = _mm512_maskz_loadu_ps(k, x + i);
        __m512 pdf = _mm512_mul_ps(c, qkv__exp512(_mm512_mul_ps(mhalf, _mm512_mul_ps(v, v))));
        __m512 d = _mm512_fmadd_ps(v, pdf, normal_cdf512(v));
        d = _mm512_mul_ps(_mm512_maskz_loadu_ps(k, dout + i), d);
        _mm512_mask_storeu_ps(dx + i, k, _mm512_add_ps(_mm512_maskz_loadu_ps(k, dx + i), d));
    }
}
#endif

/* Element-wise kernels thread over fixed 16-float-aligned pieces, so a piece boundary never
 * splits a vector and every element sees the same code path on any thread count. */
#define EW_PIECE 16384

typedef void (*unary_fn)(float *out, const float *x, int64_t n);
typedef void (*unary_bw_fn)(float *dx, const float *dout, const float *x, int64_t n);

void qkv__gelu_forward(float *out, const float *x, int64_t n, int approx_tanh) {
    unary_fn f = approx_tanh ? PICK(gelu_tanh_forward_ref, gelu_tanh_forward_avx512)
                             : PICK(gelu_erf_forward_ref, gelu_erf_forward_avx512);
    int64_t pieces = (n + EW_PIECE - 1) / EW_PIECE;
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t k = 0; k < pieces; k++) {
        int64_t lo = k * EW_PIECE;
        f(out + lo, x + lo, n - lo < EW_PIECE ? n - lo : EW_PIECE);
    }
}

void qkv__gelu_backward(float *dx, const float *dout, const float *x, int64_t n, int approx_tanh) {
    unary_bw_fn f = approx_tanh ? PICK(gelu_tanh_backward_ref, gelu_tanh_backward_avx512)
                                : PICK(gelu_erf_backward_ref, gelu_erf_backward_avx512);
    int64_t pieces = (n + EW_PIECE - 1) / EW_PIECE;
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t k = 0; k < pieces; k++) {
        int64_t lo = k * EW_PIECE;
        f(dx + lo, dout + lo, x + lo, n - lo < EW_PIECE ? n - lo : EW_PIECE);
    }
}

void qkv__tanh_forward(float *out, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = tanhf(x[i]);
}

void qkv__tanh_backward(float *dx, const float *dout, const float *out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dout[i] * (1.0f - out[i] * out[i]);
}

void qkv__sigmoid_forward(float *out, const float *x, int64_t n) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = 1.0f / (1.0f + expf(-x[i]));
}

void qkv__sigmoid_backward(float *dx, const float *dout, const float *out, int64_t n) {
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) dx[i] += dout[i] * out[i] * (1.0f - out[i]);
}

/* ---- dropout: the mask is a pure function of (seed, element index) ---- */

void qkv__dropout_forward(float *out, const float *x, int64_t n, float p, uint64_t seed) {
    const float keep_scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++) out[i] = qkv__hash_uniform(seed, (uint64_t)i) >= p ? x[i] * keep_scale : 0.0f;
}

void qkv__dropout_backward(float *dx, const float *dout, int64_t n, float p, uint64_t seed) {
    const float keep_scale = 1.0f / (1.0f - p);
#pragma omp parallel for schedule(static) if (n > QKV__PAR_MIN)
    for (int64_t i = 0; i < n; i++)
        if (qkv__hash_uniform(seed, (uint64_t)i) >= p) dx[i] += dout[i] * keep_scale;
}

/* ---- softmax and log-softmax over rows ---- */

static float row_max_ref(const float *x, int64_t C) {
    float m = x[0];
    for (int64_t c = 1; c < C; c++) m = x[c] > m ? x[c] : m;
    return m;
}

static void softmax_row_ref(float *out, const float *x, int64_t C) {
    float m = row_max_ref(x, C);
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) {
        out[c] = expf(x[c] - m);
        s += out[c];
    }
    float inv = (float)(1.0 / s);
    for (int64_t c = 0; c < C; c++) out[c] *= inv;
}

static void log_softmax_row_ref(float *out, const float *x, int64_t C) {
    float m = row_max_ref(x, C);
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) s += expf(x[c] - m);
    float ls = (float)log(s);
    for (int64_t c = 0; c < C; c++) out[c] = (x[c] - m) - ls;
}

#if HAVE_AVX512
AVX512 static void softmax_row_avx512(float *out, const float *x, int64_t C) {
    float m = row_max_avx512(x, C);
    float s = row_sumexp_avx512(out, x, m, C);
    __m512 inv = _mm512_set1_ps(1.0f / s);
    for (int64_t c = 0; c < C; c += 16) {
        __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : tail_mask(C - c);
        _mm512_mask_storeu_ps(out + c, k, _mm512_mul_ps(_mm512_maskz_loadu_ps(k, out + c), inv));
    }
}

AVX512 static void log_softmax_row_avx512(float *out, const float *x, int64_t C) {
    float m = row_max_avx512(x, C);
    float ls = logf(row_sumexp_avx512(NULL, x, m, C));
    __m512 vm = _mm512_set1_ps(m), vls = _mm512_set1_ps(ls);
    for (int64_t c = 0; c < C; c += 16) {
        __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : tail_mask(C - c);
        __m512 v = _mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm);
        _mm512_mask_storeu_ps(out + c, k, _mm512_sub_ps(v, vls));
    }
}
#endif

/* row (out, x, C) applied to each of R rows, in parallel. */
static void for_rows(void (*row)(float *out, const float *x, int64_t C), float *out, const float *x, int64_t R,
                     int64_t C) {
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) row(out + r * C, x + r * C, C);
}

void qkv__softmax_forward(float *out, const float *x, int64_t R, int64_t C) {
    for_rows(PICK(softmax_row_ref, softmax_row_avx512), out, x, R, C);
}

void qkv__softmax_backward(float *dx, const float *dout, const float *out, int64_t R, int64_t C) {
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        const float *g = dout + r * C, *y = out + r * C;
        float *d = dx + r * C;
        double dot = 0.0;
        for (int64_t c = 0; c < C; c++) dot += (double)g[c] * y[c];
        float fdot = (float)dot;
        for (int64_t c = 0; c < C; c++) d[c] += y[c] * (g[c] - fdot);
    }
}

void qkv__log_softmax_forward(float *out, const float *x, int64_t R, int64_t C) {
    for_rows(PICK(log_softmax_row_ref, log_softmax_row_avx512), out, x, R, C);
}

void qkv__log_softmax_backward(float *dx, const float *dout, const float *out, int64_t R, int64_t C) {
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        const float *g = dout + r * C, *y = out + r * C;
        float *d = dx + r * C;
        double s = 0.0;
        for (int64_t c = 0; c < C; c++) s += g[c];
        float fs = (float)s;
        for (int64_t c = 0; c < C; c++) d[c] += g[c] - expf(y[c]) * fs;
    }
}

/* ---- LayerNorm ---- */

static void layernorm_row_ref(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                              int64_t C, float eps) {
    double s = 0.0;
    for (int64_t c = 0; c < C; c++) s += x[c];
    float m = (float)(s / (double)C);
    double v = 0.0;
    for (int64_t c = 0; c < C; c++) {
        double d = (double)x[c] - m;
        v += d * d;
    }
    float rs = (float)(1.0 / sqrt(v / (double)C + eps));
    for (int64_t c = 0; c < C; c++) {
        float nrm = (x[c] - m) * rs;
        out[c] = nrm * (w ? w[c] : 1.0f) + (b ? b[c] : 0.0f);
    }
    *mean = m;
    *rstd = rs;
}

#if HAVE_AVX512
AVX512 static void layernorm_row_avx512(float *out, float *mean, float *rstd, const float *x, const float *w,
                                        const float *b, int64_t C, float eps) {
    __m512 s0 = _mm512_setzero_ps(), s1 = _mm512_setzero_ps();
    int64_t c = 0;
    for (; c + 32 <= C; c += 32) {
        s0 = _mm512_add_ps(s0, _mm512_loadu_ps(x + c));
        s1 = _mm512_add_ps(s1, _mm512_loadu_ps(x + c + 16));
    }
    for (; c < C; c += 16) s0 = _mm512_add_ps(s0, _mm512_maskz_loadu_ps(C - c >= 16 ? 0xFFFF : tail_mask(C - c), x + c));
    float m = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / (float)C;
    const __m512 vm = _mm512_set1_ps(m);
    s0 = _mm512_setzero_ps();
    s1 = _mm512_setzero_ps();
    for (c = 0; c + 32 <= C; c += 32) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(x + c), vm), d1 = _mm512_sub_ps(_mm512_loadu_ps(x + c + 16), vm);
        s0 = _mm512_fmadd_ps(d0, d0, s0);
        s1 = _mm512_fmadd_ps(d1, d1, s1);
    }
    for (; c < C; c += 16) {
        __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : tail_mask(C - c);
        __m512 d = _mm512_maskz_sub_ps(k, _mm512_maskz_loadu_ps(k, x + c), vm);
        s0 = _mm512_fmadd_ps(d, d, s0);
    }
    float var = _mm512_reduce_add_ps(_mm512_add_ps(s0, s1)) / (float)C;
    float rs = 1.0f / sqrtf(var + eps);
    const __m512 vrs = _mm512_set1_ps(rs), one = _mm512_set1_ps(1.0f);
    for (c = 0; c < C; c += 16) {
        __mmask16 k = C - c >= 16 ? (__mmask16)0xFFFF : tail_mask(C - c);
        __m512 nrm = _mm512_mul_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + c), vm), vrs);
        __m512 vw = w ? _mm512_maskz_loadu_ps(k, w + c) : one;
        __m512 vb = b ? _mm512_maskz_loadu_ps(k, b + c) : _mm512_setzero_ps();
        _mm512_mask_storeu_ps(out + c, k, _mm512_fmadd_ps(nrm, vw, vb));
    }
    *mean = m;
    *rstd = rs;
}
#endif

void qkv__layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                            int64_t R, int64_t C, float eps) {
    void (*row)(float *, float *, float *, const float *, const float *, const float *, int64_t, float) =
        PICK(layernorm_row_ref, layernorm_row_avx512);
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) row(out + r * C, mean + r, rstd + r, x + r * C, w, b, C, eps);
}

/* dx = rstd * (dn - mean(dn) - nrm * mean(dn * nrm)) with dn = dout * w, nrm = (x - mean) * rstd
 * (llm.c layernorm_backward); dw and db are column sums, done by column blocks (see the file comment). */
void qkv__layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                             const float *mean, const float *rstd, int64_t R, int64_t C) {
    if (dx) {
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
        for (int64_t r = 0; r < R; r++) {
            const float *g = dout + r * C, *xr = x + r * C;
            float *d = dx + r * C;
            const float m = mean[r], rs = rstd[r];
            double sdn = 0.0, sdnn = 0.0;
            for (int64_t c = 0; c < C; c++) {
                float nrm = (xr[c] - m) * rs, dn = g[c] * (w ? w[c] : 1.0f);
                sdn += dn;
                sdnn += (double)dn * nrm;
            }
            const float mdn = (float)(sdn / (double)C), mdnn = (float)(sdnn / (double)C);
            for (int64_t c = 0; c < C; c++) {
                float nrm = (xr[c] - m) * rs, dn = g[c] * (w ? w[c] : 1.0f);
                d[c] += (dn - mdn - nrm * mdnn) * rs;
            }
        }
    }
    if (!dw && !db) return;
    int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN && nb > 1)
    for (int64_t k = 0; k < nb; k++) {
        int64_t c0 = k * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int64_t r = 0; r < R; r++) {
            const float *g = dout + r * C, *xr = x + r * C;
            const float m = mean[r], rs = rstd[r];
            if (dw)
                for (int64_t c = c0; c < c1; c++) dw[c] += g[c] * ((xr[c] - m) * rs);
            if (db)
                for (int64_t c = c0; c < c1; c++) db[c] += g[c];
        }
    }
}

/* ---- reductions ---- */

double qkv__sum(const float *x, int64_t n) {
    double part[SUM_PARTS];
    int parts = n >= (int64_t)SUM_PARTS * 1024 ? SUM_PARTS : 1;
#pragma omp parallel for schedule(static) if (parts > 1)
    for (int k = 0; k < parts; k++) {
        int64_t lo = n * k / parts, hi = n * (k + 1) / parts;
        double s = 0.0;
        for (int64_t i = lo; i < hi; i++) s += x[i];
        part[k] = s;
    }
    double s = 0.0;
    for (int k = 0; k < parts; k++) s += part[k];
    return s;
}

/* ---- embeddings ---- */

void qkv__embedding_forward(float *out, const float *w, const int32_t *ids, int64_t R, int64_t C) {
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) memcpy(out + r * C, w + (int64_t)ids[r] * C, (size_t)C * sizeof(float));
}

void qkv__embedding_backward(float *dw, const float *dout, const int32_t *ids, int64_t R, int64_t C) {
    /* Two rows may share an id, so rows cannot be split across threads; column blocks can. */
    int64_t nb = (C + COL_BLOCK - 1) / COL_BLOCK;
#pragma omp parallel for schedule(static) if (R * C > QKV__PAR_MIN && nb > 1)
    for (int64_t k = 0; k < nb; k++) {
        int64_t c0 = k * COL_BLOCK, c1 = c0 + COL_BLOCK < C ? c0 + COL_BLOCK : C;
        for (int64_t r = 0; r < R; r++) {
            float *d = dw + (int64_t)ids[r] * C;
            const float *g = dout + r * C;
            for (int64_t c = c0; c < c1; c++) d[c] += g[c];
        }
    }
}

/* ---- cross-entropy (fused log-softmax + NLL) ---- */

static void ce_row_ref(float *max, float *logsum, const float *x, int64_t V) {
    float m = row_max_ref(x, V);
    double s = 0.0;
    for (int64_t v = 0; v < V; v++) s += expf(x[v] - m);
    *max = m;
    *logsum = (float)log(s);
}

static void ce_row_backward_ref(float *d, const float *x, float m, float ls, int32_t t, int64_t V, float dloss) {
    for (int64_t v = 0; v < V; v++) {
        float p = expf((x[v] - m) - ls);
        d[v] += dloss * (p - (v == t ? 1.0f : 0.0f));
    }
}

#if HAVE_AVX512
AVX512 static void ce_row_avx512(float *max, float *logsum, const float *x, int64_t V) {
    float m = row_max_avx512(x, V);
    *max = m;
    *logsum = logf(row_sumexp_avx512(NULL, x, m, V));
}

AVX512 static void ce_row_backward_avx512(float *d, const float *x, float m, float ls, int32_t t, int64_t V,
                                          float dloss) {
    const __m512 vm = _mm512_set1_ps(m), vls = _mm512_set1_ps(ls), vd = _mm512_set1_ps(dloss);
    const __m512 one = _mm512_set1_ps(1.0f);
    for (int64_t v = 0; v < V; v += 16) {
        __mmask16 k = V - v >= 16 ? (__mmask16)0xFFFF : tail_mask(V - v);
        __m512 p = qkv__exp512(_mm512_sub_ps(_mm512_sub_ps(_mm512_maskz_loadu_ps(k, x + v), vm), vls));
        if (t >= v && t < v + 16) p = _mm512_mask_sub_ps(p, (__mmask16)(1u << (t - v)), p, one);
        __m512 o = _mm512_maskz_loadu_ps(k, d + v);
        _mm512_mask_storeu_ps(d + v, k, _mm512_fmadd_ps(vd, p, o));
    }
}
#endif

double qkv__crossentropy_forward(float *max, float *logsum, const float *logits, const int32_t *targets, int64_t R,
                                 int64_t V, int32_t ignore_index) {
    void (*row)(float *, float *, const float *, int64_t) = PICK(ce_row_ref, ce_row_avx512);
#pragma omp parallel for schedule(static) if (R * V > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) row(max + r, logsum + r, logits + r * V, V);
    /* -log p[t] = logsum - (x[t] - max): subtracting max first keeps x[t] - max exact for logits of
     * any magnitude, where (max + logsum) - x[t] would round at the scale of the logits. */
    double loss = 0.0;
    for (int64_t r = 0; r < R; r++) {
        int32_t t = targets[r];
        if (t == ignore_index) continue;
        loss += (double)(logsum[r] - (logits[r * V + t] - max[r]));
    }
    return loss;
}

void qkv__crossentropy_backward(float *dlogits, const float *logits, const float *max, const float *logsum,
                                const int32_t *targets, int64_t R, int64_t V, int32_t ignore_index, float dloss) {
    void (*row)(float *, const float *, float, float, int32_t, int64_t, float) =
        PICK(ce_row_backward_ref, ce_row_backward_avx512);
#pragma omp parallel for schedule(static) if (R * V > QKV__PAR_MIN)
    for (int64_t r = 0; r < R; r++) {
        if (targets[r] == ignore_index) continue;
        row(dlogits + r * V, logits + r * V, max[r], logsum[r], targets[r], V, dloss);
    }
}

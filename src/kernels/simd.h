/* simd.h — AVX-512 helpers shared by the kernels (attention.c, ew.c): the 16-lane expf.
 *
 * Not here: dispatch (each kernel file decides at run time whether the CPU has AVX-512 and keeps a
 * plain-C reference path), anything with state.
 *
 * The one convention a reader needs: every function is static inline with the target("avx512f")
 * attribute, so including this header costs nothing and needs no -mavx512f; call these only from
 * functions with the same target, after checking the CPU (__builtin_cpu_supports("avx512f")).
 */
#ifndef QKV_KERNELS_SIMD_H
#define QKV_KERNELS_SIMD_H

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>

/* exp(x) for 16 lanes (Cephes expf, about 1 ulp): n = round(x log2 e), r = x - n ln2 in two parts
 * (Cody-Waite), the degree-6 Cephes polynomial on r, then 2^n applied by scalef (which produces
 * subnormals and overflow to +inf exactly as expf does). Inputs are clamped to [-104, 89]: every
 * x above ~88.73 gives +inf and every x below ~-103.9 gives 0 either way. -inf gives 0, NaN stays
 * NaN (min/max(const, x) return x when it is NaN). Measured against expf by tests/test_attention.c
 * and the op tests. */
static inline __attribute__((always_inline, target("avx512f"))) __m512 qkv__exp512(__m512 x) {
    x = _mm512_min_ps(_mm512_set1_ps(89.0f), _mm512_max_ps(_mm512_set1_ps(-104.0f), x));
    __m512 n = _mm512_roundscale_ps(_mm512_mul_ps(x, _mm512_set1_ps(1.44269504088896341f)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    __m512 r = _mm512_fnmadd_ps(n, _mm512_set1_ps(0.693359375f), x);
    r = _mm512_fnmadd_ps(n, _mm512_set1_ps(-2.12194440e-4f), r);
    __m512 p = _mm512_set1_ps(1.9875691500e-4f);
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.3981999507e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(8.3334519073e-3f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(4.1665795894e-2f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(1.6666665459e-1f));
    p = _mm512_fmadd_ps(p, r, _mm512_set1_ps(5.0000001201e-1f));
    p = _mm512_fmadd_ps(p, _mm512_mul_ps(r, r), r);
    p = _mm512_add_ps(p, _mm512_set1_ps(1.0f));
    return _mm512_scalef_ps(p, n);
}
#endif

#endif

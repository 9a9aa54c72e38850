/* gemm.h — the one single-precision matrix multiply every heavy op funnels into (linear layers,
 * attention scores, their backward passes, the LM head).
 *
 * What it is not: a BLAS. There is no column-major variant, no double precision, no error reporting
 * (every argument comes from library code that has already checked shapes; a bad shape is a bug).
 *
 * Convention: everything is row-major, and transposition is described by how the operand is *stored*:
 * op(A) = A^T means "A is stored K×M and we want its transpose", exactly like PyTorch's x @ w.T with
 * w (OC,C). So a linear layer x (B*T,C), w (OC,C) -> out (B*T,OC) is
 *     qkv__gemm(0, 1, B*T, OC, C, 1.0f, x, C, w, C, 0.0f, out, OC);
 * its input gradient dx = dout @ w is (0, 0, B*T, C, OC, ...) and its weight gradient
 * dw += dout^T @ x is (1, 0, OC, C, B*T, ..., beta = 1).
 *
 * Threading: the functions below use OpenMP internally (omp_get_max_threads() threads) and may be
 * called from several threads at once; called from inside an active parallel region they run
 * single-threaded. Results are bit-identical run to run for a given thread count. */
#ifndef QKV_KERNELS_GEMM_H
#define QKV_KERNELS_GEMM_H

#include <stdint.h>

/* Row-major single-precision GEMM:
 *   C (M,N) = alpha * op(A) (M,K) @ op(B) (K,N) + beta * C
 * op(A) = A if ta == 0 (A is M×K, row stride lda), else A^T (A stored K×M, row stride lda).
 * op(B) = B if tb == 0 (B is K×N, row stride ldb), else B^T (B stored N×K, row stride ldb).
 * beta == 0 means C is overwritten without being read (NaNs in C do not propagate).
 * alpha == 0 or K == 0 means C = beta * C and A, B are not read.
 * Threads: uses OpenMP internally (omp_get_max_threads()); must not be called from inside an
 * active parallel region expecting nested parallelism (if called inside one, run single-threaded).
 * Deterministic: bit-identical run to run, and independent of the thread count (K is never cut by
 * thread: where it is cut, as in the x @ W matrix-vector case, the cut is fixed by the shape alone). */
void qkv__gemm(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
               const float *A, int64_t lda, const float *B, int64_t ldb,
               float beta, float *C, int64_t ldc);

/* Batched: for b in [0,batch): the same with A + b*sA, B + b*sB, C + b*sC. Parallelise over batch×tiles.
 * The C matrices of different b must not overlap. */
void qkv__gemm_batched(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                       const float *A, int64_t lda, int64_t sA, const float *B, int64_t ldb, int64_t sB,
                       float beta, float *C, int64_t ldc, int64_t sC, int64_t batch);

/* Plain triple-loop reference (double accumulation), used by tests. Same contract as qkv__gemm,
 * single-threaded and slow. */
void qkv__gemm_ref(int ta, int tb, int64_t M, int64_t N, int64_t K, float alpha,
                   const float *A, int64_t lda, const float *B, int64_t ldb,
                   float beta, float *C, int64_t ldc);

/* Name of the micro-kernel path chosen at run time: "avx512", "avx2" or "scalar".
 * The environment variable QKV_GEMM_ISA (same names) can force a slower path, for testing. */
const char *qkv__gemm_isa(void);

#endif /* QKV_KERNELS_GEMM_H */

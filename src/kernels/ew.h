/* ew.h — the raw float kernels behind the element-wise, normalisation, reduction and loss ops:
 * forward and backward side by side with mirrored signatures (llm.c style), each with its shape
 * comment. R rows of C contiguous columns; "(R,C)" means row-major.
 *
 * What it is not: ops. Nothing here knows about tensors, the tape or errors; every argument comes
 * from an op in src/ops/ that has already checked shapes, so a bad argument is a bug. GEMM is in
 * gemm.h, attention in attention.h.
 *
 * Conventions a reader needs:
 *  - Every backward ACCUMULATES (+=) into its gradient outputs, because a tensor used twice receives
 *    the sum; a NULL gradient output is skipped (that input does not require grad).
 *  - Deterministic on any thread count: loops are parallel over rows (or over column blocks when
 *    rows are summed into one vector), each output element is computed by one thread in a fixed
 *    order, and the one whole-tensor reduction (qkv__sum) adds a fixed partition in a fixed order.
 *    So results are bit-identical whatever OMP_NUM_THREADS is.
 *  - Where an AVX-512 path exists it is chosen at run time; the plain reference loops stay as the
 *    fallback and as what tests compare the fast path against (qkv__ew_force_scalar).
 */
#ifndef QKV_KERNELS_EW_H
#define QKV_KERNELS_EW_H

#include <stdint.h>

/* Below this many floats a kernel runs on one thread: the fork/join costs more than it saves. */
#define QKV__PAR_MIN 32768

/* "avx512" or "scalar": the path the dispatched kernels take now. QKV_EW_ISA=scalar in the
 * environment forces the reference loops. */
const char *qkv__ew_isa(void);
/* Tests only (not thread-safe against running kernels): 1 forces the reference loops, 0 returns to
 * the default (QKV_EW_ISA, else the CPU decides). */
void qkv__ew_force_scalar(int on);

/* ---- element-wise, with the ops.h broadcast (b repeated over R rows) ---- */

/* add_forward: a (R,C), b (b_rows,C) -> out (R,C) = a + sign * b (sign +1 add, -1 sub).
 * b_rows is R when b has a's shape and 1 when b (C) is repeated over the R rows. */
void qkv__add_forward(float *out, const float *a, const float *b, int64_t R, int64_t b_rows, int64_t C,
                      float sign);
/* add_backward: dout (R,C) -> da (R,C) += dout, db (b_rows,C) += sign * dout summed over broadcast rows. */
void qkv__add_backward(float *da, float *db, const float *dout, int64_t R, int64_t b_rows, int64_t C,
                       float sign);
/* mul_forward: a (R,C), b (b_rows,C) -> out (R,C) = a * b. */
void qkv__mul_forward(float *out, const float *a, const float *b, int64_t R, int64_t b_rows, int64_t C);
/* mul_backward: dout (R,C) -> da (R,C) += dout * b, db (b_rows,C) += dout * a summed over broadcast rows. */
void qkv__mul_backward(float *da, float *db, const float *dout, const float *a, const float *b, int64_t R,
                       int64_t b_rows, int64_t C);
/* colsum: dout (R,C) -> db (C) += sign * sum over rows (bias gradients). */
void qkv__colsum(float *db, const float *dout, int64_t R, int64_t C, float sign);

/* scale_forward: x (n) -> out (n) = s * x;  scale_backward: dx += s * dout. */
void qkv__scale_forward(float *out, const float *x, int64_t n, float s);
void qkv__scale_backward(float *dx, const float *dout, int64_t n, float s);

/* relu_forward: x (n) -> out (n) = max(x, 0);  relu_backward: dx += dout where x > 0. */
void qkv__relu_forward(float *out, const float *x, int64_t n);
void qkv__relu_backward(float *dx, const float *dout, const float *x, int64_t n);

/* gelu_forward: x (n) -> out (n); approx_tanh 0 = exact erf form, 1 = GPT-2 tanh form.
 * gelu_backward: dx += dout * gelu'(x), the derivative of the same form. */
void qkv__gelu_forward(float *out, const float *x, int64_t n, int approx_tanh);
void qkv__gelu_backward(float *dx, const float *dout, const float *x, int64_t n, int approx_tanh);

/* tanh_forward: x (n) -> out (n);  tanh_backward: dx += dout * (1 - out^2) (reads the output). */
void qkv__tanh_forward(float *out, const float *x, int64_t n);
void qkv__tanh_backward(float *dx, const float *dout, const float *out, int64_t n);

/* sigmoid_forward: x (n) -> out (n);  sigmoid_backward: dx += dout * out * (1 - out). */
void qkv__sigmoid_forward(float *out, const float *x, int64_t n);
void qkv__sigmoid_backward(float *dx, const float *dout, const float *out, int64_t n);

/* dropout_forward: x (n) -> out (n) = keep_i ? x / (1 - p) : 0 with keep_i = hash(seed, i) >= p.
 * dropout_backward: dx += the same mask (recomputed from seed) times dout / (1 - p). */
void qkv__dropout_forward(float *out, const float *x, int64_t n, float p, uint64_t seed);
void qkv__dropout_backward(float *dx, const float *dout, int64_t n, float p, uint64_t seed);

/* ---- rows: softmax, log-softmax, LayerNorm (over the last dim C) ---- */

/* softmax_forward: x (R,C) -> out (R,C), max subtracted.
 * softmax_backward: dx (R,C) += out * (dout - sum_c dout * out). */
void qkv__softmax_forward(float *out, const float *x, int64_t R, int64_t C);
void qkv__softmax_backward(float *dx, const float *dout, const float *out, int64_t R, int64_t C);

/* log_softmax_forward: x (R,C) -> out (R,C) = (x - max) - log sum exp(x - max).
 * log_softmax_backward: dx (R,C) += dout - exp(out) * sum_c dout. */
void qkv__log_softmax_forward(float *out, const float *x, int64_t R, int64_t C);
void qkv__log_softmax_backward(float *dx, const float *dout, const float *out, int64_t R, int64_t C);

/* layernorm_forward: x (R,C), w (C) or NULL (= 1), b (C) or NULL (= 0)
 *   -> out (R,C) = (x - mean) * rstd * w + b, mean (R), rstd (R) = 1 / sqrt(biased var + eps).
 * layernorm_backward: dout (R,C), x, w, mean, rstd -> dx (R,C) +=, dw (C) +=, db (C) += (each may be NULL). */
void qkv__layernorm_forward(float *out, float *mean, float *rstd, const float *x, const float *w, const float *b,
                            int64_t R, int64_t C, float eps);
void qkv__layernorm_backward(float *dx, float *dw, float *db, const float *dout, const float *x, const float *w,
                             const float *mean, const float *rstd, int64_t R, int64_t C);

/* ---- reductions, embeddings, losses ---- */

/* sum: x (n) -> the sum in double over a fixed partition added in order (same bits on any thread count). */
double qkv__sum(const float *x, int64_t n);

/* embedding_forward: w (V,C), ids (R) already checked in [0,V) -> out (R,C) = w[ids].
 * embedding_backward: dout (R,C) -> dw (V,C) rows ids += dout rows (repeated ids accumulate in row order). */
void qkv__embedding_forward(float *out, const float *w, const int32_t *ids, int64_t R, int64_t C);
void qkv__embedding_backward(float *dw, const float *dout, const int32_t *ids, int64_t R, int64_t C);

/* crossentropy_forward: logits (R,V), targets (R) in [0,V) or == ignore_index
 *   -> max (R), logsum (R) = log sum_v exp(logit - max); returns the sum over non-ignored rows of
 *      logsum - (logit[target] - max), in double, in row order. Ignored rows still get max/logsum.
 * crossentropy_backward: dlogits (R,V) += dloss * (softmax - onehot(target)) on non-ignored rows,
 *   the probabilities recomputed as exp((logit - max) - logsum). dloss = d loss / count. */
double qkv__crossentropy_forward(float *max, float *logsum, const float *logits, const int32_t *targets, int64_t R,
                                 int64_t V, int32_t ignore_index);
void qkv__crossentropy_backward(float *dlogits, const float *logits, const float *max, const float *logsum,
                                const int32_t *targets, int64_t R, int64_t V, int32_t ignore_index, float dloss);

#endif /* QKV_KERNELS_EW_H */

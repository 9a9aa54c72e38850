/* qkv/ops.h — differentiable operations (forward now, backward recorded on the context's tape).
 *
 * Each op returns a new tensor from the ctx arena, or NULL with the ctx error set (which op, which
 * shapes). A NULL input, or a context already in error, makes an op return NULL without touching the
 * message, so the first failure is the one reported. Outputs require grad when grad recording is on
 * and any float input requires grad.
 *
 * Broadcasting (add, mul): b either has a's shape, or a's trailing dimensions (b (C) with a (B,T,C),
 * b (T,C) with a (B,T,C)); b is then repeated over a's leading dimensions. Nothing else broadcasts.
 *
 * Token ids are int32 arrays the caller owns; they are read during the call only.
 */
#ifndef QKV_OPS_H
#define QKV_OPS_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- linear algebra ---- */

/* a (...,M,K) @ b (...,K,N) -> (...,M,N), with op(a) = a^T over the last two dims when ta, likewise
 * b when tb. b may be 2-D (shared by every batch entry of a); otherwise the leading dims must be equal.
 * When b is 2-D and ta == 0, a's leading dims are folded into M (one big GEMM). */
qkv_tensor *qkv_matmul(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b, int ta, int tb);
/* PyTorch nn.Linear: x (...,IN), w (OUT,IN), bias (OUT) or NULL -> x w^T + bias (...,OUT). */
qkv_tensor *qkv_linear(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *bias);
/* residual + x w^T + bias with residual (...,OUT) or NULL, folded into the product like qkv_conv1d's. */
qkv_tensor *qkv_linear_residual(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *bias, qkv_tensor *residual);
/* Hugging Face Conv1D (GPT-2's projections, torch.addmm): x (...,IN), w (IN,OUT) stored [in, out],
 * bias (OUT) or NULL, residual (...,OUT) or NULL -> residual + x w + bias (...,OUT). The bias and the
 * residual are folded into the matrix product (no extra pass, no intermediate tensor). */
qkv_tensor *qkv_conv1d(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *bias, qkv_tensor *residual);

/* ---- element-wise ---- */
qkv_tensor *qkv_add(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b);   /* a + b (b broadcasts) */
qkv_tensor *qkv_sub(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b);   /* a - b (b broadcasts) */
qkv_tensor *qkv_mul(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b);   /* a * b (b broadcasts) */
qkv_tensor *qkv_scale(qkv_ctx *ctx, qkv_tensor *a, float s);       /* s * a */
qkv_tensor *qkv_relu(qkv_ctx *ctx, qkv_tensor *x);
/* GELU: exact 0.5 x (1 + erf(x / sqrt 2)) (PyTorch "gelu", BERT) when approx_tanh == 0;
 * 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) (GPT-2 "gelu_new") when approx_tanh == 1. */
qkv_tensor *qkv_gelu(qkv_ctx *ctx, qkv_tensor *x, int approx_tanh);
qkv_tensor *qkv_tanh(qkv_ctx *ctx, qkv_tensor *x);
qkv_tensor *qkv_sigmoid(qkv_ctx *ctx, qkv_tensor *x);
/* Dropout with keep-scaling 1/(1-p); identity unless the ctx is in training mode and p > 0. The mask
 * comes from the ctx RNG: same seed, same masks, whatever the thread count. p must be in [0, 1). */
qkv_tensor *qkv_dropout(qkv_ctx *ctx, qkv_tensor *x, float p);

/* ---- reductions and normalisation (over the last dimension) ---- */
qkv_tensor *qkv_softmax(qkv_ctx *ctx, qkv_tensor *x);      /* stable (max subtracted) */
qkv_tensor *qkv_log_softmax(qkv_ctx *ctx, qkv_tensor *x);
/* PyTorch nn.LayerNorm over the last dim: (x - mean) / sqrt(var + eps) * w + b, biased variance.
 * w, b (C) or NULL (elementwise_affine=False). */
qkv_tensor *qkv_layernorm(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *b, float eps);
qkv_tensor *qkv_sum(qkv_ctx *ctx, qkv_tensor *x);          /* all elements -> scalar */
qkv_tensor *qkv_mean(qkv_ctx *ctx, qkv_tensor *x);         /* all elements -> scalar */

/* ---- embeddings and losses ---- */
/* weight (V,C), ids int32 with the given shape (ndim 1..3) -> (shape..., C). An id outside [0,V) is
 * an error naming the id and its position. */
qkv_tensor *qkv_embedding(qkv_ctx *ctx, qkv_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape);
/* PyTorch F.cross_entropy(logits.view(-1,V), targets.view(-1), ignore_index, reduction='mean'):
 * logits (...,V), targets int32 with numel = numel(logits)/V -> scalar. Targets equal to ignore_index
 * are skipped; others must lie in [0,V). When every target is ignored the loss is 0 (PyTorch: NaN). */
qkv_tensor *qkv_cross_entropy(qkv_ctx *ctx, qkv_tensor *logits, const int32_t *targets, int32_t ignore_index);

/* ---- shape ---- */
/* View with a new shape (same numel); data shared, no copy. One entry may be -1 (inferred). */
qkv_tensor *qkv_reshape(qkv_ctx *ctx, qkv_tensor *x, int ndim, const int64_t *shape);
/* Swaps dims d0 and d1 (copy). */
qkv_tensor *qkv_transpose(qkv_ctx *ctx, qkv_tensor *x, int d0, int d1);
/* Concatenates n tensors along dim (all other dims equal). */
qkv_tensor *qkv_concat(qkv_ctx *ctx, int n, qkv_tensor *const *xs, int dim);
/* Splits x along dim into n pieces of the given sizes (summing to x's size on dim); writes n tensors
 * into out. Returns QKV_OK or the ctx error. */
qkv_status qkv_split(qkv_ctx *ctx, qkv_tensor *x, int dim, int n, const int64_t *sizes, qkv_tensor **out);
/* Rows [r0, r1) of a parameter (or any tensor whose grad is already allocated) as a view that shares
 * both data and grad: how a fused in_proj_weight (3E,E) serves as separate q, k, v projections. */
qkv_tensor *qkv_rows(qkv_ctx *ctx, qkv_tensor *x, int64_t r0, int64_t r1);

/* ---- attention ---- */
typedef struct qkv_attn_opts {
    int n_head;                      /* H; q, k, v last dims must be divisible by it */
    int causal;                      /* query i sees keys j <= i + (Tk - Tq) (aligned at the end) */
    const uint8_t *key_padding_mask; /* (B,Tk), nonzero = key is padding, blocked (PyTorch True) */
    float scale;                     /* 0: 1/sqrt(D) */
    float dropout;                   /* on the attention probabilities, training mode only */
    qkv_tensor **weights;            /* non-NULL: receives the probabilities (B,H,Tq,Tk), taken before
                                      * attention dropout, for reading out (heatmaps): no gradient flows
                                      * through this tensor */
} qkv_attn_opts;

/* Multi-head scaled dot-product attention, heads read in place from the channel dim:
 * q (B,Tq,H*D), k (B,Tk,H*D), v (B,Tk,H*Dv) -> out (B,Tq,H*Dv),
 * out[b,t,h] = softmax_j(scale * q[b,t,h] . k[b,j,h] + mask) v[b,j,h].
 * Without weights requested the kernel is tiled with an online softmax and its backward recomputes
 * the probabilities: memory O(T), never the T x T matrix. A query row whose keys are all blocked
 * gives 0 (PyTorch gives NaN). */
qkv_tensor *qkv_attention(qkv_ctx *ctx, qkv_tensor *q, qkv_tensor *k, qkv_tensor *v, const qkv_attn_opts *opts);

/* Softmax over the last dim of scores (B,Tq,Tk) with blocked entries set to -inf first:
 * key_padding_mask (B,Tk) nonzero = blocked, causal as in qkv_attn_opts. A fully blocked row gives 0. */
qkv_tensor *qkv_softmax_masked(qkv_ctx *ctx, qkv_tensor *scores, const uint8_t *key_padding_mask, int causal);

/* Bahdanau (additive) scores: wq (B,Tq,A) = W s, uk (B,Tk,A) = U h, v (A)
 * -> scores (B,Tq,Tk) with scores[b,i,j] = sum_a v[a] tanh(wq[b,i,a] + uk[b,j,a]). */
qkv_tensor *qkv_additive_scores(qkv_ctx *ctx, qkv_tensor *wq, qkv_tensor *uk, qkv_tensor *v);

#ifdef __cplusplus
}
#endif
#endif

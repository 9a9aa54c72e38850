/* qkv/gpt.h — the GPT-2 decoder-only language model (Hugging Face GPT2LMHeadModel semantics).
 *
 * Architecture: wte (V,C) + wpe (P,C) -> dropout -> n_layer pre-LN blocks
 *   x = x + attn(ln_1(x));  x = x + mlp(ln_2(x))
 * with causal multi-head attention (fused c_attn producing q,k,v), GELU-tanh MLP (4C), final ln_f,
 * and an LM head tied to wte (logits = ln_f(x) wte^T, no bias).
 *
 * Parameters live in one qkv_params block under Hugging Face's names without the "transformer."
 * prefix, in Hugging Face's layouts (Conv1D weights stored [in, out]):
 *   wte.weight (V,C)   wpe.weight (P,C)
 *   h.{i}.ln_1.weight/bias (C)       h.{i}.attn.c_attn.weight (C,3C)  h.{i}.attn.c_attn.bias (3C)
 *   h.{i}.attn.c_proj.weight (C,C)   h.{i}.attn.c_proj.bias (C)       h.{i}.ln_2.weight/bias (C)
 *   h.{i}.mlp.c_fc.weight (C,4C)     h.{i}.mlp.c_fc.bias (4C)
 *   h.{i}.mlp.c_proj.weight (4C,C)   h.{i}.mlp.c_proj.bias (C)        ln_f.weight/bias (C)
 * so a checkpoint is written by walking the block in order.
 */
#ifndef QKV_GPT_H
#define QKV_GPT_H

#include "core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The fields of Hugging Face's GPT2Config that the model uses (same names, same meaning). */
typedef struct qkv_gpt_config {
    int64_t vocab_size;       /* V */
    int64_t n_positions;      /* P: the context length (block size) */
    int64_t n_embd;           /* C, divisible by n_head */
    int n_layer;              /* 1 .. QKV_GPT_MAX_LAYERS */
    int n_head;
    float layer_norm_epsilon; /* 1e-5 */
    float embd_pdrop, attn_pdrop, resid_pdrop; /* dropout, training mode only (HF default 0.1) */
    float initializer_range;  /* 0.02 */
    int32_t bos_token_id, eos_token_id; /* 50256 for GPT-2 */
} qkv_gpt_config;

#define QKV_GPT_MAX_LAYERS 64

/* GPT-2 124M: V 50257, P 1024, C 768, 12 layers, 12 heads, eps 1e-5, dropout 0.1, init 0.02. */
qkv_gpt_config qkv_gpt_config_gpt2(void);

/* Checks a configuration; on failure writes a one-line reason naming the field into qkv_last_error. */
qkv_status qkv_gpt_config_check(const qkv_gpt_config *cfg);

typedef struct qkv_gpt qkv_gpt;

/* New model with Hugging Face's initialisation (Linear/Conv1D and embeddings N(0, init^2), the
 * residual projections c_proj N(0, (init / sqrt(2 n_layer))^2), biases 0, LayerNorm 1/0), drawn from
 * seed. NULL on a bad config or out of memory (qkv_last_error). */
qkv_gpt *qkv_gpt_new(const qkv_gpt_config *cfg, uint64_t seed);
void qkv_gpt_free(qkv_gpt *m);
const qkv_gpt_config *qkv_gpt_get_config(const qkv_gpt *m);
qkv_params *qkv_gpt_params(qkv_gpt *m);

/* Training / evaluation forward over a batch: ids (B,T) int32, T <= n_positions, every id in [0,V).
 * Returns the logits (B,T,V) or NULL (ctx error). When targets (B,T) is non-NULL, *loss receives the
 * mean cross-entropy over targets != -100 (HF's labels are shifted by the caller: targets[t] is the
 * token that follows ids[t]). Dropout is active when the ctx is in training mode. Gradients flow to
 * the parameters through the tape when grad recording is on. */
qkv_tensor *qkv_gpt_forward(qkv_ctx *ctx, qkv_gpt *m, const int32_t *ids, int64_t B, int64_t T,
                            const int32_t *targets, qkv_tensor **loss);

/* Inference layout: with on = 1, the four projection weights of every block (attn.c_attn, attn.c_proj,
 * mlp.c_fc, mlp.c_proj; Hugging Face Conv1D, stored [in, out]) are transposed in place to [out, in]
 * and their tensors' shapes swapped; the model then computes the same function with nn.Linear
 * products. A decode step then dots contiguous weight rows with the token's vector instead of
 * streaming [in, out] rows into a partial sum: measured 15-20% faster for GPT-2 124M's block products
 * on 2 cores (bench/compare.sh shows the decode figures). on = 0 transposes back, bit for bit. Nothing
 * else changes (training works in either layout), but qkv_hf_gpt2_save refuses a model in the
 * inference layout. The switch reads and writes every block weight once (about 0.3 s for GPT-2 124M)
 * and allocates one temporary of 4 * n_embd^2 floats. */
qkv_status qkv_gpt_set_inference_layout(qkv_gpt *m, int on);
int qkv_gpt_inference_layout(const qkv_gpt *m); /* 1 when the projections are held [out, in] */

/* ---- inference with a key/value cache (batch 1) ---- */
typedef struct qkv_gpt_cache qkv_gpt_cache;

/* A cache for up to max_len positions (<= n_positions): 2 * n_layer * max_len * n_embd floats, allocated
 * here, freed by qkv_gpt_cache_free. NULL on error (qkv_last_error). */
qkv_gpt_cache *qkv_gpt_cache_new(const qkv_gpt *m, int64_t max_len);
void qkv_gpt_cache_free(qkv_gpt_cache *c);
void qkv_gpt_cache_reset(qkv_gpt_cache *c);   /* forget every position */
int64_t qkv_gpt_cache_len(const qkv_gpt_cache *c); /* positions held */

/* Runs n new tokens at positions len .. len+n-1 (a prompt prefill when n > 1, a decode step when
 * n == 1), appends their keys and values to the cache, and writes the logits of the last of them into
 * logits (V floats), or of all n (n*V floats, row-major) when all_logits is set. Runs in inference mode
 * on ctx (no tape) and resets ctx's arena before returning. Fails (ctx error) when the cache would
 * exceed max_len or an id is out of range; the cache is then unchanged.
 * The ctx's grad / training / check_finite settings are restored on return. While the step runs the
 * ops' per-input NaN scans are off (they would re-read every weight for each token); instead, when
 * check_finite is on, the logits are scanned once and a non-finite one fails with QKV_ERR_NONFINITE.
 * Cost: a decode step (n == 1) reads each weight once (matrix-vector products) plus the cached keys
 * and values; nothing is allocated once the ctx arena has grown to the step's size. A cache belongs
 * to one model shape and one thread at a time. */
qkv_status qkv_gpt_step(qkv_ctx *ctx, qkv_gpt *m, qkv_gpt_cache *c, const int32_t *ids, int64_t n,
                        float *logits, int all_logits);

#ifdef __cplusplus
}
#endif

#endif

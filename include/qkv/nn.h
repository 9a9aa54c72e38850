/* qkv/nn.h — modules: parameters declared in a qkv_params block under PyTorch state-dict names, and
 * forward functions built from qkv/ops.h (so every module gets its backward from the tape).
 *
 * Life cycle of a module: qkv_<module>_init(&m, params, "prefix", ...config) declares its parameters
 * (names "prefix.weight" etc., exactly PyTorch's; an empty prefix gives bare names); after every
 * module is declared, qkv_params_alloc() allocates and initialises the block; then
 * qkv_<module>_forward(ctx, &m, ...) may be called any number of times. The module struct is the
 * caller's storage and only holds pointers into the block: nothing to free.
 *
 * Initial values follow PyTorch's defaults (nn.Linear: U(+-1/sqrt(in)), LayerNorm: ones/zeros,
 * Embedding: N(0,1), MultiheadAttention: xavier_uniform in_proj and zero biases).
 * Shapes: B batch, T time, C (= d_model) channels, H heads.
 */
#ifndef QKV_NN_H
#define QKV_NN_H

#include "core.h"
#include "ops.h"

#ifdef __cplusplus
extern "C" {
#endif

/* nn.Linear: weight (OUT,IN) "prefix.weight", bias (OUT) "prefix.bias" (optional). */
typedef struct qkv_linear_m {
    qkv_tensor *weight, *bias;
    int64_t in_features, out_features;
} qkv_linear_m;
qkv_status qkv_linear_init(qkv_linear_m *m, qkv_params *p, const char *prefix, int64_t in, int64_t out, int bias);
qkv_tensor *qkv_linear_forward(qkv_ctx *ctx, const qkv_linear_m *m, qkv_tensor *x); /* (...,IN) -> (...,OUT) */

/* nn.LayerNorm(C, eps): weight, bias (C). */
typedef struct qkv_layernorm_m {
    qkv_tensor *weight, *bias;
    float eps;
} qkv_layernorm_m;
qkv_status qkv_layernorm_init(qkv_layernorm_m *m, qkv_params *p, const char *prefix, int64_t C, float eps);
qkv_tensor *qkv_layernorm_forward(qkv_ctx *ctx, const qkv_layernorm_m *m, qkv_tensor *x);

/* nn.Embedding(V, C): weight (V,C); init N(0, std^2) with std given (PyTorch default 1). */
typedef struct qkv_embedding_m {
    qkv_tensor *weight;
} qkv_embedding_m;
qkv_status qkv_embedding_init(qkv_embedding_m *m, qkv_params *p, const char *prefix, int64_t V, int64_t C,
                              float std);
/* ids (B,T) -> (B,T,C) */
qkv_tensor *qkv_embedding_forward(qkv_ctx *ctx, const qkv_embedding_m *m, const int32_t *ids, int64_t B, int64_t T);

/* Sinusoidal encoding of "Attention Is All You Need": PE[t, 2i] = sin(t / 10000^(2i/C)),
 * PE[t, 2i+1] = cos(same), for positions offset..offset+T-1; any T, any C (odd C: last column sin).
 * Returns a constant (T,C) tensor (no grad), to be added to (B,T,C) embeddings with qkv_add. */
qkv_tensor *qkv_sinusoidal_positions(qkv_ctx *ctx, int64_t T, int64_t C, int64_t offset);
/* Learned positions (GPT-2 wpe, BERT position_embeddings): rows offset..offset+T-1 of an embedding,
 * (T,C), with gradient into the table. Positions past the table are an error. */
qkv_tensor *qkv_learned_positions(qkv_ctx *ctx, const qkv_embedding_m *m, int64_t T, int64_t offset);

/* nn.MultiheadAttention(E, H, bias=True, batch_first=True): in_proj_weight (3E,E), in_proj_bias (3E),
 * out_proj.weight (E,E), out_proj.bias (E). */
typedef struct qkv_mha_m {
    qkv_tensor *in_proj_weight, *in_proj_bias;
    qkv_linear_m out_proj;
    int64_t embed_dim;
    int n_head;
    float dropout; /* on the attention probabilities (training mode) */
} qkv_mha_m;
qkv_status qkv_mha_init(qkv_mha_m *m, qkv_params *p, const char *prefix, int64_t E, int H, float dropout);
/* query (B,Tq,E), key/value (B,Tk,E) (pass the same tensor for self-attention: one fused projection is
 * used) -> (B,Tq,E). key_padding_mask (B,Tk) nonzero = padding (blocked); causal: the PyTorch
 * causal attn_mask. weights: if non-NULL receives the per-head probabilities (B,H,Tq,Tk) (PyTorch
 * with need_weights=True, average_attn_weights=False). */
qkv_tensor *qkv_mha_forward(qkv_ctx *ctx, const qkv_mha_m *m, qkv_tensor *query, qkv_tensor *key,
                            qkv_tensor *value, const uint8_t *key_padding_mask, int causal, qkv_tensor **weights);

typedef enum { QKV_ACT_RELU, QKV_ACT_GELU, QKV_ACT_GELU_TANH } qkv_activation;

/* Position-wise FFN: linear2(dropout(act(linear1(x)))), names "linear1", "linear2" as in PyTorch's
 * Transformer layers. */
typedef struct qkv_ffn_m {
    qkv_linear_m linear1, linear2;
    qkv_activation act;
    float dropout;
} qkv_ffn_m;
qkv_status qkv_ffn_init(qkv_ffn_m *m, qkv_params *p, const char *prefix, int64_t C, int64_t dim_ff,
                        qkv_activation act, float dropout);
qkv_tensor *qkv_ffn_forward(qkv_ctx *ctx, const qkv_ffn_m *m, qkv_tensor *x);

/* Configuration shared by nn.TransformerEncoderLayer / DecoderLayer (batch_first=True). */
typedef struct qkv_layer_config {
    int64_t d_model;
    int n_head;
    int64_t dim_feedforward;
    float dropout;
    qkv_activation activation;
    int norm_first; /* 0: post-LN (original Transformer, BERT), 1: pre-LN (GPT-2) */
    float layer_norm_eps;
} qkv_layer_config;
/* d_model 512, 8 heads, 2048, dropout 0.1, ReLU, post-LN, eps 1e-5: PyTorch's defaults. */
qkv_layer_config qkv_layer_config_default(void);

/* nn.TransformerEncoderLayer: self_attn, linear1, linear2, norm1, norm2. */
typedef struct qkv_encoder_layer_m {
    qkv_layer_config cfg;
    qkv_mha_m self_attn;
    qkv_ffn_m ffn; /* params named prefix.linear1 / prefix.linear2 */
    qkv_layernorm_m norm1, norm2;
} qkv_encoder_layer_m;
qkv_status qkv_encoder_layer_init(qkv_encoder_layer_m *m, qkv_params *p, const char *prefix,
                                  const qkv_layer_config *cfg);
/* x (B,T,C) -> (B,T,C). causal: mask future positions (a decoder-only stack uses encoder layers with
 * causal = 1, as GPT does). weights: optional per-head self-attention probabilities. */
qkv_tensor *qkv_encoder_layer_forward(qkv_ctx *ctx, const qkv_encoder_layer_m *m, qkv_tensor *x,
                                      const uint8_t *key_padding_mask, int causal, qkv_tensor **weights);

/* nn.TransformerDecoderLayer: self_attn, multihead_attn, linear1, linear2, norm1, norm2, norm3. */
typedef struct qkv_decoder_layer_m {
    qkv_layer_config cfg;
    qkv_mha_m self_attn, multihead_attn;
    qkv_ffn_m ffn;
    qkv_layernorm_m norm1, norm2, norm3;
} qkv_decoder_layer_m;
qkv_status qkv_decoder_layer_init(qkv_decoder_layer_m *m, qkv_params *p, const char *prefix,
                                  const qkv_layer_config *cfg);
/* x (B,T,C) target, memory (B,S,C) encoder output -> (B,T,C). The self-attention is causal when
 * causal is set (tgt_is_causal); memory_key_padding_mask (B,S) blocks padded source positions.
 * self_weights / cross_weights: optional per-head probabilities. */
qkv_tensor *qkv_decoder_layer_forward(qkv_ctx *ctx, const qkv_decoder_layer_m *m, qkv_tensor *x,
                                      qkv_tensor *memory, const uint8_t *tgt_key_padding_mask, int causal,
                                      const uint8_t *memory_key_padding_mask, qkv_tensor **self_weights,
                                      qkv_tensor **cross_weights);

/* Stacks of N layers: "prefix.layers.i.*" and an optional final LayerNorm "prefix.norm" (PyTorch
 * nn.TransformerEncoder(norm=...)); pre-LN stacks want the final norm. At most 64 layers. */
#define QKV_MAX_LAYERS 64
typedef struct qkv_encoder_m {
    int n_layers;
    qkv_encoder_layer_m layers[QKV_MAX_LAYERS];
    int has_norm;
    qkv_layernorm_m norm;
} qkv_encoder_m;
qkv_status qkv_encoder_init(qkv_encoder_m *m, qkv_params *p, const char *prefix, const qkv_layer_config *cfg,
                            int n_layers, int final_norm);
qkv_tensor *qkv_encoder_forward(qkv_ctx *ctx, const qkv_encoder_m *m, qkv_tensor *x,
                                const uint8_t *key_padding_mask, int causal);

typedef struct qkv_decoder_m {
    int n_layers;
    qkv_decoder_layer_m layers[QKV_MAX_LAYERS];
    int has_norm;
    qkv_layernorm_m norm;
} qkv_decoder_m;
qkv_status qkv_decoder_init(qkv_decoder_m *m, qkv_params *p, const char *prefix, const qkv_layer_config *cfg,
                            int n_layers, int final_norm);
qkv_tensor *qkv_decoder_forward(qkv_ctx *ctx, const qkv_decoder_m *m, qkv_tensor *x, qkv_tensor *memory,
                                const uint8_t *tgt_key_padding_mask, int causal,
                                const uint8_t *memory_key_padding_mask);

/* Bahdanau (additive) attention: score(s, h) = v^T tanh(W s + U h).
 * Parameters, each an nn.Linear without bias: "prefix.W.weight" (A,Cq), "prefix.U.weight" (A,Ck),
 * "prefix.v.weight" (1,A). */
typedef struct qkv_bahdanau_m {
    qkv_linear_m W, U, v;
} qkv_bahdanau_m;
qkv_status qkv_bahdanau_init(qkv_bahdanau_m *m, qkv_params *p, const char *prefix, int64_t query_dim,
                             int64_t key_dim, int64_t attn_dim);
/* query (B,Tq,Cq) decoder states, keys (B,Tk,Ck) encoder states (also the values)
 * -> context (B,Tq,Ck); weights (B,Tq,Tk) if requested. key_padding_mask (B,Tk) nonzero = blocked. */
qkv_tensor *qkv_bahdanau_forward(qkv_ctx *ctx, const qkv_bahdanau_m *m, qkv_tensor *query, qkv_tensor *keys,
                                 const uint8_t *key_padding_mask, qkv_tensor **weights);

/* Luong attention: "dot" score s^T h (no parameters, Cq == Ck) or "general" s^T W h with
 * "prefix.W.weight" (Cq, Ck) (nn.Linear(Ck, Cq, bias=False) applied to h). */
typedef enum { QKV_LUONG_DOT, QKV_LUONG_GENERAL } qkv_luong_score;
typedef struct qkv_luong_m {
    qkv_luong_score score;
    qkv_linear_m W;
} qkv_luong_m;
qkv_status qkv_luong_init(qkv_luong_m *m, qkv_params *p, const char *prefix, qkv_luong_score score,
                          int64_t query_dim, int64_t key_dim);
qkv_tensor *qkv_luong_forward(qkv_ctx *ctx, const qkv_luong_m *m, qkv_tensor *query, qkv_tensor *keys,
                              const uint8_t *key_padding_mask, qkv_tensor **weights);

#ifdef __cplusplus
}
#endif
#endif

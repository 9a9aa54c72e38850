/* attention.c — attention modules: nn.MultiheadAttention (batch_first=True), Bahdanau (additive)
 * attention and Luong (dot / general) attention, all as compositions of ops from qkv/ops.h.
 *
 * Not here: the attention kernel (qkv_attention, src/ops/ and src/kernels/), which reads the heads
 * straight out of (B,T,H*D) so no head split or transpose appears in this file; and the Transformer
 * blocks that use multi-head attention (transformer.c).
 *
 * Convention a reader needs: MultiheadAttention keeps q, k and v projections fused in one
 * in_proj_weight (3E,E) as PyTorch does; rows [0,E) project the query, [E,2E) the key, [2E,3E) the
 * value. Self-attention (query == key == value) runs one (3E,E) projection and splits the result;
 * otherwise qkv_rows views of the rows are used, so gradients still land in the fused tensor.
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core_int.h"
#include "nn/nn_int.h"
#include "qkv/nn.h"

/* ---- nn.MultiheadAttention ---- */

qkv_status qkv_mha_init(qkv_mha_m *m, qkv_params *p, const char *prefix, int64_t E, int H, float dropout) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_mha_init: module is NULL");
    memset(m, 0, sizeof *m);
    const char *pf = prefix ? prefix : "";
    if (E <= 0 || H <= 0 || E % H != 0)
        return qkv__set_error(QKV_ERR_SHAPE,
                              "qkv_mha_init '%s': embed_dim %lld must be a positive multiple of num_heads %d", pf,
                              (long long)E, H);
    if (!(dropout >= 0.0f && dropout < 1.0f))
        return qkv__set_error(QKV_ERR_RANGE, "qkv_mha_init '%s': dropout %g outside [0, 1)", pf, (double)dropout);
    m->embed_dim = E;
    m->n_head = H;
    m->dropout = dropout;
    m->out_proj.in_features = E;
    m->out_proj.out_features = E;
    /* PyTorch _reset_parameters: xavier_uniform_ on the whole (3E,E) matrix, fan_in E, fan_out 3E, so
     * the bound is sqrt(6 / 4E); in_proj_bias and out_proj.bias 0; out_proj.weight keeps nn.Linear's
     * U(+-1/sqrt(E)). Declared in state-dict order. */
    float xavier = (float)sqrt(6.0 / (double)(E + 3 * E));
    float lin = (float)(1.0 / sqrt((double)E));
    char op[QKV__NN_NAME_MAX];
    if (!qkv__nn_join(op, pf, "out_proj")) return QKV_ERR_ARG;
    qkv_status s = qkv__nn_declare(&m->in_proj_weight, p, pf, "in_proj_weight", 2, (int64_t[]){3 * E, E},
                           (qkv_init){QKV_INIT_UNIFORM, xavier}, 0);
    if (s == QKV_OK)
        s = qkv__nn_declare(&m->in_proj_bias, p, pf, "in_proj_bias", 1, (int64_t[]){3 * E},
                            (qkv_init){QKV_INIT_ZEROS, 0}, 1);
    if (s == QKV_OK)
        s = qkv__nn_declare(&m->out_proj.weight, p, op, "weight", 2, (int64_t[]){E, E},
                            (qkv_init){QKV_INIT_UNIFORM, lin}, 0);
    if (s == QKV_OK)
        s = qkv__nn_declare(&m->out_proj.bias, p, op, "bias", 1, (int64_t[]){E}, (qkv_init){QKV_INIT_ZEROS, 0}, 1);
    return s;
}

/* query (B,Tq,E), key (B,Tk,E), value (B,Tk,E) -> (B,Tq,E); weights (B,H,Tq,Tk) on request. */
qkv_tensor *qkv_mha_forward(qkv_ctx *ctx, const qkv_mha_m *m, qkv_tensor *query, qkv_tensor *key, qkv_tensor *value,
                            const uint8_t *key_padding_mask, int causal, qkv_tensor **weights) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !m->in_proj_weight) {
        qkv__fail(ctx, QKV_ERR_ARG, "mha: module is NULL or not initialised");
        return NULL;
    }
    if (!query || !key || !value) {
        qkv__fail(ctx, QKV_ERR_ARG, "mha: query, key or value is NULL");
        return NULL;
    }
    const int64_t E = m->embed_dim;
    qkv_tensor *W = m->in_proj_weight, *bias = m->in_proj_bias;
    qkv_tensor *q = NULL, *k = NULL, *v = NULL, *probs = NULL;
    if (query == key && key == value) {
        /* q, k, v = F.linear(x, in_proj_weight, in_proj_bias).chunk(3, dim=-1) */
        qkv_tensor *qkv = qkv_linear(ctx, query, W, bias);
        qkv_tensor *parts[3];
        if (qkv_split(ctx, qkv, qkv ? qkv->ndim - 1 : 0, 3, (int64_t[]){E, E, E}, parts) != QKV_OK) return NULL;
        q = parts[0], k = parts[1], v = parts[2];
    } else {
        /* q = F.linear(query, W_q, b_q) */
        q = qkv_linear(ctx, query, qkv_rows(ctx, W, 0, E), qkv_rows(ctx, bias, 0, E));
        if (key == value) {
            /* k, v = F.linear(key, W_kv, b_kv).chunk(2, dim=-1): the encoder-decoder case */
            qkv_tensor *kv = qkv_linear(ctx, key, qkv_rows(ctx, W, E, 3 * E), qkv_rows(ctx, bias, E, 3 * E));
            qkv_tensor *parts[2];
            if (qkv_split(ctx, kv, kv ? kv->ndim - 1 : 0, 2, (int64_t[]){E, E}, parts) != QKV_OK) return NULL;
            k = parts[0], v = parts[1];
        } else {
            k = qkv_linear(ctx, key, qkv_rows(ctx, W, E, 2 * E), qkv_rows(ctx, bias, E, 2 * E));
            v = qkv_linear(ctx, value, qkv_rows(ctx, W, 2 * E, 3 * E), qkv_rows(ctx, bias, 2 * E, 3 * E));
        }
    }
    /* softmax(q k^T / sqrt(D) + mask) v per head, dropout on the probabilities */
    qkv_attn_opts o = {.n_head = m->n_head,
                       .causal = causal,
                       .key_padding_mask = key_padding_mask,
                       .scale = 0.0f,
                       .dropout = m->dropout,
                       .weights = weights ? &probs : NULL};
    qkv_tensor *a = qkv_attention(ctx, q, k, v, &o);
    qkv_tensor *out = qkv_linear_forward(ctx, &m->out_proj, a); /* out_proj(a) */
    if (out && weights) *weights = probs;                       /* outputs untouched on failure */
    return out;
}

/* ---- Bahdanau (additive) attention ---- */

qkv_status qkv_bahdanau_init(qkv_bahdanau_m *m, qkv_params *p, const char *prefix, int64_t query_dim, int64_t key_dim,
                             int64_t attn_dim) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_bahdanau_init: module is NULL");
    memset(m, 0, sizeof *m);
    const char *pf = prefix ? prefix : "";
    if (query_dim <= 0 || key_dim <= 0 || attn_dim <= 0)
        return qkv__set_error(QKV_ERR_SHAPE, "qkv_bahdanau_init '%s': query_dim %lld, key_dim %lld, attn_dim %lld", pf,
                              (long long)query_dim, (long long)key_dim, (long long)attn_dim);
    char nW[QKV__NN_NAME_MAX], nU[QKV__NN_NAME_MAX], nv[QKV__NN_NAME_MAX];
    if (!qkv__nn_join(nW, pf, "W") || !qkv__nn_join(nU, pf, "U") || !qkv__nn_join(nv, pf, "v")) return QKV_ERR_ARG;
    qkv_status s = qkv_linear_init(&m->W, p, nW, query_dim, attn_dim, 0);
    if (s == QKV_OK) s = qkv_linear_init(&m->U, p, nU, key_dim, attn_dim, 0);
    if (s == QKV_OK) s = qkv_linear_init(&m->v, p, nv, attn_dim, 1, 0);
    return s;
}

/* query (B,Tq,Cq), keys (B,Tk,Ck) -> context (B,Tq,Ck); weights (B,Tq,Tk) */
qkv_tensor *qkv_bahdanau_forward(qkv_ctx *ctx, const qkv_bahdanau_m *m, qkv_tensor *query, qkv_tensor *keys,
                                 const uint8_t *key_padding_mask, qkv_tensor **weights) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !m->v.weight) {
        qkv__fail(ctx, QKV_ERR_ARG, "bahdanau: module is NULL or not initialised");
        return NULL;
    }
    qkv_tensor *wq = qkv_linear_forward(ctx, &m->W, query);                          /* W(s)  (B,Tq,A) */
    qkv_tensor *uk = qkv_linear_forward(ctx, &m->U, keys);                           /* U(h)  (B,Tk,A) */
    qkv_tensor *v = qkv_reshape(ctx, m->v.weight, 1, (int64_t[]){m->v.in_features}); /* v.weight (1,A) -> (A) */
    /* scores[b,i,j] = v . tanh(W s_i + U h_j) */
    qkv_tensor *scores = qkv_additive_scores(ctx, wq, uk, v);
    qkv_tensor *probs = qkv_softmax_masked(ctx, scores, key_padding_mask, 0); /* softmax over j */
    qkv_tensor *context = qkv_matmul(ctx, probs, keys, 0, 0);                 /* probs @ h */
    if (context && weights) *weights = probs;
    return context;
}

/* ---- Luong attention ---- */

qkv_status qkv_luong_init(qkv_luong_m *m, qkv_params *p, const char *prefix, qkv_luong_score score, int64_t query_dim,
                          int64_t key_dim) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_luong_init: module is NULL");
    memset(m, 0, sizeof *m);
    const char *pf = prefix ? prefix : "";
    if (query_dim <= 0 || key_dim <= 0)
        return qkv__set_error(QKV_ERR_SHAPE, "qkv_luong_init '%s': query_dim %lld, key_dim %lld", pf,
                              (long long)query_dim, (long long)key_dim);
    m->score = score;
    switch (score) {
    case QKV_LUONG_DOT:
        if (query_dim != key_dim)
            return qkv__set_error(QKV_ERR_SHAPE,
                                  "qkv_luong_init '%s': dot score needs query_dim == key_dim, got %lld, %lld", pf,
                                  (long long)query_dim, (long long)key_dim);
        return QKV_OK;
    case QKV_LUONG_GENERAL: {
        char nW[QKV__NN_NAME_MAX];
        if (!qkv__nn_join(nW, pf, "W")) return QKV_ERR_ARG;
        return qkv_linear_init(&m->W, p, nW, key_dim, query_dim, 0); /* nn.Linear(Ck, Cq, bias=False) */
    }
    }
    return qkv__set_error(QKV_ERR_ARG, "qkv_luong_init '%s': unknown score %d", pf, (int)score);
}

/* query (B,Tq,Cq), keys (B,Tk,Ck) -> context (B,Tq,Ck); weights (B,Tq,Tk) */
qkv_tensor *qkv_luong_forward(qkv_ctx *ctx, const qkv_luong_m *m, qkv_tensor *query, qkv_tensor *keys,
                              const uint8_t *key_padding_mask, qkv_tensor **weights) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || (m->score == QKV_LUONG_GENERAL && !m->W.weight)) {
        qkv__fail(ctx, QKV_ERR_ARG, "luong: module is NULL or not initialised");
        return NULL;
    }
    /* dot: s . h; general: s . (W h) */
    qkv_tensor *h = m->score == QKV_LUONG_GENERAL ? qkv_linear_forward(ctx, &m->W, keys) : keys;
    qkv_tensor *scores = qkv_matmul(ctx, query, h, 0, 1);                     /* s @ h^T  (B,Tq,Tk) */
    qkv_tensor *probs = qkv_softmax_masked(ctx, scores, key_padding_mask, 0); /* softmax over j */
    qkv_tensor *context = qkv_matmul(ctx, probs, keys, 0, 0);                 /* probs @ h */
    if (context && weights) *weights = probs;
    return context;
}

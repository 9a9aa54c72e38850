/* transformer.c — the Transformer blocks: position-wise FFN, nn.TransformerEncoderLayer,
 * nn.TransformerDecoderLayer (batch_first=True) and the stacks nn.TransformerEncoder / Decoder.
 *
 * Forward code mirrors PyTorch's modules line by line (the PyTorch line is beside each step), so
 * the same state dict gives the same numbers: post-LN (norm_first = 0)
 *     x = norm1(x + dropout1(self_attn(x)));  x = norm2(x + dropout2(ff(x)))
 * and pre-LN (norm_first = 1)
 *     x = x + dropout1(self_attn(norm1(x)));  x = x + dropout2(ff(norm2(x)))
 * with ff(x) = linear2(dropout(act(linear1(x)))) and the attention dropout inside the attention.
 * Every dropout uses cfg.dropout and is active only in training mode (qkv_dropout decides).
 *
 * Not here: attention itself (attention.c), embeddings and output heads (src/models/).
 * Convention a reader needs: parameters are declared in PyTorch's state-dict order, so the names and
 * the order of a block's parameters are those of module.state_dict().
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core_int.h"
#include "nn/nn_int.h"
#include "qkv/nn.h"

/* ---- position-wise feed-forward ---- */

static const char *act_name(qkv_activation a) {
    switch (a) {
    case QKV_ACT_RELU: return "relu";
    case QKV_ACT_GELU: return "gelu";
    case QKV_ACT_GELU_TANH: return "gelu_tanh";
    }
    return NULL;
}

qkv_status qkv_ffn_init(qkv_ffn_m *m, qkv_params *p, const char *prefix, int64_t C, int64_t dim_ff, qkv_activation act,
                        float dropout) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_ffn_init: module is NULL");
    memset(m, 0, sizeof *m);
    const char *pf = prefix ? prefix : "";
    if (!act_name(act)) return qkv__set_error(QKV_ERR_ARG, "qkv_ffn_init '%s': unknown activation %d", pf, (int)act);
    if (!(dropout >= 0.0f && dropout < 1.0f))
        return qkv__set_error(QKV_ERR_RANGE, "qkv_ffn_init '%s': dropout %g outside [0, 1)", pf, (double)dropout);
    m->act = act;
    m->dropout = dropout;
    char n1[QKV__NN_NAME_MAX], n2[QKV__NN_NAME_MAX];
    if (!qkv__nn_join(n1, pf, "linear1") || !qkv__nn_join(n2, pf, "linear2")) return QKV_ERR_ARG;
    qkv_status s = qkv_linear_init(&m->linear1, p, n1, C, dim_ff, 1);
    if (s == QKV_OK) s = qkv_linear_init(&m->linear2, p, n2, dim_ff, C, 1);
    return s;
}

/* x (B,T,C) -> (B,T,C) */
qkv_tensor *qkv_ffn_forward(qkv_ctx *ctx, const qkv_ffn_m *m, qkv_tensor *x) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !m->linear1.weight) {
        qkv__fail(ctx, QKV_ERR_ARG, "ffn: module is NULL or not initialised");
        return NULL;
    }
    qkv_tensor *h = qkv_linear_forward(ctx, &m->linear1, x); /* linear1(x)  (B,T,F) */
    switch (m->act) {
    case QKV_ACT_RELU: h = qkv_relu(ctx, h); break;         /* F.relu */
    case QKV_ACT_GELU: h = qkv_gelu(ctx, h, 0); break;      /* F.gelu (erf) */
    case QKV_ACT_GELU_TANH: h = qkv_gelu(ctx, h, 1); break; /* F.gelu(approximate='tanh') */
    default: qkv__fail(ctx, QKV_ERR_ARG, "ffn: unknown activation %d", (int)m->act); return NULL;
    }
    h = qkv_dropout(ctx, h, m->dropout);            /* dropout */
    return qkv_linear_forward(ctx, &m->linear2, h); /* linear2(h)  (B,T,C) */
}

/* ---- layer configuration ---- */

qkv_layer_config qkv_layer_config_default(void) {
    qkv_layer_config c = {.d_model = 512,
                          .n_head = 8,
                          .dim_feedforward = 2048,
                          .dropout = 0.1f,
                          .activation = QKV_ACT_RELU,
                          .norm_first = 0,
                          .layer_norm_eps = 1e-5f};
    return c;
}

static qkv_status check_config(const char *fn, const char *prefix, const qkv_layer_config *c) {
    if (!c) return qkv__set_error(QKV_ERR_ARG, "%s '%s': config is NULL", fn, prefix);
    if (c->d_model <= 0 || c->n_head <= 0 || c->d_model % c->n_head != 0)
        return qkv__set_error(QKV_ERR_SHAPE, "%s '%s': d_model %lld must be a positive multiple of n_head %d", fn,
                              prefix, (long long)c->d_model, c->n_head);
    if (c->dim_feedforward <= 0)
        return qkv__set_error(QKV_ERR_SHAPE, "%s '%s': dim_feedforward %lld (must be >= 1)", fn, prefix,
                              (long long)c->dim_feedforward);
    if (!(c->dropout >= 0.0f && c->dropout < 1.0f))
        return qkv__set_error(QKV_ERR_RANGE, "%s '%s': dropout %g outside [0, 1)", fn, prefix, (double)c->dropout);
    if (!(c->layer_norm_eps > 0.0f) || !isfinite(c->layer_norm_eps))
        return qkv__set_error(QKV_ERR_RANGE, "%s '%s': layer_norm_eps %g must be a positive number", fn, prefix,
                              (double)c->layer_norm_eps);
    if (!act_name(c->activation))
        return qkv__set_error(QKV_ERR_ARG, "%s '%s': unknown activation %d", fn, prefix, (int)c->activation);
    return QKV_OK;
}

/* ---- nn.TransformerEncoderLayer ---- */

qkv_status qkv_encoder_layer_init(qkv_encoder_layer_m *m, qkv_params *p, const char *prefix,
                                  const qkv_layer_config *cfg) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_encoder_layer_init: module is NULL");
    memset(m, 0, sizeof *m);
    const char *pf = prefix ? prefix : "";
    qkv_status s = check_config("qkv_encoder_layer_init", pf, cfg);
    if (s != QKV_OK) return s;
    m->cfg = *cfg;
    char sa[QKV__NN_NAME_MAX], n1[QKV__NN_NAME_MAX], n2[QKV__NN_NAME_MAX];
    if (!qkv__nn_join(sa, pf, "self_attn") || !qkv__nn_join(n1, pf, "norm1") || !qkv__nn_join(n2, pf, "norm2"))
        return QKV_ERR_ARG;
    s = qkv_mha_init(&m->self_attn, p, sa, cfg->d_model, cfg->n_head, cfg->dropout);
    if (s == QKV_OK)
        s = qkv_ffn_init(&m->ffn, p, pf, cfg->d_model, cfg->dim_feedforward, cfg->activation, cfg->dropout);
    if (s == QKV_OK) s = qkv_layernorm_init(&m->norm1, p, n1, cfg->d_model, cfg->layer_norm_eps);
    if (s == QKV_OK) s = qkv_layernorm_init(&m->norm2, p, n2, cfg->d_model, cfg->layer_norm_eps);
    return s;
}

/* x (B,T,C) -> (B,T,C) */
qkv_tensor *qkv_encoder_layer_forward(qkv_ctx *ctx, const qkv_encoder_layer_m *m, qkv_tensor *x,
                                      const uint8_t *key_padding_mask, int causal, qkv_tensor **weights) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !m->norm2.weight) {
        qkv__fail(ctx, QKV_ERR_ARG, "encoder_layer: module is NULL or not initialised");
        return NULL;
    }
    const float p = m->cfg.dropout;
    qkv_tensor *w = NULL, *h;
    if (m->cfg.norm_first) {
        h = qkv_layernorm_forward(ctx, &m->norm1, x); /* norm1(x) */
        h = qkv_mha_forward(ctx, &m->self_attn, h, h, h, key_padding_mask, causal, weights ? &w : NULL);
        x = qkv_add(ctx, x, qkv_dropout(ctx, h, p));                                 /* x + dropout1(sa) */
        h = qkv_ffn_forward(ctx, &m->ffn, qkv_layernorm_forward(ctx, &m->norm2, x)); /* ff(norm2(x)) */
        x = qkv_add(ctx, x, qkv_dropout(ctx, h, p));                                 /* x + dropout2(ff) */
    } else {
        h = qkv_mha_forward(ctx, &m->self_attn, x, x, x, key_padding_mask, causal, weights ? &w : NULL);
        x = qkv_layernorm_forward(ctx, &m->norm1, qkv_add(ctx, x, qkv_dropout(ctx, h, p))); /* norm1(x + sa) */
        h = qkv_ffn_forward(ctx, &m->ffn, x);
        x = qkv_layernorm_forward(ctx, &m->norm2, qkv_add(ctx, x, qkv_dropout(ctx, h, p))); /* norm2(x + ff) */
    }
    if (x && weights) *weights = w;
    return x;
}

/* ---- nn.TransformerDecoderLayer ---- */

qkv_status qkv_decoder_layer_init(qkv_decoder_layer_m *m, qkv_params *p, const char *prefix,
                                  const qkv_layer_config *cfg) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_decoder_layer_init: module is NULL");
    memset(m, 0, sizeof *m);
    const char *pf = prefix ? prefix : "";
    qkv_status s = check_config("qkv_decoder_layer_init", pf, cfg);
    if (s != QKV_OK) return s;
    m->cfg = *cfg;
    char sa[QKV__NN_NAME_MAX], ca[QKV__NN_NAME_MAX], n1[QKV__NN_NAME_MAX], n2[QKV__NN_NAME_MAX], n3[QKV__NN_NAME_MAX];
    if (!qkv__nn_join(sa, pf, "self_attn") || !qkv__nn_join(ca, pf, "multihead_attn") ||
        !qkv__nn_join(n1, pf, "norm1") || !qkv__nn_join(n2, pf, "norm2") || !qkv__nn_join(n3, pf, "norm3"))
        return QKV_ERR_ARG;
    s = qkv_mha_init(&m->self_attn, p, sa, cfg->d_model, cfg->n_head, cfg->dropout);
    if (s == QKV_OK) s = qkv_mha_init(&m->multihead_attn, p, ca, cfg->d_model, cfg->n_head, cfg->dropout);
    if (s == QKV_OK)
        s = qkv_ffn_init(&m->ffn, p, pf, cfg->d_model, cfg->dim_feedforward, cfg->activation, cfg->dropout);
    if (s == QKV_OK) s = qkv_layernorm_init(&m->norm1, p, n1, cfg->d_model, cfg->layer_norm_eps);
    if (s == QKV_OK) s = qkv_layernorm_init(&m->norm2, p, n2, cfg->d_model, cfg->layer_norm_eps);
    if (s == QKV_OK) s = qkv_layernorm_init(&m->norm3, p, n3, cfg->d_model, cfg->layer_norm_eps);
    return s;
}

/* x (B,T,C), memory (B,S,C) -> (B,T,C) */
qkv_tensor *qkv_decoder_layer_forward(qkv_ctx *ctx, const qkv_decoder_layer_m *m, qkv_tensor *x, qkv_tensor *memory,
                                      const uint8_t *tgt_key_padding_mask, int causal,
                                      const uint8_t *memory_key_padding_mask, qkv_tensor **self_weights,
                                      qkv_tensor **cross_weights) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !m->norm3.weight) {
        qkv__fail(ctx, QKV_ERR_ARG, "decoder_layer: module is NULL or not initialised");
        return NULL;
    }
    const float p = m->cfg.dropout;
    qkv_tensor *sw = NULL, *cw = NULL, *h;
    qkv_tensor **swp = self_weights ? &sw : NULL, **cwp = cross_weights ? &cw : NULL;
    if (m->cfg.norm_first) {
        h = qkv_layernorm_forward(ctx, &m->norm1, x); /* norm1(x) */
        h = qkv_mha_forward(ctx, &m->self_attn, h, h, h, tgt_key_padding_mask, causal, swp);
        x = qkv_add(ctx, x, qkv_dropout(ctx, h, p));  /* x + dropout1(sa) */
        h = qkv_layernorm_forward(ctx, &m->norm2, x); /* norm2(x) */
        h = qkv_mha_forward(ctx, &m->multihead_attn, h, memory, memory, memory_key_padding_mask, 0, cwp);
        x = qkv_add(ctx, x, qkv_dropout(ctx, h, p));                                 /* x + dropout2(mha) */
        h = qkv_ffn_forward(ctx, &m->ffn, qkv_layernorm_forward(ctx, &m->norm3, x)); /* ff(norm3(x)) */
        x = qkv_add(ctx, x, qkv_dropout(ctx, h, p));                                 /* x + dropout3(ff) */
    } else {
        h = qkv_mha_forward(ctx, &m->self_attn, x, x, x, tgt_key_padding_mask, causal, swp);
        x = qkv_layernorm_forward(ctx, &m->norm1, qkv_add(ctx, x, qkv_dropout(ctx, h, p))); /* norm1(x + sa) */
        h = qkv_mha_forward(ctx, &m->multihead_attn, x, memory, memory, memory_key_padding_mask, 0, cwp);
        x = qkv_layernorm_forward(ctx, &m->norm2, qkv_add(ctx, x, qkv_dropout(ctx, h, p))); /* norm2(x + mha) */
        h = qkv_ffn_forward(ctx, &m->ffn, x);
        x = qkv_layernorm_forward(ctx, &m->norm3, qkv_add(ctx, x, qkv_dropout(ctx, h, p))); /* norm3(x + ff) */
    }
    if (x && self_weights) *self_weights = sw;
    if (x && cross_weights) *cross_weights = cw;
    return x;
}

/* ---- stacks: nn.TransformerEncoder / nn.TransformerDecoder ---- */

static qkv_status check_stack(const char *fn, const char *prefix, int n_layers) {
    if (n_layers < 1 || n_layers > QKV_MAX_LAYERS)
        return qkv__set_error(QKV_ERR_RANGE, "%s '%s': n_layers %d outside 1..%d", fn, prefix, n_layers,
                              QKV_MAX_LAYERS);
    return QKV_OK;
}

static int layer_prefix(char *buf, const char *prefix, int i) {
    char field[32];
    snprintf(field, sizeof field, "layers.%d", i);
    return qkv__nn_join(buf, prefix, field);
}

/* Stacks declare "prefix.layers.i.*" for each layer, then "prefix.norm" when asked. PyTorch
 * deep-copies one layer N times (identical initial values); here each layer draws its own values,
 * which is what training from scratch wants. One body for both stacks: init_layer is the encoder's or
 * the decoder's layer initialiser, layers an array of layer_size-byte modules. */
typedef qkv_status (*layer_init_fn)(void *layer, qkv_params *p, const char *prefix, const qkv_layer_config *cfg);

static qkv_status init_encoder_layer(void *layer, qkv_params *p, const char *prefix, const qkv_layer_config *cfg) {
    return qkv_encoder_layer_init(layer, p, prefix, cfg);
}
static qkv_status init_decoder_layer(void *layer, qkv_params *p, const char *prefix, const qkv_layer_config *cfg) {
    return qkv_decoder_layer_init(layer, p, prefix, cfg);
}

/* The module's parts: its layers array (layer_size bytes each), final norm, and the two fields that
 * make it runnable, set only once every layer is set up. */
typedef struct {
    void *layers;
    size_t layer_size;
    qkv_layernorm_m *norm;
    int *n_layers, *has_norm;
} stack_parts;

static qkv_status stack_init(const char *fn, stack_parts st, qkv_params *p, const char *prefix,
                             const qkv_layer_config *cfg, int n_layers, int final_norm, layer_init_fn init_layer) {
    const char *pf = prefix ? prefix : "";
    qkv_status s = check_stack(fn, pf, n_layers);
    if (s == QKV_OK) s = check_config(fn, pf, cfg);
    if (s != QKV_OK) return s;
    char name[QKV__NN_NAME_MAX];
    for (int i = 0; i < n_layers && s == QKV_OK; i++) {
        if (!layer_prefix(name, pf, i)) return QKV_ERR_ARG;
        s = init_layer((char *)st.layers + (size_t)i * st.layer_size, p, name, cfg);
    }
    if (s == QKV_OK && final_norm) {
        if (!qkv__nn_join(name, pf, "norm")) return QKV_ERR_ARG;
        s = qkv_layernorm_init(st.norm, p, name, cfg->d_model, cfg->layer_norm_eps);
    }
    if (s == QKV_OK) {
        *st.n_layers = n_layers;
        *st.has_norm = final_norm != 0;
    }
    return s;
}

qkv_status qkv_encoder_init(qkv_encoder_m *m, qkv_params *p, const char *prefix, const qkv_layer_config *cfg,
                            int n_layers, int final_norm) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_encoder_init: module is NULL");
    memset(m, 0, sizeof *m);
    stack_parts st = {m->layers, sizeof m->layers[0], &m->norm, &m->n_layers, &m->has_norm};
    return stack_init("qkv_encoder_init", st, p, prefix, cfg, n_layers, final_norm, init_encoder_layer);
}

qkv_status qkv_decoder_init(qkv_decoder_m *m, qkv_params *p, const char *prefix, const qkv_layer_config *cfg,
                            int n_layers, int final_norm) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_decoder_init: module is NULL");
    memset(m, 0, sizeof *m);
    stack_parts st = {m->layers, sizeof m->layers[0], &m->norm, &m->n_layers, &m->has_norm};
    return stack_init("qkv_decoder_init", st, p, prefix, cfg, n_layers, final_norm, init_decoder_layer);
}

/* x (B,T,C) -> (B,T,C) */
qkv_tensor *qkv_encoder_forward(qkv_ctx *ctx, const qkv_encoder_m *m, qkv_tensor *x, const uint8_t *key_padding_mask,
                                int causal) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || m->n_layers < 1 || m->n_layers > QKV_MAX_LAYERS) {
        qkv__fail(ctx, QKV_ERR_ARG, "encoder: module is NULL or not initialised");
        return NULL;
    }
    for (int i = 0; i < m->n_layers; i++) /* for mod in self.layers: x = mod(x, ...) */
        x = qkv_encoder_layer_forward(ctx, &m->layers[i], x, key_padding_mask, causal, NULL);
    if (m->has_norm) x = qkv_layernorm_forward(ctx, &m->norm, x); /* self.norm(x) */
    return x;
}

/* x (B,T,C), memory (B,S,C) -> (B,T,C) */
qkv_tensor *qkv_decoder_forward(qkv_ctx *ctx, const qkv_decoder_m *m, qkv_tensor *x, qkv_tensor *memory,
                                const uint8_t *tgt_key_padding_mask, int causal,
                                const uint8_t *memory_key_padding_mask) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || m->n_layers < 1 || m->n_layers > QKV_MAX_LAYERS) {
        qkv__fail(ctx, QKV_ERR_ARG, "decoder: module is NULL or not initialised");
        return NULL;
    }
    for (int i = 0; i < m->n_layers; i++) /* for mod in self.layers: x = mod(x, memory, ...) */
        x = qkv_decoder_layer_forward(ctx, &m->layers[i], x, memory, tgt_key_padding_mask, causal,
                                      memory_key_padding_mask, NULL, NULL);
    if (m->has_norm) x = qkv_layernorm_forward(ctx, &m->norm, x); /* self.norm(x) */
    return x;
}

/* linear.c — the one-tensor modules: nn.Linear, nn.LayerNorm, nn.Embedding, and the two kinds of
 * position encoding (sinusoidal constants, learned rows of an embedding).
 *
 * Each module only declares its parameters under PyTorch's state-dict names and calls one op from
 * qkv/ops.h in its forward; the op records the backward. Not here: attention (attention.c), the
 * Transformer blocks (transformer.c), and the numerics themselves (src/ops/, src/kernels/).
 *
 * Convention a reader needs: parameter names are "<prefix>.<field>", or the bare field name when the
 * prefix is empty, so a module declared with prefix "" holds exactly PyTorch's state-dict keys.
 * Initial values are PyTorch's defaults: nn.Linear draws weight and bias from U(-1/sqrt(in),
 * 1/sqrt(in)) (kaiming_uniform with a = sqrt(5) reduces to that bound), LayerNorm starts at
 * ones/zeros, Embedding at N(0, std^2). Biases and LayerNorm parameters are excluded from weight
 * decay (no_decay = 1).
 */
#include <math.h>
#include <stdio.h>
#include <string.h>

#include "core/core_int.h"
#include "nn/nn_int.h"
#include "qkv/nn.h"

/* "prefix.field", or "field" when prefix is empty. 0 (and the thread error) when it does not fit. */
int qkv__nn_join(char *buf, const char *prefix, const char *field) {
    int n = (prefix && *prefix) ? snprintf(buf, QKV__NN_NAME_MAX, "%s.%s", prefix, field)
                                : snprintf(buf, QKV__NN_NAME_MAX, "%s", field);
    if (n < 0 || n >= QKV__NN_NAME_MAX) {
        qkv__set_error(QKV_ERR_ARG, "nn: parameter name '%s.%s' longer than %d bytes", prefix, field,
                       QKV__NN_NAME_MAX - 1);
        return 0;
    }
    return 1;
}

/* Declares prefix.field; on failure says why with the right status. qkv_params_add only returns NULL
 * and leaves its message in qkv_last_error, so the status is recovered from the block's state. */
qkv_status qkv__nn_declare(qkv_tensor **out, qkv_params *p, const char *prefix, const char *field, int ndim,
                           const int64_t *shape, qkv_init init, int no_decay) {
    char name[QKV__NN_NAME_MAX];
    *out = NULL;
    if (!p) return qkv__set_error(QKV_ERR_ARG, "nn: parameter block is NULL (declaring '%s')", field);
    if (!qkv__nn_join(name, prefix, field)) return QKV_ERR_ARG;
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0)
            return qkv__set_error(QKV_ERR_SHAPE, "nn: parameter '%s' dimension %d is %lld (must be >= 1)", name, i,
                                  (long long)shape[i]);
    *out = qkv_params_add(p, name, ndim, shape, init, no_decay);
    if (*out) return QKV_OK;
    if (qkv_params_data(p)) return QKV_ERR_STATE;
    if (qkv_params_find(p, name)) return QKV_ERR_ARG;
    return QKV_ERR_NOMEM; /* shapes were checked above; what is left is allocation */
}

/* ---- nn.Linear ---- */

qkv_status qkv_linear_init(qkv_linear_m *m, qkv_params *p, const char *prefix, int64_t in, int64_t out, int bias) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_linear_init: module is NULL");
    memset(m, 0, sizeof *m);
    if (in <= 0 || out <= 0)
        return qkv__set_error(QKV_ERR_SHAPE, "qkv_linear_init '%s': in_features %lld, out_features %lld (must be >= 1)",
                              prefix ? prefix : "", (long long)in, (long long)out);
    float bound = (float)(1.0 / sqrt((double)in));
    qkv_status s =
        qkv__nn_declare(&m->weight, p, prefix, "weight", 2, (int64_t[]){out, in}, (qkv_init){QKV_INIT_UNIFORM, bound},
                        0);
    if (s == QKV_OK && bias)
        s = qkv__nn_declare(&m->bias, p, prefix, "bias", 1, (int64_t[]){out}, (qkv_init){QKV_INIT_UNIFORM, bound}, 1);
    m->in_features = in;
    m->out_features = out;
    return s;
}

/* x (...,IN), weight (OUT,IN), bias (OUT) -> (...,OUT) */
qkv_tensor *qkv_linear_forward(qkv_ctx *ctx, const qkv_linear_m *m, qkv_tensor *x) {
    if (!ctx) return NULL;
    if (!m) {
        qkv__fail(ctx, QKV_ERR_ARG, "linear: module is NULL");
        return NULL;
    }
    return qkv_linear(ctx, x, m->weight, m->bias); /* F.linear(x, weight, bias) */
}

/* ---- nn.LayerNorm ---- */

qkv_status qkv_layernorm_init(qkv_layernorm_m *m, qkv_params *p, const char *prefix, int64_t C, float eps) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_layernorm_init: module is NULL");
    memset(m, 0, sizeof *m);
    if (C <= 0)
        return qkv__set_error(QKV_ERR_SHAPE, "qkv_layernorm_init '%s': C = %lld", prefix ? prefix : "", (long long)C);
    if (!(eps > 0.0f) || !isfinite(eps))
        return qkv__set_error(QKV_ERR_RANGE, "qkv_layernorm_init '%s': eps %g must be a positive number",
                              prefix ? prefix : "", (double)eps);
    qkv_status s = qkv__nn_declare(&m->weight, p, prefix, "weight", 1, (int64_t[]){C}, (qkv_init){QKV_INIT_ONES, 0}, 1);
    if (s == QKV_OK)
        s = qkv__nn_declare(&m->bias, p, prefix, "bias", 1, (int64_t[]){C}, (qkv_init){QKV_INIT_ZEROS, 0}, 1);
    m->eps = eps;
    return s;
}

/* x (...,C) -> (...,C) */
qkv_tensor *qkv_layernorm_forward(qkv_ctx *ctx, const qkv_layernorm_m *m, qkv_tensor *x) {
    if (!ctx) return NULL;
    if (!m) {
        qkv__fail(ctx, QKV_ERR_ARG, "layernorm: module is NULL");
        return NULL;
    }
    return qkv_layernorm(ctx, x, m->weight, m->bias, m->eps); /* F.layer_norm(x, (C,), weight, bias, eps) */
}

/* ---- nn.Embedding ---- */

qkv_status qkv_embedding_init(qkv_embedding_m *m, qkv_params *p, const char *prefix, int64_t V, int64_t C, float std) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_embedding_init: module is NULL");
    memset(m, 0, sizeof *m);
    if (V <= 0 || C <= 0)
        return qkv__set_error(QKV_ERR_SHAPE, "qkv_embedding_init '%s': V %lld, C %lld (must be >= 1)",
                              prefix ? prefix : "", (long long)V, (long long)C);
    if (!(std >= 0.0f) || !isfinite(std))
        return qkv__set_error(QKV_ERR_RANGE, "qkv_embedding_init '%s': std %g must be >= 0", prefix ? prefix : "",
                              (double)std);
    return qkv__nn_declare(&m->weight, p, prefix, "weight", 2, (int64_t[]){V, C}, (qkv_init){QKV_INIT_NORMAL, std}, 0);
}

/* ids (B,T), weight (V,C) -> (B,T,C) */
qkv_tensor *qkv_embedding_forward(qkv_ctx *ctx, const qkv_embedding_m *m, const int32_t *ids, int64_t B, int64_t T) {
    if (!ctx) return NULL;
    if (!m) {
        qkv__fail(ctx, QKV_ERR_ARG, "embedding: module is NULL");
        return NULL;
    }
    return qkv_embedding(ctx, m->weight, ids, 2, (int64_t[]){B, T}); /* weight[ids] */
}

/* ---- positions ---- */

/* -> (T,C) constant: PE[t,2i] = sin(t / 10000^(2i/C)), PE[t,2i+1] = cos(t / 10000^(2i/C)),
 * t = offset + row. Evaluated in double and rounded once, so long positions keep full float accuracy
 * (the float formula loses digits in t * freq for t in the thousands). */
qkv_tensor *qkv_sinusoidal_positions(qkv_ctx *ctx, int64_t T, int64_t C, int64_t offset) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (T <= 0 || C <= 0 || offset < 0) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "sinusoidal_positions: T %lld, C %lld, offset %lld (need T, C >= 1, offset >= 0)",
                  (long long)T, (long long)C, (long long)offset);
        return NULL;
    }
    qkv_tensor *pe = qkv__empty(ctx, 2, (int64_t[]){T, C});
    if (!pe) return NULL;
    for (int64_t c = 0; c < C; c += 2) {
        double inv_freq = pow(10000.0, -(double)c / (double)C); /* 1 / 10000^(2i/C), c = 2i */
        for (int64_t t = 0; t < T; t++) {
            double a = (double)(offset + t) * inv_freq;
            pe->data[t * C + c] = (float)sin(a);
            if (c + 1 < C) pe->data[t * C + c + 1] = (float)cos(a);
        }
    }
    pe->name = "sinusoidal_positions";
    return pe;
}

/* table (V,C) -> rows offset..offset+T-1 (T,C), gradient into the table. Done as an embedding lookup
 * of the ids offset..offset+T-1, which works for any table (a parameter or not). */
qkv_tensor *qkv_learned_positions(qkv_ctx *ctx, const qkv_embedding_m *m, int64_t T, int64_t offset) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !m->weight) {
        qkv__fail(ctx, QKV_ERR_ARG, "learned_positions: module is NULL or not initialised");
        return NULL;
    }
    int64_t V = m->weight->shape[0];
    if (T <= 0 || offset < 0 || offset > V - T) {
        qkv__fail(ctx, QKV_ERR_RANGE, "learned_positions: positions %lld..%lld past the table of %lld positions (%s)",
                  (long long)offset, (long long)(offset + T - 1), (long long)V,
                  m->weight->name ? m->weight->name : "weight");
        return NULL;
    }
    int32_t *ids = qkv__alloc(ctx, (size_t)T * sizeof *ids);
    if (!ids) return NULL;
    for (int64_t t = 0; t < T; t++) ids[t] = (int32_t)(offset + t);
    return qkv_embedding(ctx, m->weight, ids, 1, (int64_t[]){T}); /* wpe(arange(offset, offset+T)) */
}

/* norm.c — ops that reduce: softmax and log-softmax and LayerNorm over the last dim, and sum and
 * mean over every element.
 *
 * What it is not: the masked softmax of attention (attention.c) or the fused log-softmax inside
 * cross-entropy (loss.c). The loops are in kernels/ew.c.
 *
 * Convention: a tensor (..., C) is R = numel / C rows of C. Softmax and log-softmax save nothing:
 * their backward reads the output. LayerNorm saves exactly mean and rstd per row (2R floats), as
 * PyTorch does, and recomputes the normalised x from them.
 */
#include <math.h>

#include "core/core_int.h"
#include "kernels/ew.h"
#include "qkv/ops.h"

/* Rows of the last dim; 0 (with the error set) for a scalar, which has no last dim to reduce. */
static int rows_of(qkv_ctx *ctx, const char *op, const qkv_tensor *x, int64_t *R, int64_t *C) {
    if (x->ndim < 1)
        return qkv__fail(ctx, QKV_ERR_SHAPE, "%s: x %s needs at least 1 dimension", op, qkv__shp(x));
    *C = x->shape[x->ndim - 1];
    *R = qkv_tensor_numel(x) / *C;
    return 1;
}

/* ---- softmax, log-softmax ---- */

static void softmax_backward(qkv_ctx *ctx, qkv__node *n) {
    const qkv_tensor *y = n->out;
    int64_t C = y->shape[y->ndim - 1];
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__softmax_backward(dx, y->grad, y->data, qkv_tensor_numel(y) / C, C);
}

static void log_softmax_backward(qkv_ctx *ctx, qkv__node *n) {
    const qkv_tensor *y = n->out;
    int64_t C = y->shape[y->ndim - 1];
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__log_softmax_backward(dx, y->grad, y->data, qkv_tensor_numel(y) / C, C);
}

static qkv_tensor *softmax_op(qkv_ctx *ctx, const char *op, qkv_tensor *x, int logarithm) {
    int64_t R = 0, C = 1;
    if (!ctx || !qkv__check(ctx, op, 1, &x) || !rows_of(ctx, op, x, &R, &C)) return NULL;
    qkv_tensor *out = qkv__empty(ctx, x->ndim, x->shape);
    if (!out) return NULL;
    out->name = op;
    if (logarithm)
        qkv__log_softmax_forward(out->data, x->data, R, C);
    else
        qkv__softmax_forward(out->data, x->data, R, C);
    qkv__record(ctx, op, logarithm ? log_softmax_backward : softmax_backward, out, 1, &x, 0);
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

qkv_tensor *qkv_softmax(qkv_ctx *ctx, qkv_tensor *x) { return softmax_op(ctx, "softmax", x, 0); }
qkv_tensor *qkv_log_softmax(qkv_ctx *ctx, qkv_tensor *x) { return softmax_op(ctx, "log_softmax", x, 1); }

/* ---- LayerNorm ---- */

typedef struct {
    float *mean, *rstd; /* (R) each, arena */
} layernorm_saved;

static void layernorm_backward(qkv_ctx *ctx, qkv__node *n) {
    const layernorm_saved *s = n->saved;
    qkv_tensor *x = n->in[0], *w = n->in[1], *b = n->in[2];
    const int64_t C = x->shape[x->ndim - 1], R = qkv_tensor_numel(x) / C;
    float *dx = x->requires_grad ? qkv__grad(ctx, x) : NULL;
    float *dw = w && w->requires_grad ? qkv__grad(ctx, w) : NULL;
    float *db = b && b->requires_grad ? qkv__grad(ctx, b) : NULL;
    if (ctx->status != QKV_OK) return;
    qkv__layernorm_backward(dx, dw, db, n->out->grad, x->data, w ? w->data : NULL, s->mean, s->rstd, R, C);
}

qkv_tensor *qkv_layernorm(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *b, float eps) {
    int64_t R = 0, C = 1;
    if (!ctx || !qkv__check(ctx, "layernorm", 1, &x) || !rows_of(ctx, "layernorm", x, &R, &C)) return NULL;
    /* w and b are optional, so they are checked one by one (qkv__check takes no NULL entries). */
    qkv_tensor *const affine[2] = {w, b};
    static const char *const names[2] = {"weight", "bias"};
    for (int i = 0; i < 2; i++) {
        const qkv_tensor *t = affine[i];
        if (!t) continue;
        if (t->ndim != 1 || t->shape[0] != C) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "layernorm: %s %s must be (%lld) for x %s", names[i], qkv__shp(t),
                      (long long)C, qkv__shp(x));
            return NULL;
        }
        if (!qkv__check_finite(ctx, "layernorm", names[i], t->data, C)) return NULL;
    }
    if (!(eps >= 0.0f) || !isfinite(eps)) {
        qkv__fail(ctx, QKV_ERR_ARG, "layernorm: eps = %g must be finite and >= 0", (double)eps);
        return NULL;
    }
    qkv_tensor *out = qkv__empty(ctx, x->ndim, x->shape);
    layernorm_saved s = {qkv__alloc(ctx, (size_t)R * sizeof(float)), qkv__alloc(ctx, (size_t)R * sizeof(float))};
    if (!out || !s.mean || !s.rstd) return NULL;
    out->name = "layernorm";
    qkv__layernorm_forward(out->data, s.mean, s.rstd, x->data, w ? w->data : NULL, b ? b->data : NULL, R, C, eps);
    qkv_tensor *in[3] = {x, w, b};
    qkv__node *n = qkv__record(ctx, "layernorm", layernorm_backward, out, 3, in, sizeof s);
    if (n) *(layernorm_saved *)n->saved = s;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- sum, mean ---- */

/* dx += g everywhere, with g = dout / (1 for sum, numel for mean). */
static void sum_mean_backward(qkv_ctx *ctx, qkv__node *n) {
    const double divisor = *(const double *)n->saved;
    float *dx = qkv__grad(ctx, n->in[0]);
    if (!dx) return;
    const float g = (float)((double)n->out->grad[0] / divisor);
    const int64_t m = qkv_tensor_numel(n->in[0]);
#pragma omp parallel for schedule(static) if (m > QKV__PAR_MIN)
    for (int64_t i = 0; i < m; i++) dx[i] += g;
}

static qkv_tensor *sum_mean(qkv_ctx *ctx, const char *op, qkv_tensor *x, int mean) {
    if (!ctx || !qkv__check(ctx, op, 1, &x)) return NULL;
    const int64_t m = qkv_tensor_numel(x);
    qkv_tensor *out = qkv__empty(ctx, 0, x->shape);
    if (!out) return NULL;
    out->name = op;
    double s = qkv__sum(x->data, m);
    out->data[0] = (float)(mean ? s / (double)m : s);
    double divisor = mean ? (double)m : 1.0;
    qkv__node *n = qkv__record(ctx, op, sum_mean_backward, out, 1, &x, sizeof divisor);
    if (n) *(double *)n->saved = divisor;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

qkv_tensor *qkv_sum(qkv_ctx *ctx, qkv_tensor *x) { return sum_mean(ctx, "sum", x, 0); }
qkv_tensor *qkv_mean(qkv_ctx *ctx, qkv_tensor *x) { return sum_mean(ctx, "mean", x, 1); }

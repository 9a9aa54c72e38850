/* elementwise.c — the element-wise ops: add, sub, mul (with the ops.h broadcast), scale, ReLU,
 * GELU (exact and tanh), tanh, sigmoid and dropout, each forward beside its backward.
 *
 * What it is not: the loops themselves (kernels/ew.c) or reductions (norm.c). Nothing here copies a
 * saved activation: backward reads the op's inputs or its output, which live in the arena (or the
 * parameter block) until the next reset and are never written after they are made.
 *
 * Convention: the only broadcast is the ops.h one — b equal to a's shape, or to a's trailing dims —
 * which makes every binary op a loop over R rows of C with b either (R,C) or (C) repeated.
 * Dropout's mask is never stored: it is a pure function of (seed, element index), the seed is kept
 * in the node, and backward recomputes it.
 */
#include <math.h>

#include "core/core_int.h"
#include "kernels/ew.h"
#include "qkv/ops.h"

/* ---- add, sub, mul ---- */

typedef struct {
    int64_t R, b_rows, C;
} bcast;

/* Fills the row geometry of a op b: R rows of C with b_rows = R (same shape) or 1 (b repeated). */
static int broadcast_geometry(qkv_ctx *ctx, const char *op, const qkv_tensor *a, const qkv_tensor *b, bcast *g) {
    int64_t na = qkv_tensor_numel(a);
    if (qkv__same_shape(a, b)) {
        g->C = a->ndim ? a->shape[a->ndim - 1] : 1;
        g->R = na / g->C;
        g->b_rows = g->R;
        return 1;
    }
    int ok = b->ndim <= a->ndim;
    for (int i = 0; ok && i < b->ndim; i++) ok = b->shape[i] == a->shape[a->ndim - b->ndim + i];
    if (!ok)
        return qkv__fail(ctx, QKV_ERR_SHAPE,
                         "%s: b %s does not broadcast to a %s (b must equal a's shape or its trailing dims)", op,
                         qkv__shp(b), qkv__shp(a));
    g->C = qkv_tensor_numel(b);
    g->R = na / g->C;
    g->b_rows = 1;
    return 1;
}

static void add_backward_common(qkv_ctx *ctx, qkv__node *n, float sign) {
    qkv_tensor *a = n->in[0], *b = n->in[1];
    const bcast *g = n->saved;
    float *da = a->requires_grad ? qkv__grad(ctx, a) : NULL;
    float *db = b->requires_grad ? qkv__grad(ctx, b) : NULL;
    if (ctx->status != QKV_OK) return;
    qkv__add_backward(da, db, n->out->grad, g->R, g->b_rows, g->C, sign);
}

static void add_backward(qkv_ctx *ctx, qkv__node *n) { add_backward_common(ctx, n, 1.0f); }
static void sub_backward(qkv_ctx *ctx, qkv__node *n) { add_backward_common(ctx, n, -1.0f); }

static qkv_tensor *add_sub(qkv_ctx *ctx, const char *op, qkv_tensor *a, qkv_tensor *b, float sign) {
    qkv_tensor *in[2] = {a, b};
    bcast g = {0, 0, 1};
    if (!ctx || !qkv__check(ctx, op, 2, in) || !broadcast_geometry(ctx, op, a, b, &g)) return NULL;
    qkv_tensor *out = qkv__empty(ctx, a->ndim, a->shape);
    if (!out) return NULL;
    out->name = op;
    qkv__add_forward(out->data, a->data, b->data, g.R, g.b_rows, g.C, sign);
    qkv__node *n = qkv__record(ctx, op, sign > 0 ? add_backward : sub_backward, out, 2, in, sizeof g);
    if (n) *(bcast *)n->saved = g;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

qkv_tensor *qkv_add(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b) { return add_sub(ctx, "add", a, b, 1.0f); }
qkv_tensor *qkv_sub(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b) { return add_sub(ctx, "sub", a, b, -1.0f); }

static void mul_backward(qkv_ctx *ctx, qkv__node *n) {
    qkv_tensor *a = n->in[0], *b = n->in[1];
    const bcast *g = n->saved;
    float *da = a->requires_grad ? qkv__grad(ctx, a) : NULL;
    float *db = b->requires_grad ? qkv__grad(ctx, b) : NULL;
    if (ctx->status != QKV_OK) return;
    qkv__mul_backward(da, db, n->out->grad, a->data, b->data, g->R, g->b_rows, g->C);
}

qkv_tensor *qkv_mul(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b) {
    qkv_tensor *in[2] = {a, b};
    bcast g = {0, 0, 1};
    if (!ctx || !qkv__check(ctx, "mul", 2, in) || !broadcast_geometry(ctx, "mul", a, b, &g)) return NULL;
    qkv_tensor *out = qkv__empty(ctx, a->ndim, a->shape);
    if (!out) return NULL;
    out->name = "mul";
    qkv__mul_forward(out->data, a->data, b->data, g.R, g.b_rows, g.C);
    qkv__node *n = qkv__record(ctx, "mul", mul_backward, out, 2, in, sizeof g);
    if (n) *(bcast *)n->saved = g;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- scale ---- */

static void scale_backward(qkv_ctx *ctx, qkv__node *n) {
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__scale_backward(dx, n->out->grad, qkv_tensor_numel(n->out), *(const float *)n->saved);
}

qkv_tensor *qkv_scale(qkv_ctx *ctx, qkv_tensor *a, float s) {
    if (!ctx || !qkv__check(ctx, "scale", 1, &a)) return NULL;
    if (!isfinite(s)) {
        qkv__fail(ctx, QKV_ERR_ARG, "scale: factor %g is not finite (a %s)", (double)s, qkv__shp(a));
        return NULL;
    }
    qkv_tensor *out = qkv__empty(ctx, a->ndim, a->shape);
    if (!out) return NULL;
    out->name = "scale";
    qkv__scale_forward(out->data, a->data, qkv_tensor_numel(a), s);
    qkv__node *n = qkv__record(ctx, "scale", scale_backward, out, 1, &a, sizeof s);
    if (n) *(float *)n->saved = s;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- activations ---- */

/* The unary ops below differ only in their kernels; one entry point records whichever backward. */
static qkv_tensor *unary(qkv_ctx *ctx, const char *op, qkv_tensor *x, void (*fwd)(float *, const float *, int64_t),
                         qkv__backward_fn bw) {
    if (!ctx || !qkv__check(ctx, op, 1, &x)) return NULL;
    qkv_tensor *out = qkv__empty(ctx, x->ndim, x->shape);
    if (!out) return NULL;
    out->name = op;
    fwd(out->data, x->data, qkv_tensor_numel(x));
    qkv__record(ctx, op, bw, out, 1, &x, 0);
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

static void relu_backward(qkv_ctx *ctx, qkv__node *n) {
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__relu_backward(dx, n->out->grad, n->in[0]->data, qkv_tensor_numel(n->out));
}
qkv_tensor *qkv_relu(qkv_ctx *ctx, qkv_tensor *x) { return unary(ctx, "relu", x, qkv__relu_forward, relu_backward); }

static void tanh_backward(qkv_ctx *ctx, qkv__node *n) {
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__tanh_backward(dx, n->out->grad, n->out->data, qkv_tensor_numel(n->out));
}
qkv_tensor *qkv_tanh(qkv_ctx *ctx, qkv_tensor *x) { return unary(ctx, "tanh", x, qkv__tanh_forward, tanh_backward); }

static void sigmoid_backward(qkv_ctx *ctx, qkv__node *n) {
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__sigmoid_backward(dx, n->out->grad, n->out->data, qkv_tensor_numel(n->out));
}
qkv_tensor *qkv_sigmoid(qkv_ctx *ctx, qkv_tensor *x) {
    return unary(ctx, "sigmoid", x, qkv__sigmoid_forward, sigmoid_backward);
}

static void gelu_backward(qkv_ctx *ctx, qkv__node *n) {
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__gelu_backward(dx, n->out->grad, n->in[0]->data, qkv_tensor_numel(n->out), *(const int *)n->saved);
}

qkv_tensor *qkv_gelu(qkv_ctx *ctx, qkv_tensor *x, int approx_tanh) {
    if (!ctx || !qkv__check(ctx, "gelu", 1, &x)) return NULL;
    qkv_tensor *out = qkv__empty(ctx, x->ndim, x->shape);
    if (!out) return NULL;
    out->name = "gelu";
    int approx = approx_tanh != 0;
    qkv__gelu_forward(out->data, x->data, qkv_tensor_numel(x), approx);
    qkv__node *n = qkv__record(ctx, "gelu", gelu_backward, out, 1, &x, sizeof approx);
    if (n) *(int *)n->saved = approx;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- dropout ---- */

typedef struct {
    float p;
    uint64_t seed;
} dropout_saved;

static void dropout_backward(qkv_ctx *ctx, qkv__node *n) {
    const dropout_saved *s = n->saved;
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) qkv__dropout_backward(dx, n->out->grad, qkv_tensor_numel(n->out), s->p, s->seed);
}

qkv_tensor *qkv_dropout(qkv_ctx *ctx, qkv_tensor *x, float p) {
    if (!ctx || !qkv__check(ctx, "dropout", 1, &x)) return NULL;
    if (!(p >= 0.0f && p < 1.0f)) { /* written so that NaN fails too */
        qkv__fail(ctx, QKV_ERR_RANGE, "dropout: p = %g is outside [0, 1) (x %s)", (double)p, qkv__shp(x));
        return NULL;
    }
    /* Identity: the input itself, as PyTorch returns it. No seed is drawn (PyTorch draws no random
     * numbers here either), so an evaluation pass leaves the masks of later training steps as they were. */
    if (!ctx->training || p == 0.0f) return x;
    qkv_tensor *out = qkv__empty(ctx, x->ndim, x->shape);
    if (!out) return NULL;
    out->name = "dropout";
    dropout_saved s = {p, qkv__next_seed(ctx)};
    qkv__dropout_forward(out->data, x->data, qkv_tensor_numel(x), s.p, s.seed);
    qkv__node *n = qkv__record(ctx, "dropout", dropout_backward, out, 1, &x, sizeof s);
    if (n) *(dropout_saved *)n->saved = s;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

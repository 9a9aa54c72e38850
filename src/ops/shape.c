/* shape.c — ops that move values without arithmetic: reshape and rows (views), transpose, concat
 * and split (copies).
 *
 * What it is not: a strided-tensor library. Tensors are contiguous, so only two things can be views:
 * reshape (same data, new shape) and rows (a contiguous block of leading-dim rows). Everything else
 * copies, which keeps every kernel free to assume a contiguous inner dimension.
 *
 * Convention: a view shares data, so its output must never be written after it is made (no op
 * writes into its inputs, so none does). reshape's view gets its own gradient buffer and a tape node
 * that adds it back into x's; rows' view shares x's gradient buffer too, so gradients land in the
 * parameter directly and no node is needed. Dims are 0-based and must lie in [0, ndim): a negative
 * dim is an error, not Python's count from the end.
 */
#include <string.h>

#include "core/core_int.h"
#include "kernels/ew.h"
#include "qkv/ops.h"

/* A tensor header in the arena pointing at someone else's data (view). */
static qkv_tensor *view_of(qkv_ctx *ctx, float *data, int ndim, const int64_t *shape) {
    qkv_tensor *t = qkv__alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->data = data;
    t->ndim = ndim;
    for (int i = 0; i < QKV_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    return t;
}

/* Product of shape[lo..hi). */
static int64_t span(const int64_t *shape, int lo, int hi) {
    int64_t n = 1;
    for (int i = lo; i < hi; i++) n *= shape[i];
    return n;
}

/* Block copy: for o < outer, dst[o*dst_stride + j] (+)= src[o*src_stride + j], j < len. */
static void copy_blocks(float *dst, int64_t dst_stride, const float *src, int64_t src_stride, int64_t outer,
                        int64_t len, int accumulate) {
#pragma omp parallel for schedule(static) if (outer * len > QKV__PAR_MIN && outer > 1)
    for (int64_t o = 0; o < outer; o++) {
        float *d = dst + o * dst_stride;
        const float *s = src + o * src_stride;
        if (accumulate)
            for (int64_t j = 0; j < len; j++) d[j] += s[j];
        else
            memcpy(d, s, (size_t)len * sizeof(float));
    }
}

/* ---- reshape ---- */

static void reshape_backward(qkv_ctx *ctx, qkv__node *n) {
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) copy_blocks(dx, 0, n->out->grad, 0, 1, qkv_tensor_numel(n->out), 1);
}

qkv_tensor *qkv_reshape(qkv_ctx *ctx, qkv_tensor *x, int ndim, const int64_t *shape) {
    if (!ctx || !qkv__check(ctx, "reshape", 1, &x)) return NULL;
    if (ndim < 0 || ndim > QKV_MAX_DIMS) {
        qkv__fail(ctx, QKV_ERR_ARG, "reshape: %d dimensions (must be 0..%d) for x %s", ndim, QKV_MAX_DIMS,
                  qkv__shp(x));
        return NULL;
    }
    if (ndim > 0 && !shape) {
        qkv__fail(ctx, QKV_ERR_ARG, "reshape: shape is NULL for %d dimensions (x %s)", ndim, qkv__shp(x));
        return NULL;
    }
    const int64_t numel = qkv_tensor_numel(x);
    int64_t s[QKV_MAX_DIMS], known = 1;
    int infer = -1;
    for (int i = 0; i < ndim; i++) {
        s[i] = shape[i];
        if (s[i] == -1 && infer < 0) {
            infer = i;
        } else if (s[i] == -1) {
            qkv__fail(ctx, QKV_ERR_ARG, "reshape: more than one -1 in the new shape for x %s", qkv__shp(x));
            return NULL;
        } else if (s[i] < 1) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "reshape: dimension %d of the new shape is %lld (must be >= 1 or -1) for x %s",
                      i, (long long)s[i], qkv__shp(x));
            return NULL;
        } else {
            known *= s[i];
            if (known > numel) break; /* cannot match; also keeps the product from overflowing */
        }
    }
    if (infer >= 0 && known <= numel && numel % known == 0) s[infer] = numel / known;
    if ((infer >= 0 && (known > numel || numel % known != 0)) || (infer < 0 && known != numel)) {
        qkv_tensor asked = {.ndim = ndim}; /* only to print the requested shape, -1 included */
        memcpy(asked.shape, shape, (size_t)ndim * sizeof *shape);
        qkv__fail(ctx, QKV_ERR_SHAPE, "reshape: cannot view x %s (%lld elements) as %s", qkv__shp(x),
                  (long long)numel, qkv__shp(&asked));
        return NULL;
    }
    qkv_tensor *out = view_of(ctx, x->data, ndim, s);
    if (!out) return NULL;
    out->name = "reshape";
    qkv__record(ctx, "reshape", reshape_backward, out, 1, &x, 0);
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- transpose ---- */

/* x seen as (A, I, M, J, E) -> out (A, J, M, I, E) (+)=, i.e. the I and J dims swapped. */
static void swap_dims(float *out, const float *x, int64_t A, int64_t I, int64_t M, int64_t J, int64_t E,
                      int accumulate) {
#pragma omp parallel for collapse(2) schedule(static) if (A * I * M * J * E > QKV__PAR_MIN)
    for (int64_t a = 0; a < A; a++)
        for (int64_t j = 0; j < J; j++)
            for (int64_t m = 0; m < M; m++)
                for (int64_t i = 0; i < I; i++) {
                    float *d = out + (((a * J + j) * M + m) * I + i) * E;
                    const float *s = x + (((a * I + i) * M + m) * J + j) * E;
                    if (accumulate)
                        for (int64_t e = 0; e < E; e++) d[e] += s[e];
                    else
                        for (int64_t e = 0; e < E; e++) d[e] = s[e];
                }
}

typedef struct {
    int64_t A, I, M, J, E;
} transpose_saved;

static void transpose_backward(qkv_ctx *ctx, qkv__node *n) {
    const transpose_saved *g = n->saved;
    float *dx = qkv__grad(ctx, n->in[0]);
    /* out is (A, J, M, I, E); swapping back gives x's (A, I, M, J, E). */
    if (dx) swap_dims(dx, n->out->grad, g->A, g->J, g->M, g->I, g->E, 1);
}

qkv_tensor *qkv_transpose(qkv_ctx *ctx, qkv_tensor *x, int d0, int d1) {
    if (!ctx || !qkv__check(ctx, "transpose", 1, &x)) return NULL;
    if (d0 < 0 || d0 >= x->ndim || d1 < 0 || d1 >= x->ndim) {
        qkv__fail(ctx, QKV_ERR_ARG, "transpose: dims %d and %d must lie in [0,%d) for x %s", d0, d1, x->ndim,
                  qkv__shp(x));
        return NULL;
    }
    const int lo = d0 < d1 ? d0 : d1, hi = d0 < d1 ? d1 : d0;
    int64_t shape[QKV_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[lo] = x->shape[hi];
    shape[hi] = x->shape[lo];
    qkv_tensor *out = qkv__empty(ctx, x->ndim, shape);
    if (!out) return NULL;
    out->name = "transpose";
    transpose_saved g = {span(x->shape, 0, lo), x->shape[lo], span(x->shape, lo + 1, hi), x->shape[hi],
                         span(x->shape, hi + 1, x->ndim)};
    if (lo == hi) /* swapping a dim with itself: a plain copy */
        copy_blocks(out->data, 0, x->data, 0, 1, qkv_tensor_numel(x), 0);
    else
        swap_dims(out->data, x->data, g.A, g.I, g.M, g.J, g.E, 0);
    qkv__node *n = qkv__record(ctx, "transpose", transpose_backward, out, 1, &x, sizeof g);
    if (n) *(transpose_saved *)n->saved = g;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- concat, split: x seen as (outer, size on dim * inner) blocks ---- */

static void concat_backward(qkv_ctx *ctx, qkv__node *n) {
    const int dim = *(const int *)n->saved;
    const qkv_tensor *y = n->out;
    const int64_t outer = span(y->shape, 0, dim), inner = span(y->shape, dim + 1, y->ndim);
    const int64_t row = y->shape[dim] * inner; /* out floats per outer index */
    int64_t off = 0;
    for (int k = 0; k < n->n_in; k++) {
        qkv_tensor *x = n->in[k];
        const int64_t len = x->shape[dim] * inner;
        if (x->requires_grad) {
            float *dx = qkv__grad(ctx, x);
            if (!dx) return;
            copy_blocks(dx, len, y->grad + off, row, outer, len, 1);
        }
        off += len;
    }
}

qkv_tensor *qkv_concat(qkv_ctx *ctx, int n, qkv_tensor *const *xs, int dim) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (n < 1 || !xs) {
        qkv__fail(ctx, QKV_ERR_ARG, "concat: needs at least one tensor (n = %d%s)", n, xs ? "" : ", xs NULL");
        return NULL;
    }
    if (!qkv__check(ctx, "concat", n, xs)) return NULL;
    const qkv_tensor *x0 = xs[0];
    if (dim < 0 || dim >= x0->ndim) {
        qkv__fail(ctx, QKV_ERR_ARG, "concat: dim %d must lie in [0,%d) for input 0 %s", dim, x0->ndim, qkv__shp(x0));
        return NULL;
    }
    int64_t shape[QKV_MAX_DIMS];
    memcpy(shape, x0->shape, sizeof shape);
    for (int k = 1; k < n; k++) {
        const qkv_tensor *x = xs[k];
        int ok = x->ndim == x0->ndim;
        for (int d = 0; ok && d < x0->ndim; d++) ok = d == dim || x->shape[d] == x0->shape[d];
        if (!ok) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "concat: input %d %s does not match input 0 %s outside dim %d", k,
                      qkv__shp(x), qkv__shp(x0), dim);
            return NULL;
        }
        shape[dim] += x->shape[dim];
    }
    qkv_tensor *out = qkv__empty(ctx, x0->ndim, shape);
    if (!out) return NULL;
    out->name = "concat";
    const int64_t outer = span(shape, 0, dim), inner = span(shape, dim + 1, x0->ndim), row = shape[dim] * inner;
    int64_t off = 0;
    for (int k = 0; k < n; k++) {
        const int64_t len = xs[k]->shape[dim] * inner;
        copy_blocks(out->data + off, row, xs[k]->data, len, outer, len, 0);
        off += len;
    }
    qkv__node *node = qkv__record(ctx, "concat", concat_backward, out, n, xs, sizeof dim);
    if (node) *(int *)node->saved = dim;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* One node per piece: piece p's gradient goes back into its own slice of x. */
typedef struct {
    int64_t outer, row, off, len; /* x is (outer, row); the piece is columns [off, off+len) */
} split_saved;

static void split_backward(qkv_ctx *ctx, qkv__node *n) {
    const split_saved *s = n->saved;
    float *dx = qkv__grad(ctx, n->in[0]);
    if (dx) copy_blocks(dx + s->off, s->row, n->out->grad, s->len, s->outer, s->len, 1);
}

qkv_status qkv_split(qkv_ctx *ctx, qkv_tensor *x, int dim, int n, const int64_t *sizes, qkv_tensor **out) {
    if (!ctx) return QKV_ERR_ARG;
    if (!qkv__check(ctx, "split", 1, &x)) return qkv_ctx_status(ctx);
    if (n < 1 || !sizes || !out) {
        if (n < 1)
            qkv__fail(ctx, QKV_ERR_ARG, "split: n = %d pieces (must be >= 1) for x %s", n, qkv__shp(x));
        else
            qkv__fail(ctx, QKV_ERR_ARG, "split: %s is NULL (x %s)", sizes ? "out" : "sizes", qkv__shp(x));
        return qkv_ctx_status(ctx);
    }
    if (dim < 0 || dim >= x->ndim) {
        qkv__fail(ctx, QKV_ERR_ARG, "split: dim %d must lie in [0,%d) for x %s", dim, x->ndim, qkv__shp(x));
        return qkv_ctx_status(ctx);
    }
    int64_t total = 0;
    for (int k = 0; k < n; k++) {
        if (sizes[k] < 1) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "split: piece %d has size %lld (must be >= 1) for x %s", k,
                      (long long)sizes[k], qkv__shp(x));
            return qkv_ctx_status(ctx);
        }
        if (sizes[k] > x->shape[dim] - total) { /* written so that the sum cannot overflow */
            qkv__fail(ctx, QKV_ERR_SHAPE, "split: pieces 0..%d already exceed x %s's %lld on dim %d", k, qkv__shp(x),
                      (long long)x->shape[dim], dim);
            return qkv_ctx_status(ctx);
        }
        total += sizes[k];
    }
    if (total != x->shape[dim]) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "split: the %d sizes sum to %lld, not x %s's %lld on dim %d", n,
                  (long long)total, qkv__shp(x), (long long)x->shape[dim], dim);
        return qkv_ctx_status(ctx);
    }
    const int64_t outer = span(x->shape, 0, dim), inner = span(x->shape, dim + 1, x->ndim);
    const int64_t row = x->shape[dim] * inner;
    /* The pieces are built in the arena first; out is written only once all of them succeeded. */
    qkv_tensor **pieces = qkv__alloc(ctx, (size_t)n * sizeof *pieces);
    if (!pieces) return qkv_ctx_status(ctx);
    int64_t shape[QKV_MAX_DIMS], off = 0;
    memcpy(shape, x->shape, sizeof shape);
    for (int k = 0; k < n; k++) {
        shape[dim] = sizes[k];
        qkv_tensor *p = qkv__empty(ctx, x->ndim, shape);
        if (!p) return qkv_ctx_status(ctx);
        p->name = "split";
        split_saved s = {outer, row, off, sizes[k] * inner};
        copy_blocks(p->data, s.len, x->data + off, row, outer, s.len, 0);
        qkv__node *node = qkv__record(ctx, "split", split_backward, p, 1, &x, sizeof s);
        if (node) *(split_saved *)node->saved = s;
        if (qkv_ctx_status(ctx) != QKV_OK) return qkv_ctx_status(ctx);
        pieces[k] = p;
        off += s.len;
    }
    memcpy(out, pieces, (size_t)n * sizeof *pieces);
    return QKV_OK;
}

/* ---- rows: a view of x[r0:r1] sharing data and grad ---- */

qkv_tensor *qkv_rows(qkv_ctx *ctx, qkv_tensor *x, int64_t r0, int64_t r1) {
    if (!ctx || !qkv__check(ctx, "rows", 1, &x)) return NULL;
    if (x->ndim < 1) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "rows: x %s needs at least 1 dimension", qkv__shp(x));
        return NULL;
    }
    if (r0 < 0 || r1 <= r0 || r1 > x->shape[0]) {
        qkv__fail(ctx, QKV_ERR_RANGE, "rows: [%lld, %lld) is not a non-empty range within the %lld rows of x %s",
                  (long long)r0, (long long)r1, (long long)x->shape[0], qkv__shp(x));
        return NULL;
    }
    const int want_grad = ctx->grad_enabled && x->requires_grad;
    if (want_grad && !x->grad) {
        qkv__fail(ctx, QKV_ERR_STATE,
                  "rows: x %s requires grad but has no gradient buffer to share (use it on a parameter, "
                  "or a tensor whose grad is allocated)",
                  qkv__shp(x));
        return NULL;
    }
    const int64_t row = span(x->shape, 1, x->ndim);
    int64_t shape[QKV_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[0] = r1 - r0;
    qkv_tensor *out = view_of(ctx, x->data + r0 * row, x->ndim, shape);
    if (!out) return NULL;
    out->name = "rows";
    if (x->grad) out->grad = x->grad + r0 * row;
    out->requires_grad = want_grad;
    return out;
}

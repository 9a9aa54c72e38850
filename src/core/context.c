/* context.c — the arena that holds every activation of a step, and the autograd tape.
 *
 * The arena is a list of chunks; allocation bumps a pointer. When a step needed more than the first
 * chunk, the next reset replaces all chunks by one chunk as large as the peak, so from the second
 * step on a steady loop never calls malloc. The tape is a singly linked list of nodes (newest first)
 * living in the same arena; backward walks it from the newest node.
 *
 * Not here: the ops themselves (src/ops/), parameter storage (params.c).
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"

#define ARENA_ALIGN 64
#define ARENA_DEFAULT (64u << 20)

static qkv__chunk *chunk_new(size_t size) {
    qkv__chunk *c = malloc(sizeof *c);
    if (!c) return NULL;
    size = (size + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    c->base = qkv__big_alloc(size);
    if (!c->base) {
        free(c);
        return NULL;
    }
    c->size = size;
    c->used = 0;
    c->next = NULL;
    return c;
}

static void chunks_free(qkv__chunk *c) {
    while (c) {
        qkv__chunk *n = c->next;
        qkv__big_free(c->base, c->size);
        free(c);
        c = n;
    }
}

qkv_ctx *qkv_ctx_new(size_t arena_bytes) {
    qkv_ctx *ctx = calloc(1, sizeof *ctx);
    if (!ctx) {
        qkv__set_error(QKV_ERR_NOMEM, "qkv_ctx_new: out of memory");
        return NULL;
    }
    ctx->chunks = chunk_new(arena_bytes ? arena_bytes : ARENA_DEFAULT);
    if (!ctx->chunks) {
        free(ctx);
        qkv__set_error(QKV_ERR_NOMEM, "qkv_ctx_new: cannot reserve %zu bytes of arena", arena_bytes);
        return NULL;
    }
    ctx->capacity = ctx->chunks->size;
    ctx->grad_enabled = 1;
    ctx->check_finite = 1;
    qkv_rng_seed(&ctx->rng, 0);
    return ctx;
}

void qkv_ctx_free(qkv_ctx *ctx) {
    if (!ctx) return;
    chunks_free(ctx->chunks);
    free(ctx);
}

void qkv_ctx_reset(qkv_ctx *ctx) {
    if (ctx->chunks && ctx->chunks->next) {
        /* The last step overflowed the first chunk: replace the list by one chunk of the peak size
         * (plus an eighth of slack) so the next identical step fits without allocating. */
        size_t want = ctx->peak + ctx->peak / 8;
        qkv__chunk *c = chunk_new(want);
        if (c) {
            chunks_free(ctx->chunks);
            ctx->chunks = c;
            ctx->capacity = c->size;
        }
    }
    for (qkv__chunk *c = ctx->chunks; c; c = c->next) c->used = 0;
    ctx->used_total = 0;
    ctx->tape = NULL;
}

void *qkv__alloc(qkv_ctx *ctx, size_t bytes) {
    size_t need = (bytes + ARENA_ALIGN - 1) / ARENA_ALIGN * ARENA_ALIGN;
    if (need == 0) need = ARENA_ALIGN;
    qkv__chunk *c = ctx->chunks;
    /* After a reset that could not coalesce, later chunks may still be free: use the first that fits. */
    for (; c; c = c->next)
        if (c->size - c->used >= need) break;
    if (!c) {
        size_t sz = ctx->capacity > need * 2 ? ctx->capacity : need * 2;
        c = chunk_new(sz);
        if (!c) {
            qkv__fail(ctx, QKV_ERR_NOMEM, "arena: out of memory allocating %zu bytes (arena holds %zu)", need,
                      ctx->capacity);
            return NULL;
        }
        c->next = ctx->chunks;
        ctx->chunks = c;
        ctx->capacity += c->size;
    }
    void *p = c->base + c->used;
    c->used += need;
    ctx->used_total += need;
    if (ctx->used_total > ctx->peak) ctx->peak = ctx->used_total;
    return p;
}

void *qkv_ctx_alloc(qkv_ctx *ctx, size_t bytes) { return qkv__alloc(ctx, bytes); }

size_t qkv_ctx_arena_used(const qkv_ctx *ctx) { return ctx->used_total; }
size_t qkv_ctx_arena_peak(const qkv_ctx *ctx) { return ctx->peak; }
size_t qkv_ctx_arena_capacity(const qkv_ctx *ctx) { return ctx->capacity; }

void qkv_ctx_set_grad(qkv_ctx *ctx, int enabled) { ctx->grad_enabled = enabled != 0; }
int qkv_ctx_grad_enabled(const qkv_ctx *ctx) { return ctx->grad_enabled; }
void qkv_ctx_set_training(qkv_ctx *ctx, int training) { ctx->training = training != 0; }
int qkv_ctx_training(const qkv_ctx *ctx) { return ctx->training; }
void qkv_ctx_set_check_finite(qkv_ctx *ctx, int enabled) { ctx->check_finite = enabled != 0; }
void qkv_ctx_seed(qkv_ctx *ctx, uint64_t seed) { qkv_rng_seed(&ctx->rng, seed); }
uint64_t qkv__next_seed(qkv_ctx *ctx) { return qkv_rng_u64(&ctx->rng); }

/* ---- tensors ---- */

int64_t qkv_tensor_numel(const qkv_tensor *t) {
    int64_t n = 1;
    for (int i = 0; i < t->ndim; i++) n *= t->shape[i];
    return n;
}

char *qkv_tensor_shape_str(const qkv_tensor *t, char *buf, size_t size) {
    size_t k = 0;
    if (size == 0) return buf;
    buf[0] = '\0';
    k += (size_t)snprintf(buf + k, size - k, "(");
    for (int i = 0; i < t->ndim && k < size; i++)
        k += (size_t)snprintf(buf + k, size - k, i ? ",%lld" : "%lld", (long long)t->shape[i]);
    if (k < size) snprintf(buf + k, size - k, ")");
    return buf;
}

const char *qkv__shp(const qkv_tensor *t) {
    static _Thread_local char bufs[4][64];
    static _Thread_local int next;
    char *b = bufs[next++ & 3];
    if (!t) return "(null)";
    return qkv_tensor_shape_str(t, b, 64);
}

int qkv__same_shape(const qkv_tensor *a, const qkv_tensor *b) {
    if (a->ndim != b->ndim) return 0;
    for (int i = 0; i < a->ndim; i++)
        if (a->shape[i] != b->shape[i]) return 0;
    return 1;
}

qkv_tensor *qkv__empty(qkv_ctx *ctx, int ndim, const int64_t *shape) {
    if (ndim < 0 || ndim > QKV_MAX_DIMS) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "tensor: %d dimensions (at most %d)", ndim, QKV_MAX_DIMS);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "tensor: dimension %d has size %lld (must be >= 1)", i,
                      (long long)shape[i]);
            return NULL;
        }
        if (n > INT64_MAX / 4 / shape[i]) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "tensor: too many elements");
            return NULL;
        }
        n *= shape[i];
    }
    qkv_tensor *t = qkv__alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->data = qkv__alloc(ctx, (size_t)n * sizeof(float));
    if (!t->data) return NULL;
    t->ndim = ndim;
    for (int i = 0; i < QKV_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    return t;
}

qkv_tensor *qkv_tensor_new(qkv_ctx *ctx, int ndim, const int64_t *shape) {
    if (ctx->status != QKV_OK) return NULL;
    qkv_tensor *t = qkv__empty(ctx, ndim, shape);
    if (t) memset(t->data, 0, (size_t)qkv_tensor_numel(t) * sizeof(float));
    return t;
}

qkv_tensor *qkv_tensor_new1(qkv_ctx *ctx, int64_t d0) { return qkv_tensor_new(ctx, 1, (int64_t[]){d0}); }
qkv_tensor *qkv_tensor_new2(qkv_ctx *ctx, int64_t d0, int64_t d1) {
    return qkv_tensor_new(ctx, 2, (int64_t[]){d0, d1});
}
qkv_tensor *qkv_tensor_new3(qkv_ctx *ctx, int64_t d0, int64_t d1, int64_t d2) {
    return qkv_tensor_new(ctx, 3, (int64_t[]){d0, d1, d2});
}
qkv_tensor *qkv_tensor_new4(qkv_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    return qkv_tensor_new(ctx, 4, (int64_t[]){d0, d1, d2, d3});
}

qkv_tensor *qkv_tensor_from(qkv_ctx *ctx, int ndim, const int64_t *shape, const float *data) {
    if (ctx->status != QKV_OK) return NULL;
    if (!data) {
        qkv__fail(ctx, QKV_ERR_ARG, "qkv_tensor_from: data is NULL");
        return NULL;
    }
    qkv_tensor *t = qkv__empty(ctx, ndim, shape);
    if (t) memcpy(t->data, data, (size_t)qkv_tensor_numel(t) * sizeof(float));
    return t;
}

qkv_tensor *qkv_tensor_wrap(qkv_ctx *ctx, int ndim, const int64_t *shape, float *data) {
    if (ctx->status != QKV_OK) return NULL;
    if (!data || (ndim > 0 && !shape)) {
        qkv__fail(ctx, QKV_ERR_ARG, "qkv_tensor_wrap: %s is NULL", data ? "shape" : "data");
        return NULL;
    }
    if (ndim < 0 || ndim > QKV_MAX_DIMS) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "qkv_tensor_wrap: %d dimensions (at most %d)", ndim, QKV_MAX_DIMS);
        return NULL;
    }
    for (int i = 0; i < ndim; i++)
        if (shape[i] <= 0) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "qkv_tensor_wrap: dimension %d has size %lld (must be >= 1)", i,
                      (long long)shape[i]);
            return NULL;
        }
    qkv_tensor *t = qkv__alloc(ctx, sizeof *t);
    if (!t) return NULL;
    memset(t, 0, sizeof *t);
    t->data = data;
    t->ndim = ndim;
    for (int i = 0; i < QKV_MAX_DIMS; i++) t->shape[i] = i < ndim ? shape[i] : 1;
    t->name = "wrap";
    return t;
}

/* ---- op helpers ---- */

int qkv__check_finite(qkv_ctx *ctx, const char *op, const char *what, const float *x, int64_t n) {
    if (!ctx->check_finite) return 1;
    for (int64_t i = 0; i < n; i++)
        if (!isfinite(x[i]))
            return qkv__fail(ctx, QKV_ERR_NONFINITE, "%s: %s contains %s at index %lld", op, what,
                             isnan(x[i]) ? "NaN" : "Inf", (long long)i);
    return 1;
}

int qkv__check(qkv_ctx *ctx, const char *op, int n, qkv_tensor *const *in) {
    if (ctx->status != QKV_OK) return 0;
    for (int i = 0; i < n; i++)
        if (!in[i]) return qkv__fail(ctx, QKV_ERR_ARG, "%s: input %d is NULL", op, i);
    if (ctx->check_finite) {
        for (int i = 0; i < n; i++) {
            const float *x = in[i]->data;
            int64_t m = qkv_tensor_numel(in[i]);
            /* Summing is one vectorisable pass; only when the sum is not finite do we look for where. */
            float s = 0.0f;
            for (int64_t j = 0; j < m; j++) s += x[j] * 0.0f;
            if (s != 0.0f || isnan(s)) {
                for (int64_t j = 0; j < m; j++)
                    if (!isfinite(x[j]))
                        return qkv__fail(ctx, QKV_ERR_NONFINITE, "%s: input %d %s contains %s at index %lld", op,
                                         i, qkv__shp(in[i]), isnan(x[j]) ? "NaN" : "Inf", (long long)j);
            }
        }
    }
    return 1;
}

int qkv__wants_grad(const qkv_ctx *ctx, int n, qkv_tensor *const *in) {
    if (!ctx->grad_enabled) return 0;
    for (int i = 0; i < n; i++)
        if (in[i] && in[i]->requires_grad) return 1;
    return 0;
}

qkv__node *qkv__record(qkv_ctx *ctx, const char *op, qkv__backward_fn bw, qkv_tensor *out, int n,
                       qkv_tensor *const *in, size_t saved_bytes) {
    if (!out || !qkv__wants_grad(ctx, n, in)) return NULL;
    qkv__node *node = qkv__alloc(ctx, sizeof *node);
    if (!node) return NULL;
    node->in = qkv__alloc(ctx, sizeof(qkv_tensor *) * (size_t)(n > 0 ? n : 1));
    node->saved = saved_bytes ? qkv__alloc(ctx, saved_bytes) : NULL;
    if (!node->in || (saved_bytes && !node->saved)) return NULL;
    if (saved_bytes) memset(node->saved, 0, saved_bytes);
    for (int i = 0; i < n; i++) node->in[i] = in[i];
    node->n_in = n;
    node->backward = bw;
    node->op = op;
    node->out = out;
    node->prev = ctx->tape;
    ctx->tape = node;
    out->requires_grad = 1;
    return node;
}

float *qkv__grad(qkv_ctx *ctx, qkv_tensor *t) {
    if (!t->grad) {
        size_t bytes = (size_t)qkv_tensor_numel(t) * sizeof(float);
        t->grad = qkv__alloc(ctx, bytes);
        if (t->grad) memset(t->grad, 0, bytes);
    }
    return t->grad;
}

qkv_status qkv_backward(qkv_ctx *ctx, qkv_tensor *loss) {
    if (ctx->status != QKV_OK) return ctx->status;
    if (!loss) {
        qkv__fail(ctx, QKV_ERR_ARG, "backward: loss is NULL");
        return ctx->status;
    }
    if (qkv_tensor_numel(loss) != 1) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "backward: loss must be a scalar, got %s", qkv__shp(loss));
        return ctx->status;
    }
    if (!loss->requires_grad) {
        qkv__fail(ctx, QKV_ERR_STATE, "backward: loss does not require grad (grad recording off, or no input "
                                      "requires grad)");
        return ctx->status;
    }
    float *g = qkv__grad(ctx, loss);
    if (!g) return ctx->status;
    g[0] += 1.0f;
    for (qkv__node *n = ctx->tape; n; n = n->prev) {
        if (!n->out->grad) continue; /* this node does not lead to the loss */
        n->backward(ctx, n);
        if (ctx->status != QKV_OK) return ctx->status;
    }
    /* The tape has been consumed: a second backward over it would double-count. */
    ctx->tape = NULL;
    return ctx->status;
}

/* loss.c — the two ops that take int32 token ids: the embedding lookup and cross-entropy.
 *
 * What it is not: the embedding module with its parameter (src/nn/) or metrics such as accuracy.
 * The loops are in kernels/ew.c.
 *
 * Convention: ids and targets belong to the caller and are read during the call only, so an op that
 * needs them in backward copies them into the arena. Every id is range-checked before any output is
 * written, and the error names the id and its position. Cross-entropy is fused (log-softmax + NLL)
 * and keeps only what its backward needs: per row the max and the log of the sum of exponentials
 * (2 floats), plus the targets; the probabilities are recomputed from the logits.
 */
#include <stdio.h>
#include <string.h>

#include "core/core_int.h"
#include "kernels/ew.h"
#include "qkv/ops.h"

/* Counts the ids in [0,V), skipping those equal to *skip when skip is given. On an id outside
 * that range: -1, and the error names the op, the id, its position in the ids array (of the given
 * shape) and the tensor it indexes. what is "id" or "target"; label names the indexed tensor. */
static int64_t check_ids(qkv_ctx *ctx, const char *op, const char *what, const int32_t *ids, int ndim,
                         const int64_t *shape, int64_t V, const int32_t *skip, const char *label,
                         const qkv_tensor *indexed) {
    int64_t n = 1, count = 0;
    for (int d = 0; d < ndim; d++) n *= shape[d];
    for (int64_t i = 0; i < n; i++) {
        if (skip && ids[i] == *skip) continue;
        if (ids[i] >= 0 && ids[i] < V) {
            count++;
            continue;
        }
        int64_t idx[QKV_MAX_DIMS], rest = i;
        for (int d = ndim - 1; d >= 0; d--) {
            idx[d] = rest % shape[d];
            rest /= shape[d];
        }
        char pos[96], also[64] = "";
        size_t k = (size_t)snprintf(pos, sizeof pos, "[");
        for (int d = 0; d < ndim && k < sizeof pos; d++)
            k += (size_t)snprintf(pos + k, sizeof pos - k, d ? ",%lld" : "%lld", (long long)idx[d]);
        if (k < sizeof pos) snprintf(pos + k, sizeof pos - k, "]");
        if (skip) snprintf(also, sizeof also, " and is not ignore_index %d", (int)*skip);
        qkv__fail(ctx, QKV_ERR_RANGE, "%s: %s %d at position %s (flat %lld) is outside [0,%lld)%s (%s %s)", op, what,
                  (int)ids[i], pos, (long long)i, (long long)V, also, label, qkv__shp(indexed));
        return -1;
    }
    return count;
}

/* Copies n int32 into the arena (they outlive the caller's array until backward). */
static int32_t *copy_ids(qkv_ctx *ctx, const int32_t *ids, int64_t n) {
    int32_t *c = qkv__alloc(ctx, (size_t)n * sizeof(int32_t));
    if (c) memcpy(c, ids, (size_t)n * sizeof(int32_t));
    return c;
}

/* ---- embedding ---- */

typedef struct {
    int32_t *ids; /* (R) arena copy */
    int64_t R;
} embedding_saved;

static void embedding_backward(qkv_ctx *ctx, qkv__node *n) {
    const embedding_saved *s = n->saved;
    qkv_tensor *w = n->in[0];
    float *dw = qkv__grad(ctx, w);
    if (dw) qkv__embedding_backward(dw, n->out->grad, s->ids, s->R, w->shape[1]);
}

qkv_tensor *qkv_embedding(qkv_ctx *ctx, qkv_tensor *weight, const int32_t *ids, int ndim, const int64_t *shape) {
    if (!ctx || !qkv__check(ctx, "embedding", 1, &weight)) return NULL;
    if (weight->ndim != 2) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "embedding: weight %s must be (V,C)", qkv__shp(weight));
        return NULL;
    }
    if (!ids || !shape) {
        qkv__fail(ctx, QKV_ERR_ARG, "embedding: %s is NULL", ids ? "shape" : "ids");
        return NULL;
    }
    if (ndim < 1 || ndim > 3) {
        qkv__fail(ctx, QKV_ERR_ARG, "embedding: ids have %d dimensions (must be 1..3)", ndim);
        return NULL;
    }
    const int64_t V = weight->shape[0], C = weight->shape[1];
    int64_t oshape[QKV_MAX_DIMS], R = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 1) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "embedding: ids dimension %d has size %lld (must be >= 1)", d,
                      (long long)shape[d]);
            return NULL;
        }
        oshape[d] = shape[d];
        R *= shape[d];
    }
    oshape[ndim] = C;
    if (check_ids(ctx, "embedding", "id", ids, ndim, shape, V, NULL, "weight", weight) < 0) return NULL;
    qkv_tensor *out = qkv__empty(ctx, ndim + 1, oshape);
    if (!out) return NULL;
    out->name = "embedding";
    qkv__embedding_forward(out->data, weight->data, ids, R, C);
    if (qkv__wants_grad(ctx, 1, &weight)) {
        embedding_saved s = {copy_ids(ctx, ids, R), R};
        if (!s.ids) return NULL;
        qkv__node *n = qkv__record(ctx, "embedding", embedding_backward, out, 1, &weight, sizeof s);
        if (n) *(embedding_saved *)n->saved = s;
    }
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- cross-entropy ---- */

typedef struct {
    int32_t *targets;     /* (R) arena copy */
    float *max, *logsum;  /* (R) each */
    int64_t R, V, count;  /* count: targets not ignored */
    int32_t ignore_index;
} ce_saved;

static void cross_entropy_backward(qkv_ctx *ctx, qkv__node *n) {
    const ce_saved *s = n->saved;
    qkv_tensor *logits = n->in[0];
    float *dl = qkv__grad(ctx, logits);
    if (!dl || s->count == 0) return; /* every target ignored: the loss is a constant 0 */
    float dloss = (float)((double)n->out->grad[0] / (double)s->count);
    qkv__crossentropy_backward(dl, logits->data, s->max, s->logsum, s->targets, s->R, s->V, s->ignore_index, dloss);
}

qkv_tensor *qkv_cross_entropy(qkv_ctx *ctx, qkv_tensor *logits, const int32_t *targets, int32_t ignore_index) {
    if (!ctx || !qkv__check(ctx, "cross_entropy", 1, &logits)) return NULL;
    if (logits->ndim < 1) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "cross_entropy: logits %s need a last (vocabulary) dimension", qkv__shp(logits));
        return NULL;
    }
    if (!targets) {
        qkv__fail(ctx, QKV_ERR_ARG, "cross_entropy: targets is NULL (logits %s)", qkv__shp(logits));
        return NULL;
    }
    const int64_t V = logits->shape[logits->ndim - 1], R = qkv_tensor_numel(logits) / V;
    const int64_t count = check_ids(ctx, "cross_entropy", "target", targets, logits->ndim - 1, logits->shape, V,
                                    &ignore_index, "logits", logits);
    if (count < 0) return NULL;
    int64_t one = 1;
    qkv_tensor *out = qkv__empty(ctx, 0, &one);
    ce_saved s = {.max = qkv__alloc(ctx, (size_t)R * sizeof(float)),
                  .logsum = qkv__alloc(ctx, (size_t)R * sizeof(float)),
                  .R = R, .V = V, .count = count, .ignore_index = ignore_index};
    if (!out || !s.max || !s.logsum) return NULL;
    out->name = "cross_entropy";
    double total = qkv__crossentropy_forward(s.max, s.logsum, logits->data, targets, R, V, ignore_index);
    out->data[0] = count ? (float)(total / (double)count) : 0.0f;
    if (qkv__wants_grad(ctx, 1, &logits)) {
        s.targets = copy_ids(ctx, targets, R);
        if (!s.targets) return NULL;
        qkv__node *n = qkv__record(ctx, "cross_entropy", cross_entropy_backward, out, 1, &logits, sizeof s);
        if (n) *(ce_saved *)n->saved = s;
    }
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

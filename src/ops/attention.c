/* attention.c (ops) — the attention ops: multi-head scaled dot-product attention, masked softmax
 * over explicit scores, and Bahdanau additive scores, each with its backward beside it.
 *
 * Not here: the attention arithmetic itself (src/kernels/attention.c: tiled online softmax, the
 * recomputing backward, the reference); nn-level modules with projections (src/nn/).
 *
 * Convention a reader needs: masks follow PyTorch — key_padding_mask (B,Tk) nonzero means "this key
 * is padding, blocked", causal means query i sees key j iff j <= i + (Tk - Tq) — and a row with
 * every key blocked gives 0 (PyTorch: NaN) and a zero gradient. Mask arrays belong to the caller
 * and are read during the call; when a backward needs one it keeps a copy in the arena.
 */
#include <math.h>
#include <omp.h>
#include <string.h>

#include "core/core_int.h"
#include "kernels/attention.h"
#include "qkv/ops.h"

/* A copy of the caller's (B,Tk) mask in the arena, for a backward that runs after the call. */
static const uint8_t *keep_mask(qkv_ctx *ctx, const uint8_t *mask, int64_t n) {
    if (!mask) return NULL;
    uint8_t *m = qkv__alloc(ctx, (size_t)n);
    if (m) memcpy(m, mask, (size_t)n);
    return m;
}

/* ---- qkv_attention ---- */

typedef struct {
    qkv__attn a;        /* the kernel arguments of the forward (mask pointing at the arena copy) */
    float *lse;         /* (B,H,Tq) row logsumexp of the scores */
    qkv_tensor *weights; /* the materialised probabilities when the caller asked for them, else NULL */
} attention_saved;

static void attention_backward(qkv_ctx *ctx, qkv__node *n) {
    attention_saved *s = n->saved;
    qkv_tensor *q = n->in[0], *k = n->in[1], *v = n->in[2];
    float *dq = q->requires_grad ? qkv__grad(ctx, q) : NULL;
    float *dk = k->requires_grad ? qkv__grad(ctx, k) : NULL;
    float *dv = v->requires_grad ? qkv__grad(ctx, v) : NULL;
    if ((q->requires_grad && !dq) || (k->requires_grad && !dk) || (v->requires_grad && !dv)) return;
    qkv__attn a = s->a;
    a.nthreads = omp_get_max_threads();
    void *ws = qkv__alloc(ctx, qkv__attention_ws_bytes(&a));
    if (!ws) return;
    qkv__attention_backward(&a, q->data, k->data, v->data, n->out->data, s->lse,
                            s->weights ? s->weights->data : NULL, n->out->grad, dq, dk, dv, ws);
}

qkv_tensor *qkv_attention(qkv_ctx *ctx, qkv_tensor *q, qkv_tensor *k, qkv_tensor *v, const qkv_attn_opts *opts) {
    qkv_tensor *in[3] = {q, k, v};
    if (!qkv__check(ctx, "attention", 3, in)) return NULL;
    if (!opts) {
        qkv__fail(ctx, QKV_ERR_ARG, "attention: opts is NULL");
        return NULL;
    }
    if (q->ndim != 3 || k->ndim != 3 || v->ndim != 3) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "attention: q, k, v must be 3-D (B,T,C), got q %s k %s v %s", qkv__shp(q),
                  qkv__shp(k), qkv__shp(v));
        return NULL;
    }
    const int H = opts->n_head;
    if (H < 1) {
        qkv__fail(ctx, QKV_ERR_RANGE, "attention: n_head is %d (must be >= 1)", H);
        return NULL;
    }
    if (q->shape[0] != k->shape[0] || q->shape[0] != v->shape[0]) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "attention: batch sizes differ: q %s k %s v %s", qkv__shp(q), qkv__shp(k),
                  qkv__shp(v));
        return NULL;
    }
    if (k->shape[1] != v->shape[1]) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "attention: k %s and v %s must have the same length Tk", qkv__shp(k),
                  qkv__shp(v));
        return NULL;
    }
    if (q->shape[2] != k->shape[2]) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "attention: q %s and k %s must have the same channels", qkv__shp(q),
                  qkv__shp(k));
        return NULL;
    }
    if (q->shape[2] % H || v->shape[2] % H) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "attention: channels of q %s and v %s must be divisible by n_head %d",
                  qkv__shp(q), qkv__shp(v), H);
        return NULL;
    }
    if (!(opts->dropout >= 0.0f && opts->dropout < 1.0f)) {
        qkv__fail(ctx, QKV_ERR_RANGE, "attention: dropout %g out of range [0, 1)", (double)opts->dropout);
        return NULL;
    }
    if (!(isfinite(opts->scale) && opts->scale >= 0.0f)) {
        qkv__fail(ctx, QKV_ERR_RANGE, "attention: scale %g must be finite and >= 0 (0: 1/sqrt(D))",
                  (double)opts->scale);
        return NULL;
    }

    const int64_t B = q->shape[0], Tq = q->shape[1], Tk = k->shape[1];
    qkv__attn a = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .D = q->shape[2] / H, .Dv = v->shape[2] / H,
                   .causal = opts->causal != 0, .key_padding_mask = opts->key_padding_mask,
                   .nthreads = omp_get_max_threads()};
    a.scale = opts->scale > 0.0f ? opts->scale : 1.0f / sqrtf((float)a.D);
    if (qkv_ctx_training(ctx) && opts->dropout > 0.0f) {
        a.dropout = opts->dropout;
        a.seed = qkv__next_seed(ctx);
    }
    const int record = qkv__wants_grad(ctx, 3, in);

    qkv_tensor *out = qkv__empty(ctx, 3, (int64_t[]){B, Tq, v->shape[2]});
    qkv_tensor *w = opts->weights ? qkv__empty(ctx, 4, (int64_t[]){B, H, Tq, Tk}) : NULL;
    float *lse = record ? qkv__alloc(ctx, sizeof(float) * (size_t)(B * H * Tq)) : NULL;
    void *ws = out ? qkv__alloc(ctx, qkv__attention_ws_bytes(&a)) : NULL;
    if (!out || (opts->weights && !w) || (record && !lse) || !ws) return NULL;
    qkv__attention_forward(&a, q->data, k->data, v->data, out->data, lse, w ? w->data : NULL, ws);

    qkv__node *n = qkv__record(ctx, "attention", attention_backward, out, 3, in, sizeof(attention_saved));
    if (n) {
        attention_saved *s = n->saved;
        s->a = a;
        s->a.key_padding_mask = keep_mask(ctx, opts->key_padding_mask, B * Tk);
        s->lse = lse;
        s->weights = w;
        if (opts->key_padding_mask && !s->a.key_padding_mask) return NULL;
    } else if (ctx->status != QKV_OK) {
        return NULL;
    }
    if (w) {
        w->name = "attention.weights";
        *opts->weights = w; /* only on success: a failed call leaves the caller's pointer alone */
    }
    return out;
}

/* ---- qkv_softmax_masked ---- */

static int mask_check(qkv_ctx *ctx, const char *op, const qkv_tensor *scores) {
    if (scores->ndim != 3)
        return qkv__fail(ctx, QKV_ERR_SHAPE, "%s: scores must be 3-D (B,Tq,Tk), got %s", op, qkv__shp(scores));
    return 1;
}

/* y (B,Tq,Tk) = softmax over the unblocked entries of each row; blocked entries and fully blocked
 * rows are 0. */
static void softmax_masked_forward(float *y, const float *x, int64_t B, int64_t Tq, int64_t Tk, const uint8_t *mask,
                                   int causal) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * Tq; r++) {
        const int64_t b = r / Tq, i = r % Tq;
        const int64_t vis = causal ? (i + Tk - Tq + 1 < Tk ? i + Tk - Tq + 1 : Tk) : Tk; /* keys [0, vis) */
        const uint8_t *pad = mask ? mask + b * Tk : NULL;
        const float *xr = x + r * Tk;
        float *yr = y + r * Tk;
        float mx = -INFINITY;
        for (int64_t j = 0; j < vis; j++)
            if ((!pad || !pad[j]) && xr[j] > mx) mx = xr[j];
        if (mx == -INFINITY) {
            memset(yr, 0, sizeof(float) * (size_t)Tk);
            continue;
        }
        float sum = 0.0f;
        for (int64_t j = 0; j < Tk; j++) {
            yr[j] = j < vis && (!pad || !pad[j]) ? expf(xr[j] - mx) : 0.0f;
            sum += yr[j];
        }
        const float inv = 1.0f / sum;
        for (int64_t j = 0; j < Tk; j++) yr[j] *= inv;
    }
}

/* dx += y * (dy - sum_j y_j dy_j) row by row; blocked entries have y = 0 and get 0. */
static void softmax_masked_backward(qkv_ctx *ctx, qkv__node *n) {
    qkv_tensor *x = n->in[0], *y = n->out;
    float *dx = qkv__grad(ctx, x);
    if (!dx) return;
    const int64_t Tk = x->shape[2], rows = x->shape[0] * x->shape[1];
    const float *yd = y->data, *dy = y->grad;
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < rows; r++) {
        const float *yr = yd + r * Tk, *gr = dy + r * Tk;
        float dot = 0.0f;
        for (int64_t j = 0; j < Tk; j++) dot += yr[j] * gr[j];
        float *dr = dx + r * Tk;
        for (int64_t j = 0; j < Tk; j++) dr[j] += yr[j] * (gr[j] - dot);
    }
}

qkv_tensor *qkv_softmax_masked(qkv_ctx *ctx, qkv_tensor *scores, const uint8_t *key_padding_mask, int causal) {
    qkv_tensor *in[1] = {scores};
    if (!qkv__check(ctx, "softmax_masked", 1, in)) return NULL;
    if (!mask_check(ctx, "softmax_masked", scores)) return NULL;
    qkv_tensor *out = qkv__empty(ctx, 3, scores->shape);
    if (!out) return NULL;
    softmax_masked_forward(out->data, scores->data, scores->shape[0], scores->shape[1], scores->shape[2],
                           key_padding_mask, causal);
    /* The backward needs only the output: no mask to keep. */
    qkv__record(ctx, "softmax_masked", softmax_masked_backward, out, 1, in, 0);
    if (ctx->status != QKV_OK) return NULL;
    return out;
}

/* ---- qkv_additive_scores ---- */

/* scores[b,i,j] = sum_a v[a] tanh(wq[b,i,a] + uk[b,j,a]): wq (B,Tq,A), uk (B,Tk,A), v (A) -> (B,Tq,Tk) */
static void additive_forward(float *s, const float *wq, const float *uk, const float *v, int64_t B, int64_t Tq,
                             int64_t Tk, int64_t A) {
#pragma omp parallel for schedule(static)
    for (int64_t r = 0; r < B * Tq; r++) {
        const int64_t b = r / Tq;
        const float *wr = wq + r * A;
        for (int64_t j = 0; j < Tk; j++) {
            const float *ur = uk + (b * Tk + j) * A;
            float acc = 0.0f;
            for (int64_t c = 0; c < A; c++) acc += v[c] * tanhf(wr[c] + ur[c]);
            s[r * Tk + j] = acc;
        }
    }
}

/* With g = dscores[b,i,j] and t = tanh(wq[b,i,a] + uk[b,j,a]) (recomputed, never stored: it would be
 * B*Tq*Tk*A floats):
 *   dwq[b,i,a] += sum_j g v[a] (1 - t^2),  duk[b,j,a] += sum_i g v[a] (1 - t^2),  dv[a] += sum g t.
 * Pass 1 owns the rows (b,i): dwq, and per-row partial sums of dv that are then added in row order
 * (no order-dependent reduction across threads). Pass 2 owns the rows (b,j): duk. */
static void additive_backward(qkv_ctx *ctx, qkv__node *n) {
    qkv_tensor *wq = n->in[0], *uk = n->in[1], *vt = n->in[2], *out = n->out;
    const int64_t B = wq->shape[0], Tq = wq->shape[1], A = wq->shape[2], Tk = uk->shape[1];
    const float *g = out->grad, *w = wq->data, *u = uk->data, *v = vt->data;
    float *dwq = wq->requires_grad ? qkv__grad(ctx, wq) : NULL;
    float *duk = uk->requires_grad ? qkv__grad(ctx, uk) : NULL;
    float *dv = vt->requires_grad ? qkv__grad(ctx, vt) : NULL;
    float *dvrow = dv ? qkv__alloc(ctx, sizeof(float) * (size_t)(B * Tq * A)) : NULL;
    if ((wq->requires_grad && !dwq) || (uk->requires_grad && !duk) || (dv && !dvrow)) return;

    if (dwq || dv) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < B * Tq; r++) {
            const int64_t b = r / Tq;
            const float *wr = w + r * A;
            float *dvr = dv ? dvrow + r * A : NULL;
            if (dvr) memset(dvr, 0, sizeof(float) * (size_t)A);
            for (int64_t j = 0; j < Tk; j++) {
                const float gij = g[r * Tk + j];
                if (gij == 0.0f) continue;
                const float *ur = u + (b * Tk + j) * A;
                for (int64_t c = 0; c < A; c++) {
                    const float t = tanhf(wr[c] + ur[c]);
                    if (dwq) dwq[r * A + c] += gij * v[c] * (1.0f - t * t);
                    if (dvr) dvr[c] += gij * t;
                }
            }
        }
        if (dv)
            for (int64_t r = 0; r < B * Tq; r++)
                for (int64_t c = 0; c < A; c++) dv[c] += dvrow[r * A + c];
    }
    if (duk) {
#pragma omp parallel for schedule(static)
        for (int64_t r = 0; r < B * Tk; r++) {
            const int64_t b = r / Tk, j = r % Tk;
            const float *ur = u + r * A;
            for (int64_t i = 0; i < Tq; i++) {
                const float gij = g[(b * Tq + i) * Tk + j];
                if (gij == 0.0f) continue;
                const float *wr = w + (b * Tq + i) * A;
                for (int64_t c = 0; c < A; c++) {
                    const float t = tanhf(wr[c] + ur[c]);
                    duk[r * A + c] += gij * v[c] * (1.0f - t * t);
                }
            }
        }
    }
}

qkv_tensor *qkv_additive_scores(qkv_ctx *ctx, qkv_tensor *wq, qkv_tensor *uk, qkv_tensor *v) {
    qkv_tensor *in[3] = {wq, uk, v};
    if (!qkv__check(ctx, "additive_scores", 3, in)) return NULL;
    if (wq->ndim != 3 || uk->ndim != 3 || v->ndim != 1) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "additive_scores: want wq (B,Tq,A), uk (B,Tk,A), v (A), got wq %s uk %s v %s",
                  qkv__shp(wq), qkv__shp(uk), qkv__shp(v));
        return NULL;
    }
    if (wq->shape[0] != uk->shape[0] || wq->shape[2] != uk->shape[2] || v->shape[0] != wq->shape[2]) {
        qkv__fail(ctx, QKV_ERR_SHAPE,
                  "additive_scores: batch and attention dims must agree: wq %s (B,Tq,A) uk %s (B,Tk,A) v %s (A)",
                  qkv__shp(wq), qkv__shp(uk), qkv__shp(v));
        return NULL;
    }
    const int64_t B = wq->shape[0], Tq = wq->shape[1], Tk = uk->shape[1], A = wq->shape[2];
    qkv_tensor *out = qkv__empty(ctx, 3, (int64_t[]){B, Tq, Tk});
    if (!out) return NULL;
    additive_forward(out->data, wq->data, uk->data, v->data, B, Tq, Tk, A);
    qkv__record(ctx, "additive_scores", additive_backward, out, 3, in, 0);
    if (ctx->status != QKV_OK) return NULL;
    return out;
}

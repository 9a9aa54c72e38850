/* linalg.c — qkv_matmul and qkv_linear: shape checks, and the tape around the project GEMM.
 *
 * What it is not: a GEMM. Every multiply, forward and backward, is one call into kernels/gemm.h
 * (qkv__gemm / qkv__gemm_batched); this file only works out the geometry. Attention scores have
 * their own fused kernel (src/ops/attention.c) and do not come through here.
 *
 * Convention: a matmul is described once, as `batch` GEMMs of (M,K) @ (K,N) with transposes given
 * by how a and b are *stored* (gemm.h's convention), and backward derives both gradients from that
 * description with beta = 1 so they accumulate into whatever the gradient already holds. When b is
 * 2-D and a is not transposed, a's leading dims are folded into M: one large GEMM instead of many
 * small ones, forward and backward.
 */
#include <string.h>

#include "core/core_int.h"
#include "kernels/ew.h"
#include "kernels/gemm.h"
#include "qkv/ops.h"

/* batch GEMMs C_i (M,N) = op(A_i) op(B_i) with A stored (M,K) or (K,M) when ta, B (K,N) or (N,K)
 * when tb; shared: one B for every i. */
typedef struct {
    int ta, tb, shared;
    int64_t batch, M, N, K;
} mm_geom;

/* C_i = alpha op(A_i) op(B_i) + beta C_i for i < batch, with strides sA, sB, sC between entries.
 * sC == 0 means every entry accumulates into the same C, which gemm_batched forbids (overlapping
 * outputs), so those GEMMs run one after another: in a fixed order, hence deterministic. */
static void gemm_n(int ta, int tb, int64_t M, int64_t N, int64_t K, const float *A, int64_t lda, int64_t sA,
                   const float *B, int64_t ldb, int64_t sB, float beta, float *C, int64_t ldc, int64_t sC,
                   int64_t batch) {
    if (batch == 1) {
        qkv__gemm(ta, tb, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
    } else if (sC == 0) {
        for (int64_t i = 0; i < batch; i++)
            qkv__gemm(ta, tb, M, N, K, 1.0f, A + i * sA, lda, B + i * sB, ldb, i ? 1.0f : beta, C, ldc);
    } else {
        qkv__gemm_batched(ta, tb, M, N, K, 1.0f, A, lda, sA, B, ldb, sB, beta, C, ldc, sC, batch);
    }
}

static void matmul_backward(qkv_ctx *ctx, qkv__node *n) {
    const mm_geom *g = n->saved;
    qkv_tensor *a = n->in[0], *b = n->in[1];
    const int64_t M = g->M, N = g->N, K = g->K;
    const int64_t lda = g->ta ? M : K, ldb = g->tb ? K : N;
    const int64_t sA = M * K, sB = g->shared ? 0 : K * N, sC = M * N;
    const float *dC = n->out->grad;
    if (a->requires_grad) {
        float *dA = qkv__grad(ctx, a);
        if (!dA) return;
        if (!g->ta) /* dA (M,K) += dC (M,N) op(B)^T */
            gemm_n(0, !g->tb, M, K, N, dC, N, sC, b->data, ldb, sB, 1.0f, dA, K, sA, g->batch);
        else /* A stored (K,M): dA += op(B) (K,N) dC^T */
            gemm_n(g->tb, 1, K, M, N, b->data, ldb, sB, dC, N, sC, 1.0f, dA, M, sA, g->batch);
    }
    if (b->requires_grad) {
        float *dB = qkv__grad(ctx, b);
        if (!dB) return;
        if (!g->tb) /* dB (K,N) += op(A)^T (K,M) dC */
            gemm_n(!g->ta, 0, K, N, M, a->data, lda, sA, dC, N, sC, 1.0f, dB, N, sB, g->batch);
        else /* B stored (N,K): dB += dC^T (N,M) op(A) */
            gemm_n(1, g->ta, N, K, M, dC, N, sC, a->data, lda, sA, 1.0f, dB, K, sB, g->batch);
    }
}

qkv_tensor *qkv_matmul(qkv_ctx *ctx, qkv_tensor *a, qkv_tensor *b, int ta, int tb) {
    qkv_tensor *in[2] = {a, b};
    if (!ctx || !qkv__check(ctx, "matmul", 2, in)) return NULL;
    if (a->ndim < 2 || b->ndim < 2) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "matmul: a and b need at least 2 dimensions: a %s, b %s", qkv__shp(a),
                  qkv__shp(b));
        return NULL;
    }
    const int nd = a->ndim;
    const int shared = b->ndim == 2;
    if (!shared && b->ndim != nd) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "matmul: b must be 2-D or have a's %d dimensions: a %s, b %s", nd,
                  qkv__shp(a), qkv__shp(b));
        return NULL;
    }
    int64_t batch = 1;
    for (int i = 0; i < nd - 2; i++) {
        if (!shared && a->shape[i] != b->shape[i]) {
            qkv__fail(ctx, QKV_ERR_SHAPE, "matmul: leading (batch) dimensions differ: a %s, b %s", qkv__shp(a),
                      qkv__shp(b));
            return NULL;
        }
        batch *= a->shape[i];
    }
    const int bd = b->ndim;
    int64_t M = ta ? a->shape[nd - 1] : a->shape[nd - 2], K = ta ? a->shape[nd - 2] : a->shape[nd - 1];
    int64_t kb = tb ? b->shape[bd - 1] : b->shape[bd - 2], N = tb ? b->shape[bd - 2] : b->shape[bd - 1];
    if (K != kb) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "matmul: inner dimensions differ: a %s k=%lld, b %s k=%lld (ta=%d, tb=%d)",
                  qkv__shp(a), (long long)K, qkv__shp(b), (long long)kb, ta != 0, tb != 0);
        return NULL;
    }
    int64_t shape[QKV_MAX_DIMS];
    memcpy(shape, a->shape, sizeof shape);
    shape[nd - 2] = M;
    shape[nd - 1] = N;
    qkv_tensor *out = qkv__empty(ctx, nd, shape);
    if (!out) return NULL;
    out->name = "matmul";

    mm_geom g = {.ta = ta != 0, .tb = tb != 0, .shared = shared, .batch = batch, .M = M, .N = N, .K = K};
    if (shared && !g.ta) { /* a's rows are contiguous (batch*M, K): one GEMM */
        g.M *= batch;
        g.batch = 1;
    }
    const int64_t lda = g.ta ? g.M : g.K, ldb = g.tb ? g.K : g.N;
    gemm_n(g.ta, g.tb, g.M, g.N, g.K, a->data, lda, g.M * g.K, b->data, ldb, shared ? 0 : g.K * g.N, 0.0f,
           out->data, g.N, g.M * g.N, g.batch);

    qkv__node *n = qkv__record(ctx, "matmul", matmul_backward, out, 2, in, sizeof g);
    if (n) *(mm_geom *)n->saved = g;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

/* ---- linear and conv1d: out (R,OUT) = residual + x (R,IN) w' + bias, in one pass ----
 * linear: w (OUT,IN), w' = w^T (PyTorch nn.Linear). conv1d: w (IN,OUT), w' = w (Hugging Face Conv1D,
 * torch.addmm). out starts as residual + bias in every row and the GEMM accumulates onto it
 * (beta = 1), so neither the bias nor the residual costs a pass or a tensor of its own. */

typedef struct {
    int in_out; /* w stored (IN,OUT) */
} lin_saved;

static void linear_backward(qkv_ctx *ctx, qkv__node *n) {
    qkv_tensor *x = n->in[0], *w = n->in[1], *bias = n->in[2], *res = n->in[3];
    const int io = ((const lin_saved *)n->saved)->in_out;
    const int64_t OUT = io ? w->shape[1] : w->shape[0], IN = io ? w->shape[0] : w->shape[1];
    const int64_t R = qkv_tensor_numel(x) / IN;
    const float *dY = n->out->grad;
    if (x->requires_grad) { /* dX (R,IN) += dY (R,OUT) w'^T */
        float *dX = qkv__grad(ctx, x);
        if (!dX) return;
        qkv__gemm(0, io, R, IN, OUT, 1.0f, dY, OUT, w->data, io ? OUT : IN, 1.0f, dX, IN);
    }
    if (w->requires_grad) { /* dW += dY^T X (OUT,IN), or X^T dY (IN,OUT): one GEMM over all R rows */
        float *dW = qkv__grad(ctx, w);
        if (!dW) return;
        if (io)
            qkv__gemm(1, 0, IN, OUT, R, 1.0f, x->data, IN, dY, OUT, 1.0f, dW, OUT);
        else
            qkv__gemm(1, 0, OUT, IN, R, 1.0f, dY, OUT, x->data, IN, 1.0f, dW, IN);
    }
    if (bias && bias->requires_grad) {
        float *db = qkv__grad(ctx, bias);
        if (!db) return;
        qkv__colsum(db, dY, R, OUT, 1.0f);
    }
    if (res && res->requires_grad) {
        float *dr = qkv__grad(ctx, res);
        if (!dr) return;
        qkv__add_backward(dr, NULL, dY, R, R, OUT, 1.0f);
    }
}

static qkv_tensor *linear_any(qkv_ctx *ctx, const char *op, qkv_tensor *x, qkv_tensor *w, int io, qkv_tensor *bias,
                              qkv_tensor *res) {
    qkv_tensor *in[4] = {x, w, bias, res}, *given[4];
    int ng = 0;
    for (int i = 0; i < 4; i++)
        if (in[i] || i < 2) given[ng++] = in[i];
    if (!ctx || !qkv__check(ctx, op, ng, given)) return NULL;
    if (x->ndim < 1 || w->ndim != 2 || x->shape[x->ndim - 1] != w->shape[io ? 0 : 1]) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "%s: x %s needs last dim = w's IN for w %s, got w %s", op, qkv__shp(x),
                  io ? "(IN,OUT)" : "(OUT,IN)", qkv__shp(w));
        return NULL;
    }
    const int64_t OUT = io ? w->shape[1] : w->shape[0], IN = io ? w->shape[0] : w->shape[1];
    const int64_t R = qkv_tensor_numel(x) / IN;
    if (bias && (bias->ndim != 1 || bias->shape[0] != OUT)) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "%s: bias %s must be (%lld) for w %s", op, qkv__shp(bias), (long long)OUT,
                  qkv__shp(w));
        return NULL;
    }
    int64_t shape[QKV_MAX_DIMS];
    memcpy(shape, x->shape, sizeof shape);
    shape[x->ndim - 1] = OUT;
    if (res && (res->ndim != x->ndim || memcmp(res->shape, shape, sizeof(int64_t) * (size_t)x->ndim) != 0)) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "%s: residual %s must have the output's shape for x %s and w %s", op,
                  qkv__shp(res), qkv__shp(x), qkv__shp(w));
        return NULL;
    }
    qkv_tensor *out = qkv__empty(ctx, x->ndim, shape);
    if (!out) return NULL;
    out->name = op;
    if (bias && res)
        qkv__add_forward(out->data, res->data, bias->data, R, 1, OUT, 1.0f);
    else if (res)
        memcpy(out->data, res->data, (size_t)(R * OUT) * sizeof(float));
    else if (bias)
        for (int64_t r = 0; r < R; r++) memcpy(out->data + r * OUT, bias->data, (size_t)OUT * sizeof(float));
    qkv__gemm(0, !io, R, OUT, IN, 1.0f, x->data, IN, w->data, io ? OUT : IN, bias || res ? 1.0f : 0.0f, out->data,
              OUT);
    qkv__node *n = qkv__record(ctx, op, linear_backward, out, 4, in, sizeof(lin_saved));
    if (n) ((lin_saved *)n->saved)->in_out = io;
    return qkv_ctx_status(ctx) == QKV_OK ? out : NULL;
}

qkv_tensor *qkv_linear(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *bias) {
    return linear_any(ctx, "linear", x, w, 0, bias, NULL);
}

qkv_tensor *qkv_linear_residual(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *bias, qkv_tensor *residual) {
    return linear_any(ctx, "linear", x, w, 0, bias, residual);
}

qkv_tensor *qkv_conv1d(qkv_ctx *ctx, qkv_tensor *x, qkv_tensor *w, qkv_tensor *bias, qkv_tensor *residual) {
    return linear_any(ctx, "conv1d", x, w, 1, bias, residual);
}

/* optim.c — SGD with momentum, AdamW and gradient-norm clipping over a whole qkv_params block.
 *
 * Every update is one fused pass over the trainable part of the block: the tensors with
 * requires_grad, seen as one flat index space in declaration order and cut into one contiguous piece
 * per OpenMP thread (cut on a 16-float boundary of the block). Work is element-wise, so the result is
 * bit-for-bit the same whatever the thread count. The clipping norm is the one reduction: it is
 * summed in double over a fixed partition of that index space (NORM_PARTS pieces, independent of the
 * thread count) and the partial sums are added in piece order, so it too is reproducible.
 *
 * Numerics follow PyTorch 1.13's single-tensor (foreach=False) code operation by operation, in
 * float32, with every per-step scalar (1 - lr*wd, lr / (1 - b1^t), sqrt(1 - b2^t)) computed in double
 * and rounded once to float, as a Python float becomes a float32 Scalar inside PyTorch. No FMA is
 * used, so the AVX-512 kernel and the plain reference kernel give identical bits.
 *
 * Not here: learning-rate schedules (schedule.c), zeroing gradients (qkv_params_zero_grad),
 * checkpoint files (src/io/). Optimizer state is plain blocks in the parameter layout; their padding
 * stays zero because the gradient padding is zero.
 *
 * One convention a reader needs: the step counter is global to the optimizer (PyTorch keeps one per
 * tensor). The two differ only for a tensor that was frozen for some steps and then unfrozen; such a
 * tensor here gets the bias correction of the optimizer's step, not of its own update count.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <omp.h>

#include "core/core_int.h"
#include "qkv/optim.h"

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__i386__))
#include <immintrin.h>
#define HAVE_AVX512_KERNEL 1
#else
#define HAVE_AVX512_KERNEL 0
#endif

#define PAR_MIN 32768 /* floats: below this a pass runs on one thread (fork/join costs more) */
#define NORM_PARTS 64 /* fixed partition of the clipping sum: the same bits on any thread count */

typedef enum { KIND_SGD, KIND_ADAMW } optim_kind;

/* The double a Python script would have written for this float option: the shortest decimal that
 * rounds to it (0.9f -> 0.9). PyTorch computes 1 - beta2 and the bias corrections from the Python
 * double; 1 - (double)0.999f is 1.3e-5 away from 1 - 0.999, which would show in every step. */
static double decimal_of(float x) {
    char buf[32];
    for (int digits = 1; digits <= 9; digits++) {
        snprintf(buf, sizeof buf, "%.*g", digits, (double)x);
        if (strtof(buf, NULL) == x) return strtod(buf, NULL);
    }
    return x;
}

struct qkv_optim {
    qkv_params *p;
    optim_kind kind;
    qkv_sgd_opts sgd;
    qkv_adamw_opts adamw;
    double beta1, beta2, wd; /* AdamW options as the decimals they were written as (decimal_of) */
    int64_t steps;
    int64_t numel;  /* qkv_params_numel(p): floats per state block */
    int n_state;    /* 1 (SGD momentum) or 2 (AdamW m, v) */
    float *state[2];
};

/* ---- the trainable index space ---- */

static int64_t trainable_numel(const qkv_params *p) {
    int64_t n = 0;
    for (int i = 0; i < qkv_params_count(p); i++) {
        const qkv_tensor *t = qkv_params_get(p, i);
        if (t->requires_grad) n += qkv_tensor_numel(t);
    }
    return n;
}

/* Piece k of n equal cuts of [0, total): [lo, hi). */
static void cut(int64_t total, int k, int n, int64_t *lo, int64_t *hi) {
    *lo = total * k / n;
    *hi = total * (k + 1) / n;
}

/* Moves a cut down to the nearest trainable index whose place in the block is a multiple of 16
 * floats. Tensor slices start 64-byte aligned, so each thread's piece then starts on a cache line:
 * no line is written by two threads and no 16-float load or store straddles two lines. */
static int64_t align_cut(const qkv_params *p, int64_t c) {
    int64_t cur = 0;
    for (int i = 0; i < qkv_params_count(p); i++) {
        const qkv_tensor *t = qkv_params_get(p, i);
        if (!t->requires_grad) continue;
        int64_t tn = qkv_tensor_numel(t);
        if (c < cur + tn) return cur + (c - cur) / 16 * 16;
        cur += tn;
    }
    return c;
}

/* This thread's piece of the trainable index space, for the element-wise passes. */
static void thread_piece(const qkv_params *p, int64_t total, int64_t *lo, int64_t *hi) {
    cut(total, omp_get_thread_num(), omp_get_num_threads(), lo, hi);
    *lo = align_cut(p, *lo);
    *hi = align_cut(p, *hi);
}

/* Visits the part of the trainable index space [lo, hi) tensor by tensor: calls back with the
 * offset into the blocks, the length, and whether that tensor is decayed. Written as a macro-free
 * iterator so the kernels below stay plain loops over raw pointers. */
typedef struct {
    const qkv_params *p;
    const float *base;
    int i;        /* next tensor to look at */
    int64_t cur;  /* trainable index of tensor i's first element */
    int64_t lo, hi;
} span_iter;

static void span_begin(span_iter *it, const qkv_params *p, int64_t lo, int64_t hi) {
    it->p = p;
    it->base = qkv_params_data(p);
    it->i = 0;
    it->cur = 0;
    it->lo = lo;
    it->hi = hi;
}

/* Next non-empty span: returns 0 when done. */
static int span_next(span_iter *it, int64_t *off, int64_t *len, int *decay) {
    int n = qkv_params_count(it->p);
    while (it->i < n && it->cur < it->hi) {
        int i = it->i++;
        const qkv_tensor *t = qkv_params_get(it->p, i);
        if (!t->requires_grad) continue;
        int64_t tn = qkv_tensor_numel(t);
        int64_t a = it->lo > it->cur ? it->lo : it->cur;
        int64_t b = it->hi < it->cur + tn ? it->hi : it->cur + tn;
        int64_t start = it->cur;
        it->cur += tn;
        if (a < b) {
            *off = (int64_t)(t->data - it->base) + (a - start);
            *len = b - a;
            *decay = !qkv_params_no_decay(it->p, i);
            return 1;
        }
    }
    return 0;
}

/* ---- AdamW kernel ---- */

/* Per-step scalars, each already rounded to float the way PyTorch rounds a Python float. */
typedef struct {
    float decay;      /* 1 - lr * wd, or 1 for no_decay tensors (then skipped) */
    float b1, omb1;   /* beta1, 1 - beta1 */
    float b2, omb2;   /* beta2, 1 - beta2 */
    float bc2_sqrt;   /* sqrt(1 - beta2^t) */
    float eps;
    float neg_step;   /* -lr / (1 - beta1^t) */
} adamw_coef;

/* Reference: PyTorch _single_tensor_adamw, one line per tensor op, for n elements. */
static void adamw_ref(float *restrict p, const float *restrict g, float *restrict m, float *restrict v, int64_t n,
                      const adamw_coef *c, int decay) {
    for (int64_t j = 0; j < n; j++) {
        float pj = p[j];
        if (decay) pj = pj * c->decay;                      /* param.mul_(1 - lr * weight_decay) */
        float mj = m[j] * c->b1;                            /* exp_avg.mul_(beta1) */
        mj = mj + c->omb1 * g[j];                           /*   .add_(grad, alpha=1 - beta1) */
        float vj = v[j] * c->b2;                            /* exp_avg_sq.mul_(beta2) */
        vj = vj + c->omb2 * g[j] * g[j];                    /*   .addcmul_(grad, grad, value=1 - beta2) */
        float denom = sqrtf(vj) / c->bc2_sqrt + c->eps;     /* (exp_avg_sq.sqrt() / bc2_sqrt).add_(eps) */
        p[j] = pj + c->neg_step * mj / denom;               /* param.addcdiv_(exp_avg, denom, value=-step_size) */
        m[j] = mj;
        v[j] = vj;
    }
}

#if HAVE_AVX512_KERNEL
/* The same operations, 16 lanes at a time; IEEE mul/add/div/sqrt round exactly like the scalar ones,
 * so this matches adamw_ref bit for bit. */
__attribute__((target("avx512f"))) static void adamw_avx512(float *restrict p, const float *restrict g,
                                                             float *restrict m, float *restrict v, int64_t n,
                                                             const adamw_coef *c, int decay) {
    const __m512 kdec = _mm512_set1_ps(c->decay), kb1 = _mm512_set1_ps(c->b1), komb1 = _mm512_set1_ps(c->omb1);
    const __m512 kb2 = _mm512_set1_ps(c->b2), komb2 = _mm512_set1_ps(c->omb2);
    const __m512 kbc2 = _mm512_set1_ps(c->bc2_sqrt), keps = _mm512_set1_ps(c->eps);
    const __m512 kstep = _mm512_set1_ps(c->neg_step);
    int64_t j = 0;
    for (; j + 16 <= n; j += 16) {
        __m512 pj = _mm512_loadu_ps(p + j), gj = _mm512_loadu_ps(g + j);
        __m512 mj = _mm512_loadu_ps(m + j), vj = _mm512_loadu_ps(v + j);
        if (decay) pj = _mm512_mul_ps(pj, kdec);
        mj = _mm512_add_ps(_mm512_mul_ps(mj, kb1), _mm512_mul_ps(komb1, gj));
        vj = _mm512_add_ps(_mm512_mul_ps(vj, kb2), _mm512_mul_ps(_mm512_mul_ps(komb2, gj), gj));
        __m512 denom = _mm512_add_ps(_mm512_div_ps(_mm512_sqrt_ps(vj), kbc2), keps);
        pj = _mm512_add_ps(pj, _mm512_div_ps(_mm512_mul_ps(kstep, mj), denom));
        _mm512_storeu_ps(p + j, pj);
        _mm512_storeu_ps(m + j, mj);
        _mm512_storeu_ps(v + j, vj);
    }
    if (j < n) adamw_ref(p + j, g + j, m + j, v + j, n - j, c, decay);
}
#endif

typedef void (*adamw_fn)(float *restrict, const float *restrict, float *restrict, float *restrict, int64_t,
                         const adamw_coef *, int);

static adamw_fn adamw_kernel(void) {
#if HAVE_AVX512_KERNEL
    if (__builtin_cpu_supports("avx512f")) return adamw_avx512;
#endif
    return adamw_ref;
}

/* ---- SGD kernel ---- */

/* PyTorch _single_tensor_sgd with dampening 0, nesterov off. The gradient block is read, never
 * written (PyTorch's d_p = d_p.add(param, alpha=wd) makes a new tensor). A zero momentum buffer
 * makes momentum * buf + d_p equal to d_p exactly, which is PyTorch's first-step buf = clone(d_p);
 * so no first-step branch is needed, and a tensor unfrozen later also starts from buf = d_p. */
static void sgd_ref(float *restrict p, const float *restrict g, float *restrict buf, int64_t n, float wd,
                    float mom, float neg_lr) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) {
        float d = g[j];
        if (wd != 0.0f) d = d + wd * p[j];     /* d_p = d_p.add(param, alpha=weight_decay) */
        if (buf) {
            d = buf[j] * mom + d;              /* buf.mul_(momentum).add_(d_p, alpha=1) */
            buf[j] = d;                        /* d_p = buf */
        }
        p[j] = p[j] + neg_lr * d;              /* param.add_(d_p, alpha=-lr) */
    }
}

/* ---- construction ---- */

static int finite_nonneg(float x) { return isfinite(x) && x >= 0.0f; }

static qkv_optim *optim_new(const char *fn, qkv_params *p, optim_kind kind, int n_state) {
    if (!p) {
        qkv__set_error(QKV_ERR_ARG, "%s: NULL parameter block", fn);
        return NULL;
    }
    if (!qkv_params_data(p)) {
        qkv__set_error(QKV_ERR_STATE, "%s: parameter block not allocated yet (call qkv_params_alloc first)", fn);
        return NULL;
    }
    qkv_optim *o = calloc(1, sizeof *o);
    if (!o) goto oom;
    o->p = p;
    o->kind = kind;
    o->numel = qkv_params_numel(p);
    o->n_state = n_state;
    size_t bytes = (size_t)(o->numel > 0 ? o->numel : 16) * sizeof(float);
    bytes = (bytes + 63) / 64 * 64;
    for (int i = 0; i < n_state; i++) {
        o->state[i] = aligned_alloc(64, bytes);
        if (!o->state[i]) goto oom;
        memset(o->state[i], 0, bytes);
    }
    return o;
oom:
    qkv_optim_free(o);
    qkv__set_error(QKV_ERR_NOMEM, "%s: cannot allocate %d state block(s) of %lld floats", fn, n_state,
                   (long long)qkv_params_numel(p));
    return NULL;
}

qkv_adamw_opts qkv_adamw_default_opts(void) {
    qkv_adamw_opts o = {.beta1 = 0.9f, .beta2 = 0.999f, .eps = 1e-8f, .weight_decay = 0.01f};
    return o;
}

qkv_optim *qkv_sgd_new(qkv_params *p, const qkv_sgd_opts *opts) {
    if (!opts) {
        qkv__set_error(QKV_ERR_ARG, "qkv_sgd_new: NULL options");
        return NULL;
    }
    if (!finite_nonneg(opts->momentum)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_sgd_new: momentum must be finite and >= 0, got %g", (double)opts->momentum);
        return NULL;
    }
    if (!finite_nonneg(opts->weight_decay)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_sgd_new: weight_decay must be finite and >= 0, got %g",
                       (double)opts->weight_decay);
        return NULL;
    }
    qkv_optim *o = optim_new("qkv_sgd_new", p, KIND_SGD, 1);
    if (o) o->sgd = *opts;
    return o;
}

qkv_optim *qkv_adamw_new(qkv_params *p, const qkv_adamw_opts *opts) {
    if (!opts) {
        qkv__set_error(QKV_ERR_ARG, "qkv_adamw_new: NULL options (start from qkv_adamw_default_opts())");
        return NULL;
    }
    /* !(x >= 0 && x < 1) also rejects NaN */
    if (!(opts->beta1 >= 0.0f && opts->beta1 < 1.0f)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_adamw_new: beta1 must be in [0, 1), got %g", (double)opts->beta1);
        return NULL;
    }
    if (!(opts->beta2 >= 0.0f && opts->beta2 < 1.0f)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_adamw_new: beta2 must be in [0, 1), got %g", (double)opts->beta2);
        return NULL;
    }
    if (!(isfinite(opts->eps) && opts->eps > 0.0f)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_adamw_new: eps must be finite and > 0, got %g", (double)opts->eps);
        return NULL;
    }
    if (!finite_nonneg(opts->weight_decay)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_adamw_new: weight_decay must be finite and >= 0, got %g",
                       (double)opts->weight_decay);
        return NULL;
    }
    qkv_optim *o = optim_new("qkv_adamw_new", p, KIND_ADAMW, 2);
    if (o) {
        o->adamw = *opts;
        o->beta1 = decimal_of(opts->beta1);
        o->beta2 = decimal_of(opts->beta2);
        o->wd = decimal_of(opts->weight_decay);
    }
    return o;
}

void qkv_optim_free(qkv_optim *o) {
    if (!o) return;
    for (int i = 0; i < 2; i++) free(o->state[i]);
    free(o);
}

/* ---- the update ---- */

static void adamw_step(qkv_optim *o, float lr, int64_t t) {
    const qkv_adamw_opts *a = &o->adamw;
    double b1 = o->beta1, b2 = o->beta2;
    double bc1 = 1.0 - pow(b1, (double)t), bc2 = 1.0 - pow(b2, (double)t);
    adamw_coef c = {
        .decay = (float)(1.0 - (double)lr * o->wd),
        .b1 = a->beta1,
        .omb1 = (float)(1.0 - b1),
        .b2 = a->beta2,
        .omb2 = (float)(1.0 - b2),
        .bc2_sqrt = (float)sqrt(bc2),
        .eps = a->eps,
        .neg_step = (float)(-((double)lr / bc1)),
    };
    int decay_on = c.decay != 1.0f; /* weight_decay 0 or lr 0: PyTorch multiplies by exactly 1 */
    qkv_params *p = o->p;
    float *pd = qkv_params_data(p), *gd = qkv_params_grad(p), *m = o->state[0], *v = o->state[1];
    adamw_fn kern = adamw_kernel();
    int64_t total = trainable_numel(p);
#pragma omp parallel if (total >= PAR_MIN)
    {
        int64_t lo, hi, off, len;
        int decay;
        thread_piece(p, total, &lo, &hi);
        span_iter it;
        span_begin(&it, p, lo, hi);
        while (span_next(&it, &off, &len, &decay))
            kern(pd + off, gd + off, m + off, v + off, len, &c, decay && decay_on);
    }
}

static void sgd_step(qkv_optim *o, float lr) {
    qkv_params *p = o->p;
    float *pd = qkv_params_data(p), *gd = qkv_params_grad(p);
    /* momentum 0: PyTorch keeps no buffer; the state block then stays zero */
    float *buf = o->sgd.momentum != 0.0f ? o->state[0] : NULL;
    float wd = o->sgd.weight_decay, mom = o->sgd.momentum, neg_lr = -lr;
    int64_t total = trainable_numel(p);
#pragma omp parallel if (total >= PAR_MIN)
    {
        int64_t lo, hi, off, len;
        int decay;
        thread_piece(p, total, &lo, &hi);
        span_iter it;
        span_begin(&it, p, lo, hi);
        /* no_decay marks tensors out of AdamW's decay only (core.h); SGD decays every tensor, as
         * torch.optim.SGD with a single parameter group does. */
        while (span_next(&it, &off, &len, &decay))
            sgd_ref(pd + off, gd + off, buf ? buf + off : NULL, len, wd, mom, neg_lr);
    }
}

qkv_status qkv_optim_step(qkv_optim *o, float lr) {
    if (!o) return qkv__set_error(QKV_ERR_ARG, "qkv_optim_step: NULL optimizer");
    if (!finite_nonneg(lr)) return qkv__set_error(QKV_ERR_ARG, "qkv_optim_step: lr must be finite and >= 0, got %g", (double)lr);
    if (qkv_params_numel(o->p) != o->numel || !qkv_params_data(o->p))
        return qkv__set_error(QKV_ERR_STATE, "qkv_optim_step: parameter block changed since the optimizer was made");
    int64_t t = o->steps + 1;
    if (o->kind == KIND_ADAMW) adamw_step(o, lr, t);
    else sgd_step(o, lr);
    o->steps = t;
    return QKV_OK;
}

int64_t qkv_optim_steps(const qkv_optim *o) { return o ? o->steps : 0; }

int qkv_optim_state_blocks(const qkv_optim *o) { return o ? o->n_state : 0; }

float *qkv_optim_state(qkv_optim *o, int i) { return (o && i >= 0 && i < o->n_state) ? o->state[i] : NULL; }

void qkv_optim_set_steps(qkv_optim *o, int64_t steps) {
    if (!o) return;
    if (steps < 0) {
        qkv__set_error(QKV_ERR_ARG, "qkv_optim_set_steps: steps must be >= 0, got %lld (unchanged)", (long long)steps);
        return;
    }
    o->steps = steps;
}

/* ---- gradient clipping ---- */

/* Sum of squares of n floats in double: 4 independent accumulators in a fixed pattern. */
static double sumsq(const float *g, int64_t n) {
    double s0 = 0, s1 = 0, s2 = 0, s3 = 0;
    int64_t j = 0;
    for (; j + 4 <= n; j += 4) {
        double a = g[j], b = g[j + 1], c = g[j + 2], d = g[j + 3];
        s0 += a * a;
        s1 += b * b;
        s2 += c * c;
        s3 += d * d;
    }
    for (; j < n; j++) s0 += (double)g[j] * g[j];
    return (s0 + s1) + (s2 + s3);
}

static void scale(float *g, int64_t n, float s) {
#pragma omp simd
    for (int64_t j = 0; j < n; j++) g[j] = g[j] * s;
}

float qkv_clip_grad_norm(qkv_params *p, float max_norm) {
    if (!p || !qkv_params_grad(p)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_clip_grad_norm: %s", p ? "parameter block not allocated" : "NULL block");
        return 0.0f;
    }
    float *gd = qkv_params_grad(p);
    int64_t total = trainable_numel(p);
    double part[NORM_PARTS];
#pragma omp parallel for schedule(static) if (total >= PAR_MIN)
    for (int k = 0; k < NORM_PARTS; k++) {
        int64_t lo, hi, off, len;
        int decay;
        cut(total, k, NORM_PARTS, &lo, &hi);
        double s = 0;
        span_iter it;
        span_begin(&it, p, lo, hi);
        while (span_next(&it, &off, &len, &decay)) s += sumsq(gd + off, len);
        part[k] = s;
    }
    double ss = 0;
    for (int k = 0; k < NORM_PARTS; k++) ss += part[k];
    float norm = (float)sqrt(ss);
    if (!(max_norm > 0.0f) || !isfinite(norm)) return norm;
    /* PyTorch: clip_coef = max_norm / (total_norm + 1e-6) on float32 tensors, where scalar / tensor is
     * tensor.reciprocal() * scalar; clamped to 1, so scaling happens only when it is below 1. */
    float coef = (1.0f / (norm + 1e-6f)) * max_norm;
    if (!(coef < 1.0f)) return norm;
#pragma omp parallel if (total >= PAR_MIN)
    {
        int64_t lo, hi, off, len;
        int decay;
        thread_piece(p, total, &lo, &hi);
        span_iter it;
        span_begin(&it, p, lo, hi);
        while (span_next(&it, &off, &len, &decay)) scale(gd + off, len, coef);
    }
    return norm;
}

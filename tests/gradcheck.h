/* gradcheck.h — the finite-difference gradient harness every op and block test uses.
 *
 * An entry gives a forward function f(ctx, inputs, user) -> output tensor and the shapes of its float
 * inputs. The harness draws the inputs, forms the scalar L = sum(out * W) with a fixed random W, gets
 * dL/dinput from qkv_backward, and compares every element with a central difference
 * (L(x+h) - L(x-h)) / 2h evaluated in inference mode with L summed in double.
 *
 * Tolerance and why: the forward is float32, so L carries a rounding error of ~1e-7 |L|; with
 * h = 1e-2 (relative to the input scale of ~1) that is ~1e-5 of the derivative, and the O(h^2)
 * truncation term of smooth ops is ~1e-4. The error of each element is
 * |analytic - numeric| / max(|numeric|, 1e-2 * max|numeric| over the input, 1e-3), and the largest
 * is required below 1e-2 (GC_TOL): well above the noise, far below a wrong term (which shows as O(1)).
 * Inputs of kinked ops (ReLU, max) are drawn away from the kink (GC_AWAY).
 */
#ifndef QKV_GRADCHECK_H
#define QKV_GRADCHECK_H

#include "testutil.h"

#define GC_TOL 1e-2
#define GC_MAX_IN 8

typedef enum { GC_NORMAL, GC_POSITIVE, GC_AWAY } gc_dist;

typedef struct {
    int ndim;
    int64_t shape[4];
    gc_dist dist;
    int no_grad; /* input used but not checked (e.g. a constant) */
} gc_input;

typedef qkv_tensor *(*gc_fn)(qkv_ctx *ctx, qkv_tensor **in, void *user);

static inline int64_t gc_numel(const gc_input *s) {
    int64_t n = 1;
    for (int i = 0; i < s->ndim; i++) n *= s->shape[i];
    return n;
}

static inline double gc_eval(qkv_ctx *ctx, gc_fn f, int n_in, const gc_input *spec, float **vals, const float *w,
                      int64_t *w_n, void *user, int with_grad, float **grads) {
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, with_grad);
    qkv_tensor *in[GC_MAX_IN];
    for (int i = 0; i < n_in; i++) {
        in[i] = qkv_tensor_from(ctx, spec[i].ndim, spec[i].shape, vals[i]);
        if (in[i]) in[i]->requires_grad = with_grad && !spec[i].no_grad;
    }
    qkv_tensor *out = f(ctx, in, user);
    if (!out) {
        printf("FAIL gradcheck: forward failed: %s\n", qkv_ctx_error(ctx));
        exit(1);
    }
    int64_t n = qkv_tensor_numel(out);
    if (*w_n && *w_n != n) {
        printf("FAIL gradcheck: output size changed\n");
        exit(1);
    }
    *w_n = n;
    double L = 0;
    for (int64_t i = 0; i < n; i++) L += (double)out->data[i] * w[i];
    if (with_grad) {
        qkv_tensor *wt = qkv_tensor_from(ctx, out->ndim, out->shape, w);
        qkv_tensor *loss = qkv_sum(ctx, qkv_mul(ctx, out, wt));
        if (qkv_backward(ctx, loss) != QKV_OK) {
            printf("FAIL gradcheck: backward failed: %s\n", qkv_ctx_error(ctx));
            exit(1);
        }
        for (int i = 0; i < n_in; i++) {
            int64_t m = gc_numel(&spec[i]);
            if (in[i]->grad)
                memcpy(grads[i], in[i]->grad, (size_t)m * sizeof(float));
            else
                memset(grads[i], 0, (size_t)m * sizeof(float));
        }
    }
    return L;
}

/* Runs one gradient check; prints "ok/FAIL grad <name> input i max_rel_err e" per input and returns the
 * largest error. seed fixes inputs and W. */
static inline double gradcheck(const char *name, gc_fn f, int n_in, const gc_input *spec, void *user, uint64_t seed) {
    qkv_ctx *ctx = qkv_ctx_new(1 << 20);
    qkv_rng r;
    qkv_rng_seed(&r, seed);
    float *vals[GC_MAX_IN], *ga[GC_MAX_IN];
    for (int i = 0; i < n_in; i++) {
        int64_t m = gc_numel(&spec[i]);
        vals[i] = malloc((size_t)m * sizeof(float));
        ga[i] = malloc((size_t)m * sizeof(float));
        for (int64_t j = 0; j < m; j++) {
            float x = qkv_rng_normal(&r);
            if (spec[i].dist == GC_POSITIVE) x = 0.5f + fabsf(x);
            if (spec[i].dist == GC_AWAY) x = (x < 0 ? -0.2f : 0.2f) + x;
            vals[i][j] = x;
        }
    }
    /* The output size is learnt from a first inference pass; W is drawn once it is known. */
    int64_t w_n = 0;
    float *w = NULL;
    {
        qkv_ctx_reset(ctx);
        qkv_ctx_set_grad(ctx, 0);
        qkv_tensor *in[GC_MAX_IN];
        for (int i = 0; i < n_in; i++) in[i] = qkv_tensor_from(ctx, spec[i].ndim, spec[i].shape, vals[i]);
        qkv_tensor *out = f(ctx, in, user);
        if (!out) {
            printf("FAIL gradcheck %s: forward failed: %s\n", name, qkv_ctx_error(ctx));
            exit(1);
        }
        w_n = qkv_tensor_numel(out);
        w = malloc((size_t)w_n * sizeof(float));
        for (int64_t j = 0; j < w_n; j++) w[j] = qkv_rng_normal(&r);
    }
    gc_eval(ctx, f, n_in, spec, vals, w, &w_n, user, 1, ga);
    double worst = 0;
    const float h = 1e-2f;
    for (int i = 0; i < n_in; i++) {
        if (spec[i].no_grad) continue;
        int64_t m = gc_numel(&spec[i]);
        double *num = malloc((size_t)m * sizeof(double));
        double scale = 0;
        for (int64_t j = 0; j < m; j++) {
            float x0 = vals[i][j];
            vals[i][j] = x0 + h;
            double lp = gc_eval(ctx, f, n_in, spec, vals, w, &w_n, user, 0, NULL);
            vals[i][j] = x0 - h;
            double lm = gc_eval(ctx, f, n_in, spec, vals, w, &w_n, user, 0, NULL);
            vals[i][j] = x0;
            num[j] = (lp - lm) / (2.0 * (double)h);
            if (fabs(num[j]) > scale) scale = fabs(num[j]);
        }
        double err = 0;
        int64_t at = 0;
        for (int64_t j = 0; j < m; j++) {
            double den = fabs(num[j]);
            if (den < 1e-2 * scale) den = 1e-2 * scale;
            if (den < 1e-3) den = 1e-3;
            double e = fabs((double)ga[i][j] - num[j]) / den;
            if (e > err || isnan(e)) {
                err = e;
                at = j;
            }
        }
        int ok = err <= GC_TOL;
        tu_checks++;
        if (!ok) tu_failures++;
        printf("%-4s grad %-36s input %d (n=%lld) max_rel_err %.2e (tol %.0e)\n", ok ? "ok" : "FAIL", name, i,
               (long long)m, err, GC_TOL);
        if (!ok) printf("     worst at %lld: analytic %.6g numeric %.6g\n", (long long)at, ga[i][at], num[at]);
        if (err > worst || isnan(err)) worst = err;
        free(num);
    }
    for (int i = 0; i < n_in; i++) {
        free(vals[i]);
        free(ga[i]);
    }
    free(w);
    qkv_ctx_free(ctx);
    return worst;
}

#endif

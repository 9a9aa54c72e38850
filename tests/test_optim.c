/* test_optim.c — optimizers, clipping and schedules against closed forms evaluated here in double.
 *
 * Needs only the parameter block and src/train/ (no ops): every gradient is written by hand.
 * PyTorch parity over a real model is test_torch_adamw.c.
 *
 * Tolerances: FORMULA_TOL 1e-6 for a float32 update against the same formula in double (a few float
 * roundings of values of order 1); EXACT for things that must not change at all (frozen tensors,
 * no_decay with zero gradient, fast kernel vs the same float operations written out here, thread
 * counts). CLIP_TOL 1e-5 relative for the norm of clipped gradients (the 1e-6 in max_norm/(norm+1e-6)
 * plus float rounding).
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */
#include <omp.h>

#include "testutil.h"

#define FORMULA_TOL 1e-6
#define CLIP_TOL 1e-5
#define EXACT 0.0

/* ---- schedules ---- */

static double ref_sched(qkv_sched_kind kind, double lr, int64_t w, int64_t n, int64_t s) {
    if (s < w) return lr * (double)s / (double)(w > 1 ? w : 1);
    double d = (double)(n - w > 1 ? n - w : 1);
    switch (kind) {
    case QKV_SCHED_CONSTANT: return lr;
    case QKV_SCHED_LINEAR: return lr * fmax(0.0, (double)(n - s) / d);
    case QKV_SCHED_COSINE: {
        double prog = (double)(s - w) / d;
        if (prog > 1) prog = 1; /* qkv stays at 0 after total_steps */
        return lr * fmax(0.0, 0.5 * (1.0 + cos(3.14159265358979323846 * prog)));
    }
    }
    return NAN;
}

static void test_schedules(void) {
    static const struct {
        qkv_sched_kind kind;
        float lr;
        int64_t w, n;
    } cases[] = {
        {QKV_SCHED_CONSTANT, 1e-3f, 0, 0},   {QKV_SCHED_CONSTANT, 1e-3f, 4, 0}, {QKV_SCHED_LINEAR, 1e-2f, 3, 10},
        {QKV_SCHED_LINEAR, 5e-4f, 0, 8},     {QKV_SCHED_LINEAR, 1e-2f, 3, 3},   {QKV_SCHED_LINEAR, 1e-2f, 5, 2},
        {QKV_SCHED_COSINE, 3e-4f, 2, 12},    {QKV_SCHED_COSINE, 1e-3f, 0, 1},   {QKV_SCHED_COSINE, 1e-3f, 1, 1},
    };
    const char *names[] = {"constant", "linear", "cosine"};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        qkv_schedule s = {cases[c].kind, cases[c].lr, cases[c].w, cases[c].n};
        double maxerr = 0;
        int bad = 0;
        for (int64_t step = 0; step <= cases[c].n + 4 || step <= cases[c].w + 2; step++) {
            double ref = ref_sched(s.kind, cases[c].lr, s.warmup_steps, s.total_steps, step);
            double got = qkv_schedule_lr(&s, step);
            double err = fabs(got - ref) / cases[c].lr;
            if (!(err <= FORMULA_TOL)) {
                bad = 1;
                printf("  %s W=%lld N=%lld step %lld: got %.9g ref %.9g\n", names[s.kind], (long long)s.warmup_steps,
                       (long long)s.total_steps, (long long)step, got, ref);
            }
            if (err > maxerr) maxerr = err;
        }
        TU_CHECK(!bad, "schedule %s W=%lld N=%lld", names[s.kind], (long long)s.warmup_steps, (long long)s.total_steps);
        printf("%-4s schedule %-8s W=%-2lld N=%-2lld steps 0..max(N+4,W+2)  rel_err %.3e (tol %.0e)\n",
               bad ? "FAIL" : "ok", names[s.kind], (long long)s.warmup_steps, (long long)s.total_steps, maxerr,
               FORMULA_TOL);
    }
    /* the edges by value: warmup start is 0, the peak is reached at step W, 0 at and after N */
    qkv_schedule lin = {QKV_SCHED_LINEAR, 1e-2f, 3, 10};
    TU_CHECK(qkv_schedule_lr(&lin, 0) == 0.0f, "linear step 0 must be 0");
    TU_CHECK(qkv_schedule_lr(&lin, 3) == 1e-2f, "linear step W must be the peak, got %g", qkv_schedule_lr(&lin, 3));
    TU_CHECK(qkv_schedule_lr(&lin, 10) == 0.0f && qkv_schedule_lr(&lin, 25) == 0.0f, "linear after N must be 0");
    qkv_schedule cosw = {QKV_SCHED_COSINE, 1e-2f, 2, 12};
    TU_CHECK(qkv_schedule_lr(&cosw, 2) == 1e-2f, "cosine step W must be the peak");
    TU_CHECK(qkv_schedule_lr(&cosw, 12) < 1e-12f && qkv_schedule_lr(&cosw, 19) < 1e-12f, "cosine at/after N must be 0");
    /* bad schedules: NaN plus a message, never a silently clamped value */
    qkv_schedule bad1 = {QKV_SCHED_LINEAR, -1.0f, 0, 10};
    TU_CHECK(isnan(qkv_schedule_lr(&bad1, 0)) && strstr(qkv_last_error(), "lr"), "negative lr must give NaN: '%s'",
             qkv_last_error());
    printf("ok   rejected: %s\n", qkv_last_error());
    TU_CHECK(isnan(qkv_schedule_lr(&lin, -1)) && strstr(qkv_last_error(), "step"), "negative step must give NaN");
    printf("ok   rejected: %s\n", qkv_last_error());
    TU_CHECK(isnan(qkv_schedule_lr(NULL, 0)), "NULL schedule must give NaN");
    qkv_schedule bad2 = {(qkv_sched_kind)7, 1e-3f, 0, 10};
    TU_CHECK(isnan(qkv_schedule_lr(&bad2, 5)) && strstr(qkv_last_error(), "kind"), "unknown kind must give NaN");
    printf("ok   rejected: %s\n", qkv_last_error());
}

/* ---- a tiny hand-made block: w (2,3) decayed, b (3) no_decay, f (4) frozen ---- */

typedef struct {
    qkv_params *p;
    qkv_tensor *w, *b, *f;
} tiny;

static tiny tiny_new(void) {
    tiny t;
    t.p = qkv_params_new();
    t.w = qkv_params_add(t.p, "w", 2, (int64_t[]){2, 3}, (qkv_init){QKV_INIT_NORMAL, 1.0f}, 0);
    t.b = qkv_params_add(t.p, "b", 1, (int64_t[]){3}, (qkv_init){QKV_INIT_UNIFORM, 0.5f}, 1);
    t.f = qkv_params_add(t.p, "f", 1, (int64_t[]){4}, (qkv_init){QKV_INIT_NORMAL, 1.0f}, 0);
    if (!t.w || !t.b || !t.f || qkv_params_alloc(t.p, 42) != QKV_OK) {
        printf("FAIL: cannot build the tiny block: %s\n", qkv_last_error());
        exit(1);
    }
    qkv_params_set_trainable(t.p, 2, 0);
    return t;
}

/* Gradient of step s: fixed, varied values; the frozen tensor gets one too, which must be ignored. */
static void tiny_grads(tiny *t, int s) {
    for (int i = 0; i < 6; i++) t->w->grad[i] = (float)(0.3 * sin(1.7 * i + s) + 0.05 * s);
    for (int i = 0; i < 3; i++) t->b->grad[i] = (float)(0.2 * cos(0.9 * i - s));
    for (int i = 0; i < 4; i++) t->f->grad[i] = 1.0f + (float)i;
}

static void copy_f(double *d, const float *s, int n) {
    for (int i = 0; i < n; i++) d[i] = s[i];
}

/* Compares a float tensor with a double reference, normalised like tu_close. */
static void close_d(const char *what, const float *got, const double *ref, int n, double tol) {
    float r[64];
    for (int i = 0; i < n; i++) r[i] = (float)ref[i];
    tu_close(what, got, r, n, tol);
}

static void test_sgd(void) {
    tiny t = tiny_new();
    qkv_sgd_opts o = {.momentum = 0.9f, .weight_decay = 0.01f};
    qkv_optim *opt = qkv_sgd_new(t.p, &o);
    TU_CHECK(opt != NULL, "qkv_sgd_new failed: %s", qkv_last_error());
    if (!opt) return;
    TU_CHECK(qkv_optim_state_blocks(opt) == 1, "SGD has 1 state block, got %d", qkv_optim_state_blocks(opt));
    double pw[6], pb[3], bw[6], bb[3];
    float f0[4];
    copy_f(pw, t.w->data, 6);
    copy_f(pb, t.b->data, 3);
    memcpy(f0, t.f->data, sizeof f0);
    const float lrs[3] = {0.1f, 0.05f, 0.2f};
    for (int s = 0; s < 3; s++) {
        tiny_grads(&t, s);
        /* torch.optim.SGD: d = g + wd p; buf = d (first step) else m buf + d; p -= lr buf. SGD decays
         * every tensor: no_decay is an AdamW notion (core.h). */
        for (int i = 0; i < 9; i++) {
            double *p = i < 6 ? &pw[i] : &pb[i - 6], *buf = i < 6 ? &bw[i] : &bb[i - 6];
            double g = i < 6 ? t.w->grad[i] : t.b->grad[i - 6];
            double d = g + 0.01 * *p;
            *buf = s == 0 ? d : 0.9 * *buf + d;
            *p -= lrs[s] * *buf;
        }
        TU_CHECK(qkv_optim_step(opt, lrs[s]) == QKV_OK, "sgd step: %s", qkv_last_error());
        char what[64];
        snprintf(what, sizeof what, "sgd step %d w vs double formula", s + 1);
        close_d(what, t.w->data, pw, 6, FORMULA_TOL);
        snprintf(what, sizeof what, "sgd step %d b vs double formula", s + 1);
        close_d(what, t.b->data, pb, 3, FORMULA_TOL);
        snprintf(what, sizeof what, "sgd step %d momentum buffer (w) vs formula", s + 1);
        close_d(what, qkv_optim_state(opt, 0) + (t.w->data - qkv_params_data(t.p)), bw, 6, FORMULA_TOL);
    }
    tu_close("sgd frozen tensor unchanged", t.f->data, f0, 4, EXACT);
    TU_CHECK(qkv_optim_steps(opt) == 3, "steps %lld", (long long)qkv_optim_steps(opt));
    qkv_optim_free(opt);
    qkv_params_free(t.p);
}

static void test_adamw(void) {
    tiny t = tiny_new();
    qkv_adamw_opts o = qkv_adamw_default_opts();
    TU_CHECK(o.beta1 == 0.9f && o.beta2 == 0.999f && o.eps == 1e-8f && o.weight_decay == 0.01f,
             "default AdamW options are PyTorch's");
    o.weight_decay = 0.1f;
    qkv_optim *opt = qkv_adamw_new(t.p, &o);
    TU_CHECK(opt != NULL, "qkv_adamw_new failed: %s", qkv_last_error());
    if (!opt) return;
    TU_CHECK(qkv_optim_state_blocks(opt) == 2, "AdamW has 2 state blocks");
    double p[9], m[9] = {0}, v[9] = {0};
    float f0[4];
    copy_f(p, t.w->data, 6);
    copy_f(p + 6, t.b->data, 3);
    memcpy(f0, t.f->data, sizeof f0);
    const float lrs[4] = {1e-2f, 5e-3f, 2e-2f, 1e-3f};
    for (int s = 0; s < 4; s++) {
        tiny_grads(&t, s);
        int step = s + 1;
        double bc1 = 1 - pow(0.9, step), bc2 = 1 - pow(0.999, step);
        for (int i = 0; i < 9; i++) {
            double g = i < 6 ? t.w->grad[i] : t.b->grad[i - 6];
            if (i < 6) p[i] *= 1 - lrs[s] * 0.1; /* b (i >= 6) is no_decay */
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            p[i] -= lrs[s] * (m[i] / bc1) / (sqrt(v[i] / bc2) + 1e-8);
        }
        TU_CHECK(qkv_optim_step(opt, lrs[s]) == QKV_OK, "adamw step: %s", qkv_last_error());
        char what[64];
        snprintf(what, sizeof what, "adamw step %d w vs double formula", step);
        close_d(what, t.w->data, p, 6, FORMULA_TOL);
        snprintf(what, sizeof what, "adamw step %d b (no_decay) vs double formula", step);
        close_d(what, t.b->data, p + 6, 3, FORMULA_TOL);
        int64_t off = t.w->data - qkv_params_data(t.p);
        snprintf(what, sizeof what, "adamw step %d m (w) vs formula", step);
        close_d(what, qkv_optim_state(opt, 0) + off, m, 6, FORMULA_TOL);
        snprintf(what, sizeof what, "adamw step %d v (w) vs formula", step);
        close_d(what, qkv_optim_state(opt, 1) + off, v, 6, FORMULA_TOL);
    }
    tu_close("adamw frozen tensor unchanged", t.f->data, f0, 4, EXACT);
    float *fm = qkv_optim_state(opt, 0) + (t.f->data - qkv_params_data(t.p));
    float zero4[4] = {0};
    tu_close("adamw frozen tensor's moments stay 0", fm, zero4, 4, EXACT);
    qkv_optim_free(opt);

    /* With zero gradients the Adam part is exactly 0 (m = v = 0, 0 / eps): what is left is the
     * decay, which must hit w by exactly float(1 - lr wd) and leave the no_decay b alone. */
    qkv_optim *o2 = qkv_adamw_new(t.p, &o);
    qkv_params_zero_grad(t.p);
    float w0[6], b0[3], wexp[6];
    memcpy(w0, t.w->data, sizeof w0);
    memcpy(b0, t.b->data, sizeof b0);
    float dec = (float)(1.0 - 0.05 * 0.1);
    for (int i = 0; i < 6; i++) wexp[i] = w0[i] * dec;
    TU_CHECK(qkv_optim_step(o2, 0.05f) == QKV_OK, "adamw step");
    tu_close("adamw zero grad: w decayed by float(1 - lr wd)", t.w->data, wexp, 6, EXACT);
    tu_close("adamw zero grad: no_decay b unchanged", t.b->data, b0, 3, EXACT);
    qkv_optim_free(o2);
    qkv_params_free(t.p);
}

/* ---- the fast kernel against the same float operations written out, several threads ---- */

static void test_adamw_fast_vs_reference(void) {
    /* sizes that are not multiples of 16, over PAR_MIN so the pass is split between threads, with a
     * no_decay and a frozen tensor between them */
    const int64_t sizes[4] = {40001, 7, 33333, 1001};
    const int nodecay[4] = {0, 1, 0, 1};
    qkv_params *p = qkv_params_new();
    qkv_tensor *ts[4];
    for (int i = 0; i < 4; i++) {
        char nm[8];
        snprintf(nm, sizeof nm, "t%d", i);
        ts[i] = qkv_params_add(p, nm, 1, &sizes[i], (qkv_init){QKV_INIT_NORMAL, 0.5f}, nodecay[i]);
    }
    if (qkv_params_alloc(p, 7) != QKV_OK) exit(1);
    qkv_params_set_trainable(p, 2, 0);
    int64_t n = qkv_params_numel(p);
    float *p0 = malloc(sizeof(float) * n);
    memcpy(p0, qkv_params_data(p), sizeof(float) * n);
    float *ref = malloc(sizeof(float) * n), *m = calloc(n, sizeof(float)), *v = calloc(n, sizeof(float));
    float *res[2];
    qkv_adamw_opts o = {0.9f, 0.95f, 1e-6f, 0.2f};
    for (int threads = 1; threads <= 2; threads++) {
        omp_set_num_threads(threads);
        memcpy(qkv_params_data(p), p0, sizeof(float) * n);
        qkv_optim *opt = qkv_adamw_new(p, &o);
        for (int s = 0; s < 3; s++) {
            qkv_rng r;
            qkv_rng_seed(&r, 100 + s);
            for (int i = 0; i < 4; i++)
                for (int64_t j = 0; j < sizes[i]; j++) ts[i]->grad[j] = qkv_rng_normal(&r) * 0.1f;
            qkv_optim_step(opt, 3e-3f);
        }
        res[threads - 1] = malloc(sizeof(float) * n);
        memcpy(res[threads - 1], qkv_params_data(p), sizeof(float) * n);
        qkv_optim_free(opt);
    }
    omp_set_num_threads(2);
    /* reference: PyTorch's op order in float, scalars from the decimal options */
    memcpy(ref, p0, sizeof(float) * n);
    for (int s = 0; s < 3; s++) {
        qkv_rng r;
        qkv_rng_seed(&r, 100 + s);
        int t = s + 1;
        float dec = (float)(1.0 - 3e-3f * 0.2), b1 = 0.9f, omb1 = (float)(1 - 0.9), b2 = 0.95f, omb2 = (float)(1 - 0.95);
        float bc2s = (float)sqrt(1 - pow(0.95, t)), eps = 1e-6f, ns = (float)(-(3e-3f / (1 - pow(0.9, t))));
        for (int i = 0; i < 4; i++) {
            int64_t off = ts[i]->data - qkv_params_data(p);
            for (int64_t j = 0; j < sizes[i]; j++) {
                float g = qkv_rng_normal(&r) * 0.1f;
                if (i == 2) continue; /* frozen */
                int64_t k = off + j;
                float pj = ref[k];
                if (!nodecay[i]) pj = pj * dec;
                m[k] = m[k] * b1 + omb1 * g;
                v[k] = v[k] * b2 + omb2 * g * g;
                float denom = sqrtf(v[k]) / bc2s + eps;
                ref[k] = pj + ns * m[k] / denom;
            }
        }
    }
    tu_close("adamw fast kernel, 1 thread vs float reference", res[0], ref, n, EXACT);
    tu_close("adamw fast kernel, 2 threads vs 1 thread", res[1], res[0], n, EXACT);
    free(p0);
    free(ref);
    free(m);
    free(v);
    free(res[0]);
    free(res[1]);
    qkv_params_free(p);
}

/* ---- clipping ---- */

static double ref_norm(const tiny *t) {
    double s = 0;
    for (int i = 0; i < 6; i++) s += (double)t->w->grad[i] * t->w->grad[i];
    for (int i = 0; i < 3; i++) s += (double)t->b->grad[i] * t->b->grad[i];
    return sqrt(s); /* f is frozen: not counted */
}

static void test_clip(void) {
    tiny t = tiny_new();
    tiny_grads(&t, 1);
    double want = ref_norm(&t);
    float g0[16];
    memcpy(g0, qkv_params_grad(t.p), sizeof g0);
    float f0[4];
    memcpy(f0, t.f->grad, sizeof f0);

    /* below the norm: only measured */
    float got = qkv_clip_grad_norm(t.p, (float)want * 2);
    double e = fabs(got - want) / want;
    TU_CHECK(e <= FORMULA_TOL, "clip norm %g want %g", got, want);
    printf("%-4s clip: total norm %.7g vs double %.7g rel_err %.3e (tol %.0e)\n", e <= FORMULA_TOL ? "ok" : "FAIL", got,
           want, e, FORMULA_TOL);
    tu_close("clip above the norm: gradients unchanged", qkv_params_grad(t.p), g0, 16, EXACT);
    got = qkv_clip_grad_norm(t.p, 0.0f);
    TU_CHECK(fabs(got - want) / want <= FORMULA_TOL, "max_norm 0 only measures");
    tu_close("clip max_norm 0: gradients unchanged", qkv_params_grad(t.p), g0, 16, EXACT);

    /* above: scaled to max_norm */
    float maxn = (float)want * 0.25f;
    got = qkv_clip_grad_norm(t.p, maxn);
    TU_CHECK(fabs(got - want) / want <= FORMULA_TOL, "clip returns the norm before clipping: %g vs %g", got, want);
    double after = ref_norm(&t);
    e = fabs(after - maxn) / maxn;
    TU_CHECK(e <= CLIP_TOL, "clipped norm %g want %g", after, maxn);
    printf("%-4s clip: norm after clipping %.7g vs max_norm %.7g rel_err %.3e (tol %.0e)\n", e <= CLIP_TOL ? "ok" : "FAIL",
           after, maxn, e, CLIP_TOL);
    tu_close("clip: frozen tensor's gradient not scaled", t.f->grad, f0, 4, EXACT);
    /* direction kept: every gradient scaled by the same max_norm / (norm + 1e-6) */
    double coef = maxn / (want + 1e-6);
    float wexp[6];
    for (int i = 0; i < 6; i++) wexp[i] = (float)(g0[i] * coef);
    tu_close("clip: w gradient scaled by max_norm/(norm+1e-6)", t.w->grad, wexp, 6, FORMULA_TOL);

    /* non-finite: returned as is, nothing scaled */
    t.w->grad[2] = INFINITY;
    memcpy(g0, qkv_params_grad(t.p), sizeof g0);
    got = qkv_clip_grad_norm(t.p, 1.0f);
    TU_CHECK(isinf(got), "an Inf gradient gives an Inf norm, got %g", got);
    int same = memcmp(qkv_params_grad(t.p), g0, sizeof g0) == 0; /* bitwise: tu_close cannot compare Inf */
    TU_CHECK(same, "an Inf norm must leave the gradients unscaled");
    printf("%-4s clip with Inf norm: returns %g, gradients bitwise unchanged\n", same ? "ok" : "FAIL", got);
    qkv_params_free(t.p);

    /* a large block: the same norm bits on 1 and 2 threads */
    qkv_params *p = qkv_params_new();
    qkv_params_add(p, "big", 1, (int64_t[]){300007}, (qkv_init){QKV_INIT_NORMAL, 1.0f}, 0);
    qkv_params_alloc(p, 3);
    qkv_rng r;
    qkv_rng_seed(&r, 5);
    double s = 0;
    float *g = qkv_params_grad(p);
    for (int64_t j = 0; j < 300007; j++) {
        g[j] = qkv_rng_normal(&r);
        s += (double)g[j] * g[j];
    }
    omp_set_num_threads(1);
    float n1 = qkv_clip_grad_norm(p, 0);
    omp_set_num_threads(2);
    float n2 = qkv_clip_grad_norm(p, 0);
    TU_CHECK(n1 == n2, "clip norm differs between 1 and 2 threads: %.9g vs %.9g", n1, n2);
    e = fabs(n2 - sqrt(s)) / sqrt(s);
    TU_CHECK(e <= FORMULA_TOL, "large clip norm %g want %g", n2, sqrt(s));
    printf("%-4s clip: 300007 gradients, norm %.9g (1 thread) %.9g (2 threads), vs double rel_err %.3e (tol %.0e)\n",
           n1 == n2 && e <= FORMULA_TOL ? "ok" : "FAIL", n1, n2, e, FORMULA_TOL);
    qkv_params_free(p);
}

/* ---- bad options ---- */

static void expect_reject(const char *what, qkv_optim *o, const char *needle) {
    int ok = o == NULL && strstr(qkv_last_error(), needle) != NULL;
    TU_CHECK(ok, "%s: expected rejection mentioning '%s', got %s '%s'", what, needle, o ? "an optimizer" : "NULL",
             qkv_last_error());
    if (ok) printf("ok   rejected %-22s %s\n", what, qkv_last_error());
    qkv_optim_free(o);
}

static void test_bad_options(void) {
    tiny t = tiny_new();
    qkv_adamw_opts d = qkv_adamw_default_opts(), o;
    o = d, o.beta1 = 1.0f;
    expect_reject("beta1 = 1", qkv_adamw_new(t.p, &o), "beta1");
    o = d, o.beta1 = -0.1f;
    expect_reject("beta1 = -0.1", qkv_adamw_new(t.p, &o), "beta1");
    o = d, o.beta2 = NAN;
    expect_reject("beta2 = NaN", qkv_adamw_new(t.p, &o), "beta2");
    o = d, o.beta2 = 1.5f;
    expect_reject("beta2 = 1.5", qkv_adamw_new(t.p, &o), "beta2");
    o = d, o.eps = 0.0f;
    expect_reject("eps = 0", qkv_adamw_new(t.p, &o), "eps");
    o = d, o.weight_decay = -0.01f;
    expect_reject("weight_decay < 0", qkv_adamw_new(t.p, &o), "weight_decay");
    o = d, o.weight_decay = INFINITY;
    expect_reject("weight_decay = Inf", qkv_adamw_new(t.p, &o), "weight_decay");
    expect_reject("adamw NULL opts", qkv_adamw_new(t.p, NULL), "NULL");
    expect_reject("adamw NULL params", qkv_adamw_new(NULL, &d), "NULL");
    qkv_sgd_opts s = {.momentum = -0.5f, .weight_decay = 0};
    expect_reject("momentum < 0", qkv_sgd_new(t.p, &s), "momentum");
    s = (qkv_sgd_opts){.momentum = 0.9f, .weight_decay = -1};
    expect_reject("sgd weight_decay < 0", qkv_sgd_new(t.p, &s), "weight_decay");
    qkv_params *un = qkv_params_new();
    qkv_params_add(un, "x", 1, (int64_t[]){3}, (qkv_init){QKV_INIT_ZEROS, 0}, 0);
    expect_reject("unallocated block", qkv_adamw_new(un, &d), "qkv_params_alloc");
    qkv_params_free(un);

    qkv_optim *opt = qkv_adamw_new(t.p, &d);
    float p0[16];
    memcpy(p0, qkv_params_data(t.p), sizeof p0);
    qkv_status st = qkv_optim_step(opt, -1e-3f);
    TU_CHECK(st == QKV_ERR_ARG && strstr(qkv_last_error(), "lr"), "negative lr must be rejected");
    printf("ok   rejected %-22s %s\n", "lr < 0", qkv_last_error());
    st = qkv_optim_step(opt, NAN);
    TU_CHECK(st == QKV_ERR_ARG, "NaN lr must be rejected");
    printf("ok   rejected %-22s %s\n", "lr = NaN", qkv_last_error());
    TU_CHECK(qkv_optim_step(NULL, 1e-3f) == QKV_ERR_ARG, "NULL optimizer must be rejected");
    tu_close("rejected steps leave parameters untouched", qkv_params_data(t.p), p0, 16, EXACT);
    TU_CHECK(qkv_optim_steps(opt) == 0, "rejected steps are not counted");
    qkv_optim_set_steps(opt, 5);
    TU_CHECK(qkv_optim_steps(opt) == 5, "set_steps");
    TU_CHECK(qkv_optim_state(opt, 2) == NULL && qkv_optim_state(opt, -1) == NULL, "state index out of range gives NULL");
    qkv_optim_free(opt);
    qkv_optim_free(NULL);
    qkv_params_free(t.p);
}

int main(void) {
    test_schedules();
    test_sgd();
    test_adamw();
    test_adamw_fast_vs_reference();
    test_clip();
    test_bad_options();
    return tu_finish("test_optim");
}

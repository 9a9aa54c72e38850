/* test_attention.c — the fused attention kernel against its materialising double-precision reference,
 * and the qkv_attention op on top of it.
 *
 * What is compared, and the tolerances:
 *   - the vectorised exp against expf, in ulps (<= 2: it feeds every probability);
 *   - forward out of the tiled online-softmax path (AVX-512 where present, and the plain C tiles)
 *     against qkv__attention_ref, normalised max error <= 1e-5 (float32 dot products of length D and
 *     sums of up to Tk terms against double: ~1e-6 observed);
 *   - the recomputing backward (dq, dk, dv) against the reference backward, <= 1e-5 (the gradients
 *     are sums of Tq or Tk float products of values that cancel, P (dP - D); ~1e-6 observed);
 *   - the weights-requested path (materialised P, and its backward from the stored P) against the
 *     same reference, and its probabilities against the reference probabilities (1e-5);
 *   - dropout: fast = reference with the same mask, bit-identical across runs and thread counts,
 *     kept fraction within 4 sigma of 1 - p;
 *   - memory: forward + backward at T = 4096 stays O(T) in the arena (< T*T*4/8 bytes).
 * Shapes cover T not a multiple of the 64-row tiles (1, 7, 63, 130, 257), cross attention (Tq != Tk,
 * decode-like Tq = 1), D = 8, 16, 20, 64, Dv != D, padding with different lengths per batch entry and
 * rows whose keys are all blocked (which must give 0 output and 0 gradient, lse = -inf).
 */
#include <omp.h>

#include "kernels/attention.h"
#include "testutil.h"

#define TOL_FWD 1e-5
#define TOL_BWD 1e-5

static void fill(qkv_rng *r, float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] = s * qkv_rng_normal(r);
}

static float *zalloc(int64_t n) { return calloc((size_t)(n > 0 ? n : 1), sizeof(float)); }

/* ---- exp ---- */

static int64_t ulps(float a, float b) {
    int32_t ia, ib;
    memcpy(&ia, &a, 4);
    memcpy(&ib, &b, 4);
    int64_t d = (int64_t)ia - ib;
    return d < 0 ? -d : d;
}

static void test_exp(void) {
    qkv__attn a = {.nthreads = 1};
    const int64_t n = 4000001;
    float *x = malloc(sizeof(float) * n), *y = malloc(sizeof(float) * n);
    for (int64_t i = 0; i < n; i++) x[i] = -110.0f + 200.0f * (float)i / (float)(n - 1);
    x[0] = -INFINITY;
    x[1] = -0.0f;
    x[2] = 1e-30f;
    memcpy(y, x, sizeof(float) * n);
    qkv__attention_vexp(&a, y, n);
    int64_t worst = 0, at = 0;
    for (int64_t i = 0; i < n; i++) {
        int64_t u = ulps(y[i], expf(x[i]));
        if (u > worst) worst = u, at = i;
    }
    tu_checks++;
    int ok = worst <= 2 && y[0] == 0.0f && y[1] == 1.0f && isinf(y[n - 1]);
    if (!ok) tu_failures++;
    printf("%-4s exp (%s) vs expf on [-110, 90], %lld points: max %lld ulp at x=%.7g (tol 2 ulp)\n", ok ? "ok" : "FAIL",
           qkv__attention_isa_name(&a), (long long)n, (long long)worst, x[at]);
    free(x);
    free(y);
}

/* ---- kernel vs reference ---- */

typedef struct {
    int B, H, D, Dv, Tq, Tk, causal;
    int pad; /* 0 none, 1 lengths differ per batch entry, 2 batch entry 0 fully padded, 3 random */
    float dropout;
} cfg;

static uint8_t *make_mask(qkv_rng *r, const cfg *c) {
    if (!c->pad) return NULL;
    uint8_t *m = calloc((size_t)(c->B * c->Tk), 1);
    for (int b = 0; b < c->B; b++)
        for (int j = 0; j < c->Tk; j++) {
            if (c->pad == 1 || c->pad == 2) m[b * c->Tk + j] = j >= c->Tk - (b * c->Tk) / (c->B + 1); /* right padding */
            if (c->pad == 2 && b == 0) m[b * c->Tk + j] = 1;
            if (c->pad == 3) m[b * c->Tk + j] = qkv_rng_uniform(r) < 0.3f;
        }
    return m;
}

/* lse positions that are -inf must agree; finite values compared after zeroing the others. */
static void check_lse(const char *what, const float *got, const float *ref, int64_t n) {
    float *g = malloc(sizeof(float) * n), *r = malloc(sizeof(float) * n);
    int same_inf = 1;
    for (int64_t i = 0; i < n; i++) {
        if ((got[i] == -INFINITY) != (ref[i] == -INFINITY)) same_inf = 0;
        g[i] = got[i] == -INFINITY ? 0 : got[i];
        r[i] = ref[i] == -INFINITY ? 0 : ref[i];
    }
    TU_CHECK(same_inf, "%s: fully blocked rows differ", what);
    tu_close(what, g, r, n, TOL_FWD);
    free(g);
    free(r);
}

/* Rows whose keys are all blocked (reference weights all zero) must give exact zeros. */
static void check_blocked_rows(const char *what, const qkv__attn *a, const float *w_ref, const float *out,
                               const float *dq) {
    int64_t rows = 0, bad = 0;
    for (int64_t b = 0; b < a->B; b++)
        for (int64_t h = 0; h < a->H; h++)
            for (int64_t i = 0; i < a->Tq; i++) {
                const float *p = w_ref + ((b * a->H + h) * a->Tq + i) * a->Tk;
                int blocked = 1;
                for (int64_t j = 0; j < a->Tk; j++) blocked &= p[j] == 0.0f;
                if (!blocked) continue;
                rows++;
                for (int64_t c = 0; c < a->Dv; c++) bad += out[(b * a->Tq + i) * a->H * a->Dv + h * a->Dv + c] != 0.0f;
                for (int64_t c = 0; c < a->D; c++) bad += dq[(b * a->Tq + i) * a->H * a->D + h * a->D + c] != 0.0f;
            }
    TU_CHECK(bad == 0, "%s: %lld nonzero values in fully blocked rows", what, (long long)bad);
    if (rows) printf("ok   %-48s %lld fully blocked rows give exact 0\n", what, (long long)rows);
}

static double worst_fwd, worst_bwd;

/* tu_close, except where the reference is identically zero (e.g. dq, dk with a single key: P = 1
 * whatever q and k are): normalising by it is meaningless, so the values must instead be zero to
 * within the rounding of the O(1) terms that cancel (1e-5 absolute). */
static double close_or_zero(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    double maxr = 0, maxg = 0;
    for (int64_t i = 0; i < n; i++) {
        if (fabs(ref[i]) > maxr) maxr = fabs(ref[i]);
        if (fabs(got[i]) > maxg || isnan(got[i])) maxg = isnan(got[i]) ? INFINITY : fabs(got[i]);
    }
    if (maxr > 0) return tu_close(what, got, ref, n, tol);
    tu_checks++;
    const int ok = maxg <= 1e-5;
    if (!ok) tu_failures++;
    printf("%-4s %-48s reference is 0: max|got| %.3e (tol 1e-05 absolute) n=%lld\n", ok ? "ok" : "FAIL", what, maxg,
           (long long)n);
    return 0;
}

static void note(double e, int bwd) {
    if (bwd && e > worst_bwd) worst_bwd = e;
    if (!bwd && e > worst_fwd) worst_fwd = e;
}

static void run_case(const cfg *c, uint64_t seed) {
    qkv_rng r;
    qkv_rng_seed(&r, seed);
    const int64_t C = (int64_t)c->H * c->D, Cv = (int64_t)c->H * c->Dv;
    const int64_t nq = (int64_t)c->B * c->Tq * C, nk = (int64_t)c->B * c->Tk * C, nv = (int64_t)c->B * c->Tk * Cv,
                  no = (int64_t)c->B * c->Tq * Cv, nl = (int64_t)c->B * c->H * c->Tq, nw = nl * c->Tk;
    float *q = zalloc(nq), *k = zalloc(nk), *v = zalloc(nv), *dout = zalloc(no);
    fill(&r, q, nq, 1.0f);
    fill(&r, k, nk, 1.0f);
    fill(&r, v, nv, 1.0f);
    fill(&r, dout, no, 1.0f);
    uint8_t *mask = make_mask(&r, c);
    qkv__attn a = {.B = c->B, .Tq = c->Tq, .Tk = c->Tk, .H = c->H, .D = c->D, .Dv = c->Dv,
                   .scale = 1.0f / sqrtf((float)c->D), .causal = c->causal, .key_padding_mask = mask,
                   .dropout = c->dropout, .seed = seed * 7919u + 1u, .nthreads = omp_get_max_threads()};
    void *ws = malloc(qkv__attention_ws_bytes(&a));

    /* reference */
    float *out_r = zalloc(no), *w_r = zalloc(nw), *dq_r = zalloc(nq), *dk_r = zalloc(nk), *dv_r = zalloc(nv);
    qkv__attention_ref(&a, q, k, v, out_r, w_r);
    qkv__attention_ref_backward(&a, q, k, v, dout, dq_r, dk_r, dv_r);

    char name[160], what[200];
    snprintf(name, sizeof name, "B%d H%d D%d Dv%d Tq%d Tk%d%s%s%s", c->B, c->H, c->D, c->Dv, c->Tq, c->Tk,
             c->causal ? " causal" : "", c->pad == 0 ? "" : c->pad == 2 ? " blockedrows" : " pad",
             c->dropout > 0 ? " drop" : "");
    printf("-- %s\n", name);

    float *lse_s = zalloc(nl);
    int have_lse = 0;
    for (int isa = 0; isa < 2; isa++) {
        a.isa = isa ? QKV__ATTN_ISA_SCALAR : QKV__ATTN_ISA_AUTO;
        const char *in = qkv__attention_isa_name(&a);
        if (isa == 0 && strcmp(in, "scalar") == 0) continue; /* no AVX-512 here: the scalar pass covers it */
        float *out = zalloc(no), *lse = zalloc(nl), *dq = zalloc(nq), *dk = zalloc(nk), *dv = zalloc(nv);
        qkv__attention_forward(&a, q, k, v, out, lse, NULL, ws);
        snprintf(what, sizeof what, "%s fwd out", in);
        note(tu_close(what, out, out_r, no, TOL_FWD), 0);
        qkv__attention_backward(&a, q, k, v, out, lse, NULL, dout, dq, dk, dv, ws);
        snprintf(what, sizeof what, "%s bwd dq", in);
        note(close_or_zero(what, dq, dq_r, nq, TOL_BWD), 1);
        snprintf(what, sizeof what, "%s bwd dk", in);
        note(close_or_zero(what, dk, dk_r, nk, TOL_BWD), 1);
        snprintf(what, sizeof what, "%s bwd dv", in);
        note(tu_close(what, dv, dv_r, nv, TOL_BWD), 1);
        snprintf(what, sizeof what, "%s blocked rows", in);
        check_blocked_rows(what, &a, w_r, out, dq);
        if (isa == 0) {
            memcpy(lse_s, lse, sizeof(float) * nl); /* compared with the scalar tiles' lse next round */
            have_lse = 1;
        } else if (have_lse) {
            check_lse("lse avx512 vs scalar", lse_s, lse, nl);
        }

        /* weights requested: P materialised, out from it, backward from the stored P */
        float *out_w = zalloc(no), *lse_w = zalloc(nl), *w = zalloc(nw);
        float *dq_w = zalloc(nq), *dk_w = zalloc(nk), *dv_w = zalloc(nv);
        qkv__attention_forward(&a, q, k, v, out_w, lse_w, w, ws);
        snprintf(what, sizeof what, "%s weights path: probabilities", in);
        note(tu_close(what, w, w_r, nw, TOL_FWD), 0);
        snprintf(what, sizeof what, "%s weights path: out", in);
        note(tu_close(what, out_w, out_r, no, TOL_FWD), 0);
        snprintf(what, sizeof what, "%s weights path: lse vs online lse", in);
        check_lse(what, lse_w, lse, nl);
        qkv__attention_backward(&a, q, k, v, out_w, lse_w, w, dout, dq_w, dk_w, dv_w, ws);
        snprintf(what, sizeof what, "%s weights path: bwd dq (stored P)", in);
        note(close_or_zero(what, dq_w, dq_r, nq, TOL_BWD), 1);
        snprintf(what, sizeof what, "%s weights path: bwd dk (stored P)", in);
        note(close_or_zero(what, dk_w, dk_r, nk, TOL_BWD), 1);
        snprintf(what, sizeof what, "%s weights path: bwd dv (stored P)", in);
        note(tu_close(what, dv_w, dv_r, nv, TOL_BWD), 1);
        free(out_w), free(lse_w), free(w), free(dq_w), free(dk_w), free(dv_w);
        free(out), free(lse), free(dq), free(dk), free(dv);
    }
    free(lse_s);
    free(q), free(k), free(v), free(dout), free(mask), free(ws);
    free(out_r), free(w_r), free(dq_r), free(dk_r), free(dv_r);
}

static void test_shapes(void) {
    static const cfg cases[] = {
        /* B H  D  Dv Tq   Tk  causal pad drop */
        {1, 1, 8, 8, 1, 1, 0, 0, 0},
        {1, 1, 8, 8, 1, 1, 1, 0, 0},
        {2, 2, 16, 16, 7, 7, 1, 0, 0},
        {3, 4, 20, 20, 63, 63, 0, 1, 0},
        {3, 4, 20, 20, 63, 63, 1, 1, 0},
        {1, 12, 64, 64, 130, 130, 1, 0, 0},
        {2, 12, 64, 64, 130, 130, 0, 3, 0},
        {2, 1, 64, 64, 257, 257, 1, 1, 0},
        {1, 1, 64, 64, 257, 257, 0, 0, 0},
        {1, 2, 64, 64, 1, 37, 1, 0, 0},    /* decode-like: one query over a cache of 37 */
        {3, 2, 64, 64, 1, 37, 0, 1, 0},
        {2, 12, 64, 64, 1, 130, 1, 3, 0},  /* one query, heads shared out among threads, 16-key blocks */
        {2, 3, 20, 12, 1, 33, 1, 2, 0},    /* one query, odd head count, D % 16 != 0, a fully padded row */
        {1, 1, 64, 64, 1, 1000, 1, 0, 0},  /* one query over a long cache */
        {2, 4, 16, 16, 63, 130, 0, 1, 0},  /* cross attention, Tq < Tk */
        {2, 4, 16, 16, 63, 130, 1, 0, 0},  /* causal aligned at the end */
        {2, 2, 8, 8, 130, 7, 1, 0, 0},     /* Tq > Tk causal: the first rows see no key */
        {2, 2, 8, 8, 130, 7, 0, 1, 0},
        {2, 2, 16, 20, 70, 70, 1, 0, 0},   /* Dv != D */
        {2, 3, 20, 12, 65, 129, 0, 3, 0},
        {3, 2, 16, 16, 66, 66, 1, 2, 0},   /* batch entry 0 fully padded */
        {2, 2, 16, 16, 100, 100, 1, 3, 0}, /* random padding + causal: some rows fully blocked */
        {2, 1, 3, 3, 9, 9, 1, 1, 0},
        {2, 2, 16, 16, 70, 70, 1, 1, 0.2f},
        {1, 4, 20, 20, 33, 130, 0, 3, 0.5f},
        {2, 2, 64, 64, 130, 130, 1, 0, 0.1f},
        {2, 4, 16, 16, 70, 70, 1, 1, 0.2f}, /* B*H = 8: the fused backward, with dropout */
        {2, 2, 16, 16, 5, 70, 1, 3, 0.3f},  /* fewer than 8 queries: the row-oriented forward */
        {1, 3, 64, 48, 3, 200, 0, 1, 0},
        {2, 2, 8, 8, 71, 71, 1, 0, 0},      /* 64 + 7 queries: one tile block, one row block */
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) run_case(&cases[i], 100 + i);
    printf("largest forward error %.3e (tol %.0e), largest backward error %.3e (tol %.0e)\n", worst_fwd, TOL_FWD,
           worst_bwd, TOL_BWD);
}

/* ---- determinism and dropout statistics ---- */

static void test_threads(int H) {
    qkv_rng r;
    qkv_rng_seed(&r, 7);
    const int B = 2, D = 32, T = 150;
    const int64_t n = (int64_t)B * T * H * D;
    float *q = zalloc(n), *k = zalloc(n), *v = zalloc(n), *dout = zalloc(n);
    fill(&r, q, n, 1), fill(&r, k, n, 1), fill(&r, v, n, 1), fill(&r, dout, n, 1);
    float *o[3], *g[3][3];
    for (int run = 0; run < 3; run++) {
        /* runs 0 and 1: 2 threads twice (same bits run to run); run 2: one thread */
        qkv__attn a = {.B = B, .Tq = T, .Tk = T, .H = H, .D = D, .Dv = D, .scale = 0.2f, .causal = 1,
                       .dropout = 0.3f, .seed = 12345, .nthreads = run == 2 ? 1 : 2};
        void *ws = malloc(qkv__attention_ws_bytes(&a));
        float *lse = zalloc((int64_t)B * H * T);
        o[run] = zalloc(n);
        for (int i = 0; i < 3; i++) g[run][i] = zalloc(n);
        qkv__attention_forward(&a, q, k, v, o[run], lse, NULL, ws);
        qkv__attention_backward(&a, q, k, v, o[run], lse, NULL, dout, g[run][0], g[run][1], g[run][2], ws);
        free(lse);
        free(ws);
    }
    const size_t bytes = sizeof(float) * (size_t)n;
    int same_runs = !memcmp(o[0], o[1], bytes), same_threads = !memcmp(o[0], o[2], bytes);
    for (int i = 0; i < 3; i++) {
        same_runs &= !memcmp(g[0][i], g[1][i], bytes);
        same_threads &= !memcmp(g[0][i], g[2][i], bytes);
    }
    TU_CHECK(same_runs, "dropout attention differs between two identical runs");
    TU_CHECK(same_threads, "dropout attention differs between 1 and 2 threads");
    printf("%-4s dropout fwd+bwd bit-identical across runs and for 1 vs 2 threads (B*H = %d: %s backward)\n",
           same_runs && same_threads ? "ok" : "FAIL", B * H,
           B * H >= QKV__ATTN_FUSED_MIN_BH ? "fused" : "two-pass");
    for (int run = 0; run < 3; run++) {
        free(o[run]);
        for (int i = 0; i < 3; i++) free(g[run][i]);
    }
    free(q), free(k), free(v), free(dout);
}

static void test_dropout_fraction(void) {
    qkv_rng r;
    qkv_rng_seed(&r, 8);
    /* Fraction dropped: with v[j] = e_j (Dv = Tk, one-hot), out[i][j] = dropped P[i][j] exactly, so
     * the zeros of out are the dropped entries and the rest equal P / (1-p). */
    const int Tq = 128, Tk = 128, Dq = 8;
    const float p = 0.25f;
    float *q2 = zalloc((int64_t)Tq * Dq), *k2 = zalloc((int64_t)Tk * Dq), *v2 = zalloc((int64_t)Tk * Tk);
    fill(&r, q2, (int64_t)Tq * Dq, 0.5f), fill(&r, k2, (int64_t)Tk * Dq, 0.5f);
    for (int j = 0; j < Tk; j++) v2[j * Tk + j] = 1.0f;
    qkv__attn a = {.B = 1, .Tq = Tq, .Tk = Tk, .H = 1, .D = Dq, .Dv = Tk, .scale = 0.35f, .dropout = p, .seed = 99,
                   .nthreads = omp_get_max_threads()};
    void *ws = malloc(qkv__attention_ws_bytes(&a));
    float *out = zalloc((int64_t)Tq * Tk), *w = zalloc((int64_t)Tq * Tk), *lse = zalloc(Tq);
    float *out_w = zalloc((int64_t)Tq * Tk);
    qkv__attention_forward(&a, q2, k2, v2, out_w, lse, w, ws); /* w: the probabilities, pre-dropout */
    qkv__attention_forward(&a, q2, k2, v2, out, lse, NULL, ws);
    tu_close("dropout: online path = weights path", out, out_w, (int64_t)Tq * Tk, TOL_FWD);
    int64_t dropped = 0, bad = 0;
    for (int64_t i = 0; i < (int64_t)Tq * Tk; i++) {
        if (out[i] == 0.0f)
            dropped++;
        else if (fabsf(out[i] - w[i] / (1.0f - p)) > 1e-5f * (w[i] / (1.0f - p)) + 1e-9f)
            bad++;
    }
    const double frac = (double)dropped / (Tq * Tk), sigma = sqrt(p * (1 - p) / (Tq * Tk));
    TU_CHECK(fabs(frac - p) < 4 * sigma, "dropped fraction %.4f, want %.2f +- %.4f", frac, p, 4 * sigma);
    TU_CHECK(bad == 0, "%lld kept probabilities are not P/(1-p)", (long long)bad);
    printf("%-4s dropout p=%.2f: dropped fraction %.4f (tol +-%.4f = 4 sigma), kept values = P/(1-p)\n",
           fabs(frac - p) < 4 * sigma && !bad ? "ok" : "FAIL", p, frac, 4 * sigma);
    free(q2), free(k2), free(v2), free(ws), free(out), free(out_w), free(w), free(lse);
}

/* ---- the op ---- */

static qkv_tensor *rand_tensor(qkv_ctx *ctx, qkv_rng *r, int64_t d0, int64_t d1, int64_t d2) {
    qkv_tensor *t = qkv_tensor_new3(ctx, d0, d1, d2);
    fill(r, t->data, qkv_tensor_numel(t), 1.0f);
    t->requires_grad = 1;
    return t;
}

static void test_op(void) {
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_rng r;
    qkv_rng_seed(&r, 3);
    const int B = 2, Tq = 40, Tk = 50, H = 2, D = 12;
    qkv_tensor *q = rand_tensor(ctx, &r, B, Tq, H * D), *k = rand_tensor(ctx, &r, B, Tk, H * D),
               *v = rand_tensor(ctx, &r, B, Tk, H * D), *wt = qkv_tensor_new3(ctx, B, Tq, H * D);
    fill(&r, wt->data, qkv_tensor_numel(wt), 1.0f);
    uint8_t mask[2 * 50] = {0};
    for (int j = 45; j < 50; j++) mask[Tk + j] = 1;
    qkv_tensor *weights = NULL;
    char shp[64];
    qkv_attn_opts o = {.n_head = H, .causal = 1, .key_padding_mask = mask, .weights = &weights};
    qkv_tensor *out = qkv_attention(ctx, q, k, v, &o);
    mask[0] = 1; /* the op keeps its own copy: changing the caller's mask after the call must not matter */
    qkv_tensor *loss = qkv_sum(ctx, qkv_mul(ctx, out, wt));
    TU_CHECK(qkv_backward(ctx, loss) == QKV_OK, "backward: %s", qkv_ctx_error(ctx));
    mask[0] = 0;
    TU_CHECK(weights && weights->ndim == 4 && weights->shape[0] == B && weights->shape[1] == H &&
                 weights->shape[2] == Tq && weights->shape[3] == Tk && !weights->requires_grad,
             "weights tensor: want (2,2,40,50) not requiring grad, got %s", weights ? qkv_tensor_shape_str(weights, shp, sizeof shp) : "NULL");

    qkv__attn a = {.B = B, .Tq = Tq, .Tk = Tk, .H = H, .D = D, .Dv = D, .scale = 1.0f / sqrtf((float)D), .causal = 1,
                   .key_padding_mask = mask, .nthreads = 1};
    const int64_t nq = (int64_t)B * Tq * H * D, nk = (int64_t)B * Tk * H * D;
    float *out_r = zalloc(nq), *w_r = zalloc((int64_t)B * H * Tq * Tk), *dq = zalloc(nq), *dk = zalloc(nk),
          *dv = zalloc(nk);
    qkv__attention_ref(&a, q->data, k->data, v->data, out_r, w_r);
    qkv__attention_ref_backward(&a, q->data, k->data, v->data, wt->data, dq, dk, dv);
    tu_close("op: out vs reference", out->data, out_r, nq, TOL_FWD);
    if (weights) tu_close("op: returned weights vs reference", weights->data, w_r, (int64_t)B * H * Tq * Tk, TOL_FWD);
    tu_close("op: q.grad vs reference", q->grad, dq, nq, TOL_BWD);
    tu_close("op: k.grad vs reference", k->grad, dk, nk, TOL_BWD);
    tu_close("op: v.grad vs reference", v->grad, dv, nk, TOL_BWD);
    free(out_r), free(w_r), free(dq), free(dk), free(dv);

    /* the same through the online path (no weights) */
    qkv_ctx_reset(ctx);
    q = rand_tensor(ctx, &r, B, Tq, H * D);
    qkv_tensor *q2 = qkv_tensor_from(ctx, 3, q->shape, q->data);
    q2->requires_grad = 1;
    k = rand_tensor(ctx, &r, B, Tk, H * D);
    v = rand_tensor(ctx, &r, B, Tk, H * D);
    o.weights = NULL;
    qkv_tensor *o1 = qkv_attention(ctx, q, k, v, &o);
    o.weights = &weights;
    qkv_tensor *o2 = qkv_attention(ctx, q2, k, v, &o);
    tu_close("op: online path = weights path", o1->data, o2->data, nq, TOL_FWD);
    qkv_tensor *l2 = qkv_add(ctx, qkv_sum(ctx, o1), qkv_sum(ctx, o2));
    TU_CHECK(qkv_backward(ctx, l2) == QKV_OK, "backward: %s", qkv_ctx_error(ctx));
    tu_close("op: q.grad online = q.grad weights path", q->grad, q2->grad, nq, TOL_BWD);

    /* self-attention on one tensor (q = k = v = x): the three gradients land in one buffer, with the
     * two-pass backward (B*H = 4) and the fused one (B*H = 8) */
    for (int hh = 2; hh <= 4; hh += 2) {
        qkv_ctx_reset(ctx);
        qkv_tensor *x = rand_tensor(ctx, &r, 2, 30, hh * 8), *wx = qkv_tensor_new3(ctx, 2, 30, hh * 8);
        fill(&r, wx->data, qkv_tensor_numel(wx), 1.0f);
        qkv_attn_opts os = {.n_head = hh, .causal = 1};
        TU_CHECK(qkv_backward(ctx, qkv_sum(ctx, qkv_mul(ctx, qkv_attention(ctx, x, x, x, &os), wx))) == QKV_OK,
                 "self-attention backward: %s", qkv_ctx_error(ctx));
        qkv__attn as = {.B = 2, .Tq = 30, .Tk = 30, .H = hh, .D = 8, .Dv = 8, .scale = 1.0f / sqrtf(8.0f),
                        .causal = 1, .nthreads = 1};
        float *gx = zalloc(qkv_tensor_numel(x));
        qkv__attention_ref_backward(&as, x->data, x->data, x->data, wx->data, gx, gx, gx);
        tu_close(hh == 2 ? "op: attention(x,x,x) x.grad, two-pass backward" : "op: attention(x,x,x) x.grad, fused backward",
                 x->grad, gx, qkv_tensor_numel(x), TOL_BWD);
        free(gx);
    }

    /* inference mode records nothing */
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, 0);
    o.weights = NULL;
    qkv_tensor *oi = qkv_attention(ctx, rand_tensor(ctx, &r, 1, 5, 8), rand_tensor(ctx, &r, 1, 5, 8),
                                   rand_tensor(ctx, &r, 1, 5, 8), &o);
    TU_CHECK(oi && !oi->requires_grad, "inference-mode output must not require grad");
    qkv_ctx_set_grad(ctx, 1);

    /* dropout through the op: training mode, same ctx seed -> same bits with 1 and 2 threads */
    float *res[2][2];
    const int threads_before = omp_get_max_threads();
    for (int t = 0; t < 2; t++) {
        omp_set_num_threads(t + 1);
        qkv_ctx_reset(ctx);
        qkv_ctx_seed(ctx, 42);
        qkv_ctx_set_training(ctx, 1);
        qkv_rng r2;
        qkv_rng_seed(&r2, 5);
        qkv_tensor *x = rand_tensor(ctx, &r2, 2, 70, 32), *y = rand_tensor(ctx, &r2, 2, 70, 32);
        qkv_attn_opts od = {.n_head = 2, .causal = 1, .dropout = 0.25f};
        qkv_tensor *od_out = qkv_attention(ctx, x, y, y, &od);
        TU_CHECK(qkv_backward(ctx, qkv_sum(ctx, qkv_mul(ctx, od_out, od_out))) == QKV_OK, "dropout backward: %s",
                 qkv_ctx_error(ctx));
        res[t][0] = malloc(sizeof(float) * 2 * 70 * 32);
        res[t][1] = malloc(sizeof(float) * 2 * 70 * 32);
        memcpy(res[t][0], od_out->data, sizeof(float) * 2 * 70 * 32);
        memcpy(res[t][1], y->grad, sizeof(float) * 2 * 70 * 32);
        qkv_ctx_set_training(ctx, 0);
    }
    omp_set_num_threads(threads_before);
    int same = !memcmp(res[0][0], res[1][0], sizeof(float) * 2 * 70 * 32) &&
               !memcmp(res[0][1], res[1][1], sizeof(float) * 2 * 70 * 32);
    TU_CHECK(same, "op: dropout attention (k = v shared) differs between 1 and 2 threads");
    printf("%-4s op: dropout out and grad (k and v the same tensor) bit-identical with 1 and 2 threads\n",
           same ? "ok" : "FAIL");
    for (int t = 0; t < 2; t++) free(res[t][0]), free(res[t][1]);

    /* validation: each bad call fails with the right status and a message naming the op and shapes */
    struct {
        int64_t q[3], k[3], v[3];
        qkv_attn_opts o;
        qkv_status want;
        const char *has;
    } bad[] = {
        {{2, 5, 8}, {2, 5, 8}, {2, 5, 8}, {.n_head = 3}, QKV_ERR_SHAPE, "divisible by n_head 3"},
        {{2, 5, 8}, {2, 5, 8}, {2, 5, 8}, {.n_head = 0}, QKV_ERR_RANGE, "n_head is 0"},
        {{2, 5, 8}, {3, 5, 8}, {3, 5, 8}, {.n_head = 2}, QKV_ERR_SHAPE, "batch sizes differ: q (2,5,8) k (3,5,8)"},
        {{2, 5, 8}, {2, 6, 8}, {2, 5, 8}, {.n_head = 2}, QKV_ERR_SHAPE, "k (2,6,8) and v (2,5,8)"},
        {{2, 5, 8}, {2, 5, 4}, {2, 5, 8}, {.n_head = 2}, QKV_ERR_SHAPE, "q (2,5,8) and k (2,5,4)"},
        {{2, 5, 8}, {2, 5, 8}, {2, 5, 8}, {.n_head = 2, .dropout = 1.0f}, QKV_ERR_RANGE, "dropout 1"},
        {{2, 5, 8}, {2, 5, 8}, {2, 5, 8}, {.n_head = 2, .scale = -1.0f}, QKV_ERR_RANGE, "scale -1"},
        {{2, 5, 8}, {2, 5, 8}, {2, 5, 8}, {.n_head = 2, .scale = NAN}, QKV_ERR_RANGE, "scale nan"},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qkv_ctx_reset(ctx);
        qkv_ctx_clear_error(ctx);
        qkv_tensor *res_t = qkv_attention(ctx, qkv_tensor_new(ctx, 3, bad[i].q), qkv_tensor_new(ctx, 3, bad[i].k),
                                          qkv_tensor_new(ctx, 3, bad[i].v), &bad[i].o);
        const char *msg = qkv_ctx_error(ctx);
        TU_CHECK(!res_t && qkv_ctx_status(ctx) == bad[i].want && strstr(msg, "attention:") && strstr(msg, bad[i].has),
                 "bad call %zu: status %s, message '%s' (want '%s')", i, qkv_status_str(qkv_ctx_status(ctx)), msg,
                 bad[i].has);
    }
    qkv_ctx_reset(ctx);
    qkv_ctx_clear_error(ctx);
    qkv_tensor *q4 = qkv_tensor_new4(ctx, 1, 2, 3, 4);
    TU_CHECK(!qkv_attention(ctx, q4, q4, q4, &o) && strstr(qkv_ctx_error(ctx), "3-D"), "4-D q: '%s'",
             qkv_ctx_error(ctx));
    qkv_ctx_clear_error(ctx);
    TU_CHECK(!qkv_attention(ctx, q4, q4, q4, NULL) && qkv_ctx_status(ctx) == QKV_ERR_ARG, "NULL opts: '%s'",
             qkv_ctx_error(ctx));
    printf("ok   op: validation errors name the op and the shapes (last: %s)\n", qkv_ctx_error(ctx));
    qkv_ctx_free(ctx);
}

/* ---- qkv_softmax_masked and qkv_additive_scores: values against double loops ---- */

static void test_small_ops(void) {
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_rng r;
    qkv_rng_seed(&r, 11);
    const int B = 3, Tq = 6, Tk = 9, A = 7;
    /* entry 0: last two keys padded; entry 1: every key padded (all rows -> 0); entry 2: key 0 padded
     * (with causal, Tk - Tq = 3: query 0 sees keys 0..3) */
    uint8_t mask[3 * 9] = {0};
    mask[7] = mask[8] = 1;
    for (int j = 0; j < Tk; j++) mask[Tk + j] = 1;
    mask[2 * Tk] = 1;
    qkv_tensor *s = rand_tensor(ctx, &r, B, Tq, Tk);
    for (int causal = 0; causal < 2; causal++) {
        qkv_tensor *y = qkv_softmax_masked(ctx, s, mask, causal);
        float *ref = zalloc((int64_t)B * Tq * Tk);
        for (int b = 0; b < B; b++)
            for (int i = 0; i < Tq; i++) {
                const float *x = s->data + (b * Tq + i) * Tk;
                double mx = -INFINITY, sum = 0;
                for (int j = 0; j < Tk; j++)
                    if (!mask[b * Tk + j] && (!causal || j <= i + Tk - Tq) && x[j] > mx) mx = x[j];
                if (mx == -INFINITY) continue;
                for (int j = 0; j < Tk; j++)
                    if (!mask[b * Tk + j] && (!causal || j <= i + Tk - Tq)) sum += exp(x[j] - mx);
                for (int j = 0; j < Tk; j++)
                    if (!mask[b * Tk + j] && (!causal || j <= i + Tk - Tq))
                        ref[(b * Tq + i) * Tk + j] = (float)(exp(x[j] - mx) / sum);
            }
        tu_close(causal ? "softmax_masked padding + causal vs double" : "softmax_masked padding vs double",
                 y->data, ref, (int64_t)B * Tq * Tk, TOL_FWD);
        int zero = 1;
        for (int x = Tq * Tk; x < 2 * Tq * Tk; x++) zero &= y->data[x] == 0.0f;
        TU_CHECK(zero, "softmax_masked: fully padded batch entry must give 0");
        free(ref);
    }

    qkv_tensor *wq = rand_tensor(ctx, &r, B, Tq, A), *uk = rand_tensor(ctx, &r, B, Tk, A);
    qkv_tensor *v = qkv_tensor_new1(ctx, A);
    fill(&r, v->data, A, 1.0f);
    qkv_tensor *sc = qkv_additive_scores(ctx, wq, uk, v);
    float *ref = zalloc((int64_t)B * Tq * Tk);
    for (int b = 0; b < B; b++)
        for (int i = 0; i < Tq; i++)
            for (int j = 0; j < Tk; j++) {
                double acc = 0;
                for (int c = 0; c < A; c++)
                    acc += v->data[c] * tanh((double)wq->data[(b * Tq + i) * A + c] + uk->data[(b * Tk + j) * A + c]);
                ref[(b * Tq + i) * Tk + j] = (float)acc;
            }
    tu_close("additive_scores vs double", sc->data, ref, (int64_t)B * Tq * Tk, TOL_FWD);
    free(ref);

    TU_CHECK(!qkv_softmax_masked(ctx, qkv_tensor_new2(ctx, 3, 4), NULL, 0) &&
                 strstr(qkv_ctx_error(ctx), "softmax_masked: scores must be 3-D"),
             "softmax_masked 2-D: '%s'", qkv_ctx_error(ctx));
    qkv_ctx_clear_error(ctx);
    TU_CHECK(!qkv_additive_scores(ctx, wq, uk, qkv_tensor_new1(ctx, A + 1)) &&
                 strstr(qkv_ctx_error(ctx), "additive_scores:") && strstr(qkv_ctx_error(ctx), "v (8)"),
             "additive_scores bad v: '%s'", qkv_ctx_error(ctx));
    qkv_ctx_free(ctx);
}

/* ---- memory: O(T), never T x T ---- */

static void test_memory(void) {
    const int64_t T = 4096, D = 64;
    qkv_params *p = qkv_params_new();
    /* q, k, v live in a parameter block (data and grad), so the arena holds only what attention itself
     * and the loss need. */
    qkv_init init = {QKV_INIT_NORMAL, 1.0f};
    qkv_tensor *q = qkv_params_add(p, "q", 3, (int64_t[]){1, T, D}, init, 0);
    qkv_tensor *k = qkv_params_add(p, "k", 3, (int64_t[]){1, T, D}, init, 0);
    qkv_tensor *v = qkv_params_add(p, "v", 3, (int64_t[]){1, T, D}, init, 0);
    qkv_params_alloc(p, 1);
    qkv_ctx *ctx = qkv_ctx_new(1 << 20);
    qkv_attn_opts o = {.n_head = 1, .causal = 1};
    qkv_tensor *out = qkv_attention(ctx, q, k, v, &o);
    qkv_status st = qkv_backward(ctx, qkv_sum(ctx, out));
    TU_CHECK(st == QKV_OK, "memory test backward: %s", qkv_ctx_error(ctx));
    const size_t peak = qkv_ctx_arena_peak(ctx), tt = (size_t)(T * T * 4);
    tu_checks++;
    if (peak >= tt / 8) tu_failures++;
    printf("%-4s memory: T=%lld H=1 D=64 fwd+bwd arena peak %.2f MiB; T*T*4 = %.0f MiB (limit %.0f MiB = T*T*4/8)\n",
           peak < tt / 8 ? "ok" : "FAIL", (long long)T, peak / 1048576.0, tt / 1048576.0, tt / 8 / 1048576.0);
    int finite = 1;
    for (int64_t i = 0; i < T * D; i++) finite &= isfinite(q->grad[i]) && isfinite(k->grad[i]) && isfinite(v->grad[i]);
    TU_CHECK(finite, "memory test: non-finite gradients");
    qkv_ctx_free(ctx);
    qkv_params_free(p);
}

int main(void) {
    printf("attention tiles: %s, %d x %d, %d threads\n", qkv__attention_isa_name(&(qkv__attn){.nthreads = 1}),
           QKV__ATTN_BQ, QKV__ATTN_BK, omp_get_max_threads());
    test_exp();
    test_shapes();
    test_threads(3);
    test_threads(4);
    test_dropout_fraction();
    test_op();
    test_small_ops();
    test_memory();
    return tu_finish("test_attention");
}

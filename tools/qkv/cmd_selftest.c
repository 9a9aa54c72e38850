/* cmd_selftest.c — `qkv selftest`: a quick numerical self-check a user can run on their machine.
 *
 * Each check compares a fast path of the library with an independent computation written here in
 * plain double-precision loops (or finite differences), prints what it compared, the largest error
 * and the tolerance, and the command fails if any check fails. It is not the test suite (that is
 * `scripts/test.sh`, with PyTorch goldens); it is the seconds-long proof that this build computes
 * the right numbers on this CPU.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "qkv.h"
#include "commands.h"

static int n_fail, n_check;

/* Normalised max error |a-b|_inf / |ref|_inf, printed against tol. */
static void report(const char *what, const float *got, const double *ref, int64_t n, double tol) {
    double md = 0, mr = 0;
    int finite = 1;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i])) finite = 0;
        double d = fabs(got[i] - ref[i]);
        if (d > md) md = d;
        if (fabs(ref[i]) > mr) mr = fabs(ref[i]);
    }
    double err = md / (mr > 1e-12 ? mr : 1e-12);
    int ok = finite && err <= tol;
    n_check++;
    n_fail += !ok;
    printf("  %-4s %-58s max rel err %.2e (tol %.0e)\n", ok ? "ok" : "FAIL", what, err, tol);
}

static void fill(qkv_rng *r, float *x, int64_t n, float s) {
    for (int64_t i = 0; i < n; i++) x[i] = s * qkv_rng_normal(r);
}

static int check_ctx(qkv_ctx *ctx, const char *what) {
    if (qkv_ctx_status(ctx) == QKV_OK) return 1;
    printf("  FAIL %s: %s\n", what, qkv_ctx_error(ctx));
    n_fail++;
    n_check++;
    qkv_ctx_clear_error(ctx);
    return 0;
}

static void check_matmul(qkv_ctx *ctx, qkv_rng *r) {
    const int M = 67, K = 129, N = 203;
    qkv_tensor *a = qkv_tensor_new2(ctx, M, K), *b = qkv_tensor_new2(ctx, N, K);
    if (!check_ctx(ctx, "matmul setup")) return;
    fill(r, a->data, M * K, 1), fill(r, b->data, N * K, 1);
    qkv_tensor *c = qkv_matmul(ctx, a, b, 0, 1);
    if (!check_ctx(ctx, "matmul")) return;
    double *ref = malloc(sizeof(double) * M * N);
    for (int i = 0; i < M; i++)
        for (int j = 0; j < N; j++) {
            double s = 0;
            for (int k = 0; k < K; k++) s += (double)a->data[i * K + k] * b->data[j * K + k];
            ref[i * N + j] = s;
        }
    report("matmul a(67,129) @ b(203,129)^T vs double loops", c->data, ref, M * N, 1e-5);
    free(ref);
}

static void check_layernorm_gelu(qkv_ctx *ctx, qkv_rng *r) {
    const int N = 33, C = 96;
    qkv_tensor *x = qkv_tensor_new2(ctx, N, C), *w = qkv_tensor_new1(ctx, C), *b = qkv_tensor_new1(ctx, C);
    if (!check_ctx(ctx, "layernorm setup")) return;
    fill(r, x->data, N * C, 3), fill(r, w->data, C, 1), fill(r, b->data, C, 1);
    qkv_tensor *y = qkv_layernorm(ctx, x, w, b, 1e-5f);
    qkv_tensor *g0 = qkv_gelu(ctx, x, 0), *g1 = qkv_gelu(ctx, x, 1);
    if (!check_ctx(ctx, "layernorm/gelu")) return;
    double *ref = malloc(sizeof(double) * N * C);
    for (int i = 0; i < N; i++) {
        double m = 0, v = 0;
        for (int j = 0; j < C; j++) m += x->data[i * C + j];
        m /= C;
        for (int j = 0; j < C; j++) v += (x->data[i * C + j] - m) * (x->data[i * C + j] - m);
        v /= C;
        for (int j = 0; j < C; j++)
            ref[i * C + j] = (x->data[i * C + j] - m) / sqrt(v + 1e-5) * w->data[j] + b->data[j];
    }
    report("layernorm (33,96) vs double formula", y->data, ref, N * C, 1e-5);
    for (int i = 0; i < N * C; i++) ref[i] = 0.5 * x->data[i] * (1 + erf(x->data[i] / sqrt(2.0)));
    report("gelu (erf) vs double formula", g0->data, ref, N * C, 1e-5);
    for (int i = 0; i < N * C; i++) {
        double t = x->data[i];
        ref[i] = 0.5 * t * (1 + tanh(sqrt(2 / M_PI) * (t + 0.044715 * t * t * t)));
    }
    report("gelu (tanh, GPT-2) vs double formula", g1->data, ref, N * C, 1e-5);
    free(ref);
}

static void check_attention(qkv_ctx *ctx, qkv_rng *r) {
    const int B = 2, T = 45, H = 3, D = 24, C = H * D;
    qkv_tensor *q = qkv_tensor_new3(ctx, B, T, C), *k = qkv_tensor_new3(ctx, B, T, C),
               *v = qkv_tensor_new3(ctx, B, T, C);
    if (!check_ctx(ctx, "attention setup")) return;
    fill(r, q->data, B * T * C, 1), fill(r, k->data, B * T * C, 1), fill(r, v->data, B * T * C, 1);
    qkv_tensor *w = NULL;
    qkv_attn_opts o = {.n_head = H, .causal = 1};
    qkv_tensor *fast = qkv_attention(ctx, q, k, v, &o);
    o.weights = &w;
    qkv_tensor *mat = qkv_attention(ctx, q, k, v, &o);
    if (!check_ctx(ctx, "attention")) return;
    double *ref = calloc((size_t)B * T * C, sizeof(double));
    double *s = malloc(sizeof(double) * T);
    for (int b = 0; b < B; b++)
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double mx = -1e300, z = 0;
                for (int j = 0; j <= i; j++) {
                    double d = 0;
                    for (int e = 0; e < D; e++)
                        d += (double)q->data[(b * T + i) * C + h * D + e] * k->data[(b * T + j) * C + h * D + e];
                    s[j] = d / sqrt((double)D);
                    if (s[j] > mx) mx = s[j];
                }
                for (int j = 0; j <= i; j++) z += (s[j] = exp(s[j] - mx));
                for (int j = 0; j <= i; j++)
                    for (int e = 0; e < D; e++)
                        ref[(b * T + i) * C + h * D + e] += s[j] / z * v->data[(b * T + j) * C + h * D + e];
            }
    report("causal attention, tiled online softmax vs double loops", fast->data, ref, B * T * C, 1e-5);
    report("causal attention, materialised weights vs double loops", mat->data, ref, B * T * C, 1e-5);
    free(ref);
    free(s);
}

/* d loss / d param from the tape against central differences, for a pre-LN encoder layer. */
static void check_gradients(qkv_ctx *ctx, qkv_rng *r) {
    const int B = 2, T = 5, E = 12, H = 3;
    qkv_params *p = qkv_params_new();
    qkv_encoder_layer_m layer;
    qkv_layer_config cfg = qkv_layer_config_default();
    cfg.d_model = E, cfg.n_head = H, cfg.dim_feedforward = 16, cfg.dropout = 0, cfg.norm_first = 1;
    cfg.activation = QKV_ACT_GELU_TANH;
    if (qkv_encoder_layer_init(&layer, p, "layer", &cfg) != QKV_OK || qkv_params_alloc(p, 7) != QKV_OK) {
        printf("  FAIL encoder layer init: %s\n", qkv_last_error());
        n_fail++;
        qkv_params_free(p);
        return;
    }
    float *x = malloc(sizeof(float) * B * T * E), *wsum = malloc(sizeof(float) * B * T * E);
    fill(r, x, B * T * E, 1), fill(r, wsum, B * T * E, 1);
    int64_t shp[3] = {B, T, E};
    /* loss = sum(layer(x) * wsum), evaluated in double for the finite differences */
    double worst = 0;
    qkv_params_zero_grad(p);
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, 1);
    qkv_tensor *xt = qkv_tensor_from(ctx, 3, shp, x), *wt = qkv_tensor_from(ctx, 3, shp, wsum);
    qkv_tensor *loss = qkv_sum(ctx, qkv_mul(ctx, qkv_encoder_layer_forward(ctx, &layer, xt, NULL, 1, NULL), wt));
    if (!check_ctx(ctx, "encoder layer forward") || qkv_backward(ctx, loss) != QKV_OK) {
        check_ctx(ctx, "encoder layer backward");
        goto done;
    }
    qkv_ctx_set_grad(ctx, 0);
    int checked = 0;
    for (int i = 0; i < qkv_params_count(p); i++) {
        qkv_tensor *t = qkv_params_get(p, i);
        int64_t n = qkv_tensor_numel(t);
        for (int s = 0; s < 3; s++) { /* three sampled entries of every parameter */
            int64_t j = (int64_t)(qkv_rng_u64(r) % (uint64_t)n);
            float keep = t->data[j], h = 1e-2f;
            double l[2];
            for (int side = 0; side < 2; side++) {
                t->data[j] = keep + (side ? -h : h);
                qkv_ctx_reset(ctx);
                qkv_tensor *o = qkv_encoder_layer_forward(ctx, &layer, qkv_tensor_from(ctx, 3, shp, x), NULL, 1, NULL);
                if (!check_ctx(ctx, "encoder layer forward")) goto done;
                l[side] = 0;
                for (int e = 0; e < B * T * E; e++) l[side] += (double)o->data[e] * wsum[e];
            }
            t->data[j] = keep;
            double num = (l[0] - l[1]) / (2.0 * h), an = t->grad[j];
            double err = fabs(num - an) / fmax(fmax(fabs(num), fabs(an)), 1e-2);
            if (err > worst) worst = err;
            checked++;
        }
    }
    {
        int ok = worst <= 2e-2;
        n_check++;
        n_fail += !ok;
        printf("  %-4s %-58s max rel err %.2e (tol 2e-02)\n", ok ? "ok" : "FAIL",
               "pre-LN encoder layer: tape gradients vs finite differences", worst);
        printf("       (%d parameter entries sampled across %d tensors)\n", checked, qkv_params_count(p));
    }
done:
    qkv_ctx_set_grad(ctx, 1);
    free(x);
    free(wsum);
    qkv_params_free(p);
}

static void check_adamw(void) {
    qkv_params *p = qkv_params_new();
    qkv_tensor *w = qkv_params_add(p, "w", 1, (int64_t[]){5}, (qkv_init){QKV_INIT_NORMAL, 1}, 0);
    if (!w || qkv_params_alloc(p, 3) != QKV_OK) {
        printf("  FAIL adamw setup: %s\n", qkv_last_error());
        n_fail++;
        qkv_params_free(p);
        return;
    }
    qkv_adamw_opts o = qkv_adamw_default_opts();
    o.weight_decay = 0.1f;
    qkv_optim *opt = qkv_adamw_new(p, &o);
    double ref[5], m[5] = {0}, v[5] = {0};
    for (int i = 0; i < 5; i++) ref[i] = w->data[i];
    const double lr = 1e-2;
    for (int t = 1; t <= 3; t++) {
        for (int i = 0; i < 5; i++) w->grad[i] = (float)(0.3 * i - 0.5 + 0.1 * t);
        qkv_optim_step(opt, (float)lr);
        for (int i = 0; i < 5; i++) {
            double g = 0.3 * i - 0.5 + 0.1 * t;
            ref[i] *= 1 - lr * 0.1;
            m[i] = 0.9 * m[i] + 0.1 * g;
            v[i] = 0.999 * v[i] + 0.001 * g * g;
            ref[i] -= lr * (m[i] / (1 - pow(0.9, t))) / (sqrt(v[i] / (1 - pow(0.999, t))) + 1e-8);
        }
    }
    report("AdamW, 3 steps, decoupled weight decay vs formula", w->data, ref, 5, 1e-5);
    qkv_optim_free(opt);
    qkv_params_free(p);
}

int qkv_cmd_selftest(int argc, char **argv) {
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--help") == 0) {
            printf("usage: qkv selftest\n\nRuns a quick numerical self-check: each fast kernel against plain\n"
                   "double-precision loops, tape gradients against finite differences, AdamW against its\n"
                   "formula. Prints every comparison; exits 1 if any fails.\n");
            return 0;
        }
        fprintf(stderr, "qkv selftest: unknown option '%s'\nhint: qkv selftest --help\n", argv[i]);
        return 2;
    }
    qkv_ctx *ctx = qkv_ctx_new(0);
    if (!ctx) {
        fprintf(stderr, "qkv selftest: %s\n", qkv_last_error());
        return 1;
    }
    clock_t t0 = clock();
    qkv_rng r;
    qkv_rng_seed(&r, 42);
    printf("qkv %s selftest\n", QKV_VERSION);
    check_matmul(ctx, &r);
    check_layernorm_gelu(ctx, &r);
    check_attention(ctx, &r);
    check_gradients(ctx, &r);
    check_adamw();
    qkv_ctx_free(ctx);
    printf("selftest: %d checks, %d failed (%.1f s cpu)\n", n_check, n_fail, (double)(clock() - t0) / CLOCKS_PER_SEC);
    return n_fail ? 1 : 0;
}

/* test_gpt.c — the GPT-2 model without PyTorch: gradients by finite differences, KV-cache decoding
 * against the full forward, dropout determinism, Hugging Face's initialisation, and bad input.
 * (Parity with PyTorch is test_torch_gpt2.c.)
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "testutil.h"

static qkv_gpt_config tiny_config(int64_t V, int64_t P, int64_t C, int L, int H) {
    qkv_gpt_config c = qkv_gpt_config_gpt2();
    c.vocab_size = V;
    c.n_positions = P;
    c.n_embd = C;
    c.n_layer = L;
    c.n_head = H;
    return c;
}

/* Overwrites every parameter with values that make every path matter: weights N(0, 0.3^2),
 * LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.1^2) (HF's zero biases / unit LayerNorm would
 * hide a gradient that ignores them). */
static void randomise(qkv_gpt *m, uint64_t seed) {
    qkv_params *p = qkv_gpt_params(m);
    qkv_rng r;
    qkv_rng_seed(&r, seed);
    for (int i = 0; i < qkv_params_count(p); i++) {
        qkv_tensor *t = qkv_params_get(p, i);
        const int is_ln_w = strstr(t->name, "ln_") && strstr(t->name, ".weight");
        const float sd = t->ndim == 1 ? 0.1f : 0.3f;
        for (int64_t j = 0; j < qkv_tensor_numel(t); j++) t->data[j] = (is_ln_w ? 1.0f : 0.0f) + sd * qkv_rng_normal(&r);
    }
}

/* Mean cross-entropy over targets != -100, in double, from float logits (B*T, V). */
static double ce_double(const float *logits, const int32_t *targets, int64_t rows, int64_t V) {
    double sum = 0;
    int64_t n = 0;
    for (int64_t r = 0; r < rows; r++) {
        if (targets[r] == -100) continue;
        const float *x = logits + r * V;
        double mx = x[0];
        for (int64_t v = 1; v < V; v++) mx = x[v] > mx ? x[v] : mx;
        double s = 0;
        for (int64_t v = 0; v < V; v++) s += exp((double)x[v] - mx);
        sum += mx + log(s) - (double)x[targets[r]];
        n++;
    }
    return sum / (double)n;
}

/* 1 when some element differs by more than d. */
static int max_diff_gt(const float *a, const float *b, int64_t n, double d) {
    for (int64_t i = 0; i < n; i++)
        if (fabs((double)a[i] - (double)b[i]) > d) return 1;
    return 0;
}

/* ---- (1) gradients: analytic (tape) vs central differences, sampled entries of every tensor ----
 * L = mean CE over the targets (two of them -100), dropout off. The analytic side is the float32
 * tape; the numeric side evaluates L in double from the float32 logits at w +- h, h = 1e-2 (inputs
 * to every LayerNorm have scale ~1 here, so h is small against the curvature: truncation ~1e-4
 * relative), and logit rounding (~1e-7) gives ~1e-5/2h = 5e-4 noise at worst on derivatives of
 * ~1e-2. Error per entry = |a - n| / max(|n|, 0.05 max_tensor |a|, 1e-4): near-zero entries are
 * judged against the tensor's scale (a relative error of a ~0 derivative means nothing). Tolerance
 * 2e-2: well above the noise, far below a missing or wrong term (an error of O(1)). */
static void test_gradients(void) {
    const int64_t V = 13, P = 8, C = 12, B = 2, T = 6;
    qkv_gpt_config cfg = tiny_config(V, P, C, 2, 3);
    cfg.embd_pdrop = cfg.attn_pdrop = cfg.resid_pdrop = 0.0f;
    qkv_gpt *m = qkv_gpt_new(&cfg, 5);
    randomise(m, 77);
    int32_t ids[B * T], tg[B * T];
    qkv_rng r;
    qkv_rng_seed(&r, 9);
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)(qkv_rng_u64(&r) % V);
    for (int i = 0; i < B * T; i++) tg[i] = (i % T == T - 1) ? (int32_t)(qkv_rng_u64(&r) % V) : ids[i + 1];
    tg[2] = -100;
    tg[T + 4] = -100;

    qkv_ctx *ctx = qkv_ctx_new(1 << 22);
    qkv_params *p = qkv_gpt_params(m);
    qkv_params_zero_grad(p);
    qkv_tensor *loss = NULL;
    qkv_tensor *lg = qkv_gpt_forward(ctx, m, ids, B, T, tg, &loss);
    TU_CHECK(lg && loss && qkv_backward(ctx, loss) == QKV_OK, "gradcheck forward/backward: %s", qkv_ctx_error(ctx));
    if (!lg || !loss) goto out;
    double l0 = ce_double(lg->data, tg, B * T, V);
    TU_CHECK(fabs(l0 - loss->data[0]) < 1e-5 * fabs(l0), "loss %.8g vs CE in double %.8g", loss->data[0], l0);
    printf("gpt gradcheck: loss %.6f (double reference %.6f), %d tensors\n", loss->data[0], l0, qkv_params_count(p));
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, 0);

    const float h = 1e-2f;
    double worst = 0;
    for (int i = 0; i < qkv_params_count(p); i++) {
        qkv_tensor *t = qkv_params_get(p, i);
        const int64_t n = qkv_tensor_numel(t);
        double gmax = 0;
        for (int64_t j = 0; j < n; j++) gmax = fmax(gmax, fabs(t->grad[j]));
        /* samples: the 3 largest |gradient| entries and 5 random ones */
        int64_t idx[8];
        for (int k = 0; k < 3; k++) {
            int64_t best = -1;
            for (int64_t j = 0; j < n; j++) {
                int taken = 0;
                for (int q = 0; q < k; q++) taken |= idx[q] == j;
                if (!taken && (best < 0 || fabs(t->grad[j]) > fabs(t->grad[best]))) best = j;
            }
            idx[k] = best;
        }
        for (int k = 3; k < 8; k++) idx[k] = (int64_t)(qkv_rng_u64(&r) % (uint64_t)n);
        double err = 0;
        for (int k = 0; k < 8; k++) {
            float *w = &t->data[idx[k]];
            const float w0 = *w;
            *w = w0 + h;
            qkv_tensor *a = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
            double lp = a ? ce_double(a->data, tg, B * T, V) : NAN;
            qkv_ctx_reset(ctx);
            *w = w0 - h;
            a = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
            double lm = a ? ce_double(a->data, tg, B * T, V) : NAN;
            qkv_ctx_reset(ctx);
            *w = w0;
            double num = (lp - lm) / (2.0 * h), an = t->grad[idx[k]];
            double den = fmax(fabs(num), fmax(0.05 * gmax, 1e-4));
            double e = fabs(an - num) / den;
            if (!(e <= err)) err = e;
        }
        int ok = err <= 2e-2;
        tu_checks++;
        if (!ok) tu_failures++;
        char shp[64];
        printf("%-4s grad %-24s %-8s max|grad| %.3e  max_rel_err %.2e (tol 2e-02, 8 samples)\n", ok ? "ok" : "FAIL",
               t->name, qkv_tensor_shape_str(t, shp, sizeof shp), gmax, err);
        if (!(err <= worst)) worst = err;
    }
    printf("gpt gradcheck: worst relative error %.2e over all tensors\n", worst);
out:
    qkv_ctx_free(ctx);
    qkv_gpt_free(m);
}

/* ---- (2) the KV cache: decoding step by step gives the full forward's logits ---- */
static void test_cache(void) {
    const int64_t V = 61, P = 40, C = 24, T = 37;
    qkv_gpt_config cfg = tiny_config(V, P, C, 3, 4);
    qkv_gpt *m = qkv_gpt_new(&cfg, 11);
    randomise(m, 12);
    int32_t ids[T];
    for (int i = 0; i < T; i++) ids[i] = (int32_t)((i * 17 + 5) % V);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_ctx_set_grad(ctx, 0);
    qkv_tensor *lg = qkv_gpt_forward(ctx, m, ids, 1, T, NULL, NULL);
    float *full = malloc(sizeof(float) * (size_t)(T * V)), *got = malloc(sizeof(float) * (size_t)(T * V));
    memcpy(full, lg->data, sizeof(float) * (size_t)(T * V));
    qkv_gpt_cache *c = qkv_gpt_cache_new(m, P);

    /* every token one at a time, last-row logits */
    for (int64_t t = 0; t < T; t++) {
        qkv_status s = qkv_gpt_step(ctx, m, c, &ids[t], 1, got + t * V, 0);
        TU_CHECK(s == QKV_OK, "decode step %lld: %s", (long long)t, qkv_ctx_error(ctx));
    }
    TU_CHECK(qkv_gpt_cache_len(c) == T, "cache len %lld, want %lld", (long long)qkv_gpt_cache_len(c), (long long)T);
    /* Same float32 math in a different order (1-row GEMV vs blocked GEMM, one key block vs many):
     * rounding-level differences only, so 1e-5 of the logits' scale. */
    tu_close("cache: 1-token decode x 37 vs full forward", got, full, T * V, 1e-5);

    /* a prefill of 10, then 1-token steps, then a second multi-token chunk of 5 */
    qkv_gpt_cache_reset(c);
    TU_CHECK(qkv_gpt_cache_len(c) == 0, "reset: len %lld", (long long)qkv_gpt_cache_len(c));
    qkv_status s = qkv_gpt_step(ctx, m, c, ids, 10, got, 1);
    for (int64_t t = 10; t < 20 && s == QKV_OK; t++) s = qkv_gpt_step(ctx, m, c, &ids[t], 1, got + t * V, 1);
    if (s == QKV_OK) s = qkv_gpt_step(ctx, m, c, &ids[20], 5, got + 20 * V, 1);
    if (s == QKV_OK) s = qkv_gpt_step(ctx, m, c, &ids[25], T - 25, got + 25 * V, 1);
    TU_CHECK(s == QKV_OK, "mixed steps: %s", qkv_ctx_error(ctx));
    tu_close("cache: prefill 10 + 10 x 1 + 5 + 12 (all rows)", got, full, T * V, 1e-5);

    /* the step leaves the ctx's modes as it found them and resets its arena */
    qkv_ctx_set_grad(ctx, 1);
    qkv_ctx_set_training(ctx, 1);
    qkv_gpt_cache_reset(c);
    s = qkv_gpt_step(ctx, m, c, ids, 4, got, 0);
    TU_CHECK(s == QKV_OK && qkv_ctx_grad_enabled(ctx) && qkv_ctx_training(ctx) && qkv_ctx_arena_used(ctx) == 0,
             "step must restore grad/training and reset the arena (status %d, used %zu)", (int)s,
             qkv_ctx_arena_used(ctx));
    tu_close("cache: step in a training-mode ctx runs in eval mode", got, full + 3 * V, V, 1e-5);
    printf("cache: arena peak after decoding %zu bytes\n", qkv_ctx_arena_peak(ctx));

    qkv_gpt_cache_free(c);
    free(full);
    free(got);
    qkv_ctx_free(ctx);
    qkv_gpt_free(m);
}

/* ---- (3) dropout: fixed seed, same masks; training differs from eval; p = 0 is eval ---- */
static void test_dropout(void) {
    const int64_t V = 29, P = 16, C = 16, B = 2, T = 12;
    qkv_gpt_config cfg = tiny_config(V, P, C, 2, 2); /* HF defaults: all three dropouts 0.1 */
    qkv_gpt *m = qkv_gpt_new(&cfg, 3);
    randomise(m, 4);
    int32_t ids[B * T];
    for (int i = 0; i < B * T; i++) ids[i] = (int32_t)((i * 7 + 1) % V);
    const int64_t n = B * T * V;
    float *a = malloc(sizeof(float) * (size_t)n), *b = malloc(sizeof(float) * (size_t)n);
    float *e = malloc(sizeof(float) * (size_t)n);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_tensor *lg = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
    memcpy(e, lg->data, sizeof(float) * (size_t)n);
    qkv_ctx_reset(ctx);

    qkv_ctx_set_training(ctx, 1);
    qkv_ctx_seed(ctx, 42);
    lg = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
    memcpy(a, lg->data, sizeof(float) * (size_t)n);
    qkv_ctx_reset(ctx);
    qkv_ctx_seed(ctx, 42);
    lg = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
    memcpy(b, lg->data, sizeof(float) * (size_t)n);
    qkv_ctx_reset(ctx);
    TU_CHECK(memcmp(a, b, sizeof(float) * (size_t)n) == 0, "dropout: same seed must give bit-identical logits");
    TU_CHECK(max_diff_gt(a, e, n, 1e-3), "dropout: training-mode logits must differ from eval");
    qkv_ctx_seed(ctx, 43);
    lg = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
    TU_CHECK(lg && max_diff_gt(a, lg->data, n, 1e-3), "dropout: another seed must give other masks");
    qkv_ctx_reset(ctx);

    qkv_gpt_free(m);
    cfg.embd_pdrop = cfg.attn_pdrop = cfg.resid_pdrop = 0.0f;
    m = qkv_gpt_new(&cfg, 3);
    randomise(m, 4);
    lg = qkv_gpt_forward(ctx, m, ids, B, T, NULL, NULL);
    TU_CHECK(lg && memcmp(lg->data, e, sizeof(float) * (size_t)n) == 0, "dropout 0 in training == eval");
    printf("dropout: same seed bit-identical, other seed / eval differ, p = 0 equals eval\n");
    qkv_ctx_free(ctx);
    qkv_gpt_free(m);
    free(a);
    free(b);
    free(e);
}

/* ---- Hugging Face's initialisation ---- */
static void test_init(void) {
    qkv_gpt_config cfg = tiny_config(500, 64, 96, 4, 4);
    qkv_gpt *m = qkv_gpt_new(&cfg, 1);
    TU_CHECK(m != NULL, "qkv_gpt_new: %s", qkv_last_error());
    if (!m) return;
    qkv_params *p = qkv_gpt_params(m);
    const int64_t C = 96;
    /* 2 embeddings + 12 per layer + ln_f */
    TU_CHECK(qkv_params_count(p) == 2 + 12 * 4 + 2, "%d parameter tensors", qkv_params_count(p));
    TU_CHECK(qkv_params_numel_real(p) == (500 + 64) * C + 4 * (12 * C * C + 13 * C) + 2 * C,
             "parameter count %lld", (long long)qkv_params_numel_real(p));
    static const char *const order[] = {"wte.weight", "wpe.weight", "h.0.ln_1.weight", "h.0.ln_1.bias",
                                        "h.0.attn.c_attn.weight", "h.0.attn.c_attn.bias", "h.0.attn.c_proj.weight",
                                        "h.0.attn.c_proj.bias", "h.0.ln_2.weight", "h.0.ln_2.bias",
                                        "h.0.mlp.c_fc.weight", "h.0.mlp.c_fc.bias", "h.0.mlp.c_proj.weight",
                                        "h.0.mlp.c_proj.bias", "h.1.ln_1.weight"};
    for (int i = 0; i < 15; i++)
        TU_CHECK(strcmp(qkv_params_get(p, i)->name, order[i]) == 0, "parameter %d is %s, want %s", i,
                 qkv_params_get(p, i)->name, order[i]);
    TU_CHECK(strcmp(qkv_params_get(p, qkv_params_count(p) - 1)->name, "ln_f.bias") == 0, "last is ln_f.bias");
    struct {
        const char *name;
        double mean, std;
    } want[] = {{"wte.weight", 0, 0.02},
                {"wpe.weight", 0, 0.02},
                {"h.1.attn.c_attn.weight", 0, 0.02},
                {"h.2.mlp.c_fc.weight", 0, 0.02},
                {"h.0.attn.c_proj.weight", 0, 0.02 / sqrt(8.0)},
                {"h.3.mlp.c_proj.weight", 0, 0.02 / sqrt(8.0)},
                {"h.1.ln_1.weight", 1, 0},
                {"h.1.ln_2.bias", 0, 0},
                {"h.2.mlp.c_fc.bias", 0, 0},
                {"ln_f.weight", 1, 0}};
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        qkv_tensor *t = qkv_params_find(p, want[i].name);
        const int64_t n = qkv_tensor_numel(t);
        double s = 0, s2 = 0;
        for (int64_t j = 0; j < n; j++) {
            s += t->data[j];
            s2 += (double)t->data[j] * t->data[j];
        }
        double mean = s / n, sd = sqrt(fmax(s2 / n - mean * mean, 0));
        /* sample std of n >= 9216 normals is within 3% w.p. > 0.999 */
        int ok = want[i].std == 0 ? (mean == want[i].mean && sd == 0)
                                  : (fabs(mean) < 4 * want[i].std / sqrt((double)n) && fabs(sd / want[i].std - 1) < 0.03);
        TU_CHECK(ok, "init %s: mean %g std %g, want mean %g std %g", want[i].name, mean, sd, want[i].mean, want[i].std);
    }
    qkv_gpt *m2 = qkv_gpt_new(&cfg, 1);
    TU_CHECK(memcmp(qkv_params_data(p), qkv_params_data(qkv_gpt_params(m2)),
                    sizeof(float) * (size_t)qkv_params_numel(p)) == 0, "same seed, same initial weights");
    printf("init: HF scheme (N(0,0.02), c_proj N(0,(0.02/sqrt(2L))^2), zero biases, unit LayerNorm), same seed same weights\n");
    qkv_gpt_free(m2);
    qkv_gpt_free(m);
}

/* ---- (4) bad input ---- */

/* A one-line, non-empty message that contains needle. */
static void check_msg(const char *what, const char *msg, const char *needle) {
    int ok = msg && *msg && !strchr(msg, '\n') && strstr(msg, needle);
    TU_CHECK(ok, "%s: message \"%s\" should be one line naming \"%s\"", what, msg ? msg : "(null)", needle);
    if (ok) printf("ok   bad input %-34s -> %s\n", what, msg);
}

static void bad_config(const char *what, qkv_gpt_config c, const char *needle) {
    qkv_status s = qkv_gpt_config_check(&c);
    TU_CHECK(s != QKV_OK, "%s: config accepted", what);
    check_msg(what, qkv_last_error(), needle);
    qkv_gpt *m = qkv_gpt_new(&c, 1);
    TU_CHECK(m == NULL, "%s: qkv_gpt_new accepted it", what);
    qkv_gpt_free(m);
}

static void test_bad_input(void) {
    qkv_gpt_config ok = tiny_config(20, 16, 8, 1, 2), c;
    TU_CHECK(qkv_gpt_config_check(&ok) == QKV_OK, "tiny config rejected: %s", qkv_last_error());
    qkv_gpt_config g2 = qkv_gpt_config_gpt2();
    TU_CHECK(qkv_gpt_config_check(&g2) == QKV_OK && g2.vocab_size == 50257 && g2.n_embd == 768, "gpt2 config");
    c = ok; c.n_embd = 10; c.n_head = 3; bad_config("n_embd % n_head", c, "n_head");
    c = ok; c.vocab_size = 0; bad_config("vocab_size 0", c, "vocab_size");
    c = ok; c.n_positions = 0; bad_config("n_positions 0", c, "n_positions");
    c = ok; c.n_embd = 0; bad_config("n_embd 0", c, "n_embd");
    c = ok; c.n_layer = 0; bad_config("n_layer 0", c, "n_layer");
    c = ok; c.n_layer = QKV_GPT_MAX_LAYERS + 1; bad_config("n_layer > max", c, "n_layer");
    c = ok; c.n_head = 0; bad_config("n_head 0", c, "n_head");
    c = ok; c.layer_norm_epsilon = 0; bad_config("eps 0", c, "layer_norm_epsilon");
    c = ok; c.layer_norm_epsilon = NAN; bad_config("eps NaN", c, "layer_norm_epsilon");
    c = ok; c.attn_pdrop = 1.0f; bad_config("attn_pdrop 1", c, "attn_pdrop");
    c = ok; c.resid_pdrop = -0.1f; bad_config("resid_pdrop -0.1", c, "resid_pdrop");
    c = ok; c.vocab_size = (int64_t)1 << 40; bad_config("vocab_size 2^40", c, "vocab_size");
    c = ok; c.n_embd = 1 << 19; c.n_head = 1; c.vocab_size = 1 << 20; bad_config("too many parameters", c, "parameters");
    TU_CHECK(qkv_gpt_config_check(NULL) != QKV_OK && qkv_gpt_new(NULL, 0) == NULL, "NULL config");

    qkv_gpt *m = qkv_gpt_new(&ok, 1);
    qkv_ctx *ctx = qkv_ctx_new(0);
    int32_t ids[17] = {0};
    for (int i = 0; i < 17; i++) ids[i] = i;
    qkv_tensor *lg;

    ids[3] = 20;
    lg = qkv_gpt_forward(ctx, m, ids, 1, 8, NULL, NULL);
    TU_CHECK(!lg && qkv_ctx_status(ctx) == QKV_ERR_RANGE, "id 20 >= V accepted");
    check_msg("forward: id == V", qkv_ctx_error(ctx), "token id 20 at position 3");
    qkv_ctx_clear_error(ctx);
    qkv_ctx_reset(ctx);
    ids[3] = -1;
    lg = qkv_gpt_forward(ctx, m, ids, 1, 8, NULL, NULL);
    TU_CHECK(!lg, "id -1 accepted");
    check_msg("forward: id -1", qkv_ctx_error(ctx), "token id -1");
    qkv_ctx_clear_error(ctx);
    ids[3] = 3;
    lg = qkv_gpt_forward(ctx, m, ids, 1, 17, NULL, NULL);
    TU_CHECK(!lg, "T 17 > n_positions 16 accepted");
    check_msg("forward: T > n_positions", qkv_ctx_error(ctx), "n_positions 16");
    qkv_ctx_clear_error(ctx);
    lg = qkv_gpt_forward(ctx, m, ids, 0, 4, NULL, NULL);
    TU_CHECK(!lg, "B 0 accepted");
    check_msg("forward: B 0", qkv_ctx_error(ctx), "batch");
    qkv_ctx_clear_error(ctx);
    lg = qkv_gpt_forward(ctx, m, NULL, 1, 4, NULL, NULL);
    check_msg("forward: NULL ids", qkv_ctx_error(ctx), "ids");
    qkv_ctx_clear_error(ctx);
    lg = qkv_gpt_forward(ctx, m, ids, 1, 4, ids, NULL);
    check_msg("forward: targets without loss", qkv_ctx_error(ctx), "loss");
    qkv_ctx_clear_error(ctx);
    int32_t tg[4] = {1, 2, 20, 3};
    qkv_tensor *loss = NULL;
    lg = qkv_gpt_forward(ctx, m, ids, 1, 4, tg, &loss);
    TU_CHECK(!lg && !loss, "target 20 accepted");
    check_msg("forward: target == V", qkv_ctx_error(ctx), "cross_entropy");
    qkv_ctx_clear_error(ctx);
    qkv_ctx_reset(ctx);

    /* cache */
    TU_CHECK(qkv_gpt_cache_new(m, 17) == NULL, "cache of 17 > n_positions accepted");
    check_msg("cache_new: max_len > n_positions", qkv_last_error(), "max_len 17");
    TU_CHECK(qkv_gpt_cache_new(m, 0) == NULL, "cache of 0 accepted");
    TU_CHECK(qkv_gpt_cache_new(NULL, 4) == NULL, "cache of NULL model accepted");
    qkv_gpt_cache *kc = qkv_gpt_cache_new(m, 6);
    float logits[6 * 20], ref[20];
    qkv_status s = qkv_gpt_step(ctx, m, kc, ids, 4, logits, 0);
    TU_CHECK(s == QKV_OK, "step: %s", qkv_ctx_error(ctx));
    s = qkv_gpt_step(ctx, m, kc, ids + 4, 3, logits, 0);
    TU_CHECK(s == QKV_ERR_RANGE && qkv_gpt_cache_len(kc) == 4, "overflowing step: status %d len %lld", (int)s,
             (long long)qkv_gpt_cache_len(kc));
    check_msg("step: cache overflow", qkv_ctx_error(ctx), "do not fit the cache of 6");
    qkv_ctx_clear_error(ctx);
    ids[5] = 99;
    s = qkv_gpt_step(ctx, m, kc, ids + 4, 2, logits, 0);
    TU_CHECK(s == QKV_ERR_RANGE && qkv_gpt_cache_len(kc) == 4, "bad id in step: status %d len %lld", (int)s,
             (long long)qkv_gpt_cache_len(kc));
    check_msg("step: id out of range", qkv_ctx_error(ctx), "token id 99 at position 5");
    qkv_ctx_clear_error(ctx);
    ids[5] = 5;
    s = qkv_gpt_step(ctx, m, kc, ids, 0, logits, 0);
    TU_CHECK(s != QKV_OK, "step of 0 tokens accepted");
    qkv_ctx_clear_error(ctx);
    s = qkv_gpt_step(ctx, m, NULL, ids, 1, logits, 0);
    check_msg("step: NULL cache", qkv_ctx_error(ctx), "cache");
    qkv_ctx_clear_error(ctx);
    /* after the failures the cache still works: positions 4, 5 decode to the full forward's logits */
    s = qkv_gpt_step(ctx, m, kc, ids + 4, 2, logits, 0);
    lg = qkv_gpt_forward(ctx, m, ids, 1, 6, NULL, NULL);
    TU_CHECK(s == QKV_OK && lg, "step after failures: %s", qkv_ctx_error(ctx));
    if (lg) memcpy(ref, lg->data + 5 * 20, sizeof ref);
    qkv_ctx_reset(ctx);
    if (lg) tu_close("cache unchanged by failed steps", logits, ref, 20, 1e-5);
    s = qkv_gpt_step(ctx, m, kc, ids, 1, logits, 0);
    TU_CHECK(s == QKV_ERR_RANGE, "step into a full cache accepted");
    qkv_ctx_clear_error(ctx);

    /* a cache from another model */
    qkv_gpt_config o = ok;
    o.n_layer = 2;
    qkv_gpt *m2 = qkv_gpt_new(&o, 1);
    qkv_gpt_cache *c2 = qkv_gpt_cache_new(m2, 4);
    s = qkv_gpt_step(ctx, m, c2, ids, 1, logits, 0);
    TU_CHECK(s == QKV_ERR_ARG, "cache of another model accepted");
    check_msg("step: cache of another model", qkv_ctx_error(ctx), "another model");
    qkv_ctx_clear_error(ctx);

    /* a NaN weight: the step's result scan reports it */
    qkv_tensor *w = qkv_params_find(qkv_gpt_params(m), "h.0.mlp.c_fc.weight");
    w->data[5] = NAN;
    qkv_gpt_cache_reset(kc);
    s = qkv_gpt_step(ctx, m, kc, ids, 2, logits, 0);
    TU_CHECK(s == QKV_ERR_NONFINITE && qkv_gpt_cache_len(kc) == 0, "NaN weight: status %d", (int)s);
    check_msg("step: NaN weight", qkv_ctx_error(ctx), "NaN");
    qkv_ctx_clear_error(ctx);
    lg = qkv_gpt_forward(ctx, m, ids, 1, 2, NULL, NULL);
    TU_CHECK(!lg && qkv_ctx_status(ctx) == QKV_ERR_NONFINITE, "NaN weight in forward accepted");
    check_msg("forward: NaN weight", qkv_ctx_error(ctx), "NaN");
    qkv_ctx_clear_error(ctx);

    qkv_gpt_cache_free(c2);
    qkv_gpt_free(m2);
    qkv_gpt_cache_free(kc);
    qkv_gpt_cache_free(NULL);
    qkv_gpt_free(NULL);
    qkv_ctx_free(ctx);
    qkv_gpt_free(m);
}

int main(void) {
    test_gradients();
    test_cache();
    test_dropout();
    test_init();
    test_bad_input();
    return tu_finish("test_gpt");
}

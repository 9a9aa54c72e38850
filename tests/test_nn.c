/* test_nn.c — the nn modules without PyTorch: sinusoidal positions against the paper's formula in
 * double, parameter names / shapes / no_decay flags against PyTorch's state-dict keys, initial value
 * statistics against PyTorch's default initialisers, inference mode recording nothing, dropout
 * behaviour of the layers, the fused and unfused attention projections agreeing, and error paths.
 *
 * Numerics against PyTorch are test_torch_blocks.c; gradients are test_nn_grad.c.
 *
 * Tolerances: SIN_TOL 1e-6 — the module evaluates the formula in double and rounds once; this test
 * evaluates an algebraically equal form (exp(-ln(10000) 2i/C)) in double, so the two differ only by a
 * float rounding (6e-8) in the rare case where the double results straddle a float boundary.
 * PATH_TOL 1e-5 — the same attention computed through one fused (3E,E) projection or three row
 * views: same products, possibly another summation order in the GEMM. Init statistics use bounds of
 * about 5 standard errors of the estimate, so they fail only when the distribution is wrong.
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */

#include <omp.h>

#include "core/core_int.h" /* ctx->tape: to see that inference mode records nothing */
#include "testutil.h"

#define SIN_TOL 1e-6
#define PATH_TOL 1e-5

/* ---- sinusoidal positions ---- */

static void test_sinusoidal(void) {
    qkv_ctx *ctx = qkv_ctx_new(0);
    const int64_t Ts[] = {1, 7, 1000}, Cs[] = {8, 9, 512}, offs[] = {0, 5};
    for (int a = 0; a < 3; a++)
        for (int b = 0; b < 3; b++)
            for (int o = 0; o < 2; o++) {
                int64_t T = Ts[a], C = Cs[b], off = offs[o];
                qkv_ctx_reset(ctx);
                qkv_tensor *pe = qkv_sinusoidal_positions(ctx, T, C, off);
                if (!pe) {
                    TU_CHECK(0, "sinusoidal T=%lld C=%lld: %s", (long long)T, (long long)C, qkv_ctx_error(ctx));
                    continue;
                }
                TU_CHECK(pe->ndim == 2 && pe->shape[0] == T && pe->shape[1] == C && !pe->requires_grad,
                         "sinusoidal T=%lld C=%lld: shape %s, requires_grad %d", (long long)T, (long long)C,
                         qkv__shp(pe), pe->requires_grad);
                float *ref = malloc((size_t)(T * C) * sizeof(float));
                for (int64_t t = 0; t < T; t++)
                    for (int64_t c = 0; c < C; c++) {
                        int64_t i2 = c - (c & 1); /* 2i */
                        double ang = (double)(t + off) * exp(-log(10000.0) * (double)i2 / (double)C);
                        ref[t * C + c] = (float)((c & 1) ? cos(ang) : sin(ang));
                    }
                char what[96];
                snprintf(what, sizeof what, "sinusoidal T=%lld C=%lld offset=%lld", (long long)T, (long long)C,
                         (long long)off);
                tu_close(what, pe->data, ref, T * C, SIN_TOL);
                free(ref);
            }
    /* offset only shifts: PE(T, offset 5)[t] == PE(T + 5, 0)[t + 5], bit for bit */
    qkv_ctx_reset(ctx);
    qkv_tensor *a = qkv_sinusoidal_positions(ctx, 20, 9, 5), *b = qkv_sinusoidal_positions(ctx, 25, 9, 0);
    TU_CHECK(a && b && memcmp(a->data, b->data + 5 * 9, 20 * 9 * sizeof(float)) == 0,
             "sinusoidal with offset 5 differs from rows 5.. of offset 0");
    /* odd C: the last column is a sine (position 0 -> 0, position 1 -> sin(1 / 10000^(8/9))) */
    TU_CHECK(b && b->data[8] == 0.0f && b->data[9 + 8] == (float)sin(pow(10000.0, -8.0 / 9.0)),
             "odd C: last column must be sin");
    /* bad arguments: errors with the ctx message, not a tensor */
    qkv_ctx_reset(ctx);
    TU_CHECK(qkv_sinusoidal_positions(ctx, 0, 8, 0) == NULL && qkv_ctx_status(ctx) == QKV_ERR_SHAPE,
             "T = 0 must fail with a shape error");
    qkv_ctx_free(ctx);
}

/* ---- names, shapes, flags ---- */

typedef struct {
    const char *name;
    int ndim;
    int64_t shape[2];
    int no_decay;
} pspec;

static void expect_params(const char *what, qkv_params *p, const pspec *want, int n) {
    int bad = 0;
    if (qkv_params_count(p) != n) {
        printf("     %s: %d parameters, expected %d\n", what, qkv_params_count(p), n);
        bad = 1;
    }
    for (int i = 0; i < n && i < qkv_params_count(p); i++) {
        qkv_tensor *t = qkv_params_get(p, i);
        int ok = strcmp(t->name, want[i].name) == 0 && t->ndim == want[i].ndim && t->shape[0] == want[i].shape[0] &&
                 (t->ndim < 2 || t->shape[1] == want[i].shape[1]) && qkv_params_no_decay(p, i) == want[i].no_decay;
        if (!ok) {
            printf("     %s #%d: got %s %s no_decay %d, expected %s no_decay %d\n", what, i, t->name, qkv__shp(t),
                   qkv_params_no_decay(p, i), want[i].name, want[i].no_decay);
            bad = 1;
        }
    }
    TU_CHECK(!bad, "%s: parameter names / shapes / no_decay as PyTorch's state dict", what);
    printf("%-4s params %-40s %d tensors\n", bad ? "FAIL" : "ok", what, n);
}

static void test_names(void) {
    qkv_layer_config cfg = qkv_layer_config_default();
    cfg.d_model = 8, cfg.n_head = 2, cfg.dim_feedforward = 16;

    qkv_params *p = qkv_params_new();
    qkv_encoder_m *enc = calloc(1, sizeof *enc);
    TU_CHECK(qkv_encoder_init(enc, p, "encoder", &cfg, 2, 1) == QKV_OK, "encoder init: %s", qkv_last_error());
    const pspec enc_want[] = {
        {"encoder.layers.0.self_attn.in_proj_weight", 2, {24, 8}, 0},
        {"encoder.layers.0.self_attn.in_proj_bias", 1, {24}, 1},
        {"encoder.layers.0.self_attn.out_proj.weight", 2, {8, 8}, 0},
        {"encoder.layers.0.self_attn.out_proj.bias", 1, {8}, 1},
        {"encoder.layers.0.linear1.weight", 2, {16, 8}, 0},
        {"encoder.layers.0.linear1.bias", 1, {16}, 1},
        {"encoder.layers.0.linear2.weight", 2, {8, 16}, 0},
        {"encoder.layers.0.linear2.bias", 1, {8}, 1},
        {"encoder.layers.0.norm1.weight", 1, {8}, 1},
        {"encoder.layers.0.norm1.bias", 1, {8}, 1},
        {"encoder.layers.0.norm2.weight", 1, {8}, 1},
        {"encoder.layers.0.norm2.bias", 1, {8}, 1},
        {"encoder.layers.1.self_attn.in_proj_weight", 2, {24, 8}, 0},
        {"encoder.layers.1.self_attn.in_proj_bias", 1, {24}, 1},
        {"encoder.layers.1.self_attn.out_proj.weight", 2, {8, 8}, 0},
        {"encoder.layers.1.self_attn.out_proj.bias", 1, {8}, 1},
        {"encoder.layers.1.linear1.weight", 2, {16, 8}, 0},
        {"encoder.layers.1.linear1.bias", 1, {16}, 1},
        {"encoder.layers.1.linear2.weight", 2, {8, 16}, 0},
        {"encoder.layers.1.linear2.bias", 1, {8}, 1},
        {"encoder.layers.1.norm1.weight", 1, {8}, 1},
        {"encoder.layers.1.norm1.bias", 1, {8}, 1},
        {"encoder.layers.1.norm2.weight", 1, {8}, 1},
        {"encoder.layers.1.norm2.bias", 1, {8}, 1},
        {"encoder.norm.weight", 1, {8}, 1},
        {"encoder.norm.bias", 1, {8}, 1},
    };
    expect_params("encoder stack 'encoder' 2 layers + norm", p, enc_want, 26);
    qkv_params_free(p);
    free(enc);

    p = qkv_params_new();
    qkv_decoder_layer_m dec;
    TU_CHECK(qkv_decoder_layer_init(&dec, p, "", &cfg) == QKV_OK, "decoder layer init: %s", qkv_last_error());
    const pspec dec_want[] = {
        {"self_attn.in_proj_weight", 2, {24, 8}, 0},
        {"self_attn.in_proj_bias", 1, {24}, 1},
        {"self_attn.out_proj.weight", 2, {8, 8}, 0},
        {"self_attn.out_proj.bias", 1, {8}, 1},
        {"multihead_attn.in_proj_weight", 2, {24, 8}, 0},
        {"multihead_attn.in_proj_bias", 1, {24}, 1},
        {"multihead_attn.out_proj.weight", 2, {8, 8}, 0},
        {"multihead_attn.out_proj.bias", 1, {8}, 1},
        {"linear1.weight", 2, {16, 8}, 0},
        {"linear1.bias", 1, {16}, 1},
        {"linear2.weight", 2, {8, 16}, 0},
        {"linear2.bias", 1, {8}, 1},
        {"norm1.weight", 1, {8}, 1},
        {"norm1.bias", 1, {8}, 1},
        {"norm2.weight", 1, {8}, 1},
        {"norm2.bias", 1, {8}, 1},
        {"norm3.weight", 1, {8}, 1},
        {"norm3.bias", 1, {8}, 1},
    };
    expect_params("decoder layer, empty prefix", p, dec_want, 18);
    qkv_params_free(p);

    p = qkv_params_new();
    qkv_bahdanau_m bah;
    qkv_luong_m lg, ld;
    qkv_linear_m lin;
    qkv_embedding_m emb;
    TU_CHECK(qkv_bahdanau_init(&bah, p, "bahdanau", 6, 5, 7) == QKV_OK, "bahdanau init");
    TU_CHECK(qkv_luong_init(&lg, p, "luong", QKV_LUONG_GENERAL, 6, 5) == QKV_OK, "luong general init");
    TU_CHECK(qkv_luong_init(&ld, p, "dot", QKV_LUONG_DOT, 6, 6) == QKV_OK, "luong dot init");
    TU_CHECK(qkv_linear_init(&lin, p, "head", 8, 3, 0) == QKV_OK, "linear init");
    TU_CHECK(qkv_embedding_init(&emb, p, "wte", 11, 8, 0.02f) == QKV_OK, "embedding init");
    const pspec misc_want[] = {
        {"bahdanau.W.weight", 2, {7, 6}, 0}, {"bahdanau.U.weight", 2, {7, 5}, 0}, {"bahdanau.v.weight", 2, {1, 7}, 0},
        {"luong.W.weight", 2, {6, 5}, 0},    {"head.weight", 2, {3, 8}, 0},       {"wte.weight", 2, {11, 8}, 0},
    };
    expect_params("bahdanau, luong general/dot, linear no bias, embedding", p, misc_want, 6);
    qkv_params_free(p);
}

/* ---- initial values ---- */

static void stats(const qkv_tensor *t, double *mean, double *var, double *amax) {
    int64_t n = qkv_tensor_numel(t);
    double s = 0, s2 = 0, m = 0;
    for (int64_t i = 0; i < n; i++) {
        s += t->data[i];
        s2 += (double)t->data[i] * t->data[i];
        if (fabs(t->data[i]) > m) m = fabs(t->data[i]);
    }
    *mean = s / (double)n;
    *var = s2 / (double)n - *mean * *mean;
    *amax = m;
}

static int all_equal(const qkv_tensor *t, float v) {
    for (int64_t i = 0; i < qkv_tensor_numel(t); i++)
        if (t->data[i] != v) return 0;
    return 1;
}

/* U(-a, a): max within a and near it, mean 0, variance a^2/3 (checked to ~5 standard errors) */
static void check_uniform(const char *what, const qkv_tensor *t, double a) {
    double mean, var, amax, n = (double)qkv_tensor_numel(t);
    stats(t, &mean, &var, &amax);
    double se_mean = a / sqrt(3.0 * n), se_var = a * a * sqrt(4.0 / 45.0 / n);
    int ok = amax <= a && amax > a * (1 - 20.0 / n) && fabs(mean) < 5 * se_mean && fabs(var - a * a / 3) < 5 * se_var;
    TU_CHECK(ok, "%s: U(+-%g) expected, got mean %g var %g (want %g) max %g", what, a, mean, var, a * a / 3, amax);
    printf("%-4s init %-44s U(+-%.4f): mean %+.4f var %.5f (%.5f) max %.4f\n", ok ? "ok" : "FAIL", what, a, mean, var,
           a * a / 3, amax);
}

static void test_init(void) {
    const int64_t C = 256;
    qkv_params *p = qkv_params_new();
    qkv_layer_config cfg = qkv_layer_config_default();
    cfg.d_model = C, cfg.n_head = 4, cfg.dim_feedforward = 1024;
    qkv_encoder_layer_m enc;
    qkv_embedding_m emb, emb2;
    TU_CHECK(qkv_encoder_layer_init(&enc, p, "enc", &cfg) == QKV_OK, "encoder layer init");
    TU_CHECK(qkv_embedding_init(&emb, p, "emb", 1000, 64, 1.0f) == QKV_OK, "embedding init");
    TU_CHECK(qkv_embedding_init(&emb2, p, "emb2", 1000, 64, 0.02f) == QKV_OK, "embedding init");
    TU_CHECK(qkv_params_alloc(p, 42) == QKV_OK, "alloc");
    TU_CHECK(all_equal(enc.norm1.weight, 1.0f) && all_equal(enc.norm2.weight, 1.0f),
             "LayerNorm weight must be all ones");
    TU_CHECK(all_equal(enc.norm1.bias, 0.0f) && all_equal(enc.norm2.bias, 0.0f), "LayerNorm bias must be all zeros");
    TU_CHECK(all_equal(enc.self_attn.in_proj_bias, 0.0f) && all_equal(enc.self_attn.out_proj.bias, 0.0f),
             "MultiheadAttention biases must start at zero");
    printf("%-4s init LayerNorm ones/zeros, attention biases zeros\n",
           all_equal(enc.norm1.weight, 1.0f) && all_equal(enc.norm1.bias, 0.0f) ? "ok" : "FAIL");
    check_uniform("self_attn.in_proj_weight (xavier, 3E x E)", enc.self_attn.in_proj_weight, sqrt(6.0 / (4.0 * C)));
    check_uniform("self_attn.out_proj.weight", enc.self_attn.out_proj.weight, 1.0 / sqrt((double)C));
    check_uniform("linear1.weight (in C)", enc.ffn.linear1.weight, 1.0 / sqrt((double)C));
    check_uniform("linear2.weight (in dim_ff)", enc.ffn.linear2.weight, 1.0 / sqrt(1024.0));
    check_uniform("linear1.bias", enc.ffn.linear1.bias, 1.0 / sqrt((double)C));
    const qkv_embedding_m *embs[2] = {&emb, &emb2};
    const double stds[2] = {1.0, 0.02};
    for (int i = 0; i < 2; i++) {
        double mean, var, amax, n = 64000.0, sd = stds[i];
        stats(embs[i]->weight, &mean, &var, &amax);
        int ok = fabs(mean) < 5 * sd / sqrt(n) && fabs(var - sd * sd) < 5 * sd * sd * sqrt(2.0 / n);
        TU_CHECK(ok, "embedding N(0,%g^2): mean %g var %g", sd, mean, var);
        printf("%-4s init embedding N(0, %.2f^2)%-25s mean %+.5f std %.5f\n", ok ? "ok" : "FAIL", sd, "", mean,
               sqrt(var));
    }
    qkv_params_free(p);
}

/* Initial values are drawn in parallel chunks of 65536, each from its own stream: the same whatever
 * the thread count, different between seeds and between chunks, and still N(0, sd^2) over many chunks. */
static void big_embedding(qkv_params **p, qkv_embedding_m *m, uint64_t seed, int threads) {
    *p = qkv_params_new();
    TU_CHECK(qkv_embedding_init(m, *p, "big", 5000, 64, 0.02f) == QKV_OK, "embedding init");
    int before = omp_get_max_threads();
    omp_set_num_threads(threads);
    TU_CHECK(qkv_params_alloc(*p, seed) == QKV_OK, "alloc");
    omp_set_num_threads(before);
}

static void test_init_chunks(void) {
    qkv_params *p1, *p3, *q;
    qkv_embedding_m e1, e3, f;
    big_embedding(&p1, &e1, 7, 1);
    big_embedding(&p3, &e3, 7, 3);
    big_embedding(&q, &f, 8, 2);
    const int64_t n = qkv_tensor_numel(e1.weight);
    int same = memcmp(e1.weight->data, e3.weight->data, (size_t)n * sizeof(float)) == 0;
    int64_t differ = 0, chunk_twins = 0;
    for (int64_t i = 0; i < n; i++) differ += e1.weight->data[i] != f.weight->data[i];
    for (int64_t i = 0; i + 65536 < n; i++) chunk_twins += e1.weight->data[i] == e1.weight->data[i + 65536];
    double mean, var, amax, sd = 0.02;
    stats(e1.weight, &mean, &var, &amax);
    int ok = fabs(mean) < 5 * sd / sqrt((double)n) && fabs(var - sd * sd) < 5 * sd * sd * sqrt(2.0 / (double)n);
    TU_CHECK(same, "init differs between 1 and 3 threads");
    TU_CHECK(differ > n * 0.99, "seeds 7 and 8 gave %lld equal values of %lld", (long long)(n - differ), (long long)n);
    TU_CHECK(chunk_twins < 10, "%lld values equal to the one a chunk later (chunks share a stream?)",
             (long long)chunk_twins);
    TU_CHECK(ok, "5 chunks of N(0,0.02^2): mean %g var %g", mean, var);
    printf("%-4s init in %lld chunks: same on 1 and 3 threads, seeds differ, chunks differ, mean %+.6f std %.5f\n",
           same && ok && differ > n * 0.99 && chunk_twins < 10 ? "ok" : "FAIL", (long long)((n + 65535) / 65536),
           mean, sqrt(var));
    qkv_params_free(p1);
    qkv_params_free(p3);
    qkv_params_free(q);
}

/* ---- forward behaviour ---- */

static void fill(qkv_tensor *t, uint64_t seed) {
    qkv_rng r;
    qkv_rng_seed(&r, seed);
    for (int64_t i = 0; i < qkv_tensor_numel(t); i++) t->data[i] = qkv_rng_normal(&r);
}

static void test_inference_and_dropout(void) {
    qkv_params *p = qkv_params_new();
    qkv_layer_config cfg = qkv_layer_config_default();
    cfg.d_model = 16, cfg.n_head = 4, cfg.dim_feedforward = 32, cfg.dropout = 0.1f, cfg.norm_first = 1;
    qkv_encoder_m *enc = calloc(1, sizeof *enc);
    TU_CHECK(qkv_encoder_init(enc, p, "", &cfg, 3, 1) == QKV_OK, "encoder init");
    TU_CHECK(qkv_params_alloc(p, 7) == QKV_OK, "alloc");
    const uint8_t kpm[2 * 5] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1};
    qkv_ctx *ctx = qkv_ctx_new(0);
    int64_t n = 2 * 5 * 16;
    float *ref = malloc((size_t)n * sizeof(float));

    /* grad on: the tape has nodes; remember the output */
    qkv_tensor *x = qkv_tensor_new3(ctx, 2, 5, 16);
    fill(x, 1);
    x->requires_grad = 1;
    qkv_tensor *y = qkv_encoder_forward(ctx, enc, x, kpm, 0);
    TU_CHECK(y && y->requires_grad && ctx->tape != NULL, "grad mode: the encoder must record its ops");
    if (y) memcpy(ref, y->data, (size_t)n * sizeof(float));

    /* grad off: same bits, nothing on the tape, backward refuses */
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, 0);
    x = qkv_tensor_new3(ctx, 2, 5, 16);
    fill(x, 1);
    x->requires_grad = 1;
    y = qkv_encoder_forward(ctx, enc, x, kpm, 0);
    int ok = y && !y->requires_grad && ctx->tape == NULL && memcmp(y->data, ref, (size_t)n * sizeof(float)) == 0;
    TU_CHECK(ok, "inference mode: an encoder stack forward must record nothing and give the same output");
    TU_CHECK(y && qkv_backward(ctx, qkv_sum(ctx, y)) == QKV_ERR_STATE, "backward after an inference forward must fail");
    printf("%-4s inference mode: 3-layer encoder stack, tape empty, output identical to grad mode\n",
           ok ? "ok" : "FAIL");
    qkv_ctx_clear_error(ctx);

    /* training mode: dropout 0.1 changes the output; the same seed gives the same bits */
    float *d1 = malloc((size_t)n * sizeof(float));
    int same_seed = 1, differs = 0;
    for (int rep = 0; rep < 2; rep++) {
        qkv_ctx_reset(ctx);
        qkv_ctx_set_grad(ctx, 1);
        qkv_ctx_set_training(ctx, 1);
        qkv_ctx_seed(ctx, 123);
        x = qkv_tensor_new3(ctx, 2, 5, 16);
        fill(x, 1);
        y = qkv_encoder_forward(ctx, enc, x, kpm, 0);
        if (!y) {
            TU_CHECK(0, "training forward failed: %s", qkv_ctx_error(ctx));
            break;
        }
        if (rep == 0) {
            memcpy(d1, y->data, (size_t)n * sizeof(float));
            differs = memcmp(d1, ref, (size_t)n * sizeof(float)) != 0;
        } else {
            same_seed = memcmp(d1, y->data, (size_t)n * sizeof(float)) == 0;
        }
    }
    TU_CHECK(differs, "training mode with dropout 0.1 must change the output");
    TU_CHECK(same_seed, "training mode: same seed must give the same output");
    printf("%-4s training mode: dropout active, deterministic for a seed\n", differs && same_seed ? "ok" : "FAIL");
    qkv_ctx_set_training(ctx, 0);
    free(d1);
    free(ref);
    qkv_ctx_free(ctx);
    free(enc);
    qkv_params_free(p);
}

/* Self-attention through the fused (3E,E) projection equals the row-view path (key/value distinct
 * tensors with the same values), outputs and weights; cross-attention with key == value equals
 * separate key and value tensors. */
static void test_attention_paths(void) {
    qkv_params *p = qkv_params_new();
    qkv_mha_m mha;
    TU_CHECK(qkv_mha_init(&mha, p, "attn", 20, 4, 0.0f) == QKV_OK, "mha init");
    TU_CHECK(qkv_params_alloc(p, 3) == QKV_OK, "alloc");
    for (int i = 0; i < 3 * 20; i++) mha.in_proj_bias->data[i] = 0.01f * (float)(i % 7) - 0.03f;
    const uint8_t kpm[2 * 6] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 1};
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_tensor *x = qkv_tensor_new3(ctx, 2, 6, 20), *x2 = qkv_tensor_new3(ctx, 2, 6, 20),
               *x3 = qkv_tensor_new3(ctx, 2, 6, 20);
    fill(x, 5), fill(x2, 5), fill(x3, 5);
    qkv_tensor *w1 = NULL, *w2 = NULL, *w3 = NULL;
    qkv_tensor *fused = qkv_mha_forward(ctx, &mha, x, x, x, kpm, 1, &w1);
    qkv_tensor *kv = qkv_mha_forward(ctx, &mha, x, x2, x2, kpm, 1, &w2);
    qkv_tensor *sep = qkv_mha_forward(ctx, &mha, x, x2, x3, kpm, 1, &w3);
    if (!fused || !kv || !sep || !w1 || !w2 || !w3) {
        TU_CHECK(0, "mha forward failed: %s", qkv_ctx_error(ctx));
    } else {
        int64_t n = qkv_tensor_numel(fused), nw = qkv_tensor_numel(w1);
        tu_close("mha self fused vs q + kv rows: out", kv->data, fused->data, n, PATH_TOL);
        tu_close("mha self fused vs q + k + v rows: out", sep->data, fused->data, n, PATH_TOL);
        tu_close("mha self fused vs q + k + v rows: weights", w3->data, w1->data, nw, PATH_TOL);
        TU_CHECK(w1->ndim == 4 && w1->shape[0] == 2 && w1->shape[1] == 4 && w1->shape[2] == 6 && w1->shape[3] == 6,
                 "weights shape %s, expected (2,4,6,6)", qkv__shp(w1));
    }
    qkv_ctx_free(ctx);
    qkv_params_free(p);
}

/* ---- errors ---- */

static void test_errors(void) {
    int failures0 = tu_failures;
    qkv_params *p = qkv_params_new();
    qkv_mha_m mha;
    qkv_linear_m lin, dup;
    qkv_embedding_m pos;
    qkv_layer_config cfg = qkv_layer_config_default();
    qkv_encoder_layer_m enc;
    TU_CHECK(qkv_mha_init(&mha, p, "a", 10, 3, 0.0f) == QKV_ERR_SHAPE, "E %% H != 0 must be a shape error");
    TU_CHECK(qkv_mha_init(&mha, p, "a", 12, 3, 1.0f) == QKV_ERR_RANGE, "dropout 1 must be a range error");
    TU_CHECK(qkv_linear_init(&lin, p, "l", 4, 3, 1) == QKV_OK, "linear init");
    TU_CHECK(qkv_linear_init(&dup, p, "l", 4, 3, 1) == QKV_ERR_ARG && strstr(qkv_last_error(), "l.weight"),
             "a duplicate name must be an argument error naming it (got '%s')", qkv_last_error());
    cfg.n_head = 7;
    TU_CHECK(qkv_encoder_layer_init(&enc, p, "e", &cfg) == QKV_ERR_SHAPE, "d_model 512 with 7 heads must fail");
    cfg = qkv_layer_config_default();
    cfg.layer_norm_eps = 0.0f;
    TU_CHECK(qkv_encoder_layer_init(&enc, p, "e", &cfg) == QKV_ERR_RANGE, "eps 0 must fail");
    qkv_encoder_m *stack = calloc(1, sizeof *stack);
    cfg = qkv_layer_config_default();
    TU_CHECK(qkv_encoder_init(stack, p, "s", &cfg, 0, 0) == QKV_ERR_RANGE, "0 layers must fail");
    TU_CHECK(qkv_encoder_init(stack, p, "s", &cfg, QKV_MAX_LAYERS + 1, 0) == QKV_ERR_RANGE, "65 layers must fail");
    free(stack);
    qkv_luong_m luong;
    TU_CHECK(qkv_luong_init(&luong, p, "d", QKV_LUONG_DOT, 4, 5) == QKV_ERR_SHAPE, "dot with Cq != Ck must fail");
    TU_CHECK(qkv_embedding_init(&pos, p, "wpe", 8, 4, 1.0f) == QKV_OK, "embedding init");
    TU_CHECK(qkv_params_alloc(p, 1) == QKV_OK, "alloc");
    TU_CHECK(qkv_linear_init(&dup, p, "late", 4, 3, 1) == QKV_ERR_STATE, "declaring after alloc must be a state error");

    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_tensor *rows = qkv_learned_positions(ctx, &pos, 3, 5); /* rows 5..7 of 8: fine */
    TU_CHECK(rows && rows->shape[0] == 3 && rows->data[0] == pos.weight->data[5 * 4],
             "positions 5..7 of an 8-row table");
    qkv_tensor *bad = qkv_learned_positions(ctx, &pos, 4, 5); /* rows 5..8: past the table */
    TU_CHECK(!bad && qkv_ctx_status(ctx) == QKV_ERR_RANGE && strstr(qkv_ctx_error(ctx), "wpe.weight"),
             "positions past the table: range error naming the table (got '%s')", qkv_ctx_error(ctx));
    /* errors are sticky: later calls return NULL and keep the first message */
    TU_CHECK(!qkv_tensor_new3(ctx, 1, 2, 4) && !qkv_sinusoidal_positions(ctx, 2, 4, 0) &&
                 strstr(qkv_ctx_error(ctx), "learned_positions"),
             "the first error must stay (got '%s')", qkv_ctx_error(ctx));
    qkv_ctx_clear_error(ctx);
    qkv_ctx_reset(ctx);
    /* a failing op inside a block: NULL out, the ctx holds the op's error */
    qkv_tensor *x = qkv_tensor_new3(ctx, 1, 2, 5); /* C 5, but the linear wants 4 */
    TU_CHECK(qkv_linear_forward(ctx, &lin, x) == NULL && qkv_ctx_status(ctx) == QKV_ERR_SHAPE,
             "linear on a wrong width: NULL and a shape error (got '%s')", qkv_ctx_error(ctx));
    qkv_ctx_clear_error(ctx);
    TU_CHECK(qkv_mha_forward(ctx, NULL, x, x, x, NULL, 0, NULL) == NULL && qkv_ctx_status(ctx) == QKV_ERR_ARG,
             "mha with a NULL module must be an argument error");
    qkv_ctx_free(ctx);
    qkv_params_free(p);
    printf("%-4s errors: bad shapes/ranges, duplicate and late names, positions past the table, sticky errors\n",
           tu_failures == failures0 ? "ok" : "FAIL");
}

int main(void) {
    test_sinusoidal();
    test_names();
    test_init();
    test_init_chunks();
    test_inference_and_dropout();
    test_attention_paths();
    test_errors();
    return tu_finish("test_nn");
}

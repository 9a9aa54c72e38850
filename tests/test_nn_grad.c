/* test_nn_grad.c — finite-difference gradient checks of every nn block, with respect to its inputs
 * AND every one of its parameters: linear, LayerNorm, multi-head self-attention (causal + padding,
 * tiled and weight-returning kernels) and cross-attention, FFN (ReLU, GELU), encoder and decoder
 * layers post-LN and pre-LN, a 2-layer pre-LN encoder stack with final norm, Bahdanau, Luong (dot,
 * general), token embedding + learned positions.
 *
 * The procedure is tests/gradcheck.h's (inputs drawn from a seed, L = sum(out * W) with a random W
 * summed in double, the same per-element error with a floor of 1e-2 of the tensor's largest
 * derivative, GC_TOL = 1e-2), extended in two ways, so it runs its own loop here:
 *  - parameters live in a qkv_params block, which the harness cannot perturb: every element of every
 *    parameter tensor is perturbed in place, and its analytic gradient read from the gradient block;
 *  - the numeric derivative is Richardson-extrapolated from central differences at h = 3e-2 and 2h
 *    (truncation O(h^4)). A larger h divides the float32 rounding noise of L (~1e-7 |L| / h) by 3
 *    compared with gradcheck.h's plain h = 1e-2, and the largest errors seen drop from ~7e-3 to
 *    ~2e-3, well clear of GC_TOL. ReLU blocks: the tape shows every ReLU input, so a step that moves
 *    one across 0 (where L has a kink and differences mean nothing) is detected; the step is then
 *    shrunk, or taken one-sided on the smooth side (numeric_grad says how). Each line prints how
 *    many elements needed that.
 *
 * Parameters are moved off their initial values (ones, zeros) by N(0, 0.1^2) noise so that every term
 * of the backward matters. Sizes are tiny (E = 8, H = 2, T = 3..5, B = 2): each element costs four
 * forwards. Configs use dropout 0.1: it must be inactive here (training mode off), or the differences
 * would not match.
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */

#include "core/core_int.h" /* the tape: where the ReLUs are */
#include "gradcheck.h"

#define E 8
#define H 2
#define B 2
#define FD_H 3e-2f

typedef enum {
    BK_LINEAR,
    BK_LAYERNORM,
    BK_MHA_SELF,
    BK_MHA_SELF_WEIGHTS,
    BK_MHA_CROSS,
    BK_FFN,
    BK_ENC_LAYER,
    BK_DEC_LAYER,
    BK_ENC_STACK,
    BK_BAHDANAU,
    BK_LUONG,
    BK_POSITIONS,
} block_kind;

typedef struct {
    block_kind kind;
    qkv_params *p;
    qkv_linear_m lin;
    qkv_layernorm_m ln;
    qkv_mha_m mha;
    qkv_ffn_m ffn;
    qkv_encoder_layer_m enc;
    qkv_decoder_layer_m dec;
    qkv_encoder_m *encs;
    qkv_bahdanau_m bah;
    qkv_luong_m luong;
    qkv_embedding_m tok, pos;
    const uint8_t *kpm, *mkpm;
    int causal;
    const int32_t *ids;
    int64_t offset;
} block;

static qkv_tensor *block_forward(qkv_ctx *ctx, qkv_tensor **in, void *user) {
    block *b = user;
    switch (b->kind) {
    case BK_LINEAR: return qkv_linear_forward(ctx, &b->lin, in[0]);
    case BK_LAYERNORM: return qkv_layernorm_forward(ctx, &b->ln, in[0]);
    case BK_MHA_SELF: return qkv_mha_forward(ctx, &b->mha, in[0], in[0], in[0], b->kpm, b->causal, NULL);
    case BK_MHA_SELF_WEIGHTS: {
        qkv_tensor *w = NULL;
        qkv_tensor *out = qkv_mha_forward(ctx, &b->mha, in[0], in[0], in[0], b->kpm, b->causal, &w);
        if (out && !w) {
            printf("FAIL mha: weights requested but not returned\n");
            exit(1);
        }
        return out;
    }
    case BK_MHA_CROSS: return qkv_mha_forward(ctx, &b->mha, in[0], in[1], in[1], b->kpm, 0, NULL);
    case BK_FFN: return qkv_ffn_forward(ctx, &b->ffn, in[0]);
    case BK_ENC_LAYER: return qkv_encoder_layer_forward(ctx, &b->enc, in[0], b->kpm, b->causal, NULL);
    case BK_DEC_LAYER:
        return qkv_decoder_layer_forward(ctx, &b->dec, in[0], in[1], b->kpm, b->causal, b->mkpm, NULL, NULL);
    case BK_ENC_STACK: return qkv_encoder_forward(ctx, b->encs, in[0], b->kpm, b->causal);
    case BK_BAHDANAU: return qkv_bahdanau_forward(ctx, &b->bah, in[0], in[1], b->kpm, NULL);
    case BK_LUONG: return qkv_luong_forward(ctx, &b->luong, in[0], in[1], b->kpm, NULL);
    case BK_POSITIONS: {
        int64_t T = in[0]->shape[1];
        qkv_tensor *e = qkv_add(ctx, qkv_embedding_forward(ctx, &b->tok, b->ids, B, T),
                                qkv_learned_positions(ctx, &b->pos, T, b->offset)); /* wte(ids) + wpe(pos) */
        return qkv_mul(ctx, in[0], e); /* a product, so the gradient into the tables depends on x */
    }
    }
    return NULL;
}

/* Allocates the block's parameters and moves each off its initial value by N(0, sd^2). */
static void alloc_params_sd(block *b, qkv_status declared, uint64_t seed, float sd) {
    if (declared != QKV_OK || qkv_params_alloc(b->p, seed) != QKV_OK) {
        printf("FAIL: declaring parameters failed: %s\n", qkv_last_error());
        exit(1);
    }
    qkv_rng r;
    qkv_rng_seed(&r, seed + 99);
    for (int i = 0; i < qkv_params_count(b->p); i++) {
        qkv_tensor *t = qkv_params_get(b->p, i);
        for (int64_t j = 0; j < qkv_tensor_numel(t); j++) t->data[j] += sd * qkv_rng_normal(&r);
    }
}

static void alloc_params(block *b, qkv_status declared, uint64_t seed) { alloc_params_sd(b, declared, seed, 0.1f); }

/* ---- the check ---- */

/* One evaluation at the current input and parameter values: L = sum(out * W) in double. Grad
 * recording stays on so that the tape shows every ReLU's input; *kinks receives a hash of their signs
 * (which side of the kink each pre-activation lies on). With backward set, also runs backward. */
static double eval(qkv_ctx *ctx, block *b, int n_in, const gc_input *spec, float **vals, const float *w, int64_t w_n,
                   int backward, float **in_grads, uint64_t *kinks) {
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, 1);
    qkv_tensor *in[GC_MAX_IN];
    for (int i = 0; i < n_in; i++) {
        in[i] = qkv_tensor_from(ctx, spec[i].ndim, spec[i].shape, vals[i]);
        if (in[i]) in[i]->requires_grad = !spec[i].no_grad;
    }
    qkv_tensor *out = block_forward(ctx, in, b);
    if (!out || qkv_tensor_numel(out) != w_n) {
        printf("FAIL: forward failed or changed size: %s\n", out ? "size" : qkv_ctx_error(ctx));
        exit(1);
    }
    double L = 0;
    for (int64_t i = 0; i < w_n; i++) L += (double)out->data[i] * w[i];
    if (kinks) {
        uint64_t hsh = 1469598103934665603ull;
        for (qkv__node *n = ctx->tape; n; n = n->prev) {
            if (strcmp(n->op, "relu") != 0) continue;
            const float *x = n->in[0]->data;
            for (int64_t j = 0; j < qkv_tensor_numel(n->in[0]); j++)
                hsh = (hsh ^ (uint64_t)(x[j] > 0.0f)) * 1099511628211ull;
        }
        *kinks = hsh;
    }
    if (backward) {
        qkv_tensor *wt = qkv_tensor_from(ctx, out->ndim, out->shape, w);
        if (qkv_backward(ctx, qkv_sum(ctx, qkv_mul(ctx, out, wt))) != QKV_OK) {
            printf("FAIL: backward failed: %s\n", qkv_ctx_error(ctx));
            exit(1);
        }
        for (int i = 0; i < n_in; i++) {
            int64_t m = gc_numel(&spec[i]);
            if (in[i]->grad)
                memcpy(in_grads[i], in[i]->grad, (size_t)m * sizeof(float));
            else
                memset(in_grads[i], 0, (size_t)m * sizeof(float));
        }
    }
    return L;
}

/* d L / d x[j] by finite differences, or NAN when every step tried crosses a ReLU kink. With no
 * ReLU input changing sign within 2h: central differences at h and 2h, Richardson-extrapolated (the
 * h^2 terms cancel, leaving O(h^4), so h can be large enough to keep the float32 rounding noise of L
 * small). A sign change means L is not smooth there: retry with h/2, h/4, h/8 and h/16, then fall
 * back to the second-order one-sided formula (-3 L(x) + 4 L(x+h) - L(x+2h)) / 2h on a side without a
 * sign change, the smooth piece the analytic gradient belongs to, at the largest h that had such a
 * side (the rounding noise of that formula grows as h shrinks). *how: 0 at h, 1 smaller h, 2
 * one-sided. */
static double numeric_grad(float *x, int64_t j, double L0, uint64_t kinks0, qkv_ctx *ctx, block *b, int n_in,
                           const gc_input *spec, float **vals, const float *w, int64_t w_n, int *how) {
    const float x0 = x[j];
    float h = FD_H;
    double one_sided = NAN;
    for (int attempt = 0; attempt < 5; attempt++, h /= 2) {
        const float step[4] = {h, 2 * h, -h, -2 * h};
        double L[4];
        int same[4];
        for (int s = 0; s < 4; s++) {
            uint64_t k;
            x[j] = x0 + step[s];
            L[s] = eval(ctx, b, n_in, spec, vals, w, w_n, 0, NULL, &k);
            same[s] = k == kinks0;
        }
        x[j] = x0;
        if (same[0] && same[1] && same[2] && same[3]) {
            *how = attempt > 0;
            double d1 = (L[0] - L[2]) / (2.0 * h), d2 = (L[1] - L[3]) / (4.0 * h);
            return (4.0 * d1 - d2) / 3.0;
        }
        if (!isnan(one_sided)) continue;
        if (same[0] && same[1]) one_sided = (-3.0 * L0 + 4.0 * L[0] - L[1]) / (2.0 * h);
        else if (same[2] && same[3]) one_sided = (3.0 * L0 - 4.0 * L[2] + L[3]) / (2.0 * h);
    }
    *how = 2;
    return one_sided;
}

/* Compares one tensor's analytic gradient with finite differences of its values x[0..m); prints one
 * line in gradcheck()'s format and returns the largest error (gradcheck.h's formula). */
static double check_tensor(const char *block_name, const char *what, float *x, const float *analytic, int64_t m,
                           double L0, uint64_t kinks0, qkv_ctx *ctx, block *b, int n_in, const gc_input *spec,
                           float **vals, const float *w, int64_t w_n) {
    double *num = malloc((size_t)m * sizeof(double));
    double scale = 0;
    int64_t smaller = 0, one_sided = 0, skipped = 0;
    for (int64_t j = 0; j < m; j++) {
        int how = 0;
        num[j] = numeric_grad(x, j, L0, kinks0, ctx, b, n_in, spec, vals, w, w_n, &how);
        if (isnan(num[j]))
            skipped++;
        else {
            smaller += how == 1;
            one_sided += how == 2;
            if (fabs(num[j]) > scale) scale = fabs(num[j]);
        }
    }
    double err = 0;
    int64_t at = -1;
    for (int64_t j = 0; j < m; j++) {
        if (isnan(num[j])) continue;
        double den = fabs(num[j]);
        if (den < 1e-2 * scale) den = 1e-2 * scale;
        if (den < 1e-3) den = 1e-3;
        double e = fabs((double)analytic[j] - num[j]) / den;
        if (e > err || isnan(e)) {
            err = e;
            at = j;
        }
    }
    int ok = err <= GC_TOL && skipped * 10 <= m; /* nearly every element must be checked */
    tu_checks++;
    if (!ok) tu_failures++;
    printf("%-4s grad %-30s %-40s n=%-4lld max_rel_err %.2e (tol %.0e)", ok ? "ok" : "FAIL", block_name, what,
           (long long)m, err, GC_TOL);
    if (smaller || one_sided || skipped)
        printf(" [ReLU kink near: %lld at h/2..h/16, %lld one-sided, %lld skipped]", (long long)smaller,
               (long long)one_sided, (long long)skipped);
    printf("\n");
    if (!ok && at >= 0)
        printf("     worst at %lld: analytic %.6g numeric %.6g\n", (long long)at, analytic[at], num[at]);
    free(num);
    return err;
}

/* Checks the gradient of every input and every parameter element of a block. */
static void block_check(const char *name, block *b, int n_in, const gc_input *spec, uint64_t seed, double *worst_in,
                        double *worst_par) {
    qkv_ctx *ctx = qkv_ctx_new(1 << 20);
    qkv_rng r;
    qkv_rng_seed(&r, seed);
    float *vals[GC_MAX_IN], *ga[GC_MAX_IN];
    for (int i = 0; i < n_in; i++) { /* drawn as gradcheck() draws them */
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
    /* the output size from one inference pass, then W */
    qkv_ctx_set_grad(ctx, 0);
    qkv_tensor *tin[GC_MAX_IN];
    for (int i = 0; i < n_in; i++) tin[i] = qkv_tensor_from(ctx, spec[i].ndim, spec[i].shape, vals[i]);
    qkv_tensor *out = block_forward(ctx, tin, b);
    if (!out) {
        printf("FAIL %s: forward failed: %s\n", name, qkv_ctx_error(ctx));
        exit(1);
    }
    int64_t w_n = qkv_tensor_numel(out);
    float *w = malloc((size_t)w_n * sizeof(float));
    for (int64_t j = 0; j < w_n; j++) w[j] = qkv_rng_normal(&r);

    /* analytic gradients: inputs from the tensors, parameters from the gradient block */
    uint64_t kinks0;
    qkv_params_zero_grad(b->p);
    double L0 = eval(ctx, b, n_in, spec, vals, w, w_n, 1, ga, &kinks0);
    int np = qkv_params_count(b->p);
    float **gp = malloc(sizeof(float *) * (size_t)(np > 0 ? np : 1));
    for (int i = 0; i < np; i++) {
        qkv_tensor *t = qkv_params_get(b->p, i);
        gp[i] = malloc((size_t)qkv_tensor_numel(t) * sizeof(float));
        memcpy(gp[i], t->grad, (size_t)qkv_tensor_numel(t) * sizeof(float));
    }
    *worst_in = *worst_par = 0;
    char what[160];
    for (int i = 0; i < n_in; i++) {
        if (spec[i].no_grad) continue;
        snprintf(what, sizeof what, "input %d", i);
        double e =
            check_tensor(name, what, vals[i], ga[i], gc_numel(&spec[i]), L0, kinks0, ctx, b, n_in, spec, vals, w, w_n);
        if (e > *worst_in || isnan(e)) *worst_in = e;
    }
    for (int i = 0; i < np; i++) {
        qkv_tensor *t = qkv_params_get(b->p, i);
        snprintf(what, sizeof what, "param %s", t->name);
        double e =
            check_tensor(name, what, t->data, gp[i], qkv_tensor_numel(t), L0, kinks0, ctx, b, n_in, spec, vals, w, w_n);
        if (e > *worst_par || isnan(e)) *worst_par = e;
        free(gp[i]);
    }
    free(gp);
    for (int i = 0; i < n_in; i++) {
        free(vals[i]);
        free(ga[i]);
    }
    free(w);
    qkv_ctx_free(ctx);
}

/* ---- the table of blocks ---- */

static double worst_in[32], worst_par[32];
static const char *names[32];
static int n_checked;

static void check(const char *name, block *b, int n_in, const gc_input *spec, uint64_t seed) {
    names[n_checked] = name;
    block_check(name, b, n_in, spec, seed, &worst_in[n_checked], &worst_par[n_checked]);
    n_checked++;
    free(b->encs);
    qkv_params_free(b->p);
}

static block new_block(block_kind k) {
    block b;
    memset(&b, 0, sizeof b);
    b.kind = k;
    b.p = qkv_params_new();
    return b;
}

static qkv_layer_config config(int norm_first, qkv_activation act) {
    qkv_layer_config c = qkv_layer_config_default();
    c.d_model = E;
    c.n_head = H;
    c.dim_feedforward = 16;
    c.dropout = 0.1f; /* inactive in inference mode: must not disturb the check */
    c.activation = act;
    c.norm_first = norm_first;
    return c;
}

#define X3(T_)                                                                                                         \
    { 3, {B, T_, E}, GC_NORMAL, 0 }

int main(void) {
    static const uint8_t kpm4[B * 4] = {0, 0, 0, 0, 0, 0, 1, 1};       /* lengths 4, 2 */
    static const uint8_t kpm5[B * 5] = {0, 0, 0, 0, 0, 0, 0, 0, 1, 1}; /* lengths 5, 3 */
    static const int32_t ids[B * 4] = {1, 4, 4, 0, 2, 1, 6, 3};
    block b;

    b = new_block(BK_LINEAR);
    alloc_params(&b, qkv_linear_init(&b.lin, b.p, "lin", E, 5, 1), 1);
    check("linear", &b, 1, (gc_input[]){X3(3)}, 11);

    b = new_block(BK_LAYERNORM);
    alloc_params(&b, qkv_layernorm_init(&b.ln, b.p, "ln", E, 1e-5f), 2);
    check("layernorm", &b, 1, (gc_input[]){X3(3)}, 12);

    b = new_block(BK_MHA_SELF);
    alloc_params(&b, qkv_mha_init(&b.mha, b.p, "attn", E, H, 0.1f), 3);
    b.kpm = kpm4, b.causal = 1;
    check("mha self causal+pad", &b, 1, (gc_input[]){X3(4)}, 13);

    b = new_block(BK_MHA_SELF_WEIGHTS);
    alloc_params(&b, qkv_mha_init(&b.mha, b.p, "attn", E, H, 0.1f), 4);
    b.kpm = kpm4;
    check("mha self pad +weights", &b, 1, (gc_input[]){X3(4)}, 14);

    b = new_block(BK_MHA_CROSS);
    alloc_params(&b, qkv_mha_init(&b.mha, b.p, "attn", E, H, 0.1f), 5);
    b.kpm = kpm5;
    check("mha cross pad", &b, 2, (gc_input[]){X3(3), X3(5)}, 15);

    b = new_block(BK_FFN);
    alloc_params(&b, qkv_ffn_init(&b.ffn, b.p, "ff", E, 16, QKV_ACT_RELU, 0.1f), 6);
    check("ffn relu", &b, 1, (gc_input[]){X3(3)}, 16);

    b = new_block(BK_FFN);
    alloc_params(&b, qkv_ffn_init(&b.ffn, b.p, "ff", E, 16, QKV_ACT_GELU, 0.1f), 7);
    check("ffn gelu", &b, 1, (gc_input[]){X3(3)}, 17);

    qkv_layer_config post = config(0, QKV_ACT_RELU), pre = config(1, QKV_ACT_GELU);

    b = new_block(BK_ENC_LAYER);
    alloc_params(&b, qkv_encoder_layer_init(&b.enc, b.p, "enc", &post), 8);
    b.kpm = kpm4;
    check("encoder layer post-LN", &b, 1, (gc_input[]){X3(4)}, 18);

    b = new_block(BK_ENC_LAYER);
    alloc_params(&b, qkv_encoder_layer_init(&b.enc, b.p, "enc", &pre), 9);
    b.kpm = kpm4, b.causal = 1;
    check("encoder layer pre-LN", &b, 1, (gc_input[]){X3(4)}, 19);

    b = new_block(BK_DEC_LAYER);
    alloc_params(&b, qkv_decoder_layer_init(&b.dec, b.p, "dec", &post), 10);
    b.mkpm = kpm5, b.causal = 1;
    check("decoder layer post-LN", &b, 2, (gc_input[]){X3(3), X3(5)}, 20);

    b = new_block(BK_DEC_LAYER);
    alloc_params(&b, qkv_decoder_layer_init(&b.dec, b.p, "dec", &pre), 11);
    b.kpm = kpm4, b.mkpm = kpm5, b.causal = 1;
    check("decoder layer pre-LN", &b, 2, (gc_input[]){X3(4), X3(5)}, 21);

    b = new_block(BK_ENC_STACK);
    b.encs = calloc(1, sizeof *b.encs);
    qkv_layer_config stack = config(1, QKV_ACT_GELU_TANH);
    alloc_params(&b, qkv_encoder_init(b.encs, b.p, "encoder", &stack, 2, 1), 12);
    b.kpm = kpm4;
    check("encoder stack 2L +norm", &b, 1, (gc_input[]){X3(4)}, 22);

    b = new_block(BK_BAHDANAU);
    alloc_params_sd(&b, qkv_bahdanau_init(&b.bah, b.p, "attn", 6, 5, 7), 13, 0.5f); /* larger scores: O(1) gradients */
    b.kpm = kpm4;
    check("bahdanau", &b, 2, (gc_input[]){{3, {B, 3, 6}, GC_NORMAL, 0}, {3, {B, 4, 5}, GC_NORMAL, 0}}, 23);

    b = new_block(BK_LUONG);
    alloc_params(&b, qkv_luong_init(&b.luong, b.p, "attn", QKV_LUONG_DOT, 6, 6), 14);
    b.kpm = kpm4;
    check("luong dot", &b, 2, (gc_input[]){{3, {B, 3, 6}, GC_NORMAL, 0}, {3, {B, 4, 6}, GC_NORMAL, 0}}, 24);

    b = new_block(BK_LUONG);
    alloc_params(&b, qkv_luong_init(&b.luong, b.p, "attn", QKV_LUONG_GENERAL, 6, 5), 15);
    b.kpm = kpm4;
    check("luong general", &b, 2, (gc_input[]){{3, {B, 3, 6}, GC_NORMAL, 0}, {3, {B, 4, 5}, GC_NORMAL, 0}}, 25);

    b = new_block(BK_POSITIONS);
    qkv_status s = qkv_embedding_init(&b.tok, b.p, "wte", 7, 6, 1.0f);
    alloc_params(&b, s ? s : qkv_embedding_init(&b.pos, b.p, "wpe", 9, 6, 1.0f), 16);
    b.ids = ids, b.offset = 3;
    check("embedding + learned positions", &b, 1, (gc_input[]){{3, {B, 4, 6}, GC_NORMAL, 0}}, 26);

    printf("\nlargest finite-difference error per block (tol %.0e):\n", GC_TOL);
    for (int i = 0; i < n_checked; i++)
        printf("  %-30s inputs %.2e  params %.2e\n", names[i], worst_in[i], worst_par[i]);
    return tu_finish("test_nn_grad");
}

/* test_torch_blocks.c — the nn blocks and the ops under them against PyTorch 1.13 (goldens written by
 * tests/torch/gen_blocks.py): attention (no mask, causal, key padding, cross, T = 64, head size 5),
 * nn.MultiheadAttention with per-head weights, nn.TransformerEncoderLayer / DecoderLayer post-LN and
 * pre-LN with ReLU and GELU, 2-layer stacks with a final norm, LayerNorm, Linear, GELU (erf, tanh),
 * softmax, log_softmax, cross-entropy with ignore_index, embeddings + learned positions, Bahdanau and
 * Luong attention.
 *
 * For each case the module is declared with an empty prefix, so its parameter names must be exactly
 * the PyTorch state-dict keys: every parameter is loaded by its own name from the golden, and the
 * golden must hold no parameter the module lacks. Then forward, loss = sum(out * W) with the golden's
 * W, backward, and the output, the attention weights (where the case has them), the gradient of every
 * input and the gradient of every parameter are compared.
 *
 * Attention and the layers run twice: training mode (dropout 0, so identity) without weights — the
 * tiled online-softmax kernel — and inference mode with weights requested — the kernel that
 * materialises the probabilities. Both must match.
 *
 * Tolerance TORCH_TOL 1e-4, normalised max error (tu_close): both sides are float32 and differ only in
 * summation order and in how exp/erf/tanh are evaluated, which gives errors of ~1e-6 of the tensor's
 * scale through a whole layer's forward and backward; a wrong term, mask or scale shows as 1e-2 or more.
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */

#include "testutil.h"

#define TORCH_TOL 1e-4

typedef enum {
    K_ATTN,
    K_MHA,
    K_ENC,
    K_DEC,
    K_LAYERNORM,
    K_LINEAR,
    K_GELU,
    K_GELU_TANH,
    K_SOFTMAX,
    K_LOG_SOFTMAX,
    K_CROSS_ENTROPY,
    K_EMBEDDING,
    K_BAHDANAU,
    K_LUONG_DOT,
    K_LUONG_GENERAL,
} kind;

static const struct {
    const char *name;
    kind k;
} cases[] = {
    {"attn_nomask", K_ATTN},
    {"attn_causal64", K_ATTN},
    {"attn_pad", K_ATTN},
    {"attn_cross", K_ATTN},
    {"attn_cross_causal", K_ATTN},
    {"attn_decode", K_ATTN},
    {"mha_self_pad", K_MHA},
    {"mha_causal64", K_MHA},
    {"mha_cross", K_MHA},
    {"enc_post_relu", K_ENC},
    {"enc_post_gelu", K_ENC},
    {"enc_pre_relu", K_ENC},
    {"enc_pre_gelu", K_ENC},
    {"enc_pre_gelu_causal64", K_ENC},
    {"encstack_pre_gelu", K_ENC},
    {"encstack_post_relu", K_ENC},
    {"dec_post_relu", K_DEC},
    {"dec_post_gelu", K_DEC},
    {"dec_pre_relu", K_DEC},
    {"dec_pre_gelu", K_DEC},
    {"decstack_pre_relu", K_DEC},
    {"layernorm", K_LAYERNORM},
    {"linear", K_LINEAR},
    {"gelu", K_GELU},
    {"gelu_tanh", K_GELU_TANH},
    {"softmax", K_SOFTMAX},
    {"log_softmax", K_LOG_SOFTMAX},
    {"cross_entropy", K_CROSS_ENTROPY},
    {"embedding_positions", K_EMBEDDING},
    {"bahdanau", K_BAHDANAU},
    {"luong_dot", K_LUONG_DOT},
    {"luong_general", K_LUONG_GENERAL},
};

static tu_golden *G;

/* "<case>/<what>" entry, or NULL when the golden does not have it */
static tu_entry *entry(const char *cs, const char *what, int required) {
    char key[256];
    snprintf(key, sizeof key, "%s/%s", cs, what);
    if (!required && !tu_has(G, key)) return NULL;
    return tu_get(G, key);
}

/* Everything one case needs: its modules (all declared into p with an empty prefix) and settings. */
typedef struct {
    const char *cs;
    kind k;
    int32_t *cfg;
    uint8_t *kpm, *mkpm;
    qkv_params *p;
    qkv_mha_m mha;
    qkv_encoder_layer_m enc;
    qkv_decoder_layer_m dec;
    qkv_encoder_m *encs;
    qkv_decoder_m *decs;
    qkv_layernorm_m ln;
    qkv_linear_m lin;
    qkv_embedding_m tok, pos;
    qkv_bahdanau_m bah;
    qkv_luong_m luong;
} tcase;

static qkv_layer_config layer_config(const tcase *c, int64_t E) {
    qkv_layer_config lc = qkv_layer_config_default();
    lc.d_model = E;
    lc.n_head = c->cfg[0];
    lc.dim_feedforward = c->cfg[1];
    lc.norm_first = c->cfg[2];
    lc.activation = c->cfg[3] ? QKV_ACT_GELU : QKV_ACT_RELU;
    lc.dropout = 0.0f; /* the reference ran with dropout 0 */
    lc.layer_norm_eps = 1e-5f;
    return lc;
}

/* Declares the case's modules; returns the status of the init calls. */
static qkv_status declare(tcase *c) {
    tu_entry *x;
    switch (c->k) {
    case K_MHA: x = entry(c->cs, "in/query", 1); return qkv_mha_init(&c->mha, c->p, "", x->shape[2], c->cfg[0], 0.0f);
    case K_ENC: {
        x = entry(c->cs, "in/x", 1);
        qkv_layer_config lc = layer_config(c, x->shape[2]);
        if (c->cfg[5] == 0) return qkv_encoder_layer_init(&c->enc, c->p, "", &lc);
        c->encs = calloc(1, sizeof *c->encs);
        return qkv_encoder_init(c->encs, c->p, "", &lc, c->cfg[5], c->cfg[6]);
    }
    case K_DEC: {
        x = entry(c->cs, "in/x", 1);
        qkv_layer_config lc = layer_config(c, x->shape[2]);
        if (c->cfg[5] == 0) return qkv_decoder_layer_init(&c->dec, c->p, "", &lc);
        c->decs = calloc(1, sizeof *c->decs);
        return qkv_decoder_init(c->decs, c->p, "", &lc, c->cfg[5], c->cfg[6]);
    }
    case K_LAYERNORM:
        x = entry(c->cs, "in/x", 1);
        return qkv_layernorm_init(&c->ln, c->p, "", x->shape[x->ndim - 1], 1e-5f);
    case K_LINEAR: {
        x = entry(c->cs, "in/x", 1);
        tu_entry *w = entry(c->cs, "p/weight", 1);
        return qkv_linear_init(&c->lin, c->p, "", x->shape[x->ndim - 1], w->shape[0], 1);
    }
    case K_EMBEDDING: {
        tu_entry *tok = entry(c->cs, "p/tok.weight", 1), *pos = entry(c->cs, "p/pos.weight", 1);
        qkv_status s = qkv_embedding_init(&c->tok, c->p, "tok", tok->shape[0], tok->shape[1], 1.0f);
        return s ? s : qkv_embedding_init(&c->pos, c->p, "pos", pos->shape[0], pos->shape[1], 1.0f);
    }
    case K_BAHDANAU: {
        tu_entry *q = entry(c->cs, "in/query", 1), *k = entry(c->cs, "in/keys", 1);
        tu_entry *W = entry(c->cs, "p/W.weight", 1);
        return qkv_bahdanau_init(&c->bah, c->p, "", q->shape[2], k->shape[2], W->shape[0]);
    }
    case K_LUONG_DOT:
    case K_LUONG_GENERAL: {
        tu_entry *q = entry(c->cs, "in/query", 1), *k = entry(c->cs, "in/keys", 1);
        return qkv_luong_init(&c->luong, c->p, "", c->k == K_LUONG_DOT ? QKV_LUONG_DOT : QKV_LUONG_GENERAL, q->shape[2],
                              k->shape[2]);
    }
    default: return QKV_OK; /* no parameters */
    }
}

#define MAX_IN 4
typedef struct {
    int n;
    const char *name[MAX_IN];
    qkv_tensor *t[MAX_IN];
} inputs;

static qkv_tensor *in(inputs *ins, const char *name) {
    for (int i = 0; i < ins->n; i++)
        if (strcmp(ins->name[i], name) == 0) return ins->t[i];
    printf("FAIL: input '%s' missing\n", name);
    exit(1);
}

/* The forward of one case; *weights receives attention probabilities when want_w. */
static qkv_tensor *forward(qkv_ctx *ctx, tcase *c, inputs *ins, int want_w, qkv_tensor **weights) {
    qkv_tensor **w = want_w ? weights : NULL;
    switch (c->k) {
    case K_ATTN: {
        qkv_attn_opts o = {.n_head = c->cfg[0], .causal = c->cfg[1], .key_padding_mask = c->kpm, .weights = w};
        return qkv_attention(ctx, in(ins, "q"), in(ins, "k"), in(ins, "v"), &o);
    }
    case K_MHA: {
        qkv_tensor *q = in(ins, "query");
        qkv_tensor *k = c->cfg[2] ? q : in(ins, "key");
        return qkv_mha_forward(ctx, &c->mha, q, k, k, c->kpm, c->cfg[1], w);
    }
    case K_ENC:
        if (c->encs) return qkv_encoder_forward(ctx, c->encs, in(ins, "x"), c->kpm, c->cfg[4]);
        return qkv_encoder_layer_forward(ctx, &c->enc, in(ins, "x"), c->kpm, c->cfg[4], w);
    case K_DEC:
        if (c->decs)
            return qkv_decoder_forward(ctx, c->decs, in(ins, "x"), in(ins, "memory"), c->kpm, c->cfg[4], c->mkpm);
        {
            qkv_tensor *cw = NULL;
            return qkv_decoder_layer_forward(ctx, &c->dec, in(ins, "x"), in(ins, "memory"), c->kpm, c->cfg[4], c->mkpm,
                                             w, want_w ? &cw : NULL);
        }
    case K_LAYERNORM: return qkv_layernorm_forward(ctx, &c->ln, in(ins, "x"));
    case K_LINEAR: return qkv_linear_forward(ctx, &c->lin, in(ins, "x"));
    case K_GELU: return qkv_gelu(ctx, in(ins, "x"), 0);
    case K_GELU_TANH: return qkv_gelu(ctx, in(ins, "x"), 1);
    case K_SOFTMAX: return qkv_softmax(ctx, in(ins, "x"));
    case K_LOG_SOFTMAX: return qkv_log_softmax(ctx, in(ins, "x"));
    case K_CROSS_ENTROPY: return qkv_cross_entropy(ctx, in(ins, "logits"), tu_i32(G, "cross_entropy/targets"), -100);
    case K_EMBEDDING: {
        tu_entry *ids = entry(c->cs, "ids", 1);
        int64_t B = ids->shape[0], T = ids->shape[1];
        qkv_tensor *tok = qkv_embedding_forward(ctx, &c->tok, (const int32_t *)ids->data, B, T); /* wte(ids) */
        return qkv_add(ctx, tok, qkv_learned_positions(ctx, &c->pos, T, c->cfg[0]));             /* + wpe(pos) */
    }
    case K_BAHDANAU: return qkv_bahdanau_forward(ctx, &c->bah, in(ins, "query"), in(ins, "keys"), c->kpm, w);
    case K_LUONG_DOT:
    case K_LUONG_GENERAL: return qkv_luong_forward(ctx, &c->luong, in(ins, "query"), in(ins, "keys"), c->kpm, w);
    }
    return NULL;
}

static int has_variants(kind k) { return k == K_ATTN || k == K_MHA || k == K_ENC || k == K_DEC; }

static double worst_case[64];

static double track(int ci, double e) {
    if (e > worst_case[ci] || isnan(e)) worst_case[ci] = e;
    return e;
}

static void run_case(int ci) {
    tcase c;
    memset(&c, 0, sizeof c);
    c.cs = cases[ci].name;
    c.k = cases[ci].k;
    tu_entry *e = entry(c.cs, "cfg", 0);
    c.cfg = e ? (int32_t *)e->data : NULL;
    if ((e = entry(c.cs, "kpm", 0))) c.kpm = e->data;
    if ((e = entry(c.cs, "mkpm", 0))) c.mkpm = e->data;
    c.p = qkv_params_new();
    qkv_status s = declare(&c);
    if (s != QKV_OK || qkv_params_alloc(c.p, 1) != QKV_OK) {
        TU_CHECK(0, "%s: declaring the module failed: %s", c.cs, qkv_last_error());
        qkv_params_free(c.p);
        return;
    }
    /* parameters: each loaded by its own name; the golden must have exactly this set */
    int np = qkv_params_count(c.p), ng = 0;
    char key[256];
    snprintf(key, sizeof key, "%s/p/", c.cs);
    for (int i = 0; i < G->n; i++) ng += strncmp(G->e[i].name, key, strlen(key)) == 0;
    TU_CHECK(np == ng, "%s: module has %d parameters, PyTorch state dict %d", c.cs, np, ng);
    for (int i = 0; i < np; i++) {
        qkv_tensor *t = qkv_params_get(c.p, i);
        snprintf(key, sizeof key, "%s/p/%s", c.cs, t->name);
        tu_load_param(G, key, t);
    }

    qkv_ctx *ctx = qkv_ctx_new(0);
    int nvar = has_variants(c.k) ? 2 : 1;
    for (int var = 0; var < nvar; var++) {
        int want_w = var == 1 || c.k == K_BAHDANAU || c.k == K_LUONG_DOT || c.k == K_LUONG_GENERAL;
        qkv_ctx_reset(ctx);
        qkv_ctx_set_training(ctx, var == 0); /* dropout 0: identity in either mode */
        qkv_params_zero_grad(c.p);
        inputs ins = {0};
        snprintf(key, sizeof key, "%s/in/", c.cs);
        for (int i = 0; i < G->n && ins.n < MAX_IN; i++) {
            tu_entry *x = &G->e[i];
            if (strncmp(x->name, key, strlen(key))) continue;
            ins.name[ins.n] = x->name + strlen(key);
            ins.t[ins.n] = qkv_tensor_from(ctx, x->ndim, x->shape, x->data);
            ins.t[ins.n]->requires_grad = 1;
            ins.n++;
        }
        qkv_tensor *weights = NULL;
        qkv_tensor *out = forward(ctx, &c, &ins, want_w, &weights);
        tu_entry *ref = entry(c.cs, "out", 1);
        char what[160];
        const char *vn = nvar == 1 ? "" : var == 0 ? " [tiled]" : " [weights]";
        if (!out || qkv_tensor_numel(out) != ref->numel) {
            TU_CHECK(0, "%s%s: forward failed or wrong size: %s", c.cs, vn, out ? "size" : qkv_ctx_error(ctx));
            continue;
        }
        snprintf(what, sizeof what, "%s%s out", c.cs, vn);
        track(ci, tu_close(what, out->data, ref->data, ref->numel, TORCH_TOL));
        tu_entry *wref = entry(c.cs, "weights", 0);
        if (want_w && wref && c.k != K_ENC && c.k != K_DEC) {
            if (!weights || qkv_tensor_numel(weights) != wref->numel) {
                TU_CHECK(0, "%s%s: no attention weights or wrong size", c.cs, vn);
            } else {
                snprintf(what, sizeof what, "%s%s weights", c.cs, vn);
                track(ci, tu_close(what, weights->data, wref->data, wref->numel, TORCH_TOL));
            }
        }
        /* loss = sum(out * W) */
        tu_entry *w = entry(c.cs, "w", 1);
        qkv_tensor *wt = qkv_tensor_from(ctx, out->ndim, out->shape, w->data);
        qkv_tensor *loss = qkv_sum(ctx, qkv_mul(ctx, out, wt));
        if (qkv_backward(ctx, loss) != QKV_OK) {
            TU_CHECK(0, "%s%s: backward failed: %s", c.cs, vn, qkv_ctx_error(ctx));
            continue;
        }
        for (int i = 0; i < ins.n; i++) {
            snprintf(key, sizeof key, "gin/%s", ins.name[i]);
            tu_entry *g = entry(c.cs, key, 1);
            snprintf(what, sizeof what, "%s%s grad %s", c.cs, vn, ins.name[i]);
            if (!ins.t[i]->grad) {
                TU_CHECK(0, "%s: no gradient reached input %s", c.cs, ins.name[i]);
                continue;
            }
            track(ci, tu_close(what, ins.t[i]->grad, g->data, g->numel, TORCH_TOL));
        }
        for (int i = 0; i < np; i++) {
            qkv_tensor *t = qkv_params_get(c.p, i);
            snprintf(key, sizeof key, "gp/%s", t->name);
            tu_entry *g = entry(c.cs, key, 1);
            snprintf(what, sizeof what, "%s%s grad %s", c.cs, vn, t->name);
            track(ci, tu_close(what, t->grad, g->data, g->numel, TORCH_TOL));
        }
    }
    qkv_ctx_free(ctx);
    free(c.encs);
    free(c.decs);
    qkv_params_free(c.p);
}

int main(void) {
    G = tu_golden_load("blocks.bin");
    int n = (int)(sizeof cases / sizeof cases[0]);
    for (int i = 0; i < n; i++) run_case(i);
    printf("\nlargest normalised error per case (tol %.0e):\n", TORCH_TOL);
    for (int i = 0; i < n; i++) printf("  %-24s %.3e\n", cases[i].name, worst_case[i]);
    tu_golden_free(G);
    return tu_finish("test_torch_blocks");
}

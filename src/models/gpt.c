/* gpt.c — the GPT-2 language model (Hugging Face GPT2LMHeadModel): parameters, the training forward,
 * and inference with a key/value cache.
 *
 * What it is not: a kernel collection. Every numerical step is one op from qkv/ops.h (so training
 * gets its backward from the tape and the decode path shares the tested kernels); checkpoint files
 * are read and written in src/io/hf_gpt2.c, sampling lives in src/infer/.
 *
 * The convention a reader needs: weights are kept exactly as Hugging Face stores them, Conv1D
 * weights [in, out], so a projection is qkv_matmul(x, W, 0, 0) + b with x (B,T,in) folded into one
 * (B*T, in) GEMM; q, k and v come out of one fused c_attn GEMM as a (B,T,3C) tensor and are split
 * on the last dim; the attention op reads heads in place from (B,T,C). The LM head is wte itself
 * (logits = h wte^T). The key/value cache holds, per layer, the k and v rows of every position seen
 * so far as (max_len, C) arrays: a step appends its n new rows and hands the attention op a view of
 * rows [0, len+n), whose causal mask is aligned at the end (query i sees keys j <= i + len).
 * One exception, opt-in for inference: qkv_gpt_set_inference_layout() transposes the four projection
 * weights of every block in place to [out, in] (nn.Linear's layout), so that a decode step's
 * matrix-vector products dot contiguous rows with x; the projections are then x W^T + b. The same
 * call with 0 transposes them back (bit for bit); Hugging Face saving refuses the inference layout.
 */
#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_int.h"
#include "models/gpt_int.h"
#include "qkv/nn.h"
#include "qkv/ops.h"

/* One transformer block, HF names relative to "h.{i}.". */
typedef struct {
    qkv_tensor *ln_1_w, *ln_1_b;       /* ln_1.weight, ln_1.bias (C) */
    qkv_tensor *c_attn_w, *c_attn_b;   /* attn.c_attn.weight (C,3C), attn.c_attn.bias (3C) */
    qkv_tensor *attn_proj_w, *attn_proj_b; /* attn.c_proj.weight (C,C), attn.c_proj.bias (C) */
    qkv_tensor *ln_2_w, *ln_2_b;       /* ln_2.weight, ln_2.bias (C) */
    qkv_tensor *c_fc_w, *c_fc_b;       /* mlp.c_fc.weight (C,4C), mlp.c_fc.bias (4C) */
    qkv_tensor *mlp_proj_w, *mlp_proj_b; /* mlp.c_proj.weight (4C,C), mlp.c_proj.bias (C) */
} gpt_block;

struct qkv_gpt {
    qkv_gpt_config cfg;
    qkv_params *params;
    qkv_embedding_m wte;  /* wte.weight (V,C), also the LM head */
    qkv_embedding_m wpe;  /* wpe.weight (P,C) */
    gpt_block h[QKV_GPT_MAX_LAYERS];
    qkv_tensor *ln_f_w, *ln_f_b; /* ln_f.weight, ln_f.bias (C) */
    int linear_layout;           /* projection weights held [out, in] (qkv_gpt_set_inference_layout) */
};

/* ---- the parameter table: name <-> field <-> shape <-> init, read by qkv_gpt_new ---- */

typedef enum { INIT_ONES, INIT_ZEROS, INIT_NORMAL, INIT_RESID } init_kind;
static const struct {
    const char *field;
    size_t off;
    int rows, cols; /* shape (rows*C, cols*C), or (cols*C) when rows == 0 */
    init_kind init;
} block_table[] = {
    {"ln_1.weight", offsetof(gpt_block, ln_1_w), 0, 1, INIT_ONES},
    {"ln_1.bias", offsetof(gpt_block, ln_1_b), 0, 1, INIT_ZEROS},
    {"attn.c_attn.weight", offsetof(gpt_block, c_attn_w), 1, 3, INIT_NORMAL},
    {"attn.c_attn.bias", offsetof(gpt_block, c_attn_b), 0, 3, INIT_ZEROS},
    {"attn.c_proj.weight", offsetof(gpt_block, attn_proj_w), 1, 1, INIT_RESID},
    {"attn.c_proj.bias", offsetof(gpt_block, attn_proj_b), 0, 1, INIT_ZEROS},
    {"ln_2.weight", offsetof(gpt_block, ln_2_w), 0, 1, INIT_ONES},
    {"ln_2.bias", offsetof(gpt_block, ln_2_b), 0, 1, INIT_ZEROS},
    {"mlp.c_fc.weight", offsetof(gpt_block, c_fc_w), 1, 4, INIT_NORMAL},
    {"mlp.c_fc.bias", offsetof(gpt_block, c_fc_b), 0, 4, INIT_ZEROS},
    {"mlp.c_proj.weight", offsetof(gpt_block, mlp_proj_w), 4, 1, INIT_RESID},
    {"mlp.c_proj.bias", offsetof(gpt_block, mlp_proj_b), 0, 1, INIT_ZEROS},
};
#define N_BLOCK_PARAMS ((int)(sizeof block_table / sizeof block_table[0]))

qkv_gpt_config qkv_gpt_config_gpt2(void) {
    qkv_gpt_config c = {.vocab_size = 50257, .n_positions = 1024, .n_embd = 768, .n_layer = 12, .n_head = 12,
                        .layer_norm_epsilon = 1e-5f, .embd_pdrop = 0.1f, .attn_pdrop = 0.1f, .resid_pdrop = 0.1f,
                        .initializer_range = 0.02f, .bos_token_id = 50256, .eos_token_id = 50256};
    return c;
}

/* Upper bounds that keep every size computation far from overflow; real models are far below. */
#define MAX_VOCAB ((int64_t)1 << 30)    /* ids are int32 */
#define MAX_POSITIONS ((int64_t)1 << 24)
#define MAX_EMBD ((int64_t)1 << 20)
#define MAX_PARAMS ((int64_t)1 << 36)   /* floats: 256 GiB */

qkv_status qkv_gpt_config_check(const qkv_gpt_config *c) {
    if (!c) return qkv__set_error(QKV_ERR_ARG, "gpt config: NULL");
    if (c->vocab_size < 1 || c->vocab_size > MAX_VOCAB)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: vocab_size %lld must be in [1, %lld]",
                              (long long)c->vocab_size, (long long)MAX_VOCAB);
    if (c->n_positions < 1 || c->n_positions > MAX_POSITIONS)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: n_positions %lld must be in [1, %lld]",
                              (long long)c->n_positions, (long long)MAX_POSITIONS);
    if (c->n_embd < 1 || c->n_embd > MAX_EMBD)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: n_embd %lld must be in [1, %lld]", (long long)c->n_embd,
                              (long long)MAX_EMBD);
    if (c->n_layer < 1 || c->n_layer > QKV_GPT_MAX_LAYERS)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: n_layer %d must be in [1, %d]", c->n_layer,
                              QKV_GPT_MAX_LAYERS);
    if (c->n_head < 1 || c->n_head > c->n_embd)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: n_head %d must be in [1, n_embd %lld]", c->n_head,
                              (long long)c->n_embd);
    if (c->n_embd % c->n_head)
        return qkv__set_error(QKV_ERR_ARG, "gpt config: n_embd %lld is not divisible by n_head %d",
                              (long long)c->n_embd, c->n_head);
    if (!(c->layer_norm_epsilon > 0.0f) || !isfinite(c->layer_norm_epsilon))
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: layer_norm_epsilon %g must be a positive number",
                              (double)c->layer_norm_epsilon);
    const float drop[3] = {c->embd_pdrop, c->attn_pdrop, c->resid_pdrop};
    static const char *const drop_name[3] = {"embd_pdrop", "attn_pdrop", "resid_pdrop"};
    for (int i = 0; i < 3; i++)
        if (!(drop[i] >= 0.0f && drop[i] < 1.0f))
            return qkv__set_error(QKV_ERR_RANGE, "gpt config: %s %g must be in [0, 1)", drop_name[i], (double)drop[i]);
    if (!(c->initializer_range >= 0.0f) || !isfinite(c->initializer_range))
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: initializer_range %g must be finite and >= 0",
                              (double)c->initializer_range);
    /* bos/eos are not required to be < vocab_size: Hugging Face's GPT2Config keeps 50256 for any
     * vocabulary. -1 means "none". */
    if (c->bos_token_id < -1 || c->eos_token_id < -1)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: bos_token_id %d / eos_token_id %d must be >= -1",
                              (int)c->bos_token_id, (int)c->eos_token_id);
    const int64_t C = c->n_embd;
    const int64_t total = (c->vocab_size + c->n_positions) * C + (int64_t)c->n_layer * (12 * C * C + 13 * C) + 2 * C;
    if (total > MAX_PARAMS)
        return qkv__set_error(QKV_ERR_RANGE, "gpt config: %lld parameters (more than %lld)", (long long)total,
                              (long long)MAX_PARAMS);
    return QKV_OK;
}

/* Declares name, (d0) or (d0,d1), with the given init; NULL (qkv_last_error set by qkv_params_add) on failure. */
static qkv_tensor *declare(qkv_params *p, const char *name, int ndim, int64_t d0, int64_t d1, qkv_init init,
                           int no_decay) {
    const int64_t shape[2] = {d0, d1};
    return qkv_params_add(p, name, ndim, shape, init, no_decay);
}

static qkv_gpt *gpt_create(const qkv_gpt_config *cfg, uint64_t seed, int random_init) {
    if (qkv_gpt_config_check(cfg) != QKV_OK) return NULL;
    qkv_gpt *m = calloc(1, sizeof *m);
    if (!m || !(m->params = qkv_params_new())) {
        free(m);
        qkv__set_error(QKV_ERR_NOMEM, "qkv_gpt_new: out of memory");
        return NULL;
    }
    m->cfg = *cfg;
    const int64_t C = cfg->n_embd;
    const float std = random_init ? cfg->initializer_range : 0.0f;
    /* HF GPT2PreTrainedModel._init_weights: the residual projections are scaled by 1/sqrt(2 n_layer). */
    const float resid_std = random_init ? (float)(cfg->initializer_range / sqrt(2.0 * cfg->n_layer)) : 0.0f;
    const qkv_init zeros = {QKV_INIT_ZEROS, 0}, ones = {random_init ? QKV_INIT_ONES : QKV_INIT_ZEROS, 0};
    const qkv_init normal = {random_init ? QKV_INIT_NORMAL : QKV_INIT_ZEROS, std};
    const qkv_init resid = {random_init ? QKV_INIT_NORMAL : QKV_INIT_ZEROS, resid_std};
    qkv_params *p = m->params;
    int ok = (m->wte.weight = declare(p, "wte.weight", 2, cfg->vocab_size, C, normal, 0)) != NULL &&
             (m->wpe.weight = declare(p, "wpe.weight", 2, cfg->n_positions, C, normal, 0)) != NULL;
    for (int l = 0; ok && l < cfg->n_layer; l++) {
        for (int i = 0; ok && i < N_BLOCK_PARAMS; i++) {
            char name[64];
            snprintf(name, sizeof name, "h.%d.%s", l, block_table[i].field);
            qkv_init init = block_table[i].init == INIT_ONES     ? ones
                            : block_table[i].init == INIT_ZEROS  ? zeros
                            : block_table[i].init == INIT_NORMAL ? normal
                                                                 : resid;
            const int vec = block_table[i].rows == 0;
            qkv_tensor *t = vec ? declare(p, name, 1, block_table[i].cols * C, 1, init, 1)
                                : declare(p, name, 2, block_table[i].rows * C, block_table[i].cols * C, init, 0);
            *(qkv_tensor **)((char *)&m->h[l] + block_table[i].off) = t;
            ok = t != NULL;
        }
    }
    ok = ok && (m->ln_f_w = declare(p, "ln_f.weight", 1, C, 1, ones, 1)) != NULL &&
         (m->ln_f_b = declare(p, "ln_f.bias", 1, C, 1, zeros, 1)) != NULL;
    if (!ok || qkv_params_alloc(p, seed) != QKV_OK) {
        qkv_gpt_free(m); /* qkv_last_error already says why */
        return NULL;
    }
    return m;
}

qkv_gpt *qkv_gpt_new(const qkv_gpt_config *cfg, uint64_t seed) { return gpt_create(cfg, seed, 1); }
qkv_gpt *qkv__gpt_new_zeroed(const qkv_gpt_config *cfg) { return gpt_create(cfg, 0, 0); }

void qkv_gpt_free(qkv_gpt *m) {
    if (!m) return;
    qkv_params_free(m->params);
    free(m);
}

/* In-place transpose of one (r, c) matrix through tmp (r*c floats), in 32 x 32 tiles so that both
 * sides are read and written a cache line at a time; the tensor's shape follows. */
static void transpose_weight(qkv_tensor *t, float *tmp) {
    const int64_t r = t->shape[0], c = t->shape[1];
    for (int64_t i0 = 0; i0 < r; i0 += 32)
        for (int64_t j0 = 0; j0 < c; j0 += 32)
            for (int64_t i = i0; i < i0 + 32 && i < r; i++)
                for (int64_t j = j0; j < j0 + 32 && j < c; j++) tmp[j * r + i] = t->data[i * c + j];
    memcpy(t->data, tmp, (size_t)(r * c) * sizeof(float));
    t->shape[0] = c;
    t->shape[1] = r;
}

qkv_status qkv_gpt_set_inference_layout(qkv_gpt *m, int on) {
    if (!m) return qkv__set_error(QKV_ERR_ARG, "qkv_gpt_set_inference_layout: model is NULL");
    if ((on != 0) == m->linear_layout) return QKV_OK;
    const int64_t C = m->cfg.n_embd;
    float *tmp = malloc((size_t)(4 * C * C) * sizeof(float)); /* the largest projection, c_fc / mlp.c_proj */
    if (!tmp) return qkv__set_error(QKV_ERR_NOMEM, "qkv_gpt_set_inference_layout: out of memory");
    for (int l = 0; l < m->cfg.n_layer; l++) {
        gpt_block *b = &m->h[l];
        qkv_tensor *w[4] = {b->c_attn_w, b->attn_proj_w, b->c_fc_w, b->mlp_proj_w};
        for (int i = 0; i < 4; i++) transpose_weight(w[i], tmp);
    }
    free(tmp);
    m->linear_layout = on != 0;
    return QKV_OK;
}

int qkv_gpt_inference_layout(const qkv_gpt *m) { return m ? m->linear_layout : 0; }

const qkv_gpt_config *qkv_gpt_get_config(const qkv_gpt *m) { return m ? &m->cfg : NULL; }
qkv_params *qkv_gpt_params(qkv_gpt *m) { return m ? m->params : NULL; }

/* ---- forward ---- */

/* Where one layer's keys and values go during a cached step: rows [pos, pos+n) of the (max_len,C)
 * arrays k and v, which already hold rows [0, pos). NULL for the uncached (training) forward. */
typedef struct {
    float *k, *v;
    int64_t pos;
} kv_slot;

/* A block projection h @ w + b (+ res): Conv1D on HF's [in, out] weights, Linear on [out, in]. */
static qkv_tensor *project(qkv_ctx *ctx, const qkv_gpt *m, qkv_tensor *h, qkv_tensor *w, qkv_tensor *b,
                           qkv_tensor *res) {
    return m->linear_layout ? qkv_linear_residual(ctx, h, w, b, res) : qkv_conv1d(ctx, h, w, b, res);
}

/* x + dropout(h @ w + b): the residual is folded into the product unless dropout sits between. */
static qkv_tensor *residual_proj(qkv_ctx *ctx, const qkv_gpt *m, qkv_tensor *x, qkv_tensor *h, qkv_tensor *w,
                                 qkv_tensor *b, float p) {
    if (p > 0.0f && qkv_ctx_training(ctx)) return qkv_add(ctx, x, qkv_dropout(ctx, project(ctx, m, h, w, b, NULL), p));
    return project(ctx, m, h, w, b, x);
}

/* x (B,T,C) -> x + attn(ln_1(x)) + mlp(ln_2(...)), GPT2Block. */
static qkv_tensor *block_forward(qkv_ctx *ctx, const qkv_gpt *m, const gpt_block *blk, qkv_tensor *x,
                                 const kv_slot *kv) {
    const qkv_gpt_config *c = &m->cfg;
    const int64_t C = c->n_embd;
    /* attention sub-block */
    qkv_tensor *h = qkv_layernorm(ctx, x, blk->ln_1_w, blk->ln_1_b, c->layer_norm_epsilon); /* ln_1(x) */
    qkv_tensor *qkv = project(ctx, m, h, blk->c_attn_w, blk->c_attn_b, NULL);             /* c_attn(h) */
    qkv_tensor *q = NULL, *k = NULL, *v = NULL;
    if (qkv) {
        qkv_tensor *parts[3];
        if (qkv_split(ctx, qkv, 2, 3, (int64_t[]){C, C, C}, parts) == QKV_OK) { /* q, k, v = split(C, dim=2) */
            q = parts[0];
            k = parts[1];
            v = parts[2];
        }
    }
    if (kv && q) { /* append this step's rows to the cache, attend over everything cached */
        const int64_t n = q->shape[1], len = kv->pos + n;
        memcpy(kv->k + kv->pos * C, k->data, (size_t)(n * C) * sizeof(float));
        memcpy(kv->v + kv->pos * C, v->data, (size_t)(n * C) * sizeof(float));
        k = qkv_tensor_wrap(ctx, 3, (int64_t[]){1, len, C}, kv->k); /* torch.cat((past_k, k), dim=-2) */
        v = qkv_tensor_wrap(ctx, 3, (int64_t[]){1, len, C}, kv->v);
    }
    qkv_attn_opts ao = {.n_head = c->n_head, .causal = 1, .dropout = c->attn_pdrop};
    qkv_tensor *a = qkv_attention(ctx, q, k, v, &ao);       /* softmax(q k^T / sqrt(D) + causal) v */
    x = residual_proj(ctx, m, x, a, blk->attn_proj_w, blk->attn_proj_b, c->resid_pdrop); /* x + drop(c_proj(a)) */
    /* MLP sub-block */
    h = qkv_layernorm(ctx, x, blk->ln_2_w, blk->ln_2_b, c->layer_norm_epsilon); /* ln_2(x) */
    h = project(ctx, m, h, blk->c_fc_w, blk->c_fc_b, NULL);                     /* mlp.c_fc(h) */
    h = qkv_gelu(ctx, h, 1);                                                    /* gelu_new(h) */
    return residual_proj(ctx, m, x, h, blk->mlp_proj_w, blk->mlp_proj_b, c->resid_pdrop); /* x + drop(mlp.c_proj(h)) */
}

/* Every id in [0, V): names the first bad one by its position (pos0 + t) and batch row. */
static int check_ids(qkv_ctx *ctx, const char *fn, const qkv_gpt *m, const int32_t *ids, int64_t n, int64_t T,
                     int64_t pos0) {
    for (int64_t i = 0; i < n; i++) {
        if (ids[i] >= 0 && ids[i] < m->cfg.vocab_size) continue;
        char row[48] = "";
        if (n > T) snprintf(row, sizeof row, " of row %lld", (long long)(i / T));
        return qkv__fail(ctx, QKV_ERR_RANGE, "%s: token id %d at position %lld%s is outside [0, vocab_size %lld)", fn,
                         (int)ids[i], (long long)(pos0 + i % T), row, (long long)m->cfg.vocab_size);
    }
    return 1;
}

/* ids (B,T) at positions offset.. -> the final hidden states before ln_f, (B,T,C). */
static qkv_tensor *trunk_forward(qkv_ctx *ctx, const qkv_gpt *m, const int32_t *ids, int64_t B, int64_t T,
                                 int64_t offset, const kv_slot *kv) {
    qkv_tensor *x = qkv_embedding(ctx, m->wte.weight, ids, 2, (int64_t[]){B, T}); /* wte(ids) */
    qkv_tensor *pos = qkv_learned_positions(ctx, &m->wpe, T, offset);           /* wpe(arange(offset, offset+T)) */
    x = qkv_add(ctx, x, pos);
    x = qkv_dropout(ctx, x, m->cfg.embd_pdrop); /* drop(x) */
    for (int l = 0; l < m->cfg.n_layer; l++) x = block_forward(ctx, m, &m->h[l], x, kv ? &kv[l] : NULL);
    return x;
}

qkv_tensor *qkv_gpt_forward(qkv_ctx *ctx, qkv_gpt *m, const int32_t *ids, int64_t B, int64_t T,
                            const int32_t *targets, qkv_tensor **loss) {
    if (!ctx || qkv_ctx_status(ctx) != QKV_OK) return NULL;
    if (!m || !ids) {
        qkv__fail(ctx, QKV_ERR_ARG, "gpt_forward: %s is NULL", m ? "ids" : "model");
        return NULL;
    }
    if (targets && !loss) {
        qkv__fail(ctx, QKV_ERR_ARG, "gpt_forward: targets given but loss is NULL");
        return NULL;
    }
    if (B < 1 || T < 1) {
        qkv__fail(ctx, QKV_ERR_SHAPE, "gpt_forward: batch %lld x %lld tokens (both must be >= 1)", (long long)B,
                  (long long)T);
        return NULL;
    }
    if (T > m->cfg.n_positions) {
        qkv__fail(ctx, QKV_ERR_RANGE, "gpt_forward: sequence of %lld tokens is longer than n_positions %lld",
                  (long long)T, (long long)m->cfg.n_positions);
        return NULL;
    }
    if (!check_ids(ctx, "gpt_forward", m, ids, B * T, T, 0)) return NULL;
    qkv_tensor *x = trunk_forward(ctx, m, ids, B, T, 0, NULL);
    x = qkv_layernorm(ctx, x, m->ln_f_w, m->ln_f_b, m->cfg.layer_norm_epsilon); /* ln_f(x) */
    qkv_tensor *logits = qkv_matmul(ctx, x, m->wte.weight, 0, 1);               /* lm_head(x) = x wte^T */
    if (targets) {
        qkv_tensor *l = qkv_cross_entropy(ctx, logits, targets, -100); /* CE(logits, labels, ignore -100) */
        if (!l) return NULL;
        *loss = l;
    }
    return qkv_ctx_status(ctx) == QKV_OK ? logits : NULL;
}

/* ---- inference with a key/value cache ---- */

struct qkv_gpt_cache {
    int64_t max_len, len, C;
    int n_layer;
    float *mem;  /* n_layer x {k, v} x (max_len, C) */
    kv_slot *slots; /* n_layer, filled per step */
};

qkv_gpt_cache *qkv_gpt_cache_new(const qkv_gpt *m, int64_t max_len) {
    if (!m) {
        qkv__set_error(QKV_ERR_ARG, "qkv_gpt_cache_new: model is NULL");
        return NULL;
    }
    if (max_len < 1 || max_len > m->cfg.n_positions) {
        qkv__set_error(QKV_ERR_RANGE, "qkv_gpt_cache_new: max_len %lld must be in [1, n_positions %lld]",
                       (long long)max_len, (long long)m->cfg.n_positions);
        return NULL;
    }
    qkv_gpt_cache *c = calloc(1, sizeof *c);
    const size_t floats = (size_t)m->cfg.n_layer * 2 * (size_t)max_len * (size_t)m->cfg.n_embd;
    if (c) {
        c->mem = aligned_alloc(64, (floats * sizeof(float) + 63) / 64 * 64);
        c->slots = calloc((size_t)m->cfg.n_layer, sizeof *c->slots);
    }
    if (!c || !c->mem || !c->slots) {
        qkv_gpt_cache_free(c);
        qkv__set_error(QKV_ERR_NOMEM, "qkv_gpt_cache_new: cannot allocate %zu bytes for %lld positions", floats * 4,
                       (long long)max_len);
        return NULL;
    }
    c->max_len = max_len;
    c->C = m->cfg.n_embd;
    c->n_layer = m->cfg.n_layer;
    return c;
}

void qkv_gpt_cache_free(qkv_gpt_cache *c) {
    if (!c) return;
    free(c->mem);
    free(c->slots);
    free(c);
}

void qkv_gpt_cache_reset(qkv_gpt_cache *c) {
    if (c) c->len = 0;
}

int64_t qkv_gpt_cache_len(const qkv_gpt_cache *c) { return c ? c->len : 0; }

/* The step proper; the caller has validated the arguments and set the ctx to inference mode. */
static void step_run(qkv_ctx *ctx, const qkv_gpt *m, qkv_gpt_cache *c, const int32_t *ids, int64_t n, float *logits,
                     int all_logits, int check_finite) {
    const int64_t C = c->C, V = m->cfg.vocab_size, stride = 2 * c->max_len * C;
    for (int l = 0; l < c->n_layer; l++)
        c->slots[l] = (kv_slot){c->mem + l * stride, c->mem + l * stride + c->max_len * C, c->len};
    qkv_tensor *x = trunk_forward(ctx, m, ids, 1, n, c->len, c->slots); /* (1,n,C) */
    if (!x) return;
    const int64_t rows = all_logits ? n : 1;
    /* Only the rows whose logits are wanted go through ln_f and the (V,C) head. */
    x = qkv_tensor_wrap(ctx, 2, (int64_t[]){rows, C}, x->data + (n - rows) * C);
    x = qkv_layernorm(ctx, x, m->ln_f_w, m->ln_f_b, m->cfg.layer_norm_epsilon); /* ln_f(x[-rows:]) */
    qkv_tensor *out = qkv_matmul(ctx, x, m->wte.weight, 0, 1);                  /* (rows, V) */
    if (!out) return;
    /* The ops' own NaN scans are off during a step (they would re-read every weight per token); one
     * scan of the result catches whatever non-finite value got through. */
    if (check_finite) {
        for (int64_t i = 0; i < rows * V; i++)
            if (!isfinite(out->data[i])) {
                qkv__fail(ctx, QKV_ERR_NONFINITE, "gpt_step: logit %lld of row %lld is %s (non-finite weights?)",
                          (long long)(i % V), (long long)(i / V), isnan(out->data[i]) ? "NaN" : "Inf");
                return;
            }
    }
    memcpy(logits, out->data, (size_t)(rows * V) * sizeof(float));
}

qkv_status qkv_gpt_step(qkv_ctx *ctx, qkv_gpt *m, qkv_gpt_cache *c, const int32_t *ids, int64_t n, float *logits,
                        int all_logits) {
    if (!ctx) return QKV_ERR_ARG;
    if (qkv_ctx_status(ctx) != QKV_OK) return qkv_ctx_status(ctx);
    if (!m || !c || !ids || !logits) {
        qkv__fail(ctx, QKV_ERR_ARG, "gpt_step: %s is NULL", !m ? "model" : !c ? "cache" : !ids ? "ids" : "logits");
        return qkv_ctx_status(ctx);
    }
    if (c->C != m->cfg.n_embd || c->n_layer != m->cfg.n_layer || c->max_len > m->cfg.n_positions) {
        qkv__fail(ctx, QKV_ERR_ARG, "gpt_step: the cache (%d layers x %lld channels, %lld positions) was made for "
                  "another model (%d x %lld, n_positions %lld)", c->n_layer, (long long)c->C, (long long)c->max_len,
                  m->cfg.n_layer, (long long)m->cfg.n_embd, (long long)m->cfg.n_positions);
        return qkv_ctx_status(ctx);
    }
    if (n < 1 || n > c->max_len - c->len) {
        qkv__fail(ctx, QKV_ERR_RANGE, "gpt_step: %lld new tokens at position %lld do not fit the cache of %lld "
                  "positions", (long long)n, (long long)c->len, (long long)c->max_len);
        return qkv_ctx_status(ctx);
    }
    if (!check_ids(ctx, "gpt_step", m, ids, n, n, c->len)) return qkv_ctx_status(ctx);

    const int grad = qkv_ctx_grad_enabled(ctx), training = qkv_ctx_training(ctx);
    const int check = ctx->check_finite;
    qkv_ctx_reset(ctx);
    qkv_ctx_set_grad(ctx, 0);
    qkv_ctx_set_training(ctx, 0);
    qkv_ctx_set_check_finite(ctx, 0);
    step_run(ctx, m, c, ids, n, logits, all_logits, check);
    qkv_ctx_set_check_finite(ctx, check);
    qkv_ctx_set_grad(ctx, grad);
    qkv_ctx_set_training(ctx, training);
    qkv_ctx_reset(ctx);
    /* The rows written past len are invisible until len moves, so a failed step leaves the cache as it was. */
    if (qkv_ctx_status(ctx) == QKV_OK) c->len += n;
    return qkv_ctx_status(ctx);
}

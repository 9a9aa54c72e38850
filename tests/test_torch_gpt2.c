/* test_torch_gpt2.c — GPT-2 parity with a plain-PyTorch re-implementation of Hugging Face's
 * GPT2LMHeadModel (tests/torch/gen_gpt2.py), on three random models written as HF directories.
 *
 * For each model: load the directory with qkv_hf_gpt2_load (which exercises the "transformer."
 * prefix, ignored mask buffers, a tied lm_head, unsorted headers and F16 storage), then compare
 *   - logits of prompts of length 1 .. n_positions via qkv_gpt_forward (B = 1) and a batch of 3,
 *   - the same logits via qkv_gpt_step: one prefill of the whole prompt, and a prefill in two
 *     pieces (the second piece attends to the cached first one),
 *   - 16 greedy tokens from the KV cache (prefill, then 1-token steps) against PyTorch's greedy
 *     continuation computed with a full forward per token: ids must be identical;
 * all of it again in the inference layout (qkv_gpt_set_inference_layout: projections transposed to
 * [out, in], computed as nn.Linear), which must also refuse HF saving and switch back bit for bit;
 * and check that save + reload gives bit-identical parameters.
 * Tolerance: max |qkv - torch| <= 1e-4 on logits of magnitude ~1-10. Both sides compute in float32
 * with different summation orders (blocked GEMM, online softmax); the observed error is ~1e-6, so
 * 1e-4 catches any real mistake (a wrong mask, scale, eps or layout moves logits by >= 1e-2).
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "testutil.h"

#define TOL 1e-4

static double max_abs(const float *a, const float *b, int64_t n) {
    double m = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (!(d <= m)) m = d; /* NaN propagates */
    }
    return m;
}

static void check_diff(const char *model, const char *what, const float *got, const float *ref, int64_t n) {
    double d = max_abs(got, ref, n), r = 0;
    for (int64_t i = 0; i < n; i++) r = fmax(r, fabs(ref[i]));
    int ok = d <= TOL;
    tu_checks++;
    if (!ok) tu_failures++;
    printf("%-4s %s %-36s max|diff| %.3e (tol %.0e, max|ref| %.2f) n=%lld\n", ok ? "ok" : "FAIL", model, what, d, TOL,
           r, (long long)n);
}

static int32_t argmax(const float *x, int64_t n) {
    int64_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (x[i] > x[best]) best = i;
    return (int32_t)best;
}

static void rm_model_dir(const char *dir) {
    char p[1200];
    snprintf(p, sizeof p, "%s/config.json", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/model.safetensors", dir);
    unlink(p);
    rmdir(dir);
}

/* Every comparison with the PyTorch goldens, on m in its current weight layout (lay names it). */
static void compare_with_torch(const char *name, const char *lay, qkv_gpt *m, tu_golden *g, qkv_ctx *ctx,
                               qkv_gpt_cache *cache, float *buf) {
    const int64_t V = qkv_gpt_get_config(m)->vocab_size;
    char what[160];
    printf("%s, %s:\n", name, lay);
    for (int i = 0;; i++) {
        char pn[32], ln[32];
        snprintf(pn, sizeof pn, "prompt%d", i);
        snprintf(ln, sizeof ln, "logits%d", i);
        if (!tu_has(g, pn)) break;
        tu_entry *pe = tu_get(g, pn);
        const int32_t *ids = pe->data;
        const int64_t T = pe->numel;
        const float *ref = tu_f32(g, ln);

        qkv_tensor *lg = qkv_gpt_forward(ctx, m, ids, 1, T, NULL, NULL);
        TU_CHECK(lg != NULL, "forward T=%lld: %s", (long long)T, qkv_ctx_error(ctx));
        snprintf(what, sizeof what, "forward  T=%lld", (long long)T);
        if (lg) check_diff(name, what, lg->data, ref, T * V);
        qkv_ctx_reset(ctx);

        qkv_gpt_cache_reset(cache);
        qkv_status s = qkv_gpt_step(ctx, m, cache, ids, T, buf, 1);
        TU_CHECK(s == QKV_OK, "step prefill T=%lld: %s", (long long)T, qkv_ctx_error(ctx));
        snprintf(what, sizeof what, "prefill  T=%lld (all rows)", (long long)T);
        if (s == QKV_OK) check_diff(name, what, buf, ref, T * V);
        TU_CHECK(qkv_gpt_cache_len(cache) == T, "cache len %lld after prefill of %lld",
                 (long long)qkv_gpt_cache_len(cache), (long long)T);

        if (T >= 2) { /* two pieces: the second attends to the cached first */
            const int64_t t1 = T / 3 + 1, t2 = T - t1;
            qkv_gpt_cache_reset(cache);
            s = qkv_gpt_step(ctx, m, cache, ids, t1, buf, 0);
            TU_CHECK(s == QKV_OK, "step piece 1: %s", qkv_ctx_error(ctx));
            snprintf(what, sizeof what, "prefill  T=%lld piece 1 last row", (long long)t1);
            if (s == QKV_OK) check_diff(name, what, buf, ref + (t1 - 1) * V, V);
            s = qkv_gpt_step(ctx, m, cache, ids + t1, t2, buf, 1);
            TU_CHECK(s == QKV_OK, "step piece 2: %s", qkv_ctx_error(ctx));
            snprintf(what, sizeof what, "prefill  T=%lld+%lld (piece 2 rows)", (long long)t1, (long long)t2);
            if (s == QKV_OK) check_diff(name, what, buf, ref + t1 * V, t2 * V);
        }
    }

    /* a batch of 3 */
    tu_entry *be = tu_get(g, "batch_ids");
    const int64_t B = be->shape[0], T = be->shape[1];
    qkv_tensor *lg = qkv_gpt_forward(ctx, m, be->data, B, T, NULL, NULL);
    TU_CHECK(lg != NULL, "batched forward: %s", qkv_ctx_error(ctx));
    snprintf(what, sizeof what, "forward  B=%lld T=%lld", (long long)B, (long long)T);
    if (lg) check_diff(name, what, lg->data, tu_f32(g, "batch_logits"), B * T * V);
    qkv_ctx_reset(ctx);

    /* greedy continuation through the KV cache */
    tu_entry *gp = tu_get(g, "greedy_prompt"), *gi = tu_get(g, "greedy_ids");
    const int32_t *want = gi->data;
    int32_t got[64];
    int n_new = (int)gi->numel, same = 1;
    qkv_gpt_cache_reset(cache);
    qkv_status s = qkv_gpt_step(ctx, m, cache, gp->data, gp->numel, buf, 0);
    for (int t = 0; t < n_new && s == QKV_OK; t++) {
        got[t] = argmax(buf, V);
        same = same && got[t] == want[t];
        if (t + 1 < n_new) s = qkv_gpt_step(ctx, m, cache, &got[t], 1, buf, 0);
    }
    TU_CHECK(s == QKV_OK, "greedy step: %s", qkv_ctx_error(ctx));
    tu_checks++;
    if (!same || s != QKV_OK) tu_failures++;
    printf("%-4s %s greedy %d tokens after a %lld-token prompt via the KV cache: %s (cache len %lld)\n",
           same && s == QKV_OK ? "ok" : "FAIL", name, n_new, (long long)gp->numel,
           same ? "ids identical to torch" : "ids DIFFER", (long long)qkv_gpt_cache_len(cache));
    printf("     ids:");
    for (int t = 0; t < n_new; t++) printf(" %d%s", got[t], got[t] == want[t] ? "" : "(!)");
    printf("\n");

}

static void test_model(const char *name) {
    char file[256], dir[1024];
    snprintf(file, sizeof file, "%s.bin", name);
    tu_golden *g = tu_golden_load(file);
    snprintf(dir, sizeof dir, "%s/%s", tu_golden_dir(), name);
    qkv_gpt *m = qkv_hf_gpt2_load(dir);
    TU_CHECK(m != NULL, "%s: load failed: %s", dir, qkv_last_error());
    if (!m) {
        tu_golden_free(g);
        return;
    }
    const qkv_gpt_config *cfg = qkv_gpt_get_config(m);
    const int64_t V = cfg->vocab_size, P = cfg->n_positions;
    printf("%s: V %lld P %lld C %lld L %d H %d\n", name, (long long)V, (long long)P, (long long)cfg->n_embd,
           cfg->n_layer, cfg->n_head);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_ctx_set_grad(ctx, 0);
    qkv_gpt_cache *cache = qkv_gpt_cache_new(m, P);
    float *buf = malloc(sizeof(float) * (size_t)(P * V));

    compare_with_torch(name, "Hugging Face layout", m, g, ctx, cache, buf);

    /* the inference layout: the same numbers, HF saving refused, and back again bit for bit */
    qkv_params *pm = qkv_gpt_params(m);
    const size_t nbytes = sizeof(float) * (size_t)qkv_params_numel(pm);
    float *snap = malloc(nbytes);
    memcpy(snap, qkv_params_data(pm), nbytes);
    TU_CHECK(qkv_gpt_set_inference_layout(m, 1) == QKV_OK && qkv_gpt_inference_layout(m), "inference layout on: %s",
             qkv_last_error());
    compare_with_torch(name, "inference layout (projections [out, in])", m, g, ctx, cache, buf);
    TU_CHECK(qkv_hf_gpt2_save(m, "/tmp/qkv_never_written") == QKV_ERR_STATE &&
                 strstr(qkv_last_error(), "inference layout") && access("/tmp/qkv_never_written", F_OK) != 0,
             "save in the inference layout: %s", qkv_last_error());
    TU_CHECK(qkv_gpt_set_inference_layout(m, 0) == QKV_OK && !qkv_gpt_inference_layout(m), "inference layout off");
    int back = memcmp(snap, qkv_params_data(pm), nbytes) == 0;
    for (int i = 0; i < qkv_params_count(pm) && back; i++) {
        qkv_tensor *t = qkv_params_get(pm, i);
        if (strstr(t->name, "c_attn.weight")) back = t->shape[0] == cfg->n_embd && t->shape[1] == 3 * cfg->n_embd;
    }
    TU_CHECK(back, "%s: weights or shapes not restored after the inference layout", name);
    printf("%-4s %s inference layout: save refused, switched back bit for bit\n", back ? "ok" : "FAIL", name);
    free(snap);

    /* save + reload: bit-identical parameters */
    char tmpl[] = "/tmp/qkv_test_gpt2_XXXXXX";
    char *tdir = mkdtemp(tmpl);
    char sdir[1100];
    snprintf(sdir, sizeof sdir, "%s/model", tdir ? tdir : "/tmp");
    qkv_status s = tdir ? qkv_hf_gpt2_save(m, sdir) : QKV_ERR_IO;
    TU_CHECK(s == QKV_OK, "save %s: %s", sdir, qkv_last_error());
    qkv_gpt *m2 = s == QKV_OK ? qkv_hf_gpt2_load(sdir) : NULL;
    TU_CHECK(m2 != NULL, "reload %s: %s", sdir, qkv_last_error());
    if (m2) {
        qkv_params *p1 = qkv_gpt_params(m), *p2 = qkv_gpt_params(m2);
        int n = qkv_params_count(p1), bad = n != qkv_params_count(p2);
        for (int i = 0; i < n && !bad; i++) {
            qkv_tensor *a = qkv_params_get(p1, i), *b = qkv_params_get(p2, i);
            bad = strcmp(a->name, b->name) || a->ndim != b->ndim || memcmp(a->shape, b->shape, sizeof a->shape) ||
                  memcmp(a->data, b->data, sizeof(float) * (size_t)qkv_tensor_numel(a));
            if (bad) printf("  parameter %d (%s) differs after save/reload\n", i, a->name);
        }
        const qkv_gpt_config *c2 = qkv_gpt_get_config(m2);
        bad = bad || c2->vocab_size != V || c2->n_positions != P || c2->n_embd != cfg->n_embd ||
              c2->n_layer != cfg->n_layer || c2->n_head != cfg->n_head ||
              c2->layer_norm_epsilon != cfg->layer_norm_epsilon || c2->bos_token_id != cfg->bos_token_id ||
              c2->eos_token_id != cfg->eos_token_id || c2->attn_pdrop != cfg->attn_pdrop;
        TU_CHECK(!bad, "%s: save/reload changed the config or a parameter", name);
        printf("%-4s %s save + reload: %d tensors and config bit-identical\n", bad ? "FAIL" : "ok", name, n);
    }
    qkv_gpt_free(m2);
    if (tdir) {
        rm_model_dir(sdir);
        rmdir(tdir);
    }

    free(buf);
    qkv_gpt_cache_free(cache);
    qkv_ctx_free(ctx);
    qkv_gpt_free(m);
    tu_golden_free(g);
}

int main(void) {
    test_model("gpt2_a");
    test_model("gpt2_b");
    test_model("gpt2_c");
    return tu_finish("test_torch_gpt2");
}

/* generate.c — autoregressive generation with a GPT model's key/value cache: ids in, new ids out.
 *
 * One prefill runs the whole prompt through qkv_gpt_step (filling the cache), then each new id is
 * fed back as a single-token decode step, so the prompt is never run twice and a step costs one
 * token's work plus attention over the cache. The next id comes from a qkv_sampler (sample.c).
 * Not here: tokenizers (the caller encodes and decodes), batches, beam search.
 *
 * Convention a reader needs: everything (context, cache, sampler, one row of logits) is allocated
 * before the first step and freed at the end; the loop itself allocates nothing. The cache is sized
 * to the positions that will actually be run: the last new id is returned but never fed back.
 */
#include <stdlib.h>
#include <time.h>

#include "core/core_int.h"
#include "qkv/infer.h"

qkv_generate_opts qkv_generate_default_opts(void) {
    qkv_generate_opts o = {0};
    o.max_new_tokens = 50;
    o.sample = qkv_sample_default_opts();
    o.seed = 0;
    o.eos_id = -1;
    return o;
}

const char *qkv_stop_reason_str(qkv_stop_reason r) {
    switch (r) {
    case QKV_STOP_LENGTH: return "length";
    case QKV_STOP_EOS: return "eos";
    case QKV_STOP_CALLBACK: return "callback";
    case QKV_STOP_CONTEXT: return "context";
    }
    return "unknown";
}

static double now_seconds(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int64_t qkv_generate(qkv_gpt *m, const int32_t *prompt, int64_t n_prompt, const qkv_generate_opts *o, int32_t *out,
                     int64_t cap, qkv_generate_stats *stats) {
    qkv_generate_opts d = qkv_generate_default_opts();
    if (!o) o = &d;
    if (!m) return qkv__set_error(QKV_ERR_ARG, "generate: model is NULL"), -1;
    const qkv_gpt_config *cfg = qkv_gpt_get_config(m);
    const int64_t V = cfg->vocab_size, P = cfg->n_positions;
    if (n_prompt < 1 || !prompt)
        return qkv__set_error(QKV_ERR_ARG, "generate: empty prompt (GPT-2 has no start token of its own: begin with "
                                           "<|endoftext|>, id %d, as Hugging Face examples do)",
                              (int)cfg->eos_token_id),
               -1;
    if (n_prompt > P)
        return qkv__set_error(QKV_ERR_RANGE, "generate: prompt has %lld tokens, more than the model's context of %lld "
                                             "(n_positions)",
                              (long long)n_prompt, (long long)P),
               -1;
    for (int64_t i = 0; i < n_prompt; i++)
        if (prompt[i] < 0 || prompt[i] >= V)
            return qkv__set_error(QKV_ERR_RANGE, "generate: prompt id %d at position %lld is outside the vocabulary "
                                                 "0..%lld",
                                  (int)prompt[i], (long long)i, (long long)(V - 1)),
                   -1;
    if (o->max_new_tokens < 0)
        return qkv__set_error(QKV_ERR_RANGE, "generate: max_new_tokens %lld is negative", (long long)o->max_new_tokens),
               -1;
    if (o->eos_id < -1 || o->eos_id >= V)
        return qkv__set_error(QKV_ERR_RANGE, "generate: eos_id %d is outside the vocabulary 0..%lld (or -1 for none)",
                              (int)o->eos_id, (long long)(V - 1)),
               -1;
    if (o->n_vocab < 0 || o->n_vocab > V)
        return qkv__set_error(QKV_ERR_RANGE, "generate: n_vocab %lld is outside 0..%lld (the model's vocab_size)",
                              (long long)o->n_vocab, (long long)V),
               -1;
    const int64_t n_vocab = o->n_vocab ? o->n_vocab : V; /* the sampler sees logits[0 .. n_vocab) */
    if (cap < o->max_new_tokens || (!out && o->max_new_tokens > 0))
        return qkv__set_error(QKV_ERR_ARG, "generate: output buffer of %lld ids is smaller than max_new_tokens %lld",
                              (long long)(out ? cap : 0), (long long)o->max_new_tokens),
               -1;
    if (qkv_sample_opts_check(&o->sample) != QKV_OK) return -1;

    qkv_generate_stats st = {.n_prompt = n_prompt, .stop = QKV_STOP_LENGTH};
    /* New ids that fit: the sequence (prompt + new) may not exceed the context. */
    const int64_t room = P - n_prompt, limit = o->max_new_tokens < room ? o->max_new_tokens : room;
    if (limit == 0) {
        if (o->max_new_tokens > 0) st.stop = QKV_STOP_CONTEXT;
        if (stats) *stats = st;
        return 0;
    }

    /* Positions run through the model: the prompt and every new id but the last. */
    const int64_t run_len = n_prompt + limit - 1;
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_gpt_cache *cache = ctx ? qkv_gpt_cache_new(m, run_len) : NULL;
    qkv_sampler *smp = cache ? qkv_sampler_new(n_vocab, &o->sample, o->seed) : NULL;
    float *logits = smp ? malloc((size_t)V * sizeof *logits) : NULL;
    int64_t n = -1;
    if (!logits) {
        if (smp) qkv__set_error(QKV_ERR_NOMEM, "generate: out of memory for %lld logits", (long long)V);
        goto done; /* the failing constructor set qkv_last_error */
    }

    double t0 = now_seconds();
    if (qkv_gpt_step(ctx, m, cache, prompt, n_prompt, logits, 0) != QKV_OK) {
        qkv__set_error(qkv_ctx_status(ctx), "generate: prefill: %s", qkv_ctx_error(ctx));
        goto done;
    }
    st.n_steps = 1;
    double t1 = 0;
    for (n = 0; n < limit;) {
        int32_t id = qkv_sampler_next(smp, logits);
        if (id < 0) { /* non-finite logits */
            n = -1;
            goto done;
        }
        out[n++] = id;
        if (n == 1) st.prefill_seconds = (t1 = now_seconds()) - t0;
        int stop_cb = o->on_token ? o->on_token(id, o->user) : 0;
        if (id == o->eos_id) {
            st.stop = QKV_STOP_EOS;
            break;
        }
        if (stop_cb) {
            st.stop = QKV_STOP_CALLBACK;
            break;
        }
        if (n == limit) {
            st.stop = limit < o->max_new_tokens ? QKV_STOP_CONTEXT : QKV_STOP_LENGTH;
            break;
        }
        if (qkv_gpt_step(ctx, m, cache, &id, 1, logits, 0) != QKV_OK) {
            qkv__set_error(qkv_ctx_status(ctx), "generate: decode step %lld: %s", (long long)n, qkv_ctx_error(ctx));
            n = -1;
            goto done;
        }
        st.n_steps++;
    }
    st.decode_seconds = now_seconds() - t1;
    st.n_new = n;
    st.arena_peak = qkv_ctx_arena_peak(ctx);
    if (stats) *stats = st;
done:
    free(logits);
    qkv_sampler_free(smp);
    qkv_gpt_cache_free(cache);
    qkv_ctx_free(ctx);
    return n;
}

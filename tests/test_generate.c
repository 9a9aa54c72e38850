/* test_generate.c — qkv_generate (src/infer/generate.c) on a small random GPT-2.
 *
 * The reference re-runs the whole sequence through qkv_gpt_forward (no cache, the training path) for
 * every new token and picks the next id from the last row — greedy with qkv_argmax, sampled with a
 * sampler of the same seed — so the prefill + one-token-decode loop with the key/value cache must
 * produce exactly the ids of this slow path. Also: seeds, stop at eos, the streaming callback and its
 * stop, the context rule (prompt longer than n_positions fails, prompt + new stops at n_positions),
 * step counts (one prefill, one decode step per fed-back id), and bad arguments.
 */
#include "qkv/gpt.h"
#include "qkv/infer.h"
#include "testutil.h"

enum { V = 97, P = 40 };

static qkv_gpt *tiny_model(void) {
    qkv_gpt_config cfg = qkv_gpt_config_gpt2();
    cfg.vocab_size = V, cfg.n_positions = P, cfg.n_embd = 32, cfg.n_layer = 2, cfg.n_head = 4;
    cfg.initializer_range = 0.3f; /* larger than GPT-2's 0.02: decisive logits, no near-ties in argmax */
    qkv_gpt *m = qkv_gpt_new(&cfg, 77);
    if (!m) {
        printf("FAIL: qkv_gpt_new: %s\n", qkv_last_error());
        exit(1);
    }
    return m;
}

/* Slow reference: full forward over prompt + ids so far, for each new id. Returns the count. */
static int64_t reference_n(qkv_gpt *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                           const qkv_sample_opts *so, uint64_t seed, int32_t *out, int64_t n_vocab) {
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_ctx_set_grad(ctx, 0);
    qkv_sampler *s = qkv_sampler_new(n_vocab, so, seed); /* sees logits[0 .. n_vocab) of each row */
    int32_t seq[P];
    memcpy(seq, prompt, (size_t)n_prompt * sizeof *seq);
    int64_t len = n_prompt, n = 0;
    for (; n < n_new && len < P; n++) { /* the new id goes at position len */
        qkv_ctx_reset(ctx);
        qkv_tensor *lg = qkv_gpt_forward(ctx, m, seq, 1, len, NULL, NULL);
        if (!lg) {
            printf("FAIL: reference forward: %s\n", qkv_ctx_error(ctx));
            exit(1);
        }
        int32_t id = qkv_sampler_next(s, lg->data + (len - 1) * V);
        out[n] = id;
        seq[len++] = id;
    }
    qkv_sampler_free(s);
    qkv_ctx_free(ctx);
    return n;
}

static int64_t reference(qkv_gpt *m, const int32_t *prompt, int64_t n_prompt, int64_t n_new,
                         const qkv_sample_opts *so, uint64_t seed, int32_t *out) {
    return reference_n(m, prompt, n_prompt, n_new, so, seed, out, V);
}

typedef struct {
    int32_t seen[64];
    int n, stop_after;
} cb_state;

static int on_token(int32_t id, void *user) {
    cb_state *c = user;
    c->seen[c->n++] = id;
    return c->stop_after && c->n >= c->stop_after;
}

/* "ok  " when no check failed since the last call, else "FAIL": the summary lines never say ok wrongly. */
static const char *section_ok(void) {
    static int seen;
    int bad = tu_failures > seen;
    seen = tu_failures;
    return bad ? "FAIL" : "ok  ";
}

static int same_ids(const int32_t *a, const int32_t *b, int64_t n) {
    for (int64_t i = 0; i < n; i++)
        if (a[i] != b[i]) return 0;
    return 1;
}

static void print_ids(const char *what, const int32_t *ids, int64_t n) {
    printf("     %s:", what);
    for (int64_t i = 0; i < n; i++) printf(" %d", ids[i]);
    printf("\n");
}

int main(void) {
    qkv_gpt *m = tiny_model();
    const int32_t prompt[5] = {3, 14, 15, 92, 65};
    int32_t out[64], ref[64];
    qkv_generate_stats st;

    /* greedy == full-recompute argmax */
    qkv_generate_opts o = qkv_generate_default_opts();
    o.max_new_tokens = 25, o.sample.greedy = 1;
    int64_t n = qkv_generate(m, prompt, 5, &o, out, 64, &st);
    qkv_sample_opts greedy = {.greedy = 1, .temperature = 1, .top_k = 0, .top_p = 1};
    int64_t nr = reference(m, prompt, 5, 25, &greedy, 0, ref);
    TU_CHECK(n == 25 && nr == 25 && same_ids(out, ref, 25), "greedy: KV-cache ids must equal the no-cache reference");
    TU_CHECK(st.n_prompt == 5 && st.n_new == 25 && st.n_steps == 25 && st.stop == QKV_STOP_LENGTH,
             "greedy stats: prompt 5, new 25, 25 model steps (1 prefill + 24 decode), stop length "
             "(got %lld %lld %lld %s)",
             (long long)st.n_prompt, (long long)st.n_new, (long long)st.n_steps, qkv_stop_reason_str(st.stop));
    print_ids("greedy", out, n);
    printf("%s greedy 25 tokens == no-cache reference; 1 prefill + 24 decode steps; prefill %.2f ms, decode %.2f ms\n",
           section_ok(), 1e3 * st.prefill_seconds, 1e3 * st.decode_seconds);
    int32_t greedy_ids[25];
    memcpy(greedy_ids, out, sizeof greedy_ids);

    /* sampling == reference sampler on no-cache logits, same seed */
    o.sample = qkv_sample_default_opts();
    o.sample.temperature = 0.9f, o.sample.top_k = 20, o.sample.top_p = 0.9f, o.seed = 7;
    n = qkv_generate(m, prompt, 5, &o, out, 64, &st);
    nr = reference(m, prompt, 5, 25, &o.sample, 7, ref);
    TU_CHECK(n == 25 && same_ids(out, ref, 25), "sampled (T 0.9, k 20, p 0.9, seed 7) must equal the reference");
    print_ids("seed 7", out, n);
    int32_t again[64], other[64];
    TU_CHECK(qkv_generate(m, prompt, 5, &o, again, 64, NULL) == 25 && same_ids(out, again, 25),
             "seed 7 twice must give the same ids");
    o.seed = 8;
    TU_CHECK(qkv_generate(m, prompt, 5, &o, other, 64, NULL) == 25 && !same_ids(out, other, 25),
             "seeds 7 and 8 must differ");
    printf("%s sampled 25 tokens == reference with the same seed; repeatable; another seed differs\n", section_ok());

    /* n_vocab: only ids below it are chosen (a padded model vocabulary) */
    o.n_vocab = 10, o.seed = 7;
    n = qkv_generate(m, prompt, 5, &o, out, 64, &st);
    nr = reference_n(m, prompt, 5, 25, &o.sample, 7, ref, 10);
    int below = n == 25;
    for (int64_t i = 0; i < n; i++) below &= out[i] < 10;
    TU_CHECK(below && same_ids(out, ref, 25), "n_vocab 10: every id < 10 and equal to the reference");
    o.n_vocab = V + 1;
    TU_CHECK(qkv_generate(m, prompt, 5, &o, out, 64, NULL) == -1 && strstr(qkv_last_error(), "n_vocab"),
             "n_vocab > V must fail");
    printf("%s n_vocab 10: 25 sampled ids all < 10, == reference; n_vocab > V fails\n", section_ok());

    /* eos: stop right after the first occurrence, keep it */
    o = qkv_generate_default_opts();
    o.max_new_tokens = 25, o.sample.greedy = 1, o.eos_id = greedy_ids[6];
    int64_t first = 0;
    while (greedy_ids[first] != o.eos_id) first++;
    n = qkv_generate(m, prompt, 5, &o, out, 64, &st);
    TU_CHECK(n == first + 1 && out[n - 1] == o.eos_id && st.stop == QKV_STOP_EOS && same_ids(out, greedy_ids, n),
             "eos %d: must stop after %lld ids with the eos last (got %lld, %s)", o.eos_id, (long long)first + 1,
             (long long)n, qkv_stop_reason_str(st.stop));

    /* callback sees every id in order; nonzero stops */
    cb_state cb = {.stop_after = 0};
    o = qkv_generate_default_opts();
    o.max_new_tokens = 25, o.sample.greedy = 1, o.on_token = on_token, o.user = &cb;
    n = qkv_generate(m, prompt, 5, &o, out, 64, &st);
    TU_CHECK(n == 25 && cb.n == 25 && same_ids(cb.seen, out, 25), "callback must see all 25 ids in order");
    cb = (cb_state){.stop_after = 4};
    n = qkv_generate(m, prompt, 5, &o, out, 64, &st);
    TU_CHECK(n == 4 && cb.n == 4 && st.stop == QKV_STOP_CALLBACK && st.n_steps == 4,
             "callback returning 1 at the 4th id must stop there (n %lld, steps %lld)", (long long)n,
             (long long)st.n_steps);
    printf("%s eos stop after %lld ids (eos kept); callback streams every id and stops at 4\n", section_ok(),
           (long long)first + 1);

    /* context: prompt 30 + 25 new > P = 40 -> 10 new, the last at position 39, stop "context" */
    int32_t long_prompt[P + 1];
    for (int i = 0; i <= P; i++) long_prompt[i] = (i * 37 + 11) % V;
    o = qkv_generate_default_opts();
    o.max_new_tokens = 25, o.sample.greedy = 1;
    n = qkv_generate(m, long_prompt, 30, &o, out, 64, &st);
    nr = reference(m, long_prompt, 30, 25, &greedy, 0, ref);
    TU_CHECK(n == 10 && nr == 10 && same_ids(out, ref, 10) && st.stop == QKV_STOP_CONTEXT && st.n_steps == 10,
             "prompt 30 + 25 new with context 40: 10 new ids, stop context (got %lld, %s)", (long long)n,
             qkv_stop_reason_str(st.stop));
    n = qkv_generate(m, long_prompt, P, &o, out, 64, &st);
    TU_CHECK(n == 0 && st.stop == QKV_STOP_CONTEXT, "a prompt of exactly P ids gives 0 new ids, stop context");
    n = qkv_generate(m, long_prompt, P + 1, &o, out, 64, &st);
    TU_CHECK(n == -1 && strstr(qkv_last_error(), "prompt has 41 tokens, more than the model's context of 40"),
             "a prompt of P+1 ids must fail naming the sizes (got '%s')", qkv_last_error());
    printf("%s context 40: 30+25 -> 10 new ids (== reference), stop context; 40 -> 0; 41 -> error\n", section_ok());

    /* zero new tokens; bad arguments */
    o.max_new_tokens = 0;
    TU_CHECK(qkv_generate(m, prompt, 5, &o, NULL, 0, &st) == 0 && st.stop == QKV_STOP_LENGTH, "max_new_tokens 0 -> 0");
    o.max_new_tokens = 5;
    TU_CHECK(qkv_generate(m, prompt, 0, &o, out, 64, NULL) == -1 && strstr(qkv_last_error(), "empty prompt"),
             "empty prompt must fail");
    int32_t bad_prompt[2] = {1, V};
    TU_CHECK(qkv_generate(m, bad_prompt, 2, &o, out, 64, NULL) == -1 && strstr(qkv_last_error(), "position 1"),
             "an id outside the vocabulary must fail naming its position");
    TU_CHECK(qkv_generate(m, prompt, 5, &o, out, 4, NULL) == -1, "cap < max_new_tokens must fail");
    o.max_new_tokens = -1;
    TU_CHECK(qkv_generate(m, prompt, 5, &o, out, 64, NULL) == -1, "negative max_new_tokens must fail");
    o.max_new_tokens = 5, o.eos_id = V;
    TU_CHECK(qkv_generate(m, prompt, 5, &o, out, 64, NULL) == -1, "eos_id outside the vocabulary must fail");
    o.eos_id = -1, o.sample.greedy = 0, o.sample.temperature = 0;
    TU_CHECK(qkv_generate(m, prompt, 5, &o, out, 64, NULL) == -1 && strstr(qkv_last_error(), "temperature"),
             "temperature 0 (not greedy) must fail naming temperature");
    TU_CHECK(qkv_generate(NULL, prompt, 5, NULL, out, 64, NULL) == -1, "NULL model must fail");
    printf("%s max_new_tokens 0; errors for an empty prompt, an out-of-vocabulary id, a short buffer, bad options\n",
           section_ok());

    qkv_gpt_free(m);
    return tu_finish("test_generate");
}

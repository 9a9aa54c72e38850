/* qkv/infer.h — next-token sampling and text generation with a GPT model's key/value cache.
 *
 * Sampling follows Hugging Face `generate(do_sample=True)`: the logits processors run in HF's order
 * temperature -> top-k -> top-p, then one id is drawn from the softmax of what is left. Greedy
 * decoding is the argmax (lowest id on ties, as torch.argmax). Generation is ids in, ids out: text
 * goes through a tokenizer (text.h) on either side, which is the caller's business.
 *
 * Not here: beam search, repetition penalties, batch generation (the cache holds one sequence).
 *
 * Convention a reader needs: a qkv_sampler owns all its scratch memory (allocated once for the
 * vocabulary size), so drawing a token never allocates; qkv_generate allocates its context, cache,
 * sampler and logits once at the start and nothing per token. Randomness comes from qkv_rng
 * (xoshiro256**): the same seed gives the same ids on every machine with the same logits.
 * Errors: -1 / NULL / a status, with a one-line message in qkv_last_error(). Nothing here prints.
 * Thread-safety: a sampler is used by one thread at a time; samplers are independent.
 *
 * Example (greedy, 20 new tokens, streamed):
 *     static int show(int32_t id, void *tok) { fputs(qkv_tokenizer_token(tok, id, NULL), stdout); return 0; }
 *     qkv_generate_opts o = qkv_generate_default_opts();
 *     o.max_new_tokens = 20, o.sample.greedy = 1, o.eos_id = 50256, o.on_token = show, o.user = tok;
 *     int32_t out[20];
 *     int64_t n = qkv_generate(model, prompt_ids, n_prompt, &o, out, 20, NULL);
 *     if (n < 0) fprintf(stderr, "%s\n", qkv_last_error());
 */
#ifndef QKV_INFER_H
#define QKV_INFER_H

#include <stddef.h>
#include <stdint.h>

#include "core.h"
#include "gpt.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---- sampling ---- */

/* How the next id is chosen from a row of V logits. */
typedef struct qkv_sample_opts {
    int greedy;        /* 1: argmax, lowest id on ties; the three fields below are then ignored */
    float temperature; /* > 0, finite: logits are divided by it (HF TemperatureLogitsWarper). 1 = off.
                        * Tiny values approach greedy; 0 is rejected (use greedy). */
    int64_t top_k;     /* >= 0. 0 or >= V = off. Keeps every id whose logit is >= the k-th largest
                        * logit, so ids tied with the k-th are all kept (HF TopKLogitsWarper). */
    float top_p;       /* in (0, 1]. 1 = off. Nucleus (HF TopPLogitsWarper): sort the ids by
                        * probability, descending (ties: lower id first), and keep the smallest
                        * prefix whose probability sum is >= top_p; always at least one id.
                        * Probabilities are those after temperature and top-k. */
} qkv_sample_opts;

/* Plain sampling from the softmax: greedy 0, temperature 1, top_k 0, top_p 1. */
qkv_sample_opts qkv_sample_default_opts(void);
/* QKV_OK, or QKV_ERR_RANGE with a message naming the field and its allowed range. */
qkv_status qkv_sample_opts_check(const qkv_sample_opts *o);

/* Argmax of n floats, lowest index on ties (torch.argmax). -1 when n < 1 or any value is NaN
 * (qkv_last_error names the index). -inf entries are allowed; all -inf gives index 0. */
int64_t qkv_argmax(const float *x, int64_t n);

typedef struct qkv_sampler qkv_sampler;

/* A sampler for vocabularies of V ids with options o (copied; NULL = defaults) and an RNG seeded with
 * seed. Allocates its scratch (about 32 bytes per id) here, once. NULL on bad options, V < 1 or out of
 * memory (qkv_last_error). Free with qkv_sampler_free (NULL is fine). */
qkv_sampler *qkv_sampler_new(int64_t V, const qkv_sample_opts *o, uint64_t seed);
void qkv_sampler_free(qkv_sampler *s);
/* Restarts the random stream: after qkv_sampler_seed(s, x) the draws equal a new sampler's with seed x. */
void qkv_sampler_seed(qkv_sampler *s, uint64_t seed);
/* Replaces the options (checked first; the sampler is unchanged on error). */
qkv_status qkv_sampler_set_opts(qkv_sampler *s, const qkv_sample_opts *o);

/* Draws the next id from logits (V floats): one uniform number from the RNG per call (none when
 * greedy). Logits may be -inf (a masked id, never drawn); NaN or +inf, or every logit -inf, is an
 * error (QKV_ERR_NONFINITE naming the index). Returns the id in [0, V) or -1 (qkv_last_error). */
int32_t qkv_sampler_next(qkv_sampler *s, const float *logits);
/* The distribution qkv_sampler_next draws from: probs[i] (V floats) = probability of id i after
 * temperature -> top-k -> top-p, renormalised over the ids kept, exactly 0 for the ids removed;
 * greedy gives 1 at the argmax. Computed in double precision. Draws nothing. Same errors. */
qkv_status qkv_sampler_probs(qkv_sampler *s, const float *logits, float *probs);

/* ---- generation ---- */

/* Why qkv_generate stopped. */
typedef enum {
    QKV_STOP_LENGTH,   /* max_new_tokens were generated */
    QKV_STOP_EOS,      /* the eos id was generated (it is the last id of the output) */
    QKV_STOP_CALLBACK, /* on_token returned nonzero */
    QKV_STOP_CONTEXT,  /* the sequence filled the model's context (n_positions ids) */
} qkv_stop_reason;

typedef struct qkv_generate_opts {
    int64_t max_new_tokens;  /* >= 0: at most this many new ids */
    qkv_sample_opts sample;  /* greedy or temperature / top-k / top-p */
    uint64_t seed;           /* seeds the sampler: same seed, same ids */
    int32_t eos_id;          /* stop once this id is generated (it is kept in the output and passed to
                              * on_token, as HF does); -1 = never stop early */
    int64_t n_vocab;         /* choose only ids < n_vocab (1..V); 0 = all V ids. For a model whose
                              * vocabulary is padded past its tokenizer's (e.g. 50304 for 50257) */
    /* Called with each new id, in order, right after it is chosen (streaming). Return nonzero to stop
     * after this id. NULL = no callback. */
    int (*on_token)(int32_t id, void *user);
    void *user;              /* passed to on_token */
} qkv_generate_opts;

/* max_new_tokens 50, sampling with qkv_sample_default_opts(), seed 0, eos_id -1, n_vocab 0, no callback. */
qkv_generate_opts qkv_generate_default_opts(void);

/* What a qkv_generate call did (wall-clock times from CLOCK_MONOTONIC). */
typedef struct qkv_generate_stats {
    int64_t n_prompt;        /* prompt ids run in the prefill */
    int64_t n_new;           /* new ids returned */
    int64_t n_steps;         /* qkv_gpt_step calls: 1 prefill + one per new id that had to be fed back */
    double prefill_seconds;  /* the prompt forward + choosing the first id */
    double decode_seconds;   /* every later step, each a one-token forward + choosing an id */
    qkv_stop_reason stop;
    size_t arena_peak;       /* peak bytes of the activation arena */
} qkv_generate_stats;

/* Continues prompt (n_prompt ids, each in [0, V)) with up to o->max_new_tokens new ids written to out
 * (cap >= max_new_tokens entries; NULL o = defaults). Runs the prompt through qkv_gpt_step once (the
 * prefill, filling the key/value cache), then one single-token decode step per new id: the prompt is
 * never run again. Returns the number of new ids (0 .. max_new_tokens), or -1 on error with
 * qkv_last_error() set; stats (optional) is filled on success.
 * Context rule: the prompt must fit the model's context (n_prompt <= n_positions; longer is
 * QKV_ERR_RANGE, "prompt has N tokens, more than the model's context of P"); generation then stops
 * when prompt + new ids reach n_positions (stop reason QKV_STOP_CONTEXT), so a prompt of P ids gives
 * no new ids. An empty prompt is QKV_ERR_ARG (GPT-2 has no start token of its own: HF examples
 * start from <|endoftext|>, so pass that id). Errors also for bad options, an id outside the
 * vocabulary, and a model step that fails (its message). */
int64_t qkv_generate(qkv_gpt *m, const int32_t *prompt, int64_t n_prompt, const qkv_generate_opts *o, int32_t *out,
                     int64_t cap, qkv_generate_stats *stats);

/* "length", "eos", "callback", "context". */
const char *qkv_stop_reason_str(qkv_stop_reason r);

#ifdef __cplusplus
}
#endif
#endif

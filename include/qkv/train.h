/* qkv/train.h — training and fine-tuning a GPT language model on text: the token data pipeline, the
 * training loop as a library, checkpoints with exact resume, and the loss-curve plot.
 *
 * Three levels, each usable on its own:
 *   - data:     text files or folders -> one token stream (documents joined by the tokenizer's EOS),
 *               cached in a small binary file (tokens.bin) that is rebuilt when stale; deterministic
 *               random (B,T) batches whose offsets are a pure function of (seed, step, row), so a
 *               resumed run draws the very same batches.
 *   - trainer:  one object holding a model, its AdamW state, a dataset and a schedule; step, evaluate,
 *               save and load checkpoints. A caller that has its own model and data embeds this.
 *   - run:      qkv_train_run does everything the `qkv train` command does (data, tokenizer, model from
 *               scratch or from a Hugging Face GPT-2 directory, loop, logs, checkpoints, resume, plot).
 *
 * Not here: the model (gpt.h), the optimizer arithmetic (optim.h), checkpoint tensor files (io.h, hf.h),
 * any printing — progress reaches the caller through an event callback, messages through
 * qkv_last_error().
 *
 * Files a run writes in its output directory OUT:
 *   OUT/tokens.bin                 the token cache (header: magic, version, id width, count, vocab,
 *                                  tokenizer and source fingerprints, data checksum)
 *   OUT/log.jsonl                  one JSON object a line: every step
 *                                  {"step","loss","grad_norm","learning_rate","epoch","tokens_per_sec"},
 *                                  every evaluation {"step","eval_loss","eval_perplexity"}
 *   OUT/loss.svg                   the loss curve (train loss per step, eval loss points)
 *   OUT/checkpoint-STEP/           config.json, model.safetensors, vocab.json (+ merges.txt),
 *                                  optimizer.safetensors (AdamW exp_avg / exp_avg_sq per parameter),
 *                                  trainer_state.json (step, seed, schedule, options, log history)
 *   OUT/config.json, model.safetensors, vocab.json (+ merges.txt)
 *                                  the final model, so `qkv generate --model OUT` works
 * A checkpoint directory is written under a temporary name and renamed into place, so a checkpoint that
 * is visible is complete. Every single file is written to a temporary name and renamed.
 *
 * Exact resume: batches and dropout masks are functions of (seed, step), parameters and AdamW moments
 * are saved as float32 bits, and the schedule is a function of the step, so a run interrupted after
 * step k and resumed produces bit-for-bit the losses and parameters of the uninterrupted run (on the
 * same machine with the same thread count: some reductions split their work by thread).
 *
 * Ownership: every _new returns a handle freed by its _free (NULL is fine); on failure NULL or a status,
 * with a one-line message in qkv_last_error() naming the file, flag or value at fault.
 * Thread-safety: one trainer per thread; the kernels inside use OpenMP.
 */
#ifndef QKV_TRAIN_H
#define QKV_TRAIN_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>

#include "qkv/core.h"
#include "qkv/gpt.h"
#include "qkv/optim.h"
#include "qkv/text.h"

#ifdef __cplusplus
extern "C" {
#endif

/* A one-line remark from the library for the user (a skipped binary file, a rebuilt cache). */
typedef void (*qkv_note_fn)(void *user, const char *message);
struct qkv_train_event;
/* Progress of a run (see qkv_train_event). */
typedef void (*qkv_train_event_fn)(void *user, const struct qkv_train_event *e);

/* ======================================= data ======================================= */

typedef struct qkv_data_opts {
    const char *const *paths; /* n_paths text files or folders (folders are walked recursively) */
    int n_paths;
    /* Folders only: comma-separated file-name endings to keep (".c,.h"; a missing dot is added), NULL or
     * "" for every file. Names starting with '.' (.git, .cache) are skipped, symbolic links to folders
     * are not followed. Files named directly in paths are always read. */
    const char *exts;
    double val_fraction;    /* [0, 1): the last fraction of the tokens is the validation split */
    const char *cache_path; /* token cache to reuse when valid and (re)write otherwise; NULL: none */
    const char *skip_dir;   /* a folder never walked into (a run's own output folder); may be NULL */
    qkv_note_fn note;       /* may be NULL */
    void *note_user;
} qkv_data_opts;

/* No paths, every file, val_fraction 0.1, no cache, no notes. */
qkv_data_opts qkv_data_default_opts(void);

/* Every document of the sources, in order (paths in the order given, each folder's files sorted by
 * path), joined by sep (NUL-terminated, may be NULL or "" for nothing), in a malloc'd NUL-terminated
 * buffer the caller frees; *len gets its byte count. This is the text a character vocabulary or a BPE
 * is built from. Rules shared with qkv_dataset_build:
 *   - malformed UTF-8 is an error naming the file and the byte offset ("a.txt: invalid UTF-8 at byte 17");
 *   - in a folder, a binary-looking file (a NUL byte in its first 8000 bytes) is skipped with a note;
 *     an empty file adds nothing;
 *   - no text at all is an error naming the paths ("empty.txt: empty file", "src: no files ending in .c").
 * NULL on error (qkv_last_error). */
char *qkv_data_read_text(const qkv_data_opts *o, const char *sep, size_t *len);

/* A token stream split into train (the first part) and validation (the last val_fraction) tokens. */
typedef struct qkv_dataset qkv_dataset;

/* Tokenises the sources with tok (documents joined by tok's EOS id when it has one, concatenated
 * otherwise; the text "<|endoftext|>" inside a document is ordinary text). With o->cache_path, a valid
 * cache whose fingerprints match (tokenizer: kind, vocabulary and the encoding of a probe text; sources:
 * the file list with sizes and modification times and the extension filter) is read instead, and a
 * missing, stale, truncated or corrupt one is rebuilt (with a note saying why) and written atomically.
 * NULL on error (qkv_last_error). */
qkv_dataset *qkv_dataset_build(const qkv_data_opts *o, qkv_tokenizer *tok);
/* A dataset over a copy of n ids (each in [0, vocab)), split by val_fraction. */
qkv_dataset *qkv_dataset_from_tokens(const int32_t *ids, int64_t n, int64_t vocab, double val_fraction);
void qkv_dataset_free(qkv_dataset *d);

int64_t qkv_dataset_len(const qkv_dataset *d);       /* all tokens */
int64_t qkv_dataset_train_len(const qkv_dataset *d); /* tokens [0, train_len) */
int64_t qkv_dataset_val_len(const qkv_dataset *d);   /* tokens [train_len, len) */
const int32_t *qkv_dataset_tokens(const qkv_dataset *d);
int64_t qkv_dataset_vocab(const qkv_dataset *d);
int qkv_dataset_n_docs(const qkv_dataset *d);      /* documents read (0 when it came from the cache) */
int qkv_dataset_from_cache(const qkv_dataset *d);  /* 1 when the tokens came from a valid cache */
uint64_t qkv_dataset_source_fingerprint(const qkv_dataset *d);

/* A training micro-batch: row b of micro-step micro of optimizer step step is the window of T+1 train
 * tokens at offset hash(seed, step, micro * B + b) mod (train_len - T); ids (B,T) get its first T
 * tokens, targets (B,T) its last T (ids shifted by one). The same arguments always give the same batch;
 * no window reaches into the validation split. QKV_ERR_RANGE when train_len < T + 1 (the message says
 * how many tokens there are and how many a block needs), QKV_ERR_ARG on bad sizes. */
qkv_status qkv_dataset_batch(const qkv_dataset *d, uint64_t seed, int64_t step, int micro, int64_t B, int64_t T,
                             int32_t *ids, int32_t *targets);
/* Validation batch k of n_batches: the n_batches * B windows of T+1 tokens are spread evenly over the
 * validation split (first at its start, last at its end), so an evaluation always sees the same text.
 * QKV_ERR_RANGE when val_len < T + 1. */
qkv_status qkv_dataset_eval_batch(const qkv_dataset *d, int64_t k, int64_t n_batches, int64_t B, int64_t T,
                                  int32_t *ids, int32_t *targets);

/* 64-bit fingerprint of a tokenizer: kind, vocab size, EOS id, every token's bytes, and the ids of a
 * fixed probe text (which depend on the merge order). Equal tokenizers give equal fingerprints. */
uint64_t qkv_tokenizer_fingerprint(qkv_tokenizer *tok);

/* The token cache file on its own. Layout (little-endian): "QKVTOKEN", u32 version 1, u32 bytes per id
 * (2 when vocab <= 65535, else 4), u64 count, u64 vocab, u64 tokenizer fingerprint, u64 source
 * fingerprint, u64 FNV-1a checksum of the id bytes, then count ids. Written atomically. */
qkv_status qkv_tokens_write(const char *path, const int32_t *ids, int64_t n, int64_t vocab, uint64_t tok_fp,
                            uint64_t src_fp);
/* Reads and validates a cache written for (vocab, tok_fp, src_fp); returns the ids (malloc'd, caller
 * frees) and their count in *n. NULL with: QKV_ERR_IO when it cannot be opened, QKV_ERR_STATE when it is
 * valid but for another tokenizer/vocab/source (stale), QKV_ERR_FORMAT when it is truncated or corrupt
 * (bad magic, version, width, size, checksum, an id >= vocab). */
int32_t *qkv_tokens_read(const char *path, int64_t vocab, uint64_t tok_fp, uint64_t src_fp, int64_t *n);

/* ===================================== trainer ===================================== */

/* Every option of a run. The command's flags map one to one (--lr -> lr, ...). */
typedef struct qkv_train_opts {
    /* data */
    const char *const *data; /* n_data files or folders */
    int n_data;
    const char *exts;        /* folder filter, see qkv_data_opts (NULL: every file) */
    double val_fraction;     /* 0.1 */
    /* tokenizer: "bytes", "chars" (built from the data), "bpe:N" (a byte-level BPE of vocab N trained on
     * the data) or a directory with vocab.json (+ merges.txt). Ignored (must be NULL) with init. */
    const char *tokenizer;   /* NULL: "bytes" */
    const char *init;        /* Hugging Face GPT-2 directory to fine-tune (tokenizer included), or NULL */
    /* model from scratch (with init only block_size and dropout apply) */
    int n_layer, n_head;     /* 4, 4 */
    int64_t n_embd;          /* 128 */
    int64_t block_size;      /* 128: context T of the batches (<= the init model's n_positions) */
    float dropout;           /* < 0: keep the init model's config, or 0 from scratch (default -1) */
    /* optimisation */
    float lr;                /* peak learning rate; <= 0: 1e-3 from scratch, 5e-5 with init */
    float weight_decay;      /* 0 (Hugging Face default); never on biases and LayerNorm weights */
    float beta1, beta2, eps; /* 0.9, 0.999, 1e-8 */
    float max_grad_norm;     /* 1.0; 0 = no clipping */
    qkv_sched_kind lr_schedule; /* linear */
    int64_t warmup_steps;    /* 0 */
    int64_t steps;           /* optimizer steps (1000); used when epochs <= 0 */
    double epochs;           /* > 0: steps = ceil(epochs * train tokens / tokens per step) */
    int64_t batch_size;      /* 8: sequences per micro-batch */
    int grad_accum;          /* 1: micro-batches per optimizer step */
    uint64_t seed;           /* 42: initialisation, batches, dropout */
    /* evaluation, logging, checkpoints */
    int64_t eval_every;      /* 100; 0 = only at the end */
    int64_t eval_batches;    /* 10 */
    int64_t save_every;      /* 500; 0 = only at the end */
    int save_total_limit;    /* 0 = keep every checkpoint; N = keep the newest N */
    double time_limit;       /* seconds; > 0: stop (and save) after the step that passes it */
    int64_t stop_after;      /* > 0: stop (and save) after this step as if interrupted; the schedule
                                still spans steps (for splitting a run into sessions; 0 = off) */
    /* When not NULL, checked after every step: non-zero stops the run there as stop_after does (a
     * checkpoint is saved). The command points it at a flag its SIGINT/SIGTERM handler sets. */
    const volatile sig_atomic_t *stop_flag;
    const char *out;         /* output directory (created) */
    /* NULL: a fresh run (OUT must not hold checkpoints unless overwrite); "" : the newest checkpoint
     * in out; otherwise a checkpoint directory. */
    const char *resume;
    int overwrite;           /* fresh run in an OUT that holds a run: remove its checkpoints and logs */
    /* progress for the caller (the command draws its progress line from these); may be NULL */
    qkv_train_event_fn on_event;
    qkv_note_fn note;        /* one-line remarks (skipped files, rebuilt cache); may be NULL */
    void *user;              /* passed to on_event and note */
} qkv_train_opts;

qkv_train_opts qkv_train_default_opts(void);

typedef enum {
    QKV_TRAIN_EV_START, /* before the first step: total_steps, step (the step resumed from) */
    QKV_TRAIN_EV_STEP,  /* after each optimizer step */
    QKV_TRAIN_EV_EVAL,  /* after each evaluation */
    QKV_TRAIN_EV_SAVE,  /* after each checkpoint (path) */
    QKV_TRAIN_EV_END,   /* after the last save */
} qkv_train_event_kind;

typedef struct qkv_train_event {
    qkv_train_event_kind kind;
    int64_t step, total_steps; /* step: optimizer steps done */
    float loss, grad_norm, lr; /* STEP: mean micro-batch loss, norm before clipping, lr used */
    double epoch;              /* tokens seen / train tokens */
    double tokens_per_sec;     /* STEP: this step */
    double elapsed, eta;       /* seconds since qkv_train_run was called; estimate of what is left */
    float eval_loss, eval_perplexity; /* EVAL */
    const char *path;          /* SAVE: the checkpoint directory */
} qkv_train_event;

typedef struct qkv_trainer qkv_trainer;

/* A trainer over model m (not owned; must outlive the trainer) and dataset d (not owned). Uses o's
 * optimisation, batch and evaluation options, o->steps as the schedule's length and o->lr as given
 * (no default by mode: it must be > 0); data, tokenizer, model and file options are ignored. Creates
 * its own ctx and the AdamW state and allocates every buffer a step needs, so steps allocate nothing
 * (the ctx arena grows during the first step only). Weight decay applies to
 * parameters not marked no_decay by the model (Hugging Face Trainer: everything except biases and
 * LayerNorm weights). NULL on bad options (naming the option) or out of memory. */
qkv_trainer *qkv_trainer_new(qkv_gpt *m, qkv_dataset *d, const qkv_train_opts *o);
void qkv_trainer_free(qkv_trainer *t);

/* Results of one optimizer step. */
typedef struct qkv_train_stats {
    int64_t step;     /* steps done after this one */
    float loss;       /* mean of the micro-batch losses */
    float grad_norm;  /* global norm before clipping */
    float lr;         /* learning rate of this update */
    double epoch;     /* tokens seen / train tokens */
} qkv_train_stats;

/* One optimizer step: grad_accum micro-batches (batch, forward, backward), clipping, AdamW with the
 * scheduled lr. The ctx arena is reset per micro-batch; nothing is allocated after the first step.
 * QKV_ERR_NONFINITE when the loss or the gradient norm is not finite (the parameters are unchanged). */
qkv_status qkv_trainer_step(qkv_trainer *t, qkv_train_stats *stats);
/* Mean loss over the eval_batches validation batches (inference mode, no dropout) and its exp. */
qkv_status qkv_trainer_evaluate(qkv_trainer *t, float *loss, float *perplexity);
int64_t qkv_trainer_steps_done(const qkv_trainer *t);

/* Writes the optimizer state (optimizer.safetensors: "<param>.exp_avg", "<param>.exp_avg_sq", metadata
 * step) into dir (which must exist). */
qkv_status qkv_trainer_save_optimizer(const qkv_trainer *t, const char *dir);
/* Restores the optimizer state from dir/optimizer.safetensors and sets the steps done to its step.
 * Every tensor must be present with the parameter's shape (QKV_ERR_FORMAT naming it otherwise). */
qkv_status qkv_trainer_load_optimizer(qkv_trainer *t, const char *dir);

/* ==================================== whole run ==================================== */

/* The `qkv train` command as a function: reads o->data, builds or loads the tokenizer and the model,
 * trains, evaluates, logs, saves checkpoints and the final model into o->out, and writes loss.svg. With
 * o->resume it continues from a checkpoint exactly (see the top of this file); options that change the
 * trajectory (seed, batch_size, grad_accum, block_size, lr, schedule, warmup, weight decay, betas, eps,
 * max_grad_norm, dropout, val_fraction, data, ext, tokenizer, init, model sizes) must equal the
 * checkpoint's (the message names the first that differs; qkv_train_state_opts gives them); steps,
 * evaluation, saving and the session options may change (a different steps changes the schedule).
 * A run stopped by stop_after, time_limit or stop_flag saves a checkpoint and the model in OUT and
 * returns QKV_OK. On an error before the first step a newly created OUT is removed again.
 * Returns QKV_OK or an error with qkv_last_error() naming the flag, file or step at fault. */
qkv_status qkv_train_run(const qkv_train_opts *o);

/* What a checkpoint's trainer_state.json holds: the options the run was started with (resolved: lr,
 * dropout and steps as used), the step reached and the log history. */
typedef struct qkv_train_state qkv_train_state;
/* Reads dir/trainer_state.json. NULL with QKV_ERR_IO / QKV_ERR_FORMAT naming the file and the field. */
qkv_train_state *qkv_train_state_load(const char *dir);
void qkv_train_state_free(qkv_train_state *s);
/* The run's options; strings point into s. Session options (out, resume, time_limit, stop_after,
 * overwrite, callbacks) are left at their defaults. */
const qkv_train_opts *qkv_train_state_opts(const qkv_train_state *s);
int64_t qkv_train_state_step(const qkv_train_state *s);
/* The newest checkpoint-STEP directory in out holding a trainer_state.json, malloc'd (caller frees);
 * NULL when there is none (qkv_last_error says so). */
char *qkv_train_latest_checkpoint(const char *out);

/* ======================================= plot ======================================= */

/* Writes an SVG line chart of the training loss (n_train points: steps[i], losses[i]) with the
 * evaluation losses as dots (n_eval points), axes with ticks and labels and a title, to path (atomically).
 * Non-finite losses are left out of the line. QKV_ERR_IO naming the path when writing fails. */
qkv_status qkv_plot_loss_svg(const char *path, const char *title, const int64_t *steps, const float *losses,
                             int64_t n_train, const int64_t *eval_steps, const float *eval_losses, int64_t n_eval);

#ifdef __cplusplus
}
#endif
#endif

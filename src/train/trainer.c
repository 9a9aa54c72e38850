/* trainer.c — the training loop as a library: optimizer steps with gradient accumulation, clipping and
 * a schedule; evaluation; checkpoints (Hugging Face layout plus optimizer and trainer state) with exact
 * resume; and qkv_train_run, which is the whole `qkv train` command minus flag parsing and printing.
 *
 * Not here: the model (src/models), tensor files (src/io), token data and batches (data.c), the SVG
 * plot (plot.c), anything printed (progress goes to the caller's event callback).
 *
 * The one convention a reader needs: everything random in a step is a function of (seed, step) — the
 * batch rows (qkv_dataset_batch) and the dropout masks (the ctx RNG is re-seeded from (seed, step,
 * micro) before each micro-batch) — and everything else that carries over between steps (parameters,
 * AdamW moments and step count) is saved bit for bit. Hence resume is exact: the state after loading
 * checkpoint k is the state the uninterrupted run had after step k.
 */
#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/core_int.h"
#include "core/json.h"
#include "qkv/hf.h"
#include "qkv/io.h"
#include "qkv/ops.h"
#include "qkv/train.h"
#include "train_int.h"

#define STATE_FILE "trainer_state.json"
#define OPTIM_FILE "optimizer.safetensors"
#define STATE_FORMAT "qkv-trainer-state"
#define STATE_VERSION 1

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Dropout seed of micro-batch micro of step step (distinct from the batch hash's stream). */
static uint64_t dropout_seed(uint64_t seed, int64_t step, int micro) {
    return mix64(mix64(mix64(seed ^ 0x64726f706f7574ull) + (uint64_t)step) + (uint64_t)micro);
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static void prefix_error(qkv_status s, const char *prefix) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", qkv_last_error());
    qkv__set_error(s, "%s: %s", prefix, msg);
}

static const char *sched_name(qkv_sched_kind k) {
    return k == QKV_SCHED_COSINE ? "cosine" : k == QKV_SCHED_CONSTANT ? "constant" : "linear";
}

qkv_train_opts qkv_train_default_opts(void) {
    qkv_train_opts o;
    memset(&o, 0, sizeof o);
    o.val_fraction = 0.1;
    o.tokenizer = NULL;
    o.n_layer = 4;
    o.n_head = 4;
    o.n_embd = 128;
    o.block_size = 128;
    o.dropout = -1.0f;
    o.lr = 0.0f;
    o.weight_decay = 0.0f;
    o.beta1 = 0.9f;
    o.beta2 = 0.999f;
    o.eps = 1e-8f;
    o.max_grad_norm = 1.0f;
    o.lr_schedule = QKV_SCHED_LINEAR;
    o.warmup_steps = 0;
    o.steps = 1000;
    o.epochs = 0;
    o.batch_size = 8;
    o.grad_accum = 1;
    o.seed = 42;
    o.eval_every = 100;
    o.eval_batches = 10;
    o.save_every = 500;
    return o;
}

/* ---- option checks shared by the trainer and the run (messages name the command's flags) ---- */

static qkv_status check_train_opts(const qkv_train_opts *o) {
    if (!o) return qkv__set_error(QKV_ERR_ARG, "train: NULL options");
    if (o->batch_size < 1 || o->batch_size > (1 << 20))
        return qkv__set_error(QKV_ERR_RANGE, "--batch-size: %lld must be in [1, 1048576]", (long long)o->batch_size);
    if (o->block_size < 1 || o->block_size > (1 << 24))
        return qkv__set_error(QKV_ERR_RANGE, "--block-size: %lld must be in [1, 16777216]", (long long)o->block_size);
    if (o->grad_accum < 1 || o->grad_accum > (1 << 20))
        return qkv__set_error(QKV_ERR_RANGE, "--grad-accum: %d must be in [1, 1048576]", o->grad_accum);
    if (o->batch_size * o->block_size > ((int64_t)1 << 31))
        return qkv__set_error(QKV_ERR_RANGE, "--batch-size x --block-size: %lld tokens per micro-batch is too many",
                              (long long)(o->batch_size * o->block_size));
    if (!(isfinite(o->lr) && o->lr >= 0.0f))
        return qkv__set_error(QKV_ERR_RANGE, "--lr: %g must be a finite number > 0", (double)o->lr);
    if (!(isfinite(o->weight_decay) && o->weight_decay >= 0.0f))
        return qkv__set_error(QKV_ERR_RANGE, "--weight-decay: %g must be finite and >= 0", (double)o->weight_decay);
    if (!(o->beta1 >= 0.0f && o->beta1 < 1.0f))
        return qkv__set_error(QKV_ERR_RANGE, "--beta1: %g must be in [0, 1)", (double)o->beta1);
    if (!(o->beta2 >= 0.0f && o->beta2 < 1.0f))
        return qkv__set_error(QKV_ERR_RANGE, "--beta2: %g must be in [0, 1)", (double)o->beta2);
    if (!(isfinite(o->eps) && o->eps > 0.0f))
        return qkv__set_error(QKV_ERR_RANGE, "--eps: %g must be finite and > 0", (double)o->eps);
    if (!(isfinite(o->max_grad_norm) && o->max_grad_norm >= 0.0f))
        return qkv__set_error(QKV_ERR_RANGE, "--max-grad-norm: %g must be finite and >= 0 (0: no clipping)",
                              (double)o->max_grad_norm);
    if ((int)o->lr_schedule < QKV_SCHED_CONSTANT || (int)o->lr_schedule > QKV_SCHED_COSINE)
        return qkv__set_error(QKV_ERR_ARG, "--lr-schedule: unknown kind %d", (int)o->lr_schedule);
    if (o->warmup_steps < 0) return qkv__set_error(QKV_ERR_RANGE, "--warmup-steps: %lld must be >= 0", (long long)o->warmup_steps);
    if (o->steps < 1 || o->steps > ((int64_t)1 << 40))
        return qkv__set_error(QKV_ERR_RANGE, "--steps: %lld must be >= 1", (long long)o->steps);
    if (!(isfinite(o->epochs) && o->epochs >= 0.0 && o->epochs < 1e9))
        return qkv__set_error(QKV_ERR_RANGE, "--epochs: %g must be a finite number >= 0", o->epochs);
    if (o->eval_every < 0) return qkv__set_error(QKV_ERR_RANGE, "--eval-every: %lld must be >= 0", (long long)o->eval_every);
    if (o->eval_batches < 1 || o->eval_batches > (1 << 20))
        return qkv__set_error(QKV_ERR_RANGE, "--eval-batches: %lld must be in [1, 1048576]", (long long)o->eval_batches);
    if (o->save_every < 0) return qkv__set_error(QKV_ERR_RANGE, "--save-every: %lld must be >= 0", (long long)o->save_every);
    if (o->save_total_limit < 0)
        return qkv__set_error(QKV_ERR_RANGE, "--save-total-limit: %d must be >= 0", o->save_total_limit);
    if (!(isfinite(o->time_limit) && o->time_limit >= 0.0))
        return qkv__set_error(QKV_ERR_RANGE, "--time-limit: %g must be a finite number of seconds >= 0", o->time_limit);
    if (o->stop_after < 0) return qkv__set_error(QKV_ERR_RANGE, "--stop-after: %lld must be >= 0", (long long)o->stop_after);
    if (o->seed > (uint64_t)INT64_MAX)
        return qkv__set_error(QKV_ERR_RANGE, "--seed: must be in [0, %lld]", (long long)INT64_MAX);
    if (!(o->val_fraction >= 0.0 && o->val_fraction < 1.0))
        return qkv__set_error(QKV_ERR_RANGE, "--val-fraction: %g must be in [0, 1)", o->val_fraction);
    if (!(o->dropout < 1.0f) || isnan(o->dropout))
        return qkv__set_error(QKV_ERR_RANGE, "--dropout: %g must be in [0, 1)", (double)o->dropout);
    return QKV_OK;
}

/* ====================================== trainer ====================================== */

struct qkv_trainer {
    qkv_gpt *m;
    qkv_params *p;
    qkv_dataset *d;
    qkv_optim *opt;
    qkv_ctx *ctx;
    qkv_schedule sched;
    int64_t B, T, step, eval_batches;
    int accum;
    float max_grad_norm;
    uint64_t seed;
    int32_t *ids, *targets; /* (B,T) each: the current micro-batch */
};

qkv_trainer *qkv_trainer_new(qkv_gpt *m, qkv_dataset *d, const qkv_train_opts *o) {
    if (!m || !d) {
        qkv__set_error(QKV_ERR_ARG, "qkv_trainer_new: %s is NULL", m ? "dataset" : "model");
        return NULL;
    }
    if (check_train_opts(o) != QKV_OK) return NULL;
    if (!(o->lr > 0.0f)) {
        qkv__set_error(QKV_ERR_RANGE, "--lr: %g must be a finite number > 0", (double)o->lr);
        return NULL;
    }
    const qkv_gpt_config *cfg = qkv_gpt_get_config(m);
    if (o->block_size > cfg->n_positions) {
        qkv__set_error(QKV_ERR_RANGE, "--block-size: %lld is larger than the model's n_positions %lld",
                       (long long)o->block_size, (long long)cfg->n_positions);
        return NULL;
    }
    if (qkv_dataset_vocab(d) > cfg->vocab_size) {
        qkv__set_error(QKV_ERR_RANGE, "data: token ids go up to %lld but the model's vocab_size is %lld",
                       (long long)qkv_dataset_vocab(d) - 1, (long long)cfg->vocab_size);
        return NULL;
    }
    if (qkv_dataset_train_len(d) < o->block_size + 1) {
        qkv__set_error(QKV_ERR_RANGE, "data: %lld training tokens, fewer than one block needs (--block-size %lld + 1)",
                       (long long)qkv_dataset_train_len(d), (long long)o->block_size);
        return NULL;
    }
    qkv_trainer *t = calloc(1, sizeof *t);
    if (!t) goto oom;
    t->m = m;
    t->p = qkv_gpt_params(m);
    t->d = d;
    t->B = o->batch_size;
    t->T = o->block_size;
    t->accum = o->grad_accum;
    t->max_grad_norm = o->max_grad_norm;
    t->seed = o->seed;
    t->eval_batches = o->eval_batches;
    t->sched = (qkv_schedule){o->lr_schedule, o->lr, o->warmup_steps, o->steps};
    qkv_adamw_opts ao = {o->beta1, o->beta2, o->eps, o->weight_decay};
    t->opt = qkv_adamw_new(t->p, &ao);
    if (!t->opt) {
        free(t);
        return NULL;
    }
    t->ctx = qkv_ctx_new(0);
    t->ids = malloc(sizeof *t->ids * (size_t)(t->B * t->T));
    t->targets = malloc(sizeof *t->targets * (size_t)(t->B * t->T));
    if (!t->ctx || !t->ids || !t->targets) {
        qkv_trainer_free(t);
        goto oom;
    }
    /* The per-op NaN scan re-reads every weight each op; the step checks the loss and the gradient
     * norm instead, which any non-finite value reaches. */
    qkv_ctx_set_check_finite(t->ctx, 0);
    return t;
oom:
    qkv__set_error(QKV_ERR_NOMEM, "qkv_trainer_new: out of memory");
    return NULL;
}

void qkv_trainer_free(qkv_trainer *t) {
    if (!t) return;
    qkv_optim_free(t->opt);
    qkv_ctx_free(t->ctx);
    free(t->ids);
    free(t->targets);
    free(t);
}

int64_t qkv_trainer_steps_done(const qkv_trainer *t) { return t ? t->step : 0; }

static qkv_status ctx_error(qkv_trainer *t, const char *what) {
    qkv_status s = qkv_ctx_status(t->ctx);
    qkv__set_error(s, "%s at step %lld: %s", what, (long long)t->step + 1, qkv_ctx_error(t->ctx));
    qkv_ctx_clear_error(t->ctx);
    qkv_ctx_reset(t->ctx);
    return s;
}

qkv_status qkv_trainer_step(qkv_trainer *t, qkv_train_stats *stats) {
    if (!t) return qkv__set_error(QKV_ERR_ARG, "qkv_trainer_step: NULL trainer");
    qkv_params_zero_grad(t->p);
    double loss_sum = 0;
    for (int micro = 0; micro < t->accum; micro++) {
        qkv_status s = qkv_dataset_batch(t->d, t->seed, t->step, micro, t->B, t->T, t->ids, t->targets);
        if (s != QKV_OK) return s;
        qkv_ctx_reset(t->ctx);
        qkv_ctx_seed(t->ctx, dropout_seed(t->seed, t->step, micro));
        qkv_ctx_set_grad(t->ctx, 1);
        qkv_ctx_set_training(t->ctx, 1);
        qkv_tensor *loss = NULL;
        qkv_gpt_forward(t->ctx, t->m, t->ids, t->B, t->T, t->targets, &loss);
        if (qkv_ctx_status(t->ctx) != QKV_OK || !loss) return ctx_error(t, "forward");
        float lv = loss->data[0];
        /* mean over the micro-batches: each backward adds 1/accum of its gradient (HF Trainer) */
        qkv_tensor *scaled = t->accum > 1 ? qkv_scale(t->ctx, loss, 1.0f / (float)t->accum) : loss;
        if (!scaled || qkv_backward(t->ctx, scaled) != QKV_OK) return ctx_error(t, "backward");
        loss_sum += lv;
    }
    qkv_ctx_reset(t->ctx);
    float loss = (float)(loss_sum / t->accum);
    float norm = qkv_clip_grad_norm(t->p, t->max_grad_norm);
    if (!isfinite(loss) || !isfinite(norm))
        return qkv__set_error(QKV_ERR_NONFINITE, "training diverged at step %lld: %s is %s (try a lower --lr)",
                              (long long)t->step + 1, !isfinite(loss) ? "the loss" : "the gradient norm",
                              isnan(!isfinite(loss) ? loss : norm) ? "NaN" : "infinite");
    float lr = qkv_schedule_lr(&t->sched, t->step);
    qkv_status s = qkv_optim_step(t->opt, lr);
    if (s != QKV_OK) return s;
    t->step++;
    if (stats) {
        stats->step = t->step;
        stats->loss = loss;
        stats->grad_norm = norm;
        stats->lr = lr;
        stats->epoch = (double)t->step * (double)(t->B * t->T * t->accum) / (double)qkv_dataset_train_len(t->d);
    }
    return QKV_OK;
}

qkv_status qkv_trainer_evaluate(qkv_trainer *t, float *loss_out, float *ppl_out) {
    if (!t) return qkv__set_error(QKV_ERR_ARG, "qkv_trainer_evaluate: NULL trainer");
    if (qkv_dataset_val_len(t->d) < t->T + 1)
        return qkv__set_error(QKV_ERR_RANGE, "evaluate: the validation split has %lld tokens, fewer than one block "
                              "needs (--block-size %lld + 1); raise --val-fraction",
                              (long long)qkv_dataset_val_len(t->d), (long long)t->T);
    double sum = 0;
    for (int64_t k = 0; k < t->eval_batches; k++) {
        qkv_status s = qkv_dataset_eval_batch(t->d, k, t->eval_batches, t->B, t->T, t->ids, t->targets);
        if (s != QKV_OK) return s;
        qkv_ctx_reset(t->ctx);
        qkv_ctx_set_grad(t->ctx, 0);
        qkv_ctx_set_training(t->ctx, 0);
        qkv_tensor *loss = NULL;
        qkv_gpt_forward(t->ctx, t->m, t->ids, t->B, t->T, t->targets, &loss);
        if (qkv_ctx_status(t->ctx) != QKV_OK || !loss) {
            qkv_ctx_set_grad(t->ctx, 1);
            return ctx_error(t, "evaluate");
        }
        sum += loss->data[0];
    }
    qkv_ctx_reset(t->ctx);
    qkv_ctx_set_grad(t->ctx, 1);
    double mean = sum / (double)t->eval_batches;
    if (loss_out) *loss_out = (float)mean;
    if (ppl_out) *ppl_out = (float)exp(mean);
    return QKV_OK;
}

/* ---- optimizer state files ---- */

qkv_status qkv_trainer_save_optimizer(const qkv_trainer *t, const char *dir) {
    if (!t || !dir) return qkv__set_error(QKV_ERR_ARG, "qkv_trainer_save_optimizer: NULL argument");
    int n = qkv_params_count(t->p);
    qkv_st_entry *e = calloc((size_t)(2 * n), sizeof *e);
    char **names = calloc((size_t)(2 * n), sizeof *names);
    size_t pl = strlen(dir) + sizeof "/" OPTIM_FILE;
    char *path = malloc(pl);
    qkv_status s = QKV_OK;
    if (!e || !names || !path) {
        s = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", dir);
        goto done;
    }
    snprintf(path, pl, "%s/%s", dir, OPTIM_FILE);
    const float *base = qkv_params_data(t->p);
    float *m = qkv_optim_state((qkv_optim *)t->opt, 0), *v = qkv_optim_state((qkv_optim *)t->opt, 1);
    for (int i = 0; i < n; i++) {
        const qkv_tensor *pt = qkv_params_get(t->p, i);
        ptrdiff_t off = pt->data - base;
        for (int k = 0; k < 2; k++) {
            size_t len = strlen(pt->name) + 16;
            names[2 * i + k] = malloc(len);
            if (!names[2 * i + k]) {
                s = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
                goto done;
            }
            snprintf(names[2 * i + k], len, "%s.%s", pt->name, k ? "exp_avg_sq" : "exp_avg");
            e[2 * i + k] = (qkv_st_entry){names[2 * i + k], pt->ndim, pt->shape, (k ? v : m) + off};
        }
    }
    char step[32];
    snprintf(step, sizeof step, "%lld", (long long)qkv_optim_steps(t->opt));
    const char *meta[4] = {"format", "pt", "step", step};
    s = qkv_safetensors_write(path, e, 2 * n, meta, 2);
done:
    if (names)
        for (int i = 0; i < 2 * n; i++) free(names[i]);
    free(names);
    free(e);
    free(path);
    return s;
}

qkv_status qkv_trainer_load_optimizer(qkv_trainer *t, const char *dir) {
    if (!t || !dir) return qkv__set_error(QKV_ERR_ARG, "qkv_trainer_load_optimizer: NULL argument");
    size_t pl = strlen(dir) + sizeof "/" OPTIM_FILE;
    char *path = malloc(pl);
    if (!path) return qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", dir);
    snprintf(path, pl, "%s/%s", dir, OPTIM_FILE);
    qkv_safetensors *st = qkv_safetensors_open(path);
    if (!st) {
        free(path);
        return QKV_ERR_IO; /* qkv_last_error names the file */
    }
    qkv_status s = QKV_OK;
    const char *step_s = qkv_safetensors_metadata(st, "step");
    char *end = NULL;
    long long step = step_s ? strtoll(step_s, &end, 10) : -1;
    if (!step_s || *end || step < 0) {
        s = qkv__set_error(QKV_ERR_FORMAT, "%s: metadata \"step\" is missing or not a count", path);
        goto done;
    }
    int n = qkv_params_count(t->p);
    if (qkv_safetensors_count(st) != 2 * n) {
        s = qkv__set_error(QKV_ERR_FORMAT, "%s: %d tensors, the model needs %d (exp_avg and exp_avg_sq per parameter)",
                           path, qkv_safetensors_count(st), 2 * n);
        goto done;
    }
    const float *base = qkv_params_data(t->p);
    for (int i = 0; i < n && s == QKV_OK; i++) {
        const qkv_tensor *pt = qkv_params_get(t->p, i);
        ptrdiff_t off = pt->data - base;
        for (int k = 0; k < 2 && s == QKV_OK; k++) {
            char name[256];
            snprintf(name, sizeof name, "%s.%s", pt->name, k ? "exp_avg_sq" : "exp_avg");
            const qkv_st_tensor *x = qkv_safetensors_find(st, name);
            int same = x && x->ndim == pt->ndim;
            for (int j = 0; same && j < pt->ndim; j++) same = x->shape[j] == pt->shape[j];
            if (!same) {
                s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor %s is %s", path, name,
                                   x ? "of another shape than its parameter" : "missing");
            } else if (x->dtype != QKV_DTYPE_F32) {
                s = qkv__set_error(QKV_ERR_FORMAT, "%s: tensor %s is %s, not F32", path, name, qkv_dtype_name(x->dtype));
            } else {
                s = qkv_safetensors_read_f32(x, qkv_optim_state(t->opt, k) + off, qkv_tensor_numel(pt));
            }
        }
    }
    if (s == QKV_OK) {
        qkv_optim_set_steps(t->opt, step);
        t->step = step;
    }
done:
    qkv_safetensors_close(st);
    free(path);
    return s;
}

/* ===================================== files ===================================== */

static char *path_join(const char *a, const char *b) {
    size_t n = strlen(a) + strlen(b) + 2;
    char *p = malloc(n);
    if (p) snprintf(p, n, "%s/%s", a, b);
    else qkv__set_error(QKV_ERR_NOMEM, "out of memory");
    return p;
}

/* mkdir -p; errors name the path. */
static qkv_status make_dirs(const char *path) {
    char *p = strdup(path);
    if (!p) return qkv__set_error(QKV_ERR_NOMEM, "out of memory");
    for (char *s = p + 1;; s++) {
        if (*s == '/' || *s == '\0') {
            char c = *s;
            *s = '\0';
            if (mkdir(p, 0777) != 0 && errno != EEXIST) {
                qkv_status st = qkv__set_error(QKV_ERR_IO, "%s: cannot create folder: %s", p, strerror(errno));
                free(p);
                return st;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(p);
    struct stat st;
    if (stat(path, &st) != 0 || !S_ISDIR(st.st_mode))
        return qkv__set_error(QKV_ERR_IO, "%s: not a folder", path);
    return QKV_OK;
}

/* Removes the plain files of a flat folder, then the folder (a checkpoint). Best effort. */
static void remove_flat_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (d) {
        struct dirent *e;
        while ((e = readdir(d)) != NULL) {
            if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
            char *p = path_join(dir, e->d_name);
            if (p) remove(p);
            free(p);
        }
        closedir(d);
    }
    rmdir(dir);
}

/* Step of a "checkpoint-<digits>" name, or -1. */
static int64_t checkpoint_step(const char *name) {
    if (strncmp(name, "checkpoint-", 11) != 0 || !name[11]) return -1;
    int64_t v = 0;
    for (const char *s = name + 11; *s; s++) {
        if (*s < '0' || *s > '9' || v > INT64_MAX / 10 - 10) return -1;
        v = v * 10 + (*s - '0');
    }
    return v;
}

/* The steps of the complete checkpoints in out (with a trainer state), ascending; malloc'd. */
static int64_t *list_checkpoints(const char *out, int *n_out) {
    *n_out = 0;
    DIR *d = opendir(out);
    if (!d) return NULL;
    int64_t *v = NULL;
    int n = 0, cap = 0;
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t s = checkpoint_step(e->d_name);
        if (s < 0) continue;
        char *dir = path_join(out, e->d_name), *st = dir ? path_join(dir, STATE_FILE) : NULL;
        int ok = st && access(st, R_OK) == 0;
        free(dir);
        free(st);
        if (!ok) continue;
        if (n == cap) {
            cap = cap ? 2 * cap : 16;
            int64_t *v2 = realloc(v, sizeof *v * (size_t)cap);
            if (!v2) break;
            v = v2;
        }
        v[n++] = s;
    }
    closedir(d);
    for (int i = 1; i < n; i++) /* insertion sort: a handful of entries */
        for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
            int64_t x = v[j];
            v[j] = v[j - 1], v[j - 1] = x;
        }
    *n_out = n;
    return v;
}

static char *checkpoint_dir(const char *out, int64_t step) {
    char name[48];
    snprintf(name, sizeof name, "checkpoint-%lld", (long long)step);
    return path_join(out, name);
}

char *qkv_train_latest_checkpoint(const char *out) {
    if (!out) {
        qkv__set_error(QKV_ERR_ARG, "qkv_train_latest_checkpoint: NULL folder");
        return NULL;
    }
    int n;
    int64_t *v = list_checkpoints(out, &n);
    if (n == 0) {
        free(v);
        qkv__set_error(QKV_ERR_IO, "%s: no checkpoint-STEP folder with a %s to resume from", out, STATE_FILE);
        return NULL;
    }
    char *d = checkpoint_dir(out, v[n - 1]);
    free(v);
    return d;
}

/* ==================================== trainer state ==================================== */

typedef struct {
    int64_t step;
    float loss, grad_norm, lr;
    double epoch, tps;
} train_rec;

typedef struct {
    int64_t step;
    float loss, ppl;
} eval_rec;

struct qkv_train_state {
    qkv_train_opts o;
    char **strings; /* every string o points to */
    int n_strings;
    int64_t step, max_steps;
    train_rec *tr;
    eval_rec *ev;
    int64_t n_tr, n_ev;
};

static void write_str_or_null(FILE *f, const char *s) {
    if (s) qkv__json_write_string(f, s);
    else fputs("null", f);
}

static void write_train_rec(FILE *f, const train_rec *r) {
    fprintf(f, "{\"step\":%lld,\"loss\":%.9g,\"grad_norm\":%.9g,\"learning_rate\":%.9g,\"epoch\":%.6g,"
               "\"tokens_per_sec\":%.1f}", (long long)r->step, (double)r->loss, (double)r->grad_norm, (double)r->lr,
            r->epoch, r->tps);
}

static void write_eval_rec(FILE *f, const eval_rec *r) {
    fprintf(f, "{\"step\":%lld,\"eval_loss\":%.9g,\"eval_perplexity\":%.9g}", (long long)r->step, (double)r->loss,
            (double)r->ppl);
}

/* The log history in order: the train record of a step, then that step's evaluation. sep between
 * records ("\n" for log.jsonl, ",\n" inside the state's array). */
static void write_history(FILE *f, const train_rec *tr, int64_t n_tr, const eval_rec *ev, int64_t n_ev,
                          const char *sep, const char *indent) {
    int64_t i = 0, j = 0;
    int first = 1;
    while (i < n_tr || j < n_ev) {
        if (!first) fputs(sep, f);
        first = 0;
        fputs(indent, f);
        if (j >= n_ev || (i < n_tr && tr[i].step <= ev[j].step)) write_train_rec(f, &tr[i++]);
        else write_eval_rec(f, &ev[j++]);
    }
}

static qkv_status write_state(const char *path, const qkv_train_opts *o, int64_t step, int64_t max_steps,
                              double epoch, const train_rec *tr, int64_t n_tr, const eval_rec *ev, int64_t n_ev) {
    FILE *f = fopen(path, "w");
    if (!f) return qkv__set_error(QKV_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    fprintf(f, "{\n  \"format\": \"%s\",\n  \"version\": %d,\n  \"global_step\": %lld,\n  \"max_steps\": %lld,\n"
               "  \"epoch\": %.9g,\n", STATE_FORMAT, STATE_VERSION, (long long)step, (long long)max_steps, epoch);
    fprintf(f, "  \"rng\": {\"kind\": \"counter\", \"seed\": %llu, \"next_step\": %lld},\n",
            (unsigned long long)o->seed, (long long)step);
    fprintf(f, "  \"schedule\": {\"kind\": \"%s\", \"lr\": %.9g, \"warmup_steps\": %lld, \"total_steps\": %lld},\n",
            sched_name(o->lr_schedule), (double)o->lr, (long long)o->warmup_steps, (long long)o->steps);
    fprintf(f, "  \"args\": {\n    \"data\": [");
    for (int i = 0; i < o->n_data; i++) {
        if (i) fputs(", ", f);
        qkv__json_write_string(f, o->data[i]);
    }
    fprintf(f, "],\n    \"ext\": ");
    write_str_or_null(f, o->exts);
    fprintf(f, ",\n    \"val_fraction\": %.17g,\n    \"tokenizer\": ", o->val_fraction);
    write_str_or_null(f, o->tokenizer);
    fprintf(f, ",\n    \"init\": ");
    write_str_or_null(f, o->init);
    fprintf(f, ",\n    \"n_layer\": %d, \"n_head\": %d, \"n_embd\": %lld, \"block_size\": %lld, \"dropout\": %.9g,\n",
            o->n_layer, o->n_head, (long long)o->n_embd, (long long)o->block_size, (double)o->dropout);
    fprintf(f, "    \"lr\": %.9g, \"weight_decay\": %.9g, \"beta1\": %.9g, \"beta2\": %.9g, \"eps\": %.9g, "
               "\"max_grad_norm\": %.9g,\n", (double)o->lr, (double)o->weight_decay, (double)o->beta1,
            (double)o->beta2, (double)o->eps, (double)o->max_grad_norm);
    fprintf(f, "    \"lr_schedule\": \"%s\", \"warmup_steps\": %lld, \"steps\": %lld, \"epochs\": %.17g, "
               "\"batch_size\": %lld, \"grad_accum\": %d, \"seed\": %llu,\n", sched_name(o->lr_schedule),
            (long long)o->warmup_steps, (long long)o->steps, o->epochs, (long long)o->batch_size, o->grad_accum,
            (unsigned long long)o->seed);
    fprintf(f, "    \"eval_every\": %lld, \"eval_batches\": %lld, \"save_every\": %lld, \"save_total_limit\": %d\n  },\n",
            (long long)o->eval_every, (long long)o->eval_batches, (long long)o->save_every, o->save_total_limit);
    fprintf(f, "  \"log_history\": [\n");
    write_history(f, tr, n_tr, ev, n_ev, ",\n", "    ");
    fprintf(f, "\n  ]\n}\n");
    int ok = !ferror(f);
    if (fclose(f) != 0) ok = 0;
    if (!ok) return qkv__set_error(QKV_ERR_IO, "%s: write error", path);
    return QKV_OK;
}

void qkv_train_state_free(qkv_train_state *s) {
    if (!s) return;
    for (int i = 0; i < s->n_strings; i++) free(s->strings[i]);
    free(s->strings);
    free((void *)s->o.data);
    free(s->tr);
    free(s->ev);
    free(s);
}

const qkv_train_opts *qkv_train_state_opts(const qkv_train_state *s) { return s ? &s->o : NULL; }
int64_t qkv_train_state_step(const qkv_train_state *s) { return s ? s->step : 0; }

/* Field readers: 0 and an error naming the file and key on a missing or mistyped value. */
static _Thread_local const char *g_state_path;

static int bad_field(const char *key, const char *want) {
    qkv__set_error(QKV_ERR_FORMAT, "%s: \"%s\" is missing or not %s", g_state_path, key, want);
    return 0;
}

static int get_i64(const qkv__json *obj, const char *key, int64_t *out) {
    const qkv__json *v = qkv__json_get(obj, key);
    if (!v || v->type != QKV_JSON_NUMBER || !v->is_int) return bad_field(key, "an integer");
    *out = v->integer;
    return 1;
}

static int get_dbl(const qkv__json *obj, const char *key, double *out) {
    const qkv__json *v = qkv__json_get(obj, key);
    if (!v || v->type != QKV_JSON_NUMBER) return bad_field(key, "a number");
    *out = v->number;
    return 1;
}

static int get_flt(const qkv__json *obj, const char *key, float *out) {
    double d;
    if (!get_dbl(obj, key, &d)) return 0;
    *out = (float)d;
    return 1;
}

static char *keep_string(qkv_train_state *s, const char *str) {
    char **v = realloc(s->strings, sizeof *v * (size_t)(s->n_strings + 1));
    if (!v) return NULL;
    s->strings = v;
    char *c = strdup(str);
    if (c) s->strings[s->n_strings++] = c;
    return c;
}

/* A string or null member; *out NULL for null. */
static int get_str(qkv_train_state *s, const qkv__json *obj, const char *key, const char **out) {
    const qkv__json *v = qkv__json_get(obj, key);
    if (v && v->type == QKV_JSON_NULL) {
        *out = NULL;
        return 1;
    }
    if (!v || v->type != QKV_JSON_STRING) return bad_field(key, "a string or null");
    *out = keep_string(s, v->str);
    if (!*out) return qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", g_state_path), 0;
    return 1;
}

static int parse_sched(const char *name, qkv_sched_kind *k) {
    if (!strcmp(name, "linear")) *k = QKV_SCHED_LINEAR;
    else if (!strcmp(name, "cosine")) *k = QKV_SCHED_COSINE;
    else if (!strcmp(name, "constant")) *k = QKV_SCHED_CONSTANT;
    else return 0;
    return 1;
}

static char *read_whole(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        qkv__set_error(QKV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0, got;
    char *buf = malloc(cap);
    while (buf && (got = fread(buf + n, 1, cap - n, f)) > 0) {
        n += got;
        if (n == cap) {
            char *b2 = realloc(buf, cap * 2);
            if (!b2) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = b2, cap *= 2;
        }
    }
    fclose(f);
    if (!buf) qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
    *len = n;
    return buf;
}

qkv_train_state *qkv_train_state_load(const char *dir) {
    if (!dir) {
        qkv__set_error(QKV_ERR_ARG, "qkv_train_state_load: NULL folder");
        return NULL;
    }
    char *path = path_join(dir, STATE_FILE);
    if (!path) return NULL;
    size_t len;
    char *text = read_whole(path, &len);
    qkv__json *root = text ? qkv__json_parse(text, len, path) : NULL;
    free(text);
    qkv_train_state *s = root ? calloc(1, sizeof *s) : NULL;
    if (!root || !s) {
        if (root) qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        qkv__json_free(root);
        free(path);
        return NULL;
    }
    g_state_path = path;
    s->o = qkv_train_default_opts();
    qkv_train_opts *o = &s->o;
    const qkv__json *fmt = qkv__json_get(root, "format"), *a = qkv__json_get(root, "args");
    const qkv__json *hist = qkv__json_get(root, "log_history"), *data = qkv__json_get(a, "data");
    int64_t version = 0, i64;
    const char *sched = NULL;
    int ok = 1;
    if (root->type != QKV_JSON_OBJECT || !fmt || fmt->type != QKV_JSON_STRING || strcmp(fmt->str, STATE_FORMAT) != 0)
        ok = bad_field("format", "\"" STATE_FORMAT "\"");
    ok = ok && get_i64(root, "version", &version);
    if (ok && version != STATE_VERSION) ok = bad_field("version", "1");
    ok = ok && get_i64(root, "global_step", &s->step) && get_i64(root, "max_steps", &s->max_steps);
    if (ok && (!a || a->type != QKV_JSON_OBJECT)) ok = bad_field("args", "an object");
    if (ok && (!data || data->type != QKV_JSON_ARRAY || data->len < 1 || data->len > 4096))
        ok = bad_field("args.data", "a non-empty array of paths");
    if (ok) {
        o->n_data = (int)data->len;
        o->data = calloc(data->len, sizeof *o->data);
        if (!o->data) ok = 0, qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        for (size_t i = 0; ok && i < data->len; i++) {
            const qkv__json *e = qkv__json_at(data, i);
            if (e->type != QKV_JSON_STRING) ok = bad_field("args.data", "an array of strings");
            else if (!(((const char **)o->data)[i] = keep_string(s, e->str)))
                ok = 0, qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        }
    }
    ok = ok && get_str(s, a, "ext", &o->exts) && get_dbl(a, "val_fraction", &o->val_fraction) &&
         get_str(s, a, "tokenizer", &o->tokenizer) && get_str(s, a, "init", &o->init);
    ok = ok && get_i64(a, "n_layer", &i64) && (o->n_layer = (int)i64, get_i64(a, "n_head", &i64)) &&
         (o->n_head = (int)i64, get_i64(a, "n_embd", &o->n_embd)) && get_i64(a, "block_size", &o->block_size) &&
         get_flt(a, "dropout", &o->dropout) && get_flt(a, "lr", &o->lr) && get_flt(a, "weight_decay", &o->weight_decay) &&
         get_flt(a, "beta1", &o->beta1) && get_flt(a, "beta2", &o->beta2) && get_flt(a, "eps", &o->eps) &&
         get_flt(a, "max_grad_norm", &o->max_grad_norm) && get_str(s, a, "lr_schedule", &sched) &&
         get_i64(a, "warmup_steps", &o->warmup_steps) && get_i64(a, "steps", &o->steps) &&
         get_dbl(a, "epochs", &o->epochs) && get_i64(a, "batch_size", &o->batch_size) &&
         get_i64(a, "grad_accum", &i64) && (o->grad_accum = (int)i64, get_i64(a, "seed", &i64)) &&
         (o->seed = (uint64_t)i64, get_i64(a, "eval_every", &o->eval_every)) &&
         get_i64(a, "eval_batches", &o->eval_batches) && get_i64(a, "save_every", &o->save_every) &&
         get_i64(a, "save_total_limit", &i64) && (o->save_total_limit = (int)i64, 1);
    if (ok && (!sched || !parse_sched(sched, &o->lr_schedule))) ok = bad_field("args.lr_schedule", "linear|cosine|constant");
    if (ok && check_train_opts(o) != QKV_OK) {
        prefix_error(QKV_ERR_FORMAT, path);
        ok = 0;
    }
    if (ok && (s->step < 0 || s->step > o->steps)) ok = bad_field("global_step", "within [0, args.steps]");
    if (ok && (!hist || hist->type != QKV_JSON_ARRAY)) ok = bad_field("log_history", "an array");
    if (ok) {
        size_t n = hist->len;
        s->tr = calloc(n ? n : 1, sizeof *s->tr);
        s->ev = calloc(n ? n : 1, sizeof *s->ev);
        if (!s->tr || !s->ev) ok = 0, qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        for (size_t i = 0; ok && i < n; i++) {
            const qkv__json *e = qkv__json_at(hist, i);
            if (qkv__json_get(e, "eval_loss")) {
                eval_rec *r = &s->ev[s->n_ev++];
                ok = get_i64(e, "step", &r->step) && get_flt(e, "eval_loss", &r->loss) &&
                     get_flt(e, "eval_perplexity", &r->ppl);
            } else {
                train_rec *r = &s->tr[s->n_tr++];
                ok = get_i64(e, "step", &r->step) && get_flt(e, "loss", &r->loss) &&
                     get_flt(e, "grad_norm", &r->grad_norm) && get_flt(e, "learning_rate", &r->lr) &&
                     get_dbl(e, "epoch", &r->epoch) && get_dbl(e, "tokens_per_sec", &r->tps);
            }
        }
    }
    qkv__json_free(root);
    g_state_path = NULL;
    free(path);
    if (!ok) {
        qkv_train_state_free(s);
        return NULL;
    }
    return s;
}

/* ====================================== the run ====================================== */

typedef struct {
    const qkv_train_opts *o; /* as resolved */
    const char *out;
    qkv_tokenizer *tok;
    qkv_gpt *m;
    qkv_trainer *t;
    train_rec *tr;
    eval_rec *ev;
    int64_t n_tr, n_ev, cap_tr, cap_ev;
    FILE *log;
    char *log_path, *svg_path;
    double t0;
    int64_t step0;
} run_state;

static void emit(const qkv_train_opts *o, const qkv_train_event *e) {
    if (o->on_event) o->on_event(o->user, e);
}

static qkv_status write_plot(run_state *r) {
    int64_t *st = malloc(sizeof *st * (size_t)(r->n_tr + 1)), *es = malloc(sizeof *es * (size_t)(r->n_ev + 1));
    float *lo = malloc(sizeof *lo * (size_t)(r->n_tr + 1)), *el = malloc(sizeof *el * (size_t)(r->n_ev + 1));
    qkv_status s;
    if (!st || !es || !lo || !el) {
        s = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", r->svg_path);
    } else {
        for (int64_t i = 0; i < r->n_tr; i++) st[i] = r->tr[i].step, lo[i] = r->tr[i].loss;
        for (int64_t i = 0; i < r->n_ev; i++) es[i] = r->ev[i].step, el[i] = r->ev[i].loss;
        char title[512];
        const qkv_gpt_config *c = qkv_gpt_get_config(r->m);
        snprintf(title, sizeof title, "qkv train: %s (GPT %d layers, %d heads, %lld wide, vocab %lld)", r->out,
                 c->n_layer, c->n_head, (long long)c->n_embd, (long long)c->vocab_size);
        s = qkv_plot_loss_svg(r->svg_path, title, st, lo, r->n_tr, es, el, r->n_ev);
    }
    free(st), free(es), free(lo), free(el);
    return s;
}

/* OUT/checkpoint-STEP written under a temporary name and renamed into place. */
static qkv_status save_checkpoint(run_state *r, char **saved_path) {
    const qkv_train_opts *o = r->o;
    int64_t step = qkv_trainer_steps_done(r->t);
    char tmpname[96];
    snprintf(tmpname, sizeof tmpname, ".tmp-checkpoint-%lld.%ld", (long long)step, (long)getpid());
    char *tmp = path_join(r->out, tmpname), *fin = checkpoint_dir(r->out, step), *state = NULL;
    qkv_status s = QKV_ERR_NOMEM;
    if (!tmp || !fin) goto done;
    remove_flat_dir(tmp);
    if (mkdir(tmp, 0777) != 0) {
        s = qkv__set_error(QKV_ERR_IO, "%s: cannot create folder: %s", tmp, strerror(errno));
        goto done;
    }
    if ((s = qkv_hf_gpt2_save(r->m, tmp)) != QKV_OK || (s = qkv_tokenizer_save_dir(r->tok, tmp)) != QKV_OK ||
        (s = qkv_trainer_save_optimizer(r->t, tmp)) != QKV_OK)
        goto fail;
    if (!(state = path_join(tmp, STATE_FILE))) goto fail;
    double epoch = (double)step * (double)(o->batch_size * o->block_size * o->grad_accum) /
                   (double)qkv_dataset_train_len(r->t->d);
    if ((s = write_state(state, o, step, o->steps, epoch, r->tr, r->n_tr, r->ev, r->n_ev)) != QKV_OK) goto fail;
    struct stat st;
    if (stat(fin, &st) == 0) { /* the same step saved before (a resumed run that ended where it began) */
        char oldname[96];
        snprintf(oldname, sizeof oldname, ".old-checkpoint-%lld.%ld", (long long)step, (long)getpid());
        char *old = path_join(r->out, oldname);
        if (!old || rename(fin, old) != 0) {
            s = qkv__set_error(QKV_ERR_IO, "%s: cannot replace: %s", fin, strerror(errno));
            free(old);
            goto fail;
        }
        if (rename(tmp, fin) != 0) {
            s = qkv__set_error(QKV_ERR_IO, "%s: cannot rename into place: %s", fin, strerror(errno));
            rename(old, fin);
            free(old);
            goto fail;
        }
        remove_flat_dir(old);
        free(old);
    } else if (rename(tmp, fin) != 0) {
        s = qkv__set_error(QKV_ERR_IO, "%s: cannot rename into place: %s", fin, strerror(errno));
        goto fail;
    }
    s = QKV_OK;
    if (o->save_total_limit > 0) { /* keep the newest save_total_limit checkpoints */
        int n;
        int64_t *v = list_checkpoints(r->out, &n);
        for (int i = 0; i + o->save_total_limit < n; i++) {
            char *d = checkpoint_dir(r->out, v[i]);
            if (d) remove_flat_dir(d);
            free(d);
        }
        free(v);
    }
    if (saved_path) *saved_path = fin, fin = NULL;
    goto done;
fail:
    remove_flat_dir(tmp);
done:
    free(tmp);
    free(fin);
    free(state);
    return s;
}

/* The tokenizer a fresh run asks for. */
static qkv_tokenizer *make_tokenizer(const qkv_train_opts *o, const qkv_data_opts *dopt) {
    const char *spec = o->tokenizer ? o->tokenizer : "bytes";
    if (!strcmp(spec, "bytes")) return qkv_tokenizer_new_bytes();
    if (!strcmp(spec, "chars") || !strncmp(spec, "bpe:", 4)) {
        int bpe = spec[0] == 'b';
        int64_t V = 0;
        if (bpe) {
            char *end;
            long long v = strtoll(spec + 4, &end, 10);
            if (!spec[4] || *end || v < 257 || v > 65535) {
                qkv__set_error(QKV_ERR_RANGE, "--tokenizer: '%s': the BPE vocabulary size must be in [257, 65535]", spec);
                return NULL;
            }
            V = v;
        }
        size_t len;
        char *text = qkv_data_read_text(dopt, bpe ? "<|endoftext|>" : NULL, &len);
        if (!text) return NULL;
        qkv_tokenizer *tok = bpe ? qkv_tokenizer_train_bpe(text, len, V) : qkv_tokenizer_new_chars(text, len);
        free(text);
        if (!tok) prefix_error(QKV_ERR_ARG, "--tokenizer");
        return tok;
    }
    qkv_tokenizer *tok = qkv_tokenizer_load_dir(spec);
    if (!tok) prefix_error(QKV_ERR_IO, "--tokenizer");
    return tok;
}

/* A copy of m with its dropout set to p (config changed, parameters copied bit for bit). */
static qkv_gpt *with_dropout(qkv_gpt *m, float p) {
    qkv_gpt_config c = *qkv_gpt_get_config(m);
    if (c.embd_pdrop == p && c.attn_pdrop == p && c.resid_pdrop == p) return m;
    c.embd_pdrop = c.attn_pdrop = c.resid_pdrop = p;
    qkv_gpt *m2 = qkv_gpt_new(&c, 0);
    if (!m2) {
        qkv_gpt_free(m);
        return NULL;
    }
    qkv_params *a = qkv_gpt_params(m), *b = qkv_gpt_params(m2);
    memcpy(qkv_params_data(b), qkv_params_data(a), sizeof(float) * (size_t)qkv_params_numel(a));
    qkv_gpt_free(m);
    return m2;
}

static int same_str(const char *a, const char *b) { return (!a && !b) || (a && b && !strcmp(a, b)); }

/* The first option that changes the trajectory and differs from the checkpoint's. */
static qkv_status check_resume_opts(const qkv_train_opts *o, const qkv_train_opts *c, const char *dir) {
    const char *flag = NULL;
    char was[300] = "", now[300] = "";
#define DIFF_NUM(cond, name, fmt, a, b)                          \
    if (!flag && (cond)) {                                       \
        flag = name;                                             \
        snprintf(was, sizeof was, fmt, a);                       \
        snprintf(now, sizeof now, fmt, b);                       \
    }
    DIFF_NUM(o->seed != c->seed, "--seed", "%llu", (unsigned long long)c->seed, (unsigned long long)o->seed);
    DIFF_NUM(o->batch_size != c->batch_size, "--batch-size", "%lld", (long long)c->batch_size, (long long)o->batch_size);
    DIFF_NUM(o->grad_accum != c->grad_accum, "--grad-accum", "%d", c->grad_accum, o->grad_accum);
    DIFF_NUM(o->block_size != c->block_size, "--block-size", "%lld", (long long)c->block_size, (long long)o->block_size);
    DIFF_NUM(o->lr != c->lr, "--lr", "%g", (double)c->lr, (double)o->lr);
    DIFF_NUM(o->lr_schedule != c->lr_schedule, "--lr-schedule", "%s", sched_name(c->lr_schedule), sched_name(o->lr_schedule));
    DIFF_NUM(o->warmup_steps != c->warmup_steps, "--warmup-steps", "%lld", (long long)c->warmup_steps, (long long)o->warmup_steps);
    DIFF_NUM(o->weight_decay != c->weight_decay, "--weight-decay", "%g", (double)c->weight_decay, (double)o->weight_decay);
    DIFF_NUM(o->beta1 != c->beta1, "--beta1", "%g", (double)c->beta1, (double)o->beta1);
    DIFF_NUM(o->beta2 != c->beta2, "--beta2", "%g", (double)c->beta2, (double)o->beta2);
    DIFF_NUM(o->eps != c->eps, "--eps", "%g", (double)c->eps, (double)o->eps);
    DIFF_NUM(o->max_grad_norm != c->max_grad_norm, "--max-grad-norm", "%g", (double)c->max_grad_norm, (double)o->max_grad_norm);
    DIFF_NUM(o->dropout >= 0 && o->dropout != c->dropout, "--dropout", "%g", (double)c->dropout, (double)o->dropout);
    DIFF_NUM(o->val_fraction != c->val_fraction, "--val-fraction", "%g", c->val_fraction, o->val_fraction);
    DIFF_NUM(!same_str(o->exts, c->exts), "--ext", "%s", c->exts ? c->exts : "(none)", o->exts ? o->exts : "(none)");
    DIFF_NUM(!same_str(o->init, c->init), "--init", "%s", c->init ? c->init : "(none)", o->init ? o->init : "(none)");
    DIFF_NUM(!c->init && !same_str(o->tokenizer, c->tokenizer), "--tokenizer", "%s", c->tokenizer ? c->tokenizer : "(none)",
             o->tokenizer ? o->tokenizer : "(none)");
    DIFF_NUM(!c->init && o->n_layer != c->n_layer, "--n-layer", "%d", c->n_layer, o->n_layer);
    DIFF_NUM(!c->init && o->n_head != c->n_head, "--n-head", "%d", c->n_head, o->n_head);
    DIFF_NUM(!c->init && o->n_embd != c->n_embd, "--n-embd", "%lld", (long long)c->n_embd, (long long)o->n_embd);
    DIFF_NUM(o->n_data != c->n_data, "--data", "%d paths", c->n_data, o->n_data);
    for (int i = 0; !flag && i < o->n_data; i++) DIFF_NUM(strcmp(o->data[i], c->data[i]) != 0, "--data", "%s", c->data[i], o->data[i]);
#undef DIFF_NUM
    if (!flag) return QKV_OK;
    return qkv__set_error(QKV_ERR_ARG, "%s: the checkpoint %s was trained with %s, this run asks for %s (resuming "
                          "exactly needs the same value)", flag, dir, was, now);
}

/* Does out hold the files of a run (checkpoints or a log)? Returns the first such name found. */
static int holds_run(const char *out, char *what, size_t n) {
    DIR *d = opendir(out);
    if (!d) return 0;
    struct dirent *e;
    int found = 0;
    while (!found && (e = readdir(d)) != NULL)
        if (checkpoint_step(e->d_name) >= 0 || !strcmp(e->d_name, "log.jsonl")) {
            snprintf(what, n, "%s", e->d_name);
            found = 1;
        }
    closedir(d);
    return found;
}

/* Removes what a previous run left: checkpoints, temporary checkpoints, the log and the plot. */
static void clear_run(const char *out, int everything) {
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *e;
    char **names = NULL;
    int n = 0;
    while ((e = readdir(d)) != NULL) {
        int tmp = !strncmp(e->d_name, ".tmp-checkpoint-", 16) || !strncmp(e->d_name, ".old-checkpoint-", 16);
        int run = checkpoint_step(e->d_name) >= 0 || !strcmp(e->d_name, "log.jsonl") || !strcmp(e->d_name, "loss.svg");
        if (!tmp && !(everything && run)) continue;
        char **v = realloc(names, sizeof *v * (size_t)(n + 1));
        if (!v) break;
        names = v;
        if ((names[n] = path_join(out, e->d_name)) != NULL) n++;
    }
    closedir(d);
    for (int i = 0; i < n; i++) {
        struct stat st;
        if (lstat(names[i], &st) == 0 && S_ISDIR(st.st_mode)) remove_flat_dir(names[i]);
        else remove(names[i]);
        free(names[i]);
    }
    free(names);
}

static int write_log_history(FILE *f, const void *arg) {
    const run_state *r = arg;
    write_history(f, r->tr, r->n_tr, r->ev, r->n_ev, "\n", "");
    if (r->n_tr + r->n_ev) fputc('\n', f);
    return ferror(f) ? -1 : 0;
}

static qkv_status open_log(run_state *r, int resumed) {
    /* resumed: the log holds the history up to the checkpoint, whatever it held after it */
    if (resumed && qkv__write_file_atomic(r->log_path, write_log_history, r) != QKV_OK) return QKV_ERR_IO;
    r->log = fopen(r->log_path, resumed ? "a" : "w");
    if (!r->log) return qkv__set_error(QKV_ERR_IO, "%s: cannot open: %s", r->log_path, strerror(errno));
    return QKV_OK;
}

static qkv_status run_eval(run_state *r, int64_t step) {
    float l, p;
    qkv_status s = qkv_trainer_evaluate(r->t, &l, &p);
    if (s != QKV_OK) return s;
    eval_rec *e = &r->ev[r->n_ev++];
    *e = (eval_rec){step, l, p};
    write_eval_rec(r->log, e);
    fputc('\n', r->log);
    fflush(r->log);
    qkv_train_event ev = {.kind = QKV_TRAIN_EV_EVAL, .step = step, .total_steps = r->o->steps, .eval_loss = l,
                          .eval_perplexity = p, .elapsed = now_s() - r->t0};
    emit(r->o, &ev);
    return QKV_OK;
}

static qkv_status run_save(run_state *r) {
    char *path = NULL;
    qkv_status s = save_checkpoint(r, &path);
    if (s == QKV_OK) s = write_plot(r);
    if (s == QKV_OK) {
        qkv_train_event ev = {.kind = QKV_TRAIN_EV_SAVE, .step = qkv_trainer_steps_done(r->t),
                              .total_steps = r->o->steps, .path = path, .elapsed = now_s() - r->t0};
        emit(r->o, &ev);
    }
    free(path);
    return s;
}

/* The loop of one session: from the trainer's step to the end, a stop or the time limit. */
static qkv_status run_loop(run_state *r) {
    const qkv_train_opts *o = r->o;
    double t_first = 0; /* end of this session's first step: the ETA leaves that step out (arena growth) */
    const int have_val = qkv_dataset_val_len(r->t->d) >= o->block_size + 1;
    int64_t last_eval = -1, last_save = qkv_trainer_steps_done(r->t);
    const double tokens = (double)(o->batch_size * o->block_size * o->grad_accum);
    qkv_train_event start = {.kind = QKV_TRAIN_EV_START, .step = r->step0, .total_steps = o->steps};
    emit(o, &start);
    qkv_status s = QKV_OK;
    int stopped = 0;
    while (qkv_trainer_steps_done(r->t) < o->steps) {
        double ts = now_s();
        qkv_train_stats st;
        if ((s = qkv_trainer_step(r->t, &st)) != QKV_OK) return s;
        double dt = now_s() - ts, elapsed = now_s() - r->t0;
        train_rec *rec = &r->tr[r->n_tr++];
        *rec = (train_rec){st.step, st.loss, st.grad_norm, st.lr, st.epoch, dt > 0 ? tokens / dt : 0};
        write_train_rec(r->log, rec);
        fputc('\n', r->log);
        fflush(r->log);
        int64_t done = st.step - r->step0;
        if (done == 1) t_first = now_s();
        double per_step = done > 1 ? (now_s() - t_first) / (double)(done - 1) : dt;
        qkv_train_event ev = {.kind = QKV_TRAIN_EV_STEP, .step = st.step, .total_steps = o->steps, .loss = st.loss,
                              .grad_norm = st.grad_norm, .lr = st.lr, .epoch = st.epoch, .tokens_per_sec = rec->tps,
                              .elapsed = elapsed,
                              .eta = per_step * (double)(o->steps - st.step)};
        emit(o, &ev);
        int last = st.step == o->steps;
        const char *why = o->stop_after > 0 && st.step >= o->stop_after   ? "--stop-after"
                          : o->time_limit > 0 && elapsed >= o->time_limit ? "--time-limit"
                          : o->stop_flag && *o->stop_flag                 ? "interrupted"
                                                                          : NULL;
        stopped = !last && why;
        if (have_val && o->eval_every > 0 && st.step % o->eval_every == 0) {
            if ((s = run_eval(r, st.step)) != QKV_OK) return s;
            last_eval = st.step;
        }
        if (o->save_every > 0 && st.step % o->save_every == 0 && !last && !stopped) {
            if ((s = run_save(r)) != QKV_OK) return s;
            last_save = st.step;
        }
        if (stopped) {
            qkv__note(o->note, o->user, "stopped after step %lld of %lld (%s); continue with --resume", (long long)st.step,
                     (long long)o->steps, why);
            break;
        }
    }
    int64_t step = qkv_trainer_steps_done(r->t);
    /* A final evaluation at the real end (not at an interruption: the uninterrupted run has none there). */
    if (have_val && !stopped && last_eval != step && step > r->step0 && (s = run_eval(r, step)) != QKV_OK) return s;
    if (step != last_save) {
        if ((s = run_save(r)) != QKV_OK) return s;
    }
    return QKV_OK;
}

qkv_status qkv_train_run(const qkv_train_opts *in) {
    if (!in) return qkv__set_error(QKV_ERR_ARG, "qkv_train_run: NULL options");
    qkv_train_opts o = *in;
    qkv_status s = check_train_opts(&o);
    if (s != QKV_OK) return s;
    if (!o.out || !*o.out) return qkv__set_error(QKV_ERR_ARG, "--out: an output folder is required");
    if (o.n_data < 1 || !o.data) return qkv__set_error(QKV_ERR_ARG, "--data: a text file or folder is required");
    if (o.init && o.tokenizer && !o.resume)
        return qkv__set_error(QKV_ERR_ARG, "--tokenizer: not allowed with --init (the tokenizer comes from %s)", o.init);
    if (o.init) o.tokenizer = NULL;
    else if (!o.tokenizer) o.tokenizer = "bytes";
    if (!o.init && (o.n_layer < 1 || o.n_layer > QKV_GPT_MAX_LAYERS))
        return qkv__set_error(QKV_ERR_RANGE, "--n-layer: %d must be in [1, %d]", o.n_layer, QKV_GPT_MAX_LAYERS);
    if (!o.init && (o.n_head < 1 || o.n_embd < 1 || o.n_embd > (1 << 16) || o.n_head > o.n_embd))
        return qkv__set_error(QKV_ERR_RANGE, "--n-head %d / --n-embd %lld: need 1 <= n_head <= n_embd <= 65536",
                              o.n_head, (long long)o.n_embd);
    if (!o.init && o.n_embd % o.n_head)
        return qkv__set_error(QKV_ERR_ARG, "--n-embd: %lld is not divisible by --n-head %d", (long long)o.n_embd, o.n_head);

    run_state r;
    memset(&r, 0, sizeof r);
    r.out = o.out;
    r.t0 = now_s();
    qkv_train_state *state = NULL;
    qkv_dataset *d = NULL;
    char *ckpt = NULL, *cache = NULL;
    int created_out = 0;
    struct stat sto;
    qkv_data_opts dopt = qkv_data_default_opts();
    dopt.paths = o.data;
    dopt.n_paths = o.n_data;
    dopt.exts = o.exts;
    dopt.val_fraction = o.val_fraction;
    dopt.note = o.note;
    dopt.note_user = o.user;

    /* 1. where we start from */
    if (o.resume) {
        ckpt = *o.resume ? strdup(o.resume) : qkv_train_latest_checkpoint(o.out);
        if (!ckpt) {
            s = *o.resume ? qkv__set_error(QKV_ERR_NOMEM, "--resume: out of memory") : QKV_ERR_IO;
            if (!*o.resume) prefix_error(s, "--resume");
            goto done;
        }
        if (!(state = qkv_train_state_load(ckpt))) {
            s = QKV_ERR_FORMAT;
            prefix_error(s, "--resume");
            goto done;
        }
        const qkv_train_opts *c = qkv_train_state_opts(state);
        if (o.lr <= 0) o.lr = c->lr;
        if ((s = check_resume_opts(&o, c, ckpt)) != QKV_OK) goto done;
        o.dropout = c->dropout;
        o.n_layer = c->n_layer, o.n_head = c->n_head, o.n_embd = c->n_embd;
        if (qkv_train_state_step(state) > o.steps) {
            s = qkv__set_error(QKV_ERR_RANGE, "--steps: %lld is fewer than the %lld steps %s already took",
                               (long long)o.steps, (long long)qkv_train_state_step(state), ckpt);
            goto done;
        }
    } else if (stat(o.out, &sto) == 0) {
        char what[300];
        if (!S_ISDIR(sto.st_mode)) {
            s = qkv__set_error(QKV_ERR_IO, "--out: %s exists and is not a folder", o.out);
            goto done;
        }
        if (holds_run(o.out, what, sizeof what)) {
            if (!o.overwrite) {
                s = qkv__set_error(QKV_ERR_STATE, "--out: %s already holds a training run (%s); continue it with "
                                   "--resume or start again with --overwrite", o.out, what);
                goto done;
            }
        }
    }

    /* 2. tokenizer and model (nothing is written before both are known to be good) */
    if (state) {
        r.tok = qkv_tokenizer_load_dir(ckpt);
        if (!r.tok) prefix_error(QKV_ERR_FORMAT, "--resume");
        else if (!(r.m = qkv_hf_gpt2_load(ckpt))) prefix_error(QKV_ERR_FORMAT, "--resume");
    } else if (o.init) {
        struct stat sti;
        if (stat(o.init, &sti) != 0 || !S_ISDIR(sti.st_mode)) {
            s = qkv__set_error(QKV_ERR_IO, "--init: %s: %s", o.init, stat(o.init, &sti) != 0 ? strerror(errno) : "not a folder");
            goto done;
        }
        r.tok = qkv_tokenizer_load_dir(o.init);
        if (!r.tok) prefix_error(QKV_ERR_FORMAT, "--init");
        else if (!(r.m = qkv_hf_gpt2_load(o.init))) prefix_error(QKV_ERR_FORMAT, "--init");
        else if (qkv_hf_check_vocab(r.m, r.tok) != QKV_OK) {
            prefix_error(QKV_ERR_RANGE, "--init");
            qkv_gpt_free(r.m), r.m = NULL;
        }
        if (r.m && o.block_size > qkv_gpt_get_config(r.m)->n_positions) {
            qkv__set_error(QKV_ERR_RANGE, "--block-size: %lld is larger than n_positions %lld of the --init model %s",
                           (long long)o.block_size, (long long)qkv_gpt_get_config(r.m)->n_positions, o.init);
            qkv_gpt_free(r.m), r.m = NULL;
        }
        if (r.m) {
            const qkv_gpt_config *c = qkv_gpt_get_config(r.m);
            o.n_layer = c->n_layer, o.n_head = c->n_head, o.n_embd = c->n_embd;
            if (o.dropout >= 0) r.m = with_dropout(r.m, o.dropout);
            else o.dropout = c->resid_pdrop;
        }
    } else {
        r.tok = make_tokenizer(&o, &dopt);
        if (r.tok) {
            qkv_gpt_config c = qkv_gpt_config_gpt2();
            c.vocab_size = qkv_tokenizer_vocab_size(r.tok);
            c.n_positions = o.block_size;
            c.n_embd = o.n_embd;
            c.n_layer = o.n_layer;
            c.n_head = o.n_head;
            if (o.dropout < 0) o.dropout = 0;
            c.embd_pdrop = c.attn_pdrop = c.resid_pdrop = o.dropout;
            c.bos_token_id = c.eos_token_id = qkv_tokenizer_eos(r.tok);
            r.m = qkv_gpt_new(&c, o.seed);
        }
    }
    if (!r.tok || !r.m) {
        s = QKV_ERR_ARG;
        goto done;
    }
    if (o.lr <= 0) o.lr = o.init ? 5e-5f : 1e-3f;

    /* 3. the output folder and the data */
    if (stat(o.out, &sto) != 0) created_out = 1;
    if ((s = make_dirs(o.out)) != QKV_OK) goto done;
    clear_run(o.out, !state && o.overwrite);
    if (!(cache = path_join(o.out, "tokens.bin"))) {
        s = QKV_ERR_NOMEM;
        goto done;
    }
    dopt.cache_path = cache;
    dopt.skip_dir = o.out; /* `--data . --out model` must not read its own checkpoints */
    if (!(d = qkv_dataset_build(&dopt, r.tok))) {
        s = QKV_ERR_ARG;
        goto done;
    }
    if (qkv_dataset_train_len(d) < o.block_size + 1) {
        s = qkv__set_error(QKV_ERR_RANGE, "data: %s%s gives %lld training tokens, fewer than one block needs "
                           "(--block-size %lld + 1)", o.data[0], o.n_data > 1 ? " ..." : "",
                           (long long)qkv_dataset_train_len(d), (long long)o.block_size);
        goto done;
    }
    if (o.val_fraction > 0 && qkv_dataset_val_len(d) < o.block_size + 1) {
        s = qkv__set_error(QKV_ERR_RANGE, "--val-fraction: the validation split has %lld tokens, fewer than one "
                           "block needs (--block-size %lld + 1); raise it or use 0 for no evaluation",
                           (long long)qkv_dataset_val_len(d), (long long)o.block_size);
        goto done;
    }
    if (o.epochs > 0 && !state) {
        double per_step = (double)(o.batch_size * o.block_size * o.grad_accum);
        double n = ceil(o.epochs * (double)qkv_dataset_train_len(d) / per_step);
        o.steps = n < 1 ? 1 : n > 1e12 ? (int64_t)1e12 : (int64_t)n;
    }

    /* 4. trainer, state, logs */
    if (!(r.t = qkv_trainer_new(r.m, d, &o))) {
        s = QKV_ERR_ARG;
        goto done;
    }
    int64_t hist_tr = state ? state->n_tr : 0, hist_ev = state ? state->n_ev : 0;
    r.cap_tr = o.steps + hist_tr + 1;
    r.cap_ev = (o.eval_every > 0 ? o.steps / o.eval_every : 0) + hist_ev + 2;
    r.tr = malloc(sizeof *r.tr * (size_t)r.cap_tr);
    r.ev = malloc(sizeof *r.ev * (size_t)r.cap_ev);
    r.log_path = path_join(o.out, "log.jsonl");
    r.svg_path = path_join(o.out, "loss.svg");
    if (!r.tr || !r.ev || !r.log_path || !r.svg_path) {
        s = qkv__set_error(QKV_ERR_NOMEM, "train: out of memory for the log history");
        goto done;
    }
    if (state) {
        if ((s = qkv_trainer_load_optimizer(r.t, ckpt)) != QKV_OK) {
            prefix_error(s, "--resume");
            goto done;
        }
        if (qkv_trainer_steps_done(r.t) != state->step) {
            s = qkv__set_error(QKV_ERR_FORMAT, "--resume: %s: the optimizer is at step %lld, the trainer state at %lld",
                               ckpt, (long long)qkv_trainer_steps_done(r.t), (long long)state->step);
            goto done;
        }
        for (int64_t i = 0; i < state->n_tr; i++)
            if (state->tr[i].step <= state->step) r.tr[r.n_tr++] = state->tr[i];
        for (int64_t i = 0; i < state->n_ev; i++)
            if (state->ev[i].step <= state->step) r.ev[r.n_ev++] = state->ev[i];
        qkv__note(o.note, o.user, "resuming from %s (step %lld of %lld)", ckpt, (long long)state->step, (long long)o.steps);
    }
    r.step0 = qkv_trainer_steps_done(r.t);
    r.o = &o;
    if ((s = open_log(&r, state != NULL)) != QKV_OK) goto done;

    /* 5. train, then the final model where `qkv generate --model OUT` finds it */
    if ((s = run_loop(&r)) != QKV_OK) goto done;
    if ((s = qkv_hf_gpt2_save(r.m, o.out)) != QKV_OK || (s = qkv_tokenizer_save_dir(r.tok, o.out)) != QKV_OK) goto done;
    qkv_train_event end = {.kind = QKV_TRAIN_EV_END, .step = qkv_trainer_steps_done(r.t), .total_steps = o.steps,
                           .elapsed = now_s() - r.t0};
    emit(&o, &end);
done:
    if (r.log) fclose(r.log);
    if (s != QKV_OK && created_out) { /* a run that failed before its first step leaves nothing behind */
        if (!r.tr || r.n_tr == 0) {
            if (cache) remove(cache);
            if (r.log_path) remove(r.log_path);
            rmdir(o.out);
        }
    }
    qkv_trainer_free(r.t);
    qkv_dataset_free(d);
    qkv_gpt_free(r.m);
    qkv_tokenizer_free(r.tok);
    qkv_train_state_free(state);
    free(r.tr);
    free(r.ev);
    free(r.log_path);
    free(r.svg_path);
    free(ckpt);
    free(cache);
    return s;
}

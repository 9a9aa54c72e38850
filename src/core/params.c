/* params.c — a model's parameters as one contiguous float block, each tensor a named, aligned slice;
 * the gradients as a second block of the same layout.
 *
 * Two phases: declare every tensor (qkv_params_add), then allocate once (qkv_params_alloc). Modules
 * keep the qkv_tensor pointers they got at declaration; those pointers stay valid for the life of
 * the block. Optimizers, checkpoints and (later) gradient all-reduce work on the whole block.
 * Not here: file formats (src/io/), initialisation schemes beyond the simple kinds in qkv_init.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"

#define SLICE_ALIGN 16 /* floats: every tensor starts on a 64-byte boundary */

typedef struct {
    qkv_tensor t;
    int64_t offset; /* in floats, into the blocks */
    qkv_init init;
    int no_decay;
} param_entry;

struct qkv_params {
    param_entry **e;
    int n, cap;
    int64_t numel, numel_real;
    float *data, *grad;
    size_t bytes; /* of each block */
};

/* A zero-filled, 64-byte-aligned block. Large blocks are anonymous mappings (qkv__big_alloc): the
 * kernel hands out zero pages as they are first written, so a gradient block that inference never
 * touches costs no memory (GPT-2 124M: 475 MiB of resident memory and the time to clear it, saved
 * per model load). */

static float *block_alloc(size_t bytes) {
    float *b = qkv__big_alloc(bytes);
    if (b && bytes < QKV__BIG_MIN_BYTES) memset(b, 0, bytes);
    return b;
}

static void block_free(float *b, size_t bytes) { qkv__big_free(b, bytes); }

qkv_params *qkv_params_new(void) {
    qkv_params *p = calloc(1, sizeof *p);
    if (!p) qkv__set_error(QKV_ERR_NOMEM, "qkv_params_new: out of memory");
    return p;
}

void qkv_params_free(qkv_params *p) {
    if (!p) return;
    for (int i = 0; i < p->n; i++) {
        free((char *)p->e[i]->t.name);
        free(p->e[i]);
    }
    free(p->e);
    block_free(p->data, p->bytes);
    block_free(p->grad, p->bytes);
    free(p);
}

qkv_tensor *qkv_params_add(qkv_params *p, const char *name, int ndim, const int64_t *shape, qkv_init init,
                           int no_decay) {
    if (!p || !name) {
        qkv__set_error(QKV_ERR_ARG, "qkv_params_add: NULL argument");
        return NULL;
    }
    if (p->data) {
        qkv__set_error(QKV_ERR_STATE, "qkv_params_add: '%s' declared after the block was allocated", name);
        return NULL;
    }
    if (ndim < 1 || ndim > QKV_MAX_DIMS) {
        qkv__set_error(QKV_ERR_SHAPE, "qkv_params_add: '%s' has %d dimensions (1..%d)", name, ndim, QKV_MAX_DIMS);
        return NULL;
    }
    int64_t n = 1;
    for (int i = 0; i < ndim; i++) {
        if (shape[i] <= 0 || shape[i] > ((int64_t)1 << 40)) {
            qkv__set_error(QKV_ERR_SHAPE, "qkv_params_add: '%s' dimension %d is %lld", name, i,
                           (long long)shape[i]);
            return NULL;
        }
        n *= shape[i];
    }
    if (qkv_params_find(p, name)) {
        qkv__set_error(QKV_ERR_ARG, "qkv_params_add: duplicate parameter name '%s'", name);
        return NULL;
    }
    if (p->n == p->cap) {
        int cap = p->cap ? p->cap * 2 : 32;
        param_entry **e = realloc(p->e, sizeof *e * (size_t)cap);
        if (!e) goto oom;
        p->e = e;
        p->cap = cap;
    }
    param_entry *pe = calloc(1, sizeof *pe);
    char *nm = strdup(name);
    if (!pe || !nm) {
        free(pe);
        free(nm);
        goto oom;
    }
    pe->t.name = nm;
    pe->t.ndim = ndim;
    for (int i = 0; i < QKV_MAX_DIMS; i++) pe->t.shape[i] = i < ndim ? shape[i] : 1;
    pe->t.requires_grad = 1;
    pe->offset = p->numel;
    pe->init = init;
    pe->no_decay = no_decay;
    p->numel += (n + SLICE_ALIGN - 1) / SLICE_ALIGN * SLICE_ALIGN;
    p->numel_real += n;
    p->e[p->n++] = pe;
    return &pe->t;
oom:
    qkv__set_error(QKV_ERR_NOMEM, "qkv_params_add: out of memory adding '%s'", name);
    return NULL;
}

/* Initial values, in chunks of INIT_CHUNK floats, each drawn from its own stream seeded by (seed,
 * tensor, chunk): the chunks run in parallel and the values do not depend on the thread count.
 * Normal deviates come in Box-Muller pairs (both the cosine and the sine are used). GPT-2 124M's
 * init went from 6-9 s (one stream, one deviate per pair) to 1.8 s on 2 threads, page faults of the
 * fresh 475 MiB block included. */
#define INIT_CHUNK 65536

static void init_chunk(float *x, int64_t n, qkv_init init, uint64_t seed, int tensor, int64_t chunk) {
    const float a = init.a;
    switch (init.kind) {
    case QKV_INIT_ZEROS: memset(x, 0, (size_t)n * sizeof *x); return;
    case QKV_INIT_ONES:
        for (int64_t j = 0; j < n; j++) x[j] = 1.0f;
        return;
    default: break;
    }
    qkv_rng r;
    qkv_rng_seed(&r, seed ^ ((uint64_t)tensor << 40) ^ ((uint64_t)chunk * 0x9E3779B97F4A7C15ull));
    if (init.kind == QKV_INIT_UNIFORM) {
        for (int64_t j = 0; j < n; j++) x[j] = a * (2.0f * qkv_rng_uniform(&r) - 1.0f);
        return;
    }
    for (int64_t j = 0; j < n; j += 2) {
        double rad, th;
        qkv__rng_box_muller(&r, &rad, &th);
        x[j] = a * (float)(rad * cos(th));
        if (j + 1 < n) x[j + 1] = a * (float)(rad * sin(th));
    }
}

static void init_values(qkv_params *p, uint64_t seed) {
    int64_t total = 0; /* chunks over all tensors */
    for (int i = 0; i < p->n; i++) {
        param_entry *pe = p->e[i];
        pe->t.data = p->data + pe->offset;
        pe->t.grad = p->grad + pe->offset;
        total += (qkv_tensor_numel(&pe->t) + INIT_CHUNK - 1) / INIT_CHUNK;
    }
#pragma omp parallel for schedule(dynamic, 4) if (total > 4)
    for (int64_t c = 0; c < total; c++) {
        int64_t k = c; /* find the tensor and the chunk within it */
        int i = 0;
        int64_t nch = 0;
        for (; i < p->n; i++) {
            nch = (qkv_tensor_numel(&p->e[i]->t) + INIT_CHUNK - 1) / INIT_CHUNK;
            if (k < nch) break;
            k -= nch;
        }
        param_entry *pe = p->e[i];
        const int64_t n = qkv_tensor_numel(&pe->t), j0 = k * INIT_CHUNK;
        init_chunk(pe->t.data + j0, n - j0 < INIT_CHUNK ? n - j0 : INIT_CHUNK, pe->init, seed, i, k);
    }
}

qkv_status qkv_params_alloc(qkv_params *p, uint64_t seed) {
    if (!p) return qkv__set_error(QKV_ERR_ARG, "qkv_params_alloc: NULL block");
    if (p->data) return qkv__set_error(QKV_ERR_STATE, "qkv_params_alloc: already allocated");
    size_t bytes = (size_t)(p->numel > 0 ? p->numel : SLICE_ALIGN) * sizeof(float);
    p->data = block_alloc(bytes);
    p->grad = block_alloc(bytes);
    if (!p->data || !p->grad) {
        block_free(p->data, bytes);
        block_free(p->grad, bytes);
        p->data = p->grad = NULL;
        return qkv__set_error(QKV_ERR_NOMEM, "qkv_params_alloc: cannot allocate 2 x %zu bytes", bytes);
    }
    p->bytes = bytes;
    init_values(p, seed);
    return QKV_OK;
}

int qkv_params_count(const qkv_params *p) { return p ? p->n : 0; }
int64_t qkv_params_numel(const qkv_params *p) { return p ? p->numel : 0; }
int64_t qkv_params_numel_real(const qkv_params *p) { return p ? p->numel_real : 0; }
qkv_tensor *qkv_params_get(const qkv_params *p, int i) {
    return (p && i >= 0 && i < p->n) ? &p->e[i]->t : NULL;
}
int qkv_params_no_decay(const qkv_params *p, int i) { return (p && i >= 0 && i < p->n) ? p->e[i]->no_decay : 0; }

qkv_tensor *qkv_params_find(const qkv_params *p, const char *name) {
    if (!p || !name) return NULL;
    for (int i = 0; i < p->n; i++)
        if (strcmp(p->e[i]->t.name, name) == 0) return &p->e[i]->t;
    return NULL;
}

float *qkv_params_data(const qkv_params *p) { return p ? p->data : NULL; }
float *qkv_params_grad(const qkv_params *p) { return p ? p->grad : NULL; }

void qkv_params_zero_grad(qkv_params *p) {
    if (p && p->grad) memset(p->grad, 0, (size_t)p->numel * sizeof(float));
}

void qkv_params_set_trainable(qkv_params *p, int i, int trainable) {
    if (p && i >= 0 && i < p->n) p->e[i]->t.requires_grad = trainable != 0;
}

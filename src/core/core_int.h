/* core_int.h — what the core shares with the op implementations and nothing else: the context
 * struct, tape nodes, and the helpers every op uses to validate inputs, allocate outputs, record
 * its backward and report errors.
 *
 * How an op is written (see src/ops/ for many):
 *     qkv_tensor *in[2] = {a, b};
 *     if (!qkv__check(ctx, "add", 2, in)) return NULL;          // NULL inputs, sticky error, NaN scan
 *     ...shape checks with qkv__fail(ctx, QKV_ERR_SHAPE, "add: ...")...
 *     qkv_tensor *out = qkv__empty(ctx, a->ndim, a->shape);     // uninitialised output
 *     ...forward kernel...
 *     qkv__node *n = qkv__record(ctx, "add", add_backward, out, 2, in, sizeof(saved));
 *     // n is NULL when no gradient is wanted (inference mode or no input requires grad)
 * and the backward, beside it, reads out->grad and accumulates into qkv__grad(ctx, in[i]) for each
 * input with requires_grad.
 */
#ifndef QKV_CORE_INT_H
#define QKV_CORE_INT_H

#include <stdarg.h>
#include <stdio.h>

#include "qkv/core.h"

typedef struct qkv__chunk {
    struct qkv__chunk *next;
    size_t size, used;
    unsigned char *base;
} qkv__chunk;

typedef struct qkv__node qkv__node;
typedef void (*qkv__backward_fn)(qkv_ctx *ctx, qkv__node *n);

struct qkv__node {
    qkv__backward_fn backward;
    const char *op;
    qkv_tensor *out;
    qkv_tensor **in; /* n_in entries, arena memory */
    int n_in;
    void *saved;     /* op-specific, arena memory, saved_bytes zeroed */
    qkv__node *prev;
};

struct qkv_ctx {
    qkv__chunk *chunks; /* current chunk first */
    size_t used_total;  /* bytes handed out since reset (across chunks) */
    size_t peak;
    size_t capacity;
    qkv__node *tape; /* last recorded node */
    int grad_enabled, training, check_finite;
    qkv_rng rng;
    qkv_status status;
    char err[512];
};

/* Arena allocation, 64-byte aligned, uninitialised. NULL + ctx error when out of memory. */
void *qkv__alloc(qkv_ctx *ctx, size_t bytes);

/* Sets the ctx error if none is set yet; returns 0 so callers can `return qkv__fail(...)` in int
 * functions. printf-style message; by convention it starts with the op name. */
int qkv__fail(qkv_ctx *ctx, qkv_status s, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
/* Same for errors outside a context: kept per thread, read by qkv_last_error(). Returns s. */
qkv_status qkv__set_error(qkv_status s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Box-Muller from two draws of r (rng.c): radius sqrt(-2 ln u1), angle 2 pi u2; radius * cos(angle)
 * and radius * sin(angle) are two independent N(0,1) deviates (qkv_rng_normal uses the cosine). */
void qkv__rng_box_muller(qkv_rng *r, double *radius, double *angle);

/* Large blocks (mem.c): at least QKV__BIG_MIN_BYTES come from an anonymous mapping (zero-filled,
 * page-aligned) advised for transparent huge pages, smaller ones from aligned_alloc (64-byte aligned,
 * not cleared). Free with the same size. Huge pages cut the page faults of a first training step
 * 512-fold, and a fault is expensive in a virtual machine. */
#define QKV__BIG_MIN_BYTES ((size_t)1 << 20)
void *qkv__big_alloc(size_t bytes);
void qkv__big_free(void *p, size_t bytes);

/* Writes path atomically (file.c): write(f, arg) fills a temporary beside it (returning nonzero on
 * failure), which is fsync'ed and renamed over path; on any failure the temporary is removed, path is
 * untouched and the thread error names path. */
qkv_status qkv__write_file_atomic(const char *path, int (*write)(FILE *f, const void *arg), const void *arg);

/* Entry check for an op: 0 when the ctx is already in error or an input is NULL (sets "op: input i
 * is NULL" unless an error is already set), or, with check_finite on, an input holds NaN/Inf
 * (sets "op: input i (shape) contains NaN at index j"). NULL entries are allowed where the op
 * documents an optional input only if the caller passes n excluding them. */
int qkv__check(qkv_ctx *ctx, const char *op, int n, qkv_tensor *const *in);
/* Checks a raw float array for NaN/Inf when check_finite is on (used for kernel outputs in tests). */
int qkv__check_finite(qkv_ctx *ctx, const char *op, const char *what, const float *x, int64_t n);

/* Output tensor, uninitialised (qkv_tensor_new zero-fills). */
qkv_tensor *qkv__empty(qkv_ctx *ctx, int ndim, const int64_t *shape);
/* 1 when the op must record: grad enabled and some input requires grad. */
int qkv__wants_grad(const qkv_ctx *ctx, int n, qkv_tensor *const *in);
/* Records a node when qkv__wants_grad; sets out->requires_grad. Copies the input pointers (NULL
 * entries allowed, e.g. an absent bias). Returns the node (saved zeroed, saved_bytes long) or NULL
 * when nothing is recorded or on out-of-memory (then the ctx is in error: check qkv_ctx_status). */
qkv__node *qkv__record(qkv_ctx *ctx, const char *op, qkv__backward_fn bw, qkv_tensor *out, int n,
                       qkv_tensor *const *in, size_t saved_bytes);
/* The gradient buffer of t, allocated zeroed in the arena on first use. NULL on out-of-memory. */
float *qkv__grad(qkv_ctx *ctx, qkv_tensor *t);

/* A seed for one random op (dropout): drawn from the ctx RNG so the sequence of ops fixes the masks. */
uint64_t qkv__next_seed(qkv_ctx *ctx);
/* Counter-based uniform in [0,1) for element i of a stream: the same (seed, i) always gives the same
 * number, so masks are identical whatever the thread count and can be recomputed in backward. */
static inline float qkv__hash_uniform(uint64_t seed, uint64_t i) {
    uint64_t z = seed + 0x9E3779B97F4A7C15ull * (i + 1);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    z ^= z >> 31;
    return (float)(z >> 40) * (1.0f / 16777216.0f);
}

/* Shapes equal (ndim and every dim). */
int qkv__same_shape(const qkv_tensor *a, const qkv_tensor *b);
/* Short-lived shape string for messages: uses one of 4 rotating thread-local buffers. */
const char *qkv__shp(const qkv_tensor *t);

#endif

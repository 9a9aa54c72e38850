/* qkv/core.h — status codes, the context (arena + autograd tape), tensors, parameter blocks, RNG.
 *
 * This is the bottom of the public API. It is not a general array library: tensors are float32,
 * contiguous, row-major, up to 4 dimensions (PyTorch order: B, T, C ...). Reshape is a view; a head
 * split never copies because the attention kernels read heads straight out of (B,T,H*D).
 *
 * Convention a reader needs: every differentiable op takes a qkv_ctx first and returns a new tensor
 * allocated from the context's arena, or NULL on error. Errors are sticky: once an op fails, the
 * context holds the message and every later op returns NULL at once, so model code can be written as
 * straight-line forward code and checked once at the end (qkv_ctx_status).
 *
 * Ownership: tensors returned by ops live in the ctx arena and die at qkv_ctx_reset(). Parameter
 * tensors live in a qkv_params block and die with qkv_params_free(). Every _free accepts NULL.
 * Thread-safety: one qkv_ctx per thread of control; kernels use OpenMP internally.
 */
#ifndef QKV_CORE_H
#define QKV_CORE_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QKV_VERSION "0.1.0"
#define QKV_MAX_DIMS 4

/* ---- status codes (one table: code, name, meaning) ---- */
#define QKV_STATUS_MAP(X)                                  \
    X(OK, "ok")                                            \
    X(ERR_ARG, "invalid argument")                         \
    X(ERR_SHAPE, "shape mismatch")                         \
    X(ERR_RANGE, "value out of range")                     \
    X(ERR_NONFINITE, "non-finite value (NaN or Inf)")      \
    X(ERR_NOMEM, "out of memory")                          \
    X(ERR_IO, "input/output error")                        \
    X(ERR_FORMAT, "malformed file")                        \
    X(ERR_STATE, "invalid state")

typedef enum {
#define QKV__STATUS_ENUM(name, msg) QKV_##name,
    QKV_STATUS_MAP(QKV__STATUS_ENUM)
#undef QKV__STATUS_ENUM
} qkv_status;

/* Short English text for a status code ("shape mismatch"). Never NULL. */
const char *qkv_status_str(qkv_status s);

/* The detailed message of the last error raised on this thread outside a context (params, io).
 * Empty string when none. Valid until the next failing call on this thread. */
const char *qkv_last_error(void);

/* ---- tensors ---- */
typedef struct qkv_tensor {
    float *data;                   /* contiguous row-major values */
    float *grad;                   /* same layout; NULL until a gradient is needed */
    int64_t shape[QKV_MAX_DIMS];   /* unused trailing entries are 1 */
    int ndim;                      /* 0 (scalar) .. 4 */
    int requires_grad;             /* gradient wanted for this tensor */
    const char *name;              /* parameter name (HF/PyTorch state-dict key) or op name */
} qkv_tensor;

/* Number of elements (1 for a scalar). */
int64_t qkv_tensor_numel(const qkv_tensor *t);
/* Writes "(2,3,4)" into buf (always NUL-terminated); returns buf. */
char *qkv_tensor_shape_str(const qkv_tensor *t, char *buf, size_t size);

/* ---- context: arena memory for activations + the autograd tape ---- */
typedef struct qkv_ctx qkv_ctx;

/* Creates a context whose arena starts with arena_bytes (0: 64 MiB). The arena grows on demand in
 * the first steps; after a reset it holds one block as large as the peak, so a steady training loop
 * never allocates. Returns NULL when out of memory (qkv_last_error says so). */
qkv_ctx *qkv_ctx_new(size_t arena_bytes);
void qkv_ctx_free(qkv_ctx *ctx);
/* Frees every tensor made since the last reset and clears the tape. Keeps the error state. */
void qkv_ctx_reset(qkv_ctx *ctx);

/* Gradient recording (default on). Off = inference mode: no tape, no saved activations. */
void qkv_ctx_set_grad(qkv_ctx *ctx, int enabled);
int qkv_ctx_grad_enabled(const qkv_ctx *ctx);
/* Training mode (default off): dropout is active only in training mode. */
void qkv_ctx_set_training(qkv_ctx *ctx, int training);
int qkv_ctx_training(const qkv_ctx *ctx);
/* When on (default), every op checks its float inputs for NaN/Inf and fails naming the op. */
void qkv_ctx_set_check_finite(qkv_ctx *ctx, int enabled);
/* Seeds the context's RNG (dropout masks). Default seed 0. */
void qkv_ctx_seed(qkv_ctx *ctx, uint64_t seed);

qkv_status qkv_ctx_status(const qkv_ctx *ctx);
/* Detailed message of the first error since the last clear ("matmul: inner dims differ: a (2,3) b (4,5)"). */
const char *qkv_ctx_error(const qkv_ctx *ctx);
void qkv_ctx_clear_error(qkv_ctx *ctx);

/* Bytes currently used / peak bytes used / bytes reserved by the arena. */
size_t qkv_ctx_arena_used(const qkv_ctx *ctx);
size_t qkv_ctx_arena_peak(const qkv_ctx *ctx);
size_t qkv_ctx_arena_capacity(const qkv_ctx *ctx);
/* Raw aligned (64 B) scratch memory from the arena; NULL (and ctx error) when out of memory. */
void *qkv_ctx_alloc(qkv_ctx *ctx, size_t bytes);

/* New zero-filled tensor in the arena. shape has ndim entries (each >= 1). requires_grad = 0. */
qkv_tensor *qkv_tensor_new(qkv_ctx *ctx, int ndim, const int64_t *shape);
qkv_tensor *qkv_tensor_new1(qkv_ctx *ctx, int64_t d0);
qkv_tensor *qkv_tensor_new2(qkv_ctx *ctx, int64_t d0, int64_t d1);
qkv_tensor *qkv_tensor_new3(qkv_ctx *ctx, int64_t d0, int64_t d1, int64_t d2);
qkv_tensor *qkv_tensor_new4(qkv_ctx *ctx, int64_t d0, int64_t d1, int64_t d2, int64_t d3);
/* New tensor holding a copy of data (numel floats). */
qkv_tensor *qkv_tensor_from(qkv_ctx *ctx, int ndim, const int64_t *shape, const float *data);
/* A tensor header in the arena that points at caller memory (no copy): data must hold numel floats
 * and outlive every use of the tensor. requires_grad = 0 and no gradient, so ops treat it as a
 * constant input (how a KV cache is handed to qkv_attention). NULL (ctx error) on a bad shape or a
 * NULL data pointer. */
qkv_tensor *qkv_tensor_wrap(qkv_ctx *ctx, int ndim, const int64_t *shape, float *data);

/* Runs the tape backwards from a scalar (numel 1) loss: loss->grad = 1 and every tensor on the path
 * that requires grad receives d loss / d tensor, accumulated (+=) into its grad. Parameter gradients
 * accumulate across calls until qkv_params_zero_grad (gradient accumulation); activation gradients
 * die at the next reset. Returns QKV_OK or the ctx error. */
qkv_status qkv_backward(qkv_ctx *ctx, qkv_tensor *loss);

/* ---- RNG: xoshiro256** seeded by splitmix64; same seed, same stream on every machine ---- */
typedef struct qkv_rng {
    uint64_t s[4];
} qkv_rng;
void qkv_rng_seed(qkv_rng *r, uint64_t seed);
uint64_t qkv_rng_u64(qkv_rng *r);
/* Uniform in [0,1) with 24 random bits. */
float qkv_rng_uniform(qkv_rng *r);
/* Standard normal (Box–Muller). */
float qkv_rng_normal(qkv_rng *r);

/* ---- parameter blocks: every parameter of a model in one contiguous float block ---- */
typedef enum {
    QKV_INIT_ZEROS,
    QKV_INIT_ONES,
    QKV_INIT_NORMAL,   /* N(0, a^2) */
    QKV_INIT_UNIFORM,  /* U(-a, a) */
} qkv_init_kind;

typedef struct qkv_init {
    qkv_init_kind kind;
    float a;
} qkv_init;

typedef struct qkv_params qkv_params;

qkv_params *qkv_params_new(void);
void qkv_params_free(qkv_params *p);
/* Declares a parameter (before qkv_params_alloc). The returned tensor is owned by p; its data and
 * grad point into the blocks once allocated. no_decay: excluded from AdamW weight decay (biases,
 * LayerNorm). Returns NULL on a bad shape, a duplicate name or after alloc (qkv_last_error). */
qkv_tensor *qkv_params_add(qkv_params *p, const char *name, int ndim, const int64_t *shape, qkv_init init,
                           int no_decay);
/* Allocates the value and gradient blocks (64-byte aligned, each tensor's slice aligned too) and
 * fills every value by its init. Random values come in chunks of 65536 per tensor, each chunk from
 * its own stream seeded by (seed, tensor index in declaration order, chunk): filled in parallel, and
 * the same for a given seed and declaration whatever the thread count. */
qkv_status qkv_params_alloc(qkv_params *p, uint64_t seed);

int qkv_params_count(const qkv_params *p);          /* number of tensors */
int64_t qkv_params_numel(const qkv_params *p);      /* number of floats in the value block (with padding) */
int64_t qkv_params_numel_real(const qkv_params *p); /* sum of tensor sizes (no padding) */
qkv_tensor *qkv_params_get(const qkv_params *p, int i);
qkv_tensor *qkv_params_find(const qkv_params *p, const char *name);
int qkv_params_no_decay(const qkv_params *p, int i);
float *qkv_params_data(const qkv_params *p);
float *qkv_params_grad(const qkv_params *p);
void qkv_params_zero_grad(qkv_params *p);
/* Freezes (requires_grad = 0) or unfreezes a parameter. */
void qkv_params_set_trainable(qkv_params *p, int i, int trainable);

#ifdef __cplusplus
}
#endif
#endif

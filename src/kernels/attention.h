/* attention.h — the fused multi-head attention kernel: scaled dot-product attention with causal and
 * key-padding masks, dropout on the probabilities, forward and backward, heads read in place.
 *
 *   q (B,Tq,H*D), k (B,Tk,H*D), v (B,Tk,H*Dv) -> out (B,Tq,H*Dv), lse (B,H,Tq)
 *   out[b,i,h] = dropout(softmax_j(scale * q[b,i,h] . k[b,j,h] + mask)) v[b,j,h]
 *
 * Head h of a row is channels [h*D, (h+1)*D): nothing is ever copied into (B,H,T,D) (a kernel that
 * re-reads a 64-row block packs that block into its thread's workspace).
 *
 * What it is not: an op. There is no shape checking and no error reporting (the op in
 * src/ops/attention.c has already validated everything; a bad argument here is a bug), and no
 * allocation: the caller hands in a workspace of qkv__attention_ws_bytes() bytes.
 *
 * Convention a reader needs: without weights the forward never holds more than one Bq x Bk tile of
 * scores per thread (FlashAttention: online softmax over key blocks), and keeps only the per-row
 * logsumexp of the scores, lse (B,H,Tq); the backward recomputes the probabilities from it. A query
 * row whose keys are all blocked gets out = 0, lse = -inf and zero gradients.
 *
 * Masks: query i sees key j iff j <= i + (Tk - Tq) when causal (aligned at the end, as a decoder
 * with a KV cache needs) and key_padding_mask[b*Tk + j] == 0.
 * Dropout: element (b,h,i,j) is kept iff qkv__hash_uniform(seed, ((b*H+h)*Tq+i)*Tk+j) >= p and kept
 * probabilities are scaled by 1/(1-p); the backward recomputes the same mask from the seed.
 *
 * Threads: OpenMP over (b, h, query block) in the forward. The backward runs over (b, h) pairs when
 * there are at least QKV__ATTN_FUSED_MIN_BH of them, else one pass over query blocks (dq) and one
 * over key blocks (dk, dv). Either way every output row has one owner and is summed in a fixed order,
 * and the path depends on the shape only: the result is bit-identical for any thread count. Called
 * from inside a parallel region the kernels run on the calling thread.
 */
#ifndef QKV_KERNELS_ATTENTION_H
#define QKV_KERNELS_ATTENTION_H

#include <stddef.h>
#include <stdint.h>

/* Query rows and key rows per tile. */
#define QKV__ATTN_BQ 64
#define QKV__ATTN_BK 64
/* The backward runs one fused pass per (b,h) pair when B*H is at least this (enough pairs to keep
 * the threads of a small machine busy), else a dq pass and a dk/dv pass. */
#define QKV__ATTN_FUSED_MIN_BH 8

typedef enum {
    QKV__ATTN_ISA_AUTO = 0, /* AVX-512 when the CPU has it (and QKV_ATTN_ISA is not "scalar") */
    QKV__ATTN_ISA_SCALAR,   /* plain C tiles (the fast path's reference, same tiling) */
} qkv__attn_isa;

typedef struct qkv__attn {
    int64_t B, Tq, Tk, H, D, Dv;
    float scale;                      /* multiplies q . k; the op resolves 0 to 1/sqrt(D) */
    int causal;
    const uint8_t *key_padding_mask;  /* (B,Tk), nonzero = blocked; NULL = none */
    float dropout;                    /* p in [0,1); 0 = no dropout */
    uint64_t seed;                    /* dropout stream */
    int nthreads;                     /* >= 1; the workspace is sized for this many threads */
    qkv__attn_isa isa;
} qkv__attn;

/* Workspace bytes for qkv__attention_forward / _backward with these arguments (the same value
 * serves both). O(nthreads * tile + B*H*Tq): never quadratic in T. No alignment is required. */
size_t qkv__attention_ws_bytes(const qkv__attn *a);

/* Forward. out (B,Tq,H*Dv) is overwritten; lse (B,H,Tq) is written when non-NULL (the backward
 * needs it). weights NULL: tiled online softmax. weights non-NULL: the probabilities (B,H,Tq,Tk)
 * (post-softmax, pre-dropout) are materialised there and out is computed from them. */
void qkv__attention_forward(const qkv__attn *a, const float *q, const float *k, const float *v, float *out,
                            float *lse, float *weights, void *ws);

/* Backward: accumulates (+=) dq (B,Tq,H*D), dk (B,Tk,H*D), dv (B,Tk,H*Dv) from dout (B,Tq,H*Dv),
 * given the forward's out and lse. Any of dq, dk, dv may be NULL (not wanted). weights: the
 * probabilities the forward stored, or NULL to recompute them from lse. dq, dk and dv may alias one
 * another (self-attention on one tensor): a row of one (b, h) is only ever updated by one thread at
 * a time, whichever buffer it lands in. */
void qkv__attention_backward(const qkv__attn *a, const float *q, const float *k, const float *v, const float *out,
                             const float *lse, const float *weights, const float *dout, float *dq, float *dk,
                             float *dv, void *ws);

/* Name of the tile path the arguments select: "avx512" or "scalar". */
const char *qkv__attention_isa_name(const qkv__attn *a);

/* x[i] = exp(x[i]) with the vectorised exp the AVX-512 tiles use (expf on the scalar path); for tests. */
void qkv__attention_vexp(const qkv__attn *a, float *x, int64_t n);

/* Reference: materialises the probabilities row by row, accumulates in double, single-threaded,
 * malloc'd scratch. Same masks, dropout and fully-blocked-row convention. weights may be NULL. */
void qkv__attention_ref(const qkv__attn *a, const float *q, const float *k, const float *v, float *out,
                        float *weights);
/* Reference backward: accumulates (+=) into dq, dk, dv (each may be NULL), recomputing everything. */
void qkv__attention_ref_backward(const qkv__attn *a, const float *q, const float *k, const float *v,
                                 const float *dout, float *dq, float *dk, float *dv);

#endif /* QKV_KERNELS_ATTENTION_H */

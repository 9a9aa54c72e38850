/* test_ops_grad.c — finite-difference gradient check of every op in ops.h except attention's
 * (test_attention covers those): one table, one entry per op and per variant (transposes, batching,
 * broadcasts, optional inputs), run through tests/gradcheck.h.
 *
 * Not a test of forward values (test_ops_ref.c) or of bad input (test_ops_bad_input.c).
 *
 * Tolerance: GC_TOL from gradcheck.h (1e-2 on the normalised max error, with h = 1e-2): the float32
 * forward makes the central difference accurate to ~1e-5 and its truncation term to ~1e-4, while a
 * wrong term in a backward shows as an O(1) error. Inputs of ReLU are drawn away from the kink.
 * Adding an op adds one entry to the table in main. The table runs twice: on the kernel path the CPU
 * selects (AVX-512 here) and on the plain reference loops, so both backward paths are checked.
 */

#include "gradcheck.h"

#include "core/core_int.h" /* qkv__grad: gives a gradcheck input the gradient buffer qkv_rows shares */
#include "kernels/ew.h"     /* qkv__ew_force_scalar: the table runs on the fast path and the reference loops */

/* ---- forward functions: inputs from the harness, constants from user ---- */

typedef struct {
    int ta, tb;
} mm_args;

static qkv_tensor *f_matmul(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    const mm_args *a = u;
    return qkv_matmul(ctx, in[0], in[1], a->ta, a->tb);
}
static qkv_tensor *f_linear(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_linear(ctx, in[0], in[1], in[2]); }
static qkv_tensor *f_linear_nobias(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_linear(ctx, in[0], in[1], NULL);
}
static qkv_tensor *f_conv1d(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_conv1d(ctx, in[0], in[1], in[2], NULL); }
static qkv_tensor *f_conv1d_res(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_conv1d(ctx, in[0], in[1], in[2], in[3]);
}
static qkv_tensor *f_linear_res(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_linear_residual(ctx, in[0], in[1], in[2], in[3]);
}
static qkv_tensor *f_linear_res_nobias(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_linear_residual(ctx, in[0], in[1], NULL, in[2]);
}
static qkv_tensor *f_conv1d_res_nobias(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_conv1d(ctx, in[0], in[1], NULL, in[2]);
}
static qkv_tensor *f_add(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_add(ctx, in[0], in[1]); }
static qkv_tensor *f_sub(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_sub(ctx, in[0], in[1]); }
static qkv_tensor *f_mul(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_mul(ctx, in[0], in[1]); }
static qkv_tensor *f_square(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_mul(ctx, in[0], in[0]); }
static qkv_tensor *f_scale(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_scale(ctx, in[0], -1.7f); }
static qkv_tensor *f_relu(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_relu(ctx, in[0]); }
static qkv_tensor *f_gelu(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_gelu(ctx, in[0], 0); }
static qkv_tensor *f_gelu_tanh(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_gelu(ctx, in[0], 1); }
static qkv_tensor *f_tanh(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_tanh(ctx, in[0]); }
static qkv_tensor *f_sigmoid(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_sigmoid(ctx, in[0]); }
/* Re-seeded on every evaluation, so the analytic pass and every finite-difference pass draw the
 * same mask. */
static qkv_tensor *f_dropout(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    qkv_ctx_seed(ctx, 1234);
    qkv_ctx_set_training(ctx, 1);
    return qkv_dropout(ctx, in[0], 0.3f);
}
static qkv_tensor *f_softmax(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_softmax(ctx, in[0]); }
static qkv_tensor *f_log_softmax(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_log_softmax(ctx, in[0]); }
static qkv_tensor *f_layernorm(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_layernorm(ctx, in[0], in[1], in[2], 1e-5f);
}
static qkv_tensor *f_layernorm_plain(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_layernorm(ctx, in[0], NULL, NULL, 1e-5f);
}
static qkv_tensor *f_layernorm_w(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    return qkv_layernorm(ctx, in[0], in[1], NULL, 1e-5f);
}
static qkv_tensor *f_sum(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_sum(ctx, in[0]); }
static qkv_tensor *f_mean(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_mean(ctx, in[0]); }

typedef struct {
    const int32_t *ids;
    int ndim;
    int64_t shape[3];
} ids_args;

static qkv_tensor *f_embedding(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    const ids_args *a = u;
    return qkv_embedding(ctx, in[0], a->ids, a->ndim, a->shape);
}
static qkv_tensor *f_cross_entropy(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    const ids_args *a = u;
    return qkv_cross_entropy(ctx, in[0], a->ids, -100);
}
static qkv_tensor *f_reshape(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    /* a view feeding a real op, so the view's gradient must travel back through reshape's node */
    return qkv_tanh(ctx, qkv_reshape(ctx, in[0], 2, (int64_t[]){-1, 6}));
}
static qkv_tensor *f_transpose02(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_transpose(ctx, in[0], 0, 2); }
static qkv_tensor *f_transpose12(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_transpose(ctx, in[0], 2, 1); }
static qkv_tensor *f_concat(qkv_ctx *ctx, qkv_tensor **in, void *u) { return qkv_concat(ctx, 3, in, 1); }
static qkv_tensor *f_split(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    qkv_tensor *out[3] = {0};
    if (qkv_split(ctx, in[0], 1, 3, (int64_t[]){1, 3, 2}, out) != QKV_OK) return NULL;
    return out[1];
}
static qkv_tensor *f_split_all(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    /* every piece used, each differently, then glued back: all three nodes add into x's gradient */
    qkv_tensor *out[3] = {0};
    if (qkv_split(ctx, in[0], 2, 3, (int64_t[]){2, 1, 2}, out) != QKV_OK) return NULL;
    qkv_tensor *parts[3] = {qkv_tanh(ctx, out[0]), qkv_scale(ctx, out[1], 3.0f), qkv_sigmoid(ctx, out[2])};
    return qkv_concat(ctx, 3, parts, 2);
}
static qkv_tensor *f_rows(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    /* qkv_rows shares the gradient buffer of x, which a parameter has; give the input one. */
    if (in[0]->requires_grad) qkv__grad(ctx, in[0]);
    return qkv_tanh(ctx, qkv_rows(ctx, in[0], 1, 3));
}
/* x used three times: the gradients of all uses must add up. */
static qkv_tensor *f_chain(qkv_ctx *ctx, qkv_tensor **in, void *u) {
    qkv_tensor *x = in[0];
    qkv_tensor *h = qkv_gelu(ctx, qkv_linear(ctx, x, in[1], in[2]), 1);
    h = qkv_layernorm(ctx, qkv_add(ctx, h, qkv_mul(ctx, x, x)), NULL, NULL, 1e-5f);
    return qkv_softmax(ctx, qkv_add(ctx, h, x));
}

typedef struct {
    const char *name;
    gc_fn f;
    int n_in;
    gc_input in[GC_MAX_IN];
    void *user;
} gc_case;

/* An input of the given ndim and dims, drawn N(0,1) (IN) or away from 0 (AWAY). */
#define IN(nd, ...) {.ndim = (nd), .shape = {__VA_ARGS__}}
#define AWAY(nd, ...) {.ndim = (nd), .shape = {__VA_ARGS__}, .dist = GC_AWAY}

int main(void) {
    static const int32_t emb_ids[6] = {3, 0, 6, 3, 1, 3}; /* repeats: the weight gradient must accumulate */
    static const int32_t ce_targets[8] = {2, -100, 4, 0, -100, 1, 4, 3};
    static const int32_t ce_all_ignored[4] = {-100, -100, -100, -100};
    ids_args emb = {emb_ids, 2, {2, 3}};
    ids_args ce = {ce_targets, 2, {2, 4}};
    ids_args ce_none = {ce_all_ignored, 1, {4}};
    mm_args nn = {0, 0}, nt = {0, 1}, tn = {1, 0}, tt = {1, 1};

    const gc_case cases[] = {
        {"matmul a@b", f_matmul, 2, {IN(2, 3, 4), IN(2, 4, 5)}, &nn},
        {"matmul a@b^T", f_matmul, 2, {IN(2, 3, 4), IN(2, 5, 4)}, &nt},
        {"matmul a^T@b", f_matmul, 2, {IN(2, 4, 3), IN(2, 4, 5)}, &tn},
        {"matmul a^T@b^T", f_matmul, 2, {IN(2, 4, 3), IN(2, 5, 4)}, &tt},
        {"matmul batched (2,3,4)@(2,4,5)", f_matmul, 2, {IN(3, 2, 3, 4), IN(3, 2, 4, 5)}, &nn},
        {"matmul batched 4-D a^T@b^T", f_matmul, 2, {IN(4, 2, 2, 4, 3), IN(4, 2, 2, 5, 4)}, &tt},
        {"matmul shared b (folded)", f_matmul, 2, {IN(3, 2, 3, 4), IN(2, 4, 5)}, &nn},
        {"matmul shared b^T (folded)", f_matmul, 2, {IN(3, 2, 3, 4), IN(2, 5, 4)}, &nt},
        {"matmul shared b, a^T", f_matmul, 2, {IN(3, 3, 4, 3), IN(2, 4, 5)}, &tn},
        {"linear with bias", f_linear, 3, {IN(3, 2, 3, 4), IN(2, 5, 4), IN(1, 5)}, NULL},
        {"linear without bias", f_linear_nobias, 2, {IN(2, 3, 4), IN(2, 5, 4)}, NULL},
        {"conv1d (w stored IN,OUT) with bias", f_conv1d, 3, {IN(3, 2, 3, 4), IN(2, 4, 5), IN(1, 5)}, NULL},
        {"conv1d with bias and residual", f_conv1d_res, 4, {IN(3, 2, 3, 4), IN(2, 4, 5), IN(1, 5), IN(3, 2, 3, 5)},
         NULL},
        {"conv1d with residual, no bias", f_conv1d_res_nobias, 3, {IN(2, 3, 4), IN(2, 4, 5), IN(2, 3, 5)}, NULL},
        {"linear with bias and residual", f_linear_res, 4, {IN(3, 2, 3, 4), IN(2, 5, 4), IN(1, 5), IN(3, 2, 3, 5)},
         NULL},
        {"linear with residual, no bias", f_linear_res_nobias, 3, {IN(2, 3, 4), IN(2, 5, 4), IN(2, 3, 5)}, NULL},
        {"add same shape", f_add, 2, {IN(3, 2, 3, 4), IN(3, 2, 3, 4)}, NULL},
        {"add broadcast (C)", f_add, 2, {IN(3, 2, 3, 4), IN(1, 4)}, NULL},
        {"add broadcast (T,C)", f_add, 2, {IN(3, 2, 3, 4), IN(2, 3, 4)}, NULL},
        {"sub same shape", f_sub, 2, {IN(2, 3, 4), IN(2, 3, 4)}, NULL},
        {"sub broadcast (C)", f_sub, 2, {IN(3, 2, 3, 4), IN(1, 4)}, NULL},
        {"mul same shape", f_mul, 2, {IN(3, 2, 3, 4), IN(3, 2, 3, 4)}, NULL},
        {"mul broadcast (C)", f_mul, 2, {IN(3, 2, 3, 4), IN(1, 4)}, NULL},
        {"mul broadcast (T,C)", f_mul, 2, {IN(3, 2, 3, 4), IN(2, 3, 4)}, NULL},
        {"mul x*x (same tensor twice)", f_square, 1, {IN(2, 3, 4)}, NULL},
        {"scale", f_scale, 1, {IN(2, 3, 4)}, NULL},
        {"relu", f_relu, 1, {AWAY(2, 4, 5)}, NULL},
        {"gelu exact (erf)", f_gelu, 1, {IN(2, 4, 5)}, NULL},
        {"gelu tanh", f_gelu_tanh, 1, {IN(2, 4, 5)}, NULL},
        {"tanh", f_tanh, 1, {IN(2, 4, 5)}, NULL},
        {"sigmoid", f_sigmoid, 1, {IN(2, 4, 5)}, NULL},
        {"dropout p=0.3 training", f_dropout, 1, {IN(2, 6, 7)}, NULL},
        {"softmax", f_softmax, 1, {IN(3, 2, 3, 5)}, NULL},
        {"log_softmax", f_log_softmax, 1, {IN(3, 2, 3, 5)}, NULL},
        {"layernorm affine", f_layernorm, 3, {IN(3, 2, 3, 6), IN(1, 6), IN(1, 6)}, NULL},
        {"layernorm no affine", f_layernorm_plain, 1, {IN(2, 4, 6)}, NULL},
        {"layernorm weight only", f_layernorm_w, 2, {IN(2, 4, 6), IN(1, 6)}, NULL},
        {"sum", f_sum, 1, {IN(3, 2, 3, 4)}, NULL},
        {"mean", f_mean, 1, {IN(3, 2, 3, 4)}, NULL},
        {"embedding (grad wrt weight)", f_embedding, 1, {IN(2, 7, 5)}, &emb},
        {"cross_entropy, 2 of 8 ignored", f_cross_entropy, 1, {IN(3, 2, 4, 5)}, &ce},
        {"cross_entropy, all ignored", f_cross_entropy, 1, {IN(2, 4, 5)}, &ce_none},
        {"reshape (view, -1)", f_reshape, 1, {IN(3, 2, 3, 2)}, NULL},
        {"transpose dims 0,2", f_transpose02, 1, {IN(3, 2, 3, 4)}, NULL},
        {"transpose dims 2,1", f_transpose12, 1, {IN(4, 2, 2, 3, 4)}, NULL},
        {"concat 3 on dim 1", f_concat, 3, {IN(3, 2, 1, 3), IN(3, 2, 2, 3), IN(3, 2, 3, 3)}, NULL},
        {"split, middle piece", f_split, 1, {IN(3, 2, 6, 3)}, NULL},
        {"split, all pieces used", f_split_all, 1, {IN(3, 2, 3, 5)}, NULL},
        {"rows (shared grad)", f_rows, 1, {IN(2, 4, 3)}, NULL},
        {"chain: x used 3 times", f_chain, 3, {IN(2, 3, 4), IN(2, 4, 4), IN(1, 4)}, NULL},
    };
    const int n_cases = (int)(sizeof cases / sizeof cases[0]);
    double worst[sizeof cases / sizeof cases[0]] = {0};
    for (int pass = 0; pass < 2; pass++) {
        qkv__ew_force_scalar(pass);
        printf("=== element-wise kernel path: %s ===\n", qkv__ew_isa());
        for (int i = 0; i < n_cases; i++) {
            double e = gradcheck(cases[i].name, cases[i].f, cases[i].n_in, cases[i].in, cases[i].user,
                                 1000 + (uint64_t)i);
            if (e > worst[i] || isnan(e)) worst[i] = e;
        }
        if (pass == 0 && strcmp(qkv__ew_isa(), "scalar") == 0) break; /* no fast path on this CPU */
    }
    qkv__ew_force_scalar(0);

    printf("\nlargest gradcheck error per op over both paths (tol %.0e):\n", GC_TOL);
    for (int i = 0; i < n_cases; i++) printf("  %-36s %.2e\n", cases[i].name, worst[i]);
    return tu_finish("test_ops_grad");
}

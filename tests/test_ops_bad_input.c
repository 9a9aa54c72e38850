/* test_ops_bad_input.c — every op given what it must refuse: mismatched shapes, zero-size
 * dimensions, NaN/Inf, out-of-range ids and targets, bad dropout p, bad dims, NULL inputs; and the
 * sticky error (after a failure later ops return NULL and the first message is kept).
 *
 * Not a test of values or gradients (test_ops_ref.c, test_ops_grad.c).
 *
 * Each case runs in a fresh context and asserts three things: the op returned NULL (or its status),
 * the context holds the expected status code, and the message names the op (and, where the user
 * needs it, the offending value). The message is printed, so the log shows what a user would read.
 * Nothing here may crash: the sanitizer build runs the same cases.
 */

#include "testutil.h"

static qkv_ctx *g_ctx;

static qkv_tensor *T(int ndim, int64_t d0, int64_t d1, int64_t d2) {
    int64_t s[3] = {d0, d1, d2};
    qkv_tensor *t = qkv_tensor_new(g_ctx, ndim, s);
    if (t)
        for (int64_t i = 0; i < qkv_tensor_numel(t); i++) t->data[i] = 0.01f * (float)(i % 17) - 0.05f;
    return t;
}

static void fresh(void) {
    qkv_ctx_clear_error(g_ctx);
    qkv_ctx_reset(g_ctx);
    qkv_ctx_set_check_finite(g_ctx, 1);
    qkv_ctx_set_training(g_ctx, 0);
}

/* returned: whether the op gave a result (should be 0); the message must contain each of the
 * NULL-terminated strings in want. */
static void expect(const char *what, int returned, qkv_status status, const char *const *want) {
    qkv_status got = qkv_ctx_status(g_ctx);
    const char *msg = qkv_ctx_error(g_ctx);
    int ok = !returned && got == status;
    for (int i = 0; want[i]; i++) ok = ok && strstr(msg, want[i]) != NULL;
    tu_checks++;
    if (!ok) tu_failures++;
    printf("%-4s %-44s -> %s: %s\n", ok ? "ok" : "FAIL", what, qkv_status_str(got), msg);
    if (!ok) {
        printf("     expected %s%s, a message containing:", qkv_status_str(status), returned ? " and a NULL result" : "");
        for (int i = 0; want[i]; i++) printf(" \"%s\"", want[i]);
        printf("\n");
    }
}
#define EXPECT(what, result, status, ...) expect(what, (result) != NULL, status, (const char *const[]){__VA_ARGS__, NULL})
#define EXPECT_ST(what, st, status, ...) \
    expect(what, (st) == QKV_OK, status, (const char *const[]){__VA_ARGS__, NULL})

int main(void) {
    g_ctx = qkv_ctx_new(0);
    qkv_tensor *out[4];
    const int32_t ids[6] = {1, 2, 3, 4, 50, 0};

    /* ---- shape mismatches ---- */
    fresh();
    EXPECT("matmul inner dims", qkv_matmul(g_ctx, T(3, 2, 3, 4), T(2, 5, 6, 1), 0, 0), QKV_ERR_SHAPE, "matmul",
           "(2,3,4)", "k=4", "(5,6)", "k=5");
    fresh();
    EXPECT("matmul inner dims with tb", qkv_matmul(g_ctx, T(2, 3, 4, 1), T(2, 4, 5, 1), 0, 1), QKV_ERR_SHAPE,
           "matmul", "k=5");
    fresh();
    EXPECT("matmul 1-D operand", qkv_matmul(g_ctx, T(1, 4, 1, 1), T(2, 4, 5, 1), 0, 0), QKV_ERR_SHAPE, "matmul");
    fresh();
    EXPECT("matmul batch dims differ", qkv_matmul(g_ctx, T(3, 2, 3, 4), T(3, 3, 4, 5), 0, 0), QKV_ERR_SHAPE,
           "matmul", "leading");
    fresh();
    EXPECT("matmul 3-D b with 2-D a", qkv_matmul(g_ctx, T(2, 3, 4, 1), T(3, 2, 4, 5), 0, 0), QKV_ERR_SHAPE, "matmul");
    fresh();
    EXPECT("linear w IN mismatch", qkv_linear(g_ctx, T(2, 3, 4, 1), T(2, 5, 6, 1), NULL), QKV_ERR_SHAPE, "linear",
           "(5,6)");
    fresh();
    EXPECT("linear bias size", qkv_linear(g_ctx, T(2, 3, 4, 1), T(2, 5, 4, 1), T(1, 4, 1, 1)), QKV_ERR_SHAPE,
           "linear", "bias");
    fresh();
    EXPECT("conv1d w IN mismatch", qkv_conv1d(g_ctx, T(2, 3, 4, 1), T(2, 5, 6, 1), NULL, NULL), QKV_ERR_SHAPE,
           "conv1d", "(IN,OUT)");
    fresh();
    EXPECT("conv1d residual shape", qkv_conv1d(g_ctx, T(2, 3, 4, 1), T(2, 4, 6, 1), NULL, T(2, 3, 5, 1)),
           QKV_ERR_SHAPE, "conv1d", "residual");
    fresh();
    {
        qkv_tensor *r = T(2, 3, 6, 1);
        r->data[4] = NAN;
        EXPECT("conv1d NaN in residual", qkv_conv1d(g_ctx, T(2, 3, 4, 1), T(2, 4, 6, 1), NULL, r), QKV_ERR_NONFINITE,
               "conv1d", "input 2");
    }
    fresh();
    EXPECT("add non-broadcastable", qkv_add(g_ctx, T(3, 2, 3, 4), T(1, 3, 1, 1)), QKV_ERR_SHAPE, "add", "(3)",
           "(2,3,4)");
    fresh();
    EXPECT("add b bigger than a", qkv_add(g_ctx, T(1, 4, 1, 1), T(2, 3, 4, 1)), QKV_ERR_SHAPE, "add");
    fresh();
    EXPECT("sub leading-dim broadcast", qkv_sub(g_ctx, T(3, 2, 3, 4), T(3, 1, 3, 4)), QKV_ERR_SHAPE, "sub");
    fresh();
    EXPECT("mul non-broadcastable", qkv_mul(g_ctx, T(2, 3, 4, 1), T(2, 4, 3, 1)), QKV_ERR_SHAPE, "mul");
    fresh();
    EXPECT("layernorm weight wrong size", qkv_layernorm(g_ctx, T(2, 3, 8, 1), T(1, 7, 1, 1), NULL, 1e-5f),
           QKV_ERR_SHAPE, "layernorm", "weight", "(7)");
    fresh();
    EXPECT("layernorm bias wrong size", qkv_layernorm(g_ctx, T(2, 3, 8, 1), T(1, 8, 1, 1), T(2, 1, 8, 1), 1e-5f),
           QKV_ERR_SHAPE, "layernorm", "bias");
    fresh();
    EXPECT("layernorm negative eps", qkv_layernorm(g_ctx, T(2, 3, 8, 1), NULL, NULL, -1.0f), QKV_ERR_ARG,
           "layernorm", "eps");
    fresh();
    EXPECT("softmax of a scalar", qkv_softmax(g_ctx, T(0, 1, 1, 1)), QKV_ERR_SHAPE, "softmax");
    fresh();
    {
        qkv_tensor *xs[2] = {T(2, 2, 3, 1), T(2, 3, 3, 1)};
        EXPECT("concat mismatch", qkv_concat(g_ctx, 2, xs, 1), QKV_ERR_SHAPE, "concat", "(3,3)", "(2,3)");
        fresh();
        qkv_tensor *ys[2] = {T(2, 2, 3, 1), T(3, 2, 3, 1)};
        EXPECT("concat ndim mismatch", qkv_concat(g_ctx, 2, ys, 0), QKV_ERR_SHAPE, "concat");
        fresh();
        qkv_tensor *zs[2] = {T(2, 2, 3, 1), T(2, 2, 3, 1)};
        EXPECT("concat dim out of range", qkv_concat(g_ctx, 2, zs, 2), QKV_ERR_ARG, "concat", "dim 2");
        fresh();
        EXPECT("concat n = 0", qkv_concat(g_ctx, 0, zs, 0), QKV_ERR_ARG, "concat");
    }
    fresh();
    EXPECT_ST("split sizes not summing", qkv_split(g_ctx, T(2, 4, 6, 1), 1, 2, (int64_t[]){2, 3}, out),
              QKV_ERR_SHAPE, "split", "5", "6");
    fresh();
    EXPECT_ST("split sizes summing to more", qkv_split(g_ctx, T(2, 4, 6, 1), 1, 2, (int64_t[]){4, 3}, out),
              QKV_ERR_SHAPE, "split", "exceed");
    fresh();
    EXPECT_ST("split a zero-size piece", qkv_split(g_ctx, T(2, 4, 6, 1), 1, 2, (int64_t[]){6, 0}, out),
              QKV_ERR_SHAPE, "split", "piece 1");
    fresh();
    EXPECT_ST("split dim out of range", qkv_split(g_ctx, T(2, 4, 6, 1), -1, 1, (int64_t[]){6}, out), QKV_ERR_ARG,
              "split", "dim -1");
    fresh();
    EXPECT("reshape numel mismatch", qkv_reshape(g_ctx, T(2, 4, 6, 1), 2, (int64_t[]){5, 5}), QKV_ERR_SHAPE,
           "reshape", "(4,6)", "(5,5)");
    fresh();
    EXPECT("reshape -1 not dividing", qkv_reshape(g_ctx, T(2, 4, 6, 1), 2, (int64_t[]){5, -1}), QKV_ERR_SHAPE,
           "reshape");
    fresh();
    EXPECT("reshape two -1", qkv_reshape(g_ctx, T(2, 4, 6, 1), 3, (int64_t[]){-1, 2, -1}), QKV_ERR_ARG, "reshape",
           "-1");
    fresh();
    EXPECT("reshape 5 dims", qkv_reshape(g_ctx, T(2, 4, 6, 1), 5, (int64_t[]){1, 1, 2, 3, 4}), QKV_ERR_ARG,
           "reshape");
    fresh();
    EXPECT("transpose dim out of range", qkv_transpose(g_ctx, T(2, 4, 6, 1), 0, 2), QKV_ERR_ARG, "transpose");
    fresh();
    EXPECT("rows range out of bounds", qkv_rows(g_ctx, T(2, 4, 6, 1), 2, 5), QKV_ERR_RANGE, "rows", "[2, 5)");
    fresh();
    {
        qkv_tensor *x = T(2, 4, 6, 1);
        x->requires_grad = 1; /* an activation-like tensor with no gradient buffer to share */
        EXPECT("rows without a grad buffer", qkv_rows(g_ctx, x, 0, 2), QKV_ERR_STATE, "rows", "grad");
    }

    /* ---- zero-size dimensions ---- */
    fresh();
    EXPECT("tensor_new with a 0 dim", qkv_tensor_new(g_ctx, 2, (int64_t[]){3, 0}), QKV_ERR_SHAPE, "tensor",
           "dimension 1", "size 0");
    fresh();
    EXPECT("reshape to a 0 dim", qkv_reshape(g_ctx, T(1, 4, 1, 1), 2, (int64_t[]){0, 4}), QKV_ERR_SHAPE, "reshape");
    fresh();
    EXPECT("embedding ids with a 0 dim", qkv_embedding(g_ctx, T(2, 60, 4, 1), ids, 2, (int64_t[]){2, 0}),
           QKV_ERR_SHAPE, "embedding");

    /* ---- non-finite input ---- */
    fresh();
    {
        qkv_tensor *x = T(2, 3, 4, 1);
        x->data[5] = NAN;
        EXPECT("NaN into gelu", qkv_gelu(g_ctx, x, 0), QKV_ERR_NONFINITE, "gelu", "NaN", "index 5");
        fresh();
        x = T(2, 3, 4, 1);
        x->data[7] = INFINITY;
        EXPECT("Inf into matmul b", qkv_matmul(g_ctx, T(2, 2, 3, 1), x, 0, 0), QKV_ERR_NONFINITE, "matmul",
               "input 1", "Inf");
        fresh();
        qkv_tensor *w = T(1, 4, 1, 1);
        w->data[2] = NAN;
        EXPECT("NaN in layernorm weight", qkv_layernorm(g_ctx, T(2, 3, 4, 1), w, NULL, 1e-5f), QKV_ERR_NONFINITE,
               "layernorm", "weight");
        fresh();
        x = T(2, 3, 4, 1);
        x->data[0] = NAN;
        EXPECT("NaN logits into cross_entropy", qkv_cross_entropy(g_ctx, x, ids, -100), QKV_ERR_NONFINITE,
               "cross_entropy");
        /* With the check off the NaN goes through (the caller chose speed). */
        fresh();
        qkv_ctx_set_check_finite(g_ctx, 0);
        x = T(2, 3, 4, 1);
        x->data[5] = NAN;
        qkv_tensor *y = qkv_gelu(g_ctx, x, 0);
        TU_CHECK(y && isnan(y->data[5]) && qkv_ctx_status(g_ctx) == QKV_OK, "check_finite off: NaN passes");
        printf("%-4s %-44s -> passes through\n", y && isnan(y->data[5]) ? "ok" : "FAIL", "NaN with check_finite off");
        fresh();
        EXPECT("scale by Inf", qkv_scale(g_ctx, T(1, 3, 1, 1), INFINITY), QKV_ERR_ARG, "scale");
    }

    /* ---- ids and targets out of range ---- */
    fresh();
    EXPECT("embedding id out of range", qkv_embedding(g_ctx, T(2, 10, 4, 1), ids, 2, (int64_t[]){2, 3}),
           QKV_ERR_RANGE, "embedding", "id 50", "[1,1]", "[0,10)");
    fresh();
    {
        const int32_t neg[3] = {0, -3, 1};
        EXPECT("embedding negative id", qkv_embedding(g_ctx, T(2, 10, 4, 1), neg, 1, (int64_t[]){3}), QKV_ERR_RANGE,
               "embedding", "id -3", "[1]");
        fresh();
        EXPECT("embedding ids ndim 4", qkv_embedding(g_ctx, T(2, 10, 4, 1), neg, 4, (int64_t[]){1, 1, 1, 3}),
               QKV_ERR_ARG, "embedding");
        fresh();
        EXPECT("embedding weight 1-D", qkv_embedding(g_ctx, T(1, 10, 1, 1), neg, 1, (int64_t[]){3}), QKV_ERR_SHAPE,
               "embedding");
    }
    fresh();
    {
        const int32_t t[6] = {0, 1, 2, 3, 9, -100};
        EXPECT("cross_entropy target out of range", qkv_cross_entropy(g_ctx, T(3, 2, 3, 5), t, -100), QKV_ERR_RANGE,
               "cross_entropy", "target 9", "[1,1]", "[0,5)");
        fresh();
        /* -100 is only skipped when it is the ignore_index */
        EXPECT("cross_entropy -100 not ignored", qkv_cross_entropy(g_ctx, T(2, 6, 10, 1), t, -1), QKV_ERR_RANGE,
               "cross_entropy", "target -100");
    }

    /* ---- dropout p ---- */
    fresh();
    qkv_ctx_set_training(g_ctx, 1);
    EXPECT("dropout p = 1", qkv_dropout(g_ctx, T(1, 8, 1, 1), 1.0f), QKV_ERR_RANGE, "dropout", "p = 1");
    fresh();
    EXPECT("dropout p = -0.1", qkv_dropout(g_ctx, T(1, 8, 1, 1), -0.1f), QKV_ERR_RANGE, "dropout", "-0.1");
    fresh();
    EXPECT("dropout p = NaN (eval mode too)", qkv_dropout(g_ctx, T(1, 8, 1, 1), NAN), QKV_ERR_RANGE, "dropout");

    /* ---- NULL inputs ---- */
    fresh();
    EXPECT("add NULL a", qkv_add(g_ctx, NULL, T(1, 3, 1, 1)), QKV_ERR_ARG, "add", "input 0 is NULL");
    fresh();
    EXPECT("matmul NULL b", qkv_matmul(g_ctx, T(2, 3, 3, 1), NULL, 0, 0), QKV_ERR_ARG, "matmul", "input 1 is NULL");
    fresh();
    EXPECT("linear NULL w", qkv_linear(g_ctx, T(2, 3, 3, 1), NULL, NULL), QKV_ERR_ARG, "linear");
    fresh();
    EXPECT("layernorm NULL x", qkv_layernorm(g_ctx, NULL, NULL, NULL, 1e-5f), QKV_ERR_ARG, "layernorm");
    fresh();
    EXPECT("embedding NULL ids", qkv_embedding(g_ctx, T(2, 10, 4, 1), NULL, 1, (int64_t[]){3}), QKV_ERR_ARG,
           "embedding", "ids");
    fresh();
    EXPECT("cross_entropy NULL targets", qkv_cross_entropy(g_ctx, T(2, 3, 4, 1), NULL, -100), QKV_ERR_ARG,
           "cross_entropy", "targets");
    fresh();
    {
        qkv_tensor *xs[2] = {T(2, 2, 3, 1), NULL};
        EXPECT("concat NULL entry", qkv_concat(g_ctx, 2, xs, 0), QKV_ERR_ARG, "concat", "input 1");
    }
    fresh();
    EXPECT_ST("split NULL out", qkv_split(g_ctx, T(2, 4, 6, 1), 1, 2, (int64_t[]){3, 3}, NULL), QKV_ERR_ARG, "split",
              "out is NULL");
    fresh();
    EXPECT("softmax NULL", qkv_softmax(g_ctx, NULL), QKV_ERR_ARG, "softmax");
    fresh();
    EXPECT("reshape NULL shape", qkv_reshape(g_ctx, T(1, 4, 1, 1), 2, NULL), QKV_ERR_ARG, "reshape", "NULL");
    TU_CHECK(qkv_add(NULL, NULL, NULL) == NULL, "a NULL context gives NULL");

    /* ---- sticky errors ---- */
    fresh();
    {
        qkv_tensor *a = T(2, 2, 3, 1), *b = T(2, 4, 5, 1);
        qkv_tensor *bad = qkv_matmul(g_ctx, a, b, 0, 0); /* first failure */
        char first[512];
        snprintf(first, sizeof first, "%s", qkv_ctx_error(g_ctx));
        qkv_tensor *later1 = qkv_relu(g_ctx, a);             /* valid on its own */
        qkv_tensor *later2 = qkv_add(g_ctx, a, b);           /* would fail differently */
        qkv_tensor *later3 = qkv_softmax(g_ctx, bad);         /* NULL input */
        qkv_status st = qkv_split(g_ctx, a, 1, 1, (int64_t[]){3}, out);
        qkv_status bst = qkv_backward(g_ctx, later1);
        int ok = !bad && !later1 && !later2 && !later3 && st == QKV_ERR_SHAPE && bst == QKV_ERR_SHAPE &&
                 strcmp(first, qkv_ctx_error(g_ctx)) == 0 && strstr(first, "matmul") &&
                 qkv_tensor_new(g_ctx, 1, (int64_t[]){3}) == NULL;
        TU_CHECK(ok, "sticky error: later ops return NULL and the first message stays (%s)", qkv_ctx_error(g_ctx));
        printf("%-4s %-44s -> %s\n", ok ? "ok" : "FAIL", "sticky: 5 later calls, first message kept", qkv_ctx_error(g_ctx));
        /* Clearing the error makes the context usable again. */
        qkv_ctx_clear_error(g_ctx);
        qkv_tensor *again = qkv_relu(g_ctx, a);
        TU_CHECK(again && qkv_ctx_status(g_ctx) == QKV_OK, "after qkv_ctx_clear_error ops work again");
    }

    qkv_ctx_free(g_ctx);
    return tu_finish("test_ops_bad_input");
}

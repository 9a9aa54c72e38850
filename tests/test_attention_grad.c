/* test_attention_grad.c — finite-difference gradient checks (tests/gradcheck.h) of the attention ops:
 * qkv_attention (no mask, causal, padding mask with fully blocked rows, cross Tq != Tk, the
 * weights-requested path, H = 2 with D = 3 and Dv != D), qkv_softmax_masked (padding + causal) and
 * qkv_additive_scores (all three inputs). Sizes are small: the harness runs two forward passes per
 * input element. Tolerance: GC_TOL (1e-2), see gradcheck.h for why.
 */
#include "gradcheck.h"

typedef struct {
    qkv_attn_opts o;
    int want_weights;
} attn_case;

static qkv_tensor *attn_fn(qkv_ctx *ctx, qkv_tensor **in, void *user) {
    attn_case *c = user;
    qkv_attn_opts o = c->o;
    qkv_tensor *w = NULL;
    o.weights = c->want_weights ? &w : NULL;
    qkv_tensor *out = qkv_attention(ctx, in[0], in[1], in[2], &o);
    if (out && c->want_weights && (!w || w->requires_grad)) {
        printf("FAIL attention: weights tensor missing or requiring grad\n");
        exit(1);
    }
    return out;
}

typedef struct {
    const uint8_t *mask;
    int causal;
} mask_case;

static qkv_tensor *softmax_masked_fn(qkv_ctx *ctx, qkv_tensor **in, void *user) {
    mask_case *c = user;
    return qkv_softmax_masked(ctx, in[0], c->mask, c->causal);
}

static qkv_tensor *additive_fn(qkv_ctx *ctx, qkv_tensor **in, void *user) {
    (void)user;
    return qkv_additive_scores(ctx, in[0], in[1], in[2]);
}

#define T3(b, t, c) {3, {b, t, c, 1}, GC_NORMAL, 0}

int main(void) {
    /* B = 2, T = 5, one head of 4 */
    const gc_input self[3] = {T3(2, 5, 4), T3(2, 5, 4), T3(2, 5, 4)};
    attn_case plain = {.o = {.n_head = 1}};
    gradcheck("attention", attn_fn, 3, self, &plain, 1);

    attn_case causal = {.o = {.n_head = 1, .causal = 1}};
    gradcheck("attention causal", attn_fn, 3, self, &causal, 2);

    /* Padding differs per batch entry; with causal and key 0 padded in entry 1, query 0 of entry 1
     * sees no key at all: its output and gradient must be 0. */
    static const uint8_t pad[2 * 5] = {0, 0, 0, 1, 1, /* */ 1, 0, 0, 0, 1};
    attn_case padded = {.o = {.n_head = 1, .key_padding_mask = pad}};
    gradcheck("attention padding mask", attn_fn, 3, self, &padded, 3);
    attn_case padded_causal = {.o = {.n_head = 1, .causal = 1, .key_padding_mask = pad}};
    gradcheck("attention padding + causal (blocked row)", attn_fn, 3, self, &padded_causal, 4);

    /* cross attention: Tq = 3, Tk = 6, causal aligned at the end */
    const gc_input cross[3] = {T3(2, 3, 4), T3(2, 6, 4), T3(2, 6, 4)};
    gradcheck("attention cross Tq=3 Tk=6", attn_fn, 3, cross, &plain, 5);
    gradcheck("attention cross Tq=3 Tk=6 causal", attn_fn, 3, cross, &causal, 6);

    /* weights requested: the materialised path and its backward from the stored probabilities */
    attn_case weights = {.o = {.n_head = 1, .causal = 1, .key_padding_mask = pad}, .want_weights = 1};
    gradcheck("attention weights requested", attn_fn, 3, self, &weights, 7);

    /* two heads of D = 3, Dv = 2, explicit scale */
    const gc_input heads[3] = {T3(2, 4, 6), T3(2, 5, 6), T3(2, 5, 4)};
    attn_case h2 = {.o = {.n_head = 2, .scale = 0.7f}};
    gradcheck("attention H=2 D=3 Dv=2", attn_fn, 3, heads, &h2, 8);
    attn_case h2w = {.o = {.n_head = 2, .causal = 1}, .want_weights = 1};
    gradcheck("attention H=2 D=3 Dv=2 causal weights", attn_fn, 3, heads, &h2w, 9);

    /* masked softmax over explicit scores (B=2, Tq=4, Tk=5) */
    const gc_input scores[1] = {T3(2, 4, 5)};
    static const uint8_t pad5[2 * 5] = {0, 0, 0, 0, 1, /* */ 1, 0, 0, 1, 0};
    mask_case mc = {pad5, 1};
    gradcheck("softmax_masked padding + causal", softmax_masked_fn, 1, scores, &mc, 10);
    mask_case mp = {pad5, 0};
    gradcheck("softmax_masked padding", softmax_masked_fn, 1, scores, &mp, 11);

    /* Bahdanau scores: wq (2,3,4), uk (2,5,4), v (4) */
    const gc_input add[3] = {T3(2, 3, 4), T3(2, 5, 4), {1, {4, 1, 1, 1}, GC_NORMAL, 0}};
    gradcheck("additive_scores", additive_fn, 3, add, NULL, 12);

    return tu_finish("test_attention_grad");
}

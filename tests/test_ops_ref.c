/* test_ops_ref.c — forward values of every op in ops.h (except attention's) against plain
 * double-precision loops written here from the textbook formulas, plus the properties values alone
 * do not show: dropout's statistics and masks, views, inference mode, determinism across thread
 * counts, and the AVX-512 kernels against the reference loops they replace.
 *
 * Not a gradient test (test_ops_grad.c) and not a PyTorch comparison (test_torch_*.c).
 *
 * Tolerances (normalised: max |got - ref| / max |ref|, testutil.h tu_close):
 *  - REF_TOL 1e-5 against the double loops: float32 has a unit roundoff of 6e-8; an op does a few
 *    roundings per element plus a float exp/erf/tanh of ~1 ulp, and reductions over at most ~1000
 *    terms (GEMM accumulates in float: ~sqrt(K) * 6e-8 ~ 2e-6 at K = 1000). Any wrong term or
 *    index shows as O(1e-2) or more.
 *  - FAST_TOL 2e-6 between the AVX-512 kernels and the reference loops of kernels/ew.c: the fast
 *    expf is within ~2 ulp and it sums rows in 16 float lanes where the reference sums in double,
 *    i.e. a few 1e-7 relative on rows of 1000.
 *  - Copies (embedding, reshape, transpose, concat, split, rows) and the thread-count checks are
 *    exact (bit-identical).
 */

#include <omp.h>

#include "testutil.h"

#include "core/core_int.h" /* ctx->tape: checks that inference mode records nothing */
#include "kernels/ew.h"    /* qkv__ew_force_scalar / qkv__ew_isa */

#define REF_TOL 1e-5
#define FAST_TOL 2e-6

static qkv_rng g_rng;

static qkv_tensor *randt(qkv_ctx *ctx, int ndim, const int64_t *shape, float scale, float offset) {
    qkv_tensor *t = qkv_tensor_new(ctx, ndim, shape);
    if (!t) return NULL;
    for (int64_t i = 0; i < qkv_tensor_numel(t); i++) t->data[i] = offset + scale * qkv_rng_normal(&g_rng);
    return t;
}
#define RAND(ctx, nd, ...) randt(ctx, nd, (int64_t[]){__VA_ARGS__}, 1.0f, 0.0f)

/* got (float tensor) against a double reference of n values. */
static void check_d(qkv_ctx *ctx, const char *what, const qkv_tensor *got, const double *ref, int64_t n,
                    double tol) {
    if (!got || qkv_tensor_numel(got) != n) {
        TU_CHECK(0, "%s: op failed or wrong size: %s", what, qkv_ctx_error(ctx));
        return;
    }
    float *r = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) r[i] = (float)ref[i];
    tu_close(what, got->data, r, n, tol);
    free(r);
}

/* Exact equality of n floats (copies, views, thread-count determinism). */
static void check_same(const char *what, const float *got, const float *want, int64_t n) {
    int ok = got && want && memcmp(got, want, (size_t)n * sizeof(float)) == 0;
    TU_CHECK(ok, "%s: not bit-identical", what);
    printf("%-4s %-48s bit-identical n=%lld\n", ok ? "ok" : "FAIL", what, (long long)n);
}

static double *dalloc(int64_t n) { return calloc((size_t)n, sizeof(double)); }

/* ---- linear algebra ---- */

/* C[b] = op(A[b]) op(B[b or 0]), everything from the definition. */
static void ref_matmul(double *c, const float *a, const float *b, int64_t batch, int shared, int64_t M, int64_t N,
                       int64_t K, int ta, int tb) {
    for (int64_t i = 0; i < batch; i++) {
        const float *A = a + i * M * K, *B = b + (shared ? 0 : i * K * N);
        for (int64_t m = 0; m < M; m++)
            for (int64_t n = 0; n < N; n++) {
                double s = 0;
                for (int64_t k = 0; k < K; k++)
                    s += (double)(ta ? A[k * M + m] : A[m * K + k]) * (tb ? B[n * K + k] : B[k * N + n]);
                c[(i * M + m) * N + n] = s;
            }
    }
}

static void test_matmul(qkv_ctx *ctx) {
    const int64_t M = 5, N = 6, K = 7;
    for (int ta = 0; ta < 2; ta++)
        for (int tb = 0; tb < 2; tb++) {
            /* 2-D, batched (2,3), shared 2-D b with batch 4 */
            for (int kind = 0; kind < 3; kind++) {
                int64_t batch = kind == 0 ? 1 : kind == 1 ? 6 : 4;
                int64_t as[4], bs[4];
                int and_ = 0, bnd = 0;
                if (kind == 1) {
                    as[and_++] = 2, as[and_++] = 3, bs[bnd++] = 2, bs[bnd++] = 3;
                } else if (kind == 2) {
                    as[and_++] = 4;
                }
                as[and_++] = ta ? K : M, as[and_++] = ta ? M : K;
                bs[bnd++] = tb ? N : K, bs[bnd++] = tb ? K : N;
                qkv_tensor *a = randt(ctx, and_, as, 1, 0), *b = randt(ctx, bnd, bs, 1, 0);
                qkv_tensor *c = qkv_matmul(ctx, a, b, ta, tb);
                double *ref = dalloc(batch * M * N);
                ref_matmul(ref, a->data, b->data, batch, kind == 2, M, N, K, ta, tb);
                char what[96];
                snprintf(what, sizeof what, "matmul %s ta=%d tb=%d", kind == 0 ? "2-D" : kind == 1 ? "4-D batched" : "shared b",
                         ta, tb);
                check_d(ctx, what, c, ref, batch * M * N, REF_TOL);
                free(ref);
            }
        }
    /* A size that crosses the GEMM's tiles. */
    qkv_tensor *a = RAND(ctx, 3, 3, 70, 130), *b = RAND(ctx, 2, 90, 130);
    qkv_tensor *c = qkv_matmul(ctx, a, b, 0, 1);
    double *ref = dalloc(3 * 70 * 90);
    ref_matmul(ref, a->data, b->data, 3, 1, 70, 90, 130, 0, 1);
    check_d(ctx, "matmul (3,70,130) @ (90,130)^T", c, ref, 3 * 70 * 90, REF_TOL);
    free(ref);
}

static void test_linear(qkv_ctx *ctx) {
    qkv_tensor *x = RAND(ctx, 3, 2, 3, 8), *w = RAND(ctx, 2, 5, 8), *b = RAND(ctx, 1, 5);
    for (int with_bias = 0; with_bias < 2; with_bias++) {
        qkv_tensor *y = qkv_linear(ctx, x, w, with_bias ? b : NULL);
        double ref[30];
        for (int r = 0; r < 6; r++)
            for (int o = 0; o < 5; o++) {
                double s = with_bias ? b->data[o] : 0.0;
                for (int i = 0; i < 8; i++) s += (double)x->data[r * 8 + i] * w->data[o * 8 + i];
                ref[r * 5 + o] = s;
            }
        check_d(ctx, with_bias ? "linear x (2,3,8) w (5,8) + bias" : "linear without bias", y, ref, 30, REF_TOL);
        TU_CHECK(y && y->ndim == 3 && y->shape[2] == 5, "linear output shape");
    }
}

/* ---- element-wise ---- */

static void test_binary(qkv_ctx *ctx) {
    qkv_tensor *a = RAND(ctx, 3, 2, 3, 4);
    qkv_tensor *bs[4] = {RAND(ctx, 3, 2, 3, 4), RAND(ctx, 1, 4), RAND(ctx, 2, 3, 4), qkv_tensor_new(ctx, 0, NULL)};
    bs[3]->data[0] = -1.25f;
    const char *bname[4] = {"same shape", "b (C)", "b (T,C)", "b scalar ()"};
    for (int op = 0; op < 3; op++)
        for (int k = 0; k < 4; k++) {
            qkv_tensor *b = bs[k];
            qkv_tensor *y = op == 0 ? qkv_add(ctx, a, b) : op == 1 ? qkv_sub(ctx, a, b) : qkv_mul(ctx, a, b);
            int64_t nb = qkv_tensor_numel(b);
            double ref[24];
            for (int i = 0; i < 24; i++) {
                double x = a->data[i], z = b->data[i % nb];
                ref[i] = op == 0 ? x + z : op == 1 ? x - z : x * z;
            }
            char what[64];
            snprintf(what, sizeof what, "%s %s", op == 0 ? "add" : op == 1 ? "sub" : "mul", bname[k]);
            check_d(ctx, what, y, ref, 24, REF_TOL);
        }
}

static double gelu_exact(double x) { return 0.5 * x * (1.0 + erf(x / sqrt(2.0))); }
static double gelu_tanh(double x) {
    return 0.5 * x * (1.0 + tanh(sqrt(2.0 / M_PI) * (x + 0.044715 * x * x * x)));
}

static void test_unary(qkv_ctx *ctx) {
    const int64_t n = 40009; /* above the threading threshold, and not a multiple of 16 */
    qkv_tensor *x = randt(ctx, 2, (int64_t[]){1, n}, 3.0f, 0.0f);
    double *ref = dalloc(n);
    const char *names[7] = {"scale -0.5", "relu", "gelu exact", "gelu tanh", "tanh", "sigmoid", "scale 3"};
    for (int op = 0; op < 7; op++) {
        qkv_tensor *y = op == 0   ? qkv_scale(ctx, x, -0.5f)
                        : op == 1 ? qkv_relu(ctx, x)
                        : op == 2 ? qkv_gelu(ctx, x, 0)
                        : op == 3 ? qkv_gelu(ctx, x, 1)
                        : op == 4 ? qkv_tanh(ctx, x)
                        : op == 5 ? qkv_sigmoid(ctx, x)
                                  : qkv_scale(ctx, x, 3.0f);
        for (int64_t i = 0; i < n; i++) {
            double v = x->data[i];
            ref[i] = op == 0   ? -0.5 * v
                     : op == 1 ? (v > 0 ? v : 0)
                     : op == 2 ? gelu_exact(v)
                     : op == 3 ? gelu_tanh(v)
                     : op == 4 ? tanh(v)
                     : op == 5 ? 1.0 / (1.0 + exp(-v))
                               : 3.0 * v;
        }
        check_d(ctx, names[op], y, ref, n, REF_TOL);
    }
    /* GELU's backward over the same wide inputs, against the derivative in double: the fast tanh
     * form must stay finite where exp(-2u) overflows (x < -9). */
    for (int approx = 0; approx < 2; approx++) {
        qkv_tensor *xg = qkv_tensor_from(ctx, 1, &n, x->data);
        xg->requires_grad = 1;
        qkv_backward(ctx, qkv_sum(ctx, qkv_gelu(ctx, xg, approx)));
        for (int64_t i = 0; i < n; i++) {
            double v = xg->data[i];
            if (approx) {
                double t = tanh(sqrt(2.0 / M_PI) * (v + 0.044715 * v * v * v));
                ref[i] = 0.5 * (1 + t) + 0.5 * v * (1 - t * t) * sqrt(2.0 / M_PI) * (1 + 3 * 0.044715 * v * v);
            } else {
                ref[i] = 0.5 * (1 + erf(v / sqrt(2.0))) + v * exp(-0.5 * v * v) / sqrt(2 * M_PI);
            }
        }
        qkv_tensor g = *xg;
        g.data = xg->grad;
        check_d(ctx, approx ? "gelu tanh backward (derivative)" : "gelu exact backward (derivative)",
                xg->grad ? &g : NULL, ref, n, REF_TOL);
    }
    /* GELU on the far tails, where 1 + tanh and 1 + erf cancel. */
    float tails[8] = {-12.0f, -9.0f, -6.0f, -3.0f, 3.0f, 6.0f, 9.0f, 12.0f};
    qkv_tensor *t = qkv_tensor_from(ctx, 1, (int64_t[]){8}, tails);
    for (int approx = 0; approx < 2; approx++) {
        double r[8];
        for (int i = 0; i < 8; i++) r[i] = approx ? gelu_tanh(tails[i]) : gelu_exact(tails[i]);
        check_d(ctx, approx ? "gelu tanh on tails +-12" : "gelu exact on tails +-12", qkv_gelu(ctx, t, approx), r, 8,
                REF_TOL);
    }
    free(ref);
}

/* ---- softmax, log-softmax, LayerNorm, sum, mean ---- */

static void test_softmax(qkv_ctx *ctx) {
    /* Rows around +1000 and -1000 with a spread of 5: exp without the max subtracted overflows. */
    const int64_t Cs[2] = {37, 1000};
    for (int ci = 0; ci < 2; ci++) {
        const int64_t R = 6, C = Cs[ci];
        qkv_tensor *x = randt(ctx, 2, (int64_t[]){R, C}, 5.0f, 0.0f);
        for (int64_t r = 0; r < R; r++)
            for (int64_t c = 0; c < C; c++) x->data[r * C + c] += r % 2 ? -1000.0f : 1000.0f;
        qkv_tensor *s = qkv_softmax(ctx, x), *ls = qkv_log_softmax(ctx, x);
        double *rs = dalloc(R * C), *rls = dalloc(R * C);
        for (int64_t r = 0; r < R; r++) {
            const float *xr = x->data + r * C;
            double m = xr[0], sum = 0;
            for (int64_t c = 1; c < C; c++) m = xr[c] > m ? xr[c] : m;
            for (int64_t c = 0; c < C; c++) sum += exp(xr[c] - m);
            for (int64_t c = 0; c < C; c++) {
                rs[r * C + c] = exp(xr[c] - m) / sum;
                rls[r * C + c] = (xr[c] - m) - log(sum);
            }
        }
        char what[80];
        snprintf(what, sizeof what, "softmax (6,%lld), inputs +-1000", (long long)C);
        check_d(ctx, what, s, rs, R * C, REF_TOL);
        snprintf(what, sizeof what, "log_softmax (6,%lld), inputs +-1000", (long long)C);
        check_d(ctx, what, ls, rls, R * C, REF_TOL);
        free(rs);
        free(rls);
    }
}

static void test_layernorm(qkv_ctx *ctx) {
    const int64_t R = 28, C = 100;
    qkv_tensor *x = randt(ctx, 3, (int64_t[]){4, 7, C}, 2.0f, 5.0f); /* mean 5: centring matters */
    qkv_tensor *w = randt(ctx, 1, &C, 1.0f, 1.0f), *b = RAND(ctx, 1, C);
    for (int affine = 0; affine < 2; affine++) {
        qkv_tensor *y = qkv_layernorm(ctx, x, affine ? w : NULL, affine ? b : NULL, 1e-5f);
        double *ref = dalloc(R * C);
        for (int64_t r = 0; r < R; r++) {
            const float *xr = x->data + r * C;
            double m = 0, v = 0;
            for (int64_t c = 0; c < C; c++) m += xr[c];
            m /= C;
            for (int64_t c = 0; c < C; c++) v += (xr[c] - m) * (xr[c] - m);
            v /= C;
            for (int64_t c = 0; c < C; c++) {
                double nrm = (xr[c] - m) / sqrt(v + 1e-5);
                ref[r * C + c] = affine ? nrm * w->data[c] + b->data[c] : nrm;
            }
        }
        check_d(ctx, affine ? "layernorm (4,7,100) affine" : "layernorm (4,7,100) no affine", y, ref, R * C, REF_TOL);
        free(ref);
    }
}

static void test_sum_mean(qkv_ctx *ctx) {
    const int64_t n = 100003; /* large enough for the fixed 64-part partition */
    qkv_tensor *x = randt(ctx, 1, &n, 1.0f, 0.5f);
    double s = 0;
    for (int64_t i = 0; i < n; i++) s += x->data[i];
    double m = s / n;
    qkv_tensor *ys = qkv_sum(ctx, x), *ym = qkv_mean(ctx, x);
    check_d(ctx, "sum (100003)", ys, &s, 1, REF_TOL);
    check_d(ctx, "mean (100003)", ym, &m, 1, REF_TOL);
    TU_CHECK(ys && ys->ndim == 0, "sum returns a scalar");
}

/* ---- embeddings, losses ---- */

static void test_embedding(qkv_ctx *ctx) {
    qkv_tensor *w = RAND(ctx, 2, 11, 6);
    const int32_t ids[6] = {10, 0, 3, 3, 7, 1};
    for (int nd = 1; nd <= 3; nd++) {
        int64_t shape[3] = {6, 1, 1};
        if (nd == 2) shape[0] = 2, shape[1] = 3;
        if (nd == 3) shape[0] = 1, shape[1] = 2, shape[2] = 3;
        qkv_tensor *y = qkv_embedding(ctx, w, ids, nd, shape);
        TU_CHECK(y && y->ndim == nd + 1 && y->shape[nd] == 6, "embedding output shape for ndim %d", nd);
        float want[36];
        for (int i = 0; i < 6; i++) memcpy(want + i * 6, w->data + ids[i] * 6, 6 * sizeof(float));
        char what[64];
        snprintf(what, sizeof what, "embedding ids ndim %d", nd);
        check_same(what, y ? y->data : NULL, want, 36);
    }
}

static double ref_ce(const float *x, const int32_t *t, int64_t R, int64_t V, int32_t ignore) {
    double tot = 0;
    int64_t cnt = 0;
    for (int64_t r = 0; r < R; r++) {
        if (t[r] == ignore) continue;
        const float *xr = x + r * V;
        double m = xr[0], s = 0;
        for (int64_t v = 1; v < V; v++) m = xr[v] > m ? xr[v] : m;
        for (int64_t v = 0; v < V; v++) s += exp(xr[v] - m);
        tot += log(s) - (xr[t[r]] - m); /* -log softmax[t] */
        cnt++;
    }
    return cnt ? tot / cnt : 0.0;
}

static void test_cross_entropy(qkv_ctx *ctx) {
    const int64_t R = 15, V = 50;
    qkv_tensor *x = randt(ctx, 3, (int64_t[]){3, 5, V}, 4.0f, 1000.0f); /* logits ~1000 */
    int32_t t[15];
    for (int i = 0; i < 15; i++) t[i] = (int32_t)((i * 17) % V);
    t[2] = t[9] = -100;
    double ref = ref_ce(x->data, t, R, V, -100);
    check_d(ctx, "cross_entropy (3,5,50), logits ~1000, 2 ignored", qkv_cross_entropy(ctx, x, t, -100), &ref, 1,
            REF_TOL);
    /* ignore_index may be a real class: rows with target 7 are skipped */
    t[0] = t[2] = t[9] = 7;
    ref = ref_ce(x->data, t, R, V, 7);
    check_d(ctx, "cross_entropy, ignore_index = 7", qkv_cross_entropy(ctx, x, t, 7), &ref, 1, REF_TOL);
    /* a large vocabulary, which crosses many 16-lane blocks */
    const int64_t V2 = 5003;
    qkv_tensor *x2 = randt(ctx, 2, (int64_t[]){4, V2}, 3.0f, -20.0f);
    int32_t t2[4] = {0, 5002, 17, 2500};
    ref = ref_ce(x2->data, t2, 4, V2, -100);
    check_d(ctx, "cross_entropy (4,5003)", qkv_cross_entropy(ctx, x2, t2, -100), &ref, 1, REF_TOL);
    /* every target ignored: 0 (PyTorch: NaN) */
    int32_t all[15];
    for (int i = 0; i < 15; i++) all[i] = -1;
    qkv_tensor *z = qkv_cross_entropy(ctx, x, all, -1);
    TU_CHECK(z && z->data[0] == 0.0f, "cross_entropy with every target ignored is 0, got %g", z ? z->data[0] : -1.0);
    printf("%-4s %-48s\n", z && z->data[0] == 0.0f ? "ok" : "FAIL", "cross_entropy all ignored = 0");
}

/* ---- shape ---- */

static void test_shape(qkv_ctx *ctx) {
    qkv_tensor *x = RAND(ctx, 4, 2, 3, 4, 5);
    const int64_t n = 120;

    qkv_tensor *r = qkv_reshape(ctx, x, 3, (int64_t[]){6, -1, 2});
    TU_CHECK(r && r->data == x->data, "reshape is a view (same data pointer)");
    TU_CHECK(r && r->ndim == 3 && r->shape[0] == 6 && r->shape[1] == 10 && r->shape[2] == 2, "reshape infers -1 = 10");
    printf("%-4s %-48s\n", r && r->data == x->data && r->shape[1] == 10 ? "ok" : "FAIL", "reshape (2,3,4,5) -> (6,-1,2) view");
    qkv_tensor *s = qkv_reshape(ctx, qkv_sum(ctx, x), 0, NULL);
    TU_CHECK(s && s->ndim == 0, "reshape of a scalar to ndim 0");

    /* transpose: every pair, against the index map */
    for (int d0 = 0; d0 < 4; d0++)
        for (int d1 = 0; d1 < 4; d1++) {
            qkv_tensor *y = qkv_transpose(ctx, x, d0, d1);
            float want[120];
            int64_t sh[4] = {2, 3, 4, 5}, ysh[4] = {2, 3, 4, 5};
            ysh[d0] = sh[d1];
            ysh[d1] = sh[d0];
            for (int64_t i = 0; i < n; i++) {
                int64_t idx[4], rem = i;
                for (int d = 3; d >= 0; d--) idx[d] = rem % sh[d], rem /= sh[d];
                int64_t t = idx[d0];
                idx[d0] = idx[d1];
                idx[d1] = t;
                int64_t j = ((idx[0] * ysh[1] + idx[1]) * ysh[2] + idx[2]) * ysh[3] + idx[3];
                want[j] = x->data[i];
            }
            char what[64];
            snprintf(what, sizeof what, "transpose (2,3,4,5) dims %d,%d", d0, d1);
            check_same(what, y ? y->data : NULL, want, n);
        }

    /* concat along each dim, then split back */
    for (int dim = 0; dim < 4; dim++) {
        int64_t sa[4] = {2, 3, 4, 5}, sb[4] = {2, 3, 4, 5};
        sb[dim] = 2;
        qkv_tensor *b = randt(ctx, 4, sb, 1, 0);
        qkv_tensor *xs[2] = {x, b};
        qkv_tensor *c = qkv_concat(ctx, 2, xs, dim);
        int64_t outer = 1, inner = 1;
        for (int d = 0; d < dim; d++) outer *= sa[d];
        for (int d = dim + 1; d < 4; d++) inner *= sa[d];
        int64_t la = sa[dim] * inner, lb = 2 * inner, nb = qkv_tensor_numel(b);
        float *want = malloc((size_t)(n + nb) * sizeof(float));
        for (int64_t o = 0; o < outer; o++) {
            memcpy(want + o * (la + lb), x->data + o * la, (size_t)la * sizeof(float));
            memcpy(want + o * (la + lb) + la, b->data + o * lb, (size_t)lb * sizeof(float));
        }
        char what[64];
        snprintf(what, sizeof what, "concat on dim %d", dim);
        check_same(what, c ? c->data : NULL, want, n + nb);
        qkv_tensor *pieces[2] = {0};
        qkv_status st = qkv_split(ctx, c, dim, 2, (int64_t[]){sa[dim], 2}, pieces);
        snprintf(what, sizeof what, "split on dim %d gives back the inputs", dim);
        TU_CHECK(st == QKV_OK && pieces[0] && pieces[1] && qkv__same_shape(pieces[0], x) && qkv__same_shape(pieces[1], b),
                 "%s (shapes)", what);
        if (st == QKV_OK) {
            check_same(what, pieces[0]->data, x->data, n);
            TU_CHECK(memcmp(pieces[1]->data, b->data, (size_t)nb * sizeof(float)) == 0, "%s (piece 1)", what);
        }
        free(want);
    }

    /* rows: a view sharing data and grad */
    qkv_tensor *p = RAND(ctx, 2, 9, 4);
    p->grad = qkv_ctx_alloc(ctx, 36 * sizeof(float));
    p->requires_grad = 1;
    qkv_tensor *v = qkv_rows(ctx, p, 3, 6);
    int ok = v && v->data == p->data + 12 && v->grad == p->grad + 12 && v->shape[0] == 3 && v->shape[1] == 4 &&
             v->requires_grad;
    TU_CHECK(ok, "rows [3,6) of (9,4) shares data and grad");
    printf("%-4s %-48s\n", ok ? "ok" : "FAIL", "rows [3,6) of (9,4): view of data and grad");
}

/* ---- dropout ---- */

static qkv_tensor *dropout_run(qkv_ctx *ctx, const float *xv, int64_t n, float p, uint64_t seed, int threads,
                               float *grad_out) {
    omp_set_num_threads(threads);
    qkv_ctx_reset(ctx);
    qkv_ctx_seed(ctx, seed);
    qkv_ctx_set_training(ctx, 1);
    qkv_tensor *x = qkv_tensor_from(ctx, 1, &n, xv);
    x->requires_grad = 1;
    qkv_tensor *y = qkv_dropout(ctx, x, p);
    if (grad_out && y) {
        qkv_backward(ctx, qkv_sum(ctx, y));
        memcpy(grad_out, x->grad, (size_t)n * sizeof(float));
    }
    return y;
}

static void test_dropout(void) {
    const int64_t n = 200000;
    const float p = 0.3f;
    float *xv = malloc((size_t)n * sizeof(float)), *y1 = malloc((size_t)n * sizeof(float));
    float *g1 = malloc((size_t)n * sizeof(float)), *g2 = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) xv[i] = 1.0f + fabsf(qkv_rng_normal(&g_rng)); /* never 0 */
    qkv_ctx *ctx = qkv_ctx_new(0);
    int max_threads = omp_get_max_threads();

    qkv_tensor *y = dropout_run(ctx, xv, n, p, 42, 1, g1);
    memcpy(y1, y->data, (size_t)n * sizeof(float));
    int64_t zeros = 0, bad_scale = 0, bad_grad = 0;
    const float keep = 1.0f / (1.0f - p);
    for (int64_t i = 0; i < n; i++) {
        if (y1[i] == 0.0f) zeros++;
        else if (y1[i] != xv[i] * keep) bad_scale++;
        if (g1[i] != (y1[i] == 0.0f ? 0.0f : keep)) bad_grad++;
    }
    double frac = (double)zeros / n, sigma = sqrt(p * (1.0 - p) / n);
    TU_CHECK(fabs(frac - p) <= 4 * sigma, "dropout zero fraction %.5f, p %.2f, 4 sigma %.5f", frac, p, 4 * sigma);
    printf("%-4s dropout zero fraction %.5f vs p = %.2f (|diff| %.2e, 4 sigma %.2e)\n",
           fabs(frac - p) <= 4 * sigma ? "ok" : "FAIL", frac, p, fabs(frac - p), 4 * sigma);
    TU_CHECK(bad_scale == 0, "dropout: %lld kept values not x / (1 - p)", (long long)bad_scale);
    TU_CHECK(bad_grad == 0, "dropout backward: %lld gradients not mask / (1 - p)", (long long)bad_grad);
    printf("%-4s dropout keeps x / (1-p) exactly; backward uses the same mask\n", bad_scale || bad_grad ? "FAIL" : "ok");

    y = dropout_run(ctx, xv, n, p, 42, 2, g2);
    check_same("dropout mask, seed 42, 1 vs 2 threads", y->data, y1, n);
    check_same("dropout backward, 1 vs 2 threads", g2, g1, n);
    y = dropout_run(ctx, xv, n, p, 43, 2, NULL);
    TU_CHECK(memcmp(y->data, y1, (size_t)n * sizeof(float)) != 0, "dropout: another seed gives another mask");
    /* Two dropouts in one step draw two seeds: different masks. */
    qkv_ctx_reset(ctx);
    qkv_ctx_seed(ctx, 42);
    qkv_tensor *x = qkv_tensor_from(ctx, 1, &n, xv);
    qkv_tensor *a = qkv_dropout(ctx, x, p), *b = qkv_dropout(ctx, x, p);
    TU_CHECK(a && b && memcmp(a->data, b->data, (size_t)n * sizeof(float)) != 0, "two dropouts, two masks");
    omp_set_num_threads(max_threads);

    /* Eval mode and p = 0: identity, the input itself. */
    qkv_ctx_set_training(ctx, 0);
    qkv_tensor *e = qkv_dropout(ctx, x, 0.5f);
    TU_CHECK(e == x, "dropout in eval mode returns its input");
    qkv_ctx_set_training(ctx, 1);
    TU_CHECK(qkv_dropout(ctx, x, 0.0f) == x, "dropout with p = 0 returns its input");
    printf("%-4s dropout is the identity in eval mode and with p = 0\n", e == x ? "ok" : "FAIL");
    qkv_ctx_free(ctx);
    free(xv);
    free(y1);
    free(g1);
    free(g2);
}

/* ---- inference mode ---- */

static void test_inference_mode(void) {
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_ctx_set_grad(ctx, 0);
    qkv_ctx_set_training(ctx, 1);
    qkv_tensor *x = RAND(ctx, 2, 4, 6), *w = RAND(ctx, 2, 6, 6), *b = RAND(ctx, 1, 6);
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    const int32_t ids[4] = {0, 1, 2, 3};
    qkv_tensor *pieces[2] = {0};
    qkv_tensor *xs[2] = {x, x};
    qkv_split(ctx, x, 1, 2, (int64_t[]){2, 4}, pieces);
    qkv_tensor *outs[] = {
        qkv_matmul(ctx, x, w, 0, 0), qkv_linear(ctx, x, w, b), qkv_add(ctx, x, b), qkv_sub(ctx, x, b),
        qkv_mul(ctx, x, b), qkv_scale(ctx, x, 2.0f), qkv_relu(ctx, x), qkv_gelu(ctx, x, 0), qkv_gelu(ctx, x, 1),
        qkv_tanh(ctx, x), qkv_sigmoid(ctx, x), qkv_dropout(ctx, x, 0.5f), qkv_softmax(ctx, x),
        qkv_log_softmax(ctx, x), qkv_layernorm(ctx, x, b, b, 1e-5f), qkv_sum(ctx, x), qkv_mean(ctx, x),
        qkv_embedding(ctx, w, ids, 1, (int64_t[]){4}), qkv_cross_entropy(ctx, x, ids, -100),
        qkv_reshape(ctx, x, 1, (int64_t[]){-1}), qkv_transpose(ctx, x, 0, 1), qkv_concat(ctx, 2, xs, 0),
        pieces[0], pieces[1], qkv_rows(ctx, x, 1, 3),
    };
    int n = (int)(sizeof outs / sizeof outs[0]), bad = 0;
    for (int i = 0; i < n; i++)
        if (!outs[i] || outs[i]->requires_grad) {
            bad++;
            printf("     inference mode: output %d (%s) %s\n", i, outs[i] && outs[i]->name ? outs[i]->name : "?",
                   outs[i] ? "requires grad" : "is NULL");
        }
    TU_CHECK(bad == 0, "inference mode: %d of %d outputs NULL or requiring grad (%s)", bad, n, qkv_ctx_error(ctx));
    TU_CHECK(ctx->tape == NULL, "inference mode: the tape is empty");
    TU_CHECK(qkv_backward(ctx, outs[15]) == QKV_ERR_STATE, "inference mode: backward has nothing to run");
    printf("%-4s inference mode: %d ops, no output requires grad, tape empty\n", bad || ctx->tape ? "FAIL" : "ok", n);
    qkv_ctx_free(ctx);
}

/* ---- the same bits on 1 and 2 threads (forward and backward of every threaded kernel) ---- */

#define DET_N 10
typedef struct {
    float *v[DET_N];
    int64_t n[DET_N];
    const char *what[DET_N];
} det_snapshot;

static void det_run(int threads, det_snapshot *s) {
    omp_set_num_threads(threads);
    qkv_rng_seed(&g_rng, 777);
    qkv_ctx *ctx = qkv_ctx_new(0);
    qkv_ctx_seed(ctx, 5);
    qkv_ctx_set_training(ctx, 1);
    const int64_t R = 64, C = 1024, V = 100; /* R*C = 65536: above QKV__PAR_MIN */
    qkv_tensor *x = RAND(ctx, 2, R, C), *w = randt(ctx, 1, &C, 0.2f, 1.0f), *b = RAND(ctx, 1, C);
    qkv_tensor *bias = RAND(ctx, 1, C), *E = RAND(ctx, 2, V, C);
    qkv_tensor *leaves[5] = {x, w, b, bias, E};
    for (int i = 0; i < 5; i++) leaves[i]->requires_grad = 1;
    int32_t ids[64], targets[1024];
    for (int i = 0; i < 64; i++) ids[i] = (i * 37) % V;
    for (int i = 0; i < 1024; i++) targets[i] = i % 11 == 0 ? -100 : (i * 13) % 64;

    qkv_tensor *h = qkv_layernorm(ctx, x, w, b, 1e-5f);
    qkv_tensor *g = qkv_add(ctx, qkv_gelu(ctx, h, 0), bias);                  /* broadcast add */
    g = qkv_mul(ctx, g, w);                                                   /* broadcast mul */
    g = qkv_add(ctx, g, qkv_embedding(ctx, E, ids, 1, &R));
    qkv_tensor *sm = qkv_softmax(ctx, g), *ls = qkv_log_softmax(ctx, qkv_gelu(ctx, h, 1));
    qkv_tensor *k = qkv_transpose(ctx, qkv_sub(ctx, ls, sm), 0, 1);          /* (C,R) */
    k = qkv_dropout(ctx, qkv_tanh(ctx, k), 0.1f);
    qkv_tensor *loss = qkv_cross_entropy(ctx, k, targets, -100);
    loss = qkv_add(ctx, loss, qkv_mean(ctx, qkv_sigmoid(ctx, qkv_relu(ctx, x))));
    loss = qkv_add(ctx, loss, qkv_scale(ctx, qkv_sum(ctx, sm), 1e-3f));
    if (qkv_backward(ctx, loss) != QKV_OK) {
        TU_CHECK(0, "determinism pipeline failed: %s", qkv_ctx_error(ctx));
        qkv_ctx_free(ctx);
        return;
    }
    const qkv_tensor *keep[DET_N] = {loss, h, sm, ls, k, x, w, b, bias, E};
    const char *what[DET_N] = {"loss", "layernorm out", "softmax out", "log_softmax(gelu tanh) out",
                               "dropout(tanh) out", "grad x", "grad layernorm w (col blocks)",
                               "grad layernorm b", "grad broadcast bias (colsum)", "grad embedding"};
    for (int i = 0; i < DET_N; i++) {
        const float *src = i < 5 ? keep[i]->data : keep[i]->grad;
        s->n[i] = qkv_tensor_numel(keep[i]);
        s->v[i] = malloc((size_t)s->n[i] * sizeof(float));
        memcpy(s->v[i], src, (size_t)s->n[i] * sizeof(float));
        s->what[i] = what[i];
    }
    qkv_ctx_free(ctx);
}

static void test_determinism(void) {
    int max_threads = omp_get_max_threads();
    det_snapshot one = {0}, two = {0};
    det_run(1, &one);
    det_run(2, &two);
    omp_set_num_threads(max_threads);
    for (int i = 0; i < DET_N; i++) {
        char what[96];
        snprintf(what, sizeof what, "1 vs 2 threads: %s", one.what[i] ? one.what[i] : "?");
        if (one.v[i] && two.v[i]) check_same(what, two.v[i], one.v[i], one.n[i]);
        free(one.v[i]);
        free(two.v[i]);
    }
}

/* ---- AVX-512 kernels against the reference loops ---- */

/* Runs the kernels with the fast path on or off; returns malloc'd results in a fixed order. */
#define FAST_N 9
static void fast_run(int scalar, float *out[FAST_N], int64_t n[FAST_N]) {
    qkv__ew_force_scalar(scalar);
    qkv_rng_seed(&g_rng, 99);
    qkv_ctx *ctx = qkv_ctx_new(0);
    const int64_t R = 37, C = 1003;
    qkv_tensor *x = randt(ctx, 2, (int64_t[]){R, C}, 3.0f, 0.5f), *w = RAND(ctx, 1, C), *b = RAND(ctx, 1, C);
    x->requires_grad = w->requires_grad = b->requires_grad = 1;
    int32_t t[37];
    for (int i = 0; i < 37; i++) t[i] = (i * 101) % (int32_t)C;
    qkv_tensor *ys[6] = {qkv_softmax(ctx, x), qkv_log_softmax(ctx, x), qkv_layernorm(ctx, x, w, b, 1e-5f),
                         qkv_gelu(ctx, x, 1), qkv_gelu(ctx, x, 0), qkv_cross_entropy(ctx, x, t, -100)};
    /* one loss through every kernel, so backward runs each fast backward */
    qkv_tensor *wt = RAND(ctx, 2, R, C), *loss = ys[5];
    for (int i = 0; i < 5; i++) loss = qkv_add(ctx, loss, qkv_sum(ctx, qkv_mul(ctx, ys[i], wt)));
    qkv_backward(ctx, loss);
    const qkv_tensor *src[FAST_N] = {ys[0], ys[1], ys[2], ys[3], ys[4], ys[5], x, w, b};
    for (int i = 0; i < FAST_N; i++) {
        const float *p = i >= 6 ? src[i]->grad : src[i]->data;
        n[i] = qkv_tensor_numel(src[i]);
        out[i] = malloc((size_t)n[i] * sizeof(float));
        memcpy(out[i], p, (size_t)n[i] * sizeof(float));
    }
    qkv_ctx_free(ctx);
    qkv__ew_force_scalar(0);
}

static void test_fast_vs_ref(void) {
    if (strcmp(qkv__ew_isa(), "avx512") != 0) {
        printf("note: no AVX-512 on this CPU (or QKV_EW_ISA=scalar): only the reference loops run here\n");
        return;
    }
    float *fast[FAST_N], *ref[FAST_N];
    int64_t n[FAST_N];
    fast_run(0, fast, n);
    fast_run(1, ref, n);
    const char *what[FAST_N] = {"avx512 vs ref: softmax (37,1003)", "avx512 vs ref: log_softmax",
                                "avx512 vs ref: layernorm", "avx512 vs ref: gelu tanh",
                                "avx512 vs ref: gelu exact", "avx512 vs ref: cross_entropy",
                                "avx512 vs ref: grad x (all 6 backward)",
                                "avx512 vs ref: grad layernorm w", "avx512 vs ref: grad layernorm b"};
    for (int i = 0; i < FAST_N; i++) tu_close(what[i], fast[i], ref[i], n[i], FAST_TOL);
    for (int i = 0; i < FAST_N; i++) {
        free(fast[i]);
        free(ref[i]);
    }
}

int main(void) {
    qkv_rng_seed(&g_rng, 2024);
    for (int pass = 0; pass < 2; pass++) {
        qkv__ew_force_scalar(pass);
        printf("=== forward values against double loops, kernel path: %s ===\n", qkv__ew_isa());
        qkv_ctx *ctx = qkv_ctx_new(0);
        test_matmul(ctx);
        test_linear(ctx);
        test_binary(ctx);
        test_unary(ctx);
        test_softmax(ctx);
        test_layernorm(ctx);
        test_sum_mean(ctx);
        test_embedding(ctx);
        test_cross_entropy(ctx);
        test_shape(ctx);
        TU_CHECK(qkv_ctx_status(ctx) == QKV_OK, "no op failed: %s", qkv_ctx_error(ctx));
        if (qkv_ctx_status(ctx) != QKV_OK) printf("FAIL first error: %s\n", qkv_ctx_error(ctx));
        qkv_ctx_free(ctx);
        if (pass == 0 && strcmp(qkv__ew_isa(), "scalar") == 0) break;
    }
    qkv__ew_force_scalar(0);
    printf("=== dropout, inference mode, thread-count determinism, fast vs reference kernels ===\n");
    test_dropout();
    test_inference_mode();
    test_determinism();
    test_fast_vs_ref();
    return tu_finish("test_ops_ref");
}

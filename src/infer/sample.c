/* sample.c — choosing the next token from a row of logits: greedy, temperature, top-k, top-p.
 *
 * Semantics are Hugging Face's logits processors, in generate()'s order: TemperatureLogitsWarper
 * (logits / T), TopKLogitsWarper (drop every logit below the k-th largest; ties with it stay),
 * TopPLogitsWarper (keep the smallest most-probable prefix whose mass reaches top_p), then one draw
 * from the softmax of what is left. Not here: beam search, penalties, min-p, typical sampling.
 *
 * Convention a reader needs: the filter produces a list of kept ids with unnormalised weights
 * w = exp((logit - max) / T) in double precision, and both the draw (qkv_sampler_next) and the exposed
 * distribution (qkv_sampler_probs) read that one list, so the tested distribution is the sampled one.
 * Every buffer is allocated in qkv_sampler_new; a draw never allocates.
 *
 * Cost per draw, V ids: one pass for the max, one for the weights; top-k adds a k-entry min-heap
 * (O(V log k)); top-p sorts only the ids that can be in the nucleus: an id with w < (1 - top_p) Z / V
 * (Z = total weight) never is, because all such ids together weigh less than (1 - top_p) Z, so the
 * ids above that bound already hold more than top_p of the mass and the nucleus is a prefix of them.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "core/core_int.h"
#include "qkv/infer.h"

typedef struct {
    double w;   /* exp((logit - max) / T), unnormalised */
    int32_t id;
} cand;

struct qkv_sampler {
    int64_t V;
    qkv_sample_opts o;
    qkv_rng rng;
    cand *c;      /* V entries: the kept ids (n_kept of them) */
    float *heap;  /* V entries: top-k min-heap */
    int64_t n_kept;
    double z_kept; /* sum of the kept weights */
};

qkv_sample_opts qkv_sample_default_opts(void) {
    qkv_sample_opts o = {.greedy = 0, .temperature = 1.0f, .top_k = 0, .top_p = 1.0f};
    return o;
}

qkv_status qkv_sample_opts_check(const qkv_sample_opts *o) {
    if (!o) return qkv__set_error(QKV_ERR_ARG, "sample: NULL options");
    if (o->greedy) return QKV_OK;
    if (!(o->temperature > 0) || !isfinite(o->temperature))
        return qkv__set_error(QKV_ERR_RANGE,
                              "sample: temperature %g out of range (must be > 0 and finite; use greedy for 0)",
                              (double)o->temperature);
    if (o->top_k < 0)
        return qkv__set_error(QKV_ERR_RANGE, "sample: top_k %lld out of range (must be >= 0; 0 = off)",
                              (long long)o->top_k);
    if (!(o->top_p > 0 && o->top_p <= 1))
        return qkv__set_error(QKV_ERR_RANGE, "sample: top_p %g out of range (must be in (0, 1]; 1 = off)",
                              (double)o->top_p);
    return QKV_OK;
}

int64_t qkv_argmax(const float *x, int64_t n) {
    if (!x || n < 1) {
        qkv__set_error(QKV_ERR_ARG, "argmax: %s", !x ? "NULL input" : "empty input");
        return -1;
    }
    int64_t best = 0;
    for (int64_t i = 0; i < n; i++) {
        if (isnan(x[i])) {
            qkv__set_error(QKV_ERR_NONFINITE, "argmax: value %lld is NaN", (long long)i);
            return -1;
        }
        if (x[i] > x[best]) best = i; /* strict: the first of equal maxima wins */
    }
    return best;
}

qkv_sampler *qkv_sampler_new(int64_t V, const qkv_sample_opts *o, uint64_t seed) {
    qkv_sample_opts d = qkv_sample_default_opts();
    if (!o) o = &d;
    if (V < 1 || V > INT32_MAX) {
        qkv__set_error(QKV_ERR_ARG, "sampler: vocabulary size %lld out of range 1..%d", (long long)V, INT32_MAX);
        return NULL;
    }
    if (qkv_sample_opts_check(o) != QKV_OK) return NULL;
    qkv_sampler *s = calloc(1, sizeof *s);
    if (s) {
        s->c = malloc((size_t)V * sizeof *s->c);
        s->heap = malloc((size_t)V * sizeof *s->heap);
    }
    if (!s || !s->c || !s->heap) {
        qkv_sampler_free(s);
        qkv__set_error(QKV_ERR_NOMEM, "sampler: out of memory for %lld ids", (long long)V);
        return NULL;
    }
    s->V = V;
    s->o = *o;
    qkv_rng_seed(&s->rng, seed);
    return s;
}

void qkv_sampler_free(qkv_sampler *s) {
    if (!s) return;
    free(s->c);
    free(s->heap);
    free(s);
}

void qkv_sampler_seed(qkv_sampler *s, uint64_t seed) {
    if (s) qkv_rng_seed(&s->rng, seed);
}

qkv_status qkv_sampler_set_opts(qkv_sampler *s, const qkv_sample_opts *o) {
    if (!s) return qkv__set_error(QKV_ERR_ARG, "sampler: NULL sampler");
    qkv_status st = qkv_sample_opts_check(o);
    if (st == QKV_OK) s->o = *o;
    return st;
}

/* ---- top-k: the k-th largest logit via a k-entry min-heap (root = smallest of the k largest) ---- */

static void sift_down(float *h, int64_t n, int64_t i) {
    for (;;) {
        int64_t l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && h[l] < h[m]) m = l;
        if (r < n && h[r] < h[m]) m = r;
        if (m == i) return;
        float t = h[i];
        h[i] = h[m], h[m] = t;
        i = m;
    }
}

static float kth_largest(float *heap, const float *x, int64_t n, int64_t k) {
    for (int64_t i = 0; i < k; i++) heap[i] = x[i];
    for (int64_t i = k / 2 - 1; i >= 0; i--) sift_down(heap, k, i);
    for (int64_t i = k; i < n; i++)
        if (x[i] > heap[0]) {
            heap[0] = x[i];
            sift_down(heap, k, 0);
        }
    return heap[0];
}

/* Descending weight, then ascending id: a total order, so the nucleus never depends on qsort. */
static int cand_cmp(const void *pa, const void *pb) {
    const cand *a = pa, *b = pb;
    if (a->w != b->w) return a->w > b->w ? -1 : 1;
    return (a->id > b->id) - (a->id < b->id);
}

/* Fills s->c[0 .. n_kept) and z_kept with the ids that survive temperature -> top-k -> top-p. */
static qkv_status filter(qkv_sampler *s, const float *logits) {
    const int64_t V = s->V;
    if (!logits) return qkv__set_error(QKV_ERR_ARG, "sample: NULL logits");
    float mx = -INFINITY;
    int64_t arg = -1;
    for (int64_t i = 0; i < V; i++) {
        float l = logits[i];
        if (isnan(l) || l == INFINITY)
            return qkv__set_error(QKV_ERR_NONFINITE, "sample: logit %lld is %s", (long long)i,
                                  isnan(l) ? "NaN" : "+inf");
        if (l > mx) mx = l, arg = i;
    }
    if (arg < 0) return qkv__set_error(QKV_ERR_NONFINITE, "sample: every one of the %lld logits is -inf", (long long)V);
    if (s->o.greedy) {
        s->c[0] = (cand){1.0, (int32_t)arg};
        s->n_kept = 1, s->z_kept = 1.0;
        return QKV_OK;
    }
    /* top-k threshold on the raw logits: dividing by T > 0 keeps the order (and the ties) */
    float thr = -INFINITY;
    if (s->o.top_k > 0 && s->o.top_k < V) thr = kth_largest(s->heap, logits, V, s->o.top_k);
    const double inv_t = 1.0 / (double)s->o.temperature;
    int64_t n = 0;
    double z = 0;
    for (int64_t i = 0; i < V; i++) {
        if (logits[i] < thr) continue;
        double w = exp(((double)logits[i] - (double)mx) * inv_t);
        if (w > 0) {
            s->c[n++] = (cand){w, (int32_t)i};
            z += w;
        }
    }
    /* w(argmax) = 1, so n >= 1 and z >= 1 here */
    if (s->o.top_p < 1.0f) {
        const double top_p = (double)s->o.top_p;
        const double bound = (1.0 - top_p) * z / (double)V;
        int64_t m = 0;
        for (int64_t i = 0; i < n; i++)
            if (s->c[i].w >= bound) s->c[m++] = s->c[i];
        qsort(s->c, (size_t)m, sizeof *s->c, cand_cmp);
        double cum = 0;
        int64_t keep = 0;
        while (keep < m) {
            cum += s->c[keep++].w;
            if (cum >= top_p * z) break;
        }
        n = keep, z = cum;
    }
    s->n_kept = n, s->z_kept = z;
    return QKV_OK;
}

int32_t qkv_sampler_next(qkv_sampler *s, const float *logits) {
    if (!s) {
        qkv__set_error(QKV_ERR_ARG, "sample: NULL sampler");
        return -1;
    }
    if (filter(s, logits) != QKV_OK) return -1;
    if (s->o.greedy) return s->c[0].id;
    /* u in [0,1) with 53 random bits; walk the kept ids until the running weight passes u * z. */
    double u = (double)(qkv_rng_u64(&s->rng) >> 11) * 0x1.0p-53;
    double target = u * s->z_kept, cum = 0;
    for (int64_t i = 0; i < s->n_kept; i++) {
        cum += s->c[i].w;
        if (cum > target) return s->c[i].id;
    }
    return s->c[s->n_kept - 1].id; /* rounding: target within an ulp of z */
}

qkv_status qkv_sampler_probs(qkv_sampler *s, const float *logits, float *probs) {
    if (!s || !probs) return qkv__set_error(QKV_ERR_ARG, "sample: NULL %s", !s ? "sampler" : "probs");
    qkv_status st = filter(s, logits);
    if (st != QKV_OK) return st;
    memset(probs, 0, (size_t)s->V * sizeof *probs);
    for (int64_t i = 0; i < s->n_kept; i++) probs[s->c[i].id] = (float)(s->c[i].w / s->z_kept);
    return QKV_OK;
}

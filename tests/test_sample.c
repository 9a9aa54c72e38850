/* test_sample.c — the sampler (src/infer/sample.c) against an independent double-precision reference.
 *
 * The reference is written differently on purpose: no sorting and no heap. Top-k keeps id i when
 * fewer than k logits are strictly larger than its own (= "logit >= the k-th largest", ties kept, as
 * HF's TopKLogitsWarper); top-p keeps id i when the probability of every id that comes before it
 * (larger probability, or equal probability and lower id) sums to less than top_p — the smallest
 * prefix reaching top_p, as HF's TopPLogitsWarper. O(V^2) brute force.
 * Checked: the filtered distribution (qkv_sampler_probs) on random logits over many settings;
 * draws against that distribution with a chi-square bound (and the same bound rejecting the
 * unfiltered softmax, so the test has the power to fail); seeds; edge cases; bad options.
 */
#include <time.h>

#include "qkv/infer.h"
#include "testutil.h"

/* "ok  " when no check failed since the last call, else "FAIL": the summary lines never say ok wrongly. */
static const char *section_ok(void) {
    static int seen;
    int bad = tu_failures > seen;
    seen = tu_failures;
    return bad ? "FAIL" : "ok  ";
}

/* HF pipeline in double: temperature -> top-k -> top-p, probabilities into ref (V doubles). */
static void reference(const float *logits, int64_t V, const qkv_sample_opts *o, double *ref) {
    if (o->greedy) {
        int64_t best = 0;
        for (int64_t i = 1; i < V; i++)
            if (logits[i] > logits[best]) best = i;
        for (int64_t i = 0; i < V; i++) ref[i] = i == best;
        return;
    }
    double mx = -INFINITY;
    for (int64_t i = 0; i < V; i++)
        if (logits[i] > mx) mx = logits[i];
    double z = 0;
    for (int64_t i = 0; i < V; i++) {
        int keep = 1;
        if (o->top_k > 0 && o->top_k < V) {
            int64_t larger = 0;
            for (int64_t j = 0; j < V; j++) larger += logits[j] > logits[i];
            keep = larger < o->top_k;
        }
        ref[i] = keep ? exp(((double)logits[i] - mx) / (double)o->temperature) : 0;
        z += ref[i];
    }
    for (int64_t i = 0; i < V; i++) ref[i] /= z;
    if (o->top_p < 1) {
        double *before = malloc((size_t)V * sizeof *before), z2 = 0;
        for (int64_t i = 0; i < V; i++) {
            before[i] = 0;
            for (int64_t j = 0; j < V; j++)
                if (ref[j] > ref[i] || (ref[j] == ref[i] && j < i)) before[i] += ref[j];
        }
        for (int64_t i = 0; i < V; i++) {
            if (!(ref[i] > 0 && before[i] < (double)o->top_p)) ref[i] = 0;
            z2 += ref[i];
        }
        for (int64_t i = 0; i < V; i++) ref[i] /= z2;
        free(before);
    }
}

/* Compares qkv_sampler_probs with the reference: same kept set, max abs error; returns the error. */
static double compare(const float *logits, int64_t V, qkv_sample_opts o, const char *what, int verbose) {
    qkv_sampler *s = qkv_sampler_new(V, &o, 1);
    float *got = malloc((size_t)V * sizeof *got);
    double *ref = malloc((size_t)V * sizeof *ref), err = 0, sum = 0;
    int same_set = 1;
    qkv_status st = s ? qkv_sampler_probs(s, logits, got) : QKV_ERR_ARG;
    TU_CHECK(st == QKV_OK, "%s: qkv_sampler_probs failed: %s", what, qkv_last_error());
    if (st == QKV_OK) {
        reference(logits, V, &o, ref);
        for (int64_t i = 0; i < V; i++) {
            if ((got[i] > 0) != ((float)ref[i] > 0)) same_set = 0; /* as floats: 1e-50 is 0 */
            double d = fabs(got[i] - ref[i]);
            if (d > err) err = d;
            sum += got[i];
        }
        TU_CHECK(same_set, "%s: the kept ids differ from the reference", what);
        TU_CHECK(err <= 1e-6, "%s: max |p - ref| %.3e > 1e-6", what, err);
        TU_CHECK(fabs(sum - 1) <= 1e-5, "%s: probabilities sum to %.8f", what, sum);
        if (verbose) printf("%s %-60s max|p-ref| %.2e (tol 1e-06)\n", section_ok(), what, err);
    }
    qkv_sampler_free(s);
    free(got);
    free(ref);
    return err;
}

static void fill_logits(qkv_rng *r, float *x, int64_t V, float scale) {
    for (int64_t i = 0; i < V; i++) x[i] = scale * qkv_rng_normal(r);
}

static void test_distributions(void) {
    qkv_rng r;
    qkv_rng_seed(&r, 11);
    const int64_t Vs[] = {1, 2, 7, 100, 1000};
    const float temps[] = {1.0f, 0.7f, 1.6f, 0.05f};
    const int64_t ks[] = {0, 1, 3, 50, -1 /* V */, -2 /* V + 10 */};
    const float ps[] = {1.0f, 0.95f, 0.6f, 0.1f};
    double worst = 0;
    int n_cases = 0;
    float *x = malloc(1000 * sizeof *x);
    for (size_t vi = 0; vi < sizeof Vs / sizeof Vs[0]; vi++) {
        int64_t V = Vs[vi];
        for (int scale = 1; scale <= 4; scale *= 4) {
            fill_logits(&r, x, V, (float)scale);
            for (size_t ti = 0; ti < 4; ti++)
                for (size_t ki = 0; ki < 6; ki++)
                    for (size_t pi = 0; pi < 4; pi++) {
                        qkv_sample_opts o = qkv_sample_default_opts();
                        o.temperature = temps[ti];
                        o.top_k = ks[ki] == -1 ? V : ks[ki] == -2 ? V + 10 : ks[ki];
                        o.top_p = ps[pi];
                        char what[128];
                        snprintf(what, sizeof what, "V=%lld scale=%d T=%g k=%lld p=%g", (long long)V, scale,
                                 (double)o.temperature, (long long)o.top_k, (double)o.top_p);
                        double e = compare(x, V, o, what, 0);
                        if (e > worst) worst = e;
                        n_cases++;
                    }
        }
    }
    printf("%s %d settings x random logits (V 1..1000) vs brute-force reference: max|p-ref| %.2e (tol 1e-06)\n",
           section_ok(), n_cases, worst);
    free(x);

    /* A peaked distribution over 5000 ids: most ids fall under the nucleus pre-filter bound. */
    float *big = malloc(5000 * sizeof *big);
    fill_logits(&r, big, 5000, 6.0f);
    qkv_sample_opts o = qkv_sample_default_opts();
    o.top_p = 0.9f;
    compare(big, 5000, o, "V=5000 scale 6, top_p 0.9 (pre-filter path)", 1);
    o.top_p = 0.999f, o.temperature = 2.0f;
    compare(big, 5000, o, "V=5000 scale 6, T 2, top_p 0.999", 1);
    o.top_k = 40, o.top_p = 0.5f, o.temperature = 0.9f;
    compare(big, 5000, o, "V=5000 scale 6, T 0.9, top_k 40, top_p 0.5", 1);
    free(big);

    /* Ties: top-k keeps every id equal to the k-th logit; top-p orders equal ids by id. */
    const float tie[6] = {3, 1, 2, 2, 2, 0};
    o = qkv_sample_default_opts();
    o.top_k = 2;
    compare(tie, 6, o, "top_k 2 with a 3-way tie at the boundary (4 ids kept)", 1);
    float got[6];
    qkv_sampler *s = qkv_sampler_new(6, &o, 0);
    qkv_sampler_probs(s, tie, got);
    TU_CHECK(got[0] > 0 && got[2] > 0 && got[3] > 0 && got[4] > 0 && got[1] == 0 && got[5] == 0,
             "top_k tie: ids 0,2,3,4 kept, 1,5 removed");
    qkv_sampler_free(s);
    const float flat[4] = {1, 1, 1, 1};
    o = qkv_sample_default_opts();
    o.top_p = 0.5f;
    s = qkv_sampler_new(4, &o, 0);
    qkv_sampler_probs(s, flat, got);
    TU_CHECK(got[0] == 0.5f && got[1] == 0.5f && got[2] == 0 && got[3] == 0,
             "top_p 0.5 over 4 equal ids keeps ids 0 and 1 (%g %g %g %g)", got[0], got[1], got[2], got[3]);
    qkv_sampler_free(s);
}

/* Wilson–Hilferty approximation of the chi-square quantile with df degrees of freedom at the normal
 * quantile zq (4.753 = upper 1e-6 tail). */
static double chi2_crit(int df, double zq) {
    double a = 2.0 / (9.0 * df);
    double c = 1 - a + zq * sqrt(a);
    return df * c * c * c;
}

static void test_frequencies(void) {
    enum { V = 12, N = 200000 };
    qkv_rng r;
    qkv_rng_seed(&r, 5);
    float x[V];
    fill_logits(&r, x, V, 1.5f);
    qkv_sample_opts o = qkv_sample_default_opts();
    o.temperature = 0.8f, o.top_k = 8, o.top_p = 0.85f;
    double ref[V], plain[V];
    reference(x, V, &o, ref);
    qkv_sample_opts po = qkv_sample_default_opts();
    reference(x, V, &po, plain);
    qkv_sampler *s = qkv_sampler_new(V, &o, 1234);
    long count[V] = {0};
    int bad = 0;
    clock_t t0 = clock();
    for (int i = 0; i < N; i++) {
        int32_t id = qkv_sampler_next(s, x);
        if (id < 0 || id >= V) bad++;
        else count[id]++;
    }
    double secs = (double)(clock() - t0) / CLOCKS_PER_SEC;
    TU_CHECK(bad == 0, "%d draws out of range", bad);
    double chi = 0, chi_plain = 0;
    int kept = 0, removed_drawn = 0;
    for (int i = 0; i < V; i++) {
        if (ref[i] > 0) {
            kept++;
            chi += (count[i] - N * ref[i]) * (count[i] - N * ref[i]) / (N * ref[i]);
        } else if (count[i]) {
            removed_drawn++;
        }
        chi_plain += (count[i] - N * plain[i]) * (count[i] - N * plain[i]) / (N * plain[i]);
    }
    double crit = chi2_crit(kept - 1, 4.753), crit_plain = chi2_crit(V - 1, 4.753);
    TU_CHECK(removed_drawn == 0, "%d removed ids were drawn", removed_drawn);
    TU_CHECK(kept > 1 && kept < 8, "the setting must keep 2..7 ids to be a real test (kept %d)", kept);
    TU_CHECK(chi <= crit, "chi-square %.2f > %.2f (df %d, p 1e-6)", chi, crit, kept - 1);
    TU_CHECK(chi_plain > crit_plain, "the same draws must fail against the unfiltered softmax (%.1f)", chi_plain);
    printf("%s %d draws, T 0.8 k 8 p 0.85 (%d ids kept): chi2 %.2f <= %.2f (df %d, p=1e-6); vs unfiltered "
           "softmax chi2 %.0f (rejected); %.0f ns/draw\n",
           section_ok(), N, kept, chi, crit, kept - 1, chi_plain, 1e9 * secs / N);

    /* Plain sampling over all ids. */
    qkv_sampler_set_opts(s, &po);
    qkv_sampler_seed(s, 99);
    long c2[V] = {0};
    for (int i = 0; i < N; i++) c2[qkv_sampler_next(s, x)]++;
    double chi2 = 0;
    for (int i = 0; i < V; i++) chi2 += (c2[i] - N * plain[i]) * (c2[i] - N * plain[i]) / (N * plain[i]);
    TU_CHECK(chi2 <= crit_plain, "plain sampling chi-square %.2f > %.2f", chi2, crit_plain);
    printf("%s %d draws, plain softmax over %d ids: chi2 %.2f <= %.2f (df %d)\n", section_ok(), N, V, chi2, crit_plain,
           V - 1);
    qkv_sampler_free(s);
}

static void test_seeds(void) {
    enum { V = 50, N = 1000 };
    qkv_rng r;
    qkv_rng_seed(&r, 8);
    float x[V];
    fill_logits(&r, x, V, 1.0f);
    qkv_sample_opts o = qkv_sample_default_opts();
    o.top_k = 20, o.top_p = 0.9f;
    qkv_sampler *a = qkv_sampler_new(V, &o, 42), *b = qkv_sampler_new(V, &o, 42), *c = qkv_sampler_new(V, &o, 43);
    int32_t first[N];
    int same_ab = 1, same_ac = 1;
    for (int i = 0; i < N; i++) {
        int32_t ia = qkv_sampler_next(a, x), ib = qkv_sampler_next(b, x), ic = qkv_sampler_next(c, x);
        first[i] = ia;
        same_ab &= ia == ib;
        same_ac &= ia == ic;
    }
    TU_CHECK(same_ab, "two samplers with seed 42 must draw the same ids");
    TU_CHECK(!same_ac, "seeds 42 and 43 must draw different sequences");
    qkv_sampler_seed(a, 42);
    int again = 1;
    for (int i = 0; i < N; i++) again &= qkv_sampler_next(a, x) == first[i];
    TU_CHECK(again, "reseeding with 42 must repeat the sequence");
    printf("%s seed 42 twice: same %d ids; seed 43 differs; reseed repeats\n", section_ok(), N);
    qkv_sampler_free(a);
    qkv_sampler_free(b);
    qkv_sampler_free(c);
}

static void test_edges(void) {
    enum { V = 30 };
    qkv_rng r;
    qkv_rng_seed(&r, 3);
    float x[V], p1[V], p2[V];
    fill_logits(&r, x, V, 2.0f);
    int64_t am = qkv_argmax(x, V);
    qkv_sample_opts plain = qkv_sample_default_opts(), o = plain;
    qkv_sampler *s = qkv_sampler_new(V, &plain, 0);

    /* top_k >= V and top_p = 1 are the plain softmax */
    qkv_sampler_probs(s, x, p1);
    int same = 1;
    for (int64_t k = V; k <= V + 5; k += 5) {
        o = plain, o.top_k = k;
        qkv_sampler_set_opts(s, &o);
        qkv_sampler_probs(s, x, p2);
        same &= memcmp(p1, p2, sizeof p1) == 0;
    }
    TU_CHECK(same, "top_k >= V must equal no top-k");
    o = plain, o.top_p = 1.0f;
    qkv_sampler_set_opts(s, &o);
    qkv_sampler_probs(s, x, p2);
    TU_CHECK(memcmp(p1, p2, sizeof p1) == 0, "top_p 1 must equal no top-p");

    /* top_k 1 (no ties here) and a tiny temperature behave as greedy */
    for (int t = 0; t < 2; t++) {
        o = plain;
        if (t == 0) o.top_k = 1;
        else o.temperature = 1e-6f;
        qkv_sampler_set_opts(s, &o);
        qkv_sampler_probs(s, x, p2);
        int all_argmax = p2[am] == 1.0f;
        for (int i = 0; i < 200; i++) all_argmax &= qkv_sampler_next(s, x) == am;
        TU_CHECK(all_argmax, "%s must always give the argmax %lld", t ? "temperature 1e-6" : "top_k 1", (long long)am);
    }
    o = plain, o.greedy = 1;
    qkv_sampler_set_opts(s, &o);
    TU_CHECK(qkv_sampler_next(s, x) == am, "greedy = argmax");

    /* greedy ties: lowest id */
    float tie[V];
    for (int i = 0; i < V; i++) tie[i] = (float)(i % 7) - 5.0f; /* maxima 1 at ids 6, 13, 20, 27 */
    TU_CHECK(qkv_sampler_next(s, tie) == 6 && qkv_argmax(tie, V) == 6, "greedy tie must pick the lowest id (6)");

    /* all -inf but one */
    float one[V];
    for (int i = 0; i < V; i++) one[i] = -INFINITY;
    one[17] = -3.0f;
    o = plain, o.temperature = 0.5f, o.top_p = 0.3f;
    qkv_sampler_set_opts(s, &o);
    int only17 = 1;
    for (int i = 0; i < 100; i++) only17 &= qkv_sampler_next(s, one) == 17;
    qkv_sampler_probs(s, one, p2);
    TU_CHECK(only17 && p2[17] == 1.0f, "all -inf but id 17: always 17");

    /* non-finite: NaN and +inf are errors naming the index; all -inf is an error */
    float bad[V];
    memcpy(bad, x, sizeof bad);
    bad[9] = NAN;
    TU_CHECK(qkv_sampler_next(s, bad) == -1 && strstr(qkv_last_error(), "logit 9 is NaN"),
             "NaN logit must fail naming index 9 (got '%s')", qkv_last_error());
    TU_CHECK(qkv_sampler_probs(s, bad, p2) == QKV_ERR_NONFINITE, "probs with NaN must fail");
    bad[9] = INFINITY;
    TU_CHECK(qkv_sampler_next(s, bad) == -1 && strstr(qkv_last_error(), "+inf"), "+inf logit must fail");
    one[17] = -INFINITY;
    TU_CHECK(qkv_sampler_next(s, one) == -1 && strstr(qkv_last_error(), "-inf"), "all -inf must fail");
    o = plain, o.greedy = 1;
    qkv_sampler_set_opts(s, &o);
    bad[9] = NAN;
    TU_CHECK(qkv_sampler_next(s, bad) == -1, "greedy with NaN must fail");
    TU_CHECK(qkv_argmax(bad, V) == -1 && strstr(qkv_last_error(), "9"), "argmax with NaN must fail");
    TU_CHECK(qkv_sampler_next(s, NULL) == -1, "NULL logits must fail");

    /* option checks: each names the field */
    struct {
        float t, p;
        int64_t k;
        const char *field;
    } opts[] = {{0, 1, 0, "temperature"},  {-1, 1, 0, "temperature"}, {NAN, 1, 0, "temperature"},
                {INFINITY, 1, 0, "temperature"}, {1, 0, 0, "top_p"},     {1, 1.5f, 0, "top_p"},
                {1, NAN, 0, "top_p"},          {1, -0.1f, 0, "top_p"},    {1, 1, -3, "top_k"}};
    for (size_t i = 0; i < sizeof opts / sizeof opts[0]; i++) {
        qkv_sample_opts b = plain;
        b.temperature = opts[i].t, b.top_p = opts[i].p, b.top_k = opts[i].k;
        int rejected = qkv_sample_opts_check(&b) == QKV_ERR_RANGE && strstr(qkv_last_error(), opts[i].field);
        qkv_sampler *n = qkv_sampler_new(V, &b, 0);
        TU_CHECK(rejected && !n && qkv_sampler_set_opts(s, &b) != QKV_OK,
                 "option %s (t %g p %g k %lld) must be rejected", opts[i].field, (double)opts[i].t, (double)opts[i].p, (long long)opts[i].k);
    }
    TU_CHECK(qkv_sampler_new(0, NULL, 0) == NULL, "V = 0 must fail");
    printf("%s edge cases: top_k>=V, top_p=1, top_k=1, T=1e-6, greedy ties, one finite logit, NaN/+inf/all -inf, "
           "bad options\n",
           section_ok());
    qkv_sampler_free(s);
}

/* Draw cost at GPT-2's vocabulary (printed, not asserted beyond a generous bound). */
static void test_speed(void) {
    enum { V = 50257, N = 50 };
    qkv_rng r;
    qkv_rng_seed(&r, 4);
    float *x = malloc(V * sizeof *x);
    fill_logits(&r, x, V, 3.0f);
    const struct {
        float p;
        int64_t k;
    } cfg[3] = {{1, 50}, {0.9f, 0}, {0.95f, 50}};
    for (int c = 0; c < 3; c++) {
        qkv_sample_opts o = qkv_sample_default_opts();
        o.top_p = cfg[c].p, o.top_k = cfg[c].k;
        qkv_sampler *s = qkv_sampler_new(V, &o, 1);
        clock_t t0 = clock();
        int ok = 1;
        for (int i = 0; i < N; i++) ok &= qkv_sampler_next(s, x) >= 0;
        double ms = 1e3 * (double)(clock() - t0) / CLOCKS_PER_SEC / N;
        TU_CHECK(ok, "draws at V=50257 failed");
        printf("info V=50257 top_k %lld top_p %.2f: %.3f ms/draw\n", (long long)cfg[c].k, (double)cfg[c].p, ms);
        qkv_sampler_free(s);
    }
    free(x);
}

int main(void) {
    test_distributions();
    test_frequencies();
    test_seeds();
    test_edges();
    test_speed();
    return tu_finish("test_sample");
}

/* testutil.h — what every test program shares: golden files written by the scripts in tests/torch, closeness
 * checks that print the largest error against a named tolerance, loud skips, and a failure count.
 *
 * Golden format (little-endian, written by tests/torch/golden.py):
 *   "QKVGOLD1", u32 count, then count entries of
 *   u32 name_len, name bytes, u32 dtype (0 f32, 1 i32, 2 u8), u32 ndim, i64 dims[ndim], raw data.
 * A test exits 0 when everything passed, 1 on any failure, 77 when it skipped (CTest SKIP_RETURN_CODE).
 */
#ifndef QKV_TESTUTIL_H
#define QKV_TESTUTIL_H

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "qkv.h"

static int tu_failures;
static int tu_checks;

#define TU_SKIP 77

static inline void tu_skip(const char *why) {
    printf("SKIPPED: %s\n", why);
    fprintf(stderr, "*** SKIPPED (not passed): %s ***\n", why);
    exit(TU_SKIP);
}

/* Prints the summary line and returns the exit status for main. */
static inline int tu_finish(const char *test) {
    printf("%s: %d checks, %d failed\n", test, tu_checks, tu_failures);
    return tu_failures ? 1 : 0;
}

#define TU_CHECK(cond, ...)                                                      \
    do {                                                                         \
        tu_checks++;                                                             \
        if (!(cond)) {                                                           \
            tu_failures++;                                                       \
            printf("FAIL %s:%d: ", __FILE__, __LINE__);                          \
            printf(__VA_ARGS__);                                                 \
            printf("\n");                                                        \
        }                                                                        \
    } while (0)

/* Normalised max error: max|got - ref| / max(max|ref|, floor). Element-wise relative error is
 * meaningless near zero; normalising by the tensor's scale is what "relative error" means in every
 * comparison here. Prints one line: what, the error, the tolerance, PASS/FAIL. Returns the error. */
static inline double tu_close(const char *what, const float *got, const float *ref, int64_t n, double tol) {
    double maxd = 0, maxr = 0;
    int64_t at = 0;
    int bad = 0;
    for (int64_t i = 0; i < n; i++) {
        if (!isfinite(got[i]) && isfinite(ref[i])) bad = 1;
        double d = fabs((double)got[i] - (double)ref[i]);
        if (d > maxd || (isnan(d) && !isnan(maxd))) {
            maxd = d;
            at = i;
        }
        if (fabs(ref[i]) > maxr) maxr = fabs(ref[i]);
    }
    double err = maxd / (maxr > 1e-6 ? maxr : 1e-6);
    int ok = !bad && err <= tol;
    tu_checks++;
    if (!ok) tu_failures++;
    printf("%-4s %-48s rel_err %.3e (tol %.0e) n=%lld%s", ok ? "ok" : "FAIL", what, err, tol, (long long)n,
           ok ? "\n" : "");
    if (!ok) printf("  worst at %lld: got %.7g ref %.7g\n", (long long)at, got[at], ref[at]);
    return err;
}

/* ---- golden files ---- */
typedef struct {
    char name[128];
    int dtype, ndim;
    int64_t shape[8];
    int64_t numel;
    void *data;
} tu_entry;

typedef struct {
    int n;
    tu_entry *e;
} tu_golden;

static inline const char *tu_golden_dir(void) {
    const char *d = getenv("QKV_GOLDEN_DIR");
    return d && *d ? d : "build/golden";
}

/* Loads <golden dir>/<file>; skips the test loudly when the file is absent (no torch to make it). */
static inline tu_golden *tu_golden_load(const char *file) {
    char path[1024];
    snprintf(path, sizeof path, "%s/%s", tu_golden_dir(), file);
    FILE *f = fopen(path, "rb");
    if (!f) {
        char why[1200];
        snprintf(why, sizeof why, "golden file %s missing (run scripts/gen-goldens.sh; needs python3-torch)", path);
        tu_skip(why);
    }
    char magic[8];
    uint32_t count;
    if (fread(magic, 1, 8, f) != 8 || memcmp(magic, "QKVGOLD1", 8) || fread(&count, 4, 1, f) != 1) {
        printf("FAIL: %s is not a golden file\n", path);
        exit(1);
    }
    tu_golden *g = calloc(1, sizeof *g);
    g->n = (int)count;
    g->e = calloc(count, sizeof *g->e);
    for (uint32_t i = 0; i < count; i++) {
        tu_entry *e = &g->e[i];
        uint32_t len, dtype, ndim;
        if (fread(&len, 4, 1, f) != 1 || len >= sizeof e->name || fread(e->name, 1, len, f) != len ||
            fread(&dtype, 4, 1, f) != 1 || fread(&ndim, 4, 1, f) != 1 || ndim > 8) {
            printf("FAIL: %s: truncated entry %u\n", path, i);
            exit(1);
        }
        e->name[len] = 0;
        e->dtype = (int)dtype;
        e->ndim = (int)ndim;
        e->numel = 1;
        for (uint32_t d = 0; d < ndim; d++) {
            if (fread(&e->shape[d], 8, 1, f) != 1) exit(1);
            e->numel *= e->shape[d];
        }
        size_t esz = dtype == 2 ? 1 : 4;
        e->data = malloc((size_t)e->numel * esz + 1);
        if (fread(e->data, esz, (size_t)e->numel, f) != (size_t)e->numel) {
            printf("FAIL: %s: truncated data for %s\n", path, e->name);
            exit(1);
        }
    }
    fclose(f);
    return g;
}

static inline tu_entry *tu_get(tu_golden *g, const char *name) {
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->e[i].name, name) == 0) return &g->e[i];
    printf("FAIL: golden entry '%s' missing\n", name);
    exit(1);
}

static inline float *tu_f32(tu_golden *g, const char *name) { return (float *)tu_get(g, name)->data; }
static inline int32_t *tu_i32(tu_golden *g, const char *name) { return (int32_t *)tu_get(g, name)->data; }
static inline uint8_t *tu_u8(tu_golden *g, const char *name) { return (uint8_t *)tu_get(g, name)->data; }
static inline int tu_has(tu_golden *g, const char *name) {
    for (int i = 0; i < g->n; i++)
        if (strcmp(g->e[i].name, name) == 0) return 1;
    return 0;
}

static inline void tu_golden_free(tu_golden *g) {
    if (!g) return;
    for (int i = 0; i < g->n; i++) free(g->e[i].data);
    free(g->e);
    free(g);
}

/* Copies a golden f32 entry into a parameter tensor, checking the shape. */
static inline void tu_load_param(tu_golden *g, const char *name, qkv_tensor *t) {
    tu_entry *e = tu_get(g, name);
    if (e->dtype != 0 || e->numel != qkv_tensor_numel(t)) {
        printf("FAIL: golden '%s' has %lld elements, parameter %s has %lld\n", name, (long long)e->numel,
               t->name ? t->name : "?", (long long)qkv_tensor_numel(t));
        exit(1);
    }
    memcpy(t->data, e->data, (size_t)e->numel * sizeof(float));
}

/* Path of a file under ../shared/data (QKV_SHARED_DATA overrides); skips loudly when absent. */
static inline const char *tu_shared_data(const char *rel) {
    static char path[1024];
    const char *d = getenv("QKV_SHARED_DATA");
    snprintf(path, sizeof path, "%s/%s", d && *d ? d : "../shared/data", rel);
    FILE *f = fopen(path, "rb");
    if (!f) {
        char why[1100];
        snprintf(why, sizeof why, "shared data %s not found (set QKV_SHARED_DATA)", path);
        tu_skip(why);
    }
    fclose(f);
    return path;
}

#endif

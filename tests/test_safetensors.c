/* test_safetensors.c — the safetensors reader and writer (src/io/safetensors.c) on their own.
 *
 *   round trip     write → open: names, shapes, dtype, values bit for bit (NaN payloads, -0, inf,
 *                  subnormals), scalars, empty tensors, metadata with escapes and UTF-8;
 *   layout         the written bytes against the format: 8-byte LE length, header JSON that parses,
 *                  length a multiple of 8, "__metadata__" first, tensors by name, offsets contiguous
 *                  from 0, data right after the header; three small files byte for byte as
 *                  Hugging Face's writer lays them out (the serialisation examples of its test suite);
 *   atomic write   no temporary file left, errors leave the old file intact and no new one;
 *   corruption     every truncation of a valid file up to the end of its header and some inside the
 *                  data, bad header lengths, ~50 hand-edited headers (each with the message it must
 *                  give), and 3000 random byte flips — none may crash (run under ASan too);
 *   accepted       odd but valid files: unaligned data, tensors out of header order, null metadata,
 *                  zero-size tensors, unknown members;
 *   HF checkpoint  the GPT2Model file written by transformers in ../shared/data/tiny-checkpoints
 *                  (last, because it skips the program when the shared data is absent).
 * Exact comparisons only: there is no arithmetic to tolerate.
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */
#include "testutil.h"

#include <dirent.h>
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/json.h"

static char dir[64];

static const char *tmp_path(const char *name) {
    static char buf[4][256];
    static int k;
    k = (k + 1) & 3;
    snprintf(buf[k], sizeof buf[k], "%s/%s", dir, name);
    return buf[k];
}

static unsigned char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    unsigned char *b = malloc((size_t)n + 1);
    if (fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static void write_all(const char *path, const void *b, size_t len) {
    /* unlink first: truncating a file that holds data makes ext4 flush it on close (auto_da_alloc),
     * which turns thousands of small rewrites into seconds of disk waits */
    unlink(path);
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(b, 1, len, f) != len || fclose(f) != 0) {
        printf("FAIL: cannot write %s\n", path);
        exit(1);
    }
}

static int exists(const char *path) {
    struct stat sb;
    return stat(path, &sb) == 0;
}

/* Number of entries of d whose name contains ".tmp." (left-over temporary files). */
static int count_tmp(const char *d) {
    DIR *dp = opendir(d);
    if (!dp) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(dp)))
        if (strstr(e->d_name, ".tmp.")) n++;
    closedir(dp);
    return n;
}

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

static float from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* ---- round trip ---- */

#define NT 5
static float v_b[12], v_a[4], v_s[1], v_z[12];
static const int64_t sh_b[2] = {3, 4}, sh_a[1] = {4}, sh_e[2] = {0, 5}, sh_z[4] = {2, 1, 3, 2};

static void fill_values(void) {
    qkv_rng r;
    qkv_rng_seed(&r, 7);
    for (int i = 0; i < 12; i++) v_b[i] = qkv_rng_normal(&r);
    v_a[0] = -0.0f;
    v_a[1] = from_bits(0x7fc01234u); /* NaN with a payload */
    v_a[2] = -INFINITY;
    v_a[3] = from_bits(0x00000001u); /* smallest subnormal */
    v_s[0] = 3.25f;
    for (int i = 0; i < 12; i++) v_z[i] = (float)i - 5.5f;
}

static void make_entries(qkv_st_entry e[NT]) {
    /* given out of name order on purpose: the writer sorts */
    e[0] = (qkv_st_entry){"layer.b.weight", 2, sh_b, v_b};
    e[1] = (qkv_st_entry){"layer.a.bias", 1, sh_a, v_a};
    e[2] = (qkv_st_entry){"scalar", 0, NULL, v_s};
    e[3] = (qkv_st_entry){"empty", 2, sh_e, NULL};
    e[4] = (qkv_st_entry){"z.4d \"quoted\" ü", 4, sh_z, v_z};
}

static const char *meta_kv[] = {"format", "pt", "note", "line1\nline2 \"q\" \\ ü €"};

static void test_round_trip(void) {
    qkv_st_entry e[NT];
    make_entries(e);
    const char *path = tmp_path("rt.safetensors");
    qkv_status s = qkv_safetensors_write(path, e, NT, meta_kv, 2);
    TU_CHECK(s == QKV_OK, "write: %s", qkv_last_error());
    TU_CHECK(count_tmp(dir) == 0, "a temporary file was left in %s", dir);
    qkv_safetensors *st = qkv_safetensors_open(path);
    TU_CHECK(st != NULL, "open: %s", qkv_last_error());
    if (!st) return;
    TU_CHECK(qkv_safetensors_count(st) == NT, "count %d", qkv_safetensors_count(st));
    /* data order is name order for a file from our writer */
    const char *sorted[NT] = {"empty", "layer.a.bias", "layer.b.weight", "scalar", "z.4d \"quoted\" ü"};
    for (int i = 0; i < NT; i++) {
        const qkv_st_tensor *t = qkv_safetensors_get(st, i);
        TU_CHECK(t && strcmp(t->name, sorted[i]) == 0, "tensor %d is '%s', want '%s'", i, t ? t->name : "NULL",
                 sorted[i]);
    }
    TU_CHECK(qkv_safetensors_get(st, NT) == NULL && qkv_safetensors_get(st, -1) == NULL, "get out of range");
    int bad = 0;
    for (int i = 0; i < NT; i++) {
        const qkv_st_tensor *t = qkv_safetensors_find(st, e[i].name);
        TU_CHECK(t != NULL, "find '%s'", e[i].name);
        if (!t) continue;
        TU_CHECK(t->dtype == QKV_DTYPE_F32 && t->ndim == e[i].ndim, "'%s': dtype %s ndim %d", e[i].name,
                 qkv_dtype_name(t->dtype), t->ndim);
        int64_t numel = 1;
        for (int d = 0; d < e[i].ndim; d++) {
            TU_CHECK(t->shape[d] == e[i].shape[d], "'%s': shape[%d] %lld", e[i].name, d, (long long)t->shape[d]);
            numel *= e[i].shape[d];
        }
        TU_CHECK(t->nbytes == (size_t)numel * 4, "'%s': nbytes %zu", e[i].name, t->nbytes);
        if (numel && memcmp(t->data, e[i].data, (size_t)numel * 4) != 0) bad++;
        float got[16];
        memset(got, 0xAB, sizeof got);
        TU_CHECK(qkv_safetensors_read_f32(t, got, numel) == QKV_OK, "read_f32 '%s': %s", e[i].name, qkv_last_error());
        for (int64_t k = 0; k < numel; k++)
            if (bits(got[k]) != bits(e[i].data[k])) bad++;
        TU_CHECK(qkv_safetensors_read_f32(t, got, numel + 1) == QKV_ERR_SHAPE, "read_f32 with a wrong numel");
    }
    TU_CHECK(bad == 0, "%d values differ after the round trip", bad);
    printf("ok   round trip: %d tensors, values bit-exact (NaN payload, -0, -inf, subnormal)\n", NT);
    TU_CHECK(qkv_safetensors_find(st, "nope") == NULL && qkv_safetensors_find(st, "") == NULL,
             "find of a missing name");
    TU_CHECK(qkv_safetensors_metadata_count(st) == 2, "metadata count %d", qkv_safetensors_metadata_count(st));
    const char *f = qkv_safetensors_metadata(st, "format"), *note = qkv_safetensors_metadata(st, "note");
    TU_CHECK(f && strcmp(f, "pt") == 0, "metadata format = %s", f ? f : "NULL");
    TU_CHECK(note && strcmp(note, meta_kv[3]) == 0, "metadata note = %s", note ? note : "NULL");
    TU_CHECK(qkv_safetensors_metadata(st, "missing") == NULL, "missing metadata key");
    const char *k0 = qkv_safetensors_metadata_key(st, 0), *k1 = qkv_safetensors_metadata_key(st, 1);
    TU_CHECK(k0 && k1 && !strcmp(k0, "format") && !strcmp(k1, "note") && !qkv_safetensors_metadata_key(st, 2),
             "metadata keys in order");
    qkv_safetensors_close(st);
    qkv_safetensors_close(NULL);
}

/* ---- layout of the written file ---- */

static void test_layout(void) {
    qkv_st_entry e[NT];
    make_entries(e);
    const char *path = tmp_path("rt.safetensors");
    size_t len;
    unsigned char *b = read_all(path, &len);
    TU_CHECK(b != NULL && len >= 8, "cannot read back %s", path);
    if (!b || len < 8) return;
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    TU_CHECK(n % 8 == 0, "header length %llu is not a multiple of 8", (unsigned long long)n);
    TU_CHECK(n + 8 <= len, "header length %llu past the file", (unsigned long long)n);
    if (n + 8 > len) return;
    TU_CHECK(b[8] == '{', "header does not start with '{'");
    size_t end = 8 + (size_t)n;
    while (end > 8 && b[end - 1] == ' ') end--;
    TU_CHECK(b[end - 1] == '}' && 8 + n - end < 8, "header padding: %zu spaces after '%c'", (size_t)(8 + n - end),
             b[end - 1]);
    qkv__json *h = qkv__json_parse((const char *)b + 8, (size_t)n, "written header");
    TU_CHECK(h && h->type == QKV_JSON_OBJECT, "header does not parse: %s", qkv_last_error());
    if (!h) {
        free(b);
        return;
    }
    TU_CHECK(h->len == NT + 1 && strcmp(h->child[0].key, "__metadata__") == 0, "__metadata__ is not the first member");
    const qkv__json *m = &h->child[0];
    TU_CHECK(m->type == QKV_JSON_OBJECT && m->len == 2 && !strcmp(m->child[0].key, "format") &&
                 !strcmp(m->child[0].str, "pt") && !strcmp(m->child[1].str, meta_kv[3]),
             "metadata members");
    uint64_t at = 0;
    for (size_t i = 1; i < h->len; i++) {
        const qkv__json *t = &h->child[i];
        if (i > 1) TU_CHECK(strcmp(h->child[i - 1].key, t->key) < 0, "tensors not in name order at '%s'", t->key);
        const qkv__json *dt = qkv__json_get(t, "dtype"), *sh = qkv__json_get(t, "shape"),
                        *off = qkv__json_get(t, "data_offsets");
        TU_CHECK(t->len == 3 && !strcmp(t->child[0].key, "dtype") && !strcmp(t->child[1].key, "shape") &&
                     !strcmp(t->child[2].key, "data_offsets"),
                 "'%s': members are not dtype, shape, data_offsets in that order", t->key);
        TU_CHECK(dt && dt->type == QKV_JSON_STRING && !strcmp(dt->str, "F32"), "'%s': dtype", t->key);
        const qkv_st_entry *src = NULL;
        for (int k = 0; k < NT; k++)
            if (!strcmp(e[k].name, t->key)) src = &e[k];
        TU_CHECK(src != NULL, "unexpected tensor '%s'", t->key);
        if (!src || !sh || !off) continue;
        int64_t numel = 1;
        TU_CHECK(sh->len == (size_t)src->ndim, "'%s': ndim", t->key);
        for (int d = 0; d < src->ndim && d < (int)sh->len; d++) {
            TU_CHECK(sh->child[d].is_int && sh->child[d].integer == src->shape[d], "'%s': shape[%d]", t->key, d);
            numel *= src->shape[d];
        }
        TU_CHECK(off->len == 2 && off->child[0].is_int && (uint64_t)off->child[0].integer == at &&
                     (uint64_t)off->child[1].integer == at + (uint64_t)numel * 4,
                 "'%s': data_offsets not contiguous from %llu", t->key, (unsigned long long)at);
        if (numel)
            TU_CHECK(memcmp(b + 8 + n + at, src->data, (size_t)numel * 4) == 0, "'%s': data bytes at offset %llu",
                     t->key, (unsigned long long)at);
        at += (uint64_t)numel * 4;
    }
    TU_CHECK(8 + n + at == len, "file is %zu bytes, header + data = %llu", len, (unsigned long long)(8 + n + at));
    printf("ok   layout: header %llu bytes (multiple of 8), data %llu bytes right after, offsets contiguous\n",
           (unsigned long long)n, (unsigned long long)at);
    qkv__json_free(h);
    free(b);

    /* Byte for byte as Hugging Face's serializer writes the same tensors (safetensors' own tests):
     * compact JSON, "__metadata__" first, spaces up to a multiple of 8. */
    struct {
        const char *name;
        int ndim;
        int64_t shape[4];
        const char *meta;
        const char *header;
    } cases[] = {
        {"attn.0", 3, {1, 2, 3}, NULL, "{\"attn.0\":{\"dtype\":\"F32\",\"shape\":[1,2,3],\"data_offsets\":[0,24]}}"},
        {"attn0", 4, {1, 1, 2, 3}, NULL,
         "{\"attn0\":{\"dtype\":\"F32\",\"shape\":[1,1,2,3],\"data_offsets\":[0,24]}}       "},
        {NULL, 0, {0}, NULL, "{}      "},
        {NULL, 0, {0}, "pt", "{\"__metadata__\":{\"framework\":\"pt\"}}     "},
    };
    const float six[6] = {0, 1, 2, 3, 4, 5};
    for (int c = 0; c < 4; c++) {
        qkv_st_entry one = {cases[c].name, cases[c].ndim, cases[c].shape, six};
        const char *kv[2] = {"framework", cases[c].meta};
        const char *p = tmp_path("hf_layout.safetensors");
        qkv_status s = qkv_safetensors_write(p, &one, cases[c].name ? 1 : 0, kv, cases[c].meta ? 1 : 0);
        TU_CHECK(s == QKV_OK, "write layout case %d: %s", c, qkv_last_error());
        size_t hl = strlen(cases[c].header), want_len = 8 + hl + (cases[c].name ? 24 : 0);
        unsigned char want[256];
        for (int i = 0; i < 8; i++) want[i] = (unsigned char)((uint64_t)hl >> (8 * i));
        memcpy(want + 8, cases[c].header, hl);
        if (cases[c].name) memcpy(want + 8 + hl, six, 24);
        size_t got_len;
        unsigned char *got = read_all(p, &got_len);
        TU_CHECK(got && got_len == want_len && memcmp(got, want, want_len) == 0,
                 "layout case %d: %zu bytes, want %zu bytes as HF writes them", c, got_len, want_len);
        free(got);
    }
    printf("ok   layout: 4 small files byte-identical to Hugging Face's serialisation\n");
}

/* ---- writer errors and atomicity ---- */

static void test_write_errors(void) {
    const float v[4] = {1, 2, 3, 4};
    const int64_t s4[1] = {4}, neg[1] = {-1}, s9[9] = {1, 1, 1, 1, 1, 1, 1, 1, 4};
    const char *p = tmp_path("w.safetensors");
    qkv_st_entry good = {"w", 1, s4, v};
    TU_CHECK(qkv_safetensors_write(p, &good, 1, NULL, 0) == QKV_OK, "write: %s", qkv_last_error());
    size_t len0;
    unsigned char *before = read_all(p, &len0);

    struct {
        const char *what;
        qkv_st_entry e[2];
        int n;
        const char *kv[4];
        int n_meta;
    } bad[] = {
        {"duplicate names", {{"a", 1, s4, v}, {"a", 1, s4, v}}, 2, {0}, 0},
        {"__metadata__ as a name", {{"__metadata__", 1, s4, v}}, 1, {0}, 0},
        {"NULL name", {{NULL, 1, s4, v}}, 1, {0}, 0},
        {"empty name", {{"", 1, s4, v}}, 1, {0}, 0},
        {"invalid UTF-8 name", {{"a\xff", 1, s4, v}}, 1, {0}, 0},
        {"negative dimension", {{"a", 1, neg, v}}, 1, {0}, 0},
        {"9 dimensions", {{"a", 9, s9, v}}, 1, {0}, 0},
        {"negative ndim", {{"a", -1, s4, v}}, 1, {0}, 0},
        {"NULL data", {{"a", 1, s4, NULL}}, 1, {0}, 0},
        {"NULL shape", {{"a", 1, NULL, v}}, 1, {0}, 0},
        {"duplicate metadata key", {{"a", 1, s4, v}}, 1, {"k", "1", "k", "2"}, 2},
        {"NULL metadata value", {{"a", 1, s4, v}}, 1, {"k", NULL}, 1},
        {"invalid UTF-8 metadata", {{"a", 1, s4, v}}, 1, {"k", "\xc3"}, 1},
    };
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        qkv_status s = qkv_safetensors_write(p, bad[i].e, bad[i].n, bad[i].kv, bad[i].n_meta);
        const char *msg = qkv_last_error();
        TU_CHECK(s == QKV_ERR_ARG && strstr(msg, p) && !strchr(msg, '\n'), "write with %s: status %d '%s'", bad[i].what,
                 s, msg);
    }
    TU_CHECK(qkv_safetensors_write(p, NULL, 1, NULL, 0) == QKV_ERR_ARG, "NULL entries");
    TU_CHECK(qkv_safetensors_write(NULL, &good, 1, NULL, 0) == QKV_ERR_ARG, "NULL path");
    TU_CHECK(qkv_safetensors_write(p, &good, 1, NULL, 1) == QKV_ERR_ARG, "NULL metadata list");
    size_t len1;
    unsigned char *after = read_all(p, &len1);
    TU_CHECK(before && after && len0 == len1 && memcmp(before, after, len0) == 0,
             "a failed write changed the existing file");
    free(before);
    free(after);
    TU_CHECK(count_tmp(dir) == 0, "a failed write left a temporary file");
    printf("ok   writer: %zu bad arguments rejected, existing file untouched\n", sizeof bad / sizeof bad[0] + 3);

    /* a directory that does not exist, and a file used as a directory */
    const char *nodir = tmp_path("no/such/dir/x.safetensors");
    qkv_status s = qkv_safetensors_write(nodir, &good, 1, NULL, 0);
    TU_CHECK(s == QKV_ERR_IO && strstr(qkv_last_error(), "No such file"), "write into a missing directory: %d %s", s,
             qkv_last_error());
    TU_CHECK(!exists(nodir), "file created in a missing directory");
    char notdir[300];
    snprintf(notdir, sizeof notdir, "%s/x.safetensors", p);
    s = qkv_safetensors_write(notdir, &good, 1, NULL, 0);
    TU_CHECK(s == QKV_ERR_IO, "write below a regular file: %d %s", s, qkv_last_error());

    /* rename fails (the target is a directory): the temporary file must be removed */
    const char *dpath = tmp_path("a_directory");
    mkdir(dpath, 0755);
    s = qkv_safetensors_write(dpath, &good, 1, NULL, 0);
    TU_CHECK(s == QKV_ERR_IO && strstr(qkv_last_error(), "rename"), "write over a directory: %d %s", s,
             qkv_last_error());
    TU_CHECK(count_tmp(dir) == 0, "a failed rename left its temporary file");
    rmdir(dpath);

    /* a directory without write permission (meaningless for root, who may write anyway) */
    const char *ro = tmp_path("readonly");
    mkdir(ro, 0555);
    char rop[300];
    snprintf(rop, sizeof rop, "%s/x.safetensors", ro);
    if (geteuid() != 0) {
        s = qkv_safetensors_write(rop, &good, 1, NULL, 0);
        TU_CHECK(s == QKV_ERR_IO && strstr(qkv_last_error(), "Permission denied"), "write into a read-only dir: %d %s",
                 s, qkv_last_error());
        TU_CHECK(!exists(rop) && count_tmp(ro) == 0, "files left in a read-only directory");
        printf("ok   writer: unwritable directory, missing directory, failed rename give QKV_ERR_IO, no file\n");
    } else {
        printf("note writer: running as root, the read-only directory case is not meaningful; missing directory and "
               "failed rename checked instead\n");
    }
    rmdir(ro);

    /* overwriting replaces the file atomically with the new contents */
    const float w2[4] = {9, 8, 7, 6};
    qkv_st_entry good2 = {"w", 1, s4, w2};
    TU_CHECK(qkv_safetensors_write(p, &good2, 1, NULL, 0) == QKV_OK, "overwrite: %s", qkv_last_error());
    qkv_safetensors *st = qkv_safetensors_open(p);
    const qkv_st_tensor *t = qkv_safetensors_find(st, "w");
    TU_CHECK(t && memcmp(t->data, w2, 16) == 0, "overwritten file holds the new values");
    qkv_safetensors_close(st);
    TU_CHECK(count_tmp(dir) == 0, "overwrite left a temporary file");
}

/* ---- reader errors ---- */

/* A file from a header string (padded with spaces to a multiple of 8 unless raw) and data bytes. */
static void make_file(const char *path, const char *header, const void *data, size_t dlen, int raw) {
    size_t hl = strlen(header), pad = raw ? 0 : (8 - hl % 8) % 8;
    unsigned char *b = malloc(8 + hl + pad + dlen + 1);
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)((uint64_t)(hl + pad) >> (8 * i));
    memcpy(b + 8, header, hl);
    memset(b + 8 + hl, ' ', pad);
    if (dlen) memcpy(b + 8 + hl + pad, data, dlen);
    write_all(path, b, 8 + hl + pad + dlen);
    free(b);
}

static int n_rejected;

/* Opens path, which must fail with a one-line message naming the file and containing want. */
static void expect_reject(const char *path, const char *want, const char *what) {
    qkv_safetensors *st = qkv_safetensors_open(path);
    const char *msg = qkv_last_error();
    TU_CHECK(st == NULL, "%s: accepted", what);
    if (st) {
        qkv_safetensors_close(st);
        return;
    }
    TU_CHECK(strstr(msg, path) == msg && !strchr(msg, '\n'), "%s: message does not start with the path or is not "
             "one line: '%s'", what, msg);
    TU_CHECK(!want || strstr(msg, want), "%s: message '%s' lacks '%s'", what, msg, want);
    n_rejected++;
}

static void reject_header(const char *header, size_t dlen, const char *want) {
    static unsigned char zeros[256];
    const char *p = tmp_path("bad.safetensors");
    make_file(p, header, zeros, dlen, 0);
    expect_reject(p, want, header);
}

static qkv_safetensors *accept_header(const char *header, const void *data, size_t dlen, int raw) {
    const char *p = tmp_path("ok.safetensors");
    make_file(p, header, data, dlen, raw);
    qkv_safetensors *st = qkv_safetensors_open(p);
    TU_CHECK(st != NULL, "valid file rejected: %s: %s", header, qkv_last_error());
    return st;
}

static void test_truncations(void) {
    const char *src = tmp_path("rt.safetensors");
    size_t len;
    unsigned char *b = read_all(src, &len);
    if (!b) {
        TU_CHECK(0, "no round-trip file");
        return;
    }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | b[i];
    const char *p = tmp_path("trunc.safetensors");
    int before = n_rejected;
    for (size_t cut = 0; cut <= 8 + n; cut++) {
        write_all(p, b, cut);
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes", cut);
        expect_reject(p, cut < 8 ? "too short" : cut < 8 + n ? "header length" : "data region", what);
    }
    size_t inside[] = {8 + n + 1, 8 + n + 4, 8 + n + (len - 8 - n) / 2, len - 1};
    for (size_t i = 0; i < 4; i++) {
        write_all(p, b, inside[i]);
        char what[64];
        snprintf(what, sizeof what, "truncated to %zu bytes (inside the data)", inside[i]);
        expect_reject(p, NULL, what);
    }
    /* one byte too many: the tensors no longer cover the data region */
    unsigned char *longer = malloc(len + 1);
    memcpy(longer, b, len);
    longer[len] = 0;
    write_all(p, longer, len + 1);
    expect_reject(p, "trailing", "one extra byte at the end");
    free(longer);

    /* header length flipped to wrong values */
    struct {
        uint64_t n;
        const char *want;
    } lens[] = {{0, "header length is 0"},
                {len - 8 + 1, "past the end"},
                {100000001, "over the limit"},
                {UINT64_MAX, "over the limit"},
                {(uint64_t)1 << 63, "over the limit"},
                {n - 1, NULL},
                {n + 1, "invalid JSON"},
                {n + 8, "invalid JSON"},
                {len - 8, NULL}};
    for (size_t i = 0; i < sizeof lens / sizeof lens[0]; i++) {
        unsigned char *c = malloc(len);
        memcpy(c, b, len);
        for (int k = 0; k < 8; k++) c[k] = (unsigned char)(lens[i].n >> (8 * k));
        write_all(p, c, len);
        char what[64];
        snprintf(what, sizeof what, "header length set to %llu", (unsigned long long)lens[i].n);
        expect_reject(p, lens[i].want, what);
        free(c);
    }
    printf("ok   reader: %d truncated files and bad header lengths rejected\n", n_rejected - before);

    /* random byte flips in the header and the length: any outcome but a crash is fine */
    qkv_rng r;
    qkv_rng_seed(&r, 99);
    int accepted = 0;
    unsigned char *c = malloc(len);
    for (int it = 0; it < 3000; it++) {
        memcpy(c, b, len);
        int flips = 1 + (int)(qkv_rng_u64(&r) % 3);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)(qkv_rng_u64(&r) % (8 + n));
            c[at] = it % 2 ? (unsigned char)qkv_rng_u64(&r) : (unsigned char)(c[at] ^ (1u << (qkv_rng_u64(&r) % 8)));
        }
        write_all(p, c, len);
        qkv_safetensors *st = qkv_safetensors_open(p);
        if (st) {
            accepted++;
            /* whatever was accepted must be safe to read in full */
            for (int i = 0; i < qkv_safetensors_count(st); i++) {
                const qkv_st_tensor *t = qkv_safetensors_get(st, i);
                volatile unsigned char sink = 0;
                for (size_t k = 0; k < t->nbytes; k++) sink ^= ((const unsigned char *)t->data)[k];
                (void)sink;
            }
        } else {
            TU_CHECK(strchr(qkv_last_error(), '\n') == NULL, "multi-line message: %s", qkv_last_error());
        }
        qkv_safetensors_close(st);
    }
    free(c);
    printf("ok   reader: 3000 random header mutations, none crashed (%d still valid, e.g. a changed name)\n",
           accepted);
    free(b);
}

static void test_bad_headers(void) {
    int before = n_rejected;
    const char *T = "{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}";
    char h[1024];
    /* the header itself */
    reject_header("{\"a\":", 0, "invalid JSON");
    reject_header("[]", 0, "not an object");
    reject_header("\"x\"", 0, "not an object");
    reject_header("7", 0, "not an object");
    reject_header("{} x", 0, "invalid JSON");
    reject_header("{\"a\":1,}", 0, "invalid JSON");
    reject_header("{\"\xff\":1}", 0, "invalid JSON");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},"
                  "\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",
                  8, "duplicate");
    /* tensor entries */
    reject_header("{\"a\":[1]}", 0, "not an object");
    reject_header("{\"a\":\"F32\"}", 0, "not an object");
    reject_header("{\"a\":{\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "no \"dtype\"");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"data_offsets\":[0,8]}}", 8, "no \"shape\"");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}", 8, "no \"data_offsets\"");
    reject_header("{\"a\":{\"dtype\":5,\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "not a string");
    reject_header("{\"a\":{\"dtype\":\"F33\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype \"F33\"");
    reject_header("{\"a\":{\"dtype\":\"f32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype");
    reject_header("{\"a\":{\"dtype\":\"\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "unknown dtype");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":2,\"data_offsets\":[0,8]}}", 8, "not an array");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":{},\"data_offsets\":[0,8]}}", 8, "not an array");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,2e0],\"data_offsets\":[0,8]}}", 8, "shape[1]");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[\"2\"],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[null],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[99999999999999999999],\"data_offsets\":[0,8]}}", 8, "shape[0]");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", 8,
                  "9 dimensions");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", 8,
                  "too large");
    reject_header("{\"a\":{\"dtype\":\"F64\",\"shape\":[3037000500,3037000500],\"data_offsets\":[0,8]}}", 8,
                  "too large");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":8}}", 8, "two non-negative integers");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0]}}", 8, "two non-negative integers");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8,8]}}", 8, "two non-negative");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[-8,0]}}", 8, "two non-negative");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8.0]}}", 8, "two non-negative");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[\"0\",\"8\"]}}", 8, "two non-negative");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 8, "begin after");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 4, "past the end of the data");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}", 8,
                  "two non-negative"); /* beyond int64: not an exact integer for us */
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 8, "needs 12 bytes");
    reject_header("{\"a\":{\"dtype\":\"F16\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "needs 4 bytes");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,8]}}", 8, "needs 4 bytes");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[0,2],\"data_offsets\":[0,8]}}", 8, "needs 0 bytes");
    /* ranges against each other and the data region */
    snprintf(h, sizeof h, "{\"a\":%s,\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", T);
    reject_header(h, 12, "overlap");
    snprintf(h, sizeof h, "{\"a\":%s,\"b\":%s}", T, T);
    reject_header(h, 8, "overlap");
    snprintf(h, sizeof h, "{\"a\":%s,\"b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[12,20]}}", T);
    reject_header(h, 20, "gap of 4 bytes");
    reject_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12]}}", 12, "unused bytes before");
    snprintf(h, sizeof h, "{\"a\":%s}", T);
    reject_header(h, 9, "trailing");
    reject_header("{}", 4, "trailing");
    reject_header("{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8, "NUL");
    /* __metadata__ */
    reject_header("{\"__metadata__\":\"pt\"}", 0, "not an object of strings");
    reject_header("{\"__metadata__\":[\"pt\"]}", 0, "not an object of strings");
    reject_header("{\"__metadata__\":{\"format\":1}}", 0, "not a string");
    reject_header("{\"__metadata__\":{\"format\":{\"a\":\"b\"}}}", 0, "not a string");
    reject_header("{\"__metadata__\":{\"format\":null}}", 0, "not a string");
    reject_header("{\"__metadata__\":{\"f\":\"a\\u0000b\"}}", 0, "NUL");
    reject_header("{\"__metadata__\":{\"f\\u0000\":\"a\"}}", 0, "NUL");
    /* unpadded header that is not valid UTF-8 JSON after the object */
    {
        const char *p = tmp_path("bad.safetensors");
        make_file(p, "{}\x01", NULL, 0, 1);
        expect_reject(p, "invalid JSON", "control byte after the header object");
    }
    /* what the system says */
    expect_reject(tmp_path("does-not-exist.safetensors"), "No such file or directory", "missing file");
    expect_reject(dir, "not a regular file", "a directory");
    printf("ok   reader: %d malformed headers rejected, each with its message\n", n_rejected - before);
}

static void test_accepted_oddities(void) {
    /* unaligned data: a 5-byte header puts the F32 data at file offset 13 */
    const float vals[3] = {1.5f, -2.25f, from_bits(0x00000003u)};
    qkv_safetensors *st = accept_header("{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,12]}}  ",
                                        vals, 12, 1);
    if (st) {
        const qkv_st_tensor *t = qkv_safetensors_find(st, "a");
        float got[3];
        TU_CHECK(t && qkv_safetensors_read_f32(t, got, 3) == QKV_OK && memcmp(got, vals, 12) == 0,
                 "unaligned F32 data read back");
        TU_CHECK(t && ((uintptr_t)t->data % 4) != 0, "test meant an unaligned pointer");
        qkv_safetensors_close(st);
    }
    {
        /* unaligned F16/BF16/F64 too, through the same memcpy-safe loads */
        unsigned char d[1 + 2 + 2 + 8];
        uint16_t h16 = 0x3C00, b16 = 0xC040; /* F16 1.0, BF16 -3.0 */
        double f64 = 0.1;
        d[0] = 7;
        memcpy(d + 1, &h16, 2);
        memcpy(d + 3, &b16, 2);
        memcpy(d + 5, &f64, 8);
        st = accept_header("{\"u\":{\"dtype\":\"U8\",\"shape\":[1],\"data_offsets\":[0,1]},"
                           "\"h\":{\"dtype\":\"F16\",\"shape\":[1],\"data_offsets\":[1,3]},"
                           "\"b\":{\"dtype\":\"BF16\",\"shape\":[1],\"data_offsets\":[3,5]},"
                           "\"d\":{\"dtype\":\"F64\",\"shape\":[1,1],\"data_offsets\":[5,13]}}",
                           d, sizeof d, 0);
        if (st) {
            float x = 0;
            TU_CHECK(qkv_safetensors_read_f32(qkv_safetensors_find(st, "h"), &x, 1) == QKV_OK && x == 1.0f, "F16 1.0");
            TU_CHECK(qkv_safetensors_read_f32(qkv_safetensors_find(st, "b"), &x, 1) == QKV_OK && x == -3.0f,
                     "BF16 -3.0");
            TU_CHECK(qkv_safetensors_read_f32(qkv_safetensors_find(st, "d"), &x, 1) == QKV_OK && x == 0.1f, "F64 0.1");
            x = 42;
            TU_CHECK(qkv_safetensors_read_f32(qkv_safetensors_find(st, "u"), &x, 1) == QKV_ERR_ARG && x == 42,
                     "U8 does not convert, dst untouched");
            TU_CHECK(qkv_safetensors_find(st, "u")->dtype == QKV_DTYPE_U8 && qkv_safetensors_find(st, "d")->ndim == 2,
                     "dtype and ndim");
            qkv_safetensors_close(st);
        }
    }
    /* header order is not data order; zero-size tensors; a scalar; unknown members; null metadata */
    float d3[3] = {1, 2, 3};
    st = accept_header("{\"__metadata__\":null,"
                       "\"z\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[4,12],\"extra\":[1,2]},"
                       "\"e\":{\"dtype\":\"I64\",\"shape\":[3,0],\"data_offsets\":[4,4]},"
                       "\"s\":{\"dtype\":\"F32\",\"shape\":[],\"data_offsets\":[0,4]},"
                       "\"e2\":{\"dtype\":\"BOOL\",\"shape\":[0],\"data_offsets\":[12,12]}}",
                       d3, 12, 0);
    if (st) {
        TU_CHECK(qkv_safetensors_count(st) == 4, "count 4");
        const char *order[4] = {"s", "e", "z", "e2"};
        for (int i = 0; i < 4; i++) {
            const qkv_st_tensor *t = qkv_safetensors_get(st, i);
            TU_CHECK(t && !strcmp(t->name, order[i]), "data order %d: %s", i, t ? t->name : "NULL");
        }
        const qkv_st_tensor *s = qkv_safetensors_find(st, "s"), *z = qkv_safetensors_find(st, "z");
        float got[2];
        TU_CHECK(s && s->ndim == 0 && qkv_safetensors_read_f32(s, got, 1) == QKV_OK && got[0] == 1, "scalar");
        TU_CHECK(z && qkv_safetensors_read_f32(z, got, 2) == QKV_OK && got[0] == 2 && got[1] == 3, "z values");
        TU_CHECK(qkv_safetensors_find(st, "e")->nbytes == 0, "empty tensor");
        TU_CHECK(qkv_safetensors_metadata_count(st) == 0 && !qkv_safetensors_metadata(st, "format"), "null metadata");
        qkv_safetensors_close(st);
    }
    /* every dtype name parses, with its size */
    const char *names[] = {"F32", "F16", "BF16", "F64", "I64", "I32", "I16", "I8", "U8", "BOOL", "U64", "U32", "U16",
                           "F8_E5M2", "F8_E4M3"};
    const size_t sizes[] = {4, 2, 2, 8, 8, 4, 2, 1, 1, 1, 8, 4, 2, 1, 1};
    for (int i = 0; i < 15; i++) {
        char h[160];
        snprintf(h, sizeof h, "{\"t\":{\"dtype\":\"%s\",\"shape\":[3],\"data_offsets\":[0,%zu]}}", names[i],
                 3 * sizes[i]);
        unsigned char zeros[24] = {0};
        st = accept_header(h, zeros, 3 * sizes[i], 0);
        const qkv_st_tensor *t = qkv_safetensors_get(st, 0);
        TU_CHECK(t && (int)t->dtype == i && !strcmp(qkv_dtype_name(t->dtype), names[i]) &&
                     qkv_dtype_size(t->dtype) == sizes[i],
                 "dtype %s", names[i]);
        qkv_safetensors_close(st);
    }
    /* an empty file of tensors: "{}" and nothing else */
    st = accept_header("{}", NULL, 0, 0);
    TU_CHECK(st && qkv_safetensors_count(st) == 0 && qkv_safetensors_find(st, "a") == NULL, "empty file");
    qkv_safetensors_close(st);
    TU_CHECK(qkv_safetensors_open(NULL) == NULL, "open(NULL)");
    TU_CHECK(qkv_safetensors_read_f32(NULL, NULL, 0) == QKV_ERR_ARG, "read_f32(NULL)");
    printf("ok   reader: unaligned data, header order != data order, scalars, zero-size tensors, unknown members, "
           "null metadata, all 15 dtypes accepted\n");
}

/* ---- the Hugging Face-written GPT2Model ---- */

static void test_hf_checkpoint(void) {
    const char *path = tu_shared_data("tiny-checkpoints/hf-gpt2-random-tiny/model.safetensors");
    qkv_safetensors *st = qkv_safetensors_open(path);
    TU_CHECK(st != NULL, "open %s: %s", path, qkv_last_error());
    if (!st) return;
    /* GPT2Model (no LM head, so no "transformer." prefix), n_embd 2, n_layer 1, vocab 21, n_positions 1024.
     * Conv1D weights are stored [in, out]: c_attn (C, 3C), c_fc (C, 4C), mlp.c_proj (4C, C). */
    struct {
        const char *name;
        int ndim;
        int64_t shape[2];
    } want[] = {
        {"h.0.attn.c_attn.bias", 1, {6}},   {"h.0.attn.c_attn.weight", 2, {2, 6}},
        {"h.0.attn.c_proj.bias", 1, {2}},   {"h.0.attn.c_proj.weight", 2, {2, 2}},
        {"h.0.ln_1.bias", 1, {2}},          {"h.0.ln_1.weight", 1, {2}},
        {"h.0.ln_2.bias", 1, {2}},          {"h.0.ln_2.weight", 1, {2}},
        {"h.0.mlp.c_fc.bias", 1, {8}},      {"h.0.mlp.c_fc.weight", 2, {2, 8}},
        {"h.0.mlp.c_proj.bias", 1, {2}},    {"h.0.mlp.c_proj.weight", 2, {8, 2}},
        {"ln_f.bias", 1, {2}},              {"ln_f.weight", 1, {2}},
        {"wpe.weight", 2, {1024, 2}},       {"wte.weight", 2, {21, 2}},
    };
    int nw = (int)(sizeof want / sizeof want[0]);
    TU_CHECK(qkv_safetensors_count(st) == nw, "HF file has %d tensors, GPT2Model has %d", qkv_safetensors_count(st),
             nw);
    const char *fmt = qkv_safetensors_metadata(st, "format");
    TU_CHECK(fmt && !strcmp(fmt, "pt"), "metadata format = %s", fmt ? fmt : "NULL");
    printf("HF GPT2Model %s: %d tensors, metadata format=%s\n", path, qkv_safetensors_count(st), fmt ? fmt : "?");
    size_t total = 0;
    for (int i = 0; i < qkv_safetensors_count(st); i++) {
        const qkv_st_tensor *t = qkv_safetensors_get(st, i);
        char sb[64] = "";
        size_t k = 0;
        for (int d = 0; d < t->ndim; d++) k += (size_t)snprintf(sb + k, sizeof sb - k, d ? ",%lld" : "%lld",
                                                                (long long)t->shape[d]);
        printf("    %-24s %-4s [%s] %zu bytes at +%zu\n", t->name, qkv_dtype_name(t->dtype), sb, t->nbytes, total);
        total += t->nbytes;
    }
    for (int i = 0; i < nw; i++) {
        const qkv_st_tensor *t = qkv_safetensors_find(st, want[i].name);
        TU_CHECK(t != NULL, "HF tensor '%s' missing", want[i].name);
        if (!t) continue;
        TU_CHECK(t == qkv_safetensors_get(st, i), "'%s' is not tensor %d in data order", want[i].name, i);
        TU_CHECK(t->dtype == QKV_DTYPE_F32 && t->ndim == want[i].ndim && t->shape[0] == want[i].shape[0] &&
                     (t->ndim < 2 || t->shape[1] == want[i].shape[1]),
                 "'%s': %s ndim %d shape [%lld,%lld]", want[i].name, qkv_dtype_name(t->dtype), t->ndim,
                 (long long)t->shape[0], (long long)t->shape[1]);
        TU_CHECK((uintptr_t)t->data % 4 == 0, "'%s': HF pads the header, so F32 data is aligned", want[i].name);
        /* HF's GPT-2 init: LayerNorm weight 1 and bias 0, Linear/Conv1D biases 0, weights N(0, 0.02) */
        int64_t n = 1;
        for (int d = 0; d < t->ndim; d++) n *= t->shape[d];
        float *v = malloc((size_t)n * sizeof *v);
        TU_CHECK(qkv_safetensors_read_f32(t, v, n) == QKV_OK, "read '%s'", want[i].name);
        int is_ln_w = strstr(want[i].name, "ln_") && strstr(want[i].name, ".weight");
        int is_bias = strstr(want[i].name, ".bias") != NULL;
        int ok = 1, nonzero = 0;
        for (int64_t k2 = 0; k2 < n; k2++) {
            if (is_ln_w) ok &= v[k2] == 1.0f;
            else if (is_bias) ok &= v[k2] == 0.0f;
            else {
                ok &= fabsf(v[k2]) < 0.2f;
                nonzero += v[k2] != 0;
            }
        }
        TU_CHECK(ok && (is_ln_w || is_bias || nonzero > n / 2), "'%s': values are not those of HF's GPT-2 init",
                 want[i].name);
        free(v);
    }
    /* our writer, given the same tensors and metadata, writes the very same bytes as transformers did */
    qkv_st_entry e[16];
    float *bufs[16] = {0};
    int n = qkv_safetensors_count(st) < 16 ? qkv_safetensors_count(st) : 16;
    for (int i = 0; i < n; i++) {
        const qkv_st_tensor *t = qkv_safetensors_get(st, n - 1 - i); /* reversed: the writer must sort */
        bufs[i] = malloc(t->nbytes + 4);
        memcpy(bufs[i], t->data, t->nbytes);
        e[i] = (qkv_st_entry){t->name, t->ndim, t->shape, bufs[i]};
    }
    const char *kv[2] = {"format", "pt"};
    const char *out = tmp_path("hf_rewrite.safetensors");
    TU_CHECK(qkv_safetensors_write(out, e, n, kv, 1) == QKV_OK, "rewrite: %s", qkv_last_error());
    size_t la, lb;
    unsigned char *a = read_all(path, &la), *b = read_all(out, &lb);
    TU_CHECK(a && b && la == lb && memcmp(a, b, la) == 0, "qkv's rewrite of the HF file differs (%zu vs %zu bytes)",
             la, lb);
    if (a && b && la == lb && memcmp(a, b, la) == 0)
        printf("ok   HF checkpoint: names and shapes of GPT2Model, init values, rewrite byte-identical (%zu bytes)\n",
               la);
    free(a);
    free(b);
    for (int i = 0; i < n; i++) free(bufs[i]);
    qkv_safetensors_close(st);
}

static void cleanup(void) {
    DIR *dp = opendir(dir);
    if (!dp) return;
    struct dirent *e;
    while ((e = readdir(dp))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        char p[512];
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        if (unlink(p) != 0) rmdir(p);
    }
    closedir(dp);
    rmdir(dir);
}

int main(void) {
    snprintf(dir, sizeof dir, "/tmp/qkv_st_XXXXXX");
    if (!mkdtemp(dir)) {
        printf("FAIL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    atexit(cleanup);
    fill_values();
    test_round_trip();
    test_layout();
    test_write_errors();
    test_truncations();
    test_bad_headers();
    test_accepted_oddities();
    /* The shared-data part comes last: when the data is absent it ends the program with a loud skip,
     * which must not hide a failure above. */
    if (tu_failures) {
        printf("not reading the HF checkpoint: earlier checks failed\n");
        return tu_finish("safetensors");
    }
    test_hf_checkpoint();
    return tu_finish("safetensors");
}

/* test_train_data.c — the training data pipeline (src/train/data.c) and the loss plot (plot.c), no model.
 *
 * Checked against references computed here independently of data.c:
 *   - folder walking: which files are read, in which order, with the extension filter, hidden folders,
 *     binary files (skipped with a note) and empty files; joined text = the files' bytes concatenated;
 *   - errors: malformed UTF-8 names the file and the exact byte offset; missing / empty data;
 *   - tokens = each document encoded on its own (qkv_tokenizer_encode) and joined by the EOS id;
 *   - the token cache: reused when valid; rebuilt when a source changes, when the tokenizer changes, and
 *     when the file is truncated or corrupted (each corruption also read directly: the right status);
 *     u16 ids for vocab <= 65535, u32 above; exact file sizes;
 *   - batches: targets are ids shifted by one, every window lies inside the train split, rows depend
 *     only on (seed, step, row) (so grad_accum splits agree), offsets cover the range evenly;
 *     evaluation windows lie inside the validation split, first at its start and last at its end;
 *   - the SVG: well-formed tags, one polyline point per finite loss, one dot per eval loss.
 * Everything is exact (integers and bytes) except the offset histogram (bounds explained there).
 */
#include <errno.h>
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"
#include "qkv/train.h"

static char root[256];

/* One line per section: what it compared and whether every check in it passed. */
static int sec_checks, sec_fails;
static void section_begin(void) { sec_checks = tu_checks, sec_fails = tu_failures; }
static void section_end(const char *what) {
    printf("%-4s %s (%d checks)\n", tu_failures == sec_fails ? "ok" : "FAIL", what, tu_checks - sec_checks);
}

static void write_file(const char *rel, const char *data, size_t n) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    FILE *f = fopen(p, "wb");
    if (!f || fwrite(data, 1, n, f) != n) {
        printf("FAIL: cannot write %s\n", p);
        exit(1);
    }
    fclose(f);
}

static void mk(const char *rel) {
    char p[512];
    snprintf(p, sizeof p, "%s/%s", root, rel);
    mkdir(p, 0777);
}

static char *path_of(const char *rel) {
    static char p[4][512];
    static int k;
    k = (k + 1) % 4;
    snprintf(p[k], sizeof p[k], "%s/%s", root, rel);
    return p[k];
}

static int n_notes;
static char last_note[600];
static void count_note(void *user, const char *msg) {
    (void)user;
    n_notes++;
    snprintf(last_note, sizeof last_note, "%s", msg);
}

/* ---- folders, filters, errors ---- */

static const char *DOC_A = "int a(void) { return 1; }\n";
static const char *DOC_B = "/* b.h */\n#define B 2\n";
static const char *DOC_C = "// sub/c.c — unicode ok: \xc3\xa9\xe2\x82\xac\n";

static void test_walk(void) {
    mk("src");
    mk("src/sub");
    mk("src/.hidden");
    write_file("src/a.c", DOC_A, strlen(DOC_A));
    write_file("src/b.h", DOC_B, strlen(DOC_B));
    write_file("src/sub/c.c", DOC_C, strlen(DOC_C));
    write_file("src/.hidden/x.c", "hidden\n", 7);
    write_file("src/notes.txt", "not C\n", 6);
    write_file("src/empty.c", "", 0);
    write_file("src/zbin.c", "\x7f" "ELF\0\0\x01\x02", 8);

    static char srcdir[512];
    snprintf(srcdir, sizeof srcdir, "%s", path_of("src"));
    const char *paths[1] = {srcdir};
    qkv_data_opts o = qkv_data_default_opts();
    o.paths = paths;
    o.n_paths = 1;
    o.exts = ".c,h"; /* "h" without its dot works too */
    o.note = count_note;
    n_notes = 0;
    size_t len = 0;
    char *text = qkv_data_read_text(&o, "|", &len);
    char want[512];
    snprintf(want, sizeof want, "%s|%s|%s", DOC_A, DOC_B, DOC_C); /* a.c, b.h, sub/c.c: sorted by path */
    TU_CHECK(text && len == strlen(want) && memcmp(text, want, len) == 0, "joined text of src/: got '%s'", text ? text : qkv_last_error());
    TU_CHECK(n_notes == 1 && strstr(last_note, "zbin.c"), "one note for the binary file, got %d: %s", n_notes, last_note);
    free(text);

    /* no filter: notes.txt joins (sorted after sub/? no: "src/notes.txt" < "src/sub/c.c") */
    o.exts = NULL;
    n_notes = 0;
    text = qkv_data_read_text(&o, NULL, &len);
    snprintf(want, sizeof want, "%s%s%s%s", DOC_A, DOC_B, "not C\n", DOC_C);
    TU_CHECK(text && len == strlen(want) && memcmp(text, want, len) == 0, "unfiltered text: got '%s'", text ? text : qkv_last_error());
    free(text);

    /* skip_dir: a folder (the run's output) never walked into */
    static char subdir[512];
    snprintf(subdir, sizeof subdir, "%s", path_of("src/sub"));
    o.skip_dir = subdir;
    o.exts = ".c,.h";
    text = qkv_data_read_text(&o, NULL, &len);
    snprintf(want, sizeof want, "%s%s", DOC_A, DOC_B);
    TU_CHECK(text && len == strlen(want) && memcmp(text, want, len) == 0, "skip_dir leaves src/sub out");
    free(text);
    o.skip_dir = NULL;

    /* a filter matching nothing */
    o.exts = ".py";
    text = qkv_data_read_text(&o, NULL, &len);
    TU_CHECK(!text && strstr(qkv_last_error(), "no files ending in .py"), "no match: %s", qkv_last_error());
    free(text);

    /* malformed UTF-8 (no NUL, so not binary-looking): error with the file and the byte offset */
    static const char bad[] = "ok line\nbad \xc3\x28 here\n"; /* 0xC3 0x28: invalid continuation at 12 */
    write_file("src/sub/bad.c", bad, sizeof bad - 1);
    o.exts = ".c";
    text = qkv_data_read_text(&o, NULL, &len);
    TU_CHECK(!text && strstr(qkv_last_error(), "bad.c: invalid UTF-8 at byte 12"), "bad UTF-8: '%s'", qkv_last_error());
    free(text);
    remove(path_of("src/sub/bad.c"));

    /* a file named directly: read even without the extension, binary-looking is not skipped */
    static char p1[512], p2[512], p3[512], p4[512];
    snprintf(p1, sizeof p1, "%s", path_of("src/zbin.c"));
    const char *one[1] = {p1};
    o.paths = one;
    text = qkv_data_read_text(&o, NULL, &len);
    TU_CHECK(text && len == 8, "a binary file named directly is read (valid UTF-8), len %zu", len);
    free(text);

    /* missing and empty */
    snprintf(p2, sizeof p2, "%s", path_of("nope.txt"));
    const char *missing[1] = {p2};
    o.paths = missing;
    text = qkv_data_read_text(&o, NULL, &len);
    TU_CHECK(!text && strstr(qkv_last_error(), "nope.txt") && strstr(qkv_last_error(), "No such file"), "missing: %s",
             qkv_last_error());
    snprintf(p3, sizeof p3, "%s", path_of("src/empty.c"));
    const char *empty[1] = {p3};
    o.paths = empty;
    text = qkv_data_read_text(&o, NULL, &len);
    TU_CHECK(!text && strstr(qkv_last_error(), "empty.c: empty file"), "empty: %s", qkv_last_error());
    mk("emptydir");
    snprintf(p4, sizeof p4, "%s", path_of("emptydir"));
    const char *ed[1] = {p4};
    o.paths = ed;
    o.exts = NULL;
    text = qkv_data_read_text(&o, NULL, &len);
    TU_CHECK(!text && strstr(qkv_last_error(), "no files in this folder"), "empty folder: %s", qkv_last_error());
}

/* ---- tokens and the cache ---- */

static int64_t file_size(const char *p) {
    struct stat st;
    return stat(p, &st) == 0 ? (int64_t)st.st_size : -1;
}

/* Reference tokens: each document encoded alone, EOS between. */
static int32_t *ref_tokens(qkv_tokenizer *tok, const char *const *docs, int n, int64_t *count) {
    size_t cap = 16;
    for (int i = 0; i < n; i++) cap += strlen(docs[i]) + 1;
    int32_t *ids = malloc(sizeof *ids * cap);
    int64_t k = 0;
    for (int i = 0; i < n; i++) {
        if (i && qkv_tokenizer_eos(tok) >= 0) ids[k++] = qkv_tokenizer_eos(tok);
        k += qkv_tokenizer_encode(tok, docs[i], strlen(docs[i]), 0, ids + k, (int64_t)cap - k);
    }
    *count = k;
    return ids;
}

static int same_tokens(const qkv_dataset *d, const int32_t *ref, int64_t n) {
    return d && qkv_dataset_len(d) == n && memcmp(qkv_dataset_tokens(d), ref, sizeof *ref * (size_t)n) == 0;
}

static void flip_byte(const char *p, long at) {
    FILE *f = fopen(p, "r+b");
    fseek(f, at, SEEK_SET);
    int c = fgetc(f);
    fseek(f, at, SEEK_SET);
    fputc(c ^ 0x5a, f);
    fclose(f);
}

static void test_cache(void) {
    mk("docs");
    const char *d1 = "The cat sat on the mat. The cat sat on the hat.\n";
    const char *d2 = "A dog. <|endoftext|> is plain text here.\n";
    write_file("docs/1.txt", d1, strlen(d1));
    write_file("docs/2.txt", d2, strlen(d2));
    const char *docs[2] = {d1, d2};

    /* a small BPE with an EOS, trained on the two texts */
    char corpus[512];
    snprintf(corpus, sizeof corpus, "%s<|endoftext|>%s", d1, d2);
    qkv_tokenizer *bpe = qkv_tokenizer_train_bpe(corpus, strlen(corpus), 300);
    qkv_tokenizer *bytes = qkv_tokenizer_new_bytes();
    TU_CHECK(bpe && qkv_tokenizer_eos(bpe) >= 0, "trained BPE has an EOS: %s", qkv_last_error());
    if (!bpe) exit(1);

    static char docdir[512], cache[512];
    snprintf(docdir, sizeof docdir, "%s", path_of("docs"));
    snprintf(cache, sizeof cache, "%s", path_of("tokens.bin"));
    const char *paths[1] = {docdir};
    qkv_data_opts o = qkv_data_default_opts();
    o.paths = paths;
    o.n_paths = 1;
    o.val_fraction = 0.25;
    o.cache_path = cache;
    o.note = count_note;

    int64_t n_ref;
    int32_t *ref = ref_tokens(bpe, docs, 2, &n_ref);
    qkv_dataset *d = qkv_dataset_build(&o, bpe);
    TU_CHECK(same_tokens(d, ref, n_ref) && !qkv_dataset_from_cache(d) && qkv_dataset_n_docs(d) == 2,
             "BPE tokens = docs encoded alone + EOS between (%lld tokens)", (long long)n_ref);
    TU_CHECK(d && qkv_dataset_val_len(d) == (int64_t)(n_ref * 0.25) && qkv_dataset_train_len(d) + qkv_dataset_val_len(d) == n_ref,
             "split: val = floor(0.25 n)");
    TU_CHECK(file_size(o.cache_path) == 56 + 2 * n_ref, "cache size 56 + 2 n (u16 ids): %lld", (long long)file_size(o.cache_path));
    qkv_dataset_free(d);

    n_notes = 0;
    d = qkv_dataset_build(&o, bpe);
    TU_CHECK(same_tokens(d, ref, n_ref) && qkv_dataset_from_cache(d) && n_notes == 0, "second build reads the cache");
    qkv_dataset_free(d);

    /* another tokenizer: stale */
    int64_t n_ref_b;
    int32_t *ref_b = ref_tokens(bytes, docs, 2, &n_ref_b);
    TU_CHECK(n_ref_b == (int64_t)(strlen(d1) + strlen(d2)), "bytes: no EOS, plain concatenation");
    n_notes = 0;
    d = qkv_dataset_build(&o, bytes);
    TU_CHECK(same_tokens(d, ref_b, n_ref_b) && !qkv_dataset_from_cache(d) && n_notes == 1 &&
             strstr(last_note, "another tokenizer"), "tokenizer change rebuilds: %s", last_note);
    qkv_dataset_free(d);
    free(ref_b);

    /* back to BPE, then change a source (size and time) */
    d = qkv_dataset_build(&o, bpe);
    qkv_dataset_free(d);
    const char *d2b = "A dog. A cat. <|endoftext|> is plain text here, still.\n";
    write_file("docs/2.txt", d2b, strlen(d2b));
    const char *docs_b[2] = {d1, d2b};
    int64_t n_ref2;
    int32_t *ref2 = ref_tokens(bpe, docs_b, 2, &n_ref2);
    n_notes = 0;
    d = qkv_dataset_build(&o, bpe);
    TU_CHECK(same_tokens(d, ref2, n_ref2) && !qkv_dataset_from_cache(d) && strstr(last_note, "sources"),
             "source change rebuilds: %s", last_note);
    qkv_dataset_free(d);

    /* corruptions: read directly (status), then build (rebuilt, same tokens) */
    uint64_t tfp = qkv_tokenizer_fingerprint(bpe);
    int64_t V = qkv_tokenizer_vocab_size(bpe), n = 0;
    d = qkv_dataset_build(&o, bpe);
    uint64_t sfp = qkv_dataset_source_fingerprint(d);
    qkv_dataset_free(d);
    int32_t *got = qkv_tokens_read(o.cache_path, V, tfp, sfp, &n);
    TU_CHECK(got && n == n_ref2 && memcmp(got, ref2, sizeof *got * (size_t)n) == 0, "direct read of a valid cache");
    free(got);
    struct {
        const char *what;
        long at; /* byte to flip, or -1: truncate by 3 bytes */
        qkv_status want;
    } cases[] = {{"bad magic", 0, QKV_ERR_FORMAT}, {"bad version", 8, QKV_ERR_FORMAT}, {"bad width", 12, QKV_ERR_FORMAT},
                 {"count", 16, QKV_ERR_FORMAT},    {"data byte", 60, QKV_ERR_FORMAT}, {"checksum", 50, QKV_ERR_FORMAT},
                 {"tokenizer fp", 33, QKV_ERR_STATE}, {"truncated", -1, QKV_ERR_FORMAT}};
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        if (cases[c].at >= 0) flip_byte(o.cache_path, cases[c].at);
        else if (truncate(o.cache_path, file_size(o.cache_path) - 3) != 0) printf("FAIL: truncate\n");
        got = qkv_tokens_read(o.cache_path, V, tfp, sfp, &n);
        char msg[512];
        snprintf(msg, sizeof msg, "%s", qkv_last_error());
        /* the status: re-derive it the way the builder sees it: only FORMAT/STATE messages are expected */
        int is_state = strstr(msg, "written for another") != NULL;
        TU_CHECK(!got && is_state == (cases[c].want == QKV_ERR_STATE), "cache %s rejected: %s", cases[c].what, msg);
        free(got);
        n_notes = 0;
        d = qkv_dataset_build(&o, bpe);
        TU_CHECK(same_tokens(d, ref2, n_ref2) && !qkv_dataset_from_cache(d) && n_notes == 1, "cache %s: rebuilt (%s)",
                 cases[c].what, last_note);
        qkv_dataset_free(d);
    }
    /* a file of garbage the size of a header */
    write_file("tokens.bin", "garbage garbage garbage garbage garbage garbage garbage!", 56);
    d = qkv_dataset_build(&o, bpe);
    TU_CHECK(same_tokens(d, ref2, n_ref2) && strstr(last_note, "bad magic"), "garbage cache rebuilt: %s", last_note);
    qkv_dataset_free(d);

    /* ids wider than 16 bits */
    int32_t wide[5] = {0, 65535, 65536, 69999, 7};
    TU_CHECK(qkv_tokens_write(path_of("wide.bin"), wide, 5, 70000, 1, 2) == QKV_OK, "write u32 cache");
    TU_CHECK(file_size(path_of("wide.bin")) == 56 + 4 * 5, "u32 cache size");
    got = qkv_tokens_read(path_of("wide.bin"), 70000, 1, 2, &n);
    TU_CHECK(got && n == 5 && memcmp(got, wide, sizeof wide) == 0, "u32 ids round trip");
    free(got);
    TU_CHECK(qkv_tokens_write(path_of("wide.bin"), wide, 5, 65535, 1, 2) != QKV_OK, "id >= vocab refused on write");
    got = qkv_tokens_read(path_of("wide.bin"), 70000, 1, 3, &n);
    TU_CHECK(!got && strstr(qkv_last_error(), "sources"), "other source fingerprint is stale: %s", qkv_last_error());
    free(got);

    /* fingerprints */
    qkv_tokenizer *bytes2 = qkv_tokenizer_new_bytes(), *chars = qkv_tokenizer_new_chars(corpus, strlen(corpus));
    qkv_tokenizer *bpe2 = qkv_tokenizer_train_bpe(corpus, strlen(corpus), 266);
    TU_CHECK(qkv_tokenizer_fingerprint(bytes) == qkv_tokenizer_fingerprint(bytes2), "equal tokenizers, equal fingerprints");
    TU_CHECK(qkv_tokenizer_vocab_size(bpe2) != qkv_tokenizer_vocab_size(bpe), "BPEs of %lld and %lld tokens",
             (long long)qkv_tokenizer_vocab_size(bpe2), (long long)qkv_tokenizer_vocab_size(bpe));
    TU_CHECK(qkv_tokenizer_fingerprint(bytes) != qkv_tokenizer_fingerprint(chars), "bytes vs chars fingerprints differ");
    TU_CHECK(qkv_tokenizer_fingerprint(bpe) != qkv_tokenizer_fingerprint(bpe2), "BPE vs smaller BPE fingerprints differ");
    TU_CHECK(qkv_tokenizer_fingerprint(bpe) != qkv_tokenizer_fingerprint(bytes), "BPE vs bytes fingerprints differ");
    qkv_tokenizer_free(bytes2);
    qkv_tokenizer_free(chars);
    qkv_tokenizer_free(bpe2);

    /* a char vocabulary that lacks a character of the data: the error names the file */
    qkv_tokenizer *small = qkv_tokenizer_new_chars("abc", 3);
    o.cache_path = NULL;
    d = qkv_dataset_build(&o, small);
    TU_CHECK(!d && strstr(qkv_last_error(), "1.txt"), "unknown character names the file: %s", qkv_last_error());
    qkv_tokenizer_free(small);

    free(ref);
    free(ref2);
    qkv_tokenizer_free(bpe);
    qkv_tokenizer_free(bytes);
}

/* ---- batches ---- */

static void test_batches(void) {
    enum { N = 5000, B = 4, T = 16 };
    int32_t *ids = malloc(sizeof *ids * N);
    for (int i = 0; i < N; i++) ids[i] = i; /* the value is the position: windows are readable */
    qkv_dataset *d = qkv_dataset_from_tokens(ids, N, N, 0.2);
    const int64_t n_train = qkv_dataset_train_len(d), n_val = qkv_dataset_val_len(d);
    TU_CHECK(n_val == 1000 && n_train == 4000, "split 4000 / 1000");
    int32_t x[B * T], y[B * T], x2[B * T], y2[B * T];
    int ok = 1, inside = 1;
    int64_t lo = N, hi = -1;
    enum { BUCKETS = 10, STEPS = 2500 };
    int64_t hist[BUCKETS] = {0};
    const int64_t range = n_train - T; /* offsets 0 .. n_train - T - 1 */
    for (int64_t step = 0; step < STEPS; step++) {
        qkv_dataset_batch(d, 7, step, 0, B, T, x, y);
        for (int b = 0; b < B; b++) {
            int32_t off = x[b * T];
            for (int t = 0; t < T; t++) {
                ok &= x[b * T + t] == off + t && y[b * T + t] == off + t + 1;
            }
            inside &= off >= 0 && off + T < n_train; /* the last target, off + T, is a train token */
            lo = off < lo ? off : lo;
            hi = off > hi ? off : hi;
            hist[off * BUCKETS / range]++;
        }
    }
    TU_CHECK(ok, "ids are consecutive windows and targets = ids shifted by one");
    TU_CHECK(inside, "every training window lies inside the train split");
    TU_CHECK(lo < 20 && hi > range - 20, "offsets reach both ends (min %lld, max %lld of %lld)", (long long)lo,
             (long long)hi, (long long)range - 1);
    /* 10,000 offsets in 10 buckets: mean 1000, sd ~30; 150 is 5 sd */
    int even = 1;
    for (int k = 0; k < BUCKETS; k++) even &= llabs(hist[k] - STEPS * B / BUCKETS) < 150;
    TU_CHECK(even, "offsets are uniform (bucket counts within 5 sd of 1000): %lld %lld ... %lld", (long long)hist[0],
             (long long)hist[1], (long long)hist[9]);

    qkv_dataset_batch(d, 7, 123, 0, B, T, x, y);
    qkv_dataset_batch(d, 7, 123, 0, B, T, x2, y2);
    TU_CHECK(!memcmp(x, x2, sizeof x) && !memcmp(y, y2, sizeof y), "same (seed, step): same batch");
    qkv_dataset_batch(d, 7, 124, 0, B, T, x2, y2);
    TU_CHECK(memcmp(x, x2, sizeof x) != 0, "next step: another batch");
    qkv_dataset_batch(d, 8, 123, 0, B, T, x2, y2);
    TU_CHECK(memcmp(x, x2, sizeof x) != 0, "another seed: another batch");
    /* rows are (micro * B + b): micro-batch 1 of size 2 = rows 2, 3 of a micro-batch 0 of size 4 */
    qkv_dataset_batch(d, 7, 123, 1, 2, T, x2, y2);
    TU_CHECK(!memcmp(x + 2 * T, x2, sizeof *x * 2 * T) && !memcmp(y + 2 * T, y2, sizeof *y * 2 * T),
             "grad_accum split: micro 1 of B=2 = rows 2..3 of B=4");

    /* evaluation windows */
    enum { K = 5 };
    int first = -1, last = -1, vin = 1, vok = 1;
    for (int k = 0; k < K; k++) {
        qkv_dataset_eval_batch(d, k, K, B, T, x, y);
        for (int b = 0; b < B; b++) {
            int32_t off = x[b * T];
            vin &= off >= n_train && off + T < N;
            for (int t = 0; t < T; t++) vok &= x[b * T + t] == off + t && y[b * T + t] == off + t + 1;
            if (k == 0 && b == 0) first = off;
            last = off;
        }
    }
    TU_CHECK(vin && vok, "eval windows inside the validation split, targets shifted");
    TU_CHECK(first == n_train && last + T == N - 1, "eval windows span the split: first %d, last ends at %d", first, last + T);
    qkv_dataset_eval_batch(d, 2, K, B, T, x, y);
    qkv_dataset_eval_batch(d, 2, K, B, T, x2, y2);
    TU_CHECK(!memcmp(x, x2, sizeof x), "eval batches are fixed");

    /* too little data for one block */
    qkv_dataset *tiny = qkv_dataset_from_tokens(ids, 20, N, 0.5);
    qkv_status s = qkv_dataset_batch(tiny, 1, 0, 0, 1, T, x, y);
    TU_CHECK(s == QKV_ERR_RANGE && strstr(qkv_last_error(), "block size 16"), "short train split: %s", qkv_last_error());
    s = qkv_dataset_eval_batch(tiny, 0, 1, 1, T, x, y);
    TU_CHECK(s == QKV_ERR_RANGE && strstr(qkv_last_error(), "validation"), "short val split: %s", qkv_last_error());
    TU_CHECK(!qkv_dataset_from_tokens(ids, N, 10, 0.1), "ids >= vocab refused: %s", qkv_last_error());
    TU_CHECK(!qkv_dataset_from_tokens(ids, N, N, 1.0), "val_fraction 1 refused: %s", qkv_last_error());
    qkv_dataset_free(tiny);
    qkv_dataset_free(d);
    free(ids);
}

/* ---- SVG ---- */

/* A small tag checker: every <name ...> is closed by </name> in order, <.../> and <?...?> stand alone,
 * attribute values are quoted. Returns 1 when well formed. */
static int xml_well_formed(const char *s, char *why, size_t n) {
    const char *stack[64];
    size_t lens[64];
    int depth = 0, seen_root = 0;
    while ((s = strchr(s, '<')) != NULL) {
        const char *e = strchr(s, '>');
        if (!e) return snprintf(why, n, "unterminated tag"), 0;
        int quotes = 0;
        for (const char *q = s; q < e; q++) quotes += *q == '"';
        if (quotes % 2) return snprintf(why, n, "odd quotes in a tag"), 0;
        if (s[1] == '?') {
            if (e[-1] != '?') return snprintf(why, n, "bad <? ?>"), 0;
        } else if (s[1] == '/') {
            size_t l = strcspn(s + 2, " >");
            if (!depth || lens[depth - 1] != l || strncmp(stack[depth - 1], s + 2, l))
                return snprintf(why, n, "mismatched </%.*s>", (int)l, s + 2), 0;
            depth--;
        } else if (e[-1] != '/') {
            if (depth == 64) return snprintf(why, n, "too deep"), 0;
            stack[depth] = s + 1;
            lens[depth++] = strcspn(s + 1, " >");
            seen_root = 1;
        }
        s = e + 1;
    }
    if (depth) return snprintf(why, n, "%d unclosed tags", depth), 0;
    if (!seen_root) return snprintf(why, n, "no element"), 0;
    return 1;
}

static char *slurp(const char *p) {
    FILE *f = fopen(p, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *b = malloc((size_t)n + 1);
    b[fread(b, 1, (size_t)n, f)] = 0;
    fclose(f);
    return b;
}

static int count_points(const char *svg) {
    const char *p = strstr(svg, "<polyline");
    p = p ? strstr(p, "points=\"") : NULL;
    if (!p) return -1;
    p += 8;
    int n = 0;
    while (*p && *p != '"') {
        while (*p == ' ') p++;
        if (*p == '"') break;
        double x, y;
        int used = 0;
        if (sscanf(p, "%lf,%lf%n", &x, &y, &used) != 2) return -2;
        n++;
        p += used;
    }
    return n;
}

static int count_str(const char *s, const char *what) {
    int n = 0;
    for (; (s = strstr(s, what)) != NULL; s++) n++;
    return n;
}

static void test_plot(void) {
    enum { N = 300 };
    int64_t steps[N], es[3] = {100, 200, 300};
    float loss[N], el[3] = {2.5f, 2.0f, 1.8f};
    for (int i = 0; i < N; i++) steps[i] = i + 1, loss[i] = 5.5f * expf(-i / 80.0f) + 1.2f;
    loss[17] = NAN; /* left out of the line */
    const char *p = path_of("loss.svg");
    qkv_status s = qkv_plot_loss_svg(p, "loss <test> & co", steps, loss, N, es, el, 3);
    char *svg = slurp(p);
    TU_CHECK(s == QKV_OK && svg, "plot written: %s", qkv_last_error());
    if (!svg) return;
    char why[128] = "";
    TU_CHECK(xml_well_formed(svg, why, sizeof why), "SVG well formed: %s", why);
    TU_CHECK(strstr(svg, "<svg") && strstr(svg, "</svg>") && strstr(svg, "xmlns=\"http://www.w3.org/2000/svg\""), "svg root");
    TU_CHECK(count_points(svg) == N - 1, "polyline points = finite losses (%d, want %d)", count_points(svg), N - 1);
    TU_CHECK(count_str(svg, "<circle") == 3 + 1, "3 eval dots + 1 legend dot (%d)", count_str(svg, "<circle"));
    TU_CHECK(strstr(svg, "loss &lt;test&gt; &amp; co") != NULL, "title escaped");
    TU_CHECK(strstr(svg, ">step<") && strstr(svg, ">loss (cross-entropy, nats)<"), "axis titles");
    TU_CHECK(count_str(svg, "class=\"yticks\"") == 1 && count_str(svg, "<text") >= 10, "tick labels (%d texts)",
             count_str(svg, "<text"));
    free(svg);
    /* no points at all still gives a valid empty chart */
    s = qkv_plot_loss_svg(p, NULL, NULL, NULL, 0, NULL, NULL, 0);
    svg = slurp(p);
    TU_CHECK(s == QKV_OK && svg && xml_well_formed(svg, why, sizeof why) && count_points(svg) == 0, "empty chart");
    free(svg);
    s = qkv_plot_loss_svg(path_of("no/such/dir/x.svg"), NULL, steps, loss, N, NULL, NULL, 0);
    TU_CHECK(s == QKV_ERR_IO && strstr(qkv_last_error(), "no/such/dir"), "unwritable path: %s", qkv_last_error());
}

static void rm_rf(const char *p) {
    char cmd[600];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", p);
    if (system(cmd) != 0) printf("note: could not remove %s\n", p);
}

int main(void) {
    snprintf(root, sizeof root, "/tmp/qkv_test_train_data.XXXXXX");
    if (!mkdtemp(root)) {
        printf("FAIL: mkdtemp: %s\n", strerror(errno));
        return 1;
    }
    section_begin();
    test_walk();
    section_end("folders: path order, --ext filter, hidden/binary/empty files, skip_dir, UTF-8 error offsets");
    section_begin();
    test_cache();
    section_end("tokens = per-document encodings + EOS; cache reuse, rebuild on source/tokenizer change and on 8 corruptions; u16/u32");
    section_begin();
    test_batches();
    section_end("batches: shifted targets, train/val containment, (seed, step, row) determinism, uniform offsets");
    section_begin();
    test_plot();
    section_end("loss.svg: well-formed tags, polyline points = finite losses, eval dots, escaped title");
    rm_rf(root);
    return tu_finish("test_train_data");
}

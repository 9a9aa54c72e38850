/* data.c — text sources to one token stream, the token cache file, and deterministic batches.
 *
 * A run reads its sources once: the files (a folder is walked recursively, sorted by path, filtered by
 * name ending) are checked for UTF-8, tokenised one document at a time and joined by the tokenizer's
 * EOS id, and the ids are written to a cache file whose header fingerprints both the tokenizer and the
 * file list (paths, sizes, modification times), so a later run — or a resumed one — reads the ids back
 * instead of tokenising again, and a changed source or tokenizer rebuilds the cache.
 *
 * Deliberately not here: streaming of corpora larger than memory (ids are held as int32 in memory; the
 * intended inputs are megabytes), shuffling by document, padding. Batches are random windows.
 *
 * The one convention a reader needs: a batch row is a pure function of (seed, step, row index) — a
 * counter-based hash, not a stateful RNG stream — so a resumed run, a different grad_accum split of the
 * same rows, or a replay of step k alone all see the same windows.
 */
#include <dirent.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_int.h"
#include "core/json.h"
#include "qkv/train.h"
#include "train_int.h"

#define BINARY_PROBE 8000 /* bytes inspected for a NUL when deciding a file is binary (git's figure) */
#define CACHE_MAGIC "QKVTOKEN"
#define CACHE_VERSION 1u
#define CACHE_HEADER 56 /* magic 8, version 4, width 4, count, vocab, tok fp, src fp, checksum: 8 each */

/* ---- small helpers ---- */

#define FNV_OFFSET 0xcbf29ce484222325ull
#define FNV_PRIME 0x100000001b3ull

static uint64_t fnv(uint64_t h, const void *p, size_t n) {
    const unsigned char *s = p;
    for (size_t i = 0; i < n; i++) h = (h ^ s[i]) * FNV_PRIME;
    return h;
}

static uint64_t fnv_u64(uint64_t h, uint64_t v) {
    unsigned char b[8];
    for (int i = 0; i < 8; i++) b[i] = (unsigned char)(v >> (8 * i));
    return fnv(h, b, 8);
}

static uint64_t mix64(uint64_t z) {
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

/* Re-raises the current thread error with a prefix ("a.txt: " + message). The message is copied first
 * because qkv__set_error writes the buffer qkv_last_error reads. */
static void prefix_error(qkv_status s, const char *prefix) {
    char msg[512];
    snprintf(msg, sizeof msg, "%s", qkv_last_error());
    qkv__set_error(s, "%s: %s", prefix, msg);
}

void qkv__note(qkv_note_fn fn, void *user, const char *fmt, ...) {
    if (!fn) return;
    char buf[700];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    fn(user, buf);
}

qkv_data_opts qkv_data_default_opts(void) {
    qkv_data_opts o;
    memset(&o, 0, sizeof o);
    o.val_fraction = 0.1;
    return o;
}

/* ---- the file list ---- */

typedef struct {
    char *path;
    int64_t size;
    int64_t mtime_ns;
    int in_folder; /* found by walking a folder (binary files are skipped, not errors) */
} src_file;

typedef struct {
    src_file *f;
    int n, cap;
    uint64_t fp; /* source fingerprint */
    int have_skip;
    dev_t skip_dev; /* the folder not to walk into */
    ino_t skip_ino;
} file_list;

static void files_free(file_list *l) {
    for (int i = 0; i < l->n; i++) free(l->f[i].path);
    free(l->f);
    memset(l, 0, sizeof *l);
}

static int files_add(file_list *l, const char *path, const struct stat *st, int in_folder) {
    if (l->n == l->cap) {
        int cap = l->cap ? 2 * l->cap : 64;
        src_file *f = realloc(l->f, sizeof *f * (size_t)cap);
        if (!f) return 0;
        l->f = f;
        l->cap = cap;
    }
    char *p = strdup(path);
    if (!p) return 0;
    l->f[l->n++] = (src_file){p, (int64_t)st->st_size, (int64_t)st->st_mtim.tv_sec * 1000000000 + st->st_mtim.tv_nsec,
                              in_folder};
    return 1;
}

/* Does name end in one of the comma-separated endings of exts (each with a leading dot added when
 * missing)? NULL or "" keeps everything. */
static int ext_match(const char *name, const char *exts) {
    if (!exts || !*exts) return 1;
    size_t nl = strlen(name);
    const char *s = exts;
    while (*s) {
        const char *e = strchr(s, ',');
        size_t k = e ? (size_t)(e - s) : strlen(s);
        if (k > 0) {
            int dot = s[0] != '.';
            if (nl >= k + (size_t)dot && memcmp(name + nl - k, s, k) == 0 && (!dot || name[nl - k - 1] == '.'))
                return 1;
        }
        s += k;
        if (*s == ',') s++;
    }
    return 0;
}

static int cmp_file(const void *a, const void *b) {
    return strcmp(((const src_file *)a)->path, ((const src_file *)b)->path);
}

/* Adds the matching regular files under dir (depth-first, any order; the caller sorts). */
static qkv_status walk(file_list *l, const char *dir, const char *exts, int depth) {
    if (depth > 64) return qkv__set_error(QKV_ERR_ARG, "%s: folders nested deeper than 64 levels", dir);
    DIR *d = opendir(dir);
    if (!d) return qkv__set_error(QKV_ERR_IO, "%s: cannot open folder: %s", dir, strerror(errno));
    qkv_status s = QKV_OK;
    struct dirent *e;
    while (s == QKV_OK && (e = readdir(d)) != NULL) {
        if (e->d_name[0] == '.') continue; /* ., .., .git, editor swap files */
        size_t n = strlen(dir) + strlen(e->d_name) + 2;
        char *p = malloc(n);
        if (!p) {
            s = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", dir);
            break;
        }
        snprintf(p, n, "%s%s%s", dir, dir[strlen(dir) - 1] == '/' ? "" : "/", e->d_name);
        struct stat st;
        if (lstat(p, &st) != 0) {
            s = qkv__set_error(QKV_ERR_IO, "%s: %s", p, strerror(errno));
        } else if (S_ISDIR(st.st_mode)) {
            if (!(l->have_skip && st.st_dev == l->skip_dev && st.st_ino == l->skip_ino)) s = walk(l, p, exts, depth + 1);
        } else if (ext_match(e->d_name, exts)) {
            /* a symbolic link is followed to a regular file only, never to a folder (no loops) */
            if (S_ISLNK(st.st_mode) && stat(p, &st) != 0) st.st_mode = 0;
            if (S_ISREG(st.st_mode) && !files_add(l, p, &st, 1)) s = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", p);
        }
        free(p);
    }
    closedir(d);
    return s;
}

/* The sources of o as a file list with the source fingerprint. Errors name the path. */
static qkv_status list_files(const qkv_data_opts *o, file_list *l) {
    memset(l, 0, sizeof *l);
    if (!o || o->n_paths <= 0 || !o->paths)
        return qkv__set_error(QKV_ERR_ARG, "data: no input files or folders given");
    struct stat sk;
    if (o->skip_dir && stat(o->skip_dir, &sk) == 0) l->have_skip = 1, l->skip_dev = sk.st_dev, l->skip_ino = sk.st_ino;
    uint64_t h = fnv(FNV_OFFSET, "qkv-sources-1", 13);
    h = fnv(h, o->exts ? o->exts : "", o->exts ? strlen(o->exts) + 1 : 1);
    for (int i = 0; i < o->n_paths; i++) {
        const char *p = o->paths[i];
        if (!p || !*p) {
            files_free(l);
            return qkv__set_error(QKV_ERR_ARG, "data: empty path");
        }
        struct stat st;
        if (stat(p, &st) != 0) {
            files_free(l);
            return qkv__set_error(QKV_ERR_IO, "%s: %s", p, strerror(errno));
        }
        int first = l->n;
        if (S_ISDIR(st.st_mode)) {
            qkv_status s = walk(l, p, o->exts, 0);
            if (s != QKV_OK) {
                files_free(l);
                return s;
            }
            if (l->n > first) qsort(l->f + first, (size_t)(l->n - first), sizeof *l->f, cmp_file);
            if (l->n == first) {
                files_free(l);
                if (o->exts && *o->exts)
                    return qkv__set_error(QKV_ERR_ARG, "%s: no files ending in %s in this folder", p, o->exts);
                return qkv__set_error(QKV_ERR_ARG, "%s: no files in this folder", p);
            }
        } else if (S_ISREG(st.st_mode)) {
            if (!files_add(l, p, &st, 0)) {
                files_free(l);
                return qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", p);
            }
        } else {
            files_free(l);
            return qkv__set_error(QKV_ERR_ARG, "%s: not a regular file or folder", p);
        }
        h = fnv(h, p, strlen(p) + 1);
    }
    for (int i = 0; i < l->n; i++) {
        h = fnv(h, l->f[i].path, strlen(l->f[i].path) + 1);
        h = fnv_u64(h, (uint64_t)l->f[i].size);
        h = fnv_u64(h, (uint64_t)l->f[i].mtime_ns);
    }
    l->fp = h;
    return QKV_OK;
}

/* Reads one file whole. *skip is set (and NULL returned with no error) for a binary-looking file found
 * in a folder. The buffer has one spare byte for a NUL. */
static char *read_doc(const qkv_data_opts *o, const src_file *f, size_t *len, int *skip) {
    *skip = 0;
    FILE *fp = fopen(f->path, "rb");
    if (!fp) {
        qkv__set_error(QKV_ERR_IO, "%s: cannot open: %s", f->path, strerror(errno));
        return NULL;
    }
    size_t cap = (size_t)f->size + 1, n = 0;
    char *buf = malloc(cap);
    if (!buf) {
        fclose(fp);
        qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory for %lld bytes", f->path, (long long)f->size);
        return NULL;
    }
    size_t got;
    while ((got = fread(buf + n, 1, cap - n, fp)) > 0) {
        n += got;
        if (n == cap) { /* the file grew since it was listed: read all of it anyway */
            char *b2 = realloc(buf, cap * 2);
            if (!b2) {
                free(buf);
                fclose(fp);
                qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", f->path);
                return NULL;
            }
            buf = b2;
            cap *= 2;
        }
    }
    int err = ferror(fp);
    fclose(fp);
    if (err) {
        free(buf);
        qkv__set_error(QKV_ERR_IO, "%s: read error", f->path);
        return NULL;
    }
    buf[n] = '\0';
    if (f->in_folder && memchr(buf, 0, n < BINARY_PROBE ? n : BINARY_PROBE)) {
        free(buf);
        *skip = 1;
        qkv__note(o->note, o->note_user, "%s: looks binary (NUL byte), skipped", f->path);
        return NULL;
    }
    size_t bad = qkv__utf8_check(buf, n);
    if (bad < n) {
        free(buf);
        qkv__set_error(QKV_ERR_FORMAT, "%s: invalid UTF-8 at byte %zu", f->path, bad);
        return NULL;
    }
    *len = n;
    return buf;
}

/* The error for "no text at all". */
static qkv_status no_text(const qkv_data_opts *o, const file_list *l) {
    if (o->n_paths == 1 && l->n == 1 && !l->f[0].in_folder)
        return qkv__set_error(QKV_ERR_ARG, "%s: empty file, no text to train on", o->paths[0]);
    return qkv__set_error(QKV_ERR_ARG, "%s%s: no text to train on (every file is empty or binary)", o->paths[0],
                          o->n_paths > 1 ? " ..." : "");
}

char *qkv_data_read_text(const qkv_data_opts *o, const char *sep, size_t *len) {
    file_list l;
    if (list_files(o, &l) != QKV_OK) return NULL;
    size_t seplen = sep ? strlen(sep) : 0, n = 0, cap = 1;
    for (int i = 0; i < l.n; i++) cap += (size_t)l.f[i].size + seplen;
    char *out = malloc(cap);
    if (!out) {
        files_free(&l);
        qkv__set_error(QKV_ERR_NOMEM, "data: out of memory for %zu bytes", cap);
        return NULL;
    }
    int docs = 0;
    for (int i = 0; i < l.n; i++) {
        size_t dl;
        int skip;
        char *doc = read_doc(o, &l.f[i], &dl, &skip);
        if (!doc) {
            if (skip) continue;
            free(out);
            files_free(&l);
            return NULL;
        }
        if (dl == 0) {
            free(doc);
            continue;
        }
        if (n + dl + seplen + 1 > cap) { /* a file grew since it was listed */
            size_t c2 = n + dl + seplen + 1;
            char *o2 = realloc(out, c2);
            if (!o2) {
                free(doc), free(out), files_free(&l);
                qkv__set_error(QKV_ERR_NOMEM, "data: out of memory");
                return NULL;
            }
            out = o2, cap = c2;
        }
        if (docs > 0 && seplen) memcpy(out + n, sep, seplen), n += seplen;
        memcpy(out + n, doc, dl);
        n += dl;
        docs++;
        free(doc);
    }
    if (docs == 0) {
        no_text(o, &l);
        free(out);
        files_free(&l);
        return NULL;
    }
    files_free(&l);
    out[n] = '\0';
    if (len) *len = n;
    return out;
}

/* ---- tokenizer fingerprint ---- */

uint64_t qkv_tokenizer_fingerprint(qkv_tokenizer *tok) {
    if (!tok) return 0;
    uint64_t h = fnv(FNV_OFFSET, "qkv-tokenizer-1", 15);
    int64_t V = qkv_tokenizer_vocab_size(tok);
    h = fnv_u64(h, (uint64_t)qkv_tokenizer_kind_of(tok));
    h = fnv_u64(h, (uint64_t)V);
    h = fnv_u64(h, (uint64_t)(int64_t)qkv_tokenizer_eos(tok));
    for (int32_t id = 0; id < V; id++) {
        size_t n = 0;
        const char *s = qkv_tokenizer_token(tok, id, &n);
        h = fnv_u64(h, (uint64_t)n);
        if (s) h = fnv(h, s, n);
    }
    /* The merge order is not visible through the vocabulary; the ids of a text full of common
     * English and C fragments are. (For a char vocabulary a character it lacks just ends the probe.) */
    static const char probe[] = "The quick brown fox jumps over the lazy dog; int main(void) { return 0; }\n"
                                "    for (i = 0; i < n; i++) x[i] += y[i] * 2;  // it's what they're doing\n";
    int32_t ids[sizeof probe];
    int64_t k = qkv_tokenizer_encode(tok, probe, sizeof probe - 1, 0, ids, (int64_t)(sizeof probe));
    h = fnv_u64(h, (uint64_t)k);
    for (int64_t i = 0; i < k && i < (int64_t)sizeof probe; i++) h = fnv_u64(h, (uint64_t)ids[i]);
    return h;
}

/* ---- the cache file ---- */

static void put_u32(unsigned char *p, uint32_t v) {
    for (int i = 0; i < 4; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static void put_u64(unsigned char *p, uint64_t v) {
    for (int i = 0; i < 8; i++) p[i] = (unsigned char)(v >> (8 * i));
}
static uint32_t get_u32(const unsigned char *p) {
    uint32_t v = 0;
    for (int i = 3; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}
static uint64_t get_u64(const unsigned char *p) {
    uint64_t v = 0;
    for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
    return v;
}

/* The little-endian bytes of n ids of width w (2 or 4), in chunks, through a callback-free loop:
 * checksum and file write both walk this encoding. */
static void encode_ids(unsigned char *dst, const int32_t *ids, int64_t n, int w) {
    for (int64_t i = 0; i < n; i++) {
        uint32_t v = (uint32_t)ids[i];
        for (int b = 0; b < w; b++) dst[i * w + b] = (unsigned char)(v >> (8 * b));
    }
}

/* The token cache file: its header, then the ids encoded a chunk at a time through buf. */
enum { CACHE_CHUNK = 1 << 16 };
typedef struct {
    const unsigned char *hdr;
    const int32_t *ids;
    int64_t n;
    int w;
    unsigned char *buf; /* CACHE_CHUNK * 4 bytes */
} cache_body;

static int write_cache_body(FILE *f, const void *arg) {
    const cache_body *b = arg;
    if (fwrite(b->hdr, 1, CACHE_HEADER, f) != CACHE_HEADER) return -1;
    for (int64_t i = 0; i < b->n; i += CACHE_CHUNK) {
        int64_t k = b->n - i < CACHE_CHUNK ? b->n - i : CACHE_CHUNK;
        encode_ids(b->buf, b->ids + i, k, b->w);
        if (fwrite(b->buf, 1, (size_t)(k * b->w), f) != (size_t)(k * b->w)) return -1;
    }
    return 0;
}

qkv_status qkv_tokens_write(const char *path, const int32_t *ids, int64_t n, int64_t vocab, uint64_t tok_fp,
                            uint64_t src_fp) {
    if (!path || (!ids && n) || n < 0 || vocab <= 0 || vocab > ((int64_t)1 << 31))
        return qkv__set_error(QKV_ERR_ARG, "qkv_tokens_write: bad arguments");
    int w = vocab <= 65535 ? 2 : 4;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab)
            return qkv__set_error(QKV_ERR_RANGE, "%s: token %lld is id %d, outside the vocabulary 0..%lld", path,
                                  (long long)i, ids[i], (long long)vocab - 1);
    unsigned char *buf = malloc((size_t)CACHE_CHUNK * 4);
    if (!buf) return qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
    uint64_t sum = FNV_OFFSET;
    for (int64_t i = 0; i < n; i += CACHE_CHUNK) {
        int64_t k = n - i < CACHE_CHUNK ? n - i : CACHE_CHUNK;
        encode_ids(buf, ids + i, k, w);
        sum = fnv(sum, buf, (size_t)(k * w));
    }
    unsigned char hdr[CACHE_HEADER];
    memcpy(hdr, CACHE_MAGIC, 8);
    put_u32(hdr + 8, CACHE_VERSION);
    put_u32(hdr + 12, (uint32_t)w);
    put_u64(hdr + 16, (uint64_t)n);
    put_u64(hdr + 24, (uint64_t)vocab);
    put_u64(hdr + 32, tok_fp);
    put_u64(hdr + 40, src_fp);
    put_u64(hdr + 48, sum);

    cache_body body = {hdr, ids, n, w, buf};
    qkv_status s = qkv__write_file_atomic(path, write_cache_body, &body);
    free(buf);
    return s;
}

int32_t *qkv_tokens_read(const char *path, int64_t vocab, uint64_t tok_fp, uint64_t src_fp, int64_t *n_out) {
    if (!path || !n_out) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokens_read: NULL argument");
        return NULL;
    }
    FILE *f = fopen(path, "rb");
    if (!f) {
        qkv__set_error(QKV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    unsigned char hdr[CACHE_HEADER];
    int32_t *ids = NULL;
    unsigned char *buf = NULL;
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || fread(hdr, 1, sizeof hdr, f) != sizeof hdr) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: truncated header", path);
        goto fail;
    }
    if (memcmp(hdr, CACHE_MAGIC, 8) != 0) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: not a qkv token cache (bad magic)", path);
        goto fail;
    }
    if (get_u32(hdr + 8) != CACHE_VERSION) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: unsupported version %u", path, get_u32(hdr + 8));
        goto fail;
    }
    uint32_t w = get_u32(hdr + 12);
    uint64_t n = get_u64(hdr + 16), V = get_u64(hdr + 24);
    if (w != 2 && w != 4) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: id width %u (2 or 4)", path, w);
        goto fail;
    }
    if (V == 0 || V > ((uint64_t)1 << 31) || w != (V <= 65535 ? 2u : 4u)) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: vocabulary %llu does not fit id width %u", path, (unsigned long long)V, w);
        goto fail;
    }
    if (n > (uint64_t)INT64_MAX / 8 || (uint64_t)st.st_size != CACHE_HEADER + n * w) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: %lld bytes, the header promises %llu ids (%llu bytes): truncated or corrupt",
                       path, (long long)st.st_size, (unsigned long long)n, (unsigned long long)(CACHE_HEADER + n * w));
        goto fail;
    }
    if ((int64_t)V != vocab || get_u64(hdr + 32) != tok_fp || get_u64(hdr + 40) != src_fp) {
        qkv__set_error(QKV_ERR_STATE, "%s: written for another %s", path,
                       (int64_t)V != vocab || get_u64(hdr + 32) != tok_fp ? "tokenizer" : "version of the sources");
        goto fail;
    }
    ids = malloc(sizeof *ids * (size_t)(n ? n : 1));
    buf = malloc((size_t)(n ? n : 1) * w);
    if (!ids || !buf) {
        qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory for %llu ids", path, (unsigned long long)n);
        goto fail;
    }
    if (fread(buf, w, (size_t)n, f) != (size_t)n) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: truncated data", path);
        goto fail;
    }
    if (fnv(FNV_OFFSET, buf, (size_t)(n * w)) != get_u64(hdr + 48)) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: checksum mismatch (corrupt data)", path);
        goto fail;
    }
    for (uint64_t i = 0; i < n; i++) {
        uint32_t v = w == 2 ? (uint32_t)buf[2 * i] | (uint32_t)buf[2 * i + 1] << 8 : get_u32(buf + 4 * i);
        if (v >= V) {
            qkv__set_error(QKV_ERR_FORMAT, "%s: id %u at %llu is outside the vocabulary", path, v, (unsigned long long)i);
            goto fail;
        }
        ids[i] = (int32_t)v;
    }
    free(buf);
    fclose(f);
    *n_out = (int64_t)n;
    return ids;
fail:
    free(ids);
    free(buf);
    fclose(f);
    return NULL;
}

/* ---- datasets ---- */

struct qkv_dataset {
    int32_t *ids;
    int64_t n, n_train, n_val, vocab;
    int n_docs, from_cache;
    uint64_t src_fp;
};

static qkv_dataset *dataset_wrap(int32_t *ids, int64_t n, int64_t vocab, double val_fraction) {
    qkv_dataset *d = calloc(1, sizeof *d);
    if (!d) {
        free(ids);
        qkv__set_error(QKV_ERR_NOMEM, "dataset: out of memory");
        return NULL;
    }
    d->ids = ids;
    d->n = n;
    d->vocab = vocab;
    d->n_val = (int64_t)((double)n * val_fraction);
    d->n_train = n - d->n_val;
    return d;
}

static int bad_fraction(double f) {
    if (f >= 0.0 && f < 1.0) return 0;
    qkv__set_error(QKV_ERR_RANGE, "--val-fraction: %g is outside [0, 1)", f);
    return 1;
}

qkv_dataset *qkv_dataset_from_tokens(const int32_t *ids, int64_t n, int64_t vocab, double val_fraction) {
    if (!ids || n <= 0 || vocab <= 0) {
        qkv__set_error(QKV_ERR_ARG, "qkv_dataset_from_tokens: %s", n <= 0 ? "no tokens" : "bad arguments");
        return NULL;
    }
    if (bad_fraction(val_fraction)) return NULL;
    for (int64_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= vocab) {
            qkv__set_error(QKV_ERR_RANGE, "qkv_dataset_from_tokens: id %d at %lld outside 0..%lld", ids[i], (long long)i,
                           (long long)vocab - 1);
            return NULL;
        }
    int32_t *c = malloc(sizeof *c * (size_t)n);
    if (!c) {
        qkv__set_error(QKV_ERR_NOMEM, "dataset: out of memory for %lld tokens", (long long)n);
        return NULL;
    }
    memcpy(c, ids, sizeof *c * (size_t)n);
    return dataset_wrap(c, n, vocab, val_fraction);
}

qkv_dataset *qkv_dataset_build(const qkv_data_opts *o, qkv_tokenizer *tok) {
    if (!o || !tok) {
        qkv__set_error(QKV_ERR_ARG, "qkv_dataset_build: NULL argument");
        return NULL;
    }
    if (bad_fraction(o->val_fraction)) return NULL;
    file_list l;
    if (list_files(o, &l) != QKV_OK) return NULL;
    int64_t V = qkv_tokenizer_vocab_size(tok);
    uint64_t tfp = qkv_tokenizer_fingerprint(tok);
    if (o->cache_path) {
        int64_t n = 0;
        int32_t *ids = qkv_tokens_read(o->cache_path, V, tfp, l.fp, &n);
        if (ids && n > 0) {
            qkv_dataset *d = dataset_wrap(ids, n, V, o->val_fraction);
            if (d) d->from_cache = 1, d->src_fp = l.fp;
            files_free(&l);
            return d;
        }
        free(ids);
        if (access(o->cache_path, F_OK) == 0) qkv__note(o->note, o->note_user, "%s; rebuilding it", qkv_last_error());
    }
    int32_t eos = qkv_tokenizer_eos(tok);
    size_t cap = 1;
    for (int i = 0; i < l.n; i++) cap += (size_t)l.f[i].size + 1;
    int32_t *ids = malloc(sizeof *ids * cap);
    if (!ids) {
        files_free(&l);
        qkv__set_error(QKV_ERR_NOMEM, "data: out of memory for %zu tokens", cap);
        return NULL;
    }
    int64_t n = 0;
    int docs = 0;
    for (int i = 0; i < l.n; i++) {
        size_t dl;
        int skip;
        char *doc = read_doc(o, &l.f[i], &dl, &skip);
        if (!doc) {
            if (skip) continue;
            goto fail;
        }
        if (dl == 0) {
            free(doc);
            continue;
        }
        if ((size_t)n + dl + 1 > cap) { /* the file grew since it was listed */
            size_t c2 = (size_t)n + dl + 1;
            int32_t *i2 = realloc(ids, sizeof *ids * c2);
            if (!i2) {
                free(doc);
                qkv__set_error(QKV_ERR_NOMEM, "data: out of memory");
                goto fail;
            }
            ids = i2, cap = c2;
        }
        if (docs > 0 && eos >= 0) ids[n++] = eos;
        int64_t k = qkv_tokenizer_encode(tok, doc, dl, 0, ids + n, (int64_t)(cap - (size_t)n));
        free(doc);
        if (k < 0) {
            prefix_error(QKV_ERR_ARG, l.f[i].path);
            goto fail;
        }
        n += k;
        docs++;
    }
    if (n == 0) {
        no_text(o, &l);
        goto fail;
    }
    if (o->cache_path && qkv_tokens_write(o->cache_path, ids, n, V, tfp, l.fp) != QKV_OK) goto fail;
    qkv_dataset *d = dataset_wrap(ids, n, V, o->val_fraction);
    if (d) d->n_docs = docs, d->src_fp = l.fp;
    files_free(&l);
    return d;
fail:
    free(ids);
    files_free(&l);
    return NULL;
}

void qkv_dataset_free(qkv_dataset *d) {
    if (!d) return;
    free(d->ids);
    free(d);
}

int64_t qkv_dataset_len(const qkv_dataset *d) { return d ? d->n : 0; }
int64_t qkv_dataset_train_len(const qkv_dataset *d) { return d ? d->n_train : 0; }
int64_t qkv_dataset_val_len(const qkv_dataset *d) { return d ? d->n_val : 0; }
const int32_t *qkv_dataset_tokens(const qkv_dataset *d) { return d ? d->ids : NULL; }
int64_t qkv_dataset_vocab(const qkv_dataset *d) { return d ? d->vocab : 0; }
int qkv_dataset_n_docs(const qkv_dataset *d) { return d ? d->n_docs : 0; }
int qkv_dataset_from_cache(const qkv_dataset *d) { return d ? d->from_cache : 0; }
uint64_t qkv_dataset_source_fingerprint(const qkv_dataset *d) { return d ? d->src_fp : 0; }

/* ---- batches ---- */

static qkv_status check_batch_args(const qkv_dataset *d, int64_t B, int64_t T, const int32_t *ids,
                                   const int32_t *targets, int64_t avail, const char *split) {
    if (!d || !ids || !targets) return qkv__set_error(QKV_ERR_ARG, "batch: NULL argument");
    if (B < 1 || T < 1) return qkv__set_error(QKV_ERR_ARG, "batch: batch size %lld and block size %lld must be >= 1",
                                              (long long)B, (long long)T);
    if (avail < T + 1)
        return qkv__set_error(QKV_ERR_RANGE, "data: the %s split has %lld tokens, fewer than one block needs "
                                             "(block size %lld + 1)", split, (long long)avail, (long long)T);
    return QKV_OK;
}

static void window(const int32_t *src, int64_t T, int32_t *ids, int32_t *targets) {
    memcpy(ids, src, sizeof *ids * (size_t)T);
    memcpy(targets, src + 1, sizeof *targets * (size_t)T);
}

qkv_status qkv_dataset_batch(const qkv_dataset *d, uint64_t seed, int64_t step, int micro, int64_t B, int64_t T,
                             int32_t *ids, int32_t *targets) {
    qkv_status s = check_batch_args(d, B, T, ids, targets, d ? d->n_train : 0, "training");
    if (s != QKV_OK) return s;
    if (step < 0 || micro < 0) return qkv__set_error(QKV_ERR_ARG, "batch: negative step or micro-step");
    uint64_t range = (uint64_t)(d->n_train - T); /* offsets 0 .. n_train - T - 1 */
    uint64_t base = mix64(mix64(seed ^ 0x7161766261746368ull) + (uint64_t)step);
    for (int64_t b = 0; b < B; b++) {
        uint64_t row = (uint64_t)micro * (uint64_t)B + (uint64_t)b;
        uint64_t off = mix64(base + 0x9E3779B97F4A7C15ull * (row + 1)) % range;
        window(d->ids + off, T, ids + b * T, targets + b * T);
    }
    return QKV_OK;
}

qkv_status qkv_dataset_eval_batch(const qkv_dataset *d, int64_t k, int64_t n_batches, int64_t B, int64_t T,
                                  int32_t *ids, int32_t *targets) {
    qkv_status s = check_batch_args(d, B, T, ids, targets, d ? d->n_val : 0, "validation");
    if (s != QKV_OK) return s;
    if (n_batches < 1 || k < 0 || k >= n_batches)
        return qkv__set_error(QKV_ERR_ARG, "eval batch %lld of %lld", (long long)k, (long long)n_batches);
    int64_t W = n_batches * B, last = d->n_val - T - 1; /* window starts 0 .. last within the split */
    for (int64_t b = 0; b < B; b++) {
        int64_t w = k * B + b;
        int64_t off = W > 1 ? (int64_t)((double)w * (double)last / (double)(W - 1) + 0.5) : 0;
        if (off > last) off = last;
        window(d->ids + d->n_train + off, T, ids + b * T, targets + b * T);
    }
    return QKV_OK;
}

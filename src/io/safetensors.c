/* safetensors.c — the Hugging Face safetensors reader (mmap + full header validation) and the F32
 * writer (atomic, through qkv__write_file_atomic). The format is summarised in include/qkv/io.h.
 *
 * Not here: model-specific name mapping (which HF name is which qkv parameter: src/models/), sharded
 * checkpoints (model.safetensors.index.json), writing any dtype but F32, big-endian hosts.
 *
 * The one convention a reader needs: the file is untrusted. Every number taken from the header is
 * checked — with overflow-safe arithmetic — before anything is computed from it, and open() checks
 * the whole header before it returns, so every other function can trust a handle it is given. The
 * rules are those of the reference reader (safetensors/src/tensor.rs: header <= 100,000,000 bytes,
 * ranges sorted by offset must tile the data region from 0 to the end of the file with no gap or
 * overlap, end - begin = numel * dtype size), plus strict JSON (src/core/json.h).
 */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "core/core_int.h"
#include "core/json.h"
#include "qkv/io.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "safetensors.c reads and writes little-endian data in place; big-endian hosts need byte swaps"
#endif

#define MAX_HEADER 100000000ull /* the reference reader's limit (MAX_HEADER_SIZE) */
#define META_KEY "__metadata__"

/* ---- dtypes: one table, safetensors spelling and element size ---- */

static const struct {
    const char *name;
    size_t size;
} dtypes[] = {
    [QKV_DTYPE_F32] = {"F32", 4},         [QKV_DTYPE_F16] = {"F16", 2},
    [QKV_DTYPE_BF16] = {"BF16", 2},       [QKV_DTYPE_F64] = {"F64", 8},
    [QKV_DTYPE_I64] = {"I64", 8},         [QKV_DTYPE_I32] = {"I32", 4},
    [QKV_DTYPE_I16] = {"I16", 2},         [QKV_DTYPE_I8] = {"I8", 1},
    [QKV_DTYPE_U8] = {"U8", 1},           [QKV_DTYPE_BOOL] = {"BOOL", 1},
    [QKV_DTYPE_U64] = {"U64", 8},         [QKV_DTYPE_U32] = {"U32", 4},
    [QKV_DTYPE_U16] = {"U16", 2},         [QKV_DTYPE_F8_E5M2] = {"F8_E5M2", 1},
    [QKV_DTYPE_F8_E4M3] = {"F8_E4M3", 1},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

const char *qkv_dtype_name(qkv_dtype dt) { return (int)dt >= 0 && (int)dt < N_DTYPES ? dtypes[dt].name : "?"; }

size_t qkv_dtype_size(qkv_dtype dt) { return (int)dt >= 0 && (int)dt < N_DTYPES ? dtypes[dt].size : 0; }

static int dtype_parse(const char *s, size_t len, qkv_dtype *out) {
    for (int i = 0; i < N_DTYPES; i++)
        if (strlen(dtypes[i].name) == len && memcmp(dtypes[i].name, s, len) == 0) {
            *out = (qkv_dtype)i;
            return 1;
        }
    return 0;
}

/* ---- messages ---- */

/* A header string made fit for a one-line message: control characters become '?', long strings are
 * cut at 80 bytes with "...". Names come from the file, so they may hold anything JSON can escape. */
static const char *show(const char *s, size_t len, char buf[96]) {
    size_t n = 0;
    for (size_t i = 0; i < len && n < 80; i++) buf[n++] = (unsigned char)s[i] < 0x20 || s[i] == 0x7f ? '?' : s[i];
    if (n < len) {
        /* do not cut a UTF-8 sequence in half: drop continuation bytes at the cut */
        while (n > 0 && ((unsigned char)buf[n - 1] & 0xC0) == 0x80) n--;
        if (n > 0 && (unsigned char)buf[n - 1] >= 0xC0) n--;
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    buf[n] = '\0';
    return buf;
}

/* "[21, 2]" */
static const char *shape_str(const int64_t *shape, int ndim, char buf[192]) {
    size_t n = 0;
    buf[n++] = '[';
    for (int d = 0; d < ndim && n < 160; d++)
        n += (size_t)snprintf(buf + n, 192 - n, d ? ", %lld" : "%lld", (long long)shape[d]);
    buf[n++] = ']';
    buf[n] = '\0';
    return buf;
}

/* Sets a "<path>: <message>" error and returns s. */
static qkv_status file_error(qkv_status s, const char *path, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static qkv_status file_error(qkv_status s, const char *path, const char *fmt, ...) {
    char msg[448];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    return qkv__set_error(s, "%s: %s", path, msg);
}

/* ---- reader ---- */

struct qkv_safetensors {
    unsigned char *map; /* the whole file, PROT_READ, MAP_PRIVATE */
    size_t map_len;
    qkv__json *header;  /* the parsed header; owns every name and metadata string */
    qkv_st_tensor *t;   /* n tensors in data order */
    int n;
    const qkv_st_tensor **by_name; /* the same n tensors sorted by name (strcmp), for find */
    const qkv__json *meta;         /* "__metadata__" object, or NULL */
};

/* A tensor while the header is checked: its range, and its position in the header for a stable order. */
typedef struct {
    qkv_st_tensor t;
    uint64_t begin, end;
    size_t member;
} pending;

static int cmp_range(const void *a, const void *b) {
    const pending *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    if (x->end != y->end) return x->end < y->end ? -1 : 1;
    return x->member < y->member ? -1 : x->member > y->member;
}

static int cmp_name(const void *a, const void *b) {
    return strcmp((*(const qkv_st_tensor *const *)a)->name, (*(const qkv_st_tensor *const *)b)->name);
}

/* A JSON value that is an integer in [0, INT64_MAX] written as one (no fraction or exponent). */
static int is_count(const qkv__json *v) { return v && v->type == QKV_JSON_NUMBER && v->is_int && v->integer >= 0; }

static const char *type_of(const qkv__json *v) { return qkv__json_type_name(v->type); }

/* Checks one tensor entry (member m of the header object) against a data region of data_len bytes. */
static qkv_status check_tensor(const char *path, const qkv__json *m, uint64_t data_len, pending *p) {
    char nb[96], sb[192];
    const char *name = show(m->key, m->key_len, nb);
    if (m->type != QKV_JSON_OBJECT)
        return file_error(QKV_ERR_FORMAT, path, "tensor '%s' is a JSON %s, not an object", name, type_of(m));

    const qkv__json *dt = qkv__json_get(m, "dtype");
    if (!dt) return file_error(QKV_ERR_FORMAT, path, "tensor '%s' has no \"dtype\"", name);
    if (dt->type != QKV_JSON_STRING)
        return file_error(QKV_ERR_FORMAT, path, "tensor '%s': \"dtype\" is a %s, not a string", name, type_of(dt));
    if (!dtype_parse(dt->str, dt->len, &p->t.dtype)) {
        char db[96];
        return file_error(QKV_ERR_FORMAT, path, "tensor '%s': unknown dtype \"%s\"", name, show(dt->str, dt->len, db));
    }

    const qkv__json *sh = qkv__json_get(m, "shape");
    if (!sh) return file_error(QKV_ERR_FORMAT, path, "tensor '%s' has no \"shape\"", name);
    if (sh->type != QKV_JSON_ARRAY)
        return file_error(QKV_ERR_FORMAT, path, "tensor '%s': \"shape\" is a %s, not an array", name, type_of(sh));
    if (sh->len > QKV_ST_MAX_DIMS)
        return file_error(QKV_ERR_FORMAT, path, "tensor '%s' has %zu dimensions; at most %d are supported", name,
                          sh->len, QKV_ST_MAX_DIMS);
    p->t.ndim = (int)sh->len;
    int zero = 0;
    for (int d = 0; d < p->t.ndim; d++) {
        const qkv__json *v = &sh->child[d];
        if (!is_count(v))
            return file_error(QKV_ERR_FORMAT, path, "tensor '%s': shape[%d] is not a non-negative integer", name, d);
        p->t.shape[d] = v->integer;
        if (v->integer == 0) zero = 1;
    }
    /* numel * dtype size must fit in 63 bits (a later zero dimension makes any product 0) */
    size_t esize = dtypes[p->t.dtype].size;
    int64_t numel = 1;
    for (int d = 0; d < p->t.ndim && !zero; d++) {
        if (numel > INT64_MAX / (int64_t)esize / p->t.shape[d])
            return file_error(QKV_ERR_FORMAT, path, "tensor '%s': shape %s is too large", name,
                              shape_str(p->t.shape, p->t.ndim, sb));
        numel *= p->t.shape[d];
    }
    if (zero) numel = 0;
    uint64_t need = (uint64_t)numel * esize;

    const qkv__json *off = qkv__json_get(m, "data_offsets");
    if (!off) return file_error(QKV_ERR_FORMAT, path, "tensor '%s' has no \"data_offsets\"", name);
    if (off->type != QKV_JSON_ARRAY || off->len != 2 || !is_count(&off->child[0]) || !is_count(&off->child[1]))
        return file_error(QKV_ERR_FORMAT, path,
                          "tensor '%s': \"data_offsets\" is not an array of two non-negative integers", name);
    p->begin = (uint64_t)off->child[0].integer;
    p->end = (uint64_t)off->child[1].integer;
    if (p->begin > p->end)
        return file_error(QKV_ERR_FORMAT, path, "tensor '%s': data_offsets [%llu, %llu] begin after they end", name,
                          (unsigned long long)p->begin, (unsigned long long)p->end);
    if (p->end > data_len)
        return file_error(QKV_ERR_FORMAT, path,
                          "tensor '%s': data_offsets [%llu, %llu] run past the end of the data region (%llu bytes)",
                          name, (unsigned long long)p->begin, (unsigned long long)p->end,
                          (unsigned long long)data_len);
    if (p->end - p->begin != need)
        return file_error(QKV_ERR_FORMAT, path,
                          "tensor '%s': shape %s of %s needs %llu bytes but data_offsets [%llu, %llu] hold %llu", name,
                          shape_str(p->t.shape, p->t.ndim, sb), dtypes[p->t.dtype].name, (unsigned long long)need,
                          (unsigned long long)p->begin, (unsigned long long)p->end,
                          (unsigned long long)(p->end - p->begin));
    p->t.nbytes = (size_t)need;
    return QKV_OK;
}

static qkv_status check_metadata(const char *path, const qkv__json *m) {
    char kb[96];
    if (m->type == QKV_JSON_NULL) return QKV_OK; /* HF reads null as "no metadata" (an Option) */
    if (m->type != QKV_JSON_OBJECT)
        return file_error(QKV_ERR_FORMAT, path, "\"" META_KEY "\" is a JSON %s, not an object of strings", type_of(m));
    for (size_t i = 0; i < m->len; i++) {
        const qkv__json *v = &m->child[i];
        if (strlen(v->key) != v->key_len)
            return file_error(QKV_ERR_FORMAT, path, "\"" META_KEY "\" key '%s' contains a NUL character",
                              show(v->key, v->key_len, kb));
        if (v->type != QKV_JSON_STRING)
            return file_error(QKV_ERR_FORMAT, path, "\"" META_KEY "\" value of '%s' is a %s, not a string",
                              show(v->key, v->key_len, kb), type_of(v));
        if (strlen(v->str) != v->len)
            return file_error(QKV_ERR_FORMAT, path, "\"" META_KEY "\" value of '%s' contains a NUL character",
                              show(v->key, v->key_len, kb));
    }
    return QKV_OK;
}

/* Parses and checks the header of a mapped file; fills st (tensors, by_name, meta). */
static qkv_status read_header(qkv_safetensors *st, const char *path) {
    const unsigned char *b = st->map;
    uint64_t hlen = 0;
    for (int i = 7; i >= 0; i--) hlen = hlen << 8 | b[i];
    uint64_t room = (uint64_t)st->map_len - 8;
    if (hlen == 0) return file_error(QKV_ERR_FORMAT, path, "header length is 0");
    if (hlen > MAX_HEADER)
        return file_error(QKV_ERR_FORMAT, path, "header length %llu is over the limit of %llu bytes",
                          (unsigned long long)hlen, MAX_HEADER);
    if (hlen > room)
        return file_error(QKV_ERR_FORMAT, path,
                          "header length %llu runs past the end of the file (%zu bytes, %llu after the length)",
                          (unsigned long long)hlen, st->map_len, (unsigned long long)room);
    uint64_t data_len = room - hlen;
    const unsigned char *data = b + 8 + hlen;

    char what[1100];
    snprintf(what, sizeof what, "%s: header", path);
    st->header = qkv__json_parse((const char *)b + 8, (size_t)hlen, what);
    if (!st->header) return QKV_ERR_FORMAT; /* the parser set "<path>: header: invalid JSON at byte ..." */
    const qkv__json *h = st->header;
    if (h->type != QKV_JSON_OBJECT)
        return file_error(QKV_ERR_FORMAT, path, "header is a JSON %s, not an object", type_of(h));

    size_t n = h->len;
    const qkv__json *meta = qkv__json_get(h, META_KEY);
    if (meta) n--;
    if (n > (size_t)INT32_MAX) return file_error(QKV_ERR_FORMAT, path, "too many tensors (%zu)", n);
    pending *p = calloc(n ? n : 1, sizeof *p);
    st->t = calloc(n ? n : 1, sizeof *st->t);
    st->by_name = calloc(n ? n : 1, sizeof *st->by_name);
    if (!p || !st->t || !st->by_name) {
        free(p);
        return file_error(QKV_ERR_NOMEM, path, "out of memory for %zu tensors", n);
    }

    qkv_status s = QKV_OK;
    size_t k = 0;
    char nb[96], nb2[96];
    for (size_t i = 0; i < h->len && s == QKV_OK; i++) {
        const qkv__json *m = &h->child[i];
        if (m == meta) {
            s = check_metadata(path, m);
            continue;
        }
        if (strlen(m->key) != m->key_len) {
            s = file_error(QKV_ERR_FORMAT, path, "tensor name '%s' contains a NUL character",
                           show(m->key, m->key_len, nb));
            break;
        }
        p[k].t.name = m->key;
        p[k].member = i;
        s = check_tensor(path, m, data_len, &p[k]);
        k++;
    }

    /* Ordered by offset, the ranges must tile [0, data_len): each begins where the previous ended. */
    if (s == QKV_OK) {
        qsort(p, n, sizeof *p, cmp_range);
        uint64_t at = 0;
        for (size_t i = 0; i < n && s == QKV_OK; i++) {
            if (p[i].begin > at) {
                if (i == 0)
                    s = file_error(QKV_ERR_FORMAT, path,
                                   "data region has %llu unused bytes before the first tensor '%s' (offset %llu)",
                                   (unsigned long long)(p[i].begin - at), show(p[i].t.name, strlen(p[i].t.name), nb),
                                   (unsigned long long)p[i].begin);
                else
                    s = file_error(QKV_ERR_FORMAT, path,
                                   "gap of %llu bytes in the data region between tensors '%s' (ends at %llu) and '%s' "
                                   "(begins at %llu)",
                                   (unsigned long long)(p[i].begin - at),
                                   show(p[i - 1].t.name, strlen(p[i - 1].t.name), nb), (unsigned long long)at,
                                   show(p[i].t.name, strlen(p[i].t.name), nb2), (unsigned long long)p[i].begin);
            } else if (p[i].begin < at) {
                s = file_error(QKV_ERR_FORMAT, path,
                               "tensors '%s' [%llu, %llu] and '%s' [%llu, %llu] overlap in the data region",
                               show(p[i - 1].t.name, strlen(p[i - 1].t.name), nb), (unsigned long long)p[i - 1].begin,
                               (unsigned long long)p[i - 1].end, show(p[i].t.name, strlen(p[i].t.name), nb2),
                               (unsigned long long)p[i].begin, (unsigned long long)p[i].end);
            }
            at = p[i].end;
        }
        if (s == QKV_OK && at != data_len)
            s = file_error(QKV_ERR_FORMAT, path,
                           "data region has %llu bytes but its tensors cover only %llu (trailing bytes)",
                           (unsigned long long)data_len, (unsigned long long)at);
    }

    if (s == QKV_OK) {
        for (size_t i = 0; i < n; i++) {
            st->t[i] = p[i].t;
            st->t[i].data = data + p[i].begin;
            st->by_name[i] = &st->t[i];
        }
        qsort(st->by_name, n, sizeof *st->by_name, cmp_name);
        st->n = (int)n;
        st->meta = meta && meta->type == QKV_JSON_OBJECT ? meta : NULL;
    }
    free(p);
    return s;
}

qkv_safetensors *qkv_safetensors_open(const char *path) {
    if (!path) {
        qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_open: path is NULL");
        return NULL;
    }
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        file_error(QKV_ERR_IO, path, "cannot open: %s", strerror(errno));
        return NULL;
    }
    struct stat sb;
    if (fstat(fd, &sb) != 0) {
        file_error(QKV_ERR_IO, path, "cannot stat: %s", strerror(errno));
        close(fd);
        return NULL;
    }
    if (!S_ISREG(sb.st_mode)) {
        file_error(QKV_ERR_IO, path, "not a regular file");
        close(fd);
        return NULL;
    }
    if (sb.st_size < 8) {
        file_error(QKV_ERR_FORMAT, path, "file is %lld bytes, too short for the 8-byte header length",
                   (long long)sb.st_size);
        close(fd);
        return NULL;
    }
    if ((uint64_t)sb.st_size > (uint64_t)SIZE_MAX) {
        file_error(QKV_ERR_IO, path, "file of %lld bytes is too large to map", (long long)sb.st_size);
        close(fd);
        return NULL;
    }
    qkv_safetensors *st = calloc(1, sizeof *st);
    if (!st) {
        file_error(QKV_ERR_NOMEM, path, "out of memory");
        close(fd);
        return NULL;
    }
    st->map_len = (size_t)sb.st_size;
    void *m = mmap(NULL, st->map_len, PROT_READ, MAP_PRIVATE, fd, 0);
    int err = errno;
    close(fd); /* the mapping keeps the file open */
    if (m == MAP_FAILED) {
        file_error(QKV_ERR_IO, path, "cannot map %zu bytes: %s", st->map_len, strerror(err));
        free(st);
        return NULL;
    }
    st->map = m;
    if (read_header(st, path) != QKV_OK) {
        qkv_safetensors_close(st);
        return NULL;
    }
    return st;
}

void qkv_safetensors_close(qkv_safetensors *st) {
    if (!st) return;
    if (st->map) munmap(st->map, st->map_len);
    qkv__json_free(st->header);
    free(st->t);
    free(st->by_name);
    free(st);
}

int qkv_safetensors_count(const qkv_safetensors *st) { return st ? st->n : 0; }

const qkv_st_tensor *qkv_safetensors_get(const qkv_safetensors *st, int i) {
    return st && i >= 0 && i < st->n ? &st->t[i] : NULL;
}

const qkv_st_tensor *qkv_safetensors_find(const qkv_safetensors *st, const char *name) {
    if (!st || !name || st->n == 0) return NULL;
    qkv_st_tensor key = {.name = name};
    const qkv_st_tensor *kp = &key;
    const qkv_st_tensor **hit = bsearch(&kp, st->by_name, (size_t)st->n, sizeof *st->by_name, cmp_name);
    return hit ? *hit : NULL;
}

const char *qkv_safetensors_metadata(const qkv_safetensors *st, const char *key) {
    if (!st || !key) return NULL;
    const qkv__json *v = qkv__json_get(st->meta, key);
    return v ? v->str : NULL;
}

int qkv_safetensors_metadata_count(const qkv_safetensors *st) {
    return st && st->meta ? (int)st->meta->len : 0;
}

const char *qkv_safetensors_metadata_key(const qkv_safetensors *st, int i) {
    return st && i >= 0 ? qkv__json_key_at(st->meta, (size_t)i) : NULL;
}

/* ---- conversion to float32 ---- */

static float f32_from_bits(uint32_t u) {
    float f;
    memcpy(&f, &u, 4);
    return f;
}

/* IEEE half -> single, exact: every half value (subnormals, ±0, ±inf, NaN payloads) is a float. */
static float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16;
    uint32_t exp = (h >> 10) & 0x1f, man = h & 0x3ff;
    if (exp == 0x1f) return f32_from_bits(sign | 0x7f800000u | man << 13); /* inf, NaN */
    if (exp != 0) return f32_from_bits(sign | (exp + (127 - 15)) << 23 | man << 13);
    if (man == 0) return f32_from_bits(sign); /* ±0 */
    /* subnormal man * 2^-24: shift the leading 1 up to the implicit bit, lowering the exponent */
    uint32_t e = 127 - 15 + 1;
    while (!(man & 0x400)) {
        man <<= 1;
        e--;
    }
    return f32_from_bits(sign | e << 23 | (man & 0x3ff) << 13);
}

qkv_status qkv_safetensors_read_f32(const qkv_st_tensor *t, float *dst, int64_t numel) {
    if (!t) return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_read_f32: tensor is NULL");
    char nb[96];
    const char *name = t->name ? show(t->name, strlen(t->name), nb) : "?";
    if (t->ndim < 0 || t->ndim > QKV_ST_MAX_DIMS || qkv_dtype_size(t->dtype) == 0)
        return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_read_f32: tensor '%s' is not a valid tensor", name);
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++) {
        if (t->shape[d] < 0 || (t->shape[d] && n > INT64_MAX / t->shape[d]))
            return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_read_f32: tensor '%s' has a bad shape", name);
        n *= t->shape[d];
    }
    if (numel != n)
        return qkv__set_error(QKV_ERR_SHAPE,
                              "qkv_safetensors_read_f32: tensor '%s' has %lld elements, caller expects %lld",
                              name, (long long)n, (long long)numel);
    size_t es = qkv_dtype_size(t->dtype);
    if ((uint64_t)n > SIZE_MAX / es || t->nbytes != (size_t)n * es)
        return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_read_f32: tensor '%s': nbytes %zu does not match its shape",
                              name, t->nbytes);
    if (n > 0 && (!dst || !t->data))
        return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_read_f32: tensor '%s': NULL data or destination", name);
    const unsigned char *src = t->data;
    size_t count = (size_t)n;
    switch (t->dtype) {
    case QKV_DTYPE_F32:
        if (count) memcpy(dst, src, count * 4);
        break;
    case QKV_DTYPE_F16:
        for (size_t i = 0; i < count; i++) dst[i] = f16_to_f32((uint16_t)(src[2 * i] | src[2 * i + 1] << 8));
        break;
    case QKV_DTYPE_BF16: /* bfloat16 is the top half of a float32 */
        for (size_t i = 0; i < count; i++) dst[i] = f32_from_bits((uint32_t)(src[2 * i] | src[2 * i + 1] << 8) << 16);
        break;
    case QKV_DTYPE_F64:
        for (size_t i = 0; i < count; i++) {
            double v;
            memcpy(&v, src + 8 * i, 8);
            dst[i] = (float)v; /* round to nearest even, like torch's .float() */
        }
        break;
    default:
        return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_read_f32: tensor '%s' is %s; only F32, F16, BF16 and F64 "
                              "convert to float32", name, qkv_dtype_name(t->dtype));
    }
    return QKV_OK;
}

/* ---- writer ---- */

static int cmp_entry_name(const void *a, const void *b) {
    return strcmp((*(const qkv_st_entry *const *)a)->name, (*(const qkv_st_entry *const *)b)->name);
}

static int valid_utf8(const char *s) { return qkv__utf8_check(s, strlen(s)) == strlen(s); }

/* Checks the caller's tensors and metadata; fills order (entries sorted by name) and bytes[] (in the
 * caller's order). */
static qkv_status check_entries(const char *path, const qkv_st_entry *e, int n, const char *const *kv, int n_meta,
                                const qkv_st_entry **order, uint64_t *bytes) {
    char nb[96], nb2[96];
    for (int i = 0; i < n; i++) {
        const qkv_st_entry *x = &e[i];
        if (!x->name || !x->name[0])
            return file_error(QKV_ERR_ARG, path, "tensor %d has %s name", i, x->name ? "an empty" : "a NULL");
        const char *name = show(x->name, strlen(x->name), nb);
        if (!valid_utf8(x->name))
            return file_error(QKV_ERR_ARG, path, "tensor %d name '%s' is not valid UTF-8", i, name);
        if (strcmp(x->name, META_KEY) == 0)
            return file_error(QKV_ERR_ARG, path, "a tensor cannot be called \"" META_KEY "\"");
        if (x->ndim < 0 || x->ndim > QKV_ST_MAX_DIMS)
            return file_error(QKV_ERR_ARG, path, "tensor '%s': ndim %d is outside 0..%d", name, x->ndim,
                              QKV_ST_MAX_DIMS);
        if (x->ndim > 0 && !x->shape) return file_error(QKV_ERR_ARG, path, "tensor '%s': shape is NULL", name);
        uint64_t numel = 1;
        int zero = 0, overflow = 0;
        for (int d = 0; d < x->ndim; d++) {
            if (x->shape[d] < 0)
                return file_error(QKV_ERR_ARG, path, "tensor '%s': shape[%d] = %lld is negative", name, d,
                                  (long long)x->shape[d]);
            if (x->shape[d] == 0) zero = 1;
            else if (numel > (uint64_t)INT64_MAX / 4 / (uint64_t)x->shape[d]) overflow = 1;
            else numel *= (uint64_t)x->shape[d];
        }
        if (zero) numel = 0;
        else if (overflow) return file_error(QKV_ERR_ARG, path, "tensor '%s': shape is too large", name);
        if (numel > 0 && !x->data) return file_error(QKV_ERR_ARG, path, "tensor '%s': data is NULL", name);
        bytes[i] = numel * 4;
        order[i] = x;
    }
    if (n > 1) qsort(order, (size_t)n, sizeof *order, cmp_entry_name);
    for (int i = 1; i < n; i++)
        if (strcmp(order[i - 1]->name, order[i]->name) == 0)
            return file_error(QKV_ERR_ARG, path, "two tensors are called '%s'",
                              show(order[i]->name, strlen(order[i]->name), nb));
    for (int i = 0; i < n_meta; i++) {
        const char *k = kv[2 * i], *v = kv[2 * i + 1];
        if (!k || !v) return file_error(QKV_ERR_ARG, path, "metadata pair %d has a NULL %s", i, k ? "value" : "key");
        if (!valid_utf8(k) || !valid_utf8(v))
            return file_error(QKV_ERR_ARG, path, "metadata pair %d ('%s') is not valid UTF-8", i,
                              show(k, strlen(k), nb));
        for (int j = 0; j < i; j++)
            if (strcmp(kv[2 * j], k) == 0)
                return file_error(QKV_ERR_ARG, path, "metadata key '%s' is given twice", show(k, strlen(k), nb2));
    }
    return QKV_OK;
}

/* The header JSON, padded with spaces to a multiple of 8 bytes, in a malloc'd buffer. */
static qkv_status build_header(const char *path, const qkv_st_entry *const *order, const uint64_t *bytes_sorted, int n,
                               const char *const *kv, int n_meta, char **out, size_t *out_len) {
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    if (!f) return file_error(QKV_ERR_NOMEM, path, "out of memory building the header");
    putc('{', f);
    if (n_meta > 0) {
        fputs("\"" META_KEY "\":{", f);
        for (int i = 0; i < n_meta; i++) {
            if (i) putc(',', f);
            qkv__json_write_string(f, kv[2 * i]);
            putc(':', f);
            qkv__json_write_string(f, kv[2 * i + 1]);
        }
        putc('}', f);
    }
    uint64_t at = 0;
    for (int i = 0; i < n; i++) {
        if (i || n_meta > 0) putc(',', f);
        qkv__json_write_string(f, order[i]->name);
        fputs(":{\"dtype\":\"F32\",\"shape\":[", f);
        for (int d = 0; d < order[i]->ndim; d++) fprintf(f, d ? ",%lld" : "%lld", (long long)order[i]->shape[d]);
        fprintf(f, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
                (unsigned long long)(at + bytes_sorted[i]));
        at += bytes_sorted[i];
    }
    putc('}', f);
    int bad = ferror(f);
    if (fclose(f) != 0 || bad) {
        free(buf);
        return file_error(QKV_ERR_NOMEM, path, "out of memory building the header");
    }
    /* pad with spaces so the data region starts 8-byte aligned (8 + len is a multiple of 8) */
    size_t pad = (8 - len % 8) % 8;
    char *grown = realloc(buf, len + pad + 1);
    if (!grown) {
        free(buf);
        return file_error(QKV_ERR_NOMEM, path, "out of memory building the header");
    }
    buf = grown;
    memset(buf + len, ' ', pad);
    len += pad;
    buf[len] = '\0';
    *out = buf;
    *out_len = len;
    return QKV_OK;
}

/* What the writer's callback needs: the header and the tensors in file order. */
typedef struct {
    const char *header;
    size_t hlen;
    const qkv_st_entry *const *order;
    const uint64_t *bytes;
    int n;
} st_body;

static int write_body(FILE *f, const void *arg) {
    const st_body *b = arg;
    unsigned char lenb[8];
    for (int i = 0; i < 8; i++) lenb[i] = (unsigned char)((uint64_t)b->hlen >> (8 * i));
    if (fwrite(lenb, 1, 8, f) != 8 || fwrite(b->header, 1, b->hlen, f) != b->hlen) return -1;
    for (int i = 0; i < b->n; i++)
        if (b->bytes[i] && fwrite(b->order[i]->data, 1, (size_t)b->bytes[i], f) != (size_t)b->bytes[i]) return -1;
    return 0;
}

qkv_status qkv_safetensors_write(const char *path, const qkv_st_entry *entries, int n,
                                 const char *const *metadata_kv, int n_meta) {
    if (!path || !path[0])
        return qkv__set_error(QKV_ERR_ARG, "qkv_safetensors_write: path is %s", path ? "empty" : "NULL");
    if (n < 0 || (n > 0 && !entries))
        return file_error(QKV_ERR_ARG, path, "bad tensor list (n = %d, entries %s)", n, entries ? "set" : "NULL");
    if (n_meta < 0 || (n_meta > 0 && !metadata_kv))
        return file_error(QKV_ERR_ARG, path, "bad metadata list (n_meta = %d, metadata_kv %s)", n_meta,
                          metadata_kv ? "set" : "NULL");

    const qkv_st_entry **order = malloc(sizeof *order * (size_t)(n ? n : 1));
    uint64_t *bytes = malloc(sizeof *bytes * (size_t)(n ? n : 1));
    uint64_t *bytes_sorted = malloc(sizeof *bytes_sorted * (size_t)(n ? n : 1));
    char *header = NULL;
    size_t hlen = 0;
    qkv_status s = QKV_OK;
    if (!order || !bytes || !bytes_sorted) {
        s = file_error(QKV_ERR_NOMEM, path, "out of memory");
        goto done;
    }
    s = check_entries(path, entries, n, metadata_kv, n_meta, order, bytes);
    if (s != QKV_OK) goto done;
    for (int i = 0; i < n; i++) bytes_sorted[i] = bytes[order[i] - entries];
    s = build_header(path, order, bytes_sorted, n, metadata_kv, n_meta, &header, &hlen);
    if (s != QKV_OK) goto done;

    st_body body = {header, hlen, order, bytes_sorted, n};
    s = qkv__write_file_atomic(path, write_body, &body);

done:
    free(header);
    free(order);
    free(bytes);
    free(bytes_sorted);
    return s;
}

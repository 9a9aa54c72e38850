/* bpe.c — GPT-2 byte-level BPE: loading vocab.json + merges.txt, encoding, saving; and the parts of the
 * tokenizer handle every kind shares (decode, token lookup, file reading and atomic writing).
 *
 * Encoding, as OpenAI's encoder.py and Hugging Face do it:
 *   1. split out "<|endoftext|>" when special tokens are allowed;
 *   2. pre-tokenise with GPT-2's regex (PCRE2, Unicode classes, JIT) into "words";
 *   3. each word's bytes start as single-byte tokens, and merges are applied by rank: take the
 *      lowest-ranked adjacent pair present, merge every non-overlapping occurrence of it left to right,
 *      repeat until no pair is a merge (a heap keyed by (rank, position) instead of rescanning);
 *   4. words repeat a lot in text, so word -> ids is cached (bounded; cleared when full).
 * Vocabulary strings are stored as the bytes they stand for; GPT-2's bytes_to_unicode alphabet (space
 * -> 'Ġ' U+0120, newline -> 'Ċ' U+010A, printable Latin-1 -> itself) exists only in the files.
 * Training a byte-level BPE from a text is the last section (qkv_tokenizer_train_bpe).
 * Not here: the byte- and character-level kinds (chartok.c).
 */
#include "bpe.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PCRE2_CODE_UNIT_WIDTH 8
#include <pcre2.h>

#include "core/core_int.h"
#include "core/json.h"

#define EOS_TEXT "<|endoftext|>"
#define MAX_SHOWN 48 /* bytes of a token quoted in an error message */

/* GPT-2's pattern. \s is spelled out as Unicode White_Space (what tiktoken's Rust regex, Python's
 * `regex` and Oniguruma match): PCRE2's own \s also matches U+180E, which stopped being a space in
 * Unicode 6.3, and \p{White_Space} needs PCRE2 >= 10.40. */
#define WS "\\t-\\r \\x{85}\\x{A0}\\x{1680}\\x{2000}-\\x{200A}\\x{2028}\\x{2029}\\x{202F}\\x{205F}\\x{3000}"
static const char gpt2_pattern[] = "'s|'t|'re|'ve|'m|'ll|'d| ?\\p{L}+| ?\\p{N}+| ?[^" WS "\\p{L}\\p{N}]+|[" WS
                                   "]+(?![^" WS "])|[" WS "]+";

#define CACHE_SLOTS (1u << 16)    /* at most half used */
#define CACHE_ARENA (1u << 20)    /* bytes of cached words and ids */
#define CACHE_MAX_WORD 255        /* longer words are not cached */

/* ---- GPT-2's bytes_to_unicode: 188 printable bytes map to themselves, the other 68 to U+0100.. ---- */

static void byte_unicode(uint32_t b2u[256], int16_t u2b[324]) {
    int n = 0;
    for (int c = 0; c < 324; c++) u2b[c] = -1;
    for (int b = 0; b < 256; b++) {
        int printable = (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF);
        b2u[b] = printable ? (uint32_t)b : (uint32_t)(256 + n++);
        u2b[b2u[b]] = (int16_t)b;
    }
}

/* Byte-level string (as in the files) -> bytes. Returns the byte count, or -1 and the offending code
 * point in *bad when a character is outside the alphabet. out needs len bytes. */
static long from_byte_level(const int16_t u2b[324], const char *s, size_t len, char *out, uint32_t *bad) {
    size_t i = 0;
    long o = 0;
    while (i < len) {
        uint32_t cp;
        int k = qkv__utf8_decode((const unsigned char *)s + i, len - i, &cp);
        if (!k || cp >= 324 || u2b[cp] < 0) {
            *bad = k ? cp : (unsigned char)s[i];
            return -1;
        }
        out[o++] = (char)u2b[cp];
        i += (size_t)k;
    }
    return o;
}

/* Bytes -> byte-level string; out needs 2 * len bytes (every code point is below U+0800). */
static size_t to_byte_level(const uint32_t b2u[256], const char *s, size_t len, char *out) {
    size_t o = 0;
    for (size_t i = 0; i < len; i++) o += (size_t)qkv__utf8_encode(b2u[(unsigned char)s[i]], out + o);
    return o;
}

/* ---- the shared handle ---- */

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t k = 0; k < n; k++) h = (h ^ (unsigned char)s[k]) * 1099511628211ull;
    return h ^ (h >> 32);
}

qkv_tokenizer *qkv__tok_new(qkv_tokenizer_kind kind, int64_t n_vocab, size_t total_bytes) {
    qkv_tokenizer *t = calloc(1, sizeof *t);
    if (t) {
        t->kind = kind;
        t->n_vocab = n_vocab;
        t->eos = -1;
        memset(t->byte_id, 0xff, sizeof t->byte_id);
        t->tok_bytes = malloc(total_bytes + (size_t)n_vocab + 1);
        t->tok_off = calloc((size_t)n_vocab + 1, sizeof *t->tok_off); /* [n_vocab]: append cursor of _set */
        t->tok_len = calloc((size_t)n_vocab + 1, sizeof *t->tok_len);
    }
    if (!t || !t->tok_bytes || !t->tok_off || !t->tok_len) {
        qkv_tokenizer_free(t);
        qkv__set_error(QKV_ERR_NOMEM, "tokenizer: out of memory for %lld tokens", (long long)n_vocab);
        return NULL;
    }
    return t;
}

void qkv__tok_set(qkv_tokenizer *t, int32_t id, const char *bytes, size_t len) {
    uint32_t at = t->tok_off[t->n_vocab];
    memcpy(t->tok_bytes + at, bytes, len);
    t->tok_bytes[at + len] = '\0';
    t->tok_off[id] = at;
    t->tok_len[id] = (uint32_t)len;
    t->tok_off[t->n_vocab] = at + (uint32_t)len + 1;
}

qkv_status qkv__tok_index(qkv_tokenizer *t, int32_t *dup_a, int32_t *dup_b) {
    uint32_t cap = 16;
    while (cap < 2 * (uint64_t)t->n_vocab) cap *= 2;
    t->tok_hash = malloc(cap * sizeof *t->tok_hash);
    if (!t->tok_hash) return qkv__set_error(QKV_ERR_NOMEM, "tokenizer: out of memory");
    memset(t->tok_hash, 0xff, cap * sizeof *t->tok_hash);
    t->tok_hash_mask = cap - 1;
    for (int32_t id = 0; id < t->n_vocab; id++) {
        const char *s = t->tok_bytes + t->tok_off[id];
        uint32_t h = (uint32_t)hash_bytes(s, t->tok_len[id]) & t->tok_hash_mask;
        while (t->tok_hash[h] >= 0) {
            int32_t o = t->tok_hash[h];
            if (t->tok_len[o] == t->tok_len[id] && memcmp(t->tok_bytes + t->tok_off[o], s, t->tok_len[id]) == 0) {
                *dup_a = o;
                *dup_b = id;
                return QKV_ERR_FORMAT;
            }
            h = (h + 1) & t->tok_hash_mask;
        }
        t->tok_hash[h] = id;
    }
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        t->byte_id[b] = qkv_tokenizer_token_id(t, &c, 1);
    }
    return QKV_OK;
}

int32_t qkv_tokenizer_token_id(const qkv_tokenizer *t, const char *bytes, size_t len) {
    if (!t || !t->tok_hash || (!bytes && len)) return -1;
    uint32_t h = (uint32_t)hash_bytes(bytes, len) & t->tok_hash_mask;
    for (int32_t id; (id = t->tok_hash[h]) >= 0; h = (h + 1) & t->tok_hash_mask)
        if (t->tok_len[id] == len && memcmp(t->tok_bytes + t->tok_off[id], bytes, len) == 0) return id;
    return -1;
}

void qkv_tokenizer_free(qkv_tokenizer *t) {
    if (!t) return;
    free(t->tok_bytes);
    free(t->tok_off);
    free(t->tok_len);
    free(t->tok_hash);
    free(t->merges);
    free(t->merge_tab);
    pcre2_match_data_free(t->md);
    pcre2_code_free(t->re);
    free(t->cache);
    free(t->cache_arena);
    free(t->sym);
    free(t->heap);
    free(t);
}

qkv_tokenizer_kind qkv_tokenizer_kind_of(const qkv_tokenizer *t) { return t ? t->kind : QKV_TOKENIZER_BPE; }
int64_t qkv_tokenizer_vocab_size(const qkv_tokenizer *t) { return t ? t->n_vocab : 0; }
int32_t qkv_tokenizer_eos(const qkv_tokenizer *t) { return t ? t->eos : -1; }

const char *qkv_tokenizer_token(const qkv_tokenizer *t, int32_t id, size_t *len) {
    if (!t || id < 0 || id >= t->n_vocab) return NULL;
    if (len) *len = t->tok_len[id];
    return t->tok_bytes + t->tok_off[id];
}

char *qkv_tokenizer_decode(const qkv_tokenizer *t, const int32_t *ids, int64_t n, size_t *out_len) {
    if (!t || n < 0 || (!ids && n > 0)) {
        qkv__set_error(QKV_ERR_ARG, "decode: %s", !t ? "NULL tokenizer" : n < 0 ? "negative count" : "NULL ids");
        return NULL;
    }
    size_t total = 0;
    for (int64_t k = 0; k < n; k++) {
        if (ids[k] < 0 || ids[k] >= t->n_vocab) {
            qkv__set_error(QKV_ERR_RANGE, "decode: id %d at position %lld is outside the vocabulary (0..%lld)",
                           (int)ids[k], (long long)k, (long long)t->n_vocab - 1);
            return NULL;
        }
        total += t->tok_len[ids[k]];
    }
    char *out = malloc(total + 1);
    if (!out) {
        qkv__set_error(QKV_ERR_NOMEM, "decode: out of memory for %zu bytes", total);
        return NULL;
    }
    size_t o = 0;
    for (int64_t k = 0; k < n; k++) {
        memcpy(out + o, t->tok_bytes + t->tok_off[ids[k]], t->tok_len[ids[k]]);
        o += t->tok_len[ids[k]];
    }
    out[o] = '\0';
    if (out_len) *out_len = o;
    return out;
}

/* ---- files ---- */

char *qkv__tok_read_file(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        qkv__set_error(QKV_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        return NULL;
    }
    size_t cap = 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n - 1, f);
        if (n < cap - 1) break;
        char *b = realloc(buf, cap * 2);
        if (!b) {
            free(buf);
            buf = NULL;
            break;
        }
        buf = b;
        cap *= 2;
    }
    int err = ferror(f) ? errno : 0;
    fclose(f);
    if (!buf) {
        qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory reading the file", path);
        return NULL;
    }
    if (err) {
        free(buf);
        qkv__set_error(QKV_ERR_IO, "%s: cannot read: %s", path, strerror(err));
        return NULL;
    }
    buf[n] = '\0';
    *len = n;
    return buf;
}

typedef struct {
    int (*write)(FILE *, const qkv_tokenizer *);
    const qkv_tokenizer *t;
} tok_writer;

static int tok_write_cb(FILE *f, const void *arg) {
    const tok_writer *w = arg;
    return w->write(f, w->t);
}

qkv_status qkv__tok_write_file(const char *path, const qkv_tokenizer *t,
                               int (*write)(FILE *, const qkv_tokenizer *)) {
    const tok_writer w = {write, t};
    return qkv__write_file_atomic(path, tok_write_cb, &w);
}

/* "line L, column C" of byte pos, for messages about a parsed file. */
static const char *where(const char *text, size_t len, size_t pos, char buf[64]) {
    size_t line, col;
    qkv__json_line_col(text, len, pos, &line, &col);
    snprintf(buf, 64, "line %zu, column %zu", line, col);
    return buf;
}

static int shown(size_t len) { return len > MAX_SHOWN ? MAX_SHOWN : (int)len; }

/* ---- loading ---- */

/* vocab.json -> a handle with every token's bytes and the bytes -> id index. */
static qkv_tokenizer *load_vocab(const char *path, const int16_t u2b[324]) {
    size_t len;
    char *text = qkv__tok_read_file(path, &len);
    if (!text) return NULL;
    qkv__json *root = qkv__json_parse(text, len, path);
    qkv_tokenizer *t = NULL;
    int32_t *seen = NULL;
    char *buf = NULL, pos[64];
    if (!root) goto fail;
    if (root->type != QKV_JSON_OBJECT || root->len == 0 || root->len > INT32_MAX) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: expected a non-empty JSON object {\"token\": id, ...}, found %s%s", path,
                       root->type == QKV_JSON_OBJECT ? "an empty " : "", qkv__json_type_name(root->type));
        goto fail;
    }
    int64_t n = (int64_t)root->len;
    size_t total = 0, longest = 0;
    for (size_t i = 0; i < root->len; i++) {
        total += root->child[i].key_len;
        if (root->child[i].key_len > longest) longest = root->child[i].key_len;
    }
    t = qkv__tok_new(QKV_TOKENIZER_BPE, n, total);
    seen = calloc((size_t)n, sizeof *seen);
    buf = malloc(longest + 1);
    if (!t || !seen || !buf) {
        if (t) qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < root->len; i++) {
        const qkv__json *v = &root->child[i];
        int kl = shown(v->key_len);
        if (v->type != QKV_JSON_NUMBER || !v->is_int) {
            qkv__set_error(QKV_ERR_FORMAT, "%s: %s: token \"%.*s\": the id must be an integer, found %s", path,
                           where(text, len, v->pos, pos), kl, v->key, qkv__json_type_name(v->type));
            goto fail;
        }
        if (v->integer < 0 || v->integer >= n) {
            qkv__set_error(QKV_ERR_FORMAT,
                           "%s: %s: token \"%.*s\" has id %lld, outside 0..%lld (ids must be dense: 0..size-1)", path,
                           where(text, len, v->pos, pos), kl, v->key, (long long)v->integer, (long long)n - 1);
            goto fail;
        }
        int32_t id = (int32_t)v->integer;
        if (seen[id]) {
            const qkv__json *o = &root->child[seen[id] - 1];
            qkv__set_error(QKV_ERR_FORMAT, "%s: %s: id %d is used twice: by \"%.*s\" and by \"%.*s\"", path,
                           where(text, len, v->pos, pos), (int)id, shown(o->key_len), o->key, kl, v->key);
            goto fail;
        }
        seen[id] = (int32_t)i + 1;
        uint32_t bad;
        long bl = from_byte_level(u2b, v->key, v->key_len, buf, &bad);
        if (bl < 0) {
            qkv__set_error(QKV_ERR_FORMAT,
                           "%s: %s: token \"%.*s\": character U+%04X is not in GPT-2's byte-to-unicode alphabet",
                           path, where(text, len, v->pos, pos), kl, v->key, (unsigned)bad);
            goto fail;
        }
        qkv__tok_set(t, id, buf, (size_t)bl);
    }
    int32_t a, b;
    qkv_status st = qkv__tok_index(t, &a, &b);
    if (st == QKV_ERR_FORMAT) /* cannot happen with a bijective alphabet, but a bad index must not pass */
        qkv__set_error(st, "%s: ids %d and %d are the same token", path, (int)a, (int)b);
    if (st != QKV_OK) goto fail;
    free(seen);
    free(buf);
    qkv__json_free(root);
    free(text);
    return t;
fail:
    qkv_tokenizer_free(t);
    free(seen);
    free(buf);
    qkv__json_free(root);
    free(text);
    return NULL;
}

static inline uint32_t merge_hash(uint64_t key, uint32_t mask) {
    return (uint32_t)((key * 0x9E3779B97F4A7C15ull) >> 32) & mask;
}

static inline const qkv__merge_slot *merge_find(const qkv_tokenizer *t, int32_t a, int32_t b) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    for (uint32_t h = merge_hash(key, t->merge_mask);; h = (h + 1) & t->merge_mask) {
        const qkv__merge_slot *s = &t->merge_tab[h];
        if (s->key == key) return s;
        if (s->key == UINT64_MAX) return NULL;
    }
}

/* Looks up a byte-level token from merges.txt. */
static int32_t merge_part(const qkv_tokenizer *t, const int16_t u2b[324], const char *s, size_t len, char *buf) {
    uint32_t bad;
    long bl = from_byte_level(u2b, s, len, buf, &bad);
    return bl < 0 ? -1 : qkv_tokenizer_token_id(t, buf, (size_t)bl);
}

/* Room for up to max merges (merges list + hash table at most half full). */
static int alloc_merges(qkv_tokenizer *t, size_t max) {
    uint32_t cap = 16;
    while (cap < 2 * (uint64_t)max) cap *= 2;
    t->merges = malloc((2 * max + 2) * sizeof *t->merges);
    t->merge_tab = malloc(cap * sizeof *t->merge_tab);
    if (!t->merges || !t->merge_tab) return 0;
    memset(t->merge_tab, 0xff, cap * sizeof *t->merge_tab); /* every key UINT64_MAX: empty */
    t->merge_mask = cap - 1;
    return 1;
}

/* Adds merge (a, b) -> id with the next rank. Returns -1, or the rank of an identical earlier merge
 * (then nothing is added). */
static int32_t add_merge(qkv_tokenizer *t, int32_t a, int32_t b, int32_t id) {
    uint64_t key = (uint64_t)(uint32_t)a << 32 | (uint32_t)b;
    uint32_t h = merge_hash(key, t->merge_mask);
    for (; t->merge_tab[h].key != UINT64_MAX; h = (h + 1) & t->merge_mask)
        if (t->merge_tab[h].key == key) return t->merge_tab[h].rank;
    t->merge_tab[h] = (qkv__merge_slot){key, t->n_merges, id};
    t->merges[2 * t->n_merges] = a;
    t->merges[2 * t->n_merges + 1] = b;
    t->n_merges++;
    return -1;
}

static qkv_status load_merges(qkv_tokenizer *t, const char *path, const int16_t u2b[324]) {
    size_t len;
    char *text = qkv__tok_read_file(path, &len);
    if (!text) return QKV_ERR_IO;
    size_t lines = 1;
    for (size_t i = 0; i < len; i++) lines += text[i] == '\n';
    char *buf = malloc(2 * len + 2);
    qkv_status st = QKV_OK;
    if (!alloc_merges(t, lines) || !buf) {
        st = qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        goto done;
    }
    size_t pos = 0, line_no = 0;
    while (pos < len) {
        const char *line = text + pos;
        const char *nl = memchr(line, '\n', len - pos);
        size_t ll = nl ? (size_t)(nl - line) : len - pos;
        pos += ll + (nl ? 1 : 0);
        line_no++;
        if (ll && line[ll - 1] == '\r') ll--;
        if (line_no == 1 && ll >= 8 && memcmp(line, "#version", 8) == 0) continue;
        const char *sp = memchr(line, ' ', ll);
        if (!sp || sp == line || sp == line + ll - 1 || memchr(sp + 1, ' ', ll - (size_t)(sp + 1 - line))) {
            st = qkv__set_error(QKV_ERR_FORMAT, "%s: line %zu: expected two tokens separated by one space, found \"%.*s\"",
                                path, line_no, shown(ll), line);
            goto done;
        }
        size_t la = (size_t)(sp - line), lb = ll - la - 1;
        int32_t a = merge_part(t, u2b, line, la, buf), b = merge_part(t, u2b, sp + 1, lb, buf);
        if (a < 0 || b < 0) {
            const char *s = a < 0 ? line : sp + 1;
            size_t sl = a < 0 ? la : lb;
            st = qkv__set_error(QKV_ERR_FORMAT, "%s: line %zu: token \"%.*s\" is not in the vocabulary", path, line_no,
                                shown(sl), s);
            goto done;
        }
        size_t na = t->tok_len[a], nb = t->tok_len[b];
        memcpy(buf, t->tok_bytes + t->tok_off[a], na);
        memcpy(buf + na, t->tok_bytes + t->tok_off[b], nb);
        int32_t id = qkv_tokenizer_token_id(t, buf, na + nb);
        if (id < 0) {
            st = qkv__set_error(QKV_ERR_FORMAT, "%s: line %zu: the merged token \"%.*s%.*s\" is not in the vocabulary",
                                path, line_no, shown(la), line, shown(lb), sp + 1);
            goto done;
        }
        int32_t earlier = add_merge(t, a, b, id);
        if (earlier >= 0) {
            st = qkv__set_error(QKV_ERR_FORMAT, "%s: line %zu: duplicate merge \"%.*s\" (already rank %d)", path,
                                line_no, shown(ll), line, (int)earlier);
            goto done;
        }
    }
done:
    free(buf);
    free(text);
    return st;
}

/* Compiles GPT-2's pattern into t->re / t->md (JIT when available). */
static qkv_status compile_pattern(qkv_tokenizer *t) {
    int err;
    PCRE2_SIZE erroff;
    pcre2_code *re = pcre2_compile((PCRE2_SPTR)gpt2_pattern, PCRE2_ZERO_TERMINATED, PCRE2_UTF | PCRE2_UCP, &err,
                                   &erroff, NULL);
    if (!re) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(err, msg, sizeof msg);
        return qkv__set_error(QKV_ERR_STATE, "tokenizer: PCRE2 rejects GPT-2's pattern at %zu: %s", (size_t)erroff,
                              (const char *)msg);
    }
    t->re = re;
    t->jit = pcre2_jit_compile(re, PCRE2_JIT_COMPLETE) == 0; /* the interpreter is the fallback */
    t->md = pcre2_match_data_create_from_pattern(re, NULL);
    return t->md ? QKV_OK : qkv__set_error(QKV_ERR_NOMEM, "tokenizer: out of memory");
}

static qkv_status setup_encoder(qkv_tokenizer *t) {
    qkv_status st = compile_pattern(t);
    if (st != QKV_OK) return st;
    t->cache = malloc(CACHE_SLOTS * sizeof *t->cache);
    t->cache_arena = malloc(CACHE_ARENA);
    if (!t->cache || !t->cache_arena) return qkv__set_error(QKV_ERR_NOMEM, "tokenizer: out of memory");
    memset(t->cache, 0xff, CACHE_SLOTS * sizeof *t->cache);
    t->cache_mask = CACHE_SLOTS - 1;
    t->cache_cap = CACHE_ARENA;
    return QKV_OK;
}

qkv_tokenizer *qkv_tokenizer_load_gpt2(const char *vocab_json, const char *merges_txt) {
    if (!vocab_json || !merges_txt) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_load_gpt2: NULL path");
        return NULL;
    }
    uint32_t b2u[256];
    int16_t u2b[324];
    byte_unicode(b2u, u2b);
    qkv_tokenizer *t = load_vocab(vocab_json, u2b);
    if (!t) return NULL;
    for (int b = 0; b < 256; b++) {
        if (t->byte_id[b] < 0) {
            char s[4];
            int k = qkv__utf8_encode(b2u[b], s);
            qkv__set_error(QKV_ERR_FORMAT, "%s: no token for byte 0x%02X (\"%.*s\"): a byte-level vocabulary needs all 256",
                           vocab_json, b, k, s);
            qkv_tokenizer_free(t);
            return NULL;
        }
    }
    t->eos = qkv_tokenizer_token_id(t, EOS_TEXT, sizeof EOS_TEXT - 1);
    if (load_merges(t, merges_txt, u2b) != QKV_OK) {
        qkv_tokenizer_free(t);
        return NULL;
    }
    int identity = t->n_merges == 0 && t->n_vocab == 256;
    for (int b = 0; identity && b < 256; b++) identity = t->byte_id[b] == b;
    if (identity) {
        t->kind = QKV_TOKENIZER_BYTES; /* what qkv_tokenizer_save_dir writes for the byte-level kind */
        return t;
    }
    if (setup_encoder(t) != QKV_OK) {
        qkv_tokenizer_free(t);
        return NULL;
    }
    return t;
}

qkv_tokenizer *qkv_tokenizer_load_dir(const char *dir) {
    if (!dir) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_load_dir: NULL directory");
        return NULL;
    }
    char vocab[4096], merges[4096];
    if (snprintf(vocab, sizeof vocab, "%s/vocab.json", dir) >= (int)sizeof vocab ||
        snprintf(merges, sizeof merges, "%s/merges.txt", dir) >= (int)sizeof merges) {
        qkv__set_error(QKV_ERR_ARG, "%s: path too long", dir);
        return NULL;
    }
    struct stat st;
    if (stat(merges, &st) != 0 && errno == ENOENT && stat(vocab, &st) == 0) {
        size_t len;
        char *text = qkv__tok_read_file(vocab, &len);
        if (!text) return NULL;
        qkv_tokenizer *t = qkv__chartok_from_vocab(vocab, text, len);
        free(text);
        return t;
    }
    return qkv_tokenizer_load_gpt2(vocab, merges);
}

/* ---- encoding ---- */

static inline int pair_less(const qkv__bpe_pair *a, const qkv__bpe_pair *b) {
    return a->rank < b->rank || (a->rank == b->rank && a->left < b->left);
}

static void heap_push(qkv__bpe_pair *h, size_t *n, qkv__bpe_pair e) {
    size_t i = (*n)++;
    while (i > 0) {
        size_t up = (i - 1) / 2;
        if (!pair_less(&e, &h[up])) break;
        h[i] = h[up];
        i = up;
    }
    h[i] = e;
}

static qkv__bpe_pair heap_pop(qkv__bpe_pair *h, size_t *n) {
    qkv__bpe_pair top = h[0], last = h[--*n];
    size_t i = 0, m = *n;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= m) break;
        if (c + 1 < m && pair_less(&h[c + 1], &h[c])) c++;
        if (!pair_less(&h[c], &last)) break;
        h[i] = h[c];
        i = c;
    }
    if (m) h[i] = last;
    return top;
}

static int grow_scratch(qkv_tokenizer *t, size_t n) {
    if (n <= t->scratch_cap) return 1;
    size_t cap = t->scratch_cap ? t->scratch_cap : 64;
    while (cap < n) cap *= 2;
    int32_t *sym = malloc(5 * cap * sizeof *sym);
    qkv__bpe_pair *heap = malloc(3 * cap * sizeof *heap);
    if (!sym || !heap) {
        free(sym);
        free(heap);
        qkv__set_error(QKV_ERR_NOMEM, "tokenize: out of memory for a word of %zu bytes", n);
        return 0;
    }
    free(t->sym);
    free(t->heap);
    t->sym = sym;
    t->heap = heap;
    t->scratch_cap = cap;
    return 1;
}

/* BPE of one word (n >= 1 bytes): the ids end up in t->sym[0..count). Returns count, -1 on error. */
static int64_t bpe_word(qkv_tokenizer *t, const unsigned char *w, size_t n) {
    if (!grow_scratch(t, n)) return -1;
    size_t cap = t->scratch_cap;
    int32_t *id = t->sym, *len = id + cap, *prev = len + cap, *next = prev + cap, *touched = next + cap;
    qkv__bpe_pair *heap = t->heap;
    size_t hn = 0;
    for (size_t i = 0; i < n; i++) {
        id[i] = t->byte_id[w[i]];
        len[i] = 1;
        prev[i] = (int32_t)i - 1;
        next[i] = i + 1 < n ? (int32_t)i + 1 : -1;
    }
#define TRY_PAIR(L, R)                                                                            \
    do {                                                                                          \
        const qkv__merge_slot *m_ = merge_find(t, id[L], id[R]);                                  \
        if (m_) heap_push(heap, &hn, (qkv__bpe_pair){m_->rank, (L), (R), len[L] + len[R], m_->id}); \
    } while (0)
    for (size_t i = 0; i + 1 < n; i++) TRY_PAIR((int32_t)i, (int32_t)i + 1);
    while (hn) {
        /* Merge every occurrence of the best pair first (left to right, as GPT-2 does), then look at
         * the pairs those merges created. */
        int32_t rank = heap[0].rank;
        size_t nt = 0;
        while (hn && heap[0].rank == rank) {
            qkv__bpe_pair e = heap_pop(heap, &hn);
            int32_t l = e.left, r = e.right;
            if (!len[l] || !len[r] || next[l] != r || len[l] + len[r] != e.size) continue; /* stale */
            id[l] = e.id;
            len[l] += len[r];
            len[r] = 0;
            next[l] = next[r];
            if (next[r] >= 0) prev[next[r]] = l;
            touched[nt++] = l;
        }
        for (size_t k = 0; k < nt; k++) {
            int32_t l = touched[k];
            if (prev[l] >= 0) TRY_PAIR(prev[l], l);
            if (next[l] >= 0) TRY_PAIR(l, next[l]);
        }
    }
#undef TRY_PAIR
    int64_t count = 0;
    for (int32_t s = 0; s >= 0; s = next[s]) id[count++] = id[s]; /* list order = index order */
    return count;
}

int64_t qkv__bpe_word(qkv_tokenizer *t, const char *w, size_t n, int32_t *out) {
    int64_t k = bpe_word(t, (const unsigned char *)w, n);
    if (k > 0) memcpy(out, t->sym, (size_t)k * sizeof *out);
    return k;
}

/* The reference: GPT-2's encoder.py bpe() as written — rescan for the lowest-ranked pair, rebuild the
 * word merging its occurrences left to right — O(n^2) per word, kept to test bpe_word against. */
int64_t qkv__bpe_word_ref(const qkv_tokenizer *t, const char *w, size_t n, int32_t *out) {
    int32_t *word = malloc(n * sizeof *word);
    if (!word) return -1;
    size_t m = n;
    for (size_t i = 0; i < n; i++) word[i] = t->byte_id[(unsigned char)w[i]];
    while (m > 1) {
        const qkv__merge_slot *best = NULL;
        for (size_t i = 0; i + 1 < m; i++) {
            const qkv__merge_slot *s = merge_find(t, word[i], word[i + 1]);
            if (s && (!best || s->rank < best->rank)) best = s;
        }
        if (!best) break;
        int32_t a = (int32_t)(best->key >> 32), b = (int32_t)(uint32_t)best->key;
        size_t o = 0;
        for (size_t i = 0; i < m;) {
            if (i + 1 < m && word[i] == a && word[i + 1] == b) {
                word[o++] = best->id;
                i += 2;
            } else {
                word[o++] = word[i++];
            }
        }
        m = o;
    }
    memcpy(out, word, m * sizeof *out);
    free(word);
    return (int64_t)m;
}

static inline void emit(int32_t *ids, int64_t cap, int64_t *count, int32_t id) {
    if (*count < cap) ids[*count] = id;
    (*count)++;
}

static void cache_put(qkv_tokenizer *t, uint64_t h, const char *w, size_t n, const int32_t *ids, int64_t k) {
    if (n > CACHE_MAX_WORD) return;
    size_t need = ((n + 3) & ~(size_t)3) + (size_t)k * sizeof(int32_t);
    if (t->cache_count + 1 > (t->cache_mask + 1) / 2 || t->cache_used + need > t->cache_cap) {
        memset(t->cache, 0xff, (t->cache_mask + 1) * sizeof *t->cache); /* full: start over */
        t->cache_count = 0;
        t->cache_used = 0;
    }
    uint32_t s = (uint32_t)h & t->cache_mask;
    while (t->cache[s].off != UINT32_MAX) s = (s + 1) & t->cache_mask;
    char *at = t->cache_arena + t->cache_used;
    memcpy(at, w, n);
    memcpy(at + ((n + 3) & ~(size_t)3), ids, (size_t)k * sizeof(int32_t));
    t->cache[s] = (qkv__cache_slot){h, (uint32_t)t->cache_used, (uint16_t)n, (uint16_t)k};
    t->cache_used += need;
    t->cache_count++;
}

static int encode_word(qkv_tokenizer *t, const char *w, size_t n, int32_t *ids, int64_t cap, int64_t *count) {
    if (n == 1) {
        emit(ids, cap, count, t->byte_id[(unsigned char)w[0]]);
        return 0;
    }
    uint64_t h = hash_bytes(w, n);
    if (n <= CACHE_MAX_WORD) {
        for (uint32_t s = (uint32_t)h & t->cache_mask; t->cache[s].off != UINT32_MAX; s = (s + 1) & t->cache_mask) {
            const qkv__cache_slot *c = &t->cache[s];
            const char *at = t->cache_arena + c->off;
            if (c->hash == h && c->word_len == n && memcmp(at, w, n) == 0) {
                const int32_t *cid = (const int32_t *)(at + ((n + 3) & ~(size_t)3));
                for (int k = 0; k < c->n_ids; k++) emit(ids, cap, count, cid[k]);
                return 0;
            }
        }
    }
    int64_t k = bpe_word(t, (const unsigned char *)w, n);
    if (k < 0) return -1;
    for (int64_t j = 0; j < k; j++) emit(ids, cap, count, t->sym[j]);
    cache_put(t, h, w, n, t->sym, k);
    return 0;
}

/* The next pre-tokenisation word of s[0..n) at or after *off: [*start, *end). Returns 1, 0 at the end,
 * -1 on a PCRE2 error (message set). s must be valid UTF-8 (checked once by the caller). */
static int next_word(const qkv_tokenizer *t, const char *s, size_t n, size_t *off, size_t *start, size_t *end) {
    if (*off >= n) return 0;
    pcre2_match_data *md = t->md;
    int rc = t->jit ? pcre2_jit_match(t->re, (PCRE2_SPTR)s, n, *off, 0, md, NULL)
                    : pcre2_match(t->re, (PCRE2_SPTR)s, n, *off, PCRE2_NO_UTF_CHECK, md, NULL);
    if (rc == PCRE2_ERROR_NOMATCH) { /* every character matches some branch, so this cannot happen */
        *start = *off;
        *end = *off = n;
        return 1;
    }
    if (rc < 0) {
        PCRE2_UCHAR msg[160];
        pcre2_get_error_message(rc, msg, sizeof msg);
        qkv__set_error(QKV_ERR_STATE, "tokenize: pre-tokeniser failed at byte %zu: %s", *off, (const char *)msg);
        return -1;
    }
    const PCRE2_SIZE *ov = pcre2_get_ovector_pointer(md);
    /* Matches start where the last ended (every character begins some branch) and are never empty;
     * should that ever fail, the skipped bytes still become a word and the loop still advances. */
    *start = *off;
    *end = ov[1] > *off ? ov[1] : n;
    *off = *end;
    return 1;
}

/* Pre-tokenises s[0..n) with GPT-2's pattern and encodes each word. */
static int encode_ordinary(qkv_tokenizer *t, const char *s, size_t n, int32_t *ids, int64_t cap, int64_t *count) {
    size_t off = 0, start, end;
    int r;
    while ((r = next_word(t, s, n, &off, &start, &end)) > 0)
        if (encode_word(t, s + start, end - start, ids, cap, count)) return -1;
    return r;
}

int64_t qkv_tokenizer_encode(qkv_tokenizer *t, const char *text, size_t len, int allow_special, int32_t *ids,
                             int64_t cap) {
    if (!t || (!text && len) || cap < 0 || (!ids && cap > 0)) {
        qkv__set_error(QKV_ERR_ARG, "tokenize: %s", !t ? "NULL tokenizer" : cap < 0 ? "negative capacity" : "NULL buffer");
        return -1;
    }
    size_t bad = qkv__utf8_check(text, len);
    if (bad < len) {
        qkv__set_error(QKV_ERR_ARG, "tokenize: invalid UTF-8 at byte %zu", bad);
        return -1;
    }
    if (len == 0) return 0;
    if (t->kind != QKV_TOKENIZER_BPE) return qkv__chartok_encode(t, text, len, ids, cap);
    int64_t count = 0;
    size_t off = 0;
    if (allow_special && t->eos >= 0) {
        const char *eos = t->tok_bytes + t->tok_off[t->eos];
        size_t el = t->tok_len[t->eos];
        const char *hit;
        while ((hit = memmem(text + off, len - off, eos, el)) != NULL) {
            size_t at = (size_t)(hit - text);
            if (encode_ordinary(t, text + off, at - off, ids, cap, &count)) return -1;
            emit(ids, cap, &count, t->eos);
            off = at + el;
        }
    }
    if (encode_ordinary(t, text + off, len - off, ids, cap, &count)) return -1;
    return count;
}

/* ---- saving ---- */

static int write_vocab(FILE *f, const qkv_tokenizer *t) {
    uint32_t b2u[256];
    int16_t u2b[324];
    byte_unicode(b2u, u2b);
    size_t longest = 0;
    for (int64_t id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] > longest) longest = t->tok_len[id];
    char *buf = malloc(2 * longest + 1);
    if (!buf) return -1;
    /* Python's json.dumps layout (", ", ": ", \uXXXX escapes): GPT-2's vocab.json comes back byte for byte. */
    putc('{', f);
    for (int64_t id = 0; id < t->n_vocab; id++) {
        if (id) fputs(", ", f);
        size_t bl = to_byte_level(b2u, t->tok_bytes + t->tok_off[id], t->tok_len[id], buf);
        qkv__json_write_stringn(f, buf, bl, 1);
        fprintf(f, ": %lld", (long long)id);
    }
    putc('}', f);
    free(buf);
    return 0;
}

static int write_merges(FILE *f, const qkv_tokenizer *t) {
    uint32_t b2u[256];
    int16_t u2b[324];
    byte_unicode(b2u, u2b);
    size_t longest = 0;
    for (int64_t id = 0; id < t->n_vocab; id++)
        if (t->tok_len[id] > longest) longest = t->tok_len[id];
    char *buf = malloc(2 * longest + 1);
    if (!buf) return -1;
    fputs("#version: 0.2\n", f);
    for (int32_t r = 0; r < t->n_merges; r++) {
        for (int side = 0; side < 2; side++) {
            int32_t id = t->merges[2 * r + side];
            size_t bl = to_byte_level(b2u, t->tok_bytes + t->tok_off[id], t->tok_len[id], buf);
            fwrite(buf, 1, bl, f);
            putc(side ? '\n' : ' ', f);
        }
    }
    free(buf);
    return 0;
}

qkv_status qkv_tokenizer_save_dir(const qkv_tokenizer *t, const char *dir) {
    if (!t || !dir) return qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_save_dir: NULL %s", !t ? "tokenizer" : "directory");
    if (mkdir(dir, 0777) != 0 && errno != EEXIST)
        return qkv__set_error(QKV_ERR_IO, "%s: cannot create directory: %s", dir, strerror(errno));
    char vocab[4096], merges[4096];
    if (snprintf(vocab, sizeof vocab, "%s/vocab.json", dir) >= (int)sizeof vocab ||
        snprintf(merges, sizeof merges, "%s/merges.txt", dir) >= (int)sizeof merges)
        return qkv__set_error(QKV_ERR_ARG, "%s: path too long", dir);
    if (t->kind == QKV_TOKENIZER_CHARS) {
        qkv_status st = qkv__tok_write_file(vocab, t, qkv__chartok_write_vocab);
        if (st != QKV_OK) return st;
        if (remove(merges) != 0 && errno != ENOENT)
            return qkv__set_error(QKV_ERR_IO, "%s: cannot remove the stale file: %s", merges, strerror(errno));
        return QKV_OK;
    }
    /* Bytes are a BPE with no merges whose ids are the byte values: load_dir recognises that. */
    qkv_status st = qkv__tok_write_file(vocab, t, write_vocab);
    if (st == QKV_OK) st = qkv__tok_write_file(merges, t, write_merges);
    return st;
}

/* ---- training ----
 *
 * Byte-level BPE training as Hugging Face's BpeTrainer / Karpathy's minbpe do it: pre-tokenise with
 * GPT-2's pattern, count distinct words, then repeatedly merge the most frequent adjacent pair
 * (summed over words, weighted by word frequency; ties go to the smallest (left, right) ids) inside
 * every word that has it. Pair counts live in a hash map and a lazy max-heap (an entry whose count is
 * stale is re-queued with the current one when it surfaces); each pair remembers the words it
 * appeared in, so a merge only revisits those. A word touched by a merge has its pairs subtracted,
 * is rewritten, and has its pairs added back; only pairs with the new token can grow, and only those
 * are queued again. Ids: 0..255 are the bytes, then merged tokens in merge order, <|endoftext|> last.
 */

typedef struct {
    int64_t count;
    int32_t a, b;
    uint32_t *words; /* words the pair formed in (may repeat or be stale: checked on use) */
    size_t n_words, cap_words;
    int32_t queued; /* merge step that last queued it */
} train_pair;

typedef struct {
    int64_t count;
    int32_t a, b;
} train_entry;

typedef struct {
    /* tokens: bytes by id, and bytes -> id */
    char *tb;
    size_t tb_used, tb_cap;
    uint32_t *toff, *tlen;
    size_t ntok, tcap;
    uint32_t *thash; /* id + 1; 0 = empty */
    size_t thcap;
    /* distinct words: symbols (rewritten in place by merges), frequency */
    int32_t *sym;
    size_t sym_used, sym_cap;
    uint32_t *woff, *wlen;
    int64_t *wfreq;
    int32_t *wstep;
    size_t nwords, wcap;
    /* pairs */
    train_pair *pairs;
    size_t npairs, pcap;
    uint32_t *phash; /* pair index + 1; 0 = empty */
    size_t phcap;
    train_entry *heap;
    size_t hn, hcap;
    uint32_t *grown;
    size_t ngrown, gcap;
    int32_t *merges; /* a, b, id */
    size_t nmerges, mcap;
} trainer;

static int grow(void *pp, size_t *cap, size_t need, size_t elem) {
    if (need <= *cap) return 1;
    size_t c = *cap ? *cap : 16;
    while (c < need) c *= 2;
    void *q = realloc(*(void **)pp, c * elem);
    if (!q) return 0;
    *(void **)pp = q;
    *cap = c;
    return 1;
}

/* Rebuilds an index-hash (entries = index + 1, 0 empty) of cap slots from scratch. */
/* Entry n-1 (of n) was just appended: put it in the open-addressing table *tab (slots hold index + 1,
 * kept at most half full), first rebuilding the table twice as large (first_cap at first) from all n
 * entries when it would pass half. 0 when out of memory. */
static int table_add(uint32_t **tab, size_t *cap, size_t n, size_t first_cap,
                     uint64_t (*hash_of)(const trainer *, size_t), const trainer *tr) {
    if (2 * n > *cap) {
        const size_t c = *cap ? 2 * *cap : first_cap;
        uint32_t *h = calloc(c, sizeof *h);
        if (!h) return 0;
        for (size_t i = 0; i < n; i++) {
            size_t sl = (size_t)hash_of(tr, i) & (c - 1);
            while (h[sl]) sl = (sl + 1) & (c - 1);
            h[sl] = (uint32_t)(i + 1);
        }
        free(*tab);
        *tab = h;
        *cap = c;
        return 1;
    }
    size_t sl = (size_t)hash_of(tr, n - 1) & (*cap - 1);
    while ((*tab)[sl]) sl = (sl + 1) & (*cap - 1);
    (*tab)[sl] = (uint32_t)n;
    return 1;
}

static uint64_t tok_hash_of(const trainer *tr, size_t i) { return hash_bytes(tr->tb + tr->toff[i], tr->tlen[i]); }

static uint64_t pair_key_hash(int32_t a, int32_t b) {
    return ((uint64_t)(uint32_t)a << 32 | (uint32_t)b) * 0x9E3779B97F4A7C15ull >> 17;
}

static uint64_t pair_hash_of(const trainer *tr, size_t i) { return pair_key_hash(tr->pairs[i].a, tr->pairs[i].b); }

/* Token id of bytes s[0..n), adding it when absent (add = 1). -1 when absent (add = 0) or out of memory. */
static int64_t train_token(trainer *tr, const char *s, size_t n, int add) {
    if (tr->thcap) {
        for (size_t h = (size_t)hash_bytes(s, n) & (tr->thcap - 1); tr->thash[h]; h = (h + 1) & (tr->thcap - 1)) {
            size_t id = (size_t)tr->thash[h] - 1;
            if (tr->tlen[id] == n && memcmp(tr->tb + tr->toff[id], s, n) == 0) return (int64_t)id;
        }
    }
    if (!add || !grow(&tr->tb, &tr->tb_cap, tr->tb_used + n, 1)) return -1;
    if (tr->ntok == tr->tcap) { /* toff and tlen grow together */
        size_t cap = tr->tcap ? 2 * tr->tcap : 1024;
        uint32_t *o = realloc(tr->toff, cap * sizeof *o);
        if (o) tr->toff = o;
        uint32_t *l = o ? realloc(tr->tlen, cap * sizeof *l) : NULL;
        if (!l) return -1;
        tr->tlen = l;
        tr->tcap = cap;
    }
    memcpy(tr->tb + tr->tb_used, s, n);
    tr->toff[tr->ntok] = (uint32_t)tr->tb_used;
    tr->tlen[tr->ntok] = (uint32_t)n;
    tr->tb_used += n;
    tr->ntok++;
    if (!table_add(&tr->thash, &tr->thcap, tr->ntok, 1024, tok_hash_of, tr)) return -1;
    return (int64_t)tr->ntok - 1;
}

/* Index of pair (a, b), created with count 0 when absent. -1 when out of memory. */
static int64_t train_pair_get(trainer *tr, int32_t a, int32_t b) {
    if (tr->phcap) {
        for (size_t h = (size_t)pair_key_hash(a, b) & (tr->phcap - 1); tr->phash[h]; h = (h + 1) & (tr->phcap - 1)) {
            const train_pair *p = &tr->pairs[tr->phash[h] - 1];
            if (p->a == a && p->b == b) return (int64_t)tr->phash[h] - 1;
        }
    }
    if (!grow(&tr->pairs, &tr->pcap, tr->npairs + 1, sizeof *tr->pairs)) return -1;
    tr->pairs[tr->npairs] = (train_pair){0, a, b, NULL, 0, 0, -1};
    tr->npairs++;
    if (!table_add(&tr->phash, &tr->phcap, tr->npairs, 4096, pair_hash_of, tr)) return -1;
    return (int64_t)tr->npairs - 1;
}

static int entry_before(const train_entry *x, const train_entry *y) {
    if (x->count != y->count) return x->count > y->count;
    return x->a != y->a ? x->a < y->a : x->b < y->b;
}

static int train_push(trainer *tr, train_entry e) {
    if (!grow(&tr->heap, &tr->hcap, tr->hn + 1, sizeof *tr->heap)) return 0;
    size_t i = tr->hn++;
    while (i > 0 && entry_before(&e, &tr->heap[(i - 1) / 2])) {
        tr->heap[i] = tr->heap[(i - 1) / 2];
        i = (i - 1) / 2;
    }
    tr->heap[i] = e;
    return 1;
}

static train_entry train_pop(trainer *tr) {
    train_entry top = tr->heap[0], last = tr->heap[--tr->hn];
    size_t i = 0, n = tr->hn;
    for (;;) {
        size_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && entry_before(&tr->heap[c + 1], &tr->heap[c])) c++;
        if (!entry_before(&tr->heap[c], &last)) break;
        tr->heap[i] = tr->heap[c];
        i = c;
    }
    if (n) tr->heap[i] = last;
    return top;
}

/* Adds (sign = +1) or removes (-1) word w's pairs from the counts. When adding, pairs that contain
 * token fresh (or every pair, fresh = -1 at the start) record w and are marked to be queued. */
static int train_word_pairs(trainer *tr, size_t w, int sign, int32_t fresh, int32_t step) {
    const int32_t *s = tr->sym + tr->woff[w];
    for (uint32_t i = 0; i + 1 < tr->wlen[w]; i++) {
        int64_t pi = train_pair_get(tr, s[i], s[i + 1]);
        if (pi < 0) return 0;
        train_pair *p = &tr->pairs[pi];
        p->count += sign * tr->wfreq[w];
        if (sign < 0 || (fresh >= 0 && s[i] != fresh && s[i + 1] != fresh)) continue;
        if (!p->n_words || p->words[p->n_words - 1] != (uint32_t)w) {
            if (!grow(&p->words, &p->cap_words, p->n_words + 1, sizeof *p->words)) return 0;
            p->words[p->n_words++] = (uint32_t)w;
        }
        if (p->queued != step) {
            p->queued = step;
            if (!grow(&tr->grown, &tr->gcap, tr->ngrown + 1, sizeof *tr->grown)) return 0;
            tr->grown[tr->ngrown++] = (uint32_t)pi;
        }
    }
    return 1;
}

static int train_queue_grown(trainer *tr) {
    for (size_t k = 0; k < tr->ngrown; k++) {
        const train_pair *p = &tr->pairs[tr->grown[k]];
        if (p->count > 0 && !train_push(tr, (train_entry){p->count, p->a, p->b})) return 0;
    }
    tr->ngrown = 0;
    return 1;
}

/* Counts the distinct pre-tokenisation words of text (<|endoftext|> separates, never part of a word).
 * Returns 1, 0 when out of memory, -1 when the pre-tokeniser fails (message set). */
static int train_count_words(trainer *tr, const qkv_tokenizer *pre, const char *text, size_t len) {
    uint32_t *wh = NULL; /* word index + 1 */
    size_t whcap = 0;
    char *wb = NULL; /* words' bytes while counting */
    size_t wb_used = 0, wb_cap = 0;
    uint32_t *wboff = NULL;
    size_t wbcap = 0;
    int ok = 0;
    size_t seg = 0;
    while (seg <= len) {
        const char *hit = memmem(text + seg, len - seg, EOS_TEXT, sizeof EOS_TEXT - 1);
        size_t seg_end = hit ? (size_t)(hit - text) : len;
        size_t off = 0, start, end;
        int r;
        while ((r = next_word(pre, text + seg, seg_end - seg, &off, &start, &end)) > 0) {
            const char *w = text + seg + start;
            size_t n = end - start;
            uint64_t h = hash_bytes(w, n);
            size_t s = whcap ? (size_t)h & (whcap - 1) : 0, found = SIZE_MAX;
            for (; whcap && wh[s]; s = (s + 1) & (whcap - 1)) {
                size_t i = wh[s] - 1;
                if (tr->wlen[i] == n && memcmp(wb + wboff[i], w, n) == 0) {
                    found = i;
                    break;
                }
            }
            if (found != SIZE_MAX) {
                tr->wfreq[found]++;
                continue;
            }
            size_t i = tr->nwords;
            if (i >= UINT32_MAX - 1 || wb_used + n >= UINT32_MAX || !grow(&wb, &wb_cap, wb_used + n, 1) ||
                !grow(&wboff, &wbcap, i + 1, sizeof *wboff))
                goto done;
            if (i == tr->wcap) { /* wlen and wfreq grow together */
                size_t cap = tr->wcap ? 2 * tr->wcap : 4096;
                uint32_t *l = realloc(tr->wlen, cap * sizeof *l);
                if (l) tr->wlen = l;
                int64_t *f = l ? realloc(tr->wfreq, cap * sizeof *f) : NULL;
                if (!f) goto done;
                tr->wfreq = f;
                tr->wcap = cap;
            }
            memcpy(wb + wb_used, w, n);
            wboff[i] = (uint32_t)wb_used;
            tr->wlen[i] = (uint32_t)n;
            tr->wfreq[i] = 1;
            wb_used += n;
            tr->nwords++;
            if (2 * tr->nwords > whcap) {
                size_t cap = whcap ? 2 * whcap : 4096;
                uint32_t *nh = calloc(cap, sizeof *nh);
                if (!nh) goto done;
                for (size_t k = 0; k < tr->nwords; k++) {
                    size_t q = (size_t)hash_bytes(wb + wboff[k], tr->wlen[k]) & (cap - 1);
                    while (nh[q]) q = (q + 1) & (cap - 1);
                    nh[q] = (uint32_t)(k + 1);
                }
                free(wh);
                wh = nh;
                whcap = cap;
            } else {
                wh[s] = (uint32_t)(i + 1);
            }
        }
        if (r < 0) {
            ok = -1;
            goto done;
        }
        if (!hit) break;
        seg = seg_end + sizeof EOS_TEXT - 1;
    }
    /* Words become symbol sequences: one byte token (id = byte value) per byte. */
    tr->woff = malloc((tr->nwords + 1) * sizeof *tr->woff);
    tr->wstep = malloc((tr->nwords + 1) * sizeof *tr->wstep);
    tr->sym = malloc((wb_used + 1) * sizeof *tr->sym);
    if (!tr->woff || !tr->wstep || !tr->sym) goto done;
    for (size_t i = 0; i < tr->nwords; i++) {
        tr->woff[i] = wboff[i];
        tr->wstep[i] = -1;
        for (uint32_t k = 0; k < tr->wlen[i]; k++) tr->sym[wboff[i] + k] = (unsigned char)wb[wboff[i] + k];
    }
    ok = 1;
done:
    free(wh);
    free(wb);
    free(wboff);
    return ok;
}

static void trainer_free(trainer *tr) {
    free(tr->tb);
    free(tr->toff);
    free(tr->tlen);
    free(tr->thash);
    free(tr->sym);
    free(tr->woff);
    free(tr->wlen);
    free(tr->wfreq);
    free(tr->wstep);
    for (size_t i = 0; i < tr->npairs; i++) free(tr->pairs[i].words);
    free(tr->pairs);
    free(tr->phash);
    free(tr->heap);
    free(tr->grown);
    free(tr->merges);
}

/* Merges until n_tokens tokens exist or no pair occurs twice. 0 on out of memory. */
static int train_merge(trainer *tr, size_t n_tokens) {
    for (size_t w = 0; w < tr->nwords; w++)
        if (!train_word_pairs(tr, w, +1, -1, 0)) return 0;
    if (!train_queue_grown(tr)) return 0;
    char *buf = NULL;
    size_t buf_cap = 0;
    int ok = 0;
    for (int32_t step = 1; tr->ntok < n_tokens && tr->hn; step++) {
        train_entry e = train_pop(tr);
        int64_t pi = train_pair_get(tr, e.a, e.b);
        if (pi < 0) goto done;
        if (tr->pairs[pi].count != e.count) { /* stale: re-queue with the current count */
            if (tr->pairs[pi].count > 0 && !train_push(tr, (train_entry){tr->pairs[pi].count, e.a, e.b})) goto done;
            continue;
        }
        if (e.count < 2) break;
        size_t na = tr->tlen[e.a], nb = tr->tlen[e.b];
        if (!grow(&buf, &buf_cap, na + nb, 1)) goto done;
        memcpy(buf, tr->tb + tr->toff[e.a], na);
        memcpy(buf + na, tr->tb + tr->toff[e.b], nb);
        int64_t id = train_token(tr, buf, na + nb, 1); /* an existing token when two merges spell the same bytes */
        if (id < 0 || !grow(&tr->merges, &tr->mcap, 3 * tr->nmerges + 3, sizeof *tr->merges)) goto done;
        tr->merges[3 * tr->nmerges] = e.a;
        tr->merges[3 * tr->nmerges + 1] = e.b;
        tr->merges[3 * tr->nmerges + 2] = (int32_t)id;
        tr->nmerges++;
        /* Take the word list: the merged pair cannot form again from this merge. */
        uint32_t *words = tr->pairs[pi].words;
        size_t n_words = tr->pairs[pi].n_words;
        tr->pairs[pi].words = NULL;
        tr->pairs[pi].n_words = tr->pairs[pi].cap_words = 0;
        for (size_t k = 0; k < n_words; k++) {
            uint32_t w = words[k];
            if (tr->wstep[w] == step) continue;
            tr->wstep[w] = step;
            int32_t *s = tr->sym + tr->woff[w];
            uint32_t n = tr->wlen[w], i = 0, o = 0;
            while (i + 1 < n && !(s[i] == e.a && s[i + 1] == e.b)) i++;
            if (i + 1 >= n) continue; /* stale entry: an earlier merge took the pair */
            if (!train_word_pairs(tr, w, -1, 0, step)) {
                free(words);
                goto done;
            }
            for (i = 0; i < n;) {
                if (i + 1 < n && s[i] == e.a && s[i + 1] == e.b) {
                    s[o++] = (int32_t)id;
                    i += 2;
                } else {
                    s[o++] = s[i++];
                }
            }
            tr->wlen[w] = o;
            if (!train_word_pairs(tr, w, +1, (int32_t)id, step)) {
                free(words);
                goto done;
            }
        }
        free(words);
        if (!train_queue_grown(tr)) goto done;
    }
    ok = 1;
done:
    free(buf);
    return ok;
}

qkv_tokenizer *qkv_tokenizer_train_bpe(const char *text, size_t len, int64_t vocab_size) {
    if (!text && len) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_train_bpe: NULL text");
        return NULL;
    }
    if (vocab_size < 257 || vocab_size > (1 << 24)) {
        qkv__set_error(QKV_ERR_RANGE, "qkv_tokenizer_train_bpe: vocab_size %lld outside 257..%d (256 bytes + "
                       "merges + <|endoftext|>)", (long long)vocab_size, 1 << 24);
        return NULL;
    }
    size_t bad = qkv__utf8_check(text, len);
    if (bad < len) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_train_bpe: invalid UTF-8 at byte %zu", bad);
        return NULL;
    }
    trainer tr = {0};
    qkv_tokenizer pre = {0}, *t = NULL;
    if (compile_pattern(&pre) != QKV_OK) goto fail;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        if (train_token(&tr, &c, 1, 1) < 0) goto nomem;
    }
    int counted = train_count_words(&tr, &pre, text ? text : "", len);
    if (counted < 0) goto fail;
    if (counted == 0) goto nomem;
    if (!train_merge(&tr, (size_t)vocab_size - 1)) goto nomem;
    t = qkv__tok_new(QKV_TOKENIZER_BPE, (int64_t)tr.ntok + 1, tr.tb_used + sizeof EOS_TEXT);
    if (!t) goto fail;
    for (size_t id = 0; id < tr.ntok; id++) qkv__tok_set(t, (int32_t)id, tr.tb + tr.toff[id], tr.tlen[id]);
    qkv__tok_set(t, (int32_t)tr.ntok, EOS_TEXT, sizeof EOS_TEXT - 1);
    t->eos = (int32_t)tr.ntok;
    int32_t da, db;
    if (qkv__tok_index(t, &da, &db) != QKV_OK || !alloc_merges(t, tr.nmerges)) goto nomem;
    for (size_t m = 0; m < tr.nmerges; m++) /* a pair merged twice keeps its first rank */
        add_merge(t, tr.merges[3 * m], tr.merges[3 * m + 1], tr.merges[3 * m + 2]);
    if (setup_encoder(t) != QKV_OK) goto fail;
    trainer_free(&tr);
    pcre2_match_data_free(pre.md);
    pcre2_code_free(pre.re);
    return t;
nomem:
    qkv__set_error(QKV_ERR_NOMEM, "qkv_tokenizer_train_bpe: out of memory (%zu bytes of text)", len);
fail:
    qkv_tokenizer_free(t);
    trainer_free(&tr);
    pcre2_match_data_free(pre.md);
    pcre2_code_free(pre.re);
    return NULL;
}

/* json.c — the strict JSON reader and string writer declared in json.h, plus strict UTF-8 helpers.
 *
 * How the reader builds one block, in two passes over the text with the same recursive-descent code:
 * pass 1 checks everything except duplicate keys and counts — the children of every array/object (in
 * the order they open), the nodes, the string bytes; then one malloc holds all nodes and strings, and
 * pass 2 fills it: a container takes the next `count` free slots for its children, so every child
 * list is contiguous and no node is ever moved or copied (vocab.json, 50k keys, touches each byte of
 * the block once). Duplicate keys are caught in pass 2, where the strings exist.
 *
 * Not here: a streaming/SAX interface, comments or other JSON5 extensions (all rejected), and numbers
 * beyond what a double holds (rejected as out of range rather than turned into infinity).
 */
#include "json.h"

#include <locale.h>
#include <math.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#include "core_int.h"

#define SMALL_OBJECT 16 /* objects up to this many keys check duplicates pairwise, larger ones hash */

typedef struct {
    const unsigned char *s;
    size_t n, i;
    int build;       /* 0: pass 1 (check and count), 1: pass 2 (fill the block) */
    size_t *counts;  /* children of each container, in the order containers open */
    size_t ncounts, counts_cap, next_count;
    size_t nodes;    /* pass 1: number of values */
    size_t strbytes; /* pass 1: string bytes, NULs included */
    qkv__json *pool; /* pass 2: the block; pool[0] is the root */
    size_t next_slot;
    char *strs; /* pass 2: where the next string goes */
    int depth;
    int failed; /* 1: syntax error (err_pos, reason), 2: out of memory */
    size_t err_pos;
    char reason[160];
} parser;

static void fail(parser *p, size_t pos, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void fail(parser *p, size_t pos, const char *fmt, ...) {
    if (p->failed) return;
    p->failed = 1;
    p->err_pos = pos;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(p->reason, sizeof p->reason, fmt, ap);
    va_end(ap);
}

static void fail_nomem(parser *p) {
    if (!p->failed) p->failed = 2;
}

/* Describes the byte at i for a message: 'x' when printable ASCII, else 0xNN, or "end of input". */
static void fail_unexpected(parser *p, const char *where) {
    if (p->i >= p->n) {
        fail(p, p->i, "unexpected end of input%s", where);
        return;
    }
    unsigned c = p->s[p->i];
    if (c >= 0x20 && c < 0x7f)
        fail(p, p->i, "unexpected character '%c'%s", (char)c, where);
    else
        fail(p, p->i, "unexpected byte 0x%02X%s", c, where);
}

static void skip_ws(parser *p) {
    while (p->i < p->n) {
        unsigned char c = p->s[p->i];
        if (c != ' ' && c != '\n' && c != '\r' && c != '\t') break;
        p->i++;
    }
}

/* ---- UTF-8 ---- */

int qkv__utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp) {
    unsigned c = s[0];
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if (c < 0xC2) return 0; /* continuation byte, or overlong 2-byte form */
    if (c < 0xE0) {
        if (avail < 2 || (s[1] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x1Fu) << 6) | (s[1] & 0x3Fu);
        return 2;
    }
    if (c < 0xF0) {
        if (avail < 3) return 0;
        unsigned lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF; /* overlong / surrogates */
        if (s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x0Fu) << 12) | ((s[1] & 0x3Fu) << 6) | (s[2] & 0x3Fu);
        return 3;
    }
    if (c < 0xF5) {
        if (avail < 4) return 0;
        unsigned lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF; /* overlong / > U+10FFFF */
        if (s[1] < lo || s[1] > hi || (s[2] & 0xC0) != 0x80 || (s[3] & 0xC0) != 0x80) return 0;
        *cp = ((c & 0x07u) << 18) | ((s[1] & 0x3Fu) << 12) | ((s[2] & 0x3Fu) << 6) | (s[3] & 0x3Fu);
        return 4;
    }
    return 0;
}

size_t qkv__utf8_check(const char *text, size_t len) {
    const unsigned char *s = (const unsigned char *)text;
    size_t i = 0;
    while (i < len) {
        /* ASCII runs are the common case: test eight bytes at a time. */
        while (i + 8 <= len) {
            uint64_t w;
            memcpy(&w, s + i, 8);
            if (w & 0x8080808080808080ull) break;
            i += 8;
        }
        if (i >= len) break;
        if (s[i] < 0x80) {
            i++;
            continue;
        }
        uint32_t cp;
        int k = qkv__utf8_decode(s + i, len - i, &cp);
        if (!k) return i;
        i += (size_t)k;
    }
    return len;
}

int qkv__utf8_encode(uint32_t cp, char out[4]) {
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        if (cp >= 0xD800 && cp <= 0xDFFF) return 0;
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    if (cp <= 0x10FFFF) {
        out[0] = (char)(0xF0 | (cp >> 18));
        out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
        out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[3] = (char)(0x80 | (cp & 0x3F));
        return 4;
    }
    return 0;
}

/* ---- values ---- */

/* ---- values ---- */

static int hex4(const unsigned char *s, uint32_t *out) {
    uint32_t v = 0;
    for (int k = 0; k < 4; k++) {
        unsigned c = s[k];
        v <<= 4;
        if (c >= '0' && c <= '9')
            v |= c - '0';
        else if (c >= 'a' && c <= 'f')
            v |= c - 'a' + 10;
        else if (c >= 'A' && c <= 'F')
            v |= c - 'A' + 10;
        else
            return 0;
    }
    *out = v;
    return 1;
}

/* Parses the string starting at the opening quote. Pass 2 unescapes it to p->strs (NUL-terminated)
 * and returns it in str and len; pass 1 only checks it and counts its bytes. */
static int parse_string(parser *p, const char **str, size_t *len) {
    const unsigned char *s = p->s;
    size_t n = p->n, i = p->i + 1;
    char *out = p->build ? p->strs : NULL, u8[4];
    size_t o = 0;
    for (;;) {
        size_t run = i;
        while (i < n && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') i++;
        if (out) memcpy(out + o, s + run, i - run);
        o += i - run;
        if (i >= n) {
            fail(p, n, "unterminated string (opened at byte %zu)", p->i);
            return 0;
        }
        unsigned c = s[i];
        if (c == '"') {
            i++;
            break;
        }
        if (c < 0x20) {
            fail(p, i, "control character 0x%02X in string (must be escaped)", c);
            return 0;
        }
        if (c >= 0x80) {
            uint32_t cp;
            int k = qkv__utf8_decode(s + i, n - i, &cp);
            if (!k) {
                fail(p, i, "invalid UTF-8 in string (byte 0x%02X)", c);
                return 0;
            }
            if (out) memcpy(out + o, s + i, (size_t)k);
            o += (size_t)k;
            i += (size_t)k;
            continue;
        }
        /* backslash escape */
        if (i + 1 >= n) {
            fail(p, n, "unterminated string (opened at byte %zu)", p->i);
            return 0;
        }
        unsigned e = s[i + 1];
        char ch;
        switch (e) {
        case '"': ch = '"'; break;
        case '\\': ch = '\\'; break;
        case '/': ch = '/'; break;
        case 'b': ch = '\b'; break;
        case 'f': ch = '\f'; break;
        case 'n': ch = '\n'; break;
        case 'r': ch = '\r'; break;
        case 't': ch = '\t'; break;
        case 'u': {
            uint32_t cp;
            if (i + 6 > n || !hex4(s + i + 2, &cp)) {
                fail(p, i, "\\u must be followed by four hex digits");
                return 0;
            }
            size_t at = i;
            i += 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                fail(p, at, "lone low surrogate \\u%04X", (unsigned)cp);
                return 0;
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (i + 6 > n || s[i] != '\\' || s[i + 1] != 'u' || !hex4(s + i + 2, &lo) || lo < 0xDC00 ||
                    lo > 0xDFFF) {
                    fail(p, at, "lone high surrogate \\u%04X (not followed by a \\uDC00-\\uDFFF escape)",
                         (unsigned)cp);
                    return 0;
                }
                i += 6;
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            }
            int k = qkv__utf8_encode(cp, u8); /* never more bytes than the escape it replaces */
            if (out) memcpy(out + o, u8, (size_t)k);
            o += (size_t)k;
            continue;
        }
        default:
            if (e >= 0x20 && e < 0x7f)
                fail(p, i, "invalid escape '\\%c'", (char)e);
            else
                fail(p, i, "invalid escape (backslash followed by byte 0x%02X)", e);
            return 0;
        }
        if (out) out[o] = ch;
        o++;
        i += 2;
    }
    if (out) {
        out[o] = '\0';
        *str = out;
        p->strs += o + 1;
    } else {
        *str = NULL;
        p->strbytes += o + 1;
    }
    *len = o;
    p->i = i;
    return 1;
}

static int is_digit(unsigned c) { return c >= '0' && c <= '9'; }

static void parse_number(parser *p, qkv__json *v) {
    const unsigned char *s = p->s;
    size_t n = p->n, i = p->i, start = i;
    int neg = 0;
    if (s[i] == '-') {
        neg = 1;
        i++;
        if (i < n && s[i] == 'I') {
            fail(p, start, "Infinity is not valid JSON");
            return;
        }
    }
    if (i >= n || !is_digit(s[i])) {
        fail(p, i < n ? i : n, "invalid number: digit expected after '-'");
        return;
    }
    uint64_t mag = 0;
    int overflow = 0;
    if (s[i] == '0') {
        i++;
        if (i < n && is_digit(s[i])) {
            fail(p, start, "invalid number: leading zero");
            return;
        }
    } else {
        while (i < n && is_digit(s[i])) {
            unsigned d = s[i] - '0';
            if (mag > (UINT64_MAX - d) / 10)
                overflow = 1;
            else
                mag = mag * 10 + d;
            i++;
        }
    }
    int integral = 1;
    if (i < n && s[i] == '.') {
        integral = 0;
        i++;
        if (i >= n || !is_digit(s[i])) {
            fail(p, i < n ? i : n, "invalid number: digit expected after '.'");
            return;
        }
        while (i < n && is_digit(s[i])) i++;
    }
    if (i < n && (s[i] == 'e' || s[i] == 'E')) {
        integral = 0;
        i++;
        if (i < n && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= n || !is_digit(s[i])) {
            fail(p, i < n ? i : n, "invalid number: digit expected in exponent");
            return;
        }
        while (i < n && is_digit(s[i])) i++;
    }
    p->i = i;
    v->type = QKV_JSON_NUMBER;
    /* Integers are kept exactly (safetensors offsets, token ids); -0 stays -0.0 as a double. */
    if (integral && !overflow && mag <= (uint64_t)INT64_MAX + neg) {
        v->is_int = 1;
        v->integer = neg ? (mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag) : (int64_t)mag;
        v->number = neg && mag == 0 ? -0.0 : (double)v->integer;
        return;
    }
    /* strtod honours the locale's decimal point, so hand it that character instead of '.'. */
    size_t len = i - start;
    char small[64], *buf = len < sizeof small ? small : malloc(len + 1);
    if (!buf) {
        fail_nomem(p);
        return;
    }
    memcpy(buf, s + start, len);
    buf[len] = '\0';
    char dp = localeconv()->decimal_point[0];
    if (dp != '.' && dp) {
        char *dot = strchr(buf, '.');
        if (dot) *dot = dp;
    }
    v->number = strtod(buf, NULL);
    if (buf != small) free(buf);
    if (isinf(v->number)) fail(p, start, "number out of range of a double");
}

static void parse_value(parser *p, qkv__json *v);

static uint64_t hash_bytes(const char *s, size_t n) {
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t k = 0; k < n; k++) h = (h ^ (unsigned char)s[k]) * 1099511628211ull;
    return h ^ (h >> 29);
}

static int same_key(const qkv__json *a, const qkv__json *b) {
    return a->key_len == b->key_len && memcmp(a->key, b->key, a->key_len) == 0;
}

/* Pass 1 (v == NULL) reserves this container's entry in counts and fills it at the close; pass 2 reads
 * it and takes that many consecutive slots for the children. */
static size_t open_container(parser *p, qkv__json *v, qkv__json_type type, qkv__json **children) {
    if (!p->build) {
        if (p->ncounts == p->counts_cap) {
            size_t cap = p->counts_cap ? 2 * p->counts_cap : 256;
            size_t *c = realloc(p->counts, cap * sizeof *c);
            if (!c) {
                fail_nomem(p);
                return 0;
            }
            p->counts = c;
            p->counts_cap = cap;
        }
        p->counts[p->ncounts] = 0;
        *children = NULL;
        return p->ncounts++;
    }
    size_t count = p->counts[p->next_count++];
    v->type = type;
    v->len = count;
    v->child = count ? p->pool + p->next_slot : NULL;
    *children = count ? p->pool + p->next_slot : NULL;
    p->next_slot += count;
    return count;
}

static void parse_array(parser *p, qkv__json *v) {
    qkv__json *kids;
    size_t slot = open_container(p, v, QKV_JSON_ARRAY, &kids), k = 0;
    if (p->failed) return;
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == ']') {
        p->i++;
    } else {
        for (;; k++) {
            parse_value(p, kids ? &kids[k] : NULL);
            if (p->failed) return;
            skip_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                skip_ws(p);
                if (p->i < p->n && p->s[p->i] == ']') {
                    fail(p, p->i, "trailing comma before ']'");
                    return;
                }
                continue;
            }
            if (p->i < p->n && p->s[p->i] == ']') {
                p->i++;
                k++;
                break;
            }
            fail_unexpected(p, ": expected ',' or ']' in array");
            return;
        }
    }
    if (!p->build) p->counts[slot] = k;
}

static void fail_duplicate(parser *p, size_t pos, const qkv__json *m) {
    int shown = m->key_len > 60 ? 60 : (int)m->key_len;
    fail(p, pos, "duplicate key \"%.*s\"%s", shown, m->key, m->key_len > 60 ? "..." : "");
}

/* Untrusted headers may repeat a key to smuggle a second value past a checker that reads the first
 * one, so a repeated key is an error. Checked as each key arrives (pass 2), so the message points at
 * it: pairwise in small objects, with a hash table of the keys so far in large ones (vocab.json). */
static int check_key(parser *p, qkv__json *kids, size_t k, size_t key_pos, uint32_t *table, size_t mask) {
    if (!table) {
        for (size_t j = 0; j < k; j++)
            if (same_key(&kids[j], &kids[k])) {
                fail_duplicate(p, key_pos, &kids[k]);
                return 0;
            }
        return 1;
    }
    size_t h = (size_t)hash_bytes(kids[k].key, kids[k].key_len) & mask;
    for (; table[h]; h = (h + 1) & mask)
        if (same_key(&kids[table[h] - 1], &kids[k])) {
            fail_duplicate(p, key_pos, &kids[k]);
            return 0;
        }
    table[h] = (uint32_t)(k + 1);
    return 1;
}

static void parse_object(parser *p, qkv__json *v) {
    qkv__json *kids;
    size_t slot = open_container(p, v, QKV_JSON_OBJECT, &kids), k = 0;
    if (p->failed) return;
    uint32_t *table = NULL;
    size_t mask = 0;
    if (kids && v->len > SMALL_OBJECT) {
        size_t cap = 64;
        while (cap < 2 * v->len) cap *= 2;
        table = calloc(cap, sizeof *table);
        if (!table) {
            fail_nomem(p);
            return;
        }
        mask = cap - 1;
    }
    p->i++;
    skip_ws(p);
    if (p->i < p->n && p->s[p->i] == '}') {
        p->i++;
    } else {
        for (;; k++) {
            if (p->i >= p->n || p->s[p->i] != '"') {
                fail_unexpected(p, ": expected a string key");
                break;
            }
            size_t key_pos = p->i, key_len;
            const char *key;
            if (!parse_string(p, &key, &key_len)) break;
            skip_ws(p);
            if (p->i >= p->n || p->s[p->i] != ':') {
                fail_unexpected(p, ": expected ':' after key");
                break;
            }
            p->i++;
            parse_value(p, kids ? &kids[k] : NULL);
            if (p->failed) break;
            if (kids) {
                kids[k].key = key;
                kids[k].key_len = key_len;
                if (!check_key(p, kids, k, key_pos, table, mask)) break;
            }
            skip_ws(p);
            if (p->i < p->n && p->s[p->i] == ',') {
                p->i++;
                skip_ws(p);
                if (p->i < p->n && p->s[p->i] == '}') {
                    fail(p, p->i, "trailing comma before '}'");
                    break;
                }
                continue;
            }
            if (p->i < p->n && p->s[p->i] == '}') {
                p->i++;
                k++;
                break;
            }
            fail_unexpected(p, ": expected ',' or '}' in object");
            break;
        }
    }
    free(table);
    if (!p->build && !p->failed) p->counts[slot] = k;
}

static int literal(parser *p, const char *word) {
    size_t k = strlen(word);
    if (p->n - p->i >= k && memcmp(p->s + p->i, word, k) == 0) {
        p->i += k;
        return 1;
    }
    return 0;
}

/* Parses one value into v (pass 2) or just checks and counts it (pass 1, v == NULL). */
static void parse_value(parser *p, qkv__json *v) {
    qkv__json scratch;
    skip_ws(p);
    if (p->i >= p->n) {
        fail(p, p->n, "unexpected end of input: expected a value");
        return;
    }
    if (!v) {
        v = &scratch;
        p->nodes++;
    }
    memset(v, 0, sizeof *v);
    v->pos = p->i;
    unsigned c = p->s[p->i];
    switch (c) {
    case '{':
    case '[':
        if (++p->depth > QKV_JSON_MAX_DEPTH) {
            fail(p, p->i, "nesting deeper than %d", QKV_JSON_MAX_DEPTH);
            return;
        }
        if (c == '{')
            parse_object(p, p->build ? v : NULL);
        else
            parse_array(p, p->build ? v : NULL);
        p->depth--;
        return;
    case '"':
        if (parse_string(p, &v->str, &v->len)) v->type = QKV_JSON_STRING;
        return;
    case 't':
    case 'f':
    case 'n':
        if (literal(p, "true")) {
            v->type = QKV_JSON_BOOL;
            v->boolean = 1;
        } else if (literal(p, "false")) {
            v->type = QKV_JSON_BOOL;
        } else if (literal(p, "null")) {
            v->type = QKV_JSON_NULL;
        } else {
            fail(p, p->i, "invalid literal (expected true, false or null)");
        }
        return;
    case 'N':
    case 'I':
        fail(p, p->i, "NaN and Infinity are not valid JSON");
        return;
    default:
        if (c == '-' || is_digit(c)) {
            parse_number(p, v);
            return;
        }
        fail_unexpected(p, ": expected a value");
    }
}

void qkv__json_line_col(const char *text, size_t len, size_t pos, size_t *line, size_t *col) {
    size_t l = 1, last = 0;
    if (pos > len) pos = len;
    for (size_t k = 0; k < pos; k++)
        if (text[k] == '\n') {
            l++;
            last = k + 1;
        }
    *line = l;
    *col = pos - last + 1;
}

/* One pass over the whole text. */
static void run_pass(parser *p, qkv__json *root) {
    p->i = 0;
    p->depth = 0;
    parse_value(p, root);
    if (!p->failed) {
        skip_ws(p);
        if (p->i < p->n) fail_unexpected(p, " after the value");
    }
}

qkv__json *qkv__json_parse(const char *text, size_t len, const char *what) {
    if (!what) what = "JSON";
    if (!text && len) {
        qkv__set_error(QKV_ERR_ARG, "%s: NULL text", what);
        return NULL;
    }
    parser p = {0};
    p.s = (const unsigned char *)(text ? text : "");
    p.n = len;
    run_pass(&p, NULL);
    qkv__json *root = NULL;
    if (!p.failed) {
        root = malloc(p.nodes * sizeof(qkv__json) + p.strbytes);
        if (!root) fail_nomem(&p);
    }
    if (!p.failed) {
        p.build = 1;
        p.pool = root;
        p.next_slot = 1;
        p.strs = (char *)(root + p.nodes);
        run_pass(&p, root);
    }
    if (p.failed == 1) {
        size_t line, col;
        qkv__json_line_col(text ? text : "", len, p.err_pos, &line, &col);
        qkv__set_error(QKV_ERR_FORMAT, "%s: invalid JSON at byte %zu (line %zu, column %zu): %s", what, p.err_pos,
                       line, col, p.reason);
    } else if (p.failed == 2) {
        qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory parsing %zu bytes of JSON", what, len);
    }
    free(p.counts);
    if (p.failed) {
        free(root);
        return NULL;
    }
    return root;
}

void qkv__json_free(qkv__json *root) { free(root); }

const qkv__json *qkv__json_get(const qkv__json *obj, const char *key) {
    if (!obj || obj->type != QKV_JSON_OBJECT || !key) return NULL;
    size_t k = strlen(key);
    for (size_t i = 0; i < obj->len; i++) {
        const qkv__json *m = &obj->child[i];
        if (m->key_len == k && memcmp(m->key, key, k) == 0) return m;
    }
    return NULL;
}

size_t qkv__json_len(const qkv__json *v) {
    return v && (v->type == QKV_JSON_ARRAY || v->type == QKV_JSON_OBJECT) ? v->len : 0;
}

const qkv__json *qkv__json_at(const qkv__json *v, size_t i) { return i < qkv__json_len(v) ? &v->child[i] : NULL; }

const char *qkv__json_key_at(const qkv__json *obj, size_t i) {
    return obj && obj->type == QKV_JSON_OBJECT && i < obj->len ? obj->child[i].key : NULL;
}

const char *qkv__json_type_name(qkv__json_type t) {
    static const char *const names[] = {"null", "bool", "number", "string", "array", "object"};
    return (unsigned)t < 6 ? names[t] : "unknown";
}

/* ---- writer ---- */

int qkv__json_write_stringn(FILE *f, const char *str, size_t len, int ascii_only) {
    static const char hexd[] = "0123456789abcdef";
    const unsigned char *s = (const unsigned char *)str;
    char esc[16];
    putc('"', f);
    size_t i = 0;
    while (i < len) {
        size_t run = i;
        while (i < len && s[i] >= 0x20 && s[i] < 0x80 && s[i] != '"' && s[i] != '\\') i++;
        if (i > run) fwrite(s + run, 1, i - run, f);
        if (i >= len) break;
        unsigned c = s[i];
        if (c < 0x80) {
            const char *e = NULL;
            switch (c) {
            case '"': e = "\\\""; break;
            case '\\': e = "\\\\"; break;
            case '\b': e = "\\b"; break;
            case '\f': e = "\\f"; break;
            case '\n': e = "\\n"; break;
            case '\r': e = "\\r"; break;
            case '\t': e = "\\t"; break;
            default:
                snprintf(esc, sizeof esc, "\\u%04x", c);
                e = esc;
            }
            fputs(e, f);
            i++;
            continue;
        }
        uint32_t cp;
        int k = qkv__utf8_decode(s + i, len - i, &cp);
        if (!k) {
            cp = 0xFFFD;
            k = 1;
            if (!ascii_only) {
                fputs("\xEF\xBF\xBD", f);
                i++;
                continue;
            }
        } else if (!ascii_only) {
            fwrite(s + i, 1, (size_t)k, f);
            i += (size_t)k;
            continue;
        }
        i += (size_t)k;
        uint32_t units[2] = {cp, 0};
        int nu = 1;
        if (cp >= 0x10000) {
            units[0] = 0xD800 + ((cp - 0x10000) >> 10);
            units[1] = 0xDC00 + ((cp - 0x10000) & 0x3FF);
            nu = 2;
        }
        for (int u = 0; u < nu; u++) {
            char h[6] = {'\\', 'u', hexd[(units[u] >> 12) & 15], hexd[(units[u] >> 8) & 15], hexd[(units[u] >> 4) & 15],
                         hexd[units[u] & 15]};
            fwrite(h, 1, 6, f);
        }
    }
    putc('"', f);
    return ferror(f) ? -1 : 0;
}

int qkv__json_write_string(FILE *f, const char *s) { return qkv__json_write_stringn(f, s, strlen(s), 0); }

/* chartok.c — the two tokenizers without merges: byte-level (256 ids, id = byte value) and
 * character-level (one id per Unicode code point of a vocabulary built from a text, ids in code point
 * order — Karpathy's char-rnn / nanoGPT shakespeare_char: `chars = sorted(set(text))`).
 *
 * Both live in the shared handle (bpe.h) with each token's bytes, so decode and lookups come from
 * bpe.c. Not here: any notion of words or special tokens; a character outside a char vocabulary is an
 * error rather than an <unk> id, because silently mapping text elsewhere would hide a data bug.
 */
#include <stdlib.h>
#include <string.h>

#include "bpe.h"
#include "core/core_int.h"
#include "core/json.h"

#define N_CODEPOINTS 0x110000u

qkv_tokenizer *qkv_tokenizer_new_bytes(void) {
    qkv_tokenizer *t = qkv__tok_new(QKV_TOKENIZER_BYTES, 256, 256);
    if (!t) return NULL;
    for (int b = 0; b < 256; b++) {
        char c = (char)b;
        qkv__tok_set(t, b, &c, 1);
    }
    int32_t a, b;
    if (qkv__tok_index(t, &a, &b) != QKV_OK) {
        qkv_tokenizer_free(t);
        return NULL;
    }
    return t;
}

/* A char tokenizer over n sorted distinct code points. */
static qkv_tokenizer *from_codepoints(const uint32_t *cps, int64_t n) {
    qkv_tokenizer *t = qkv__tok_new(QKV_TOKENIZER_CHARS, n, (size_t)n * 4);
    if (!t) return NULL;
    for (int64_t i = 0; i < n; i++) {
        char u[4];
        int k = qkv__utf8_encode(cps[i], u);
        qkv__tok_set(t, (int32_t)i, u, (size_t)k);
    }
    int32_t a, b;
    if (qkv__tok_index(t, &a, &b) != QKV_OK) {
        qkv_tokenizer_free(t);
        return NULL;
    }
    return t;
}

qkv_tokenizer *qkv_tokenizer_new_chars(const char *text, size_t len) {
    if (!text && len) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_new_chars: NULL text");
        return NULL;
    }
    size_t bad = qkv__utf8_check(text, len);
    if (bad < len) {
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_new_chars: invalid UTF-8 at byte %zu", bad);
        return NULL;
    }
    /* A bitmap of every code point seen (136 KiB), then the set bits in order = sorted(set(text)). */
    uint8_t *seen = calloc(N_CODEPOINTS / 8, 1);
    if (!seen) {
        qkv__set_error(QKV_ERR_NOMEM, "qkv_tokenizer_new_chars: out of memory");
        return NULL;
    }
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len;) {
        uint32_t cp;
        i += (size_t)qkv__utf8_decode(s + i, len - i, &cp);
        seen[cp >> 3] |= (uint8_t)(1u << (cp & 7));
    }
    int64_t n = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++) n += (seen[cp >> 3] >> (cp & 7)) & 1;
    if (n == 0) {
        free(seen);
        qkv__set_error(QKV_ERR_ARG, "qkv_tokenizer_new_chars: empty text, no characters to build a vocabulary from");
        return NULL;
    }
    uint32_t *cps = malloc((size_t)n * sizeof *cps);
    if (!cps) {
        free(seen);
        qkv__set_error(QKV_ERR_NOMEM, "qkv_tokenizer_new_chars: out of memory");
        return NULL;
    }
    int64_t k = 0;
    for (uint32_t cp = 0; cp < N_CODEPOINTS; cp++)
        if ((seen[cp >> 3] >> (cp & 7)) & 1) cps[k++] = cp;
    free(seen);
    qkv_tokenizer *t = from_codepoints(cps, n);
    free(cps);
    return t;
}

int64_t qkv__chartok_encode(const qkv_tokenizer *t, const char *text, size_t len, int32_t *ids, int64_t cap) {
    const unsigned char *s = (const unsigned char *)text;
    if (t->kind == QKV_TOKENIZER_BYTES) {
        for (size_t i = 0; i < len && (int64_t)i < cap; i++) ids[i] = t->byte_id[s[i]];
        return (int64_t)len;
    }
    int64_t count = 0;
    for (size_t i = 0; i < len;) {
        int32_t id;
        size_t k = 1;
        if (s[i] < 0x80) {
            id = t->byte_id[s[i]];
        } else {
            uint32_t cp;
            k = (size_t)qkv__utf8_decode(s + i, len - i, &cp); /* the caller checked the UTF-8 */
            id = qkv_tokenizer_token_id(t, text + i, k);
        }
        if (id < 0) {
            uint32_t cp;
            qkv__utf8_decode(s + i, len - i, &cp);
            qkv__set_error(QKV_ERR_ARG, "tokenize: character U+%04X at byte %zu is not in the vocabulary (%lld characters)",
                           (unsigned)cp, i, (long long)t->n_vocab);
            return -1;
        }
        if (count < cap) ids[count] = id;
        count++;
        i += k;
    }
    return count;
}

qkv_tokenizer *qkv__chartok_from_vocab(const char *path, const char *text, size_t len) {
    qkv__json *root = qkv__json_parse(text, len, path);
    if (!root) return NULL;
    qkv_tokenizer *t = NULL;
    uint8_t *set = NULL;
    if (root->type != QKV_JSON_OBJECT || root->len == 0 || root->len > INT32_MAX) {
        qkv__set_error(QKV_ERR_FORMAT, "%s: expected a non-empty JSON object {\"character\": id, ...}", path);
        goto done;
    }
    int64_t n = (int64_t)root->len;
    t = qkv__tok_new(QKV_TOKENIZER_CHARS, n, (size_t)n * 4);
    if (!t) goto done;
    set = calloc((size_t)n, 1);
    if (!set) {
        qkv__set_error(QKV_ERR_NOMEM, "%s: out of memory", path);
        goto fail;
    }
    for (size_t i = 0; i < root->len; i++) {
        const qkv__json *v = &root->child[i];
        size_t line, col;
        qkv__json_line_col(text, len, v->pos, &line, &col);
        uint32_t cp;
        int k = v->key_len ? qkv__utf8_decode((const unsigned char *)v->key, v->key_len, &cp) : 0;
        if (!k || (size_t)k != v->key_len) {
            qkv__set_error(QKV_ERR_FORMAT,
                           "%s: line %zu, column %zu: key \"%.*s\" is not one character (a character vocabulary; "
                           "a BPE vocabulary needs merges.txt beside it)",
                           path, line, col, v->key_len > 48 ? 48 : (int)v->key_len, v->key);
            goto fail;
        }
        if (v->type != QKV_JSON_NUMBER || !v->is_int || v->integer < 0 || v->integer >= n || set[v->integer]) {
            qkv__set_error(QKV_ERR_FORMAT, "%s: line %zu, column %zu: character \"%s\" needs an unused integer id in 0..%lld",
                           path, line, col, v->key, (long long)n - 1);
            goto fail;
        }
        set[v->integer] = 1;
        qkv__tok_set(t, (int32_t)v->integer, v->key, v->key_len);
    }
    free(set);
    set = NULL;
    int32_t a, b;
    if (qkv__tok_index(t, &a, &b) != QKV_OK) goto fail; /* duplicate keys were already rejected by the parser */
    goto done;
fail:
    free(set);
    qkv_tokenizer_free(t);
    t = NULL;
done:
    qkv__json_free(root);
    return t;
}

int qkv__chartok_write_vocab(FILE *f, const qkv_tokenizer *t) {
    putc('{', f);
    for (int64_t id = 0; id < t->n_vocab; id++) {
        if (id) fputs(", ", f);
        qkv__json_write_stringn(f, t->tok_bytes + t->tok_off[id], t->tok_len[id], 0);
        fprintf(f, ": %lld", (long long)id);
    }
    fputs("}\n", f);
    return 0;
}

/* bpe.h — the tokenizer handle as bpe.c (GPT-2 byte-level BPE, and everything every kind shares:
 * decode, token lookup, files) and chartok.c (byte- and character-level kinds) both see it.
 *
 * Not public: callers use include/qkv/text.h. The one convention a reader needs: every kind stores the
 * bytes of every token (tok_bytes/tok_off/tok_len) and a bytes -> id hash, so decoding, streaming and
 * lookups are one code path; only encoding differs by kind.
 */
#ifndef QKV_TEXT_BPE_H
#define QKV_TEXT_BPE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "qkv/text.h"

typedef struct {
    uint64_t key; /* left id << 32 | right id; UINT64_MAX = empty */
    int32_t rank; /* merge priority = line order in merges.txt */
    int32_t id;   /* id of the merged token */
} qkv__merge_slot;

typedef struct {
    uint64_t hash;
    uint32_t off; /* into the cache arena: word bytes, then ids (4-byte aligned) */
    uint16_t word_len, n_ids;
} qkv__cache_slot;

typedef struct {
    int32_t rank, left, right, size, id; /* pair of symbols left,right (size bytes together) -> id */
} qkv__bpe_pair;

struct qkv_tokenizer {
    qkv_tokenizer_kind kind;
    int64_t n_vocab;
    int32_t eos; /* <|endoftext|> id or -1 */

    /* Every kind: token id -> bytes (each followed by a NUL in tok_bytes), and bytes -> id. */
    char *tok_bytes;
    uint32_t *tok_off, *tok_len;
    int32_t *tok_hash; /* open addressing, -1 = empty */
    uint32_t tok_hash_mask;
    int32_t byte_id[256]; /* id of each single-byte token (chars: ASCII only), -1 when absent */

    /* BPE */
    int32_t n_merges;
    int32_t *merges; /* 2 * n_merges: left, right id by rank (for saving) */
    qkv__merge_slot *merge_tab;
    uint32_t merge_mask;
    void *re, *md; /* pcre2_code *, pcre2_match_data * (kept void here so pcre2.h stays in bpe.c) */
    int jit;

    /* BPE word cache: word bytes -> ids, bounded; cleared when full. */
    qkv__cache_slot *cache;
    uint32_t cache_mask, cache_count;
    char *cache_arena;
    size_t cache_used, cache_cap;

    /* BPE scratch for one word (grown on demand; why encode is not thread-safe per handle) */
    int32_t *sym; /* 4 arrays of scratch_cap: id, len, prev, next */
    qkv__bpe_pair *heap;
    size_t scratch_cap;
};

/* A handle of the given kind with room for n_vocab tokens whose bytes total at most total_bytes
 * (tok arrays allocated, byte_id all -1, eos -1). NULL + QKV_ERR_NOMEM. */
qkv_tokenizer *qkv__tok_new(qkv_tokenizer_kind kind, int64_t n_vocab, size_t total_bytes);
/* Sets token id's bytes; tokens are appended to tok_bytes in call order. */
void qkv__tok_set(qkv_tokenizer *t, int32_t id, const char *bytes, size_t len);
/* Builds the bytes -> id hash once every token is set. Returns the id of a repeated token's first
 * holder in *dup_a / the repeat in *dup_b and QKV_ERR_FORMAT when two ids have the same bytes. */
qkv_status qkv__tok_index(qkv_tokenizer *t, int32_t *dup_a, int32_t *dup_b);

/* Reads a whole file (NUL-terminated for convenience). NULL + QKV_ERR_IO "path: cannot open: why". */
char *qkv__tok_read_file(const char *path, size_t *len);
/* Writes path atomically: write(f, t) into path.tmp, then rename. write returns 0 on success. */
qkv_status qkv__tok_write_file(const char *path, const qkv_tokenizer *t, int (*write)(FILE *, const qkv_tokenizer *));

/* BPE of one word of n >= 1 bytes into out (room for n ids), no cache: the fast heap version and the
 * plain reference it is tested against (GPT-2's encoder.py bpe()). Return the id count, -1 on error. */
int64_t qkv__bpe_word(qkv_tokenizer *t, const char *w, size_t n, int32_t *out);
int64_t qkv__bpe_word_ref(const qkv_tokenizer *t, const char *w, size_t n, int32_t *out);

/* chartok.c: encoding for the bytes/chars kinds, text already checked to be valid UTF-8. */
int64_t qkv__chartok_encode(const qkv_tokenizer *t, const char *text, size_t len, int32_t *ids, int64_t cap);
/* chartok.c: a character vocabulary from a parsed vocab.json ({"a": 0, ...}); path names it in messages. */
qkv_tokenizer *qkv__chartok_from_vocab(const char *path, const char *text, size_t len);
/* chartok.c: writes vocab.json of a character vocabulary (keys as UTF-8, ids in order). */
int qkv__chartok_write_vocab(FILE *f, const qkv_tokenizer *t);

#endif

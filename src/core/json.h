/* json.h — a strict RFC 8259 JSON reader and a JSON string writer, for the files qkv reads and writes:
 * safetensors headers (untrusted input), config.json, vocab.json, tokenizer.json.
 *
 * Not a general JSON library: there is no DOM editing and no pretty printer; writers print their own
 * structure and use qkv__json_write_string for the one part that is easy to get wrong. The reader is
 * strict on purpose — it rejects duplicate keys, trailing commas, leading zeros, NaN/Infinity, control
 * characters and invalid UTF-8 in strings, lone surrogates, nesting deeper than QKV_JSON_MAX_DEPTH and
 * anything after the value — and says where: "<what>: invalid JSON at byte N (line L, column C): why".
 *
 * Convention a reader needs: a parsed document is one malloc'd block. qkv__json_parse returns the root
 * node at the start of that block and qkv__json_free(root) frees every node and string at once, so
 * pointers into the tree (nodes, strings, keys) live exactly as long as the root. Byte offsets
 * (`pos`, error positions) are 0-based; lines and columns are 1-based (columns count bytes).
 *
 * Also here: the strict UTF-8 helpers the reader needs, shared with the tokenizers (src/text/).
 */
#ifndef QKV_JSON_H
#define QKV_JSON_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define QKV_JSON_MAX_DEPTH 128 /* arrays/objects nested deeper than this are rejected */

typedef enum {
    QKV_JSON_NULL,
    QKV_JSON_BOOL,
    QKV_JSON_NUMBER,
    QKV_JSON_STRING,
    QKV_JSON_ARRAY,
    QKV_JSON_OBJECT,
} qkv__json_type;

typedef struct qkv__json qkv__json;
struct qkv__json {
    qkv__json_type type;
    int boolean;             /* BOOL: 0 or 1 */
    int is_int;              /* NUMBER: written without fraction/exponent and fits int64 exactly */
    int64_t integer;         /* NUMBER: the exact value when is_int, else 0 */
    double number;           /* NUMBER: nearest double (always set, also when is_int) */
    const char *str;         /* STRING: unescaped UTF-8, NUL-terminated; may hold \u0000, so use len */
    size_t len;              /* STRING: bytes in str; ARRAY/OBJECT: number of children */
    const qkv__json *child;  /* ARRAY/OBJECT: the len children, contiguous, in file order (NULL if none) */
    const char *key;         /* member of an OBJECT: its key (NUL-terminated UTF-8); NULL otherwise */
    size_t key_len;          /* bytes in key */
    size_t pos;              /* byte offset of the value in the parsed text (for callers' messages) */
};

/* Parses len bytes of text (no NUL needed). Returns the root, which owns the whole tree, or NULL with
 * qkv_last_error() set: QKV_ERR_FORMAT "<what>: invalid JSON at byte N (line L, column C): <reason>",
 * or QKV_ERR_NOMEM. what labels the input in messages (a file name); NULL reads as "JSON". */
qkv__json *qkv__json_parse(const char *text, size_t len, const char *what);
/* Frees a tree returned by qkv__json_parse (NULL is fine). Only ever pass the root. */
void qkv__json_free(qkv__json *root);

/* The member named key (NUL-terminated) of an object, first match, linear search; NULL when obj is
 * NULL, not an object, or has no such member. For large objects iterate with qkv__json_at instead. */
const qkv__json *qkv__json_get(const qkv__json *obj, const char *key);
/* Number of children of an array or object; 0 for anything else (and for NULL). */
size_t qkv__json_len(const qkv__json *v);
/* Child i of an array or object (NULL when out of range or not a container). */
const qkv__json *qkv__json_at(const qkv__json *v, size_t i);
/* Key of member i of an object (NULL when out of range or not an object). */
const char *qkv__json_key_at(const qkv__json *obj, size_t i);
/* "null", "bool", "number", "string", "array", "object". */
const char *qkv__json_type_name(qkv__json_type t);
/* 1-based line and byte column of byte offset pos in text (for callers' error messages). */
void qkv__json_line_col(const char *text, size_t len, size_t pos, size_t *line, size_t *col);

/* Writes s as a JSON string literal with its quotes: ", \ and control characters escaped (\n, \t, ...,
 * \u00XX), UTF-8 kept as is; a byte that is not valid UTF-8 is written as U+FFFD so the output always
 * parses. Returns 0, or -1 when the stream is in error. */
int qkv__json_write_string(FILE *f, const char *s);
/* Same for len bytes (may contain NUL, written as \u0000). ascii_only: every non-ASCII character as
 * \uXXXX (lowercase hex, surrogate pairs above U+FFFF), byte-identical to Python's json.dumps. */
int qkv__json_write_stringn(FILE *f, const char *s, size_t len, int ascii_only);

/* ---- UTF-8 (strict: no overlong forms, no surrogates, nothing above U+10FFFF) ---- */

/* Decodes one character from s (avail >= 1 bytes). Returns its length 1..4 and sets *cp, or 0 when the
 * bytes at s are not a valid UTF-8 sequence (or the sequence is cut off by avail). */
int qkv__utf8_decode(const unsigned char *s, size_t avail, uint32_t *cp);
/* Offset of the first byte that does not start a valid UTF-8 sequence; len when all of s is valid. */
size_t qkv__utf8_check(const char *s, size_t len);
/* Encodes cp (<= 0x10FFFF, not a surrogate) into out; returns the byte count 1..4 (0 if invalid). */
int qkv__utf8_encode(uint32_t cp, char out[4]);

#endif

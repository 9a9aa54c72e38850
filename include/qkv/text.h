/* qkv/text.h — tokenizers: text (UTF-8) to token ids and back.
 *
 * Three kinds behind one opaque handle:
 *   - GPT-2 byte-level BPE, loaded from Hugging Face `vocab.json` + `merges.txt` (OpenAI's
 *     encoder.json / vocab.bpe are the same files). Results equal Hugging Face `transformers` and
 *     OpenAI tiktoken exactly: GPT-2's pre-tokenisation regex with real Unicode classes, then merges
 *     by rank. `<|endoftext|>` (id 50256) is a special token when the caller allows it.
 *   - byte-level: 256 ids, id = byte value (no vocabulary file needed).
 *   - character-level: one id per Unicode code point of a vocabulary built from a text, ids in code
 *     point order (Karpathy's char-level models: tinyshakespeare has 65).
 * A byte-level BPE can also be trained from a text (qkv_tokenizer_train_bpe).
 * Not here: WordPiece (BERT), Hugging Face tokenizer.json.
 *
 * Ownership: every constructor returns a handle the caller frees with qkv_tokenizer_free (NULL is fine);
 * on failure it returns NULL and qkv_last_error() says what, which file (and line) and why.
 * Thread-safety: qkv_tokenizer_encode updates a cache inside the handle, so one thread at a time per
 * handle (give each thread its own handle); every other call only reads and may run concurrently.
 *
 * Example:
 *     qkv_tokenizer *tok = qkv_tokenizer_load_dir("models/gpt2");       // vocab.json + merges.txt
 *     int32_t ids[64];
 *     int64_t n = qkv_tokenizer_encode(tok, "Hello world", 11, 0, ids, 64);  // n = 2: 15496 995
 *     char *text = qkv_tokenizer_decode(tok, ids, n, NULL);                 // "Hello world"
 *     free(text);
 *     qkv_tokenizer_free(tok);
 */
#ifndef QKV_TEXT_H
#define QKV_TEXT_H

#include <stddef.h>
#include <stdint.h>

#include "qkv/core.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qkv_tokenizer qkv_tokenizer;

typedef enum {
    QKV_TOKENIZER_BPE,   /* byte-level BPE (GPT-2) */
    QKV_TOKENIZER_BYTES, /* 256 ids, id = byte value */
    QKV_TOKENIZER_CHARS, /* one id per code point of a built vocabulary */
} qkv_tokenizer_kind;

/* Loads a GPT-2 style byte-level BPE. vocab_json: {"token": id, ...} with ids dense 0..V-1, every key
 * written in GPT-2's byte-to-unicode alphabet, all 256 single bytes present. merges_txt: an optional
 * "#version" first line, then one merge "left right" per line, rank = order. Fails with QKV_ERR_IO
 * (file missing/unreadable, naming the path) or QKV_ERR_FORMAT (naming the file, line and problem:
 * invalid JSON, duplicate or out-of-range id, merge of an unknown token, ...). */
qkv_tokenizer *qkv_tokenizer_load_gpt2(const char *vocab_json, const char *merges_txt);
/* Loads what qkv_tokenizer_save_dir wrote: dir/vocab.json + dir/merges.txt as GPT-2 BPE (a BPE with no
 * merges whose 256 tokens are the bytes in order reads back as the byte-level kind); dir/vocab.json
 * alone as a character vocabulary ({"a": 0, ...}, each key one code point). */
qkv_tokenizer *qkv_tokenizer_load_dir(const char *dir);
/* Byte-level tokenizer: 256 ids, id = byte value. */
qkv_tokenizer *qkv_tokenizer_new_bytes(void);
/* Character-level tokenizer whose vocabulary is the distinct code points of text (len bytes of UTF-8),
 * sorted: id i = i-th smallest code point. QKV_ERR_ARG on invalid UTF-8 or an empty text. */
qkv_tokenizer *qkv_tokenizer_new_chars(const char *text, size_t len);
/* Learns a byte-level BPE from text (len bytes of UTF-8), GPT-2 style: GPT-2's pre-tokenisation, then
 * repeatedly merge the most frequent adjacent pair within words (ties: smallest ids first). Ids 0..255
 * are the bytes (id = byte value), then the merged tokens in merge order, and <|endoftext|> last (the
 * eos; occurrences of it in text separate documents and are never merged). vocab_size (257..2^24)
 * counts all of them; training stops earlier when no pair occurs twice. Deterministic. Save it with
 * qkv_tokenizer_save_dir. QKV_ERR_RANGE for a bad vocab_size, QKV_ERR_ARG for invalid UTF-8. */
qkv_tokenizer *qkv_tokenizer_train_bpe(const char *text, size_t len, int64_t vocab_size);
void qkv_tokenizer_free(qkv_tokenizer *tok);

qkv_tokenizer_kind qkv_tokenizer_kind_of(const qkv_tokenizer *tok);
/* Number of ids V (ids are 0..V-1): 50257 for GPT-2, 256 for bytes. */
int64_t qkv_tokenizer_vocab_size(const qkv_tokenizer *tok);
/* Id of <|endoftext|>, or -1 when the vocabulary has none (bytes, chars). */
int32_t qkv_tokenizer_eos(const qkv_tokenizer *tok);

/* Encodes len bytes of UTF-8 text (NUL bytes allowed). Writes the first min(count, cap) ids to ids and
 * returns count, the number of ids the whole text needs; when count > cap call again with a larger
 * buffer (count never exceeds len, so cap = len always suffices; ids may be NULL when cap is 0).
 * allow_special: 1 = the literal text "<|endoftext|>" becomes the eos id; 0 = it is ordinary text
 * (tiktoken's encode_ordinary; what the GPT-2 oracles use). Ignored by bytes/chars tokenizers.
 * Returns -1 on error: QKV_ERR_ARG "tokenize: invalid UTF-8 at byte N" (N 0-based), or, for a char
 * vocabulary, a character it does not contain. Not thread-safe per handle (see above). */
int64_t qkv_tokenizer_encode(qkv_tokenizer *tok, const char *text, size_t len, int allow_special, int32_t *ids,
                             int64_t cap);
/* Decodes n ids to their bytes, NUL-terminated, in a malloc'd string the caller frees; *out_len (when
 * not NULL) gets the byte count without the NUL. Ids that split a multi-byte character (a prefix of a
 * generation) give bytes that are not valid UTF-8 on their own; whole encodings give the text back
 * exactly. NULL on error: QKV_ERR_RANGE naming the first id outside 0..V-1 and its position. */
char *qkv_tokenizer_decode(const qkv_tokenizer *tok, const int32_t *ids, int64_t n, size_t *out_len);
/* The bytes of token id (for streaming output), NUL-terminated, owned by tok; *len (when not NULL) gets
 * their count. NULL when id is out of range. "<|endoftext|>" for the eos id. */
const char *qkv_tokenizer_token(const qkv_tokenizer *tok, int32_t id, size_t *len);
/* The id of the token whose bytes are exactly bytes[0..len), or -1 when there is none. */
int32_t qkv_tokenizer_token_id(const qkv_tokenizer *tok, const char *bytes, size_t len);

/* Writes the tokenizer into dir (created when missing, one level) in the files qkv_tokenizer_load_dir
 * reads: vocab.json + merges.txt for BPE and bytes (byte-identical to the Hugging Face files for GPT-2),
 * vocab.json for chars (and a stale dir/merges.txt is removed). Each file is written to a temporary
 * name and renamed into place. QKV_ERR_IO naming the path on failure. */
qkv_status qkv_tokenizer_save_dir(const qkv_tokenizer *tok, const char *dir);

#ifdef __cplusplus
}
#endif
#endif

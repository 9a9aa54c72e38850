/* test_chartok.c — the byte-level (256 ids) and character-level tokenizers (src/text/chartok.c):
 * ids, round trips, unknown characters and invalid UTF-8 with their messages, save -> load, and
 * Karpathy's tinyshakespeare char vocabulary (65 symbols, "hii there" -> 46 47 47 1 58 46 43 56 43)
 * when ../shared/data is there (that part only is skipped, with a note, when it is not).
 */
#include <sys/stat.h>
#include <unistd.h>

#include "testutil.h"

static int roundtrip(qkv_tokenizer *t, const char *s, size_t len) {
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    int64_t n = qkv_tokenizer_encode(t, s, len, 0, ids, (int64_t)len + 1);
    size_t dl = 0;
    char *back = n >= 0 ? qkv_tokenizer_decode(t, ids, n, &dl) : NULL;
    int ok = back && dl == len && memcmp(back, s, len) == 0;
    free(back);
    free(ids);
    return ok;
}

static void test_bytes(void) {
    qkv_tokenizer *t = qkv_tokenizer_new_bytes();
    TU_CHECK(t && qkv_tokenizer_vocab_size(t) == 256 && qkv_tokenizer_eos(t) == -1 &&
                 qkv_tokenizer_kind_of(t) == QKV_TOKENIZER_BYTES,
             "bytes: 256 ids, no eos");
    const char s[] = "h\xc3\xa9llo\n\0!<|endoftext|>";
    size_t len = sizeof s - 1;
    int32_t ids[64];
    int64_t n = qkv_tokenizer_encode(t, s, len, 1, ids, 64);
    int ok = n == (int64_t)len;
    for (size_t k = 0; ok && k < len; k++) ok = ids[k] == (unsigned char)s[k];
    TU_CHECK(ok, "bytes: id = byte value, specials are plain text (%lld ids)", (long long)n);
    TU_CHECK(roundtrip(t, s, len), "bytes round trip");
    int32_t few[4] = {-1, -1, -1, -1};
    n = qkv_tokenizer_encode(t, s, len, 0, few, 3);
    TU_CHECK(n == (int64_t)len && few[0] == 'h' && few[1] == 0xC3 && few[2] == 0xA9 && few[3] == -1,
             "bytes: short buffer returns the full count, writes only cap ids");
    /* Every id decodes to its byte, even those that are not UTF-8 on their own. */
    int32_t all[256];
    for (int b = 0; b < 256; b++) all[b] = b;
    size_t dl;
    char *back = qkv_tokenizer_decode(t, all, 256, &dl);
    ok = back && dl == 256;
    for (int b = 0; ok && b < 256; b++) ok = (unsigned char)back[b] == b;
    TU_CHECK(ok, "bytes: decode of all 256 ids");
    free(back);
    size_t tl;
    const char *tok = qkv_tokenizer_token(t, 0xE9, &tl);
    TU_CHECK(tok && tl == 1 && (unsigned char)tok[0] == 0xE9, "bytes: token(0xE9)");
    TU_CHECK(qkv_tokenizer_token_id(t, "A", 1) == 'A' && qkv_tokenizer_token_id(t, "AB", 2) == -1, "bytes: token_id");
    n = qkv_tokenizer_encode(t, "ab\xfe", 3, 0, ids, 64);
    TU_CHECK(n == -1 && strcmp(qkv_last_error(), "tokenize: invalid UTF-8 at byte 2") == 0, "bytes: invalid UTF-8: %s",
             qkv_last_error());
    int32_t bad[2] = {65, 256};
    TU_CHECK(!qkv_tokenizer_decode(t, bad, 2, NULL) && strstr(qkv_last_error(), "id 256 at position 1"),
             "bytes: decode 256: %s", qkv_last_error());

    /* save -> load_dir gives the byte-level kind back. */
    char tmpl[] = "/tmp/qkv_chartok_XXXXXX";
    char *dir = mkdtemp(tmpl);
    TU_CHECK(qkv_tokenizer_save_dir(t, dir) == QKV_OK, "bytes: save: %s", qkv_last_error());
    qkv_tokenizer *u = qkv_tokenizer_load_dir(dir);
    TU_CHECK(u && qkv_tokenizer_kind_of(u) == QKV_TOKENIZER_BYTES && qkv_tokenizer_vocab_size(u) == 256,
             "bytes: load_dir gives bytes back: %s", u ? "" : qkv_last_error());
    if (u) {
        int32_t a[64], b[64];
        int64_t na = qkv_tokenizer_encode(t, s, len, 0, a, 64), nb = qkv_tokenizer_encode(u, s, len, 0, b, 64);
        TU_CHECK(na == nb && memcmp(a, b, (size_t)na * sizeof *a) == 0, "bytes: same ids after save -> load");
    }
    qkv_tokenizer_free(u);
    char path[1200];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    remove(path);
    rmdir(dir);
    qkv_tokenizer_free(t);
    printf("ok   byte-level: ids = bytes, round trips, all 256 ids decode, save -> load\n");
}

static void test_chars(void) {
    const char *text = "h\xc3\xa9llo w\xc3\xb6rld \xf0\x9f\x98\x80\n\t\x01";
    qkv_tokenizer *t = qkv_tokenizer_new_chars(text, strlen(text));
    TU_CHECK(t != NULL, "chars: built: %s", qkv_last_error());
    if (!t) return;
    /* sorted(set(text)): \x01 \t \n ' ' d e h l o r w é ö 😀 */
    const uint32_t want[] = {0x01, '\t', '\n', ' ', 'd', 'h', 'l', 'o', 'r', 'w', 0xE9, 0xF6, 0x1F600};
    int64_t v = qkv_tokenizer_vocab_size(t);
    TU_CHECK(v == 13 && qkv_tokenizer_kind_of(t) == QKV_TOKENIZER_CHARS && qkv_tokenizer_eos(t) == -1,
             "chars: 13 distinct code points (got %lld)", (long long)v);
    for (int i = 0; i < 13 && i < v; i++) {
        char u[4];
        size_t k = 0, tl;
        uint32_t cp = want[i];
        if (cp < 0x80) u[k++] = (char)cp;
        else if (cp < 0x800) { u[k++] = (char)(0xC0 | cp >> 6); u[k++] = (char)(0x80 | (cp & 0x3F)); }
        else { u[k++] = (char)(0xF0 | cp >> 18); u[k++] = (char)(0x80 | ((cp >> 12) & 0x3F));
               u[k++] = (char)(0x80 | ((cp >> 6) & 0x3F)); u[k++] = (char)(0x80 | (cp & 0x3F)); }
        const char *tok = qkv_tokenizer_token(t, i, &tl);
        TU_CHECK(tok && tl == k && memcmp(tok, u, k) == 0, "chars: id %d is U+%04X", i, (unsigned)cp);
        TU_CHECK(qkv_tokenizer_token_id(t, u, k) == i, "chars: token_id(U+%04X) = %d", (unsigned)cp, i);
    }
    int32_t ids[64];
    int64_t n = qkv_tokenizer_encode(t, "w\xc3\xb6rld\xf0\x9f\x98\x80", 10, 0, ids, 64);
    TU_CHECK(n == 6 && ids[0] == 9 && ids[1] == 11 && ids[2] == 8 && ids[3] == 6 && ids[4] == 4 && ids[5] == 12,
             "chars: encode \"wörld😀\"");
    TU_CHECK(roundtrip(t, text, strlen(text)), "chars: round trip");
    n = qkv_tokenizer_encode(t, "hollo!", 6, 0, ids, 64);
    TU_CHECK(n == -1 && strstr(qkv_last_error(), "tokenize: character U+0021 at byte 5 is not in the vocabulary"),
             "chars: unknown character: %s", qkv_last_error());
    n = qkv_tokenizer_encode(t, "h\xe4\xbd\xa0", 4, 0, ids, 64);
    TU_CHECK(n == -1 && strstr(qkv_last_error(), "character U+4F60 at byte 1"), "chars: unknown CJK: %s",
             qkv_last_error());
    n = qkv_tokenizer_encode(t, "hel\xc3", 4, 0, ids, 64);
    TU_CHECK(n == -1 && strcmp(qkv_last_error(), "tokenize: invalid UTF-8 at byte 3") == 0, "chars: invalid UTF-8: %s",
             qkv_last_error());

    /* save -> load_dir (vocab.json alone) gives the same vocabulary; a stale merges.txt is removed. */
    char tmpl[] = "/tmp/qkv_chartok_XXXXXX";
    char *dir = mkdtemp(tmpl);
    char vpath[1200], mpath[1200];
    snprintf(vpath, sizeof vpath, "%s/vocab.json", dir);
    snprintf(mpath, sizeof mpath, "%s/merges.txt", dir);
    FILE *f = fopen(mpath, "w");
    fputs("#version: 0.2\n", f);
    fclose(f);
    TU_CHECK(qkv_tokenizer_save_dir(t, dir) == QKV_OK, "chars: save: %s", qkv_last_error());
    TU_CHECK(access(mpath, F_OK) != 0, "chars: stale merges.txt removed");
    qkv_tokenizer *u = qkv_tokenizer_load_dir(dir);
    TU_CHECK(u && qkv_tokenizer_kind_of(u) == QKV_TOKENIZER_CHARS && qkv_tokenizer_vocab_size(u) == 13,
             "chars: load_dir: %s", u ? "" : qkv_last_error());
    for (int i = 0; u && i < 13; i++) {
        size_t la, lb;
        const char *a = qkv_tokenizer_token(t, i, &la), *b = qkv_tokenizer_token(u, i, &lb);
        TU_CHECK(la == lb && memcmp(a, b, la) == 0, "chars: token %d after save -> load", i);
    }
    qkv_tokenizer_free(u);
    /* A BPE-looking vocab.json without merges.txt is not a char vocabulary: say so. */
    f = fopen(vpath, "w");
    fputs("{\"a\": 0, \"ab\": 1}", f);
    fclose(f);
    u = qkv_tokenizer_load_dir(dir);
    TU_CHECK(!u && strstr(qkv_last_error(), "key \"ab\" is not one character") &&
                 strstr(qkv_last_error(), "merges.txt"),
             "chars: multi-character key: %s", qkv_last_error());
    f = fopen(vpath, "w");
    fputs("{\"a\": 0, \"b\": 0}", f);
    fclose(f);
    u = qkv_tokenizer_load_dir(dir);
    TU_CHECK(!u && strstr(qkv_last_error(), "character \"b\" needs an unused integer id in 0..1"),
             "chars: duplicate id: %s", qkv_last_error());
    remove(vpath);
    rmdir(dir);
    qkv_tokenizer_free(t);

    TU_CHECK(!qkv_tokenizer_new_chars("", 0) && strstr(qkv_last_error(), "empty text"), "chars: empty text: %s",
             qkv_last_error());
    TU_CHECK(!qkv_tokenizer_new_chars("ab\xff", 3) && strstr(qkv_last_error(), "invalid UTF-8 at byte 2"),
             "chars: invalid UTF-8 text: %s", qkv_last_error());
    printf("ok   char-level: sorted code points, encode/decode, unknown characters, save -> load\n");
}

static void test_shakespeare(void) {
    const char *d = getenv("QKV_SHARED_DATA");
    char path[1024];
    snprintf(path, sizeof path, "%s/tinyshakespeare/input.txt", d && *d ? d : "../shared/data");
    FILE *f = fopen(path, "rb");
    if (!f) {
        printf("NOTE: %s not found; tinyshakespeare char-vocabulary check skipped (set QKV_SHARED_DATA)\n", path);
        return;
    }
    fseek(f, 0, SEEK_END);
    size_t len = (size_t)ftell(f);
    rewind(f);
    char *text = malloc(len);
    TU_CHECK(fread(text, 1, len, f) == len, "read tinyshakespeare");
    fclose(f);
    qkv_tokenizer *t = qkv_tokenizer_new_chars(text, len);
    TU_CHECK(t && qkv_tokenizer_vocab_size(t) == 65, "tinyshakespeare has 65 characters");
    int32_t ids[16];
    int64_t n = qkv_tokenizer_encode(t, "hii there", 9, 0, ids, 16);
    const int32_t want[9] = {46, 47, 47, 1, 58, 46, 43, 56, 43};
    TU_CHECK(n == 9 && memcmp(ids, want, sizeof want) == 0, "\"hii there\" -> 46 47 47 1 58 46 43 56 43 (Karpathy)");
    TU_CHECK(roundtrip(t, text, len), "tinyshakespeare round trip");
    qkv_tokenizer_free(t);
    free(text);
    printf("ok   tinyshakespeare: 65 characters, \"hii there\" as in Karpathy's nanoGPT lecture\n");
}

int main(void) {
    test_bytes();
    test_chars();
    test_shakespeare();
    return tu_finish("test_chartok");
}

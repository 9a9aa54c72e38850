/* test_gpt2_tokenizer.c — the GPT-2 byte-level BPE (src/text/bpe.c) against independent references:
 *   - ../shared/data/gpt2-tokenizer/oracle/gpt2_oracle.json: 30 texts -> ids from OpenAI tiktoken
 *     (+ 2 special-token cases, both behaviours), cross-checked there with three other implementations;
 *   - oracle/llamacpp/ggml-vocab-gpt-2.gguf.inp/.out: 46 texts -> ids from Python `transformers`;
 *   - the fast heap BPE against GPT-2's plain encoder.py algorithm (qkv__bpe_word_ref) on many words;
 *   - decode(encode(text)) == text for every text; save -> load gives byte-identical files and ids;
 *   - bad input: missing/truncated/corrupt vocab.json, bad merges.txt lines, invalid UTF-8, bad ids;
 *   - throughput on tinyshakespeare (printed);
 *   - BPE training: merges identical to a plain textbook trainer, training words re-encode to their
 *     training segmentation, a 1024-token vocabulary on tinyshakespeare round trips and saves.
 * Skips loudly (exit 77) when ../shared/data is absent (set QKV_SHARED_DATA).
 */
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "core/json.h"
#include "testutil.h"
#include "text/bpe.h"

static char dir_data[1024], vocab_path[1100], merges_path[1100];

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static char *read_all(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    *len = fread(buf, 1, (size_t)n, f);
    buf[*len] = '\0';
    fclose(f);
    return buf;
}

static void write_all(const char *path, const char *data, size_t len) {
    FILE *f = fopen(path, "wb");
    if (!f || fwrite(data, 1, len, f) != len) {
        printf("FAIL: cannot write %s\n", path);
        exit(1);
    }
    fclose(f);
}

/* Encodes text; returns a malloc'd id array (count in *n) or NULL with *n = -1. */
static int32_t *encode(qkv_tokenizer *tok, const char *text, size_t len, int special, int64_t *n) {
    int32_t *ids = malloc((len + 1) * sizeof *ids);
    *n = qkv_tokenizer_encode(tok, text, len, special, ids, (int64_t)len + 1);
    if (*n < 0) {
        free(ids);
        return NULL;
    }
    return ids;
}

static void print_ids(const char *label, const int32_t *ids, int64_t n) {
    printf("    %s (%lld):", label, (long long)n);
    for (int64_t k = 0; k < n && k < 40; k++) printf(" %d", (int)ids[k]);
    printf("%s\n", n > 40 ? " ..." : "");
}

/* Encodes text and compares with want; also decode(encode(text)) == text. Returns 1 when both hold. */
static int check_case(qkv_tokenizer *tok, const char *name, const char *text, size_t len, int special,
                      const int32_t *want, int64_t nwant) {
    int64_t n;
    int32_t *ids = encode(tok, text, len, special, &n);
    int ok = ids && n == nwant && memcmp(ids, want, (size_t)n * sizeof *ids) == 0;
    if (!ok) {
        printf("FAIL case %s: %s\n", name, ids ? "ids differ" : qkv_last_error());
        if (ids) print_ids("got ", ids, n);
        print_ids("want", want, nwant);
    }
    int rt = 0;
    if (ids) {
        size_t dl;
        char *back = qkv_tokenizer_decode(tok, ids, n, &dl);
        rt = back && dl == len && memcmp(back, text, len) == 0;
        if (!rt) printf("FAIL case %s: decode(encode(text)) != text\n", name);
        free(back);
    }
    free(ids);
    TU_CHECK(ok && rt, "case %s", name);
    return ok && rt;
}

static int32_t *json_ids(const qkv__json *arr, int64_t *n) {
    *n = (int64_t)qkv__json_len(arr);
    int32_t *ids = malloc((size_t)(*n + 1) * sizeof *ids);
    for (int64_t k = 0; k < *n; k++) ids[k] = (int32_t)qkv__json_at(arr, (size_t)k)->integer;
    return ids;
}

static void test_tiktoken_oracle(qkv_tokenizer *tok) {
    char path[1200];
    snprintf(path, sizeof path, "%s/oracle/gpt2_oracle.json", dir_data);
    size_t len;
    char *text = read_all(path, &len);
    qkv__json *root = text ? qkv__json_parse(text, len, path) : NULL;
    TU_CHECK(root != NULL, "oracle parses: %s", qkv_last_error());
    if (!root) return;
    const qkv__json *cases = qkv__json_get(root, "cases");
    int pass = 0, total = 0;
    for (size_t i = 0; i < qkv__json_len(cases); i++) {
        const qkv__json *c = qkv__json_at(cases, i);
        const qkv__json *t = qkv__json_get(c, "text");
        int64_t nw;
        int32_t *want = json_ids(qkv__json_get(c, "ids"), &nw);
        pass += check_case(tok, qkv__json_get(c, "id")->str, t->str, t->len, 0, want, nw);
        total++;
        free(want);
    }
    const qkv__json *special = qkv__json_get(root, "special_token_cases");
    int spass = 0, stotal = 0;
    for (size_t i = 0; i < qkv__json_len(special); i++) {
        const qkv__json *c = qkv__json_at(special, i);
        const qkv__json *t = qkv__json_get(c, "text");
        for (int allow = 0; allow < 2; allow++) {
            int64_t nw;
            int32_t *want = json_ids(qkv__json_get(c, allow ? "ids_allowed_special" : "ids_as_plain_text"), &nw);
            char name[64];
            snprintf(name, sizeof name, "special_%zu_%s", i, allow ? "allowed" : "plain");
            spass += check_case(tok, name, t->str, t->len, allow, want, nw);
            stotal++;
            free(want);
        }
    }
    TU_CHECK(total == 30 && stotal == 4, "oracle has 30 cases + 2 special (got %d, %d)", total, stotal / 2);
    printf("%-4s tiktoken oracle: %d/%d texts, %d/%d special-token cases (allowed and plain), round trips included\n",
           pass == total && spass == stotal ? "ok" : "FAIL", pass, total, spass, stotal);
    qkv__json_free(root);
    free(text);
}

static void test_llamacpp_oracle(qkv_tokenizer *tok) {
    char ipath[1200], opath[1200];
    snprintf(ipath, sizeof ipath, "%s/oracle/llamacpp/ggml-vocab-gpt-2.gguf.inp", dir_data);
    snprintf(opath, sizeof opath, "%s/oracle/llamacpp/ggml-vocab-gpt-2.gguf.out", dir_data);
    size_t ilen, olen;
    char *inp = read_all(ipath, &ilen), *out = read_all(opath, &olen);
    TU_CHECK(inp && out, "read %s and .out", ipath);
    if (!inp || !out) return;
    static const char sep[] = "\n__ggml_vocab_test__\n";
    const char *t = inp, *o = out;
    int pass = 0, total = 0;
    for (;;) {
        const char *end = memmem(t, (size_t)(inp + ilen - t), sep, sizeof sep - 1);
        if (!end) break;
        const char *eol = memchr(o, '\n', (size_t)(out + olen - o));
        if (!eol) {
            TU_CHECK(0, "llama.cpp .out has fewer lines than .inp has texts");
            break;
        }
        int32_t want[512];
        int64_t nw = 0;
        for (const char *q = o; q < eol;) {
            char *next;
            long v = strtol(q, &next, 10);
            if (next == q) break;
            want[nw++] = (int32_t)v;
            q = next;
        }
        char name[32];
        snprintf(name, sizeof name, "llamacpp_%d", total);
        pass += check_case(tok, name, t, (size_t)(end - t), 0, want, nw);
        total++;
        t = end + sizeof sep - 1;
        o = eol + 1;
    }
    TU_CHECK(total == 46, "llama.cpp oracle has 46 texts (got %d)", total);
    printf("%-4s llama.cpp / transformers oracle: %d/%d texts, round trips included\n", pass == total ? "ok" : "FAIL",
           pass, total);
    free(inp);
    free(out);
}

/* The heap BPE must give exactly what GPT-2's plain algorithm gives, word by word. */
static void test_against_reference(qkv_tokenizer *tok, const char *corpus, size_t clen) {
    int32_t a[4096], b[4096];
    int words = 0, bad = 0;
    /* Words of the corpus, split at spaces (with the leading space, as pre-tokenisation leaves them). */
    for (size_t i = 0; i < clen && words < 20000;) {
        size_t j = i + 1;
        while (j < clen && corpus[j] != ' ' && corpus[j] != '\n' && j - i < 4000) j++;
        int64_t na = qkv__bpe_word(tok, corpus + i, j - i, a), nb = qkv__bpe_word_ref(tok, corpus + i, j - i, b);
        if (na != nb || memcmp(a, b, (size_t)na * sizeof *a)) bad++;
        words++;
        i = j;
    }
    /* Random letter strings (long words, many competing merges) and repeats like "aaaa...". */
    uint64_t s = 7;
    char w[2048];
    for (int it = 0; it < 3000; it++) {
        size_t n = 2 + (size_t)(it % 200) * (it % 7 == 0 ? 10 : 1);
        for (size_t k = 0; k < n; k++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            w[k] = it % 5 == 0 ? "ab"[(s >> 40) & 1] : it % 5 == 1 ? 'a' : "etaoin shrdlu"[(s >> 40) % 13];
        }
        int64_t na = qkv__bpe_word(tok, w, n, a), nb = qkv__bpe_word_ref(tok, w, n, b);
        if (na != nb || memcmp(a, b, (size_t)na * sizeof *a)) bad++;
        words++;
    }
    TU_CHECK(bad == 0, "heap BPE differs from GPT-2's reference algorithm on %d of %d words", bad, words);
    printf("%-4s heap BPE == reference encoder.py bpe() on %d words (%d differ)\n", bad ? "FAIL" : "ok", words, bad);
}

static void test_misc(qkv_tokenizer *tok) {
    TU_CHECK(qkv_tokenizer_vocab_size(tok) == 50257, "vocab size 50257");
    TU_CHECK(qkv_tokenizer_eos(tok) == 50256, "eos 50256");
    TU_CHECK(qkv_tokenizer_kind_of(tok) == QKV_TOKENIZER_BPE, "kind BPE");
    size_t len;
    const char *t = qkv_tokenizer_token(tok, 50256, &len);
    TU_CHECK(t && len == 13 && strcmp(t, "<|endoftext|>") == 0, "token(50256) = <|endoftext|>");
    t = qkv_tokenizer_token(tok, 262, &len);
    TU_CHECK(t && strcmp(t, " the") == 0 && len == 4, "token(262) = \" the\"");
    TU_CHECK(qkv_tokenizer_token(tok, 50257, NULL) == NULL && qkv_tokenizer_token(tok, -1, NULL) == NULL,
             "token() out of range -> NULL");
    TU_CHECK(qkv_tokenizer_token_id(tok, " the", 4) == 262 && qkv_tokenizer_token_id(tok, "\n", 1) == 198 &&
                 qkv_tokenizer_token_id(tok, "qqqqqqqq", 8) == -1,
             "token_id lookups");

    /* The two-call pattern: a short buffer still returns the full count and fills what it can. */
    const char *s = "Hello world, this is a test.";
    int32_t small[3] = {-7, -7, -7}, full[64];
    int64_t n = qkv_tokenizer_encode(tok, s, strlen(s), 0, small, 2);
    int64_t m = qkv_tokenizer_encode(tok, s, strlen(s), 0, full, 64);
    TU_CHECK(n == m && n == 8 && small[0] == full[0] && small[1] == full[1] && small[2] == -7,
             "cap smaller than needed: count %lld, first ids written, nothing past cap", (long long)n);
    TU_CHECK(qkv_tokenizer_encode(tok, s, strlen(s), 0, NULL, 0) == 8, "count only (ids NULL, cap 0)");
    TU_CHECK(qkv_tokenizer_encode(tok, "", 0, 0, NULL, 0) == 0, "empty text -> 0 ids");

    /* Special tokens: split before pre-tokenisation, so neighbours are unaffected. */
    const char *sp = "a<|endoftext|><|endoftext|>b<|endoftext";
    int32_t ids[32];
    n = qkv_tokenizer_encode(tok, sp, strlen(sp), 1, ids, 32);
    TU_CHECK(n >= 4 && ids[1] == 50256 && ids[2] == 50256, "adjacent specials");
    size_t dl;
    char *back = qkv_tokenizer_decode(tok, ids, n, &dl);
    TU_CHECK(back && dl == strlen(sp) && strcmp(back, sp) == 0, "special round trip");
    free(back);

    /* Invalid UTF-8 is an error that says where. */
    struct {
        const char *s;
        size_t len, at;
    } bad[] = {{"abc\xff", 4, 3}, {"\xc0\x80", 2, 0}, {"ok \xed\xa0\x80", 6, 3}, {"12345678\xe2\x82", 10, 8},
               {"\xf4\x90\x80\x80", 4, 0}, {"caf\xc3", 4, 3}};
    for (size_t k = 0; k < sizeof bad / sizeof bad[0]; k++) {
        char want[64];
        snprintf(want, sizeof want, "tokenize: invalid UTF-8 at byte %zu", bad[k].at);
        n = qkv_tokenizer_encode(tok, bad[k].s, bad[k].len, 0, ids, 32);
        TU_CHECK(n == -1 && strcmp(qkv_last_error(), want) == 0, "invalid UTF-8 case %zu: %s", k, qkv_last_error());
    }
    /* Decode rejects ids outside the vocabulary, naming the id and where it is. */
    int32_t badids[3] = {15496, 50257, 995};
    TU_CHECK(qkv_tokenizer_decode(tok, badids, 3, NULL) == NULL && strstr(qkv_last_error(), "id 50257 at position 1"),
             "decode out of range: %s", qkv_last_error());
    badids[1] = -1;
    TU_CHECK(qkv_tokenizer_decode(tok, badids, 3, NULL) == NULL && strstr(qkv_last_error(), "id -1 at position 1"),
             "decode negative id: %s", qkv_last_error());
    back = qkv_tokenizer_decode(tok, NULL, 0, &dl);
    TU_CHECK(back && dl == 0 && back[0] == '\0', "decode of nothing is \"\"");
    free(back);
    TU_CHECK(qkv_tokenizer_encode(NULL, "a", 1, 0, ids, 1) == -1, "NULL tokenizer -> -1");
    qkv_tokenizer_free(NULL);
    printf("ok   lookups, short buffers, specials, invalid UTF-8 and bad ids rejected with positions\n");
}

/* Pathological inputs: huge whitespace runs and huge words stay linear-ish and round trip. */
static void test_long_inputs(qkv_tokenizer *tok) {
    size_t n = 200000;
    char *s = malloc(n + 2);
    const char *fills[] = {" ", "a", "\n", "1", "!", "\xc3\xa9"};
    for (int f = 0; f < 6; f++) {
        size_t fl = strlen(fills[f]), len = 0;
        while (len + fl <= n) {
            memcpy(s + len, fills[f], fl);
            len += fl;
        }
        s[len++] = 'x';
        double t0 = now_s();
        int64_t cnt;
        int32_t *ids = encode(tok, s, len, 0, &cnt);
        double dt = now_s() - t0;
        char *back = ids ? qkv_tokenizer_decode(tok, ids, cnt, NULL) : NULL;
        TU_CHECK(ids && back && memcmp(back, s, len) == 0, "long run of '%s' round trips", fills[f]);
        TU_CHECK(dt < 5.0, "long run of '%s' took %.2f s", fills[f], dt);
        free(ids);
        free(back);
    }
    free(s);
    printf("ok   200 KB runs of one character (space, letter, newline, digit, punctuation, é) round trip\n");
}

static void test_bad_files(void) {
    char tmpl[] = "/tmp/qkv_tok_XXXXXX";
    char *dir = mkdtemp(tmpl);
    TU_CHECK(dir != NULL, "mkdtemp");
    if (!dir) return;
    char v[1200], m[1200];
    snprintf(v, sizeof v, "%s/vocab.json", dir);
    snprintf(m, sizeof m, "%s/merges.txt", dir);
    size_t vlen, mlen;
    char *vocab = read_all(vocab_path, &vlen), *merges = read_all(merges_path, &mlen);

    /* Missing files name the path. */
    qkv_tokenizer *t = qkv_tokenizer_load_gpt2("/nonexistent/vocab.json", merges_path);
    TU_CHECK(!t && strstr(qkv_last_error(), "/nonexistent/vocab.json: cannot open"), "missing vocab: %s", qkv_last_error());
    t = qkv_tokenizer_load_gpt2(vocab_path, "/nonexistent/merges.txt");
    TU_CHECK(!t && strstr(qkv_last_error(), "/nonexistent/merges.txt: cannot open"), "missing merges: %s",
             qkv_last_error());
    t = qkv_tokenizer_load_dir("/nonexistent");
    TU_CHECK(!t && strstr(qkv_last_error(), "/nonexistent/vocab.json: cannot open"), "missing dir: %s", qkv_last_error());
    t = qkv_tokenizer_load_gpt2(dir, merges_path);
    TU_CHECK(!t && strstr(qkv_last_error(), "cannot read: Is a directory"), "directory as vocab: %s", qkv_last_error());

    struct {
        const char *what;
        const char *vocab; /* NULL: the real one, truncated to vlen/2 when "truncated" */
        const char *expect;
    } bad_vocab[] = {
        {"truncated", NULL, "invalid JSON at byte 521150"},
        {"not an object", "[1, 2]", "expected a non-empty JSON object"},
        {"empty", "{}", "found an empty object"},
        {"non-integer id", "{\"a\": 1.5}", "token \"a\": the id must be an integer, found number"},
        {"string id", "{\"a\": \"0\"}", "the id must be an integer, found string"},
        {"id out of range", "{\"a\": 0, \"b\": 2}", "token \"b\" has id 2, outside 0..1"},
        {"duplicate id", "{\"a\": 0, \"b\": 0}", "id 0 is used twice: by \"a\" and by \"b\""},
        {"duplicate key", "{\"a\": 0, \"a\": 1}", "duplicate key \"a\""},
        {"not byte-level", "{\"a\": 0, \"\xe4\xbd\xa0\": 1}", "character U+4F60 is not in GPT-2's byte-to-unicode alphabet"},
        {"missing bytes", "{\"a\": 0, \"b\": 1}", "no token for byte 0x00 (\"\xc4\x80\")"},
    };
    for (size_t k = 0; k < sizeof bad_vocab / sizeof bad_vocab[0]; k++) {
        if (bad_vocab[k].vocab)
            write_all(v, bad_vocab[k].vocab, strlen(bad_vocab[k].vocab));
        else
            write_all(v, vocab, vlen / 2);
        t = qkv_tokenizer_load_gpt2(v, merges_path);
        TU_CHECK(!t && strstr(qkv_last_error(), v) == qkv_last_error() && strstr(qkv_last_error(), bad_vocab[k].expect),
                 "vocab %s: %s", bad_vocab[k].what, qkv_last_error());
        qkv_tokenizer_free(t);
    }
    /* Corrupt a real id in the middle of the file: the message gives line and column. */
    char *corrupt = malloc(vlen + 1);
    memcpy(corrupt, vocab, vlen + 1);
    char *at = strstr(corrupt, "\"\\u0120the\": 262");
    memcpy(at, "\"\\u0120the\": 263", 16);
    write_all(v, corrupt, vlen);
    t = qkv_tokenizer_load_gpt2(v, merges_path);
    TU_CHECK(!t && strstr(qkv_last_error(), "line 1, column ") && strstr(qkv_last_error(), "id 263 is used twice"),
             "corrupt id: %s", qkv_last_error());
    free(corrupt);

    write_all(v, vocab, vlen);
    struct {
        const char *what, *merges, *expect;
    } bad_merges[] = {
        {"unknown token", "#version: 0.2\n\xc4\xa0 t\nqqqqzz t\n", "line 3: token \"qqqqzz\" is not in the vocabulary"},
        {"unknown right token", "#version: 0.2\nt qqqqzz\n", "line 2: token \"qqqqzz\" is not in the vocabulary"},
        {"merged not in vocab", "#version: 0.2\nqq zz\n", "line 2: the merged token \"qqzz\" is not in the vocabulary"},
        {"one token", "#version: 0.2\n\xc4\xa0t\n", "line 2: expected two tokens separated by one space"},
        {"three tokens", "#version: 0.2\na b c\n", "line 2: expected two tokens"},
        {"double space", "a  b\n", "line 1: expected two tokens"},
        {"blank line", "#version: 0.2\n\xc4\xa0 t\n\nh e\n", "line 3: expected two tokens"},
        {"duplicate", "\xc4\xa0 t\nh e\n\xc4\xa0 t\n", "line 3: duplicate merge \"\xc4\xa0 t\" (already rank 0)"},
        {"not byte-level", "\xe4\xbd\xa0 a\n", "line 1: token \"\xe4\xbd\xa0\" is not in the vocabulary"},
    };
    for (size_t k = 0; k < sizeof bad_merges / sizeof bad_merges[0]; k++) {
        write_all(m, bad_merges[k].merges, strlen(bad_merges[k].merges));
        t = qkv_tokenizer_load_gpt2(v, m);
        TU_CHECK(!t && strstr(qkv_last_error(), m) == qkv_last_error() && strstr(qkv_last_error(), bad_merges[k].expect),
                 "merges %s: %s", bad_merges[k].what, qkv_last_error());
        qkv_tokenizer_free(t);
    }
    /* No "#version" header, CRLF line ends, no final newline: all fine. */
    write_all(m, "\xc4\xa0 t\r\nh e", 9);
    t = qkv_tokenizer_load_gpt2(v, m);
    TU_CHECK(t != NULL, "merges without header, CRLF, no final newline: %s", qkv_last_error());
    if (t) {
        int32_t ids[8];
        int64_t n = qkv_tokenizer_encode(t, " the", 4, 0, ids, 8);
        TU_CHECK(n == 2 && ids[0] == qkv_tokenizer_token_id(t, " t", 2) && ids[1] == qkv_tokenizer_token_id(t, "he", 2),
                 "only the two merges apply: \" the\" -> \" t\" \"he\" (%lld ids)", (long long)n);
    }
    qkv_tokenizer_free(t);
    remove(v);
    remove(m);
    rmdir(dir);
    free(vocab);
    free(merges);
    printf("ok   bad files: missing, truncated, corrupt vocab.json, bad merges.txt lines (file and line named)\n");
}

static void test_save_load(qkv_tokenizer *tok, const char *corpus, size_t clen) {
    char tmpl[] = "/tmp/qkv_tok_XXXXXX";
    char *dir = mkdtemp(tmpl);
    char sub[1200], v[1300], m[1300];
    snprintf(sub, sizeof sub, "%s/gpt2", dir);
    qkv_status st = qkv_tokenizer_save_dir(tok, sub);
    TU_CHECK(st == QKV_OK, "save_dir: %s", qkv_last_error());
    snprintf(v, sizeof v, "%s/vocab.json", sub);
    snprintf(m, sizeof m, "%s/merges.txt", sub);
    size_t a1, a2, b1, b2;
    char *va = read_all(v, &a1), *vb = read_all(vocab_path, &a2), *ma = read_all(m, &b1), *mb = read_all(merges_path, &b2);
    TU_CHECK(va && a1 == a2 && memcmp(va, vb, a1) == 0, "saved vocab.json is byte-identical to GPT-2's (%zu bytes)", a1);
    TU_CHECK(ma && b1 == b2 && memcmp(ma, mb, b1) == 0, "saved merges.txt is byte-identical to GPT-2's (%zu bytes)", b1);
    free(va);
    free(vb);
    free(ma);
    free(mb);
    qkv_tokenizer *back = qkv_tokenizer_load_dir(sub);
    TU_CHECK(back != NULL, "load_dir of the saved tokenizer: %s", qkv_last_error());
    if (back) {
        size_t n = clen < 200000 ? clen : 200000;
        int64_t na, nb;
        int32_t *x = encode(tok, corpus, n, 1, &na), *y = encode(back, corpus, n, 1, &nb);
        TU_CHECK(x && y && na == nb && memcmp(x, y, (size_t)na * sizeof *x) == 0, "same ids after save -> load");
        free(x);
        free(y);
    }
    qkv_tokenizer_free(back);
    /* A tmp file never stays behind, and a failed save names the path. */
    char tmpv[1400];
    snprintf(tmpv, sizeof tmpv, "%s.tmp.%ld", v, (long)getpid());
    TU_CHECK(access(tmpv, F_OK) != 0, "no temporary file left");
    remove(v);
    remove(m);
    rmdir(sub);
    rmdir(dir);
    st = qkv_tokenizer_save_dir(tok, "/nonexistent/a/b");
    TU_CHECK(st == QKV_ERR_IO && strstr(qkv_last_error(), "/nonexistent/a/b: cannot create directory"),
             "save into an impossible dir: %s", qkv_last_error());
    printf("ok   save -> vocab.json + merges.txt byte-identical to GPT-2's; load_dir gives the same ids\n");
}

static void test_throughput(qkv_tokenizer *tok, const char *corpus, size_t clen) {
    int32_t *ids = malloc(clen * sizeof *ids);
    double best = 1e9, cold = 0;
    int64_t n = 0;
    for (int rep = 0; rep < 3; rep++) {
        double t0 = now_s();
        n = qkv_tokenizer_encode(tok, corpus, clen, 0, ids, (int64_t)clen);
        double dt = now_s() - t0;
        if (rep == 0) cold = dt;
        if (dt < best) best = dt;
    }
    double t0 = now_s();
    size_t dl;
    char *back = qkv_tokenizer_decode(tok, ids, n, &dl);
    double dt_dec = now_s() - t0;
    TU_CHECK(back && dl == clen && memcmp(back, corpus, clen) == 0, "tinyshakespeare decode(encode) == text");
    /* nanoGPT's shakespeare prepare.py reports 301,966 + 36,059 tokens for a 90/10 split of this file. */
    TU_CHECK(n > 337000 && n < 339000, "tinyshakespeare: %lld tokens (nanoGPT: ~338,025)", (long long)n);
    TU_CHECK(cold < 1.0, "encoding 1.1 MB took %.3f s (want well under a second)", cold);
    printf("ok   tinyshakespeare %zu bytes -> %lld tokens: encode %.1f ms cold (%.1f MB/s), %.1f ms warm (%.1f MB/s, "
           "%.2f M tokens/s); decode %.1f ms\n",
           clen, (long long)n, cold * 1e3, clen / cold / 1e6, best * 1e3, clen / best / 1e6, n / best / 1e6,
           dt_dec * 1e3);
    free(back);
    free(ids);
}


/* ---- training (qkv_tokenizer_train_bpe) against a plain reference trainer ---- */

#define REF_MAXV 700

typedef struct {
    char *tb;      /* token bytes, 64 per token */
    int *tlen;
    int ntok;
    int32_t (*merges)[3];
    int nmerges;
} ref_vocab;

/* The textbook algorithm: count every adjacent pair over all words, merge the most frequent (ties:
 * smallest ids), rewrite every word, repeat. O(merges x corpus). */
static void ref_train(int32_t **words, int *wlen, int nwords, int target, ref_vocab *rv) {
    static int64_t cnt[REF_MAXV][REF_MAXV];
    rv->tb = calloc(REF_MAXV, 64);
    rv->tlen = calloc(REF_MAXV, sizeof *rv->tlen);
    rv->merges = calloc(REF_MAXV, sizeof *rv->merges);
    for (int b = 0; b < 256; b++) {
        rv->tb[b * 64] = (char)b;
        rv->tlen[b] = 1;
    }
    rv->ntok = 256;
    rv->nmerges = 0;
    while (rv->ntok < target) {
        memset(cnt, 0, sizeof cnt);
        for (int w = 0; w < nwords; w++)
            for (int i = 0; i + 1 < wlen[w]; i++) cnt[words[w][i]][words[w][i + 1]]++;
        int64_t best = 0;
        int ba = -1, bb = -1;
        for (int a = 0; a < rv->ntok; a++)
            for (int b = 0; b < rv->ntok; b++)
                if (cnt[a][b] > best) {
                    best = cnt[a][b];
                    ba = a;
                    bb = b;
                }
        if (best < 2) break;
        char buf[64];
        int n = rv->tlen[ba] + rv->tlen[bb];
        if (n > 63) break;
        memcpy(buf, rv->tb + ba * 64, (size_t)rv->tlen[ba]);
        memcpy(buf + rv->tlen[ba], rv->tb + bb * 64, (size_t)rv->tlen[bb]);
        int id = -1;
        for (int k = 0; k < rv->ntok && id < 0; k++)
            if (rv->tlen[k] == n && memcmp(rv->tb + k * 64, buf, (size_t)n) == 0) id = k;
        if (id < 0) {
            id = rv->ntok++;
            memcpy(rv->tb + id * 64, buf, (size_t)n);
            rv->tlen[id] = n;
        }
        rv->merges[rv->nmerges][0] = ba;
        rv->merges[rv->nmerges][1] = bb;
        rv->merges[rv->nmerges][2] = id;
        rv->nmerges++;
        for (int w = 0; w < nwords; w++) {
            int o = 0;
            for (int i = 0; i < wlen[w];) {
                if (i + 1 < wlen[w] && words[w][i] == ba && words[w][i + 1] == bb) {
                    words[w][o++] = id;
                    i += 2;
                } else {
                    words[w][o++] = words[w][i++];
                }
            }
            wlen[w] = o;
        }
    }
}

static void test_train_reference(void) {
    /* A corpus of lowercase words and single spaces: GPT-2's pattern splits it into "w", " w", " w"... */
    char vocab_words[300][12];
    uint64_t s = 99;
    for (int k = 0; k < 300; k++) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        int n = 2 + (int)((s >> 40) % 8);
        for (int c = 0; c < n; c++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            vocab_words[k][c] = "etaoinshrdlcumwfgypbvk"[(s >> 40) % ((s >> 20) % 2 ? 8 : 22)];
        }
        vocab_words[k][n] = '\0';
    }
    size_t cap = 80000, len = 0;
    char *text = malloc(cap);
    int nwords = 0, wmax = 12000;
    int32_t **words = malloc((size_t)wmax * sizeof *words);
    int *wlen = malloc((size_t)wmax * sizeof *wlen);
    while (nwords < wmax) {
        s = s * 6364136223846793005ull + 1442695040888963407ull;
        double u = (double)(s >> 11) / 9007199254740992.0;
        int k = (int)(300 * u * u * u); /* skewed: a few words are frequent */
        const char *w = vocab_words[k];
        size_t n = strlen(w);
        if (len + n + 2 > cap) break;
        size_t at = len;
        if (nwords) text[len++] = ' ';
        memcpy(text + len, w, n);
        len += n;
        words[nwords] = malloc((len - at) * sizeof **words);
        wlen[nwords] = (int)(len - at);
        for (size_t c = at; c < len; c++) words[nwords][c - at] = (unsigned char)text[c];
        nwords++;
    }
    int target = 256 + 350; /* tokens before <|endoftext|> */
    ref_vocab rv;
    ref_train(words, wlen, nwords, target, &rv);
    qkv_tokenizer *t = qkv_tokenizer_train_bpe(text, len, target + 1);
    TU_CHECK(t != NULL, "train: %s", qkv_last_error());
    if (t) {
        TU_CHECK(qkv_tokenizer_vocab_size(t) == rv.ntok + 1 && qkv_tokenizer_eos(t) == rv.ntok,
                 "train: vocab %lld, reference %d + eos", (long long)qkv_tokenizer_vocab_size(t), rv.ntok);
        int same = t->n_merges == rv.nmerges;
        for (int m = 0; same && m < rv.nmerges; m++) {
            int32_t a = t->merges[2 * m], b = t->merges[2 * m + 1];
            size_t la, lb;
            const char *ta = qkv_tokenizer_token(t, a, &la), *tb = qkv_tokenizer_token(t, b, &lb);
            char buf[128];
            memcpy(buf, ta, la);
            memcpy(buf + la, tb, lb);
            same = a == rv.merges[m][0] && b == rv.merges[m][1] &&
                   qkv_tokenizer_token_id(t, buf, la + lb) == rv.merges[m][2];
            if (!same) printf("    merge %d: got (%d, %d), reference (%d, %d) -> %d\n", m, (int)a, (int)b,
                              (int)rv.merges[m][0], (int)rv.merges[m][1], (int)rv.merges[m][2]);
        }
        TU_CHECK(same, "train: %d merges identical to the reference trainer's (got %d)", rv.nmerges, (int)t->n_merges);
        /* BPE's promise: encoding a training word reproduces its training segmentation. */
        int seg_ok = 1;
        size_t at = 0;
        for (int w = 0; w < nwords && seg_ok; w++) {
            size_t wl = 0; /* the word at `at`: an optional leading space, then letters */
            while (at + wl < len && (wl == 0 || text[at + wl] != ' ')) wl++;
            int32_t ids[64];
            int64_t k = qkv__bpe_word(t, text + at, wl, ids);
            seg_ok = k == wlen[w] && memcmp(ids, words[w], (size_t)k * sizeof *ids) == 0;
            at += wl;
        }
        TU_CHECK(seg_ok, "train: encoding each training word gives its training segmentation");
        int64_t n;
        int32_t *ids = encode(t, text, len, 0, &n);
        char *back = ids ? qkv_tokenizer_decode(t, ids, n, NULL) : NULL;
        TU_CHECK(back && memcmp(back, text, len) == 0, "train: round trip");
        printf("%-4s trained BPE == reference trainer: %d merges, %d words, %zu bytes -> %lld tokens\n",
               same && seg_ok ? "ok" : "FAIL", rv.nmerges, nwords, len, (long long)n);
        free(ids);
        free(back);
    }
    qkv_tokenizer_free(t);
    for (int w = 0; w < nwords; w++) free(words[w]);
    free(words);
    free(wlen);
    free(rv.tb);
    free(rv.tlen);
    free(rv.merges);
    free(text);

    TU_CHECK(!qkv_tokenizer_train_bpe("abc", 3, 256) && strstr(qkv_last_error(), "vocab_size 256 outside 257.."),
             "train: vocab_size 256: %s", qkv_last_error());
    TU_CHECK(!qkv_tokenizer_train_bpe("ab\xff", 3, 300) && strstr(qkv_last_error(), "invalid UTF-8 at byte 2"),
             "train: invalid UTF-8: %s", qkv_last_error());
    /* Nothing repeats: just the bytes and the eos. */
    t = qkv_tokenizer_train_bpe("abc", 3, 1000);
    TU_CHECK(t && qkv_tokenizer_vocab_size(t) == 257 && t->n_merges == 0, "train: no pair occurs twice -> 257 ids");
    qkv_tokenizer_free(t);
}

static void test_train_shakespeare(const char *corpus, size_t clen) {
    double t0 = now_s();
    qkv_tokenizer *t = qkv_tokenizer_train_bpe(corpus, clen, 1024);
    double dt = now_s() - t0;
    TU_CHECK(t && qkv_tokenizer_vocab_size(t) == 1024 && qkv_tokenizer_eos(t) == 1023, "train 1024 on shakespeare: %s",
             t ? "" : qkv_last_error());
    if (!t) return;
    int64_t n;
    int32_t *ids = encode(t, corpus, clen, 0, &n);
    char *back = ids ? qkv_tokenizer_decode(t, ids, n, NULL) : NULL;
    TU_CHECK(back && memcmp(back, corpus, clen) == 0, "trained tokenizer round trips tinyshakespeare");
    TU_CHECK(n < (int64_t)clen / 2, "1024-token BPE compresses tinyshakespeare more than 2x (%lld tokens)", (long long)n);
    int32_t e[8];
    int64_t ne = qkv_tokenizer_encode(t, "a<|endoftext|>b", 15, 1, e, 8);
    TU_CHECK(ne == 3 && e[1] == 1023, "trained tokenizer: <|endoftext|> is the last id");
    /* save -> load gives the same ids */
    char tmpl[] = "/tmp/qkv_train_XXXXXX";
    char *dir = mkdtemp(tmpl);
    TU_CHECK(qkv_tokenizer_save_dir(t, dir) == QKV_OK, "save trained: %s", qkv_last_error());
    qkv_tokenizer *u = qkv_tokenizer_load_dir(dir);
    TU_CHECK(u != NULL, "load trained: %s", qkv_last_error());
    if (u) {
        int64_t m;
        int32_t *ids2 = encode(u, corpus, clen, 0, &m);
        TU_CHECK(ids2 && m == n && memcmp(ids, ids2, (size_t)n * sizeof *ids) == 0, "trained: same ids after save -> load");
        free(ids2);
    }
    qkv_tokenizer_free(u);
    char path[1200];
    snprintf(path, sizeof path, "%s/vocab.json", dir);
    remove(path);
    snprintf(path, sizeof path, "%s/merges.txt", dir);
    remove(path);
    rmdir(dir);
    printf("ok   trained a 1024-token BPE on tinyshakespeare in %.2f s: %zu bytes -> %lld tokens (%.2f bytes/token), "
           "save -> load same ids\n",
           dt, clen, (long long)n, (double)clen / (double)n);
    free(ids);
    free(back);
    qkv_tokenizer_free(t);
}

int main(void) {
    const char *p = tu_shared_data("gpt2-tokenizer/vocab.json");
    snprintf(dir_data, sizeof dir_data, "%.*s", (int)(strlen(p) - strlen("/vocab.json")), p);
    snprintf(vocab_path, sizeof vocab_path, "%s/vocab.json", dir_data);
    snprintf(merges_path, sizeof merges_path, "%s/merges.txt", dir_data);
    double t0 = now_s();
    qkv_tokenizer *tok = qkv_tokenizer_load_gpt2(vocab_path, merges_path);
    double dt = now_s() - t0;
    if (!tok) {
        printf("FAIL: loading GPT-2 tokenizer: %s\n", qkv_last_error());
        return 1;
    }
    printf("ok   loaded GPT-2 vocab.json + merges.txt in %.1f ms\n", dt * 1e3);
    size_t clen = 0;
    char *corpus = read_all(tu_shared_data("tinyshakespeare/input.txt"), &clen);

    test_tiktoken_oracle(tok);
    test_llamacpp_oracle(tok);
    test_against_reference(tok, corpus, clen);
    test_misc(tok);
    test_long_inputs(tok);
    test_bad_files();
    test_save_load(tok, corpus, clen);
    test_throughput(tok, corpus, clen);
    test_train_reference();
    test_train_shakespeare(corpus, clen);
    free(corpus);
    qkv_tokenizer_free(tok);
    return tu_finish("test_gpt2_tokenizer");
}

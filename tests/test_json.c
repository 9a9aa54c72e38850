/* test_json.c — the strict JSON reader and string writer (src/core/json.c): valid documents and their
 * values, exact 64-bit integers, every rejection with its message, every truncation of a document and
 * random byte flips (must fail cleanly, never crash: run under ASan), writer round trips, UTF-8
 * helpers, and parse speed on the real GPT-2 vocab.json / tokenizer.json when ../shared/data is there.
 */
#include <time.h>

#include "core/json.h"
#include "testutil.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* Parses from an exact-size heap copy, so ASan sees any read past the end. */
static qkv__json *parse(const char *text, size_t len) {
    char *copy = malloc(len ? len : 1);
    memcpy(copy, text, len);
    qkv__json *j = qkv__json_parse(copy, len, "test");
    free(copy);
    return j;
}

static qkv__json *parse_s(const char *text) { return parse(text, strlen(text)); }

static void check_rejects(const char *text, size_t len, const char *expect) {
    qkv__json *j = parse(text, len);
    const char *err = qkv_last_error();
    TU_CHECK(j == NULL, "accepted invalid JSON %.40s", text);
    TU_CHECK(strstr(err, "test: invalid JSON at byte ") == err || strstr(err, "out of range"),
             "message format for %.40s: %s", text, err);
    TU_CHECK(strstr(err, expect) != NULL, "for %.40s expected \"%s\" in: %s", text, expect, err);
    qkv__json_free(j);
}

static void rejects(const char *text, const char *expect) { check_rejects(text, strlen(text), expect); }

static void test_values(void) {
    const char *doc = "{\"a\": 1, \"b\": [true, false, null], \"c\": \"x\\u00e9\\ud83d\\ude00\\/\", \"d\": -0.5e2,\n"
                      " \"e\": {}, \"f\": [], \"g\": \"\\\"\\\\\\b\\f\\n\\r\\t\", \"h\": \"\\u0000z\", \"\\u00e9\": 1.25}";
    qkv__json *j = parse_s(doc);
    TU_CHECK(j != NULL, "valid document rejected: %s", qkv_last_error());
    if (!j) return;
    TU_CHECK(j->type == QKV_JSON_OBJECT && qkv__json_len(j) == 9, "root object with 9 members");
    const char *keys[] = {"a", "b", "c", "d", "e", "f", "g", "h", "\xc3\xa9"};
    for (size_t i = 0; i < 9; i++)
        TU_CHECK(strcmp(qkv__json_key_at(j, i), keys[i]) == 0, "key %zu in file order", i);
    const qkv__json *a = qkv__json_get(j, "a");
    TU_CHECK(a && a->type == QKV_JSON_NUMBER && a->is_int && a->integer == 1 && a->number == 1.0, "a = 1");
    const qkv__json *b = qkv__json_get(j, "b");
    TU_CHECK(b && b->type == QKV_JSON_ARRAY && qkv__json_len(b) == 3, "b is [true,false,null]");
    TU_CHECK(qkv__json_at(b, 0)->type == QKV_JSON_BOOL && qkv__json_at(b, 0)->boolean == 1, "b[0] true");
    TU_CHECK(qkv__json_at(b, 1)->type == QKV_JSON_BOOL && qkv__json_at(b, 1)->boolean == 0, "b[1] false");
    TU_CHECK(qkv__json_at(b, 2)->type == QKV_JSON_NULL && qkv__json_at(b, 3) == NULL, "b[2] null, b[3] absent");
    TU_CHECK(qkv__json_at(b, 0)->key == NULL, "array elements have no key");
    const qkv__json *c = qkv__json_get(j, "c");
    TU_CHECK(c && c->type == QKV_JSON_STRING && c->len == 8 && memcmp(c->str, "x\xc3\xa9\xf0\x9f\x98\x80/", 8) == 0,
             "\\u escapes and a surrogate pair decode to UTF-8");
    const qkv__json *d = qkv__json_get(j, "d");
    TU_CHECK(d && !d->is_int && d->number == -50.0, "d = -0.5e2 = -50 (not an integer literal)");
    TU_CHECK(qkv__json_len(qkv__json_get(j, "e")) == 0 && qkv__json_get(j, "e")->type == QKV_JSON_OBJECT, "e {}");
    TU_CHECK(qkv__json_len(qkv__json_get(j, "f")) == 0 && qkv__json_get(j, "f")->child == NULL, "f []");
    const qkv__json *g = qkv__json_get(j, "g");
    TU_CHECK(g && g->len == 7 && memcmp(g->str, "\"\\\b\f\n\r\t", 7) == 0, "short escapes");
    const qkv__json *h = qkv__json_get(j, "h");
    TU_CHECK(h && h->len == 2 && h->str[0] == '\0' && h->str[1] == 'z' && h->str[2] == '\0', "\\u0000 kept, len 2");
    TU_CHECK(qkv__json_get(j, "\xc3\xa9") && qkv__json_get(j, "\xc3\xa9")->number == 1.25, "escaped key");
    TU_CHECK(qkv__json_get(j, "zz") == NULL && qkv__json_get(a, "a") == NULL, "absent key / not an object");
    TU_CHECK(d->pos == (size_t)(strstr(doc, "-0.5e2") - doc), "pos is the value's byte offset");
    qkv__json_free(j);
    qkv__json_free(NULL);

    const char *scalars[] = {"3", " \"s\" ", "\tnull\n", "true", "-0", "[[[[]]]]", "1E+2", "0.000001"};
    for (size_t i = 0; i < sizeof scalars / sizeof scalars[0]; i++) {
        qkv__json *s = parse_s(scalars[i]);
        TU_CHECK(s != NULL, "top-level %s: %s", scalars[i], qkv_last_error());
        qkv__json_free(s);
    }
    printf("ok   valid documents, values, keys in file order, escapes\n");
}

static void test_numbers(void) {
    struct {
        const char *text;
        int is_int;
        int64_t i;
        double d;
    } cases[] = {
        {"9007199254740993", 1, 9007199254740993LL, 9007199254740992.0},
        {"18446744073709551615", 0, 0, 18446744073709551615.0},
        {"9223372036854775807", 1, INT64_MAX, 9223372036854775807.0},
        {"9223372036854775808", 0, 0, 9223372036854775808.0},
        {"-9223372036854775808", 1, INT64_MIN, -9223372036854775808.0},
        {"-9223372036854775809", 0, 0, -9223372036854775808.0},
        {"123456789012345678901234567890", 0, 0, 1.2345678901234568e29},
        {"0", 1, 0, 0.0},
        {"-17", 1, -17, -17.0},
        {"2.5", 0, 0, 2.5},
        {"1e2", 0, 0, 100.0},
        {"-1.5E-3", 0, 0, -0.0015},
        {"1.7976931348623157e308", 0, 0, 1.7976931348623157e308},
        {"4.9e-324", 0, 0, 4.9e-324},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        qkv__json *j = parse_s(cases[k].text);
        TU_CHECK(j && j->type == QKV_JSON_NUMBER, "%s parses: %s", cases[k].text, qkv_last_error());
        if (!j) continue;
        TU_CHECK(j->is_int == cases[k].is_int, "%s: is_int %d, want %d", cases[k].text, j->is_int, cases[k].is_int);
        if (cases[k].is_int) TU_CHECK(j->integer == cases[k].i, "%s: exact int64 %lld", cases[k].text, (long long)j->integer);
        TU_CHECK(j->number == cases[k].d, "%s: double %.17g, want %.17g", cases[k].text, j->number, cases[k].d);
        qkv__json_free(j);
    }
    printf("ok   numbers: 9007199254740993 exact as int64, 18446744073709551615 flagged as not fitting int64\n");
}

static void test_rejections(void) {
    rejects("", "unexpected end of input");
    rejects("   ", "unexpected end of input");
    rejects("{} x", "unexpected character 'x' after the value");
    rejects("[1] [2]", "after the value");
    rejects("1 2", "after the value");
    rejects("{\"a\": 1, \"b\": 2, \"a\": 3}", "duplicate key \"a\"");
    rejects("{\"k\": {\"x\": 1, \"x\": 1}}", "duplicate key \"x\"");
    rejects("\"a\x01\"", "control character 0x01 in string");
    rejects("\"tab\there\"", "control character 0x09");
    rejects("\"new\nline\"", "control character 0x0A");
    rejects("01", "leading zero");
    rejects("-01", "leading zero");
    rejects("[00]", "leading zero");
    rejects("NaN", "NaN and Infinity are not valid JSON");
    rejects("Infinity", "NaN and Infinity");
    rejects("-Infinity", "Infinity is not valid JSON");
    rejects("[1, nan]", "invalid literal");
    rejects("1e400", "out of range");
    rejects("-1e400", "out of range");
    rejects("\"\xff\"", "invalid UTF-8 in string");
    rejects("\"\xc0\x80\"", "invalid UTF-8");         /* overlong NUL */
    rejects("\"\xed\xa0\x80\"", "invalid UTF-8");     /* UTF-8-encoded surrogate */
    rejects("\"\xf4\x90\x80\x80\"", "invalid UTF-8"); /* above U+10FFFF */
    rejects("\"\xe2\x82\"", "invalid UTF-8");         /* cut short */
    rejects("\"\\ud800\"", "lone high surrogate \\uD800");
    rejects("\"\\ud800\\u0041\"", "lone high surrogate");
    rejects("\"\\ud800x\"", "lone high surrogate");
    rejects("\"\\udc00\"", "lone low surrogate \\uDC00");
    rejects("\"\\u12\"", "four hex digits");
    rejects("\"\\x\"", "invalid escape '\\x'");
    rejects("\"abc", "unterminated string");
    rejects("\"abc\\", "unterminated string");
    rejects("[1,]", "trailing comma before ']'");
    rejects("{\"a\":1,}", "trailing comma before '}'");
    rejects("[1 2]", "expected ',' or ']'");
    rejects("{\"a\" 1}", "expected ':' after key");
    rejects("{a: 1}", "expected a string key");
    rejects("{'a': 1}", "expected a string key");
    rejects("['a']", "unexpected character '''");
    rejects("[1] // comment", "unexpected character '/'");
    rejects("1.", "digit expected after '.'");
    rejects(".5", "unexpected character '.'");
    rejects("1e", "digit expected in exponent");
    rejects("1e+", "digit expected in exponent");
    rejects("-", "digit expected after '-'");
    rejects("+1", "unexpected character '+'");
    rejects("tru", "invalid literal");
    rejects("nul", "invalid literal");
    rejects("\xef\xbb\xbf{}", "unexpected byte 0xEF"); /* no BOM */
    check_rejects("[1,\0 2]", 7, "unexpected byte 0x00");
    /* Exact message, with line and column. */
    qkv__json *j = parse_s("{\n  \"a\": 01\n}");
    TU_CHECK(!j && strcmp(qkv_last_error(), "test: invalid JSON at byte 9 (line 2, column 8): invalid number: leading zero") == 0,
             "full message: %s", qkv_last_error());
    j = qkv__json_parse("[", 1, NULL);
    TU_CHECK(!j && strstr(qkv_last_error(), "JSON: invalid JSON at byte 1 (line 1, column 2)") == qkv_last_error(),
             "default label: %s", qkv_last_error());

    /* Nesting: 128 levels are fine, 129 are not. */
    char deep[300];
    for (int depth = 127; depth <= 130; depth++) {
        int n = 0;
        for (int k = 0; k < depth; k++) deep[n++] = '[';
        for (int k = 0; k < depth; k++) deep[n++] = ']';
        qkv__json *d = parse(deep, (size_t)n);
        if (depth <= QKV_JSON_MAX_DEPTH)
            TU_CHECK(d != NULL, "depth %d accepted: %s", depth, qkv_last_error());
        else
            TU_CHECK(!d && strstr(qkv_last_error(), "nesting deeper than 128") &&
                         strstr(qkv_last_error(), "at byte 128 "),
                     "depth %d rejected at byte 128: %s", depth, qkv_last_error());
        qkv__json_free(d);
    }
    char odeep[1400];
    int n = 0;
    for (int k = 0; k < 129; k++) n += sprintf(odeep + n, "{\"k\":");
    n += sprintf(odeep + n, "1");
    for (int k = 0; k < 129; k++) odeep[n++] = '}';
    check_rejects(odeep, (size_t)n, "nesting deeper than 128");
    printf("ok   every rejection says why, with byte, line and column\n");
}

/* A large object exercises the hashed duplicate check (more than 16 keys). */
static void test_big_object(void) {
    size_t cap = 60000 * 24, n = 0;
    char *doc = malloc(cap);
    doc[n++] = '{';
    for (int i = 0; i < 50000; i++) n += (size_t)sprintf(doc + n, "%s\"k%d\": %d", i ? ", " : "", i, i);
    doc[n++] = '}';
    qkv__json *j = parse(doc, n);
    TU_CHECK(j && qkv__json_len(j) == 50000, "50000-key object: %s", qkv_last_error());
    int ok = j != NULL;
    for (size_t i = 0; ok && i < 50000; i++) {
        char k[16];
        snprintf(k, sizeof k, "k%zu", i);
        ok = strcmp(qkv__json_key_at(j, i), k) == 0 && qkv__json_at(j, i)->integer == (int64_t)i;
    }
    TU_CHECK(ok, "every key and value in order");
    qkv__json_free(j);
    memcpy(doc + n - 1, ", \"k31337\": 0}", 15); /* a duplicate far from its twin */
    n += 13;
    check_rejects(doc, n, "duplicate key \"k31337\"");
    free(doc);
    printf("ok   50000-key object, duplicate found by hash\n");
}

static void test_truncation_and_flips(void) {
    const char *doc = "{\"name\": \"q\\u00e9kv \\ud83d\\ude00\", \"n\": [1, -2.5e3, 9007199254740993, true, false, null],"
                      " \"nested\": {\"a\": {\"b\": []}, \"s\": \"\xc3\xa9\\n\"}, \"big\": 18446744073709551615}";
    size_t len = strlen(doc);
    qkv__json *whole = parse(doc, len);
    TU_CHECK(whole != NULL, "sample document parses: %s", qkv_last_error());
    qkv__json_free(whole);
    int accepted = 0;
    for (size_t k = 0; k < len; k++) {
        qkv__json *j = parse(doc, k);
        if (j) accepted++;
        qkv__json_free(j);
    }
    TU_CHECK(accepted == 0, "%d proper prefixes of an object were accepted", accepted);
    /* Random byte flips: anything may happen except a crash or a leak (ASan/UBSan builds check). */
    uint64_t s = 12345;
    char *buf = malloc(len);
    int ok = 0;
    for (int it = 0; it < 20000; it++) {
        memcpy(buf, doc, len);
        for (int f = 0; f < 1 + it % 3; f++) {
            s = s * 6364136223846793005ull + 1442695040888963407ull;
            buf[(s >> 33) % len] = (char)(s >> 13);
        }
        qkv__json *j = parse(buf, len);
        ok += j != NULL;
        qkv__json_free(j);
    }
    free(buf);
    printf("ok   all %zu truncations rejected cleanly; 20000 random corruptions (%d still valid) without a crash\n",
           len, ok);
}

static char *write_to_string(const char *s, size_t len, int ascii, size_t *out_len) {
    FILE *f = tmpfile();
    qkv__json_write_stringn(f, s, len, ascii);
    long n = ftell(f);
    rewind(f);
    char *buf = malloc((size_t)n + 1);
    size_t got = fread(buf, 1, (size_t)n, f);
    buf[got] = '\0';
    fclose(f);
    *out_len = got;
    return buf;
}

static void test_writer(void) {
    const char s[] = "plain \"quoted\" back\\slash /\b\f\n\r\t\x01\x1f\x7f \xc3\xa9 \xe2\x82\xac \xf0\x9f\x98\x80 nul:\0!";
    size_t len = sizeof s - 1;
    for (int ascii = 0; ascii < 2; ascii++) {
        size_t n;
        char *out = write_to_string(s, len, ascii, &n);
        qkv__json *j = parse(out, n);
        TU_CHECK(j && j->type == QKV_JSON_STRING && j->len == len && memcmp(j->str, s, len) == 0,
                 "write (ascii_only=%d) then parse gives the string back: %s", ascii, out);
        if (ascii) {
            int all_ascii = 1;
            for (size_t k = 0; k < n; k++) all_ascii &= (unsigned char)out[k] < 0x80;
            TU_CHECK(all_ascii && strstr(out, "\\u00e9 \\u20ac \\ud83d\\ude00 nul:\\u0000!"),
                     "ascii_only escapes like Python json.dumps: %s", out);
        }
        TU_CHECK(strstr(out, "\\\"quoted\\\" back\\\\slash /\\b\\f\\n\\r\\t\\u0001\\u001f"), "escapes: %s", out);
        qkv__json_free(j);
        free(out);
    }
    size_t n;
    char *out = write_to_string("a\xff" "b\xe2\x82", 5, 0, &n);
    TU_CHECK(strcmp(out, "\"a\xef\xbf\xbd" "b\xef\xbf\xbd\xef\xbf\xbd\"") == 0, "invalid UTF-8 written as U+FFFD: %s", out);
    free(out);
    FILE *f = tmpfile();
    qkv__json_write_string(f, "x\"y");
    rewind(f);
    char buf[16] = {0};
    TU_CHECK(fread(buf, 1, sizeof buf - 1, f) == 6 && strcmp(buf, "\"x\\\"y\"") == 0, "qkv__json_write_string: %s", buf);
    fclose(f);
    printf("ok   writer: escapes, ascii_only like json.dumps, invalid UTF-8 -> U+FFFD, round trips\n");
}

static void test_utf8(void) {
    struct {
        const char *s;
        size_t len, bad;
    } cases[] = {
        {"hello", 5, 5},
        {"h\xc3\xa9llo", 6, 6},
        {"\xf0\x9f\x98\x80", 4, 4},
        {"\xf4\x8f\xbf\xbf", 4, 4},     /* U+10FFFF */
        {"\xef\xbf\xbf", 3, 3},         /* U+FFFF */
        {"abc\xff", 4, 3},
        {"ab\xc0\x80", 4, 2},           /* overlong */
        {"a\xe0\x80\xaf", 4, 1},        /* overlong 3-byte */
        {"\xf0\x80\x80\xaf", 4, 0},     /* overlong 4-byte */
        {"xx\xed\xa0\x80", 5, 2},       /* surrogate */
        {"\xf4\x90\x80\x80", 4, 0},     /* > U+10FFFF */
        {"abcdefgh\xe2\x82", 10, 8},    /* cut short after the 8-byte fast path */
        {"abcdefghijklmnop\x80", 17, 16},
    };
    for (size_t k = 0; k < sizeof cases / sizeof cases[0]; k++) {
        size_t bad = qkv__utf8_check(cases[k].s, cases[k].len);
        TU_CHECK(bad == cases[k].bad, "utf8_check case %zu: %zu, want %zu", k, bad, cases[k].bad);
    }
    char out[4];
    TU_CHECK(qkv__utf8_encode(0xD800, out) == 0 && qkv__utf8_encode(0x110000, out) == 0, "encode rejects invalid");
    for (uint32_t cp = 0; cp < 0x110000; cp += (cp < 0x1000 ? 1 : 97)) {
        int k = qkv__utf8_encode(cp, out);
        uint32_t back;
        if (cp >= 0xD800 && cp <= 0xDFFF) continue;
        TU_CHECK(k > 0 && qkv__utf8_decode((const unsigned char *)out, (size_t)k, &back) == k && back == cp,
                 "utf8 round trip U+%04X", (unsigned)cp);
    }
    size_t line, col;
    qkv__json_line_col("ab\ncd\nef", 8, 7, &line, &col);
    TU_CHECK(line == 3 && col == 2, "line/col %zu:%zu", line, col);
    printf("ok   UTF-8 helpers (overlong, surrogates, > U+10FFFF, truncation)\n");
}

static void test_real_files(void) {
    const char *d = getenv("QKV_SHARED_DATA");
    const char *files[] = {"gpt2-tokenizer/vocab.json", "gpt2-tokenizer/tokenizer.json",
                           "gpt2-tokenizer/oracle/gpt2_oracle.json"};
    for (int k = 0; k < 3; k++) {
        char path[1024];
        snprintf(path, sizeof path, "%s/%s", d && *d ? d : "../shared/data", files[k]);
        FILE *f = fopen(path, "rb");
        if (!f) {
            printf("NOTE: %s not found; real-file parse timing skipped (set QKV_SHARED_DATA)\n", path);
            return;
        }
        fseek(f, 0, SEEK_END);
        size_t n = (size_t)ftell(f);
        rewind(f);
        char *buf = malloc(n);
        TU_CHECK(fread(buf, 1, n, f) == n, "read %s", path);
        fclose(f);
        double best = 1e9;
        qkv__json *j = NULL;
        for (int rep = 0; rep < 5; rep++) {
            double t0 = now_s();
            j = qkv__json_parse(buf, n, path);
            double dt = now_s() - t0;
            if (dt < best) best = dt;
            if (rep < 4) qkv__json_free(j);
        }
        TU_CHECK(j != NULL, "%s parses: %s", files[k], qkv_last_error());
        if (k == 0) TU_CHECK(qkv__json_len(j) == 50257, "vocab.json has 50257 entries");
        if (k == 1) {
            const qkv__json *model = qkv__json_get(j, "model");
            TU_CHECK(qkv__json_len(qkv__json_get(model, "vocab")) == 50257 &&
                         qkv__json_len(qkv__json_get(model, "merges")) == 50000,
                     "tokenizer.json: model.vocab 50257, model.merges 50000");
        }
        printf("ok   %-40s %8zu bytes parsed in %.2f ms (%.0f MB/s)\n", files[k], n, best * 1e3, n / best / 1e6);
        qkv__json_free(j);
        free(buf);
    }
}

int main(void) {
    test_values();
    test_numbers();
    test_rejections();
    test_big_object();
    test_truncation_and_flips();
    test_writer();
    test_utf8();
    test_real_files();
    return tu_finish("test_json");
}

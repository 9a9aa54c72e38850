/* cmd_tokenize.c — `qkv tokenize`: text -> token ids (and ids -> text) with a directory's tokenizer.
 *
 * The directory is a model directory or a tokenizer-only one: whatever qkv_tokenizer_load_dir reads
 * (GPT-2 vocab.json + merges.txt, or qkv's byte- / character-level vocab.json). No model is loaded.
 * Not here: training a tokenizer (`qkv train` does that), Hugging Face tokenizer.json.
 *
 * Convention a reader needs: results go to stdout (ids space-separated, or JSON with --json),
 * errors to stderr as one line "qkv tokenize: <what>: <why>"; exit 2 for bad usage, 1 otherwise.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "qkv.h"
#include "cli_util.h"
#include "commands.h"

#define CMD "tokenize" /* for the error lines: "qkv tokenize: ..." */
#define TEXT_FILE_LIMIT (256u << 20)

static const char *const usage_text =
    "usage: qkv tokenize --model DIR (--text TEXT | --file FILE | --decode IDS) [--json] [--no-special]\n"
    "\n"
    "Encodes UTF-8 text into token ids with the tokenizer of DIR, or decodes ids back into text.\n"
    "\n"
    "options:\n"
    "  --model DIR     a model or tokenizer directory: vocab.json + merges.txt (GPT-2 byte-level BPE, as\n"
    "                  Hugging Face writes them) or a qkv byte/char vocab.json; no model weights needed\n"
    "  --text TEXT     the text to encode (UTF-8)\n"
    "  --file FILE     encode the contents of FILE instead (UTF-8, up to 256 MiB)\n"
    "  --decode IDS    decode instead: IDS is a list of ids separated by spaces or commas (\"15496 995\");\n"
    "                  prints the text and a newline\n"
    "  --json          print {\"ids\":[...]} (encoding) or {\"text\":\"...\"} (decoding) instead of plain text;\n"
    "                  decoded bytes that are not valid UTF-8 appear as U+FFFD\n"
    "  --no-special    read \"<|endoftext|>\" in the text as plain text (default: the special token id\n"
    "                  50256, as Hugging Face's GPT-2 tokenizer reads it)\n"
    "  --help          this text\n"
    "\n"
    "Without --json, encoding prints the ids separated by single spaces and a newline (an empty line for\n"
    "empty text). Exit status: 0 ok, 2 bad usage, 1 other errors (missing files, invalid UTF-8, bad ids).\n";

static int usage_error(const char *what, const char *why) { return cli_usage_error(CMD, what, why); }

/* Parses "1 2, 3" into ids (malloc'd). -1 with a message on a token that is not an id. */
static int64_t parse_ids(const char *s, int32_t **out) {
    size_t cap = strlen(s) / 2 + 1;
    int32_t *ids = malloc(cap * sizeof *ids);
    int64_t n = 0;
    if (!ids) return usage_error("--decode", "out of memory"), -1;
    const char *p = s;
    for (;;) {
        while (*p == ' ' || *p == ',' || *p == '\t' || *p == '\n') p++;
        if (!*p) break;
        const char *start = p;
        long long v = 0;
        int digits = 0;
        while (*p >= '0' && *p <= '9' && v <= INT32_MAX) v = v * 10 + (*p++ - '0'), digits++;
        if (!digits || v > INT32_MAX || (*p && *p != ' ' && *p != ',' && *p != '\t' && *p != '\n')) {
            char why[120];
            size_t w = strcspn(start, " ,\t\n");
            snprintf(why, sizeof why, "'%.*s' is not a token id (0..2147483647)", (int)(w > 40 ? 40 : w), start);
            free(ids);
            return usage_error("--decode", why), -1;
        }
        ids[n++] = (int32_t)v;
    }
    *out = ids;
    return n;
}

int qkv_cmd_tokenize(int argc, char **argv) {
    const char *dir = NULL, *text = NULL, *file = NULL, *decode = NULL;
    int json = 0, special = 1;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
            fputs(usage_text, stdout);
            return 0;
        }
        if (strcmp(a, "--json") == 0) json = 1;
        else if (strcmp(a, "--no-special") == 0) special = 0;
        else {
            static const char *const valued[] = {"--model", "--text", "--file", "--decode"};
            const char **slot[] = {&dir, &text, &file, &decode};
            const char *v = NULL;
            int k = cli_valued_flag(argc, argv, &i, valued, 4, &v);
            if (k < 0) return cli_unknown_option(CMD, a);
            if (!v) return usage_error(valued[k], "missing value");
            *slot[k] = v;
        }
    }
    if (!dir) return usage_error("--model", "required (a model or tokenizer directory; qkv tokenize --help)");
    if (!!text + !!file + !!decode != 1)
        return usage_error(text || file || decode ? "--text/--file/--decode" : "--text",
                           text || file || decode ? "give exactly one of them" : "required, or --file or --decode");
    int32_t *ids = NULL;
    int64_t n = 0;
    if (decode && (n = parse_ids(decode, &ids)) < 0) return 2;
    struct stat sb;
    if (stat(dir, &sb) != 0 || !S_ISDIR(sb.st_mode)) {
        fprintf(stderr, "qkv tokenize: --model %s: %s\n", dir,
                stat(dir, &sb) != 0 ? "no such directory" : "not a directory");
        free(ids);
        return 1;
    }

    int rc = 1;
    char *buf = NULL, *out = NULL;
    qkv_tokenizer *tok = NULL;
    if (!(tok = qkv_tokenizer_load_dir(dir))) {
        fprintf(stderr, "qkv tokenize: %s\n", qkv_last_error());
        goto done;
    }
    if (decode) {
        size_t len = 0;
        if (!(out = qkv_tokenizer_decode(tok, ids, n, &len))) {
            fprintf(stderr, "qkv tokenize: --decode: %s\n", qkv_last_error());
            goto done;
        }
        if (json) {
            fputs("{\"text\":", stdout);
            cli_write_json_string(stdout, out, len);
            fputs("}\n", stdout);
        } else {
            fwrite(out, 1, len, stdout);
            fputc('\n', stdout);
        }
    } else {
        size_t len = 0;
        if (file) {
            if (!(buf = cli_read_file(CMD, "--file", file, TEXT_FILE_LIMIT, &len))) goto done;
            text = buf;
        } else {
            len = strlen(text);
        }
        size_t bad_at = cli_utf8_check(text, len);
        if (bad_at < len) {
            fprintf(stderr, "qkv tokenize: %s: invalid UTF-8 at byte %zu\n", file ? file : "--text", bad_at);
            goto done;
        }
        ids = malloc((len + 1) * sizeof *ids);
        n = ids ? qkv_tokenizer_encode(tok, text, len, special, ids, (int64_t)len + 1) : -1;
        if (n < 0) {
            fprintf(stderr, "qkv tokenize: %s: %s\n", file ? file : "--text", ids ? qkv_last_error() : "out of memory");
            goto done;
        }
        fputs(json ? "{\"ids\":[" : "", stdout);
        for (int64_t i = 0; i < n; i++) printf(i ? (json ? ",%d" : " %d") : "%d", ids[i]);
        fputs(json ? "]}\n" : "\n", stdout);
    }
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "qkv tokenize: stdout: write error: %s\n", strerror(errno));
        goto done;
    }
    rc = 0;
done:
    free(out);
    free(buf);
    free(ids);
    qkv_tokenizer_free(tok);
    return rc;
}

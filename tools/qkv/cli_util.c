/* cli_util.c — helpers the `qkv` commands share (see cli_util.h): flags, numbers, files, UTF-8, JSON.
 *
 * Not here: the library's own checks; this is only the command-line client's side.
 *
 * Convention a reader needs: errors are one line "qkv <cmd>: <what>: <why>" on stderr; quoted user
 * values are cut to 40 characters so a long argument cannot flood the terminal.
 */
#include "cli_util.h"

#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---- flags ---- */

int cli_usage_error(const char *cmd, const char *what, const char *why) {
    fprintf(stderr, "qkv %s: %s: %s\n", cmd, what, why);
    return 2;
}

int cli_unknown_option(const char *cmd, const char *arg) {
    fprintf(stderr, "qkv %s: %.60s: unknown option (qkv %s --help lists them)\n", cmd, arg, cmd);
    return 2;
}

int cli_valued_flag(int argc, char **argv, int *i, const char *const *names, int n, const char **value) {
    const char *a = argv[*i];
    for (int k = 0; k < n; k++) {
        size_t fl = strlen(names[k]);
        if (strncmp(a, names[k], fl) != 0 || (a[fl] != 0 && a[fl] != '=')) continue;
        if (a[fl] == '=') *value = a + fl + 1;
        else *value = *i + 1 < argc ? argv[++*i] : NULL;
        return k;
    }
    return -1;
}

int cli_parse_i64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out) {
    char *end;
    errno = 0;
    long long v = strtoll(s, &end, 10);
    char why[160];
    if (!*s || *end || end == s || s[0] == ' ') {
        snprintf(why, sizeof why, "'%.40s' is not an integer", s);
        return cli_usage_error(cmd, flag, why);
    }
    if (errno == ERANGE || v < lo || v > hi) {
        snprintf(why, sizeof why, "%.40s is out of range %lld..%lld", s, (long long)lo, (long long)hi);
        return cli_usage_error(cmd, flag, why);
    }
    *out = v;
    return 0;
}

int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out) {
    char *end;
    errno = 0;
    char why[160];
    if (!*s || !(s[0] >= '0' && s[0] <= '9')) {
        snprintf(why, sizeof why, "'%.40s' is not a non-negative integer", s);
        return cli_usage_error(cmd, flag, why);
    }
    unsigned long long v = strtoull(s, &end, 10);
    if (*end) {
        snprintf(why, sizeof why, "'%.40s' is not a non-negative integer", s);
        return cli_usage_error(cmd, flag, why);
    }
    if (errno == ERANGE) {
        snprintf(why, sizeof why, "%.40s is out of range 0..18446744073709551615", s);
        return cli_usage_error(cmd, flag, why);
    }
    *out = v;
    return 0;
}

int cli_parse_f32(const char *cmd, const char *flag, const char *s, float *out) {
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    char why[160];
    if (!*s || *end || s[0] == ' ') {
        snprintf(why, sizeof why, "'%.40s' is not a number", s);
        return cli_usage_error(cmd, flag, why);
    }
    if (!isfinite(v) || fabs(v) > 3e38) {
        snprintf(why, sizeof why, "%.40s is not a finite number", s);
        return cli_usage_error(cmd, flag, why);
    }
    *out = (float)v;
    return 0;
}

/* ---- input ---- */

char *cli_read_file(const char *cmd, const char *flag, const char *path, size_t limit, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) {
        fprintf(stderr, "qkv %s: %s %s: cannot open: %s\n", cmd, flag, path, strerror(errno));
        return NULL;
    }
    size_t cap = 4096, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - n, f);
        if (n < cap) break;
        if (cap >= limit) {
            fprintf(stderr, "qkv %s: %s %s: larger than %zu MiB\n", cmd, flag, path, limit >> 20);
            free(buf);
            fclose(f);
            return NULL;
        }
        char *nb = realloc(buf, cap *= 2);
        if (!nb) free(buf);
        buf = nb;
    }
    int err = ferror(f);
    fclose(f);
    if (!buf || err) {
        fprintf(stderr, "qkv %s: %s %s: %s\n", cmd, flag, path, buf ? "read error" : "out of memory");
        free(buf);
        return NULL;
    }
    *len = n;
    return buf;
}

/* ---- UTF-8 and JSON ---- */

int cli_utf8_seq(const unsigned char *s, size_t n) {
    unsigned char c = s[0];
    if (c < 0x80) return 1;
    int len;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) len = 2;
    else if (c >= 0xE0 && c <= 0xEF) len = 3, lo = c == 0xE0 ? 0xA0 : 0x80, hi = c == 0xED ? 0x9F : 0xBF;
    else if (c >= 0xF0 && c <= 0xF4) len = 4, lo = c == 0xF0 ? 0x90 : 0x80, hi = c == 0xF4 ? 0x8F : 0xBF;
    else return -1;
    for (int i = 1; i < len; i++) {
        if ((size_t)i >= n) return 0;
        unsigned char lim_lo = i == 1 ? lo : 0x80, lim_hi = i == 1 ? hi : 0xBF;
        if (s[i] < lim_lo || s[i] > lim_hi) return -i;
    }
    return len;
}

size_t cli_utf8_check(const char *s, size_t n) {
    size_t i = 0;
    while (i < n) {
        int k = cli_utf8_seq((const unsigned char *)s + i, n - i);
        if (k <= 0) return i;
        i += (size_t)k;
    }
    return n;
}

size_t cli_write_replaced(FILE *f, const char *s, size_t n, int final) {
    size_t i = 0;
    while (i < n) {
        int k = cli_utf8_seq((const unsigned char *)s + i, n - i);
        if (k == 0 && !final) break;
        if (k <= 0) {
            fputs("\xEF\xBF\xBD", f);
            i += k == 0 ? n - i : (size_t)-k; /* an incomplete sequence at the very end: one U+FFFD */
        } else {
            fwrite(s + i, 1, (size_t)k, f);
            i += (size_t)k;
        }
    }
    return i;
}

void cli_write_json_string(FILE *f, const char *s, size_t n) {
    fputc('"', f);
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        int k = cli_utf8_seq((const unsigned char *)s + i, n - i);
        if (k <= 0) {
            fputs("\xEF\xBF\xBD", f);
            i += k == 0 ? n - i : (size_t)-k;
            continue;
        }
        if (c == '"') fputs("\\\"", f);
        else if (c == '\\') fputs("\\\\", f);
        else if (c == '\n') fputs("\\n", f);
        else if (c == '\r') fputs("\\r", f);
        else if (c == '\t') fputs("\\t", f);
        else if (c < 0x20 || c == 0x7F) fprintf(f, "\\u%04x", c);
        else fwrite(s + i, 1, (size_t)k, f);
        i += (size_t)k;
    }
    fputc('"', f);
}

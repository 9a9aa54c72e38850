/* cli_util.h — helpers the `qkv` commands share: flag matching and strict number parsing, reading a
 * whole input file, UTF-8 checking and JSON string output.
 *
 * Not here: anything a library user needs (that belongs in include/qkv); each command's own flags.
 *
 * Convention a reader needs: `cmd` is the command name ("generate"); every error is printed as the one
 * line "qkv <cmd>: <what>: <why>" on stderr, and the functions that can fail on a flag return 2 (the
 * exit status for bad usage) after printing it, 0 on success.
 */
#ifndef QKV_CLI_UTIL_H
#define QKV_CLI_UTIL_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

/* ---- flags ---- */

/* Prints "qkv <cmd>: <what>: <why>" and returns 2. */
int cli_usage_error(const char *cmd, const char *what, const char *why);

/* Prints "qkv <cmd>: <arg>: unknown option (qkv <cmd> --help lists them)" and returns 2. */
int cli_unknown_option(const char *cmd, const char *arg);

/* Matches argv[*i] against the valued flags names[0..n) written as "--flag VALUE" or "--flag=VALUE".
 * Returns the index of the flag, or -1 when argv[*i] is none of them. On a match *value is the value
 * (for "--flag VALUE" *i then points at VALUE), or NULL when it is missing. */
int cli_valued_flag(int argc, char **argv, int *i, const char *const *names, int n, const char **value);

/* Strict parsing: the whole string s, in range, else an error naming flag (returns 2). */
int cli_parse_i64(const char *cmd, const char *flag, const char *s, int64_t lo, int64_t hi, int64_t *out);
int cli_parse_u64(const char *cmd, const char *flag, const char *s, uint64_t *out);
int cli_parse_f32(const char *cmd, const char *flag, const char *s, float *out); /* finite float */

/* ---- input ---- */

/* Reads all of path (at most limit bytes, a power of two >= 4096) into a malloc'd buffer, *len bytes.
 * NULL after printing "qkv <cmd>: <flag> <path>: <why>" (cannot open, too large, read error). */
char *cli_read_file(const char *cmd, const char *flag, const char *path, size_t limit, size_t *len);

/* ---- UTF-8 and JSON ---- */

/* Length of the well-formed UTF-8 sequence at s[0..n): 1..4; 0 when s[0..n) is a proper prefix of one
 * (more bytes may complete it); -k when the first k bytes (k >= 1) can never start a character — the
 * "maximal subpart" that Python's errors="replace" turns into one U+FFFD. */
int cli_utf8_seq(const unsigned char *s, size_t n);

/* Byte offset of the first invalid (or incomplete) UTF-8 sequence in s[0..n), or n when all is valid. */
size_t cli_utf8_check(const char *s, size_t n);

/* Writes the valid text of s[0..n) to f with U+FFFD for ill-formed bytes. With final 0 an incomplete
 * sequence at the end is not written; the return value is how many bytes were consumed. */
size_t cli_write_replaced(FILE *f, const char *s, size_t n, int final);

/* s as a JSON string literal: quotes, backslash and control characters escaped, ill-formed UTF-8
 * as U+FFFD, everything else as is (valid UTF-8). */
void cli_write_json_string(FILE *f, const char *s, size_t n);

#endif

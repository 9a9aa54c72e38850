/* file.c — writing a file so that a reader never sees half of it: through "<path>.tmp.<pid>", flushed,
 * fsync'ed and renamed over path, the temporary removed on any failure. Shared by every writer of
 * model, tokenizer and config files.
 * Not here: reading (each format validates its own input), directories.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core_int.h"

qkv_status qkv__write_file_atomic(const char *path, int (*write)(FILE *f, const void *arg), const void *arg) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return qkv__set_error(QKV_ERR_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return qkv__set_error(QKV_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    int bad = write(f, arg) != 0 || fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (!bad && rename(tmp, path) != 0) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        remove(tmp);
        return qkv__set_error(QKV_ERR_IO, "%s: cannot write: %s", path, strerror(err));
    }
    return QKV_OK;
}

/* file.c — writing a file so that a reader never sees half of it: through "<path>.tmp.<pid>", flushed,
 * fsync'ed and renamed over path (then the directory fsync'ed, so that the rename survives a crash),
 * the temporary removed on any failure. Shared by every writer of model, tokenizer, config, token
 * cache, log and plot files.
 * Not here: reading (each format validates its own input), directories.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "core_int.h"

/* Makes the rename durable: fsync of the directory holding path. Best effort: some file systems
 * refuse fsync on a directory, and the file itself is already complete and synced by then. */
static void sync_parent_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char dir[4096];
    if (!slash) snprintf(dir, sizeof dir, ".");
    else if (slash == path) snprintf(dir, sizeof dir, "/");
    else if ((size_t)(slash - path) < sizeof dir) snprintf(dir, sizeof dir, "%.*s", (int)(slash - path), path);
    else return;
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return;
    (void)fsync(fd);
    close(fd);
}

qkv_status qkv__write_file_atomic(const char *path, int (*write)(FILE *f, const void *arg), const void *arg) {
    char tmp[4200];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp)
        return qkv__set_error(QKV_ERR_ARG, "%s: path too long", path);
    FILE *f = fopen(tmp, "wb");
    if (!f) return qkv__set_error(QKV_ERR_IO, "%s: cannot create temporary file %s: %s", path, tmp, strerror(errno));
    errno = 0;
    int bad = write(f, arg) != 0 || fflush(f) != 0 || ferror(f) || fsync(fileno(f)) != 0;
    int err = errno;
    if (fclose(f) != 0 && !bad) {
        bad = 1;
        err = errno;
    }
    if (bad) {
        remove(tmp);
        return qkv__set_error(QKV_ERR_IO, "%s: cannot write %s: %s", path, tmp, strerror(err ? err : EIO));
    }
    if (rename(tmp, path) != 0) {
        err = errno;
        remove(tmp);
        return qkv__set_error(QKV_ERR_IO, "%s: cannot rename %s into place: %s", path, tmp, strerror(err));
    }
    sync_parent_dir(path);
    return QKV_OK;
}

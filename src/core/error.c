/* error.c — status strings and the two places a detailed message lives: the context (for ops) and a
 * thread-local buffer (for calls made without a context, such as parameter blocks and file io).
 * Not a logging system: nothing is printed here; the qkv command prints. */
#include <stdio.h>
#include <string.h>

#include "core_int.h"

static const char *const status_text[] = {
#define QKV__STATUS_TEXT(name, msg) msg,
    QKV_STATUS_MAP(QKV__STATUS_TEXT)
#undef QKV__STATUS_TEXT
};

const char *qkv_status_str(qkv_status s) {
    if ((int)s < 0 || (size_t)s >= sizeof status_text / sizeof status_text[0]) return "unknown status";
    return status_text[s];
}

static _Thread_local char tl_err[512];

const char *qkv_last_error(void) { return tl_err; }

qkv_status qkv__set_error(qkv_status s, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(tl_err, sizeof tl_err, fmt, ap);
    va_end(ap);
    return s;
}

int qkv__fail(qkv_ctx *ctx, qkv_status s, const char *fmt, ...) {
    if (ctx->status != QKV_OK) return 0; /* the first error is the one worth reporting */
    ctx->status = s;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(ctx->err, sizeof ctx->err, fmt, ap);
    va_end(ap);
    return 0;
}

qkv_status qkv_ctx_status(const qkv_ctx *ctx) { return ctx ? ctx->status : QKV_ERR_ARG; }

const char *qkv_ctx_error(const qkv_ctx *ctx) { return ctx ? ctx->err : "no context"; }

void qkv_ctx_clear_error(qkv_ctx *ctx) {
    ctx->status = QKV_OK;
    ctx->err[0] = '\0';
}

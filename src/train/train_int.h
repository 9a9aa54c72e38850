/* train_int.h — what the files of the train layer share and do not export. */
#ifndef QKV_TRAIN_INT_H
#define QKV_TRAIN_INT_H

#include "qkv/train.h"

/* Formats one remark (at most ~700 bytes, cut beyond) and hands it to fn(user, text); nothing when fn
 * is NULL. Defined in data.c. */
void qkv__note(qkv_note_fn fn, void *user, const char *fmt, ...) __attribute__((format(printf, 3, 4)));

#endif

/* gpt_int.h — what the GPT-2 model shares with its checkpoint loaders (src/io/hf_gpt2.c) and nothing
 * else. Not public API: the loaders need a model whose parameters they are about to overwrite, so
 * drawing 124M random numbers first would only waste the load time.
 */
#ifndef QKV_MODELS_GPT_INT_H
#define QKV_MODELS_GPT_INT_H

#include "qkv/gpt.h"

/* qkv_gpt_new without the random initialisation: every parameter is 0 (one memset), ready to be
 * filled from a file. NULL on a bad config or out of memory (qkv_last_error). */
qkv_gpt *qkv__gpt_new_zeroed(const qkv_gpt_config *cfg);

#endif

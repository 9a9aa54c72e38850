/* nn_int.h — what the nn modules (linear.c, attention.c, transformer.c) share privately: building
 * the PyTorch-style dotted parameter names and declaring a module's parameters under them.
 *
 * Not here: anything a library user calls (include/qkv/nn.h); the modules themselves.
 *
 * Convention a reader needs: a module's parameters are named "prefix.field" exactly as the PyTorch
 * module's state_dict names them ("field" alone when the prefix is empty), at most
 * QKV__NN_NAME_MAX - 1 bytes; a failure leaves its one-line message in qkv_last_error.
 */
#ifndef QKV_NN_INT_H
#define QKV_NN_INT_H

#include "qkv/nn.h"

#define QKV__NN_NAME_MAX 256 /* bytes of a parameter name, with its terminating NUL */

/* "prefix.field", or "field" when prefix is empty or NULL, into buf (QKV__NN_NAME_MAX bytes).
 * 1 on success; 0 (and the thread error, QKV_ERR_ARG) when it does not fit. Defined in linear.c. */
int qkv__nn_join(char *buf, const char *prefix, const char *field);

/* Declares the parameter prefix.field of the given shape, init and weight-decay flag in p, into *out
 * (NULL on failure). Returns QKV_OK, or the status with the thread error set: QKV_ERR_ARG (p NULL,
 * name too long or already declared), QKV_ERR_SHAPE (a dimension < 1), QKV_ERR_STATE (p already
 * allocated), QKV_ERR_NOMEM. Defined in linear.c. */
qkv_status qkv__nn_declare(qkv_tensor **out, qkv_params *p, const char *prefix, const char *field, int ndim,
                           const int64_t *shape, qkv_init init, int no_decay);

#endif

// test_cxx_headers.cpp — the public headers compile as C++ (extern "C", no C-only constructs) and the
// library links from a C++ program: a C++ user can call one op and read its error.
#include <cstdio>

#include "qkv.h"

int main() {
    qkv_ctx *ctx = qkv_ctx_new(0);
    if (!ctx) return 1;
    float a[6] = {1, 2, 3, 4, 5, 6};
    int64_t shape[2] = {2, 3};
    qkv_tensor *x = qkv_tensor_from(ctx, 2, shape, a);
    qkv_tensor *y = qkv_matmul(ctx, x, x, 0, 1); // (2,3) @ (3,2) = (2,2)
    int ok = y && y->shape[0] == 2 && y->shape[1] == 2 && y->data[0] == 14.0f;
    qkv_tensor *bad = qkv_matmul(ctx, x, x, 0, 0); // inner dims differ: must fail with a message
    ok = ok && !bad && qkv_ctx_status(ctx) == QKV_ERR_SHAPE;
    std::printf("C++ headers: matmul %s, error path: %s\n", y ? "ok" : "failed", qkv_ctx_error(ctx));
    qkv_ctx_free(ctx);
    std::printf("test_cxx_headers: %s\n", ok ? "passed" : "FAILED");
    return ok ? 0 : 1;
}

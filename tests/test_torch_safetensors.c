/* test_torch_safetensors.c — float conversion of safetensors dtypes against PyTorch
 * (golden: tests/torch/gen_safetensors.py writes st_dtypes.safetensors and st_dtypes.bin).
 *
 * qkv_safetensors_read_f32 of every F32, F16, BF16 and F64 tensor in the file must equal PyTorch's
 * `.float()` of it bit for bit — including all 65536 half and bfloat16 bit patterns (subnormals, -0,
 * infinities) and F64 values that round or overflow — with one allowance: a NaN must be a NaN, its
 * payload bits are not compared (PyTorch's own F16 conversion may quiet a signalling NaN).
 * Also: shapes and dtypes as written, the metadata, the I64 tensor refused by read_f32 but readable
 * raw, and a wrong element count refused. Tolerance: none — the conversions are exact by definition.
 */
/* testutil.h: helpers this test does not use, and a "/\*" inside its opening comment */
#include "testutil.h"

static uint32_t bits(float f) {
    uint32_t u;
    memcpy(&u, &f, 4);
    return u;
}

/* Compares tensor name of the file with the golden entry of the same name, bit for bit (NaN as NaN). */
static void check_float(qkv_safetensors *st, tu_golden *g, const char *name, qkv_dtype dtype) {
    const qkv_st_tensor *t = qkv_safetensors_find(st, name);
    tu_entry *e = tu_get(g, name);
    TU_CHECK(t != NULL, "tensor '%s' missing from the file", name);
    if (!t) return;
    TU_CHECK(t->dtype == dtype, "'%s' is %s, want %s", name, qkv_dtype_name(t->dtype), qkv_dtype_name(dtype));
    TU_CHECK(t->ndim == e->ndim, "'%s': ndim %d, golden %d", name, t->ndim, e->ndim);
    for (int d = 0; d < e->ndim && d < t->ndim; d++)
        TU_CHECK(t->shape[d] == e->shape[d], "'%s': shape[%d] %lld, golden %lld", name, d, (long long)t->shape[d],
                 (long long)e->shape[d]);
    float *got = malloc((size_t)e->numel * sizeof *got);
    qkv_status s = qkv_safetensors_read_f32(t, got, e->numel);
    TU_CHECK(s == QKV_OK, "read_f32 '%s': %s", name, qkv_last_error());
    const float *ref = e->data;
    int64_t diff = 0, nans = 0, subn = 0, first = -1;
    for (int64_t i = 0; i < e->numel; i++) {
        int same = isnan(ref[i]) ? isnan(got[i]) : bits(got[i]) == bits(ref[i]);
        if (isnan(ref[i])) nans++;
        if (fpclassify(ref[i]) == FP_SUBNORMAL) subn++;
        if (!same && diff++ == 0) first = i;
    }
    tu_checks++;
    if (diff) tu_failures++;
    printf("%-4s %-9s %-5s n=%-6lld bit-exact vs torch .float() (NaN as NaN; %lld NaN, %lld subnormal results)",
           diff ? "FAIL" : "ok", name, qkv_dtype_name(dtype), (long long)e->numel, (long long)nans, (long long)subn);
    if (diff)
        printf(": %lld differ, first at %lld: got 0x%08x ref 0x%08x\n", (long long)diff, (long long)first,
               bits(got[first]), bits(ref[first]));
    else
        printf("\n");
    free(got);
}

int main(void) {
    tu_golden *g = tu_golden_load("st_dtypes.bin");
    char path[1024];
    snprintf(path, sizeof path, "%s/st_dtypes.safetensors", tu_golden_dir());
    qkv_safetensors *st = qkv_safetensors_open(path);
    if (!st) {
        printf("FAIL: cannot open %s: %s\n", path, qkv_last_error());
        return 1;
    }
    TU_CHECK(qkv_safetensors_count(st) == 7, "%d tensors, want 7", qkv_safetensors_count(st));
    const char *fmt = qkv_safetensors_metadata(st, "format");
    TU_CHECK(fmt && !strcmp(fmt, "pt"), "metadata format = %s", fmt ? fmt : "NULL");

    check_float(st, g, "f32", QKV_DTYPE_F32);
    check_float(st, g, "f16", QKV_DTYPE_F16);
    check_float(st, g, "f16_all", QKV_DTYPE_F16);
    check_float(st, g, "bf16", QKV_DTYPE_BF16);
    check_float(st, g, "bf16_all", QKV_DTYPE_BF16);
    check_float(st, g, "f64", QKV_DTYPE_F64);

    /* I64: not convertible by read_f32 (dst untouched), but its raw little-endian bytes are the values */
    const qkv_st_tensor *t = qkv_safetensors_find(st, "i64");
    tu_entry *e = tu_get(g, "i64");
    TU_CHECK(t && t->dtype == QKV_DTYPE_I64 && t->ndim == 2 && t->shape[0] == 2 && t->shape[1] == 3, "i64 tensor");
    if (t) {
        float dst[6] = {7, 7, 7, 7, 7, 7};
        qkv_status s = qkv_safetensors_read_f32(t, dst, 6);
        TU_CHECK(s == QKV_ERR_ARG && dst[0] == 7 && strstr(qkv_last_error(), "I64"), "read_f32 of I64: %d %s", s,
                 qkv_last_error());
        int bad = 0;
        for (int i = 0; i < 6; i++) {
            int64_t v;
            memcpy(&v, (const unsigned char *)t->data + 8 * i, 8);
            bad += v != ((const int32_t *)e->data)[i];
        }
        TU_CHECK(bad == 0, "i64 raw values differ from the golden");
        printf("ok   i64: refused by read_f32, raw values match\n");
    }
    /* a wrong element count is refused and leaves dst alone */
    t = qkv_safetensors_find(st, "f16");
    if (t) {
        float dst[24];
        dst[0] = 5;
        TU_CHECK(qkv_safetensors_read_f32(t, dst, 23) == QKV_ERR_SHAPE && dst[0] == 5, "read_f32 with numel 23 of 24");
    }
    qkv_safetensors_close(st);
    tu_golden_free(g);
    return tu_finish("torch_safetensors");
}

/* qkv/io.h — reading and writing Hugging Face safetensors files.
 *
 * The format (huggingface/safetensors README): 8 bytes little-endian u64 N, then N bytes of UTF-8 JSON
 * (the header, possibly padded with trailing spaces), then the data region. The header maps each
 * tensor name to {"dtype": "F32", "shape": [d0, ...], "data_offsets": [begin, end]}, offsets in bytes
 * relative to the first byte after the header; an optional "__metadata__" member is a string → string
 * map. Tensors are little-endian, row-major (C order), packed: the ranges tile the data region exactly.
 *
 * This is not a general tensor library: the reader hands out typed views of the mapped file and
 * converts the float types to float32; the writer writes float32 tensors only, which is what qkv
 * models, gradients and optimizer moments are.
 *
 * Convention a reader needs: qkv_safetensors_open validates the whole header before it returns — every
 * tensor's dtype, shape, byte range and the tiling of the data region — so a handle that exists never
 * points outside the file. Files are untrusted input: a malformed one is an error (QKV_ERR_FORMAT with
 * a one-line message naming the file and the problem in qkv_last_error()), never a crash.
 *
 * Ownership: qkv_safetensors_open allocates the handle, qkv_safetensors_close frees it, and every
 * tensor view, name and metadata string it hands out dies with it. An open handle is read-only, so
 * any number of threads may read it at once.
 *
 * Example (a GPT-2 checkpoint; shortened error handling):
 *     qkv_safetensors *st = qkv_safetensors_open("model.safetensors");
 *     if (!st) { fprintf(stderr, "%s\n", qkv_last_error()); return 1; }
 *     const qkv_st_tensor *wte = qkv_safetensors_find(st, "wte.weight");      // (V, C), any float dtype
 *     float *w = malloc(wte->shape[0] * wte->shape[1] * sizeof *w);
 *     if (qkv_safetensors_read_f32(wte, w, wte->shape[0] * wte->shape[1]) != QKV_OK) ...
 *     qkv_safetensors_close(st);
 *
 *     const int64_t shape[2] = {V, C};
 *     qkv_st_entry e[1] = {{"wte.weight", 2, shape, w}};
 *     const char *meta[2] = {"format", "pt"};                              // what transformers expects
 *     qkv_safetensors_write("out/model.safetensors", e, 1, meta, 1);
 */
#ifndef QKV_IO_H
#define QKV_IO_H

#include <stddef.h>
#include <stdint.h>

#include "qkv/core.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Element types of safetensors files. The first ten are the ones the brief of this module names; the
 * last five are valid safetensors dtypes too, accepted so that a file holding one of them still opens
 * (qkv_safetensors_read_f32 converts only F32, F16, BF16 and F64). */
typedef enum {
    QKV_DTYPE_F32,
    QKV_DTYPE_F16,
    QKV_DTYPE_BF16,
    QKV_DTYPE_F64,
    QKV_DTYPE_I64,
    QKV_DTYPE_I32,
    QKV_DTYPE_I16,
    QKV_DTYPE_I8,
    QKV_DTYPE_U8,
    QKV_DTYPE_BOOL,
    QKV_DTYPE_U64,
    QKV_DTYPE_U32,
    QKV_DTYPE_U16,
    QKV_DTYPE_F8_E5M2,
    QKV_DTYPE_F8_E4M3,
} qkv_dtype;

#define QKV_ST_MAX_DIMS 8 /* tensors with more dimensions are rejected */

/* The safetensors spelling of a dtype ("F32", "BF16", ...); "?" for a value outside the enum. */
const char *qkv_dtype_name(qkv_dtype dt);
/* Bytes per element (1, 2, 4 or 8); 0 for a value outside the enum. */
size_t qkv_dtype_size(qkv_dtype dt);

/* One tensor of an open file. Every pointer lives as long as the handle. data points into the mapped
 * file and may be unaligned for its type (the format does not promise alignment): read it with memcpy
 * or qkv_safetensors_read_f32, never by casting. A tensor with a zero dimension has nbytes 0. */
typedef struct qkv_st_tensor {
    const char *name;                 /* state-dict key, NUL-terminated UTF-8 */
    qkv_dtype dtype;
    int ndim;                         /* 0 (a scalar) .. QKV_ST_MAX_DIMS */
    int64_t shape[QKV_ST_MAX_DIMS];   /* PyTorch order; entries past ndim are 0 */
    const void *data;                 /* nbytes bytes, little-endian, row-major */
    size_t nbytes;                    /* numel * qkv_dtype_size(dtype) */
} qkv_st_tensor;

/* An open file: the file memory-mapped read-only plus the parsed header. */
typedef struct qkv_safetensors qkv_safetensors;

/* Opens, maps and validates path. Returns NULL with qkv_last_error() set on failure:
 * QKV_ERR_IO when the file cannot be opened, inspected or mapped (with the system's reason),
 * QKV_ERR_FORMAT when it is not a valid safetensors file, QKV_ERR_NOMEM when out of memory.
 * Checked: the file holds at least 8 bytes; the header length is > 0, <= 100,000,000 and fits in the
 * file; the header is a JSON object (strict RFC 8259, no duplicate keys); every tensor entry is an
 * object with a known "dtype" string, a "shape" array of at most 8 non-negative integers and a
 * "data_offsets" array of two integers begin <= end inside the data region, end - begin equal to the
 * shape's element count times the dtype size; the ranges, ordered by offset, start at 0, neither
 * overlap nor leave gaps, and end exactly at the end of the file; "__metadata__", when present, is an
 * object of string values (null is read as no metadata, as Hugging Face's reader does). Names and
 * metadata strings holding a NUL character are rejected. Unknown members of a tensor entry are
 * ignored, as Hugging Face's reader ignores them.
 * Tensors are listed in data order (by begin offset), which for files written by Hugging Face or by
 * qkv_safetensors_write is also the order of the header.
 * The mapping is private and read-only: changes made to the file by others while it is open are
 * undefined behaviour for the reader (a file truncated under it raises SIGBUS), as with any mmap. */
qkv_safetensors *qkv_safetensors_open(const char *path);
/* Unmaps the file and frees the handle; every qkv_st_tensor and string it gave out dies. NULL is fine. */
void qkv_safetensors_close(qkv_safetensors *st);

/* Number of tensors (0 for NULL). */
int qkv_safetensors_count(const qkv_safetensors *st);
/* Tensor i (0 <= i < count) in data order; NULL when out of range. */
const qkv_st_tensor *qkv_safetensors_get(const qkv_safetensors *st, int i);
/* The tensor called name (exact byte comparison, binary search); NULL when there is none. */
const qkv_st_tensor *qkv_safetensors_find(const qkv_safetensors *st, const char *name);

/* Value of "__metadata__"[key], or NULL when absent. */
const char *qkv_safetensors_metadata(const qkv_safetensors *st, const char *key);
/* Number of metadata entries, and key i of them in header order (NULL when out of range). */
int qkv_safetensors_metadata_count(const qkv_safetensors *st);
const char *qkv_safetensors_metadata_key(const qkv_safetensors *st, int i);

/* Converts tensor t to float32 into dst (numel floats): F32 copied bit for bit, F16 and BF16 widened
 * exactly (subnormals, ±0, ±inf and NaN included), F64 rounded to nearest as PyTorch's .float() does.
 * numel must equal t's element count (QKV_ERR_SHAPE otherwise); other dtypes give QKV_ERR_ARG.
 * dst is left untouched on error. Thread-safe: reads only t. */
qkv_status qkv_safetensors_read_f32(const qkv_st_tensor *t, float *dst, int64_t numel);

/* One float32 tensor to write: shape has ndim (0..8) entries, each >= 0; data holds their product of
 * floats (it may be NULL when that product is 0). */
typedef struct qkv_st_entry {
    const char *name;
    int ndim;
    const int64_t *shape;
    const float *data;
} qkv_st_entry;

/* Writes n tensors as an F32 safetensors file at path, with n_meta metadata pairs taken from
 * metadata_kv = {key0, value0, key1, value1, ...} (NULL when n_meta is 0).
 * Layout, as Hugging Face's writer does it: the header is compact JSON, "__metadata__" first (when
 * n_meta > 0; keys in the order given), then the tensors sorted by name (byte order — what Hugging
 * Face's "alignment, then name" order is when every tensor is F32), their data packed in that order
 * from offset 0; the header is padded with spaces to a multiple of 8 bytes, so the data starts 8-byte
 * aligned in the file.
 * The file is written to "<path>.tmp.<pid>", flushed with fsync and renamed over path, so path holds
 * either its old contents or the complete new file; on any error the temporary file is removed.
 * Errors: QKV_ERR_ARG for a NULL/empty/duplicate/non-UTF-8 name, the name "__metadata__", a bad
 * ndim or dimension, NULL data, a NULL/duplicate/non-UTF-8 metadata string; QKV_ERR_IO (with the
 * system's reason) when writing fails; QKV_ERR_NOMEM.
 * Thread-safety: writes of different paths may run at once; two threads of one process must not
 * write the same path at the same time (they would share the temporary name). */
qkv_status qkv_safetensors_write(const char *path, const qkv_st_entry *entries, int n,
                                 const char *const *metadata_kv, int n_meta);

#ifdef __cplusplus
}
#endif
#endif

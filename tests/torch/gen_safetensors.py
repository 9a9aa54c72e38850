"""gen_safetensors.py - a safetensors file of every float dtype (st_dtypes.safetensors) and the float32
values PyTorch converts it to (st_dtypes.bin), for tests/test_torch_safetensors.c.

Debian's torch 1.13 has no `safetensors` package, so the file is written here by hand the way Hugging
Face's writer lays it out (huggingface/safetensors README and its serializer): 8-byte little-endian
header length, compact JSON header with "__metadata__" first and the tensors sorted by dtype
alignment (largest first: I64, F64, F32, BF16, F16) then name, offsets packed from 0, the header
padded with spaces to a multiple of 8, then the raw little-endian bytes.

Tensors (the golden holds each float one as torch's own `.float()` of it):
  f32        random normals plus 0, -0, +-inf, nan, the smallest subnormal, FLT_MAX  (7, 3)
  f16        random values (2, 3, 4) and every special: +-0, smallest/largest subnormal, smallest
             normal, 65504, +-inf, nan, 1/3
  f16_all    all 65536 half bit patterns (every subnormal, both zeros, infinities, every NaN)
  bf16       random values and the same kind of specials for bfloat16
  bf16_all   all 65536 bfloat16 bit patterns
  f64        random values plus ones that must round: 1/3, 1 + 2^-30, a value below FLT_MIN that becomes
             a float32 subnormal, 1e300 (-> inf), -1e-320 (-> -0), +-inf, nan, a halfway case
  i64        0..5 (the golden stores them as int32): read_f32 must refuse it
"""
import json
import os
import struct

import torch

from golden import out_path, setup, write_golden


def raw_bytes(t):
    """Little-endian bytes of a contiguous tensor (bfloat16 through an int16 view: numpy has none)."""
    t = t.contiguous()
    if t.dtype in (torch.bfloat16, torch.float16):
        t = t.view(torch.int16)
    return t.numpy().tobytes()


DTYPE_NAME = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
              torch.int64: "I64"}
# Hugging Face's Dtype enum order (ascending alignment); its writer sorts descending, then by name.
DTYPE_RANK = ["BOOL", "U8", "I8", "F8_E5M2", "F8_E4M3", "I16", "U16", "F16", "BF16", "I32", "U32", "F32", "F64",
              "I64", "U64"]


def write_safetensors(path, tensors, metadata):
    items = sorted(tensors.items(), key=lambda kv: (-DTYPE_RANK.index(DTYPE_NAME[kv[1].dtype]), kv[0]))
    header = {"__metadata__": metadata}
    blobs, offset = [], 0
    for name, t in items:
        b = raw_bytes(t)
        header[name] = {"dtype": DTYPE_NAME[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(b)]}
        offset += len(b)
        blobs.append(b)
    h = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
    h += b" " * ((8 - len(h) % 8) % 8)
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(h)))
        f.write(h)
        for b in blobs:
            f.write(b)
    os.replace(tmp, path)


def all_bit_patterns(dtype):
    return torch.arange(-32768, 32768, dtype=torch.int32).to(torch.int16).view(dtype)


def main():
    setup()
    inf, nan = float("inf"), float("nan")
    f32 = torch.randn(7, 3)
    f32.view(-1)[:7] = torch.tensor([0.0, -0.0, inf, -inf, nan, 1.401298464324817e-45, 3.4028234663852886e38])

    f16 = torch.randn(2, 3, 4).to(torch.float16)
    specials16 = torch.tensor([0.0, -0.0, 2.0**-24, -(2.0**-24), 2.0**-14 - 2.0**-24, 2.0**-14, 65504.0, -65504.0,
                               inf, -inf, nan, 1.0 / 3.0], dtype=torch.float16)
    f16.view(-1)[: specials16.numel()] = specials16

    bf16 = (torch.randn(5, 4) * 100).to(torch.bfloat16)
    specialsbf = torch.tensor([0.0, -0.0, 2.0**-133, 2.0**-126 - 2.0**-133, 2.0**-126, 3.3895313892515355e38,
                               inf, -inf, nan, 1.0 / 3.0], dtype=torch.bfloat16)
    bf16.view(-1)[: specialsbf.numel()] = specialsbf

    f64 = torch.randn(3, 4, dtype=torch.float64)
    specials64 = torch.tensor([1.0 / 3.0, 1.0 + 2.0**-30, 1.5 * 2.0**-140, 1e300, -1e-320, inf, -inf, nan,
                               1.0 + 2.0**-24, 1.0 + 3 * 2.0**-24], dtype=torch.float64)
    f64.view(-1)[: specials64.numel()] = specials64

    tensors = {
        "f32": f32,
        "f16": f16,
        "f16_all": all_bit_patterns(torch.float16),
        "bf16": bf16,
        "bf16_all": all_bit_patterns(torch.bfloat16),
        "f64": f64,
        "i64": torch.arange(6, dtype=torch.int64).reshape(2, 3),
    }
    write_safetensors(out_path("st_dtypes.safetensors"), tensors, {"format": "pt", "source": "gen_safetensors.py"})
    golden = {name: (t.float() if t.is_floating_point() else t) for name, t in tensors.items()}
    write_golden(out_path("st_dtypes.bin"), golden)


if __name__ == "__main__":
    main()

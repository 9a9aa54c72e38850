"""golden.py - writes the golden files the C tests read (format in tests/testutil.h).

Every gen_*.py script in this folder builds its reference with PyTorch (Debian's python3-torch,
run as /usr/bin/python3) and calls write_golden(path, {name: tensor_or_array}). float tensors are
stored as float32, integer ones as int32, bool/uint8 ones as uint8.
"""
import os
import struct
import sys

import numpy as np
import torch


def _as_array(v):
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu()
        if v.dtype == torch.bool:
            v = v.to(torch.uint8)
        v = v.numpy()
    v = np.asarray(v)
    if v.dtype.kind == "f":
        return v.astype("<f4"), 0
    if v.dtype == np.uint8 or v.dtype == np.bool_:
        return v.astype("u1"), 2
    if v.dtype.kind in "iu":
        return v.astype("<i4"), 1
    raise TypeError("unsupported dtype %s" % v.dtype)


def write_golden(path, entries):
    """Writes entries (dict name -> tensor) atomically: to a temporary name, then renamed."""
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(b"QKVGOLD1")
        f.write(struct.pack("<I", len(entries)))
        for name, v in entries.items():
            a, dtype = _as_array(v)
            nb = name.encode()
            f.write(struct.pack("<I", len(nb)))
            f.write(nb)
            f.write(struct.pack("<II", dtype, a.ndim))
            for d in a.shape:
                f.write(struct.pack("<q", d))
            f.write(np.ascontiguousarray(a).tobytes())
    os.replace(tmp, path)


def out_path(name):
    """Output file <dir>/<name>, dir from argv[1] (default build/golden)."""
    d = sys.argv[1] if len(sys.argv) > 1 else "build/golden"
    os.makedirs(d, exist_ok=True)
    return os.path.join(d, name)


def setup():
    """Fixed seed, float64 off, one thread: goldens are the same on every run."""
    torch.manual_seed(1234)
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)

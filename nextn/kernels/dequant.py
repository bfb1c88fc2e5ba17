"""Dequantizing a GGUF tensor into a float torch tensor (gguf-py's reference dequantization)."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType as Q
from gguf.quants import dequantize

from ..errors import ModelFileError

DEQUANTIZABLE = {Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K}


def tensor_to_torch(t, dtype: torch.dtype, path: Path | str = "") -> torch.Tensor:
    """Dequantize one GGUF tensor into a torch tensor of the logical (row-major) shape."""
    qtype = Q(t.tensor_type)
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if qtype in (Q.F32, Q.F16):
        arr = np.asarray(t.data)
    elif qtype in DEQUANTIZABLE:
        arr = dequantize(t.data, qtype)
    else:
        raise ModelFileError(f"{path}: tensor '{t.name}' has type {qtype.name}, which nextn cannot dequantize "
                             f"(supported: {', '.join(sorted(q.name for q in DEQUANTIZABLE))})")
    with warnings.catch_warnings():  # read-only memmap: weights are never written in place
        warnings.simplefilter("ignore", UserWarning)
        out = torch.from_numpy(np.ascontiguousarray(arr).reshape(shape))
    return out if out.dtype == dtype else out.to(dtype)

"""Random, valid GGUF blocks of every type the kernels read, for tests and benchmarks.

gguf-py quantizes the simple types itself; the K-quants and IQ4 types it can only dequantize, so
their blocks are random bytes with the scale fields set to modest float16 values."""

from __future__ import annotations

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q
from gguf.quants import quantize

# byte offsets of the float16 scale fields (d, and dmin where there is one) inside a block
SCALE_FIELDS = {Q.Q2_K: (80, 82), Q.Q3_K: (108,), Q.Q4_K: (0, 2), Q.Q5_K: (0, 2), Q.Q6_K: (208,),
                Q.IQ4_NL: (0,), Q.IQ4_XS: (0,)}


def random_rows(qtype: Q, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """uint8 [rows, row_bytes] holding rows x cols weights of `qtype`."""
    rng = np.random.default_rng(seed)
    if qtype not in SCALE_FIELDS:
        values = rng.standard_normal((rows, cols)).astype(np.float32)
        if qtype == Q.F32:
            return values.view(np.uint8)
        if qtype == Q.F16:
            return values.astype(np.float16).view(np.uint8)
        return quantize(values, qtype).reshape(rows, -1)
    block, size = GGML_QUANT_SIZES[qtype]
    raw = rng.integers(0, 256, size=(rows, cols // block, size), dtype=np.uint8)
    for off in SCALE_FIELDS[qtype]:
        scale = rng.uniform(0.002, 0.05, size=(rows, cols // block)).astype(np.float16)
        raw[..., off:off + 2] = scale.view(np.uint8).reshape(rows, cols // block, 2)
    return raw.reshape(rows, -1)

"""A weight kept in its GGUF type: the file's bytes (memory-mapped on CPU, copied as they are to a GPU)
and what to do with them.

Model code calls `linear` and never knows the format or the device. Q4_K / Q6_K / Q8_0 matrices on
the int8 kernels are repacked once at load (`pack`: sixteen rows interleaved, csrc/packed.inc), a
same-size rearrangement that every other way of reading the weight undoes. On CPU a product of a few rows
(decode, MTP drafts, verification) runs the native kernel straight from the quantized bytes; a product
of many rows (prefill) dequantizes tiles of the weight and hands them to torch's GEMM. Dequantization
is the native kernel's, equal bit for bit to gguf-py's reference. On CUDA the Triton kernels of
`kernels.gpu` do the same from the bytes in GPU memory.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from ..errors import ModelFileError
from . import native

SUPPORTED = (Q.F32, Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q2_K, Q.Q3_K, Q.Q4_K, Q.Q5_K, Q.Q6_K,
             Q.IQ4_NL, Q.IQ4_XS)
FEW_ROWS = 16          # up to this many rows a product is decode-sized (CUDA's fused kernel, layers.swiglu)
NATIVE_ROWS = 128      # CPU: up to this many rows the native kernel beats dequantized tiles + GEMM (any type)
TILE_BYTES = 8 << 20   # float32 bytes of one dequantized tile
INT8 = 0x100           # flag on a matmul's type id: int8 activations (csrc/kernels.inc, mm_int8)
INT8_TYPES = (Q.Q4_K, Q.Q6_K, Q.Q8_0)   # the types that have an int8-activation kernel (rows of 256k)
PACKED = 0x200         # flag on a matmul's type id: the weight is packed (csrc/packed.inc)
PACK_ROWS = 16         # a packed weight interleaves its rows sixteen at a time
PACKED_ROW_BYTES = {Q.Q4_K: 148, Q.Q6_K: 210, Q.Q8_0: 34 * 8}   # per row and 256 weights
# the types Model.load packs (`packable` ones): on AVX2 (no VNNI) a packed Q8_0 product needs a sign fix
# per row of x and measured 10-20% slower at 3-4 rows than the file layout's int8 kernel: Q8_0 stays as is there
PACK_TYPES = (Q.Q4_K, Q.Q6_K) if native.isa() == "avx2" else INT8_TYPES
GPU_TYPES = (Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K)   # kernels.gpu.TYPES


@dataclass
class QWeight:
    """Rows of a GGUF matrix (or a stack of them, experts first): `data` is [..., N, row_bytes] uint8."""

    data: torch.Tensor
    qtype: Q
    shape: tuple[int, ...]      # logical shape, row-major: (N, K) or (E, N, K)
    int8: bool = False          # few-row products quantize x to int8 where the type has such a kernel
    packed: bool = False        # rows interleaved for the int8 kernels (`pack`): only the matmul op reads them

    @property
    def kernel_type(self) -> int:
        """The type as the matmul kernels take it: the GGUF type id, plus INT8 when asked for (PACKED when
        packed)."""
        return int(self.qtype) | (PACKED if self.packed else INT8 if self.int8 else 0)

    @property
    def packable(self) -> bool:
        """A CPU weight whose products run on int8 activations, with whole groups of PACK_ROWS rows."""
        return (self.int8_kernel and not self.packed and not self.data.is_cuda and self.N % PACK_ROWS == 0
                and self.data.is_contiguous())

    def pack(self) -> "QWeight":
        """This weight with its rows interleaved sixteen at a time for the int8 kernels (csrc/packed.inc):
        the same bytes but for 4 more per Q4_K block. Products give what the int8 kernel gives up to float
        rounding (each output summed in its own order), and are batch invariant like every kernel."""
        n_rows = self.data.numel() // self.row_bytes        # every matrix of a stack: whole groups each
        out = torch.empty(*self.shape[:-1], self.K // 256 * PACKED_ROW_BYTES[self.qtype], dtype=torch.uint8)
        native.run("repack", [native.p(self.data), int(self.qtype), n_rows, self.K, native.p(out), 1])
        return QWeight(out, self.qtype, self.shape, self.int8, packed=True)

    def unpacked(self) -> "QWeight":
        """The weight in its GGUF layout (itself when not packed): bytes equal to the file's."""
        if not self.packed:
            return self
        block, size = GGML_QUANT_SIZES[self.qtype]
        n_rows = self.data.numel() // self.row_bytes
        out = torch.empty(*self.shape[:-1], self.K // block * size, dtype=torch.uint8)
        native.run("repack", [native.p(out), int(self.qtype), n_rows, self.K, native.p(self.data), 0])
        return QWeight(out, self.qtype, self.shape, self.int8)

    @property
    def int8_kernel(self) -> bool:
        """Products run on int8 activations (csrc/kernels.inc, mm_int8)."""
        return self.int8 and self.qtype in INT8_TYPES and self.K % 256 == 0

    @property
    def K(self) -> int:
        return self.shape[-1]

    @property
    def N(self) -> int:
        return self.shape[-2]

    @property
    def row_bytes(self) -> int:
        return self.data.shape[-1]

    @property
    def nbytes(self) -> int:
        return self.data.numel()

    def expert(self, e: int) -> "QWeight":
        return QWeight(self.data[e], self.qtype, self.shape[1:], self.int8, self.packed)

    def to(self, device: torch.device) -> "QWeight":
        w = self.unpacked()
        return QWeight(w.data.to(device), w.qtype, w.shape, w.int8)

    def rows(self, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        """The decoded rows `ids` [n] -> [n, K] in `dtype` (embedding lookups; embedding tables are never
        packed, and a packed weight decodes whole here)."""
        if self.packed:
            return self.unpacked().rows(ids, dtype)
        if self.data.is_cuda:
            from . import gpu
            return gpu.rows(self.data, self.qtype, self.K, ids.to(torch.int32).contiguous(), dtype)
        ids = ids.to(torch.int32).contiguous()
        out = torch.empty(ids.numel(), self.K, dtype=torch.float32)
        native.run("embed", [native.p(ids), native.p(self.data), int(self.qtype), self.row_bytes, self.K,
                             native.p(out), out.stride(0), 0, ids.numel()])
        return out if dtype == torch.float32 else out.to(dtype)

    def dequantize(self, rows: slice | None = None) -> torch.Tensor:
        """Float32 rows [n, K] (all of them by default), bit for bit gguf-py's dequantization."""
        if self.packed:
            return self.unpacked().dequantize(rows)
        if self.data.is_cuda:
            return self.rows(torch.arange(self.N, device=self.data.device)[rows or slice(None)], torch.float32)
        start, stop, _ = (rows or slice(None)).indices(self.N)
        out = torch.empty(stop - start, self.K, dtype=torch.float32)
        native.run("dequant", [native.p(self.data), int(self.qtype), self.row_bytes, self.K, start, stop, native.p(out)])
        return out

    def dense(self) -> torch.Tensor:
        """Every weight as float32 in the logical shape (a stack of matrices included)."""
        if self.packed:
            return self.unpacked().dense()
        flat = self.data.reshape(-1, self.row_bytes)
        return QWeight(flat, self.qtype, (flat.shape[0], self.K)).dequantize().reshape(self.shape)

    def linear(self, x: torch.Tensor, bias: torch.Tensor | None = None) -> torch.Tensor:
        """x [..., K] @ W^T (+ bias). On CPU the native kernel, except for many rows of a type without an
        int8 kernel (or with --kernels exact): dequantized tiles + GEMM there. The int8 kernels run any
        number of rows 1.4-9x faster than tiles + GEMM (a prompt included, so that prefill computes every
        row exactly as decoding does); the float kernels win up to about NATIVE_ROWS rows."""
        lead = x.shape[:-1]
        if self.data.is_cuda:
            from . import gpu
            y = gpu.linear(x.reshape(-1, self.K).contiguous(), self.data, self.qtype, self.N, self.K)
            if bias is not None:
                y += bias.to(y.dtype)
            return y.reshape(*lead, self.N)
        x2 = x.reshape(-1, self.K).float().contiguous()
        M = x2.shape[0]
        if M <= NATIVE_ROWS or self.int8_kernel:
            y = torch.empty(M, self.N, dtype=torch.float32)
            native.run("matmul", [native.p(x2), self.K, native.p(self.data), self.kernel_type, self.row_bytes, self.N,
                                  self.K, native.p(y), self.N, native.p(bias), 0, M])
            return y.reshape(*lead, self.N)
        y = torch.empty(M, self.N, dtype=torch.float32)
        tile = max(16, TILE_BYTES // (4 * self.K))
        for n0 in range(0, self.N, tile):
            n1 = min(self.N, n0 + tile)
            torch.matmul(x2, self.dequantize(slice(n0, n1)).t(), out=y[:, n0:n1])
        if bias is not None:
            y += bias
        return y.reshape(*lead, self.N)


def from_gguf(t, path) -> QWeight | torch.Tensor:
    """A GGUF tensor as it lies in the file (no copy): vectors as float tensors, matrices (and stacks of
    them) as QWeight. Refuses types the kernels do not read, naming the tensor."""
    qtype = Q(t.tensor_type)
    if qtype not in SUPPORTED:
        raise ModelFileError(f"{path}: tensor '{t.name}' has type {qtype.name}, which nextn cannot run "
                             f"(supported: {', '.join(q.name for q in SUPPORTED)})")
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    with warnings.catch_warnings():   # a read-only memory map: nextn never writes weights
        warnings.simplefilter("ignore", UserWarning)
        raw = torch.from_numpy(np.asarray(t.data).view(np.uint8))
    if len(shape) == 1:
        return raw.view(torch.float32).reshape(shape) if qtype == Q.F32 else _to_float(raw, qtype, shape)
    block, size = GGML_QUANT_SIZES[qtype]
    if shape[-1] % block:
        raise ModelFileError(f"{path}: tensor '{t.name}' has rows of {shape[-1]}, not a multiple of the "
                             f"{qtype.name} block size {block}")
    row_bytes = shape[-1] // block * size
    return QWeight(raw.reshape(*shape[:-1], row_bytes), qtype, shape)


def _to_float(raw: torch.Tensor, qtype: Q, shape) -> torch.Tensor:
    w = QWeight(raw.reshape(1, -1), qtype, (1, int(np.prod(shape))))
    return w.dequantize().reshape(shape)


def row_range(w, first: int, end: int):
    """Rows first..end-1 of a weight matrix as a view (a QWeight's rows stay in their type and in place)."""
    if isinstance(w, QWeight):
        if w.packed and (first % PACK_ROWS or end % PACK_ROWS):   # not whole groups: a copy in the file's layout
            part = QWeight(row_range(w.unpacked(), first, end).data.contiguous(), w.qtype, (end - first, w.K), w.int8)
            return part.pack() if part.packable else part
        return QWeight(w.data[first:end], w.qtype, (end - first, w.K), w.int8, w.packed)
    return w[first:end]


def take_rows(w, rows: torch.Tensor):
    """The given rows of a weight matrix, in order (a QWeight's rows stay in their type)."""
    if isinstance(w, QWeight):
        if w.packed:
            taken = take_rows(w.unpacked(), rows)
            return taken.pack() if taken.packable else taken
        return QWeight(w.data[rows.to(w.data.device)].contiguous(), w.qtype, (len(rows), w.K), w.int8)
    return w[rows.to(w.device)].contiguous()

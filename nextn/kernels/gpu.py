"""Products with GGUF-typed weights on CUDA, in Triton, straight from the file's bytes.

A weight stays on the GPU as its rows of GGUF blocks ([N, row_bytes] uint8). Every element of a row is
decoded where it is used, from the block layouts of ggml (written here from the format definitions):
`_decode` maps (row pointers, element indices) to float values. Few rows (decode, MTP drafts,
verification: M <= FEW_ROWS) run one fused kernel that decodes a tile of weight rows and multiplies it
with all M rows of x on the tensor cores, summing along K in one fixed order: a row's result does not
depend on how many other rows share the step (batch invariance, so verifying k drafts gives the logits
a plain step gives). The FFN's gate and up products share one launch (`up=`, silu(gate) * up). Many rows (prefill) decode
tiles of the weight into the compute type and hand them to cuBLAS. Embedding lookups decode the rows of
the given token ids.

Without a GPU the same kernels run in Triton's interpreter (TRITON_INTERPRET=1), which is how CI tests
them against the CPU's bit-exact dequantization.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

TYPES = (Q.F16, Q.BF16, Q.Q8_0, Q.Q4_0, Q.Q4_1, Q.Q5_0, Q.Q5_1, Q.Q4_K, Q.Q5_K, Q.Q6_K)   # decoded on the GPU
FEW_ROWS = 16
BM = 16                  # the fused kernel's row tile (M <= FEW_ROWS padded to it)
TILE_ELEMENTS = 1 << 25  # elements of one decoded weight tile in a prefill product (64 MB in bfloat16)


@triton.jit
def _f16_at(ptr):
    return tl.load(ptr.to(tl.pointer_type(tl.float16))).to(tl.float32)


@triton.jit
def _byte(ptr):
    return tl.load(ptr).to(tl.int32)


@triton.jit
def _scale_min_k4(sc_ptr, sub):
    """The 6-bit scale and min of sub-block `sub` (0..7) of a Q4_K/Q5_K block's 12 packed bytes."""
    lo = sub < 4
    a = _byte(sc_ptr + sub)                              # q[j]
    b = _byte(sc_ptr + sub + 4)                          # q[j + 4] (j < 4) or q[j + 4] (j >= 4, same byte index)
    c = _byte(sc_ptr + tl.where(lo, sub, sub - 4))       # q[j - 4] for j >= 4
    sc = tl.where(lo, a & 63, (b & 15) | ((c >> 6) << 4))
    mn = tl.where(lo, b & 63, (b >> 4) | ((a >> 6) << 4))
    return sc.to(tl.float32), mn.to(tl.float32)


@triton.jit
def _decode(row, k, QT: tl.constexpr):
    """Values of elements k of rows starting at byte pointers `row` (broadcast shapes), as float32."""
    if QT == 1:      # F16
        v = tl.load((row + 2 * k).to(tl.pointer_type(tl.float16))).to(tl.float32)
    elif QT == 30:   # BF16
        v = tl.load((row + 2 * k).to(tl.pointer_type(tl.bfloat16))).to(tl.float32)
    elif QT == 8:    # Q8_0: 32 per block, d f16 + 32 int8
        base = row + (k // 32) * 34
        v = _f16_at(base) * tl.load(base + 2 + k % 32).to(tl.int8, bitcast=True).to(tl.float32)
    elif QT == 2 or QT == 3:   # Q4_0 (d, 16 bytes), Q4_1 (d, m, 16 bytes): byte j holds elements j, j + 16
        i = k % 32
        base = row + (k // 32) * (18 if QT == 2 else 20)
        q = _byte(base + (2 if QT == 2 else 4) + i % 16)
        q = tl.where(i < 16, q & 15, q >> 4).to(tl.float32)
        if QT == 2:
            v = _f16_at(base) * (q - 8.0)
        else:
            v = _f16_at(base) * q + _f16_at(base + 2)
    elif QT == 6 or QT == 7:   # Q5_0 (d, qh[4], qs[16]), Q5_1 (d, m, qh[4], qs[16]); fifth bit i in qh
        i = k % 32
        base = row + (k // 32) * (22 if QT == 6 else 24)
        qh = base + (2 if QT == 6 else 4)
        q = _byte(qh + 4 + i % 16)
        q = tl.where(i < 16, q & 15, q >> 4) | (((_byte(qh + i // 8) >> (i % 8)) & 1) << 4)
        if QT == 6:
            v = _f16_at(base) * (q.to(tl.float32) - 16.0)
        else:
            v = _f16_at(base) * q.to(tl.float32) + _f16_at(base + 2)
    elif QT == 12 or QT == 13:  # Q4_K (d, dmin, scales[12], qs[128]) / Q5_K (+ qh[32] before qs): 256 per block
        e = k % 256
        base = row + (k // 256) * (144 if QT == 12 else 176)
        sub, l = e // 32, e % 32
        q = _byte(base + (16 if QT == 12 else 48) + (e // 64) * 32 + l)
        q = tl.where(sub % 2 == 0, q & 15, q >> 4)
        if QT == 13:
            q = q | (((_byte(base + 16 + l) >> sub) & 1) << 4)
        sc, mn = _scale_min_k4(base + 4, sub)
        v = _f16_at(base) * sc * q.to(tl.float32) - _f16_at(base + 2) * mn
    else:            # Q6_K: ql[128], qh[64], scales[16] int8, d f16; 256 per block in halves of 128
        e = k % 256
        base = row + (k // 256) * 210
        n, r = e // 128, e % 128
        quad, l = r // 32, r % 32
        lo = (_byte(base + 64 * n + l + 32 * (quad % 2)) >> (4 * (quad // 2))) & 15
        hi = (_byte(base + 128 + 32 * n + l) >> (2 * quad)) & 3
        sc = tl.load(base + 192 + 8 * n + l // 16 + 2 * quad).to(tl.int8, bitcast=True).to(tl.float32)
        v = _f16_at(base + 208) * sc * ((lo | (hi << 4)) - 32).to(tl.float32)
    return v


@triton.jit
def _few_rows_kernel(x_ptr, w_ptr, w2_ptr, y_ptr, M, N, stride_x, stride_y, row_bytes,
                     NSTEPS: tl.constexpr, QT: tl.constexpr, STEP: tl.constexpr, BN: tl.constexpr, BM_: tl.constexpr,
                     IEEE: tl.constexpr, GLU: tl.constexpr):
    """y[m, n] = sum_k x[m, k] w[n, k]; with GLU, y = silu(x w^T) * (x w2^T) (the FFN's gate and up)."""
    pid_n = tl.program_id(0)
    rn = pid_n * BN + tl.arange(0, BN)
    rm = tl.arange(0, BM_)
    kk = tl.arange(0, STEP)
    row_off = tl.minimum(rn, N - 1).to(tl.int64)[:, None] * row_bytes
    acc = tl.zeros((BM_, BN), dtype=tl.float32)
    acc2 = tl.zeros((BM_, BN), dtype=tl.float32)
    for s in range(NSTEPS):
        k = s * STEP + kk
        x = tl.load(x_ptr + rm[:, None] * stride_x + k[None, :], mask=rm[:, None] < M, other=0.0)
        w = _decode(w_ptr + row_off, k[None, :], QT)
        if IEEE:
            acc += tl.dot(x.to(tl.float32), tl.trans(w), input_precision="ieee")
        else:
            acc += tl.dot(x, tl.trans(w.to(x.dtype)))
        if GLU:
            w2 = _decode(w2_ptr + row_off, k[None, :], QT)
            if IEEE:
                acc2 += tl.dot(x.to(tl.float32), tl.trans(w2), input_precision="ieee")
            else:
                acc2 += tl.dot(x, tl.trans(w2.to(x.dtype)))
    if GLU:
        acc = acc / (1.0 + tl.exp(-acc)) * acc2
    tl.store(y_ptr + rm[:, None] * stride_y + rn[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


@triton.jit
def _groups(row, row2, kb, QT: tl.constexpr, G: tl.constexpr, E: tl.constexpr):
    """Superblock kb (256 elements) of rows `row` [1, 1, BN] (also as `row2` [1, BN]) as G groups of E: the integer quants q
    [G, E, BN] (as floats) and each group's scale and min [G, BN] (value = scale * q - min)."""
    g3 = tl.arange(0, G)[:, None, None]
    e3 = tl.arange(0, E)[None, :, None]
    g2 = tl.arange(0, G)[:, None]
    if QT == 8:      # Q8_0: 8 blocks of 32
        blk = row + (kb * 8 + g3) * 34
        q = tl.load(blk + 2 + e3).to(tl.int8, bitcast=True).to(tl.float32)
        scale = _f16_at(row2 + (kb * 8 + g2) * 34)
        mn = scale * 0.0
    elif QT == 14:   # Q6_K: 16 groups of 16; group g uses scale g
        base = row + kb * 210
        n, quad, l = g3 // 8, (g3 % 8) // 2, 16 * (g3 % 2) + e3
        lo = (_byte(base + 64 * n + l + 32 * (quad % 2)) >> (4 * (quad // 2))) & 15
        hi = (_byte(base + 128 + 32 * n + l) >> (2 * quad)) & 3
        q = ((lo | (hi << 4)) - 32).to(tl.float32)
        b2 = row2 + kb * 210
        scale = _f16_at(b2 + 208) * tl.load(b2 + 192 + g2).to(tl.int8, bitcast=True).to(tl.float32)
        mn = scale * 0.0
    else:            # Q4_K / Q5_K: 8 groups of 32 with 6-bit scales and mins
        base = row + kb * (144 if QT == 12 else 176)
        b = _byte(base + (16 if QT == 12 else 48) + 32 * (g3 // 2) + e3)
        q = tl.where(g3 % 2 == 0, b & 15, b >> 4)
        if QT == 13:
            q = q | (((_byte(base + 16 + e3) >> g3) & 1) << 4)
        q = q.to(tl.float32)
        b2 = row2 + kb * (144 if QT == 12 else 176)
        sc, m6 = _scale_min_k4(b2 + 4, g2)
        scale = _f16_at(b2) * sc
        mn = _f16_at(b2 + 2) * m6
    return q, scale, mn


@triton.jit
def _group_dot(x, xs, row, row2, kb, QT: tl.constexpr, G: tl.constexpr, E: tl.constexpr, IEEE: tl.constexpr):
    """x [G, BM, E] times superblock kb of rows `row`: [BM, BN]."""
    q, scale, mn = _groups(row, row2, kb, QT, G, E)
    if IEEE:
        part = tl.dot(x.to(tl.float32), q, input_precision="ieee")
    else:
        part = tl.dot(x, q.to(x.dtype))
    return tl.sum(part * scale[:, None, :] - xs * mn[:, None, :], 0)


@triton.jit
def _grouped_kernel(x_ptr, w_ptr, w2_ptr, y_ptr, M, N, stride_x, stride_y, row_bytes, NB: tl.constexpr,
                    QT: tl.constexpr, G: tl.constexpr, E: tl.constexpr, BN: tl.constexpr, BM_: tl.constexpr,
                    IEEE: tl.constexpr, GLU: tl.constexpr):
    """The few-row product for Q8_0, Q4_K, Q5_K and Q6_K with scales applied after the sums: per group,
    x . q on the tensor cores (quants are small integers, exact in bfloat16), then scale * sum - min * sum(x)."""
    rn = tl.program_id(0) * BN + tl.arange(0, BN)
    off = tl.minimum(rn, N - 1).to(tl.int64) * row_bytes
    row, up = (w_ptr + off)[None, None, :], (w2_ptr + off)[None, None, :]
    row_2, up_2 = (w_ptr + off)[None, :], (w2_ptr + off)[None, :]
    m = tl.arange(0, BM_)[None, :, None]
    xoff = m * stride_x + tl.arange(0, G)[:, None, None] * E + tl.arange(0, E)[None, None, :]
    acc = tl.zeros((BM_, BN), dtype=tl.float32)
    acc2 = tl.zeros((BM_, BN), dtype=tl.float32)
    for kb in range(NB):
        x = tl.load(x_ptr + kb * 256 + xoff, mask=m < M, other=0.0)          # [G, BM, E]
        xs = tl.sum(x.to(tl.float32), 2)[:, :, None]                         # [G, BM, 1]
        acc += _group_dot(x, xs, row, row_2, kb, QT, G, E, IEEE)
        if GLU:
            acc2 += _group_dot(x, xs, up, up_2, kb, QT, G, E, IEEE)
    if GLU:
        acc = acc / (1.0 + tl.exp(-acc)) * acc2
    rm = tl.arange(0, BM_)
    tl.store(y_ptr + rm[:, None] * stride_y + rn[None, :], acc.to(y_ptr.dtype.element_ty),
             mask=(rm[:, None] < M) & (rn[None, :] < N))


GROUPED = {Q.Q8_0: (8, 32), Q.Q4_K: (8, 32), Q.Q5_K: (8, 32), Q.Q6_K: (16, 16)}   # type: (groups, size) per 256
use_grouped = True


@triton.jit
def _rows_kernel(w_ptr, ids_ptr, out_ptr, n_ids, K, row_bytes, stride_out, QT: tl.constexpr, STEP: tl.constexpr,
                 BR: tl.constexpr):
    """out[i, :] = the decoded row ids[i] of w (gather + dequantize)."""
    pid_r, pid_k = tl.program_id(0), tl.program_id(1)
    ri = pid_r * BR + tl.arange(0, BR)
    ids = tl.load(ids_ptr + tl.minimum(ri, n_ids - 1)).to(tl.int64)
    k = pid_k * STEP + tl.arange(0, STEP)
    v = _decode(w_ptr + ids[:, None] * row_bytes, k[None, :], QT)
    tl.store(out_ptr + ri[:, None].to(tl.int64) * stride_out + k[None, :], v.to(out_ptr.dtype.element_ty),
             mask=(ri[:, None] < n_ids) & (k[None, :] < K))


def step_of(qtype: Q, K: int) -> int:
    """Elements decoded per K step: a whole 256-block for K-quants, else the largest power of two <= 256
    that divides K (and covers whole 32-blocks)."""
    block = GGML_QUANT_SIZES[qtype][0]
    if block == 256:
        return 256
    step = 256
    while K % step:
        step //= 2
    return step


def _block_n(N: int, device: torch.device) -> int:
    """Weight rows per program: as many as keep every multiprocessor busy. No split along K: a row's sum
    runs in one fixed order whatever M is, and small products cost their launch, not their bytes."""
    n_sm = torch.cuda.get_device_properties(device).multi_processor_count if device.type == "cuda" else 4
    return 64 if N >= 64 * 2 * n_sm else 32 if N >= 32 * n_sm else 16


def few_rows(x: torch.Tensor, data: torch.Tensor, qtype: Q, N: int, K: int, up: torch.Tensor | None = None,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """x [M, K] (M <= FEW_ROWS) @ W^T for W given as GGUF rows `data` [N, row_bytes], [M, N] in out_dtype
    (x's by default). With `up` (a second matrix of the same type and shape): silu(x W^T) * (x U^T)."""
    M = x.shape[0]
    BN = _block_n(N, x.device)
    y = torch.empty(M, N, dtype=out_dtype or x.dtype, device=x.device)
    if use_grouped and qtype in GROUPED and K % 256 == 0:
        G, E = GROUPED[qtype]
        _grouped_kernel[((N + BN - 1) // BN,)](x, data, up if up is not None else data, y, M, N, x.stride(0),
                                               y.stride(0), data.shape[-1], NB=K // 256, QT=int(qtype), G=G, E=E,
                                               BN=BN, BM_=BM, IEEE=x.dtype == torch.float32, GLU=up is not None,
                                               num_warps=4)
        return y
    step = step_of(qtype, K)
    _few_rows_kernel[((N + BN - 1) // BN,)](x, data, up if up is not None else data, y, M, N, x.stride(0), y.stride(0),
                                            data.shape[-1], NSTEPS=K // step, QT=int(qtype), STEP=step, BN=BN, BM_=BM,
                                            IEEE=x.dtype == torch.float32, GLU=up is not None, num_warps=4)
    return y


def rows(data: torch.Tensor, qtype: Q, K: int, ids: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """The decoded rows `ids` of a GGUF matrix, [len(ids), K] in `dtype`."""
    n = ids.numel()
    out = torch.empty(n, K, dtype=dtype, device=data.device)
    if n == 0:
        return out
    step = min(step_of(qtype, K), 128)
    BR = 16
    _rows_kernel[((n + BR - 1) // BR, K // step)](data, ids, out, n, K, data.shape[-1], out.stride(0),
                                                   QT=int(qtype), STEP=step, BR=BR, num_warps=4)
    return out


def linear(x: torch.Tensor, data: torch.Tensor, qtype: Q, N: int, K: int) -> torch.Tensor:
    """x [M, K] @ W^T in x's dtype: the fused kernel for few rows, decoded tiles + cuBLAS for many."""
    M = x.shape[0]
    if M <= FEW_ROWS:
        return few_rows(x, data, qtype, N, K)
    y = torch.empty(M, N, dtype=x.dtype, device=x.device)
    tile = max(64, TILE_ELEMENTS // K)
    for n0 in range(0, N, tile):
        n1 = min(N, n0 + tile)
        ids = torch.arange(n0, n1, device=x.device, dtype=torch.int32)
        torch.matmul(x, rows(data, qtype, K, ids, x.dtype).t(), out=y[:, n0:n1])
    return y

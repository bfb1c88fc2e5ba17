"""Row-wise ops on CUDA, one Triton launch each where torch would take five to ten small kernels (decode
steps are made of small kernels, so their count is the cost): RMS norm (optionally gated by silu(z),
as after Gated DeltaNet), L2 norm, and NeoX RoPE. Each row is computed on its own: results do not
depend on the batch.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl


@triton.jit
def _norm_kernel(x_ptr, w_ptr, z_ptr, out_ptr, D, stride_x, stride_z, eps, scale,
                 BLOCK: tl.constexpr, MODE: tl.constexpr):
    """MODE 0: x / rms(x) * w; 1: the same times silu(z); 2: x / ||x|| * scale (L2, no weight)."""
    r = tl.program_id(0).to(tl.int64)
    d = tl.arange(0, BLOCK)
    m = d < D
    x = tl.load(x_ptr + r * stride_x + d, mask=m, other=0.0).to(tl.float32)
    if MODE == 2:
        y = x * (tl.rsqrt(tl.sum(x * x, 0) + eps) * scale)
    else:
        y = x * tl.rsqrt(tl.sum(x * x, 0) / D + eps) * tl.load(w_ptr + d, mask=m, other=0.0).to(tl.float32)
        if MODE == 1:
            z = tl.load(z_ptr + r * stride_z + d, mask=m, other=0.0).to(tl.float32)
            y = y * (z / (1.0 + tl.exp(-z)))
    tl.store(out_ptr + r * D + d, y.to(out_ptr.dtype.element_ty), mask=m)


def _rows(x: torch.Tensor) -> torch.Tensor:
    """x [..., D] as [R, D] with one row stride, without a copy where the layout allows."""
    try:
        return x.view(-1, x.shape[-1]) if x.stride(-1) == 1 else x.reshape(-1, x.shape[-1]).contiguous()
    except RuntimeError:
        return x.reshape(-1, x.shape[-1]).contiguous()


def _norm(x, w, z, eps, scale, mode, out_dtype):
    x2 = _rows(x)
    z2 = _rows(z) if z is not None else x2
    D = x2.shape[1]
    out = torch.empty(x.shape, dtype=out_dtype or x.dtype, device=x.device)
    if x2.shape[0]:
        _norm_kernel[(x2.shape[0],)](x2, w if w is not None else x2, z2, out, D, x2.stride(0), z2.stride(0), eps,
                                     scale, BLOCK=triton.next_power_of_2(D), MODE=mode, num_warps=4)
    return out


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float, gate: torch.Tensor | None = None,
             out_dtype: torch.dtype | None = None) -> torch.Tensor:
    """x / rms(x) * w over the last axis (times silu(gate) when given), in float32 inside."""
    return _norm(x, w, gate, eps, 1.0, 1 if gate is not None else 0, out_dtype)


def l2_norm(x: torch.Tensor, eps: float, scale: float = 1.0) -> torch.Tensor:
    return _norm(x, None, None, eps, scale, 2, torch.float32)


@triton.jit
def _rope_kernel(x_ptr, cos_ptr, sin_ptr, out_ptr, H, HD, N_ROT, stride_x,
                 BLOCK: tl.constexpr):
    r = tl.program_id(0).to(tl.int64)           # one head of one token
    t = r // H                                  # its row in the [B*T, n_rot] tables
    d = tl.arange(0, BLOCK)
    half = N_ROT // 2
    x = tl.load(x_ptr + r * stride_x + d, mask=d < HD, other=0.0).to(tl.float32)
    rot = d < N_ROT
    partner = tl.where(d < half, d + half, d - half)
    xp = tl.load(x_ptr + r * stride_x + partner, mask=rot, other=0.0).to(tl.float32)
    c = tl.load(cos_ptr + t * N_ROT + d, mask=rot, other=1.0).to(tl.float32)
    s = tl.load(sin_ptr + t * N_ROT + d, mask=rot, other=0.0).to(tl.float32)
    y = tl.where(rot, x * c + tl.where(d < half, -xp, xp) * s, x)
    tl.store(out_ptr + r * HD + d, y.to(out_ptr.dtype.element_ty), mask=d < HD)


def rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """NeoX RoPE of x [B, T, H, hd] with tables [B, T, 1, n_rot]: the first n_rot dims rotate (halves)."""
    B, T, H, hd = x.shape
    x2 = _rows(x)
    out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
    if x2.shape[0]:
        _rope_kernel[(x2.shape[0],)](x2, cos.contiguous(), sin.contiguous(), out, H, hd, cos.shape[-1], x2.stride(0),
                                     BLOCK=triton.next_power_of_2(hd), num_warps=1)
    return out

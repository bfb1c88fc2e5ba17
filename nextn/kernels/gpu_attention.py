"""Softmax attention of a few queries per sequence over its cached keys, on CUDA, in Triton.

One program per (query row, head) walks its sequence's cache rows 0..end (its own position) in blocks,
with an online softmax in float32, reading the cache where it lies (no gather, no mask tensor). Each
query is computed on its own, so a verification row gets exactly what a plain decode step gets.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BLOCK = 64


@triton.jit
def _attn_kernel(q_ptr, k_ptr, v_ptr, slot_ptr, end_ptr, out_ptr, T, H, GROUP, stride_q, stride_slot, stride_row,
                 scale, HD: tl.constexpr, BLOCK_: tl.constexpr):
    r, h = tl.program_id(0), tl.program_id(1)        # query row (b * T + t), head
    b = r // T
    slot = tl.load(slot_ptr + b).to(tl.int64)
    end = tl.load(end_ptr + r)                       # last cache row this query sees
    d = tl.arange(0, HD)
    q = tl.load(q_ptr + r.to(tl.int64) * stride_q + h * HD + d).to(tl.float32) * scale
    base = slot * stride_slot + (h // GROUP) * HD
    m_i = tl.full((), float("-inf"), tl.float32)
    l_i = tl.zeros((), tl.float32)
    acc = tl.zeros((HD,), tl.float32)
    start = 0
    while start <= end:
        j = start + tl.arange(0, BLOCK_)
        ok = j <= end
        off = base + j.to(tl.int64)[:, None] * stride_row + d[None, :]
        k = tl.load(k_ptr + off, mask=ok[:, None], other=0.0).to(tl.float32)
        s = tl.where(ok, tl.sum(k * q[None, :], 1), float("-inf"))
        m_new = tl.maximum(m_i, tl.max(s, 0))
        p = tl.exp(s - m_new)
        alpha = tl.exp(m_i - m_new)
        v = tl.load(v_ptr + off, mask=ok[:, None], other=0.0).to(tl.float32)
        acc = acc * alpha + tl.sum(p[:, None] * v, 0)
        l_i = l_i * alpha + tl.sum(p, 0)
        m_i = m_new
        start += BLOCK_
    tl.store(out_ptr + r.to(tl.int64) * H * HD + h * HD + d, (acc / l_i).to(out_ptr.dtype.element_ty))


def attend(q: torch.Tensor, kcache: torch.Tensor, vcache: torch.Tensor, slots: torch.Tensor,
           ends: torch.Tensor) -> torch.Tensor:
    """q [B, T, H, hd] (any row stride), caches [slots, rows, H_kv, hd], slots [B], ends [B, T] (the last
    cache row each query attends to, inclusive) -> [B, T, H, hd] in q's dtype."""
    B, T, H, hd = q.shape
    q2 = q.reshape(B * T, H * hd) if q.stride(-1) == 1 and q.stride(-2) == hd else q.reshape(B * T, H * hd).contiguous()
    out = torch.empty(B, T, H, hd, dtype=q.dtype, device=q.device)
    _attn_kernel[(B * T, H)](q2, kcache, vcache, slots, ends.reshape(-1).to(torch.int32), out, T, H,
                             H // kcache.shape[2], q2.stride(0), kcache.stride(0), kcache.stride(1), hd ** -0.5,
                             HD=hd, BLOCK_=BLOCK, num_warps=4)
    return out

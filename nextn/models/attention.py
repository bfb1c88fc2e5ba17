"""Softmax attention over the position-indexed KV cache: GQA, q/k norm, partial RoPE, optional bias,
and Qwen's output gate (q_proj yields [q | gate] per head)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import ops
from .cache import Cache
from .config import ModelConfig
from . import layers
from .layers import apply_rope, linear, rms_norm
from .step import Step


def attention(x: torch.Tensor, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    B, T, _ = x.shape
    hd = cfg.head_dim
    q = linear(x, w["attn_q.weight"], w.get("attn_q.bias"))
    k = linear(x, w["attn_k.weight"], w.get("attn_k.bias"))
    v = linear(x, w["attn_v.weight"], w.get("attn_v.bias"))
    gate = None
    if cfg.attn_output_gate:
        q = q.reshape(B, T, cfg.n_head, 2 * hd)
        q, gate = q[..., :hd], q[..., hd:].reshape(B, T, cfg.n_head * hd)
    else:
        q = q.reshape(B, T, cfg.n_head, hd)
    k = k.reshape(B, T, cfg.n_head_kv, hd)
    v = v.reshape(B, T, cfg.n_head_kv, hd)
    if "attn_q_norm.weight" in w:
        q = rms_norm(q, w["attn_q_norm.weight"], cfg.rms_eps)
        k = rms_norm(k, w["attn_k_norm.weight"], cfg.rms_eps)
    cos, sin = step.rope
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    kc, vc = cache.k[il], cache.v[il]
    rows = step.write_rows
    kc[step.write_slots, step.write_pos] = k.reshape(B * T, cfg.n_head_kv, hd)[rows].to(kc.dtype)
    vc[step.write_slots, step.write_pos] = v.reshape(B * T, cfg.n_head_kv, hd)[rows].to(vc.dtype)
    if layers.fused_short(x, step) and hd & (hd - 1) == 0:
        from ..kernels import gpu_attention
        out = gpu_attention.attend(q, kc, vc, step.slot_index, step.key_end)
        out = out.reshape(B, T, cfg.n_head * hd)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return linear(out, w["attn_output.weight"])
    keys, values = kc[step.sel, :step.kv_len], vc[step.sel, :step.kv_len]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys.transpose(1, 2).to(q.dtype), values.transpose(1, 2).to(q.dtype),
        attn_mask=step.mask, is_causal=step.mask is None and T > 1, enable_gqa=cfg.n_head != cfg.n_head_kv,
    )
    out = out.transpose(1, 2).reshape(B, T, cfg.n_head * hd)
    if gate is not None:
        out = out * torch.sigmoid(gate)
    return linear(out, w["attn_output.weight"])


def attention_native(w: dict, cfg: ModelConfig, cache: Cache, il: int, x: torch.Tensor, out: torch.Tensor, buf,
                     rows, shift: int = 0) -> None:
    """The same on the decode buffers, for a few rows per sequence (x: normed input, out: attention output)."""
    hd, nh, nkv = cfg.head_dim, cfg.n_head, cfg.n_head_kv
    qw = nh * hd * (2 if cfg.attn_output_gate else 1)
    q, k, v = buf.q[:, :qw], buf.k[:, :nkv * hd], buf.v[:, :nkv * hd]
    ops.matmul(x, w["attn_q.weight"], q, rows, w.get("attn_q.bias"))
    ops.matmul(x, w["attn_k.weight"], k, rows, w.get("attn_k.bias"))
    ops.matmul(x, w["attn_v.weight"], v, rows, w.get("attn_v.bias"))
    q_stride = 2 * hd if cfg.attn_output_gate else hd
    if "attn_q_norm.weight" in w:
        ops.rmsnorm(q, w["attn_q_norm.weight"], q, cfg.rms_eps, rows, dim=hd, groups=nh, group_in=q_stride,
                    group_out=q_stride)
        ops.rmsnorm(k, w["attn_k_norm.weight"], k, cfg.rms_eps, rows, dim=hd, groups=nkv)
    att = buf.att[:, :nh * hd]
    ops.attention(q, k, v, cache.k[il], cache.v[il], rows, att, n_head=nh, n_kv=nkv, head_dim=hd, n_rot=cfg.n_rot,
                  theta=cfg.rope_theta, q_head_stride=q_stride, shift=shift)
    if cfg.attn_output_gate:
        ops.sigmoid_mul(att, q[:, hd:], att, rows, dim=hd, groups=nh, group_x=hd, group_gate=2 * hd, group_out=hd)
    ops.matmul(att, w["attn_output.weight"], out, rows)

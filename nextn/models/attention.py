"""Softmax attention over the position-indexed KV cache: GQA, q/k norm, partial RoPE, optional bias,
Qwen's output gate (q_proj yields [q | gate] per head), and MiMo-V2's sliding-window layers (their own
RoPE base and KV head count, a learned sink logit per head, values narrower than keys and scaled)."""

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
    hd, vd, nkv = cfg.head_dim, cfg.v_dim, cfg.kv_heads(il)
    q = linear(x, w["attn_q.weight"], w.get("attn_q.bias"))
    k = linear(x, w["attn_k.weight"], w.get("attn_k.bias"))
    v = linear(x, w["attn_v.weight"], w.get("attn_v.bias"))
    gate = None
    if cfg.attn_output_gate:
        q = q.reshape(B, T, cfg.n_head, 2 * hd)
        q, gate = q[..., :hd], q[..., hd:].reshape(B, T, cfg.n_head * hd)
    else:
        q = q.reshape(B, T, cfg.n_head, hd)
    k = k.reshape(B, T, nkv, hd)
    v = v.reshape(B, T, nkv, vd)
    if cfg.attn_value_scale != 1.0:
        v = v * cfg.attn_value_scale
    if "attn_q_norm.weight" in w:
        q = rms_norm(q, w["attn_q_norm.weight"], cfg.rms_eps)
        k = rms_norm(k, w["attn_k_norm.weight"], cfg.rms_eps)
    cos, sin = step.rope_swa if cfg.is_swa(il) else step.rope
    q, k = apply_rope(q, cos, sin), apply_rope(k, cos, sin)

    kc, vc = cache.k[il], cache.v[il]
    rows, window = step.write_rows, cfg.n_swa if cfg.is_swa(il) else 0
    ring = cache.ring.get(il, 0)
    write_pos, ring_mask = step.ring(ring, window) if ring else (step.write_pos, None)
    if ring and T + window > ring:
        raise RuntimeError(f"a forward of {T} rows does not fit layer {il}'s sliding-window ring ({ring} rows)")
    kc[step.write_slots, write_pos] = k.reshape(B * T, nkv, hd)[rows].to(kc.dtype)
    vc[step.write_slots, write_pos] = v.reshape(B * T, nkv, vd)[rows].to(vc.dtype)
    sinks = w.get("attn_sinks.weight")
    if layers.fused_short(x, step) and hd & (hd - 1) == 0 and vd == hd and sinks is None and not cfg.is_swa(il):
        from ..kernels import gpu_attention
        out = gpu_attention.attend(q, kc, vc, step.slot_index, step.key_end)
        out = out.reshape(B, T, cfg.n_head * hd)
        if gate is not None:
            out = out * torch.sigmoid(gate)
        return linear(out, w["attn_output.weight"])
    n_keys = min(ring, step.kv_len) if ring else step.kv_len     # a ring not yet full: its written rows
    if ring:
        ring_mask = ring_mask[..., :n_keys]
    keys, values = kc[step.sel, :n_keys], vc[step.sel, :n_keys]
    if sinks is not None:
        out = attend_with_sinks(q, keys.to(q.dtype), values.to(q.dtype),
                                ring_mask if ring else step.key_mask(window), sinks)
    else:
        mask = ring_mask if ring else step.key_mask(window) if window else step.mask
        out = F.scaled_dot_product_attention(
            q.transpose(1, 2), keys.transpose(1, 2).to(q.dtype), values.transpose(1, 2).to(q.dtype),
            attn_mask=mask, is_causal=mask is None and T > 1, enable_gqa=cfg.n_head != nkv,
        ).transpose(1, 2)
    out = out.reshape(B, T, cfg.n_head * vd)
    if gate is not None:
        out = out * torch.sigmoid(gate)
    return linear(out, w["attn_output.weight"])


def attend_with_sinks(q: torch.Tensor, keys: torch.Tensor, values: torch.Tensor, mask: torch.Tensor,
                      sinks: torch.Tensor) -> torch.Tensor:
    """softmax(q k^T / sqrt(d) | sink) v over the keys `mask` [B, 1, T, S] admits, with a sink logit per head (a
    column every query sees, whose probability mass goes nowhere; SDPA has no such column).
    q [B, T, H, d], keys [B, S, G, d], values [B, S, G, dv] -> [B, T, H, dv]."""
    B, T, H, d = q.shape
    rep = H // keys.shape[2]
    kh = keys.transpose(1, 2).repeat_interleave(rep, 1)
    vh = values.transpose(1, 2).repeat_interleave(rep, 1)
    scores = ((q.transpose(1, 2) @ kh.transpose(-1, -2)) * d ** -0.5).masked_fill(~mask, float("-inf"))
    sink = sinks.to(scores.dtype).view(1, H, 1, 1).expand(B, H, T, 1)
    probs = torch.cat((scores, sink), -1).softmax(-1)[..., :-1]
    return (probs @ vh).transpose(1, 2)


def attention_native(w: dict, cfg: ModelConfig, cache: Cache, il: int, x: torch.Tensor, out: torch.Tensor, buf,
                     rows, shift: int = 0) -> None:
    """The same on the decode buffers, for a few rows per sequence (x: normed input, out: attention output)."""
    hd, vd, nh, nkv = cfg.head_dim, cfg.v_dim, cfg.n_head, cfg.kv_heads(il)
    qw = nh * hd * (2 if cfg.attn_output_gate else 1)
    q, k, v = buf.q[:, :qw], buf.k[:, :nkv * hd], buf.v[:, :nkv * vd]
    ops.matmul(x, w["attn_q.weight"], q, rows, w.get("attn_q.bias"))
    ops.matmul(x, w["attn_k.weight"], k, rows, w.get("attn_k.bias"))
    ops.matmul(x, w["attn_v.weight"], v, rows, w.get("attn_v.bias"))
    q_stride = 2 * hd if cfg.attn_output_gate else hd
    if "attn_q_norm.weight" in w:
        ops.rmsnorm(q, w["attn_q_norm.weight"], q, cfg.rms_eps, rows, dim=hd, groups=nh, group_in=q_stride,
                    group_out=q_stride)
        ops.rmsnorm(k, w["attn_k_norm.weight"], k, cfg.rms_eps, rows, dim=hd, groups=nkv)
    att = buf.att[:, :nh * vd]
    swa = cfg.is_swa(il)
    inv_freq, rope_scale = buf.rope[swa]
    ops.attention(q, k, v, cache.k[il], cache.v[il], rows, att, n_head=nh, n_kv=nkv, head_dim=hd, n_rot=cfg.n_rot,
                  inv_freq=inv_freq, rope_scale=rope_scale, q_head_stride=q_stride,
                  shift=shift, v_dim=vd, window=cfg.n_swa if swa else 0, ring=cache.ring.get(il, 0),
                  sinks=w.get("attn_sinks.weight"), v_scale=cfg.attn_value_scale)
    if cfg.attn_output_gate:
        ops.sigmoid_mul(att, q[:, hd:], att, rows, dim=hd, groups=nh, group_x=hd, group_gate=2 * hd, group_out=hd)
    ops.matmul(att, w["attn_output.weight"], out, rows)

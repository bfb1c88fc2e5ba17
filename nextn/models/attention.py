"""Softmax attention over the position-indexed KV cache (GQA, q/k norm, partial RoPE, optional output gate)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import Cache
from .config import ModelConfig
from ..kernels.layout import has, project_split
from .layers import apply_rope, linear, rms_norm
from .step import Step


def attention(x: torch.Tensor, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    B, T, _ = x.shape
    hd = cfg.head_dim
    if has(w, "attn_in"):
        q, k, v = project_split(x, w, "attn_in")
    else:
        q, k, v = linear(x, w, "attn_q"), linear(x, w, "attn_k"), linear(x, w, "attn_v")
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
    kc[step.write_slots, step.write_pos] = k.reshape(B * T, cfg.n_head_kv, hd)[rows]
    vc[step.write_slots, step.write_pos] = v.reshape(B * T, cfg.n_head_kv, hd)[rows]
    keys, values = kc[step.sel, :step.kv_len], vc[step.sel, :step.kv_len]
    out = F.scaled_dot_product_attention(
        q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
        attn_mask=step.mask, is_causal=step.mask is None and T > 1, enable_gqa=cfg.n_head != cfg.n_head_kv,
    )
    out = out.transpose(1, 2).reshape(B, T, cfg.n_head * hd)
    if gate is not None:
        out = out * torch.sigmoid(gate)
    return linear(out, w, "attn_output")

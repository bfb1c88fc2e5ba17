"""Multi-head Latent Attention (DeepSeek-V2/V3, Kimi-K2): the cache holds, per token, the normalised KV
latent (kv_lora_rank) and one RoPE key shared by every head, not per-head keys and values.

Queries meet the latent in the absorbed form: each head's no-RoPE query goes through that head's
W_UK (`attn_k_b`, [heads, kv_lora_rank, qk_nope]) into latent space, scores are q_lat . c + q_pe . k_pe,
and the weighted latent comes back through W_UV (`attn_v_b`, [heads, v_head_dim, kv_lora_rank]) before
the output projection; the tensors are llama.cpp's, split from `kv_b_proj` by the converter. RoPE
rotates adjacent pairs (llama.cpp's "norm" type), on q_pe and k_pe alike.
"""

from __future__ import annotations

import math

import torch

from ..kernels.weights import QWeight
from .cache import Cache
from .config import ModelConfig
from .layers import linear, rms_norm
from .step import Step


def rope_pairs(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate adjacent pairs (x0, x1), (x2, x3)... of x [..., n_rot] (tables [..., n_rot] as rope_tables
    gives them: each frequency twice). The result lists the rotated even entries, then the odd ones: only
    dot products of rotated queries and keys are ever taken, so the order is free if both share it."""
    half = x.shape[-1] // 2
    c, s = cos[..., :half], sin[..., :half]
    even, odd = x[..., 0::2], x[..., 1::2]
    return torch.cat((even * c - odd * s, odd * c + even * s), dim=-1)


def per_head(x: torch.Tensor, w) -> torch.Tensor:
    """x [..., H, K] times each head's matrix w[h] [N, K] -> [..., H, N]."""
    if isinstance(w, QWeight):
        return torch.stack([w.expert(h).linear(x[..., h, :]).to(x.dtype) for h in range(w.shape[0])], dim=-2)
    return torch.einsum("...hk,hnk->...hn", x, w.to(x.dtype))


def softmax_scale(cfg: ModelConfig) -> float:
    """1/sqrt(head size), times YaRN's (1 + log_mul ln factor)^2 (DeepSeek's mscale_all_dim)."""
    m = 1.0 + cfg.yarn_log_mul * math.log(cfg.yarn_factor) if cfg.yarn is not None else 1.0
    return m * m * cfg.head_dim ** -0.5


def mla_attention(x: torch.Tensor, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    B, T, _ = x.shape
    H, nope, rope, kvr = cfg.n_head, cfg.qk_nope, cfg.n_rot, cfg.kv_lora_rank
    eps = cfg.rms_eps
    if "attn_q_a.weight" in w:
        q = linear(rms_norm(linear(x, w["attn_q_a.weight"]), w["attn_q_a_norm.weight"], eps), w["attn_q_b.weight"])
    else:
        q = linear(x, w["attn_q.weight"])
    q_nope, q_pe = q.view(B, T, H, nope + rope).split((nope, rope), dim=-1)
    c, k_pe = linear(x, w["attn_kv_a_mqa.weight"]).split((kvr, rope), dim=-1)
    c = rms_norm(c, w["attn_kv_a_norm.weight"], eps)
    cos, sin = step.rope
    q_pe = rope_pairs(q_pe, cos, sin)
    k_pe = rope_pairs(k_pe[:, :, None], cos, sin)[:, :, 0]

    lat, pe = cache.k[il], cache.v[il]               # [slots, rows, 1, kv_lora_rank], [slots, rows, 1, n_rot]
    rows = step.write_rows
    lat[step.write_slots, step.write_pos] = c.reshape(B * T, 1, kvr)[rows].to(lat.dtype)
    pe[step.write_slots, step.write_pos] = k_pe.reshape(B * T, 1, rope)[rows].to(pe.dtype)
    L = step.kv_len
    keys_lat = lat[step.sel, :L, 0].float()          # [B, L, kv_lora_rank]
    keys_pe = pe[step.sel, :L, 0].float()            # [B, L, n_rot]

    q_lat = per_head(q_nope, w["attn_k_b.weight"]).float()           # [B, T, H, kv_lora_rank]
    scores = (torch.einsum("bthc,blc->bhtl", q_lat, keys_lat)
              + torch.einsum("bthr,blr->bhtl", q_pe.float(), keys_pe)) * softmax_scale(cfg)
    if step.mask is not None:
        scores = scores.masked_fill(~step.mask, float("-inf"))
    else:                                            # one sequence from its start: plain causal
        scores = scores.masked_fill(~torch.ones(T, L, dtype=torch.bool, device=x.device).tril(L - T), float("-inf"))
    out_lat = torch.einsum("bhtl,blc->bthc", scores.softmax(-1), keys_lat)   # [B, T, H, kv_lora_rank]
    out = per_head(out_lat.to(x.dtype), w["attn_v_b.weight"])                 # [B, T, H, v_head_dim]
    return linear(out.reshape(B, T, H * cfg.v_head_dim), w["attn_output.weight"])

"""Multi-head Latent Attention (DeepSeek-V2/V3, Kimi-K2): the cache holds, per token, the normalised KV
latent (kv_lora_rank) and one RoPE key shared by every head, not per-head keys and values.

Two forms, whichever takes fewer multiply-adds for the step: absorbed (decode, drafts, verification):
each head's no-RoPE query goes through that head's W_UK (`attn_k_b`, [heads, kv_lora_rank, qk_nope])
into latent space, scores are q_lat . c + q_pe . k_pe, and the weighted latent comes back through W_UV
(`attn_v_b`, [heads, v_head_dim, kv_lora_rank]); expanded (prefill chunks): the cached latents become
per-head keys and values and attention runs as usual. The tensors are llama.cpp's, split from
`kv_b_proj` by the converter. RoPE
rotates adjacent pairs (llama.cpp's "norm" type), on q_pe and k_pe alike.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels import ops
from ..kernels.weights import QWeight
from .cache import Cache
from .config import ModelConfig
from .layers import linear, rms_norm, rope_inv_freq
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
    m = 1.0 + cfg.yarn_log_mul * math.log(cfg.rope_factor) if cfg.yarn else 1.0
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

    mask = step.mask if step.mask is not None else step.key_mask()     # one sequence from its start: causal
    if expanded_is_cheaper(cfg, T, L):
        out = _expanded(q_nope, q_pe, keys_lat, keys_pe, w, cfg, mask)
    else:
        out = _absorbed(q_nope, q_pe, keys_lat, keys_pe, w, cfg, mask)
    return linear(out.to(x.dtype).reshape(B, T, H * cfg.v_head_dim), w["attn_output.weight"])


def expanded_is_cheaper(cfg: ModelConfig, T: int, L: int) -> bool:
    """Multiply-adds of the two forms for T queries over L keys: absorbed scores and sums run over the
    latent; expanded ones over per-head keys and values, after expanding all L latents (worth it for
    prefill chunks, not for a few rows)."""
    kvr, nope, rope, dv = cfg.kv_lora_rank, cfg.qk_nope, cfg.n_rot, cfg.v_head_dim
    absorbed = T * (nope * kvr + L * (2 * kvr + rope) + kvr * dv)
    expanded = L * kvr * (nope + dv) + T * L * (nope + rope + dv)
    return expanded < absorbed


def _absorbed(q_nope, q_pe, keys_lat, keys_pe, w: dict, cfg: ModelConfig, mask) -> torch.Tensor:
    """Queries into latent space through W_UK, scores and weighted sums over the latent, out through W_UV."""
    q_lat = per_head(q_nope, w["attn_k_b.weight"]).float()           # [B, T, H, kv_lora_rank]
    scores = (torch.einsum("bthc,blc->bhtl", q_lat, keys_lat)
              + torch.einsum("bthr,blr->bhtl", q_pe.float(), keys_pe)) * softmax_scale(cfg)
    out_lat = torch.einsum("bhtl,blc->bthc", scores.masked_fill(~mask, float("-inf")).softmax(-1), keys_lat)
    return per_head(out_lat.to(q_nope.dtype), w["attn_v_b.weight"])   # [B, T, H, v_head_dim]


def _expanded(q_nope, q_pe, keys_lat, keys_pe, w: dict, cfg: ModelConfig, mask) -> torch.Tensor:
    """Every cached latent expanded into per-head keys (W_UK c) and values (W_UV c), then plain attention."""
    k_b, v_b = w["attn_k_b.weight"], w["attn_v_b.weight"]
    if isinstance(k_b, QWeight):                                    # every head's rows, as floats [H, kvr, nope]
        k_b = k_b.dense()
    k_nope = torch.einsum("blc,hcn->blhn", keys_lat, k_b.to(keys_lat.device, torch.float32))
    values = per_head(keys_lat[:, :, None].expand(-1, -1, cfg.n_head, -1), v_b).float()   # [B, L, H, v_head_dim]
    keys = torch.cat((k_nope, keys_pe[:, :, None].expand(-1, -1, cfg.n_head, -1)), -1)
    q = torch.cat((q_nope, q_pe), -1).float()
    out = F.scaled_dot_product_attention(q.transpose(1, 2), keys.transpose(1, 2), values.transpose(1, 2),
                                         attn_mask=mask, scale=softmax_scale(cfg))
    return out.transpose(1, 2)


def mla_native(w: dict, cfg: ModelConfig, cache: Cache, il: int, x: torch.Tensor, out: torch.Tensor, buf, rows,
               shift: int = 0) -> None:
    """The absorbed form on the decode buffers (x: normed input, out: attention output), for a few rows per
    sequence: the per-head W_UK and W_UV products in one op each (ops.matmul_heads), the attention over the
    cached latents in one (ops.mla_attention)."""
    H, nope, rope, kvr, dv, eps = cfg.n_head, cfg.qk_nope, cfg.n_rot, cfg.kv_lora_rank, cfg.v_head_dim, cfg.rms_eps
    q = buf.q[:, :H * (nope + rope)]
    if "attn_q_a.weight" in w:
        ops.matmul(x, w["attn_q_a.weight"], buf.mla_qa, rows)
        ops.rmsnorm(buf.mla_qa, w["attn_q_a_norm.weight"], buf.mla_qa_normed, eps, rows)
        ops.matmul(buf.mla_qa_normed, w["attn_q_b.weight"], q, rows)
    else:
        ops.matmul(x, w["attn_q.weight"], q, rows)
    kv = buf.mla_kv
    ops.matmul(x, w["attn_kv_a_mqa.weight"], kv, rows)
    ops.rmsnorm(kv[:, :kvr], w["attn_kv_a_norm.weight"], buf.mla_c, eps, rows)
    ops.matmul_heads(q, nope + rope, w["attn_k_b.weight"], buf.mla_qlat, kvr, rows)
    lat, pe = cache.k[il], cache.v[il]               # [slots, rows, 1, kv_lora_rank], [slots, rows, 1, n_rot]
    ops.mla_attention(q, nope + rope, nope, buf.mla_qlat, buf.mla_c, kv[:, kvr:], lat, pe, rows, buf.mla_out,
                      n_head=H, kv_lora_rank=kvr, n_rot=rope, inv_freq=buf.mla_inv_freq, rope_scale=buf.mla_rope_scale,
                      scale=softmax_scale(cfg), shift=shift)
    att = buf.att[:, :H * dv]
    ops.matmul_heads(buf.mla_out, kvr, w["attn_v_b.weight"], att, dv, rows)
    ops.matmul(att, w["attn_output.weight"], out, rows)


def mla_buffers(cfg: ModelConfig, R: int) -> dict:
    """The native MLA forward's workspace (models.buffers)."""
    f = lambda *shape: torch.zeros(*shape, dtype=torch.float32)   # noqa: E731
    inv_freq, scale = rope_inv_freq(cfg)
    kvr, H = cfg.kv_lora_rank, cfg.n_head
    return dict(mla_qa=f(R, max(cfg.q_lora_rank, 1)), mla_qa_normed=f(R, max(cfg.q_lora_rank, 1)),
                mla_kv=f(R, kvr + cfg.n_rot), mla_c=f(R, kvr), mla_qlat=f(R, H * kvr), mla_out=f(R, H * kvr),
                mla_inv_freq=inv_freq.contiguous(), mla_rope_scale=float(scale))

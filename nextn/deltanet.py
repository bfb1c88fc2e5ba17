"""Gated DeltaNet (Qwen3.5 / Qwen3-Next linear-attention blocks): causal conv1d + gated delta rule.

One closed-form routine handles a chunk of up to `CHUNK` tokens. Short forwards (decode, draft
verification) use it once and keep the recurrent state after every token, so a partially accepted
draft is rolled back by picking a snapshot; prefill walks the prompt chunk by chunk.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .cache import Cache, PendingState
from .config import ModelConfig
from .fuse import project_split
from .layers import l2_norm, linear, rms_norm
from .step import Step

CHUNK = 64


def delta_rule_chunk(q, k, v, g, beta, s0, all_states: bool):
    """Gated delta rule over one chunk, in closed form (WY/UT representation).

    q, k: [B, H, T, dk] (q already scaled), v: [B, H, T, dv], g (log decay), beta: [B, H, T],
    s0: [B, H, dk, dv]. Returns (outputs [B, H, T, dv], states [B, H, T, dk, dv] or final [B, H, dk, dv]).
    """
    T = q.shape[2]
    c = g.cumsum(-1)
    lower = torch.ones(T, T, dtype=torch.bool, device=q.device).tril()
    decay = (c[..., :, None] - c[..., None, :]).masked_fill(~lower, float("-inf")).exp()   # [.., t, i]
    a = (beta[..., :, None] * decay * (k @ k.transpose(-1, -2))).tril(-1)
    ec = c.exp()[..., None]
    rhs = beta[..., None] * (v - ec * (k @ s0))
    u = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True)
    out = ec * (q @ s0) + ((q @ k.transpose(-1, -2)) * decay) @ u
    if all_states:
        inc = (decay[..., :, :, None] * k[..., None, :, :]).transpose(-1, -2) @ u[..., None, :, :]
        return out, ec[..., None] * s0[:, :, None] + inc
    last = decay[..., -1, :, None]
    return out, c[..., -1].exp()[..., None, None] * s0 + (k * last).transpose(-1, -2) @ u


def gated_deltanet(x: torch.Tensor, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    B, T, _ = x.shape
    hk, hv, dk, dv = cfg.ssm_n_k_heads, cfg.ssm_n_v_heads, cfg.ssm_head_k_dim, cfg.ssm_head_v_dim
    qkv, z, b, a = _projections(x, w, cfg)

    # causal depthwise conv over [old window | new inputs]
    conv_state = cache.conv[il][step.slot_index]
    buf = torch.cat((conv_state, qkv.transpose(1, 2).to(conv_state.dtype)), dim=2)
    mixed = F.silu(causal_conv(buf, w["ssm_conv1d.weight"], T)).transpose(1, 2).float()   # [B, T, C]
    q, k, v = mixed.split((hk * dk, hk * dk, hv * dv), dim=-1)
    q = l2_norm(q.reshape(B, T, hk, dk)) * dk ** -0.5
    k = l2_norm(k.reshape(B, T, hk, dk))
    if hv != hk:
        q, k = _expand_heads(q, hv // hk, cfg), _expand_heads(k, hv // hk, cfg)
    v = v.reshape(B, T, hv, dv)
    valid = step.valid[..., None]
    beta = torch.sigmoid(b.float()) * valid                                         # padding: no write
    g = w["ssm_a"].float() * F.softplus(a.float() + w["ssm_dt.bias"].float()) * valid   # padding: no decay
    q, k, v = (t.transpose(1, 2) for t in (q, k, v))
    beta, g = beta.transpose(1, 2), g.transpose(1, 2)

    s0 = cache.ssm[il][step.slot_index]
    if step.chunked:
        outs = []
        for s in range(0, T, CHUNK):
            e = s + CHUNK
            o, s0 = delta_rule_chunk(q[:, :, s:e], k[:, :, s:e], v[:, :, s:e], g[:, :, s:e], beta[:, :, s:e], s0, False)
            outs.append(o)
        out = torch.cat(outs, dim=2)
        n = torch.tensor(step.n_tokens, device=x.device)
        window = n[:, None] + torch.arange(buf.shape[2] - T, device=x.device)[None, :]
        cache.conv[il][step.slot_index] = buf.gather(2, window[:, None, :].expand(-1, buf.shape[1], -1))
        cache.ssm[il][step.slot_index] = s0
    else:
        out, states = delta_rule_chunk(q, k, v, g, beta, s0, True)
        cache.pending[il] = PendingState(step.slot_index, buf, states)

    out = out.transpose(1, 2)                                                      # [B, T, hv, dv]
    out = rms_norm(out, w["ssm_norm.weight"], cfg.rms_eps) * F.silu(z.float().view(B, T, hv, dv))
    return linear(out.reshape(B, T, hv * dv).to(x.dtype), w, "ssm_out")


def causal_conv(buf: torch.Tensor, weight: torch.Tensor, T: int) -> torch.Tensor:
    """Depthwise conv of kernel K over buf [B, C, K-1+T] -> [B, C, T], as K shifted multiply-adds
    (a few small ops instead of a grouped conv1d call, which dominates at decode sizes)."""
    K = weight.shape[1]
    w = weight.to(buf.dtype)
    out = buf[:, :, 0:T] * w[:, 0, None]
    for j in range(1, K):
        out = out + buf[:, :, j:j + T] * w[:, j, None]
    return out


def _expand_heads(t: torch.Tensor, r: int, cfg: ModelConfig) -> torch.Tensor:
    """Share each K head among r V heads. Qwen3.5 GGUFs store V heads tiled (head j reads K head j % hk,
    llama.cpp's reordering); Qwen3-Next keeps them grouped (head j reads K head j // r)."""
    return t.repeat(1, 1, r, 1) if cfg.ssm_v_tiled else t.repeat_interleave(r, dim=2)


def _projections(x: torch.Tensor, w: dict, cfg: ModelConfig):
    """(qkv [B,T,C], z [B,T,hv*dv], beta-logits [B,T,hv], alpha [B,T,hv]) for either weight layout."""
    if "ssm_in.wT" in w:
        return project_split(x, w, "ssm_in")
    if "ssm_in_ba.wT" in w:
        qkv, z, ba = project_split(x, w, "ssm_in_ba")
    elif "ssm_ba.weight" in w:
        qkv, z, ba = linear(x, w, "attn_qkv"), linear(x, w, "attn_gate"), linear(x, w, "ssm_ba")
    else:
        return linear(x, w, "attn_qkv"), linear(x, w, "attn_gate"), linear(x, w, "ssm_beta"), linear(x, w, "ssm_alpha")
    B, T, _ = x.shape   # Qwen3-Next: beta and alpha interleaved per K-head group [b (r) | a (r)]
    r = cfg.ssm_n_v_heads // cfg.ssm_n_k_heads
    ba = ba.reshape(B, T, cfg.ssm_n_k_heads, 2 * r)
    return qkv, z, ba[..., :r].reshape(B, T, -1), ba[..., r:].reshape(B, T, -1)

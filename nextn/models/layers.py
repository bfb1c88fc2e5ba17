"""Stateless tensor building blocks shared by every architecture: norms, RoPE, FFN, MoE."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from .config import ModelConfig
from ..kernels.layout import has, project, project_split


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """llama.cpp-convention RMSNorm: x / rms(x) * w (zero-centred weights already have +1 folded in)."""
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * w.float()).to(x.dtype)


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def rope_tables(positions: torch.Tensor, n_rot: int, theta: float, dtype: torch.dtype):
    """cos/sin tables of shape [B, T, 1, n_rot] for NeoX-style (rotate-half) RoPE."""
    inv_freq = 1.0 / (theta ** (torch.arange(0, n_rot, 2, dtype=torch.float32, device=positions.device) / n_rot))
    freqs = positions.float()[..., None] * inv_freq
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    return emb.cos().to(dtype), emb.sin().to(dtype)


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first n_rot dims of x [B, T, H, hd]; the rest pass through (partial RoPE)."""
    n_rot = cos.shape[-1]
    x_rot, x_pass = x[..., :n_rot], x[..., n_rot:]
    half = n_rot // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    out = x_rot * cos + rotated * sin
    return torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out


def linear(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    """x @ W for a weight stored either transposed (`name.wT`, see fuse.py) or as in the file."""
    if has(w, name):
        return project(x, w, name)
    return F.linear(x, w[f"{name}.weight"], w.get(f"{name}.bias"))


def swiglu(x: torch.Tensor, w_gate: torch.Tensor, w_up: torch.Tensor, w_down: torch.Tensor) -> torch.Tensor:
    return F.linear(F.silu(F.linear(x, w_gate)) * F.linear(x, w_up), w_down)


def fused_swiglu(x: torch.Tensor, w: dict, suffix: str = "") -> torch.Tensor:
    gate, up = project_split(x, w, f"ffn_gate_up{suffix}")
    return linear(F.silu(gate) * up, w, f"ffn_down{suffix}")


def dense_ffn(x: torch.Tensor, w: dict) -> torch.Tensor:
    if has(w, "ffn_gate_up"):
        return fused_swiglu(x, w)
    return swiglu(x, w["ffn_gate.weight"], w["ffn_up.weight"], w["ffn_down.weight"])


def route(x: torch.Tensor, w: dict, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick experts per token. Returns (weights [N, k], expert ids [N, k])."""
    logits = F.linear(x, w["ffn_gate_inp.weight"]).float()
    if cfg.expert_gating == "softmax":
        scores = logits.softmax(-1)
        choice = scores
    else:
        scores = logits.sigmoid()
        bias = w.get("exp_probs_b.bias")
        choice = scores + bias.float() if bias is not None else scores
    if cfg.n_expert_groups > 1:
        n, e = choice.shape
        grouped = choice.view(n, cfg.n_expert_groups, e // cfg.n_expert_groups)
        group_score = grouped.topk(2, dim=-1).values.sum(-1)
        keep = group_score.topk(cfg.n_group_used, dim=-1).indices
        mask = torch.zeros_like(group_score, dtype=torch.bool).scatter_(1, keep, True)
        choice = grouped.masked_fill(~mask[..., None], float("-inf")).view(n, e)
    ids = choice.topk(cfg.n_expert_used, dim=-1).indices
    weights = scores.gather(1, ids)
    if cfg.expert_weights_norm:
        weights = weights / (weights.sum(-1, keepdim=True) + (1e-20 if cfg.expert_gating == "sigmoid" else 0.0))
    return weights * cfg.expert_weights_scale, ids


def moe_ffn(x: torch.Tensor, w: dict, cfg: ModelConfig) -> torch.Tensor:
    """Mixture of experts, computed expert by expert over the tokens routed to it (no per-token loops)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    weights, ids = route(x, w, cfg)
    flat = ids.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=cfg.n_expert).tolist()
    token_of = order // cfg.n_expert_used
    flat_weights = weights.flatten()[order].to(x.dtype)
    out = torch.zeros_like(x)
    gate_up, down = w["ffn_gate_up_exps.weight"], w["ffn_down_exps.weight"]
    start = 0
    for e, n in enumerate(counts):
        if n == 0:
            continue
        tok = token_of[start:start + n]
        g, u = F.linear(x[tok], gate_up[e]).chunk(2, dim=-1)
        y = F.linear(F.silu(g) * u, down[e]) * flat_weights[start:start + n, None]
        out.index_add_(0, tok, y)
        start += n
    shared = None
    if has(w, "ffn_gate_up_shexp"):
        shared = fused_swiglu(x, w, "_shexp")
    elif "ffn_gate_shexp.weight" in w:
        shared = swiglu(x, w["ffn_gate_shexp.weight"], w["ffn_up_shexp.weight"], w["ffn_down_shexp.weight"])
    if shared is not None:
        if "ffn_gate_inp_shexp.weight" in w:
            shared = shared * torch.sigmoid(F.linear(x, w["ffn_gate_inp_shexp.weight"]))
        out = out + shared
    return out.reshape(shape)


def ffn(x: torch.Tensor, w: dict, cfg: ModelConfig) -> torch.Tensor:
    return moe_ffn(x, w, cfg) if "ffn_gate_inp.weight" in w else dense_ffn(x, w)

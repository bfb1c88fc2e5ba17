"""Mixture-of-experts feed-forward: routing (softmax, or sigmoid + correction bias with expert groups),
the routed experts, and the shared expert (gated for Qwen)."""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import native, ops
from .config import ModelConfig
from .layers import dense_ffn, expert, linear, swiglu_native


def route(x: torch.Tensor, w: dict, cfg: ModelConfig) -> tuple[torch.Tensor, torch.Tensor]:
    """Pick experts per token. Returns (weights [N, k], expert ids [N, k])."""
    logits = linear(x, w["ffn_gate_inp.weight"]).float()
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
    """Experts computed expert by expert over the tokens routed to each (no per-token loops)."""
    shape = x.shape
    x = x.reshape(-1, shape[-1])
    weights, ids = route(x, w, cfg)
    flat = ids.flatten()
    order = flat.argsort(stable=True)
    counts = torch.bincount(flat, minlength=cfg.n_expert).tolist()
    token_of = order // cfg.n_expert_used
    flat_weights = weights.flatten()[order].to(x.dtype)
    out = torch.zeros_like(x)
    gate, up, down = w["ffn_gate_exps.weight"], w["ffn_up_exps.weight"], w["ffn_down_exps.weight"]
    first, held = held_experts(cfg, gate)
    start = 0
    for e, n in enumerate(counts):
        if n and first <= e < first + held:
            tok = token_of[start:start + n]
            xe = x[tok]
            h = F.silu(linear(xe, expert(gate, e - first))) * linear(xe, expert(up, e - first))
            out.index_add_(0, tok, linear(h, expert(down, e - first)) * flat_weights[start:start + n, None])
        start += n
    if "ffn_gate_shexp.weight" in w:
        shared = dense_ffn(x, w, "_shexp")
        if "ffn_gate_inp_shexp.weight" in w:
            shared = shared * torch.sigmoid(linear(x, w["ffn_gate_inp_shexp.weight"]))
        out = out + shared
    return out.reshape(shape)


def held_experts(cfg: ModelConfig, stack) -> tuple[int, int]:
    """(first expert, how many) of the stack this rank holds: all of them, or its 1/N under expert parallelism."""
    held = stack.shape[0]
    return cfg.tp_rank * held if held < cfg.n_expert else 0, held


def moe_native(w: dict, cfg: ModelConfig, x: torch.Tensor, out: torch.Tensor, buf, rows) -> None:
    """The same on the decode buffers: route, run each row's experts, add the (gated) shared expert."""
    router = buf.router[:, :cfg.n_expert]
    ops.matmul(x, w["ffn_gate_inp.weight"], router, rows)
    ids, weights = buf.moe_ids[:, :cfg.n_expert_used], buf.moe_weights[:, :cfg.n_expert_used]
    ops.moe_route(router, ids, weights, rows, n_used=cfg.n_expert_used, bias=w.get("exp_probs_b.bias"),
                  softmax=cfg.expert_gating == "softmax", norm=cfg.expert_weights_norm,
                  n_groups=cfg.n_expert_groups, n_group_used=cfg.n_group_used, scale=cfg.expert_weights_scale)
    first, held = held_experts(cfg, w["ffn_gate_exps.weight"])
    if held < cfg.n_expert:       # expert parallel: ids of this rank's experts, -1 (skipped) for the others'
        def local_ids():
            local = ids[:int(rows.head[0])]
            local.sub_(first).masked_fill_((local < 0) | (local >= held), -1)
        native.hook(local_ids)
    ops.moe_experts(x, ids, weights, w["ffn_gate_exps.weight"], w["ffn_up_exps.weight"], w["ffn_down_exps.weight"],
                    out, buf.moe_scratch, rows)
    if "ffn_gate_shexp.weight" in w:
        shared = buf.shared
        swiglu_native(w, "_shexp", x, shared, buf, rows)
        gate = None
        if "ffn_gate_inp_shexp.weight" in w:
            gate = buf.router[:, cfg.n_expert:cfg.n_expert + 1]
            ops.matmul(x, w["ffn_gate_inp_shexp.weight"], gate, rows)
        ops.add_gated(out, shared, gate, rows)

"""Which part of each GGUF weight a rank holds under `--tp N` (Megatron-style splits, expressed on the
file's own tensors so every rank memory-maps only its slice):

- column-parallel (output rows split): attention / MLA query heads, K and V heads (per layer where layers
  differ), attention sinks, Gated DeltaNet heads
  (q, k, v, z, beta, alpha, conv channels, A, dt), FFN gate and up by intermediate size, expert stacks
  by expert, and the vocabulary rows of the embedding and output matrices;
- row-parallel (input columns split): attention and DeltaNet output projections and FFN down, whose
  partial products the ranks sum (parallel.comm);
- everything else (norms, routers, the MTP block's eh_proj, MLA's shared latent projections) whole.

Row slices of a memory-mapped matrix are views of the file; column slices keep whole quantization blocks
(a slice that would cut a block is decoded to float32 instead).
"""

from __future__ import annotations

from dataclasses import replace

import torch
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType as Q

from ..errors import NextnError
from ..gguf.reader import block_index
from ..kernels.weights import QWeight
from ..models.config import ModelConfig

VOCAB = ("token_embd.weight", "output.weight", "nextn.embed_tokens.weight", "nextn.shared_head_head.weight")
EXPERTS = ("ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight")
FFN_ROWS = ("ffn_gate.weight", "ffn_up.weight", "ffn_gate_shexp.weight", "ffn_up_shexp.weight")
FFN_COLS = ("ffn_down.weight", "ffn_down_shexp.weight")


def local_config(cfg: ModelConfig, rank: int, size: int) -> ModelConfig:
    """The shapes one rank computes: head counts divided by `size` (the vocabulary and expert count stay
    global: routing and sampling see every expert and token)."""
    if size == 1:
        return cfg
    counts = {"attention heads": cfg.n_head, "experts": cfg.n_expert}
    if not cfg.mla:
        counts["KV heads"] = cfg.n_head_kv
    for n in sorted(set(cfg.head_kv) - {cfg.n_head_kv}):     # per-layer KV head counts (MiMo's sliding layers)
        counts[f"KV heads of the layers with {n}"] = n
    if cfg.recurrent_layers:
        counts["linear-attention key heads"] = cfg.ssm_n_k_heads
    bad = {k: v for k, v in counts.items() if v and v % size}
    if bad:
        what = ", ".join(f"{v} {k}" for k, v in bad.items())
        ok = [n for n in range(1, 65) if all(v % n == 0 for v in counts.values() if v)]
        raise NextnError(f"--tp {size}: the model's {what} do not split evenly over {size} ranks "
                         f"(--tp must divide every head and expert count: {', '.join(map(str, ok))})")
    if cfg.n_vocab < size:
        raise NextnError(f"--tp {size}: more ranks than the {cfg.n_vocab} vocabulary rows")
    return replace(cfg, n_head=cfg.n_head // size, n_head_kv=max(1, cfg.n_head_kv // size),
                   head_kv=tuple(n // size for n in cfg.head_kv),
                   ssm_n_k_heads=cfg.ssm_n_k_heads // size, ssm_n_v_heads=cfg.ssm_n_v_heads // size,
                   ssm_inner=cfg.ssm_inner // size, tp_rank=rank, tp_size=size)


def shard(name: str, t, cfg: ModelConfig, rank: int, size: int):
    """This rank's part of tensor `name` (a QWeight or a float tensor, as the file holds it)."""
    if size == 1:
        return t
    il = block_index(name)
    rule = _rule(name.split(".", 2)[2] if il is not None else name, cfg, rank, size, t, il)
    if rule is None:
        return t
    axis, index = rule
    return _take(t, axis, index)


def _rule(sub: str, cfg: ModelConfig, r: int, n: int, t, il: int | None = None) -> tuple[int, list[int]] | None:
    """(axis, kept indices) for a weight named `sub` within block `il`; axis 0: rows (or the stack of a
    stacked matrix), -1: columns. None: held whole."""
    if sub in VOCAB:
        per = -(-cfg.n_vocab // n)
        return 0, list(range(min(r * per, cfg.n_vocab), min((r + 1) * per, cfg.n_vocab)))
    if sub in EXPERTS:
        return 0, _part(cfg.n_expert, r, n)
    if sub in FFN_ROWS or sub in FFN_COLS:
        f = t.shape[0] if sub in FFN_ROWS else t.shape[-1]
        if f % n:
            raise NextnError(f"--tp {n}: '{sub}' has an intermediate size of {f}, which does not split over {n} ranks")
        return (0 if sub in FFN_ROWS else -1), _part(f, r, n)
    if cfg.mla:
        return _mla_rule(sub, cfg, r, n)
    if il is not None and cfg.recurrent[il] and sub.startswith(("attn_qkv.", "ssm_", "attn_gate.")):
        return _deltanet_rule(sub, cfg, r, n)
    return _attention_rule(sub, cfg, r, n, il)


def _attention_rule(sub: str, cfg: ModelConfig, r: int, n: int, il: int | None):
    hd, vd = cfg.head_dim, cfg.v_dim
    kv = cfg.kv_heads(il) if il is not None else cfg.n_head_kv
    heads, kv_heads = _part(cfg.n_head, r, n), _part(kv, r, n)
    q = _rows(heads, hd * (2 if cfg.attn_output_gate else 1))
    if sub in ("attn_q.weight", "attn_q.bias"):
        return 0, q
    if sub in ("attn_k.weight", "attn_k.bias"):
        return 0, _rows(kv_heads, hd)
    if sub in ("attn_v.weight", "attn_v.bias"):
        return 0, _rows(kv_heads, vd)
    if sub == "attn_qkv.weight":                             # one projection [q | k | v] (MiMo-V2 files)
        q_all, k_all = cfg.n_head * hd * (2 if cfg.attn_output_gate else 1), kv * hd
        return 0, q + [q_all + i for i in _rows(kv_heads, hd)] + [q_all + k_all + i for i in _rows(kv_heads, vd)]
    if sub == "attn_sinks.weight":
        return 0, heads
    if sub == "attn_output.weight":
        return -1, _rows(heads, vd)
    return None


def _mla_rule(sub: str, cfg: ModelConfig, r: int, n: int):
    heads = _part(cfg.n_head, r, n)
    if sub in ("attn_q.weight", "attn_q_b.weight"):
        return 0, _rows(heads, cfg.head_dim)
    if sub in ("attn_k_b.weight", "attn_v_b.weight"):
        return 0, heads
    if sub == "attn_output.weight":
        return -1, _rows(heads, cfg.v_head_dim)
    return None       # the latent projections and their norms: every head reads the same latent


def _deltanet_rule(sub: str, cfg: ModelConfig, r: int, n: int):
    hk, dk, dv = cfg.ssm_n_k_heads, cfg.ssm_head_k_dim, cfg.ssm_head_v_dim
    keys, values = _part(hk, r, n), _value_heads(cfg, r, n)
    if sub in ("attn_qkv.weight", "ssm_conv1d.weight"):      # channels [q | k | v]
        return 0, _rows(keys, dk) + [hk * dk + i for i in _rows(keys, dk)] + [2 * hk * dk + i for i in _rows(values, dv)]
    if sub == "attn_gate.weight":
        return 0, _rows(values, dv)
    if sub in ("ssm_beta.weight", "ssm_alpha.weight", "ssm_a", "ssm_dt.bias"):
        return 0, values
    if sub == "ssm_ba.weight":                               # [beta (r) | alpha (r)] per key head
        return 0, _rows(keys, 2 * (cfg.ssm_n_v_heads // hk))
    if sub == "ssm_out.weight":
        return -1, _rows(values, dv)
    return None


def _value_heads(cfg: ModelConfig, r: int, n: int) -> list[int]:
    """The value heads that read this rank's key heads: a contiguous group (Qwen3-Next), or every head
    j with j mod hk among them (Qwen3.5's tiled order, which then holds within the shard too)."""
    hk, hv = cfg.ssm_n_k_heads, cfg.ssm_n_v_heads
    keys = set(_part(hk, r, n))
    if cfg.ssm_v_tiled:
        return [j for j in range(hv) if j % hk in keys]
    return [j for j in range(hv) if j // (hv // hk) in keys]


def _part(total: int, r: int, n: int) -> list[int]:
    per = total // n
    return list(range(r * per, (r + 1) * per))


def _rows(units: list[int], width: int) -> list[int]:
    return [u * width + i for u in units for i in range(width)]


def _take(t, axis: int, index: list[int]):
    """t restricted to `index` along axis 0 (rows / stack) or -1 (columns)."""
    contiguous = index == list(range(index[0], index[-1] + 1))
    if not isinstance(t, QWeight):
        if axis == 0:
            return t[index[0]:index[-1] + 1] if contiguous else t[torch.tensor(index)]
        return t[..., torch.tensor(index)].contiguous()
    if axis == 0:
        data = t.data[index[0]:index[-1] + 1] if contiguous else t.data[torch.tensor(index)]
        return QWeight(data, t.qtype, (len(index), *t.shape[1:]), t.int8)
    block, size = GGML_QUANT_SIZES[t.qtype]
    runs = _runs(index)
    if all(s % block == 0 and k % block == 0 for s, k in runs):
        data = torch.cat([t.data[..., s // block * size:(s + k) // block * size] for s, k in runs], -1).contiguous()
        return QWeight(data, t.qtype, (*t.shape[:-1], len(index)), t.int8)
    dense = t.dense()[..., torch.tensor(index)].contiguous()          # cuts quantization blocks: float32
    return QWeight(dense.view(torch.uint8).reshape(*dense.shape[:-1], -1), Q.F32, tuple(dense.shape), t.int8)


def _runs(index: list[int]) -> list[tuple[int, int]]:
    """Contiguous runs (start, length) of a sorted index list."""
    runs = []
    for i in index:
        if runs and runs[-1][0] + runs[-1][1] == i:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((i, 1))
    return runs

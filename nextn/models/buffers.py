"""The native decode forward's workspace: every buffer it writes, allocated once for the most rows a
step can have, so that a recorded plan can replay the forward on the same addresses every step."""

from __future__ import annotations

import torch

from ..kernels.ops import Rows
from .config import ModelConfig
from .layers import rope_inv_freq
from .mla import mla_buffers


def _width(layers: list[dict], name: str, default: int = 0) -> int:
    return max([w[name].N for w in layers if name in w] + [default])


class Buffers:
    def __init__(self, cfg: ModelConfig, layers: list[dict], n_vocab: int, max_rows: int, max_seqs: int):
        R, D = max_rows, cfg.n_embd
        f = lambda *shape: torch.zeros(*shape, dtype=torch.float32)   # noqa: E731
        self.rows = Rows(max_rows, max_seqs)
        self.tokens = torch.zeros(R, dtype=torch.int32)
        self.ids = torch.zeros(R, dtype=torch.int32)
        self.tokens_np, self.ids_np = self.tokens.numpy(), self.ids.numpy()   # written / read from Python lists
        self.x, self.h, self.mix, self.hidden = f(R, D), f(R, D), f(R, D), f(R, D)
        self.mtp_in, self.cat = f(R, D), f(R, 2 * D)            # MTP: the trunk hidden rows, [enorm(e) | hnorm(h)]
        self.logits = f(R, n_vocab)
        # tensor parallel: this rank's vocabulary columns, before they are gathered into `logits`
        self.vocab_part = f(R, -(-n_vocab // cfg.tp_size)) if cfg.tp_size > 1 else None
        self.q = f(R, max(_width(layers, "attn_q.weight", 1), _width(layers, "attn_q_b.weight")))
        self.k = f(R, _width(layers, "attn_k.weight", 1))
        self.v = f(R, _width(layers, "attn_v.weight", 1))
        self.att = f(R, max(cfg.n_head * cfg.head_dim, cfg.n_head * cfg.v_dim, 1))
        # RoPE frequencies and cos / sin factor of the full-attention and the sliding-window layers
        self.rope = {swa: (inv.contiguous(), float(scale)) for swa in (False, True) for inv, scale in [rope_inv_freq(cfg, swa)]}
        if cfg.mla:
            vars(self).update(mla_buffers(cfg, R))
        ff = max(_width(layers, "ffn_gate.weight"), _width(layers, "ffn_gate_shexp.weight"), 1)
        self.ff_gate, self.ff_up, self.shared = f(R, ff), f(R, ff), f(R, D)
        self.router = f(R, cfg.n_expert + 1)
        k = max(cfg.n_expert_used, 1)
        self.moe_ids, self.moe_weights = torch.zeros(R, k, dtype=torch.int32), f(R, k)
        f_exp = max((w["ffn_gate_exps.weight"].shape[1] for w in layers if "ffn_gate_exps.weight" in w), default=0)
        self.moe_scratch = f(R * (2 * D + 3 * f_exp) if f_exp else 1)
        hk, hv, dk, dv = cfg.ssm_n_k_heads, cfg.ssm_n_v_heads, cfg.ssm_head_k_dim, cfg.ssm_head_v_dim
        conv_dim = 2 * hk * dk + hv * dv
        self.qkv, self.z, self.dn, self.ba = f(R, max(conv_dim, 1)), f(R, max(hv * dv, 1)), f(R, max(hv * dv, 1)), f(R, max(2 * hv, 1))
        # per recurrent layer, what the kernel keeps of each row for rolling back (kernels.inc: DeltaNet)
        self.rowbuf = {il: f(R, 2 * conv_dim + 2 * hv) for il, rec in enumerate(cfg.recurrent) if rec}

    def nbytes(self) -> int:
        return sum(t.numel() * t.element_size() for t in vars(self).values() if isinstance(t, torch.Tensor)) + \
            sum(t.numel() * 4 for t in self.rowbuf.values())

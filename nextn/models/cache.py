"""Per-slot state allocated once: a position-indexed KV cache for attention blocks (the MTP blocks'
included; for MLA the latent and the RoPE key; for sliding-window layers a ring a little longer than the
window) and conv + recurrent state for Gated DeltaNet blocks.

Rolling back attention is free (the caller just keeps a shorter length). Recurrent state cannot be
truncated: the CPU torch path keeps the state after every token of a short forward and `commit`
installs the one for the number of tokens kept; the native path saves the conv window before the step and
the recurrent state after its first token, which is always kept (`conv_backup`, `ssm_backup`, allocated
when speculating), and replays the other kept tokens; on CUDA the
fused kernels leave the state untouched and `commit` replays the kept tokens into it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import torch

from .config import ModelConfig


def _zeros(shape, dtype, device) -> torch.Tensor:
    """Zeros that take memory only as they are written (on CPU, pages the OS zero-fills on first touch):
    a KV cache costs what the context uses, not what it could hold."""
    if torch.device(device).type == "cpu" and dtype == torch.float32:
        return torch.from_numpy(np.zeros(shape, dtype=np.float32))
    return torch.zeros(shape, dtype=dtype, device=device)


RING_SLACK = 32      # ring rows beyond window + chunk: room for up to 16 drafts a rollback discarded


def ring_rows(cfg: ModelConfig, max_chunk: int) -> int:
    """Rows of a sliding-window layer's ring: the window, the longest forward's rows, and room for drafts a
    rollback discarded (whose rows then read as positions one ring earlier, outside every window)."""
    return cfg.n_swa + max_chunk + RING_SLACK if any(cfg.swa) else 0


def footprint(cfg: ModelConfig, use_mtp: bool, chunk: int) -> tuple[int, int]:
    """(bytes per token, fixed bytes per sequence) of the cache nextn allocates on CPU (float32) for this
    model: attention rows (for MLA the latent and the RoPE key) grow with the context; recurrent state and
    sliding-window rings (at a prefill chunk of `chunk`) do not."""
    ring = ring_rows(cfg, chunk)
    a, b = (Cache.allocate(cfg, 1, n, torch.float32, "meta", use_mtp, ring_rows=ring).nbytes()
            for n in (ring + 1024, ring + 2048))
    per_token = (b - a) // 1024
    return per_token, a - per_token * (ring + 1024)


def conv_window(buf: torch.Tensor, n: torch.Tensor, width: int) -> torch.Tensor:
    """The conv state after each sequence's first n[b] new inputs: buf [B, K-1+T, C] rows n..n+width-1, as the
    cache holds it ([B, C, width])."""
    window = n[:, None] + torch.arange(width, device=buf.device)[None, :]
    return buf.gather(1, window[:, :, None].expand(-1, -1, buf.shape[2])).transpose(1, 2)


@dataclass
class PendingState:
    slot_index: torch.Tensor | slice   # the slots (a slice when contiguous)
    conv_buf: torch.Tensor | None  # [B, K-1+T, C]: old conv window followed by this step's inputs
    states: torch.Tensor | None  # [B, H, T, dk, dv]: recurrent state after each token (torch path), or
    replay: object = None        # keep [B] -> None: the fused CUDA layer advancing window and state itself


@dataclass
class Cache:
    cfg: ModelConfig
    n_slots: int
    max_len: int
    k: dict[int, torch.Tensor] = field(default_factory=dict)
    v: dict[int, torch.Tensor] = field(default_factory=dict)
    conv: dict[int, torch.Tensor] = field(default_factory=dict)
    ssm: dict[int, torch.Tensor] = field(default_factory=dict)
    pending: dict[int, PendingState] = field(default_factory=dict)
    conv_backup: dict[int, torch.Tensor] = field(default_factory=dict)
    ssm_backup: dict[int, torch.Tensor] = field(default_factory=dict)
    ring: dict[int, int] = field(default_factory=dict)     # sliding-window layer -> rows of its ring (Step.ring)

    @classmethod
    def allocate(cls, cfg: ModelConfig, n_slots: int, max_len: int, dtype, device, use_mtp: bool,
                 rollback: bool = False, ring_rows: int = 0, trunk: bool = True) -> "Cache":
        """rollback: also the native path's saved states (only needed when speculating).
        ring_rows > 0: sliding-window layers keep a ring of that many rows (+1 spare for padding writes)
        instead of a row per position, when it is the smaller. trunk=False: the MTP blocks' state only (a head
        that runs apart from its trunk, parallel/placement.py)."""
        cache = cls(cfg, n_slots, max_len)
        n_blocks = cfg.n_layer + (cfg.n_mtp if use_mtp else 0)
        for il in range(0 if trunk else cfg.n_layer, n_blocks):
            if cfg.recurrent[il]:
                conv_dim = 2 * cfg.ssm_n_k_heads * cfg.ssm_head_k_dim + cfg.ssm_inner
                conv = (n_slots, conv_dim, cfg.ssm_conv_kernel - 1)
                ssm = (n_slots, cfg.ssm_n_v_heads, cfg.ssm_head_k_dim, cfg.ssm_head_v_dim)
                cache.conv[il] = torch.zeros(conv, dtype=dtype, device=device)
                cache.ssm[il] = torch.zeros(ssm, dtype=torch.float32, device=device)
                if rollback:
                    cache.conv_backup[il] = torch.zeros(conv, dtype=dtype, device=device)
                    cache.ssm_backup[il] = torch.zeros(ssm, dtype=torch.float32, device=device)
            elif cfg.mla:        # the latent and the shared RoPE key (models/mla.py)
                cache.k[il] = _zeros((n_slots, max_len, 1, cfg.kv_lora_rank), dtype, device)
                cache.v[il] = _zeros((n_slots, max_len, 1, cfg.n_rot), dtype, device)
            else:
                kv, rows = cfg.kv_heads(il), max_len
                if cfg.is_swa(il) and 0 < ring_rows < max_len:
                    cache.ring[il], rows = ring_rows, ring_rows + 1
                cache.k[il] = _zeros((n_slots, rows, kv, cfg.head_dim), dtype, device)
                cache.v[il] = _zeros((n_slots, rows, kv, cfg.v_dim), dtype, device)
        return cache

    def nbytes(self) -> int:
        tensors = [*self.k.values(), *self.v.values(), *self.conv.values(), *self.ssm.values(),
                   *self.conv_backup.values(), *self.ssm_backup.values()]
        return sum(t.numel() * t.element_size() for t in tensors)

    def reset_slot(self, slot: int) -> None:
        """Clear recurrent state for a slot that starts a new sequence (KV needs no clearing)."""
        for t in (*self.conv.values(), *self.ssm.values()):
            t[slot].zero_()

    def copy_slot(self, src: int, dst: int, n: int) -> None:
        """Give slot dst the state of slot src after its first n positions (a prompt prefilled once for
        several sequences)."""
        for t in (*self.k.values(), *self.v.values()):      # a ring: rows 0..n-1 too, all of it once wrapped
            t[dst, :n] = t[src, :n]
        for t in (*self.conv.values(), *self.ssm.values()):
            t[dst] = t[src]

    def commit(self, keep: list[int] | torch.Tensor) -> None:
        """Install, per sequence of the last short forward, the recurrent state after keep[b] tokens
        (`keep` may be a tensor already on the device: a CUDA graph captures this with static inputs)."""
        if not self.pending:
            return
        device = self.ssm[next(iter(self.pending))].device
        keep_t = keep if isinstance(keep, torch.Tensor) else torch.tensor(keep, device=device)
        b_idx = torch.arange(keep_t.shape[0], device=device)
        for il, p in self.pending.items():
            if p.replay is not None:
                p.replay(keep_t)
                continue
            conv = conv_window(p.conv_buf, keep_t, self.conv[il].shape[-1])
            self.conv[il][p.slot_index] = conv.to(self.conv[il].dtype)
            self.ssm[il][p.slot_index] = p.states[b_idx, :, keep_t - 1]
        self.pending.clear()

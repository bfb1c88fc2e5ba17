"""Per-forward metadata shared by every layer (one object instead of threading arguments through layers)."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class Step:
    """Which slots a forward covers, where each sequence starts, and how many of its T rows are real.

    Rows past n_tokens[b] are padding: they never touch the KV cache and leave recurrent state unchanged.
    """

    slots: list[int]
    starts: list[int]
    n_tokens: list[int]
    T: int
    positions: torch.Tensor          # [B, T] absolute (RoPE) positions
    valid: torch.Tensor              # [B, T] bool
    slot_index: torch.Tensor         # [B] long
    write_slots: torch.Tensor        # [N] slot of each real token
    write_pos: torch.Tensor          # [N] cache row of each real token
    write_rows: torch.Tensor         # [N] flat row (b * T + t) of each real token
    kv_len: int                      # keys visible to this step: max(start + n)
    mask: torch.Tensor | None        # [B, 1, T, kv_len] bool, None when plain causal suffices
    chunked: bool                    # prefill-sized: chunked delta rule, final states only
    sel: slice | torch.Tensor = None  # the slots, as a slice (a view, no copy) when they are contiguous
    valid_f: torch.Tensor = None     # valid as float, for masking
    rope: tuple[torch.Tensor, torch.Tensor] | None = None

    @property
    def B(self) -> int:
        return len(self.slots)

    @classmethod
    def build(cls, slots: list[int], starts: list[int], n_tokens: list[int], device, max_len: int,
              chunked: bool | None = None, shift: int = 0) -> "Step":
        """`starts` are RoPE positions; the KV cache row of position p is p - shift (the MTP block has no
        entry for position 0, so it stores position p at row p - 1)."""
        B, T = len(slots), max(n_tokens)
        t = torch.arange(T, device=device)
        start_t = torch.tensor(starts, device=device)
        n_t = torch.tensor(n_tokens, device=device)
        positions = start_t[:, None] + t[None, :]
        rows_idx = (positions - shift).clamp_(0, max_len - 1)
        valid = t[None, :] < n_t[:, None]
        rows = valid.flatten().nonzero().squeeze(1)
        slot_index = torch.tensor(slots, device=device, dtype=torch.long)
        kv_len = max(s + n for s, n in zip(starts, n_tokens)) - shift
        mask = None
        if not (B == 1 and starts[0] == shift):
            keys = torch.arange(kv_len, device=device)
            mask = (keys[None, None, :] <= rows_idx[:, :, None])[:, None]
        return cls(slots=list(slots), starts=list(starts), n_tokens=list(n_tokens), T=T, positions=positions,
                   valid=valid, slot_index=slot_index, write_slots=slot_index.repeat_interleave(T)[rows],
                   write_pos=rows_idx.flatten()[rows], write_rows=rows, kv_len=kv_len, mask=mask,
                   chunked=(T > 16) if chunked is None else chunked,
                   sel=slice(slots[0], slots[0] + B) if list(slots) == list(range(slots[0], slots[0] + B))
                   else slot_index, valid_f=valid.to(torch.float32))

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
    key_end: torch.Tensor | None = None   # [B, T] the last cache row each row attends to (its own)
    rope_swa: tuple[torch.Tensor, torch.Tensor] | None = None   # sliding-window layers' own RoPE base
    masks: dict = None               # key masks by window (attention.key_mask), built once per step
    last_row: torch.Tensor | None = None   # [B] each sequence's last cache row written by this step
    spare_row: int | None = None     # static steps: the row padding writes go to (a ring's own spare is its last)

    def key_mask(self, window: int = 0) -> torch.Tensor:
        """[B, 1, T, kv_len] bool: the cache rows each query row sees: up to its own, and with `window` > 0 only
        the last `window` of them (sliding-window attention)."""
        if self.masks is None:
            self.masks = {}
        if window not in self.masks:
            self.masks[window] = _key_mask(self.key_end, self.kv_len, window)
        return self.masks[window]

    def ring(self, n_rows: int, window: int) -> tuple[torch.Tensor, torch.Tensor]:
        """A sliding-window layer's cache as a ring of n_rows rows (row r holds the latest position p = r mod
        n_rows written): where this step writes [N], and the [B, 1, T, n_rows] mask of the rows each query
        sees. Rows holding positions a rollback discarded count as older positions: the ring is sized so
        that those fall out of every window (cache.ring_rows)."""
        key = ("ring", n_rows, window)
        if self.masks is None:
            self.masks = {}
        if key not in self.masks:
            pos = self.write_pos % n_rows
            if self.spare_row is not None:
                pos = torch.where(self.write_pos == self.spare_row, n_rows, pos)
            self.masks[key] = (pos, _ring_mask(self.last_row, self.key_end, self.valid, n_rows, window))
        return self.masks[key]

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
        mask = None if B == 1 and starts[0] == shift else _key_mask(rows_idx, kv_len)
        return cls(slots=list(slots), starts=list(starts), n_tokens=list(n_tokens), T=T, positions=positions,
                   valid=valid, slot_index=slot_index, write_slots=slot_index.repeat_interleave(T)[rows],
                   write_pos=rows_idx.flatten()[rows], write_rows=rows, kv_len=kv_len, mask=mask,
                   chunked=(T > 16) if chunked is None else chunked,
                   sel=slice(slots[0], slots[0] + B) if list(slots) == list(range(slots[0], slots[0] + B))
                   else slot_index, valid_f=valid.to(torch.float32), key_end=rows_idx,
                   last_row=start_t + n_t - 1 - shift)

    @classmethod
    def static(cls, slots: torch.Tensor, starts: torch.Tensor, n_tokens: torch.Tensor, T: int, kv_len: int,
               max_len: int, shift: int = 0) -> "Step":
        """The same from tensors alone (no host reads, so a CUDA graph can capture it): every one of the B*T
        rows is written, padding rows to the spare cache row `max_len`, and keys are the first kv_len rows,
        masked per query, so one captured graph serves every step whose sequences end within kv_len."""
        B, device = slots.shape[0], slots.device
        t = torch.arange(T, device=device)
        positions = starts[:, None] + t[None, :]
        rows_idx = (positions - shift).clamp(0, max_len - 1)
        valid = t[None, :] < n_tokens[:, None]
        return cls(slots=[0] * B, starts=[0] * B, n_tokens=[T] * B, T=T, positions=positions, valid=valid,
                   slot_index=slots, write_slots=slots[:, None].expand(B, T).reshape(-1),
                   write_pos=torch.where(valid, rows_idx, max_len).reshape(-1),
                   write_rows=torch.arange(B * T, device=device), kv_len=kv_len,
                   mask=_key_mask(rows_idx, kv_len), chunked=False, sel=slots,
                   valid_f=valid.to(torch.float32), key_end=rows_idx,
                   last_row=starts + n_tokens - 1 - shift, spare_row=max_len)


def _ring_mask(last_row: torch.Tensor, key_end: torch.Tensor, valid: torch.Tensor, n_rows: int,
               window: int) -> torch.Tensor:
    """[B, 1, T, n_rows] bool: ring row r holds position last - ((last - r) mod n_rows) of its sequence (negative:
    never written); a query sees the positions up to its own and less than `window` back. Padding queries see
    every row (their outputs are discarded; no query row is left without keys)."""
    r = torch.arange(n_rows, device=key_end.device)[None, None, :]
    last = last_row[:, None, None]
    held = last - (last - r) % n_rows
    end = key_end[:, :, None]
    seen = (held >= 0) & (held <= end) & (held > end - window)
    return (seen | ~valid[:, :, None])[:, None]


def _key_mask(key_end: torch.Tensor, kv_len: int, window: int = 0) -> torch.Tensor:
    """[B, 1, T, kv_len] bool: cache rows up to each query row's own (key_end [B, T]), and with `window` > 0
    only the last `window` of them."""
    keys = torch.arange(kv_len, device=key_end.device)[None, None, :]
    end = key_end[:, :, None]
    seen = keys <= end
    if window > 0:
        seen = seen & (keys > end - window)
    return seen[:, None]

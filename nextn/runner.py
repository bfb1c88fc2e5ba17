"""ModelRunner: the only place that turns scheduled sequences into tensors and runs the network.

It owns the cache, each slot's last trunk hidden state, and each slot's queue of MTP input pairs.
The MTP block sees pair (x_{p+1}, h_p) at position p + 1 for every trunk position p; pairs are
queued as soon as both halves are known and flushed through the MTP block when drafting (or when
the queue grows long), so its KV cache covers every position the trunk processed, prompt included.
"""

from __future__ import annotations

import torch

from .cache import Cache
from .model import Model
from .sequence import Sequence
from .step import Step

SLACK = 16          # cache rows past the context limit, for draft tokens that may be rejected
FLUSH_EVERY = 256   # queued MTP pairs that force a flush even when not drafting (bounds memory;
                    # pairs of a sequence that never drafts again are never computed)


class ModelRunner:
    def __init__(self, model: Model, n_slots: int, max_len: int, use_mtp: bool):
        self.model, self.cfg, self.device = model, model.cfg, model.device
        self.use_mtp = use_mtp and model.has_mtp
        self.max_len = max_len
        self.rows = max_len + SLACK
        self.cache = Cache.allocate(model.cfg, n_slots, self.rows, model.dtype, model.device, self.use_mtp)
        self.last_hidden = torch.zeros(n_slots, model.cfg.n_embd, dtype=model.dtype, device=model.device)
        self.queue_tokens: dict[int, list[int]] = {}
        self.queue_hidden: dict[int, list[torch.Tensor]] = {}
        self.mtp_len: dict[int, int] = {}
        self.last_g = torch.zeros(n_slots, model.cfg.n_embd, dtype=model.dtype, device=model.device)

    # ---- slot lifecycle ----------------------------------------------------------------------
    def start(self, seq: Sequence) -> None:
        self.cache.reset_slot(seq.slot)
        self.queue_tokens[seq.slot], self.queue_hidden[seq.slot], self.mtp_len[seq.slot] = [], [], 0

    def queued(self, slot: int) -> int:
        return len(self.queue_tokens.get(slot, ()))

    # ---- trunk -------------------------------------------------------------------------------
    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence], ns: list[int]) -> torch.Tensor:
        """Run the next ns[b] prompt tokens of each sequence through the trunk in one batch; returns the
        hidden state of each sequence's last processed token, [B, D]."""
        T = max(ns)
        rows = [s.tokens[s.num_cached:s.num_cached + n] for s, n in zip(seqs, ns)]
        tokens = torch.tensor([r + [0] * (T - len(r)) for r in rows], device=self.device)
        step = Step.build([s.slot for s in seqs], [s.num_cached for s in seqs], ns, self.device, self.rows,
                          chunked=True)
        hidden = self.model.forward(tokens, step, self.cache)
        last = hidden[torch.arange(len(seqs), device=self.device), torch.tensor(ns, device=self.device) - 1]
        for b, (seq, n) in enumerate(zip(seqs, ns)):
            s = seq.num_cached
            seq.num_cached += n
            if self._tracks_mtp(seq):
                prompt_next = seq.tokens[s + 1:s + n + 1]      # x_{p+1} for the rows whose successor is known
                self.enqueue(seq.slot, prompt_next, hidden[b, :len(prompt_next)])
            self.last_hidden[seq.slot] = last[b]
        return last

    @torch.inference_mode()
    def verify(self, seqs: list[Sequence], inputs: list[list[int]]) -> tuple[torch.Tensor, torch.Tensor]:
        """One trunk forward of each sequence's inputs (last token + drafts), all in one batch.
        Returns hidden [B, T, D] and logits [B, T, V]; recurrent states wait for `commit`."""
        T = max(len(x) for x in inputs)
        tokens = torch.tensor([x + [0] * (T - len(x)) for x in inputs], device=self.device)
        step = Step.build([s.slot for s in seqs], [s.num_cached for s in seqs], [len(x) for x in inputs],
                          self.device, self.rows, chunked=False)
        hidden = self.model.forward(tokens, step, self.cache)
        return hidden, self.model.logits(hidden)

    def commit(self, seqs: list[Sequence], keep: list[int], hidden: torch.Tensor, new_tokens: list[list[int]]) -> None:
        """Keep keep[b] of the verified inputs: roll recurrent state to that point, advance the KV length,
        and queue MTP pairs (next token, hidden) for the kept positions."""
        self.cache.commit(keep)
        for b, (seq, n) in enumerate(zip(seqs, keep)):
            seq.num_cached += n
            self.last_hidden[seq.slot] = hidden[b, n - 1]
            if self._tracks_mtp(seq):
                self.enqueue(seq.slot, new_tokens[b][:n], hidden[b, :n])

    # ---- MTP ---------------------------------------------------------------------------------
    def enqueue(self, slot: int, tokens: list[int], hidden: torch.Tensor) -> None:
        if tokens:
            self.queue_tokens[slot].extend(tokens)
            self.queue_hidden[slot].append(hidden[:len(tokens)])

    def enqueue_next(self, seq: Sequence, token: int) -> None:
        """Queue (first generated token, last prompt hidden) once the prompt's successor is sampled."""
        if self._tracks_mtp(seq):
            self.enqueue(seq.slot, [token], self.last_hidden[seq.slot][None])

    def _tracks_mtp(self, seq: Sequence) -> bool:
        return self.use_mtp and seq.spec.draft_max > 0

    @torch.inference_mode()
    def flush(self, seqs: list[Sequence], want_logits: bool = True, chunk: int = 256):
        """Run every queued pair of these slots through the MTP block. With want_logits, returns the MTP
        hidden state and logits at each slot's last pair (the first draft's inputs) as ([B, D], [B, V])."""
        while todo := [s for s in seqs if self.queued(s.slot)]:
            n = [min(self.queued(s.slot), chunk) for s in todo]
            tokens, hidden = [], []
            for s, k in zip(todo, n):
                toks, hid = self.queue_tokens[s.slot], torch.cat(self.queue_hidden[s.slot])
                tokens.append(toks[:k])
                hidden.append(hid[:k])
                self.queue_tokens[s.slot] = toks[k:]
                self.queue_hidden[s.slot] = [hid[k:]] if len(toks) > k else []
            g = self._mtp(todo, [self.mtp_len[s.slot] + 1 for s in todo], tokens, hidden)
            for i, (s, k) in enumerate(zip(todo, n)):
                self.mtp_len[s.slot] += k
                if not self.queued(s.slot):
                    self.last_g[s.slot] = g[i, k - 1]
        if not want_logits:
            return None
        g = self.last_g[[s.slot for s in seqs]]
        return g, self.model.mtp_logits(g)

    def flush_if_long(self, seqs: list[Sequence]) -> None:
        long = [s for s in seqs if self.queued(s.slot) >= FLUSH_EVERY]
        if long:
            self.flush(long, want_logits=False)

    @torch.inference_mode()
    def draft_step(self, seqs: list[Sequence], tokens: list[int], g: torch.Tensor, positions: list[int]):
        """One recursive MTP step: previous draft token + previous MTP hidden state -> next (g, logits)."""
        out = self._mtp(seqs, positions, [[t] for t in tokens], [x[None] for x in g])[:, 0]
        return out, self.model.mtp_logits(out)

    def _mtp(self, seqs, starts, tokens, hidden) -> torch.Tensor:
        T = max(len(t) for t in tokens)
        tok = torch.tensor([t + [0] * (T - len(t)) for t in tokens], device=self.device)
        hid = torch.stack([torch.nn.functional.pad(h, (0, 0, 0, T - h.shape[0])) for h in hidden])
        step = Step.build([s.slot for s in seqs], starts, [len(t) for t in tokens], self.device, self.rows,
                          chunked=False, shift=1)
        return self.model.mtp_forward(tok, hid, step, self.cache)

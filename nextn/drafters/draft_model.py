"""A separate, smaller draft model (same tokenizer) proposes the next k tokens, one forward each.

It keeps its own KV / recurrent cache per slot, run by its own ModelRunner. Each slot holds the tokens
the trunk committed, up to `num_cached`; at a draft it first runs the committed tokens it has not seen
(the prompt follows the trunk's prefill chunks; later ones, at most the last step's k + 1, go through one
native forward) and the last of those rows gives draft 1; each further draft is one more single-row
forward. After verification the kept drafts stay in the cache: attention needs no more than a shorter
length, recurrent state is restored to the snapshot taken before drafting unless every draft that was
run through it was kept.

Sampling: the draft distribution is the draft model's own target distribution under the request's
sampling parameters, so rejection sampling stays exact.
"""

from __future__ import annotations

import torch

from ..engine.runner import ModelRunner
from ..engine.sampling import draw
from ..engine.sequence import Sequence
from .base import Drafter, Proposal, finish, keep_pick


class DraftModelDrafter(Drafter):
    name = "draft"

    def __init__(self, runner: ModelRunner):
        self.runner, self.model = runner, runner.model
        self.shadow: dict[int, Sequence] = {}        # per slot: the draft model's view of the sequence
        self.fed: dict[int, int] = {}                # drafts run through the draft model in the last proposal
        self.snapshot: dict[int, list[tuple[torch.Tensor, torch.Tensor]]] = {}

    @property
    def capture_seconds(self) -> float:
        return self.runner.capture_seconds

    def nbytes(self) -> int:
        return self.model.nbytes() + self.runner.state_nbytes()

    def start(self, seq: Sequence) -> None:
        self.runner.start(seq)
        self.shadow[seq.slot] = Sequence(list(seq.prompt), seq.params, seq.spec, slot=seq.slot)
        self.fed[seq.slot] = 0

    def fork(self, done: Sequence, seq: Sequence) -> None:
        """The draft model's cache after the prompt, as far as it has followed it."""
        n = self.shadow[done.slot].num_cached
        self.runner.cache.copy_slot(done.slot, seq.slot, n)
        self.shadow[seq.slot].num_cached = n

    def _view(self, seq: Sequence, upto: int) -> Sequence:
        """The slot's shadow with the sequence's first `upto` tokens (its num_cached is the draft cache's)."""
        sh = self.shadow[seq.slot]
        sh.tokens, sh.params = seq.tokens[:upto], seq.params
        return sh

    def on_prefill(self, seqs: list[Sequence], ns: list[int]) -> None:
        """Follow the trunk's prompt chunks (the draft model is smaller: its prefill is cheaper)."""
        views = [self._view(s, s.num_cached) for s in seqs]
        todo = [(v, s.num_cached - v.num_cached) for v, s in zip(views, seqs) if s.num_cached > v.num_cached]
        if todo:
            self.runner.extend([v for v, _ in todo], [n for _, n in todo])

    def on_commit(self, seqs: list[Sequence], new_tokens: list[list[int]], keep: list[int]) -> None:
        for seq, n in zip(seqs, keep):
            fed, sh = self.fed.get(seq.slot, 0), self.shadow[seq.slot]
            if not fed:
                continue
            kept = min(n - 1, fed)              # drafts that were both run through the draft model and kept
            recurrent = self.snapshot.pop(seq.slot, None)
            if recurrent is not None and kept < fed:
                self._restore(seq.slot, recurrent)
                kept = 0
            sh.num_cached += kept - fed         # drafting left num_cached past every fed draft
            self.fed[seq.slot] = 0

    # ---- drafting ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def propose(self, seqs: list[Sequence], ks: list[int], generators: dict) -> Proposal:
        drafts: list[list[int]] = [[] for _ in seqs]
        qs: list[list[torch.Tensor | None]] = [[] for _ in seqs]
        active = [i for i, k in enumerate(ks) if k > 0]
        if not active:
            return Proposal(drafts, [None] * len(seqs), 0)
        caught_up, rows = self._catch_up([seqs[i] for i in active])
        steps = 1
        while True:
            still = []
            for i, row in zip(active, rows):
                if keep_pick(seqs[i], drafts[i], qs[i], *self._pick(row, generators.get(seqs[i].id)), ks[i]):
                    still.append(i)
            if not still:
                break
            views = [self._view(seqs[i], len(seqs[i].tokens)) for i in still]
            for v, i in zip(views, still):
                v.tokens = seqs[i].tokens + drafts[i]
            rows = [out[0] for out in self.runner.verify(views, [[] for _ in still])]
            self.runner.commit(views, [1] * len(still))
            for i in still:
                self.fed[seqs[i].slot] += 1
            active = still
            steps += 1
        return finish(self.name, seqs, drafts, qs, steps, 0.0, caught_up)

    def _catch_up(self, seqs: list[Sequence]) -> tuple[int, list]:
        """Run each sequence's committed tokens the draft model has not seen; returns the most of them and the
        decision (`target`) of each sequence's last row: the first draft's distribution."""
        views = [self._view(s, s.num_cached) for s in seqs]      # num_cached: the trunk's, len(tokens) - 1
        lag = [len(s.tokens) - v.num_cached for s, v in zip(seqs, views)]
        longest = self.runner.max_step_rows // max(len(seqs), 1)
        early = [(v, n - longest) for v, n in zip(views, lag) if n > longest]
        if early:                                                # a long backlog: the torch forward first
            for v, s in zip(views, seqs):
                v.tokens = s.tokens
            self.runner.extend([v for v, _ in early], [n for _, n in early])
        for v, s in zip(views, seqs):
            v.tokens = s.tokens[:v.num_cached + 1]
        extra = [s.tokens[v.num_cached + 1:] for s, v in zip(seqs, views)]
        out = self.runner.verify(views, extra)
        self.runner.commit(views, [1 + len(e) for e in extra])
        for s in seqs:
            self.fed[s.slot] = 0
            if self.model.cfg.recurrent_layers:
                self.snapshot[s.slot] = self._save(s.slot)
        return max(lag), [o[-1] for o in out]

    def _save(self, slot: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
        cache = self.runner.cache
        return [(cache.conv[il][slot].clone(), cache.ssm[il][slot].clone()) for il in sorted(cache.ssm)]

    def _restore(self, slot: int, saved) -> None:
        cache = self.runner.cache
        for il, (conv, ssm) in zip(sorted(cache.ssm), saved):
            cache.conv[il][slot].copy_(conv)
            cache.ssm[il][slot].copy_(ssm)

    @staticmethod
    def _pick(row, generator) -> tuple[int, torch.Tensor | None, float]:
        """(token, its draft distribution or None if one-hot, its probability for --draft-p-min)."""
        if isinstance(row, int):
            return row, None, 1.0
        if row.dim() == 0:
            return int(row), None, 1.0
        tok = draw(row, generator)
        return tok, row, float(row[tok])

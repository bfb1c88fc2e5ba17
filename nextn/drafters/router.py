"""The drafters of an engine and the choice among them, per sequence and step.

A sequence may use the engine's model drafter (MTP head or draft model), n-gram lookup, or both. With
both, a sequence whose context ends in a known n-gram of at least `n_min` tokens drafts its continuation
when the tuner expects that to pay more than the model drafter's k tokens (by measured cost and each
drafter's acceptance on this sequence); every other sequence drafts with the model. The model drafter
sees every commit either way, so its state never falls behind.
"""

from __future__ import annotations

from ..engine.sequence import Sequence
from ..engine.tuner import KTuner
from .base import Drafter, Proposal
from .ngram import NGramDrafter


class DraftRouter:
    def __init__(self, model: Drafter | None, ngram: NGramDrafter | None, tuner: KTuner):
        self.model, self.ngram, self.tuner = model, ngram, tuner
        self.all = [d for d in (model, ngram) if d is not None]

    @property
    def capture_seconds(self) -> float:
        return sum(d.capture_seconds for d in self.all)

    # ---- hooks: each drafter hears about the sequences that use it --------------------------------
    def _users(self, drafter: Drafter, seqs: list[Sequence]) -> list[int]:
        return [b for b, s in enumerate(seqs) if s.spec.uses(drafter.name)]

    def start(self, seq: Sequence) -> None:
        for d in self.all:
            d.start(seq)

    def on_prefill(self, seqs: list[Sequence], ns: list[int]) -> None:
        for d in self.all:
            if bs := self._users(d, seqs):
                d.on_prefill([seqs[b] for b in bs], [ns[b] for b in bs])

    def fork(self, done: Sequence, seq: Sequence) -> None:
        for d in self.all:
            if seq.spec.uses(d.name) and done.spec.uses(d.name):
                d.fork(done, seq)

    def on_first_token(self, seq: Sequence, token: int) -> None:
        for d in self.all:
            if seq.spec.uses(d.name):
                d.on_first_token(seq, token)

    def on_commit(self, seqs: list[Sequence], new_tokens: list[list[int]], keep: list[int]) -> None:
        for d in self.all:
            if bs := self._users(d, seqs):
                d.on_commit([seqs[b] for b in bs], [new_tokens[b] for b in bs], [keep[b] for b in bs])

    # ---- drafting ----------------------------------------------------------------------------------
    def propose(self, seqs: list[Sequence], ks: list[int], rooms: list[int], generators: dict) -> Proposal:
        """ks[b]: the model drafter's k for sequence b (the tuner's); rooms[b]: the most drafts it can take."""
        B = len(seqs)
        drafts: list[list[int]] = [[] for _ in seqs]
        by: list[str | None] = [None] * B
        model_ks = [k if self.model is not None and s.spec.uses(self.model.name) else 0 for s, k in zip(seqs, ks)]
        if self.ngram is not None:
            ngram_ks = [self._ngram_length(s, rooms[b], B, model_ks[b]) for b, s in enumerate(seqs)]
            p = self.ngram.propose(seqs, ngram_ks, generators)
            for b, d in enumerate(p.drafts):
                if d:
                    drafts[b], by[b], model_ks[b] = d, self.ngram.name, 0
        q: list = [None] * B
        steps = catch_up = caught_up = 0
        if any(model_ks):
            p = self.model.propose(seqs, model_ks, generators)
            for b, k in enumerate(model_ks):
                if k and p.drafts[b]:
                    drafts[b], q[b], by[b] = p.drafts[b], p.q[b], self.model.name
            steps, catch_up, caught_up = p.n_steps, p.catch_up_seconds, p.caught_up
        return Proposal(drafts, q, steps, catch_up, caught_up, by)

    def _ngram_length(self, seq: Sequence, room: int, B: int, k_model: int) -> int:
        """Tokens of an n-gram draft for this sequence (0: none)."""
        if not seq.spec.uses("ngram") or room <= 0:
            return 0
        length, _ = self.ngram.match(seq)
        if length < self.ngram.n_min:
            return 0
        available = min(room, self.ngram.n_max)
        if not seq.spec.adaptive:
            return available
        model = seq.acceptance if k_model else None
        return self.tuner.ngram_length(seq.ngram_acceptance, available, B, model, k_model)

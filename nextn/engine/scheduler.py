"""Continuous batching over a fixed number of slots. Pure Python: which sequences run, nothing about tensors.

Each engine step prefills the next chunk of admitted prompts (up to `prefill_chunk` tokens in all,
batched) and runs one decode step for every sequence already decoding, so new requests join and
finished ones leave between steps.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from .sequence import Sequence, Status


@dataclass
class Plan:
    prefill: list[Sequence] = field(default_factory=list)
    prefill_tokens: list[int] = field(default_factory=list)
    decode: list[Sequence] = field(default_factory=list)

    @property
    def empty(self) -> bool:
        return not self.prefill and not self.decode


class Scheduler:
    def __init__(self, n_slots: int, prefill_chunk: int):
        self.n_slots, self.prefill_chunk = n_slots, prefill_chunk
        self.free_slots = list(range(n_slots))[::-1]
        self.waiting: deque[Sequence] = deque()
        self.active: list[Sequence] = []

    def add(self, seq: Sequence) -> None:
        self.waiting.append(seq)

    @property
    def has_work(self) -> bool:
        return bool(self.waiting or self.active)

    def schedule(self) -> Plan:
        self._drop_cancelled()
        while self.waiting and self.free_slots:
            seq = self.waiting.popleft()
            seq.slot = self.free_slots.pop()
            seq.status = Status.PREFILL
            self.active.append(seq)
        plan = Plan()
        budget = self.prefill_chunk
        for seq in (s for s in self.active if s.status == Status.PREFILL):
            if seq.share is not None and seq.share.status == Status.PREFILL and seq.share in self.active:
                continue              # its sibling's prefill is copied to it when done (engine.fork)
            seq.share = None          # the sibling is past its prompt (or gone): prefill on its own
            if budget <= 0:
                break
            n = min(budget, seq.n_prompt - seq.num_cached)
            plan.prefill.append(seq)
            plan.prefill_tokens.append(n)
            budget -= n
        plan.decode = [s for s in self.active if s.status == Status.DECODE]
        return plan

    def release(self, seq: Sequence) -> None:
        if seq in self.active:
            self.active.remove(seq)
            self.free_slots.append(seq.slot)

    def release_finished(self) -> list[Sequence]:
        done = [s for s in self.active if s.is_finished]
        for s in done:
            self.release(s)
        return done

    def _drop_cancelled(self) -> None:
        for seq in [s for s in self.waiting if s.cancelled]:
            self.waiting.remove(seq)
            seq.finish("cancelled")
        for seq in [s for s in self.active if s.cancelled and not s.is_finished]:
            seq.finish("cancelled")

"""One decode step for a batch: draft, verify every sequence's last token plus its drafts in ONE trunk
forward, keep what the acceptance rule keeps, roll the rest back.

A sequence given k = 0 simply decodes one token in the same forward: plain and speculative
sequences share the batch, and a sequence never alternates plain and speculative passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from .acceptance import accept
from .runner import ModelRunner
from .sequence import Sequence


@dataclass
class StepResult:
    new_tokens: list[list[int]]     # per sequence: accepted drafts + the emitted token
    n_drafted: list[int]
    n_accepted: list[int]
    draft_seconds: float            # drafting, the head's catch-up on queued pairs excluded
    verify_seconds: float
    draft_steps: int
    catch_up_seconds: float = 0.0


def decode_step(runner: ModelRunner, drafter, seqs: list[Sequence], ks: list[int], generators: dict) -> StepResult:
    t0 = time.perf_counter()
    proposal = drafter.propose(seqs, ks, generators) if drafter is not None and any(ks) else None
    drafts = proposal.drafts if proposal is not None else [[] for _ in seqs]
    t1 = time.perf_counter()
    targets = runner.verify(seqs, drafts)
    new_tokens, accepted = [], []
    for b, seq in enumerate(seqs):
        q = proposal.q[b] if proposal is not None else None
        m, y = accept(drafts[b], targets[b], q, generators.get(seq.id))
        accepted.append(m)
        new_tokens.append(drafts[b][:m] + [y])
    keep = [m + 1 for m in accepted]
    runner.commit(seqs, keep)
    if drafter is not None:
        drafter.on_commit(seqs, new_tokens, keep)
    t2 = time.perf_counter()
    catch_up = proposal.catch_up_seconds if proposal is not None else 0.0
    return StepResult(new_tokens, [len(d) for d in drafts], accepted, t1 - t0 - catch_up, t2 - t1,
                      proposal.n_steps if proposal is not None else 0, catch_up)

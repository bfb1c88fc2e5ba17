"""One decode step for a batch: draft, verify every sequence's last token plus its drafts in ONE trunk
forward, keep what the acceptance rule keeps, roll the rest back.

A sequence given k = 0 simply decodes one token in the same forward: plain and speculative
sequences share the batch, and a sequence never alternates plain and speculative passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from .acceptance import accept
from .runner import ModelRunner
from .sequence import Sequence


@dataclass
class StepResult:
    new_tokens: list[list[int]]     # per sequence: accepted drafts + the emitted token
    n_drafted: list[int]
    n_accepted: list[int]
    draft_seconds: float            # drafting, the head's catch-up on queued pairs excluded
    verify_seconds: float           # the trunk forward over every sequence's last token and drafts
    draft_steps: int
    catch_up_seconds: float = 0.0   # the MTP head on the pairs the last step committed
    caught_up: int = 0              # how many (most per sequence)
    commit_seconds: float = 0.0     # acceptance, cache commit / rollback, queueing the new pairs
    by: list[str | None] = field(default_factory=list)   # per sequence, the drafter of its drafts
    logprobs: list[list | None] = field(default_factory=list)   # per sequence asking for them: per new token


def decode_step(runner: ModelRunner, drafter, seqs: list[Sequence], ks: list[int], rooms: list[int],
                generators: dict) -> StepResult:
    """drafter: the engine's DraftRouter (None: plain decoding); ks: the model drafter's k per sequence;
    rooms: the most drafts each sequence can take (n-gram drafts are not bound by k)."""
    t0 = time.perf_counter()
    proposal = drafter.propose(seqs, ks, rooms, generators) if drafter is not None and any(rooms) else None
    drafts = proposal.drafts if proposal is not None else [[] for _ in seqs]
    t1 = time.perf_counter()
    targets = runner.verify(seqs, drafts)
    t2 = time.perf_counter()
    new_tokens, accepted = [], []
    for b, seq in enumerate(seqs):
        q = proposal.q[b] if proposal is not None else None
        m, y = accept(drafts[b], targets[b], q, generators.get(seq.id))
        accepted.append(m)
        new_tokens.append(drafts[b][:m] + [y])
    logprobs = [runner.token_logprobs(b, toks, seq.params.logprobs) if seq.params.logprobs is not None else None
                for b, (seq, toks) in enumerate(zip(seqs, new_tokens))]     # before anything reuses the logits
    keep = [m + 1 for m in accepted]
    runner.commit(seqs, keep)
    if drafter is not None:
        drafter.on_commit(seqs, new_tokens, keep)
    t3 = time.perf_counter()
    if proposal is None:
        return StepResult(new_tokens, [0] * len(seqs), accepted, t1 - t0, t2 - t1, 0, commit_seconds=t3 - t2,
                          logprobs=logprobs)
    return StepResult(new_tokens, [len(d) for d in drafts], accepted, t1 - t0 - proposal.catch_up_seconds, t2 - t1,
                      proposal.n_steps, proposal.catch_up_seconds, proposal.caught_up, t3 - t2, proposal.by, logprobs)

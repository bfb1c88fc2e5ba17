"""What every drafter is: hooks that keep its state in step with the trunk, and `propose`.

A drafter proposes up to k tokens per sequence and, for sampling, the distributions it drew them
from (None: a deterministic, one-hot draft). Verification, the acceptance rule and rollback are one
shared path (engine.speculative); a drafter only ever sees tokens the trunk has committed.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from ..engine.sequence import Sequence


@dataclass
class Proposal:
    drafts: list[list[int]]             # per sequence, the proposed tokens
    q: list[torch.Tensor | None]        # per sequence, [k, V] draft distributions, None for one-hot drafts
    n_steps: int                        # draft forwards run (for the cost model)
    catch_up_seconds: float = 0.0       # of the time, bringing the drafter's state up to date (not drafting)
    caught_up: int = 0                  # tokens run through the drafter before drafting (most per sequence)
    by: list[str | None] = field(default_factory=list)   # per sequence, the drafter that proposed its drafts


def keep_pick(seq: Sequence, draft: list[int], qs: list, tok: int, q, confidence: float, k: int) -> bool:
    """Add a drafted token unless it is below the sequence's --draft-p-min; True while more are wanted."""
    if confidence < seq.spec.p_min:
        return False
    draft.append(tok)
    qs.append(q)
    return len(draft) < k


def finish(name: str, seqs: list[Sequence], drafts: list[list[int]], qs: list[list], steps: int,
           catch_up_seconds: float = 0.0, caught_up: int = 0) -> Proposal:
    """The proposal: drafts shorter than a sequence's --draft-min dropped, draft distributions stacked."""
    for i, seq in enumerate(seqs):
        if 0 < len(drafts[i]) < seq.spec.draft_min:
            drafts[i], qs[i] = [], []
    q = [torch.stack(x) if x and x[0] is not None else None for x in qs]
    return Proposal(drafts, q, steps, catch_up_seconds, caught_up, [name if d else None for d in drafts])


class Drafter:
    """The hooks default to nothing: a drafter that keeps no state (n-gram lookup) overrides only `propose`."""

    name = "drafter"
    capture_seconds = 0.0

    def nbytes(self) -> int:
        """Memory the drafter holds beside the model's (a draft model's weights and caches)."""
        return 0

    def start(self, seq: Sequence) -> None:
        """A sequence took a slot: forget what the slot held."""

    def on_prefill(self, seqs: list[Sequence], ns: list[int]) -> None:
        """The trunk just ran ns[b] more prompt tokens of each sequence."""

    def on_first_token(self, seq: Sequence, token: int) -> None:
        """The prompt is done and its first generated token is known."""

    def fork(self, done: Sequence, seq: Sequence) -> None:
        """seq (just started, same prompt) takes over what `done` holds after prefilling it, before either's
        first token. By default nothing: the drafter catches seq up on its own."""

    def on_commit(self, seqs: list[Sequence], new_tokens: list[list[int]], keep: list[int]) -> None:
        """A decode step kept keep[b] tokens (new_tokens[b]) of each sequence."""

    def propose(self, seqs: list[Sequence], ks: list[int], generators: dict) -> Proposal:
        raise NotImplementedError

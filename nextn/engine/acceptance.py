"""The acceptance rule of speculative decoding, as one small pure function.

Greedy: keep drafts while they equal the target's argmax, then emit the target's own token (the
correction on a mismatch, the bonus token when every draft matched).
Sampling (Leviathan et al. 2023): keep draft x with probability min(1, p(x)/q(x)); on the first
rejection emit a sample of norm(max(0, p - q)); if all are kept, emit a sample of the last p.
With one-hot (greedy) drafts q(x) = 1, so x is kept with probability p(x) and the residual is p
without x. The emitted tokens are distributed exactly as the target's.
"""

from __future__ import annotations

import torch


def sample_index(probs: torch.Tensor, generator: torch.Generator | None) -> int:
    """A draw from a distribution [V] (not necessarily normalised): the first index whose cumulative
    mass exceeds a uniform draw over the total (never a zero-probability index)."""
    cum = probs.double().cumsum(0)
    u = torch.rand((), generator=generator, dtype=torch.float64) * cum[-1]
    i = min(int(torch.searchsorted(cum, u, right=True)), probs.numel() - 1)
    while probs[i] <= 0:        # u rounded onto the very end of the mass
        i -= 1
    return i


def accept(drafts: list[int], target: torch.Tensor, draft_probs: torch.Tensor | None = None,
           generator: torch.Generator | None = None) -> tuple[int, int]:
    """Return (number of drafts kept, the token to emit after them).

    target: the k+1 argmax ids (greedy: a list or a 1-D tensor), or [k+1, V] target probabilities
    (sampling), on the CPU.
    draft_probs: [k, V] draft distributions the drafts were sampled from; None for one-hot drafts.
    """
    if isinstance(target, list) or target.dim() == 1:
        best = target if isinstance(target, list) else target.tolist()
        n = 0
        while n < len(drafts) and drafts[n] == best[n]:
            n += 1
        return n, best[n]
    for i, x in enumerate(drafts):
        p = target[i, x]
        q = draft_probs[i, x] if draft_probs is not None else 1.0
        if torch.rand((), generator=generator) < p / q:   # q > 0 because x was drawn from q
            continue
        if draft_probs is not None:
            residual = (target[i] - draft_probs[i]).clamp_min(0)
        else:
            residual = target[i].clone()
            residual[x] = 0
        if residual.sum() <= 0:         # p == q up to rounding: any sample of p is exact
            residual = target[i]
        return i, sample_index(residual, generator)
    k = len(drafts)
    return k, sample_index(target[k], generator)

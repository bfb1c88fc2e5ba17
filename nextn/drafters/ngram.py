"""N-gram (prompt lookup) drafting: find the longest suffix of the context that occurred before and
propose what followed it. No forward at all; the drafts are deterministic (one-hot), so sampling
stays exact through the shared acceptance rule.

Each slot keeps an index from every n-gram of `n_min` tokens to where it starts, extended as the
sequence grows; a lookup checks the most recent occurrences of the last `n_min` tokens and extends
each match backwards (up to `MATCH_CAP` tokens) to keep the longest, the most recent among equals.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from ..engine.sequence import Sequence
from .base import Drafter, Proposal

MATCH_CAP = 64        # longest match length worth telling apart
CANDIDATES = 32       # most recent occurrences of the last n_min tokens that are compared


@dataclass
class NGramIndex:
    """Where each n-gram of n tokens starts, for starts [0, indexed)."""

    n: int
    starts: dict[tuple, list[int]] = field(default_factory=dict)
    indexed: int = 0

    def extend(self, tokens: list[int], upto: int) -> None:
        for i in range(self.indexed, upto):
            self.starts.setdefault(tuple(tokens[i:i + self.n]), []).append(i)
        self.indexed = max(self.indexed, upto)


def lookup(tokens: list[int], index: NGramIndex) -> tuple[int, int]:
    """(match length, start of the continuation) of the best earlier occurrence of the context's suffix,
    (0, -1) when the last n tokens never occurred before."""
    n, end = index.n, len(tokens)
    if end <= n:
        return 0, -1
    index.extend(tokens, end - n)          # n-grams whose continuation is already known
    best_len, best_at = 0, -1
    for i in reversed(index.starts.get(tuple(tokens[end - n:]), [])[-CANDIDATES:]):
        length = n
        while length < MATCH_CAP and i - (length - n) > 0 and tokens[i - (length - n) - 1] == tokens[end - length - 1]:
            length += 1
        if length > best_len:
            best_len, best_at = length, i + n
    return best_len, best_at


def continuation(tokens: list[int], at: int, k: int) -> list[int]:
    """k tokens following position `at`, reading on into the drafts themselves when the match runs into
    the present (a repeating pattern keeps repeating)."""
    out: list[int] = []
    for j in range(k):
        p = at + j
        out.append(tokens[p] if p < len(tokens) else out[p - len(tokens)])
    return out


class NGramDrafter(Drafter):
    name = "ngram"

    def __init__(self, n_min: int = 3, n_max: int = 8):
        self.n_min, self.n_max = n_min, n_max
        self.index: dict[int, NGramIndex] = {}
        self.last: dict[int, tuple[int, int, int]] = {}    # slot -> (context length, match length, start)

    def start(self, seq: Sequence) -> None:
        self.index[seq.slot] = NGramIndex(self.n_min)
        self.last.pop(seq.slot, None)

    def match(self, seq: Sequence) -> tuple[int, int]:
        """(match length, continuation start) for this sequence's context now (looked up once per length)."""
        last = self.last.get(seq.slot)
        if last is None or last[0] != len(seq.tokens):
            found = lookup(seq.tokens, self.index.setdefault(seq.slot, NGramIndex(self.n_min)))
            last = self.last[seq.slot] = (len(seq.tokens), *found)
        return last[1], last[2]

    def propose(self, seqs: list[Sequence], ks: list[int], generators: dict) -> Proposal:
        drafts = []
        for seq, k in zip(seqs, ks):
            length, at = self.match(seq) if k > 0 else (0, -1)
            drafts.append(continuation(seq.tokens, at, k) if length >= self.n_min else [])
        return Proposal(drafts, [None] * len(seqs), 0, by=[self.name if d else None for d in drafts])

"""Adaptive draft length: speculate only as far as it pays.

Pure bookkeeping, no tensors. The engine reports how long trunk forwards and draft steps take
and how many drafts were kept; `choose_k` picks the k in {0} U [k_min, k_max] that maximises
expected tokens per second, where k = 0 is plain decoding:

    tokens(k) = 1 + sum_{i<=k} prod_{j<=i} a_j        (a_j: acceptance at draft position j)
    time(k)   = trunk(B, T=k+1) + k * draft(B)
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Acceptance:
    """Decayed per-position acceptance estimate with an optimistic prior (so speculation gets tried)."""

    k_max: int
    prior: float = 0.7
    weight: float = 2.0
    decay: float = 0.97
    hits: list[float] = field(default_factory=list)
    tries: list[float] = field(default_factory=list)

    def __post_init__(self):
        self.hits = [0.0] * self.k_max
        self.tries = [0.0] * self.k_max

    def update(self, n_drafted: int, n_accepted: int) -> None:
        for i in range(min(n_drafted, n_accepted + 1, self.k_max)):
            self.tries[i] = self.tries[i] * self.decay + 1.0
            self.hits[i] = self.hits[i] * self.decay + (1.0 if i < n_accepted else 0.0)

    def rate(self, i: int) -> float:
        return (self.hits[i] + self.prior * self.weight) / (self.tries[i] + self.weight)

    def expected_tokens(self, k: int) -> float:
        total, run = 1.0, 1.0
        for i in range(min(k, self.k_max)):
            run *= self.rate(i)
            total += run
        return total


@dataclass
class Ema:
    value: float | None = None
    alpha: float = 0.25

    def add(self, x: float) -> None:
        self.value = x if self.value is None else (1 - self.alpha) * self.value + self.alpha * x


@dataclass
class CostModel:
    """Measured seconds of one trunk forward per (batch size, tokens per sequence), one draft step per batch size."""

    trunk: dict[tuple[int, int], Ema] = field(default_factory=dict)
    draft: dict[int, Ema] = field(default_factory=dict)

    def observe_trunk(self, B: int, T: int, seconds: float) -> None:
        self.trunk.setdefault((B, T), Ema()).add(seconds)

    def observe_draft(self, B: int, steps: int, seconds: float) -> None:
        if steps:
            self.draft.setdefault(B, Ema()).add(seconds / steps)

    def trunk_cost(self, B: int, T: int) -> float | None:
        if (B, T) in self.trunk:
            return self.trunk[(B, T)].value
        known = sorted((t, e.value) for (b, t), e in self.trunk.items() if b == B and t < T)
        return known[-1][1] if known else None   # optimistic: assume no growth until measured

    def draft_cost(self, B: int) -> float | None:
        e = self.draft.get(B)
        return e.value if e else None


@dataclass
class KTuner:
    k_max: int
    k_min: int = 0
    explore_every: int = 16
    costs: CostModel = field(default_factory=CostModel)
    since_spec: int = 0

    def choose(self, acceptances: list[Acceptance]) -> int:
        if self.k_max == 0 or not acceptances:
            return 0
        B = len(acceptances)
        plain = self.costs.trunk_cost(B, 1)
        draft = self.costs.draft_cost(B)
        if plain is None:
            return 0                           # measure plain decoding first
        if draft is None:
            return self._spec(self.k_max)      # then measure drafting
        best_k, best_rate = 0, B / plain
        for k in range(max(1, self.k_min), self.k_max + 1):
            t = (self.costs.trunk_cost(B, k + 1) or plain) + k * draft
            rate = sum(a.expected_tokens(k) for a in acceptances) / t
            if rate > best_rate:
                best_k, best_rate = k, rate
        if best_k == 0:
            self.since_spec += 1
            if self.since_spec >= self.explore_every:   # keep the acceptance estimate fresh
                return self._spec(max(1, self.k_min))
            return 0
        return self._spec(best_k)

    def _spec(self, k: int) -> int:
        self.since_spec = 0
        return k

"""Adaptive draft length: speculate only as far as it pays.

Pure bookkeeping, no tensors. The engine reports how long trunk forwards and draft steps take
and how many drafts were kept; `KTuner.choose` picks the k in {0} U [k_min, k_max] that maximises
expected tokens per second, where k = 0 is plain decoding:

    tokens(k) = 1 + sum_{i<=k} prod_{j<=i} a_j        (a_j: acceptance at draft position j)
    time(k)   = trunk(B, T=k+1) + k * draft(B) + catch_up(B)   (catch_up: the head on the last step's pairs)

and, once steps with that k have been timed whole (`step`, at least 3 of them), their median wall time
instead: what the model leaves out (acceptance, commit, bookkeeping) then counts too.

A new request starts from what the model's drafts have been worth lately (`KTuner.recent`), not
from a fixed guess, so a head that never matches stops costing anything after the first request.
While the choice stays put, the other candidates are revisited in turn at growing intervals (8, 16,
... 128 steps): the runner-up, the neighbours of the choice and plain decoding, whose cost drifts too
(a k = 0 timed only in a request's cold first steps would otherwise never be measured again). A
request's acceptance fades toward the model's overall rate on steps without drafts.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Acceptance:
    """Decayed per-position acceptance estimate. `prior` (one rate, or one per position) is where
    the estimate starts; the default is optimistic so that speculation gets tried."""

    k_max: int
    prior: float | list[float] = 0.7
    weight: float = 4.0
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

    def relax(self) -> None:
        """A step without drafts: what was seen fades toward the prior all the same, so that a few early
        rejections cannot switch speculation off for the rest of a request."""
        self.hits = [h * self.decay for h in self.hits]
        self.tries = [t * self.decay for t in self.tries]

    def rate(self, i: int) -> float:
        prior = self.prior[i] if isinstance(self.prior, list) else self.prior
        return (self.hits[i] + prior * self.weight) / (self.tries[i] + self.weight)

    def spawn(self, k_max: int) -> "Acceptance":
        """A fresh estimate for a new request whose prior is this one's current rates."""
        rates = [self.rate(min(i, self.k_max - 1)) for i in range(k_max)]
        return Acceptance(k_max, prior=rates, weight=self.weight, decay=self.decay)

    def expected_tokens(self, k: int) -> float:
        total, run = 1.0, 1.0
        for i in range(min(k, self.k_max)):
            run *= self.rate(i)
            total += run
        return total


@dataclass
class Recent:
    """Median of the last `window` timings: robust to the scheduler hiccups that skew a mean."""

    window: int = 15
    samples: list[float] = field(default_factory=list)

    def add(self, x: float) -> None:
        self.samples.append(x)
        del self.samples[:-self.window]

    @property
    def value(self) -> float | None:
        if not self.samples:
            return None
        ordered = sorted(self.samples)
        return ordered[len(ordered) // 2]


@dataclass
class CostModel:
    """Measured seconds of one trunk forward per (batch size, tokens per sequence), one draft step per batch size."""

    trunk: dict[tuple[int, int], Recent] = field(default_factory=dict)
    draft: dict[int, Recent] = field(default_factory=dict)
    catch_up: dict[int, Recent] = field(default_factory=dict)
    step: dict[tuple[int, int], Recent] = field(default_factory=dict)   # whole decode steps per (B, k)

    def observe_step(self, B: int, k: int, seconds: float) -> None:
        self.step.setdefault((B, k), Recent()).add(seconds)

    def step_cost(self, B: int, k: int) -> float | None:
        e = self.step.get((B, k))
        return e.value if e is not None and len(e.samples) >= 3 else None

    def observe_catch_up(self, B: int, seconds: float) -> None:
        self.catch_up.setdefault(B, Recent()).add(seconds)

    def catch_up_cost(self, B: int) -> float:
        e = self.catch_up.get(B)
        return e.value if e else 0.0

    def observe_trunk(self, B: int, T: int, seconds: float) -> None:
        self.trunk.setdefault((B, T), Recent()).add(seconds)

    def observe_draft(self, B: int, steps: int, seconds: float) -> None:
        if steps:
            self.draft.setdefault(B, Recent()).add(seconds / steps)

    def trunk_cost(self, B: int, T: int) -> float | None:
        """Median of the measurements at (B, T), blended with a line a + b (T - 1) fitted through every
        measured T of this batch size, so one unlucky sample cannot freeze a choice. Unmeasured larger
        T get the optimistic slope max(b, 0) from what is known (0 with a single point)."""
        pts = sorted((t, e.value, len(e.samples)) for (b, t), e in self.trunk.items() if b == B)
        if not pts:
            return None
        if len(pts) == 1:
            line = pts[0][1]
        else:
            w = [n for _, _, n in pts]
            mt = sum(t * n for t, _, n in pts) / sum(w)
            mv = sum(v * n for _, v, n in pts) / sum(w)
            var = sum(n * (t - mt) ** 2 for t, _, n in pts)
            slope = max(0.0, sum(n * (t - mt) * (v - mv) for t, v, n in pts) / var)
            line = mv + slope * (T - mt)
        own = self.trunk.get((B, T))
        if own is None:
            return line
        n = len(own.samples)
        return (own.value * n + line * 3) / (n + 3)

    def draft_cost(self, B: int) -> float | None:
        e = self.draft.get(B)
        return e.value if e else None


@dataclass
class KTuner:
    k_max: int
    k_min: int = 0
    explore_every: int = 8
    explore_max: int = 128
    costs: CostModel = field(default_factory=CostModel)
    recent: Acceptance | None = None     # acceptance over all requests, the prior of new ones
    recent_ngram: Acceptance | None = None   # the same for n-gram drafts
    ngram_max: int = 8
    steps: int = 0
    _best: int = -1
    _interval: int = 0
    _next_explore: int = 0
    _explored: int = 0
    _ngram_calls: int = 0
    _ngram_gap: int = 4
    _ngram_next: int = 8

    def __post_init__(self):
        if self.recent is None:
            self.recent = Acceptance(max(self.k_max, 1), decay=0.99)
        if self.recent_ngram is None:
            self.recent_ngram = Acceptance(max(self.ngram_max, 1), decay=0.99)

    def new_acceptance(self, k_max: int, ngram: bool = False) -> Acceptance:
        return (self.recent_ngram if ngram else self.recent).spawn(max(k_max, 1))

    def observe(self, n_drafted: int, n_accepted: int, ngram: bool = False) -> None:
        """One request's verified drafts; the request updates its own `Acceptance` too."""
        (self.recent_ngram if ngram else self.recent).update(n_drafted, n_accepted)

    def model_step_seconds(self, B: int, k: int) -> float | None:
        """Expected seconds of a decode step drafting k tokens with the model drafter (k = 0: plain)."""
        measured = self.costs.step_cost(B, k)
        if measured is not None:
            return measured
        trunk = self.costs.trunk_cost(B, k + 1)
        if trunk is None or (k and self.costs.draft_cost(B) is None):
            return None
        return trunk + (k * self.costs.draft_cost(B) + self.costs.catch_up_cost(B) if k else 0.0)

    def ngram_length(self, ngram: Acceptance, available: int, B: int, model: Acceptance | None, k_model: int) -> int:
        """How many tokens of an n-gram match to draft (0: let the model drafter, or plain decoding, go
        instead): the length whose expected tokens per second beat the alternative's, by measured cost."""
        alt_time = self.model_step_seconds(B, k_model)
        if alt_time is None or self.costs.trunk_cost(B, 1) is None:
            return available                   # nothing measured yet: a match is worth trying
        alt = (model.expected_tokens(k_model) if model is not None and k_model else 1.0) / alt_time
        best, best_rate = 0, alt
        for n in range(1, available + 1):
            rate = ngram.expected_tokens(n) / self.costs.trunk_cost(B, n + 1)
            if rate > best_rate:
                best, best_rate = n, rate
        self._ngram_calls += 1              # now and then one token more than the estimate says pays:
        if self._ngram_calls >= self._ngram_next:     # a stale estimate must not stop n-gram drafts for good
            self._ngram_gap = min(2 * self._ngram_gap, self.explore_max)
            self._ngram_next = self._ngram_calls + self._ngram_gap
            return min(best + 1, available)
        return best

    def choose(self, acceptances: list[Acceptance]) -> int:
        if self.k_max == 0 or not acceptances:
            return 0
        B = len(acceptances)
        plain = self.costs.trunk_cost(B, 1)
        draft = self.costs.draft_cost(B)
        if plain is None or (B, 1) not in self.costs.trunk:
            return 0                           # measure plain decoding first
        if draft is None:
            return self.k_max                  # then measure drafting
        rates = {0: B / (self.costs.step_cost(B, 0) or plain)}
        for k in range(max(1, self.k_min), self.k_max + 1):
            t = self.costs.step_cost(B, k) or \
                self.costs.trunk_cost(B, k + 1) + k * draft + self.costs.catch_up_cost(B)
            rates[k] = sum(a.expected_tokens(k) for a in acceptances) / t
        best_k = max(rates, key=lambda k: (rates[k], -k))
        self.steps += 1
        if best_k != self._best:               # the choice moved: look around again soon
            self._best, self._interval = best_k, self.explore_every
            self._next_explore = self.steps + self._interval
        if self.steps >= self._next_explore:   # revisit another candidate now and then: estimates go stale
            self._interval = min(2 * self._interval, self.explore_max)
            self._next_explore = self.steps + self._interval
            self._explored += 1
            second = max((k for k in rates if k != best_k), key=lambda k: rates[k], default=best_k)
            return self.revisit(best_k, self._explored, second)
        return best_k

    def revisit(self, best: int, turn: int, second: int | None = None) -> int:
        """The turn-th candidate to re-measure around choice `best`: the runner-up `second`, the neighbours
        and k = 0, in turn (from k = 0 the neighbour k = 1 may be the one k that never pays)."""
        up, down = max(best + 1, self.k_min), (best - 1 if best - 1 >= self.k_min else 0)
        cands = sorted({k for k in (down, up, 0, second) if k is not None and k != best and k <= self.k_max})
        return cands[turn % len(cands)] if cands else best

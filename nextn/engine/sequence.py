"""A request's pure-Python state: tokens, limits, speculation settings, statistics. No tensors."""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from enum import Enum

from .params import SamplingParams
from .stats import SpecStats
from .tuner import Acceptance

_ids = itertools.count()


class Status(Enum):
    WAITING = "waiting"
    PREFILL = "prefill"
    DECODE = "decode"
    FINISHED = "finished"


@dataclass(slots=True)
class SpecConfig:
    """`draft_max` = 0 disables speculation; `adaptive` lets the tuner pick k in {0} U [draft_min, draft_max]."""

    draft_max: int = 3
    draft_min: int = 0
    p_min: float = 0.0
    adaptive: bool = True

    def __post_init__(self):
        if not 0 <= self.draft_min <= max(self.draft_max, 0) or self.draft_max < 0:
            raise ValueError("need 0 <= draft_min <= draft_max")
        if not 0 <= self.p_min < 1:
            raise ValueError("draft p_min must be in [0, 1)")


@dataclass(eq=False)
class Sequence:
    prompt: list[int]
    params: SamplingParams
    spec: SpecConfig
    id: int = field(default_factory=lambda: next(_ids))
    tokens: list[int] = field(default_factory=list)
    status: Status = Status.WAITING
    slot: int = -1
    num_cached: int = 0           # tokens the trunk has processed (valid KV/recurrent state)
    finish_reason: str | None = None
    stats: SpecStats = field(default_factory=SpecStats)
    acceptance: Acceptance | None = None
    cancelled: bool = False

    def __post_init__(self):
        self.tokens = list(self.prompt)
        self.stats.prompt_tokens = len(self.prompt)
        if self.acceptance is None:
            self.acceptance = Acceptance(max(self.spec.draft_max, 1))

    @property
    def n_prompt(self) -> int:
        return len(self.prompt)

    @property
    def generated(self) -> list[int]:
        return self.tokens[self.n_prompt:]

    @property
    def n_generated(self) -> int:
        return len(self.tokens) - self.n_prompt

    @property
    def last_token(self) -> int:
        return self.tokens[-1]

    @property
    def remaining(self) -> int:
        return self.params.max_tokens - self.n_generated

    @property
    def is_finished(self) -> bool:
        return self.status == Status.FINISHED

    def finish(self, reason: str) -> None:
        self.status = Status.FINISHED
        self.finish_reason = reason

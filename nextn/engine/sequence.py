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


MODEL_DRAFTERS = ("mtp", "draft")     # drafters that run a forward per draft token; one per engine
DRAFTERS = MODEL_DRAFTERS + ("ngram",)


def parse_spec(text: str) -> tuple[str, ...]:
    """'mtp', 'ngram', 'draft', 'mtp+ngram', 'draft+ngram' or 'none' -> the drafters it names."""
    parts = tuple(p.strip() for p in text.split("+")) if text.strip() != "none" else ()
    if (any(p not in DRAFTERS for p in parts) or len(set(parts)) != len(parts)
            or sum(p in MODEL_DRAFTERS for p in parts) > 1):
        raise ValueError(f"speculation must be none, mtp, ngram, draft, mtp+ngram or draft+ngram, not {text!r}")
    return parts


def model_drafter_of(drafters: tuple[str, ...], draft_max: int) -> str | None:
    """The model drafter ('mtp' or 'draft') among `drafters`, None when there is none or draft_max is 0."""
    return next((d for d in drafters if d in MODEL_DRAFTERS), None) if draft_max > 0 else None


@dataclass(slots=True)
class SpecConfig:
    """`draft_max` = 0 disables speculation; `adaptive` lets the tuner pick k in {0} U [draft_min, draft_max]
    for the model drafter (and the n-gram draft length). `drafters`: which of the engine's drafters may
    propose (a model drafter, n-gram lookup, or both: n-gram where a match exists, else the model)."""

    draft_max: int = 3
    draft_min: int = 0
    p_min: float = 0.0
    adaptive: bool = True
    drafters: tuple[str, ...] = ("mtp",)

    def __post_init__(self):
        if not 0 <= self.draft_min <= max(self.draft_max, 0) or self.draft_max < 0:
            raise ValueError("need 0 <= draft_min <= draft_max")
        if not 0 <= self.p_min < 1:
            raise ValueError("draft p_min must be in [0, 1)")

    def uses(self, name: str) -> bool:
        return self.draft_max > 0 and name in self.drafters

    @property
    def model_drafter(self) -> str | None:
        return model_drafter_of(self.drafters, self.draft_max)


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
    acceptance: Acceptance | None = None          # of the model drafter's drafts
    ngram_acceptance: Acceptance | None = None    # of n-gram drafts
    cancelled: bool = False
    logprobs: list = field(default_factory=list)  # (token, logprob, top alternatives) per generated token, if asked
    prompt_logprobs: list = field(default_factory=list)   # the same for prompt tokens 1.. (params.prompt_logprobs)
    constraint: object = None     # what the reply must stay (text.json_mode.JsonConstraint), or None
    share: "Sequence | None" = None   # a sibling with the same prompt whose prefill this one copies (n > 1)

    def __post_init__(self):
        self.tokens = list(self.prompt)
        self.stats.prompt_tokens = len(self.prompt)
        if self.acceptance is None:
            self.acceptance = Acceptance(max(self.spec.draft_max, 1))
        if self.ngram_acceptance is None:
            self.ngram_acceptance = Acceptance(16)

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

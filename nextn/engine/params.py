"""Sampling parameters of a request: plain data, no tensors."""

from __future__ import annotations

from dataclasses import dataclass, field

from ..text.json_schema import compile_schema


# a model's recommended settings (GGUF general.sampling.*), the defaults of every parameter left unset
RECOMMENDED = {"temperature": "general.sampling.temp", "top_k": "general.sampling.top_k", "top_p": "general.sampling.top_p",
               "min_p": "general.sampling.min_p", "repetition_penalty": "general.sampling.penalty_repeat",
               "penalty_last_n": "general.sampling.penalty_last_n"}


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 0.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0   # 1 = off (llama.cpp / HF style)
    presence_penalty: float = 0.0     # OpenAI style
    frequency_penalty: float = 0.0
    penalty_last_n: int = -1          # penalties see the last n tokens of the context; -1: all of it
    seed: int | None = None
    max_tokens: int = 128
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False
    logprobs: int | None = None       # None: off; n >= 0: each token's log-probability and the n most likely
    prompt_logprobs: bool = False     # also score the prompt's tokens (echo with logprobs); max_tokens may be 0
    json: bool = False                # the reply is one JSON object (text/json_mode.py)
    json_schema: dict | bool | None = None   # the reply is JSON matching this schema (text/json_schema.py)

    def __post_init__(self):
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.max_tokens >= 1 or (self.max_tokens == 0 and self.prompt_logprobs),
             "max_tokens must be >= 1 (0 only to score the prompt: echo with logprobs)"),
            (not self.prompt_logprobs or self.logprobs is not None, "prompt_logprobs needs logprobs"),
            (self.penalty_last_n >= -1, "penalty_last_n (repeat_last_n) must be >= -1"),
            (self.seed is None or 0 <= self.seed < 2**64, "seed must be an integer in [0, 2^64)"),
            (self.logprobs is None or 0 <= self.logprobs <= 20, "logprobs (top_logprobs) must be in [0, 20]"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)
        if self.json_schema is not None:
            compile_schema(self.json_schema)       # SchemaError (a ValueError) names what it cannot enforce

    @classmethod
    def with_defaults(cls, recommended: dict, **given) -> "SamplingParams":
        """Parameters given (None: not given) over the model's recommended ones over the built-in defaults."""
        return cls(**{**recommended, **{k: v for k, v in given.items() if v is not None}})

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0

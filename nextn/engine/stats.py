"""Speculative-decoding statistics: what users compare across engines (llama.cpp, vLLM)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class SpecStats:
    n_drafts: int = 0                 # verify steps that carried at least one draft
    n_draft_tokens: int = 0
    n_accepted: int = 0
    n_steps: int = 0                  # decode steps (trunk forwards after the prompt)
    n_generated: int = 0
    drafted_per_pos: list[int] = field(default_factory=list)
    accepted_per_pos: list[int] = field(default_factory=list)
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    def record(self, n_drafted: int, n_accepted: int) -> None:
        self.n_steps += 1
        if n_drafted == 0:
            return
        self.n_drafts += 1
        self.n_draft_tokens += n_drafted
        self.n_accepted += n_accepted
        while len(self.drafted_per_pos) < n_drafted:
            self.drafted_per_pos.append(0)
            self.accepted_per_pos.append(0)
        for i in range(n_drafted):
            self.drafted_per_pos[i] += 1
            self.accepted_per_pos[i] += i < n_accepted

    @property
    def acceptance_rate(self) -> float:
        return self.n_accepted / self.n_draft_tokens if self.n_draft_tokens else 0.0

    @property
    def mean_accepted_length(self) -> float:
        return 1.0 + self.n_accepted / self.n_drafts if self.n_drafts else 1.0

    @property
    def acceptance_per_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_pos, self.drafted_per_pos)]

    @property
    def tokens_per_second(self) -> float:
        return self.n_generated / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    def merge(self, other: "SpecStats") -> None:
        for name in ("n_drafts", "n_draft_tokens", "n_accepted", "n_steps", "n_generated", "prompt_tokens",
                     "prefill_seconds", "decode_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for i, (d, a) in enumerate(zip(other.drafted_per_pos, other.accepted_per_pos)):
            if i >= len(self.drafted_per_pos):
                self.drafted_per_pos.append(0)
                self.accepted_per_pos.append(0)
            self.drafted_per_pos[i] += d
            self.accepted_per_pos[i] += a

    def to_dict(self) -> dict:
        return {
            "prompt_tokens": self.prompt_tokens, "generated_tokens": self.n_generated,
            "draft_steps": self.n_drafts, "draft_tokens": self.n_draft_tokens, "accepted_tokens": self.n_accepted,
            "acceptance_rate": round(self.acceptance_rate, 4),
            "mean_accepted_length": round(self.mean_accepted_length, 4),
            "acceptance_per_position": [round(x, 4) for x in self.acceptance_per_position],
            "decode_steps": self.n_steps,
            "prompt_seconds": round(self.prefill_seconds, 4), "decode_seconds": round(self.decode_seconds, 4),
            "prompt_tokens_per_second": round(self.prompt_tokens_per_second, 2),
            "tokens_per_second": round(self.tokens_per_second, 2),
        }

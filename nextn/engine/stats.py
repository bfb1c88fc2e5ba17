"""Speculative-decoding statistics: what users compare across engines (llama.cpp, vLLM)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class DraftCounts:
    """Drafts of one drafter: steps that carried them, tokens, accepted, per position."""

    n_drafts: int = 0
    n_draft_tokens: int = 0
    n_accepted: int = 0
    drafted_per_pos: list[int] = field(default_factory=list)
    accepted_per_pos: list[int] = field(default_factory=list)

    def record(self, n_drafted: int, n_accepted: int) -> None:
        self.n_drafts += 1
        self.n_draft_tokens += n_drafted
        self.n_accepted += n_accepted
        _grow(self, n_drafted)
        for i in range(n_drafted):
            self.drafted_per_pos[i] += 1
            self.accepted_per_pos[i] += i < n_accepted

    def merge(self, other: "DraftCounts") -> None:
        self.n_drafts += other.n_drafts
        self.n_draft_tokens += other.n_draft_tokens
        self.n_accepted += other.n_accepted
        _grow(self, len(other.drafted_per_pos))
        for i, (d, a) in enumerate(zip(other.drafted_per_pos, other.accepted_per_pos)):
            self.drafted_per_pos[i] += d
            self.accepted_per_pos[i] += a

    @property
    def acceptance_rate(self) -> float:
        return self.n_accepted / self.n_draft_tokens if self.n_draft_tokens else 0.0

    @property
    def acceptance_per_position(self) -> list[float]:
        return [a / d if d else 0.0 for a, d in zip(self.accepted_per_pos, self.drafted_per_pos)]

    def to_dict(self) -> dict:
        return {"draft_steps": self.n_drafts, "draft_tokens": self.n_draft_tokens, "accepted_tokens": self.n_accepted,
                "acceptance_rate": round(self.acceptance_rate, 4),
                "acceptance_per_position": [round(x, 4) for x in self.acceptance_per_position]}


def _grow(counts, n: int) -> None:
    while len(counts.drafted_per_pos) < n:
        counts.drafted_per_pos.append(0)
        counts.accepted_per_pos.append(0)


@dataclass
class SpecStats(DraftCounts):
    """Counts of all drafts (the DraftCounts fields) and per drafter, steps, tokens and where time goes."""

    n_steps: int = 0                  # decode steps (trunk forwards after the prompt)
    n_generated: int = 0
    prompt_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0       # wall time of the decode steps, everything included
    # where a decode step's time goes (engine-wide; the rest of decode_seconds is scheduling, stop rules, text)
    draft_seconds: float = 0.0        # drafting (MTP head, draft model or n-gram lookup)
    catch_up_seconds: float = 0.0     # bringing a model drafter up to the tokens the previous step committed
    verify_seconds: float = 0.0       # trunk forwards (one per step: last token + drafts)
    commit_seconds: float = 0.0       # acceptance, cache commit / rollback
    by_drafter: dict[str, DraftCounts] = field(default_factory=dict)

    def record(self, n_drafted: int, n_accepted: int, drafter: str | None = None) -> None:
        self.n_steps += 1
        if n_drafted == 0:
            return
        super().record(n_drafted, n_accepted)
        if drafter is not None:
            self.by_drafter.setdefault(drafter, DraftCounts()).record(n_drafted, n_accepted)

    def add_step(self, seconds: float, draft: float, catch_up: float, verify: float, commit: float) -> None:
        self.decode_seconds += seconds
        self.draft_seconds += draft
        self.catch_up_seconds += catch_up
        self.verify_seconds += verify
        self.commit_seconds += commit

    @property
    def step_ms(self) -> dict:
        """Mean milliseconds per decode step: draft, catch_up, verify, commit and other (Python bookkeeping)."""
        n = max(self.n_steps, 1)
        parts = {"draft": self.draft_seconds, "catch_up": self.catch_up_seconds, "verify": self.verify_seconds,
                 "commit": self.commit_seconds}
        parts["other"] = max(self.decode_seconds - sum(parts.values()), 0.0)
        return {k: round(1e3 * v / n, 4) for k, v in parts.items()}

    @property
    def mean_accepted_length(self) -> float:
        return 1.0 + self.n_accepted / self.n_drafts if self.n_drafts else 1.0

    @property
    def tokens_per_second(self) -> float:
        return self.n_generated / self.decode_seconds if self.decode_seconds > 0 else 0.0

    @property
    def prompt_tokens_per_second(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds > 0 else 0.0

    def merge(self, other: "SpecStats") -> None:
        super().merge(other)
        for name in ("n_steps", "n_generated", "prompt_tokens",
                     "prefill_seconds", "decode_seconds", "draft_seconds", "catch_up_seconds", "verify_seconds",
                     "commit_seconds"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        for name, counts in other.by_drafter.items():
            self.by_drafter.setdefault(name, DraftCounts()).merge(counts)

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
            "step_ms": self.step_ms,
            "drafters": {name: c.to_dict() for name, c in self.by_drafter.items()},
        }

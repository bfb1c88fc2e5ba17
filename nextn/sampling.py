"""Sampling parameters and the logits -> probabilities pipeline (penalties, temperature, top-k/p, min-p).

The same pipeline turns both target (trunk) and draft (MTP) logits into distributions, so that
speculative sampling compares like with like.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch


@dataclass(slots=True)
class SamplingParams:
    temperature: float = 0.0          # 0 = greedy
    top_k: int = 0                    # 0 = off
    top_p: float = 1.0
    min_p: float = 0.0
    repetition_penalty: float = 1.0   # 1 = off (llama.cpp / HF style, over the whole context)
    presence_penalty: float = 0.0     # OpenAI style, over the whole context
    frequency_penalty: float = 0.0
    seed: int | None = None
    max_tokens: int = 128
    stop: list[str] = field(default_factory=list)
    ignore_eos: bool = False

    def __post_init__(self):
        checks = [
            (self.temperature >= 0, "temperature must be >= 0"),
            (self.top_k >= 0, "top_k must be >= 0"),
            (0 < self.top_p <= 1, "top_p must be in (0, 1]"),
            (0 <= self.min_p < 1, "min_p must be in [0, 1)"),
            (self.repetition_penalty > 0, "repetition_penalty must be > 0"),
            (-2 <= self.presence_penalty <= 2, "presence_penalty must be in [-2, 2]"),
            (-2 <= self.frequency_penalty <= 2, "frequency_penalty must be in [-2, 2]"),
            (self.max_tokens >= 1, "max_tokens must be >= 1"),
        ]
        for ok, message in checks:
            if not ok:
                raise ValueError(message)

    @property
    def greedy(self) -> bool:
        return self.temperature == 0 or self.top_k == 1

    @property
    def has_penalties(self) -> bool:
        return self.repetition_penalty != 1 or self.presence_penalty != 0 or self.frequency_penalty != 0


def token_counts(tokens: list[int], n_vocab: int, device) -> torch.Tensor:
    return torch.bincount(torch.tensor(tokens, device=device, dtype=torch.long), minlength=n_vocab)[:n_vocab].float()


def row_counts(base: torch.Tensor, extra: list[int], n_rows: int) -> torch.Tensor:
    """Counts seen by each of n_rows consecutive predictions: row j also saw extra[:j]."""
    counts = base[None].repeat(n_rows, 1)
    for j, tok in enumerate(extra[: n_rows - 1]):
        counts[j + 1:, tok] += 1
    return counts


def apply_penalties(logits: torch.Tensor, counts: torch.Tensor | None, p: SamplingParams) -> torch.Tensor:
    if counts is None or not p.has_penalties:
        return logits
    logits = logits.clone()
    seen = counts > 0
    if p.repetition_penalty != 1:
        penalised = torch.where(logits > 0, logits / p.repetition_penalty, logits * p.repetition_penalty)
        logits = torch.where(seen, penalised, logits)
    return logits - p.frequency_penalty * counts - p.presence_penalty * seen.float()


def probabilities(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """Filtered, renormalised sampling distribution for each row of penalised logits [N, V]."""
    logits = logits.float() / max(p.temperature, 1e-5)
    if p.top_k > 0 and p.top_k < logits.shape[-1]:
        kth = logits.topk(p.top_k, dim=-1).values[..., -1:]
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = logits.softmax(-1)
    if p.top_p < 1:
        sorted_p, idx = probs.sort(dim=-1, descending=True)
        drop = (sorted_p.cumsum(-1) - sorted_p) >= p.top_p
        probs = probs.scatter(-1, idx, sorted_p.masked_fill(drop, 0.0))
    if p.min_p > 0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(-1, keepdim=True).values, 0.0)
    return probs / probs.sum(-1, keepdim=True)


def sample(probs: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)

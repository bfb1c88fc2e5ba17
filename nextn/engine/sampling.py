"""Logits -> what a sequence does next: penalties, temperature, top-k/p, min-p.

`target` is the one function that turns logits rows into a decision, for the first token after a
prompt, for each draft the MTP head proposes, and for every row a verification forward checks. The
same pipeline on both sides is what makes speculative sampling compare like with like.
"""

from __future__ import annotations

import torch

from .params import SamplingParams


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


def penalised(logits: torch.Tensor, p: SamplingParams, history: list[int], extra: list[int] = ()) -> torch.Tensor:
    """Rows [n, V] with penalties applied; row j has seen history + extra[:j]."""
    if not p.has_penalties:
        return logits
    counts = row_counts(token_counts(history, logits.shape[-1], logits.device), list(extra), logits.shape[0])
    return apply_penalties(logits, counts, p)


def target(logits: torch.Tensor, p: SamplingParams, history: list[int], extra: list[int] = ()) -> torch.Tensor:
    """The decision each row asks for, on the CPU: argmax ids [n] (greedy) or distributions [n, V]."""
    rows = penalised(logits, p, history, extra)
    return (rows.argmax(-1) if p.greedy else probabilities(rows, p)).cpu()


def draw(row: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from one row of `target`: the argmax itself, or a sample of the distribution."""
    if row.dim() == 0:
        return int(row)
    return int(torch.multinomial(row, 1, generator=generator))


def new_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

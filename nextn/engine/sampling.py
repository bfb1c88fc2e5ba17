"""Logits -> what a sequence does next: penalties, temperature, top-k, top-p, min-p.

`target` is the one function that turns logits rows into a decision, for the first token after a
prompt, for each draft the MTP head proposes, and for every row a verification forward checks. The
same pipeline on both sides is what makes speculative sampling compare like with like. Rows are
brought to the CPU (a few per step) and shaped by native ops: the penalties touch only the tokens a
row has seen, top-p sorts only the candidates that can matter, whatever the vocabulary size.
"""

from __future__ import annotations

import torch

from ..kernels import native
from .acceptance import sample_index
from .params import SamplingParams


def _rows(logits: torch.Tensor) -> torch.Tensor:
    return logits.detach().to("cpu", torch.float32).contiguous()


def penalised(logits: torch.Tensor, p: SamplingParams, history: list[int], extra: list[int] = ()) -> torch.Tensor:
    """Rows [n, V] with penalties applied; row j has seen history + extra[:j] (its last penalty_last_n
    tokens when that is set)."""
    if not p.has_penalties or p.penalty_last_n == 0:
        return logits
    rows, n = _rows(logits).clone(), logits.shape[0]
    seen = list(history) + list(extra[:n - 1])
    tokens, starts = [], [0]
    for j in range(n):
        end = len(history) + j
        tokens += seen[max(0, end - p.penalty_last_n) if p.penalty_last_n > 0 else 0:end]
        starts.append(len(tokens))
    tok = torch.tensor(tokens or [0], dtype=torch.int32)
    st = torch.tensor(starts, dtype=torch.int32)
    native.run("penalize", [rows.data_ptr(), rows.stride(0), tok.data_ptr(), st.data_ptr(), n],
               [p.repetition_penalty, p.presence_penalty, p.frequency_penalty])
    return rows


def probabilities(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    """The sampling distribution of each row of (penalised) logits [N, V], on the CPU."""
    rows = _rows(logits)
    out = torch.empty_like(rows)
    native.run("probs", [rows.data_ptr(), rows.stride(0), rows.shape[-1], out.data_ptr(), out.stride(0), rows.shape[0]],
               [p.temperature, p.top_p, p.min_p, float(p.top_k)])
    return out


def target(logits: torch.Tensor, p: SamplingParams, history: list[int], extra: list[int] = ()) -> torch.Tensor:
    """The decision each row asks for, on the CPU: argmax ids [n] (greedy) or distributions [n, V]."""
    rows = penalised(logits, p, history, extra)
    return rows.argmax(-1).cpu() if p.greedy else probabilities(rows, p)


def draw(row: torch.Tensor, generator: torch.Generator | None) -> int:
    """One token from one row of `target`: the argmax itself, or a sample of the distribution."""
    if row.dim() == 0:
        return int(row)
    return sample_index(row, generator)


def new_generator(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)

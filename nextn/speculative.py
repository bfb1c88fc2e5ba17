"""One decode step for a batch: draft with the MTP head, verify every sequence's last token plus its
drafts in ONE trunk forward, keep what the acceptance rule keeps, roll the rest back.

A sequence given k = 0 simply decodes one token in the same forward: plain and speculative
sequences share the batch, and a sequence never alternates plain and speculative passes.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch

from .acceptance import accept
from .runner import ModelRunner
from .sampling import apply_penalties, probabilities, row_counts, sample, token_counts
from .sequence import Sequence


@dataclass
class StepResult:
    new_tokens: list[list[int]]     # per sequence: accepted drafts + the emitted token
    n_drafted: list[int]
    n_accepted: list[int]
    draft_seconds: float
    verify_seconds: float
    draft_steps: int


def _counts(seq: Sequence, n_vocab: int, device):
    return token_counts(seq.tokens, n_vocab, device) if seq.params.has_penalties else None


def _pick_drafts(logits: torch.Tensor, seqs: list[Sequence], drafts: list[list[int]], gens) -> list[tuple[int, torch.Tensor | None, float]]:
    """Choose the next draft token per sequence from MTP logits [B, V]: (token, q row or None, confidence)."""
    if all(s.params.greedy and not s.params.has_penalties and s.spec.p_min == 0 for s in seqs):
        return [(t, None, 1.0) for t in logits.argmax(-1).tolist()]
    out = []
    for b, seq in enumerate(seqs):
        p = seq.params
        counts = None
        if p.has_penalties:
            counts = row_counts(token_counts(seq.tokens, logits.shape[-1], logits.device), drafts[b], len(drafts[b]) + 1)[-1:]
        row = apply_penalties(logits[b:b + 1], counts, p)
        if p.greedy:
            tok = int(row.argmax())
            conf = float(row.softmax(-1)[0, tok]) if seq.spec.p_min > 0 else 1.0
            out.append((tok, None, conf))
        else:
            q = probabilities(row, p)[0].cpu()
            tok = int(sample(q[None], gens[seq.id])[0])
            out.append((tok, q, float(q[tok])))
    return out


def draft(runner: ModelRunner, seqs: list[Sequence], ks: list[int], gens) -> tuple[list[list[int]], list[list], int]:
    drafts: list[list[int]] = [[] for _ in seqs]
    qs: list[list] = [[] for _ in seqs]
    idx = [i for i, k in enumerate(ks) if k > 0]
    if not idx:
        return drafts, qs, 0
    g, logits = runner.flush([seqs[i] for i in idx])
    steps = 1
    while True:
        picks = _pick_drafts(logits, [seqs[i] for i in idx], [drafts[i] for i in idx], gens)
        still, rows = [], []
        for r, (i, (tok, q, conf)) in enumerate(zip(idx, picks)):
            if conf < seqs[i].spec.p_min:
                continue
            drafts[i].append(tok)
            qs[i].append(q)
            if len(drafts[i]) < ks[i]:
                still.append(i)
                rows.append(r)
        if not still:
            break
        sub = [seqs[i] for i in still]
        positions = [runner.mtp_len[s.slot] + len(drafts[i]) for s, i in zip(sub, still)]
        g, logits = runner.draft_step(sub, [drafts[i][-1] for i in still], g[rows], positions)
        idx = still
        steps += 1
    for i, seq in enumerate(seqs):
        if 0 < len(drafts[i]) < seq.spec.draft_min:
            drafts[i], qs[i] = [], []
    return drafts, qs, steps


def decode_step(runner: ModelRunner, seqs: list[Sequence], ks: list[int], gens: dict) -> StepResult:
    t0 = time.perf_counter()
    drafts, qs, steps = draft(runner, seqs, ks, gens)
    t1 = time.perf_counter()
    inputs = [[s.last_token] + d for s, d in zip(seqs, drafts)]
    hidden, logits = runner.verify(seqs, inputs)
    new_tokens, accepted = [], []
    greedy_fast = all(s.params.greedy and not s.params.has_penalties for s in seqs)
    argmax = logits.argmax(-1).cpu() if greedy_fast else None
    for b, seq in enumerate(seqs):
        n_in = len(inputs[b])
        if greedy_fast:
            target = argmax[b, :n_in]
        else:
            counts = _counts(seq, logits.shape[-1], logits.device)
            rows = apply_penalties(logits[b, :n_in], row_counts(counts, drafts[b], n_in) if counts is not None else None,
                                   seq.params)
            target = rows.argmax(-1).cpu() if seq.params.greedy else probabilities(rows, seq.params).cpu()
        q = torch.stack(qs[b]) if qs[b] and qs[b][0] is not None else None
        m, y = accept(drafts[b], target, q, gens.get(seq.id))
        accepted.append(m)
        new_tokens.append(drafts[b][:m] + [y])
    runner.commit(seqs, [m + 1 for m in accepted], hidden, new_tokens)
    runner.flush_if_long([s for s, d in zip(seqs, drafts) if not d])
    t2 = time.perf_counter()
    return StepResult(new_tokens, [len(d) for d in drafts], accepted, t1 - t0, t2 - t1, steps)

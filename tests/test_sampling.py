"""The sampling pipeline (native penalties and distributions) against a plain torch reference."""

import pytest
import torch
from scipy import stats

from nextn.engine.acceptance import sample_index
from nextn.engine.params import SamplingParams
from nextn.engine.sampling import penalised, probabilities


def reference_probs(logits: torch.Tensor, p: SamplingParams) -> torch.Tensor:
    x = logits.double() / max(p.temperature, 1e-5)
    if 0 < p.top_k < x.shape[-1]:
        x = x.masked_fill(x < x.topk(p.top_k, dim=-1).values[..., -1:], float("-inf"))
    probs = x.softmax(-1)
    if p.top_p < 1:
        sp, idx = probs.sort(dim=-1, descending=True, stable=True)
        probs = probs.scatter(-1, idx, sp.masked_fill((sp.cumsum(-1) - sp) >= p.top_p, 0.0))
    if p.min_p > 0:
        probs = probs.masked_fill(probs < p.min_p * probs.max(-1, keepdim=True).values, 0.0)
    return probs / probs.sum(-1, keepdim=True)


@pytest.mark.parametrize("kw", [dict(temperature=1.0), dict(temperature=0.7, top_k=40), dict(temperature=0.8, top_p=0.9),
                                dict(temperature=0.5, top_p=0.5, min_p=0.05), dict(temperature=1.3, top_k=300, top_p=0.95,
                                                                                    min_p=0.01)])
@pytest.mark.parametrize("V", [320, 50000])
def test_distributions_match_the_reference(kw, V):
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(V)) * 3
    p = SamplingParams(**kw)
    got, ref = probabilities(logits, p), reference_probs(logits, p)
    assert torch.equal(got > 0, ref > 0)                      # the same support
    assert (got.double() - ref).abs().max() < 1e-6 and abs(float(got[0].sum()) - 1) < 1e-5


@pytest.mark.parametrize("last_n", [-1, 3])
def test_penalties_see_the_history_and_the_drafts_before_each_row(last_n):
    V = 50
    logits = torch.randn(3, V, generator=torch.Generator().manual_seed(0))
    p = SamplingParams(repetition_penalty=1.3, presence_penalty=0.5, frequency_penalty=0.25, penalty_last_n=last_n)
    history, drafts = [1, 2, 2, 7, 9], [4, 2]
    got = penalised(logits, p, history, drafts)
    for j in range(3):
        seen = (history + drafts[:j])[-last_n:] if last_n > 0 else history + drafts[:j]
        counts = torch.bincount(torch.tensor(seen), minlength=V).float()
        row = logits[j].clone()
        hit = counts > 0
        row = torch.where(hit, torch.where(row > 0, row / 1.3, row * 1.3), row) - 0.25 * counts - 0.5 * hit.float()
        assert torch.allclose(got[j], row, atol=1e-6), j
    assert torch.equal(logits, torch.randn(3, V, generator=torch.Generator().manual_seed(0)))   # input untouched


def test_sample_index_follows_the_distribution_and_never_picks_zero_mass():
    probs = torch.tensor([0.0, 0.1, 0.0, 0.3, 0.6, 0.0])
    g = torch.Generator().manual_seed(0)
    draws = torch.tensor([sample_index(probs, g) for _ in range(6000)])
    counts = torch.bincount(draws, minlength=6)
    assert counts[[0, 2, 5]].sum() == 0
    expected = probs[[1, 3, 4]].double()
    expected = expected / expected.sum() * 6000
    assert stats.chisquare(counts[[1, 3, 4]].double().numpy(), expected.numpy()).pvalue > 1e-3

"""The acceptance rule: greedy equality + bonus token, residual resampling, exact target distribution."""

import torch
from scipy import stats

from nextn.engine.acceptance import accept


def test_greedy_keeps_matching_prefix_then_emits_target_token():
    target = torch.tensor([5, 7, 9, 11])
    assert accept([5, 7, 9], target) == (3, 11)      # all kept, bonus token
    assert accept([5, 8, 9], target) == (1, 7)       # mismatch at 2nd draft: the correction is the target token
    assert accept([6, 7, 9], target) == (0, 5)
    assert accept([], target[:1]) == (0, 5)


def test_sampling_rejected_draft_resamples_from_residual():
    # p puts no mass on the draft token 0 -> always rejected, and the residual max(0, p - q) is p itself
    p = torch.tensor([[0.0, 0.5, 0.5], [1.0, 0.0, 0.0]])
    q = torch.tensor([[1.0, 0.0, 0.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        n, tok = accept([0], p, q, g)
        assert n == 0 and tok in (1, 2)


def test_sampling_certain_draft_is_kept_and_bonus_comes_from_last_row():
    p = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 1.0]])
    q = torch.tensor([[0.0, 1.0, 0.0]])
    assert accept([1], p, q, torch.Generator().manual_seed(0)) == (1, 2)


def test_one_hot_draft_residual_excludes_the_draft():
    p = torch.tensor([[0.5, 0.5, 0.0], [0.0, 0.0, 1.0]])
    g = torch.Generator().manual_seed(0)
    for _ in range(100):
        n, tok = accept([0], p, None, g)
        assert (n, tok) in ((1, 2), (0, 1))


def _emitted_distribution_test(p_first, q_first, one_hot: bool, n=10000, seed=0):
    g = torch.Generator().manual_seed(seed)
    V = p_first.shape[0]
    p = torch.stack([p_first, torch.full((V,), 1.0 / V)])
    counts = torch.zeros(V)
    for _ in range(n):
        if one_hot:
            d = int(q_first.argmax())
            k, tok = accept([d], p, None, g)
        else:
            d = int(torch.multinomial(q_first, 1, generator=g))
            k, tok = accept([d], p, q_first[None], g)
        first = d if k == 1 else tok
        counts[first] += 1
    return stats.chisquare(counts.numpy(), (p_first * n).numpy())


def test_speculative_sampling_reproduces_target_distribution():
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(8) * 1.5, 0)
    q = torch.softmax(torch.randn(8) * 1.5, 0)
    assert _emitted_distribution_test(p, q, one_hot=False).pvalue > 1e-3
    assert _emitted_distribution_test(p, q, one_hot=True).pvalue > 1e-3


def test_distribution_test_detects_a_wrong_rule():
    """The chi-square check must be able to fail: emitting drafts unconditionally is caught."""
    torch.manual_seed(1)
    p = torch.softmax(torch.randn(8) * 1.5, 0)
    q = torch.softmax(torch.randn(8) * 1.5, 0)
    g = torch.Generator().manual_seed(0)
    counts = torch.zeros(8)
    for _ in range(10000):
        counts[int(torch.multinomial(q, 1, generator=g))] += 1
    assert stats.chisquare(counts.numpy(), (p * 10000).numpy()).pvalue < 1e-6

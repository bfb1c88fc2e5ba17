"""n > 1: sequences with the same prompt prefill it once; each copy decodes exactly as if it had prefilled
alone (greedy, seeded sampling, MTP drafting, the draft model), and a copy whose sibling is already past the
prompt prefills on its own."""

from __future__ import annotations

import pytest

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.scheduler import Scheduler
from nextn.engine.sequence import Sequence, SpecConfig, Status

PROMPT = "def parse_args(argv):\n    parser = argparse.ArgumentParser("


def _run_together(engine, ids, params_list, spec):
    """Add every request at once, the later ones sharing the first's prefill; (tokens each, prompt rows run)."""
    rows, extend = [], engine.runner.extend
    engine.runner.extend = lambda seqs, ns: (rows.append(sum(ns)), extend(seqs, ns))[1]
    try:
        first = engine.add_request(ids, params_list[0], spec)
        seqs = [first] + [engine.add_request(ids, p, spec, share=first) for p in params_list[1:]]
        while engine.has_work:
            engine.step()
    finally:
        engine.runner.extend = extend
    return [s.generated for s in seqs], sum(rows)


@pytest.mark.parametrize("spec", ["none", "mtp"])
def test_copies_decode_as_if_each_had_prefilled(demo_model, spec):
    engine = Engine(model=str(demo_model), spec=spec, n_parallel=4, progress=False)
    ids = engine.encode_prompt(PROMPT)
    sampled = [SamplingParams(max_tokens=20, temperature=0.9, seed=s, ignore_eos=True) for s in (1, 2, 3)]
    draft = SpecConfig(draft_max=3, adaptive=False) if spec == "mtp" else None
    alone = [engine.generate(PROMPT, p, spec=draft).tokens for p in sampled]
    together, rows = _run_together(engine, ids, sampled, draft)
    assert together == alone and len(set(map(tuple, alone))) > 1
    assert rows == len(ids)                                 # the prompt ran through the trunk once
    greedy = SamplingParams(max_tokens=20, ignore_eos=True, temperature=0)
    together, rows = _run_together(engine, ids, [greedy] * 3, draft)
    assert together == [engine.generate(PROMPT, greedy, spec=draft).tokens] * 3 and rows == len(ids)


def test_a_draft_model_follows_the_copy(tiny, tiny_draft):
    engine = Engine(model=str(tiny("qwen35", "no-mtp")), model_draft=str(tiny_draft("qwen35")), spec="draft", n_parallel=3,
                    progress=False)
    ids = list(range(3, 40))
    params = [SamplingParams(max_tokens=16, temperature=0.8, seed=s, ignore_eos=True) for s in (4, 5)]
    spec = SpecConfig(draft_max=4, adaptive=False, drafters=("draft",))
    alone = []
    for p in params:
        seq = engine.add_request(ids, p, spec)
        while engine.has_work:
            engine.step()
        alone.append(seq.generated)
    together, rows = _run_together(engine, ids, params, spec)
    assert together == alone and rows == len(ids)


def test_scheduler_holds_a_copy_until_its_sibling_is_done_or_gone():
    sched = Scheduler(n_slots=3, prefill_chunk=64)
    spec = SpecConfig(draft_max=0, drafters=())
    first = Sequence(list(range(10)), SamplingParams(), spec)
    copy = Sequence(list(range(10)), SamplingParams(), spec, share=first)
    sched.add(first)
    sched.add(copy)
    assert sched.schedule().prefill == [first]             # the copy waits for first's prefill
    first.num_cached = 10
    first.status = Status.DECODE                           # first went past the prompt without copying it
    plan = sched.schedule()
    assert plan.prefill == [copy] and copy.share is None   # so the copy prefills alone
    lone = Sequence(list(range(10)), SamplingParams(), spec, share=Sequence(list(range(10)), SamplingParams(), spec))
    sched.add(lone)
    assert lone in sched.schedule().prefill                  # a sibling that never got a slot holds nothing up


def test_copies_of_a_wrapped_sliding_window_ring(tiny):
    """MiMo's sliding-window layers hold rings (window + chunk + slack rows): a prompt several rings long,
    prefilled once and copied, decodes in each copy as it does alone."""
    import torch

    engine = Engine(model=str(tiny("mimo2")), spec="mtp", n_parallel=3, prefill_chunk=16, progress=False)
    ring = max(engine.runner.cache.ring.values())
    ids = torch.randint(3, 300, (3 * ring,), generator=torch.Generator().manual_seed(5)).tolist()
    sampled = [SamplingParams(max_tokens=24, temperature=0.9, seed=s, ignore_eos=True) for s in (1, 2)]
    draft = SpecConfig(draft_max=2, adaptive=False)
    alone = [engine.generate(ids, p, spec=draft).tokens for p in sampled]
    together, rows = _run_together(engine, ids, sampled, draft)
    assert together == alone and len(set(map(tuple, alone))) > 1 and rows == len(ids)

"""Speculative decoding with the MTP head: output identical to plain greedy, exact rollback, lossless
sampling, and statistics that add up."""

import pytest
import torch
from scipy import stats as sstats

import nextn.engine.speculative as speculative
from nextn.drafters.mtp import Proposal
from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig

GREEDY = SamplingParams(max_tokens=48, ignore_eos=True)
SPECS = [SpecConfig(draft_max=1, adaptive=False), SpecConfig(draft_max=2, adaptive=False),
         SpecConfig(draft_max=3, adaptive=False), SpecConfig(draft_max=3, adaptive=True)]
IDS = ["k1", "k2", "k3", "auto"]


def _prompt(n=80, seed=0):
    return torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()


@pytest.fixture(scope="module")
def engines(tiny):
    made = {}

    def get(arch, spec="mtp"):
        if (arch, spec) not in made:
            made[(arch, spec)] = Engine(model=str(tiny(arch)), spec=spec, prefill_chunk=32, progress=False)
        return made[(arch, spec)]

    return get


@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next", "glm4moe", "deepseek2", "glm4moelite", "mimo2"])
@pytest.mark.parametrize("spec", SPECS, ids=IDS)
def test_mtp_greedy_equals_plain_on_random_models(engines, arch, spec):
    prompt = _prompt()                                      # longer than the 32-token prefill chunk
    plain = engines(arch, "none").generate(prompt, GREEDY).tokens
    got = engines(arch).generate(prompt, GREEDY, spec=spec)
    assert got.tokens == plain
    assert got.stats.n_draft_tokens > 0


@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next", "glm4moe", "deepseek2", "mimo2"])
def test_every_acceptance_length_keeps_output_identical(engines, arch, monkeypatch):
    """Oracle drafts (the true continuation, corrupted at a random position) make every acceptance
    length 0..k happen; verification and rollback must still give exactly the plain output."""
    prompt = _prompt(seed=1)
    plain = engines(arch, "none").generate(prompt, SamplingParams(max_tokens=60, ignore_eos=True)).tokens
    rng = torch.Generator().manual_seed(0)
    lengths = []
    real_accept = speculative.accept

    def oracle(seqs, ks, gens):
        drafts = []
        for seq, k in zip(seqs, ks):
            d = plain[seq.n_generated:seq.n_generated + k]
            bad = int(torch.randint(0, len(d) + 1, (1,), generator=rng))
            if bad < len(d):
                d = d[:bad] + [(d[bad] + 1) % 300] + d[bad + 1:]
            drafts.append(d)
        return Proposal(drafts, [None] * len(drafts), 1)

    def accept(drafts, target, q=None, g=None):
        n, tok = real_accept(drafts, target, q, g)
        lengths.append((len(drafts), n))
        return n, tok

    monkeypatch.setattr(engines(arch).drafter.model, "propose", oracle)
    monkeypatch.setattr(speculative, "accept", accept)
    result = engines(arch).generate(prompt, SamplingParams(max_tokens=60, ignore_eos=True),
                                    spec=SpecConfig(draft_max=3, adaptive=False))
    assert result.tokens == plain
    assert {n for k, n in lengths if k == 3} == {0, 1, 2, 3}


@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next"])
@torch.inference_mode()
def test_rollback_restores_the_recurrent_state_of_each_acceptance_length(engines, arch):
    from nextn.models.cache import Cache
    from nextn.models.step import Step

    engine = engines(arch)
    model, cfg = engine.model, engine.model_config
    prompt = torch.tensor([_prompt(40, seed=2)])
    extra = torch.tensor([[11, 22, 33, 44]])
    rec = cfg.recurrent_layers
    assert rec, "hybrid model must have recurrent layers"

    def fresh():
        cache = Cache.allocate(cfg, 1, 64, torch.float32, "cpu", use_mtp=False)
        model.forward(prompt, Step.build([0], [0], [40], "cpu", 64, chunked=True), cache)
        return cache

    # reference: one token at a time
    seq_cache = fresh()
    reference = []
    for j in range(4):
        model.forward(extra[:, j:j + 1], Step.build([0], [40 + j], [1], "cpu", 64), seq_cache)
        seq_cache.commit([1])
        reference.append({il: (seq_cache.conv[il].clone(), seq_cache.ssm[il].clone()) for il in rec})
    for keep in range(1, 5):
        cache = fresh()
        model.forward(extra, Step.build([0], [40], [4], "cpu", 64), cache)
        snapshots = {il: cache.pending[il].states[0, :, keep - 1].clone() for il in rec}
        cache.commit([keep])
        for il in rec:
            assert torch.equal(cache.ssm[il][0], snapshots[il])            # exactly the kept snapshot
            conv_ref, ssm_ref = reference[keep - 1][il]   # same maths, batched: equal up to rounding
            assert torch.allclose(cache.conv[il], conv_ref, atol=1e-4, rtol=1e-4)
            assert torch.allclose(cache.ssm[il], ssm_ref, atol=1e-4, rtol=1e-4)
            other = reference[keep % 4][il][1]             # and clearly not another length's state
            assert not torch.allclose(cache.ssm[il], other, atol=1e-3, rtol=1e-3)


def _exact_second_token_distribution(engine, prompt, params):
    """p(x2) = sum_x1 p(x1 | prompt) p(x2 | prompt, x1), computed with plain forwards."""
    from nextn.models.cache import Cache
    from nextn.engine.sampling import probabilities
    from nextn.models.step import Step

    model, cfg = engine.model, engine.model_config

    def next_probs(ids):
        cache = Cache.allocate(cfg, 1, 128, torch.float32, "cpu", use_mtp=False)
        h = model.forward(torch.tensor([ids]), Step.build([0], [0], [len(ids)], "cpu", 128, chunked=True), cache)
        return probabilities(model.logits(h[:, -1]), params)[0]

    with torch.inference_mode():
        p1 = next_probs(prompt)
        total = torch.zeros_like(p1)
        for t in p1.nonzero().flatten().tolist():
            total += p1[t] * next_probs(prompt + [t])
    assert abs(float(total.sum()) - 1) < 1e-4
    return total


@pytest.mark.parametrize("drafter", ["mtp", "mtp-vocab-64", "draft-model"])
def test_speculative_sampling_reproduces_the_target_distribution(tiny, tiny_draft, drafter):
    """Chi-square of the second token against the exact target distribution, drafts from the MTP head, from
    the MTP head over 64 of 320 ids (the draft distribution is over that subset), or from a draft model."""
    params = dict(temperature=1.0, max_tokens=3, ignore_eos=True)
    kw = {"mtp": {}, "mtp-vocab-64": {"draft_vocab": 64},
          "draft-model": {"spec": "draft", "model_draft": str(tiny_draft("qwen35"))}}[drafter]
    engine = Engine(model=str(tiny("qwen35")), **{"spec": "mtp", **kw}, n_parallel=16, progress=False)
    prompt = _prompt(24, seed=3)
    exact = _exact_second_token_distribution(engine, prompt, SamplingParams(**params))
    n = 1600
    spec = SpecConfig(draft_max=1, adaptive=False, drafters=engine.drafters)
    seqs = [engine.add_request(prompt, SamplingParams(**params, seed=i), spec) for i in range(n)]
    while engine.has_work:
        engine.step()
    second = torch.tensor([s.generated[1] for s in seqs])
    drafted = sum(s.stats.n_draft_tokens for s in seqs)
    accepted = sum(s.stats.n_accepted for s in seqs)
    assert drafted > 0 and 0 < accepted < drafted          # both accept and reject paths ran
    support = exact.nonzero().flatten()
    observed = torch.bincount(second, minlength=exact.numel())[support].float()
    assert int(observed.sum()) == n                         # nothing outside the target's support
    expected = exact[support] * n
    keep = expected >= 5
    obs = torch.cat([observed[keep], observed[~keep].sum()[None]]) if (~keep).any() else observed
    exp = torch.cat([expected[keep], expected[~keep].sum()[None]]) if (~keep).any() else expected
    assert sstats.chisquare(obs.numpy(), exp.numpy() * obs.sum().item() / exp.sum().item()).pvalue > 1e-3


def test_trained_demo_model_accepts_drafts_and_stats_add_up(demo_model):
    engine = Engine(model=str(demo_model), spec="mtp", progress=False)
    prompt = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line.\"\"\"\n"
    plain = Engine(model=str(demo_model), spec="none", progress=False).generate(
        prompt, SamplingParams(max_tokens=64, ignore_eos=True))
    res = engine.generate(prompt, SamplingParams(max_tokens=64, ignore_eos=True),
                          spec=SpecConfig(draft_max=3, adaptive=False))
    st = res.stats
    assert res.tokens == plain.tokens
    assert st.acceptance_rate > 0.3 and st.n_accepted > 0
    assert st.n_generated == len(res.tokens) == 64
    assert st.n_generated == 1 + st.n_steps + st.n_accepted          # each step emits 1 + accepted drafts
    assert st.n_draft_tokens == sum(st.drafted_per_pos) and st.n_accepted == sum(st.accepted_per_pos)
    assert st.drafted_per_pos[0] == st.n_drafts
    assert st.mean_accepted_length == pytest.approx(1 + st.n_accepted / st.n_drafts)
    assert all(st.accepted_per_pos[i + 1] <= st.accepted_per_pos[i] for i in range(len(st.accepted_per_pos) - 1))


def test_logprobs_of_accepted_drafts_equal_plain_decoding(demo_model):
    """Log-probabilities come from the verifier's rows: with MTP (tokens accepted from drafts) they are the
    plain decode's, bit for bit, as are the top alternatives."""
    params = SamplingParams(max_tokens=48, ignore_eos=True, logprobs=4)
    engine = Engine(model=str(demo_model), spec="mtp", progress=False)
    spec = engine.generate("class Stack:\n    def __init__(self):\n", params, spec=SpecConfig(draft_max=3, adaptive=False))
    plain = engine.generate("class Stack:\n    def __init__(self):\n", params, spec=SpecConfig(draft_max=0))
    assert spec.stats.n_accepted > 10 and spec.tokens == plain.tokens
    assert spec.logprobs == plain.logprobs and len(spec.logprobs) == 48
    assert all(t == top[0][0] and lp == top[0][1] for t, lp, top in spec.logprobs)     # greedy: the argmax


def test_long_greedy_runs_are_batch_invariant_on_the_trained_model(demo_model):
    """Several hundred tokens of a trained model, where near-ties between the top logits do occur: MTP
    verification (k+1 rows per sequence) and a batch of sequences decoding together must reproduce plain
    one-row greedy decoding token for token."""
    prompts = ["import os\nimport sys\n\n\ndef main(argv):\n", "class Stack:\n    def __init__(self):\n",
               "def parse_args(argv):\n    parser = argparse.ArgumentParser(\n"]
    params = SamplingParams(max_tokens=320, ignore_eos=True)
    plain = Engine(model=str(demo_model), spec="none", progress=False)
    want = [plain.generate(p, params).tokens for p in prompts]
    engine = Engine(model=str(demo_model), spec="mtp", progress=False)
    for k in (1, 3):
        spec = SpecConfig(draft_max=k, adaptive=False)
        seqs = [engine.add_request(engine.encode_prompt(p), params, spec) for p in prompts]
        while engine.has_work:
            engine.step()
        assert [s.generated for s in seqs] == want
        assert all(s.stats.n_accepted > 50 for s in seqs)


def test_int8_kernels_keep_mtp_greedy_equal_to_plain_greedy(demo_q8):
    """`--kernels int8` (the default) changes the numbers (activations quantized per row) but not batch invariance:
    MTP verification and batched sequences reproduce plain one-row greedy decoding token for token,
    and the trained head's drafts are still accepted."""
    prompts = ["import os\nimport sys\n\n\ndef main(argv):\n", "class Stack:\n    def __init__(self):\n"]
    params = SamplingParams(max_tokens=160, ignore_eos=True)
    plain = Engine(model=str(demo_q8), spec="none", kernels="int8", progress=False)
    want = [plain.generate(p, params).tokens for p in prompts]
    exact = Engine(model=str(demo_q8), spec="none", kernels="exact", progress=False).generate(prompts[0], params).tokens
    assert exact != want[0]                       # the int8 kernels did run (and differ in later tokens)...
    assert exact[:8] == want[0][:8]               # ...from numbers close to the exact ones
    engine = Engine(model=str(demo_q8), spec="mtp", kernels="int8", progress=False)
    spec = SpecConfig(draft_max=3, adaptive=False)
    seqs = [engine.add_request(engine.encode_prompt(p), params, spec) for p in prompts]
    while engine.has_work:
        engine.step()
    assert [s.generated for s in seqs] == want
    assert all(s.stats.n_accepted > 30 for s in seqs)


def test_mtp_off_reads_no_mtp_tensors(tiny, monkeypatch):
    """With --spec none the MTP block is neither read from the file nor allocated; with MTP on, the
    weights in memory grow by exactly the head's bytes in the file (weights stay as stored)."""
    from nextn.gguf.reader import GGUFFile

    read = []
    real = GGUFFile.tensor
    monkeypatch.setattr(GGUFFile, "tensor", lambda self, name: read.append(name) or real(self, name))
    off = Engine(model=str(tiny("qwen35")), spec="none", progress=False)
    assert read and not any(n.startswith("blk.4.") for n in read)
    assert len(off.model.layers) == off.model_config.n_layer and not off.use_mtp
    read.clear()
    on = Engine(model=str(tiny("qwen35")), spec="mtp", progress=False)
    assert any(n.startswith("blk.4.nextn") for n in read)
    head = sum(t.n_bytes for name, t in on.file.tensors.items() if name.startswith("blk.4."))
    assert on.model.nbytes() - off.model.nbytes() == head            # MTP on adds the head, nothing else
    assert on.runner.cache.nbytes() > off.runner.cache.nbytes()


@pytest.mark.parametrize("arch", ["qwen35", "glm4moe"])
def test_penalties_and_stop_strings_behave_the_same_with_mtp(engines, arch, monkeypatch):
    """Penalties see the drafts before them, so greedy output with penalties still matches plain."""
    prompt = _prompt(seed=4)
    params = SamplingParams(max_tokens=40, ignore_eos=True, repetition_penalty=1.3, presence_penalty=0.5,
                            frequency_penalty=0.2)
    plain = engines(arch, "none").generate(prompt, params)
    real = engines(arch).generate(prompt, params, spec=SpecConfig(draft_max=2, adaptive=False, p_min=0.01))
    assert real.tokens == plain.tokens                  # the MTP's own (penalised, p-min gated) drafts
    rng = torch.Generator().manual_seed(1)

    def oracle(seqs, ks, gens):   # drafts that are often right, so penalised rows get verified
        out = []
        for seq, k in zip(seqs, ks):
            d = plain.tokens[seq.n_generated:seq.n_generated + k]
            if d and torch.rand((), generator=rng) < 0.3:
                d = d[:-1] + [(d[-1] + 7) % 300]
            out.append(d)
        return Proposal(out, [None] * len(out), 1)

    monkeypatch.setattr(engines(arch).drafter.model, "propose", oracle)
    got = engines(arch).generate(prompt, params, spec=SpecConfig(draft_max=3, adaptive=False))
    assert got.tokens == plain.tokens and got.stats.n_accepted > 0
    text = plain.text
    middle = next(i for i in range(len(text) // 2, len(text) - 3) if text[i:i + 3].strip())
    stop = text[middle:middle + 3]                      # a non-blank piece from the second half
    cut = engines(arch).generate(prompt, SamplingParams(max_tokens=40, ignore_eos=True, repetition_penalty=1.3,
                                                        presence_penalty=0.5, frequency_penalty=0.2, stop=[stop]),
                                 spec=SpecConfig(draft_max=3, adaptive=False))
    assert cut.finish_reason == "stop" and cut.text == text[:text.find(stop)]


@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next"])
@torch.inference_mode()
def test_native_rollback_restores_the_exact_state_of_each_acceptance_length(tiny, arch):
    """CPU path: verify 4 tokens in one forward, keep k of them; the conv and recurrent state must be the
    very bits plain decoding of those k tokens leaves."""
    from nextn.gguf.reader import open_gguf
    from nextn.models.buffers import Buffers
    from nextn.models.cache import Cache
    from nextn.models.config import ModelConfig
    from nextn.models.model import Model
    from nextn.models.step import Step

    gf = open_gguf(tiny(arch))
    cfg = ModelConfig.from_gguf(gf)
    model = Model.load(gf, cfg, progress=False)
    prompt, extra = torch.tensor([_prompt(40, seed=2)]), [11, 22, 33, 44]
    buf = Buffers(cfg, model.layers, cfg.n_vocab, max_rows=4, max_seqs=1)

    def fresh():
        cache = Cache.allocate(cfg, 1, 64, torch.float32, "cpu", use_mtp=False, rollback=True)
        model.forward(prompt, Step.build([0], [0], [40], "cpu", 64, chunked=True), cache)
        return cache

    def decode(cache, start, tokens):
        buf.rows.fill([0], [start], [len(tokens)])
        buf.tokens[:len(tokens)] = torch.tensor(tokens, dtype=torch.int32)
        model.emit_trunk(cache, buf)

    plain, reference = fresh(), []
    for j, tok in enumerate(extra):
        decode(plain, 40 + j, [tok])
        reference.append({il: (plain.conv[il].clone(), plain.ssm[il].clone()) for il in cfg.recurrent_layers})
    for keep in range(1, 5):
        cache = fresh()
        decode(cache, 40, extra)
        buf.rows.seq_keep[0] = keep
        model.emit_commit(cache, buf)
        for il in cfg.recurrent_layers:
            assert torch.equal(cache.conv[il], reference[keep - 1][il][0]), (keep, il)
            assert torch.equal(cache.ssm[il], reference[keep - 1][il][1]), (keep, il)
        assert not torch.equal(cache.ssm[cfg.recurrent_layers[0]], reference[keep % 4][cfg.recurrent_layers[0]][1])


@pytest.mark.parametrize("arch", ["qwen35", "glm4moe"])
def test_eager_ops_and_replayed_plans_give_the_same_tokens(tiny, arch):
    """--no-compile runs the decode step op by op; the default replays the recorded plan: same bits."""
    prompt = _prompt(seed=6)
    out = {}
    for compile_ in (True, False):
        for spec in ("none", "mtp"):
            engine = Engine(model=str(tiny(arch)), spec=spec, compile=compile_, progress=False)
            res = engine.generate(prompt, GREEDY, spec=SpecConfig(draft_max=3, adaptive=False) if spec == "mtp" else None)
            out[(compile_, spec)] = res.tokens
            assert engine.runner.trunk.plan is not None if compile_ else engine.runner.trunk.plan is None
    assert len({tuple(v) for v in out.values()}) == 1


@pytest.mark.parametrize("arch", ["deepseek2", "glm4moe"])
def test_two_mtp_layers_at_their_own_depths_keep_greedy_output(models_dir, arch):
    """Depth 1 through MTP layer 1, depth 2 through layer 2, depth 3 reusing layer 2; catch-up of layer 2's
    cache across prefill chunks and commits, batched with other k: output equals plain greedy."""
    from nextn_dev.tiny import make_gguf

    path = make_gguf(models_dir / f"{arch}-mtp2-spec.gguf", arch, workdir=models_dir / f"{arch}-mtp2-spec.hf", mtp=2,
                     seed=4)
    prompt = _prompt(seed=9)
    plain = Engine(model=str(path), spec="none", prefill_chunk=32, progress=False).generate(prompt, GREEDY).tokens
    engine = Engine(model=str(path), spec="mtp", prefill_chunk=32, n_parallel=3, progress=False)
    assert engine.drafter.model.n_layers == 2
    seqs = [engine.add_request(prompt, GREEDY, SpecConfig(draft_max=k, adaptive=False)) for k in (1, 2, 3)]
    while engine.has_work:
        engine.step()
    assert all(s.generated == plain for s in seqs)
    assert seqs[2].stats.drafted_per_pos[2] > 0                   # depth 3 was drafted (layer 2 reused)


def test_mtp_layers_option_loads_only_the_first_layers(models_dir):
    """--mtp-layers 1 on a two-layer head: only MTP layer 1 is read (fewer weight bytes, no tensor of layer 2),
    every depth reuses it, and the output still equals plain greedy."""
    from nextn.cli import mtp_label
    from nextn.errors import NextnError
    from nextn_dev.tiny import make_gguf

    path = make_gguf(models_dir / "deepseek2-mtp2-spec.gguf", "deepseek2", workdir=models_dir / "deepseek2-mtp2-spec.hf",
                     mtp=2, seed=4)
    prompt = _prompt(seed=9)
    plain = Engine(model=str(path), spec="none", prefill_chunk=32, progress=False)
    both = Engine(model=str(path), spec="mtp", prefill_chunk=32, progress=False)
    one = Engine(model=str(path), spec="mtp", mtp_layers=1, prefill_chunk=32, progress=False)
    n = plain.model.cfg.n_layer
    assert (both.model.cfg.n_mtp, one.model.cfg.n_mtp) == (2, 1) and one.drafter.model.n_layers == 1
    assert len(one.model.layers) == n + 1 and len(both.model.layers) == n + 2
    assert one.model.nbytes() < both.model.nbytes()
    assert one.model.layers[n].keys() == both.model.layers[n].keys()
    assert (mtp_label(both), mtp_label(one)) == ("MTP (2 layers)", "MTP (1 of 2 layers)")
    res = one.generate(prompt, GREEDY, spec=SpecConfig(draft_max=3, adaptive=False))
    assert res.tokens == plain.generate(prompt, GREEDY).tokens
    assert res.stats.drafted_per_pos[2] > 0                      # depth 3 drafted through the one layer kept
    assert Engine(model=str(path), spec="mtp", mtp_layers=5, progress=False).model.cfg.n_mtp == 2
    with pytest.raises(NextnError, match="--mtp-layers"):
        Engine(model=str(path), spec="none", mtp_layers=1, progress=False)
    with pytest.raises(NextnError, match="--mtp-layers"):
        Engine(model=str(path), spec="mtp", mtp_layers=-1, progress=False)


def test_sliding_window_rings_wrap_and_keep_output(tiny, monkeypatch):
    """MiMo's sliding-window layers (the MTP layers among them) keep a ring of window + chunk + slack rows;
    over a context many rings long, batched and speculating (rejected drafts overwrite ring rows), the tokens
    equal those of the same engine with a row per position, and the cache is smaller."""
    import nextn.engine.runner as runner
    from nextn.models.cache import RING_SLACK

    path = str(tiny("mimo2"))
    prompts = [_prompt(60, seed=1), _prompt(23, seed=2)]
    params = SamplingParams(max_tokens=150, ignore_eos=True)

    def run(**kw):
        engine = Engine(model=path, spec="mtp", prefill_chunk=16, n_parallel=2, ctx_size=512, progress=False, **kw)
        seqs = [engine.add_request(p, params, SpecConfig(draft_max=k, adaptive=False)) for p, k in zip(prompts, (3, 2))]
        while engine.has_work:
            engine.step()
        return engine, [s.generated for s in seqs]

    ringed, out = run()
    cfg = ringed.model.cfg
    rings = ringed.runner.cache.ring
    assert sorted(rings) == [il for il in range(cfg.n_layer + cfg.n_mtp) if cfg.is_swa(il)] and cfg.n_mtp > 1
    assert set(rings.values()) == {cfg.n_swa + 16 + RING_SLACK} and 210 > 3 * max(rings.values())
    assert ringed.stats.n_draft_tokens > ringed.stats.n_accepted          # rejected drafts were written and rolled back
    plain = Engine(model=path, spec="none", prefill_chunk=16, ctx_size=512, progress=False)
    assert plain.runner.cache.ring and out[1] == plain.generate(prompts[1], params).tokens
    monkeypatch.setattr(runner, "ring_rows", lambda cfg, chunk: 0)
    full, expected = run()
    assert not full.runner.cache.ring and full.runner.cache.nbytes() > ringed.runner.cache.nbytes()
    assert out == expected


def test_ring_rows_and_masks_of_static_steps_match_built_ones():
    """The CUDA graphs' static steps (every row written, padding to the spare row) address a ring as built
    steps do: the same rows for real tokens, padding to the ring's own spare row, the same masks."""
    from nextn.models.step import Step

    slots, starts, n = [0, 1], [5, 70], [3, 2]
    built = Step.build(slots, starts, n, "cpu", max_len=200, shift=1)
    static = Step.static(torch.tensor(slots), torch.tensor(starts), torch.tensor(n), T=3, kv_len=80, max_len=200,
                         shift=1)
    (bpos, bmask), (spos, smask) = built.ring(20, 9), static.ring(20, 9)
    valid = static.valid.flatten()
    assert spos[valid].tolist() == bpos.tolist() == [4, 5, 6, 9, 10] and spos[~valid].tolist() == [20]
    assert torch.equal(smask[built.valid[:, None, :, None].expand_as(bmask)], bmask[built.valid[:, None, :, None]
                                                                                   .expand_as(bmask)])
    row = bmask[1, 0, 1]                 # position 71 at row 70 (ring row 10): rows of positions 63..71 only
    assert row.nonzero().flatten().tolist() == sorted(p % 20 for p in range(62, 71))

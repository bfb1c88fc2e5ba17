"""Drafters besides MTP: n-gram lookup (alone and with MTP), the choice between them, per-drafter stats."""

import pytest
import torch

from nextn.drafters.ngram import NGramIndex, continuation, lookup
from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig, parse_spec
from nextn.engine.tuner import Acceptance, KTuner
from nextn.errors import NextnError

GREEDY = SamplingParams(max_tokens=48, ignore_eos=True)


def test_lookup_finds_the_longest_most_recent_match():
    #         0  1  2  3  4  5  6  7  8  9 10 11 12 13
    tokens = [5, 1, 2, 3, 9, 7, 1, 2, 3, 8, 4, 1, 2, 3]
    length, at = lookup(tokens, NGramIndex(3))
    assert (length, at) == (3, 9)              # [1 2 3] at 6 (most recent, same length as at 1) -> 8 follows
    tokens = [4, 1, 2, 3, 9, 7, 1, 2, 3, 8, 4, 1, 2, 3]
    assert lookup(tokens, NGramIndex(3)) == (4, 4)     # [4 1 2 3] at 0 is longer -> 9 follows
    assert lookup([1, 2, 3, 4, 5], NGramIndex(3)) == (0, -1)
    assert lookup([1, 2, 3], NGramIndex(3)) == (0, -1)


def test_lookup_index_grows_with_the_sequence():
    index, tokens = NGramIndex(2), [1, 2, 3]
    assert lookup(tokens, index) == (0, -1)
    tokens += [1, 2]
    assert lookup(tokens, index) == (2, 2)
    tokens += [3, 1, 2]
    assert lookup(tokens, index) == (5, 5) and index.indexed == len(tokens) - 2


def test_continuation_reads_on_into_its_own_drafts():
    tokens = [7, 1, 2, 1, 2]                    # the match [1 2] at 1 continues at 3: the present
    assert continuation(tokens, 3, 5) == [1, 2, 1, 2, 1]
    assert continuation([1, 2, 3, 9, 1, 2, 3], 3, 2) == [9, 1]


def test_spec_names_parse_and_bad_ones_are_refused():
    assert parse_spec("mtp+ngram") == ("mtp", "ngram") and parse_spec("none") == ()
    for bad in ("mtp+draft", "ngram+ngram", "eagle", ""):
        with pytest.raises(ValueError):
            parse_spec(bad)
    with pytest.raises(NextnError, match="--spec"):
        Engine(spec="medusa", progress=False)


def test_tuner_drafts_an_ngram_match_only_as_far_as_it_pays():
    t = KTuner(3, ngram_max=8)
    good, bad = Acceptance(8, prior=0.95), Acceptance(8, prior=0.05)
    assert t.ngram_length(good, 8, 1, None, 0) == 8            # nothing measured: try the match whole
    for T, s in ((1, 0.010), (2, 0.011), (4, 0.013), (9, 0.020)):
        for _ in range(3):
            t.costs.observe_trunk(1, T, s)
    t.costs.observe_draft(1, 1, 0.002)
    assert t.ngram_length(good, 8, 1, None, 0) == 8
    assert t.ngram_length(bad, 8, 1, None, 0) == 0             # plain decoding pays more
    mtp = Acceptance(3, prior=0.9)
    weak = Acceptance(8, prior=0.5)
    assert t.ngram_length(weak, 8, 1, mtp, 3) == 0             # a strong MTP head beats a weak match
    assert 0 < t.ngram_length(weak, 8, 1, None, 0) < 8         # but a weak match beats plain, briefly
    probes = [t.ngram_length(bad, 8, 1, None, 0) for _ in range(64)]
    assert 2 <= sum(p > 0 for p in probes) <= 8                 # a refused match is retried, rarely


def _repeating_prompt(seed=0, n=40):
    part = torch.randint(3, 300, (n,), generator=torch.Generator().manual_seed(seed)).tolist()
    return part + [1, 2] + part + [1, 2] + part[:n // 2]


@pytest.fixture(scope="module")
def engines(tiny):
    made = {}

    def get(arch, spec):
        if (arch, spec) not in made:
            # random models rarely repeat themselves: 1-token matches make n-gram drafts (mostly rejected) happen
            made[(arch, spec)] = Engine(model=str(tiny(arch)), spec=spec, prefill_chunk=32, ngram_min=1,
                                        progress=False)
        return made[(arch, spec)]

    return get


@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next", "glm4moe", "mimo2"])
@pytest.mark.parametrize("spec", ["ngram", "mtp+ngram"])
def test_ngram_drafting_keeps_greedy_output_identical(engines, arch, spec):
    prompt = _repeating_prompt()
    plain = engines(arch, "none").generate(prompt, GREEDY).tokens
    for adaptive in (False, True):
        got = engines(arch, spec).generate(prompt, GREEDY, spec=SpecConfig(draft_max=3, adaptive=adaptive,
                                                                          drafters=tuple(spec.split("+"))))
        assert got.tokens == plain
        if not adaptive:        # adaptive: the tuner soon stops drafting matches that random models never keep
            assert got.stats.by_drafter["ngram"].n_draft_tokens > 0
        assert sum(c.n_draft_tokens for c in got.stats.by_drafter.values()) == got.stats.n_draft_tokens


def test_ngram_accepts_long_drafts_when_the_output_repeats_the_prompt(demo_model):
    """A trained model asked to continue text it has seen twice copies it: n-gram drafts of 8 are kept."""
    code = ("def add(a, b):\n    return a + b\n\n\ndef sub(a, b):\n    return a - b\n\n\n"
            "def mul(a, b):\n    return a * b\n\n\n")
    prompt = code * 3
    params = SamplingParams(max_tokens=64, ignore_eos=True)
    plain = Engine(model=str(demo_model), spec="none", progress=False).generate(prompt, params)
    res = Engine(model=str(demo_model), spec="ngram", progress=False).generate(
        prompt, params, spec=SpecConfig(adaptive=False, drafters=("ngram",)))
    assert res.tokens == plain.tokens
    ngram = res.stats.by_drafter["ngram"]
    assert ngram.accepted_per_pos[7] > 0 and ngram.acceptance_rate > 0.7
    assert res.stats.n_steps < 64 / 3                 # three or more tokens per trunk forward


def test_sampling_with_ngram_drafts_is_seeded_and_counts_add_up(engines):
    prompt = _repeating_prompt(seed=2)
    params = SamplingParams(temperature=0.7, max_tokens=40, ignore_eos=True, seed=5)
    engine = engines("qwen35", "mtp+ngram")
    a, b = engine.generate(prompt, params), engine.generate(prompt, params)
    assert a.tokens == b.tokens
    st = a.stats
    assert st.n_generated == 1 + st.n_steps + st.n_accepted
    assert st.n_draft_tokens == sum(c.n_draft_tokens for c in st.by_drafter.values())


def test_requests_choose_among_the_engines_drafters(engines):
    engine = engines("qwen35", "mtp+ngram")
    prompt = _repeating_prompt(seed=3)
    only_mtp = engine.generate(prompt, GREEDY, spec=SpecConfig(adaptive=False, drafters=("mtp",)))
    assert set(only_mtp.stats.by_drafter) == {"mtp"}
    only_ngram = engine.generate(prompt, GREEDY, spec=SpecConfig(adaptive=False, drafters=("ngram",)))
    assert set(only_ngram.stats.by_drafter) == {"ngram"}
    # an engine without n-gram ignores it: the request decodes plainly
    plain = engines("qwen35", "mtp").generate(prompt, GREEDY, spec=SpecConfig(adaptive=False, drafters=("ngram",)))
    assert plain.stats.n_draft_tokens == 0 and plain.tokens == only_ngram.tokens


# ---- reduced-vocabulary MTP drafting ---------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen35", "qwen35moe", "qwen3next", "glm4moe", "mimo2"])
def test_a_reduced_draft_vocabulary_keeps_greedy_output_identical(tiny, arch):
    prompt = _repeating_prompt(seed=4)
    plain = Engine(model=str(tiny(arch)), spec="none", progress=False).generate(prompt, GREEDY).tokens
    engine = Engine(model=str(tiny(arch)), spec="mtp", draft_vocab=64, progress=False)
    ids = engine.model.draft_ids      # no frequency list: the lowest ids, end-of-generation tokens among them
    assert len(set(ids)) == 64 and set(engine.tokenizer.eog_ids) <= set(ids) and set(ids) - {0} <= set(range(64))
    assert engine.model.mtp_head().shape[0] == 64
    got = engine.generate(prompt, GREEDY, spec=SpecConfig(draft_max=3, adaptive=False))
    assert got.tokens == plain
    assert got.stats.n_draft_tokens > 0


def test_draft_vocab_ranking_from_a_corpus_and_a_trimmed_head_file(tiny, tmp_path):
    from nextn.gguf import draft_vocab
    from nextn.gguf.reader import open_gguf
    import shutil

    model = tmp_path / "m.gguf"
    shutil.copy(tiny("qwen35"), model)
    engine = Engine(model=str(model), spec="none", progress=False)
    corpus = tmp_path / "corpus.txt"
    corpus.write_text("def function_1(x):\n    return x + 1\n" * 20 + "class A:\n    pass\n")
    path, info = draft_vocab.count_file(model, [str(corpus)])
    assert path == tmp_path / "m.draft-vocab.json" and info["tokens"] > 0
    ids = __import__("json").loads(path.read_text())["ids"]
    counts = __import__("collections").Counter(engine.tokenizer.encode(corpus.read_text(), add_bos=False))
    assert sorted(ids) == list(range(engine.model_config.n_vocab))
    assert [counts[t] for t in ids] == sorted((counts[t] for t in ids), reverse=True)
    eos = min(engine.tokenizer.eog_ids)
    assert eos in draft_vocab.choose(ids, 8, {eos}) and len(draft_vocab.choose(ids, 8, {eos})) == 8

    # the in-memory subset (ranked by the list beside the model) and a trimmed head file draft the same
    head = draft_vocab.trim_head(model, 48)
    assert open_gguf(head).tensors["blk.4.nextn.shared_head_head.weight"].data.shape[0] == 48
    assert "output.weight" not in open_gguf(head).tensors and "token_embd.weight" not in open_gguf(head).tensors
    prompt = _repeating_prompt(seed=5)
    spec = SpecConfig(draft_max=3, adaptive=False)
    a = Engine(model=str(model), spec="mtp", draft_vocab=48, progress=False)
    b = Engine(model=str(model), mtp_model=str(head), spec="mtp", progress=False)
    assert a.model.draft_ids == b.model.draft_ids == draft_vocab.choose(ids, 48, set(engine.tokenizer.eog_ids))
    ra, rb = a.generate(prompt, GREEDY, spec=spec), b.generate(prompt, GREEDY, spec=spec)
    assert ra.tokens == rb.tokens and ra.stats.accepted_per_pos == rb.stats.accepted_per_pos
    with pytest.raises(NextnError, match="holds 48 token ids"):
        Engine(model=str(model), mtp_model=str(head), spec="mtp", draft_vocab=100, progress=False)


def test_draft_vocab_needs_mtp():
    with pytest.raises(NextnError, match="--draft-vocab"):
        Engine(spec="ngram", draft_vocab=100, progress=False)


# ---- a separate draft model ----------------------------------------------------------------------------
@pytest.mark.parametrize("arch", ["qwen35", "qwen3next", "glm4moe"])
def test_a_draft_model_keeps_greedy_output_identical(tiny, tiny_draft, models_dir, arch):
    """Drafts of 6 from three draft models: a 2-layer random one (every draft rejected), the trunk re-quantized
    to Q5_0 (partly accepted: recurrent state restored to the snapshot, KV kept to the accepted length) and
    the trunk itself (every draft accepted); two sequences share each batch."""
    from nextn.gguf.tools import quantize_file

    prompt = _repeating_prompt(seed=6)
    params = SamplingParams(max_tokens=40, ignore_eos=True)
    plain = Engine(model=str(tiny(arch)), spec="none", progress=False).generate(prompt, params).tokens
    near = models_dir / f"draft-{arch}-q5_0.gguf"
    if not near.exists():
        quantize_file(tiny(arch), near, "q5_0")
    for draft in (tiny_draft(arch), near, tiny(arch)):
        engine = Engine(model=str(tiny(arch)), spec="draft", model_draft=str(draft), draft_max=6, prefill_chunk=32,
                        n_parallel=2, progress=False)
        spec = SpecConfig(draft_max=6, adaptive=False, drafters=("draft",))
        seqs = [engine.add_request(prompt, params, spec) for _ in range(2)]
        while engine.has_work:
            engine.step()
        for seq in seqs:
            assert seq.generated == plain
            st = seq.stats.by_drafter["draft"]
            assert st.n_draft_tokens > 0
            if draft == near:
                assert 0 < st.n_accepted < st.n_draft_tokens and 0 < st.accepted_per_pos[1] < st.drafted_per_pos[1]
            if draft == tiny(arch):
                assert st.n_accepted == st.n_draft_tokens       # the same model drafts exactly its own output


def test_draft_model_with_ngram_and_sampling_counts_add_up(tiny, tiny_draft):
    engine = Engine(model=str(tiny("qwen35")), spec="draft+ngram", model_draft=str(tiny_draft("qwen35")),
                    ngram_min=1, progress=False)
    params = SamplingParams(temperature=0.7, max_tokens=40, ignore_eos=True, seed=3)
    a, b = (engine.generate(_repeating_prompt(seed=7), params) for _ in range(2))
    assert a.tokens == b.tokens
    st = a.stats
    assert st.n_generated == 1 + st.n_steps + st.n_accepted
    assert st.n_draft_tokens == sum(c.n_draft_tokens for c in st.by_drafter.values())


def test_a_draft_model_with_another_vocabulary_is_refused(tiny, tiny_draft):
    with pytest.raises(NextnError, match="vocabulary .* must share the tokenizer"):
        Engine(model=str(tiny("qwen35")), spec="draft", model_draft=str(tiny_draft("qwen35", vocab_size=400)),
               progress=False)
    with pytest.raises(NextnError, match="--model-draft"):
        Engine(model=str(tiny("qwen35")), spec="draft", progress=False)


def test_command_line_draft_vocab_trim_head_and_convert(tiny, tmp_path, capsys):
    import shutil

    from nextn.cli import main
    from nextn.gguf.reader import open_gguf

    model = tmp_path / "m.gguf"
    shutil.copy(tiny("qwen35"), model)
    corpus = tmp_path / "c.txt"
    corpus.write_text("def f(x):\n    return x\n" * 10)
    assert main(["gguf", "draft-vocab", str(model), str(corpus)]) == 0
    assert "most frequent ids cover" in capsys.readouterr().out
    assert main(["gguf", "trim-head", str(model), "--draft-vocab", "32", "-o", str(tmp_path / "h.gguf")]) == 0
    assert open_gguf(tmp_path / "mtp-h.gguf").meta("nextn.draft_vocab.ids") is not None
    assert main(["gguf", "trim-head", str(model), "--draft-vocab", "0"]) != 0          # one-line error
    assert "--draft-vocab must be in" in capsys.readouterr().err
    assert main(["gguf", "draft-vocab", str(model), str(tmp_path / "missing.txt")]) != 0
    hf = tiny("qwen35").parent / "qwen35.hf"
    assert main(["convert", str(hf), "-o", str(tmp_path / "c.gguf")]) == 0
    assert "form:" in capsys.readouterr().out

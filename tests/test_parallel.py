"""Tensor and expert parallelism over torch.distributed: two gloo ranks on this machine (the test process is
rank 0, nextn spawns rank 1). Every family decodes the same tokens as one rank, with and without MTP."""

from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from gguf import GGMLQuantizationType as Q, quants

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.errors import NextnError
from nextn.kernels.weights import QWeight
from nextn.models.config import ModelConfig
from nextn.parallel.shard import _take, local_config
from nextn_dev.tiny import ARCHS, MIMO, MLA

PROMPT = "def fibonacci(n):"


@pytest.fixture(scope="module")
def pair(tiny):
    """pair(arch, spec, **kw) -> (one-rank engine, two-rank engine) on the tiny random model of arch."""
    def get(arch, spec="mtp", **kw):
        model = str(tiny(arch))
        return (Engine(model=model, spec=spec, progress=False, **kw),
                Engine(model=model, spec=spec, progress=False, tp=2, **kw))
    return get


def _block_bytes(model, blocks) -> int:
    return sum((t.data if isinstance(t, QWeight) else t).nbytes for il in blocks for t in model.layers[il].values())


@pytest.mark.parametrize("arch", ARCHS + MLA + MIMO)
@pytest.mark.parametrize("spec,place", [("none", "auto"), ("mtp", "split"), ("mtp", "rank0")])
def test_two_ranks_decode_the_same_tokens_as_one(pair, arch, spec, place):
    """Split, the MTP head is sharded like the trunk; on rank 0 its blocks are whole there (the trunk shard holds
    none of them) and its output rows stay split with the trunk's."""
    one, two = pair(arch, spec, draft_max=3, adaptive=False, tp_mtp=place)
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    want = one.generate(PROMPT, params)
    got = two.generate(PROMPT, params)
    assert got.tokens == want.tokens
    if spec == "mtp":
        assert (got.stats.n_draft_tokens, got.stats.n_accepted) == (want.stats.n_draft_tokens, want.stats.n_accepted)
        assert want.stats.n_draft_tokens > 0
    mtp = range(one.model.cfg.n_layer, len(one.model.layers))
    trunk = one.model.nbytes() - _block_bytes(one.model, mtp)
    if place == "rank0":
        assert two.mtp_runner is not None and not two.model.use_mtp and two.model.draft_out is not None
        assert _block_bytes(two.mtp_model, mtp) == _block_bytes(one.model, mtp) > 0      # whole, on rank 0 alone
        half = two.model.nbytes() / trunk
    else:
        assert two.mtp_runner is None
        half = two.memory()["weights_mb"] / one.memory()["weights_mb"]
    assert 0.45 < half < 0.6, f"rank 0 holds {half:.2f} of the weights"


@pytest.mark.parametrize("arch,apart", [("qwen35", True), ("mimo2", True), ("qwen35moe", False), ("glm4moe", False),
                                        ("deepseek2", False)])
def test_auto_keeps_dense_mtp_blocks_on_rank_0_and_splits_moe_ones(tiny, arch, apart):
    from nextn.engine.config import EngineConfig
    from nextn.gguf.reader import open_gguf
    from nextn.parallel.placement import Apart, mtp_placement

    gf = open_gguf(tiny(arch))
    assert mtp_placement(EngineConfig(tp=2), gf) == (Apart(whole_output=False) if apart else None)
    assert mtp_placement(EngineConfig(tp=2, draft_vocab=64), gf) == Apart(whole_output=True)   # a reduced head
    assert mtp_placement(EngineConfig(tp=2, tp_mtp="split"), gf) is None
    assert mtp_placement(EngineConfig(tp=1), gf) is None


@pytest.mark.parametrize("arch", ["qwen35", "glm4moe"])
def test_a_reduced_draft_vocabulary_runs_whole_on_rank_0(pair, arch):
    """--draft-vocab under --tp: the head's blocks and its few output rows on rank 0, drafts without the other
    rank; the same drafts and tokens as one rank with the same draft vocabulary."""
    one, two = pair(arch, "mtp", draft_max=3, adaptive=False, draft_vocab=64)
    assert two.mtp_model.draft_ids == one.model.draft_ids and len(one.model.draft_ids) == 64
    assert two.mtp_model.head is None and two.mtp_model.mtp_head().shape[0] == 64
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    want, got = one.generate(PROMPT, params), two.generate(PROMPT, params)
    assert got.tokens == want.tokens
    assert (got.stats.n_draft_tokens, got.stats.n_accepted) == (want.stats.n_draft_tokens, want.stats.n_accepted) != (0, 0)
    with pytest.raises(NextnError, match="--tp-mtp split: a reduced head runs whole on rank 0"):
        Engine(model=str(one.file.path), spec="mtp", progress=False, tp=2, tp_mtp="split", draft_vocab=64)


def test_copies_sharing_a_prefill_over_two_ranks_with_the_head_on_rank_0(demo_model):
    """n > 1 over two ranks with the MTP blocks on rank 0 (their own runner and cache there): the copies decode
    as if each had prefilled alone, and the prompt runs through the trunk once."""
    from test_shared_prefill import PROMPT as CODE, _run_together
    from nextn.engine.sequence import SpecConfig

    engine = Engine(model=str(demo_model), spec="mtp", n_parallel=3, progress=False, tp=2, tp_mtp="rank0")
    ids = engine.encode_prompt(CODE)
    sampled = [SamplingParams(max_tokens=16, temperature=0.9, seed=s, ignore_eos=True) for s in (1, 2)]
    spec = SpecConfig(draft_max=3, adaptive=False)
    alone = [engine.generate(CODE, p, spec=spec).tokens for p in sampled]
    together, rows = _run_together(engine, ids, sampled, spec)
    assert together == alone and rows == len(ids)


def test_two_ranks_give_the_same_logits_and_sampled_tokens(pair):
    one, two = pair("qwen35", "mtp")
    tokens = torch.tensor([one.encode_prompt(PROMPT * 3)])
    a, b = one.model.score(tokens, chunk=8), two.runner.model.score(tokens, chunk=8)
    assert a.shape == b.shape and torch.allclose(a, b, atol=1e-4, rtol=1e-4)
    params = SamplingParams(temperature=0.8, seed=7, max_tokens=32, ignore_eos=True)
    assert two.generate(PROMPT, params).tokens == one.generate(PROMPT, params).tokens


def test_continuous_batching_over_two_ranks(pair, demo_model):
    """Several sequences decoding together on the trained demo model (near-ties do occur), eager ops."""
    one = Engine(model=str(demo_model), spec="mtp", n_parallel=3, progress=False)
    two = Engine(model=str(demo_model), spec="mtp", n_parallel=3, progress=False, tp=2, compile=False)
    prompts = ["import os\nimport sys\n", "class Stack:\n    def __init__(self):\n", "def parse(argv):\n"]
    params = SamplingParams(max_tokens=48, ignore_eos=True)
    runs = []
    for engine in (one, two):
        seqs = [engine.add_request(engine.encode_prompt(p), params) for p in prompts]
        while engine.has_work:
            engine.step()
        runs.append([s.generated for s in seqs])
    assert runs[0] == runs[1]


def test_uneven_splits_are_refused_with_the_counts_that_work():
    cfg = ModelConfig(arch="qwen35", n_vocab=320, n_embd=64, n_layer=2, n_mtp=0, n_head=4, n_head_kv=2, head_dim=16,
                      n_rot=8, rope_theta=1e4, rms_eps=1e-6, recurrent=(True, False), ssm_conv_kernel=4,
                      ssm_head_k_dim=16, ssm_n_k_heads=2, ssm_n_v_heads=4, ssm_inner=64)
    with pytest.raises(NextnError, match=r"--tp 3: the model's 4 attention heads, 2 KV heads, 2 linear-attention "
                                         r"key heads do not split evenly.*1, 2"):
        local_config(cfg, 0, 3)
    local = local_config(cfg, 1, 2)
    assert (local.n_head, local.n_head_kv, local.ssm_n_k_heads, local.ssm_n_v_heads, local.ssm_inner) == (2, 1, 1, 2, 32)


def test_column_shards_keep_quantization_blocks_or_fall_back_to_floats():
    rng = np.random.default_rng(0)
    dense = rng.standard_normal((8, 128)).astype(np.float32)
    raw = torch.from_numpy(quants.quantize(dense, Q.Q8_0))
    w = QWeight(raw, Q.Q8_0, (8, 128))
    full = w.dense()
    aligned = list(range(32, 96))
    part = _take(w, -1, aligned)
    assert part.qtype == Q.Q8_0 and part.shape == (8, 64) and torch.equal(part.dense(), full[:, 32:96])
    cut = list(range(16, 48)) + list(range(100, 110))           # cuts blocks: decoded to float32
    part = _take(w, -1, cut)
    assert part.qtype == Q.F32 and torch.equal(part.dense(), full[:, cut])
    rows = _take(w, 0, [2, 3, 4])
    assert rows.data.data_ptr() == w.data[2].data_ptr()          # row slices stay views of the file


def test_a_killed_rank_ends_the_run_with_an_error(demo_model):
    script = textwrap.dedent(f"""
        import os, signal, time
        from nextn.engine.engine import Engine
        from nextn.engine.params import SamplingParams
        e = Engine(model={str(demo_model)!r}, spec="mtp", tp=2, progress=False)
        e.generate("def f(x):", SamplingParams(max_tokens=4))
        os.kill(e.tp.procs[0].pid, signal.SIGKILL)
        time.sleep(0.5)
        t = time.perf_counter()
        try:
            e.generate("def f(x):", SamplingParams(max_tokens=4))
        except Exception as ex:
            print("ERROR", type(ex).__name__, ex, round(time.perf_counter() - t, 2))
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    line = next(l for l in out.stdout.splitlines() if l.startswith("ERROR"))
    assert "RankLost" in line and "rank 1" in line and float(line.split()[-1]) < 5


def test_cli_refuses_a_rank_count_that_does_not_divide_the_heads(tiny):
    out = subprocess.run([sys.executable, "-m", "nextn", "generate", "-m", str(tiny("qwen35")), "--tp", "3", "-n", "4"],
                         capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and "Traceback" not in out.stderr
    assert "--tp 3: the model's 4 attention heads" in out.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("spec", ["draft", "mtp+ngram"])
def test_other_drafters_run_on_rank_0_over_a_split_trunk(tiny, tiny_draft, spec):
    """A draft model runs whole on rank 0 and n-gram drafting needs no model: only the trunk is split."""
    kw = dict(model_draft=str(tiny_draft("qwen35"))) if spec == "draft" else {}
    model = str(tiny("qwen35"))
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    prompt = PROMPT + " return fibonacci(n - 1)\n" * 3
    runs = [Engine(model=model, spec=spec, progress=False, tp=tp, draft_max=4, adaptive=False, **kw).generate(prompt, params)
            for tp in (1, 2)]
    assert runs[1].tokens == runs[0].tokens and runs[1].stats.n_draft_tokens == runs[0].stats.n_draft_tokens > 0


def test_a_trimmed_head_file_runs_on_rank_0(tiny, tmp_path):
    """A head written by `nextn gguf trim-head` holds few output rows: under --tp it drafts on rank 0, as one rank
    does; split it is refused in one line."""
    from nextn.gguf import draft_vocab

    model = tiny("qwen35")
    head = draft_vocab.trim_head(model, 48, tmp_path / "mtp-trimmed.gguf")
    params = SamplingParams(max_tokens=20, ignore_eos=True)
    runs = [Engine(model=str(model), mtp_model=str(head), spec="mtp", progress=False, tp=tp, draft_max=3,
                   adaptive=False).generate(PROMPT, params) for tp in (1, 2)]
    assert runs[1].tokens == runs[0].tokens
    assert runs[1].stats.n_draft_tokens == runs[0].stats.n_draft_tokens > 0
    out = subprocess.run([sys.executable, "-m", "nextn", "generate", "-m", str(model), "--mtp-model", str(head),
                          "--tp", "2", "--tp-mtp", "split", "-n", "4"], capture_output=True, text=True, timeout=120)
    assert out.returncode == 1 and out.stderr.strip().splitlines()[-1] == (
        "nextn: error: mtp-trimmed.gguf: a trimmed MTP head (nextn gguf trim-head) runs whole on rank 0: use "
        "--tp-mtp rank0 (or auto), not split")


COLLECTIVES = """
import sys, torch, torch.distributed as dist
from nextn.parallel.comm import Comm
rank, size, addr, out = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
dist.init_process_group("gloo", init_method=addr, rank=rank, world_size=size)
comm = Comm(rank, size)
g = torch.Generator().manual_seed(rank)
parts = torch.randn(3, 1000, generator=g)
total = comm.all_reduce(parts.clone())
first, end = comm.vocab_range(337)
logits = comm.gather_vocab(torch.arange(first, end).float()[None], 337)
torch.save({"total": total, "logits": logits, "calls": comm.calls}, f"{out}/{rank}.pt")
dist.destroy_process_group()
"""


@pytest.mark.parametrize("size", [3, 4])
def test_collectives_over_more_ranks_give_every_rank_the_same_bits(tmp_path, size):
    """Sums by recursive doubling (4 ranks: two swaps, not gloo's ring) and by gloo (3 ranks): every rank's
    part added up, bit for bit the same on every rank; the vocabulary gathered in rank order."""
    import socket

    (tmp_path / "c.py").write_text(COLLECTIVES)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        addr = f"tcp://127.0.0.1:{s.getsockname()[1]}"
    procs = [subprocess.Popen([sys.executable, str(tmp_path / "c.py"), str(r), str(size), addr, str(tmp_path)])
             for r in range(size)]
    assert all(p.wait(timeout=120) == 0 for p in procs)
    got = [torch.load(tmp_path / f"{r}.pt") for r in range(size)]
    want = sum(torch.randn(3, 1000, generator=torch.Generator().manual_seed(r)) for r in range(size))
    for g in got:
        assert torch.equal(g["total"], got[0]["total"]) and torch.allclose(g["total"], want, atol=1e-5)
        assert torch.equal(g["logits"][0], torch.arange(337).float())
    assert got[0]["calls"] == (3 if size == 4 else 2)       # log2(4) swaps for the sum, one gloo call otherwise


def test_four_ranks_decode_the_same_tokens_as_one(tiny):
    """--tp 4 (sums by recursive doubling) on the MLA + MoE model, whose 4 heads and 8 experts split four
    ways, with MTP: the tokens, drafts and acceptances of one rank. (Its own process: a process runs one
    rank count.)"""
    script = textwrap.dedent(f"""
        from nextn.engine.engine import Engine
        from nextn.engine.params import SamplingParams
        p = SamplingParams(max_tokens=24, ignore_eos=True)
        runs = [Engine(model={str(tiny("deepseek2"))!r}, spec="mtp", progress=False, draft_max=3, adaptive=False,
                       tp=tp).generate({PROMPT!r}, p) for tp in (1, 4)]
        print(runs[0].tokens == runs[1].tokens, runs[0].stats.n_draft_tokens, runs[1].stats.n_draft_tokens)
    """)
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    same, drafted_one, drafted_four = out.stdout.split()
    assert same == "True" and drafted_one == drafted_four != "0"

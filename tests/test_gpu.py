"""The CUDA path. Its Triton kernels are checked everywhere Triton is installed (without a GPU in
Triton's interpreter) against the CPU's bit-exact dequantization and the closed-form delta rule; the
whole model on CUDA (quantized weights on the GPU, CUDA graphs) only where a GPU is present."""

from __future__ import annotations

import os

import pytest
import torch

CUDA = torch.cuda.is_available()
if not CUDA:
    os.environ.setdefault("TRITON_INTERPRET", "1")
triton = pytest.importorskip("triton")

from gguf import GGMLQuantizationType as Q  # noqa: E402

from nextn.kernels import gpu, gpu_delta  # noqa: E402
from nextn.kernels.weights import GPU_TYPES, QWeight  # noqa: E402
from nextn.models.deltanet import delta_rule_chunk  # noqa: E402
from nextn_dev.quant_blocks import random_rows  # noqa: E402

DEV = "cuda" if CUDA else "cpu"


def _weight(qtype, N, K, seed=0):
    if qtype == Q.BF16:
        g = torch.Generator().manual_seed(seed)
        raw = torch.randn(N, K, generator=g).to(torch.bfloat16).view(torch.uint8).reshape(N, -1)
        return raw, raw.view(torch.bfloat16).float().reshape(N, K)
    raw = torch.from_numpy(random_rows(qtype, N, K, seed=seed))
    return raw, QWeight(raw, qtype, (N, K)).dequantize()


def test_gpu_types_listed_once():
    assert tuple(GPU_TYPES) == tuple(gpu.TYPES)


@pytest.mark.parametrize("qtype", gpu.TYPES, ids=lambda q: q.name)
def test_decode_and_few_rows_products(qtype):
    N, K = 48, 512
    raw, ref = _weight(qtype, N, K)
    data = raw.to(DEV)
    ids = torch.tensor([7, 0, 47, 7], dtype=torch.int32, device=DEV)
    assert torch.equal(gpu.rows(data, qtype, K, ids, torch.float32).cpu(), ref[[7, 0, 47, 7]])   # bit for bit
    x = torch.randn(5, K, generator=torch.Generator().manual_seed(1))
    for grouped in ((True, False) if qtype in gpu.GROUPED else (True,)):   # both kernels where two exist
        gpu.use_grouped = grouped
        try:
            y = gpu.few_rows(x.to(DEV), data, qtype, N, K).cpu()
            one = gpu.few_rows(x[2:3].to(DEV), data, qtype, N, K).cpu()
        finally:
            gpu.use_grouped = True
        torch.testing.assert_close(y, x @ ref.T, rtol=1e-4, atol=1e-3)
        assert torch.equal(one[0], y[2])      # a row's result does not depend on the rows beside it


def test_many_rows_product_and_glu():
    N, K = 40, 2048
    raw, ref = _weight(Q.Q4_K, N, K, seed=3)
    x = torch.randn(20, K, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(gpu.linear(x.to(DEV), raw.to(DEV), Q.Q4_K, N, K).cpu(), x @ ref.T, rtol=1e-4, atol=2e-3)
    raw2, ref2 = _weight(Q.Q4_K, N, K, seed=4)
    glu = gpu.few_rows(x[:3].to(DEV), raw.to(DEV), Q.Q4_K, N, K, up=raw2.to(DEV)).cpu()
    torch.testing.assert_close(glu, torch.nn.functional.silu(x[:3] @ ref.T) * (x[:3] @ ref2.T), rtol=1e-4, atol=2e-3)


def test_fused_recurrence_matches_closed_form_and_commits_kept_tokens():
    g = torch.Generator().manual_seed(0)
    B, T, H, dk, dv = 2, 4, 3, 32, 64
    unit = lambda t: torch.nn.functional.normalize(t, dim=-1)     # noqa: E731  (the layer's q and k are)
    q = unit(torch.randn(B, T, H, dk, generator=g)) * dk ** -0.5
    k = unit(torch.randn(B, T, H, dk, generator=g))
    v = torch.randn(B, T, H, dv, generator=g)
    decay, beta = -torch.rand(B, T, H, generator=g) - 0.01, torch.rand(B, T, H, generator=g) * 0.9 + 0.05
    state = torch.randn(5, H, dk, dv, generator=g)
    slots = torch.tensor([3, 1])
    on = lambda *ts: [t.to(DEV) for t in ts]                      # noqa: E731
    out = gpu_delta.recurrent(*on(q, k, v, decay, beta, state, slots, torch.full((B,), T, dtype=torch.int32)),
                              write=False).cpu()
    per_head = lambda t: t.transpose(1, 2)                        # noqa: E731
    ref_out, ref_states = delta_rule_chunk(per_head(q), per_head(k), per_head(v), per_head(decay), per_head(beta),
                                           state[slots], True)
    torch.testing.assert_close(out, per_head(ref_out), rtol=1e-4, atol=1e-4)
    st = state.to(DEV)
    gpu_delta.recurrent(*on(q, k, v, decay, beta), st, *on(slots, torch.tensor([2, 4], dtype=torch.int32)), write=True)
    st = st.cpu()
    torch.testing.assert_close(st[3], ref_states[0, :, 1], rtol=1e-4, atol=1e-4)   # 2 kept tokens
    torch.testing.assert_close(st[1], ref_states[1, :, 3], rtol=1e-4, atol=1e-4)   # all 4
    assert torch.equal(st[0], state[0])                                               # other slots untouched


def test_decode_attention_matches_softmax_over_each_querys_keys():
    from nextn.kernels import gpu_attention
    g = torch.Generator().manual_seed(0)
    B, T, H, Hkv, hd, rows = 2, 3, 4, 2, 64, 100
    kc, vc = torch.randn(3, rows, Hkv, hd, generator=g), torch.randn(3, rows, Hkv, hd, generator=g)
    q = torch.randn(B, T, H, hd, generator=g)
    slots, ends = torch.tensor([2, 0]), torch.tensor([[10, 11, 12], [70, 71, 71]])
    out = gpu_attention.attend(*[t.to(DEV) for t in (q, kc, vc, slots, ends)]).cpu()
    for b in range(B):
        for t in range(T):
            e = int(ends[b, t]) + 1
            keys = kc[slots[b], :e].repeat_interleave(H // Hkv, 1)
            vals = vc[slots[b], :e].repeat_interleave(H // Hkv, 1)
            p = (torch.einsum("hd,jhd->hj", q[b, t], keys) * hd ** -0.5).softmax(-1)
            torch.testing.assert_close(out[b, t], torch.einsum("hj,jhd->hd", p, vals), rtol=1e-5, atol=1e-5)


def test_row_ops_match_torch():
    from nextn.kernels import gpu_ops
    from nextn.models import layers
    g = torch.Generator().manual_seed(0)
    x, z, w = torch.randn(5, 7, 96, generator=g), torch.randn(5, 7, 96, generator=g), torch.rand(96, generator=g)
    ref = layers.rms_norm(x, w, 1e-6)
    on = lambda *ts: [t.to(DEV) for t in ts]                      # noqa: E731
    torch.testing.assert_close(gpu_ops.rms_norm(*on(x, w), 1e-6).cpu(), ref)
    torch.testing.assert_close(gpu_ops.rms_norm(*on(x, w), 1e-6, gate=z.to(DEV)).cpu(),
                               ref * torch.nn.functional.silu(z))
    heads = torch.randn(2, 3, 4, 128, generator=g)[..., :64]      # a strided view, as q is beside its gate
    cos, sin = layers.rope_tables(torch.arange(6).reshape(2, 3) + 5,
                                   1.0 / 10000.0 ** (torch.arange(0, 32, 2) / 32), 1.0, torch.float32)
    torch.testing.assert_close(gpu_ops.rope(*on(heads, cos, sin)).cpu(), layers.apply_rope(heads, cos, sin))


def test_static_step_forward_equals_built_step(tiny):
    """The graphs' Step.static (every row written, padding into the spare row, keys masked up to a bucket)
    gives the forward Step.build gives, on the torch path and through the fused CUDA kernels of attention
    and Gated DeltaNet (run by Triton's interpreter where there is no GPU); so does the commit."""
    from nextn.gguf.reader import open_gguf
    from nextn.models.cache import Cache
    from nextn.models.config import ModelConfig
    from nextn.models.model import Model
    from nextn.models.step import Step

    from nextn.models import layers

    for arch in ("qwen35", "qwen3next"):
        gf = open_gguf(tiny(arch))
        cfg = ModelConfig.from_gguf(gf)
        model = Model.load(gf, cfg, progress=False)
        rows = 64
        caches = [Cache.allocate(cfg, 3, rows + 1, torch.float32, "cpu", use_mtp=False) for _ in range(3)]
        prompt = torch.arange(5, 25)[None].repeat(2, 1)
        for c in caches:
            model.forward(prompt, Step.build([2, 0], [0, 0], [20, 17], "cpu", rows, chunked=True), c)
        tokens = torch.tensor([[30, 31, 32], [40, 41, 0]])
        static = lambda: Step.static(torch.tensor([2, 0]), torch.tensor([20, 17]), torch.tensor([3, 2]), 3, 32, rows)  # noqa
        outs = [model.forward(tokens, Step.build([2, 0], [20, 17], [3, 2], "cpu", rows, chunked=False), caches[0]),
                model.forward(tokens, static(), caches[1])]
        fused = layers.fused_short
        if not CUDA:     # the CUDA kernels, in the interpreter (with a GPU, the CUDA tests below run them)
            layers.fused_short = lambda x, step: not step.chunked
            try:
                outs.append(model.forward(tokens, static(), caches[2]))
            finally:
                layers.fused_short = fused
        for c in caches:
            c.commit([2, 1])
        for out, c in zip(outs[1:], caches[1:]):
            torch.testing.assert_close(out[0], outs[0][0], rtol=1e-4, atol=1e-4)
            torch.testing.assert_close(out[1, :2], outs[0][1, :2], rtol=1e-4, atol=1e-4)
            for il in caches[0].k:
                torch.testing.assert_close(c.k[il][:, :rows], caches[0].k[il][:, :rows])
            for il in caches[0].ssm:
                torch.testing.assert_close(c.ssm[il], caches[0].ssm[il], rtol=1e-4, atol=1e-4)
                torch.testing.assert_close(c.conv[il], caches[0].conv[il], rtol=1e-5, atol=1e-5)


needs_cuda = pytest.mark.skipif(not CUDA, reason="needs a CUDA GPU")


@needs_cuda
@pytest.mark.parametrize("arch", ["qwen35", "qwen3next", "glm4moe"])
def test_cuda_quantized_model_matches_cpu_and_stays_quantized(tiny, models_dir, arch):
    from nextn.gguf.reader import open_gguf
    from nextn.gguf.tools import quantize_file
    from nextn.models.config import ModelConfig
    from nextn.models.model import Model

    path = quantize_file(tiny(arch), models_dir / f"{arch}-q8_0-gpu.gguf", "q8_0")
    gf = open_gguf(path)
    cfg = ModelConfig.from_gguf(gf)
    ids = torch.arange(3, 83)[None] % cfg.n_vocab
    cpu = Model.load(gf, cfg, progress=False).score(ids, chunk=32)
    gpu_model = Model.load(gf, cfg, device="cuda", dtype=torch.float32, progress=False)
    assert any(isinstance(w, QWeight) and w.data.is_cuda for w in gpu_model.layers[0].values())
    torch.testing.assert_close(gpu_model.score(ids.cuda(), chunk=32).cpu(), cpu, rtol=1e-3, atol=2e-3)


@needs_cuda
@pytest.mark.parametrize("dtype", ["f32", "bf16"])
def test_cuda_graphs_mtp_greedy_equals_plain(demo_model, dtype):
    from nextn.engine.engine import Engine
    from nextn.engine.params import SamplingParams
    from nextn.engine.sequence import SpecConfig

    prompt = "import os\nimport sys\n\n\ndef main(argv):\n"
    params = SamplingParams(max_tokens=96, ignore_eos=True)
    plain = Engine(model=str(demo_model), spec="none", device="cuda", dtype=dtype, progress=False)
    want = plain.generate(prompt, params).tokens
    assert plain.runner.graphs.graphs                  # plain steps replayed a captured graph
    e = Engine(model=str(demo_model), spec="mtp", device="cuda", dtype=dtype, progress=False, n_parallel=3)
    for k in (1, 3):
        assert e.generate(prompt, params, spec=SpecConfig(draft_max=k, adaptive=False)).tokens == want
    if dtype == "f32":   # in bfloat16 a batched prefill's GEMMs round differently from a single one (cuBLAS
        # picks kernels by row count), so only float32 keeps batched output equal to a lone sequence's
        seqs = [e.add_request(e.encode_prompt(prompt), params, SpecConfig(draft_max=k, adaptive=False))
                for k in (1, 2, 3)]
        while e.has_work:
            e.step()
        assert all(s.generated == want for s in seqs)     # batched, different k per sequence

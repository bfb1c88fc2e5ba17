"""Trunk logits of nextn match transformers on the same weights, prompts longer than one prefill chunk."""

import pytest
import torch

from nextn.models.cache import Cache
from nextn.models.config import ModelConfig
from nextn.gguf.reader import open_gguf
from nextn.models.model import Model
from nextn.models.step import Step

ARCHS = ["qwen35", "qwen35moe", "qwen3next", "glm4moe", "deepseek2", "glm4moelite", "mimo2"]
# MLA and MiMo's sliding windows with sinks decode through the torch forward on CPU
NATIVE_ARCHS = ARCHS


def _hf(path):
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path.parent / f"{path.name.split('-')[0]}.hf",
                                                dtype=torch.float32).eval()


def _ours(path):
    gf = open_gguf(path)
    cfg = ModelConfig.from_gguf(gf)
    return cfg, Model.load(gf, cfg, progress=False)


@pytest.mark.parametrize("arch", ARCHS)
@torch.inference_mode()
def test_logits_match_transformers(tiny, arch):
    path = tiny(arch)
    cfg, model = _ours(path)
    hf = _hf(path)
    ids = torch.randint(0, cfg.n_vocab, (1, 150), generator=torch.Generator().manual_seed(0))
    ref = hf(ids).logits
    got = model.score(ids, chunk=64)      # three chunks, the last one partial
    assert (got - ref).abs().max().item() <= 1e-4
    whole = model.score(ids, chunk=150)
    assert (whole - ref).abs().max().item() <= 1e-4
    assert torch.equal(got.argmax(-1), whole.argmax(-1))


@pytest.mark.parametrize("arch", ARCHS)
@torch.inference_mode()
def test_decode_one_token_at_a_time_matches_transformers(tiny, arch):
    path = tiny(arch)
    cfg, model = _ours(path)
    ids = torch.randint(0, cfg.n_vocab, (1, 40), generator=torch.Generator().manual_seed(1))
    ref = _hf(path)(ids).logits
    cache = Cache.allocate(cfg, 1, 64, torch.float32, "cpu", use_mtp=False)
    out = []
    for p in range(ids.shape[1]):
        step = Step.build([0], [p], [1], "cpu", 64)
        out.append(model.logits(model.forward(ids[:, p:p + 1], step, cache)))
        cache.commit([1])
    assert (torch.cat(out, 1) - ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ARCHS)
def test_greedy_generation_matches_transformers(tiny, arch):
    from nextn.engine.engine import Engine
    from nextn.engine.params import SamplingParams

    path = tiny(arch)
    prompt = torch.randint(3, 300, (1, 80), generator=torch.Generator().manual_seed(2))
    with torch.inference_mode():
        ref = _hf(path).generate(prompt, max_new_tokens=64, do_sample=False, eos_token_id=None,
                                 pad_token_id=0)[0, 80:].tolist()
    engine = Engine(model=str(path), spec="none", prefill_chunk=32, progress=False)
    got = engine.generate(prompt[0].tolist(), SamplingParams(max_tokens=64, ignore_eos=True)).tokens
    assert got == ref


def test_chunked_and_one_shot_prefill_give_identical_logits(tiny):
    """Prefill chunks that are multiples of the delta-rule chunk (64) reproduce one-shot prefill bit for bit."""
    cfg, model = _ours(tiny("qwen35"))
    ids = torch.randint(0, cfg.n_vocab, (1, 128), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        a = model.score(ids, chunk=64)
        b = model.score(ids, chunk=128)
        c = model.score(ids, chunk=48)
    assert torch.equal(a, b)
    assert torch.allclose(a, c, atol=1e-4, rtol=0)


def native_decode_logits(model, ids: torch.Tensor, prompt: int, group: int, rollback: bool = False) -> torch.Tensor:
    """Prefill `prompt` tokens (torch path), then feed the rest `group` at a time through the native decode
    forward, as plain decoding (group 1) or verification (group k+1, every draft accepted) does."""
    from nextn.models.buffers import Buffers

    cfg, T = model.cfg, ids.shape[1]
    cache = Cache.allocate(cfg, 1, T + 8, torch.float32, "cpu", use_mtp=False, rollback=rollback)
    buf = Buffers(cfg, model.layers, cfg.n_vocab, max_rows=8, max_seqs=1)
    model.forward(ids[:, :prompt], Step.build([0], [0], [prompt], "cpu", T + 8, chunked=True), cache)
    out = []
    for s in range(prompt, T, group):
        n = min(group, T - s)
        buf.rows.fill([0], [s], [n])
        buf.tokens[:n] = ids[0, s:s + n].to(torch.int32)
        model.emit_trunk(cache, buf)
        out.append(buf.logits[:n].clone())
    return torch.cat(out)[None]


@pytest.mark.parametrize("arch", NATIVE_ARCHS)
@torch.inference_mode()
def test_native_decode_matches_transformers_and_is_batch_invariant(tiny, arch):
    """The CPU decode path (native kernels) against transformers, and the logits of a token the same bits
    whether it is decoded alone or verified together with three others (and with rollback state saved)."""
    path = tiny(arch)
    cfg, model = _ours(path)
    ids = torch.randint(0, cfg.n_vocab, (1, 60), generator=torch.Generator().manual_seed(5))
    ref = _hf(path)(ids).logits[:, 20:]
    one = native_decode_logits(model, ids, 20, 1)
    four = native_decode_logits(model, ids, 20, 4, rollback=True)
    assert (one - ref).abs().max().item() <= 1e-4
    assert torch.equal(one, four)


YARN = {"rope_type": "yarn", "rope_theta": 10000.0, "factor": 4.0, "original_max_position_embeddings": 256,
        "beta_fast": 32.0, "beta_slow": 1.0, "mscale": 1.0, "mscale_all_dim": 1.0}


@torch.inference_mode()
def test_yarn_scaled_mla_matches_transformers(models_dir):
    """DeepSeek-V3 / Kimi-K2 extend their context with YaRN: interpolated low frequencies and a larger
    softmax scale; nextn's conversion and forward agree with transformers on them."""
    from nextn_dev.tiny import make_gguf

    path = make_gguf(models_dir / "deepseek2-yarn.gguf", "deepseek2", workdir=models_dir / "deepseek2-yarn.hf",
                     rope=YARN)
    cfg, model = _ours(path)
    assert cfg.yarn is not None and cfg.yarn_log_mul == pytest.approx(0.1)
    ids = torch.randint(0, cfg.n_vocab, (1, 300), generator=torch.Generator().manual_seed(8))
    from transformers import AutoModelForCausalLM
    ref = AutoModelForCausalLM.from_pretrained(models_dir / "deepseek2-yarn.hf", dtype=torch.float32).eval()(ids).logits
    assert (model.score(ids, chunk=128) - ref).abs().max().item() <= 1e-4
    native = native_decode_logits(model, ids[:, :120], 100, 4)          # the native decode forward's RoPE and scale
    assert (native - ref[:, 100:120]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ["deepseek2", "glm4moelite"])
@torch.inference_mode()
def test_absorbed_and_expanded_mla_agree(tiny, arch, monkeypatch):
    """The absorbed form (queries into latent space) and the expanded one (latents into per-head keys and
    values) are the same attention: forced either way, prefill gives the same logits."""
    from nextn.models import mla

    cfg, model = _ours(tiny(arch))
    real = mla.expanded_is_cheaper
    assert real(cfg, 64, 64) and not real(cfg, 1, 64)              # prefill chunks expand, decode absorbs
    ids = torch.randint(0, cfg.n_vocab, (1, 90), generator=torch.Generator().manual_seed(6))
    got = {}
    for form in (True, False):
        monkeypatch.setattr(mla, "expanded_is_cheaper", lambda *a, form=form: form)
        got[form] = model.score(ids, chunk=32)
    assert (got[True] - got[False]).abs().max().item() <= 1e-4


def test_mimo_file_with_q_k_v_apart_decodes_like_the_fused_one(tiny, tmp_path):
    """nextn writes MiMo's q, k, v as one attn_qkv (llama.cpp's MiMo MTP graph needs it); llama.cpp's converter
    keeps them apart for checkpoints that ship them apart. Both load, to the same logits and drafts."""
    from types import SimpleNamespace

    from gguf import GGMLQuantizationType as Q

    from nextn.engine.engine import Engine
    from nextn.engine.params import SamplingParams
    from nextn.engine.sequence import SpecConfig
    from nextn.gguf.tools import _copy_metadata, _copy_tensors
    from nextn.gguf.writer import write_gguf

    path = tiny("mimo2")
    gf = open_gguf(path)
    cfg = ModelConfig.from_gguf(gf)
    tensors = []
    for t in gf.tensors.values():
        if not t.name.endswith("attn_qkv.weight"):
            tensors.append(t)
            continue
        il = int(t.name.split(".")[1])
        sizes = [cfg.n_head * cfg.head_dim, cfg.kv_heads(il) * cfg.head_dim, cfg.kv_heads(il) * cfg.v_dim]
        assert t.tensor_type == Q.F32 and sum(sizes) == t.data.shape[0]
        for x, part in zip("qkv", torch.from_numpy(t.data.copy()).split(sizes)):
            tensors.append(SimpleNamespace(name=t.name.replace("qkv", x), data=part.numpy(), tensor_type=Q.F32))
    apart = write_gguf(tmp_path / "apart.gguf", gf.arch, lambda w: _copy_metadata(w, gf, {}, set()),
                       _copy_tensors(sorted(tensors, key=lambda t: t.name)))
    assert "blk.1.attn_k.weight" in open_gguf(apart).tensors and "blk.1.attn_qkv.weight" not in open_gguf(apart).tensors
    ids = torch.randint(0, cfg.n_vocab, (1, 60), generator=torch.Generator().manual_seed(4))
    assert torch.equal(_ours(path)[1].score(ids), _ours(apart)[1].score(ids))
    prompt, params = ids[0].tolist(), SamplingParams(max_tokens=24, ignore_eos=True)
    runs = [Engine(model=str(p), progress=False).generate(prompt, params, spec=SpecConfig(3, adaptive=False))
            for p in (path, apart)]
    assert runs[0].tokens == runs[1].tokens and runs[0].stats.n_draft_tokens == runs[1].stats.n_draft_tokens > 0


SCALED = [("qwen35", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
          ("qwen3next", {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
                         "beta_fast": 16.0, "beta_slow": 2.0}),
          ("glm4moe", {"rope_type": "linear", "factor": 2.0}),
          ("mimo2", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
          ("qwen35moe", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256,
                         "attention_factor": 0.9})]


@pytest.mark.parametrize("arch,scaling", SCALED, ids=[f"{a}-{s['rope_type']}" for a, s in SCALED])
@torch.inference_mode()
def test_rope_scaled_checkpoints_match_transformers(models_dir, arch, scaling):
    """A context extension in the checkpoint (YaRN as Qwen3 / Qwen3.5 long-context configs carry it, with an
    explicit attention factor too; linear) is converted to llama.cpp's rope.scaling.* keys and applied by the
    torch forward and the native decode alike (MiMo: its full-attention layers only)."""
    from nextn_dev.tiny import make_gguf, scaled_rope

    name = f"{arch}-{scaling['rope_type']}"
    path = make_gguf(models_dir / f"{name}.gguf", arch, workdir=models_dir / f"{name}.hf",
                     rope=scaled_rope(arch, **scaling))
    cfg, model = _ours(path)
    assert (cfg.rope_scaling, cfg.rope_factor) == (scaling["rope_type"], scaling["factor"])
    ids = torch.randint(0, cfg.n_vocab, (1, 120), generator=torch.Generator().manual_seed(9))
    from transformers import AutoModelForCausalLM
    ref = AutoModelForCausalLM.from_pretrained(models_dir / f"{name}.hf", dtype=torch.float32).eval()(ids).logits
    assert (model.score(ids, chunk=64) - ref).abs().max().item() <= 1e-4
    native = native_decode_logits(model, ids, 90, 4)
    assert (native - ref[:, 90:]).abs().max().item() <= 1e-4

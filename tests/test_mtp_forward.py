"""nextn's MTP forward equals the forward specified in ../shared/MTP.md, built from transformers modules:
embedding first in the concat, trunk hidden AFTER the final norm, position t+1, and an MTP KV cache
filled for every prompt position, across prefill chunks."""

import pytest
import torch

from nextn.models.cache import Cache
from nextn.engine.engine import Engine
from nextn.models.step import Step
from nextn_dev.reference import mtp_mask, mtp_reference, mtp_rope
from nextn_dev.tiny import make_gguf

ARCHS = ["qwen35", "qwen35moe", "qwen3next", "glm4moe", "deepseek2", "glm4moelite", "mimo2"]


@pytest.fixture(scope="module")
def glm_own_head(models_dir):
    """GLM-4.5 style: the NextN layer carries its own embed_tokens and shared_head.head."""
    out = models_dir / "glm4moe-ownhead.gguf"
    if not out.exists():
        make_gguf(out, "glm4moe", workdir=models_dir / "glm4moe-ownhead.hf", seed=5, mtp_own_head=True)
    return out


def _reference(path, hf_dir, arch, n, seed):
    from transformers import AutoModelForCausalLM

    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    head, embed, lm_head = mtp_reference(hf_dir, hf, arch)
    ids = torch.randint(3, 300, (1, n), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        h = hf.model(input_ids=ids).last_hidden_state                  # post-norm trunk hidden
        pos = torch.arange(1, n)[None]
        rope = mtp_rope(hf, h, pos[None].expand(3, 1, n - 1) if arch.startswith("qwen35") else pos)
        g = head(embed(ids[:, 1:]), h[:, :-1], rope, mtp_mask(hf, n - 1))   # row t: (x_{t+1}, h_t) at position t+1
        logits = lm_head(g)                                             # row t predicts x_{t+2}
    return ids, g[0], logits[0]


def _prefilled(path, ids, chunk: int):
    """An engine with ids [1, n] prefilled as a prompt in chunks, the MTP drafter's pairs queued (not run)."""
    engine = Engine(model=str(path), spec="mtp", prefill_chunk=chunk, progress=False)
    seq = engine.add_request(ids[0].tolist())
    runner, drafter = engine.runner, engine.drafter.model
    engine.scheduler.schedule()
    runner.start(seq)
    drafter.start(seq)
    for s in range(0, ids.shape[1], chunk):
        n = min(chunk, ids.shape[1] - s)
        runner.prefill([seq], [n], {})
        drafter.on_prefill([seq], [n])
    return engine, seq, drafter


def _case(tiny, glm_own_head, arch):
    if arch == "glm4moe-ownhead":
        return glm_own_head, glm_own_head.parent / "glm4moe-ownhead.hf", "glm4moe"
    path = tiny(arch)
    return path, path.parent / f"{arch}.hf", arch


@pytest.mark.parametrize("arch", ARCHS + ["glm4moe-ownhead"])
def test_mtp_forward_matches_reference_after_chunked_prefill(tiny, glm_own_head, arch):
    path, hf_dir, kind = _case(tiny, glm_own_head, arch)
    ids, g_ref, logits_ref = _reference(path, hf_dir, kind, n=100, seed=0)
    engine, seq, drafter = _prefilled(path, ids, 32)
    n = ids.shape[1]
    assert drafter.queued(seq.slot) == n - 1           # pairs (x_{p+1}, h_p) for positions 1..n-1
    drafter._flush([seq])
    assert drafter.positions[seq.slot] == n - 1
    g_last = drafter.last_mtp_hidden[seq.slot]
    assert (g_last - g_ref[-1]).abs().max().item() <= 1e-4
    logits = engine.model.mtp_logits(g_last[None])[0]
    assert (logits - logits_ref[-1]).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ["qwen35", "glm4moe-ownhead"])
def test_mtp_forward_whole_sequence_matches_reference(tiny, glm_own_head, arch):
    path, hf_dir, kind = _case(tiny, glm_own_head, arch)
    ids, g_ref, logits_ref = _reference(path, hf_dir, kind, n=60, seed=1)
    engine = Engine(model=str(path), spec="mtp", progress=False)
    model, cfg = engine.model, engine.model_config
    cache = Cache.allocate(cfg, 1, 128, torch.float32, "cpu", use_mtp=True)
    n = ids.shape[1]
    with torch.inference_mode():
        h = model.forward(ids, Step.build([0], [0], [n], "cpu", 128), cache)
        g = model.mtp_forward(ids[:, 1:], h[:, :-1], Step.build([0], [1], [n - 1], "cpu", 128, shift=1), cache)
        logits = model.mtp_logits(g)
    assert (g[0] - g_ref).abs().max().item() <= 1e-4
    assert (logits[0] - logits_ref).abs().max().item() <= 1e-4


@pytest.mark.parametrize("arch", ["deepseek2", "glm4moe", "mimo2"])
def test_second_mtp_layer_drafts_depth_two_from_the_first_layers_output(models_dir, arch):
    """DeepSeek-V3's sequential MTP modules: layer 2 takes (x_{t+2}, g1_t) at position t + 2, its cache
    caught up over every base whose token is known; its draft matches the chain built from the checkpoint's
    own modules."""
    from transformers import AutoModelForCausalLM

    hf_dir = models_dir / f"{arch}-mtp2.hf"
    path = make_gguf(models_dir / f"{arch}-mtp2.gguf", arch, workdir=hf_dir, mtp=2)
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    refs = [mtp_reference(hf_dir, hf, arch, layer) for layer in (0, 1)]
    n, z = 50, 7
    ids = torch.randint(3, 300, (1, n), generator=torch.Generator().manual_seed(3))
    with torch.inference_mode():
        h = hf.model(input_ids=ids).last_hidden_state
        (head1, embed1, _), (head2, embed2, lm2) = refs
        mask = mtp_mask(hf, n - 1)
        g1 = head1(embed1(ids[:, 1:]), h[:, :-1], mtp_rope(hf, h, torch.arange(1, n)[None]), mask)   # bases 0..n-2
        x2 = torch.cat((ids[:, 2:], torch.tensor([[z]])), 1)                                          # x_{t+2}
        g2 = head2(embed2(x2), g1, mtp_rope(hf, h, torch.arange(2, n + 1)[None]), mask)
        want = lm2(g2[0, -1])
    engine, seq, drafter = _prefilled(path, ids, 16)
    drafter._flush([seq])
    assert drafter.base[1][seq.slot] == n - 2                  # bases 0..n-3 cached; base n-2 waits for x_n
    g1_last = torch.cat(drafter.waiting[1][seq.slot])[-1]
    with torch.inference_mode():
        got = drafter._forward([seq], [n], [[z]], [g1_last[None]], layer=1)
        logits = engine.model.mtp_logits(got, 1)[0]
    assert (logits - want).abs().max().item() <= 1e-4

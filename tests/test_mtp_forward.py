"""nextn's MTP forward equals the forward specified in ../shared/MTP.md, built from transformers modules:
embedding first in the concat, trunk hidden AFTER the final norm, position t+1, and an MTP KV cache
filled for every prompt position, across prefill chunks."""

import torch

from nextn.engine import Engine
from nextn.tiny import qwen_mtp_reference


def _reference(tiny, arch="qwen35", n=100, seed=0):
    from transformers import AutoModelForCausalLM

    path = tiny(arch)
    hf_dir = path.parent / f"{arch}.hf"
    hf = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32).eval()
    head = qwen_mtp_reference(hf_dir, hf)
    ids = torch.randint(3, 300, (1, n), generator=torch.Generator().manual_seed(seed))
    with torch.inference_mode():
        h = hf.model(input_ids=ids).last_hidden_state                  # post-norm trunk hidden
        pos = torch.arange(1, n)[None]
        rope = hf.model.rotary_emb(h, pos[None].expand(3, 1, n - 1))
        g = head(hf.model.embed_tokens(ids[:, 1:]), h[:, :-1], rope)
        logits = hf.lm_head(g)                                          # row t predicts x_{t+2}
    return path, ids, g[0], logits[0]


def test_mtp_forward_matches_reference_after_chunked_prefill(tiny):
    path, ids, g_ref, logits_ref = _reference(tiny)
    engine = Engine(model=str(path), spec="mtp", prefill_chunk=32, progress=False)
    seq = engine.add_request(ids[0].tolist())
    runner = engine.runner
    engine.scheduler.schedule()
    runner.start(seq)
    for s in range(0, ids.shape[1], 32):
        runner.prefill([seq], [min(32, ids.shape[1] - s)])
    n = ids.shape[1]
    assert runner.queued(seq.slot) == n - 1            # pairs (x_{p+1}, h_p) for positions 1..n-1
    runner.flush([seq], want_logits=False)
    assert runner.mtp_len[seq.slot] == n - 1
    g_last = runner.last_g[seq.slot]
    assert (g_last - g_ref[-1]).abs().max().item() <= 1e-4
    logits = engine.model.mtp_logits(g_last[None])[0]
    assert (logits - logits_ref[-1]).abs().max().item() <= 1e-4


def test_mtp_forward_whole_sequence_matches_reference(tiny):
    from nextn.cache import Cache
    from nextn.step import Step

    path, ids, g_ref, logits_ref = _reference(tiny, n=60, seed=1)
    engine = Engine(model=str(path), spec="mtp", progress=False)
    model, cfg = engine.model, engine.cfg
    cache = Cache.allocate(cfg, 1, 128, torch.float32, "cpu", with_mtp=True)
    n = ids.shape[1]
    with torch.inference_mode():
        h = model.forward(ids, Step.build([0], [0], [n], "cpu", 128), cache)
        g = model.mtp_forward(ids[:, 1:], h[:, :-1], Step.build([0], [1], [n - 1], "cpu", 128, shift=1), cache)
        logits = model.mtp_logits(g)
    assert (g[0] - g_ref).abs().max().item() <= 1e-4
    assert (logits[0] - logits_ref).abs().max().item() <= 1e-4

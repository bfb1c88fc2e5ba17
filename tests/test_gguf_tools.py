"""Converting, inspecting, extracting, stripping and grafting MTP heads: forms round-trip byte for byte."""

import json
import shutil

import numpy as np
import pytest
import torch

from nextn_dev.interop import summary
from gguf import GGMLQuantizationType as Q

from nextn.gguf.convert import Checkpoint, convert
from nextn.engine.engine import Engine
from nextn.errors import ModelFileError, NextnError
from nextn.gguf.tools import (describe, extract_mtp, graft_mtp, inspect_text, merge_file, quantize_file, set_sampling,
                              split_file, strip_mtp)
from nextn.gguf.forms import BUNDLED, HEAD_ONLY, TRUNK_ONLY, form_of
from nextn.gguf.reader import open_gguf
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig

GREEDY = SamplingParams(max_tokens=40, ignore_eos=True)
PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n"


def tensors(path) -> dict:
    gf = open_gguf(path)
    return {n: (t.tensor_type, bytes(np.asarray(t.data).tobytes())) for n, t in gf.tensors.items()}


@pytest.fixture(scope="module")
def forms(tiny, tmp_path_factory):
    d = tmp_path_factory.mktemp("forms")
    hf = tiny("qwen35").parent / "qwen35.hf"
    return {
        "hf": hf,
        "bundled": convert(hf, d / "m.gguf", outtype="f32", progress=False),
        "trunk": convert(hf, d / "m-nomtp.gguf", outtype="f32", mode="no-mtp", progress=False),
        "head": convert(hf, d / "m.gguf", outtype="f32", mode="mtp", progress=False),
    }


def test_convert_writes_the_three_publishing_forms(forms):
    assert forms["head"].name == "mtp-m.gguf"
    info = {k: describe(open_gguf(forms[k])) for k in ("bundled", "trunk", "head")}
    assert [info[k]["form"] for k in ("bundled", "trunk", "head")] == [BUNDLED, TRUNK_ONLY, HEAD_ONLY]
    assert info["bundled"]["block_count"] == info["head"]["block_count"] == 5
    assert info["trunk"]["block_count"] == 4 and info["trunk"]["mtp_layers"] == 0
    assert info["head"]["bytes"]["trunk"] == 0 and info["head"]["bytes"]["mtp"] == info["bundled"]["bytes"]["mtp"]
    assert "head-only" in inspect_text(info["head"])
    head = open_gguf(forms["head"])
    assert {"token_embd.weight", "output.weight", "output_norm.weight"} <= set(head.tensors)
    assert "blk.0.attn_norm.weight" not in head.tensors


def test_bundled_equals_trunk_plus_head(forms):
    bundled, trunk, head = tensors(forms["bundled"]), tensors(forms["trunk"]), tensors(forms["head"])
    assert set(bundled) == set(trunk) | set(head)
    for name, value in bundled.items():
        assert value == (trunk.get(name) or head[name])
    prompt = list(range(5, 90))
    a = Engine(model=str(forms["bundled"]), progress=False).generate(prompt, GREEDY, spec=SpecConfig(3, adaptive=False))
    b = Engine(model=str(forms["trunk"]), mtp_model=str(forms["head"]), progress=False).generate(
        prompt, GREEDY, spec=SpecConfig(3, adaptive=False))
    assert a.tokens == b.tokens and a.stats.to_dict()["draft_tokens"] == b.stats.to_dict()["draft_tokens"]


def test_head_file_is_found_beside_the_trunk(forms, tmp_path, capsys):
    trunk = tmp_path / "m.gguf"
    shutil.copy(forms["trunk"], trunk)
    shutil.copy(forms["head"], tmp_path / "mtp-m.gguf")
    engine = Engine(model=str(trunk), spec="mtp", progress=False)
    assert engine.use_mtp and "mtp-m.gguf" in capsys.readouterr().err


def test_extract_strip_graft_round_trip_on_the_demo_model(demo_model, tmp_path):
    head = extract_mtp(demo_model, tmp_path / "demo.gguf")
    assert head.name == "mtp-demo.gguf"
    trunk = strip_mtp(demo_model, tmp_path / "demo-nomtp.gguf")
    grafted = graft_mtp(trunk, head, tmp_path / "demo-grafted.gguf")
    assert grafted.read_bytes() == demo_model.read_bytes()      # the very same file, byte for byte
    original, back = open_gguf(demo_model), open_gguf(grafted)
    for key in original.fields:
        if not key.startswith("GGUF."):
            assert back.meta(key) == original.meta(key), key
    results = []
    for kwargs in ({"model": str(demo_model)}, {"model": str(trunk), "mtp_model": str(head)},
                   {"model": str(grafted)}):
        r = Engine(**kwargs, progress=False).generate(PROMPT, GREEDY, spec=SpecConfig(3, adaptive=False))
        results.append((r.tokens, r.stats.n_accepted, r.stats.n_draft_tokens))
    assert results[0] == results[1] == results[2]
    assert results[0][1] > 0
    assert trunk.stat().st_size < demo_model.stat().st_size


def test_extract_and_strip_match_convert(forms, tmp_path):
    assert extract_mtp(forms["bundled"], tmp_path / "x.gguf").read_bytes() == forms["head"].read_bytes()
    assert strip_mtp(forms["bundled"], tmp_path / "t.gguf").read_bytes() == forms["trunk"].read_bytes()


def test_graft_refuses_another_model_and_leaves_no_file(tiny, forms, tmp_path):
    moe_head = tiny("qwen35moe")
    out = tmp_path / "bad.gguf"
    with pytest.raises(NextnError, match="architecture differs"):
        graft_mtp(forms["trunk"], moe_head, out)
    with pytest.raises(NextnError, match="has no MTP layers"):
        graft_mtp(forms["trunk"], forms["trunk"], out)
    with pytest.raises(NextnError, match="head-only file"):
        graft_mtp(forms["head"], forms["bundled"], out)
    with pytest.raises(NextnError, match="bundled"):
        strip_mtp(forms["trunk"], out)
    assert list(tmp_path.iterdir()) == []


def test_corrupt_input_leaves_no_partial_output(forms, tmp_path):
    data = forms["head"].read_bytes()
    broken = tmp_path / "mtp-broken.gguf"
    broken.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out.gguf"
    with pytest.raises(NextnError, match="truncated"):
        graft_mtp(forms["trunk"], broken, out)
    assert not out.exists() and not any(p.name.endswith(".partial") for p in tmp_path.iterdir())


def test_convert_errors_leave_no_file(tmp_path):
    (tmp_path / "config.json").write_text('{"architectures": ["LlamaForCausalLM"]}')
    with pytest.raises(NextnError, match="LlamaForCausalLM is not supported"):
        convert(tmp_path, tmp_path / "out.gguf")
    assert not (tmp_path / "out.gguf").exists()


@pytest.mark.parametrize("arch", ["deepseek2", "mimo2"])
def test_block_scaled_fp8_checkpoints_convert_to_what_their_weights_mean(models_dir, tmp_path, arch):
    """DeepSeek-V3, Kimi-K2 and MiMo publish their projections in FP8 with a `weight_scale_inv` per block:
    the converter writes FP8 x scale, exactly (the same file as the dequantized checkpoint), within FP8's
    precision of the original weights, and the file decodes."""
    from nextn_dev.published import to_fp8
    from nextn_dev.tiny import make_checkpoint

    hf = make_checkpoint(models_dir / f"fp8-src-{arch}.hf", arch, published=True)
    fp8 = to_fp8(hf, tmp_path / "fp8.hf", block=(16, 32), dequantized=tmp_path / "deq.hf")
    assert any(k.endswith("_scale_inv") for k in Checkpoint(fp8).where)
    got = summary(convert(fp8, tmp_path / "fp8.gguf", outtype="f32", progress=False))
    want = summary(convert(tmp_path / "deq.hf", tmp_path / "deq.gguf", outtype="f32", progress=False))
    assert got["tensors"] == want["tensors"]
    fp8_file, orig = open_gguf(tmp_path / "fp8.gguf"), open_gguf(convert(hf, tmp_path / "o.gguf", outtype="f32",
                                                                         progress=False))
    changed = 0
    for name, t in orig.tensors.items():
        a, b = torch.from_numpy(fp8_file.tensor(name).data.copy()), torch.from_numpy(t.data.copy())
        err = ((a - b).norm() / b.norm()).item() if b.norm() > 0 else 0.0
        assert err < 0.05, f"{name}: relative error {err:.3f}"
        changed += err > 0
    assert changed >= 10
    out = Engine(model=str(tmp_path / "fp8.gguf"), spec="mtp", progress=False).generate(
        "def f(x):", SamplingParams(max_tokens=8, ignore_eos=True))
    assert len(out.tokens) == 8


@pytest.mark.parametrize("quant,scales,needle", [
    ({"quant_method": "fp8"}, True, "without quantization_config.weight_block_size"),
    ({"quant_method": "gptq", "bits": 4}, False, "quant_method 'gptq' is not supported"),
    ({"quant_method": "fp8", "weight_block_size": [16, 32]}, "wrong", "has shape \\[1, 1\\]; .* need"),
    ({"quant_method": "fp8", "weight_block_size": [16, 32]}, "none", "has no block scales"),
])
def test_unsupported_quantized_checkpoints_are_refused_in_one_line(tiny, tmp_path, quant, scales, needle):
    from safetensors.torch import load_file, save_file

    hf = tmp_path / "q.hf"
    shutil.copytree(tiny("mimo2").parent / "mimo2.hf", hf)
    cfg = json.loads((hf / "config.json").read_text())
    (hf / "config.json").write_text(json.dumps({**cfg, "quantization_config": quant}))
    f = next(hf.glob("*.safetensors"))
    state = load_file(f)
    name = next(k for k in state if k.endswith("q_proj.weight"))
    if scales is not False:
        state[name] = state[name].to(torch.float8_e4m3fn)
    if scales is True or scales == "wrong":
        state[name + "_scale_inv"] = torch.ones(1, 1)
    save_file(state, str(f))
    with pytest.raises(NextnError, match=needle):
        convert(hf, tmp_path / "out.gguf", progress=False)
    assert not (tmp_path / "out.gguf").exists()


def test_keep_mtp_precision(forms, tmp_path):
    out = convert(forms["hf"], tmp_path / "q4.gguf", outtype="q4_0", keep_mtp_precision=True, progress=False)
    gf = open_gguf(out)
    assert gf.tensors["blk.0.ffn_up.weight"].tensor_type == Q.Q4_0
    assert gf.tensors["blk.4.ffn_up.weight"].tensor_type == Q.Q8_0
    assert gf.tensors["blk.4.nextn.eh_proj.weight"].tensor_type == Q.Q8_0
    plain = convert(forms["hf"], tmp_path / "q4b.gguf", outtype="q4_0", progress=False)
    assert open_gguf(plain).tensors["blk.4.ffn_up.weight"].tensor_type == Q.Q4_0
    requant = quantize_file(forms["bundled"], tmp_path / "rq.gguf", "q4_0", keep_mtp_precision=True)
    rq = open_gguf(requant)
    assert rq.tensors["blk.1.attn_k.weight"].tensor_type == Q.Q4_0
    assert rq.tensors["blk.4.attn_k.weight"].tensor_type == Q.Q8_0


@pytest.mark.parametrize("outtype", ["f16", "bf16", "q8_0"])
def test_converted_types_load_and_stay_close(forms, tmp_path, outtype):
    import torch

    from nextn.models.cache import Cache
    from nextn.models.config import ModelConfig
    from nextn.models.model import Model
    from nextn.models.step import Step

    def logits(path):
        gf = open_gguf(path)
        cfg = ModelConfig.from_gguf(gf)
        model = Model.load(gf, cfg, progress=False)
        cache = Cache.allocate(cfg, 1, 64, torch.float32, "cpu", use_mtp=False)
        ids = torch.arange(3, 43)[None]
        with torch.inference_mode():
            return model.logits(model.forward(ids, Step.build([0], [0], [40], "cpu", 64), cache))

    ref = logits(forms["bundled"])
    got = logits(convert(forms["hf"], tmp_path / f"{outtype}.gguf", outtype=outtype, progress=False))
    assert ((got - ref).norm() / ref.norm()).item() < {"f16": 5e-3, "bf16": 3e-2, "q8_0": 6e-2}[outtype]


@pytest.mark.parametrize("arch", ["qwen35moe", "qwen3next", "glm4moe", "deepseek2", "glm4moelite", "mimo2"])
def test_every_family_converts_to_all_forms_that_agree(tiny, tmp_path, arch):
    hf = tiny(arch).parent / f"{arch}.hf"
    bundled = convert(hf, tmp_path / "b.gguf", outtype="f32", progress=False)
    trunk = convert(hf, tmp_path / "t.gguf", outtype="f32", mode="no-mtp", progress=False)
    head = convert(hf, tmp_path / "t.gguf", outtype="f32", mode="mtp", progress=False)
    assert [form_of(open_gguf(p)) for p in (bundled, trunk, head)] == [BUNDLED, TRUNK_ONLY, HEAD_ONLY]
    # the tools give the converter's files, per-block arrays (recurrent layers, MiMo's KV heads and sliding
    # pattern) cut to the trunk and back
    assert strip_mtp(bundled, tmp_path / "s.gguf").read_bytes() == trunk.read_bytes()
    assert extract_mtp(bundled, tmp_path / "e.gguf").read_bytes() == head.read_bytes()
    assert summary(graft_mtp(trunk, head, tmp_path / "g.gguf")) == summary(bundled)     # the same keys and tensors
    prompt = list(range(5, 90))
    spec = SpecConfig(3, adaptive=False)
    a = Engine(model=str(bundled), progress=False).generate(prompt, GREEDY, spec=spec)
    b = Engine(model=str(trunk), mtp_model=str(head), progress=False).generate(prompt, GREEDY, spec=spec)
    c = Engine(model=str(trunk), spec="none", progress=False).generate(prompt, GREEDY)
    assert a.tokens == b.tokens == c.tokens
    assert a.stats.n_draft_tokens == b.stats.n_draft_tokens > 0


def test_set_sampling_stores_the_defaults_every_unset_parameter_takes(forms, tmp_path):
    out = set_sampling(forms["bundled"], tmp_path / "s.gguf", {"temp": 0.7, "top_p": 0.9, "repeat_penalty": 1.1,
                                                                "repeat_last_n": 64})
    assert tensors(out) == tensors(forms["bundled"])
    info = describe(open_gguf(out))
    assert info["sampling"] == pytest.approx({"temp": 0.7, "top_p": 0.9, "penalty_repeat": 1.1, "penalty_last_n": 64})
    assert "sampling:      temp 0.7, top_p 0.9" in inspect_text(info)
    engine = Engine(model=str(out), progress=False)
    p = engine.sampling_params(top_p=0.5)
    assert (p.temperature, p.top_p, p.repetition_penalty, p.penalty_last_n) == pytest.approx((0.7, 0.5, 1.1, 64))
    assert engine.sampling_params(temperature=0).greedy
    again = set_sampling(out, tmp_path / "t.gguf", {"top_k": 20}, clear=True)
    assert describe(open_gguf(again))["sampling"] == {"top_k": 20}
    with pytest.raises(NextnError, match="other than the input"):
        set_sampling(out, out, {"temp": 1.0})


def test_set_sampling_refuses_values_out_of_range_before_writing(forms, tmp_path, capsys):
    from nextn.cli import main

    out = tmp_path / "bad.gguf"
    assert main(["gguf", "set-sampling", str(forms["bundled"]), "-o", str(out), "--top-p", "1.5"]) != 0
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "top_p" in err[0] and not out.exists()


def test_split_models_load_by_their_first_part_for_trunk_and_head(forms, tmp_path):
    """llama.cpp's split form (NAME-00001-of-0000N.gguf, split.* keys, metadata in the first part)."""
    trunk = split_file(forms["trunk"], tmp_path / "m.gguf", max_size=300_000)
    parts = sorted(tmp_path.glob("m-*-of-*.gguf"))
    assert trunk == parts[0] and trunk.name.endswith(f"-00001-of-{len(parts):05d}.gguf") and len(parts) >= 3
    gf = open_gguf(trunk)
    assert gf.parts == parts and gf.meta("split.count") == len(parts)
    assert {n: (t, b) for n, (t, b) in tensors(forms["trunk"]).items()} == {
        n: (t.tensor_type, bytes(np.asarray(t.data).tobytes())) for n, t in gf.tensors.items()}
    info = describe(gf)
    assert info["parts"] == [p.name for p in parts] and info["size_bytes"] == sum(p.stat().st_size for p in parts)
    assert f"split:         {len(parts)} parts" in inspect_text(info)
    shutil.copy(forms["head"], tmp_path / "mtp-m.gguf")     # the head beside the split trunk is found
    want = Engine(model=str(forms["bundled"]), progress=False).generate(PROMPT, GREEDY)
    got = Engine(model=str(trunk), progress=False).generate(PROMPT, GREEDY)
    assert got.tokens == want.tokens and got.stats.n_draft_tokens > 0
    head = split_file(forms["head"], tmp_path / "h" / "mtp-m.gguf", max_size=100_000)
    got = Engine(model=str(trunk), mtp_model=str(head), progress=False).generate(PROMPT, GREEDY)
    assert got.tokens == want.tokens
    merged = merge_file(trunk, tmp_path / "merged.gguf")
    assert merged.read_bytes() == forms["trunk"].read_bytes()


def test_split_model_errors_name_the_part_at_fault(forms, tmp_path):
    first = split_file(forms["trunk"], tmp_path / "m.gguf", max_size=300_000)
    parts = sorted(tmp_path.glob("m-*-of-*.gguf"))
    with pytest.raises(ModelFileError, match="part 2 of a .*name the first file .*m-00001-of"):
        open_gguf(parts[1])
    parts[-1].unlink()
    with pytest.raises(ModelFileError, match=f"part {len(parts)} of {len(parts)} .* is missing"):
        open_gguf(first)
    renamed = first.rename(tmp_path / "renamed.gguf")
    with pytest.raises(ModelFileError, match="its other parts cannot be found"):
        open_gguf(renamed)


@pytest.mark.parametrize("arch", ["qwen35", "deepseek2", "mimo2"])
def test_inspect_reports_the_cache_the_engine_allocates(tiny, arch):
    """Bytes per token and per sequence: GQA rows, MLA's latent + RoPE key, recurrent state and sliding-window
    rings as fixed costs; with and without the MTP head they add up to what an engine allocates."""
    path = tiny(arch)
    c = describe(open_gguf(path))["cache"]
    cfg = Engine(model=str(path), spec="none", progress=False).model.cfg
    attn = [il for il in range(cfg.n_layer) if not cfg.recurrent[il] and not cfg.is_swa(il)]
    per_layer = (cfg.kv_lora_rank + cfg.n_rot) if cfg.mla else None
    assert c["per_token"] == 4 * sum(per_layer or cfg.kv_heads(il) * (cfg.head_dim + cfg.v_dim) for il in attn)
    assert (c["fixed"] > 0) == (arch != "deepseek2") and c["mtp_per_token"] + c["mtp_fixed"] > 0
    for spec, per_token, fixed in (("none", c["per_token"], c["fixed"]),
                                   ("mtp", c["per_token"] + c["mtp_per_token"], c["fixed"] + c["mtp_fixed"])):
        engine = Engine(model=str(path), spec=spec, ctx_size=1024, draft_max=3, progress=False)
        if spec == "mtp":                   # the native path's saved recurrent states for rollback
            fixed += sum(t.numel() * 4 for t in (*engine.runner.cache.conv_backup.values(),
                                                  *engine.runner.cache.ssm_backup.values()))
        assert engine.runner.cache.nbytes() == per_token * engine.runner.rows + fixed
    assert "kB per token" in inspect_text(describe(open_gguf(path)))


def test_inspect_reports_rope_and_its_context_extension(models_dir, tiny, tmp_path):
    """The rotated dimensions, base and scaling nextn applies; a scaling it refuses is named, not hidden."""
    from gguf import GGUFValueType as T
    from test_errors import _with_metadata
    from nextn_dev.tiny import make_gguf, scaled_rope

    path = make_gguf(models_dir / "inspect-yarn.gguf", "qwen35", workdir=models_dir / "inspect-yarn.hf",
                     rope=scaled_rope("qwen35", rope_type="yarn", factor=4.0, original_max_position_embeddings=256))
    text = inspect_text(describe(open_gguf(path)))
    assert "rope:          8 of 16 dims, base 10000; YaRN x4 over an original context of 256 (betas 32 / 1), " \
           "cos/sin x1.139" in text
    assert "no context extension" in inspect_text(describe(open_gguf(tiny("qwen35"))))
    mimo = describe(open_gguf(tiny("mimo2")))["rope"]
    assert mimo["base_swa"] != mimo["base"] and mimo["scaling"] == "none"
    bad = _with_metadata(tiny("qwen35"), tmp_path / "longrope.gguf", {"ARCH.rope.scaling.type": ("longrope", T.STRING, None)})
    assert "rope:          refused: " in inspect_text(describe(open_gguf(bad)))
    assert "rope scaling 'longrope' is not implemented" in inspect_text(describe(open_gguf(bad)))

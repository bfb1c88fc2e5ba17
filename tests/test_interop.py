"""Files from llama.cpp's converter and from nextn's are the same file, and both decode right.

Checkpoints here have the shape their authors publish (nextn_dev/published.py): Qwen3.5 inside its
multimodal wrapper, Qwen3-Next's config silent about MTP, experts one by one, indexed shards. The
recording in tests/data/llamacpp_keys.json is llama.cpp's own converter run on the same
checkpoints (scripts/llamacpp_keys.py), so no llama.cpp is needed here.
"""

import pytest
import torch
from gguf import GGUFValueType

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.gguf.convert import convert
from nextn.gguf.reader import open_gguf
from nextn.gguf.tools import _copy_metadata, _copy_tensors
from nextn.gguf.writer import write_gguf
from nextn_dev.interop import FORMS, FP8_CASES, ROPE_CASES, differences, keys_only, recording, summary
from nextn_dev.tiny import ARCHS, load_reference, make_checkpoint, scaled_rope

RECORD = recording()
# (family, form) pairs recorded: every form of every family, except DeepSeek-V3, whose MTP layer llama.cpp's
# converter drops (its output is the trunk-only form)
CASES = [(a, f) for a in (*ARCHS, "glm4moelite", "mimo2") for f in FORMS] + [("deepseek2", "no-mtp")]


@pytest.fixture(scope="session")
def published(models_dir):
    made = {}

    def get(arch):
        if arch not in made:
            made[arch] = make_checkpoint(models_dir / f"published-{arch}.hf", arch, published=True)
        return made[arch]

    return get


@pytest.mark.parametrize("arch,form", CASES)
def test_convert_writes_what_llamacpps_converter_writes(published, tmp_path, arch, form):
    ours = summary(convert(published(arch), tmp_path / "x.gguf", outtype="f32", mode=form, progress=False))
    assert differences(RECORD["archs"][arch][form], ours) == []


def test_the_comparison_can_fail():
    theirs = RECORD["archs"]["qwen3next"]["bundled"]
    broken = {"keys": {k: v for k, v in theirs["keys"].items() if k != "qwen3next.nextn_predict_layers"},
              "tensors": dict(theirs["tensors"])}
    broken["keys"]["qwen3next.block_count"] = 4
    broken["tensors"]["blk.0.attn_qkv.weight"] = ["F32", [1, 1], "0"]
    found = "\n".join(differences(theirs, broken))
    assert "nextn_predict_layers" in found and "block_count" in found and "blk.0.attn_qkv" in found


def as_llamacpp_wrote_it(path, recorded: dict, out, window_fix: bool = False):
    """nextn's file with llama.cpp's metadata: keys llama.cpp does not write dropped, values replaced by
    the ones it wrote (tensors are byte-identical, see the test above). window_fix: MiMo's sliding window
    kept as the checkpoint trained it (llama.cpp's is one key short: nextn_dev.interop.differences)."""
    gf = open_gguf(path)
    theirs = dict(recorded["keys"])
    if window_fix:
        theirs["mimo2.attention.sliding_window"] += 1
    drop = {k for k in gf.fields if k not in theirs}
    overrides = {}
    for key, value in theirs.items():
        field = gf.fields.get(key)
        if isinstance(value, dict) or key == "general.architecture" or (field and field.contents() == value):
            continue
        vtype = field.types[0] if field else GGUFValueType.UINT32
        sub = field.types[-1] if field and vtype == GGUFValueType.ARRAY else None
        overrides[key] = (value, vtype, sub)
    return write_gguf(out, gf.arch, lambda w: _copy_metadata(w, gf, overrides, drop), _copy_tensors(list(gf.tensors.values())))


@pytest.mark.parametrize("arch", [*ARCHS, "glm4moelite", "deepseek2", "mimo2"])
def test_a_file_with_llamacpps_metadata_decodes_like_transformers(published, tmp_path, arch):
    """The Qwen3-Next bug: llama.cpp writes no expert_weights_norm (its runtime always renormalises) and
    nextn read the absence as 'do not'. Every family: only llama.cpp's keys, transformers' tokens (MiMo: with
    the checkpoint's sliding window, one key more than llama.cpp writes)."""
    hf = published(arch)
    form = "no-mtp" if arch == "deepseek2" else "bundled"
    path = as_llamacpp_wrote_it(convert(hf, tmp_path / "n.gguf", outtype="f32", mode=form, progress=False),
                                RECORD["archs"][arch][form], tmp_path / "l.gguf", window_fix=arch == "mimo2")
    assert differences(RECORD["archs"][arch][form], summary(path)) == []
    _decodes_like_transformers(hf, path, mtp=form == "bundled")


def _decodes_like_transformers(hf, path, mtp: bool) -> None:
    prompt = torch.randint(3, 300, (1, 40), generator=torch.Generator().manual_seed(7))
    with torch.inference_mode():
        ref = load_reference(hf).generate(prompt, max_new_tokens=24, do_sample=False, eos_token_id=None,
                                          pad_token_id=0)[0, 40:].tolist()
    params = SamplingParams(max_tokens=24, ignore_eos=True)
    plain = Engine(model=str(path), spec="none", progress=False).generate(prompt[0].tolist(), params)
    assert plain.tokens == ref
    if mtp:
        mtp = Engine(model=str(path), spec="mtp", progress=False).generate(
            prompt[0].tolist(), params, spec=SpecConfig(draft_max=3, adaptive=False))
        assert mtp.tokens == ref and mtp.stats.n_draft_tokens > 0


def test_qwen3next_mtp_layers_are_counted_from_the_tensors(published, tmp_path):
    """Qwen3-Next's config has no mtp_num_hidden_layers: block_count must still count the MTP block."""
    gf = open_gguf(convert(published("qwen3next"), tmp_path / "q.gguf", outtype="f32", progress=False))
    assert gf.n_layer_all == 5 and gf.n_mtp == 1
    assert gf.meta("qwen3next.attention.recurrent_layers") == [True, False, True, False, False]
    assert "blk.4.nextn.eh_proj.weight" in gf.tensors


@pytest.mark.parametrize("name", ROPE_CASES)
def test_rope_scaled_checkpoints_convert_and_decode_as_llamacpp_files(models_dir, tmp_path, name):
    """A checkpoint extended with YaRN or linear scaling: nextn writes llama.cpp's rope.scaling.* keys, and the
    file as llama.cpp's converter writes it decodes transformers' tokens, with and without MTP. (One case carries
    an explicit YaRN attention factor: llama.cpp's converter writes it, nextn applies it as transformers does.)"""
    arch, scaling = ROPE_CASES[name]
    hf = make_checkpoint(models_dir / f"published-{name}.hf", arch, published=True, rope=scaled_rope(arch, **scaling))
    ours = convert(hf, tmp_path / "n.gguf", outtype="f32", progress=False)
    assert differences(RECORD["rope"][name], keys_only(summary(ours))) == []
    path = as_llamacpp_wrote_it(ours, RECORD["rope"][name], tmp_path / "l.gguf")
    assert open_gguf(path).meta(f"{arch}.rope.scaling.type") == scaling["rope_type"]
    _decodes_like_transformers(hf, path, mtp=True)


@pytest.mark.parametrize("name", FP8_CASES)
def test_fp8_checkpoints_convert_as_llamacpps_converter_does(models_dir, tmp_path, name):
    """A checkpoint in DeepSeek-V3's published FP8 form: the same keys and tensors, byte for byte, as llama.cpp's
    converter writes (its output for DeepSeek-V3 is the trunk-only form)."""
    from nextn_dev.published import to_fp8

    arch, block = FP8_CASES[name]
    hf = to_fp8(make_checkpoint(models_dir / f"published-{name}-src.hf", arch, published=True), tmp_path / "fp8.hf",
                block=block)
    ours = summary(convert(hf, tmp_path / "n.gguf", outtype="f32", mode="no-mtp", progress=False))
    assert differences(RECORD["fp8"][name], ours) == []

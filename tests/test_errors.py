"""Bad input ends in one clear message naming the file and the problem, never a deep traceback."""

import json
import subprocess
import sys

import numpy as np
import pytest
from gguf import GGUFWriter

from nextn.engine.engine import Engine
from nextn.errors import ModelFileError, MTPUnavailableError, NextnError
from nextn.gguf.tools import extract_mtp, strip_mtp
from nextn.gguf.reader import open_gguf


def test_not_a_gguf_file(tmp_path):
    bad = tmp_path / "model.gguf"
    bad.write_text("hello, I am not a model")
    with pytest.raises(ModelFileError, match=r"model\.gguf: not a GGUF file"):
        open_gguf(bad)


def test_missing_file(tmp_path):
    with pytest.raises(ModelFileError, match="no such file"):
        Engine(model=str(tmp_path / "absent.gguf"), progress=False)


@pytest.mark.parametrize("keep", [0.5, 0.999])
def test_truncated_file(tiny, tmp_path, keep):
    src = tiny("qwen35")
    data = src.read_bytes()
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(data[: int(len(data) * keep)])
    with pytest.raises(ModelFileError, match=r"cut\.gguf: .*truncated"):
        open_gguf(cut)


def test_unsupported_architecture(tmp_path):
    path = tmp_path / "llama.gguf"
    w = GGUFWriter(str(path), "llama")
    w.add_block_count(1)
    w.add_tensor("token_embd.weight", np.zeros((4, 4), dtype=np.float32))
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()
    with pytest.raises(ModelFileError, match=r"llama\.gguf: architecture 'llama' is not supported"):
        Engine(model=str(path), progress=False)


def test_missing_tensor(tiny, tmp_path):
    from nextn.gguf.tools import _copy_metadata, _copy_tensors
    from nextn.gguf.writer import write_gguf

    gf = open_gguf(tiny("qwen35"))
    keep = [t for t in gf.tensors.values() if t.name != "blk.1.attn_q.weight"]
    out = write_gguf(tmp_path / "holey.gguf", gf.arch, lambda w: _copy_metadata(w, gf, {}, set()), _copy_tensors(keep))
    with pytest.raises(ModelFileError, match=r"holey\.gguf: tensor 'blk\.1\.attn_q\.weight' is missing"):
        Engine(model=str(out), spec="none", progress=False)


def test_head_only_file_as_main_model(tiny, tmp_path):
    head = extract_mtp(tiny("qwen35"), tmp_path / "mtp-x.gguf")
    with pytest.raises(ModelFileError, match=r"MTP head-only file .*--mtp-model"):
        Engine(model=str(head), progress=False)


def test_mtp_requested_of_a_model_without_mtp(tiny, tmp_path):
    trunk = tmp_path / "alone" / "trunk.gguf"
    trunk.parent.mkdir()
    strip_mtp(tiny("qwen35"), trunk)
    with pytest.raises(MTPUnavailableError, match=r"trunk\.gguf has no MTP layers \(nextn_predict_layers missing\); "
                                                  r"use a GGUF converted with MTP or pass --mtp-model"):
        Engine(model=str(trunk), spec="mtp", progress=False)
    assert not Engine(model=str(trunk), spec="none", progress=False).use_mtp


def test_mismatched_head_is_refused(tiny, models_dir, tmp_path):
    from nextn_dev.tiny import make_gguf

    other = make_gguf(tmp_path / "other.gguf", "qwen35", workdir=tmp_path / "other.hf", n_layer=2)
    head = extract_mtp(other, tmp_path / "mtp-other.gguf")
    with pytest.raises(MTPUnavailableError, match=r"mtp-other\.gguf: cannot be used as MTP head .*trunk layer count"):
        Engine(model=str(tiny("qwen35")), mtp_model=str(head), progress=False)
    wrong_arch = extract_mtp(tiny("qwen35moe"), tmp_path / "mtp-moe.gguf")
    with pytest.raises(MTPUnavailableError, match="architecture differs"):
        Engine(model=str(tiny("qwen35")), mtp_model=str(wrong_arch), progress=False)


def test_cli_prints_one_line_not_a_traceback(tmp_path):
    bad = tmp_path / "junk.gguf"
    bad.write_bytes(b"\x00" * 64)
    proc = subprocess.run([sys.executable, "-m", "nextn", "generate", "-m", str(bad), "-p", "hi"],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines() == [f"nextn: error: {bad}: not a GGUF file (magic bytes b'\\x00\\x00\\x00\\x00', expected b'GGUF')"]
    assert "Traceback" not in proc.stderr


def test_prompt_longer_than_context_is_refused(tiny):
    engine = Engine(model=str(tiny("qwen35")), spec="none", ctx_size=64, progress=False)
    with pytest.raises(NextnError, match="context holds 64"):
        engine.add_request(list(range(5, 100)))


def _with_metadata(src, out, overrides):
    from gguf import GGUFValueType as T  # noqa: F401

    from nextn.gguf.tools import _copy_metadata, _copy_tensors
    from nextn.gguf.writer import write_gguf

    gf = open_gguf(src)
    ov = {k.replace("ARCH", gf.arch): v for k, v in overrides.items()}
    return write_gguf(out, gf.arch, lambda w: _copy_metadata(w, gf, ov, set()), _copy_tensors(list(gf.tensors.values())))


def _T():
    from gguf import GGUFValueType
    return GGUFValueType


@pytest.mark.parametrize("overrides,needle", [
    ({"ARCH.attention.head_count": (0, "UINT32")}, "n_head = 0 must be positive"),
    ({"ARCH.attention.head_count_kv": (3, "UINT32")}, "cannot share 3 KV heads"),
    ({"ARCH.embedding_length": (300, "UINT32")}, "embedding_length is 300"),
    ({"ARCH.ssm.inner_size": (100, "UINT32")}, "head counts, head and state sizes"),
    ({"ARCH.attention.layer_norm_rms_epsilon": (-1.0, "FLOAT32")}, "must be positive"),
    ({"tokenizer.ggml.eos_token_id": (10**6, "UINT32")}, "eos_token_id = 1000000 is not a token id"),
], ids=["heads0", "kv3", "embd", "ssm", "eps", "eos"])
def test_metadata_that_contradicts_the_tensors_is_refused_at_load(demo_model, tmp_path, overrides, needle):
    T = _T()
    path = _with_metadata(demo_model, tmp_path / "bad.gguf", {k: (v, getattr(T, t), None) for k, (v, t) in overrides.items()})
    with pytest.raises(ModelFileError, match=needle):
        Engine(model=str(path), progress=False)


@pytest.mark.parametrize("args,needle", [
    (["generate", "--device", "tpu", "-p", "x"], "unknown --device 'tpu'"),
    (["generate", "-f", "/no/such/prompt.txt"], "-f /no/such/prompt.txt: cannot read"),
    (["generate", "-p", "x", "-n", "-5"], "max_tokens must be >= 1"),
    (["generate", "-p", "x", "--top-p", "2"], "top_p must be in (0, 1]"),
    (["generate", "-p", "x", "--json-schema", '{"type": "string", "pattern": "a"}'], "keyword 'pattern'"),
    (["generate", "-p", "x", "--json-schema", "/no/schema.json"], "neither JSON text nor a readable file"),
    (["serve", "--port", "99999"], "invalid port '99999'"),
    (["gguf", "quantize", "DEMO", "-o", "TMP", "--type", "q8_0"], "is a directory"),
])
def test_cli_refuses_bad_arguments_in_one_line_before_loading(demo_model, tmp_path, args, needle):
    args = [str(demo_model) if a == "DEMO" else str(tmp_path) if a == "TMP" else a for a in args]
    proc = subprocess.run([sys.executable, "-m", "nextn", *args], capture_output=True, text=True, timeout=120)
    assert proc.returncode != 0 and "Traceback" not in proc.stderr
    assert needle in proc.stderr and "loading" not in proc.stderr     # refused before the model loads
    assert not list(tmp_path.iterdir())


def test_an_undecodable_prompt_is_refused_before_anything_is_printed(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "nextn", "generate", "-p", b"\xff\xfe abc", "-n", "2"],
                          capture_output=True, timeout=120)
    assert proc.returncode == 1 and proc.stdout == b""
    assert proc.stderr.decode().strip().splitlines() == [
        "nextn: error: the prompt is not valid UTF-8 (undecodable byte at character 0)"]


@pytest.mark.parametrize("arch", ["deepseek2", "qwen35"])
def test_file_with_rope_scaling_nextn_lacks_is_refused_not_decoded_wrongly(tiny, tmp_path, arch):
    T = _T()
    path = _with_metadata(tiny(arch), tmp_path / "longrope.gguf",
                          {"ARCH.rope.scaling.type": ("longrope", T.STRING, None),
                           "ARCH.rope.scaling.factor": (4.0, T.FLOAT32, None)})
    with pytest.raises(ModelFileError, match="rope scaling 'longrope' is not implemented"):
        Engine(model=str(path), progress=False)
    bad = _with_metadata(tiny(arch), tmp_path / "negative.gguf", {"ARCH.rope.scaling.type": ("yarn", T.STRING, None),
                                                                 "ARCH.rope.scaling.factor": (-2.0, T.FLOAT32, None)})
    with pytest.raises(ModelFileError, match="rope.scaling.factor = -2.0 must be positive"):
        Engine(model=str(bad), progress=False)


@pytest.mark.parametrize("kind", ["dynamic", "longrope", "llama3"])
def test_converting_a_rope_scaling_nextn_lacks_is_refused_in_one_line(models_dir, tmp_path, kind):
    from nextn_dev.tiny import make_checkpoint, scaled_rope

    ck = make_checkpoint(tmp_path / "hf", "qwen35", rope=scaled_rope("qwen35", rope_type="default"))
    cfg = json.loads((ck / "config.json").read_text())
    cfg["rope_parameters"].update(rope_type=kind, factor=4.0)
    (ck / "config.json").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "nextn", "convert", str(ck), "-o", str(tmp_path / "out.gguf")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 1 and not (tmp_path / "out.gguf").exists()
    assert proc.stderr.strip().splitlines() == [
        f"nextn: error: rope scaling '{kind}' is not implemented in nextn (linear and yarn are)"]

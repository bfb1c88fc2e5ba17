"""Bad input ends in one clear message naming the file and the problem, never a deep traceback."""

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

"""Shared fixtures: tiny random models of each architecture, built once per test run."""

from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
torch.set_num_threads(min(2, os.cpu_count() or 1))


@pytest.fixture(scope="session")
def models_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("models")


def _build(models_dir, arch: str, mode: str = "bundled", **kw):
    from nextn_dev.tiny import make_gguf

    name = f"{arch}-{mode}" + "".join(f"-{k}{v}" for k, v in sorted(kw.items()))
    out = models_dir / f"{name}.gguf"
    if not out.exists():
        make_gguf(out, arch, mode=mode, workdir=models_dir / f"{arch}.hf", **kw)
    return out


@pytest.fixture(scope="session")
def tiny(models_dir):
    """tiny(arch, mode='bundled') -> path of a random-weight GGUF; the HF checkpoint sits at <arch>.hf."""
    cache = {}

    def get(arch: str = "qwen35", mode: str = "bundled"):
        if (arch, mode) not in cache:
            cache[(arch, mode)] = _build(models_dir, arch, mode)
        return cache[(arch, mode)]

    return get


@pytest.fixture(scope="session")
def demo_model():
    from nextn.models.loader import DEMO_MODEL

    if not DEMO_MODEL.exists():
        pytest.fail(f"bundled demo model missing: {DEMO_MODEL}")
    return DEMO_MODEL


@pytest.fixture(scope="session")
def demo_q8(demo_model, models_dir):
    """The demo model with its matrices in Q8_0 (the int8-activation kernels' territory)."""
    from nextn.gguf.tools import quantize_file

    return quantize_file(demo_model, models_dir / "demo-q8_0.gguf", "q8_0")


@pytest.fixture(scope="session")
def tiny_draft(models_dir):
    """tiny_draft(arch) -> a smaller random model (2 layers, another seed) with the same tokenizer as tiny(arch);
    tiny_draft(arch, vocab_size=400) has another vocabulary."""
    from nextn_dev.tiny import make_gguf

    def get(arch: str = "qwen35", **kw):
        name = f"draft-{arch}" + "".join(f"-{k}{v}" for k, v in sorted(kw.items()))
        out = models_dir / f"{name}.gguf"
        if not out.exists():
            make_gguf(out, arch, workdir=models_dir / f"{name}.hf", seed=7, n_layer=2, mtp=False, **kw)
        return out

    return get

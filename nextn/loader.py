"""Finding and checking model files: the trunk, and the MTP head (bundled, `--mtp-model`, or an
`mtp-*.gguf` beside the model, like mmproj). MTP tensors are only read when MTP is wanted."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from .config import ModelConfig
from .errors import ModelFileError, MTPUnavailableError, NextnError
from .ggufio import BUNDLED, HEAD_ONLY, GGUFFile, open_gguf
from .model import Model
from .tokenizer import Tokenizer

DEMO_MODEL = Path(__file__).parent / "data" / "nextn-demo-code.gguf"


def default_model() -> Path:
    if not DEMO_MODEL.exists():
        raise ModelFileError(f"the bundled demo model {DEMO_MODEL} is missing; pass a model with -m FILE.gguf")
    return DEMO_MODEL


def open_trunk(path: str | Path) -> GGUFFile:
    gf = open_gguf(path)
    if gf.form == HEAD_ONLY:
        raise ModelFileError(
            f"{gf.path} is an MTP head-only file ({gf.arch}, nextn_predict_layers={gf.n_mtp}, no trunk tensors): "
            f"it cannot run on its own. Pass the full model with -m and this file with --mtp-model {gf.path}")
    return gf


def head_mismatch(trunk: GGUFFile, head: GGUFFile) -> str | None:
    """Why `head` cannot serve as the MTP head of `trunk`, or None if it can."""
    if head.n_mtp == 0:
        return "it has no MTP layers (nextn_predict_layers missing)"
    checks = [
        ("architecture", trunk.arch, head.arch),
        ("embedding_length", trunk.arch_meta("embedding_length"), head.arch_meta("embedding_length")),
        ("vocabulary size", _vocab(trunk), _vocab(head)),
        ("trunk layer count", trunk.n_trunk, head.n_trunk),
        ("attention.head_count", trunk.arch_meta("attention.head_count"), head.arch_meta("attention.head_count")),
    ]
    for what, a, b in checks:
        if a != b:
            return f"{what} differs ({a} in {trunk.path.name}, {b} in {head.path.name})"
    return None


def _vocab(gf: GGUFFile) -> int:
    f = gf.fields.get("tokenizer.ggml.tokens")
    return len(f.data) if f is not None else int(gf.tensor("token_embd.weight").shape[1])


def find_head(trunk: GGUFFile, mtp_path: str | Path | None) -> GGUFFile | None:
    """The file to read MTP tensors from: None means the trunk file itself (bundled)."""
    if mtp_path is not None:
        head = open_gguf(mtp_path)
        if (why := head_mismatch(trunk, head)) is not None:
            raise MTPUnavailableError(f"{head.path}: cannot be used as MTP head for {trunk.path}: {why}")
        return head if head.path.resolve() != trunk.path.resolve() else None
    if trunk.form == BUNDLED:
        return None
    candidates = [trunk.path.with_name("mtp-" + trunk.path.name)]
    candidates += sorted(p for p in trunk.path.parent.glob("mtp-*.gguf") if p not in candidates)
    for path in candidates:
        if not path.exists():
            continue
        try:
            head = open_gguf(path)
        except ModelFileError:
            continue
        if head.form == HEAD_ONLY and head_mismatch(trunk, head) is None:
            print(f"nextn: using MTP head {path}", file=sys.stderr)
            return head
    raise MTPUnavailableError(
        f"{trunk.path} has no MTP layers (nextn_predict_layers missing); use a GGUF converted with MTP "
        f"or pass --mtp-model (no matching mtp-*.gguf found beside it)")


def pick_device(device: str | None) -> torch.device:
    if device:
        return torch.device(device)
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    if dtype:
        return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    return torch.bfloat16 if device.type == "cuda" else torch.float32


def pick_layout(matmul: str | None, device: torch.device, dtype: torch.dtype, with_mtp: bool) -> str:
    """Weight layout (fuse.py). Default on CPU float32: "dual" when speculating (BLAS for one-row
    products, oneDNN for verification batches), plain "blas" otherwise."""
    from .fuse import onednn_available

    if device.type != "cpu" or dtype != torch.float32 or matmul == "blas":
        return "blas"
    if not onednn_available():
        if matmul in ("onednn", "dual"):
            raise NextnError(f"--cpu-matmul {matmul}: this PyTorch build has no oneDNN linear kernels")
        return "blas"
    return matmul or ("dual" if with_mtp else "blas")


def load(model_path: str | Path | None = None, *, mtp_path: str | Path | None = None, with_mtp: bool = False,
         device: str | None = None, dtype: str | None = None, progress: bool = True, matmul: str | None = None):
    """Open, check and load a model. Returns (config, model, tokenizer, trunk file)."""
    trunk = open_trunk(model_path or default_model())
    cfg = ModelConfig.from_gguf(trunk)
    head = find_head(trunk, mtp_path) if with_mtp else None
    if with_mtp:
        cfg.n_mtp = (head or trunk).n_mtp
        cfg.recurrent = cfg.recurrent[:cfg.n_layer] + (False,) * cfg.n_mtp
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    model = Model.load(trunk, cfg, head=head, with_mtp=with_mtp, device=dev, dtype=dt, progress=progress,
                       layout=pick_layout(matmul, dev, dt, with_mtp))
    return cfg, model, Tokenizer.from_gguf(trunk), trunk

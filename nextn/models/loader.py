"""Finding and checking model files: the trunk, and the MTP head (bundled, `--mtp-model`, or an
`mtp-*.gguf` beside the model, like mmproj). MTP tensors are only read when MTP is used."""

from __future__ import annotations

import sys
from pathlib import Path

import torch

from ..errors import ModelFileError, MTPUnavailableError, NextnError
from ..gguf.forms import BUNDLED, HEAD_ONLY, form_of, head_mismatch
from ..gguf.reader import GGUFFile, open_gguf
from ..text.tokenizer import Tokenizer
from .config import ModelConfig
from .model import Model

DEMO_MODEL = Path(__file__).resolve().parents[1] / "data" / "nextn-demo-code.gguf"


def default_model() -> Path:
    if not DEMO_MODEL.exists():
        raise ModelFileError(f"the bundled demo model {DEMO_MODEL} is missing; pass a model with -m FILE.gguf")
    return DEMO_MODEL


def open_trunk(path: str | Path) -> GGUFFile:
    gf = open_gguf(path)
    if form_of(gf) == HEAD_ONLY:
        raise ModelFileError(
            f"{gf.path} is an MTP head-only file ({gf.arch}, nextn_predict_layers={gf.n_mtp}, no trunk tensors): "
            f"it cannot run on its own. Pass the full model with -m and this file with --mtp-model {gf.path}")
    return gf


def find_head(trunk: GGUFFile, mtp_path: str | Path | None) -> GGUFFile | None:
    """The file to read MTP tensors from: None means the trunk file itself (bundled)."""
    if mtp_path is not None:
        head = open_gguf(mtp_path)
        if (why := head_mismatch(trunk, head)) is not None:
            raise MTPUnavailableError(f"{head.path}: cannot be used as MTP head for {trunk.path}: {why}")
        return head if head.path.resolve() != trunk.path.resolve() else None
    if form_of(trunk) == BUNDLED:
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
        if form_of(head) == HEAD_ONLY and head_mismatch(trunk, head) is None:
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


def pick_layout(matmul: str | None, device: torch.device, dtype: torch.dtype, use_mtp: bool) -> str:
    """Weight layout (kernels/layout.py). Default on CPU float32: "dual" when speculating (BLAS for
    one-row products, oneDNN for verification batches), plain "blas" otherwise."""
    from ..kernels.layout import onednn_available

    if device.type != "cpu" or dtype != torch.float32 or matmul == "blas":
        return "blas"
    if not onednn_available():
        if matmul in ("onednn", "dual"):
            raise NextnError(f"--cpu-matmul {matmul}: this PyTorch build has no oneDNN linear kernels")
        return "blas"
    return matmul or ("dual" if use_mtp else "blas")


def load(model_path: str | Path | None = None, *, mtp_path: str | Path | None = None, use_mtp: bool = False,
         device: str | None = None, dtype: str | None = None, progress: bool = True, matmul: str | None = None):
    """Open, check and load a model. Returns (model config, model, tokenizer, trunk file)."""
    trunk = open_trunk(model_path or default_model())
    cfg = ModelConfig.from_gguf(trunk)
    head = find_head(trunk, mtp_path) if use_mtp else None
    if use_mtp:
        cfg = cfg.with_mtp_blocks((head or trunk).n_mtp)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    model = Model.load(trunk, cfg, head=head, use_mtp=use_mtp, device=dev, dtype=dt, progress=progress,
                       layout=pick_layout(matmul, dev, dt, use_mtp))
    return cfg, model, Tokenizer.from_gguf(trunk), trunk

"""Finding and checking model files: the trunk, and the MTP head (bundled, `--mtp-model`, or an
`mtp-*.gguf` beside the model, like mmproj). MTP tensors are only read when MTP is used."""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import torch

from ..errors import ModelFileError, MTPUnavailableError, NextnError
from ..gguf import draft_vocab
from ..gguf.forms import BUNDLED, HEAD_ONLY, form_of, head_mismatch
from ..gguf.reader import SPLIT_NAME, GGUFFile, open_gguf
from ..text.tokenizer import Tokenizer
from .config import ModelConfig
from .model import Model

DEMO_MODEL = Path(__file__).resolve().parents[1] / "data" / "nextn-demo-code.gguf"
_announced: set[Path] = set()


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
    if m := SPLIT_NAME.match(trunk.path.name):      # a split trunk: its head as one file, or split alike
        candidates.append(trunk.path.with_name(f"mtp-{m['stem']}.gguf"))
    candidates += sorted(p for p in trunk.path.parent.glob("mtp-*.gguf") if p not in candidates)
    for path in candidates:
        if not path.exists():
            continue
        try:
            head = open_gguf(path)
        except ModelFileError:
            continue
        if form_of(head) == HEAD_ONLY and head_mismatch(trunk, head) is None:
            if path not in _announced:          # once per process (the head's placement looks for it too)
                _announced.add(path)
                print(f"nextn: using MTP head {path}", file=sys.stderr)
            return head
    raise MTPUnavailableError(
        f"{trunk.path} has no MTP layers (nextn_predict_layers missing); use a GGUF converted with MTP "
        f"or pass --mtp-model (no matching mtp-*.gguf found beside it)")


def pick_device(device: str | None) -> torch.device:
    if not device:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except RuntimeError:
        raise NextnError(f"unknown --device {device!r} (use cpu, cuda or cuda:N)") from None
    if dev.type not in ("cpu", "cuda"):
        raise NextnError(f"--device {device!r} is not supported (use cpu, cuda or cuda:N)")
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            raise NextnError(f"--device {device}: CUDA is not available here (this PyTorch build or machine has no GPU)")
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise NextnError(f"--device {device}: this machine has {torch.cuda.device_count()} CUDA device(s)")
    return dev


def pick_dtype(dtype: str | None, device: torch.device) -> torch.dtype:
    """CPU: float32 activations over the weights as they are in the file; CUDA: --dtype (bf16 default)."""
    if device.type == "cpu":
        if dtype not in (None, "f32"):
            raise NextnError(f"--dtype {dtype}: on CPU nextn computes in float32 over the GGUF weights as stored "
                             f"(--dtype chooses the CUDA compute type)")
        return torch.float32
    if dtype:
        return {"f32": torch.float32, "f16": torch.float16, "bf16": torch.bfloat16}[dtype]
    return torch.bfloat16


def load(model_path: str | Path | None = None, *, mtp_path: str | Path | None = None, use_mtp: bool = False,
         device: str | None = None, dtype: str | None = None, progress: bool = True, kernels: str = "int8",
         draft_vocab: int = 0, mtp_layers: int = 0, comm=None, head_only: bool = False, mtp_out: bool = False,
         tokenizer: Tokenizer | None = None):
    """Open, check and load a model. Returns (model config, model, tokenizer, trunk file).
    `kernels`: "int8" (Q4_K, Q6_K and Q8_0 weights meet int8-quantized activations in few-row CPU products,
    as llama.cpp runs them) or "exact" (weights decoded to floats in every product).
    `draft_vocab`: > 0 restricts the MTP head to that many token ids (gguf/draft_vocab.py).
    `mtp_layers`: > 0 loads only the file's first that many MTP layers (deeper drafts reuse the last).
    `comm` (parallel.comm): load this rank's shard of a tensor-parallel run.
    `head_only` (with use_mtp): the MTP head alone, whole, to run apart from the trunk (Model.mtp_apart).
    `mtp_out` (without use_mtp): the trunk and the MTP blocks' output rows (Model.draft_out), for such a head.
    `tokenizer`: the file's, already built (a second load of the same file)."""
    trunk = open_trunk(model_path or default_model())
    cfg = ModelConfig.from_gguf(trunk)
    head = find_head(trunk, mtp_path) if use_mtp or mtp_out else None
    if use_mtp or mtp_out:
        cfg = cfg.with_mtp_blocks(ModelConfig.from_gguf(head) if head is not None else cfg, keep=mtp_layers)
    dev = pick_device(device)
    dt = pick_dtype(dtype, dev)
    model = Model.load(trunk, cfg, head=head, use_mtp=use_mtp, device=dev, dtype=dt, progress=progress,
                       int8=kernels == "int8", comm=comm, trunk=not head_only, mtp_out=mtp_out)
    tokenizer = tokenizer or Tokenizer.from_gguf(trunk)
    if use_mtp:
        model = with_draft_vocab((cfg, model, tokenizer, trunk), n=draft_vocab, head=head)[1]
    return cfg, model, tokenizer, trunk


def with_draft_vocab(loaded: tuple, config=None, *, n: int | None = None, head: GGUFFile | None = None) -> tuple:
    """`loaded` (as `load` returns it) with MTP heads restricted to n token ids (`config.draft_vocab`): a
    view of the model sharing every other weight. A head written by `nextn gguf trim-head` is always
    restricted to the ids its rows hold (or fewer)."""
    cfg, model, tokenizer, trunk = loaded
    if model.mtp_apart is not None:     # the head runs apart from the trunk (--tp-mtp rank0): restrict that model
        head_view = with_draft_vocab((cfg, model.mtp_apart, tokenizer, trunk), config, n=n, head=head)[1]
        if head_view is model.mtp_apart:
            return loaded
        view = copy.copy(model)
        view.mtp_apart = head_view
        return cfg, view, tokenizer, trunk
    if config is not None:
        n = config.draft_vocab
        if not n or not model.use_mtp:      # `load` has already taken in a trimmed head
            return loaded
        head = find_head(trunk, config.mtp_model)
    if not model.use_mtp:
        return loaded
    src, rows = head or trunk, model.mtp_head().shape[0]
    if model.comm is not None:         # tensor parallel: every head row split by vocabulary over the ranks
        if src.meta(draft_vocab.KEY) is not None or n:
            what = f"--draft-vocab {n}" if n else "a trimmed MTP head (nextn gguf trim-head)"
            raise NextnError(f"{src.path.name}: {what} runs whole on rank 0: use --tp-mtp rank0 (or auto), not split")
        return loaded
    if model.draft_ids is None and rows != trunk.n_vocab:       # a trimmed head, as loaded
        ids = src.meta(draft_vocab.KEY)
        if ids is None or len(ids) != rows:
            raise ModelFileError(f"{src.path}: the MTP output head has {rows} rows for a vocabulary of "
                                 f"{trunk.n_vocab} and no matching {draft_vocab.KEY} list")
        model.draft_ids = [int(t) for t in ids]
        model.draft_vocab_source = f"{rows} token ids of the trimmed head {src.path.name}"
    held = len(model.draft_ids) if model.draft_ids is not None else trunk.n_vocab
    if not n or n == held or (n >= trunk.n_vocab and held == trunk.n_vocab):
        return loaded
    if n > held:
        raise NextnError(f"--draft-vocab {n}: the trimmed head {src.path.name} holds {held} token ids")
    ranked, where = draft_vocab.ranked_ids([src, trunk], trunk.path, trunk.n_vocab)
    view = model.with_draft_vocab(draft_vocab.choose(ranked, n, set(tokenizer.eog_ids)))
    view.draft_vocab_source = f"{n} token ids, ranked by {where}"
    return cfg, view, tokenizer, trunk

"""Opening GGUF files: validation, metadata access, publishing form, tensor dequantization.

Built on gguf-py's memory-mapped GGUFReader; nothing here re-implements the format.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

import numpy as np
import torch
from gguf import GGMLQuantizationType, GGUFReader, GGUFValueType
from gguf.quants import dequantize

from .errors import ModelFileError

GGUF_MAGIC = b"GGUF"
BUNDLED, TRUNK_ONLY, HEAD_ONLY = "bundled", "trunk-only", "head-only"

DEQUANTIZABLE = {
    GGMLQuantizationType.F32, GGMLQuantizationType.F16, GGMLQuantizationType.BF16,
    GGMLQuantizationType.Q8_0, GGMLQuantizationType.Q4_0, GGMLQuantizationType.Q4_1,
    GGMLQuantizationType.Q5_0, GGMLQuantizationType.Q5_1, GGMLQuantizationType.Q2_K,
    GGMLQuantizationType.Q3_K, GGMLQuantizationType.Q4_K, GGMLQuantizationType.Q5_K,
    GGMLQuantizationType.Q6_K,
}


@dataclass
class GGUFFile:
    """A validated, memory-mapped GGUF file."""

    path: Path
    reader: GGUFReader

    @cached_property
    def fields(self) -> dict:
        return {name: f for name, f in self.reader.fields.items()}

    @cached_property
    def tensors(self) -> dict:
        return {t.name: t for t in self.reader.tensors}

    def meta(self, key: str, default=None):
        field = self.fields.get(key)
        if field is None:
            return default
        if field.types and field.types[0] == GGUFValueType.ARRAY:
            return field.contents()
        return field.contents()

    def field_type(self, key: str) -> GGUFValueType | None:
        field = self.fields.get(key)
        return field.types[0] if field is not None and field.types else None

    @cached_property
    def arch(self) -> str:
        arch = self.meta("general.architecture")
        if not arch:
            raise ModelFileError(f"{self.path}: GGUF metadata has no 'general.architecture' key")
        return arch

    def arch_meta(self, suffix: str, default=None):
        return self.meta(f"{self.arch}.{suffix}", default)

    def require(self, suffix: str):
        value = self.arch_meta(suffix)
        if value is None:
            raise ModelFileError(f"{self.path}: required metadata key '{self.arch}.{suffix}' is missing")
        return value

    @property
    def n_layer_all(self) -> int:
        return int(self.require("block_count"))

    @property
    def n_mtp(self) -> int:
        return int(self.arch_meta("nextn_predict_layers", 0) or 0)

    @property
    def n_trunk(self) -> int:
        return self.n_layer_all - self.n_mtp

    @property
    def form(self) -> str:
        if self.n_mtp == 0:
            return TRUNK_ONLY
        if "blk.0.attn_norm.weight" not in self.tensors:
            return HEAD_ONLY
        return BUNDLED

    def mtp_tensor_names(self) -> list[str]:
        first = self.n_trunk
        prefixes = tuple(f"blk.{i}." for i in range(first, self.n_layer_all))
        return [n for n in self.tensors if n.startswith(prefixes)]

    def tensor(self, name: str):
        t = self.tensors.get(name)
        if t is None:
            raise ModelFileError(f"{self.path}: tensor '{name}' is missing")
        return t

    def load(self, name: str, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        return tensor_to_torch(self.tensor(name), dtype, self.path)


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open and validate a GGUF file, turning every failure into one clear ModelFileError."""
    path = Path(path)
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a GGUF file (to convert a Hugging Face checkpoint use `nextn convert`)")
    with open(path, "rb") as f:
        magic = f.read(4)
    if magic != GGUF_MAGIC:
        raise ModelFileError(f"{path}: not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
    try:
        reader = GGUFReader(path)
    except Exception as e:  # gguf-py raises ValueError/IndexError/struct errors on damaged files
        raise ModelFileError(f"{path}: damaged or truncated GGUF file ({type(e).__name__}: {e})") from None
    size = path.stat().st_size
    for t in reader.tensors:
        if t.data_offset + t.n_bytes > size:
            raise ModelFileError(f"{path}: truncated GGUF file (tensor '{t.name}' ends at byte "
                                 f"{t.data_offset + t.n_bytes}, file has {size} bytes)")
    gf = GGUFFile(path, reader)
    _ = gf.arch
    return gf


def tensor_to_torch(t, dtype: torch.dtype, path: Path | str = "") -> torch.Tensor:
    """Dequantize one GGUF tensor into a torch tensor of the logical (row-major) shape."""
    qtype = GGMLQuantizationType(t.tensor_type)
    shape = tuple(int(d) for d in reversed(t.shape.tolist()))
    if qtype == GGMLQuantizationType.F32:
        arr = np.asarray(t.data)
    elif qtype == GGMLQuantizationType.F16:
        arr = np.asarray(t.data)
    elif qtype in DEQUANTIZABLE:
        arr = dequantize(t.data, qtype)
    else:
        raise ModelFileError(f"{path}: tensor '{t.name}' has type {qtype.name}, which nextn cannot dequantize "
                             f"(supported: {', '.join(sorted(q.name for q in DEQUANTIZABLE))})")
    with warnings.catch_warnings():  # read-only memmap: weights are never written in place
        warnings.simplefilter("ignore", UserWarning)
        out = torch.from_numpy(np.ascontiguousarray(arr).reshape(shape))
    return out if out.dtype == dtype else out.to(dtype)

"""Opening GGUF files: validation, metadata access, tensor lookup.

Built on gguf-py's memory-mapped GGUFReader; nothing here re-implements the format.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path

from gguf import GGUFReader

from ..errors import ModelFileError

GGUF_MAGIC = b"GGUF"


def block_index(name: str) -> int | None:
    """The block number of a `blk.N.*` tensor name, None for global tensors."""
    if not name.startswith("blk."):
        return None
    part = name.split(".", 2)[1]
    return int(part) if part.isdecimal() else None


@dataclass
class GGUFFile:
    """A validated, memory-mapped GGUF file."""

    path: Path
    reader: GGUFReader

    @cached_property
    def fields(self) -> dict:
        return dict(self.reader.fields)

    @cached_property
    def tensors(self) -> dict:
        return {t.name: t for t in self.reader.tensors}

    def meta(self, key: str, default=None):
        field = self.fields.get(key)
        return default if field is None else field.contents()

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

    @cached_property
    def n_vocab(self) -> int:
        """Vocabulary size: the token list, else the embedding's rows."""
        tokens = self.fields.get("tokenizer.ggml.tokens")
        if tokens is not None:
            return len(tokens.data)
        return int(self.tensor("token_embd.weight").shape[-1])

    def tensor(self, name: str):
        t = self.tensors.get(name)
        if t is None:
            raise ModelFileError(f"{self.path}: tensor '{name}' is missing")
        return t


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

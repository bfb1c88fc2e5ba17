"""Opening GGUF files: the header parsed into plain Python values, tensor data memory-mapped.

nextn reads the header itself (gguf-py's reader keeps one numpy object per element of every array:
half a gigabyte for a 248K-token vocabulary) and checks every count, length and offset against the
file before using it, so a damaged file ends in one message naming the key or tensor at fault.
"""

from __future__ import annotations

import mmap
import os
import re
import struct
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np
from gguf import GGML_QUANT_SIZES, GGMLQuantizationType, GGUFValueType

from ..errors import ModelFileError

GGUF_MAGIC = b"GGUF"
_SCALARS = {GGUFValueType.UINT8: "<B", GGUFValueType.INT8: "<b", GGUFValueType.UINT16: "<H", GGUFValueType.INT16: "<h",
            GGUFValueType.UINT32: "<I", GGUFValueType.INT32: "<i", GGUFValueType.FLOAT32: "<f", GGUFValueType.BOOL: "<?",
            GGUFValueType.UINT64: "<Q", GGUFValueType.INT64: "<q", GGUFValueType.FLOAT64: "<d"}
_NUMPY = {GGUFValueType.UINT8: np.uint8, GGUFValueType.INT8: np.int8, GGUFValueType.UINT16: np.uint16,
          GGUFValueType.INT16: np.int16, GGUFValueType.UINT32: np.uint32, GGUFValueType.INT32: np.int32,
          GGUFValueType.FLOAT32: np.float32, GGUFValueType.BOOL: np.bool_, GGUFValueType.UINT64: np.uint64,
          GGUFValueType.INT64: np.int64, GGUFValueType.FLOAT64: np.float64}
_ELEMENT_DTYPE = {GGMLQuantizationType.F32: np.float32, GGMLQuantizationType.F16: np.float16}


def block_index(name: str) -> int | None:
    """The block number of a `blk.N.*` tensor name, None for global tensors."""
    if not name.startswith("blk."):
        return None
    part = name.split(".", 2)[1]
    return int(part) if part.isdecimal() else None


@dataclass
class Field:
    """A metadata value: `types` as gguf-py gives them ([type] or [ARRAY, element type])."""

    types: list[GGUFValueType]
    value: object

    def contents(self):
        return self.value

    @property
    def count(self) -> int:
        return len(self.value) if self.types[0] == GGUFValueType.ARRAY else 1


@dataclass
class Tensor:
    """A tensor's description and its bytes, a view into the memory-mapped file."""

    name: str
    tensor_type: GGMLQuantizationType
    shape: np.ndarray              # GGUF order (fastest dimension first), as gguf-py
    data_offset: int
    n_bytes: int
    data: np.ndarray = field(repr=False)
    mapping: mmap.mmap | None = field(default=None, repr=False)   # the file mapping the bytes lie in

    def release(self) -> None:
        """Drop this process's resident pages of the tensor's bytes (whole pages inside it), once they have
        been copied elsewhere: they no longer count toward the process's memory, and a later read faults
        them back in from the file (the mapping is read-only)."""
        if self.mapping is None:
            return
        start = -(-self.data_offset // mmap.PAGESIZE) * mmap.PAGESIZE
        end = (self.data_offset + self.n_bytes) // mmap.PAGESIZE * mmap.PAGESIZE
        if end > start:
            self.mapping.madvise(mmap.MADV_DONTNEED, start, end - start)


class _Cursor:
    """Reads the header, refusing anything that would run past the end of the file."""

    def __init__(self, buf, path: Path):
        self.buf, self.path, self.off, self.size = buf, path, 0, len(buf)

    def need(self, n: int, what: str) -> None:
        if n < 0 or self.off + n > self.size:
            raise ModelFileError(f"{self.path}: damaged or truncated GGUF file ({what} runs past the end of the file "
                                 f"at byte {self.off})")

    def unpack(self, fmt: str, what: str):
        n = struct.calcsize(fmt)
        self.need(n, what)
        value = struct.unpack_from(fmt, self.buf, self.off)[0]
        self.off += n
        return value

    def string(self, what: str) -> str:
        n = self.unpack("<Q", what)
        self.need(n, what)
        raw = bytes(self.buf[self.off:self.off + n])
        self.off += n
        try:
            return raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ModelFileError(f"{self.path}: {what} is not valid UTF-8") from None

    def value(self, vtype: int, what: str):
        try:
            vtype = GGUFValueType(vtype)
        except ValueError:
            raise ModelFileError(f"{self.path}: {what} has unknown value type {vtype}") from None
        if vtype == GGUFValueType.STRING:
            return [vtype], self.string(what)
        if vtype != GGUFValueType.ARRAY:
            return [vtype], self.unpack(_SCALARS[vtype], what)
        etype, count = self.unpack("<I", what), self.unpack("<Q", what)
        try:
            etype = GGUFValueType(etype)
        except ValueError:
            raise ModelFileError(f"{self.path}: {what} is an array of unknown value type {etype}") from None
        if etype == GGUFValueType.ARRAY:
            raise ModelFileError(f"{self.path}: {what} is an array of arrays, which GGUF metadata does not use")
        if etype == GGUFValueType.STRING:
            self.need(8 * count, f"{what} ({count} strings)")   # every string has at least its length
            return [GGUFValueType.ARRAY, etype], [self.string(what) for _ in range(count)]
        item = np.dtype(_NUMPY[etype]).itemsize
        self.need(item * count, f"{what} ({count} values)")
        values = np.frombuffer(self.buf, dtype=_NUMPY[etype], count=count, offset=self.off).tolist()
        self.off += item * count
        return [GGUFValueType.ARRAY, etype], values


@dataclass
class GGUFFile:
    """A validated GGUF file: metadata as Python values, tensors as views of the memory-mapped file."""

    path: Path
    fields: dict[str, Field]
    tensors: dict[str, Tensor]
    parts: list[Path] = field(default_factory=list)     # a split model's files, first to last ([path] if one)

    @property
    def size_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.parts or [self.path])

    def meta(self, key: str, default=None):
        f = self.fields.get(key)
        return default if f is None else f.value

    @cached_property
    def arch(self) -> str:
        arch = self.meta("general.architecture")
        if not arch or not isinstance(arch, str):
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
            return tokens.count
        return int(self.tensor("token_embd.weight").shape[-1])

    def tensor(self, name: str) -> Tensor:
        t = self.tensors.get(name)
        if t is None:
            raise ModelFileError(f"{self.path}: tensor '{name}' is missing")
        return t


SPLIT_NAME = re.compile(r"^(?P<stem>.+)-(?P<no>\d{5})-of-(?P<count>\d{5})\.gguf$")


def open_gguf(path: str | os.PathLike) -> GGUFFile:
    """Open and validate a GGUF file, turning every failure into one clear ModelFileError. A split model
    (llama.cpp's `NAME-00001-of-0000N.gguf` with split.* keys) is opened by naming its first file: the
    other parts are found beside it and their tensors joined to the first part's metadata."""
    first = _open_one(Path(path))
    count = int(first.meta("split.count", 0) or 0)
    if count <= 1:
        _ = first.arch
        return first
    m = SPLIT_NAME.match(first.path.name)
    no = int(first.meta("split.no", 0) or 0)
    if no != 0:
        name = (SPLIT_NAME.sub(lambda g: f"{g['stem']}-00001-of-{g['count']}.gguf", first.path.name) if m
                else "its first part")
        raise ModelFileError(f"{first.path}: this is part {no + 1} of a {count}-part split model; name the first "
                             f"file ({name})")
    if not m:
        raise ModelFileError(f"{first.path}: first part of a {count}-part split model, but its name does not end in "
                             f"-00001-of-{count:05d}.gguf, so its other parts cannot be found")
    parts, tensors = [first.path], dict(first.tensors)
    for i in range(1, count):
        part_path = first.path.with_name(f"{m['stem']}-{i + 1:05d}-of-{count:05d}.gguf")
        if not part_path.exists():
            raise ModelFileError(f"{first.path}: part {i + 1} of {count} of this split model is missing "
                                 f"(expected {part_path.name} beside it)")
        part = _open_one(part_path)
        if part.meta("split.no") != i or part.meta("split.count") != count:
            raise ModelFileError(f"{part_path}: says it is part {part.meta('split.no')} of {part.meta('split.count')}, "
                                 f"expected part {i} (0-based) of {count}")
        for name, t in part.tensors.items():
            if name in tensors:
                raise ModelFileError(f"{part_path}: tensor '{name}' is also in another part of the split model")
            tensors[name] = t
        parts.append(part_path)
    total = first.meta("split.tensors.count")
    if total is not None and total != len(tensors):
        raise ModelFileError(f"{first.path}: the split model's parts hold {len(tensors)} tensors, split.tensors.count "
                             f"says {total}")
    gf = GGUFFile(first.path, first.fields, tensors, parts)
    _ = gf.arch
    return gf


def _open_one(path: Path) -> GGUFFile:
    """One file, header validated; general.architecture is checked by the caller (split parts have none)."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such file")
    if path.is_dir():
        raise ModelFileError(f"{path}: is a directory, not a GGUF file (to convert a Hugging Face checkpoint use `nextn convert`)")
    try:
        with open(path, "rb") as f:
            magic = f.read(4)
            if magic != GGUF_MAGIC:
                raise ModelFileError(f"{path}: not a GGUF file (magic bytes {magic!r}, expected b'GGUF')")
            buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    except OSError as e:
        raise ModelFileError(f"{path}: cannot read ({e.strerror})") from None
    cur = _Cursor(buf, path)
    cur.off = 4
    version = cur.unpack("<I", "the version")
    if version not in (2, 3):
        hint = " (a big-endian file?)" if version > 0xFFFF else ""
        raise ModelFileError(f"{path}: GGUF version {version} is not supported (nextn reads versions 2 and 3){hint}")
    n_tensors, n_kv = cur.unpack("<Q", "the tensor count"), cur.unpack("<Q", "the metadata count")
    cur.need(8 * n_kv, f"{n_kv} metadata entries")
    fields = {}
    for i in range(n_kv):
        key = cur.string(f"metadata key {i}")
        fields[key] = Field(*cur.value(cur.unpack("<I", f"the type of metadata key '{key}'"), f"metadata key '{key}'"))
    cur.need(24 * n_tensors, f"{n_tensors} tensor descriptions")
    infos = [_tensor_info(cur, path) for _ in range(n_tensors)]
    alignment = fields["general.alignment"].value if "general.alignment" in fields else 32
    if not isinstance(alignment, int) or alignment <= 0 or alignment & (alignment - 1):
        raise ModelFileError(f"{path}: metadata key 'general.alignment' = {alignment!r} is not a power of two")
    start = (cur.off + alignment - 1) // alignment * alignment
    data = np.frombuffer(buf, dtype=np.uint8)
    tensors = {}
    for name, dims, qtype, offset, n_bytes in infos:
        if name in tensors:
            raise ModelFileError(f"{path}: tensor '{name}' appears twice")
        at = start + offset
        if at + n_bytes > cur.size:
            raise ModelFileError(f"{path}: truncated GGUF file (tensor '{name}' ends at byte {at + n_bytes}, "
                                 f"file has {cur.size} bytes)")
        view = data[at:at + n_bytes]
        logical = tuple(reversed(dims))
        if qtype in _ELEMENT_DTYPE:
            view = view.view(_ELEMENT_DTYPE[qtype]).reshape(logical)
        else:
            block, size = GGML_QUANT_SIZES[qtype]
            view = view.reshape(*logical[:-1], logical[-1] // block * size)
        tensors[name] = Tensor(name, qtype, np.array(dims, dtype=np.uint64), at, n_bytes, view, buf)
    return GGUFFile(path, fields, tensors, [path])


def _tensor_info(cur: _Cursor, path: Path):
    name = cur.string("a tensor name")
    n_dims = cur.unpack("<I", f"tensor '{name}'")
    if not 1 <= n_dims <= 4:
        raise ModelFileError(f"{path}: tensor '{name}' has {n_dims} dimensions (GGUF tensors have 1 to 4)")
    dims = [cur.unpack("<Q", f"tensor '{name}'") for _ in range(n_dims)]
    raw_type = cur.unpack("<I", f"tensor '{name}'")
    offset = cur.unpack("<Q", f"tensor '{name}'")
    try:
        qtype = GGMLQuantizationType(raw_type)
    except ValueError:
        raise ModelFileError(f"{path}: tensor '{name}' has unknown type id {raw_type}") from None
    if any(d == 0 for d in dims) or any(d > 1 << 40 for d in dims):
        raise ModelFileError(f"{path}: tensor '{name}' has dimensions {dims}")
    block, size = GGML_QUANT_SIZES[qtype]
    if dims[0] % block:
        raise ModelFileError(f"{path}: tensor '{name}' has rows of {dims[0]} values, not a multiple of the "
                             f"{qtype.name} block size {block}")
    n_bytes = int(np.prod(dims, dtype=np.float64)) // block * size
    return name, dims, qtype, offset, n_bytes

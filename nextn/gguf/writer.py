"""Writing GGUF files: the output types nextn writes, the tensor type policy, encoding, tensor order,
and all-or-nothing output (a failed write leaves nothing behind)."""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFWriter
from gguf.quants import quantize
from gguf.utility import size_label

from ..errors import NextnError
from .reader import block_index

# --outtype / --type names, and llama.cpp's general.file_type for each
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q5_0": Q.Q5_0, "q4_0": Q.Q4_0}
FILE_TYPE = {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q8_0: 7, Q.Q5_0: 8, Q.BF16: 32}

# llama.cpp keeps these in F32 whatever the output type
_F32_SUFFIXES = ("ssm_a", "ssm_conv1d.weight", "ffn_gate_inp.weight", "ffn_gate_inp_shexp.weight")
_BLOCK_QUANTS = (Q.Q8_0, Q.Q5_0, Q.Q4_0)
_RANK = {Q.F32: 5, Q.BF16: 4, Q.F16: 4, Q.Q8_0: 3, Q.Q6_K: 2, Q.Q5_0: 1, Q.Q5_K: 1, Q.Q4_0: 0, Q.Q4_K: 0}


def tensor_order(name: str):
    """The order nextn writes tensors in: token_embd, blocks by index, then the rest by name."""
    il = block_index(name)
    if il is not None:
        return (1, il, name)
    return (0 if name == "token_embd.weight" else 2, 0, name)


def at_least_q8(q: Q) -> bool:
    return _RANK.get(q, 0) >= _RANK[Q.Q8_0]


def choose_type(name: str, shape, outtype: Q, *, is_mtp: bool = False, keep_mtp_precision: bool = False) -> Q:
    if len(shape) <= 1 or name.endswith(_F32_SUFFIXES) or name.endswith(".bias"):
        return Q.F32
    if is_mtp and keep_mtp_precision and not at_least_q8(outtype):
        outtype = Q.Q8_0
    if outtype in _BLOCK_QUANTS and shape[-1] % 32:
        return Q.F16
    return outtype


def encode_tensor(arr: np.ndarray, qtype: Q) -> tuple[np.ndarray, Q | None]:
    """Return (array, raw_dtype) ready for GGUFWriter.add_tensor."""
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if qtype == Q.F32:
        return arr, None
    if qtype == Q.F16:
        return arr.astype(np.float16), None
    return quantize(arr, qtype), qtype


def _check_output(out: Path) -> None:
    if out.is_dir():
        raise NextnError(f"-o {out}: is a directory; give the output file's name (e.g. {out / 'model.gguf'})")
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise NextnError(f"-o {out}: cannot create its folder ({e.strerror})") from None


@contextlib.contextmanager
def atomic_output(out: Path):
    """Yield a temporary path beside `out`; rename it into place only if the block succeeds."""
    out = Path(out)
    _check_output(out)
    tmp = out.with_name(f".{out.name}.partial")
    try:
        yield tmp
        os.replace(tmp, out)
    finally:
        if tmp.exists():
            tmp.unlink()


def parameter_label(w: GGUFWriter) -> str:
    """general.size_label of the tensors registered so far, as llama.cpp's converter computes it."""
    return size_label(*w.get_total_parameter_count())


def write_gguf(out: Path, arch: str, add_metadata, add_tensors, split_max_size: int = 0) -> Path:
    """Write a whole file atomically. Tensors are registered first (`add_tensors(writer)`), so that
    `add_metadata(writer)` can count their parameters for general.size_label.

    split_max_size > 0 writes llama.cpp's split form instead (`NAME-00001-of-0000N.gguf`, split.* keys,
    all other metadata in the first file, no file above the size unless one tensor is): every part is
    written beside its final name and renamed into place only when all are complete. Returns the first."""
    out = Path(out)
    if split_max_size <= 0:
        with atomic_output(out) as tmp:
            _write(GGUFWriter(str(tmp), arch), add_metadata, add_tensors)
        return out
    _check_output(out)
    stem = out.name[:-len(".gguf")] if out.name.endswith(".gguf") else out.name
    tmp = out.with_name(f".{stem}.partial.gguf")
    w = GGUFWriter(str(tmp), arch, split_max_size=split_max_size)
    written = []
    try:
        _write(w, add_metadata, add_tensors, lambda: written.extend(w.format_shard_names(tmp)))
        finals = [out.with_name(SHARD_NAME.format(stem, i + 1, len(written))) for i in range(len(written))]
        if len(written) == 1:       # everything fits in one part: a plain file
            finals = [out]
        for part, final in zip(written, finals):
            os.replace(part, final)
        written = []
        return finals[0]
    finally:
        for part in written:
            Path(part).unlink(missing_ok=True)


SHARD_NAME = "{:s}-{:05d}-of-{:05d}.gguf"     # llama.cpp's split file names


def _write(w: GGUFWriter, add_metadata, add_tensors, opened=lambda: None) -> None:
    add_tensors(w)
    add_metadata(w)
    opened()
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file(progress=False)
    w.close()

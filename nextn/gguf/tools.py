"""`nextn gguf ...`: inspect a file's publishing form, and move MTP heads between files without
reconverting (extract, strip, graft), byte for byte; `quantize` re-encodes on request; `split` / `merge`
move between one file and llama.cpp's split form; `set-sampling` stores recommended sampling settings.

Every command writes through a temporary file, so a refused or failed run leaves no output behind.
"""

from __future__ import annotations

import argparse
import json
from collections import Counter
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as Q, GGUFValueType, GGUFWriter
from gguf.quants import dequantize
from tqdm import tqdm

from ..errors import NextnError
from . import draft_vocab
from .forms import BUNDLED, HEAD_GLOBALS, HEAD_ONLY, TRUNK_ONLY, form_of, head_mismatch, is_mtp_tensor
from .reader import GGUFFile, block_index, open_gguf
from .writer import OUTTYPES, choose_type, encode_tensor, parameter_label, tensor_order, write_gguf

_INTERNAL = ("GGUF.",)


def describe(gf: GGUFFile) -> dict:
    trunk_bytes = mtp_bytes = other_bytes = 0
    types = Counter()
    for t in gf.tensors.values():
        types[t.tensor_type.name] += 1
        if block_index(t.name) is None:
            other_bytes += t.n_bytes
        elif is_mtp_tensor(gf, t.name):
            mtp_bytes += t.n_bytes
        else:
            trunk_bytes += t.n_bytes
    return {
        "file": str(gf.path), "size_bytes": gf.size_bytes, "parts": [p.name for p in gf.parts],
        "architecture": gf.arch, "form": form_of(gf),
        "block_count": gf.n_layer_all, "trunk_layers": gf.n_trunk, "mtp_layers": gf.n_mtp,
        "mtp_blocks": list(range(gf.n_trunk, gf.n_layer_all)) if gf.n_mtp else [],
        "embedding_length": gf.arch_meta("embedding_length"), "context_length": gf.arch_meta("context_length"),
        "vocab_size": gf.n_vocab if "tokenizer.ggml.tokens" in gf.fields else None,
        "tensor_count": len(gf.tensors), "tensor_types": dict(types),
        "bytes": {"trunk": trunk_bytes, "mtp": mtp_bytes, "shared": other_bytes},
        "chat_template": gf.meta("tokenizer.chat_template") is not None,
        "sampling": {k[len("general.sampling."):]: gf.meta(k) for k in gf.fields if k.startswith("general.sampling.")},
        **_model_lines(gf),
    }


def _model_lines(gf: GGUFFile) -> dict:
    """What describe says from the model's config (the cache and RoPE lines); where the file does not make a
    config nextn runs (a head alone, bad metadata) no cache line, and the RoPE line says why if RoPE is it."""
    from ..models.config import ModelConfig

    if form_of(gf) == HEAD_ONLY:
        return {"cache": None, "rope": None}
    try:
        cfg = ModelConfig.from_gguf(gf)
    except (NextnError, ValueError, KeyError) as e:
        return {"cache": None, "rope": str(e) if "rope" in str(e) else None}
    return {"cache": cache_footprint(gf, cfg), "rope": rope_summary(cfg)}


def rope_summary(cfg) -> dict:
    """RoPE as nextn applies it: rotated dimensions, base, context extension (rope.scaling.*)."""
    out = {"dims": cfg.n_rot, "head_dim": cfg.head_dim, "base": cfg.rope_theta, "scaling": cfg.rope_scaling}
    if cfg.rope_theta_swa:
        out["base_swa"] = cfg.rope_theta_swa
    if cfg.rope_scaling != "none":
        out.update(factor=cfg.rope_factor, cos_sin_factor=round(cfg.rope_attn_scale, 6))
    if cfg.yarn:
        out.update(original_context=cfg.yarn_orig_ctx, beta_fast=cfg.yarn_beta_fast, beta_slow=cfg.yarn_beta_slow)
    return out


def cache_footprint(gf: GGUFFile, cfg) -> dict:
    """Bytes of cache per token and fixed per sequence, as nextn allocates them on CPU (float32), for the
    trunk (config `cfg`) and with the MTP head."""
    from ..engine.config import EngineConfig
    from ..models.cache import footprint

    chunk = EngineConfig.prefill_chunk              # the default prefill chunk sizes sliding-window rings
    trunk = footprint(cfg, False, chunk)
    both = footprint(cfg, True, chunk) if gf.n_mtp else trunk
    return {"per_token": trunk[0], "fixed": trunk[1], "mtp_per_token": both[0] - trunk[0],
            "mtp_fixed": both[1] - trunk[1], "prefill_chunk": chunk}


def inspect_text(info: dict) -> str:
    mb = lambda b: f"{b / 1e6:.1f} MB"  # noqa: E731
    hint = {BUNDLED: "trunk and MTP head in one file",
            TRUNK_ONLY: "no MTP head: pair with an mtp-*.gguf head file or use --spec none",
            HEAD_ONLY: "MTP head only: pass with --mtp-model next to the trunk file"}[info["form"]]
    lines = [
        f"file:          {info['file']} ({mb(info['size_bytes'])})",
        *([f"split:         {len(info['parts'])} parts ({info['parts'][0]} ... {info['parts'][-1]})"]
          if len(info["parts"]) > 1 else []),
        f"architecture:  {info['architecture']}",
        f"form:          {info['form']} ({hint})",
        f"layers:        {info['trunk_layers']} trunk + {info['mtp_layers']} MTP (block_count {info['block_count']})"
        + (f", MTP blocks {info['mtp_blocks']}" if info["mtp_blocks"] else ""),
        f"embedding:     {info['embedding_length']}, context {info['context_length']}, vocab {info['vocab_size']}",
        f"tensors:       {info['tensor_count']} ({', '.join(f'{k} x{v}' for k, v in sorted(info['tensor_types'].items()))})",
        f"bytes:         trunk {mb(info['bytes']['trunk'])}, MTP {mb(info['bytes']['mtp'])}, "
        f"shared (embeddings, head, norm) {mb(info['bytes']['shared'])}",
        f"chat template: {'yes' if info['chat_template'] else 'no'}",
        "sampling:      " + (", ".join(f"{k} {v:.4g}" for k, v in info["sampling"].items()) or "not stored (greedy)"),
    ]
    c = info.get("cache")
    if c:
        fixed = (f" + {mb(c['fixed'])} per sequence (recurrent state, sliding-window rings at a "
                 f"{c['prefill_chunk']}-token chunk)"
                 if c["fixed"] else "")
        adds = ([f"{c['mtp_per_token'] / 1e3:.1f} kB per token"] if c["mtp_per_token"] else []) + \
               ([f"{mb(c['mtp_fixed'])} per sequence"] if c["mtp_fixed"] else [])
        mtp = f"; the MTP head adds {' + '.join(adds)}" if adds else ""
        lines.append(f"cache:         {c['per_token'] / 1e3:.1f} kB per token (float32, as on CPU){fixed}{mtp}")
    r = info.get("rope")
    if isinstance(r, str):
        lines.append(f"rope:          refused: {r}")
    elif r:
        swa = f" (sliding-window layers {r['base_swa']:g}, unscaled)" if "base_swa" in r else ""
        ext = {"none": "no context extension",
               "linear": f"linear scaling x{r.get('factor', 1):g}",
               "yarn": f"YaRN x{r.get('factor', 1):g} over an original context of {r.get('original_context')} "
                       f"(betas {r.get('beta_fast', 0):g} / {r.get('beta_slow', 0):g})"}[r["scaling"]]
        cs = f", cos/sin x{r['cos_sin_factor']:.4g}" if r.get("cos_sin_factor", 1) != 1 else ""
        lines.append(f"rope:          {r['dims']} of {r['head_dim']} dims, base {r['base']:g}{swa}; {ext}{cs}")
    return "\n".join(lines)


def _copy_metadata(w: GGUFWriter, gf: GGUFFile, overrides: dict, drop: set[str]) -> None:
    """Copy every key with its own type and in its own place; overrides {key: (value, type, subtype)}
    replace keys in place; new general.* keys end the general section and new architecture keys follow
    `{arch}.block_count` (where nextn's converter puts them).
    general.size_label is recounted from the tensors this file holds."""
    pending = dict(overrides)
    if "general.size_label" in gf.fields:
        pending["general.size_label"] = (parameter_label(w), GGUFValueType.STRING, None)

    def put(key, value, vtype, sub):
        w.add_key_value(key, value, vtype, sub_type=sub)

    for key, field in gf.fields.items():
        if key.startswith(_INTERNAL) or key in drop or key == "general.architecture":
            continue
        if key.startswith(f"{gf.arch}."):   # new general.* keys close the general section, as the converter's do
            for new in [k for k in pending if k.startswith("general.") and k not in gf.fields]:
                put(new, *pending.pop(new))
        if key in pending:
            put(key, *pending.pop(key))
        else:
            vtype = field.types[0]
            put(key, field.contents(), vtype, field.types[-1] if vtype == GGUFValueType.ARRAY else None)
        if key == f"{gf.arch}.block_count":
            for new in [k for k in pending if k not in gf.fields]:
                put(new, *pending.pop(new))
    for key, args in pending.items():
        put(key, *args)


def _copy_tensors(tensors: list):
    def add(w: GGUFWriter) -> None:
        for t in tensors:
            w.add_tensor(t.name, t.data, raw_dtype=Q(t.tensor_type))
    return add


# metadata that may hold one value per block (llama.cpp reads each of these as a scalar or a per-layer array)
PER_BLOCK = (".attention.recurrent_layers", ".attention.head_count", ".attention.head_count_kv",
             ".attention.sliding_window_pattern", ".feed_forward_length", ".expert_feed_forward_length")


def _per_block_overrides(gf: GGUFFile, n_blocks: int, donor: GGUFFile | None = None) -> dict:
    """Per-block arrays (recurrent_layers, MiMo's head_count_kv and sliding_window_pattern, ...) cut or extended
    to n_blocks: the trunk's entries of gf, then the MTP blocks' (the donor's, where it lists them)."""
    out = {}
    for key, field in gf.fields.items():
        value = field.value
        if not key.endswith(PER_BLOCK) or not isinstance(value, list) or len(value) != gf.n_layer_all:
            continue
        theirs = donor.meta(key) if donor is not None else None
        if isinstance(theirs, list) and len(theirs) == donor.n_layer_all:
            tail = list(theirs[donor.n_trunk:])
        elif key.endswith(".recurrent_layers"):
            tail = [False] * (n_blocks - gf.n_trunk)      # MTP blocks are attention blocks
        else:
            tail = [value[-1]] * (n_blocks - gf.n_trunk)
        out[key] = ((list(value[:gf.n_trunk]) + tail)[:n_blocks], GGUFValueType.ARRAY, field.types[-1])
    return out


def _need_bundled(gf: GGUFFile, command: str) -> None:
    if form_of(gf) != BUNDLED:
        raise NextnError(f"{gf.path} is {form_of(gf)}; {command} needs a bundled file (trunk + MTP head)")


def extract_mtp(src: str | Path, out: str | Path | None = None) -> Path:
    gf = open_gguf(src)
    _need_bundled(gf, "extract-mtp")
    out = Path(out) if out else gf.path.with_name("mtp-" + gf.path.name)
    if not out.name.startswith("mtp-"):
        out = out.with_name("mtp-" + out.name)
    keep = [t for t in gf.tensors.values() if is_mtp_tensor(gf, t.name) or t.name in HEAD_GLOBALS]
    return write_gguf(out, gf.arch, lambda w: _copy_metadata(w, gf, {}, set()), _copy_tensors(keep))


def strip_mtp(src: str | Path, out: str | Path) -> Path:
    gf = open_gguf(src)
    _need_bundled(gf, "strip-mtp")
    keep = [t for t in gf.tensors.values() if not is_mtp_tensor(gf, t.name)]
    overrides = {f"{gf.arch}.block_count": (gf.n_trunk, GGUFValueType.UINT32, None),
                 **_per_block_overrides(gf, gf.n_trunk)}
    drop = {f"{gf.arch}.nextn_predict_layers"}
    return write_gguf(Path(out), gf.arch, lambda w: _copy_metadata(w, gf, overrides, drop), _copy_tensors(keep))


def graft_mtp(trunk_path: str | Path, donor_path: str | Path, out: str | Path) -> Path:
    trunk, donor = open_gguf(trunk_path), open_gguf(donor_path)
    if form_of(trunk) == HEAD_ONLY:
        raise NextnError(f"{trunk.path} is a head-only file; graft-mtp needs a trunk (trunk-only or bundled) to graft onto")
    if form_of(donor) == TRUNK_ONLY:
        raise NextnError(f"{donor.path} has no MTP layers to take (nextn_predict_layers missing)")
    if (why := head_mismatch(trunk, donor)) is not None:
        raise NextnError(f"cannot graft the MTP head of {donor.path} onto {trunk.path}: {why}")
    body = [t for t in trunk.tensors.values() if not is_mtp_tensor(trunk, t.name)]
    head = [t for t in donor.tensors.values() if is_mtp_tensor(donor, t.name)]
    n_all = trunk.n_trunk + donor.n_mtp
    overrides = {f"{trunk.arch}.block_count": (n_all, GGUFValueType.UINT32, None),
                 f"{trunk.arch}.nextn_predict_layers": (donor.n_mtp, GGUFValueType.UINT32, None),
                 **_per_block_overrides(trunk, n_all, donor)}
    tensors = sorted(body + head, key=lambda t: tensor_order(t.name))
    return write_gguf(Path(out), trunk.arch, lambda w: _copy_metadata(w, trunk, overrides, set()), _copy_tensors(tensors))


def quantize_file(src: str | Path, out: str | Path, qtype: str, keep_mtp_precision: bool = False) -> Path:
    gf = open_gguf(src)
    if qtype not in OUTTYPES:
        raise NextnError(f"unknown type {qtype!r} (choose from {', '.join(OUTTYPES)})")
    target = OUTTYPES[qtype]

    def add_tensors(w: GGUFWriter) -> None:
        for t in tqdm(list(gf.tensors.values()), desc=f"quantizing to {qtype}", leave=False):
            shape = tuple(int(d) for d in reversed(t.shape.tolist()))
            kind = choose_type(t.name, shape, target, is_mtp=is_mtp_tensor(gf, t.name),
                               keep_mtp_precision=keep_mtp_precision)
            if kind == Q(t.tensor_type):
                w.add_tensor(t.name, t.data, raw_dtype=kind)
                continue
            values = dequantize(t.data, Q(t.tensor_type)).reshape(shape).astype(np.float32)
            arr, raw = encode_tensor(values, kind)
            w.add_tensor(t.name, arr, raw_dtype=raw)

    return write_gguf(Path(out), gf.arch, lambda w: _copy_metadata(w, gf, {}, {"general.file_type"}), add_tensors)


def parse_size(text: str) -> int:
    """'4G', '500M', '1.5G', '123456' (bytes) -> bytes."""
    units = {"K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12}
    t = text.strip().upper().removesuffix("B")
    try:
        value = float(t[:-1]) * units[t[-1]] if t and t[-1] in units else float(t)
    except ValueError:
        raise argparse.ArgumentTypeError(f"invalid size {text!r} (e.g. 4G, 500M)") from None
    if value <= 0:
        raise argparse.ArgumentTypeError(f"invalid size {text!r}: must be positive")
    return int(value)


def split_file(src: str | Path, out: str | Path, max_size: int) -> Path:
    """Copy a model (one file or already split) into llama.cpp's split form, parts of at most max_size bytes;
    `out` names the model (NAME.gguf -> NAME-00001-of-0000N.gguf ...). Returns the first part."""
    gf = open_gguf(src)
    return write_gguf(Path(out), gf.arch, lambda w: _copy_metadata(w, gf, {}, SPLIT_KEYS),
                      _copy_tensors(list(gf.tensors.values())), split_max_size=max_size)


def merge_file(src: str | Path, out: str | Path) -> Path:
    """A split model (named by its first part) as one file."""
    gf = open_gguf(src)
    return write_gguf(Path(out), gf.arch, lambda w: _copy_metadata(w, gf, {}, SPLIT_KEYS),
                      _copy_tensors(list(gf.tensors.values())))


SPLIT_KEYS = {"split.no", "split.count", "split.tensors.count"}


# `set-sampling` flags -> SamplingParams fields (whose general.sampling.* keys are engine.params.RECOMMENDED)
SAMPLING_FLAGS = {"temp": "temperature", "top_k": "top_k", "top_p": "top_p", "min_p": "min_p",
                  "repeat_penalty": "repetition_penalty", "repeat_last_n": "penalty_last_n"}
_INT_FIELDS = {"top_k", "penalty_last_n"}


def set_sampling(src: str | Path, out: str | Path, values: dict, clear: bool = False) -> Path:
    """Copy a file with its recommended sampling settings (general.sampling.*) set, the tensors untouched;
    `clear` drops every sampling key not given. values: {flag: value} with the flags of SAMPLING_FLAGS."""
    gf = open_gguf(src)
    if Path(out).resolve() == gf.path.resolve():
        raise NextnError("set-sampling writes a new file: give -o a path other than the input")
    from ..engine.params import RECOMMENDED

    overrides = {}
    for flag, name in SAMPLING_FLAGS.items():
        if values.get(flag) is not None:
            kind = (int, GGUFValueType.INT32) if name in _INT_FIELDS else (float, GGUFValueType.FLOAT32)
            overrides[RECOMMENDED[name]] = (kind[0](values[flag]), kind[1], None)
    given = set(overrides)
    drop = {k for k in gf.fields if k.startswith("general.sampling.") and k not in given} if clear else set()
    return write_gguf(Path(out), gf.arch, lambda w: _copy_metadata(w, gf, overrides, drop),
                      _copy_tensors(list(gf.tensors.values())))


# ---- command line ---------------------------------------------------------------------------------
def add_parser(sub) -> None:
    g = sub.add_parser("gguf", help="inspect GGUF files and move MTP heads between them")
    gs = g.add_subparsers(dest="gguf_cmd", required=True)
    p = gs.add_parser("inspect", help="architecture, layers, publishing form, tensor types and sizes")
    p.add_argument("file")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=_cmd_inspect)
    p = gs.add_parser("extract-mtp", help="bundled -> head-only mtp-*.gguf (like mmproj)")
    p.add_argument("file")
    p.add_argument("-o", "--out", default=None)
    p.set_defaults(func=lambda a: _done(extract_mtp(a.file, a.out)))
    p = gs.add_parser("strip-mtp", help="bundled -> trunk-only (saves memory and disk)")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=lambda a: _done(strip_mtp(a.file, a.out)))
    p = gs.add_parser("graft-mtp", help="take the MTP head of another file of the same model")
    p.add_argument("file", help="trunk-only (or bundled) file to graft onto")
    p.add_argument("--from", dest="donor", required=True, help="bundled or head-only file with the MTP head")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=lambda a: _done(graft_mtp(a.file, a.donor, a.out)))
    p = gs.add_parser("quantize", help="re-encode tensors (f16, bf16, q8_0, q5_0, q4_0)")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--type", required=True, choices=list(OUTTYPES))
    p.add_argument("--keep-mtp-precision", action="store_true", help="keep MTP tensors at q8_0 or better")
    p.set_defaults(func=lambda a: _done(quantize_file(a.file, a.out, a.type, a.keep_mtp_precision)))
    p = gs.add_parser("split", help="write llama.cpp's split form (NAME-00001-of-0000N.gguf) with parts of at most "
                                    "--max-size")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True, help="NAME.gguf: the parts become NAME-0000i-of-0000N.gguf")
    p.add_argument("--max-size", type=parse_size, required=True, help="e.g. 4G, 500M")
    p.set_defaults(func=lambda a: _done(split_file(a.file, a.out, a.max_size)))
    p = gs.add_parser("merge", help="a split model (named by its first part) as one file")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True)
    p.set_defaults(func=lambda a: _done(merge_file(a.file, a.out)))
    p = gs.add_parser("set-sampling", help="store recommended sampling settings (general.sampling.*), the defaults "
                                           "nextn and llama.cpp use for every parameter a request leaves unset")
    p.add_argument("file")
    p.add_argument("-o", "--out", required=True)
    p.add_argument("--temp", type=float)
    p.add_argument("--top-k", type=int)
    p.add_argument("--top-p", type=float)
    p.add_argument("--min-p", type=float)
    p.add_argument("--repeat-penalty", type=float)
    p.add_argument("--repeat-last-n", type=int)
    p.add_argument("--clear", action="store_true", help="drop the sampling keys not given")
    p.set_defaults(func=_cmd_set_sampling)
    draft_vocab.add_parsers(gs)


def _cmd_inspect(args) -> int:
    info = describe(open_gguf(args.file))
    print(json.dumps(info, indent=1) if args.json else inspect_text(info))
    return 0


def _cmd_set_sampling(args) -> int:
    from ..engine.params import SamplingParams

    values = {flag: getattr(args, flag) for flag in SAMPLING_FLAGS}
    SamplingParams.with_defaults({}, **{name: values[flag] for flag, name in SAMPLING_FLAGS.items()})  # range checks
    path = set_sampling(args.file, args.out, values, args.clear)
    print(inspect_text(describe(open_gguf(path))))
    return 0


def _done(path: Path) -> int:
    print(inspect_text(describe(open_gguf(path))))
    return 0

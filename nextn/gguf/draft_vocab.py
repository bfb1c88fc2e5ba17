"""Reduced-vocabulary MTP drafting: which token ids the draft head scores.

A ranked list of token ids (most frequent first) comes, in this order, from the head file or model
(metadata `nextn.draft_vocab.ids`), from `MODEL.draft-vocab.json` beside the model (written by
`nextn gguf draft-vocab MODEL CORPUS...`, which counts the model's own tokens over a text corpus), or,
lacking both, from the token ids themselves (BPE vocabularies number their tokens in merge order,
roughly by frequency). The first N ids, end-of-generation tokens always among them, make the draft
vocabulary. `nextn gguf trim-head` writes a head-only file whose output rows are those N ids.

Drafting over a subset never changes the output: greedy verification keeps only what the trunk would
emit, and sampled drafts come from the draft distribution over the subset, which rejection sampling
corrects exactly.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from pathlib import Path

from gguf import GGMLQuantizationType as Q, GGUFValueType

from ..errors import NextnError
from .forms import is_mtp_tensor
from .reader import SPLIT_NAME, GGUFFile, open_gguf
from .writer import write_gguf

KEY = "nextn.draft_vocab.ids"


def beside(model: Path) -> Path:
    """Where the frequency list of a model lives: MODEL.draft-vocab.json (a split model: its stem)."""
    m = SPLIT_NAME.match(model.name)
    stem = m["stem"] if m else model.name.removesuffix(".gguf")
    return model.with_name(stem + ".draft-vocab.json")


def rank(counts: Counter, n_vocab: int) -> list[int]:
    """Every id, most counted first; ties and unseen ids in id order."""
    return sorted(range(n_vocab), key=lambda t: (-counts.get(t, 0), t))


def count_corpus(tokenizer, paths: list[str]) -> tuple[Counter, int]:
    """Token counts of the corpus files, and how many characters were read."""
    counts, chars = Counter(), 0
    for path in paths:
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise NextnError(f"{path}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise NextnError(f"{path}: not UTF-8 text (byte {e.start})") from None
        for start in range(0, len(text), 1 << 16):    # pieces: encode time stays linear
            counts.update(tokenizer.encode(text[start:start + (1 << 16)], add_bos=False))
        chars += len(text)
    return counts, chars


def write_list(path: Path, model: Path, ids: list[int], counts: Counter, chars: int) -> Path:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps({"model": model.name, "n_vocab": len(ids), "corpus_chars": chars,
                               "corpus_tokens": sum(counts.values()), "seen": sum(1 for t in ids if counts.get(t)),
                               "ids": ids}))
    os.replace(tmp, path)
    return path


def _from_json(path: Path, n_vocab: int) -> list[int]:
    try:
        data = json.loads(path.read_text())
        ids = [int(t) for t in data["ids"]]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise NextnError(f"{path}: not a draft vocabulary list ({e}); write one with nextn gguf draft-vocab") from None
    if data.get("n_vocab") != n_vocab or any(not 0 <= t < n_vocab for t in ids):
        raise NextnError(f"{path}: made for a vocabulary of {data.get('n_vocab')} tokens, this model has {n_vocab}")
    return ids


def ranked_ids(files: list[GGUFFile], model: Path, n_vocab: int) -> tuple[list[int], str]:
    """(ids most frequent first, where they came from)."""
    for gf in files:
        ids = gf.meta(KEY)
        if ids is not None:
            return [int(t) for t in ids], f"{gf.path.name} ({KEY})"
    path = beside(model)
    if path.exists():
        return _from_json(path, n_vocab), path.name
    return list(range(n_vocab)), "the lowest token ids (no frequency list: see nextn gguf draft-vocab)"


def choose(ranked: list[int], n: int, always: set[int]) -> list[int]:
    """The first n ranked ids, with every id of `always` among them (replacing the least ranked)."""
    if n > len(ranked):
        raise NextnError(f"--draft-vocab {n}: the frequency list holds {len(ranked)} ids")
    top = ranked[:n]
    missing = [t for t in sorted(always) if t not in set(top)]
    if missing:
        top = top[:n - len(missing)] + missing
    return top


def trim_head(src: str | Path, n: int, out: str | Path | None = None) -> Path:
    """A head-only file of `src`'s MTP block(s) whose output head holds only the draft vocabulary's rows."""
    from .tools import _copy_metadata      # the same metadata copy as extract-mtp

    gf = open_gguf(src)
    if gf.n_mtp == 0:
        raise NextnError(f"{gf.path} has no MTP layers to trim")
    if not 1 <= n < gf.n_vocab:
        raise NextnError(f"--draft-vocab must be in [1, {gf.n_vocab - 1}] for {gf.path.name} (got {n})")
    from ..text.tokenizer import Tokenizer

    ranked, _ = ranked_ids([gf], gf.path, gf.n_vocab)
    ids = choose(ranked, n, set(Tokenizer.from_gguf(gf).eog_ids))
    # the trunk's embedding and output head stay behind (nextn reads both from the trunk); a block's own
    # input embedding (GLM-4.5) stays whole: the tokens it embeds are the trunk's, from the whole vocabulary
    tensors = [t for t in gf.tensors.values() if is_mtp_tensor(gf, t.name) and "shared_head_head" not in t.name]
    tensors += [gf.tensors["output_norm.weight"]]
    heads = {}
    for il in range(gf.n_trunk, gf.n_trunk + gf.n_mtp):
        name = f"blk.{il}.nextn.shared_head_head.weight"
        source = gf.tensors.get(name) or gf.tensors.get("output.weight") or gf.tensors["token_embd.weight"]
        heads[name] = (source.data[ids], Q(source.tensor_type))
    out = Path(out) if out else gf.path.with_name(f"mtp-{gf.path.stem}-vocab{n}.gguf")
    if not out.name.startswith("mtp-"):
        out = out.with_name("mtp-" + out.name)

    def add(w) -> None:
        for t in tensors:
            w.add_tensor(t.name, t.data, raw_dtype=Q(t.tensor_type))
        for name, (rows, qtype) in heads.items():
            w.add_tensor(name, rows, raw_dtype=qtype)

    overrides = {KEY: (ids, GGUFValueType.ARRAY, GGUFValueType.INT32)}
    return write_gguf(out, gf.arch, lambda w: _copy_metadata(w, gf, overrides, set()), add)


def count_file(model: str | Path, corpus: list[str], out: str | Path | None = None) -> tuple[Path, dict]:
    """Rank a model's token ids by their count over a corpus; write the list beside the model (or to `out`)."""
    from ..text.tokenizer import Tokenizer

    gf = open_gguf(model)
    counts, chars = count_corpus(Tokenizer.from_gguf(gf), corpus)
    if not counts:
        raise NextnError("the corpus holds no text to count")
    path = Path(out) if out else beside(gf.path)
    ids = rank(counts, gf.n_vocab)
    write_list(path, gf.path, ids, counts, chars)
    sizes = [n for n in (256, 1024, 4096, 16384, 32768, 65536) if n < gf.n_vocab]
    return path, {"tokens": sum(counts.values()), "distinct": len(counts), "chars": chars,
                  "coverage": coverage(ids, counts, sizes)}


def coverage(ids: list[int], counts: Counter, sizes: list[int]) -> dict[int, float]:
    """Share of the counted tokens that the first n ids cover, per n."""
    total = sum(counts.values())
    return {n: sum(counts.get(t, 0) for t in ids[:n]) / total for n in sizes}


def add_parsers(gs) -> None:
    p = gs.add_parser("draft-vocab", help="rank the token ids by frequency over a text corpus (MODEL.draft-vocab.json "
                                          "beside the model), for --draft-vocab N")
    p.add_argument("file")
    p.add_argument("corpus", nargs="+", help="UTF-8 text files")
    p.add_argument("-o", "--out", default=None, help="default: beside the model, MODEL.draft-vocab.json")
    p.set_defaults(func=_cmd_count)
    p = gs.add_parser("trim-head", help="a head-only mtp-*.gguf whose output head keeps only the N most frequent "
                                        "token ids (use it with --mtp-model)")
    p.add_argument("file", help="bundled or head-only file with the MTP head")
    p.add_argument("--draft-vocab", type=int, required=True, metavar="N")
    p.add_argument("-o", "--out", default=None)
    p.set_defaults(func=_cmd_trim)


def _cmd_count(args) -> int:
    path, info = count_file(args.file, args.corpus, args.out)
    print(f"{path}: {info['tokens']} tokens ({info['distinct']} distinct) counted over {info['chars']} characters")
    for n, share in info["coverage"].items():
        print(f"  the {n} most frequent ids cover {share:.1%} of the corpus tokens")
    return 0


def _cmd_trim(args) -> int:
    from .tools import _done

    return _done(trim_head(args.file, args.draft_vocab, args.out))

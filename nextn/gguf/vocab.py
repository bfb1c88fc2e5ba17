"""Hugging Face tokenizer files -> GGUF tokenizer metadata (llama.cpp keys: tokenizer.ggml.*)."""

from __future__ import annotations

import base64
import json
from pathlib import Path

from gguf import GGUFWriter, TokenType

from ..errors import NextnError
from ..text.tokenizer import PRE_TOKENIZERS, _byte_level_alphabet


GLM_SPECIAL_TOKENS = {"bos": "[gMASK]", "eot": "<|user|>", "unk": "<|endoftext|>", "eom": "<|observation|>"}
SPECIAL_KEYS = {"bos": "bos_token_id", "eos": "eos_token_id", "pad": "padding_token_id", "eot": "eot_token_id",
                "unk": "unknown_token_id", "eom": "eom_token_id"}


def _find_regexes(node) -> list[str]:
    """The Split regexes of a tokenizer.json pre_tokenizer, in the order they apply."""
    if isinstance(node, dict):
        if node.get("type") == "Split" and isinstance(node.get("pattern"), dict):
            return [node["pattern"]["Regex"]] if node["pattern"].get("Regex") else []
        return [r for child in node.get("pretokenizers", []) or [] for r in _find_regexes(child)]
    return []


def _plain(regex: str) -> str:
    """A regex in one spelling: line breaks as escapes (tokenizer.json files write either)."""
    return regex.replace("\r", "\\r").replace("\n", "\\n")


def pre_tokenizer_name(tok_json: dict, arch: str) -> str:
    regexes = tuple(map(_plain, _find_regexes(tok_json.get("pre_tokenizer") or {})))
    if not regexes:
        return "gpt2"
    names = [n for n, p in PRE_TOKENIZERS.items() if tuple(map(_plain, p.regexes)) == regexes]
    if not names:
        raise NextnError(f"tokenizer.json uses a pre-tokenizer nextn does not know: {' then '.join(map(repr, regexes))}")
    if arch in ("glm4moe", "glm4moelite") and "glm4" in names:     # GLM-4.5 and GLM-4.7-Flash, as llama.cpp names them
        return "glm4"
    return names[0]


def load_vocab(hf_dir: Path, n_vocab: int, arch: str) -> dict:
    """The tokenizer of a checkpoint as GGUF metadata: tokenizer.json's byte-level BPE, or Kimi-K2's tiktoken."""
    cfg_path = hf_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
    if (hf_dir / "tokenizer.json").exists():
        tokens, types, merges, pre = _bpe_json(hf_dir / "tokenizer.json", n_vocab, arch)
    elif (hf_dir / "tiktoken.model").exists():
        tokens, types, merges, pre = _tiktoken(hf_dir, n_vocab, tcfg)
    else:
        raise NextnError(f"{hf_dir}: tokenizer.json is missing (nextn converts byte-level BPE tokenizers, and "
                         f"Kimi-K2's tiktoken.model)")
    template = tcfg.get("chat_template")
    if template is None and (hf_dir / "chat_template.jinja").exists():
        template = (hf_dir / "chat_template.jinja").read_text(encoding="utf-8")
    ids = {t: i for i, t in enumerate(tokens)}

    def token_id(key):
        value = tcfg.get(key)
        if isinstance(value, dict):
            value = value.get("content")
        return ids.get(value) if value else None

    special = dict(bos=token_id("bos_token"), eos=token_id("eos_token"), pad=token_id("pad_token"))
    if arch in ("glm4moe", "glm4moelite"):   # GLM's own special tokens, as llama.cpp's converter sets them
        special.update({key: ids.get(text) for key, text in GLM_SPECIAL_TOKENS.items()})
    return dict(tokens=tokens, types=types, merges=merges, pre=pre, special=special,
                add_bos=bool(tcfg.get("add_bos_token", False)), chat_template=template)


def _table(size: int, normal: dict[str, int], added: dict[int, dict]) -> tuple[list[str], list[int]]:
    """Token texts and types by id: the BPE tokens, then added ones (special: CONTROL), the rest unused pads."""
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [int(TokenType.UNUSED)] * size
    for text, i in normal.items():
        tokens[i], types[i] = text, int(TokenType.NORMAL)
    for i, a in added.items():
        tokens[i] = a["content"]
        types[i] = int(TokenType.CONTROL if a.get("special") else TokenType.USER_DEFINED)
    return tokens, types


def _bpe_json(path: Path, n_vocab: int, arch: str):
    tj = json.loads(path.read_text(encoding="utf-8"))
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise NextnError(f"{path}: tokenizer model '{model.get('type')}' is not byte-level BPE")
    vocab: dict[str, int] = model["vocab"]
    added = {a["id"]: a for a in tj.get("added_tokens", [])}
    tokens, types = _table(max([n_vocab, len(vocab)] + [i + 1 for i in added]), vocab, added)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    return tokens, types, merges, pre_tokenizer_name(tj, arch)


def _tiktoken(hf_dir: Path, n_vocab: int, tcfg: dict):
    """Kimi-K2's tokenizer: tiktoken ranks (`tiktoken.model`, a base64 token and its rank per line; the rank
    is the token id) and its special tokens (tokenizer_config.json's added_tokens_decoder), as byte-level BPE.
    A token's merge is the pair BPE over the tokens ranked below it ends with (as llama.cpp's converter
    derives them); tiktoken's whole-piece lookup is the kimi-k2 pre-tokenizer's (text/tokenizer.py)."""
    if not (hf_dir / "tokenization_kimi.py").exists():
        raise NextnError(f"{hf_dir}: a tiktoken tokenizer whose splitting pattern nextn does not know (it reads "
                         f"Kimi-K2's, with tokenization_kimi.py)")
    ranks: dict[bytes, int] = {}
    for n, line in enumerate((hf_dir / "tiktoken.model").read_text(encoding="utf-8").splitlines(), 1):
        if line.strip():
            try:
                token, rank = line.split()
                ranks[base64.b64decode(token, validate=True)] = int(rank)
            except ValueError:
                raise NextnError(f"{hf_dir / 'tiktoken.model'}:{n}: expected a base64 token and its rank") from None
    byte = {b: c for c, b in _byte_level_alphabet().items()}
    text = lambda b: "".join(byte[x] for x in b)       # noqa: E731
    added = {int(i): a for i, a in (tcfg.get("added_tokens_decoder") or {}).items()}
    size = max([n_vocab, max(ranks.values(), default=-1) + 1] + [i + 1 for i in added])
    tokens, types = _table(size, {text(t): r for t, r in ranks.items()}, added)
    merges = []
    for token, rank in sorted(ranks.items(), key=lambda tr: tr[1]):
        if len(token) > 1 and len(parts := _merge_path(ranks, token, rank)) == 2:
            merges.append(f"{text(parts[0])} {text(parts[1])}")
    return tokens, types, merges, "kimi-k2"


def _merge_path(ranks: dict[bytes, int], token: bytes, below: int) -> list[bytes]:
    """`token`'s bytes merged pair by pair, lowest-ranked pair first, using only tokens ranked below `below`."""
    parts = [bytes([b]) for b in token]
    while len(parts) > 1:
        best = min(range(len(parts) - 1), key=lambda i: ranks.get(parts[i] + parts[i + 1], below))
        if ranks.get(parts[best] + parts[best + 1], below) >= below:
            break
        parts[best:best + 2] = [parts[best] + parts[best + 1]]
    return parts


def write_vocab(w: GGUFWriter, v: dict, eos_fallback: int | None = None) -> None:
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre(v["pre"])
    w.add_token_list(v["tokens"])
    w.add_token_types(v["types"])
    w.add_token_merges(v["merges"])
    special = dict(v["special"])
    if special.get("eos") is None:
        special["eos"] = eos_fallback
    for key, token_id in special.items():
        if token_id is not None:
            w.add_uint32(f"tokenizer.ggml.{SPECIAL_KEYS[key]}", token_id)
    w.add_add_bos_token(v["add_bos"])
    if v["chat_template"]:
        w.add_chat_template(v["chat_template"])

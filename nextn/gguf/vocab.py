"""Hugging Face tokenizer files -> GGUF tokenizer metadata (llama.cpp keys: tokenizer.ggml.*)."""

from __future__ import annotations

import json
from pathlib import Path

from gguf import GGUFWriter, TokenType

from ..errors import NextnError
from ..text.tokenizer import PRE_TOKENIZERS


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


def pre_tokenizer_name(tok_json: dict, arch: str) -> str:
    regexes = tuple(_find_regexes(tok_json.get("pre_tokenizer") or {}))
    if not regexes:
        return "gpt2"
    names = [n for n, p in PRE_TOKENIZERS.items() if p.regexes == regexes]
    if not names:
        raise NextnError(f"tokenizer.json uses a pre-tokenizer nextn does not know: {' then '.join(map(repr, regexes))}")
    if arch in ("glm4moe", "glm4moelite") and "glm4" in names:     # GLM-4.5 and GLM-4.7-Flash, as llama.cpp names them
        return "glm4"
    return names[0]


def load_vocab(hf_dir: Path, n_vocab: int, arch: str) -> dict:
    path = hf_dir / "tokenizer.json"
    if not path.exists():
        raise NextnError(f"{hf_dir}: tokenizer.json is missing (nextn converts byte-level BPE tokenizers)")
    tj = json.loads(path.read_text(encoding="utf-8"))
    model = tj.get("model", {})
    if model.get("type") != "BPE":
        raise NextnError(f"{path}: tokenizer model '{model.get('type')}' is not byte-level BPE")
    vocab: dict[str, int] = model["vocab"]
    added = tj.get("added_tokens", [])
    size = max([n_vocab, len(vocab)] + [a["id"] + 1 for a in added])
    tokens = [f"[PAD{i}]" for i in range(size)]
    types = [int(TokenType.UNUSED)] * size
    for text, i in vocab.items():
        tokens[i], types[i] = text, int(TokenType.NORMAL)
    for a in added:
        tokens[a["id"]] = a["content"]
        types[a["id"]] = int(TokenType.CONTROL if a.get("special") else TokenType.USER_DEFINED)
    merges = [m if isinstance(m, str) else " ".join(m) for m in model.get("merges", [])]
    cfg_path = hf_dir / "tokenizer_config.json"
    tcfg = json.loads(cfg_path.read_text(encoding="utf-8")) if cfg_path.exists() else {}
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
    return dict(tokens=tokens, types=types, merges=merges, pre=pre_tokenizer_name(tj, arch), special=special,
                add_bos=bool(tcfg.get("add_bos_token", False)), chat_template=template)


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

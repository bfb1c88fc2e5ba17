"""Byte-level BPE tokenizer rebuilt from GGUF metadata (vocab, merges, token types, pre-tokenizer name)."""

from __future__ import annotations

import warnings
from dataclasses import dataclass

from gguf import TokenType
from tokenizers import AddedToken, Regex, Tokenizer as HFTokenizer, decoders, models, pre_tokenizers

from ..errors import ModelFileError, NextnError
from ..gguf.reader import GGUFFile

_QWEN2 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+"
          r"|\s+(?!\S)|\s+")
_QWEN35 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_LLAMA3 = (r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*"
           r"|\s*[\r\n]+|\s+(?!\S)|\s+")
_GPT2 = r"'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+"
# DeepSeek-V3 / R1: three splits in turn (digits in threes, runs of CJK ideographs and kana, then the rest)
_DEEPSEEK_V3 = (r"\p{N}{1,3}", r"[一-龥぀-ゟ゠-ヿ]+",
                r"""[!"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"""
                r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")
# Kimi-K2 (its tiktoken pattern): Han runs apart, cased words without Han characters, contractions kept on;
# tiktoken takes a piece that is itself a token whole (ignore_merges), which llama.cpp's kimi-k2 does not
_NO_HAN_UPPER = r"[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_NO_HAN_LOWER = r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]"
_KIMI_K2 = (rf"[\p{{Han}}]+|[^\r\n\p{{L}}\p{{N}}]?{_NO_HAN_UPPER}*{_NO_HAN_LOWER}+(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
            rf"|[^\r\n\p{{L}}\p{{N}}]?{_NO_HAN_UPPER}+{_NO_HAN_LOWER}*(?i:'s|'t|'re|'ve|'m|'ll|'d)?"
            r"|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+")


@dataclass(frozen=True)
class PreTokenizer:
    """How text is cut before BPE for one `tokenizer.ggml.pre` name, as llama.cpp does it: regexes applied in
    turn (each splits the pieces the one before left, keeping matches and what lies between them), and
    whether a piece that is itself a token is taken whole, without merges (`ignore_merges`)."""
    regexes: tuple[str, ...]
    ignore_merges: bool = False


PRE_TOKENIZERS = {
    "qwen2": PreTokenizer((_QWEN2,)), "qwen35": PreTokenizer((_QWEN35,)),
    "llama3": PreTokenizer((_LLAMA3,), True), "llama-bpe": PreTokenizer((_LLAMA3,), True),
    "glm4": PreTokenizer((_LLAMA3,), True), "chatglm-bpe": PreTokenizer((_LLAMA3,)),
    "deepseek-v3": PreTokenizer(_DEEPSEEK_V3), "kimi-k2": PreTokenizer((_KIMI_K2,), True),
    "gpt2": PreTokenizer((_GPT2,)), "default": PreTokenizer((_GPT2,)),
}
EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<|user|>", "<|observation|>",
             "<|end|>", "<|return|>")


class Tokenizer:
    def __init__(self, tokens: list[str], merges: list[str], token_types: list[int], pre: str,
                 bos_id: int | None, eos_id: int | None, eot_id: int | None, add_bos: bool,
                 chat_template: str | None):
        how = PRE_TOKENIZERS.get(pre)
        if how is None:
            warnings.warn(f"unknown pre-tokenizer '{pre}', using the GPT-2 pattern")
            how = PRE_TOKENIZERS["gpt2"]
        vocab = {t: i for i, t in enumerate(tokens)}
        pairs = [tuple(m.split(" ", 1)) for m in merges]
        model = models.BPE(vocab=vocab, merges=pairs, fuse_unk=False, byte_fallback=False,
                           ignore_merges=how.ignore_merges)
        tk = HFTokenizer(model)
        tk.pre_tokenizer = pre_tokenizers.Sequence(
            [pre_tokenizers.Split(Regex(r), behavior="isolated", invert=False) for r in how.regexes]
            + [pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
        tk.decoder = decoders.ByteLevel()
        special = [i for i, t in enumerate(token_types) if t in (TokenType.CONTROL, TokenType.USER_DEFINED)]
        tk.add_special_tokens([AddedToken(tokens[i], special=True, normalized=False) for i in special])
        self._tk = tk
        self.tokens = tokens
        self.special_ids = set(special)
        self.bos_id, self.eos_id, self.add_bos = bos_id, eos_id, add_bos
        self.chat_template = chat_template
        eog = {i for i in (eos_id, eot_id) if i is not None}
        eog |= {vocab[t] for t in EOG_TEXTS if t in vocab}
        self.eog_ids = frozenset(eog)

    @property
    def n_vocab(self) -> int:
        return len(self.tokens)

    @classmethod
    def from_gguf(cls, gf: GGUFFile) -> "Tokenizer":
        model = gf.meta("tokenizer.ggml.model")
        if model != "gpt2":
            raise ModelFileError(f"{gf.path}: tokenizer model '{model}' is not supported "
                                 f"(nextn reads byte-level BPE, tokenizer.ggml.model = 'gpt2')")
        tokens = gf.meta("tokenizer.ggml.tokens")
        merges = gf.meta("tokenizer.ggml.merges") or []
        if not tokens:
            raise ModelFileError(f"{gf.path}: metadata key 'tokenizer.ggml.tokens' is missing")
        types = gf.meta("tokenizer.ggml.token_type") or [int(TokenType.NORMAL)] * len(tokens)
        if len(types) != len(tokens):
            raise ModelFileError(f"{gf.path}: tokenizer.ggml.token_type has {len(types)} entries for {len(tokens)} tokens")
        rows = gf.tensors["token_embd.weight"].shape[-1] if "token_embd.weight" in gf.tensors else len(tokens)
        if int(rows) < len(tokens):
            raise ModelFileError(f"{gf.path}: the vocabulary has {len(tokens)} tokens but token_embd.weight only "
                                 f"{int(rows)} rows")
        ids = {k: gf.meta(f"tokenizer.ggml.{k}_token_id") for k in ("bos", "eos", "eot")}
        for k, v in ids.items():
            if v is not None and not 0 <= v < len(tokens):
                raise ModelFileError(f"{gf.path}: tokenizer.ggml.{k}_token_id = {v} is not a token id "
                                     f"(the vocabulary has {len(tokens)})")
        try:
            return cls(tokens, merges, types, gf.meta("tokenizer.ggml.pre", "default"), ids["bos"], ids["eos"],
                       ids["eot"], bool(gf.meta("tokenizer.ggml.add_bos_token", False)),
                       gf.meta("tokenizer.chat_template"))
        except Exception as e:   # the tokenizers library rejects the vocabulary / merges
            raise ModelFileError(f"{gf.path}: the tokenizer cannot be built from this file: {e}") from None

    def encode(self, text: str, add_bos: bool | None = None) -> list[int]:
        try:
            text.encode("utf-8")
        except UnicodeEncodeError as e:   # a lone surrogate (JSON "\ud800", or undecodable bytes on a command line)
            raise NextnError(f"the text is not valid Unicode: {text[e.start:e.end]!a} at character {e.start}") from None
        ids = self._tk.encode(text, add_special_tokens=False).ids
        if (self.add_bos if add_bos is None else add_bos) and self.bos_id is not None:
            ids = [self.bos_id] + ids
        return ids

    def decode(self, ids: list[int], skip_special: bool = True) -> str:
        return self._tk.decode(list(ids), skip_special_tokens=skip_special)

    def token_text(self, token_id: int) -> str:
        return self.tokens[token_id]

    def token_bytes(self, token_id: int) -> bytes:
        """The bytes a token stands for (byte-level BPE: each character of its text is one byte)."""
        text = self.tokens[token_id]
        if token_id in self.special_ids or any(c not in _UNICODE_TO_BYTE for c in text):
            return text.encode("utf-8")
        return bytes(_UNICODE_TO_BYTE[c] for c in text)


def _byte_level_alphabet() -> dict[str, int]:
    """Byte-level BPE's printable stand-ins: printable Latin-1 bytes stand for themselves, the other bytes
    (controls, space, ...) for the characters from U+0100 on, in byte order."""
    keep = [*range(ord("!"), ord("~") + 1), *range(0xA1, 0xAC + 1), *range(0xAE, 0xFF + 1)]
    out, extra = {}, 0
    for b in range(256):
        if b in keep:
            out[chr(b)] = b
        else:
            out[chr(256 + extra)] = b
            extra += 1
    return out


_UNICODE_TO_BYTE = _byte_level_alphabet()


class StreamDecoder:
    """Turns a growing list of token ids into text deltas, holding back incomplete UTF-8 sequences."""

    def __init__(self, tokenizer: Tokenizer, skip_special: bool = True):
        self.tk, self.skip = tokenizer, skip_special
        self.ids: list[int] = []
        self.prefix = 0   # start of the window used as left context
        self.read = 0     # tokens already turned into text

    def push(self, new_ids: list[int]) -> str:
        self.ids.extend(new_ids)
        before = self.tk.decode(self.ids[self.prefix:self.read], self.skip)
        after = self.tk.decode(self.ids[self.prefix:], self.skip)
        if after.endswith("\ufffd") or len(after) <= len(before):
            return ""
        self.prefix, self.read = self.read, len(self.ids)
        return after[len(before):]

    def flush(self) -> str:
        before = self.tk.decode(self.ids[self.prefix:self.read], self.skip)
        after = self.tk.decode(self.ids[self.prefix:], self.skip)
        self.prefix = self.read = len(self.ids)
        return after[len(before):]

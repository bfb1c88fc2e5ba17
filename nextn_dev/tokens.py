"""Tokenization against llama.cpp's: a vocabulary whose merges cross every boundary a pre-tokenizer may cut at,
and the texts recorded through llama-server with each pre-tokenizer name nextn's families use
(tests/data/llamacpp_tokens.json, written by scripts/llamacpp_tokens.py)."""

from __future__ import annotations

import json
from pathlib import Path

from gguf import GGUFValueType

from nextn.gguf.reader import open_gguf
from nextn.gguf.tools import _copy_metadata, _copy_tensors
from nextn.gguf.writer import write_gguf
from nextn.text.tokenizer import _byte_level_alphabet

RECORDING = Path(__file__).resolve().parents[1] / "tests" / "data" / "llamacpp_tokens.json"
PRES = ("qwen2", "qwen35", "glm4", "deepseek-v3", "kimi-k2")
TEXTS = [
    "Hello world! It's 2026-12-08, and THEY'RE here: 1234567 tokens, 3.14159 and 1,000,000.",
    "def parse_args(argv):\n    \"\"\"Parse.\"\"\"\n    return {k: v for k, v in zip(argv[::2], argv[1::2])}\n",
    "camelCaseWords, snake_case_words and HTTPServerError; x+=1; a->b; .foo(bar)[baz]",
    "你好，世界！这是一个测试。日本語のテキストとカタカナ、ひらがな。中文123数字",
    "Ünïcödé café naïve résumé, e\u0301 composed a\u0308, Ελληνικά, русский текст, العربية, हिन्दी",
    "tabs\tand   spaces   \n\n\n  trailing  \r\n windows\r\nlines \u00a0nbsp",
    "emoji 👍🏽 and 🧑‍💻 flags 🇫🇷; symbols ©®™ ±×÷ € £ ¥; math ∑∫√∞",
    "I'm sure you'll see we've done what's needed; DON'T SHOUT, Don'T mix.",
]


# where llama.cpp departs from Kimi-K2's own tokenizer (tiktoken) and nextn follows tiktoken: llama.cpp's
# hand-written stand-in for the regex (nextn runs the regex itself: checked against Python's `regex` in the
# tests), and its merges where tiktoken takes a piece that is itself a token whole (WHOLE_WORDS)
LLAMACPP_DIFFERS = {("kimi-k2", 0): "tiktoken takes ' world' and ' tokens' whole; llama.cpp merges them",
                    ("kimi-k2", 2): "llama.cpp keeps 'CaseWords' whole; the regex cuts before each capital",
                    ("kimi-k2", 4): "llama.cpp cuts before combining marks (\\p{M}); the regex keeps them in the word",
                    ("kimi-k2", 5): "tiktoken takes ' trailing' and ' windows' whole; llama.cpp merges them",
                    ("kimi-k2", 7): "tiktoken takes ' needed' whole; llama.cpp merges it"}
VOCAB = 640
WHOLE_WORDS = (" world", " tokens", " needed", " windows", " trailing", " composed", " camelCaseWords", "Hello")


def base_model(out: Path) -> Path:
    """A tiny qwen35 model file whose vocabulary is a byte-level BPE trained on TEXTS with no pre-tokenizer."""
    from tokenizers import Tokenizer as HF, decoders, models, pre_tokenizers, trainers

    from nextn_dev.tiny import make_gguf

    tk = HF(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=VOCAB - 8, show_progress=False, max_token_length=12,
                                  initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(TEXTS * 8, trainer)
    model = json.loads(tk.to_str())["model"]
    tokens = sorted(model["vocab"], key=model["vocab"].get)
    # whole words no merge leads to: only a pre-tokenizer that skips merges for whole-token pieces (glm4) takes them
    byte = {b: c for c, b in _byte_level_alphabet().items()}
    words = ["".join(byte[b] for b in w.encode()) for w in WHOLE_WORDS]
    tokens += [w for w in words if w not in model["vocab"]]
    tokens += [f"[PAD{i}]" for i in range(VOCAB - len(tokens))]
    merges = [m if isinstance(m, str) else " ".join(m) for m in model["merges"]]
    gf = open_gguf(make_gguf(out.with_name("base.gguf"), "qwen35", vocab_size=VOCAB, mtp=False))
    overrides = {"tokenizer.ggml.tokens": (tokens, GGUFValueType.ARRAY, GGUFValueType.STRING),
                 "tokenizer.ggml.merges": (merges, GGUFValueType.ARRAY, GGUFValueType.STRING),
                 "tokenizer.ggml.token_type": ([1] * len(tokens), GGUFValueType.ARRAY, GGUFValueType.INT32)}
    return write_gguf(out, gf.arch, lambda w: _copy_metadata(w, gf, overrides, set()),
                      _copy_tensors(list(gf.tensors.values())))


def with_pre(base: Path, pre: str, out: Path) -> Path:
    gf = open_gguf(base)
    overrides = {"tokenizer.ggml.pre": (pre, GGUFValueType.STRING, None)}
    return write_gguf(out, gf.arch, lambda w: _copy_metadata(w, gf, overrides, set()),
                      _copy_tensors(list(gf.tensors.values())))



def recording() -> dict:
    return json.loads(RECORDING.read_text())

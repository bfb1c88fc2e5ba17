"""Tokenizer and chat template rebuilt from GGUF metadata behave like the original tokenizer."""

import pytest
from tokenizers import Tokenizer as HFTokenizer

from nextn.text.chat import render_chat
from nextn.gguf.reader import open_gguf
from nextn.text.tokenizer import StreamDecoder, Tokenizer

TEXTS = [
    "def f(x):\n    return x ** 2  # square\n",
    "Hello, world! It's 2026 — naïve café, 東京, emoji 🚀.\n\n\ttabs and   spaces",
    "<|im_start|>user\nhi<|im_end|>\n",
    "",
]


@pytest.fixture(scope="module")
def pair(demo_model):
    tk = Tokenizer.from_gguf(open_gguf(demo_model))
    return tk


@pytest.mark.parametrize("text", TEXTS)
def test_round_trip(pair, text):
    ids = pair.encode(text)
    assert pair.decode(ids, skip_special=False) == text


def test_matches_the_tokenizer_it_was_converted_from(tiny):
    path = tiny("qwen35")
    ours = Tokenizer.from_gguf(open_gguf(path))
    ref = HFTokenizer.from_file(str(path.parent / "qwen35.hf" / "tokenizer.json"))
    for text in TEXTS:
        assert ours.encode(text) == ref.encode(text, add_special_tokens=False).ids


def test_special_tokens_are_single_tokens_and_end_generation(pair):
    ids = pair.encode("<|im_start|>user")
    assert pair.token_text(ids[0]) == "<|im_start|>"
    im_end = pair.encode("<|im_end|>")
    assert len(im_end) == 1 and im_end[0] in pair.eog_ids
    assert pair.eos_id in pair.eog_ids
    assert pair.decode(pair.encode("a<|im_end|>b")) == "ab"   # special tokens hidden when decoding


def test_chat_template_from_metadata(pair):
    text = render_chat(pair.chat_template, [{"role": "user", "content": "Write a loop."}])
    assert text == "<|im_start|>user\nWrite a loop.<|im_end|>\n<|im_start|>assistant\n"


def test_stream_decoder_yields_whole_characters(pair):
    text = "naïve 東京 🚀 done"
    dec = StreamDecoder(pair)
    pieces = [dec.push([t]) for t in pair.encode(text)] + [dec.flush()]
    assert "".join(pieces) == text
    assert all("\ufffd" not in p for p in pieces)


def test_token_bytes_join_to_the_text(pair, demo_model):
    ours = pair[0] if isinstance(pair, tuple) else pair
    for tk in (ours, Tokenizer.from_gguf(open_gguf(demo_model))):
        for text in ("héllo wörld\n\tdef f():  ✓ 日本", "x = {'a': [1, 2]}\r\n"):
            ids = tk.encode(text, add_bos=False)
            assert b"".join(tk.token_bytes(i) for i in ids) == text.encode()

"""Tokenizer and chat template rebuilt from GGUF metadata behave like the original tokenizer."""

import pytest
from tokenizers import Regex, Tokenizer as HFTokenizer

from nextn.text.chat import render_chat
from nextn.errors import NextnError
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


@pytest.fixture(scope="module")
def cut_vocab(tmp_path_factory):
    """A model file whose BPE merges cross every boundary a pre-tokenizer may cut at."""
    from nextn_dev.tokens import base_model

    return base_model(tmp_path_factory.mktemp("cut") / "model.gguf")


@pytest.mark.parametrize("pre", ["qwen2", "qwen35", "glm4", "deepseek-v3", "kimi-k2"])
def test_pre_tokenizers_cut_text_as_llamacpp_does(cut_vocab, tmp_path, pre):
    """Qwen3 / Qwen3-Next / MiMo (qwen2), Qwen3.5, GLM (glm4, merges skipped for whole-token pieces), DeepSeek-V3
    (three splits in turn) and Kimi-K2 files tokenize as llama-server does (tests/data/llamacpp_tokens.json),
    but where llama.cpp's Kimi-K2 splitter departs from Kimi's regex (nextn_dev.tokens.LLAMACPP_DIFFERS)."""
    from nextn_dev.tokens import LLAMACPP_DIFFERS, TEXTS, recording, with_pre

    tk = Tokenizer.from_gguf(open_gguf(with_pre(cut_vocab, pre, tmp_path / f"{pre}.gguf")))
    rec = recording()["tokens"]
    checked = 0
    for i, text in enumerate(TEXTS):
        if (pre, i) not in LLAMACPP_DIFFERS:
            assert tk.encode(text, add_bos=False) == rec[pre][i], (pre, text)
            checked += 1
    assert checked >= 3 and len({tuple(rec[p][0]) for p in rec}) > 1       # the names do cut differently


def test_kimi_k2_pieces_follow_its_regex(cut_vocab, tmp_path):
    """Kimi-K2's pre-tokenizer is its tiktoken pattern (character-class intersections included), cut as the
    `regex` package cuts it; like tiktoken, a piece that is itself a token is taken whole."""
    import regex
    from tokenizers import pre_tokenizers

    from nextn.text.tokenizer import PRE_TOKENIZERS
    from nextn_dev.tokens import TEXTS

    pattern = PRE_TOKENIZERS["kimi-k2"].regexes[0]
    split = pre_tokenizers.Split(Regex(pattern), behavior="isolated")
    for text in TEXTS:
        assert [p for p, _ in split.pre_tokenize_str(text)] == regex.findall(pattern, text, flags=regex.V1)
    from nextn_dev.tokens import with_pre
    tk = Tokenizer.from_gguf(open_gguf(with_pre(cut_vocab, "kimi-k2", tmp_path / "k.gguf")))
    assert [tk.decode([t]) for t in tk.encode("the trailing windows", add_bos=False)][-2:] == [" trailing", " windows"]


def test_a_deepseek_v3_tokenizer_json_converts_to_its_pre_tokenizer_name():
    from nextn.gguf.vocab import pre_tokenizer_name
    from nextn.text.tokenizer import PRE_TOKENIZERS

    # spelt as in llama.cpp's source (and DeepSeek's tokenizer.json): line breaks as characters, quotes bare
    third = ("[!\"#$%&'()*+,\\-./:;<=>?@\\[\\\\\\]^_`{|}~][A-Za-z]+|[^\r\n\\p{L}\\p{P}\\p{S}]?[\\p{L}\\p{M}]+"
             "| ?[\\p{P}\\p{S}]+[\r\n]*|\\s*[\r\n]+|\\s+(?!\\S)|\\s+")
    splits = [{"type": "Split", "pattern": {"Regex": r}, "behavior": "Isolated", "invert": False}
              for r in PRE_TOKENIZERS["deepseek-v3"].regexes[:2] + (third,)]
    tj = {"pre_tokenizer": {"type": "Sequence", "pretokenizers": splits + [{"type": "ByteLevel"}]}}
    assert pre_tokenizer_name(tj, "deepseek2") == "deepseek-v3"
    tj["pre_tokenizer"]["pretokenizers"] = splits[1:]
    with pytest.raises(NextnError, match="pre-tokenizer nextn does not know"):
        pre_tokenizer_name(tj, "deepseek2")


def test_chat_templates_render_as_transformers_renders_them():
    """What published templates use beyond plain jinja: transformers' `tojson` (no HTML escapes, keys in their
    order, non-ASCII kept), loop controls, `{% generation %}` blocks; the same text as apply_chat_template's."""
    from transformers.utils.chat_template_utils import render_jinja_template

    template = ("{%- for m in messages %}{% if loop.index > 3 %}{% break %}{% endif %}"
                "<|{{ m.role }}|>{% if m.role == 'assistant' %}{% generation %}{{ m.content }}{% endgeneration %}"
                "{% else %}{{ m.content }}{% endif %}\n{% endfor %}"
                "{%- if tools %}<tools>{% for t in tools %}{{ t | tojson }}{{ t | tojson(indent=2) }}{% endfor %}"
                "</tools>{% endif %}{% if add_generation_prompt %}<|assistant|>{% endif %}")
    tools = [{"type": "function", "function": {"name": "météo", "description": "Weather <& 'quotes'>",
                                               "parameters": {"z": 1, "a": [1, 2]}}}]
    messages = [{"role": "user", "content": "Quel temps fait-il ?"}, {"role": "assistant", "content": "Je regarde."},
                {"role": "user", "content": "Merci"}, {"role": "user", "content": "never shown"}]
    ours = render_chat(template, messages, tools=tools)
    theirs = render_jinja_template([messages], tools=tools, chat_template=template, add_generation_prompt=True)[0][0]
    assert ours == theirs
    assert '"météo"' in ours and "<&" in ours and ours.index('"z"') < ours.index('"a"') and "never shown" not in ours


def test_a_kimi_k2_tiktoken_vocabulary_converts_and_tokenizes_as_tiktoken(models_dir, tmp_path):
    """Kimi-K2 ships tiktoken ranks (tiktoken.model) and tokenization_kimi.py, no tokenizer.json: nextn convert
    derives the merges, and the file tokenizes exactly as tiktoken does with Kimi's pattern and those ranks
    (including pieces that are tokens no merge reaches), special tokens included."""
    import base64
    import json
    import shutil

    import tiktoken

    from nextn.gguf.convert import convert
    from nextn.text.tokenizer import PRE_TOKENIZERS, _byte_level_alphabet
    from nextn_dev.tiny import make_checkpoint
    from nextn_dev.tokens import TEXTS, WHOLE_WORDS

    hf = tmp_path / "kimi.hf"
    shutil.copytree(make_checkpoint(models_dir / "kimi-src.hf", "deepseek2", published=True), hf)
    tj = json.loads((hf / "tokenizer.json").read_text())
    (hf / "tokenizer.json").unlink()
    to_byte = _byte_level_alphabet()
    normal = sorted((i, t) for t, i in tj["model"]["vocab"].items() if t not in {a["content"] for a in tj["added_tokens"]})
    cfg = json.loads((hf / "config.json").read_text())
    ranks = {bytes(to_byte[c] for c in t): r for r, (_, t) in enumerate(normal[:cfg["vocab_size"] - 16])}
    for w in WHOLE_WORDS:                           # tokens that no merge leads to
        ranks.setdefault(w.encode(), len(ranks))
    (hf / "tiktoken.model").write_text("".join(f"{base64.b64encode(t).decode()} {r}\n" for t, r in ranks.items()))
    (hf / "tokenization_kimi.py").write_text("# Kimi-K2's tokenizer class (its pattern is the kimi-k2 pre-tokenizer)\n")
    specials = {"[BOS]": len(ranks), "[EOS]": len(ranks) + 1, "<|im_end|>": len(ranks) + 2}
    tcfg = {"bos_token": "[BOS]", "eos_token": "[EOS]",
            "added_tokens_decoder": {str(i): {"content": t, "special": True} for t, i in specials.items()}}
    (hf / "tokenizer_config.json").write_text(json.dumps(tcfg))
    gf = open_gguf(convert(hf, tmp_path / "kimi.gguf", outtype="f32", mode="no-mtp", progress=False))
    assert gf.meta("tokenizer.ggml.pre") == "kimi-k2" and gf.meta("tokenizer.ggml.eos_token_id") == specials["[EOS]"]
    ours = Tokenizer.from_gguf(gf)
    reference = tiktoken.Encoding("kimi-test", pat_str=PRE_TOKENIZERS["kimi-k2"].regexes[0], mergeable_ranks=ranks,
                                  special_tokens=specials)
    for text in TEXTS + [" ".join(WHOLE_WORDS) + "<|im_end|>"]:
        assert ours.encode(text, add_bos=False) == reference.encode(text, allowed_special="all"), text

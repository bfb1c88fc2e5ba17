"""Record how llama.cpp tokenizes with each pre-tokenizer nextn's families use, as test data
(tests/data/llamacpp_tokens.json).

    python scripts/llamacpp_tokens.py --server path/to/llama-server [--check]

A tiny random model whose byte-level BPE was trained on TEXTS without any pre-tokenizer (so that its merges
cross digits, punctuation, scripts and spaces, and where a pre-tokenizer cuts decides the tokens), with its
`tokenizer.ggml.pre` set to each name of PRES (Qwen3 / Qwen3-Next and MiMo: qwen2, Qwen3.5: qwen35, GLM-4.5 /
GLM-4.7-Flash: glm4, DeepSeek-V3: deepseek-v3, Kimi-K2: kimi-k2), is loaded in llama-server, which tokenizes
TEXTS (digits, CJK and kana, contractions, code, whitespace runs, accents and combining marks, other
scripts, emoji). `--check` compares nextn's tokenizer with the recording instead.
The tests compare nextn's tokenizer with this recording without needing llama.cpp.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

from llamacpp_check import LlamaServer
from nextn.gguf.reader import open_gguf
from nextn.text.tokenizer import Tokenizer
from nextn_dev.tokens import LLAMACPP_DIFFERS, PRES, RECORDING, TEXTS, base_model, recording, with_pre


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", default=None, help="llama.cpp's llama-server (not needed with --check)")
    ap.add_argument("--check", action="store_true")
    args = ap.parse_args()
    if args.check:
        rec, bad = recording(), 0
        for pre in PRES:
            with tempfile.TemporaryDirectory() as d:
                base = base_model(Path(d) / "model.gguf")
                tk = Tokenizer.from_gguf(open_gguf(with_pre(base, pre, Path(d) / f"{pre}.gguf")))
            for i, (text, want) in enumerate(zip(TEXTS, rec["tokens"][pre])):
                got = tk.encode(text, add_bos=False)
                if got != want and (pre, i) not in LLAMACPP_DIFFERS:
                    bad += 1
                    print(f"{pre}: {text[:40]!r}: nextn {len(got)} tokens, llama.cpp {len(want)}")
        print("same" if not bad else f"{bad} differences")
        sys.exit(1 if bad else 0)
    tokens = {}
    with tempfile.TemporaryDirectory() as d:
        base = base_model(Path(d) / "model.gguf")
        for pre in PRES:
            srv = LlamaServer(args.server, with_pre(base, pre, Path(d) / f"{pre}.gguf"))
            try:
                tokens[pre] = [srv.post("/tokenize", {"content": t, "add_special": False})["tokens"] for t in TEXTS]
            finally:
                srv.close()
            print(f"{pre}: recorded {sum(map(len, tokens[pre]))} tokens")
    RECORDING.write_text(json.dumps({"texts": TEXTS, "tokens": tokens}, indent=1) + "\n")
    print(f"wrote {RECORDING}")


if __name__ == "__main__":
    main()

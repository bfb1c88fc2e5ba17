"""Run llama.cpp's own `convert_hf_to_gguf.py` on a checkpoint, as a user of llama.cpp would.

    python scripts/llamacpp_convert.py --llama-dir path/to/llama.cpp HF_DIR --outfile OUT.gguf [--outtype f32] [--mtp|--no-mtp]

llama.cpp's converter recognises a BPE pre-tokenizer by hashing how it splits a test text; the
tiny tokenizers nextn trains for its test models are not in its list, so when the hash is unknown
this wrapper answers with the name whose regex the tokenizer.json declares (the same answer nextn's
converter gives). For model types newer than the
transformers its requirements pin, AutoConfig is made to fail as it does there (NEWER_THAN_PIN). Nothing else
in the converter is touched. It needs the converter's own gguf-py
(taken from `LLAMA_DIR/gguf-py`), torch, numpy and transformers.
"""

from __future__ import annotations

import argparse
import json
import runpy
import sys
from pathlib import Path


# llama.cpp's converter reads config.json through transformers' AutoConfig, falling back to the raw file when
# AutoConfig fails. Its requirements pin transformers 4.57.6, which does not know these model types, so there
# it reads the raw file; a newer transformers (ours) would hand it a normalised config that it cannot read
# (MiMo-V2: rope_parameters per layer type). The wrapper makes AutoConfig fail for them, as the pin does.
TRANSFORMERS_PIN = "4.57.6"
NEWER_THAN_PIN = ("mimo_v2_flash",)


def known_pre_tokenizer(hf_dir: Path) -> str:
    from nextn.gguf.convert import Checkpoint
    from nextn.gguf.vocab import pre_tokenizer_name

    tj = json.loads((hf_dir / "tokenizer.json").read_text(encoding="utf-8"))
    return pre_tokenizer_name(tj, Checkpoint(hf_dir).vocab_style)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--llama-dir", required=True, help="llama.cpp source tree (has convert_hf_to_gguf.py)")
    args, rest = ap.parse_known_args()
    llama = Path(args.llama_dir).resolve()
    hf_dir = Path(next(a for a in rest if not a.startswith("-") and Path(a).is_dir()))
    sys.path[:0] = [str(llama / "gguf-py"), str(llama)]   # the converter's own gguf-py, before any other
    pre = known_pre_tokenizer(hf_dir)
    from conversion import base

    original = base.TextModel.get_vocab_base_pre

    def get_vocab_base_pre(self, tokenizer):
        try:
            return original(self, tokenizer)
        except NotImplementedError:
            return pre

    base.TextModel.get_vocab_base_pre = get_vocab_base_pre
    model_type = json.loads((hf_dir / "config.json").read_text()).get("model_type")
    if model_type in NEWER_THAN_PIN:
        def unknown(*_a, **_k):
            raise ValueError(f"model type {model_type!r} is not known to transformers {TRANSFORMERS_PIN}")
        base.AutoConfig.from_pretrained = unknown
    sys.argv = [str(llama / "convert_hf_to_gguf.py"), *rest]
    runpy.run_path(str(llama / "convert_hf_to_gguf.py"), run_name="__main__")


if __name__ == "__main__":
    main()

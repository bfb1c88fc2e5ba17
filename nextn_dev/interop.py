"""What a GGUF file holds, in a form that compares across converters: every metadata key with its value
(token lists and merges by count) and every tensor with its type, shape and a hash of its bytes.
tests/data/llamacpp_keys.json holds this for llama.cpp's converter (scripts/llamacpp_keys.py)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from gguf import GGUFReader

RECORDING = Path(__file__).resolve().parents[1] / "tests" / "data" / "llamacpp_keys.json"
BULKY = ("tokenizer.ggml.tokens", "tokenizer.ggml.merges", "tokenizer.ggml.token_type")
FORMS = ("bundled", "mtp", "no-mtp")


def summary(path: str | Path) -> dict:
    r = GGUFReader(path)
    keys = {k: ({"count": len(f.data)} if k in BULKY else f.contents())
            for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: [t.tensor_type.name, [int(x) for x in t.shape], hashlib.sha256(t.data.tobytes()).hexdigest()[:16]]
               for t in r.tensors}
    return {"keys": keys, "tensors": tensors}


def recording() -> dict:
    return json.loads(RECORDING.read_text())


def differences(theirs: dict, ours: dict) -> list[str]:
    """Where two summaries differ in meaning. Not compared: general.name (a display name each converter
    derives in its own way) and full_attention_interval where the file lists the recurrent layers
    (every runtime reads the list first; llama.cpp's value comes from transformers' config
    normalisation, which drops the key for Qwen3-Next)."""
    out = []
    for k in sorted(set(theirs["keys"]) | set(ours["keys"])):
        a, b = theirs["keys"].get(k, "<absent>"), ours["keys"].get(k, "<absent>")
        if a == b:
            continue
        if k == "general.name" and "<absent>" not in (a, b):
            continue
        arch = k.split(".")[0]
        if k.endswith(".full_attention_interval") and f"{arch}.attention.recurrent_layers" in theirs["keys"] \
                and "<absent>" not in (a, b):
            continue
        out.append(f"{k}: llama.cpp {str(a)[:60]} / nextn {str(b)[:60]}")
    for n in sorted(set(theirs["tensors"]) | set(ours["tensors"])):
        a, b = theirs["tensors"].get(n), ours["tensors"].get(n)
        if a != b:
            out.append(f"tensor {n}: llama.cpp {a} / nextn {b}")
    return out

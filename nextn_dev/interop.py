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
# published-shape checkpoints with a RoPE context extension (nextn_dev.tiny.scaled_rope), recorded in their
# bundled form under "rope" (not MiMo-V2: its own config form carries no rope_parameters that transformers reads;
# tests/test_parity.py checks its YaRN in transformers' form)
ROPE_CASES = {
    "qwen35-yarn": ("qwen35", {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 256}),
    "qwen35moe-yarn-attention-factor": ("qwen35moe", {"rope_type": "yarn", "factor": 4.0, "attention_factor": 0.9,
                                                      "original_max_position_embeddings": 256}),
    "qwen3next-yarn-betas": ("qwen3next", {"rope_type": "yarn", "factor": 8.0, "original_max_position_embeddings": 128,
                                           "beta_fast": 16.0, "beta_slow": 2.0}),
    "glm4moe-linear": ("glm4moe", {"rope_type": "linear", "factor": 2.0}),
}


def summary(path: str | Path) -> dict:
    r = GGUFReader(path)
    keys = {k: ({"count": len(f.data)} if k in BULKY else f.contents())
            for k, f in r.fields.items() if not k.startswith("GGUF.")}
    tensors = {t.name: [t.tensor_type.name, [int(x) for x in t.shape], hashlib.sha256(t.data.tobytes()).hexdigest()[:16]]
               for t in r.tensors}
    return {"keys": keys, "tensors": tensors}


# published-shape checkpoints in block-scaled FP8 (nextn_dev.published.to_fp8, blocks of 16 x 32 so that tiny
# matrices hold several), recorded as llama.cpp's converter writes them (DeepSeek-V3: the trunk-only form)
FP8_CASES = {"deepseek2-fp8": ("deepseek2", (16, 32))}


def keys_only(s: dict) -> dict:
    """A summary without its tensors (the ROPE_CASES differ from the plain checkpoints in metadata only)."""
    return {"keys": s["keys"], "tensors": {}}


def recording() -> dict:
    return json.loads(RECORDING.read_text())


def differences(theirs: dict, ours: dict) -> list[str]:
    """Where two summaries differ in meaning. Not compared: general.name (a display name each converter
    derives in its own way) and full_attention_interval where the file lists the recurrent layers
    (every runtime reads the list first; llama.cpp's value comes from transformers' config
    normalisation, which drops the key for Qwen3-Next).
    Two differences nextn makes on purpose (MiMo-V2, see nextn/gguf/metadata.py and convert.py): its
    sliding_window is one more than llama.cpp's (the window the model was trained with: llama.cpp's runtime
    masks keys `n_swa` or more positions back, so the checkpoint's `sliding_window_size` previous tokens
    need n_swa = size + 1), and q, k, v are one `attn_qkv` tensor (llama.cpp's MiMo MTP graph requires it)."""
    out = []
    fused = {n.rsplit(".", 2)[0] for n in ours["tensors"] if n.endswith("attn_qkv.weight")} \
        if ours["keys"].get("general.architecture") == "mimo2" else set()
    for k in sorted(set(theirs["keys"]) | set(ours["keys"])):
        a, b = theirs["keys"].get(k, "<absent>"), ours["keys"].get(k, "<absent>")
        if a == b:
            continue
        if k == "general.name" and "<absent>" not in (a, b):
            continue
        if k == "mimo2.attention.sliding_window" and isinstance(a, int) and b == a + 1:
            continue
        arch = k.split(".")[0]
        if k.endswith(".full_attention_interval") and f"{arch}.attention.recurrent_layers" in theirs["keys"] \
                and "<absent>" not in (a, b):
            continue
        out.append(f"{k}: llama.cpp {str(a)[:60]} / nextn {str(b)[:60]}")
    for n in sorted(set(theirs["tensors"]) | set(ours["tensors"])):
        a, b = theirs["tensors"].get(n), ours["tensors"].get(n)
        block = n.rsplit(".", 2)[0]
        if block in fused and n.endswith(("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_qkv.weight")):
            continue                 # compared as a whole below
        if a != b:
            out.append(f"tensor {n}: llama.cpp {a} / nextn {b}")
    for block in sorted(fused):
        parts = [theirs["tensors"].get(f"{block}.attn_{x}.weight") for x in "qkv"]
        mine = ours["tensors"][f"{block}.attn_qkv.weight"]
        if None in parts or {p[0] for p in parts} != {mine[0]} or sum(p[1][1] for p in parts) != mine[1][1] \
                or any(p[1][0] != mine[1][0] for p in parts):
            out.append(f"tensor {block}.attn_qkv.weight: nextn {mine} is not llama.cpp's q, k, v {parts} stacked")
    return out

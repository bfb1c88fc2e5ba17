"""The real-size benchmark model: a random-weight Qwen3.5 of 1.03 B parameters, reproducible from a seed.

hidden 1024, 24 layers (full attention every 4th), intermediate 3584, 8 heads of 256, 2 KV heads,
16 + 16 linear-attention heads of 128, vocabulary 248,320, untied output, one MTP block.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from .tiny import _mtp_tensors, _randomize, make_tokenizer

SHAPE = dict(vocab_size=248320, hidden_size=1024, num_hidden_layers=24, intermediate_size=3584,
             num_attention_heads=8, num_key_value_heads=2, head_dim=256, linear_num_key_heads=16,
             linear_num_value_heads=16, linear_key_head_dim=128, linear_value_head_dim=128,
             linear_conv_kernel_dim=4, full_attention_interval=4, max_position_embeddings=32768,
             rms_norm_eps=1e-6, tie_word_embeddings=False)


def make_checkpoint(out_dir: str | Path, seed: int = 0) -> Path:
    """Write the checkpoint (bf16 safetensors, config, a trained byte-level BPE padded to the vocabulary)."""
    import transformers as tf

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    rope = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
            "mrope_section": [11, 11, 10], "mrope_interleaved": True}
    cfg = tf.Qwen3_5TextConfig(**SHAPE, rope_parameters=rope, initializer_range=0.02)
    with torch.device("cpu"):
        model = tf.Qwen3_5ForCausalLM(cfg).to(torch.bfloat16)
    state = _randomize(dict(model.state_dict()), True, gen)
    mtp = _randomize(_mtp_tensors("qwen35", cfg, tf.Qwen3_5ForCausalLM, cfg.num_hidden_layers, gen), True, gen)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(out_dir / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in mtp.items()}, str(out_dir / "mtp.safetensors"))
    raw = cfg.to_dict()
    raw.update(architectures=["Qwen3_5ForCausalLM"], eos_token_id=0, bos_token_id=None, mtp_num_hidden_layers=1)
    (out_dir / "config.json").write_text(json.dumps(raw, indent=1))
    make_tokenizer(out_dir, 4096)
    return out_dir


def n_params(hf_dir: str | Path) -> int:
    from safetensors import safe_open

    total = 0
    for f in Path(hf_dir).glob("*.safetensors"):
        with safe_open(f, "pt") as sf:
            for k in sf.keys():
                shape = sf.get_slice(k).get_shape()
                total += int(torch.tensor(shape).prod()) if shape else 1
    return total

"""The benchmark models, random weights reproducible from a seed.

qwen35: the real-size Qwen3.5 of 1.03 B parameters: hidden 1024, 24 layers (full attention every 4th),
intermediate 3584, 8 heads of 256, 2 KV heads, 16 + 16 linear-attention heads of 128, vocabulary 248,320,
untied output, one MTP block.
mla: a GLM-4.7-Flash-shaped deepseek2 model of 0.84 B parameters (MTP block included; about 0.24 B read per
token): hidden 1024, 8 layers (the first dense), 16 heads, MLA with q_lora 768, kv_lora 512, no-RoPE / RoPE /
value heads of 128 / 64 / 128, 32 routed experts of 768 (4 per token) and one shared, vocabulary 65,536, one
MTP block.
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


MLA_SHAPE = dict(vocab_size=65536, hidden_size=1024, num_hidden_layers=8, num_attention_heads=16,
                 num_key_value_heads=16, intermediate_size=4096, moe_intermediate_size=768, n_routed_experts=32,
                 num_experts_per_tok=4, n_shared_experts=1, first_k_dense_replace=1, norm_topk_prob=True,
                 q_lora_rank=768, kv_lora_rank=512, qk_nope_head_dim=128, qk_rope_head_dim=64, v_head_dim=128,
                 rope_interleave=True, n_group=1, topk_group=1, routed_scaling_factor=1.8,
                 max_position_embeddings=32768, rms_norm_eps=1e-5, tie_word_embeddings=False)
SHAPES = ("qwen35", "mla")


def _configs(shape: str):
    """(config, model class, tiny.py arch, MTP layer count key) of a benchmark shape."""
    import transformers as tf

    if shape == "qwen35":
        rope = {"rope_type": "default", "rope_theta": 10000000.0, "partial_rotary_factor": 0.25,
                "mrope_section": [11, 11, 10], "mrope_interleaved": True}
        return (tf.Qwen3_5TextConfig(**SHAPE, rope_parameters=rope, initializer_range=0.02), tf.Qwen3_5ForCausalLM,
                "qwen35", "mtp_num_hidden_layers")
    if shape == "mla":
        return (tf.Glm4MoeLiteConfig(**MLA_SHAPE, initializer_range=0.02,
                                     rope_parameters={"rope_type": "default", "rope_theta": 1000000.0}),
                tf.Glm4MoeLiteForCausalLM, "glm4moelite", "num_nextn_predict_layers")
    raise ValueError(f"unknown benchmark shape {shape!r} (choose from {', '.join(SHAPES)})")


def make_checkpoint(out_dir: str | Path, seed: int = 0, shape: str = "qwen35") -> Path:
    """Write the checkpoint (bf16 safetensors, config, a trained byte-level BPE padded to the vocabulary)."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg, model_cls, arch, mtp_key = _configs(shape)
    zero_centered = arch == "qwen35"
    with torch.device("cpu"):
        model = model_cls(cfg).to(torch.bfloat16)
    state = _randomize(dict(model.state_dict()), zero_centered, gen)
    mtp = _randomize(_mtp_tensors(arch, cfg, model_cls, cfg.num_hidden_layers, gen), zero_centered, gen)
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in state.items()}, str(out_dir / "model.safetensors"))
    save_file({k: v.to(torch.bfloat16).contiguous() for k, v in mtp.items()}, str(out_dir / "mtp.safetensors"))
    raw = cfg.to_dict()
    raw.update(architectures=[model_cls.__name__], eos_token_id=0, bos_token_id=None, **{mtp_key: 1})
    (out_dir / "config.json").write_text(json.dumps(raw, indent=1))
    make_tokenizer(out_dir, 4096, arch=arch)
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

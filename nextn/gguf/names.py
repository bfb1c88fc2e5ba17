"""Hugging Face -> GGUF tensor names (llama.cpp's conventions) for the architectures nextn runs."""

from __future__ import annotations

import re

GLOBAL = {
    "model.embed_tokens.weight": "token_embd.weight",
    "model.norm.weight": "output_norm.weight",
    "lm_head.weight": "output.weight",
}

# per-block suffixes; Qwen MTP heads are remapped onto blocks before this table applies
BLOCK = {
    "input_layernorm.weight": "attn_norm.weight",
    "post_attention_layernorm.weight": "post_attention_norm.weight",
    "self_attn.q_proj.weight": "attn_q.weight",
    "self_attn.q_proj.bias": "attn_q.bias",
    "self_attn.k_proj.weight": "attn_k.weight",
    "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.weight": "attn_v.weight",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.o_proj.weight": "attn_output.weight",
    "self_attn.q_a_proj.weight": "attn_q_a.weight",
    "self_attn.q_a_layernorm.weight": "attn_q_a_norm.weight",
    "self_attn.q_b_proj.weight": "attn_q_b.weight",
    "self_attn.kv_a_proj_with_mqa.weight": "attn_kv_a_mqa.weight",
    "self_attn.kv_a_layernorm.weight": "attn_kv_a_norm.weight",
    "self_attn.k_b_proj.weight": "attn_k_b.weight",
    "self_attn.v_b_proj.weight": "attn_v_b.weight",
    "self_attn.q_norm.weight": "attn_q_norm.weight",
    "self_attn.k_norm.weight": "attn_k_norm.weight",
    "linear_attn.in_proj_qkv.weight": "attn_qkv.weight",
    "linear_attn.in_proj_z.weight": "attn_gate.weight",
    "linear_attn.in_proj_b.weight": "ssm_beta.weight",
    "linear_attn.in_proj_a.weight": "ssm_alpha.weight",
    "linear_attn.in_proj_ba.weight": "ssm_ba.weight",
    "linear_attn.out_proj.weight": "ssm_out.weight",
    "linear_attn.norm.weight": "ssm_norm.weight",
    "linear_attn.conv1d.weight": "ssm_conv1d.weight",
    "linear_attn.dt_bias": "ssm_dt.bias",
    "linear_attn.A_log": "ssm_a",
    "mlp.gate_proj.weight": "ffn_gate.weight",
    "mlp.up_proj.weight": "ffn_up.weight",
    "mlp.down_proj.weight": "ffn_down.weight",
    "mlp.gate.weight": "ffn_gate_inp.weight",
    "mlp.gate.e_score_correction_bias": "exp_probs_b.bias",
    "mlp.experts.gate_proj.weight": "ffn_gate_exps.weight",
    "mlp.experts.up_proj.weight": "ffn_up_exps.weight",
    "mlp.experts.down_proj.weight": "ffn_down_exps.weight",
    "mlp.shared_expert.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_expert.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_expert.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_experts.gate_proj.weight": "ffn_gate_shexp.weight",
    "mlp.shared_experts.up_proj.weight": "ffn_up_shexp.weight",
    "mlp.shared_experts.down_proj.weight": "ffn_down_shexp.weight",
    "mlp.shared_expert_gate.weight": "ffn_gate_inp_shexp.weight",
    "self_attn.qkv_proj.weight": "attn_qkv.weight",
    "self_attn.sinks": "attn_sinks.weight",                   # transformers' MiMo-V2-Flash
    "self_attn.attention_sink_bias": "attn_sinks.weight",     # MiMo-V2's own checkpoints
    "pre_mlp_layernorm.weight": "ffn_norm.weight",            # MiMo-V2 MTP layers
    "final_layernorm.weight": "layer_output_norm.weight",     # MiMo-V2 MTP layers: the norm before the head
    "eh_proj.weight": "nextn.eh_proj.weight",
    "enorm.weight": "nextn.enorm.weight",
    "hnorm.weight": "nextn.hnorm.weight",
    "embed_tokens.weight": "nextn.embed_tokens.weight",
    "shared_head.norm.weight": "nextn.shared_head_norm.weight",
    "shared_head.head.weight": "nextn.shared_head_head.weight",
}

# Qwen3.5 / Qwen3-Next keep the MTP head under `mtp.*`
QWEN_MTP = {
    "fc.weight": "eh_proj.weight",
    "pre_fc_norm_embedding.weight": "enorm.weight",
    "pre_fc_norm_hidden.weight": "hnorm.weight",
    "norm.weight": "shared_head.norm.weight",
}

_PREFIXES = ("model.language_model.", "language_model.model.", "model.model.")
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_EXPERT = re.compile(r"^mlp\.experts\.(\d+)\.(gate_proj|up_proj|down_proj)\.weight$")


def canonical(name: str) -> str | None:
    """Strip multimodal wrappers; None for tensors that are not part of the text model."""
    if name.startswith(("model.visual.", "visual.", "model.vision_tower.", "vision_tower.")):
        return None
    if name.startswith("model.mtp."):
        return name[len("model."):]
    for p in _PREFIXES:
        if name.startswith(p):
            return "model." + name[len(p):]
    return name


def qwen_mtp_to_block(name: str, n_trunk: int) -> str:
    """`mtp.layers.i.X` -> `model.layers.{n+i}.X`; `mtp.fc` etc. -> NextN names on block n."""
    rest = name[len("mtp."):]
    if rest.startswith("layers."):
        _, i, tail = rest.split(".", 2)
        return f"model.layers.{n_trunk + int(i)}.{tail}"
    if rest in QWEN_MTP:
        return f"model.layers.{n_trunk}.{QWEN_MTP[rest]}"
    raise KeyError(name)


def split_block(name: str) -> tuple[int, str] | None:
    m = _LAYER.match(name)
    return (int(m.group(1)), m.group(2)) if m else None


def expert_of(suffix: str) -> tuple[int, str] | None:
    m = _EXPERT.match(suffix)
    return (int(m.group(1)), m.group(2)) if m else None


def gguf_name(name: str) -> str | None:
    if name in GLOBAL:
        return GLOBAL[name]
    blk = split_block(name)
    if blk is None:
        return None
    il, suffix = blk
    mapped = BLOCK.get(suffix)
    return f"blk.{il}.{mapped}" if mapped else None

"""Model hyperparameters -> GGUF keys, the ones llama.cpp's `convert_hf_to_gguf.py` writes for each family
(checked against a recorded run of it: tests/data/llamacpp_keys.json)."""

from __future__ import annotations

import math

from gguf import ExpertGatingFuncType, GGUFWriter, RopeScalingType

from ..errors import NextnError

HYBRID = ("qwen35", "qwen35moe", "qwen3next")   # Gated DeltaNet + gated attention, zero-centred norms
QWEN35_MROPE_SECTIONS = [11, 11, 10, 0]         # llama.cpp's default when a checkpoint omits mrope_section


# generation_config.json -> general.sampling.* (as llama.cpp's converter maps them; the engines use them as defaults)
SAMPLING = (("sequence", "add_sampling_sequence"), ("top_k", "add_sampling_top_k"), ("top_p", "add_sampling_top_p"),
            ("min_p", "add_sampling_min_p"), ("xtc_probability", "add_sampling_xtc_probability"),
            ("xtc_threshold", "add_sampling_xtc_threshold"), ("temperature", "add_sampling_temp"),
            ("penalty_last_n", "add_sampling_penalty_last_n"), ("mirostat", "add_sampling_mirostat"),
            ("mirostat_tau", "add_sampling_mirostat_tau"), ("mirostat_eta", "add_sampling_mirostat_eta"))


def write_sampling(w: GGUFWriter, generation_config: dict) -> None:
    g = generation_config
    for key, add in SAMPLING:
        if g.get(key) is not None:
            getattr(w, add)(g[key])
    repeat = g.get("penalty_repeat", g.get("repetition_penalty"))
    if repeat is not None:
        w.add_sampling_penalty_repeat(float(repeat))


def write(w: GGUFWriter, arch: str, hp: dict, n_trunk: int, n_mtp: int) -> None:
    """Every architecture key; block_count counts the MTP blocks written (n_mtp may be 0)."""
    n_embd, n_head = hp["hidden_size"], hp["num_attention_heads"]
    head_dim = hp.get("head_dim") or n_embd // n_head
    rope = hp.get("rope_parameters") or {}
    w.add_block_count(n_trunk + n_mtp)
    w.add_context_length(int(hp.get("max_position_embeddings", 4096)))
    w.add_embedding_length(n_embd)
    if hp.get("intermediate_size"):
        w.add_feed_forward_length(int(hp["intermediate_size"]))
    w.add_head_count(n_head)
    if arch != "mimo2":     # MiMo-V2: per block (_write_mimo2)
        w.add_head_count_kv(1 if arch == "deepseek2" else hp.get("num_key_value_heads", n_head))  # MLA: one wide KV head
        w.add_rope_freq_base(float(rope.get("rope_theta", hp.get("rope_theta", 10000.0))))
    w.add_layer_norm_rms_eps(float(hp.get("rms_norm_eps", hp.get("layernorm_epsilon", 1e-6))))
    write_rope_scaling(w, arch, hp)
    if arch == "deepseek2":
        _write_deepseek2(w, hp, n_mtp)
        return
    if arch == "mimo2":
        _write_mimo2(w, hp, head_dim, n_trunk, n_mtp)
        return
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    if arch == "glm4moe":
        _write_glm4moe(w, hp, head_dim, rope, n_mtp)
    else:
        _write_qwen_moe(w, hp)
        _write_hybrid(w, hp, arch, head_dim, rope, n_trunk, n_mtp)


def write_rope_scaling(w: GGUFWriter, arch: str, hp: dict) -> None:
    """rope.scaling.* as llama.cpp's converter writes them, from the full-attention layers' parameters
    (transformers' `rope_parameters`, an older config's `rope_scaling`). Beyond it: YaRN without a factor
    takes max_position_embeddings / original (as transformers does), and where transformers' cos / sin factor
    differs from the one the reader derives (config.py: _rope_scaling) it is written as yarn_attn_factor.
    Kinds nextn does not implement are refused."""
    params = hp.get("rope_parameters") or hp.get("rope_scaling") or {}
    params = params.get("full_attention", params)
    kind = params.get("rope_type", params.get("type"))
    if kind in (None, "default"):
        return
    if kind not in ("linear", "yarn"):
        raise NextnError(f"rope scaling {kind!r} is not implemented in nextn (linear and yarn are)")
    factor = params.get("factor")
    if kind == "linear":
        if factor:
            w.add_rope_scaling_type(RopeScalingType.LINEAR)
            w.add_rope_scaling_factor(float(factor))
        return
    orig = int(params.get("original_max_position_embeddings") or hp.get("original_max_position_embeddings") or 0)
    if not orig:
        raise NextnError("yarn rope scaling without original_max_position_embeddings")
    factor = float(factor or int(hp.get("max_position_embeddings", orig)) / orig)
    if params.get("truncate") is False:
        raise NextnError("yarn rope scaling with truncate=false is not implemented in nextn")
    w.add_rope_scaling_type(RopeScalingType.YARN)
    w.add_rope_scaling_factor(factor)
    w.add_rope_scaling_orig_ctx_len(orig)
    for key, add in (("beta_fast", w.add_rope_scaling_yarn_beta_fast), ("beta_slow", w.add_rope_scaling_yarn_beta_slow)):
        if params.get(key) is not None:
            add(float(params[key]))

    def mscale(m: float) -> float:
        return 1.0 + 0.1 * m * math.log(factor) if factor > 1 else 1.0

    m, m_all = params.get("mscale"), params.get("mscale_all_dim")
    log_mul = arch == "deepseek2" and m_all is not None
    if log_mul:                       # llama.cpp's deepseek2 convention: 0.1 x mscale_all_dim
        w.add_rope_scaling_yarn_log_mul(0.1 * float(m_all))
    wanted = params.get("attention_factor")           # transformers' cos / sin factor
    if wanted is None:
        wanted = mscale(float(m)) / mscale(float(m_all)) if m and m_all else mscale(1.0)
    if abs(float(wanted) - (1.0 if log_mul else mscale(1.0))) > 1e-7:
        w.add_rope_scaling_yarn_attn_factor(float(wanted))


def _write_qwen_moe(w: GGUFWriter, hp: dict) -> None:
    n_exp = int(hp.get("num_experts", 0) or 0)
    if n_exp:
        w.add_expert_count(n_exp)
        w.add_expert_used_count(int(hp["num_experts_per_tok"]))
        w.add_expert_feed_forward_length(int(hp["moe_intermediate_size"]))
    if hp.get("shared_expert_intermediate_size"):
        w.add_expert_shared_feed_forward_length(int(hp["shared_expert_intermediate_size"]))


def _write_hybrid(w: GGUFWriter, hp: dict, arch: str, head_dim: int, rope: dict, n_trunk: int, n_mtp: int) -> None:
    if n_mtp:
        w.add_nextn_predict_layers(n_mtp)
    w.add_ssm_conv_kernel(int(hp["linear_conv_kernel_dim"]))
    w.add_ssm_state_size(int(hp["linear_key_head_dim"]))
    w.add_ssm_group_count(int(hp["linear_num_key_heads"]))
    w.add_ssm_time_step_rank(int(hp["linear_num_value_heads"]))
    w.add_ssm_inner_size(int(hp["linear_value_head_dim"] * hp["linear_num_value_heads"]))
    w.add_array(f"{arch}.attention.recurrent_layers", recurrent_layers(hp, n_trunk) + [False] * n_mtp)
    w.add_full_attention_interval(int(hp.get("full_attention_interval", 4)))
    partial = rope.get("partial_rotary_factor", hp.get("partial_rotary_factor", 0.25))
    w.add_rope_dimension_count(int(head_dim * partial))
    if arch != "qwen3next":
        sections = rope.get("mrope_section")
        w.add_rope_dimension_sections((list(sections) + [0, 0, 0, 0])[:4] if sections else QWEN35_MROPE_SECTIONS)


def recurrent_layers(hp: dict, n_trunk: int) -> list[bool]:
    """Which trunk layers are Gated DeltaNet: from `layer_types`, or as transformers derives them from
    `full_attention_interval` (Qwen3-Next's config gives only the interval)."""
    types = hp.get("layer_types")
    if types:
        return [t == "linear_attention" for t in types[:n_trunk]]
    interval = int(hp.get("full_attention_interval", 4))
    return [(i + 1) % interval != 0 for i in range(n_trunk)]


def _write_glm4moe(w: GGUFWriter, hp: dict, head_dim: int, rope: dict, n_mtp: int) -> None:
    partial = rope.get("partial_rotary_factor", hp.get("partial_rotary_factor", 0.5))
    w.add_rope_dimension_count(int(head_dim * partial))
    for key, add in (("n_routed_experts", w.add_expert_count), ("moe_intermediate_size", w.add_expert_feed_forward_length),
                     ("n_shared_experts", w.add_expert_shared_count),
                     ("first_k_dense_replace", w.add_leading_dense_block_count)):
        if hp.get(key) is not None:
            add(int(hp[key]))
    w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID)
    if hp.get("routed_scaling_factor") is not None:
        w.add_expert_weights_scale(float(hp["routed_scaling_factor"]))
    if hp.get("norm_topk_prob") is not None:
        w.add_expert_weights_norm(bool(hp["norm_topk_prob"]))
    if hp.get("n_group") is not None:
        w.add_expert_group_count(int(hp["n_group"]))
    if hp.get("topk_group") is not None:
        w.add_expert_group_used_count(int(hp["topk_group"]))
    if n_mtp:
        w.add_nextn_predict_layers(n_mtp)
    if hp.get("num_experts_per_tok") is not None:
        w.add_expert_used_count(int(hp["num_experts_per_tok"]))


def _write_deepseek2(w: GGUFWriter, hp: dict, n_mtp: int) -> None:
    """MLA written as llama.cpp does: one KV head of the latent + RoPE key, the per-head sizes as *_mla keys."""
    kvr, rope = int(hp.get("kv_lora_rank", 512)), int(hp["qk_rope_head_dim"])
    w.add_vocab_size(int(hp["vocab_size"]))
    if hp.get("q_lora_rank"):
        w.add_q_lora_rank(int(hp["q_lora_rank"]))
    w.add_kv_lora_rank(kvr)
    w.add_key_length(kvr + rope)
    w.add_value_length(kvr)
    w.add_key_length_mla(int(hp["qk_nope_head_dim"]) + rope)
    w.add_value_length_mla(int(hp["v_head_dim"]))
    w.add_rope_dimension_count(rope)
    moe = hp.get("n_routed_experts") is not None
    w.add_leading_dense_block_count(int(hp.get("first_k_dense_replace") or (0 if moe else hp["num_hidden_layers"])))
    w.add_expert_feed_forward_length(int(hp.get("moe_intermediate_size") or hp["intermediate_size"]))
    if moe:
        w.add_expert_count(int(hp["n_routed_experts"]))
        w.add_expert_used_count(int(hp["num_experts_per_tok"]))
    w.add_expert_shared_count(int(hp.get("n_shared_experts") or 0))
    if hp.get("routed_scaling_factor") is not None:
        w.add_expert_weights_scale(float(hp["routed_scaling_factor"]))
    if hp.get("norm_topk_prob"):
        w.add_expert_weights_norm(True)
    if hp.get("n_group") is not None:
        w.add_expert_group_count(int(hp["n_group"]))
    if hp.get("topk_group") is not None:
        w.add_expert_group_used_count(int(hp["topk_group"]))
    scoring = hp.get("scoring_func", "sigmoid" if moe else None)
    if scoring is not None:
        w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID if scoring == "sigmoid" else ExpertGatingFuncType.SOFTMAX)
    if n_mtp:
        w.add_nextn_predict_layers(n_mtp)


def mimo2_swa_layers(hp: dict, n_trunk: int) -> list[bool]:
    """Which trunk layers slide: MiMo's own `hybrid_layer_pattern` (1 = sliding) or transformers' `layer_types`."""
    if hp.get("hybrid_layer_pattern") is not None:
        return [bool(x) for x in hp["hybrid_layer_pattern"][:n_trunk]]
    types = hp.get("layer_types") or ["full_attention" if i == 0 or (i + 1) % 6 == 0 else "sliding_attention"
                                      for i in range(n_trunk)]
    return [t == "sliding_attention" for t in types[:n_trunk]]


def _write_mimo2(w: GGUFWriter, hp: dict, head_dim: int, n_trunk: int, n_mtp: int) -> None:
    """MiMo-V2-Flash as llama.cpp's mimo2 reads it, from MiMo's own config (hybrid_layer_pattern, swa_* keys) or
    transformers' (layer_types, rope_parameters per layer type; sliding layers have twice the KV heads). The
    MTP blocks are sliding-window blocks. `sliding_window` is written as the number of keys a query sees
    (itself included): MiMo's `sliding_window_size` previous tokens plus one, as transformers reads it."""
    swa = mimo2_swa_layers(hp, n_trunk) + [True] * n_mtp
    kv = int(hp["num_key_value_heads"])
    kv_swa = int(hp.get("swa_num_key_value_heads") or 2 * kv)
    rope = hp.get("rope_parameters") or {}
    full, sliding = rope.get("full_attention", rope), rope.get("sliding_attention", {})
    theta = float(full.get("rope_theta", hp.get("rope_theta", 10000.0)))
    theta_swa = float(sliding.get("rope_theta", hp.get("swa_rope_theta", theta)))
    partial = full.get("partial_rotary_factor", hp.get("partial_rotary_factor", 1.0))
    window = int(hp["sliding_window_size"]) + 1 if hp.get("sliding_window_size") else int(hp["sliding_window"])
    v_dim = int(hp.get("v_head_dim") or head_dim)
    same = {"swa_head_dim": head_dim, "swa_v_head_dim": v_dim, "swa_num_attention_heads": hp["num_attention_heads"]}
    for key, want in same.items():
        if hp.get(key) not in (None, want):
            raise NextnError(f"MiMo-V2 with {key} = {hp[key]} (unlike the full-attention layers' {want}) is not "
                             f"supported")
    w.add_head_count_kv([kv_swa if s else kv for s in swa])
    w.add_rope_freq_base(theta)
    w.add_rope_freq_base_swa(theta_swa)
    w.add_rope_dimension_count(int(head_dim * partial))
    w.add_key_length(head_dim)
    w.add_value_length(v_dim)
    w.add_sliding_window(window)
    w.add_sliding_window_pattern([int(s) for s in swa])
    if hp.get("attention_value_scale") is not None:
        w.add_float32(f"{w.arch}.attention.value_scale", float(hp["attention_value_scale"]))   # gguf-py 0.19 has no adder
    n_exp = int(hp.get("n_routed_experts") or 0)
    if n_exp:
        w.add_expert_count(n_exp)
        w.add_expert_used_count(int(hp["num_experts_per_tok"]))
        w.add_expert_feed_forward_length(int(hp["moe_intermediate_size"]))
        w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID)
        for key, add in (("n_group", w.add_expert_group_count), ("topk_group", w.add_expert_group_used_count)):
            if hp.get(key) is not None:
                add(int(hp[key]))
        if hp.get("routed_scaling_factor") not in (None, 1.0):
            w.add_expert_weights_scale(float(hp["routed_scaling_factor"]))
    if n_mtp:
        w.add_nextn_predict_layers(n_mtp)

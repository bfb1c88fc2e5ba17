"""The shape in which model authors publish checkpoints, as llama.cpp's and nextn's converters meet them.

- Qwen3.5 / Qwen3.5-MoE: `Qwen3_5(Moe)ForConditionalGeneration` with a vision tower, the text model
  under `model.language_model.*`, its hyperparameters under `text_config` (with `mtp_num_hidden_layers`),
  the MTP block under `mtp.*`.
- Qwen3-Next: `Qwen3NextForCausalLM` whose config says nothing about MTP (no `mtp_num_hidden_layers`)
  and gives `full_attention_interval` rather than `layer_types`; the MTP block under `mtp.*`.
- every family: a generation_config.json with the authors' recommended sampling.
- GLM-4.5: `Glm4MoeForCausalLM`, `num_nextn_predict_layers` = 1, the NextN layer as `model.layers.{n}.*`
  with its own `embed_tokens` and `shared_head.head`.
- DeepSeek-V3 / Kimi-K2: `DeepseekV3ForCausalLM`, `num_nextn_predict_layers` = 1 (`model.layers.{n}.*`),
  `scoring_func` "sigmoid" in the config.
- MiMo-V2-Flash: `MiMoV2FlashForCausalLM` with MiMo's own config keys beside transformers' (hybrid_layer_pattern,
  swa_num_key_value_heads, swa_rope_theta, sliding_window_size, layernorm_epsilon, ...), sink logits named
  `attention_sink_bias`, three MTP layers under `model.mtp.layers.{j}.*` that the config does not count.
All of them: experts one by one (`mlp.experts.{e}.gate_proj` ...), weights in `model-0000i-of-0000n`
safetensors shards listed by `model.safetensors.index.json`, the MTP block in the last shard.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

WRAPPED = {"qwen35": "Qwen3_5ForConditionalGeneration", "qwen35moe": "Qwen3_5MoeForConditionalGeneration"}
TINY_VISION = dict(depth=1, hidden_size=32, intermediate_size=64, num_heads=2, num_position_embeddings=16,
                   patch_size=4)


def wrap(arch: str, model):
    """Qwen3.5 text models go inside the multimodal class they are published as (same text weights)."""
    if arch not in WRAPPED:
        return model
    import transformers

    cls = getattr(transformers, WRAPPED[arch])
    config_cls = getattr(transformers, WRAPPED[arch].replace("ForConditionalGeneration", "Config"))
    text = model.config.to_dict()
    config = config_cls(text_config=text, vision_config={**TINY_VISION, "out_hidden_size": text["hidden_size"]},
                        tie_word_embeddings=text.get("tie_word_embeddings", False))
    wrapped = cls(config)
    wrapped.model.language_model.load_state_dict(model.model.state_dict())
    wrapped.lm_head.load_state_dict(model.lm_head.state_dict())
    return wrapped


# what the authors' generation_config.json recommends (Qwen3.5's, GLM-4.5's), mapped by converters to
# general.sampling.*
GENERATION = {"qwen35": {"temperature": 0.6, "top_p": 0.95, "top_k": 20}, "qwen35moe": {"temperature": 0.6, "top_p": 0.95, "top_k": 20},
              "qwen3next": {"temperature": 0.7, "top_p": 0.8, "top_k": 20, "repetition_penalty": 1.05},
              "glm4moe": {"temperature": 0.6, "top_p": 0.95}, "deepseek2": {"temperature": 0.6, "top_p": 0.95},
              "glm4moelite": {"temperature": 1.0, "top_p": 0.95}, "mimo2": {"temperature": 0.8, "top_p": 0.95}}


def ship_config(arch: str, raw: dict) -> None:
    """Edit a saved config.json (in place) into the form the authors ship."""
    if arch in ("deepseek2", "glm4moelite"):   # their own config.json names the router (transformers' omits it)
        raw.update(scoring_func="sigmoid", topk_method="noaux_tc")
    if arch == "mimo2":     # MiMo's config.json: its own keys only (transformers derives the rest from its defaults)
        pattern = [int(t == "sliding_attention") for t in raw.pop("layer_types")]
        rope = raw.pop("rope_parameters")
        window = raw.pop("sliding_window") - 1
        raw.update(hybrid_layer_pattern=pattern, swa_num_key_value_heads=2 * raw["num_key_value_heads"],
                   swa_num_attention_heads=raw["num_attention_heads"], swa_head_dim=raw["head_dim"],
                   swa_v_head_dim=raw["v_head_dim"], rope_theta=rope["full_attention"]["rope_theta"],
                   swa_rope_theta=rope["sliding_attention"]["rope_theta"],
                   partial_rotary_factor=rope["full_attention"]["partial_rotary_factor"],
                   layernorm_epsilon=raw.pop("rms_norm_eps"), sliding_window=window, sliding_window_size=window,
                   add_swa_attention_sink_bias=True, add_full_attention_sink_bias=False, topk_method="noaux_tc",
                   scoring_func="sigmoid", moe_layer_freq=[int(t == "sparse") for t in raw.pop("mlp_layer_types")])
    if arch == "qwen3next":
        raw.pop("mtp_num_hidden_layers", None)
        types = raw.pop("layer_types", None)
        if types:
            raw["full_attention_interval"] = types.index("full_attention") + 1


def unfuse_experts(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """transformers keeps a live module's experts fused (`experts.gate_up_proj` [E, 2 ff, D], `experts.down_proj`
    [E, D, ff]); checkpoints store them one by one, as save_pretrained writes the trunk's."""
    out = {}
    for name, t in state.items():
        if name.endswith("mlp.experts.gate_up_proj"):
            base = name[: -len("gate_up_proj")]
            for e, (gate, up) in enumerate(zip(*t.chunk(2, dim=1))):
                out[f"{base}{e}.gate_proj.weight"], out[f"{base}{e}.up_proj.weight"] = gate, up
        elif name.endswith("mlp.experts.down_proj"):
            base = name[: -len("down_proj")]
            out.update({f"{base}{e}.down_proj.weight": w for e, w in enumerate(t)})
        else:
            out[name] = t
    return out


def write_generation_config(out_dir: Path, arch: str) -> None:
    (out_dir / "generation_config.json").write_text(json.dumps({"do_sample": True, **GENERATION[arch]}, indent=1))


AUTHOR_NAMES = {"mimo2": (("self_attn.sinks", "self_attn.attention_sink_bias"),)}   # transformers' -> the authors'


def shard(out_dir: Path, mtp: dict[str, torch.Tensor], arch: str = "") -> None:
    """Rewrite model.safetensors as indexed shards: the model (in its authors' tensor names), then the MTP
    block (if any)."""
    single = out_dir / "model.safetensors"
    trunk = load_file(str(single))
    for ours, theirs in AUTHOR_NAMES.get(arch, ()):
        trunk = {k.replace(ours, theirs): v for k, v in trunk.items()}
    parts = [trunk]
    single.unlink()
    if mtp:
        parts.append({k: v.contiguous() for k, v in unfuse_experts(mtp).items()})
    weight_map = {}
    for i, part in enumerate(parts, 1):
        name = f"model-{i:05d}-of-{len(parts):05d}.safetensors"
        save_file(part, str(out_dir / name), metadata={"format": "pt"})
        weight_map.update({k: name for k in part})
    (out_dir / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}, indent=1))


E4M3_MAX = 448.0


def to_fp8(src: Path, out: Path, block: tuple[int, int] = (128, 128), dequantized: Path | None = None) -> Path:
    """A copy of checkpoint `src` in the form DeepSeek-V3, Kimi-K2 and MiMo-V2 publish: every linear projection
    (`*_proj.weight`) in float8_e4m3fn with a `*_scale_inv` float32 scale per block of `block` weights (the block's
    largest magnitude / 448), `quantization_config` fp8 with `weight_block_size`; embeddings, norms, routers and
    output heads as they were. `dequantized`: also write the checkpoint of what those FP8 weights mean (FP8 times
    scale, float32), the reference a converter must reproduce."""
    import shutil

    out = Path(out)
    shutil.copytree(src, out, dirs_exist_ok=True)
    if dequantized is not None:
        shutil.copytree(src, dequantized, dirs_exist_ok=True)
    bn, bk = block
    index = {}
    for f in sorted(Path(src).glob("*.safetensors")):
        state, exact = load_file(f), {}
        fp8 = {}
        for name, w in state.items():
            if not (name.endswith("_proj.weight") and w.dim() == 2):
                fp8[name] = exact[name] = w
                continue
            n, k = w.shape
            blocks = torch.nn.functional.pad(w.float(), (0, -k % bk, 0, -n % bn)).reshape(-(-n // bn), bn, -(-k // bk), bk)
            scale = blocks.abs().amax(dim=(1, 3)).clamp(min=1e-12) / E4M3_MAX
            full = scale.repeat_interleave(bn, 0)[:n].repeat_interleave(bk, 1)[:, :k]
            q = (w.float() / full).to(torch.float8_e4m3fn)
            fp8[name], fp8[name + "_scale_inv"] = q, scale.contiguous()
            exact[name] = q.float() * full
        save_file(fp8, out / f.name, metadata={"format": "pt"})
        if dequantized is not None:
            save_file(exact, Path(dequantized) / f.name, metadata={"format": "pt"})
        index.update({k: f.name for k in fp8})
    if (out / "model.safetensors.index.json").exists():
        (out / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": index}, indent=1))
    cfg = json.loads((out / "config.json").read_text())
    cfg["quantization_config"] = {"quant_method": "fp8", "fmt": "e4m3", "activation_scheme": "dynamic",
                                  "weight_block_size": [bn, bk]}
    (out / "config.json").write_text(json.dumps(cfg, indent=1))
    return out

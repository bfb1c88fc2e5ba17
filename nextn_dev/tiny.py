"""Tiny random-weight models of every architecture nextn runs, built from transformers' own configs.

`make_checkpoint` writes a Hugging Face directory (safetensors, config.json, tokenizer.json) with a
random MTP head added in the checkpoint's own naming; `make_gguf` converts it with `nextn convert`.
With `published=True` the directory has the shape the model's authors publish (see `published.py`).
Tests and benchmarks use them; transformers is needed only here, never by `nextn` itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors.torch import save_file

from nextn.gguf.convert import convert
from nextn.text.chat import CHATML
from nextn.text.tokenizer import PRE_TOKENIZERS

from . import published as pub

ARCHS = ("qwen35", "qwen35moe", "qwen3next", "glm4moe")
MLA = ("deepseek2", "glm4moelite")     # checkpoints of the deepseek2 GGUF architecture (DeepSeek-V3, GLM-4.7-Flash)
GLM_STYLE = ("glm4moe", "deepseek2", "glm4moelite")   # the NextN layer as model.layers.{n}.*
MIMO = ("mimo2",)       # MiMo-V2-Flash: sliding-window layers with sinks; MTP layers as model.mtp.layers.{j}.*
PLAIN_NORMS = GLM_STYLE + MIMO                         # RMSNorm weights not zero-centred
SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
# GLM-4.5's own special tokens (llama.cpp's converter looks up [gMASK], <|user|> and <|observation|>)
GLM_SPECIALS = ["<|endoftext|>", "[MASK]", "[gMASK]", "[sMASK]", "<sop>", "<eop>", "<|system|>", "<|user|>",
                "<|assistant|>", "<|observation|>"]
GLM_TEMPLATE = ("[gMASK]<sop>{% for m in messages %}<|{{ m['role'] }}|>\n{{ m['content'] }}{% endfor %}"
                "{% if add_generation_prompt %}<|assistant|>\n{% endif %}")
CORPUS = """def fibonacci(n):
    a, b = 0, 1
    for _ in range(n):
        a, b = b, a + b
    return a

class Stack:
    def __init__(self):
        self.items = []
    def push(self, item):
        self.items.append(item)
The quick brown fox jumps over the lazy dog. Multi-token prediction drafts tokens cheaply;
the trunk verifies them in one forward pass and keeps the ones that match. 0123456789 + - * / = ( ) [ ] { }
"""


def make_tokenizer(out_dir: Path, vocab_size: int, texts: list[str] | None = None, arch: str = "qwen35"):
    """Train a byte-level BPE (the family's pre-tokenizer and special tokens) and write tokenizer.json
    and tokenizer_config.json into out_dir, as a Hugging Face checkpoint has them."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, trainers

    glm = arch in ("glm4moe", "glm4moelite")
    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Split(Regex(PRE_TOKENIZERS["glm4" if glm else "qwen2"].regexes[0]), behavior="isolated"),
        pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)])
    tk.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=GLM_SPECIALS if glm else SPECIALS,
                                  show_progress=False, initial_alphabet=pre_tokenizers.ByteLevel.alphabet())
    tk.train_from_iterator(texts if texts is not None else [CORPUS] * 4, trainer)
    tk.save(str(out_dir / "tokenizer.json"))
    (out_dir / "tokenizer_config.json").write_text(json.dumps(
        {"eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>", "add_bos_token": False,
         "chat_template": GLM_TEMPLATE if glm else CHATML}))
    return tk


def _config(arch: str, vocab: int, n_layer: int):
    import transformers as tf

    common = dict(vocab_size=vocab, hidden_size=64, num_hidden_layers=n_layer, num_attention_heads=4,
                  num_key_value_heads=2, head_dim=16, max_position_embeddings=1024, rms_norm_eps=1e-6,
                  tie_word_embeddings=False, initializer_range=0.08)
    hybrid = dict(linear_conv_kernel_dim=4, linear_key_head_dim=16, linear_value_head_dim=16,
                  linear_num_key_heads=2, linear_num_value_heads=4, full_attention_interval=2)
    qwen_rope = {"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.5}
    moe = dict(num_experts=8, num_experts_per_tok=2, moe_intermediate_size=32)
    if arch == "qwen35":
        rope = {**qwen_rope, "mrope_section": [2, 1, 1], "mrope_interleaved": True}
        return tf.Qwen3_5TextConfig(**common, **hybrid, intermediate_size=128, rope_parameters=rope), tf.Qwen3_5ForCausalLM
    if arch == "qwen35moe":
        rope = {**qwen_rope, "mrope_section": [2, 1, 1], "mrope_interleaved": True}
        return (tf.Qwen3_5MoeTextConfig(**common, **hybrid, **moe, shared_expert_intermediate_size=48, rope_parameters=rope),
                tf.Qwen3_5MoeForCausalLM)
    if arch == "qwen3next":
        return (tf.Qwen3NextConfig(**common, **hybrid, **moe, shared_expert_intermediate_size=48, intermediate_size=96,
                                   norm_topk_prob=True, decoder_sparse_step=1, mlp_only_layers=[],
                                   rope_parameters=qwen_rope), tf.Qwen3NextForCausalLM)
    if arch == "glm4moe":
        return (tf.Glm4MoeConfig(**{**common, "num_key_value_heads": 2}, intermediate_size=96, moe_intermediate_size=32,
                                 n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, n_group=2, topk_group=1,
                                 first_k_dense_replace=1, norm_topk_prob=True, routed_scaling_factor=1.5,
                                 use_qk_norm=True, attention_bias=True,
                                 rope_parameters={"rope_type": "default", "rope_theta": 10000.0,
                                                  "partial_rotary_factor": 0.5}), tf.Glm4MoeForCausalLM)
    if arch in MLA:   # DeepSeek-V3 / Kimi-K2 (two expert groups) and GLM-4.7-Flash (one): MLA, dense first layer
        mla = dict(**{**common, "num_key_value_heads": 4, "head_dim": 8}, intermediate_size=96, moe_intermediate_size=32,
                   n_routed_experts=8, num_experts_per_tok=2, n_shared_experts=1, first_k_dense_replace=1,
                   norm_topk_prob=True, q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8,
                   v_head_dim=16, rope_interleave=True, rope_parameters={"rope_type": "default", "rope_theta": 10000.0})
        if arch == "deepseek2":
            return tf.DeepseekV3Config(**mla, n_group=2, topk_group=1, routed_scaling_factor=1.5), tf.DeepseekV3ForCausalLM
        return (tf.Glm4MoeLiteConfig(**mla, n_group=1, topk_group=1, routed_scaling_factor=1.8),
                tf.Glm4MoeLiteForCausalLM)
    if arch == "mimo2":   # transformers' layer pattern and RoPE bases (as MiMo's); windows of 9 keys; MoE after layer 0
        return (tf.MiMoV2FlashConfig(**{**common, "head_dim": 24, "rms_norm_eps": 1e-5}, v_head_dim=16,
                                     intermediate_size=96, moe_intermediate_size=32, n_routed_experts=8,
                                     num_experts_per_tok=2, n_group=1, topk_group=1, norm_topk_prob=True,
                                     sliding_window=9, attention_value_scale=0.707), tf.MiMoV2FlashForCausalLM)
    raise ValueError(f"unknown arch {arch!r} (choose from {ARCHS + MLA + MIMO})")


def scaled_rope(arch: str, **scaling) -> dict:
    """The tiny config's own rope_parameters of `arch` with a context extension added (e.g. rope_type='yarn',
    factor=4.0, original_max_position_embeddings=256); MiMo's go to its full-attention layers only."""
    cfg, _ = _config(arch, 320, 2)
    rope = json.loads(json.dumps(cfg.rope_parameters))
    if "full_attention" in rope:
        rope["full_attention"].update(scaling)
    else:
        rope.update(scaling)
    return rope


def _randomize(state: dict, zero_centered: bool, gen: torch.Generator) -> dict:
    """Give norms and gates non-trivial values so parity tests exercise them."""
    for name, t in state.items():
        if name.endswith("norm.weight") or name.endswith(("enorm.weight", "hnorm.weight")):
            base = 0.0 if zero_centered and "linear_attn.norm" not in name else 1.0
            state[name] = base + 0.2 * torch.randn(t.shape, generator=gen)
        elif name.endswith(("dt_bias", "e_score_correction_bias", "sinks")) or name.endswith("bias"):
            state[name] = 0.3 * torch.randn(t.shape, generator=gen)
    return state


def _mtp_tensors(arch: str, cfg, model_cls, n_layer: int, gen: torch.Generator, own_head: bool = False,
                 n_mtp: int = 1) -> dict:
    """Random MTP blocks in the checkpoint's own naming (Qwen: one, mtp.*; GLM / DeepSeek: model.layers.{n+j}.*,
    n_mtp of them, DeepSeek-V3's sequential modules)."""
    if arch in MIMO:
        return _mimo_mtp_tensors(cfg, model_cls, gen, n_mtp)
    if n_mtp > 1:
        if arch not in GLM_STYLE:
            raise ValueError(f"several MTP layers are made for {GLM_STYLE} only")
        out = {}
        for j in range(n_mtp):
            out.update(_mtp_tensors(arch, cfg, model_cls, n_layer + j, gen, own_head))
        return out
    import copy

    one = copy.deepcopy(cfg)
    one.num_hidden_layers = 1
    if hasattr(one, "layer_types"):
        one.layer_types = ["full_attention"]
    if arch in GLM_STYLE:
        one.first_k_dense_replace = 0
    if hasattr(one, "mlp_layer_types"):       # GLM-4.7-Flash lists each layer's MLP kind
        one.mlp_layer_types = ["sparse"]
    block = {k.split(".", 3)[3]: v for k, v in model_cls(one).state_dict().items() if k.startswith("model.layers.0.")}
    d = cfg.hidden_size
    head = {"eh_proj.weight": torch.randn(d, 2 * d, generator=gen) * 0.08,
            "enorm.weight": torch.ones(d), "hnorm.weight": torch.ones(d), "shared_head.norm.weight": torch.ones(d)}
    if own_head:   # GLM-4.5 ships the NextN layer's own embedding and output head (GLM-4.6 does not)
        head["embed_tokens.weight"] = torch.randn(cfg.vocab_size, d, generator=gen) * 0.08
        head["shared_head.head.weight"] = torch.randn(cfg.vocab_size, d, generator=gen) * 0.08
    if arch in GLM_STYLE:
        out = {f"model.layers.{n_layer}.{k}": v for k, v in {**block, **head}.items()}
    else:
        names = {"eh_proj.weight": "fc.weight", "enorm.weight": "pre_fc_norm_embedding.weight",
                 "hnorm.weight": "pre_fc_norm_hidden.weight", "shared_head.norm.weight": "norm.weight"}
        out = {f"mtp.layers.0.{k}": v for k, v in block.items()}
        out.update({f"mtp.{names[k]}": (v - 1.0 if "norm" in k else v) for k, v in head.items()})
    return out



def _mimo_mtp_tensors(cfg, model_cls, gen: torch.Generator, n_mtp: int) -> dict:
    """MiMo-V2's MTP layers in its checkpoints' naming: model.mtp.layers.{j}.{enorm, hnorm, eh_proj,
    input_layernorm, self_attn.* (a sliding-window block with sinks), pre_mlp_layernorm, mlp.* (dense),
    final_layernorm}."""
    import copy

    one = copy.deepcopy(cfg)
    one.num_hidden_layers, one.layer_types, one.mlp_layer_types = 1, ["sliding_attention"], ["dense"]
    rename = {"post_attention_layernorm.weight": "pre_mlp_layernorm.weight",
              "self_attn.sinks": "self_attn.attention_sink_bias"}
    d, out = cfg.hidden_size, {}
    for j in range(n_mtp):
        block = {k.split(".", 3)[3]: v for k, v in model_cls(one).state_dict().items() if k.startswith("model.layers.0.")}
        block = {rename.get(k, k): v for k, v in block.items()}
        block.update({"eh_proj.weight": torch.randn(d, 2 * d, generator=gen) * 0.08, "enorm.weight": torch.ones(d),
                      "hnorm.weight": torch.ones(d), "final_layernorm.weight": torch.ones(d)})
        out.update({f"model.mtp.layers.{j}.{k}": v for k, v in block.items()})
    return out


def make_checkpoint(out_dir: str | Path, arch: str = "qwen35", *, seed: int = 0, n_layer: int = 4,
                    vocab_size: int = 320, mtp: bool | int = True, mtp_own_head: bool = False,
                    published: bool = False, rope: dict | None = None) -> Path:
    """A random checkpoint of `arch`. published=True gives the layout its authors ship (published.py):
    multimodal wrapper and text_config for Qwen3.5, no MTP layer count in Qwen3-Next's config, safetensors
    shards with an index, the MTP block in the last shard."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    make_tokenizer(out_dir, vocab_size - 8, arch=arch)
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    cfg, model_cls = _config(arch, vocab_size, n_layer)
    if rope is not None:                 # e.g. DeepSeek-V3's YaRN
        cfg.rope_parameters = rope
    model = model_cls(cfg)
    zero_centered = arch not in PLAIN_NORMS
    model.load_state_dict(_randomize(dict(model.state_dict()), zero_centered, gen))
    if published:
        model = pub.wrap(arch, model)
    model.save_pretrained(out_dir)
    raw = json.loads((out_dir / "config.json").read_text())
    text = raw.get("text_config", raw)
    text.update(eos_token_id=0, bos_token_id=None)
    n_mtp = (3 if arch in MIMO else 1) if mtp is True else int(mtp)     # MiMo-V2 ships three MTP layers
    extra = _randomize(_mtp_tensors(arch, cfg, model_cls, n_layer, gen, mtp_own_head, n_mtp), zero_centered,
                       gen) if mtp else {}
    if arch not in MIMO:      # MiMo's config does not count its MTP layers (the converter counts the tensors)
        text["num_nextn_predict_layers" if arch in GLM_STYLE else "mtp_num_hidden_layers"] = n_mtp if mtp else 0
    if published:
        pub.ship_config(arch, raw)
        pub.shard(out_dir, extra, arch)
        pub.write_generation_config(out_dir, arch)
    elif extra:
        save_file({k: v.contiguous() for k, v in extra.items()}, str(out_dir / "mtp.safetensors"))
    (out_dir / "config.json").write_text(json.dumps(raw, indent=1))
    return out_dir


def make_gguf(out: str | Path, arch: str = "qwen35", *, mode: str = "bundled", outtype: str = "f32",
              workdir: str | Path | None = None, **kwargs) -> Path:
    out = Path(out)
    ck = make_checkpoint(Path(workdir) if workdir else out.with_suffix(".hf"), arch, **kwargs)
    return convert(ck, out, outtype=outtype, mode=mode, progress=False)


def load_reference(hf_dir: str | Path):
    """The transformers model of a checkpoint made here (either shape), in float32, eval mode. The recommended
    sampling of a published-shape generation_config.json (e.g. Qwen3-Next's repetition_penalty 1.05, which
    transformers applies even with do_sample=False) is dropped: a reference decodes plainly greedy."""
    import transformers

    arch = json.loads((Path(hf_dir) / "config.json").read_text())["architectures"][0]
    model = getattr(transformers, arch).from_pretrained(hf_dir, dtype=torch.float32).eval()
    model.generation_config = transformers.GenerationConfig(eos_token_id=model.generation_config.eos_token_id)
    return model

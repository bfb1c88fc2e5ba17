"""Model hyperparameters, read from GGUF metadata only (nothing about a model's shape is hard-coded).

Where a key is absent, the value is the one llama.cpp's runtime assumes for that architecture, so a
file written by llama.cpp's converter (which leaves out keys its runtime does not read) means the
same here as there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from ..errors import ModelFileError
from ..gguf.reader import GGUFFile

SUPPORTED_ARCHS = ("qwen35", "qwen35moe", "qwen3next", "glm4moe", "deepseek2", "mimo2")
MLA_ARCHS = ("deepseek2",)      # Multi-head Latent Attention: DeepSeek-V3/R1, Kimi-K2
HYBRID_ARCHS = ("qwen35", "qwen35moe", "qwen3next")
# llama.cpp's qwen3next / qwen35moe graphs always renormalise the top-k expert weights (no key is read)
ALWAYS_NORM_TOPK = ("qwen35moe", "qwen3next", "mimo2")
SWA_ARCHS = ("mimo2",)          # sliding-window layers beside full-attention ones (MiMo-V2-Flash)


@dataclass(slots=True)
class ModelConfig:
    arch: str
    n_vocab: int
    n_embd: int
    n_layer: int                      # trunk layers (MTP blocks excluded)
    n_mtp: int                        # nextn_predict_layers
    n_head: int
    n_head_kv: int
    head_dim: int
    n_rot: int
    rope_theta: float
    rms_eps: float
    recurrent: tuple[bool, ...]       # one flag per block, MTP blocks included
    # gated delta net
    ssm_conv_kernel: int = 0
    ssm_head_k_dim: int = 0
    ssm_n_k_heads: int = 0
    ssm_n_v_heads: int = 0
    ssm_inner: int = 0
    # mixture of experts
    n_expert: int = 0
    n_expert_used: int = 0
    n_leading_dense: int = 0
    expert_weights_norm: bool = False
    expert_weights_scale: float = 1.0
    expert_gating: str = "softmax"    # or "sigmoid"
    n_expert_groups: int = 1
    n_group_used: int = 1
    attn_output_gate: bool = False    # Qwen3.5/Qwen3-Next: q_proj also yields a sigmoid gate
    # multi-head latent attention (deepseek2): head_dim is the query/key size (nope + rope)
    q_lora_rank: int = 0              # 0: queries straight from the hidden state (attn_q)
    kv_lora_rank: int = 0             # > 0: MLA; the cache holds this latent and the rope key per token
    v_head_dim: int = 0
    rope_pairs: bool = False          # RoPE on adjacent pairs (llama.cpp's "norm" type) instead of halves
    # RoPE context extension (rope.scaling.*; sliding-window layers are not scaled, as in llama.cpp): "linear"
    # divides every frequency by rope_factor; "yarn" only the slow ones (those turning fewer than beta_slow
    # times over the original context; a ramp up to beta_fast, times ext_factor), and scales cos / sin
    rope_scaling: str = "none"
    rope_factor: float = 1.0
    yarn_orig_ctx: int = 0
    yarn_beta_fast: float = 32.0
    yarn_beta_slow: float = 1.0
    yarn_ext_factor: float = 1.0
    yarn_log_mul: float = 0.0         # MLA: softmax scale x (1 + log_mul ln factor)^2 (DeepSeek's mscale_all_dim / 10)
    rope_attn_scale: float = 1.0      # the factor on cos and sin (YaRN's attention factor)
    # sliding-window attention (MiMo-V2): per block, MTP blocks included; empty = every block full attention
    swa: tuple[bool, ...] = ()
    n_swa: int = 0                    # a query sees the keys less than n_swa positions back (itself included)
    rope_theta_swa: float = 0.0       # the sliding-window layers' RoPE base (0: rope_theta)
    head_kv: tuple[int, ...] = ()     # per-block KV head counts where they differ (empty: n_head_kv everywhere)
    attn_value_scale: float = 1.0     # values scaled before attention (MiMo-V2)
    # tensor parallelism (parallel.shard): this rank's place; head counts above are then this rank's
    n_mtp_file: int = 0               # MTP layers in the file holding them (n_mtp: those loaded, --mtp-layers)
    tp_rank: int = 0
    tp_size: int = 1

    def __post_init__(self):
        if self.arch not in SUPPORTED_ARCHS:
            raise ValueError(f"unsupported architecture {self.arch!r}")
        if len(self.recurrent) != self.n_layer + self.n_mtp:
            raise ValueError("recurrent flags must cover trunk and MTP blocks")
        if self.n_rot > self.head_dim or self.n_rot % 2:
            raise ValueError(f"rope dimension {self.n_rot} does not fit head_dim {self.head_dim}")
        for name in ("n_embd", "n_head", "n_head_kv", "head_dim", "n_vocab"):
            if getattr(self, name) <= 0:
                raise ValueError(f"{name} = {getattr(self, name)} must be positive")
        for kv in {self.n_head_kv, *self.head_kv}:
            if kv <= 0 or self.n_head % kv:
                raise ValueError(f"{self.n_head} attention heads cannot share {kv} KV heads evenly")
        n_blocks = self.n_layer + self.n_mtp
        for name in ("swa", "head_kv"):
            if getattr(self, name) and len(getattr(self, name)) != n_blocks:
                raise ValueError(f"{name} has {len(getattr(self, name))} entries for {n_blocks} blocks")
        if any(self.swa) and self.n_swa <= 0:
            raise ValueError(f"sliding window {self.n_swa} must be positive")
        if not self.rms_eps > 0:
            raise ValueError(f"layer_norm_rms_epsilon = {self.rms_eps} must be positive")
        if self.n_expert and not 0 < self.n_expert_used <= self.n_expert:
            raise ValueError(f"expert_used_count = {self.n_expert_used} must be in [1, expert_count = {self.n_expert}]")
        if self.arch in HYBRID_ARCHS:
            k, v = self.ssm_n_k_heads, self.ssm_n_v_heads
            if min(k, v, self.ssm_head_k_dim, self.ssm_inner, self.ssm_conv_kernel) <= 0 or v % k or self.ssm_inner % v:
                raise ValueError(f"linear attention: {k} key heads of {self.ssm_head_k_dim}, {v} value heads, inner "
                                 f"size {self.ssm_inner}, conv kernel {self.ssm_conv_kernel} do not fit together")

    @property
    def mla(self) -> bool:
        return self.kv_lora_rank > 0

    @property
    def yarn(self) -> bool:
        return self.rope_scaling == "yarn"

    @property
    def qk_nope(self) -> int:
        return self.head_dim - self.n_rot

    @property
    def ssm_v_tiled(self) -> bool:
        """Qwen3.5 files store V heads tiled over K heads; Qwen3-Next keeps them grouped."""
        return self.arch in ("qwen35", "qwen35moe")

    @property
    def ssm_head_v_dim(self) -> int:
        return self.ssm_inner // self.ssm_n_v_heads if self.ssm_n_v_heads else 0

    def kv_heads(self, il: int) -> int:
        return self.head_kv[il] if self.head_kv else self.n_head_kv

    def is_swa(self, il: int) -> bool:
        return bool(self.swa) and self.swa[il]

    @property
    def v_dim(self) -> int:
        """Value head size of a (non-MLA) attention block: v_head_dim where it differs from head_dim."""
        return self.v_head_dim or self.head_dim

    @property
    def torch_decode(self) -> bool:
        """Decode runs the torch forward on CPU too: the native ops need value heads and MLA latents in whole
        vectors of 16 and RoPE parts of at most 256."""
        if self.mla:
            return bool(self.kv_lora_rank % 16 or self.n_rot > 256 or self.n_rot % 2)
        return bool(self.v_dim % 16 or self.n_rot > 512)

    def is_moe_layer(self, il: int) -> bool:
        return self.n_expert > 0 and il >= self.n_leading_dense

    @property
    def recurrent_layers(self) -> list[int]:
        return [i for i, r in enumerate(self.recurrent) if r]

    def with_mtp_blocks(self, head: "ModelConfig", keep: int = 0) -> "ModelConfig":
        """This trunk with the MTP blocks of `head` (the config of the file holding them: this one, or a
        head-only file) after it; MTP blocks are attention blocks, their per-block values are head's.
        `keep` > 0: only the first `keep` MTP blocks (deeper drafts then reuse the last one kept)."""
        from dataclasses import replace

        n = min(head.n_mtp, keep) if keep > 0 else head.n_mtp

        def extend(mine: tuple, theirs: tuple, fill) -> tuple:
            if not mine and not theirs:
                return ()
            tail = theirs[head.n_layer:head.n_layer + n] if len(theirs) == head.n_layer + head.n_mtp else (fill,) * n
            return (mine[:self.n_layer] or (fill,) * self.n_layer) + tuple(tail)

        return replace(self, n_mtp=n, n_mtp_file=head.n_mtp, recurrent=self.recurrent[:self.n_layer] + (False,) * n,
                       swa=extend(self.swa, head.swa, False), head_kv=extend(self.head_kv, head.head_kv, self.n_head_kv))

    @classmethod
    def from_gguf(cls, gf: GGUFFile) -> "ModelConfig":
        arch = gf.arch
        if arch not in SUPPORTED_ARCHS:
            raise ModelFileError(f"{gf.path}: architecture '{arch}' is not supported by nextn "
                                 f"(supported: {', '.join(SUPPORTED_ARCHS)})")
        n_all = gf.n_layer_all
        n_mtp = gf.n_mtp
        if not 0 <= n_mtp < n_all:
            raise ModelFileError(f"{gf.path}: {arch}.nextn_predict_layers={n_mtp} must be smaller than block_count={n_all}")
        n_layer = n_all - n_mtp
        n_embd = int(gf.require("embedding_length"))
        n_head = _scalar(gf, "attention.head_count")
        head_dim = int(gf.arch_meta("attention.key_length", n_embd // max(n_head, 1)))
        if arch in MLA_ARCHS:        # llama.cpp writes MLA as one wide KV head; the per-head sizes are the _mla keys
            head_dim = int(gf.require("attention.key_length_mla"))
        cfg = dict(
            arch=arch, n_vocab=gf.n_vocab, n_embd=n_embd, n_layer=n_layer, n_mtp=n_mtp,
            n_head=n_head, n_head_kv=_scalar(gf, "attention.head_count_kv", n_head), head_dim=head_dim,
            n_rot=int(gf.arch_meta("rope.dimension_count", head_dim)),
            rope_theta=float(gf.arch_meta("rope.freq_base", 10000.0)),
            rms_eps=float(gf.require("attention.layer_norm_rms_epsilon")),
            recurrent=_recurrent_flags(gf, arch, n_layer, n_all),
            n_expert=int(gf.arch_meta("expert_count", 0) or 0),
            n_expert_used=int(gf.arch_meta("expert_used_count", 0) or 0),
            n_leading_dense=int(gf.arch_meta("leading_dense_block_count", 0) or 0),
            expert_weights_scale=float(gf.arch_meta("expert_weights_scale", 0.0) or 1.0),   # llama.cpp: 0 = none
            n_expert_groups=int(gf.arch_meta("expert_group_count", 0) or 1),
            n_group_used=int(gf.arch_meta("expert_group_used_count", 0) or 1),
            attn_output_gate=arch in HYBRID_ARCHS,
        )
        gating = int(gf.arch_meta("expert_gating_func", 0) or 0)
        if arch == "glm4moe":   # llama.cpp: GLM-4.5 gates with a sigmoid unless the file says otherwise
            cfg["expert_gating"] = "softmax" if gating == 1 else "sigmoid"
        else:                   # deepseek2: softmax when the key is absent (DeepSeek-V2 files), as llama.cpp
            cfg["expert_gating"] = "sigmoid" if gating == 2 else "softmax"
        cfg.update(_rope_scaling(gf, arch))
        if arch in MLA_ARCHS:
            cfg.update(q_lora_rank=int(gf.arch_meta("attention.q_lora_rank", 0) or 0),
                       kv_lora_rank=int(gf.require("attention.kv_lora_rank")),
                       v_head_dim=int(gf.require("attention.value_length_mla")), rope_pairs=True)
        if arch in SWA_ARCHS:
            cfg.update(_swa_config(gf, n_all))
        if arch in ALWAYS_NORM_TOPK:
            cfg["expert_weights_norm"] = True
        else:
            cfg["expert_weights_norm"] = bool(gf.arch_meta("expert_weights_norm", False))
        if arch in HYBRID_ARCHS:
            cfg.update(
                ssm_conv_kernel=int(gf.require("ssm.conv_kernel")),
                ssm_head_k_dim=int(gf.require("ssm.state_size")),
                ssm_n_k_heads=int(gf.require("ssm.group_count")),
                ssm_n_v_heads=int(gf.require("ssm.time_step_rank")),
                ssm_inner=int(gf.require("ssm.inner_size")),
            )
        try:
            return cls(**cfg)
        except ValueError as e:
            raise ModelFileError(f"{gf.path}: inconsistent metadata: {e}") from None


def _scalar(gf: GGUFFile, suffix: str, default=None) -> int:
    value = gf.arch_meta(suffix, default)
    if value is None:
        raise ModelFileError(f"{gf.path}: required metadata key '{gf.arch}.{suffix}' is missing")
    if isinstance(value, list):  # per-layer arrays: nextn uses the first (uniform) value
        value = value[0]
    return int(value)


def _rope_scaling(gf: GGUFFile, arch: str) -> dict:
    """The file's RoPE scaling as llama.cpp's runtime reads it (a factor without a type is linear; YaRN's
    original context defaults to the training context). YaRN's cos / sin factor is the file's
    yarn_attn_factor where given (transformers' `attention_factor`; llama.cpp's runtime ignores the key),
    else 1 + 0.1 ln factor (1 for DeepSeek's MLA with mscale_all_dim, whose softmax scale carries it);
    rope.scaling.attn_factor multiplies it. Other kinds are refused rather than decoded wrongly."""
    kind = str(gf.arch_meta("rope.scaling.type", "linear") or "linear")
    factor = float(gf.arch_meta("rope.scaling.factor", 0.0) or gf.arch_meta("rope.scale_linear", 0.0) or 0.0)
    attn = float(gf.arch_meta("rope.scaling.attn_factor", 1.0) or 1.0)
    explicit = gf.arch_meta("rope.scaling.yarn_attn_factor")
    ext = float(gf.arch_meta("rope.scaling.yarn_ext_factor", 1.0))
    if kind not in ("none", "linear", "yarn"):
        raise ModelFileError(f"{gf.path}: rope scaling '{kind}' is not implemented in nextn for {arch}; refusing "
                             f"rather than decoding wrongly")
    if factor < 0 or not math.isfinite(factor):
        raise ModelFileError(f"{gf.path}: {arch}.rope.scaling.factor = {factor} must be positive")
    if kind == "none" or factor in (0.0, 1.0) or (kind == "yarn" and factor < 1.0):
        return {}
    if kind == "linear" or ext == 0.0:
        return dict(rope_scaling="linear", rope_factor=factor, rope_attn_scale=attn * float(explicit or 1.0))
    log_mul = float(gf.arch_meta("rope.scaling.yarn_log_multiplier", 0.0) or 0.0) if arch in MLA_ARCHS else 0.0
    if explicit is not None:
        base = float(explicit)
    else:
        base = 1.0 if log_mul else 1.0 + 0.1 * math.log(factor)
    orig = int(gf.arch_meta("rope.scaling.original_context_length", 0) or gf.arch_meta("context_length", 0) or 0)
    if orig <= 0:
        raise ModelFileError(f"{gf.path}: YaRN scaling needs {arch}.rope.scaling.original_context_length")
    return dict(rope_scaling="yarn", rope_factor=factor, yarn_orig_ctx=orig, yarn_ext_factor=ext,
                yarn_beta_fast=float(gf.arch_meta("rope.scaling.yarn_beta_fast", 32.0)),
                yarn_beta_slow=float(gf.arch_meta("rope.scaling.yarn_beta_slow", 1.0)),
                yarn_log_mul=log_mul, rope_attn_scale=base * attn)


def _swa_config(gf: GGUFFile, n_all: int) -> dict:
    """MiMo-V2 (llama.cpp's mimo2 keys): which blocks slide, their window and RoPE base, per-block KV heads,
    value heads narrower than keys, the value scale; experts gated by a sigmoid."""
    pattern = gf.arch_meta("attention.sliding_window_pattern")
    if not isinstance(pattern, list) or len(pattern) < n_all:
        raise ModelFileError(f"{gf.path}: {gf.arch}.attention.sliding_window_pattern must list all {n_all} blocks")
    kv = gf.arch_meta("attention.head_count_kv")
    kv = [int(x) for x in kv] if isinstance(kv, list) else [int(kv)] * n_all
    if len(kv) < n_all:
        raise ModelFileError(f"{gf.path}: {gf.arch}.attention.head_count_kv has {len(kv)} entries, expected {n_all}")
    base = float(gf.arch_meta("rope.freq_base", 10000.0))
    return dict(swa=tuple(bool(x) for x in pattern[:n_all]), n_swa=int(gf.require("attention.sliding_window")),
                rope_theta_swa=float(gf.arch_meta("rope.freq_base_swa", base)), head_kv=tuple(kv[:n_all]),
                v_head_dim=int(gf.arch_meta("attention.value_length", 0) or 0),
                attn_value_scale=float(gf.arch_meta("attention.value_scale", 1.0) or 1.0), expert_gating="sigmoid")


def _recurrent_flags(gf: GGUFFile, arch: str, n_layer: int, n_all: int) -> tuple[bool, ...]:
    if arch not in HYBRID_ARCHS:
        return (False,) * n_all
    flags = gf.arch_meta("attention.recurrent_layers")
    if flags is not None:
        flags = [bool(x) for x in flags]
        if len(flags) < n_layer:
            raise ModelFileError(f"{gf.path}: {arch}.attention.recurrent_layers has {len(flags)} entries, "
                                 f"expected {n_all}")
        return tuple(flags[:n_layer]) + (False,) * (n_all - n_layer)
    interval = int(gf.arch_meta("full_attention_interval", 4))
    return tuple(i < n_layer and (i + 1) % interval != 0 for i in range(n_all))

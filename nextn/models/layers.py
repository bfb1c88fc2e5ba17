"""Building blocks shared by every architecture: linear, norms, RoPE, the dense FFN.

Each comes in the torch form (prefill on CPU, everything on CUDA) and, where the decode path needs
it, as native ops on the decode buffers (`*_native`).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

from ..kernels import ops
from ..kernels.weights import FEW_ROWS, QWeight
from .config import ModelConfig


def cuda_ops(x: torch.Tensor):
    """The fused CUDA ops module (kernels.gpu_ops) when x is on a GPU, else None (Triton is imported only there)."""
    if not x.is_cuda:
        return None
    from ..kernels import gpu_ops
    return gpu_ops


def fused_short(x: torch.Tensor, step) -> bool:
    """Whether a forward runs the fused CUDA kernels of attention and Gated DeltaNet (kernels.gpu_attention,
    kernels.gpu_delta): a few tokens per sequence (decode, drafts, verification) on a GPU."""
    return x.is_cuda and not step.chunked


def linear(x: torch.Tensor, w, bias: torch.Tensor | None = None) -> torch.Tensor:
    """x @ W^T (+ bias) for a weight in its GGUF type (CPU) or a dense tensor (CUDA)."""
    if isinstance(w, QWeight):
        return w.linear(x, bias).to(x.dtype)
    return F.linear(x, w, bias)


def expert(w, e: int):
    """Expert e of a stack of expert matrices [E, N, K]."""
    return w.expert(e) if isinstance(w, QWeight) else w[e]


def rms_norm(x: torch.Tensor, w: torch.Tensor, eps: float) -> torch.Tensor:
    """llama.cpp-convention RMSNorm: x / rms(x) * w (zero-centred weights already have +1 folded in)."""
    if ops_ := cuda_ops(x):
        return ops_.rms_norm(x, w, eps)
    xf = x.float()
    xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + eps)
    return (xf * w.float()).to(x.dtype)


def l2_norm(x: torch.Tensor, eps: float = 1e-6) -> torch.Tensor:
    return x * torch.rsqrt((x * x).sum(-1, keepdim=True) + eps)


def rope_tables(positions: torch.Tensor, inv_freq: torch.Tensor, scale: float, dtype: torch.dtype):
    """cos/sin tables of shape [B, T, 1, n_rot] (each frequency twice), times `scale` (rope_inv_freq)."""
    freqs = positions.float()[..., None] * inv_freq.to(positions.device)
    emb = torch.cat((freqs, freqs), dim=-1)[:, :, None, :]
    return (emb.cos() * scale).to(dtype), (emb.sin() * scale).to(dtype)


def rope_inv_freq(cfg: ModelConfig, swa: bool = False) -> tuple[torch.Tensor, float]:
    """RoPE's n_rot / 2 frequencies (float32) and the factor on cos and sin, for the full-attention layers or
    the sliding-window ones (their own base, never scaled): the one place every path takes them from."""
    theta = (cfg.rope_theta_swa or cfg.rope_theta) if swa else cfg.rope_theta
    n_rot = cfg.n_rot
    inv_freq = 1.0 / (theta ** (torch.arange(0, n_rot, 2, dtype=torch.float32) / n_rot))
    if swa or cfg.rope_scaling == "none":
        return inv_freq, 1.0
    if cfg.rope_scaling == "linear":
        return inv_freq / cfg.rope_factor, cfg.rope_attn_scale
    return yarn_inv_freq(inv_freq, n_rot, theta, cfg.rope_factor, cfg.yarn_orig_ctx, cfg.yarn_beta_fast,
                         cfg.yarn_beta_slow, cfg.yarn_ext_factor), cfg.rope_attn_scale


def yarn_inv_freq(inv_freq: torch.Tensor, dim: int, theta: float, factor: float, orig_ctx: int, beta_fast: float,
                  beta_slow: float, ext_factor: float = 1.0) -> torch.Tensor:
    """YaRN: frequencies that turn fewer than beta_slow times over the original context are divided by
    `factor`, those turning more than beta_fast times are kept, a linear ramp in between (times ext_factor)."""
    def dim_of(rotations: float) -> float:
        return dim * math.log(orig_ctx / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = max(math.floor(dim_of(beta_fast)), 0), min(math.ceil(dim_of(beta_slow)), dim - 1)
    ramp = ((torch.arange(dim // 2, dtype=torch.float32) - low) / max(high - low, 1e-3)).clamp(0, 1)
    keep = (1 - ramp) * ext_factor
    return inv_freq / factor * (1 - keep) + inv_freq * keep


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first n_rot dims of x [B, T, H, hd]; the rest pass through (partial RoPE)."""
    if ops_ := cuda_ops(x):
        return ops_.rope(x, cos, sin)
    n_rot = cos.shape[-1]
    x_rot, x_pass = x[..., :n_rot], x[..., n_rot:]
    half = n_rot // 2
    rotated = torch.cat((-x_rot[..., half:], x_rot[..., :half]), dim=-1)
    out = x_rot * cos + rotated * sin
    return torch.cat((out, x_pass), dim=-1) if x_pass.shape[-1] else out


def swiglu(x: torch.Tensor, gate, up, down) -> torch.Tensor:
    if x.is_cuda and isinstance(gate, QWeight) and isinstance(up, QWeight) and gate.qtype == up.qtype \
            and gate.shape == up.shape and x.shape[:-1].numel() <= FEW_ROWS:
        from ..kernels import gpu                      # gate and up in one launch, silu(g) * u in its epilogue
        h = gpu.few_rows(x.reshape(-1, gate.K).contiguous(), gate.data, gate.qtype, gate.N, gate.K, up=up.data)
        return linear(h.reshape(*x.shape[:-1], gate.N), down)
    return linear(F.silu(linear(x, gate)) * linear(x, up), down)


def dense_ffn(x: torch.Tensor, w: dict, suffix: str = "") -> torch.Tensor:
    return swiglu(x, w[f"ffn_gate{suffix}.weight"], w[f"ffn_up{suffix}.weight"], w[f"ffn_down{suffix}.weight"])


def swiglu_native(w: dict, suffix: str, x: torch.Tensor, out: torch.Tensor, buf, rows) -> None:
    """out = down(silu(gate x) * up x), on the decode buffers."""
    F_ = w[f"ffn_gate{suffix}.weight"].N
    gate, up = buf.ff_gate[:, :F_], buf.ff_up[:, :F_]
    ops.matmul(x, w[f"ffn_gate{suffix}.weight"], gate, rows)
    ops.matmul(x, w[f"ffn_up{suffix}.weight"], up, rows)
    ops.silu_mul(gate, up, gate, rows)
    ops.matmul(gate, w[f"ffn_down{suffix}.weight"], out, rows)

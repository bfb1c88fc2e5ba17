"""Gated DeltaNet (Qwen3.5 / Qwen3-Next linear-attention blocks): causal conv1d + gated delta rule.

Torch form: one closed-form routine handles a chunk of up to `CHUNK` tokens; prefill walks the prompt
chunk by chunk. Short forwards on CUDA (decode, draft verification) run the fused recurrence of
kernels.gpu_delta, which leaves the state as it was; the commit replays the kept tokens into it. Native form (CPU decode): the
recurrence token by token in the kernel, which saves what rolling back needs and replays the kept
tokens from the state before the step on `commit`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..kernels import ops
from .cache import Cache, PendingState, conv_window
from .config import ModelConfig
from . import layers
from .layers import cuda_ops, l2_norm, linear, rms_norm
from .step import Step

CHUNK = 64
_LOWER: dict = {}


def _lower(T: int, device) -> torch.Tensor:
    key = (T, str(device))
    if key not in _LOWER:
        _LOWER[key] = torch.ones(T, T, dtype=torch.bool, device=device).tril()
    return _LOWER[key]


def delta_rule_chunk(q, k, v, g, beta, s0, all_states: bool):
    """Gated delta rule over one chunk, in closed form (WY/UT representation).

    q, k: [..., T, dk] (q already scaled), v: [..., T, dv], g (log decay), beta: [..., T],
    s0: [..., dk, dv]; leading dims broadcast, so K heads shared by several V heads are never copied.
    Returns (outputs [..., T, dv], states [..., T, dk, dv] after every token, or the final [..., dk, dv]).
    """
    T = q.shape[-2]
    c = g.cumsum(-1)
    lower = _lower(T, q.device)
    decay = (c[..., :, None] - c[..., None, :]).masked_fill(~lower, float("-inf")).exp()   # [.., t, i]
    a = (beta[..., :, None] * decay * (k @ k.transpose(-1, -2))).tril(-1)
    ec = c.exp()[..., None]
    rhs = beta[..., None] * (v - ec * (k @ s0))
    u = torch.linalg.solve_triangular(a, rhs, upper=False, unitriangular=True)
    out = ec * (q @ s0) + ((q @ k.transpose(-1, -2)) * decay) @ u
    if all_states:
        inc = (decay[..., :, :, None] * k.unsqueeze(-3)).transpose(-1, -2) @ u.unsqueeze(-3)
        return out, ec[..., None] * s0.unsqueeze(-3) + inc
    last = decay[..., -1, :, None]
    return out, c[..., -1].exp()[..., None, None] * s0 + (k * last).transpose(-1, -2) @ u


def gated_deltanet(x: torch.Tensor, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    B, T, _ = x.shape
    hv, dv = cfg.ssm_n_v_heads, cfg.ssm_head_v_dim
    qkv, z, b, a = _projections(x, w, cfg)
    if layers.fused_short(x, step) and _pow2(cfg.ssm_head_k_dim) and _pow2(cfg.ssm_head_v_dim):
        out = _fused(qkv, b, a, w, cfg, step, cache, il)
    else:
        out = _torch_rule(qkv, b, a, w, cfg, step, cache, il)
    if ops_ := cuda_ops(x):
        out = ops_.rms_norm(out, w["ssm_norm.weight"], cfg.rms_eps, gate=z.view(B, T, hv, dv), out_dtype=x.dtype)
    else:
        out = (rms_norm(out, w["ssm_norm.weight"], cfg.rms_eps) * F.silu(z.float().view(B, T, hv, dv))).to(x.dtype)
    return linear(out.reshape(B, T, hv * dv), w["ssm_out.weight"])


def _pow2(n: int) -> bool:
    """Head sizes the fused kernels take (their tiles are powers of two)."""
    return n & (n - 1) == 0


def _fused(qkv, b, a, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    """kernels.gpu_delta: conv and recurrence read the cache and leave it; the commit replays the kept tokens."""
    from ..kernels import gpu_delta       # Triton: imported only where it runs
    layer = gpu_delta.Step(qkv, b, a, cache.conv[il], w["ssm_conv1d.weight"], cache.ssm[il], w["ssm_a"],
                           w["ssm_dt.bias"], step.slot_index, cfg.ssm_n_k_heads, cfg.ssm_n_v_heads, cfg.ssm_head_k_dim,
                           cfg.ssm_head_v_dim, cfg.ssm_v_tiled)
    out = layer.run()
    cache.pending[il] = PendingState(step.sel, None, None, replay=layer.commit)
    return out


def _torch_rule(qkv, b, a, w: dict, cfg: ModelConfig, step: Step, cache: Cache, il: int) -> torch.Tensor:
    """Conv, normalisation and gates in torch ops, then the closed-form rule; outputs [B, T, hv, dv]."""
    B, T, _ = qkv.shape
    hk, hv, dk, dv = cfg.ssm_n_k_heads, cfg.ssm_n_v_heads, cfg.ssm_head_k_dim, cfg.ssm_head_v_dim
    # causal depthwise conv over [old window | new inputs]
    conv_state = cache.conv[il][step.sel]
    buf = torch.cat((conv_state.transpose(1, 2), qkv.to(conv_state.dtype)), dim=1)     # [B, K-1+T, C]
    mixed = F.silu(causal_conv(buf, w["ssm_conv1d.weight"], T)).float()                  # [B, T, C]
    q, k, v = mixed.split((hk * dk, hk * dk, hv * dv), dim=-1)
    heads = _Heads(cfg, B, T)
    q = heads.keys(l2_norm(q.reshape(B, T, hk, dk)) * dk ** -0.5)
    k = heads.keys(l2_norm(k.reshape(B, T, hk, dk)))
    v = heads.values(v)
    beta = heads.scalars(torch.sigmoid(b.float()) * step.valid_f[..., None])               # padding: no write
    g = heads.scalars(w["ssm_a"].float() * F.softplus(a.float() + w["ssm_dt.bias"].float())
                      * step.valid_f[..., None])                                            # padding: no decay
    return heads.merge(_delta_torch(q, k, v, beta, g, heads, step, cache, il, buf, qkv.device))


def _delta_torch(q, k, v, beta, g, heads, step: Step, cache: Cache, il: int, buf, device) -> torch.Tensor:
    """The closed-form chunked rule: prefill (final state written), or a short forward keeping the state
    after every token as pending (CPU torch path). Returns outputs [B, a, b, T, dv]."""
    T = heads.T
    s0 = heads.state(cache.ssm[il][step.sel])
    if step.chunked:
        outs = []
        for s in range(0, T, CHUNK):
            e = s + CHUNK
            o, s0 = delta_rule_chunk(q[..., s:e, :], k[..., s:e, :], v[..., s:e, :], g[..., s:e], beta[..., s:e],
                                     s0, False)
            outs.append(o)
        out = torch.cat(outs, dim=-2)
        n = torch.tensor(step.n_tokens, device=device)
        cache.conv[il][step.sel] = conv_window(buf, n, buf.shape[1] - T)
        cache.ssm[il][step.sel] = s0.reshape(cache.ssm[il][step.sel].shape)
        return out
    out, states = delta_rule_chunk(q, k, v, g, beta, s0, True)
    cache.pending[il] = PendingState(step.sel, buf, heads.flat_states(states))
    return out


class _Heads:
    """V heads share K heads in groups of r. Qwen3.5 GGUFs store V heads tiled over K heads (head j
    reads K head j % hk, llama.cpp's order); Qwen3-Next keeps them grouped (head j reads j // r).
    Values are viewed as [B, a, b, T, ...] with K heads broadcast along the r axis, never copied."""

    def __init__(self, cfg: ModelConfig, B: int, T: int):
        self.B, self.T, self.hk, self.hv = B, T, cfg.ssm_n_k_heads, cfg.ssm_n_v_heads
        self.r = self.hv // self.hk
        self.tiled = cfg.ssm_v_tiled
        self.shape = (self.r, self.hk) if self.tiled else (self.hk, self.r)

    def keys(self, t: torch.Tensor) -> torch.Tensor:          # [B, T, hk, d] -> [B, 1|hk, hk|1, T, d]
        t = t.permute(0, 2, 1, 3)
        return t[:, None] if self.tiled else t[:, :, None]

    def values(self, t: torch.Tensor) -> torch.Tensor:        # [B, T, hv*d] -> [B, a, b, T, d]
        return t.reshape(self.B, self.T, *self.shape, -1).permute(0, 2, 3, 1, 4)

    def scalars(self, t: torch.Tensor) -> torch.Tensor:       # [B, T, hv] -> [B, a, b, T]
        return t.reshape(self.B, self.T, *self.shape).permute(0, 2, 3, 1)

    def state(self, s: torch.Tensor) -> torch.Tensor:         # [B, hv, dk, dv] -> [B, a, b, dk, dv]
        return s.reshape(self.B, *self.shape, *s.shape[-2:])

    def merge(self, out: torch.Tensor) -> torch.Tensor:       # [B, a, b, T, dv] -> [B, T, hv, dv]
        return out.permute(0, 3, 1, 2, 4).reshape(self.B, self.T, self.hv, -1)

    def flat_states(self, states: torch.Tensor) -> torch.Tensor:   # [B, a, b, T, dk, dv] -> [B, hv, T, dk, dv]
        return states.reshape(self.B, self.hv, *states.shape[-3:])


def causal_conv(buf: torch.Tensor, weight: torch.Tensor, T: int) -> torch.Tensor:
    """Depthwise conv of kernel K over time-major buf [B, K-1+T, C] -> [B, T, C], as K shifted multiply-adds
    on contiguous rows (a grouped conv1d call dominates at decode sizes; channel-major slices of a long
    prompt are strided copies)."""
    K = weight.shape[1]
    w = weight.to(buf.dtype).t()                                   # [K, C]
    out = buf[:, 0:T] * w[0]
    for j in range(1, K):
        out.addcmul_(buf[:, j:j + T], w[j])
    return out


def _projections(x: torch.Tensor, w: dict, cfg: ModelConfig):
    """(qkv [B,T,C], z [B,T,hv*dv], beta-logits [B,T,hv], alpha [B,T,hv])."""
    qkv, z = linear(x, w["attn_qkv.weight"]), linear(x, w["attn_gate.weight"])
    if "ssm_ba.weight" not in w:
        return qkv, z, linear(x, w["ssm_beta.weight"]), linear(x, w["ssm_alpha.weight"])
    B, T, _ = x.shape   # Qwen3-Next: beta and alpha interleaved per K-head group [b (r) | a (r)]
    r = cfg.ssm_n_v_heads // cfg.ssm_n_k_heads
    ba = linear(x, w["ssm_ba.weight"]).reshape(B, T, cfg.ssm_n_k_heads, 2 * r)
    return qkv, z, ba[..., :r].reshape(B, T, -1), ba[..., r:].reshape(B, T, -1)


def deltanet_native(w: dict, cfg: ModelConfig, cache: Cache, il: int, x: torch.Tensor, out: torch.Tensor, buf,
                    rows, save: bool, commit: bool = False) -> None:
    """The same on the decode buffers, a few tokens per sequence. With `save`, the state before the step
    and each token's inputs are kept, and `commit=True` later keeps the state after rows.seq_keep tokens."""
    hk, hv, dk, dv = cfg.ssm_n_k_heads, cfg.ssm_n_v_heads, cfg.ssm_head_k_dim, cfg.ssm_head_v_dim
    conv_dim = 2 * hk * dk + hv * dv
    qkv, z, dn = buf.qkv[:, :conv_dim], buf.z[:, :hv * dv], buf.dn[:, :hv * dv]
    grouped = "ssm_ba.weight" in w
    b = buf.ba[:, :2 * hv] if grouped else buf.ba[:, :hv]
    alpha = None if grouped else buf.ba[:, hv:2 * hv]
    if not commit:
        ops.matmul(x, w["attn_qkv.weight"], qkv, rows)
        ops.matmul(x, w["attn_gate.weight"], z, rows)
        if grouped:
            ops.matmul(x, w["ssm_ba.weight"], b, rows)
        else:
            ops.matmul(x, w["ssm_beta.weight"], b, rows)
            ops.matmul(x, w["ssm_alpha.weight"], alpha, rows)
    ops.deltanet(qkv=qkv, z=z, b=b, alpha=alpha, conv_state=cache.conv[il], conv_w=w["ssm_conv1d.weight"], ssm=cache.ssm[il],
                 A=w["ssm_a"], dt_bias=w["ssm_dt.bias"], norm_w=w["ssm_norm.weight"], out=dn, hk=hk, hv=hv, dk=dk, dv=dv,
                 kernel=cfg.ssm_conv_kernel, v_tiled=cfg.ssm_v_tiled, ba_grouped=grouped, save=save,
                 conv_backup=cache.conv_backup.get(il), ssm_backup=cache.ssm_backup.get(il), rowbuf=buf.rowbuf[il],
                 rows=rows, eps=cfg.rms_eps, commit=commit)
    if not commit:
        ops.matmul(dn, w["ssm_out.weight"], out, rows)

"""Gated DeltaNet on CUDA for a few tokens per sequence (decode, verification), in Triton: two launches
per layer instead of some forty small torch kernels.

`conv`: the causal depthwise conv + silu over [the slot's conv window | this step's inputs], reading
the window where it lies. `recurrence`: one program holds a [dk, BV] slice of one head's state in
registers and walks the step's tokens; it L2-normalises q and k and forms beta = sigmoid(b) and the log
decay g = A softplus(a + dt) itself:  S <- exp(g) S;  S <- S + beta k (v - S^T k)^T;  o = S^T q.
A verification forward reads the conv window and the state and writes only outputs; `commit` runs both
again over each sequence's kept tokens, writing the new window and state, so rolling back costs
nothing and no per-token snapshots are stored.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl

BV = 32       # value columns of the state per program
BC = 128      # channels per conv program


@triton.jit
def _conv_kernel(qkv_ptr, state_ptr, w_ptr, slot_ptr, n_ptr, out_ptr, C, stride_qkv,
                 T: tl.constexpr, KW: tl.constexpr, KWP: tl.constexpr, BC_: tl.constexpr, COMMIT: tl.constexpr):
    b, cb = tl.program_id(0), tl.program_id(1)
    c = cb * BC_ + tl.arange(0, BC_)
    cm = c < C
    slot = tl.load(slot_ptr + b).to(tl.int64)
    hist = state_ptr + (slot * C + c) * (KW - 1)            # the slot's window: KW - 1 past inputs per channel
    rows = qkv_ptr + (b * T).to(tl.int64) * stride_qkv + c
    if COMMIT:      # the window after the n kept tokens: entries n .. n + KW - 2 of [window | inputs]
        j = tl.arange(0, KWP)
        idx = tl.load(n_ptr + b) + j
        live = cm[:, None] & (j < KW - 1)[None, :]
        from_old = (idx < KW - 1)[None, :]
        old = tl.load(hist[:, None] + tl.minimum(idx, KW - 2)[None, :], mask=live & from_old, other=0.0)
        new = tl.load(rows[:, None] + (tl.maximum(idx - (KW - 1), 0).to(tl.int64) * stride_qkv)[None, :],
                      mask=live & ~from_old, other=0.0)
        vals = tl.where(from_old, old.to(tl.float32), new.to(tl.float32))
        tl.store(hist[:, None] + j[None, :], vals.to(state_ptr.dtype.element_ty), mask=live)
    else:
        for t in tl.static_range(T):
            acc = tl.zeros((BC_,), tl.float32)
            for j in tl.static_range(KW):
                if t + j < KW - 1:
                    x = tl.load(hist + (t + j), mask=cm, other=0.0).to(tl.float32)
                else:
                    x = tl.load(rows + (t + j - (KW - 1)) * stride_qkv, mask=cm, other=0.0).to(tl.float32)
                acc += x * tl.load(w_ptr + c * KW + j, mask=cm, other=0.0).to(tl.float32)
            tl.store(out_ptr + (b * T + t) * C + c, acc / (1.0 + tl.exp(-acc)), mask=cm)


@triton.jit
def _delta_kernel(mixed_ptr, b_ptr, a_ptr, A_ptr, dt_ptr, state_ptr, slot_ptr, n_ptr, out_ptr, HK, H, R,
                  T: tl.constexpr, DK: tl.constexpr, DV: tl.constexpr, BV_: tl.constexpr, TILED: tl.constexpr,
                  WRITE: tl.constexpr):
    b, h, vb = tl.program_id(0), tl.program_id(1), tl.program_id(2)
    kk = tl.arange(0, DK)
    vv = vb * BV_ + tl.arange(0, BV_)
    kh = h % HK if TILED else h // R                  # the K head this V head reads
    C = 2 * HK * DK + H * DV
    slot = tl.load(slot_ptr + b).to(tl.int64)
    n = tl.load(n_ptr + b)
    A = tl.load(A_ptr + h).to(tl.float32)
    dt = tl.load(dt_ptr + h).to(tl.float32)
    s_ptr = state_ptr + (slot * H + h) * DK * DV + kk[:, None] * DV + vv[None, :]
    S = tl.load(s_ptr)
    for t in tl.static_range(T):
        row = b * T + t
        x = mixed_ptr + row.to(tl.int64) * C
        q = tl.load(x + kh * DK + kk)
        k = tl.load(x + HK * DK + kh * DK + kk)
        v = tl.load(x + 2 * HK * DK + h * DV + vv)
        q = q * (tl.rsqrt(tl.sum(q * q, 0) + 1e-6) * (DK ** -0.5))
        k = k * tl.rsqrt(tl.sum(k * k, 0) + 1e-6)
        braw = tl.load(b_ptr + row * H + h).to(tl.float32)
        araw = tl.load(a_ptr + row * H + h).to(tl.float32) + dt
        beta = 1.0 / (1.0 + tl.exp(-braw))
        g = A * tl.where(araw > 20.0, araw, tl.log(1.0 + tl.exp(araw)))
        upd = S * tl.exp(g)
        kv = tl.sum(upd * k[:, None], 0)
        upd = upd + k[:, None] * ((v - kv) * beta)[None, :]
        S = tl.where(t < n, upd, S)
        if not WRITE:
            tl.store(out_ptr + row * H * DV + h * DV + vv, tl.sum(S * q[:, None], 0))
    if WRITE:
        tl.store(s_ptr, S)


class Step:
    """One layer's short forward: run() gives the outputs; commit(keep) advances the slot's conv window
    and state by each sequence's kept tokens (the inputs stay referenced until then)."""

    def __init__(self, qkv, b, a, conv_state, conv_w, ssm, A, dt_bias, slots, hk, hv, dk, dv, tiled):
        B, T, C = qkv.shape
        self.shape = (B, T, C)
        self.qkv, self.b, self.a = qkv, b.reshape(B * T, hv).contiguous(), a.reshape(B * T, hv).contiguous()
        self.conv_state, self.conv_w, self.ssm, self.A, self.dt = conv_state, conv_w, ssm, A, dt_bias
        self.slots, self.heads, self.tiled = slots, (hk, hv, dk, dv), tiled
        self.mixed = torch.empty(B, T, C, dtype=torch.float32, device=qkv.device)

    def _conv(self, n, commit: bool) -> None:
        B, T, C = self.shape
        _conv_kernel[(B, triton.cdiv(C, BC))](self.qkv, self.conv_state, self.conv_w, self.slots, n, self.mixed, C,
                                               self.qkv.stride(1), T=T, KW=self.conv_w.shape[1],
                                               KWP=triton.next_power_of_2(self.conv_w.shape[1] - 1), BC_=BC,
                                               COMMIT=commit, num_warps=4)

    def _delta(self, n, out) -> None:
        B, T, _ = self.shape
        hk, hv, dk, dv = self.heads
        bv = min(BV, dv)
        _delta_kernel[(B, hv, dv // bv)](self.mixed, self.b, self.a, self.A, self.dt, self.ssm, self.slots, n,
                                         out if out is not None else self.mixed, hk, hv, hv // hk, T=T, DK=dk, DV=dv,
                                         BV_=bv, TILED=self.tiled, WRITE=out is None, num_warps=4)

    def run(self) -> torch.Tensor:
        """Outputs [B, T, hv, dv] (float32); the cache is left as it was."""
        B, T, _ = self.shape
        hk, hv, dk, dv = self.heads
        n = torch.full((B,), T, dtype=torch.int32, device=self.qkv.device)
        self._conv(n, False)
        out = torch.empty(B, T, hv, dv, dtype=torch.float32, device=self.qkv.device)
        self._delta(n, out)
        return out

    def commit(self, keep: torch.Tensor) -> None:
        n = keep.to(torch.int32)
        self._delta(n, None)
        self._conv(n, True)


def recurrent(q, k, v, g, beta, state, slots, n, write: bool):
    """Reference-style entry for tests: the delta rule alone on prepared inputs q, k [B, T, H, dk] (q
    scaled, both normalised), v [B, T, H, dv], g, beta [B, T, H]; see `Step` for the fused layer."""
    B, T, H, dk = q.shape
    dv = v.shape[-1]
    # pack as the fused kernel reads them: [q | k | v] per row with one K head per V head, raw gates
    # chosen so that the kernel's normalisation and gate functions give back the given values
    mixed = torch.cat((q.reshape(B, T, H * dk) * dk ** 0.5, k.reshape(B, T, H * dk), v.reshape(B, T, H * dv)), -1)
    braw = torch.log(beta / (1 - beta))
    A = torch.full((H,), -1.0, device=q.device)
    araw = torch.log(torch.expm1(-g))            # softplus(araw) = -g, and g = A * softplus
    step = Step.__new__(Step)
    step.shape, step.heads, step.tiled = (B, T, mixed.shape[-1]), (H, H, dk, dv), True
    step.mixed, step.b, step.a = mixed.contiguous().float(), braw.reshape(B * T, H).contiguous(), \
        araw.reshape(B * T, H).contiguous()
    step.A, step.dt, step.ssm, step.slots = A, torch.zeros(H, device=q.device), state, slots
    if write:
        step._delta(n, None)
        return None
    out = torch.empty(B, T, H, dv, dtype=torch.float32, device=q.device)
    step._delta(n, out)
    return out

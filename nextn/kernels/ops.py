"""Typed calls of the native ops (csrc/kernels.inc), on torch tensors that stay where they are.

Buffers are 2-D float32 [rows, n] (row stride = stride(0)); `rows` is the step descriptor (a `Rows`),
whose first int32 holds the number of rows the op works on when it runs, so a recorded plan serves
every batch. Each function runs its op now, or records it while a plan is being recorded.
"""

from __future__ import annotations

import torch

from .native import p, run
from .weights import QWeight


class Rows:
    """The step descriptor the ops read at run time (int32): n_rows, n_seqs, capacities, then per row its
    sequence and position, per sequence its slot, first row, row count and kept count."""

    def __init__(self, max_rows: int, max_seqs: int):
        self.max_rows, self.max_seqs = max_rows, max_seqs
        self.t = torch.zeros(4 + 2 * max_rows + 4 * max_seqs, dtype=torch.int32)
        self.t[2], self.t[3] = max_rows, max_seqs
        R, S = max_rows, max_seqs
        a = self.t.numpy()               # numpy views: filling from Python lists costs microseconds
        self.row_seq, self.row_pos = a[4:4 + R], a[4 + R:4 + 2 * R]
        base = 4 + 2 * R
        self.seq_slot, self.seq_row0 = a[base:base + S], a[base + S:base + 2 * S]
        self.seq_len, self.seq_keep = a[base + 2 * S:base + 3 * S], a[base + 3 * S:base + 4 * S]
        self.head = a[:2]

    @property
    def ptr(self) -> int:
        return self.t.data_ptr()

    def fill(self, slots: list[int], starts: list[int], lens: list[int]) -> int:
        """Sequence b has lens[b] rows at positions starts[b].. in `slots[b]`; returns the row count."""
        n, B = sum(lens), len(slots)
        if n > self.max_rows or B > self.max_seqs:
            raise ValueError(f"step of {n} rows / {B} sequences exceeds {self.max_rows} / {self.max_seqs}")
        if n == B:                       # one row per sequence: plain decoding, draft steps
            self.row_seq[:n] = range(n)
            self.row_pos[:n] = starts
            self.seq_row0[:B] = range(n)
        else:
            row_seq, row_pos, row0, r = [], [], [], 0
            for b, (s, k) in enumerate(zip(starts, lens)):
                row0.append(r)
                row_seq += [b] * k
                row_pos += range(s, s + k)
                r += k
            self.row_seq[:n], self.row_pos[:n], self.seq_row0[:B] = row_seq, row_pos, row0
        self.head[:] = (n, B)
        self.seq_slot[:B] = slots
        self.seq_len[:B] = lens
        self.seq_keep[:B] = lens
        return n

    def set_rows(self, n: int) -> None:
        """Only the row count (ops that read no positions: output heads over packed rows)."""
        self.head[0] = n


def _rows(rows) -> list[int]:
    return [rows.ptr, 0] if isinstance(rows, Rows) else [0, int(rows)]


def matmul(x: torch.Tensor, w: QWeight, y: torch.Tensor, rows, bias: torch.Tensor | None = None) -> None:
    """y[r] = w @ x[r] (+ bias)."""
    run("matmul", [p(x), x.stride(0), p(w.data), w.kernel_type, w.row_bytes, w.N, w.K, p(y), y.stride(0), p(bias),
                   *_rows(rows)])


def matmul_heads(x: torch.Tensor, x_head_stride: int, w: QWeight, y: torch.Tensor, y_head_stride: int, rows) -> None:
    """y[r, h] = w[h] @ x[r, h] for each matrix h of the stack w [H, N, K]: head h reads K values of x from
    column h * x_head_stride and writes N of y from column h * y_head_stride (weights decoded exactly)."""
    H, N, K = w.shape
    run("matmul_heads", [p(x), x.stride(0), x_head_stride, p(w.data), int(w.qtype), w.row_bytes, N, K, N * w.row_bytes,
                         p(y), y.stride(0), y_head_stride, H, *_rows(rows)])


def embed(tokens: torch.Tensor, w: QWeight, out: torch.Tensor, rows) -> None:
    run("embed", [p(tokens), p(w.data), int(w.qtype), w.row_bytes, w.K, p(out), out.stride(0), *_rows(rows)])


def rmsnorm(x: torch.Tensor, w: torch.Tensor, out: torch.Tensor, eps: float, rows, *, dim: int | None = None,
            groups: int = 1, group_in: int = 0, group_out: int = 0) -> None:
    """x * w / rms(x) for each of `groups` vectors of `dim` per row (per-head norms: strided groups)."""
    dim = dim or w.numel()
    run("rmsnorm", [p(x), x.stride(0), p(w), p(out), out.stride(0), dim, groups, group_in or dim, group_out or dim,
                    *_rows(rows)], [eps])


def add(a: torch.Tensor, b: torch.Tensor, out: torch.Tensor, rows) -> None:
    run("add", [p(a), a.stride(0), p(b), b.stride(0), p(out), out.stride(0), out.shape[-1], *_rows(rows)])


def silu_mul(g: torch.Tensor, u: torch.Tensor, out: torch.Tensor, rows) -> None:
    run("silu_mul", [p(g), g.stride(0), p(u), u.stride(0), p(out), out.stride(0), out.shape[-1], *_rows(rows)])


def sigmoid_mul(x: torch.Tensor, gate: torch.Tensor, out: torch.Tensor, rows, *, dim: int, groups: int,
                group_x: int, group_gate: int, group_out: int) -> None:
    """out = x * sigmoid(gate), per `groups` strided vectors of `dim` per row."""
    run("sigmoid_mul", [p(x), x.stride(0), p(gate), gate.stride(0), p(out), out.stride(0), dim, groups, group_x,
                        group_gate, group_out, *_rows(rows)])


def add_gated(out: torch.Tensor, y: torch.Tensor, gate: torch.Tensor | None, rows) -> None:
    """out += sigmoid(gate[r, 0]) * y (no gate: out += y)."""
    run("add_gated", [p(out), out.stride(0), p(y), y.stride(0), p(gate), gate.stride(0) if gate is not None else 0,
                      out.shape[-1], *_rows(rows)])


def argmax(logits: torch.Tensor, ids: torch.Tensor, rows) -> None:
    run("argmax", [p(logits), logits.stride(0), logits.shape[-1], p(ids), *_rows(rows)])


def copy_rows(src: torch.Tensor, dst: torch.Tensor, rows) -> None:
    run("copy_rows", [p(src), src.stride(0), p(dst), dst.stride(0), dst.shape[-1], *_rows(rows)])


def attention(q, k, v, kcache, vcache, rows: Rows, out, *, n_head: int, n_kv: int, head_dim: int, n_rot: int,
              inv_freq: torch.Tensor, rope_scale: float, q_head_stride: int, shift: int = 0, v_dim: int | None = None,
              window: int = 0, ring: int = 0, sinks: torch.Tensor | None = None, v_scale: float = 1.0) -> None:
    """RoPE on q and k (in place; frequencies inv_freq, cos and sin times rope_scale), k and v (times v_scale) into the cache of each row's slot at row
    (position - shift) (mod `ring`: a sliding-window ring), causal softmax attention of each query over its
    sequence's cached positions (window > 0: the last `window`), with a sink logit per head where given."""
    run("attention", [p(q), q.stride(0), q_head_stride, p(k), k.stride(0), p(v), v.stride(0), p(kcache), p(vcache),
                      kcache.stride(0), n_head, n_kv, head_dim, n_rot, shift, rows.ptr, p(out), out.stride(0),
                      v_dim or head_dim, vcache.stride(0), window, ring, p(sinks), p(inv_freq)],
        [rope_scale, head_dim ** -0.5, v_scale])


def mla_attention(q, q_head_stride: int, nope: int, q_lat, c, k_pe, lat_cache, pe_cache, rows: Rows, out, *, n_head: int,
                  kv_lora_rank: int, n_rot: int, inv_freq: torch.Tensor, rope_scale: float, scale: float,
                  shift: int = 0) -> None:
    """Multi-head Latent Attention, absorbed: RoPE (adjacent pairs) on each head's q_pe (in q, in place) and
    on k_pe; the latent c and the rotated k_pe into the caches at row (position - shift); per head, scores
    q_lat . c_j + q_pe . pe_j over the sequence's rows, out = the softmax-weighted latents [rows, H * kvr]."""
    run("mla_attention", [p(q), q.stride(0), q_head_stride, nope, p(q_lat), q_lat.stride(0), p(c), c.stride(0), p(k_pe),
                          k_pe.stride(0), p(lat_cache), p(pe_cache), lat_cache.stride(0), pe_cache.stride(0), n_head,
                          kv_lora_rank, n_rot, shift, p(inv_freq), rows.ptr, p(out), out.stride(0)], [rope_scale, scale])


def deltanet(*, qkv, z, b, alpha, conv_state, conv_w, ssm, A, dt_bias, norm_w, out, hk, hv, dk, dv, kernel,
             v_tiled, ba_grouped, save, conv_backup, ssm_backup, rowbuf, rows: Rows, eps, commit=False) -> None:
    """Gated DeltaNet over each sequence's rows (conv, recurrence, gated norm); with `save`, what rolling
    back needs. commit=True: keep each sequence's state after rows.seq_keep of its rows."""
    run("deltanet_commit" if commit else "deltanet",
        [p(qkv), qkv.stride(0), p(z), z.stride(0), p(b), b.stride(0), p(alpha), alpha.stride(0) if alpha is not None else 0,
         p(conv_state), p(conv_w), p(ssm), p(A), p(dt_bias), p(norm_w), p(out), out.stride(0), hk, hv, dk, dv, kernel,
         int(v_tiled), int(ba_grouped), int(save), p(conv_backup), p(ssm_backup), p(rowbuf), rowbuf.stride(0), rows.ptr],
        [eps])


def moe_route(logits, ids, weights, rows, *, n_used: int, bias=None, softmax: bool, norm: bool, n_groups: int,
              n_group_used: int, scale: float) -> None:
    run("moe_route", [p(logits), logits.stride(0), logits.shape[-1], n_used, p(bias), int(softmax), int(norm), n_groups,
                      n_group_used, p(ids), p(weights), *_rows(rows)], [scale])


def moe_experts(x, ids, weights, gate: QWeight, up: QWeight, down: QWeight, out, scratch, rows) -> None:
    """out[r] = sum over r's experts e (in expert order) of weight * down_e(silu(gate_e x) * up_e x)."""
    E, F, D = gate.shape
    run("moe_experts", [p(x), x.stride(0), p(ids), p(weights), ids.shape[-1], E,
                        p(gate.data), gate.kernel_type, gate.row_bytes, p(up.data), up.kernel_type, up.row_bytes,
                        p(down.data), down.kernel_type, down.row_bytes, F, D, p(out), out.stride(0), p(scratch),
                        *_rows(rows)])

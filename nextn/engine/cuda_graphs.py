"""CUDA graphs for the short forwards of decoding: plain steps, verification of drafts, MTP draft steps,
and the commit that keeps a verified prefix.

A forward of B sequences with at most T rows each, whose keys end within the bucket L, is captured
once per (B, T, L) and replayed: the slots, start positions, row counts, tokens (and the MTP block's
hidden inputs) are copied into the graph's static inputs, and `Step.static` derives every index and
mask from them on the GPU. The first use of a shape runs it eagerly (warm-up: Triton compiles, cuBLAS
picks its kernels), then captures it, then replays it. Graphs share one memory pool; their outputs are
valid until the next replay of a graph of the same object.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

import torch

from ..models.step import Step

MAX_T = 16          # rows per sequence up to which forwards are captured (drafts + 1; longer runs eagerly)
MIN_KEYS = 256      # the smallest key bucket; buckets double up to the cache length


def key_bucket(n: int, limit: int) -> int:
    b = MIN_KEYS
    while b < n:
        b *= 2
    return min(b, limit)


@dataclass
class _Captured:
    graph: torch.cuda.CUDAGraph
    inputs: torch.Tensor               # [3 B + B T]: slots, starts, row counts, then the tokens [B, T]
    extra: torch.Tensor | None         # [B, T, D] hidden inputs (MTP block)
    out: tuple
    pending: dict
    commit: torch.cuda.CUDAGraph | None = None   # the commit of this shape, once captured
    keep: torch.Tensor | None = None             # its static input: rows kept per sequence [B]


@dataclass
class ShortForwards:
    """`fn(tokens [B, T], step, extra) -> tuple of tensors`, captured per shape. `cache` is the one the
    forward writes (its pending recurrent state is restored after each replay, for `commit`)."""

    fn: object
    cache: object
    rows: int                       # cache rows per slot (the spare row `rows` takes padding writes)
    shift: int = 0
    pool: object = None
    graphs: dict = field(default_factory=dict)
    last: _Captured | None = None
    capture_seconds: float = 0.0
    failed: bool = False

    def __call__(self, slots: list[int], starts: list[int], tokens: list[list[int]],
                 extra: torch.Tensor | None = None) -> tuple:
        B, T = len(slots), max(len(t) for t in tokens)
        L = key_bucket(max(s + len(t) for s, t in zip(starts, tokens)) - self.shift, self.rows)
        key = (B, T, L)
        flat = [*slots, *starts, *(len(t) for t in tokens)]
        for t in tokens:
            flat += t + [0] * (T - len(t))
        inputs = torch.tensor(flat, dtype=torch.long)
        g = self.graphs.get(key)
        if g is None:
            return self._first(key, inputs, extra)
        g.inputs.copy_(inputs, non_blocking=True)      # one copy: slots, starts, row counts, tokens
        if extra is not None:
            g.extra[:, :extra.shape[1]].copy_(extra)
        g.graph.replay()
        self._restore(g)
        return g.out

    @property
    def cache_device(self) -> torch.device:
        return self.cache.ssm[next(iter(self.cache.ssm))].device if self.cache.ssm else \
            self.cache.k[next(iter(self.cache.k))].device

    def commit(self, keep: list[int]) -> None:
        """Keep keep[b] rows of the last replayed forward (Cache.commit, captured per shape)."""
        g = self.last
        if g is None:
            self.cache.commit(keep)
            return
        keep_t = torch.tensor(keep, dtype=torch.long)
        if g.commit is None:
            t0 = time.perf_counter()
            g.keep = keep_t.to(self.cache_device)
            self.cache.commit(g.keep)                 # warm-up, eager
            self._restore(g)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                self.cache.commit(g.keep)
            g.commit = graph
            self.cache.pending.clear()
            self.capture_seconds += time.perf_counter() - t0
            return
        g.keep.copy_(keep_t, non_blocking=True)
        g.commit.replay()
        self.cache.pending.clear()

    def _restore(self, g: _Captured) -> None:
        self.last = g
        if g.pending:
            self.cache.pending = dict(g.pending)

    def _run(self, inputs: torch.Tensor, key, extra) -> tuple:
        B, T, L = key
        meta, tokens = inputs[:3 * B].view(3, B), inputs[3 * B:].view(B, T)
        return self.fn(tokens, Step.static(meta[0], meta[1], meta[2], T, L, self.rows, self.shift), extra)

    def _first(self, key, inputs, extra) -> tuple:
        """Run a new shape eagerly, then capture it (or, if capturing fails, keep running eagerly)."""
        B, T, L = key
        t0 = time.perf_counter()              # warm-up (Triton compiles here) and capture: not a step's cost
        device = self.cache_device
        inputs_d = inputs.to(device)
        extra_d = None
        if extra is not None:
            extra_d = torch.zeros(B, T, extra.shape[-1], dtype=extra.dtype, device=device)
            extra_d[:, :extra.shape[1]] = extra
        out = self._run(inputs_d, key, extra_d)
        if self.failed:
            self.last = None
            return out
        pending = dict(self.cache.pending)
        try:
            torch.cuda.synchronize(device)
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=self.pool):
                cap_out = self._run(inputs_d, key, extra_d)
        except RuntimeError as e:           # an op that cannot be captured: stay eager for good
            print(f"nextn: CUDA graphs off ({str(e).splitlines()[0][:120]})", file=sys.stderr)
            self.failed, self.last = True, None
            self.cache.pending = pending
            self.capture_seconds += time.perf_counter() - t0
            return out
        g = _Captured(graph, inputs_d, extra_d, cap_out, dict(self.cache.pending))
        self.graphs[key] = g
        graph.replay()
        self._restore(g)
        self.capture_seconds += time.perf_counter() - t0
        return g.out

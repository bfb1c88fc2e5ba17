"""The collectives of a sharded forward, over one torch.distributed process group: sums of partial
outputs (row-parallel products, expert-parallel MoE, vocabulary-split embedding lookups) and the
gather of vocabulary-split logits. Time spent in them is counted (`seconds`) for the benchmark's
communication share."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import NextnError


class RankLost(NextnError):
    """Another rank of a tensor-parallel run stopped (it died, was killed, or failed)."""


@dataclass
class Comm:
    rank: int
    size: int
    group: object = None          # the data-plane group (gloo on CPU, NCCL on CUDA); None: the default one
    seconds: float = 0.0          # time inside collectives since the last reset
    calls: int = 0

    def vocab_range(self, n_vocab: int) -> tuple[int, int]:
        """The token rows [first, end) this rank holds of a vocabulary-split matrix (the last rank may hold fewer)."""
        per = -(-n_vocab // self.size)
        return min(self.rank * per, n_vocab), min((self.rank + 1) * per, n_vocab)

    @property
    def doubling(self) -> bool:
        """A power of two of ranks: sums on CPU by recursive doubling, log2(size) swaps with one rank each
        (gloo's ring takes 2 (size - 1) steps, and decode-sized tensors are all latency: 1,024 floats over
        loopback took 0.35 / 2.9 / 8.1 ms against gloo's 1.6 / 5.7 / 22.4 ms with 2 / 4 / 8 ranks on a
        2-core machine: scripts/comm_bench.py)."""
        return self.size > 1 and self.size & (self.size - 1) == 0

    def all_reduce(self, x: torch.Tensor) -> torch.Tensor:
        """x summed over the ranks, in place (x must be contiguous). By recursive doubling: in round d each
        rank adds the partial sum of rank ^ d to its own; the two add the same two values (in either order:
        the same bits), so every rank ends with the same bits. Other sizes: gloo's (or NCCL's) all-reduce."""
        if self.doubling and not x.is_cuda:       # (NCCL's own all-reduce between GPUs)
            d = 1
            while d < self.size:
                x.add_(self._swap(x, self.rank ^ d))
                d <<= 1
        elif self.size > 1:
            self._timed(dist.all_reduce, x, group=self.group)
        return x

    def gather_vocab(self, local: torch.Tensor, n_vocab: int) -> torch.Tensor:
        """Logits over the whole vocabulary [..., V] from each rank's columns [..., V_rank]."""
        if self.size == 1:
            return local
        per = -(-n_vocab // self.size)
        lead = local.shape[:-1]
        x = local.reshape(-1, local.shape[-1]).float()
        if x.shape[-1] < per:           # the last rank's shorter shard, padded to the common width
            x = torch.nn.functional.pad(x, (0, per - x.shape[-1]), value=float("-inf"))
        x = x.contiguous()
        if self.size == 2 and not x.is_cuda:     # (more ranks: gloo's all-gather beat doubling 7x for these sizes)
            parts = [x, self._swap(x, 1 - self.rank)][::1 if self.rank == 0 else -1]
        else:
            parts = [torch.empty_like(x) for _ in range(self.size)]
            self._timed(dist.all_gather, parts, x, group=self.group)
        return torch.cat(parts, -1)[:, :n_vocab].reshape(*lead, n_vocab)

    def _swap(self, x: torch.Tensor, peer: int) -> torch.Tensor:
        """Rank `peer`'s x, for ours."""
        theirs = torch.empty_like(x)
        self._timed(self._exchange, x, theirs, peer)
        return theirs

    def _exchange(self, mine: torch.Tensor, theirs: torch.Tensor, peer: int) -> None:
        """The lower rank sends first, the higher receives first."""
        if self.rank < peer:
            dist.send(mine, peer, group=self.group)
            dist.recv(theirs, peer, group=self.group)
        else:
            dist.recv(theirs, peer, group=self.group)
            dist.send(mine, peer, group=self.group)

    def _timed(self, fn, *args, **kw) -> None:
        t0 = time.perf_counter()
        try:
            fn(*args, **kw)
        except (RuntimeError, dist.DistBackendError) as e:
            raise lost(e) from None
        self.seconds += time.perf_counter() - t0
        self.calls += 1


def lost(e: BaseException, who: str = "another rank") -> RankLost:
    """The RankLost a backend error means, naming its gist."""
    return RankLost(f"tensor parallelism: {who} stopped ({_first_line(e)})")


def _first_line(e: BaseException) -> str:
    """The gist of a backend error: its first sentence, without the source location gloo prefixes."""
    text = re.sub(r"^\[[^\]]*\]\s*", "", str(e).strip())
    return re.split(r"\. |\n", text)[0][:200] or type(e).__name__

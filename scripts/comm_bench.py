"""The collectives of `--tp N` on CPU (gloo over loopback): nextn's sum and vocabulary gather against gloo's.

    python scripts/comm_bench.py [--ranks 2,4,8] [--floats 1024] [--vocab 31040] [--calls 200]

For each rank count, that many processes on this host time `calls` back-to-back calls of each collective
(best of three rounds, rank 0's clock): the decode-sized sum (one row of the hidden state) by nextn's
Comm.all_reduce (recursive doubling for a power of two of ranks) and by gloo's ring all_reduce, and the
vocabulary gather of one row of logits (each rank's `vocab` columns) by Comm.gather_vocab and by gloo's
all_gather. More ranks than cores share the cores, as they would not across hosts.
"""

from __future__ import annotations

import argparse
import socket
import subprocess
import sys
import time


def rank_main(rank: int, size: int, addr: str, floats: int, vocab: int, calls: int) -> None:
    import torch
    import torch.distributed as dist

    from nextn.parallel.comm import Comm

    dist.init_process_group("gloo", init_method=addr, rank=rank, world_size=size)
    comm, x, part = Comm(rank, size), torch.randn(1, floats), torch.randn(1, vocab)
    cases = {"sum: nextn": lambda: comm.all_reduce(x), "sum: gloo all_reduce": lambda: dist.all_reduce(x),
             "gather: nextn": lambda: comm.gather_vocab(part, vocab * size),
             "gather: gloo all_gather": lambda: dist.all_gather([torch.empty_like(part) for _ in range(size)], part)}
    best = {}
    for _ in range(3):
        for name, fn in cases.items():
            dist.barrier()
            t = time.perf_counter()
            for _ in range(calls):
                fn()
            best[name] = min(best.get(name, 1e9), (time.perf_counter() - t) / calls * 1e3)
    if rank == 0:
        for name, ms in best.items():
            print(f"{size} ranks  {name:24s} {ms:8.3f} ms")
    dist.destroy_process_group()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--ranks", default="2,4,8")
    ap.add_argument("--floats", type=int, default=1024)
    ap.add_argument("--vocab", type=int, default=31040)
    ap.add_argument("--calls", type=int, default=200)
    ap.add_argument("--rank", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=None, help=argparse.SUPPRESS)
    ap.add_argument("--addr", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.rank is not None:
        rank_main(args.rank, args.size, args.addr, args.floats, args.vocab, args.calls)
        return
    for size in map(int, args.ranks.split(",")):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            addr = f"tcp://127.0.0.1:{s.getsockname()[1]}"
        common = ["--floats", str(args.floats), "--vocab", str(args.vocab), "--calls", str(args.calls),
                  "--size", str(size), "--addr", addr]
        procs = [subprocess.Popen([sys.executable, __file__, "--rank", str(r), *common]) for r in range(size)]
        if any(p.wait() for p in procs):
            sys.exit(f"comm_bench: a rank of the {size}-rank run failed")


if __name__ == "__main__":
    main()

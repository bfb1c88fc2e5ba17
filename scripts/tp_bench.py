"""Tensor parallelism on one host: per-rank memory, decode speed and the communication share of a step.

    python scripts/tp_bench.py [MODEL.gguf] [--tp 1,2] [--specs none,mtp:3] [-n 64] [--repeats 2] [--device cpu]

For each --tp value and spec (interleaved over the repeats): tokens/s of greedy decoding after the prompt,
rank 0's weights and caches as held (every rank holds the same share), each rank's resident memory
(VmRSS), and for tp > 1 the share of the decode time rank 0 spends inside collectives (sums of partial
outputs, the vocabulary gather). Threads: a tp-rank run shares the host's cores (cores / tp per rank).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig

PROMPT = "def quicksort(items):\n    \"\"\"Sort a list.\"\"\"\n"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def run(engine: Engine, spec: str, n: int) -> dict:
    k = int(spec.split(":")[1]) if ":" in spec else 0
    cfg = SpecConfig(draft_max=k, adaptive=False, drafters=("mtp",) if k else ())
    params = SamplingParams(max_tokens=n, ignore_eos=True)
    seq = engine.add_request(engine.encode_prompt(PROMPT), params, cfg)
    while not seq.generated:
        engine.step()
    comm = engine.tp.comm if engine.tp else None
    if comm:
        comm.seconds = 0.0
    t0, n0 = time.perf_counter(), len(seq.generated)
    while engine.has_work:
        engine.step()
    dt = time.perf_counter() - t0
    out = {"tok_s": round((len(seq.generated) - n0) / dt, 2)}
    if comm:
        out["comm_share"] = round(comm.seconds / dt, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--tp", default="1,2")
    ap.add_argument("--specs", default="none,mtp:3")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    args = ap.parse_args()
    results = {}
    engines = {tp: Engine(model=args.model, spec="mtp", tp=tp, device=args.device, progress=False, ctx_size=1024)
               for tp in map(int, args.tp.split(","))}
    for tp, e in engines.items():
        pids = [os.getpid()] + ([p.pid for p in e.tp.procs] if e.tp else [])
        results[f"tp{tp}"] = {"memory_rank0": e.memory(), "rss_mb_per_rank": [round(rss_mb(p)) for p in pids]}
    for _ in range(args.repeats):
        for spec in args.specs.split(","):
            for tp, e in engines.items():
                results[f"tp{tp}"].setdefault(spec, []).append(run(e, spec, args.n))
    print(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()

"""Tensor parallelism on one host: per-rank memory, decode speed, the communication share of a step, and
where the MTP head runs (split over the ranks, or whole on rank 0).

    python scripts/tp_bench.py [MODEL.gguf] [--tp 1,2,2:rank0] [--specs none,mtp:3,mtp:3@v32768] [-n 64]
                               [--repeats 2] [--device cpu] [--json-out FILE]

Each --tp entry is a rank count with the MTP head's placement (--tp-mtp: split, the default, or rank0);
every entry's engine lives in this process (the followers of all of them in one spawned rank per rank index),
and the runs interleave over entries and specs. Per run: tokens/s of greedy decoding after the prompt, the
mean milliseconds of a decode step's parts (draft, catch_up: the MTP head over the committed tokens, verify,
commit, other), and for tp > 1 the share of the decode time rank 0 spends inside collectives (sums of
partial outputs, the vocabulary gather). `mtp:K@vN` drafts K tokens over the N most frequent token ids.
Memory: rank 0's weights and caches as held (an MTP head on rank 0 apart), each rank's resident memory
(VmRSS: per process, so run one entry alone for it). Threads: a tp-rank run gives each rank cores / tp threads (set before every run, since a process
has one thread pool).
"""

from __future__ import annotations

import argparse
import json
import os
import time

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.kernels import native

PROMPT = "def quicksort(items):\n    \"\"\"Sort a list.\"\"\"\n"


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(l.split()[1]) for l in f if l.startswith("VmRSS")) / 1024


def parse_spec(spec: str) -> tuple[int, int]:
    """'none' | 'mtp:K' | 'mtp:K@vN' -> (K, N)."""
    if spec == "none":
        return 0, 0
    k, _, v = spec.split(":")[1].partition("@v")
    return int(k), int(v or 0)


def run(engine: Engine, k: int, n: int) -> dict:
    cfg = SpecConfig(draft_max=k, adaptive=False, drafters=("mtp",) if k else ())
    params = SamplingParams(max_tokens=n, ignore_eos=True)
    seq = engine.add_request(engine.encode_prompt(PROMPT), params, cfg)
    while not seq.generated:
        engine.step()
    comm = engine.tp.comm if engine.tp else None
    if comm:
        comm.seconds = 0.0
    before = engine.stats.step_ms, engine.stats.n_steps
    t0, n0 = time.perf_counter(), len(seq.generated)
    while engine.has_work:
        engine.step()
    dt = time.perf_counter() - t0
    steps = engine.stats.n_steps - before[1]
    out = {"tok_s": round((len(seq.generated) - n0) / dt, 2),
           "step_ms": {p: round((engine.stats.step_ms[p] * engine.stats.n_steps - before[0][p] * before[1]) / steps, 2)
                       for p in before[0]}}
    if comm:
        out["comm_share"] = round(comm.seconds / dt, 3)
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--tp", default="1,2", help="rank counts, each optionally :rank0 (MTP head whole on rank 0)")
    ap.add_argument("--specs", default="none,mtp:3")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--json-out", default=None)
    args = ap.parse_args()
    specs = args.specs.split(",")
    cores = native.default_threads()
    engines = {}       # (entry, draft vocabulary) -> engine
    for entry in args.tp.split(","):
        tp, _, place = entry.partition(":")
        for v in sorted({parse_spec(s)[1] for s in specs}):
            if v and int(tp) > 1 and place != "rank0":
                continue         # a draft vocabulary runs whole on rank 0
            engines[entry, v] = Engine(model=args.model, spec="mtp", tp=int(tp), tp_mtp=place or "split",
                                       draft_vocab=v, device=args.device, progress=False, ctx_size=1024)
    results = {}
    for (entry, v), e in engines.items():
        pids = [os.getpid()] + ([p.pid for p in e.tp.procs] if e.tp else [])
        results.setdefault(entry, {"memory_rank0": {}, "rss_mb_per_rank": [round(rss_mb(p)) for p in pids]})
        results[entry]["memory_rank0"][f"v{v}" if v else "full"] = e.memory()
    for _ in range(args.repeats):
        for spec in specs:
            k, v = parse_spec(spec)
            for (entry, ev), e in engines.items():
                if ev != v:
                    continue
                native.set_threads(max(1, cores // int(entry.partition(":")[0])))
                results[entry].setdefault(spec, []).append(run(e, k, args.n))
    text = json.dumps({"machine": {"cores": cores, "isa": native.isa()}, "results": results}, indent=1)
    print(text)
    if args.json_out:
        with open(args.json_out, "w") as f:
            f.write(text + "\n")


if __name__ == "__main__":
    main()

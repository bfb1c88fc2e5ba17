"""Decode speed and GPU memory on CUDA: nextn plain and MTP at batch 1 and batch 8, per model file.

    python scripts/gpu_bench.py [MODEL.gguf ...] [-n 128] [--specs none,mtp:1,mtp:3,mtp:auto] [--out FILE.json]

No model: the bundled demo. Greedy, one code prompt per sequence (8 different ones at batch 8), each
configuration warmed up first (CUDA graphs are captured then, Triton compiles), tokens/s over the
decode (prefill excluded). Also checks that MTP's tokens equal plain decoding's at batch 1.
"""

from __future__ import annotations

import argparse
import gc
import json
import time
from pathlib import Path

import torch

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.models.loader import DEMO_MODEL


def decode_speed(engine: Engine, prompts: list[list[int]], spec: SpecConfig, n: int) -> tuple[float, list, dict]:
    params = SamplingParams(max_tokens=n, ignore_eos=True)
    seqs = [engine.add_request(p, params, spec) for p in prompts]
    while any(s.num_cached < s.n_prompt for s in seqs) or any(not s.generated for s in seqs):
        engine.step()                                   # prefill and first tokens: not timed
    torch.cuda.synchronize()
    done0, t0 = sum(len(s.generated) for s in seqs), time.perf_counter()
    while engine.has_work:
        engine.step()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    drafted = sum(s.stats.n_draft_tokens for s in seqs)
    accepted = sum(s.stats.n_accepted for s in seqs)
    return (sum(len(s.generated) for s in seqs) - done0) / dt, [s.generated for s in seqs], \
        {"drafted": drafted, "accepted": accepted}


def bench_file(path: Path, specs: list[str], n: int, batch: int, dtype: str | None) -> dict:
    rows = {}
    for name in specs:
        k = name.partition(":")[2]
        spec = SpecConfig(draft_max=0, drafters=()) if name == "none" else \
            SpecConfig(draft_max=3 if k == "auto" else int(k), adaptive=k == "auto")
        gc.collect()                                   # the previous configuration's engine
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
        engine = Engine(model=str(path), spec="none" if name == "none" else "mtp", device="cuda", dtype=dtype,
                        n_parallel=batch, progress=False, ctx_size=2048)
        prompts = [engine.encode_prompt(p) for p in PROMPTS]
        decode_speed(engine, prompts[:1], spec, 32)                       # warm-up: capture, compile
        decode_speed(engine, prompts[:batch], spec, 32)
        one, toks, counts = decode_speed(engine, prompts[:1], spec, n)
        many, _, _ = decode_speed(engine, prompts[:batch], spec, n)
        rows[name] = {"batch1_tok_s": round(one, 1), f"batch{batch}_tok_s": round(many, 1),
                      "accepted_per_drafted": round(counts["accepted"] / max(1, counts["drafted"]), 3),
                      "tokens": toks[0], "weights_mb": round(engine.model.nbytes() / 2**20, 1),
                      "peak_gpu_mb": round(torch.cuda.max_memory_allocated() / 2**20, 1),
                      "graphs": len(engine.runner.graphs.graphs) if engine.runner.graphs else 0}
        del engine
    base = rows.get("none")
    for name, r in rows.items():
        if base:
            r["speedup_b1"] = round(r["batch1_tok_s"] / base["batch1_tok_s"], 2)
            r[f"speedup_b{batch}"] = round(r[f"batch{batch}_tok_s"] / base[f"batch{batch}_tok_s"], 2)
            r["same_tokens_as_plain"] = r["tokens"] == base["tokens"]
    for r in rows.values():
        del r["tokens"]
    return {"file": str(path), "file_mb": round(path.stat().st_size / 2**20, 1), "dtype": dtype or "bf16",
            "configs": rows}


PROMPTS = [
    "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line.\"\"\"\n",
    "def fibonacci(n):\n    \"\"\"Return the n-th Fibonacci number.\"\"\"\n",
    "class Stack:\n    def __init__(self):\n",
    "def read_lines(path):\n    with open(path) as f:\n",
    "import json\n\n\ndef load(path):\n",
    "def quicksort(items):\n",
    "class Counter:\n    \"\"\"Count things.\"\"\"\n\n    def __init__(self):\n",
    "def parse_args():\n    parser = argparse.ArgumentParser()\n",
]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="*")
    ap.add_argument("-n", type=int, default=128)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--specs", default="none,mtp:1,mtp:3,mtp:auto")
    ap.add_argument("--dtype", default=None)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = {"gpu": torch.cuda.get_device_name(), "torch": torch.__version__, "results": []}
    for m in args.models or [str(DEMO_MODEL)]:
        r = bench_file(Path(m), args.specs.split(","), args.n, args.batch, args.dtype)
        out["results"].append(r)
        print(json.dumps(r), flush=True)
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()

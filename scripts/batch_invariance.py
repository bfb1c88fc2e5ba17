"""Greedy decoding with MTP verification (k+1 rows per step) and with several sequences in one batch must
equal plain one-row greedy decoding token for token, on any model, however long the run.

    python scripts/batch_invariance.py MODEL.gguf [-n 400] [-k 3] [--batch 2] [-t THREADS]

Prints the first mismatch (if any) and the tokens compared; exit status 1 on a mismatch.
"""

import argparse
import json
import sys
import time

from nextn.engine.engine import Engine
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig

PROMPTS = ["The history of the city begins", "def quicksort(items):\n", "Q: Why is the sky blue?\nA:",
           "Once upon a time"]


def run(engine: Engine, prompts: list[str], params: SamplingParams, spec: SpecConfig) -> list[list[int]]:
    seqs = [engine.add_request(engine.encode_prompt(p), params, spec) for p in prompts]
    while engine.has_work:
        engine.step()
    return [s.generated for s in seqs]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("-n", type=int, default=400)
    ap.add_argument("-k", type=int, default=3)
    ap.add_argument("--batch", type=int, default=2)
    ap.add_argument("-t", "--threads", type=int, default=None)
    args = ap.parse_args()
    params = SamplingParams(max_tokens=args.n, ignore_eos=True)
    prompts = PROMPTS[:args.batch]
    t0 = time.time()
    plain = Engine(model=args.model, spec="none", threads=args.threads, progress=False)
    want = [run(plain, [p], params, SpecConfig(draft_max=0))[0] for p in prompts]
    del plain
    engine = Engine(model=args.model, spec="mtp", threads=args.threads, progress=False)
    got = run(engine, prompts, params, SpecConfig(draft_max=args.k, adaptive=False))
    report = {"model": args.model, "tokens_per_sequence": args.n, "k": args.k, "batch": len(prompts),
              "draft_tokens": engine.stats.n_draft_tokens, "accepted": engine.stats.n_accepted,
              "seconds": round(time.time() - t0, 1), "equal": got == want}
    for i, (g, w) in enumerate(zip(got, want)):
        if g != w:
            at = next((j for j, (a, b) in enumerate(zip(g, w)) if a != b), min(len(g), len(w)))
            report.setdefault("first_mismatch", {"sequence": i, "token": at})
    print(json.dumps(report, indent=1))
    return 0 if report["equal"] else 1


if __name__ == "__main__":
    sys.exit(main())

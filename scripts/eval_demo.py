"""Evaluate the demo model on held-out standard-library files (never trained on, see train_demo.py):
MTP acceptance per draft position with k = 3, and a sample of what it writes; sampling with the model's
recommended settings (as `nextn generate` does; seeded per file), or greedy with --greedy.

    python scripts/eval_demo.py [MODEL.gguf] [--files 40] [--tokens 96] [--greedy | --temp T] [--mtp-layers N]
"""

import argparse
import json


from nextn.engine.engine import Engine
from nextn.engine.sequence import SpecConfig
from nextn.engine.stats import SpecStats
from train_demo import corpus_files, corpus_root


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model", nargs="?", default=None)
    ap.add_argument("--files", type=int, default=40)
    ap.add_argument("--lines", type=int, default=12, help="prompt: the first N lines of each file")
    ap.add_argument("--tokens", type=int, default=96)
    ap.add_argument("--corpus", default=None)
    ap.add_argument("--greedy", action="store_true", help="greedy instead of the model's recommended sampling")
    ap.add_argument("--temp", type=float, default=None, help="sample at this temperature instead")
    ap.add_argument("--mtp-layers", type=int, default=0, help="use only the model's first N MTP layers")
    args = ap.parse_args()
    files = [f for f in corpus_files(corpus_root(args.corpus), held_out=True) if f.stat().st_size > 2000]
    step = max(1, len(files) // args.files)
    files = files[::step][:args.files]
    engine = Engine(model=args.model, spec="mtp", mtp_layers=args.mtp_layers, progress=False)
    total = SpecStats()
    sample = None
    for i, f in enumerate(files):
        params = engine.sampling_params(max_tokens=args.tokens, seed=i, temperature=0 if args.greedy else args.temp)
        prompt = "".join(f.read_text(encoding="utf-8", errors="replace").splitlines(keepends=True)[:args.lines])
        r = engine.generate(prompt, params, spec=SpecConfig(draft_max=3, adaptive=False))
        total.merge(r.stats)
        if sample is None and len(r.text) > 200:
            sample = (f.name, prompt, r.text)
    per = total.acceptance_per_position
    print(json.dumps({"model": engine.file.path.name, "mtp_layers": engine.model.cfg.n_mtp,
                      "temperature": 0.0 if args.greedy else args.temp, "files": len(files),
                      "generated_tokens": total.n_generated,
                      "acceptance_rate": round(total.acceptance_rate, 3),
                      "acceptance_per_position": [round(a, 3) for a in per],
                      "conditional_acceptance": [round(per[0], 3)] + [round(per[i] / per[i - 1], 3) if per[i - 1] else 0
                                                                        for i in range(1, len(per))],
                      "mean_accepted_length": round(total.mean_accepted_length, 3)}, indent=1))
    if sample:
        print(f"\n--- {sample[0]} (held out): prompt ---\n{sample[1]}--- continuation ---\n{sample[2]}")


if __name__ == "__main__":
    main()

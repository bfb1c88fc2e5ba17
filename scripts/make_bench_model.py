"""Make a benchmark model (random weights, reproducible from --seed) in F16, Q8_0 and Q4_K_M.

    python scripts/make_bench_model.py --out runs/bench1b [--seed 0] [--quantize path/to/llama-quantize]
    python scripts/make_bench_model.py --shape mla --out runs/mla [--quantize ...]

--shape qwen35 (default): the 1.03 B-parameter Qwen3.5; --shape mla: a 0.84 B GLM-4.7-Flash-shaped MLA + MoE
model (nextn_dev/bench_model.py). Writes OUT/hf (the checkpoint), OUT/NAME-f16.gguf (nextn convert),
OUT/NAME-q8_0.gguf (nextn gguf quantize) and, when given llama.cpp's llama-quantize, OUT/NAME-q4_k_m.gguf
(nextn cannot write K-quants yet; it runs them); NAME is bench1b or mla. Needs transformers
(pip install -e '.[test]') and ~12 GB of RAM.
"""

from __future__ import annotations

import argparse
import subprocess
import time
from pathlib import Path

from nextn.gguf.convert import convert
from nextn.gguf.tools import quantize_file
from nextn_dev.bench_model import SHAPES, make_checkpoint, n_params


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default="runs/bench1b")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--shape", default="qwen35", choices=SHAPES)
    ap.add_argument("--quantize", default=None, help="llama.cpp's llama-quantize, for Q4_K_M")
    args = ap.parse_args()
    out = Path(args.out)
    t0 = time.time()
    hf = out / "hf"
    if not (hf / "config.json").exists():
        make_checkpoint(hf, args.seed, args.shape)
    print(f"checkpoint: {n_params(hf) / 1e9:.3f} B parameters ({time.time() - t0:.0f} s)", flush=True)
    name = "bench1b" if args.shape == "qwen35" else args.shape
    f16 = out / f"{name}-f16.gguf"
    if not f16.exists():
        convert(hf, f16, outtype="f16")
    q8 = out / f"{name}-q8_0.gguf"
    if not q8.exists():
        quantize_file(f16, q8, "q8_0")
    paths = [f16, q8]
    if args.quantize:
        q4 = out / f"{name}-q4_k_m.gguf"
        if not q4.exists():
            subprocess.run([args.quantize, str(f16), str(q4), "Q4_K_M"], check=True, capture_output=True)
        paths.append(q4)
    for p in paths:
        print(f"{p}: {p.stat().st_size / 1e9:.2f} GB")
    print(f"done in {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()

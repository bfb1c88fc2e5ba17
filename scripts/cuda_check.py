"""Run nextn's engine on a CUDA device: greedy MTP output must equal plain greedy (float32), and print
tokens/s for plain and MTP decoding in float32 and bfloat16. Usage: python scripts/cuda_check.py MODEL.gguf"""

import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from nextn.engine import Engine  # noqa: E402
from nextn.sampling import SamplingParams  # noqa: E402
from nextn.sequence import SpecConfig  # noqa: E402

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line.\"\"\"\n"


def run(model, dtype, spec, k=3, adaptive=False, n=256):
    e = Engine(model=model, spec=spec, device="cuda", dtype=dtype, progress=False)
    e.generate(PROMPT, SamplingParams(max_tokens=16))                   # warm-up
    t = time.perf_counter()
    r = e.generate(PROMPT, SamplingParams(max_tokens=n, ignore_eos=True),
                   spec=SpecConfig(draft_max=k, adaptive=adaptive) if spec == "mtp" else None)
    torch.cuda.synchronize()
    return r, n / (time.perf_counter() - t)


def main():
    model = sys.argv[1]
    print(torch.cuda.get_device_name(), torch.__version__)
    for dtype in ("f32", "bf16"):
        plain, tps0 = run(model, dtype, "none")
        for k, adaptive in ((1, False), (3, False), (3, True)):
            spec, tps = run(model, dtype, "mtp", k, adaptive)
            same = spec.tokens == plain.tokens
            print(f"{dtype} k={k}{' auto' if adaptive else ''}: identical={same} plain {tps0:.0f} tok/s, "
                  f"mtp {tps:.0f} tok/s ({tps / tps0:.2f}x), acceptance {spec.stats.acceptance_rate:.2f} "
                  f"per-pos {[round(a, 2) for a in spec.stats.acceptance_per_position]}")


if __name__ == "__main__":
    main()

"""CUDA checks for the lent GPU machine (CI has none): for tiny random models of every architecture,
CUDA float32 logits match the CPU's and greedy MTP output equals plain greedy; then the demo model's
plain vs MTP speed in float32 and bfloat16.   python scripts/cuda_check.py [--bench]"""

import tempfile
import time
from pathlib import Path

import torch


from nextn.models.config import ModelConfig
from nextn.engine.engine import Engine
from nextn.gguf.reader import open_gguf
from nextn.models.model import Model
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.tiny import ARCHS, make_gguf

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line.\"\"\"\n"


@torch.inference_mode()
def logits_on(path, device):
    gf = open_gguf(path)
    cfg = ModelConfig.from_gguf(gf)
    model = Model.load(gf, cfg, device=device, progress=False)
    ids = torch.arange(3, 153, device=device)[None] % cfg.n_vocab
    return model.score(ids, chunk=64).cpu()


def check_archs(tmp: Path):
    for arch in ARCHS:
        path = make_gguf(tmp / f"{arch}.gguf", arch, workdir=tmp / f"{arch}.hf")
        diff = (logits_on(path, "cuda") - logits_on(path, "cpu")).abs().max().item()
        prompt = list(range(5, 90))
        plain = Engine(model=str(path), spec="none", device="cuda", dtype="f32", progress=False).generate(
            prompt, SamplingParams(max_tokens=48, ignore_eos=True)).tokens
        e = Engine(model=str(path), spec="mtp", device="cuda", dtype="f32", progress=False, n_parallel=4)
        same = [e.generate(prompt, SamplingParams(max_tokens=48, ignore_eos=True),
                           spec=SpecConfig(draft_max=k, adaptive=k == 0)).tokens == plain for k in (1, 2, 3, 0)]
        print(f"{arch}: cuda-vs-cpu max |dlogit| {diff:.2e}; greedy MTP == plain for k=1,2,3,auto: {same}", flush=True)


def speed(dtype):
    res = {}
    for spec in ("none", "mtp"):
        e = Engine(spec=spec, device="cuda", dtype=dtype, progress=False)
        e.generate(PROMPT, SamplingParams(max_tokens=16))
        for k in ((0,) if spec == "none" else (1, 2, 3, "auto")):
            sc = None if spec == "none" else SpecConfig(draft_max=3 if k == "auto" else k, adaptive=k == "auto")
            torch.cuda.synchronize()
            t = time.perf_counter()
            r = e.generate(PROMPT, SamplingParams(max_tokens=256, ignore_eos=True), spec=sc)
            torch.cuda.synchronize()
            res[k] = (256 / (time.perf_counter() - t), r.stats.acceptance_rate, r.tokens)
    base = res[0]
    for k, (tps, acc, toks) in res.items():
        print(f"demo {dtype} {'plain' if k == 0 else f'mtp:{k}'}: {tps:.0f} tok/s ({tps / base[0]:.2f}x), "
              f"acceptance {acc:.2f}, same tokens as plain: {toks == base[2]}", flush=True)


def main():
    print(torch.cuda.get_device_name(), torch.__version__, flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        check_archs(Path(tmp))
    for dtype in ("f32", "bf16"):
        speed(dtype)


if __name__ == "__main__":
    main()

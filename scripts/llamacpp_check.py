"""Check the GGUF files nextn writes against llama.cpp itself (CI has no llama.cpp; run by hand):

    python scripts/llamacpp_check.py --server path/to/llama-server [--models demo,qwen35,...] [-n 32]

A llama-server without internet access: `pip download llama-cpp-python==0.3.36 --no-deps --no-binary
:all:`, unpack, then in vendor/llama.cpp `cmake -B build -DLLAMA_CURL=OFF && cmake --build build -j
--target llama-server` (llama.cpp of 2026-10-01, which has qwen35/qwen35moe/qwen3next/glm4moe and MTP).

For each model, llama-server must load the file; its tokenizer must agree with nextn's; greedy
continuation of the same prompt tokens must agree token for token; and the top-5 log-probabilities
at every generated position must agree with nextn's (teacher-forced on llama.cpp's tokens). Then
llama-server's own MTP speculation (`--spec-type draft-mtp`) runs on the bundled file and on the
trunk-only file with the head-only file as `-md`: it must give llama.cpp's plain greedy text, and its
draft and acceptance counts are printed next to nextn's with a fixed k = 3 (equal counts mean equal
drafts). "demo" is the bundled model; the other names are tiny random models built on the spot.
"""

from __future__ import annotations

import argparse
import json
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import torch


from nextn.engine.engine import Engine
from nextn.gguf.tools import extract_mtp, strip_mtp
from nextn.models.loader import DEMO_MODEL
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn_dev.tiny import make_gguf

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line and run.\"\"\"\n"


class LlamaServer:
    def __init__(self, exe: str, model: Path, *extra: str):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.log = tempfile.NamedTemporaryFile("w+", suffix=".log", delete=False)
        self.proc = subprocess.Popen([exe, "-m", str(model), "--host", "127.0.0.1", "--port", str(self.port),
                                      "-c", "1024", "-np", "1", "-t", "2", "--no-warmup", "-ctk", "f32", "-ctv", "f32", *extra],
                                     stdout=self.log, stderr=subprocess.STDOUT)
        deadline = time.time() + 120
        while time.time() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"llama-server exited ({self.proc.returncode}):\n{self.tail()}")
            try:
                if self.get("/health").get("status") == "ok":
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"llama-server did not come up:\n{self.tail()}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(Path(self.log.name).read_text(errors="replace").splitlines()[-n:])

    def get(self, path: str) -> dict:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}{path}", timeout=10) as r:
            return json.loads(r.read())

    def post(self, path: str, body: dict) -> dict:
        req = urllib.request.Request(f"http://127.0.0.1:{self.port}{path}", json.dumps(body).encode(),
                                     {"Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=300) as r:
            return json.loads(r.read())

    def close(self):
        self.proc.terminate()
        self.proc.wait(30)


def greedy_body(prompt_ids: list[int], n: int, n_probs: int = 0) -> dict:
    return {"prompt": prompt_ids, "n_predict": n, "temperature": 0.0, "top_k": 1, "n_probs": n_probs,
            "return_tokens": True, "cache_prompt": False, "ignore_eos": True}


@torch.inference_mode()
def nextn_logprobs(engine: Engine, ids: list[int]) -> torch.Tensor:
    """Log-probabilities after every position of `ids`, one forward (teacher forcing)."""
    return torch.log_softmax(engine.model.score(torch.tensor([ids]))[0], -1)


def check_model(exe: str, path: Path, n: int, tmp: Path) -> bool:
    ok = True
    engine = Engine(model=str(path), spec="mtp", progress=False, cpu_matmul="blas",
                    ctx_size=1024)
    prompt_ids = engine.tokenizer.encode(PROMPT)
    ours = engine.generate(prompt_ids, SamplingParams(max_tokens=n, ignore_eos=True))
    srv = LlamaServer(exe, path)
    try:
        theirs_ids = srv.post("/tokenize", {"content": PROMPT, "add_special": False})["tokens"]
        same_tok = theirs_ids == prompt_ids
        print(f"  tokenizer: {'same' if same_tok else 'DIFFERENT'} ({len(prompt_ids)} tokens)")
        ok &= same_tok
        r = srv.post("/completion", greedy_body(prompt_ids, n, n_probs=5))
        theirs = r["tokens"]
        lp = nextn_logprobs(engine, prompt_ids + theirs)
        wtypes = sorted({t.tensor_type.name for t in engine.file.tensors.values() if len(t.shape) == 2})
        # F32 weights: both sides compute in float32 (llama.cpp's KV cache is set to F32 too) but with
        # other kernels and orders; llama.cpp multiplies F16/BF16/quantized weights with activations
        # rounded to 16 or 8 bits
        tol = 5e-3 if wtypes == ["F32"] else 2e-2
        agree = next((i for i, (a, b) in enumerate(zip(ours.tokens, theirs)) if a != b), min(len(theirs), n))
        if agree < n and ours.tokens[agree] in engine.tokenizer.eog_ids:
            # with ignore_eos nextn emits the end token and goes on; llama.cpp bans end tokens instead
            print(f"  greedy: {agree}/{n} tokens identical, then nextn emits an end token (llama.cpp bans "
                  f"them under ignore_eos)")
        elif agree < n:
            row = lp[len(prompt_ids) - 1 + agree]
            gap = abs(float(row[ours.tokens[agree]] - row[theirs[agree]]))
            print(f"  greedy: {agree}/{n} tokens identical, then a near-tie: nextn's and llama.cpp's picks "
                  f"differ by {gap:.1e} in log-probability")
            ok &= gap < tol
        else:
            print(f"  greedy: {n}/{n} tokens identical to nextn")
        worst, i, n_cmp = 0.0, 0, 0
        for step in r["completion_probabilities"]:
            # llama-server leaves out the entry of a token that ends inside a UTF-8 character: align by id
            while theirs[i] != step["id"]:
                i += 1
            for alt in step["top_logprobs"]:
                worst = max(worst, abs(alt["logprob"] - float(lp[len(prompt_ids) - 1 + i, alt["id"]])))
            i, n_cmp = i + 1, n_cmp + 1
        print(f"  top-5 log-probabilities: max |difference| {worst:.2e} over {n_cmp} positions "
              f"({'/'.join(wtypes)} weights, tolerance {tol:g})")
        ok &= worst < tol
    finally:
        srv.close()
    head, trunk = tmp / f"mtp-{path.stem}.gguf", tmp / f"{path.stem}-nomtp.gguf"
    extract_mtp(path, head)
    strip_mtp(path, trunk)
    fixed = engine.generate(prompt_ids, SamplingParams(max_tokens=n, ignore_eos=True),
                            spec=SpecConfig(draft_max=3, adaptive=False))
    for label, st in (("adaptive k", ours.stats), ("k = 3", fixed.stats)):
        print(f"  nextn MTP, {label}: drafted {st.n_draft_tokens}, accepted {st.n_accepted} "
              f"({st.acceptance_rate:.1%})")
    for label, model, extra in (("bundled", path, ()), ("trunk + -md head", trunk, ("-md", str(head)))):
        srv = LlamaServer(exe, model, "--spec-type", "draft-mtp", "--spec-draft-n-max", "3", *extra)
        try:
            r = srv.post("/completion", greedy_body(prompt_ids, n))
            t = r.get("timings", {})
            same = r["tokens"] == theirs
            acc = t.get("draft_n_accepted", 0) / max(t.get("draft_n", 0), 1)
            print(f"  llama.cpp draft-mtp, {label}: output {'same as its plain greedy' if same else 'DIFFERENT from its plain greedy'}, "
                  f"drafted {t.get('draft_n')}, accepted {t.get('draft_n_accepted')} ({acc:.1%})")
            ok &= same and t.get("draft_n", 0) > 0
        except Exception as e:
            print(f"  llama.cpp draft-mtp, {label}: FAILED {e}\n{srv.tail()}")
            ok = False
        finally:
            srv.close()
    return ok


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="path to llama.cpp's llama-server")
    ap.add_argument("--models", default="demo,qwen35,qwen35moe,qwen3next,glm4moe")
    ap.add_argument("-n", type=int, default=32)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models.split(","):
            path = DEMO_MODEL if name == "demo" else make_gguf(tmp / f"tiny-{name}.gguf", name, workdir=tmp / f"{name}.hf")
            print(f"{name}: {path.name}")
            try:
                results[name] = check_model(args.server, path, args.n, tmp=tmp)
            except Exception as e:
                print(f"  FAILED: {e}")
                results[name] = False
    print("\n" + "  ".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in results.items()))
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()

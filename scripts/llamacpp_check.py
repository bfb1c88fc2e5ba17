"""Check nextn against llama.cpp itself, both ways (CI has no llama.cpp; run by hand):

    python scripts/llamacpp_check.py --server path/to/llama-server --llama-dir path/to/llama.cpp \
        [--models demo,qwen35,qwen35moe,qwen3next,glm4moe] [-n 32]

A llama.cpp without internet access: `pip download llama-cpp-python==0.3.36 --no-deps --no-binary
:all:`, unpack, then in vendor/llama.cpp `cmake -B build -DLLAMA_CURL=OFF -DLLAMA_OPENSSL=OFF &&
cmake --build build -j2 --target llama-server llama-quantize`.

For each family a tiny random checkpoint in the shape its authors publish (nextn_dev/published.py):
- llama.cpp -> nextn: llama.cpp's own converter writes the GGUF (scripts/llamacpp_convert.py); nextn's
  greedy tokens on it, plain and with MTP (k = 3), must equal transformers' on the checkpoint.
- nextn -> llama.cpp: `nextn convert` writes the GGUF; llama-server must load it, tokenize alike, give
  nextn's greedy continuation and top-5 log-probabilities, and run its own MTP speculation
  (`--spec-type draft-mtp`) on the bundled file and on trunk-only + `-md mtp-*.gguf` with llama.cpp's
  plain greedy output; its draft and acceptance counts are printed next to nextn's with k = 3 (equal
  counts mean equal drafts).
"demo" is the bundled demo model (nextn's file) through the second direction only; the names of
nextn_dev.interop.ROPE_CASES (e.g. qwen35-yarn) are checkpoints with a RoPE context extension.
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
from nextn.engine.params import SamplingParams
from nextn.engine.sequence import SpecConfig
from nextn.gguf.convert import convert
from nextn.gguf.reader import open_gguf
from gguf import GGUFValueType

from nextn.gguf.tools import _copy_metadata, _copy_tensors, extract_mtp, strip_mtp
from nextn.gguf.writer import write_gguf
from nextn.models.loader import DEMO_MODEL
from nextn_dev.interop import ROPE_CASES
from nextn_dev.tiny import load_reference, make_checkpoint, scaled_rope

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
    engine = Engine(model=str(path), spec="mtp", progress=False, ctx_size=1024)
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
            # llama-server leaves out the entry of a token that ends inside a UTF-8 character (align by id),
            # and the entry that completes such a character carries the text of several tokens and
            # probabilities from another step: compare only entries that stand for their own token
            while theirs[i] != step["id"]:
                i += 1
            if step["token"] == engine.tokenizer.decode([step["id"]], skip_special=False):
                for alt in step["top_logprobs"]:
                    worst = max(worst, abs(alt["logprob"] - float(lp[len(prompt_ids) - 1 + i, alt["id"]])))
                n_cmp += 1
            i += 1
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


def llamacpp_convert(llama_dir: str, hf: Path, out: Path) -> Path:
    cmd = [sys.executable, str(Path(__file__).with_name("llamacpp_convert.py")), "--llama-dir", llama_dir,
           str(hf), "--outfile", str(out), "--outtype", "f32"]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"llama.cpp's converter failed:\n{proc.stderr[-2000:]}")
    return out


def check_llamacpp_file(llama_dir: str, hf: Path, n: int, tmp: Path) -> bool:
    """llama.cpp -> nextn: llama.cpp's conversion decodes in nextn as transformers decodes the checkpoint."""
    path = llamacpp_convert(llama_dir, hf, tmp / f"llamacpp-{hf.stem}.gguf")
    gf = open_gguf(path)
    if gf.arch == "mimo2":
        # llama.cpp writes MiMo's sliding_window_size as its n_swa, but masks keys n_swa or more positions back:
        # its windows hold one key fewer than the checkpoint's (transformers', SGLang's). nextn follows the file;
        # report it as written, then check it with the window the checkpoint was trained with
        key = "mimo2.attention.sliding_window"
        report(engine_on(path), hf, n, f"(as written, {key} = {gf.meta(key)})")
        path = write_gguf(tmp / f"llamacpp-{hf.stem}-window.gguf", gf.arch, lambda w: _copy_metadata(
            w, gf, {key: (gf.meta(key) + 1, GGUFValueType.UINT32, None)}, set()), _copy_tensors(list(gf.tensors.values())))
        print(f"  (with {key} = {gf.meta(key) + 1}, the checkpoint's window):")
    has_mtp = open_gguf(path).n_mtp > 0           # llama.cpp drops DeepSeek-V3's MTP layer (skip_mtp)
    return report(engine_on(path), hf, n)


def engine_on(path: Path) -> Engine:
    has_mtp = open_gguf(path).n_mtp > 0           # llama.cpp drops DeepSeek-V3's MTP layer (skip_mtp)
    return Engine(model=str(path), spec="mtp" if has_mtp else "none", progress=False, ctx_size=1024)


def report(engine: Engine, hf: Path, n: int, note: str = "") -> bool:
    prompt_ids = engine.tokenizer.encode(PROMPT)
    with torch.inference_mode():
        ref = load_reference(hf).generate(torch.tensor([prompt_ids]), max_new_tokens=n, do_sample=False,
                                          eos_token_id=None, pad_token_id=0)[0, len(prompt_ids):].tolist()
    params = SamplingParams(max_tokens=n, ignore_eos=True)
    plain = engine.generate(prompt_ids, params, spec=SpecConfig(draft_max=0))
    if engine.drafter is None:
        same = sum(a == b for a, b in zip(plain.tokens, ref))
        print(f"  llama.cpp's conversion (no MTP layer: its converter drops it) in nextn: greedy {same}/{n} tokens "
              f"equal transformers'")
        return same == n
    mtp = engine.generate(prompt_ids, params, spec=SpecConfig(draft_max=3, adaptive=False))
    same = [sum(a == b for a, b in zip(x.tokens, ref)) for x in (plain, mtp)]
    print(f"  llama.cpp's conversion {note + ' ' if note else ''}in nextn: greedy {same[0]}/{n} tokens equal "
          f"transformers' plain, {same[1]}/{n} with MTP (drafted {mtp.stats.n_draft_tokens}, accepted "
          f"{mtp.stats.n_accepted})")
    return same == [n, n] and mtp.stats.n_draft_tokens > 0


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--server", required=True, help="path to llama.cpp's llama-server")
    ap.add_argument("--llama-dir", required=True, help="llama.cpp source tree (for its converter)")
    ap.add_argument("--models", default="demo,qwen35,qwen35moe,qwen3next,glm4moe")
    ap.add_argument("-n", type=int, default=32)
    args = ap.parse_args()
    results = {}
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for name in args.models.split(","):
            print(f"{name}:")
            try:
                if name == "demo":
                    results[name] = check_model(args.server, DEMO_MODEL, args.n, tmp=tmp)
                    continue
                arch, rope = ROPE_CASES[name] if name in ROPE_CASES else (name, None)
                hf = make_checkpoint(tmp / f"{name}.hf", arch, published=True,
                                     rope=scaled_rope(arch, **rope) if rope else None)
                there = check_llamacpp_file(args.llama_dir, hf, args.n, tmp)
                ours = convert(hf, tmp / f"nextn-{name}.gguf", outtype="f32", progress=False)
                print("  nextn's conversion in llama.cpp:")
                results[name] = there & check_model(args.server, ours, args.n, tmp=tmp)
            except Exception as e:
                print(f"  FAILED: {e}")
                results[name] = False
    print("\n" + "  ".join(f"{k}: {'ok' if v else 'FAIL'}" for k, v in results.items()))
    sys.exit(0 if all(results.values()) else 1)


if __name__ == "__main__":
    main()

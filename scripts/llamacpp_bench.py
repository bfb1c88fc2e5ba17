"""nextn against llama.cpp's llama-server on the same GGUF files, same threads, runs interleaved.

    python scripts/llamacpp_bench.py --server path/to/llama-server MODEL.gguf [MODEL2.gguf ...] \\
        [--threads 1,2] [-n 64] [--repeats 3] [--nextn none,none@int8,mtp:3,mtp:auto] [--llama-mtp] [--json out.json]
    [--prompt-file FILE [--prompt-chars N]]   (a long prompt: prefill speed, the `prompt` column)

For each file and thread count: llama-server starts once (greedy, --no-warmup, one slot), nextn runs
as `nextn generate --json` in a fresh process per measurement (its load is not timed; decode tok/s and
the process's peak RSS are). Each repeat runs llama.cpp, then each nextn configuration, so drift in
machine speed hits every engine alike; the table gives medians. `--llama-mtp` adds llama.cpp's own
MTP speculation (`--spec-type draft-mtp --spec-draft-n-max 3`). The bandwidth limit is the weight
bytes a plain decode step reads (every tensor but the embedding; of expert stacks, the share of the
experts a token is routed to) divided into what this machine reads
per second (a torch sum over 1 GiB with the same threads).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from llamacpp_check import LlamaServer

PROMPT = "import os\nimport sys\n\n\ndef main(argv):\n    \"\"\"Parse the command line and run.\"\"\"\n"


def bandwidth(threads: int) -> float:
    """Bytes per second one torch sum over 1 GiB reads, with this many threads."""
    code = ("import torch, time; torch.set_num_threads(%d); x = torch.ones(1 << 28); x.sum(); t = time.perf_counter(); "
            "[x.sum() for _ in range(8)]; print(8 * 4 * x.numel() / (time.perf_counter() - t))") % threads
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def bytes_per_token(path: Path) -> int:
    from nextn.gguf.reader import open_gguf
    from nextn.gguf.forms import is_mtp_tensor

    gf = open_gguf(path)
    used = gf.arch_meta("expert_used_count", 0) / max(gf.arch_meta("expert_count", 0), 1)   # MoE: the routed experts only

    def read(name: str, t) -> float:
        return t.n_bytes * used if "_exps." in name else t.n_bytes
    return int(sum(read(n, t) for n, t in gf.tensors.items() if n != "token_embd.weight" and not is_mtp_tensor(gf, n)) +
               (gf.tensors["token_embd.weight"].n_bytes if "output.weight" not in gf.tensors else 0))


def run_nextn(path: Path, threads: int, n: int, spec: str) -> tuple[float, float, dict]:
    """(decode tok/s, peak RSS in MB, timings) of one `nextn generate` process. `spec`: none, mtp:K, mtp:auto,
    ngram or mtp+ngram[:K], optionally with @int8 / @exact (`--kernels`)."""
    spec, _, kernels = spec.partition("@")
    cmd = [sys.executable, "-m", "nextn", "generate", "-m", str(path), "-p", PROMPT, "-n", str(n), "--ignore-eos",
           "--temp", "0", "--repeat-penalty", "1",   # greedy as llama.cpp here, not the file's recommended sampling
           "--json", "-q", "-t", str(threads), "-c", "4096"]
    if kernels:
        cmd += ["--kernels", kernels]
    drafters, _, k = spec.partition(":")
    cmd += ["--spec", drafters]
    if k and k != "auto":
        cmd += ["--draft-max", k, "--no-adaptive"]
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(cmd, stdout=out, stderr=err, env={**os.environ, "OMP_NUM_THREADS": str(threads)})
        _, status, usage = os.wait4(proc.pid, 0)      # this child's own resource usage
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0), err.seek(0)
        if proc.returncode != 0:
            raise RuntimeError(f"nextn failed: {err.read().decode()[-2000:]}")
        timings = json.loads(out.read())["timings"]
    return timings["tokens_per_second"], usage.ru_maxrss / 1024, timings


def vm_hwm(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def run_llama(srv: LlamaServer, n: int) -> tuple[float, dict]:
    body = {"prompt": PROMPT, "n_predict": n, "temperature": 0.0, "top_k": 1, "cache_prompt": False,
            "ignore_eos": True}
    t = srv.post("/completion", body)["timings"]
    return t["predicted_per_second"], t


def bench(exe: str, path: Path, threads: int, n: int, repeats: int, configs: list[str], llama_mtp: bool) -> dict:
    extra = ["-t", str(threads), "-tb", str(threads), "-c", "4096", "-ctk", "f16", "-ctv", "f16"]
    servers = {"llama.cpp": LlamaServer(exe, path, *extra)}
    if llama_mtp:
        servers["llama.cpp mtp:3"] = LlamaServer(exe, path, *extra, "--spec-type", "draft-mtp", "--spec-draft-n-max", "3")
    rates = {name: [] for name in [*servers, *(f"nextn {c}" for c in configs)]}
    prompt_rates = {name: [] for name in rates}
    rss, details = {}, {}
    try:
        for srv in servers.values():
            run_llama(srv, 8)
        for _ in range(repeats):
            for name, srv in servers.items():
                r, t = run_llama(srv, n)
                rates[name].append(r)
                prompt_rates[name].append(t["prompt_per_second"])
                details[name] = t
            for c in configs:
                r, mb, t = run_nextn(path, threads, n, c)
                rates[f"nextn {c}"].append(r)
                prompt_rates[f"nextn {c}"].append(t["prompt_tokens_per_second"])
                rss[f"nextn {c}"] = max(rss.get(f"nextn {c}", 0.0), mb)
                details[f"nextn {c}"] = t
        for name, srv in servers.items():
            rss[name] = vm_hwm(srv.proc.pid)
    finally:
        for srv in servers.values():
            srv.close()
    return {"rates": {k: statistics.median(v) for k, v in rates.items()}, "all": rates, "rss_mb": rss, "timings": details,
            "prompt_rates": {k: statistics.median(v) for k, v in prompt_rates.items()}}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--server", required=True)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("-n", type=int, default=64)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--nextn", default="none", help="nextn configurations: none, mtp:K, mtp:auto, ngram, mtp+ngram[:K], each optionally "
                                           "@int8 / @exact (comma list)")
    ap.add_argument("--llama-mtp", action="store_true", help="also llama.cpp's own MTP speculation")
    ap.add_argument("--json", default=None)
    ap.add_argument("--prompt-file", default=None, help="the prompt's text (default: a short code prompt)")
    ap.add_argument("--prompt-chars", type=int, default=None, help="only the first N characters of --prompt-file")
    args = ap.parse_args()
    if args.prompt_file:
        global PROMPT
        PROMPT = Path(args.prompt_file).read_text()[:args.prompt_chars]
    configs = args.nextn.split(",")
    results = []
    for threads in [int(t) for t in args.threads.split(",")]:
        bw = bandwidth(threads)
        for model in args.models:
            path = Path(model)
            r = bench(args.server, path, threads, args.n, args.repeats, configs, args.llama_mtp)
            limit = bw / bytes_per_token(path)
            r.update(model=path.name, size_gb=round(path.stat().st_size / 1e9, 2), threads=threads,
                     bandwidth_gbs=round(bw / 1e9, 1), limit_tok_s=round(limit, 1))
            results.append(r)
            base = r["rates"]["llama.cpp"]
            print(f"\n{path.name} ({r['size_gb']} GB), {threads} thread(s); bandwidth {bw / 1e9:.1f} GB/s, "
                  f"plain-decode limit {limit:.1f} tok/s")
            for name, rate in r["rates"].items():
                print(f"  {name:<18} {rate:8.2f} tok/s  {rate / base:5.2f}x llama.cpp  {rate / limit:5.1%} of limit  "
                      f"peak RSS {r['rss_mb'].get(name, float('nan')):7.0f} MB  prompt {r['prompt_rates'][name]:8.1f} tok/s "
                      f"({r['prompt_rates'][name] / r['prompt_rates']['llama.cpp']:.2f}x)", flush=True)
    if args.json:
        Path(args.json).write_text(json.dumps({"results": results, "command": " ".join(sys.argv),
                                               "time": time.strftime("%Y-%m-%d %H:%M")}, indent=1))


if __name__ == "__main__":
    sys.path.insert(0, str(Path(__file__).parent))
    main()

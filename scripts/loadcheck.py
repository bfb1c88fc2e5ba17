"""Load check for `nextn serve`: N concurrent streaming clients on loopback, bounded in requests.

Starts a server on a free 127.0.0.1 port (or uses --url), sends --requests streaming completions
from --clients concurrent clients, and reports throughput, time-to-first-token and latency
percentiles, and the speculative acceptance read from /metrics.

    python scripts/loadcheck.py --clients 8 --requests 32 --max-tokens 128 --spec mtp
    python scripts/loadcheck.py --spec both          # MTP on and off, one after the other
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import statistics
import subprocess
import sys
import time

import httpx

from nextn.prompts import PROMPTS


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def metrics(url: str) -> dict:
    out = {}
    for line in httpx.get(url + "/metrics").text.splitlines():
        if line.startswith("nextn:") and " " in line:
            name, value = line.rsplit(" ", 1)
            out[name] = float(value)
    return out


async def one(client: httpx.AsyncClient, prompt: str, max_tokens: int, temperature: float) -> dict:
    t0 = time.perf_counter()
    first, chunks, arrivals = None, 0, []
    body = {"prompt": prompt, "max_tokens": max_tokens, "temperature": temperature, "stream": True,
            "ignore_eos": True, "stream_options": {"include_usage": True}}
    tokens = 0
    async with client.stream("POST", "/v1/completions", json=body) as resp:
        resp.raise_for_status()
        async for line in resp.aiter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]":
                continue
            data = json.loads(line[6:])
            now = time.perf_counter()
            if data.get("usage"):
                tokens = data["usage"]["completion_tokens"]
            if data["choices"] and data["choices"][0]["text"]:
                first = first or now
                arrivals.append(now)
                chunks += 1
    end = time.perf_counter()
    return {"ttft": (first or end) - t0, "latency": end - t0, "tokens": tokens, "chunks": chunks}


async def run_load(url: str, clients: int, requests: int, max_tokens: int, temperature: float) -> dict:
    prompts = [p for group in PROMPTS.values() for p in group]
    queue = list(range(requests))
    results = []

    async def worker(client):
        while queue:
            i = queue.pop()
            results.append(await one(client, prompts[i % len(prompts)], max_tokens, temperature))

    async with httpx.AsyncClient(base_url=url, timeout=600) as client:
        t0 = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(clients)))
        wall = time.perf_counter() - t0
    return {"wall": wall, "results": results}


def pct(values, p):
    values = sorted(values)
    return values[min(len(values) - 1, int(round(p / 100 * (len(values) - 1))))]


def report(label: str, load: dict, before: dict, after: dict) -> dict:
    res = load["results"]
    tokens = sum(r["tokens"] for r in res)
    drafted = after.get("nextn:spec_decode_num_draft_tokens_total", 0) - before.get("nextn:spec_decode_num_draft_tokens_total", 0)
    accepted = after.get("nextn:spec_decode_num_accepted_tokens_total", 0) - before.get("nextn:spec_decode_num_accepted_tokens_total", 0)
    out = {
        "config": label, "requests": len(res), "generated_tokens": tokens, "wall_s": round(load["wall"], 2),
        "throughput_tok_s": round(tokens / load["wall"], 1),
        "per_request_tok_s_median": round(statistics.median(r["tokens"] / r["latency"] for r in res), 1),
        "ttft_ms": {p: round(pct([r["ttft"] for r in res], p) * 1000, 1) for p in (50, 90, 99)},
        "latency_s": {p: round(pct([r["latency"] for r in res], p), 2) for p in (50, 90, 99)},
        "acceptance_rate": round(accepted / drafted, 3) if drafted else None,
    }
    print(json.dumps(out))
    return out


def serve(args, spec: str):
    port = free_port()
    cmd = [sys.executable, "-m", "nextn", "serve", "--host", "127.0.0.1", "--port", str(port), "--parallel",
           str(args.parallel), "--spec", spec, "--log-level", "warning"] + (["-m", args.model] if args.model else [])
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.3)
    proc.kill()
    raise SystemExit(f"server did not start: {proc.stderr.read()}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--url", default=None, help="an already running server (loopback)")
    ap.add_argument("-m", "--model", default=None)
    ap.add_argument("--spec", default="both", choices=["mtp", "none", "both"])
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--parallel", type=int, default=8)
    ap.add_argument("--requests", type=int, default=32)
    ap.add_argument("--max-tokens", type=int, default=96)
    ap.add_argument("--temperature", type=float, default=0.0)
    args = ap.parse_args()
    if args.url and not args.url.startswith(("http://127.0.0.1", "http://localhost")):
        raise SystemExit("the load check only talks to loopback servers")
    summaries = []
    for spec in (["mtp", "none"] if args.spec == "both" else [args.spec]):
        proc, url = (None, args.url) if args.url else serve(args, spec)
        try:
            before = metrics(url)
            load = asyncio.run(run_load(url, args.clients, args.requests, args.max_tokens, args.temperature))
            summaries.append(report(spec, load, before, metrics(url)))
        finally:
            if proc:
                proc.terminate()
                proc.wait(timeout=30)
    if len(summaries) == 2:
        print(f"throughput MTP / plain: {summaries[0]['throughput_tok_s'] / summaries[1]['throughput_tok_s']:.2f}x")


if __name__ == "__main__":
    main()

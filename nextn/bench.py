"""`nextn bench`: plain vs MTP decoding, every configuration in one process on the same prompts.

Reports tokens/s, speedup over plain, acceptance (overall and per draft position), mean accepted
length, the ideal speedup implied by the measured acceptance and draft cost, and peak memory.
Prints a table, writes JSON, and draws a PNG chart.
"""

from __future__ import annotations

import json
import os
import platform
import resource
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from .engine.config import EngineConfig
from .engine.engine import Engine
from .engine.params import SamplingParams
from .engine.sequence import SpecConfig, model_drafter_of, parse_spec
from .engine.stats import SpecStats
from .engine.tuner import KTuner
from .errors import NextnError
from .models import loader
from .prompts import load_prompts


@dataclass
class BenchConfig:
    name: str
    spec: SpecConfig
    draft_vocab: int = 0


def parse_configs(text: str, draft_max: int = 3) -> list[BenchConfig]:
    """none, mtp:K, mtp:auto, ngram, draft:K (--model-draft), mtp+ngram[:K]...; '@vN' after an MTP entry
    drafts over N token ids."""
    out = []
    for item in [s.strip() for s in text.split(",") if s.strip()]:
        base, _, vocab = item.partition("@v")
        drafters, _, k = base.partition(":")
        bad = ValueError(f"bad --spec entry {item!r}: use none, mtp:K, mtp:auto, ngram, draft:K, mtp+ngram[:K] or "
                         f"draft+ngram[:K], mtp entries optionally @vN (MTP over N token ids)")
        try:
            names = parse_spec(drafters)
        except ValueError:
            raise bad from None
        model = model_drafter_of(names, 1)
        if (k and (model is None or not (k == "auto" or k.isdigit() and 0 < int(k) <= 16))
                or vocab and (not vocab.isdigit() or "mtp" not in names)):
            raise bad
        if not names:
            out.append(BenchConfig("none", SpecConfig(draft_max=0, drafters=())))
            continue
        fixed = k.isdigit()
        name = base if k or model is None else base + ":auto"
        out.append(BenchConfig(name + (f"@v{vocab}" if vocab else ""),
                               SpecConfig(draft_max=int(k) if fixed else draft_max, adaptive=not fixed,
                                          drafters=names), int(vocab or 0)))
    if not any(c.name == "none" for c in out):
        out.insert(0, BenchConfig("none", SpecConfig(draft_max=0, drafters=())))   # speedups need the plain baseline
    return out


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def run(engines: dict[str, Engine], configs: list[BenchConfig], prompts: dict[str, list[str]],
        params: SamplingParams, repeats: int = 1, progress: bool = True) -> dict:
    """engines: one per configuration, each with its own tuner. "none" runs on an engine loaded without
    MTP, so the baseline pays for nothing MTP needs; the MTP configurations share one loaded model."""
    total = len(configs) * sum(len(v) for v in prompts.values()) * repeats
    bar = tqdm(total=total, desc="bench", disable=not progress, file=sys.stderr)
    for engine in engines.values():
        engine.generate(next(iter(prompts.values()))[0], SamplingParams(max_tokens=8))   # warm-up
    # interleave configurations prompt by prompt, so that drift in machine speed hits all of them alike
    stats = {c.name: {t: SpecStats() for t in prompts} for c in configs}
    peak_cuda = {c.name: 0.0 for c in configs}
    for _ in range(repeats):
        for ptype, plist in prompts.items():
            for prompt in plist:
                for cfg in configs:
                    engine = engines[cfg.name]
                    if engine.device_is_cuda:
                        torch.cuda.reset_peak_memory_stats()
                    bar.set_postfix_str(f"{cfg.name} {ptype}")
                    stats[cfg.name][ptype].merge(engine.generate(prompt, params, spec=cfg.spec).stats)
                    if engine.device_is_cuda:
                        peak_cuda[cfg.name] = max(peak_cuda[cfg.name], torch.cuda.max_memory_allocated() / 2**20)
                    bar.update()
    results = {}
    for cfg in configs:
        engine = engines[cfg.name]
        costs = engine.tuner.costs
        verify = costs.trunk[(1, cfg.spec.draft_max + 1)].value if (1, cfg.spec.draft_max + 1) in costs.trunk else None
        results[cfg.name] = {"stats": stats[cfg.name], "draft_seconds": costs.draft_cost(1), "verify_seconds": verify,
                             "peak_rss_mb": peak_rss_mb(), "engine_mb": engine.memory_bytes() / 2**20,
                             "peak_cuda_mb": peak_cuda[cfg.name] if engine.device_is_cuda else None}
    bar.close()
    return summarize(results, configs)


def summarize(results: dict, configs: list[BenchConfig]) -> dict:
    plain = results["none"]["stats"]
    plain_step = results["none"]["verify_seconds"]
    rows = []
    for cfg in configs:
        r = results[cfg.name]
        for ptype, st in list(r["stats"].items()) + [("all", _merged(r["stats"]))]:
            base = plain[ptype] if ptype != "all" else _merged(plain)
            plain_step = base.decode_seconds / max(base.n_steps, 1)
            c = (r["draft_seconds"] or 0.0) / plain_step if plain_step else 0.0
            tok_step = (st.n_steps + st.n_accepted) / max(st.n_steps, 1)   # tokens per decode step
            drafts_step = st.n_draft_tokens / max(st.n_steps, 1)
            rows.append({
                "config": cfg.name, "prompts": ptype, "tokens": st.n_generated,
                "tokens_per_second": round(st.tokens_per_second, 2),
                "speedup": round(st.tokens_per_second / base.tokens_per_second, 3) if base.tokens_per_second else None,
                "acceptance_rate": round(st.acceptance_rate, 4),
                "mean_accepted_length": round(st.mean_accepted_length, 3),
                "acceptance_per_position": [round(a, 3) for a in st.acceptance_per_position],
                "tokens_per_step": round(tok_step, 3), "drafts_per_step": round(drafts_step, 3),
                "draft_cost_ratio": round(c, 4),
                "verify_cost_ratio": (round(r["verify_seconds"] / plain_step, 3)
                                      if r["verify_seconds"] and plain_step and not cfg.spec.adaptive else None),
                "ideal_speedup": round(tok_step / (1 + c * drafts_step), 3),
                "peak_rss_mb": round(r["peak_rss_mb"], 1), "engine_mb": round(r["engine_mb"], 1),
                "peak_cuda_mb": round(r["peak_cuda_mb"], 1) if r["peak_cuda_mb"] is not None else None,
                "step_ms": st.step_ms,
            })
    return {"rows": rows}


def _merged(by_type: dict) -> SpecStats:
    out = SpecStats()
    for st in by_type.values():
        out.merge(st)
    return out


def table(summary: dict) -> str:
    w = max([9] + [len(r["config"]) for r in summary["rows"]])
    head = (f"{'config':<{w}} {'prompts':<9} {'tok/s':>8} {'speedup':>8} {'ideal':>6} {'accept':>7} "
            f"{'mean len':>8} {'draft/plain':>11} {'per position':<22} {'weights+cache MB':>16}")
    lines = [head, "-" * len(head)]
    for r in summary["rows"]:
        per = " ".join(f"{a:.2f}" for a in r["acceptance_per_position"]) or "-"
        lines.append(f"{r['config']:<{w}} {r['prompts']:<9} {r['tokens_per_second']:>8.1f} {r['speedup']:>7.2f}x "
                     f"{r['ideal_speedup']:>5.2f}x {r['acceptance_rate']:>7.1%} {r['mean_accepted_length']:>8.2f} "
                     f"{r['draft_cost_ratio']:>11.3f} {per:<22} {r['peak_cuda_mb'] or r['engine_mb']:>16.1f}")
    parts = ("draft", "catch_up", "verify", "commit", "other")
    head = f"{'config':<{w}} {'ms per decode step:':<20}" + "".join(f"{p:>9}" for p in parts) + f"{'total':>9}"
    lines += ["", head, "-" * len(head)]
    for r in summary["rows"]:
        if r["prompts"] == "all":
            ms = r["step_ms"]
            lines.append(f"{r['config']:<{w}} {'':<20}" + "".join(f"{ms[p]:>9.3f}" for p in parts)
                         + f"{sum(ms.values()):>9.3f}")
    return "\n".join(lines)


def chart(summary: dict, path: str | Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in summary["rows"] if r["prompts"] != "all"]
    configs = list(dict.fromkeys(r["config"] for r in rows))
    types = list(dict.fromkeys(r["prompts"] for r in rows))
    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2))
    width = 0.8 / len(types)
    for i, t in enumerate(types):
        xs = [j + i * width for j in range(len(configs))]
        get = {r["config"]: r for r in rows if r["prompts"] == t}
        axes[0].bar(xs, [get[c]["speedup"] for c in configs], width, label=t)
        axes[1].bar(xs, [get[c]["acceptance_rate"] if c != "none" else 0 for c in configs], width, label=t)
    for ax, label in zip(axes, ("speedup over plain decoding (x)", "draft acceptance rate")):
        ax.set_xticks([j + 0.4 - width / 2 for j in range(len(configs))], configs)
        ax.set_ylabel(label)
        ax.grid(axis="y", alpha=0.3)
    axes[0].axhline(1.0, color="black", linewidth=0.8)
    axes[0].legend(title="prompts", fontsize=8)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def add_args(p) -> None:
    p.add_argument("--spec", dest="configs", default="none,mtp:1,mtp:2,mtp:3,mtp:auto",
                   help="comma list of none, mtp:K, mtp:auto, ngram, mtp+ngram[:K]; mtp entries may end in @vN "
                        "(drafts over N token ids, e.g. mtp:3@v32768) (default: none,mtp:1,mtp:2,mtp:3,mtp:auto)")
    p.add_argument("--prompts", default="code,math,chat,creative", help="prompt types, or a .json/.txt file")
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--temp", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json-out", default=None, help="write every figure to this JSON file")
    p.add_argument("--png", default=None, help="also draw speedup and acceptance to this PNG")
    p.add_argument("-q", "--quiet", action="store_true")


def make_engines(args, configs: list[BenchConfig]) -> dict[str, Engine]:
    """One engine per configuration with its own tuner; the speculative ones share one loaded model (a draft
    vocabulary gets a view of it with its own MTP head rows)."""
    base = dict(progress=not args.quiet, model_draft=None)
    plain = EngineConfig.from_args(args, spec="none", mtp_layers=0, **base)
    engines = {"none": Engine(plain, tuner=KTuner(0))}
    spec = [c for c in configs if c.spec.draft_max > 0]
    if spec:
        k_max = max(c.spec.draft_max for c in spec)
        # one load for every speculative configuration: under --tp, draft vocabularies need the head whole on rank 0
        apart = args.tp > 1 and args.tp_mtp == "auto" and any(c.draft_vocab for c in spec)
        loaded = Engine.load(EngineConfig.from_args(args, spec="mtp", draft_max=k_max, draft_vocab=0, **base,
                                                    **({"tp_mtp": "rank0"} if apart else {})))
        for c in spec:
            if "draft" in c.spec.drafters and not args.model_draft:
                raise NextnError(f"--spec {c.name}: give the draft model with --model-draft")
            cfg = EngineConfig.from_args(args, spec="+".join(c.spec.drafters), draft_max=k_max,
                                         draft_vocab=c.draft_vocab, progress=not args.quiet,
                                         mtp_layers=args.mtp_layers if "mtp" in c.spec.drafters else 0,
                                         model_draft=args.model_draft if "draft" in c.spec.drafters else None)
            engines[c.name] = Engine(cfg, tuner=KTuner(c.spec.draft_max, c.spec.draft_min, ngram_max=cfg.ngram_max),
                                     loaded=loader.with_draft_vocab(loaded, cfg))
    return engines


def main(args) -> int:
    configs = parse_configs(args.configs, args.draft_max)
    prompts = load_prompts(args.prompts)
    engines = make_engines(args, configs)
    engine = engines[configs[-1].name]
    params = SamplingParams(max_tokens=args.max_tokens, temperature=args.temp, seed=args.seed, ignore_eos=True)
    t0 = time.time()
    summary = run(engines, configs, prompts, params, args.repeats, progress=not args.quiet)
    summary["setup"] = {
        "model": str(engine.file.path), "device": str(engine.model.device), "dtype": str(engine.model.dtype),
        "threads": torch.get_num_threads(), "machine": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(), "torch": torch.__version__, "max_tokens": args.max_tokens,
        "temperature": args.temp, "repeats": args.repeats, "seconds": round(time.time() - t0, 1),
        "command": " ".join(sys.argv),
    }
    print(table(summary))
    if args.json_out:
        Path(args.json_out).write_text(json.dumps(summary, indent=1))
    if args.png:
        chart(summary, args.png, f"{engine.file.path.name} on {summary['setup']['device']} "
                                 f"({summary['setup']['threads']} threads), greedy, {args.max_tokens} tokens")
    written = [x for x in (args.json_out, args.png) if x]
    if written:
        print(f"wrote {' and '.join(written)}", file=sys.stderr)
    return 0

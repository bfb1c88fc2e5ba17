"""`nextn` command line: generate, serve, bench, convert, gguf."""

from __future__ import annotations

import argparse
import json
import sys

from .errors import NextnError


def add_model_args(p: argparse.ArgumentParser, spec_flag: bool = True) -> None:
    p.add_argument("-m", "--model", default=None, help="GGUF model (default: the bundled demo model)")
    p.add_argument("--mtp-model", default=None, help="separate MTP head GGUF (head-only, like mmproj)")
    if spec_flag:
        p.add_argument("--spec", default="mtp", choices=["mtp", "none"], help="speculative decoding (default: mtp)")
    p.add_argument("--draft-max", type=int, default=3, help="most draft tokens per step (default 3)")
    p.add_argument("--draft-min", type=int, default=0, help="verify drafts only when at least this many")
    p.add_argument("--draft-p-min", type=float, default=0.0, help="stop drafting below this draft probability")
    p.add_argument("--no-adaptive", action="store_true", help="always draft --draft-max tokens")
    p.add_argument("-c", "--ctx-size", type=int, default=4096)
    p.add_argument("--prefill-chunk", type=int, default=512)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
    p.add_argument("--dtype", default=None, choices=["f32", "f16", "bf16"])
    p.add_argument("--cpu-matmul", default=None, choices=["dual", "onednn", "blas"],
                   help="CPU weight layout: dual (BLAS + oneDNN, default with MTP), onednn or blas (half the memory)")


def engine_config(args, **over):
    from .engine import EngineConfig

    fields = dict(model=args.model, mtp_model=args.mtp_model, spec=getattr(args, "spec", "mtp"),
                  draft_max=args.draft_max, draft_min=args.draft_min, draft_p_min=args.draft_p_min,
                  adaptive=not args.no_adaptive, ctx_size=args.ctx_size, prefill_chunk=args.prefill_chunk,
                  device=args.device, dtype=args.dtype, cpu_matmul=args.cpu_matmul)
    fields.update(over)
    return EngineConfig(**fields)


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--temp", type=float, default=0.0, help="temperature (0 = greedy)")
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--min-p", type=float, default=0.0)
    p.add_argument("--repeat-penalty", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ignore-eos", action="store_true")


def sampling_params(args):
    from .sampling import SamplingParams

    return SamplingParams(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                          repetition_penalty=args.repeat_penalty, seed=args.seed, max_tokens=args.max_tokens,
                          ignore_eos=args.ignore_eos)


def cmd_generate(args) -> int:
    from .engine import Engine

    prompt = args.prompt
    if args.file:
        with open(args.file, encoding="utf-8") as f:
            prompt = f.read()
    if prompt is None:
        prompt = "def fibonacci(n):\n"
    engine = Engine(engine_config(args, progress=not args.quiet))
    messages = [{"role": "user", "content": prompt}] if args.chat else None
    out = sys.stdout
    if not args.json:
        out.write(prompt if not args.chat else "")
    result = engine.generate(None if args.chat else prompt, sampling_params(args), messages=messages,
                             on_text=None if args.json else lambda t: (out.write(t), out.flush()))
    t = result.timings
    if args.json:
        json.dump({"text": result.text, "tokens": result.tokens, "finish_reason": result.finish_reason,
                   "timings": t}, out)
        out.write("\n")
        return 0
    out.write("\n")
    line = (f"[{t['generated_tokens']} tokens, {t['tokens_per_second']:.1f} tok/s, prompt {t['prompt_tokens']} tokens "
            f"at {t['prompt_tokens_per_second']:.0f} tok/s")
    if engine.mtp_enabled:
        per_pos = " ".join(f"{a:.2f}" for a in t["acceptance_per_position"])
        line += (f"; MTP: {t['draft_tokens']} drafted, {t['accepted_tokens']} accepted "
                 f"({t['acceptance_rate']:.1%}), mean accepted length {t['mean_accepted_length']:.2f}, "
                 f"per position [{per_pos}]")
    print(line + "]", file=sys.stderr)
    return 0


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nextn", description="MTP speculative decoding engine for GGUF models")
    sub = ap.add_subparsers(dest="cmd", required=True)

    g = sub.add_parser("generate", help="generate text from a prompt")
    add_model_args(g)
    add_sampling_args(g)
    g.add_argument("-p", "--prompt", default=None)
    g.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    g.add_argument("--json", action="store_true", help="print one JSON object with text and timings")
    g.add_argument("-q", "--quiet", action="store_true", help="no loading progress bar")
    g.set_defaults(func=cmd_generate)

    from . import bench, gguf_tools, server
    from .convert import MODES, OUTTYPES

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    add_model_args(s)
    server.add_args(s)
    s.set_defaults(func=server.main)

    b = sub.add_parser("bench", help="plain vs MTP decoding across prompt types")
    add_model_args(b, spec_flag=False)
    bench.add_args(b)
    b.set_defaults(func=bench.main)

    c = sub.add_parser("convert", help="Hugging Face checkpoint -> GGUF")
    c.add_argument("hf_dir")
    c.add_argument("-o", "--out", required=True)
    c.add_argument("--outtype", default="f16", choices=list(OUTTYPES))
    form = c.add_mutually_exclusive_group()
    form.add_argument("--mtp", action="store_true", help="write only the MTP head (file name gets an mtp- prefix)")
    form.add_argument("--no-mtp", action="store_true", help="write the trunk without the MTP head")
    c.add_argument("--keep-mtp-precision", action="store_true", help="keep MTP tensors at q8_0 or better")
    c.set_defaults(func=lambda a: _convert(a, MODES))

    gguf_tools.add_parser(sub)
    return ap


def _convert(args, modes) -> int:
    from .convert import convert

    mode = "mtp" if args.mtp else "no-mtp" if args.no_mtp else "bundled"
    out = convert(args.hf_dir, args.out, outtype=args.outtype, mode=mode, keep_mtp_precision=args.keep_mtp_precision)
    print(f"wrote {out} ({out.stat().st_size / 1e6:.1f} MB, {mode})")
    return 0


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args) or 0
    except NextnError as e:
        print(f"nextn: error: {e}", file=sys.stderr)
        return 1
    except ValueError as e:
        print(f"nextn: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

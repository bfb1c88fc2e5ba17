"""`nextn` command line: generate, serve, bench, convert, gguf."""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import asdict

from .errors import NextnError


def add_sampling_args(p: argparse.ArgumentParser) -> None:
    unset = " (default: the model's recommended value, else %s)"
    p.add_argument("-n", "--max-tokens", type=int, default=128)
    p.add_argument("--temp", type=float, default=None, help="temperature, 0 = greedy" + unset % "0")
    p.add_argument("--top-k", type=int, default=None, help="0 = off" + unset % "0")
    p.add_argument("--top-p", type=float, default=None, help=unset % "1" )
    p.add_argument("--min-p", type=float, default=None, help=unset % "0")
    p.add_argument("--repeat-penalty", type=float, default=None, help="1 = off" + unset % "1")
    p.add_argument("--repeat-last-n", type=int, default=None, help="tokens the penalties look back at, -1 = all" + unset % "-1")
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ignore-eos", action="store_true")
    p.add_argument("--json-schema", default=None, metavar="SCHEMA",
                   help="constrain the reply to JSON matching this schema: JSON text, or a file holding it "
                        "('{}': any JSON value, '{\"type\": \"object\"}': any object)")


def json_schema(value: str | None):
    """--json-schema: inline JSON text, else the path of a file holding it."""
    if value is None:
        return None
    text = value
    if not value.lstrip().startswith(("{", "true")):
        try:
            with open(value, encoding="utf-8") as f:
                text = f.read()
        except OSError as e:
            raise NextnError(f"--json-schema {value}: neither JSON text nor a readable file ({e.strerror})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise NextnError(f"--json-schema: not valid JSON ({e.msg} at line {e.lineno} column {e.colno})") from None


def sampling_params(args, engine):
    """The request's sampling parameters over the model's recommended ones; engine None: only check the
    values given (before the model loads)."""
    given = dict(temperature=args.temp, top_k=args.top_k, top_p=args.top_p, min_p=args.min_p,
                 repetition_penalty=args.repeat_penalty, penalty_last_n=args.repeat_last_n, seed=args.seed,
                 max_tokens=args.max_tokens, ignore_eos=args.ignore_eos, json_schema=json_schema(args.json_schema))
    if engine is None:
        from .engine.params import SamplingParams

        return SamplingParams.with_defaults({}, **given)
    return engine.sampling_params(**given)


def cmd_generate(args) -> int:
    from .engine.config import EngineConfig
    from .engine.engine import Engine

    prompt = args.prompt
    if args.file:
        try:
            with open(args.file, encoding="utf-8") as f:
                prompt = f.read()
        except OSError as e:
            raise NextnError(f"-f {args.file}: cannot read ({e.strerror})") from None
        except UnicodeDecodeError as e:
            raise NextnError(f"-f {args.file}: not UTF-8 text (byte {e.start})") from None
    if prompt is None:
        prompt = "def fibonacci(n):\n"
    try:
        prompt.encode("utf-8")
    except UnicodeEncodeError as e:
        raise NextnError(f"the prompt is not valid UTF-8 (undecodable byte at character {e.start})") from None
    sampling_params(args, None)          # every sampling value checked before the model loads
    engine = Engine(EngineConfig.from_args(args, progress=not args.quiet))
    messages = [{"role": "user", "content": prompt}] if args.chat else None
    out = sys.stdout
    if not args.json:
        out.write(prompt if not args.chat else "")
    result = engine.generate(None if args.chat else prompt, sampling_params(args, engine), messages=messages,
                             on_text=None if args.json else lambda t: (out.write(t), out.flush()))
    t = result.timings
    if args.json:
        json.dump({"text": result.text, "tokens": result.tokens, "finish_reason": result.finish_reason,
                   "timings": t, "memory": engine.memory(), "kernels": engine.kernels(),
                   "draft_vocab": engine.mtp_model.draft_vocab_source,
                   "params": asdict(result.params)}, out)
        out.write("\n")
        return 0
    out.write("\n")
    line = (f"[{t['generated_tokens']} tokens, {t['tokens_per_second']:.1f} tok/s, prompt {t['prompt_tokens']} tokens "
            f"at {t['prompt_tokens_per_second']:.0f} tok/s")
    for name in engine.drafters:
        d = t["drafters"].get(name, {"draft_tokens": 0, "accepted_tokens": 0, "acceptance_rate": 0.0,
                                     "acceptance_per_position": []})
        per_pos = " ".join(f"{a:.2f}" for a in d["acceptance_per_position"])
        label = mtp_label(engine) if name == "mtp" else LABELS.get(name, name)
        line += (f"; {label}: {d['draft_tokens']} drafted, {d['accepted_tokens']} accepted "
                 f"({d['acceptance_rate']:.1%}), per position [{per_pos}]")
    if engine.drafters:
        line += f"; mean accepted length {t['mean_accepted_length']:.2f}"
    mem = engine.memory()
    print(line + "]", file=sys.stderr)
    vocab = f"; MTP draft vocabulary: {engine.mtp_model.draft_vocab_source}" if engine.mtp_model.draft_vocab_source else ""
    draft = f", draft model {mem['draft_model_mb']:.1f} MB" if "draft_model_mb" in mem else ""
    if "mtp_head_mb" in mem:
        draft = f", MTP head on rank 0 {mem['mtp_head_mb']:.1f} MB"
    print(f"[memory: weights {mem['weights_mb']:.1f} MB, caches {mem['caches_mb']:.1f} MB{draft}; "
          f"products: {engine.kernels()}; sampling: {describe_sampling(result.params)}{vocab}]", file=sys.stderr)
    return 0


LABELS = {"mtp": "MTP", "ngram": "n-gram", "draft": "draft model"}


def mtp_label(engine) -> str:
    """"MTP", or with several layers in the file how many drafts go through: "MTP (3 layers)", "MTP (1 of 3 layers)"."""
    used, shipped = engine.mtp_model.cfg.n_mtp, engine.mtp_model.cfg.n_mtp_file
    if shipped <= 1 and used <= 1:
        return "MTP"
    return f"MTP ({used} layers)" if used == shipped else f"MTP ({used} of {shipped} layers)"


def describe_sampling(p) -> str:
    if p.greedy:
        text = "greedy"
    else:
        text = f"temp {p.temperature:g}" + "".join(f", {name} {v:g}" for name, v, off in (
            ("top-k", p.top_k, 0), ("top-p", p.top_p, 1), ("min-p", p.min_p, 0)) if v != off)
    if p.repetition_penalty != 1:
        text += f", repeat-penalty {p.repetition_penalty:g}" + (f" over the last {p.penalty_last_n} tokens"
                                                               if p.penalty_last_n > 0 else "")
    return text


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="nextn", description="MTP speculative decoding engine for GGUF models")
    sub = ap.add_subparsers(dest="cmd", required=True)

    from .engine.config import EngineConfig

    g = sub.add_parser("generate", help="generate text from a prompt")
    EngineConfig.add_args(g)
    add_sampling_args(g)
    g.add_argument("-p", "--prompt", default=None)
    g.add_argument("-f", "--file", default=None, help="read the prompt from a file")
    g.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    g.add_argument("--json", action="store_true", help="print one JSON object with text and timings")
    g.add_argument("-q", "--quiet", action="store_true", help="no loading progress bar")
    g.set_defaults(func=cmd_generate)

    from . import bench
    from .gguf import tools as gguf_tools
    from .gguf.writer import OUTTYPES
    from .server import app as server

    s = sub.add_parser("serve", help="OpenAI-compatible HTTP server")
    EngineConfig.add_args(s)
    server.add_args(s)
    s.set_defaults(func=server.main)

    b = sub.add_parser("bench", help="plain vs MTP decoding across prompt types")
    EngineConfig.add_args(b, spec_flag=False)
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
    c.add_argument("--split-max-size", type=gguf_tools.parse_size, default=0, metavar="SIZE",
                   help="write llama.cpp's split form, parts of at most SIZE (e.g. 4G, 500M)")
    c.set_defaults(func=_convert)

    gguf_tools.add_parser(sub)
    return ap


def _convert(args) -> int:
    from .gguf import tools as gguf_tools
    from .gguf.convert import convert

    mode = "mtp" if args.mtp else "no-mtp" if args.no_mtp else "bundled"
    out = convert(args.hf_dir, args.out, outtype=args.outtype, mode=mode, keep_mtp_precision=args.keep_mtp_precision,
                  split_max_size=args.split_max_size)
    print(gguf_tools.inspect_text(gguf_tools.describe(gguf_tools.open_gguf(out))))
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
    except MemoryError as e:
        print(f"nextn: error: out of memory ({e or 'allocation failed'}); lower --ctx-size or --parallel, or use a "
              f"smaller model", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())

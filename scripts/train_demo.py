"""Train nextn's demo model: a small Qwen3.5-architecture code model with one jointly trained MTP block.

Corpus: the Python standard library's own source (every machine with Python has it). Files whose
path hashes into the held-out bucket are never trained on; `--eval` measures on them.

    python scripts/train_demo.py --minutes 40 --out runs/demo      # CPU, 2 cores: well under an hour
    python scripts/train_demo.py --minutes 6.5 --out runs/demo     # uses the GPU when there is one

The bundled model was made by the second line on one H100 (see README).

Writes runs/demo/hf (a Hugging Face checkpoint: indexed safetensors shards + config.json + tokenizer.json,
MTP tensors under `mtp.*` in the last shard, as Qwen3.5 publishes them) and runs/demo/nextn-demo-code.gguf, converted by
`nextn convert` (bundled form). Needs `transformers` (pip install -e '.[test]').

Loss: next-token CE on the trunk plus, DeepSeek-V3 style, CE of the MTP block; the block is unrolled
recursively for depths 1..3 exactly as nextn drafts with it (depth d reads token x_{t+d} and the
previous depth's normed hidden state), so later draft positions are trained too.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib
import json
import math
import sysconfig
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F


from nextn.gguf.convert import convert

DEMO_SAMPLING = {"do_sample": True, "temperature": 0.6, "top_p": 0.95, "repetition_penalty": 1.1, "penalty_last_n": 64}
from nextn_dev.reference import mtp_head
from nextn_dev.published import shard
from nextn_dev.tiny import make_tokenizer

MTP_DEPTH_WEIGHTS = (0.5, 0.3, 0.2)


def corpus_root(spec: str | None) -> Path:
    """The standard library of the running Python, or a directory / .tar.gz copy of one."""
    if not spec:
        return Path(sysconfig.get_paths()["stdlib"])
    path = Path(spec)
    if path.is_dir():
        return path
    import tarfile
    import tempfile

    dest = Path(tempfile.mkdtemp(prefix="nextn-corpus-"))
    with tarfile.open(path) as tf:
        tf.extractall(dest, filter="data")
    subdirs = [d for d in dest.iterdir() if d.is_dir()]
    return subdirs[0] if len(subdirs) == 1 else dest


def corpus_files(root: Path, held_out: bool) -> list[Path]:
    files = sorted(f for f in root.rglob("*.py") if "site-packages" not in f.parts)
    bucket = [f for f in files if (int(hashlib.sha1(str(f.relative_to(root)).encode()).hexdigest(), 16) % 20 == 0)]
    return bucket if held_out else [f for f in files if f not in set(bucket)]


def read(files: list[Path]) -> list[str]:
    texts = []
    for f in files:
        try:
            texts.append(f.read_text(encoding="utf-8"))
        except (UnicodeDecodeError, OSError):
            pass
    return texts


def model_config(vocab: int, args):
    from transformers import Qwen3_5TextConfig

    return Qwen3_5TextConfig(
        vocab_size=vocab, hidden_size=args.dim, intermediate_size=3 * args.dim, num_hidden_layers=args.layers,
        num_attention_heads=args.dim // 64, num_key_value_heads=max(1, args.dim // 128), head_dim=64,
        linear_conv_kernel_dim=4, linear_key_head_dim=64, linear_value_head_dim=64,
        linear_num_key_heads=max(1, args.dim // 128), linear_num_value_heads=args.dim // 64,
        full_attention_interval=4, max_position_embeddings=4096, rms_norm_eps=1e-6, tie_word_embeddings=False,
        rope_parameters={"rope_type": "default", "rope_theta": 10000.0, "partial_rotary_factor": 0.25,
                         "mrope_section": [3, 3, 2], "mrope_interleaved": True},
        initializer_range=0.02, eos_token_id=0)


def losses(model, mtp, x: torch.Tensor, depth: int):
    """Trunk CE and per-depth MTP CE for token batch x [B, T]."""
    B, T = x.shape
    h = model.model(input_ids=x).last_hidden_state                     # post-norm, as nextn feeds the MTP
    out = {"trunk": F.cross_entropy(model.lm_head(h[:, :-1]).flatten(0, 1), x[:, 1:].flatten())}
    embed = model.model.embed_tokens
    prev = h
    for d in range(1, depth + 1):
        n = T - d
        if n <= 1:
            break
        pos = torch.arange(1, n + 1, device=x.device)[None].expand(B, n)
        rope = model.model.rotary_emb(prev, pos[None].expand(3, B, n))
        g = mtp(embed(x[:, d:]), prev[:, :n], rope)                   # row t: (x_{t+d}, g_{d-1, t}) -> x_{t+d+1}
        out[f"mtp{d}"] = F.cross_entropy(model.lm_head(g[:, :-1]).flatten(0, 1), x[:, d + 1:].flatten())
        prev = g
    return out


def batches(ids: torch.Tensor, batch: int, seq: int, gen: torch.Generator):
    while True:
        starts = torch.randint(0, len(ids) - seq - 1, (batch,), generator=gen)
        yield torch.stack([ids[s:s + seq] for s in starts.tolist()])


@torch.no_grad()
def schedule(opt, base_lr: float, step: int, frac: float) -> float:
    """100 steps of warm-up, then a cosine over the time budget (frac: its fraction spent) down to 0.1x."""
    lr = base_lr * min(1.0, (step + 1) / 100) * (0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * frac)))
    for grp in opt.param_groups:
        grp["lr"] = lr
    return lr


def update(opt, loss: torch.Tensor, params) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(params, 1.0)
    opt.step()


def evaluate(model, mtp, ids: torch.Tensor, seq: int, depth: int, device, n_batches: int = 20) -> dict:
    gen = torch.Generator().manual_seed(1)
    it = batches(ids, 8, seq, gen)
    tot: dict[str, float] = {}
    for _ in range(n_batches):
        for k, v in losses(model, mtp, next(it).to(device), depth).items():
            tot[k] = tot.get(k, 0.0) + float(v) / n_batches
    return tot


def save_checkpoint(model, mtp, out: Path) -> None:
    """As Qwen3.5 is published: the MTP block under `mtp.*` in the last of the indexed safetensors shards
    (llama.cpp's converter reads only model*.safetensors)."""
    model.save_pretrained(out)
    shard(out, {f"mtp.{k}": v.detach().float().cpu() for k, v in mtp.state_dict().items()})
    cfg = json.loads((out / "config.json").read_text())
    cfg["mtp_num_hidden_layers"] = 1
    (out / "config.json").write_text(json.dumps(cfg, indent=1))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/demo")
    ap.add_argument("--minutes", type=float, default=40.0, help="training time budget")
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=12)
    ap.add_argument("--seq", type=int, default=512)
    ap.add_argument("--batch", type=int, default=None, help="sequences per step (default: 64 on a GPU, 8 on CPU)")
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--depth", type=int, default=3, help="MTP unroll depth in the loss")
    ap.add_argument("--mtp-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--threads", type=int, default=0)
    ap.add_argument("--corpus", default=None, help="stdlib directory or .tar.gz (default: this Python's)")
    args = ap.parse_args(argv)
    from transformers import Qwen3_5ForCausalLM

    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if args.batch is None:
        args.batch = 64 if device.type == "cuda" else 8
    out = Path(args.out)
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    t0 = time.time()
    root = corpus_root(args.corpus)
    train_texts = read(corpus_files(root, held_out=False))
    tk = make_tokenizer(hf, args.vocab, train_texts)
    eot = tk.token_to_id("<|endoftext|>")
    flat = []
    for enc in tk.encode_batch(train_texts):
        flat.extend(enc.ids + [eot])
    ids = torch.tensor(flat)
    held = []
    for enc in tk.encode_batch(read(corpus_files(root, held_out=True))):
        held.extend(enc.ids + [eot])
    held_ids = torch.tensor(held)
    print(f"corpus: {len(ids):,} train tokens, {len(held_ids):,} held-out tokens, tokenizer {time.time() - t0:.0f}s",
          flush=True)

    cfg = model_config(args.vocab, args)
    model = Qwen3_5ForCausalLM(cfg).to(device)
    mtp = mtp_head(cfg, importlib.import_module(type(model).__module__)).to(device)
    nn.init.normal_(mtp.fc.weight, std=cfg.initializer_range)
    params = list(model.parameters()) + list(mtp.parameters())
    print(f"params: trunk {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M, "
          f"mtp {sum(p.numel() for p in mtp.parameters()) / 1e6:.2f}M, device {device}", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    gen = torch.Generator().manual_seed(args.seed)
    it = batches(ids, args.batch, args.seq, gen)
    budget = args.minutes * 60
    start = time.time()
    step, tokens = 0, 0
    amp = torch.autocast("cuda", dtype=torch.bfloat16) if device.type == "cuda" else torch.autocast("cpu", enabled=False)
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        lr = schedule(opt, args.lr, step, frac)
        x = next(it).to(device)
        with amp:
            parts = losses(model, mtp, x, args.depth)
        mtp_loss = sum(w * parts[f"mtp{d + 1}"] for d, w in enumerate(MTP_DEPTH_WEIGHTS[:args.depth]))
        loss = parts["trunk"] + args.mtp_weight * mtp_loss
        update(opt, loss, params)
        step += 1
        tokens += x.numel()
        if step % 50 == 0:
            el = time.time() - start
            print(f"step {step} {el / 60:.1f}min {tokens / el:,.0f} tok/s lr {lr:.2e} "
                  + " ".join(f"{k} {float(v):.3f}" for k, v in parts.items()), flush=True)
    model.eval()
    mtp.eval()
    ev = evaluate(model, mtp, held_ids, args.seq, args.depth, device)
    print("held-out:", " ".join(f"{k} {v:.3f}" for k, v in ev.items()), flush=True)
    save_checkpoint(model.float(), mtp.float(), hf)
    # the recommended sampling the GGUF carries (general.sampling.*): a 12 M model decoding greedily loops
    (hf / "generation_config.json").write_text(json.dumps(DEMO_SAMPLING, indent=1))
    gguf = convert(hf, out / "nextn-demo-code.gguf", outtype=args.outtype, progress=False)
    (out / "train_log.json").write_text(json.dumps({
        "args": vars(args), "steps": step, "tokens": tokens, "minutes": (time.time() - start) / 60,
        "device": str(device), "held_out_loss": ev, "torch": torch.__version__,
        "corpus": str(root), "train_tokens": len(ids), "held_out_tokens": len(held_ids)}, indent=1))
    print(f"wrote {gguf} ({gguf.stat().st_size / 1e6:.1f} MB) after {step} steps, {tokens:,} tokens", flush=True)


if __name__ == "__main__":
    main()

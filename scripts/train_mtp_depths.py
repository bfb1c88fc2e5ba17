"""Train a small MiMo-V2-architecture code model whose MTP layers are trained for real, to measure what
issue 16 asks: with k MTP layers, is drafting depth d through layer d (MiMo / DeepSeek-V3 style) better
than reusing one layer recursively?

One trunk is trained with two MTP heads at once, both on the same loss weights per depth:
- "depths": three MTP layers, depth d through layer d, each taking the previous depth's output (as MiMo
  ships them and as nextn drafts with several layers);
- "recursive": one MTP layer unrolled over depths 1..3 (as the demo's Qwen3.5 head is trained and used).
Both heads see the same trunk, so the comparison is of the heads alone. Writes two GGUF files of the
same trunk: OUT/mimo-depths.gguf (three layers) and OUT/mimo-recursive.gguf (one layer), then
`scripts/eval_demo.py` measures acceptance per draft position on held-out files:

    python scripts/train_mtp_depths.py --minutes 25 --out runs/depths
    python scripts/eval_demo.py runs/depths/mimo-depths.gguf --greedy
    python scripts/eval_demo.py runs/depths/mimo-depths.gguf --greedy --mtp-layers 1   # layer 1 reused
    python scripts/eval_demo.py runs/depths/mimo-recursive.gguf --greedy

Corpus, tokenizer and held-out split as train_demo.py (this Python's standard library).
"""

from __future__ import annotations

import argparse
import copy
import importlib
import json
import shutil
import time
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
from safetensors.torch import save_file

from nextn.gguf.convert import convert
from nextn_dev.reference import mtp_head, mtp_mask, mtp_rope
from nextn_dev.tiny import make_tokenizer
from train_demo import MTP_DEPTH_WEIGHTS, batches, corpus_files, corpus_root, read, schedule, update

# MiMo's names for an MTP layer's tensors, from mtp_head's (Qwen-style) module names
MIMO_NAMES = {"fc.weight": "eh_proj.weight", "pre_fc_norm_embedding.weight": "enorm.weight",
              "pre_fc_norm_hidden.weight": "hnorm.weight", "norm.weight": "final_layernorm.weight"}
MIMO_BLOCK = {"post_attention_layernorm.weight": "pre_mlp_layernorm.weight",
              "self_attn.sinks": "self_attn.attention_sink_bias"}


def model_config(vocab: int, args):
    from transformers import MiMoV2FlashConfig

    n = args.layers
    types = ["full_attention" if i == 0 or (i + 1) % 6 == 0 else "sliding_attention" for i in range(n)]
    rope = {"rope_type": "default", "partial_rotary_factor": 0.5}
    return MiMoV2FlashConfig(
        vocab_size=vocab, hidden_size=args.dim, intermediate_size=3 * args.dim, num_hidden_layers=n,
        num_attention_heads=args.dim // 64, num_key_value_heads=max(1, args.dim // 256), head_dim=64, v_head_dim=64,
        layer_types=types, mlp_layer_types=["dense"] * n, sliding_window=args.window,
        rope_parameters={"full_attention": {**rope, "rope_theta": 100000.0},
                         "sliding_attention": {**rope, "rope_theta": 10000.0}},
        max_position_embeddings=4096, rms_norm_eps=1e-5, tie_word_embeddings=False, initializer_range=0.02,
        attention_value_scale=0.707, eos_token_id=0, bos_token_id=None)


def unroll(model, heads, x: torch.Tensor, h: torch.Tensor, depth: int) -> dict:
    """CE per depth of an MTP head list: depth d runs heads[min(d, len) - 1] on (x_{t+d}, previous output)."""
    B, T = x.shape
    embed = model.model.embed_tokens
    out, prev = {}, h
    for d in range(1, depth + 1):
        n = T - d
        if n <= 1:
            break
        pos = torch.arange(1, n + 1, device=x.device)[None].expand(B, n)
        g = heads[min(d, len(heads)) - 1](embed(x[:, d:]), prev[:, :n], mtp_rope(model, prev, pos),
                                          mtp_mask(model, n).to(x.device))
        out[d] = F.cross_entropy(model.lm_head(g[:, :-1]).flatten(0, 1), x[:, d + 1:].flatten())
        prev = g
    return out


def losses(model, depths, recursive, x: torch.Tensor, depth: int) -> dict:
    h = model.model(input_ids=x).last_hidden_state
    out = {"trunk": F.cross_entropy(model.lm_head(h[:, :-1]).flatten(0, 1), x[:, 1:].flatten())}
    out.update({f"depths{d}": v for d, v in unroll(model, depths, x, h, depth).items()})
    out.update({f"recursive{d}": v for d, v in unroll(model, recursive, x, h, depth).items()})
    return out


def mimo_tensors(heads) -> dict:
    out = {}
    for j, head in enumerate(heads):
        for k, v in head.state_dict().items():
            if k.startswith("layers.0."):
                rest = k[len("layers.0."):]
                name = MIMO_BLOCK.get(rest, rest)
            else:
                name = MIMO_NAMES[k]
            out[f"model.mtp.layers.{j}.{name}"] = v.detach().float().contiguous()
    return out


def save(model, heads, hf: Path, gguf: Path, outtype: str) -> Path:
    """A checkpoint in MiMo's published naming (model.mtp.layers.{j}.*, uncounted by the config), converted."""
    model.save_pretrained(hf)
    for f in hf.glob("mtp*.safetensors"):
        f.unlink()
    save_file(mimo_tensors(heads), str(hf / "mtp.safetensors"))
    return convert(hf, gguf, outtype=outtype, progress=False)


@torch.no_grad()
def evaluate(model, depths, recursive, ids, seq, depth, device, n_batches=20) -> dict:
    gen = torch.Generator().manual_seed(1)
    it = batches(ids, 8, seq, gen)
    tot: dict[str, float] = {}
    for _ in range(n_batches):
        for k, v in losses(model, depths, recursive, next(it).to(device), depth).items():
            tot[k] = tot.get(k, 0.0) + float(v.detach()) / n_batches
    return tot


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="runs/depths")
    ap.add_argument("--minutes", type=float, default=25.0)
    ap.add_argument("--vocab", type=int, default=4096)
    ap.add_argument("--dim", type=int, default=256)
    ap.add_argument("--layers", type=int, default=6)
    ap.add_argument("--window", type=int, default=65, help="keys a sliding-window query sees")
    ap.add_argument("--seq", type=int, default=256)
    ap.add_argument("--batch", type=int, default=None)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--mtp-layers", type=int, default=3)
    ap.add_argument("--mtp-weight", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--outtype", default="f16")
    ap.add_argument("--corpus", default=None)
    args = ap.parse_args(argv)
    from transformers import MiMoV2FlashForCausalLM

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    args.batch = args.batch or (64 if device.type == "cuda" else 8)
    out = Path(args.out)
    hf = out / "hf"
    hf.mkdir(parents=True, exist_ok=True)
    torch.manual_seed(args.seed)
    root = corpus_root(args.corpus)
    texts = read(corpus_files(root, held_out=False))
    tk = make_tokenizer(hf, args.vocab, texts)
    eot = tk.token_to_id("<|endoftext|>")
    ids = torch.tensor([t for enc in tk.encode_batch(texts) for t in enc.ids + [eot]])
    held = torch.tensor([t for enc in tk.encode_batch(read(corpus_files(root, held_out=True))) for t in enc.ids + [eot]])
    print(f"corpus: {len(ids):,} train tokens, {len(held):,} held out", flush=True)

    cfg = model_config(args.vocab, args)
    model = MiMoV2FlashForCausalLM(cfg).to(device)
    module = importlib.import_module(type(model).__module__)
    one = copy.deepcopy(cfg)
    depth = max(3, args.mtp_layers)
    depths = nn.ModuleList([mtp_head(one, module) for _ in range(args.mtp_layers)]).to(device)
    recursive = nn.ModuleList([mtp_head(one, module)]).to(device)
    for head in (*depths, *recursive):
        nn.init.normal_(head.fc.weight, std=cfg.initializer_range)
    params = list(model.parameters()) + list(depths.parameters()) + list(recursive.parameters())
    print(f"params: trunk {sum(p.numel() for p in model.parameters()) / 1e6:.2f}M, "
          f"mtp layer {sum(p.numel() for p in recursive.parameters()) / 1e6:.2f}M each", flush=True)
    opt = torch.optim.AdamW(params, lr=args.lr, betas=(0.9, 0.95), weight_decay=0.1)
    it = batches(ids, args.batch, args.seq, torch.Generator().manual_seed(args.seed))
    weights = list(MTP_DEPTH_WEIGHTS) + [MTP_DEPTH_WEIGHTS[-1]] * (depth - len(MTP_DEPTH_WEIGHTS))
    budget, start, step = args.minutes * 60, time.time(), 0
    while time.time() - start < budget:
        frac = (time.time() - start) / budget
        lr = schedule(opt, args.lr, step, frac)
        parts = losses(model, depths, recursive, next(it).to(device), depth)
        mtp_loss = sum(weights[d - 1] * (parts[f"depths{d}"] + parts[f"recursive{d}"]) for d in range(1, depth + 1))
        loss = parts["trunk"] + args.mtp_weight * mtp_loss
        update(opt, loss, params)
        step += 1
        if step % 50 == 0:
            print(f"step {step} {(time.time() - start) / 60:.1f}min lr {lr:.2e} "
                  + " ".join(f"{k} {v.item():.3f}" for k, v in parts.items()), flush=True)
    for m in (model, depths, recursive):
        m.eval()
    ev = evaluate(model, depths, recursive, held, args.seq, depth, device)
    print("held-out:", " ".join(f"{k} {v:.3f}" for k, v in ev.items()), flush=True)
    model, depths, recursive = model.float(), depths.float(), recursive.float()
    files = {}
    for name, heads in (("depths", depths), ("recursive", recursive)):
        sub = out / f"hf-{name}"
        if sub.exists():
            shutil.rmtree(sub)
        shutil.copytree(hf, sub)
        files[name] = str(save(model, heads, sub, out / f"mimo-{name}.gguf", args.outtype))
    (out / "train_log.json").write_text(json.dumps({"args": vars(args), "steps": step, "held_out_loss": ev,
                                                    "files": files}, indent=1))
    print(f"wrote {', '.join(files.values())} after {step} steps", flush=True)


if __name__ == "__main__":
    main()

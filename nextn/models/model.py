"""The network: trunk forward (hybrid or attention-only decoder stack) and the MTP (NextN) head forward.

Weights live in plain dicts keyed by their GGUF names, one dict per block, so the code reads
like the file it was loaded from.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import ModelFileError
from ..gguf.reader import GGUFFile, block_index
from ..kernels.dequant import tensor_to_torch
from ..kernels.layout import fuse_block, project
from .attention import attention
from .cache import Cache
from .config import ModelConfig
from .deltanet import gated_deltanet
from .layers import ffn, linear, rms_norm, rope_tables
from .step import Step

ATTN_REQUIRED = ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                 "post_attention_norm.weight")
RECURRENT_REQUIRED = ("attn_norm.weight", "attn_qkv.weight", "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias",
                      "ssm_a", "ssm_norm.weight", "ssm_out.weight", "post_attention_norm.weight")
MTP_REQUIRED = ("nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight")


class Model:
    def __init__(self, cfg: ModelConfig, globals_: dict, layers: list[dict], device, dtype, layout: str = "blas"):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.tok_embd = globals_["token_embd.weight"]
        self.output_norm = globals_["output_norm.weight"]
        # an untied output head gets the fast layout of fuse.py; a tied head stays shared with the embedding
        self.head = {"output.weight": globals_["output.weight"]} if "output.weight" in globals_ else {}
        fuse_block(self.head, layout, transpose=("output",))
        self.layers = [fuse_block(w, layout) for w in layers]
        self.use_mtp = len(layers) > cfg.n_layer

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, gf: GGUFFile, cfg: ModelConfig, *, head: GGUFFile | None = None, use_mtp: bool = False,
             device="cpu", dtype=torch.float32, progress: bool = True, layout: str = "blas") -> "Model":
        plan = [(gf, n) for n in ("token_embd.weight", "output_norm.weight", "output.weight") if n in gf.tensors]
        plan += [(gf, n) for n in gf.tensors if block_index(n) is not None and block_index(n) < cfg.n_layer]
        if use_mtp:
            src = head or gf
            plan += [(src, n) for n in src.tensors if block_index(n) is not None and block_index(n) >= cfg.n_layer]
        total = sum(src.tensors[n].n_bytes for src, n in plan)
        globals_, blocks = {}, [dict() for _ in range(cfg.n_layer + (cfg.n_mtp if use_mtp else 0))]
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"loading {gf.path.name}", disable=not progress,
                  leave=False) as bar:
            for src, name in plan:
                t = tensor_to_torch(src.tensor(name), dtype, src.path).to(device)
                il = block_index(name)
                if il is None:
                    globals_[name] = t
                elif il < len(blocks):
                    blocks[il][name.split(".", 2)[2]] = t
                bar.update(src.tensors[name].n_bytes)
        for name in ("token_embd.weight", "output_norm.weight"):
            if name not in globals_:
                raise ModelFileError(f"{gf.path}: tensor '{name}' is missing")
        for il, w in enumerate(blocks):
            _check_block(head if (head is not None and il >= cfg.n_layer) else gf, cfg, il, w)
        return cls(cfg, globals_, blocks, device, dtype, layout)

    # ---- forward -------------------------------------------------------------------------------
    def block(self, il: int, x: torch.Tensor, step: Step, cache: Cache) -> torch.Tensor:
        w, cfg = self.layers[il], self.cfg
        h = rms_norm(x, w["attn_norm.weight"], cfg.rms_eps)
        mixer = gated_deltanet if cfg.recurrent[il] else attention
        x = x + mixer(h, w, cfg, step, cache, il)
        return x + ffn(rms_norm(x, w["post_attention_norm.weight"], cfg.rms_eps), w, cfg)

    def _prepare(self, step: Step) -> None:
        if step.rope is None:
            step.rope = rope_tables(step.positions, self.cfg.n_rot, self.cfg.rope_theta, self.dtype)

    def forward(self, tokens: torch.Tensor, step: Step, cache: Cache) -> torch.Tensor:
        """Trunk forward of tokens [B, T]; returns hidden states AFTER the final norm, [B, T, D]."""
        self._prepare(step)
        x = F.embedding(tokens, self.tok_embd)
        for il in range(self.cfg.n_layer):
            x = self.block(il, x, step, cache)
        return rms_norm(x, self.output_norm, self.cfg.rms_eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        if self.head:
            return project(hidden, self.head, "output").float()
        return F.linear(hidden, self.tok_embd).float()   # tied: the head is the embedding

    def score(self, tokens: torch.Tensor, chunk: int | None = None) -> torch.Tensor:
        """Trunk logits after every position of one sequence [1, T], prefilled in chunks into a cache of
        its own (teacher forcing: parity checks, perplexity)."""
        T = tokens.shape[1]
        chunk = chunk or T
        cache = Cache.allocate(self.cfg, 1, T, self.dtype, self.device, use_mtp=False)
        out = [self.logits(self.forward(tokens[:, s:s + chunk],
                                        Step.build([0], [s], [min(chunk, T - s)], self.device, T, chunked=True), cache))
               for s in range(0, T, chunk)]
        return torch.cat(out, 1)

    def mtp_forward(self, tokens: torch.Tensor, hidden: torch.Tensor, step: Step, cache: Cache, i: int = 0):
        """MTP block: token x_{t+1} and trunk hidden h_t (post-norm) -> normed MTP hidden g (predicts x_{t+2})."""
        il = self.cfg.n_layer + i
        w = self.layers[il]
        self._prepare(step)
        e = F.embedding(tokens, w.get("nextn.embed_tokens.weight", self.tok_embd))
        eps = self.cfg.rms_eps
        u = linear(torch.cat((rms_norm(e, w["nextn.enorm.weight"], eps), rms_norm(hidden, w["nextn.hnorm.weight"], eps)), -1),
                   w, "nextn.eh_proj")
        u = self.block(il, u, step, cache)
        return rms_norm(u, w.get("nextn.shared_head_norm.weight", self.output_norm), eps)

    def mtp_logits(self, g: torch.Tensor, i: int = 0) -> torch.Tensor:
        w = self.layers[self.cfg.n_layer + i]
        if "nextn.shared_head_head.weight" in w:
            return F.linear(g, w["nextn.shared_head_head.weight"]).float()
        return self.logits(g)

    def nbytes(self) -> int:
        seen, total = set(), 0
        tensors = [self.tok_embd, self.output_norm, *self.head.values(), *(t for w in self.layers for t in w.values())]
        for t in tensors:
            if isinstance(t, torch.Tensor) and id(t) not in seen:
                seen.add(id(t))
                total += t.numel() * 4 if t.is_mkldnn else t.numel() * t.element_size()
        return total


def _check_block(gf: GGUFFile, cfg: ModelConfig, il: int, w: dict) -> None:
    required = list(RECURRENT_REQUIRED if cfg.recurrent[il] else ATTN_REQUIRED)
    if cfg.recurrent[il] and "ssm_ba.weight" not in w:
        required += ["ssm_beta.weight", "ssm_alpha.weight"]
    if "ffn_gate_inp.weight" in w or ("ffn_gate.weight" not in w and cfg.is_moe_layer(il)):
        required += ["ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight", "ffn_down_exps.weight"]
    else:
        required += ["ffn_gate.weight", "ffn_up.weight", "ffn_down.weight"]
    if il >= cfg.n_layer:
        required += MTP_REQUIRED
    for name in required:
        if name not in w:
            raise ModelFileError(f"{gf.path}: tensor 'blk.{il}.{name}' is missing")

"""The network: trunk forward (hybrid or attention-only decoder stack) and the MTP (NextN) head forward.

Weights live in plain dicts keyed by their GGUF names, one dict per block, so the code reads like the
file. Every weight stays in its GGUF type (kernels.weights): on CPU memory-mapped from the file, on CUDA
copied as it is (types the GPU kernels do not decode are dequantized at load). Two forms of the forward:
- torch (`forward`, `mtp_forward`): prefill chunks, the MTP head's catch-up on long queues, MLA models,
  and CUDA (where short forwards run fused Triton kernels inside CUDA graphs);
- native (`emit_trunk`, `emit_commit`, `emit_mtp_block`, `emit_mtp_head`): a few tokens per sequence on
  the CPU kernels, over static buffers, emitted as ops that a plan records once and replays every step.
"""

from __future__ import annotations

import copy
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F
from tqdm import tqdm

from ..errors import ModelFileError
from ..gguf.reader import GGUFFile, block_index
from ..kernels import native, ops, weights
from ..kernels.weights import GPU_TYPES, QWeight, from_gguf, row_range, take_rows
from .attention import attention, attention_native
from .mla import mla_attention, mla_native
from .buffers import Buffers
from .cache import Cache
from .config import HYBRID_ARCHS, SWA_ARCHS, ModelConfig
from .deltanet import deltanet_native, gated_deltanet
from .layers import dense_ffn, linear, rms_norm, rope_inv_freq, rope_tables, swiglu_native
from .moe import moe_ffn, moe_native
from .step import Step

if TYPE_CHECKING:
    from ..parallel.comm import Comm

ATTN_REQUIRED = ("attn_norm.weight", "attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_output.weight",
                 "post_attention_norm.weight")
RECURRENT_REQUIRED = ("attn_norm.weight", "attn_qkv.weight", "attn_gate.weight", "ssm_conv1d.weight", "ssm_dt.bias",
                      "ssm_a", "ssm_norm.weight", "ssm_out.weight", "post_attention_norm.weight")
MLA_REQUIRED = ("attn_norm.weight", "attn_kv_a_mqa.weight", "attn_kv_a_norm.weight", "attn_k_b.weight",
                "attn_v_b.weight", "attn_output.weight", "ffn_norm.weight")
MTP_REQUIRED = ("nextn.eh_proj.weight", "nextn.enorm.weight", "nextn.hnorm.weight")
DENSE = ("ssm_conv1d.weight",)       # read elementwise by the kernels, never multiplied: plain float tensors
EMBEDDINGS = ("token_embd.weight", "nextn.embed_tokens.weight")   # tables read by row (kept in the file's layout)
OUTPUTS = ("output.weight", "nextn.shared_head_head.weight")      # output heads: the trunk's, an MTP block's own
PER_HEAD = ("attn_k_b.weight", "attn_v_b.weight")   # MLA's per-head stacks: ops.matmul_heads reads the file's layout


class Model:
    def __init__(self, cfg: ModelConfig, globals_: dict, layers: list[dict], device, dtype, comm: "Comm | None" = None):
        self.cfg, self.device, self.dtype = cfg, torch.device(device), dtype
        self.comm = comm if comm is not None and comm.size > 1 else None    # tensor parallel: this rank's shard
        self.tok_embd = globals_["token_embd.weight"]
        self.output_norm = globals_["output_norm.weight"]
        self.head = globals_.get("output.weight", self.tok_embd)     # tied: the head is the embedding
        self.layers = layers
        self.use_mtp = len(layers) > cfg.n_layer
        self.draft_ids: list[int] | None = None      # the token of each MTP head row, when not the whole vocabulary
        self.draft_vocab_source: str | None = None   # where those came from (for the user)
        self.tp_name: str | None = None              # tensor parallel: the other ranks' name for their shard
        self.mtp_apart: Model | None = None          # the MTP head as a model of its own (--tp-mtp rank0)
        self.draft_out: list | None = None           # that head's output rows, split over the ranks with the trunk

    # ---- loading -------------------------------------------------------------------------------
    @classmethod
    def load(cls, gf: GGUFFile, cfg: ModelConfig, *, head: GGUFFile | None = None, use_mtp: bool = False,
             device="cpu", dtype=torch.float32, progress: bool = True, int8: bool = False,
             comm: "Comm | None" = None, trunk: bool = True, mtp_out: bool = False) -> "Model":
        """`int8`: quantized weights take int8 activations in few-row products (QWeight.int8).
        `comm`: tensor parallel over its ranks: this rank reads and holds only its shard (parallel.shard).
        trunk=False (with use_mtp): the MTP head alone (its blocks, the embedding and output matrices, whole),
        to run apart from a trunk held elsewhere; the trunk's blocks are left empty (a full-vocabulary output
        matrix is left mapped, not packed: such a head reads it only through the rows a draft vocabulary takes).
        mtp_out (use_mtp False): the MTP blocks' output matrices alone (`draft_out`: this rank's rows of each
        block's own head, else the trunk's), for blocks that run apart on rank 0 (parallel/placement.py)."""
        from ..parallel.shard import local_config, shard

        rank, size = (comm.rank, comm.size) if comm is not None else (0, 1)
        local = local_config(cfg, rank, size)
        plan = [(gf, n) for n in ("token_embd.weight", "output_norm.weight", "output.weight") if n in gf.tensors]
        if trunk:
            plan += [(gf, n) for n in gf.tensors if block_index(n) is not None and block_index(n) < cfg.n_layer]
        mtp = range(cfg.n_layer, cfg.n_layer + cfg.n_mtp)
        if use_mtp or mtp_out:
            src = head or gf
            plan += [(src, n) for n in src.tensors if block_index(n) in mtp and (use_mtp or n.endswith(OUTPUTS[1]))]
        device = torch.device(device)
        globals_, blocks = {}, [dict() for _ in range(cfg.n_layer + (cfg.n_mtp if use_mtp else 0))]
        outs = {}
        total = sum(src.tensors[n].n_bytes for src, n in plan)
        with tqdm(total=total, unit="B", unit_scale=True, desc=f"loading {gf.path.name}", disable=not progress,
                  leave=False) as bar:
            for src, name in plan:
                t = _place(shard(name, from_gguf(src.tensor(name), src.path), cfg, rank, size), name, device, dtype)
                if isinstance(t, QWeight):
                    t.int8 = int8
                    mapped = not trunk and name.endswith(OUTPUTS) and t.shape[0] == cfg.n_vocab
                    if t.packable and t.qtype in weights.PACK_TYPES and not name.endswith(EMBEDDINGS + PER_HEAD) \
                            and not mapped:
                        t = _pack(t, src.tensor(name))
                il = block_index(name)
                if il is None:
                    globals_[name] = t
                elif il < len(blocks):
                    blocks[il][name.split(".", 2)[2]] = t
                else:
                    outs[il - cfg.n_layer] = t
                bar.update(src.tensors[name].n_bytes)
        for name in ("token_embd.weight", "output_norm.weight"):
            if name not in globals_:
                raise ModelFileError(f"{gf.path}: tensor '{name}' is missing")
        for il, w in enumerate(blocks):
            if not trunk and il < cfg.n_layer:
                continue
            if "attn_qkv.weight" in w and not cfg.recurrent[il]:
                _split_qkv(w, local, il)
            _check_block(head if (head is not None and il >= cfg.n_layer) else gf, local, il, w)
        model = cls(local, globals_, blocks, device, dtype, comm)
        if mtp_out:
            model.draft_out = [outs.get(i, model.head) for i in range(cfg.n_mtp)]
        return model

    def int8_types(self) -> list[str]:
        """The weight types whose products run with int8 activations (see QWeight.int8_kernel)."""
        ws = [t for t in (self.head, *(t for w in self.layers for t in w.values())) if t is not None]
        return sorted({w.qtype.name for w in ws if isinstance(w, QWeight) and w.int8_kernel})

    def nbytes(self, embeddings: bool = True, outputs: bool = True) -> int:
        """Bytes of the weights held (embeddings=False: not the embedding tables, of which a head apart from its
        trunk reads only the rows it looks up from the mapped file; outputs=False: nor its output matrices)."""
        seen, total = set(), 0
        tables = [self.tok_embd, *(w.get("nextn.embed_tokens.weight") for w in self.layers)] if not embeddings else []
        if not outputs:
            tables += [self.head, *(w.get(OUTPUTS[1]) for w in self.layers)]
        for t in tables:
            if t is not None and (t is not self.head or not outputs):
                seen.add((t.data if isinstance(t, QWeight) else t).data_ptr())
        for t in [self.tok_embd, self.output_norm, self.head, *(t for w in self.layers for t in w.values())]:
            if t is None:
                continue
            data = t.data if isinstance(t, QWeight) else t
            if data.data_ptr() not in seen:
                seen.add(data.data_ptr())
                total += data.numel() * data.element_size()
        return total

    # ---- torch forward ---------------------------------------------------------------------------
    def block(self, il: int, x: torch.Tensor, step: Step, cache: Cache) -> torch.Tensor:
        w, cfg = self.layers[il], self.cfg
        h = rms_norm(x, w["attn_norm.weight"], cfg.rms_eps)
        mixer = gated_deltanet if cfg.recurrent[il] else mla_attention if cfg.mla else attention
        x = x + self._sum(mixer(h, w, cfg, step, cache, il))
        h = rms_norm(x, w.get("post_attention_norm.weight", w.get("ffn_norm.weight")), cfg.rms_eps)
        return x + self._sum(moe_ffn(h, w, cfg) if "ffn_gate_inp.weight" in w else dense_ffn(h, w))

    def _sum(self, part: torch.Tensor) -> torch.Tensor:
        """Tensor parallel: the ranks' partial outputs (row-parallel products, their experts) summed."""
        return self.comm.all_reduce(part.contiguous()) if self.comm is not None else part

    def _prepare(self, step: Step) -> None:
        cfg = self.cfg
        if step.rope is None:
            step.rope = rope_tables(step.positions, *rope_inv_freq(cfg), self.dtype)
        if any(cfg.swa) and step.rope_swa is None:
            step.rope_swa = rope_tables(step.positions, *rope_inv_freq(cfg, swa=True), self.dtype)

    def embed(self, tokens: torch.Tensor, table) -> torch.Tensor:
        if self.comm is not None:         # this rank's vocabulary rows; the others contribute zeros
            first, end = self.comm.vocab_range(self.cfg.n_vocab)
            local = tokens - first
            inside = (local >= 0) & (local < end - first)
            x = self._lookup(local.clamp(0, end - first - 1), table) * inside[..., None].to(self.dtype)
            return self.comm.all_reduce(x.contiguous())
        return self._lookup(tokens, table)

    def _lookup(self, tokens: torch.Tensor, table) -> torch.Tensor:
        if isinstance(table, QWeight):
            return table.rows(tokens.flatten(), self.dtype).reshape(*tokens.shape, table.K)
        return F.embedding(tokens, table)

    def forward(self, tokens: torch.Tensor, step: Step, cache: Cache) -> torch.Tensor:
        """Trunk forward of tokens [B, T]; returns hidden states AFTER the final norm, [B, T, D]."""
        self._prepare(step)
        x = self.embed(tokens, self.tok_embd)
        for il in range(self.cfg.n_layer):
            x = self.block(il, x, step, cache)
        return rms_norm(x, self.output_norm, self.cfg.rms_eps)

    def logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return self._vocab(linear(hidden, self.head).float())

    def _vocab(self, logits: torch.Tensor) -> torch.Tensor:
        """Tensor parallel: every rank's vocabulary columns, gathered."""
        return self.comm.gather_vocab(logits, self.cfg.n_vocab) if self.comm is not None else logits

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
        e = self.embed(tokens, w.get("nextn.embed_tokens.weight", self.tok_embd))
        eps = self.cfg.rms_eps
        u = linear(torch.cat((rms_norm(e, w["nextn.enorm.weight"], eps), rms_norm(hidden, w["nextn.hnorm.weight"], eps)), -1),
                   w["nextn.eh_proj.weight"])
        u = self.block(il, u, step, cache)
        return rms_norm(u, _head_norm(w, self.output_norm), eps)

    def mtp_head(self, i: int = 0):
        """MTP block i's output head: its own, else the trunk's (rows: `draft_ids`, or every token)."""
        if self.draft_out is not None:
            return self.draft_out[i]
        return self.layers[self.cfg.n_layer + i].get("nextn.shared_head_head.weight", self.head)

    def with_draft_vocab(self, ids: list[int]) -> "Model":
        """A view of this model whose MTP heads hold only the rows of `ids` (a subset of those held now);
        every other weight is shared."""
        view = copy.copy(self)
        view.layers = [dict(w) for w in self.layers]
        view._restrict(ids)
        return view

    def _restrict(self, ids: list[int]) -> None:
        held = {t: r for r, t in enumerate(self.draft_ids)} if self.draft_ids is not None else None
        missing = [t for t in ids if held is not None and t not in held]
        if missing:
            raise ModelFileError(f"the MTP head holds {len(held)} token rows; token {missing[0]} is not among them")
        rows = torch.tensor([held[t] for t in ids] if held is not None else ids, dtype=torch.long)
        for i in range(self.cfg.n_mtp):
            w = self.layers[self.cfg.n_layer + i]
            t = take_rows(self.mtp_head(i), rows)
            w["nextn.shared_head_head.weight"] = t.pack() if isinstance(t, QWeight) and t.packable and \
                t.qtype in weights.PACK_TYPES else t
        self.draft_ids = list(ids)
        if not any(self.layers[:self.cfg.n_layer]):      # a head apart from its trunk: the full matrix is not needed
            self.head = None

    def mtp_logits(self, g: torch.Tensor, i: int = 0) -> torch.Tensor:
        return self._vocab(linear(g, self.mtp_head(i)).float())

    # ---- native decode forward ------------------------------------------------------------------
    def _block_native(self, il: int, cache: Cache, buf: Buffers, save: bool, shift: int = 0) -> None:
        w, cfg, rows = self.layers[il], self.cfg, buf.rows
        ops.rmsnorm(buf.x, w["attn_norm.weight"], buf.h, cfg.rms_eps, rows)
        if cfg.recurrent[il]:
            deltanet_native(w, cfg, cache, il, buf.h, buf.mix, buf, rows, save)
        elif cfg.mla:
            mla_native(w, cfg, cache, il, buf.h, buf.mix, buf, rows, shift)
        else:
            attention_native(w, cfg, cache, il, buf.h, buf.mix, buf, rows, shift)
        self._sum_native(buf.mix, rows)
        ops.add(buf.x, buf.mix, buf.x, rows)
        ops.rmsnorm(buf.x, w.get("post_attention_norm.weight", w.get("ffn_norm.weight")), buf.h, cfg.rms_eps, rows)
        if "ffn_gate_inp.weight" in w:
            moe_native(w, cfg, buf.h, buf.mix, buf, rows)
        else:
            swiglu_native(w, "", buf.h, buf.mix, buf, rows)
        self._sum_native(buf.mix, rows)
        ops.add(buf.x, buf.mix, buf.x, rows)

    def _sum_native(self, out: torch.Tensor, rows) -> None:
        if self.comm is not None:
            native.hook(lambda: self.comm.all_reduce(out[:int(rows.head[0])]))

    def _embed_native(self, table, buf: Buffers) -> None:
        if self.comm is None:
            ops.embed(buf.tokens, table, buf.x, buf.rows)
            return

        def run():
            n = int(buf.rows.head[0])
            buf.x[:n] = self.embed(buf.tokens[:n].long(), table)
        native.hook(run)

    def _head_native(self, head, buf: Buffers) -> torch.Tensor:
        """buf.hidden rows through an output head -> the logits buffer's first head-rows columns (every rank's
        columns gathered when tensor parallel)."""
        if self.comm is None:
            logits = buf.logits[:, :head.shape[0]]
            ops.matmul(buf.hidden, head, logits, buf.rows)
            return logits
        part = buf.vocab_part[:, :head.shape[0]]
        ops.matmul(buf.hidden, head, part, buf.rows)

        def gather():
            n = int(buf.rows.head[0])
            buf.logits[:n] = self.comm.gather_vocab(part[:n], self.cfg.n_vocab)
        native.hook(gather)
        return buf.logits

    def emit_trunk(self, cache: Cache, buf: Buffers) -> None:
        """buf.tokens at the rows of buf.rows -> buf.hidden (post-norm), buf.logits, buf.ids (argmax)."""
        rows = buf.rows
        self._embed_native(self.tok_embd, buf)
        for il in range(self.cfg.n_layer):
            self._block_native(il, cache, buf, save=bool(cache.ssm_backup))
        ops.rmsnorm(buf.x, self.output_norm, buf.hidden, self.cfg.rms_eps, rows)
        ops.argmax(self._head_native(self.head, buf), buf.ids, rows)

    def emit_commit(self, cache: Cache, buf: Buffers) -> None:
        """Recurrent state after buf.rows.seq_keep of each sequence's rows of the last emit_trunk."""
        for il in self.cfg.recurrent_layers:
            if il < self.cfg.n_layer:
                deltanet_native(self.layers[il], self.cfg, cache, il, buf.h, buf.mix, buf, buf.rows, True, commit=True)

    def emit_mtp_block(self, cache: Cache, buf: Buffers, i: int = 0) -> None:
        """MTP block i on pairs (buf.tokens, buf.mtp_in) at the rows of buf.rows (KV row = position - 1 - i: block
        i's first position is i + 1)
        -> buf.hidden: the normed MTP hidden state g of each row."""
        il, cfg = self.cfg.n_layer + i, self.cfg
        w, rows, D = self.layers[il], buf.rows, cfg.n_embd
        self._embed_native(w.get("nextn.embed_tokens.weight", self.tok_embd), buf)
        ops.rmsnorm(buf.x, w["nextn.enorm.weight"], buf.cat[:, :D], cfg.rms_eps, rows)
        ops.rmsnorm(buf.mtp_in, w["nextn.hnorm.weight"], buf.cat[:, D:], cfg.rms_eps, rows)
        ops.matmul(buf.cat, w["nextn.eh_proj.weight"], buf.x, rows)
        self._block_native(il, cache, buf, save=False, shift=1 + i)
        ops.rmsnorm(buf.x, _head_norm(w, self.output_norm), buf.hidden, cfg.rms_eps, rows)

    def emit_mtp_head(self, buf: Buffers, i: int = 0) -> None:
        """buf.hidden rows -> buf.logits and buf.ids through MTP block i's output head (a draft vocabulary
        fills the first len(draft_ids) columns; ids are row numbers of the head)."""
        ops.argmax(self._head_native(self.mtp_head(i), buf), buf.ids, buf.rows)


def _head_norm(w: dict, output_norm):
    """An MTP block's norm before its head: its own (`nextn.shared_head_norm`; MiMo's final_layernorm, which
    llama.cpp's converter names `layer_output_norm`), else the trunk's output norm."""
    return w.get("nextn.shared_head_norm.weight", w.get("layer_output_norm.weight", output_norm))


def _split_qkv(w: dict, cfg: ModelConfig, il: int) -> None:
    """A fused attention projection [q | k | v] (MiMo-V2 files) as the three row ranges it holds (views)."""
    qkv = w.pop("attn_qkv.weight")
    q, k = cfg.n_head * cfg.head_dim, cfg.kv_heads(il) * cfg.head_dim
    v = cfg.kv_heads(il) * cfg.v_dim
    if qkv.shape[0] != q + k + v:
        raise ModelFileError(f"tensor 'blk.{il}.attn_qkv.weight' has {qkv.shape[0]} rows; the head counts and sizes "
                             f"make q + k + v = {q} + {k} + {v}")
    for name, (a, b) in (("attn_q", (0, q)), ("attn_k", (q, q + k)), ("attn_v", (q + k, q + k + v))):
        w[f"{name}.weight"] = row_range(qkv, a, b)


def _place(t, name: str, device: torch.device, dtype: torch.dtype):
    """A loaded tensor where it is used: on CPU as in the file (kernel-read tensors made plain floats);
    on CUDA the matrices of the types kernels.gpu decodes copied as they are, others dequantized to `dtype`."""
    if device.type == "cuda" and isinstance(t, QWeight) and t.qtype in GPU_TYPES and not name.endswith(DENSE):
        return t.to(device)
    dense = name.endswith(DENSE) or device.type != "cpu"
    if isinstance(t, QWeight) and dense:
        t = t.data.view(torch.float32).reshape(t.shape) if t.qtype == 0 else t.dense()
    if device.type == "cpu":
        return t
    return t.to(device=device, dtype=dtype if t.dim() > 1 else torch.float32)


def _pack(t: QWeight, source) -> QWeight:
    """`t` repacked for the int8 kernels (QWeight.pack); where `t` was the file's own bytes, their pages are
    released, so that the process holds one copy of the weight, not two."""
    packed = t.pack()
    start, addr = source.data.ctypes.data, t.data.data_ptr()
    if start <= addr < start + source.n_bytes:
        source.release()
    return packed


def _check_block(gf: GGUFFile, cfg: ModelConfig, il: int, w: dict) -> None:
    required = list(RECURRENT_REQUIRED if cfg.recurrent[il] else MLA_REQUIRED if cfg.mla else ATTN_REQUIRED)
    if cfg.arch in SWA_ARCHS:       # MiMo-V2 names its post-attention norm ffn_norm (as DeepSeek does)
        required[required.index("post_attention_norm.weight")] = "ffn_norm.weight"
    if cfg.mla:
        required += ["attn_q_a.weight", "attn_q_a_norm.weight", "attn_q_b.weight"] if cfg.q_lora_rank else ["attn_q.weight"]
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
    for name, (axis, want) in _residual_dims(cfg).items():
        if name in w and tuple(w[name].shape)[axis] != want:
            side = "rows have" if axis == -1 else "columns have"
            raise ModelFileError(f"{gf.path}: tensor 'blk.{il}.{name}' has shape {list(tuple(w[name].shape))}: its {side} "
                                 f"{tuple(w[name].shape)[axis]} entries, the metadata's embedding_length is {want}")
    for name, want in _inner_dims(cfg, il).items():
        if name in w and tuple(w[name].shape) != want:
            raise ModelFileError(f"{gf.path}: tensor 'blk.{il}.{name}' has shape {list(tuple(w[name].shape))}, but the "
                                 f"metadata (head counts, head and state sizes) makes it {list(want)}")


def _residual_dims(cfg: ModelConfig) -> dict:
    """Weights that read (last axis) or write (second to last) the residual stream: {name: (axis, size)}."""
    d = cfg.n_embd
    reads = ("attn_q.weight", "attn_k.weight", "attn_v.weight", "attn_qkv.weight", "attn_gate.weight",
             "ffn_gate.weight", "ffn_up.weight", "ffn_gate_inp.weight", "ffn_gate_exps.weight", "ffn_up_exps.weight",
             "ffn_gate_shexp.weight", "ffn_up_shexp.weight", "ssm_alpha.weight", "ssm_beta.weight", "ssm_ba.weight",
             "ssm_in.weight")
    writes = ("attn_output.weight", "ffn_down.weight", "ffn_down_exps.weight", "ffn_down_shexp.weight",
              "ssm_out.weight", "nextn.eh_proj.weight")
    out = {n: (-1, d) for n in reads}
    out.update({n: (-2, d) for n in writes})
    return out


def _inner_dims(cfg: ModelConfig, il: int) -> dict:
    """Full shapes the head counts and sizes fix (logical row-major shapes)."""
    if cfg.recurrent[il]:
        v = cfg.ssm_n_v_heads
        qkv = 2 * cfg.ssm_n_k_heads * cfg.ssm_head_k_dim + cfg.ssm_inner
        return {"ssm_out.weight": (cfg.n_embd, cfg.ssm_inner), "ssm_alpha.weight": (v, cfg.n_embd),
                "ssm_beta.weight": (v, cfg.n_embd), "ssm_conv1d.weight": (qkv, cfg.ssm_conv_kernel),
                "attn_qkv.weight": (qkv, cfg.n_embd)}
    if cfg.arch in SWA_ARCHS:
        kv = cfg.kv_heads(il)
        return {"attn_q.weight": (cfg.n_head * cfg.head_dim, cfg.n_embd),
                "attn_k.weight": (kv * cfg.head_dim, cfg.n_embd), "attn_v.weight": (kv * cfg.v_dim, cfg.n_embd),
                "attn_output.weight": (cfg.n_embd, cfg.n_head * cfg.v_dim), "attn_sinks.weight": (cfg.n_head,)}
    if cfg.arch in HYBRID_ARCHS:   # gated attention: q and its gate interleaved per head
        return {"attn_q.weight": (2 * cfg.n_head * cfg.head_dim, cfg.n_embd),
                "attn_k.weight": (cfg.n_head_kv * cfg.head_dim, cfg.n_embd),
                "attn_v.weight": (cfg.n_head_kv * cfg.head_dim, cfg.n_embd),
                "attn_output.weight": (cfg.n_embd, cfg.n_head * cfg.head_dim)}
    return {}

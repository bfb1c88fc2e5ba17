"""`nextn convert`: Hugging Face safetensors checkpoint -> GGUF with llama.cpp's names and metadata.

Three publishing forms (../shared/MTP.md): bundled (default), trunk-only (--no-mtp) and head-only
(--mtp, file name prefixed `mtp-`). Output is written to a temporary file and renamed at the end,
so a failed conversion leaves nothing behind.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from gguf import ExpertGatingFuncType, GGMLQuantizationType as Q, GGUFWriter
from safetensors import safe_open
from tqdm import tqdm

from . import hfnames
from .errors import NextnError
from .gguf_write import atomic_output, choose_type, encode_tensor, tensor_order
from .hfvocab import load_vocab, write_vocab

HF_ARCHS = {
    "Qwen3_5ForCausalLM": "qwen35", "Qwen3_5ForConditionalGeneration": "qwen35",
    "Qwen3_5MoeForCausalLM": "qwen35moe", "Qwen3_5MoeForConditionalGeneration": "qwen35moe",
    "Qwen3NextForCausalLM": "qwen3next", "Glm4MoeForCausalLM": "glm4moe",
}
ZERO_CENTERED_NORMS = ("qwen35", "qwen35moe", "qwen3next")
OUTTYPES = {"f32": Q.F32, "f16": Q.F16, "bf16": Q.BF16, "q8_0": Q.Q8_0, "q5_0": Q.Q5_0, "q4_0": Q.Q4_0}
MODES = ("bundled", "no-mtp", "mtp")


class Checkpoint:
    """A Hugging Face model directory: merged text config plus lazy access to its safetensors shards."""

    def __init__(self, hf_dir: Path):
        self.dir = hf_dir
        cfg_path = hf_dir / "config.json"
        if not cfg_path.exists():
            raise NextnError(f"{hf_dir}: config.json is missing (expected a Hugging Face model directory)")
        raw = json.loads(cfg_path.read_text())
        self.hp = {**raw, **raw.get("text_config", {})}
        hf_arch = (raw.get("architectures") or ["?"])[0]
        if hf_arch not in HF_ARCHS:
            raise NextnError(f"{cfg_path}: architecture {hf_arch} is not supported "
                             f"(supported: {', '.join(sorted(HF_ARCHS))})")
        self.arch = HF_ARCHS[hf_arch]
        self.n_trunk = int(self.hp["num_hidden_layers"])
        self.n_mtp = int(self.hp.get("mtp_num_hidden_layers", self.hp.get("num_nextn_predict_layers",
                                                                           self.hp.get("num_mtp_layers", 0))) or 0)
        files = sorted(hf_dir.glob("*.safetensors"))
        if not files:
            raise NextnError(f"{hf_dir}: no *.safetensors files found")
        self.where: dict[str, Path] = {}
        for f in files:
            with safe_open(f, "pt") as sf:
                for k in sf.keys():
                    self.where[k] = f

    def get(self, name: str) -> torch.Tensor:
        with safe_open(self.where[name], "pt") as sf:
            return sf.get_tensor(name).float()


def convert(hf_dir: str | Path, out: str | Path, *, outtype: str = "f16", mode: str = "bundled",
            keep_mtp_precision: bool = False, progress: bool = True) -> Path:
    if outtype not in OUTTYPES:
        raise NextnError(f"unknown --outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if mode not in MODES:
        raise NextnError(f"unknown mode {mode!r}")
    ck = Checkpoint(Path(hf_dir))
    if mode == "mtp" and ck.n_mtp == 0:
        raise NextnError(f"{hf_dir}: checkpoint has no MTP layers (mtp_num_hidden_layers / num_nextn_predict_layers "
                         f"is 0), so there is no head to export")
    out = Path(out)
    if out.is_dir():
        out = out / f"{Path(hf_dir).name}-{outtype}.gguf"
    if mode == "mtp" and not out.name.startswith("mtp-"):
        out = out.with_name("mtp-" + out.name)
    with_mtp = mode != "no-mtp" and ck.n_mtp > 0
    tensors = list(_tensors(ck, mode))
    with atomic_output(out) as tmp:
        w = GGUFWriter(str(tmp), ck.arch)
        _write_metadata(w, ck, with_mtp)
        write_vocab(w, load_vocab(ck.dir, int(ck.hp["vocab_size"]), ck.arch), _eos(ck.hp))
        qtype = OUTTYPES[outtype]
        w.add_file_type(_file_type(qtype))
        for name, data in tqdm(tensors, desc=f"converting {Path(hf_dir).name}", disable=not progress, leave=False):
            il = int(name.split(".")[1]) if name.startswith("blk.") else -1
            t = choose_type(name, data.shape, qtype, is_mtp=il >= ck.n_trunk, keep_mtp_precision=keep_mtp_precision)
            arr, raw = encode_tensor(data.numpy(), t)
            w.add_tensor(name, arr, raw_dtype=raw)
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file(progress=False)
        w.close()
    return out


def _eos(hp: dict) -> int | None:
    eos = hp.get("eos_token_id")
    return eos[0] if isinstance(eos, list) else eos


def _file_type(q: Q) -> int:
    return {Q.F32: 0, Q.F16: 1, Q.Q4_0: 2, Q.Q8_0: 7, Q.Q5_0: 8, Q.BF16: 32}[q]


def _tensors(ck: Checkpoint, mode: str):
    """Yield (gguf_name, float tensor) in llama.cpp order, transformed for the GGUF layout."""
    experts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    n_exp = int(ck.hp.get("num_experts", ck.hp.get("n_routed_experts", 0)) or 0)
    out = []
    for raw_name in ck.where:
        name = hfnames.canonical(raw_name)
        if name is None:
            continue
        if name.startswith("mtp."):
            name = hfnames.qwen_mtp_to_block(name, ck.n_trunk)
        blk = hfnames.split_block(name)
        is_mtp = blk is not None and blk[0] >= ck.n_trunk
        if mode == "no-mtp" and is_mtp:
            continue
        if mode == "mtp" and not is_mtp and name not in hfnames.GLOBAL:
            continue
        if blk is not None and (e := hfnames.expert_of(blk[1])):
            parts = experts.setdefault((blk[0], e[1]), {})
            parts[e[0]] = ck.get(raw_name)
            if len(parts) == n_exp:
                stacked = torch.stack([parts[i] for i in range(n_exp)])
                out += _transform(ck, f"model.layers.{blk[0]}.mlp.experts.{e[1]}.weight", stacked)
                del experts[(blk[0], e[1])]
            continue
        out += _transform(ck, name, ck.get(raw_name))
    if experts:
        raise NextnError(f"{ck.dir}: incomplete expert tensors for {sorted(experts)}")
    if mode != "no-mtp" and ck.n_mtp and not any(n.startswith(f"blk.{ck.n_trunk}.nextn.") for n, _ in out):
        raise NextnError(f"{ck.dir}: config declares {ck.n_mtp} MTP layer(s) but the checkpoint holds no MTP tensors "
                         f"(convert with --no-mtp)")
    return sorted(out, key=lambda item: tensor_order(item[0]))


def _transform(ck: Checkpoint, name: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    hp, arch = ck.hp, ck.arch
    suffix = hfnames.split_block(name)[1] if name.startswith("model.layers.") else name
    if suffix.endswith("mlp.experts.gate_up_proj") or suffix.endswith("mlp.experts.gate_up_proj.weight"):
        gate, up = t.chunk(2, dim=1)
        base = name.rsplit(".gate_up_proj", 1)[0]
        return _transform(ck, base + ".gate_proj.weight", gate) + _transform(ck, base + ".up_proj.weight", up)
    if suffix.endswith("mlp.experts.down_proj"):
        return _transform(ck, name + ".weight", t)
    if arch in ZERO_CENTERED_NORMS and suffix.endswith("norm.weight") and "linear_attn.norm" not in suffix:
        t = t + 1
    if suffix.endswith("linear_attn.A_log"):
        t = -torch.exp(t)
    if suffix.endswith("linear_attn.conv1d.weight"):
        t = t.squeeze(1)
    if arch == "qwen3next" and suffix.endswith("linear_attn.in_proj_qkvz.weight"):
        return _split_qkvz(name, t, hp)
    if arch in ("qwen35", "qwen35moe") and "linear_attn." in suffix:
        t = _tile_v_heads(suffix, t, hp)
    if name in ("lm_head.weight",) and hp.get("tie_word_embeddings") and "model.embed_tokens.weight" in ck.where:
        return []
    gguf = hfnames.gguf_name(name)
    if gguf is None:
        raise NextnError(f"{ck.dir}: no GGUF name for tensor '{name}'")
    return [(gguf, t.contiguous())]


def _tile_v_heads(suffix: str, t: torch.Tensor, hp: dict) -> torch.Tensor:
    """Reorder V heads from grouped-by-K-head to tiled order (llama.cpp's Qwen3.5 layout)."""
    hk, hv = hp["linear_num_key_heads"], hp["linear_num_value_heads"]
    if hk == hv:
        return t
    dk, dv, r = hp["linear_key_head_dim"], hp["linear_value_head_dim"], hv // hk

    def tile(x: torch.Tensor, dim: int, head_dim: int) -> torch.Tensor:
        shape = list(x.shape)
        x = x.reshape(*shape[:dim], hk, r, head_dim, *shape[dim + 1:])
        return x.transpose(dim, dim + 1).reshape(shape)

    qk = 2 * hk * dk
    if suffix.endswith(("in_proj_qkv.weight", "conv1d.weight")):
        return torch.cat((t[:qk], tile(t[qk:], 0, dv)), 0)
    if suffix.endswith("in_proj_z.weight"):
        return tile(t, 0, dv)
    if suffix.endswith(("in_proj_a.weight", "in_proj_b.weight", "A_log", "dt_bias")):
        return tile(t, 0, 1)
    if suffix.endswith("out_proj.weight"):
        return tile(t, 1, dv)
    return t


def _split_qkvz(name: str, t: torch.Tensor, hp: dict) -> list[tuple[str, torch.Tensor]]:
    """Qwen3-Next packs [q, k, v, z] per K-head group; GGUF wants [all q | all k | all v] and z apart."""
    hk, hv = hp["linear_num_key_heads"], hp["linear_num_value_heads"]
    dk, dv = hp["linear_key_head_dim"], hp["linear_value_head_dim"]
    r = hv // hk
    grouped = t.reshape(hk, 2 * dk + 2 * r * dv, -1)
    q, k, v, z = grouped.split((dk, dk, r * dv, r * dv), dim=1)
    flat = [x.reshape(-1, t.shape[1]) for x in (q, k, v, z)]
    il = hfnames.split_block(name)[0]
    return [(f"blk.{il}.attn_qkv.weight", torch.cat(flat[:3], 0).contiguous()),
            (f"blk.{il}.attn_gate.weight", flat[3].contiguous())]


def _write_metadata(w: GGUFWriter, ck: Checkpoint, with_mtp: bool) -> None:
    hp, arch = ck.hp, ck.arch
    n_embd, n_head = hp["hidden_size"], hp["num_attention_heads"]
    head_dim = hp.get("head_dim") or n_embd // n_head
    rope = hp.get("rope_parameters") or {}
    theta = rope.get("rope_theta", hp.get("rope_theta", 10000.0))
    partial = rope.get("partial_rotary_factor", hp.get("partial_rotary_factor",
                                                       0.5 if arch == "glm4moe" else 0.25))
    w.add_name(Path(ck.dir).name)
    w.add_context_length(int(hp.get("max_position_embeddings", 4096)))
    w.add_embedding_length(n_embd)
    w.add_block_count(ck.n_trunk + (ck.n_mtp if with_mtp else 0))
    if with_mtp:
        w.add_nextn_predict_layers(ck.n_mtp)
    if hp.get("intermediate_size"):
        w.add_feed_forward_length(int(hp["intermediate_size"]))
    w.add_head_count(n_head)
    w.add_head_count_kv(hp.get("num_key_value_heads", n_head))
    w.add_key_length(head_dim)
    w.add_value_length(head_dim)
    w.add_rope_freq_base(float(theta))
    w.add_rope_dimension_count(int(head_dim * partial))
    w.add_layer_norm_rms_eps(float(hp.get("rms_norm_eps", 1e-6)))
    w.add_vocab_size(int(hp["vocab_size"]))
    n_exp = int(hp.get("num_experts", hp.get("n_routed_experts", 0)) or 0)
    if n_exp:
        w.add_expert_count(n_exp)
        w.add_expert_used_count(int(hp["num_experts_per_tok"]))
        w.add_expert_feed_forward_length(int(hp["moe_intermediate_size"]))
        if "norm_topk_prob" in hp:
            w.add_expert_weights_norm(bool(hp["norm_topk_prob"]))
    if arch in ZERO_CENTERED_NORMS:
        _write_hybrid(w, hp, arch, ck.n_mtp if with_mtp else 0)
    if arch == "glm4moe":
        n_shared = int(hp.get("n_shared_experts", 0))
        w.add_leading_dense_block_count(int(hp.get("first_k_dense_replace", 0)))
        w.add_expert_shared_count(n_shared)
        w.add_expert_shared_feed_forward_length(int(hp["moe_intermediate_size"]) * max(n_shared, 1))
        w.add_expert_weights_scale(float(hp.get("routed_scaling_factor", 1.0)))
        w.add_expert_gating_func(ExpertGatingFuncType.SIGMOID)
        w.add_expert_group_count(int(hp.get("n_group", 1)))
        w.add_expert_group_used_count(int(hp.get("topk_group", 1)))


def _write_hybrid(w: GGUFWriter, hp: dict, arch: str, n_mtp: int) -> None:
    w.add_ssm_conv_kernel(int(hp["linear_conv_kernel_dim"]))
    w.add_ssm_state_size(int(hp["linear_key_head_dim"]))
    w.add_ssm_group_count(int(hp["linear_num_key_heads"]))
    w.add_ssm_time_step_rank(int(hp["linear_num_value_heads"]))
    w.add_ssm_inner_size(int(hp["linear_value_head_dim"] * hp["linear_num_value_heads"]))
    if hp.get("shared_expert_intermediate_size"):
        w.add_expert_shared_feed_forward_length(int(hp["shared_expert_intermediate_size"]))
    types = hp.get("layer_types")
    interval = int(hp.get("full_attention_interval", 4))
    if types:
        recurrent = [t == "linear_attention" for t in types]
        fits = [n for n in range(1, len(types) + 1)
                if all(r == ((i + 1) % n != 0) for i, r in enumerate(recurrent))]
        if not fits:
            w.add_array(f"{arch}.attention.recurrent_layers", recurrent + [False] * n_mtp)
            interval = 0
        else:
            interval = fits[0]
    if interval:
        w.add_full_attention_interval(interval)
    if arch != "qwen3next":
        sections = list((hp.get("rope_parameters") or {}).get("mrope_section") or [11, 11, 10])
        w.add_rope_dimension_sections((sections + [0, 0, 0, 0])[:4])


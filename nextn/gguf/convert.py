"""`nextn convert`: Hugging Face safetensors checkpoint -> GGUF with llama.cpp's names and metadata.

Three publishing forms (../shared/MTP.md): bundled (default), trunk-only (--no-mtp) and head-only
(--mtp, file name prefixed `mtp-`). The metadata keys and values are those llama.cpp's own converter
writes for the same checkpoint (tests/data/llamacpp_keys.json records them), so files from either
converter load in either engine. Output is written atomically: a failed conversion leaves nothing.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
from gguf import GGUFWriter
from safetensors import safe_open
from tqdm import tqdm

from ..errors import NextnError
from . import metadata, names
from .vocab import load_vocab, write_vocab
from .writer import FILE_TYPE, OUTTYPES, choose_type, encode_tensor, parameter_label, tensor_order, write_gguf

HF_ARCHS = {
    "Qwen3_5ForCausalLM": "qwen35", "Qwen3_5ForConditionalGeneration": "qwen35",
    "Qwen3_5MoeForCausalLM": "qwen35moe", "Qwen3_5MoeForConditionalGeneration": "qwen35moe",
    "Qwen3NextForCausalLM": "qwen3next", "Glm4MoeForCausalLM": "glm4moe",
    "DeepseekV3ForCausalLM": "deepseek2", "Glm4MoeLiteForCausalLM": "deepseek2",
    "MiMoV2FlashForCausalLM": "mimo2", "MiMoV2ForCausalLM": "mimo2",
}
_QKV = {"self_attn.q_proj.weight": 0, "self_attn.k_proj.weight": 1, "self_attn.v_proj.weight": 2}
MODES = ("bundled", "no-mtp", "mtp")
_QWEN_MTP_LAYER = re.compile(r"^(?:model\.)?mtp\.layers\.(\d+)\.")


class Checkpoint:
    """A Hugging Face model directory: merged text config plus lazy access to its safetensors shards."""

    def __init__(self, hf_dir: Path):
        self.dir = hf_dir
        cfg_path = hf_dir / "config.json"
        if not cfg_path.exists():
            raise NextnError(f"{hf_dir}: config.json is missing (expected a Hugging Face model directory)")
        try:
            raw = json.loads(cfg_path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise NextnError(f"{cfg_path}: not valid JSON ({e})") from None
        self.hp = {**raw, **raw.get("text_config", {})}
        hf_arch = (raw.get("architectures") or ["?"])[0]
        if hf_arch not in HF_ARCHS:
            raise NextnError(f"{cfg_path}: architecture {hf_arch} is not supported "
                             f"(supported: {', '.join(sorted(HF_ARCHS))})")
        self.arch = HF_ARCHS[hf_arch]
        # GLM-4.7-Flash is a deepseek2 file with GLM's tokenizer conventions
        self.vocab_style = "glm4moelite" if hf_arch == "Glm4MoeLiteForCausalLM" else self.arch
        self.n_trunk = int(self.hp["num_hidden_layers"])
        files = sorted(hf_dir.glob("*.safetensors"))
        if not files:
            raise NextnError(f"{hf_dir}: no *.safetensors files found")
        self.where: dict[str, Path] = {}
        for f in files:
            with safe_open(f, "pt") as sf:
                for k in sf.keys():
                    self.where[k] = f
        self.fp8_block = _fp8_block(hf_dir, raw.get("quantization_config") or {}, self.where)
        self.n_mtp = self._count_mtp_layers()
        gen = hf_dir / "generation_config.json"
        try:
            self.generation_config = json.loads(gen.read_text()) if gen.exists() else {}
        except (json.JSONDecodeError, UnicodeDecodeError):   # as llama.cpp: not every checkpoint's is valid
            self.generation_config = {}

    def _count_mtp_layers(self) -> int:
        """From the config where it says; otherwise from the tensors (Qwen3-Next's config is silent)."""
        for key in ("mtp_num_hidden_layers", "num_nextn_predict_layers", "num_mtp_layers"):
            if self.hp.get(key):
                return int(self.hp[key])
        found = {int(m.group(1)) for k in self.where if (m := _QWEN_MTP_LAYER.match(k))}
        return max(found) + 1 if found else 0

    def get(self, name: str) -> torch.Tensor:
        with safe_open(self.where[name], "pt") as sf:
            t = sf.get_tensor(name)
        if t.dtype in FP8:
            return self._dequantize(name, t)
        return t.float()

    def _dequantize(self, name: str, t: torch.Tensor) -> torch.Tensor:
        """An FP8 weight times its block scales (`NAME_scale_inv`, one per block of weight_block_size: the
        form DeepSeek-V3, Kimi-K2 and MiMo-V2 publish), exactly in float32."""
        scale_name = name + "_scale_inv"
        if scale_name not in self.where or self.fp8_block is None:
            raise NextnError(f"{self.dir}: FP8 tensor '{name}' has no block scales ('{scale_name}' with "
                             f"quantization_config.weight_block_size); nextn convert reads block-scaled FP8 only")
        with safe_open(self.where[scale_name], "pt") as sf:
            scale = sf.get_tensor(scale_name).float()
        bn, bk = self.fp8_block
        n, k = t.shape
        want = (-(-n // bn), -(-k // bk))
        if tuple(scale.shape) != want:
            raise NextnError(f"{self.dir}: '{scale_name}' has shape {list(scale.shape)}; {list(t.shape)} weights in "
                             f"blocks of {bn} x {bk} need {list(want)}")
        full = scale.repeat_interleave(bn, 0)[:n].repeat_interleave(bk, 1)[:, :k]
        return t.float() * full


def convert(hf_dir: str | Path, out: str | Path, *, outtype: str = "f16", mode: str = "bundled",
            keep_mtp_precision: bool = False, progress: bool = True, split_max_size: int = 0) -> Path:
    if outtype not in OUTTYPES:
        raise NextnError(f"unknown --outtype {outtype!r} (choose from {', '.join(OUTTYPES)})")
    if mode not in MODES:
        raise NextnError(f"unknown mode {mode!r}")
    ck = Checkpoint(Path(hf_dir))
    if mode == "mtp" and ck.n_mtp == 0:
        raise NextnError(f"{hf_dir}: checkpoint has no MTP layers (mtp_num_hidden_layers / num_nextn_predict_layers "
                         f"is 0 and no mtp.* tensors), so there is no head to export")
    out = Path(out)
    if out.is_dir():
        out = out / f"{Path(hf_dir).name}-{outtype}.gguf"
    if mode == "mtp" and not out.name.startswith("mtp-"):
        out = out.with_name("mtp-" + out.name)
    n_mtp = ck.n_mtp if mode != "no-mtp" else 0
    metadata.write(GGUFWriter(None, ck.arch), ck.arch, ck.hp, ck.n_trunk, n_mtp)   # a config nextn refuses fails here
    tensors = list(_tensors(ck, mode))
    qtype = OUTTYPES[outtype]

    def add_metadata(w: GGUFWriter) -> None:
        w.add_type("model")
        w.add_name(_model_name(ck))
        metadata.write_sampling(w, ck.generation_config)
        metadata.write(w, ck.arch, ck.hp, ck.n_trunk, n_mtp)
        write_vocab(w, load_vocab(ck.dir, int(ck.hp["vocab_size"]), ck.vocab_style), _eos(ck.hp))
        w.add_file_type(FILE_TYPE[qtype])
        w.add_quantization_version(2)
        w.add_size_label(parameter_label(w))

    def add_tensors(w: GGUFWriter) -> None:
        for name, data in tqdm(tensors, desc=f"converting {Path(hf_dir).name}", disable=not progress, leave=False):
            t = choose_type(name, data.shape, qtype, is_mtp=_is_mtp(name, ck.n_trunk),
                            keep_mtp_precision=keep_mtp_precision)
            arr, raw = encode_tensor(data.numpy(), t)
            w.add_tensor(name, arr, raw_dtype=raw)

    return write_gguf(out, ck.arch, add_metadata, add_tensors, split_max_size)


FP8 = (torch.float8_e4m3fn, torch.float8_e5m2)


def _fp8_block(hf_dir: Path, quant: dict, where: dict) -> tuple[int, int] | None:
    """The block size of a block-scaled FP8 checkpoint (quantization_config quant_method fp8 with
    weight_block_size), None for an unquantized one; other quantization methods are refused in one line."""
    method = quant.get("quant_method")
    scaled = any(k.endswith("_scale_inv") for k in where)
    if method is None and not scaled:
        return None
    if method not in (None, "fp8"):
        raise NextnError(f"{hf_dir}: quantization_config.quant_method {method!r} is not supported by nextn convert "
                         f"(BF16 / F16 / F32 weights, or block-scaled FP8)")
    block = quant.get("weight_block_size")
    if not (isinstance(block, list) and len(block) == 2 and all(isinstance(b, int) and b > 0 for b in block)):
        raise NextnError(f"{hf_dir}: an FP8 checkpoint without quantization_config.weight_block_size [rows, columns] "
                         f"(per-tensor scales are not supported)")
    return block[0], block[1]


def _model_name(ck: Checkpoint) -> str:
    return ck.hp.get("_name_or_path") or ck.dir.resolve().name


def _eos(hp: dict) -> int | None:
    eos = hp.get("eos_token_id")
    return eos[0] if isinstance(eos, list) else eos


def _is_mtp(gguf_name: str, n_trunk: int) -> bool:
    return gguf_name.startswith("blk.") and int(gguf_name.split(".")[1]) >= n_trunk


def _tensors(ck: Checkpoint, mode: str):
    """Yield (gguf_name, float tensor) in llama.cpp order, transformed for the GGUF layout."""
    experts: dict[tuple[int, str], dict[int, torch.Tensor]] = {}
    qkv: dict[int, dict[int, torch.Tensor]] = {}     # MiMo-V2: q, k, v fused as llama.cpp's MTP graph wants them
    n_exp = int(ck.hp.get("num_experts", ck.hp.get("n_routed_experts", 0)) or 0)
    out = []
    for raw_name in ck.where:
        name = names.canonical(raw_name)
        if name is None or (ck.fp8_block and raw_name.endswith("_scale_inv")):     # scales: read with their weight
            continue
        if name.startswith("mtp."):
            name = names.qwen_mtp_to_block(name, ck.n_trunk)
        blk = names.split_block(name)
        is_mtp = blk is not None and blk[0] >= ck.n_trunk
        if mode == "no-mtp" and is_mtp:
            continue
        if mode == "mtp" and not is_mtp and name not in names.GLOBAL:
            continue
        if blk is not None and (e := names.expert_of(blk[1])):
            parts = experts.setdefault((blk[0], e[1]), {})
            parts[e[0]] = ck.get(raw_name)
            if len(parts) == n_exp:
                stacked = torch.stack([parts[i] for i in range(n_exp)])
                out += _transform(ck, f"model.layers.{blk[0]}.mlp.experts.{e[1]}.weight", stacked)
                del experts[(blk[0], e[1])]
            continue
        if ck.arch == "mimo2" and blk is not None and blk[1] in _QKV:
            parts = qkv.setdefault(blk[0], {})
            parts[_QKV[blk[1]]] = ck.get(raw_name)
            if len(parts) == 3:
                out.append((f"blk.{blk[0]}.attn_qkv.weight", torch.cat([parts.pop(i) for i in range(3)]).contiguous()))
            continue
        out += _transform(ck, name, ck.get(raw_name))
    if any(qkv.values()):
        raise NextnError(f"{ck.dir}: q_proj, k_proj and v_proj are not all present in layer(s) {sorted(qkv)}")
    if experts:
        raise NextnError(f"{ck.dir}: incomplete expert tensors for {sorted(experts)}")
    if mode != "no-mtp" and ck.n_mtp and not any(n.startswith(f"blk.{ck.n_trunk}.nextn.") for n, _ in out):
        raise NextnError(f"{ck.dir}: config declares {ck.n_mtp} MTP layer(s) but the checkpoint holds no MTP tensors "
                         f"(convert with --no-mtp)")
    return sorted(out, key=lambda item: tensor_order(item[0]))


def _transform(ck: Checkpoint, name: str, t: torch.Tensor) -> list[tuple[str, torch.Tensor]]:
    hp, arch = ck.hp, ck.arch
    suffix = names.split_block(name)[1] if name.startswith("model.layers.") else name
    if suffix.endswith("mlp.experts.gate_up_proj") or suffix.endswith("mlp.experts.gate_up_proj.weight"):
        gate, up = t.chunk(2, dim=1)
        base = name.rsplit(".gate_up_proj", 1)[0]
        return _transform(ck, base + ".gate_proj.weight", gate) + _transform(ck, base + ".up_proj.weight", up)
    if suffix.endswith("mlp.experts.down_proj"):
        return _transform(ck, name + ".weight", t)
    if arch in metadata.HYBRID and suffix.endswith("norm.weight") and "linear_attn.norm" not in suffix:
        t = t + 1                                              # zero-centred RMSNorm weights
    if suffix.endswith("linear_attn.A_log"):
        t = -torch.exp(t)
    if suffix.endswith("linear_attn.conv1d.weight"):
        t = t.squeeze(1)
    if arch == "qwen3next" and suffix.endswith("linear_attn.in_proj_qkvz.weight"):
        return _split_qkvz(name, t, hp)
    if arch in ("qwen35", "qwen35moe") and "linear_attn." in suffix:
        t = _tile_v_heads(suffix, t, hp)
    if suffix == "self_attn.kv_b_proj.weight":      # MLA: W_UK (transposed) and W_UV apart, as llama.cpp stores them
        H, nope, dv = hp["num_attention_heads"], hp["qk_nope_head_dim"], hp["v_head_dim"]
        k_b, v_b = t.view(H, nope + dv, t.shape[-1]).split((nope, dv), dim=1)
        base = name.rsplit(".kv_b_proj", 1)[0]
        return _transform(ck, base + ".k_b_proj.weight", k_b.transpose(1, 2)) + \
            _transform(ck, base + ".v_b_proj.weight", v_b)
    if arch in ("deepseek2", "mimo2") and suffix == "post_attention_layernorm.weight":
        return [(f"blk.{names.split_block(name)[0]}.ffn_norm.weight", t.contiguous())]
    if name == "lm_head.weight" and hp.get("tie_word_embeddings") and "model.embed_tokens.weight" in _canonical_names(ck):
        return []
    gguf = names.gguf_name(name)
    if gguf is None:
        raise NextnError(f"{ck.dir}: no GGUF name for tensor '{name}'")
    return [(gguf, t.contiguous())]


def _canonical_names(ck: Checkpoint) -> set[str]:
    return {names.canonical(n) for n in ck.where}


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
    il = names.split_block(name)[0]
    return [(f"blk.{il}.attn_qkv.weight", torch.cat(flat[:3], 0).contiguous()),
            (f"blk.{il}.attn_gate.weight", flat[3].contiguous())]

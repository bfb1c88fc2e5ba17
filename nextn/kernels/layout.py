"""Load-time weight layout for fast small-batch decoding.

Projections that read the same input are concatenated into one matrix (q|k|v; qkv|z|beta|alpha;
gate|up), and every dense matmul weight is stored transposed, [in, out], so a decode step does one
`x @ W` per projection: on CPUs a one-row product over a row-major [in, out] matrix streams the
weights at full speed, where x @ W.T does not. Tensors keep their GGUF names with a `.wT` suffix
(or the fused name); the split sizes of a fused matrix are stored beside it.

On CPUs with oneDNN, weights can also be pre-packed (`.packed`) for oneDNN's linear kernel, which
keeps 2-8 rows nearly as cheap as one where BLAS's small-M path grows about linearly: exactly the
verify-k+1-tokens case of speculative decoding. BLAS stays faster for a single row, so in "dual"
mode both layouts are kept (twice the matmul weight memory) and each product picks by row count.
"""

from __future__ import annotations

import torch

FUSED = {
    "attn_in": ("attn_q", "attn_k", "attn_v"),
    "ssm_in": ("attn_qkv", "attn_gate", "ssm_beta", "ssm_alpha"),
    "ssm_in_ba": ("attn_qkv", "attn_gate", "ssm_ba"),
    "ffn_gate_up": ("ffn_gate", "ffn_up"),
    "ffn_gate_up_shexp": ("ffn_gate_shexp", "ffn_up_shexp"),
}
TRANSPOSED = ("attn_output", "ssm_out", "ffn_down", "ffn_down_shexp", "nextn.eh_proj")


def onednn_available() -> bool:
    return torch.backends.mkldnn.is_available() and hasattr(torch.ops.mkldnn, "_reorder_linear_weight")


def pack(weight_out_in: torch.Tensor) -> torch.Tensor:
    return torch.ops.mkldnn._reorder_linear_weight(weight_out_in.contiguous(), batch_size=4)


def fuse_block(w: dict, layout: str = "blas", transpose: tuple[str, ...] = TRANSPOSED) -> dict:
    """layout: "blas" ([in, out] tensors), "onednn" (pre-packed) or "dual" (both)."""
    """Rewrite one block's weight dict in place (originals are dropped, so no memory is duplicated)."""
    for fused, parts in FUSED.items():
        if all(f"{p}.weight" in w for p in parts):
            mats = [w.pop(f"{p}.weight") for p in parts]
            w[f"{fused}.wT"] = torch.cat(mats, 0).t().contiguous()
            w[f"{fused}.split"] = tuple(m.shape[0] for m in mats)
            if any(f"{p}.bias" in w for p in parts):
                w[f"{fused}.bias"] = torch.cat([w.pop(f"{p}.bias", None) if f"{p}.bias" in w
                                                else torch.zeros(m.shape[0], dtype=m.dtype, device=m.device)
                                                for p, m in zip(parts, mats)])
    if "ffn_gate_exps.weight" in w and "ffn_up_exps.weight" in w:   # experts: [E, 2 ff, D], one product each
        w["ffn_gate_up_exps.weight"] = torch.cat((w.pop("ffn_gate_exps.weight"), w.pop("ffn_up_exps.weight")), 1)
    for name in transpose:
        if f"{name}.weight" in w:
            w[f"{name}.wT"] = w.pop(f"{name}.weight").t().contiguous()
    if layout in ("onednn", "dual"):
        for key in [k for k in w if k.endswith(".wT")]:
            w[key[:-3] + ".packed"] = pack((w[key] if layout == "dual" else w.pop(key)).t())
    return w


def project(x: torch.Tensor, w: dict, name: str) -> torch.Tensor:
    bias = w.get(f"{name}.bias")
    packed, plain = w.get(f"{name}.packed"), w.get(f"{name}.wT")
    if packed is not None and (plain is None or x.numel() > x.shape[-1]):   # several rows: oneDNN
        return torch.ops.mkldnn._linear_pointwise(x, packed, bias, "none", [], "")
    out = x @ plain
    return out + bias if bias is not None else out


def has(w: dict, name: str) -> bool:
    return f"{name}.wT" in w or f"{name}.packed" in w


def project_split(x: torch.Tensor, w: dict, name: str) -> tuple[torch.Tensor, ...]:
    return project(x, w, name).split(w[f"{name}.split"], dim=-1)


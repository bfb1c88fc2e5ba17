"""An MTP reference built from transformers modules: transformers runs no MTP head, so nextn's MTP
forward is checked against one assembled from the checkpoint's own decoder-layer and norm classes."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import torch
from safetensors import safe_open

def mtp_head(cfg, module):
    """A fresh MTP head in Qwen3.5's checkpoint naming (fc, pre_fc_norm_embedding/hidden, layers.0,
    norm), built from a transformers modeling module's own decoder layer and RMSNorm classes. Its
    forward is ../shared/MTP.md's: concat(enorm(embedding), hnorm(hidden)) -> fc -> block -> norm."""
    import copy

    import torch.nn as nn

    layer_cls = next(getattr(module, n) for n in dir(module) if n.endswith("DecoderLayer"))
    norm_cls = next(getattr(module, n) for n in dir(module) if n.endswith("RMSNorm") and "Gated" not in n)
    n_trunk = cfg.num_hidden_layers

    class MTPHead(nn.Module):
        def __init__(self):
            super().__init__()
            one = copy.deepcopy(cfg)
            mimo = cfg.model_type == "mimo_v2_flash"      # MiMo's MTP layers: a sliding-window block, dense MLP
            if hasattr(one, "layer_types"):
                one.layer_types = ["sliding_attention" if mimo else "full_attention"] * (n_trunk + 1)
            if getattr(one, "mlp_layer_types", None) is not None:
                one.mlp_layer_types = list(one.mlp_layer_types[:n_trunk]) + ["dense" if mimo else "sparse"]
            d = cfg.hidden_size
            self.fc = nn.Linear(2 * d, d, bias=False)
            self.pre_fc_norm_embedding = norm_cls(d, eps=cfg.rms_norm_eps)
            self.pre_fc_norm_hidden = norm_cls(d, eps=cfg.rms_norm_eps)
            self.layers = nn.ModuleList([layer_cls(one, n_trunk)])
            self.norm = norm_cls(d, eps=cfg.rms_norm_eps)

        def forward(self, embeds, hidden, rope, mask=None):
            u = self.fc(torch.cat((self.pre_fc_norm_embedding(embeds), self.pre_fc_norm_hidden(hidden)), -1))
            u = self.layers[0](u, position_embeddings=rope, attention_mask=mask)
            return self.norm(u)

    return MTPHead()


def mtp_rope(hf_model, x: torch.Tensor, positions: torch.Tensor):
    """cos/sin for an MTP layer: the rotary embedding of its attention kind (MiMo's layers slide)."""
    text = getattr(hf_model.model, "language_model", hf_model.model)
    if getattr(hf_model.config, "model_type", "") == "mimo_v2_flash":
        return text.rotary_emb(x, positions, layer_type="sliding_attention")
    return text.rotary_emb(x, positions)


def mtp_mask(hf_model, n: int):
    """The additive mask an MTP layer's n rows need: None where transformers' attention is causal without
    one (SDPA); MiMo's eager attention gets its causal sliding window explicitly."""
    cfg = hf_model.config
    if getattr(cfg, "model_type", "") != "mimo_v2_flash":
        return None
    q, k = torch.arange(n)[:, None], torch.arange(n)[None, :]
    seen = (k <= q) & (q - k < cfg.sliding_window)
    return torch.zeros(n, n).masked_fill(~seen, float("-inf"))[None, None]


def _mtp_state(hf_dir: Path, n_trunk: int, layer: int = 0) -> dict[str, torch.Tensor]:
    """MTP layer `layer`'s tensors from every safetensors file of a checkpoint (either shape)."""
    out = {}
    for f in sorted(Path(hf_dir).glob("*.safetensors")):
        with safe_open(f, "pt") as sf:
            for k in sf.keys():
                numbered = re.match(r"^(?:model\.)?mtp\.layers\.(\d+)\.", k)     # Qwen's one layer, MiMo's three
                if (int(numbered.group(1)) == layer if numbered else layer == 0 and k.startswith(("mtp.", "model.mtp."))) \
                        or k.startswith(f"model.layers.{n_trunk + layer}."):
                    out[k] = sf.get_tensor(k).float()
    return out


def mtp_reference(hf_dir: str | Path, hf_model, arch: str, layer: int = 0):
    """The checkpoint's MTP layer `layer` as `mtp_head` modules: an independent reference for nextn's MTP
    forward (transformers does not run it). Returns (head, embedding, lm_head) modules."""
    import torch.nn as nn

    cfg = getattr(hf_model.config, "text_config", hf_model.config)
    text_model = getattr(hf_model.model, "language_model", hf_model.model)
    raw = _mtp_state(Path(hf_dir), cfg.num_hidden_layers, layer)
    if arch == "mimo2":       # model.mtp.layers.{j}.*, MiMo's own names
        names = {"eh_proj": "fc", "enorm": "pre_fc_norm_embedding", "hnorm": "pre_fc_norm_hidden",
                 "final_layernorm": "norm"}
        block = {"pre_mlp_layernorm": "post_attention_layernorm", "self_attn.attention_sink_bias": "self_attn.sinks"}
        state = {}
        for k, v in raw.items():
            rest = k.split(".", 4)[4]
            stem, leaf = rest.rsplit(".", 1) if rest.count(".") else (rest, "")
            if stem in names:
                state[names[stem] + ".weight"] = v
            else:
                full = block.get(rest, block.get(stem, stem) + "." + leaf)
                state["layers.0." + full] = v
    elif arch in ("glm4moe", "deepseek2", "glm4moelite"):
        names = {"eh_proj": "fc", "enorm": "pre_fc_norm_embedding", "hnorm": "pre_fc_norm_hidden",
                 "shared_head.norm": "norm", "embed_tokens": "embed", "shared_head.head": "head"}
        state = {}
        for k, v in raw.items():
            rest = k.split(".", 3)[3]
            stem = rest.rsplit(".", 1)[0]
            state[names[stem] + ".weight" if stem in names else "layers.0." + rest] = v
    else:
        state = {k.split("mtp.", 1)[1]: v for k, v in raw.items()}
    head = mtp_head(cfg, importlib.import_module(type(hf_model).__module__))
    if "embed.weight" in state:
        head.embed = nn.Embedding(cfg.vocab_size, cfg.hidden_size)
        head.head = nn.Linear(cfg.hidden_size, cfg.vocab_size, bias=False)
    head.load_state_dict(state)
    head.eval()
    embed = head.embed if "embed.weight" in state else text_model.embed_tokens
    lm_head = head.head if "head.weight" in state else hf_model.lm_head
    return head, embed, lm_head

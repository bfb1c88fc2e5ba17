"""The three publishing forms of a model with MTP layers (../shared/MTP.md) and what makes a head fit a trunk.

bundled: trunk and MTP blocks in one file; trunk-only: no `nextn_predict_layers`; head-only
(`mtp-*.gguf`, like mmproj): the MTP blocks plus token_embd / output / output_norm, block_count
still counting the trunk, and no `blk.0.attn_norm.weight`.
"""

from __future__ import annotations

from .reader import GGUFFile, block_index

BUNDLED, TRUNK_ONLY, HEAD_ONLY = "bundled", "trunk-only", "head-only"
HEAD_GLOBALS = ("token_embd.weight", "output.weight", "output_norm.weight")


def form_of(gf: GGUFFile) -> str:
    if gf.n_mtp == 0:
        return TRUNK_ONLY
    if "blk.0.attn_norm.weight" not in gf.tensors:
        return HEAD_ONLY
    return BUNDLED


def is_mtp_tensor(gf: GGUFFile, name: str) -> bool:
    il = block_index(name)
    return il is not None and il >= gf.n_trunk


def head_mismatch(trunk: GGUFFile, head: GGUFFile) -> str | None:
    """Why `head` cannot serve as the MTP head of `trunk`, or None if it can."""
    if head.n_mtp == 0:
        return "it has no MTP layers (nextn_predict_layers missing)"
    checks = [
        ("architecture", trunk.arch, head.arch),
        ("embedding_length", trunk.arch_meta("embedding_length"), head.arch_meta("embedding_length")),
        ("vocabulary size", trunk.n_vocab, head.n_vocab),
        ("trunk layer count", trunk.n_trunk, head.n_trunk),
        ("attention.head_count", trunk.arch_meta("attention.head_count"), head.arch_meta("attention.head_count")),
    ]
    for what, a, b in checks:
        if a != b:
            return f"{what} differs ({a} in {trunk.path.name}, {b} in {head.path.name})"
    return None

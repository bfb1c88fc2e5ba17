"""Where the MTP head runs under `--tp N` (`--tp-mtp`): split over the ranks like the trunk, or its blocks
whole on rank 0.

Split, every draft step and every catch-up of the head is a forward of all ranks: rank 0 announces it, and
the embedding lookup, the block's two partial sums and the vocabulary gather are collectives. On rank 0,
the MTP blocks (attention, FFN, eh_proj, norms) are held whole by rank 0 alone (the other ranks hold none
of them) and run there without collectives, the embedding rows they need read from the memory-mapped file.
Their output rows: where they are few (a reduced draft vocabulary, a trimmed head) rank 0 holds those too
and a draft step involves no other rank; a full-vocabulary output matrix, the largest weight of a draft
step, stays split by vocabulary (each rank scores its rows of the trunk's output matrix, or of the head's
own, and rank 0 gathers them: one announced call and one gather per draft step).

`auto` keeps the blocks on rank 0 unless they hold routed experts (DeepSeek-V3's, GLM-4.5's and Qwen3.5-MoE's
MTP blocks are MoE layers as large as a trunk layer; holding one whole would undo the split's memory saving
on rank 0) and the head is not reduced. Measured in scripts/tp_bench.py (README: Several devices or hosts).
"""

from __future__ import annotations

from dataclasses import dataclass

from ..gguf import draft_vocab
from ..gguf.reader import block_index

SPLIT = None


@dataclass(frozen=True)
class Apart:
    """The MTP blocks whole on rank 0; `whole_output`: their output rows too (else split by vocabulary)."""
    whole_output: bool


def mtp_placement(config, trunk) -> Apart | None:
    """Apart(...) or SPLIT (None) for this configuration (config: EngineConfig; trunk: the opened model file);
    every rank reaches the same answer from the same file and flags."""
    if config.tp <= 1 or not config.use_mtp or config.tp_mtp == "split":
        return SPLIT
    from ..models.loader import find_head

    head = find_head(trunk, config.mtp_model) or trunk
    reduced = bool(config.draft_vocab) or head.meta(draft_vocab.KEY) is not None
    moe = any(n.endswith("ffn_gate_exps.weight") and (block_index(n) or 0) >= trunk.n_trunk for n in head.tensors)
    if config.tp_mtp == "auto" and moe and not reduced:
        return SPLIT
    return Apart(whole_output=reduced)

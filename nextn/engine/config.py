"""EngineConfig: how an engine is set up, and the command-line flags that set it (shared by every command)."""

from __future__ import annotations

import argparse
from dataclasses import dataclass, fields

from ..errors import NextnError
from .sequence import model_drafter_of, parse_spec

TP_MTP = ("auto", "split", "rank0")       # where the MTP head runs under --tp (parallel/placement.py)


@dataclass
class EngineConfig:
    model: str | None = None          # None: the bundled demo model
    mtp_model: str | None = None
    model_draft: str | None = None    # a smaller model with the same vocabulary, for --spec draft
    spec: str = "mtp"                 # mtp, ngram, mtp+ngram or none
    draft_max: int = 3                # the model drafter's most draft tokens per step
    ngram_min: int = 3                # n-gram drafts need a match of at least this many tokens
    ngram_max: int = 8                # and propose at most this many
    draft_vocab: int = 0              # > 0: the MTP head scores only this many (most frequent) token ids
    mtp_layers: int = 0               # > 0: load only the first N of the file's MTP layers (deeper drafts reuse the last)
    draft_min: int = 0
    draft_p_min: float = 0.0
    adaptive: bool = True             # False: always draft draft_max tokens
    n_parallel: int = 1
    ctx_size: int = 4096
    prefill_chunk: int = 512
    device: str | None = None
    dtype: str | None = None
    threads: int | None = None        # CPU threads (kernels and torch); None: one per core
    compile: bool = True              # False: run the native ops one by one instead of replaying a plan
    kernels: str = "int8"             # CPU products of Q4_K/Q6_K/Q8_0: int8 activations, or "exact" floats
    progress: bool = True
    tp: int = 1                       # tensor parallel ranks (parallel/): each holds 1/tp of every large weight
    tp_mtp: str = "auto"              # --tp: the MTP head split like the trunk, whole on rank 0, or auto (placement.py)

    def __post_init__(self):
        try:
            parse_spec(self.spec)
        except ValueError as e:
            raise NextnError(f"--spec: {e}") from None
        if ("draft" in self.drafters) != (self.model_draft is not None):
            raise NextnError("--spec draft (or draft+ngram) and --model-draft SMALL.gguf go together: the draft model "
                             "is a smaller model with the same vocabulary")
        if self.draft_vocab < 0 or (self.draft_vocab and "mtp" not in self.drafters):
            raise NextnError("--draft-vocab N (N > 0) restricts the MTP head: it needs --spec mtp or mtp+ngram")
        if not 0 <= self.mtp_layers <= 64 or (self.mtp_layers and "mtp" not in self.drafters):
            raise NextnError(f"--mtp-layers N (N in [1, 64], got {self.mtp_layers}) chooses the MTP layers drafts go "
                             f"through: it needs --spec mtp or mtp+ngram")
        if not 1 <= self.ngram_min <= 64 or not 1 <= self.ngram_max <= 16:
            raise NextnError(f"--ngram-min must be in [1, 64] and --ngram-max in [1, 16] "
                             f"(got {self.ngram_min} and {self.ngram_max})")
        if self.n_parallel < 1 or self.ctx_size < 8 or self.prefill_chunk < 1:
            raise NextnError("--parallel, --ctx-size and --prefill-chunk must be positive")
        if not 0 <= self.draft_min <= max(self.draft_max, 0) or not 0 <= self.draft_max <= 16:
            raise NextnError(f"--draft-max must be in [0, 16] and --draft-min in [0, --draft-max] "
                             f"(got {self.draft_max} and {self.draft_min})")
        if not 0 <= self.draft_p_min < 1:
            raise NextnError(f"--draft-p-min must be in [0, 1) (got {self.draft_p_min})")
        if self.kernels not in ("exact", "int8"):
            raise NextnError(f"--kernels must be 'exact' or 'int8', not {self.kernels!r}")
        if not 1 <= self.tp <= 1024:
            raise NextnError(f"--tp must be in [1, 1024] (got {self.tp})")
        if self.tp_mtp not in TP_MTP:
            raise NextnError(f"--tp-mtp must be one of {', '.join(TP_MTP)} (got {self.tp_mtp!r})")
        if self.tp > 1 and self.draft_vocab and self.tp_mtp == "split":
            raise NextnError("--draft-vocab with --tp-mtp split: a reduced head runs whole on rank 0 "
                             "(--tp-mtp rank0, or auto)")
        if self.threads is not None and not 1 <= self.threads <= 1024:
            raise NextnError(f"--threads must be in [1, 1024] (got {self.threads})")

    @property
    def drafters(self) -> tuple[str, ...]:
        return parse_spec(self.spec)

    @property
    def model_drafter(self) -> str | None:
        return model_drafter_of(self.drafters, self.draft_max)

    @property
    def use_mtp(self) -> bool:
        return self.model_drafter == "mtp"

    @staticmethod
    def add_args(p: argparse.ArgumentParser, spec_flag: bool = True) -> None:
        p.add_argument("-m", "--model", default=None, help="GGUF model (default: the bundled demo model)")
        p.add_argument("--mtp-model", default=None, help="separate MTP head GGUF (head-only, like mmproj)")
        p.add_argument("-md", "--model-draft", default=None,
                       help="a smaller model with the same vocabulary as draft model (with --spec draft)")
        if spec_flag:
            p.add_argument("--spec", default="mtp", metavar="DRAFTERS",
                           help="speculative decoding: mtp (the model's own head, default), ngram (prompt lookup), "
                                "draft (--model-draft), mtp+ngram / draft+ngram (n-gram drafts where the context "
                                "repeats, the model drafter elsewhere) or none")
        p.add_argument("--draft-max", type=int, default=3, help="most MTP / draft-model tokens per step (default 3, up to 16)")
        p.add_argument("--draft-vocab", type=int, default=0, metavar="N",
                       help="MTP drafts over the N most frequent token ids only (cheaper draft steps, same output; "
                            "ranked by a list in or beside the model, see nextn gguf draft-vocab)")
        p.add_argument("--mtp-layers", type=int, default=0, metavar="N",
                       help="of a model with several MTP layers, load only the first N: draft depth d runs layer d up "
                            "to N, deeper drafts reuse layer N (default: all; 1 = one layer reused at every depth)")
        p.add_argument("--ngram-min", type=int, default=3, help="n-gram drafts need a match this long (default 3)")
        p.add_argument("--ngram-max", type=int, default=8, help="most n-gram draft tokens per step (default 8)")
        p.add_argument("--draft-min", type=int, default=0, help="verify drafts only when at least this many")
        p.add_argument("--draft-p-min", type=float, default=0.0, help="stop drafting below this draft probability")
        p.add_argument("--no-adaptive", action="store_true", help="always draft --draft-max tokens")
        p.add_argument("-c", "--ctx-size", type=int, default=4096)
        p.add_argument("--prefill-chunk", type=int, default=512)
        p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: cuda if available)")
        p.add_argument("--dtype", default=None, choices=["f32", "f16", "bf16"], help="CUDA compute type (default bf16)")
        p.add_argument("-t", "--threads", type=int, default=None,
                       help="CPU threads, per rank with --tp (default: one per core, shared by the ranks of a host)")
        p.add_argument("--tp", type=int, default=1, metavar="N",
                       help="tensor parallel over N ranks (torch.distributed: gloo on CPU, NCCL on GPUs), each holding "
                            "1/N of every large weight; one host: nextn starts the ranks; several: torchrun")
        p.add_argument("--tp-mtp", default="auto", choices=TP_MTP,
                       help="with --tp: the MTP blocks split over the ranks like the trunk, or whole on rank 0 (no "
                            "collectives in them; their output rows stay split unless reduced by --draft-vocab or "
                            "trim-head, then rank 0 drafts alone). auto (default): rank 0 unless the blocks hold "
                            "routed experts and the head is not reduced")
        p.add_argument("--kernels", default="int8", choices=["int8", "exact"],
                       help="CPU products of Q4_K/Q6_K/Q8_0 weights: int8 (default: activations quantized to int8 "
                            "per 256 values, as llama.cpp does) or exact (weights decoded to floats: exact up to "
                            "float rounding, about half the decode speed)")
        p.add_argument("--no-compile", dest="compile", action="store_false",
                       help="run the decode step op by op instead of replaying its recorded plan (same tokens)")

    @classmethod
    def from_args(cls, args: argparse.Namespace, **override) -> "EngineConfig":
        values = dict(adaptive=not args.no_adaptive)
        values.update({f.name: getattr(args, f.name) for f in fields(cls) if hasattr(args, f.name)})
        values.update(override)
        return cls(**values)

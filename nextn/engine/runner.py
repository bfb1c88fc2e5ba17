"""ModelRunner: the only place in the engine that turns scheduled sequences into tensors and runs the trunk.

It owns the cache and each slot's last trunk hidden state. Prefill runs prompt chunks; `verify`
runs each sequence's last token plus its drafts in one forward and returns, per sequence, the
decision each row asks for (sampling.target); `commit` keeps what the acceptance rule kept.
"""

from __future__ import annotations

import torch

from ..models.cache import Cache
from ..models.model import Model
from ..models.step import Step
from .sampling import draw, target
from .sequence import Sequence

SLACK = 16          # cache rows past the context limit, for draft tokens that may be rejected


class ModelRunner:
    def __init__(self, model: Model, n_slots: int, max_len: int, use_mtp: bool):
        self.model, self.cfg, self.device = model, model.cfg, model.device
        self.use_mtp = use_mtp and model.use_mtp
        self.rows = max_len + SLACK
        self.cache = Cache.allocate(model.cfg, n_slots, self.rows, model.dtype, model.device, self.use_mtp)
        self.last_hidden = torch.zeros(n_slots, model.cfg.n_embd, dtype=model.dtype, device=model.device)
        self.hidden: torch.Tensor | None = None      # [B, T, D] of the last prefill or verify forward

    def start(self, seq: Sequence) -> None:
        self.cache.reset_slot(seq.slot)

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence], ns: list[int], generators: dict) -> list[int | None]:
        """Run the next ns[b] prompt tokens of each sequence through the trunk in one batch. Returns, per
        sequence, its first generated token if this chunk finished its prompt, else None."""
        T = max(ns)
        rows = [s.tokens[s.num_cached:s.num_cached + n] for s, n in zip(seqs, ns)]
        tokens = torch.tensor([r + [0] * (T - len(r)) for r in rows], device=self.device)
        step = Step.build([s.slot for s in seqs], [s.num_cached for s in seqs], ns, self.device, self.rows,
                          chunked=True)
        self.hidden = self.model.forward(tokens, step, self.cache)
        last = self.hidden[torch.arange(len(seqs), device=self.device), torch.tensor(ns, device=self.device) - 1]
        firsts = []
        for b, (seq, n) in enumerate(zip(seqs, ns)):
            seq.num_cached += n
            self.last_hidden[seq.slot] = last[b]
            if seq.num_cached < seq.n_prompt:
                firsts.append(None)
                continue
            t = target(self.model.logits(last[b:b + 1]), seq.params, seq.tokens)
            firsts.append(draw(t[0], generators.get(seq.id)))
        return firsts

    @torch.inference_mode()
    def verify(self, seqs: list[Sequence], drafts: list[list[int]]) -> list[torch.Tensor]:
        """One trunk forward of each sequence's last token + drafts, all in one batch. Returns per
        sequence the `target` of each of its rows; recurrent states wait for `commit`."""
        inputs = [[s.last_token] + d for s, d in zip(seqs, drafts)]
        T = max(len(x) for x in inputs)
        tokens = torch.tensor([x + [0] * (T - len(x)) for x in inputs], device=self.device)
        step = Step.build([s.slot for s in seqs], [s.num_cached for s in seqs], [len(x) for x in inputs],
                          self.device, self.rows, chunked=False)
        self.hidden = self.model.forward(tokens, step, self.cache)
        logits = self.model.logits(self.hidden)
        if all(s.params.greedy and not s.params.has_penalties for s in seqs):   # one argmax for the batch
            ids = logits.argmax(-1).cpu()
            return [ids[b, :len(x)] for b, x in enumerate(inputs)]
        return [target(logits[b, :len(x)], s.params, s.tokens, d) for b, (s, x, d) in enumerate(zip(seqs, inputs, drafts))]

    def commit(self, seqs: list[Sequence], keep: list[int]) -> None:
        """Keep keep[b] of the verified inputs: roll recurrent state to that point, advance the KV length."""
        self.cache.commit(keep)
        for b, (seq, n) in enumerate(zip(seqs, keep)):
            seq.num_cached += n
            self.last_hidden[seq.slot] = self.hidden[b, n - 1]

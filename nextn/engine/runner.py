"""ModelRunner: the only place in the engine that turns scheduled sequences into tensors and runs the trunk.

It owns the cache and each slot's last trunk hidden state. Prefill runs prompt chunks through the
torch forward; `verify` runs each sequence's last token plus its drafts in one forward and returns,
per sequence, the decision each row asks for (sampling.target); `commit` keeps what the acceptance
rule kept. On CPU, verify and commit run the native decode forward: its plan is recorded on first
use and replayed in one call per step (`compile=False`: op by op, the same kernels). On CUDA they are
CUDA graphs captured per shape (engine.cuda_graphs; `compile=False`: the same forward, eagerly).
"""

from __future__ import annotations

import torch

from ..kernels import native
from ..kernels.native import Graph
from ..models.buffers import Buffers
from ..models.cache import Cache, ring_rows
from ..models.model import Model
from ..models.step import Step
from .cuda_graphs import MAX_T, ShortForwards
from .sampling import draw, penalised, target
from .sequence import Sequence

SLACK = 16          # cache rows past the context limit, for draft tokens that may be rejected


class ModelRunner:
    def __init__(self, model: Model, n_slots: int, max_len: int, use_mtp: bool, max_draft: int = 0,
                 compile: bool = True, threads: int | None = None, max_chunk: int = 512, trunk: bool = True):
        """max_chunk: the most rows one sequence brings to a forward (the prefill chunk; the MTP head's
        catch-up runs at most that many at a time): it sizes the sliding-window rings. trunk=False: the runner
        of an MTP head that runs apart from its trunk (Model.mtp_apart): state and buffers for its blocks only."""
        self.model, self.cfg, self.device = model, model.cfg, model.device
        native.set_threads(threads or native.default_threads())
        torch.set_num_threads(native.threads())
        self.use_mtp = use_mtp and model.use_mtp
        self.native = self.device.type == "cpu" and not model.cfg.torch_decode    # (torch_decode: shapes the ops lack)
        self.rows = max_len + SLACK
        self.max_step_rows = n_slots * (max_draft + 1)
        # CUDA: short forwards as graphs (not for MoE: routing reads expert counts on the host)
        # (nor tensor parallel: the collectives run eagerly)
        graphs = self.device.type == "cuda" and compile and not model.cfg.n_expert and model.comm is None
        self.cache = Cache.allocate(model.cfg, n_slots, self.rows + int(graphs), model.dtype, model.device,
                                    self.use_mtp, rollback=self.native and max_draft > 0,
                                    ring_rows=ring_rows(model.cfg, max_chunk), trunk=trunk)
        self.max_chunk = max_chunk
        self.graph_pool = torch.cuda.graph_pool_handle() if graphs else None
        self.graphs = ShortForwards(self._trunk_step, self.cache, self.rows, pool=self.graph_pool) if graphs else None
        self.last_hidden = torch.zeros(n_slots, model.cfg.n_embd, dtype=model.dtype, device=model.device)
        self.hidden: torch.Tensor | None = None      # torch path: [B, T, D] of the last forward
        self.row0: list[int] = []                    # native path: each sequence's first row in buf
        self.verified: tuple = (None, [])           # the last verify's logits and each sequence's first row
        self.first_logprobs: dict[int, tuple] = {}  # sequence id -> its first token's logprobs (prefill)
        if self.native:
            self.buf = Buffers(model.cfg, model.layers, model.cfg.n_vocab, max(self.max_step_rows, n_slots), n_slots)
            self.trunk = Graph(lambda: model.emit_trunk(self.cache, self.buf), compile)
            self.rollback = Graph(lambda: model.emit_commit(self.cache, self.buf), compile)

    def start(self, seq: Sequence) -> None:
        self.cache.reset_slot(seq.slot)

    def hidden_rows(self, b: int, n: int) -> torch.Tensor:
        """The trunk hidden states (post-norm) of the first n rows of sequence b in the last forward."""
        if self.hidden is not None:
            return self.hidden[b, :n]
        return self.buf.hidden[self.row0[b]:self.row0[b] + n]

    @torch.inference_mode()
    def extend(self, seqs: list[Sequence], ns: list[int]) -> torch.Tensor:
        """Run the next ns[b] tokens of each sequence through the trunk in one batch (the torch forward, any
        length) and advance num_cached. Returns each sequence's last hidden state [B, D]."""
        T = max(ns)
        rows = [s.tokens[s.num_cached:s.num_cached + n] for s, n in zip(seqs, ns)]
        tokens = torch.tensor([r + [0] * (T - len(r)) for r in rows], device=self.device)
        step = Step.build([s.slot for s in seqs], [s.num_cached for s in seqs], ns, self.device, self.rows,
                          chunked=True)
        self.hidden = self.model.forward(tokens, step, self.cache)
        last = self.hidden[torch.arange(len(seqs), device=self.device), torch.tensor(ns, device=self.device) - 1]
        for b, (seq, n) in enumerate(zip(seqs, ns)):
            seq.num_cached += n
            self.last_hidden[seq.slot] = last[b]
        return last

    @torch.inference_mode()
    def prefill(self, seqs: list[Sequence], ns: list[int], generators: dict) -> list[int | None]:
        """Run the next ns[b] prompt tokens of each sequence through the trunk in one batch. Returns, per
        sequence, its first generated token if this chunk finished its prompt, else None."""
        last = self.extend(seqs, ns)
        firsts = []
        for b, (seq, n) in enumerate(zip(seqs, ns)):
            if seq.params.prompt_logprobs:
                self._score_prompt(seq, b, n)
            firsts.append(self._first(seq, last[b], generators) if seq.num_cached >= seq.n_prompt else None)
        return firsts

    def _first(self, seq: Sequence, hidden: torch.Tensor, generators: dict) -> int:
        """The first generated token, from the prompt's last hidden state."""
        logits = self.model.logits(hidden[None])
        token = draw(constrained_target(logits, seq)[0], generators.get(seq.id))
        if seq.params.logprobs is not None:
            self.first_logprobs[seq.id] = logprob_entries(logits, [token], seq.params.logprobs)[0]
        return token

    @torch.inference_mode()
    def fork(self, done: Sequence, seq: Sequence, generators: dict) -> int:
        """Give seq (same prompt, its own slot) the state `done` has right after prefilling that prompt, and
        draw seq's own first token from the same logits. Returns that token."""
        self.cache.copy_slot(done.slot, seq.slot, done.num_cached)
        self.last_hidden[seq.slot] = self.last_hidden[done.slot]
        seq.num_cached, seq.prompt_logprobs = done.num_cached, list(done.prompt_logprobs)
        return self._first(seq, self.last_hidden[seq.slot], generators)

    def _score_prompt(self, seq: Sequence, b: int, n: int, rows: int = 32) -> None:
        """Log-probabilities of the prompt tokens this chunk predicts (row j predicts token j + 1), from the
        prefill's hidden states, `rows` at a time (a row of logits spans the whole vocabulary)."""
        start = seq.num_cached - n
        upto = min(n, seq.n_prompt - 1 - start)         # the prompt's last row predicts the first generated token
        for r in range(0, max(upto, 0), rows):
            m = min(rows, upto - r)
            logits = self.model.logits(self.hidden_rows(b, r + m)[r:])
            seq.prompt_logprobs += logprob_entries(logits, seq.tokens[start + r + 1:start + r + m + 1],
                                                   seq.params.logprobs)

    @torch.inference_mode()
    def verify(self, seqs: list[Sequence], drafts: list[list[int]]) -> list:
        """One trunk forward of each sequence's last token + drafts, all in one batch. Returns per
        sequence the `target` of each of its rows (a list of argmax ids when greedy); recurrent states
        wait for `commit`."""
        inputs = [[s.last_token] + d for s, d in zip(seqs, drafts)]
        if self.native:
            logits, ids = self._verify_native(seqs, inputs)
            starts = self.row0
        else:
            logits, ids = self._verify_torch(seqs, inputs)
            starts = [b * self.hidden.shape[1] for b in range(len(seqs))]
        greedy = all(s.params.greedy and not s.params.has_penalties and s.constraint is None for s in seqs)
        out = []
        self.verified = (logits, starts)
        for s, x, d, r in zip(seqs, inputs, drafts, starts):
            out.append(ids[r:r + len(x)] if greedy else constrained_target(logits[r:r + len(x)], s, d))
        return out

    def token_logprobs(self, b: int, tokens: list[int], top: int) -> list[tuple]:
        """(token, log-probability, [(id, log-probability)] * top) of each of `tokens`, the rows of sequence b in
        the last verify (before anything else overwrites them): the model's own distribution, no sampling
        transforms, so speculative and plain decoding report the same numbers."""
        logits, starts = self.verified
        return logprob_entries(logits[starts[b]:starts[b] + len(tokens)], tokens, top)

    def _verify_native(self, seqs, inputs):
        lens = [len(x) for x in inputs]
        n = self.buf.rows.fill([s.slot for s in seqs], [s.num_cached for s in seqs], lens)
        self.buf.tokens_np[:n] = [t for x in inputs for t in x]
        self.row0 = [sum(lens[:b]) for b in range(len(seqs))]
        self.lens = lens
        self.hidden = None
        self.trunk.run()
        return self.buf.logits[:n], self.buf.ids_np[:n].tolist()

    def _verify_torch(self, seqs, inputs):
        """Logits [B * T, V] (sequence b's rows from b * T) and their argmax ids, as a list."""
        T = max(len(x) for x in inputs)
        slots, starts = [s.slot for s in seqs], [s.num_cached for s in seqs]
        if self.graphs is not None and T <= MAX_T:
            self.hidden, logits, ids = self.graphs(slots, starts, inputs)
        else:
            tokens = torch.tensor([x + [0] * (T - len(x)) for x in inputs], device=self.device)
            step = Step.build(slots, starts, [len(x) for x in inputs], self.device, self.rows, chunked=False)
            if self.graphs is not None:
                self.graphs.last = None          # the next commit runs eagerly too
            self.hidden, logits, ids = self._trunk_step(tokens, step, None)
        return logits.flatten(0, 1), ids.flatten().tolist()

    def _trunk_step(self, tokens: torch.Tensor, step: Step, _extra) -> tuple:
        hidden = self.model.forward(tokens, step, self.cache)
        logits = self.model.logits(hidden)
        return hidden, logits, logits.argmax(-1)

    def commit(self, seqs: list[Sequence], keep: list[int]) -> None:
        """Keep keep[b] of the verified inputs: roll recurrent state to that point, advance the KV length."""
        if self.native:
            if self.cfg.recurrent_layers and any(k < n for k, n in zip(keep, self.lens)):
                self.buf.rows.seq_keep[:len(seqs)] = keep
                self.rollback.run()
        elif self.graphs is not None:
            self.graphs.commit(keep)
        else:
            self.cache.commit(keep)
        for b, (seq, n) in enumerate(zip(seqs, keep)):
            seq.num_cached += n
            self.last_hidden[seq.slot] = self.hidden_rows(b, n)[n - 1]

    def state_nbytes(self) -> int:
        """Caches plus the native decode buffers."""
        return self.cache.nbytes() + (self.buf.nbytes() if self.native else 0)

    @property
    def capture_seconds(self) -> float:
        if self.graphs is not None:
            return self.graphs.capture_seconds
        return self.trunk.capture_seconds + self.rollback.capture_seconds if self.native else 0.0


def constrained_target(logits: torch.Tensor, seq: Sequence, drafts: list[int] = ()) -> torch.Tensor:
    """`target` of these rows, restricted by the sequence's constraint (JSON mode) when it has one."""
    t = target(logits, seq.params, seq.tokens, drafts)
    if seq.constraint is None:
        return t
    return seq.constraint.constrain(t, penalised(logits, seq.params, seq.tokens, drafts), seq.tokens, drafts)


def logprob_entries(logits: torch.Tensor, tokens: list[int], top: int) -> list[tuple]:
    """Per row j: (tokens[j], its log-probability, the `top` most likely (id, log-probability))."""
    lp = logits[:len(tokens)].float().log_softmax(-1)
    chosen = lp[torch.arange(len(tokens)), torch.tensor(tokens)].tolist()
    if top:
        vals, ids = lp.topk(top, dim=-1)
        alts = [list(zip(i, v)) for i, v in zip(ids.tolist(), vals.tolist())]
    else:
        alts = [[] for _ in tokens]
    return list(zip(tokens, chosen, alts))

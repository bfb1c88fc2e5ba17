"""The MTP drafter: the model's own multi-token-prediction head proposes the next k tokens.

The MTP block sees pair (x_{p+1}, h_p) at position p + 1 for every trunk position p. Pairs are
queued as soon as both halves are known (prompt rows after each prefill chunk, the first token with
the last prompt row, kept tokens after each verification) and flushed through the block when the
sequence drafts (or when the queue grows long), so its KV cache covers every position the trunk
processed. The first draft comes from the flush; later ones feed the previous draft token and the
head's own normed hidden state back in. On CPU the block and the output head run as native plans
(the head only on the rows that need logits); long queues (a prompt) go through the torch forward.
"""

from __future__ import annotations

import time
import torch

from ..engine.cuda_graphs import MAX_T, ShortForwards
from ..engine.runner import ModelRunner
from ..engine.sampling import draw, penalised, target
from ..engine.sequence import Sequence
from ..kernels.native import Graph
from ..models.step import Step
from .base import Drafter, Proposal, finish, keep_pick

NATIVE_BACKLOG = 64  # queued pairs up to which a flush runs native forwards (beyond: the torch forward's GEMMs)
FLUSH_EVERY = 256   # queued pairs that force a flush even when not drafting (bounds memory; pairs of a
                    # sequence that never drafts again are never computed)


class MTPDrafter(Drafter):
    name = "mtp"

    def __init__(self, runner: ModelRunner, compile: bool = True, head: ModelRunner | None = None):
        """runner: the trunk's. head: the runner of an MTP head that runs apart from the trunk (its own model,
        cache and buffers: --tp-mtp rank0); by default the head is the trunk model's and shares its runner."""
        self.trunk, self.apart = runner, head is not None
        runner = head or runner
        self.runner, self.model = runner, runner.model
        # where draft logits are scored: with the blocks, or (blocks apart without a reduced vocabulary of their
        # own, output rows split over the ranks: Model.draft_out) by the trunk's runner over its shard of them
        split_out = self.apart and self.model.draft_ids is None and self.trunk.model.draft_out is not None
        self.out = self.trunk if split_out else runner
        self.out_model = self.out.model
        n_slots, d = self.trunk.last_hidden.shape
        self.queue_tokens: dict[int, list[int]] = {}
        self.queue_hidden: dict[int, list[torch.Tensor]] = {}
        self.positions: dict[int, int] = {}          # MTP cache holds positions 1..positions[slot]
        self.chunk = min(256, runner.max_chunk)      # rows per torch forward of a long backlog (fits the rings)
        # several MTP layers: layer i drafts depth i + 1 from layer i - 1's output g for the same base position
        # t (its input pair: x_{t+i+1}, g_t, at position t + i + 1); its cache is caught up over the bases whose
        # token is known: waiting[i][slot] holds layer i - 1's outputs for bases from base[i][slot] on
        self.n_layers = max(1, self.model.cfg.n_mtp)
        self.waiting: list[dict[int, list[torch.Tensor]]] = [{} for _ in range(self.n_layers)]
        self.base: list[dict[int, int]] = [{} for _ in range(self.n_layers)]
        self.last_mtp_hidden = torch.zeros(n_slots, d, dtype=self.model.dtype, device=self.model.device)
        ids = self.model.draft_ids          # a reduced draft vocabulary: head row -> token id
        self.vocab = ids
        self.vocab_t = torch.tensor(ids, device=self.model.device) if ids is not None else None
        self.graphs = self.head_graphs = None
        layers = range(self.n_layers)
        out = self.out
        if runner.graphs is not None:     # CUDA: each layer's short forwards and output head as graphs
            self.graphs = [ShortForwards(lambda tok, step, hid, i=i: (self.model.mtp_forward(tok, hid, step, runner.cache, i),),
                                         runner.cache, runner.rows, shift=1 + i, pool=runner.graph_pool) for i in layers]
        if out.graphs is not None:
            self.head_graphs = [ShortForwards(lambda tok, step, hid, i=i: self._head(hid, i), out.cache, out.rows,
                                              pool=out.graph_pool) for i in layers]
        if runner.native:
            buf, cache = runner.buf, runner.cache
            self.blocks = [Graph(lambda i=i: self.model.emit_mtp_block(cache, buf, i), compile) for i in layers]
        if out.native:
            self.heads = [Graph(lambda i=i: self.out_model.emit_mtp_head(out.buf, i), compile) for i in layers]

    def nbytes(self) -> int:
        """A head apart from the trunk: its weights (not the embedding, of which it reads rows from the mapped
        file, nor output rows it leaves to the trunk's ranks), cache and buffers."""
        if not self.apart:
            return 0
        return self.model.nbytes(embeddings=False, outputs=self.out is self.runner) + self.runner.state_nbytes()

    @property
    def capture_seconds(self) -> float:
        graphs = (self.graphs or []) + (self.head_graphs or []) + (self.blocks if self.runner.native else []) + \
            (self.heads if self.out.native else [])
        return sum(g.capture_seconds for g in graphs)

    # ---- keeping the head's cache in step with the trunk ------------------------------------------
    def start(self, seq: Sequence) -> None:
        self.queue_tokens[seq.slot], self.queue_hidden[seq.slot], self.positions[seq.slot] = [], [], 0
        for i in range(1, self.n_layers):
            self.waiting[i][seq.slot], self.base[i][seq.slot] = [], 0

    def fork(self, done: Sequence, seq: Sequence) -> None:
        """The queued prompt pairs (their tensors are never changed in place) and the head's cache rows (copied
        with the trunk's, Cache.copy_slot)."""
        a, b = done.slot, seq.slot
        self.queue_tokens[b], self.queue_hidden[b] = list(self.queue_tokens[a]), list(self.queue_hidden[a])
        self.positions[b] = self.positions[a]
        self.last_mtp_hidden[b] = self.last_mtp_hidden[a]
        if self.apart:          # the head's own cache (otherwise copied with the trunk's)
            self.runner.cache.copy_slot(a, b, self.positions[a])
        for i in range(1, self.n_layers):
            self.waiting[i][b], self.base[i][b] = list(self.waiting[i][a]), self.base[i][a]

    def queued(self, slot: int) -> int:
        return len(self.queue_tokens.get(slot, ()))

    def on_prefill(self, seqs: list[Sequence], ns: list[int]) -> None:
        """Queue (x_{p+1}, h_p) for the prompt rows just prefilled whose successor is known."""
        for b, (seq, n) in enumerate(zip(seqs, ns)):
            if self._tracks(seq):
                s = seq.num_cached - n
                successors = seq.tokens[s + 1:s + n + 1]
                self._enqueue(seq.slot, successors, self.trunk.hidden_rows(b, len(successors)))

    def on_first_token(self, seq: Sequence, token: int) -> None:
        if self._tracks(seq):
            self._enqueue(seq.slot, [token], self.trunk.last_hidden[seq.slot][None])

    def on_commit(self, seqs: list[Sequence], new_tokens: list[list[int]], keep: list[int]) -> None:
        for b, (seq, n) in enumerate(zip(seqs, keep)):
            if self._tracks(seq):
                self._enqueue(seq.slot, new_tokens[b][:n], self.trunk.hidden_rows(b, n))
        long = [s for s in seqs if self.queued(s.slot) >= FLUSH_EVERY]
        if long:
            self._flush(long)

    def _tracks(self, seq: Sequence) -> bool:
        return seq.spec.uses(self.name)

    def _enqueue(self, slot: int, tokens: list[int], hidden: torch.Tensor) -> None:
        if tokens:
            self.queue_tokens[slot].extend(tokens)
            self.queue_hidden[slot].append(hidden[:len(tokens)].clone())

    @torch.inference_mode()
    def _flush(self, seqs: list[Sequence]) -> None:
        """Run every queued pair of these slots through the MTP block: a short backlog (what a few steps
        without drafting leave) in native forwards of as many rows as the decode buffers hold, a long one
        (a prompt) through the torch forward in chunks of up to 256 rows (fewer if the prefill chunk is)."""
        chunk = self.chunk
        while todo := [s for s in seqs if self.queued(s.slot)]:
            if self.runner.native and max(self.queued(s.slot) for s in todo) <= NATIVE_BACKLOG:
                chunk = max(1, self.runner.buf.rows.max_rows // len(todo))
            n = [min(self.queued(s.slot), chunk) for s in todo]
            tokens, hidden = [], []
            for s, k in zip(todo, n):
                toks, hid = self.queue_tokens[s.slot], torch.cat(self.queue_hidden[s.slot])
                tokens.append(toks[:k])
                hidden.append(hid[:k])
                self.queue_tokens[s.slot] = toks[k:]
                self.queue_hidden[s.slot] = [hid[k:]] if len(toks) > k else []
            out = self._forward(todo, [self.positions[s.slot] + 1 for s in todo], tokens, hidden,
                                all_rows=self.n_layers > 1)
            last = [o[-1] for o in out] if self.n_layers > 1 else out
            for i, (s, k) in enumerate(zip(todo, n)):
                self.positions[s.slot] += k
                if self.n_layers > 1:
                    self.waiting[1][s.slot].append(out[i])
                if not self.queued(s.slot):
                    self.last_mtp_hidden[s.slot] = last[i]
        for i in range(1, self.n_layers):
            self._catch_up(seqs, i)

    def _catch_up(self, seqs: list[Sequence], i: int) -> None:
        """Layer i over every waiting base t whose token x_{t+i+1} is committed (the newest base waits for
        its draft); its outputs wait for layer i + 1."""
        todo, tokens, hidden = [], [], []
        for s in seqs:
            waiting = self.waiting[i].get(s.slot)
            if not waiting:
                continue
            hid = torch.cat(waiting)
            t0 = self.base[i][s.slot]
            n = min(hid.shape[0], len(s.tokens) - (t0 + i + 1))
            if n <= 0:
                self.waiting[i][s.slot] = [hid]
                continue
            todo.append(s)
            tokens.append(s.tokens[t0 + i + 1:t0 + i + 1 + n])
            hidden.append(hid[:n])
            self.waiting[i][s.slot] = [hid[n:]]
            self.base[i][s.slot] = t0 + n
        if not todo:
            return
        starts = [self.base[i][s.slot] - len(t) + i + 1 for s, t in zip(todo, tokens)]
        chunk = self.chunk
        for c in range(0, max(len(t) for t in tokens), chunk):
            part = [(s, st + c, t[c:c + chunk], h[c:c + chunk]) for s, st, t, h in zip(todo, starts, tokens, hidden)
                    if t[c:]]
            out = self._forward([p[0] for p in part], [p[1] for p in part], [p[2] for p in part], [p[3] for p in part],
                                layer=i, all_rows=True)
            if i + 1 < self.n_layers:
                for (s, *_), o in zip(part, out):
                    self.waiting[i + 1][s.slot].append(o)

    def _forward(self, seqs, starts, tokens, hidden, layer: int = 0, all_rows: bool = False):
        """MTP layer `layer` on each sequence's pairs; returns the hidden state g of each one's last pair [B, D]
        (all_rows: a list of each sequence's rows [n_b, D])."""
        lens = [len(t) for t in tokens]
        if self.runner.native and sum(lens) <= self.runner.buf.rows.max_rows:
            buf = self.runner.buf
            n = buf.rows.fill([s.slot for s in seqs], starts, lens)
            buf.tokens_np[:n] = [t for ts in tokens for t in ts]
            torch.cat(hidden, out=buf.mtp_in[:n])
            self.blocks[layer].run()
            if all_rows:
                return list(buf.hidden[:n].clone().split(lens))
            if n == len(seqs):
                return buf.hidden[:n].clone()
            return buf.hidden[[sum(lens[:b + 1]) - 1 for b in range(len(lens))]]
        T = max(lens)
        hid = torch.stack([torch.nn.functional.pad(h, (0, 0, 0, T - h.shape[0])) for h in hidden])
        if self.graphs is not None and T <= MAX_T:
            out = self.graphs[layer]([s.slot for s in seqs], starts, tokens, hid)[0]
        else:
            tok = torch.tensor([t + [0] * (T - len(t)) for t in tokens], device=self.model.device)
            step = Step.build([s.slot for s in seqs], starts, lens, self.model.device, self.runner.rows, chunked=False,
                              shift=1 + layer)         # layer i's cache row = position - 1 - i
            out = self.model.mtp_forward(tok, hid, step, self.runner.cache, layer)
        if all_rows:
            return [out[b, :n].clone() for b, n in enumerate(lens)]
        return out[torch.arange(len(seqs)), torch.tensor(lens) - 1]

    def _logits(self, hidden: torch.Tensor, layer: int = 0) -> tuple[torch.Tensor, list[int] | None]:
        """Draft logits [B, head rows] (and their argmax as token ids, on CPU) for hidden states [B, D]."""
        if self.head_graphs is not None:
            B = hidden.shape[0]
            logits, rows = self.head_graphs[layer]([0] * B, [0] * B, [[0]] * B, hidden[:, None])
            rows = rows.tolist()
            return logits, [self.vocab[r] for r in rows] if self.vocab else rows
        if not self.out.native:
            return self.out_model.mtp_logits(hidden, layer), None
        buf, B = self.out.buf, hidden.shape[0]
        buf.rows.set_rows(B)
        buf.hidden[:B] = hidden
        self.heads[layer].run()
        rows = buf.ids_np[:B].tolist()
        return buf.logits[:B, :len(self.vocab) if self.vocab else None], \
            [self.vocab[r] for r in rows] if self.vocab else rows

    def _head(self, hidden: torch.Tensor, layer: int) -> tuple:
        """Layer `layer`'s output head on hidden [B, 1, D]: logits [B, head rows] and their argmax (head rows)."""
        logits = self.out_model.mtp_logits(hidden[:, 0], layer)
        return logits, logits.argmax(-1)

    def _full(self, logits: torch.Tensor) -> torch.Tensor:
        """Logits over the whole vocabulary [1, V]: tokens outside a draft vocabulary get -inf (probability 0),
        so the draft distribution is the one over the subset and rejection sampling stays exact."""
        if self.vocab_t is None:
            return logits
        full = torch.full((logits.shape[0], self.model.cfg.n_vocab), float("-inf"), dtype=logits.dtype,
                          device=logits.device)
        full[:, self.vocab_t] = logits
        return full

    # ---- drafting ----------------------------------------------------------------------------------
    @torch.inference_mode()
    def propose(self, seqs: list[Sequence], ks: list[int], generators: dict) -> Proposal:
        """Up to ks[b] draft tokens per sequence, with the distributions they were drawn from."""
        drafts: list[list[int]] = [[] for _ in seqs]
        qs: list[list[torch.Tensor]] = [[] for _ in seqs]
        active = [i for i, k in enumerate(ks) if k > 0]
        if not active:
            return Proposal(drafts, [None] * len(seqs), 0)
        t0 = time.perf_counter()
        pairs = max(self.queued(seqs[i].slot) for i in active)
        self._flush([seqs[i] for i in active])
        catch_up = time.perf_counter() - t0
        hidden = self.last_mtp_hidden[[seqs[i].slot for i in active]]
        logits, ids = self._logits(hidden)
        steps = 1
        while True:
            still, rows = [], []
            picks = self._picks(logits, ids, [seqs[i] for i in active], [drafts[i] for i in active], generators)
            for r, (i, pick) in enumerate(zip(active, picks)):
                if keep_pick(seqs[i], drafts[i], qs[i], *pick, ks[i]):
                    still.append(i)
                    rows.append(r)
            if not still:
                break
            sub = [seqs[i] for i in still]
            positions = [self.positions[s.slot] + len(drafts[i]) for s, i in zip(sub, still)]
            layer = min(steps, self.n_layers - 1)         # depth d through layer d; beyond the last, the last again
            hidden = self._forward(sub, positions, [[drafts[i][-1]] for i in still], [h[None] for h in hidden[rows]],
                                   layer)
            logits, ids = self._logits(hidden, layer)
            active = still
            steps += 1
        return finish(self.name, seqs, drafts, qs, steps, catch_up, pairs)

    def _picks(self, logits: torch.Tensor, ids: list[int] | None, seqs: list[Sequence], so_far: list[list[int]],
               generators: dict):
        """Per row: (token, its draft distribution or None if one-hot, confidence for --draft-p-min)."""
        if all(s.params.greedy and not s.params.has_penalties and s.spec.p_min == 0 for s in seqs):
            if ids is None:
                ids = logits.argmax(-1).tolist()
                ids = [self.vocab[r] for r in ids] if self.vocab else ids
            return [(t, None, 1.0) for t in ids]               # one sync for the batch
        out = []
        for r, (seq, drafted) in enumerate(zip(seqs, so_far)):
            history = seq.tokens + drafted
            row = self._full(logits[r:r + 1])
            t = target(row, seq.params, history)[0]
            tok = draw(t, generators.get(seq.id))
            if t.dim():
                out.append((tok, t, float(t[tok])))
            else:
                p_min = seq.spec.p_min
                row = penalised(row, seq.params, history)
                out.append((tok, None, float(row.float().softmax(-1)[0, tok]) if p_min > 0 else 1.0))
        return out

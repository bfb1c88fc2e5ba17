"""The engine: admits requests, runs prefill and decode steps over the slots, applies stop rules,
and keeps statistics. `Engine.generate` is the Python API; the CLI and the server drive `step`."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

import torch

from . import loader
from .chat import render_chat
from .errors import NextnError
from .runner import ModelRunner
from .sampling import SamplingParams, apply_penalties, probabilities, sample, token_counts
from .scheduler import Scheduler
from .sequence import Sequence, SpecConfig, Status
from .speculative import decode_step
from .stats import SpecStats
from .tokenizer import StreamDecoder
from .tuner import KTuner


@dataclass
class EngineConfig:
    model: str | None = None          # None: the bundled demo model
    mtp_model: str | None = None
    spec: str = "mtp"                 # "mtp" or "none"
    draft_max: int = 3
    draft_min: int = 0
    draft_p_min: float = 0.0
    adaptive: bool = True             # False: always draft draft_max tokens
    n_parallel: int = 1
    ctx_size: int = 4096
    prefill_chunk: int = 512
    device: str | None = None
    dtype: str | None = None
    cpu_matmul: str | None = None     # CPU weight layout "dual" | "onednn" | "blas" (fuse.py); default by MTP use
    progress: bool = True

    def __post_init__(self):
        if self.spec not in ("mtp", "none"):
            raise NextnError(f"--spec must be 'mtp' or 'none', not {self.spec!r}")
        if self.n_parallel < 1 or self.ctx_size < 8 or self.prefill_chunk < 1:
            raise NextnError("--parallel, --ctx-size and --prefill-chunk must be positive")


@dataclass
class Output:
    seq: Sequence
    tokens: list[int]
    text: str
    finished: bool


@dataclass
class Completion:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str
    stats: SpecStats

    @property
    def timings(self) -> dict:
        return self.stats.to_dict()


@dataclass
class _Track:
    decoder: StreamDecoder
    text: str = ""
    sent: int = 0               # characters already handed out
    generator: torch.Generator | None = None


class Engine:
    def __init__(self, config: EngineConfig | None = None, **kwargs):
        self.config = config = config or EngineConfig(**kwargs)
        want_mtp = config.spec == "mtp" and config.draft_max > 0
        self.cfg, self.model, self.tokenizer, self.file = loader.load(
            config.model, mtp_path=config.mtp_model, with_mtp=want_mtp, device=config.device,
            dtype=config.dtype, progress=config.progress, matmul=config.cpu_matmul)
        self.model_name = self.file.path.stem
        self.runner = ModelRunner(self.model, config.n_parallel, config.ctx_size, use_mtp=want_mtp)
        self.scheduler = Scheduler(config.n_parallel, config.prefill_chunk)
        self.tuner = KTuner(config.draft_max if want_mtp else 0, config.draft_min)
        self.stats = SpecStats()      # cumulative over all requests, updated every step
        self.tracks: dict[int, _Track] = {}

    @property
    def mtp_enabled(self) -> bool:
        return self.runner.use_mtp

    def memory_bytes(self) -> int:
        """Weights (in their in-memory layout) plus the preallocated caches."""
        return self.model.nbytes() + self.runner.cache.nbytes()

    @property
    def device_is_cuda(self) -> bool:
        return self.model.device.type == "cuda"

    # ---- requests ------------------------------------------------------------------------------
    def default_spec(self) -> SpecConfig:
        c = self.config
        return SpecConfig(draft_max=c.draft_max if self.mtp_enabled else 0, draft_min=c.draft_min,
                          p_min=c.draft_p_min, adaptive=c.adaptive)

    def encode_prompt(self, prompt: str | list[int] | None = None, messages: list[dict] | None = None) -> list[int]:
        if messages is not None:
            tk = self.tokenizer
            text = render_chat(tk.chat_template, messages,
                               bos_token=tk.token_text(tk.bos_id) if tk.bos_id is not None else "",
                               eos_token=tk.token_text(tk.eos_id) if tk.eos_id is not None else "")
            return tk.encode(text)
        return list(prompt) if isinstance(prompt, list) else self.tokenizer.encode(prompt or "")

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    spec: SpecConfig | None = None) -> Sequence:
        params = params or SamplingParams()
        if not prompt_ids:
            raise NextnError("the prompt is empty")
        if len(prompt_ids) >= self.config.ctx_size:
            raise NextnError(f"prompt has {len(prompt_ids)} tokens; the context holds {self.config.ctx_size} "
                             f"(raise --ctx-size)")
        if any(not 0 <= t < self.cfg.n_vocab for t in prompt_ids):
            raise NextnError(f"prompt token ids must be in [0, {self.cfg.n_vocab})")
        spec = spec or self.default_spec()
        if not self.mtp_enabled:
            spec = SpecConfig(draft_max=0)
        elif params.seed is not None and not params.greedy and spec.adaptive:
            # adaptive k depends on timing; a fixed k keeps a seeded sampling request reproducible
            spec = dataclasses.replace(spec, adaptive=False)
        seq = Sequence(prompt_ids, params, spec, acceptance=self.tuner.new_acceptance(spec.draft_max))
        seed = params.seed if params.seed is not None else random.getrandbits(63)
        gen = None if params.greedy else torch.Generator().manual_seed(seed)
        self.tracks[seq.id] = _Track(StreamDecoder(self.tokenizer), generator=gen)
        self.scheduler.add(seq)
        return seq

    def abort(self, seq: Sequence) -> None:
        seq.cancelled = True

    @property
    def has_work(self) -> bool:
        return self.scheduler.has_work

    # ---- stepping ------------------------------------------------------------------------------
    def step(self) -> list[Output]:
        plan = self.scheduler.schedule()
        outputs: list[Output] = []
        if plan.prefill:
            outputs += self._prefill(plan.prefill, plan.prefill_tokens)
        if plan.decode:
            outputs += self._decode(plan.decode)
        for seq in self.scheduler.release_finished():
            if not any(o.seq is seq for o in outputs):
                outputs.append(Output(seq, [], "", True))
            self.tracks.pop(seq.id, None)
        return outputs

    def _prefill(self, seqs: list[Sequence], ns: list[int]) -> list[Output]:
        for seq in seqs:
            if seq.num_cached == 0:
                self.runner.start(seq)
        t0 = time.perf_counter()
        last = self.runner.prefill(seqs, ns)
        done = [b for b, s in enumerate(seqs) if s.num_cached >= s.n_prompt]
        outputs = []
        if done:
            logits = self.model.logits(last[done])
            for row, b in enumerate(done):
                seq = seqs[b]
                token = self._sample_first(seq, logits[row:row + 1])
                self.runner.enqueue_next(seq, token)
                seq.status = Status.DECODE
                self.stats.prompt_tokens += seq.n_prompt
                outputs.append(self._emit(seq, [token]))
        dt = time.perf_counter() - t0
        for seq, n in zip(seqs, ns):
            seq.stats.prefill_seconds += dt * n / sum(ns)
        self.stats.prefill_seconds += dt
        return outputs

    def _sample_first(self, seq: Sequence, logits: torch.Tensor) -> int:
        p = seq.params
        counts = token_counts(seq.tokens, logits.shape[-1], logits.device)[None] if p.has_penalties else None
        logits = apply_penalties(logits, counts, p)
        if p.greedy:
            return int(logits.argmax(-1))
        return int(sample(probabilities(logits, p).cpu(), self.tracks[seq.id].generator))

    def _choose_ks(self, seqs: list[Sequence]) -> list[int]:
        spec_seqs = [s for s in seqs if s.spec.draft_max > 0]
        k_auto = self.tuner.choose([s.acceptance for s in spec_seqs]) if spec_seqs else 0
        ks = []
        for s in seqs:
            k = min(k_auto, s.spec.draft_max) if s.spec.adaptive else s.spec.draft_max
            room = min(s.remaining - 1, self.config.ctx_size - s.num_cached - 1)
            ks.append(max(0, min(k, room)))
        return ks

    def _decode(self, seqs: list[Sequence]) -> list[Output]:
        ks = self._choose_ks(seqs)
        gens = {s.id: self.tracks[s.id].generator for s in seqs}
        res = decode_step(self.runner, seqs, ks, gens)
        self.tuner.costs.observe_trunk(len(seqs), max(ks) + 1 if any(res.n_drafted) else 1, res.verify_seconds)
        self.tuner.costs.observe_draft(len(seqs), res.draft_steps, res.draft_seconds)
        outputs = []
        self.stats.decode_seconds += res.draft_seconds + res.verify_seconds
        for b, seq in enumerate(seqs):
            seq.stats.record(res.n_drafted[b], res.n_accepted[b])
            self.stats.record(res.n_drafted[b], res.n_accepted[b])
            seq.stats.decode_seconds += res.draft_seconds + res.verify_seconds
            if res.n_drafted[b]:
                seq.acceptance.update(res.n_drafted[b], res.n_accepted[b])
                self.tuner.observe(res.n_drafted[b], res.n_accepted[b])
            outputs.append(self._emit(seq, res.new_tokens[b]))
        return outputs

    def _emit(self, seq: Sequence, tokens: list[int]) -> Output:
        """Append tokens, apply EOS / length / stop-string rules, and produce the text delta."""
        track = self.tracks[seq.id]
        kept = []
        for tok in tokens:
            seq.tokens.append(tok)
            kept.append(tok)
            if tok in self.tokenizer.eog_ids and not seq.params.ignore_eos:
                seq.finish("stop")
                break
            if seq.remaining <= 0 or len(seq.tokens) >= self.config.ctx_size:
                seq.finish("length")
                break
        seq.stats.n_generated = seq.n_generated
        self.stats.n_generated += len(kept)
        track.text += track.decoder.push([t for t in kept if t not in self.tokenizer.eog_ids])
        if seq.is_finished:
            track.text += track.decoder.flush()
        for stop in seq.params.stop:
            at = track.text.find(stop, max(0, track.sent - len(stop)))
            if at >= 0:
                track.text = track.text[:at]
                seq.finish("stop")
        # hold back a tail that could still become a stop string
        hold = 0 if seq.is_finished else max((len(s) - 1 for s in seq.params.stop), default=0)
        upto = max(track.sent, len(track.text) - hold)
        delta, track.sent = track.text[track.sent:upto], upto
        return Output(seq, kept, delta, seq.is_finished)

    # ---- convenience API ------------------------------------------------------------------------
    def generate(self, prompt: str | list[int] | None = None, params: SamplingParams | None = None, *,
                 messages: list[dict] | None = None, spec: SpecConfig | None = None, on_text=None) -> Completion:
        seq = self.add_request(self.encode_prompt(prompt, messages), params, spec)
        text = []
        while not seq.is_finished:
            for out in self.step():
                if out.seq is seq and out.text:
                    text.append(out.text)
                    if on_text:
                        on_text(out.text)
        while self.has_work and seq in self.scheduler.active:
            self.step()
        return Completion("".join(text), seq.generated, seq.n_prompt, seq.finish_reason, seq.stats)

"""The engine: admits requests, runs prefill and decode steps over the slots, applies stop rules,
and keeps statistics. `Engine.generate` is the Python API; the CLI and the server drive `step`.
No tensors here: the runner and the drafter hold them."""

from __future__ import annotations

import dataclasses
import random
import time
from dataclasses import dataclass

from ..drafters.draft_model import DraftModelDrafter
from ..drafters.mtp import MTPDrafter
from ..drafters.ngram import NGramDrafter
from ..drafters.router import DraftRouter
from ..errors import NextnError
from ..kernels import native
from ..models import loader
from ..parallel import launch, mirror
from ..parallel.placement import mtp_placement
from ..parallel.comm import RankLost
from ..text.chat import render_chat
from ..text.json_mode import OBJECT, JsonConstraint
from ..text.tokenizer import StreamDecoder
from .config import EngineConfig
from .params import RECOMMENDED, SamplingParams
from .runner import ModelRunner
from .sampling import new_generator
from .scheduler import Scheduler
from .sequence import Sequence, SpecConfig, Status
from .speculative import decode_step
from .stats import SpecStats
from .tuner import KTuner


@dataclass
class Output:
    seq: Sequence
    tokens: list[int]
    text: str
    finished: bool
    logprobs: list = dataclasses.field(default_factory=list)   # (token, logprob, top alternatives) per kept token
    drafted: int = 0                # the step's draft tokens for this sequence; the first `accepted` of
    accepted: int = 0               # `tokens` were accepted drafts, the last one the trunk's own
    drafter: str | None = None      # who drafted them (mtp, ngram, draft)


@dataclass
class Completion:
    text: str
    tokens: list[int]
    prompt_tokens: int
    finish_reason: str
    stats: SpecStats
    params: SamplingParams | None = None    # as used: the request's values over the model's recommended ones
    logprobs: list | None = None            # (token, logprob, [(id, logprob)]) per token, when asked for
    prompt_logprobs: list | None = None     # the same for prompt tokens 1.. (SamplingParams.prompt_logprobs)

    @property
    def timings(self) -> dict:
        return self.stats.to_dict()


@dataclass
class _TextStream:
    """A request's text so far: the streaming decoder, and how much of the text was handed out."""
    decoder: StreamDecoder
    text: str = ""
    sent: int = 0


class Engine:
    def __init__(self, config: EngineConfig | None = None, *, tuner: KTuner | None = None, loaded=None, **kwargs):
        """`loaded`: what `Engine.load(config)` returned, to share one loaded model between engines."""
        self.config = config = config or EngineConfig(**kwargs)
        self.model_config, self.model, self.tokenizer, self.file = loaded or self.load(config)
        self.model_name = self.file.path.stem
        self.recommended = {name: self.file.meta(key) for name, key in RECOMMENDED.items()
                            if self.file.meta(key) is not None}
        drafters = config.drafters
        ngram = "ngram" in drafters and config.draft_max > 0
        max_draft = max(config.draft_max if config.model_drafter else 0, config.ngram_max if ngram else 0)
        runner_args = dict(n_slots=config.n_parallel, max_len=config.ctx_size, use_mtp=config.use_mtp,
                           max_draft=max_draft, compile=config.compile, threads=config.threads,
                           max_chunk=config.prefill_chunk)
        self.runner = ModelRunner(self.model, **runner_args)
        apart = self.model.mtp_apart if config.use_mtp else None      # the head whole on rank 0 (--tp-mtp)
        self.mtp_runner = ModelRunner(apart, **runner_args, trunk=False) if apart is not None else None
        mtp = MTPDrafter(self.runner, compile=config.compile, head=self.mtp_runner) if self.use_mtp else None
        model_drafter = mtp or (self._draft_model(config) if config.model_drafter == "draft" else None)
        self.tp = launch.session() if config.tp > 1 else None
        if self.tp is not None:          # the other ranks build the same runner and run every forward with us
            mirror.lead(self.tp.channel, self.runner, mtp, runner_args)
        self.tuner = tuner or KTuner(config.draft_max if model_drafter else 0, config.draft_min,
                                     ngram_max=config.ngram_max)
        self.drafter = (DraftRouter(model_drafter, NGramDrafter(config.ngram_min, config.ngram_max) if ngram else None,
                                    self.tuner) if model_drafter or ngram else None)
        self.scheduler = Scheduler(config.n_parallel, config.prefill_chunk)
        self.stats = SpecStats()      # cumulative over all requests, updated every step
        self.streams: dict[int, _TextStream] = {}
        self.generators: dict[int, object] = {}
        self._shapes_seen: set[tuple[int, int, int]] = set()     # (batch, drafts, draft steps) decoded so far

    def _draft_model(self, config: EngineConfig) -> DraftModelDrafter:
        """The --model-draft model on the trunk's device with its own runner; refused unless its vocabulary
        is the trunk's, token for token."""
        cfg, model, tokenizer, gf = loader.load(config.model_draft, use_mtp=False, device=config.device,
                                                dtype=config.dtype, progress=config.progress, kernels=config.kernels)
        if cfg.n_vocab != self.model_config.n_vocab or tokenizer.tokens != self.tokenizer.tokens:
            where = next((i for i, (a, b) in enumerate(zip(tokenizer.tokens, self.tokenizer.tokens)) if a != b),
                         min(len(tokenizer.tokens), len(self.tokenizer.tokens)))
            raise NextnError(f"--model-draft {gf.path.name}: its vocabulary ({cfg.n_vocab} tokens) is not the model's "
                             f"({self.model_config.n_vocab} tokens; first difference at id {where}): a draft model "
                             f"must share the tokenizer")
        runner = ModelRunner(model, config.n_parallel, config.ctx_size, use_mtp=False, max_draft=16,
                             compile=config.compile, threads=config.threads, max_chunk=config.prefill_chunk)
        return DraftModelDrafter(runner)

    @staticmethod
    def load(config: EngineConfig, comm=None):
        """(model config, model, tokenizer, trunk file) for this configuration. With `--tp N` (config.tp),
        this rank's shard, the other ranks loading theirs at the same time (`comm`: as a follower)."""
        session = launch.start(config.tp, config.device) if comm is None and config.tp > 1 else None
        if session is not None:
            fingerprint = launch.file_fingerprint(loader.open_trunk(config.model or loader.default_model()))
            name = mirror.announce_load(session.channel, (config, fingerprint))
            comm = session.comm
        try:
            place = mtp_placement(config, loader.open_trunk(config.model or loader.default_model()))
            args = dict(mtp_path=config.mtp_model, device=config.device, dtype=config.dtype, progress=config.progress,
                        kernels=config.kernels, draft_vocab=config.draft_vocab, mtp_layers=config.mtp_layers)
            loaded = loader.load(config.model, use_mtp=config.use_mtp and place is None, comm=comm,
                                 mtp_out=place is not None and not place.whole_output, **args)
            if place is not None and session is not None:      # rank 0: the MTP blocks whole, apart from its shard
                loaded[1].mtp_apart = loader.load(config.model, use_mtp=True, head_only=True, tokenizer=loaded[2],
                                                  **args)[1]
        except NextnError as e:
            if session is not None:
                session.channel.agree(str(e))
            raise
        if session is not None:
            session.channel.agree(None)
            loaded[1].tp_name = session.channel.track(loaded[1], name)   # the followers' name for their shard
        return loaded

    @property
    def use_mtp(self) -> bool:
        return self.runner.use_mtp or self.mtp_runner is not None

    @property
    def mtp_model(self):
        """The model whose MTP head drafts: the trunk's own, or the head running apart from it (--tp-mtp rank0)."""
        return self.mtp_runner.model if self.mtp_runner is not None else self.model

    def model_form(self) -> str:
        """bundled (MTP head in the model file), trunk + MTP file, or no MTP (not loaded, or absent)."""
        if not self.use_mtp:
            return "no MTP"
        return "bundled" if self.config.mtp_model is None and self.file.n_mtp else "trunk + MTP file"

    @property
    def drafters(self) -> tuple[str, ...]:
        """The drafters this engine runs ('mtp', 'ngram'), in the order --spec names them."""
        return tuple(d.name for d in self.drafter.all) if self.drafter is not None else ()

    def memory_bytes(self) -> int:
        """Weights as held in memory plus the preallocated caches and decode buffers (a draft model's, a head
        apart from the trunk's too)."""
        return self.model.nbytes() + self.runner.state_nbytes() + self._drafter_bytes()

    def lost(self) -> str | None:
        """Why this engine cannot run any more (a tensor-parallel rank exited), else None."""
        return self.tp.lost if self.tp is not None else None

    def _drafter_bytes(self) -> int:
        return sum(d.nbytes() for d in self.drafter.all) if self.drafter is not None else 0

    def kernels(self) -> str:
        """How the CPU products run: 'int8 activations for Q4_K, Q6_K' or 'exact'."""
        types = self.model.int8_types()
        return f"int8 activations for {', '.join(types)}" if types else "exact"

    def memory(self) -> dict:
        """MB of weights (as held: quantized weights stay in their GGUF type) and of caches + decode buffers."""
        out = {"weights_mb": round(self.model.nbytes() / 2**20, 1),
               "caches_mb": round(self.runner.state_nbytes() / 2**20, 1)}
        if self.tp is not None:
            out["tensor_parallel"] = f"rank 0 of {self.tp.comm.size}: its shard of the weights and caches"
        if self.mtp_runner is not None:
            out["mtp_head_mb"] = round(self._drafter_bytes() / 2**20, 1)
            out["tensor_parallel"] += "; the MTP head whole (its embedding rows read from the file as needed)"
        elif self._drafter_bytes():
            out["draft_model_mb"] = round(self._drafter_bytes() / 2**20, 1)
        return out

    @property
    def capture_seconds(self) -> float:
        """Time spent recording the decode step plans (the CPU 'compile'; done on first use, milliseconds)."""
        drafter = getattr(self.drafter, "capture_seconds", 0.0) if self.drafter is not None else 0.0
        return self.runner.capture_seconds + drafter

    @property
    def device_is_cuda(self) -> bool:
        return self.model.device.type == "cuda"

    # ---- requests ------------------------------------------------------------------------------
    def default_spec(self) -> SpecConfig:
        c = self.config
        return SpecConfig(draft_max=c.draft_max if self.drafters else 0, draft_min=c.draft_min,
                          p_min=c.draft_p_min, adaptive=c.adaptive, drafters=self.drafters)

    def encode_prompt(self, prompt: str | list[int] | None = None, messages: list[dict] | None = None,
                      tools: list[dict] | None = None) -> list[int]:
        """Token ids of a prompt, or of chat messages through the model's template (with `tools`, the
        functions offered: the template must know how to show them)."""
        if messages is not None:
            tk = self.tokenizer
            if tools and "tools" not in (tk.chat_template or ""):
                raise NextnError("this model's chat template does not take tools (it never mentions them), so "
                                 "the model cannot be offered functions")
            text = render_chat(tk.chat_template, messages,
                               bos_token=tk.token_text(tk.bos_id) if tk.bos_id is not None else "",
                               eos_token=tk.token_text(tk.eos_id) if tk.eos_id is not None else "",
                               **({"tools": tools} if tools else {}))
            return tk.encode(text)
        return list(prompt) if isinstance(prompt, list) else self.tokenizer.encode(prompt or "")

    def sampling_params(self, **given) -> SamplingParams:
        """Sampling parameters: those given, else the model's recommended ones, else the defaults."""
        return SamplingParams.with_defaults(self.recommended, **given)

    def add_request(self, prompt_ids: list[int], params: SamplingParams | None = None,
                    spec: SpecConfig | None = None, share: Sequence | None = None) -> Sequence:
        """Queue a sequence. share: an earlier request with the same prompt whose prefill this one copies
        when both hold a slot by the time it is done (the n choices of one request), else it prefills alone."""
        if why := self.lost():
            raise RankLost(why)
        params = params or self.sampling_params()
        if not prompt_ids:
            raise NextnError("the prompt is empty")
        if len(prompt_ids) >= self.config.ctx_size:
            raise NextnError(f"prompt has {len(prompt_ids)} tokens; the context holds {self.config.ctx_size} "
                             f"(raise --ctx-size)")
        if any(not 0 <= t < self.model_config.n_vocab for t in prompt_ids):
            raise NextnError(f"prompt token ids must be in [0, {self.model_config.n_vocab})")
        spec = spec or self.default_spec()
        usable = tuple(d for d in spec.drafters if d in self.drafters)
        if not usable or spec.draft_max == 0:
            spec = SpecConfig(draft_max=0, drafters=())
        elif usable != spec.drafters:
            spec = dataclasses.replace(spec, drafters=usable)
        if spec.draft_max and params.seed is not None and not params.greedy and spec.adaptive:
            # adaptive k depends on timing; a fixed k keeps a seeded sampling request reproducible
            spec = dataclasses.replace(spec, adaptive=False)
        seq = Sequence(prompt_ids, params, spec, acceptance=self.tuner.new_acceptance(spec.draft_max),
                       ngram_acceptance=self.tuner.new_acceptance(self.config.ngram_max, ngram=True))
        if share is not None and share.prompt == seq.prompt and (share.params.prompt_logprobs, share.params.logprobs) \
                == (params.prompt_logprobs, params.logprobs):     # the prompt's scores copied too
            seq.share = share
        if params.json or params.json_schema is not None:
            seq.constraint = JsonConstraint(self.tokenizer.token_bytes, self.tokenizer.eog_ids, len(prompt_ids),
                                            params.json_schema if params.json_schema is not None else OBJECT)
        if not params.greedy:
            self.generators[seq.id] = new_generator(params.seed if params.seed is not None else random.getrandbits(63))
        self.streams[seq.id] = _TextStream(StreamDecoder(self.tokenizer))
        self.scheduler.add(seq)
        return seq

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
            self.streams.pop(seq.id, None)
            self.generators.pop(seq.id, None)
        return outputs

    def _prefill(self, seqs: list[Sequence], ns: list[int]) -> list[Output]:
        for seq in seqs:
            if seq.num_cached == 0:
                self.runner.start(seq)
                if self.drafter is not None:
                    self.drafter.start(seq)
        t0 = time.perf_counter()
        with native.sharing_cores():             # torch ops and native ones alternate
            firsts = self.runner.prefill(seqs, ns, self.generators)
            if self.drafter is not None:
                self.drafter.on_prefill(seqs, ns)
        outputs = []
        for seq, token in zip(seqs, firsts):
            if token is None:
                continue
            for other in [s for s in self.scheduler.active if s.share is seq and s.status == Status.PREFILL]:
                other.share = None                    # a sibling with the same prompt: copy, no prefill
                if self.drafter is not None:
                    self.drafter.start(other)
                    self.drafter.fork(seq, other)
                outputs += self._first_token(other, self.runner.fork(seq, other, self.generators))
            outputs += self._first_token(seq, token)
        dt = time.perf_counter() - t0
        for seq, n in zip(seqs, ns):
            seq.stats.prefill_seconds += dt * n / sum(ns)
        self.stats.prefill_seconds += dt
        return outputs

    def _first_token(self, seq: Sequence, token: int) -> list[Output]:
        if self.drafter is not None:
            self.drafter.on_first_token(seq, token)
        seq.status = Status.DECODE
        self.stats.prompt_tokens += seq.n_prompt
        first = self.runner.first_logprobs.pop(seq.id, None)
        if seq.params.max_tokens == 0:            # the prompt scored, nothing to generate
            seq.finish("length")
            return [Output(seq, [], "", True, [])]
        return [self._emit(seq, [token], [first] if first is not None else None)]

    def _choose_ks(self, seqs: list[Sequence]) -> tuple[list[int], list[int]]:
        """Per sequence: the model drafter's k (the tuner's choice, or the request's fixed k) and the most
        draft tokens the sequence can still take (its length limit and the context)."""
        spec_seqs = [s for s in seqs if s.spec.model_drafter]
        k_auto = self.tuner.choose([s.acceptance for s in spec_seqs]) if spec_seqs else 0
        ks, rooms = [], []
        for s in seqs:
            k = min(k_auto, s.spec.draft_max) if s.spec.adaptive else s.spec.draft_max
            room = max(0, min(s.remaining - 1, self.config.ctx_size - s.num_cached - 1)) if s.spec.draft_max else 0
            ks.append(min(k, room) if s.spec.model_drafter else 0)
            rooms.append(room)
        return ks, rooms

    def _decode(self, seqs: list[Sequence]) -> list[Output]:
        t0 = time.perf_counter()
        ks, rooms = self._choose_ks(seqs)
        captured = self.capture_seconds
        res = decode_step(self.runner, self.drafter, seqs, ks, rooms, self.generators)
        costs = self.tuner.costs
        # the first step of a shape (weights and cache pages touched for the first time), a step that
        # recorded a plan and a sequence's first step after its prompt (caches cold from the prefill's
        # GEMMs) are no measure of what the next ones cost
        shape = (len(seqs), max(res.n_drafted), res.draft_steps)
        timed = shape in self._shapes_seen and self.capture_seconds == captured and all(s.stats.n_steps for s in seqs)
        self._shapes_seen.add(shape)
        # the first drafting step after plain ones runs the head over every pair those left queued: the
        # backlog is work the plain steps put off, no cost of drafting; such a step is no whole-step measure
        steady = not res.draft_steps or res.caught_up <= self.tuner.k_max + 1
        if timed:
            costs.observe_trunk(len(seqs), max(res.n_drafted) + 1, res.verify_seconds + res.commit_seconds)
            costs.observe_draft(len(seqs), res.draft_steps, res.draft_seconds)
            if res.draft_steps and steady:
                costs.observe_catch_up(len(seqs), res.catch_up_seconds)
        outputs = []
        for b, seq in enumerate(seqs):
            by = res.by[b] if res.by else None
            seq.stats.record(res.n_drafted[b], res.n_accepted[b], by)
            self.stats.record(res.n_drafted[b], res.n_accepted[b], by)
            if res.n_drafted[b]:
                ngram = by == "ngram"
                (seq.ngram_acceptance if ngram else seq.acceptance).update(res.n_drafted[b], res.n_accepted[b])
                self.tuner.observe(res.n_drafted[b], res.n_accepted[b], ngram=ngram)
            elif seq.spec.model_drafter:
                seq.acceptance.relax()
            out = self._emit(seq, res.new_tokens[b], res.logprobs[b] if res.logprobs else None)
            out.drafted, out.accepted, out.drafter = res.n_drafted[b], res.n_accepted[b], by
            outputs.append(out)
        seconds = time.perf_counter() - t0      # wall time of the whole step: tok/s is never flattered
        if timed and steady and "ngram" not in (res.by or ()):     # whole-step timings are the model drafter's k's
            costs.observe_step(len(seqs), max(ks), seconds)
        for st in [self.stats] + [seq.stats for seq in seqs]:   # a batched step counts whole for each sequence
            st.add_step(seconds, res.draft_seconds, res.catch_up_seconds, res.verify_seconds, res.commit_seconds)
        return outputs

    def _emit(self, seq: Sequence, tokens: list[int], logprobs: list | None = None) -> Output:
        """Append tokens, apply EOS / length / stop-string rules, and produce the text delta (and the kept
        tokens' logprobs, when the request asked for them)."""
        stream = self.streams[seq.id]
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
        kept_logprobs = logprobs[:len(kept)] if logprobs is not None else []
        seq.logprobs.extend(kept_logprobs)
        seq.stats.n_generated = seq.n_generated
        self.stats.n_generated += len(kept)
        stream.text += stream.decoder.push([t for t in kept if t not in self.tokenizer.eog_ids])
        if seq.is_finished:
            stream.text += stream.decoder.flush()
        for stop in seq.params.stop:
            at = stream.text.find(stop, max(0, stream.sent - len(stop)))
            if at >= 0:
                stream.text = stream.text[:at]
                seq.finish("stop")
        # hold back a tail that could still become a stop string
        hold = 0 if seq.is_finished else max((len(s) - 1 for s in seq.params.stop), default=0)
        upto = max(stream.sent, len(stream.text) - hold)
        delta, stream.sent = stream.text[stream.sent:upto], upto
        return Output(seq, kept, delta, seq.is_finished, kept_logprobs)

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
        return Completion("".join(text), seq.generated, seq.n_prompt, seq.finish_reason, seq.stats, seq.params,
                          seq.logprobs if seq.params.logprobs is not None else None,
                          seq.prompt_logprobs if seq.params.prompt_logprobs else None)

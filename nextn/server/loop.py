"""Runs the engine in one background thread; HTTP handlers submit requests and read outputs from
asyncio queues. One lock guards the engine; a cancelled request frees its slot at the next step."""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback

from ..engine.engine import Engine, Output
from ..engine.params import SamplingParams
from ..engine.sequence import Sequence, SpecConfig
from ..parallel.comm import RankLost
from .protocol import ApiError


class EngineLoop:
    def __init__(self, engine: Engine):
        self.engine = engine
        self.lock = threading.Lock()
        self.wake = threading.Event()
        self.queues: dict[int, tuple[asyncio.AbstractEventLoop, asyncio.Queue]] = {}
        self.running = True
        self.error: str | None = None
        self.fatal: str | None = None       # the engine cannot run any more (a tensor-parallel rank was lost)
        self.thread = threading.Thread(target=self._run, name="nextn-engine", daemon=True)
        self.thread.start()

    def submit(self, prompt_ids: list[int], params: SamplingParams, spec: SpecConfig | None,
               queue: asyncio.Queue | None = None, share: Sequence | None = None) -> tuple[Sequence, asyncio.Queue]:
        """Add a request; its outputs arrive on `queue` (a new one by default; several sequences may share one);
        share: a sequence with the same prompt whose prefill it copies (Engine.add_request)."""
        queue = queue if queue is not None else asyncio.Queue()
        if fatal := self.fatal or self.engine.lost():
            raise ApiError(503, f"{fatal}; restart the server", kind="server_error")
        with self.lock:
            seq = self.engine.add_request(prompt_ids, params, spec, share)
            self.queues[seq.id] = (asyncio.get_running_loop(), queue)
        self.wake.set()
        return seq, queue

    def cancel(self, seq: Sequence) -> None:
        if not seq.is_finished:
            seq.cancelled = True
            self.wake.set()

    def stop(self) -> None:
        self.running = False
        self.wake.set()
        self.thread.join(timeout=5)

    def _run(self) -> None:
        while self.running:
            if not self.engine.has_work:
                self.wake.wait(timeout=0.5)
                self.wake.clear()
                continue
            try:
                with self.lock:
                    outputs = self.engine.step()
            except Exception as e:  # keep serving: fail the affected requests, report the error
                self.error = traceback.format_exc()
                if isinstance(e, RankLost) and self.fatal is None:
                    self.fatal = str(e)
                    print(f"nextn: {e}; every request now fails (503) until the server restarts", file=sys.stderr)
                self._fail_all()
                continue
            for out in outputs:
                self._deliver(out)

    def _deliver(self, out: Output) -> None:
        target = self.queues.get(out.seq.id)
        if target is None:
            return
        loop, queue = target
        if out.finished:
            self.queues.pop(out.seq.id, None)
        try:
            loop.call_soon_threadsafe(queue.put_nowait, out)
        except RuntimeError:   # the client's event loop is gone
            pass

    def _fail_all(self) -> None:
        with self.lock:
            for seq in list(self.engine.scheduler.active) + list(self.engine.scheduler.waiting):
                seq.finish("error")
                self._deliver(Output(seq, [], "", True))
            self.engine.scheduler.release_finished()
            self.engine.scheduler.waiting.clear()

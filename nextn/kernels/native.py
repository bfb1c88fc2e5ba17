"""The native CPU kernels (csrc/, built by `pip install`): one call per op, or a recorded plan.

Every op takes tensors as raw pointers, so a sequence of op calls can be recorded once (`recording`)
and replayed in one call (`Plan.run`): the captured decode step. Eager calls and a replayed plan run
the very same kernels on the very same buffers, so they give the same bits.
"""

from __future__ import annotations

import contextlib
import os

import torch

from . import _native

OPS = {name: i for i, name in enumerate(_native.op_names())}
_plan: "Plan | None" = None
SPIN_US = 3000     # idle kernel threads spin this long before sleeping (decode steps come back to back)


def isa() -> str:
    return _native.isa()


def set_threads(n: int) -> None:
    _native.set_threads(max(1, int(n)))


@contextlib.contextmanager
def sharing_cores():
    """Idle kernel threads sleep at once rather than spin for 3 ms: for work that alternates native ops
    with torch's (prefill), whose threads want the same cores."""
    _native.set_spin(0)
    try:
        yield
    finally:
        _native.set_spin(SPIN_US)


def threads() -> int:
    return _native.threads()


def default_threads() -> int:
    """NEXTN_THREADS, else the cores this process may use (as llama.cpp, one thread per core)."""
    if os.environ.get("NEXTN_THREADS"):
        return int(os.environ["NEXTN_THREADS"])
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:
        return os.cpu_count() or 1


def p(t: torch.Tensor | None) -> int:
    """A tensor's address for the kernels (0 for None)."""
    return 0 if t is None else t.data_ptr()


def run(op: str, ints, floats=()) -> None:
    """Run `op` now, or add it to the plan being recorded."""
    if _plan is not None:
        _plan.add(op, ints, floats)
    else:
        _native.call(OPS[op], ints, floats)


class Plan:
    """A recorded sequence of ops over fixed buffers, replayed by one call (one per segment when Python
    hooks, such as a tensor-parallel all-reduce, sit between the ops)."""

    def __init__(self):
        self.parts: list = []         # _Segment (native ops) or a Python callable, in order
        self.size = 0

    def add(self, op: str, ints, floats=()) -> None:
        if not self.parts or callable(self.parts[-1]):
            self.parts.append(_Segment())
        self.parts[-1].size = _native.plan_add(self.parts[-1].handle, OPS[op], ints, floats)
        self.size += 1

    def hook(self, fn) -> None:
        self.parts.append(fn)

    def run(self) -> None:
        for part in self.parts:
            part() if callable(part) else _native.plan_run(part.handle)

    def profile(self) -> list[tuple[str, float]]:
        """Run once, timing every op: [(op name, seconds)] in plan order (a hook as 'hook')."""
        import time

        names, out = list(OPS), []
        for part in self.parts:
            if callable(part):
                t0 = time.perf_counter()
                part()
                out.append(("hook", time.perf_counter() - t0))
            else:
                out += [(names[op], t) for op, t in _native.plan_profile(part.handle)]
        return out

    def __len__(self) -> int:
        return self.size


class _Segment:
    def __init__(self):
        self.handle, self.size = _native.plan_new(), 0

    def __del__(self):
        _native.plan_free(self.handle)


def hook(fn) -> None:
    """Run a Python function at this point of the forward: now, or, while a plan records, at this point
    of every replay."""
    if _plan is not None:
        _plan.hook(fn)
    else:
        fn()


@contextlib.contextmanager
def recording(plan: Plan):
    """Within the block, ops are recorded into `plan` instead of run."""
    global _plan
    previous, _plan = _plan, plan
    try:
        yield plan
    finally:
        _plan = previous


class Graph:
    """A forward emitted as native ops by `emit()`: recorded into a plan on first use and replayed
    (compiled), or emitted op by op every time (eager, `--no-compile`). Same kernels, same buffers,
    same bits."""

    def __init__(self, emit, compiled: bool = True):
        self.emit, self.compiled, self.plan = emit, compiled, None
        self.capture_seconds = 0.0

    def run(self) -> None:
        if not self.compiled:
            self.emit()
            return
        if self.plan is None:
            import time

            t0 = time.perf_counter()
            plan = Plan()
            with recording(plan):
                self.emit()
            self.plan, self.capture_seconds = plan, time.perf_counter() - t0
        self.plan.run()

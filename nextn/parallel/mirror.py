"""Rank 0 drives, the other ranks follow: every call that runs the network (a trunk or MTP forward, an
output head, a native decode plan, a cache commit) is announced to the followers with its inputs, then
run on rank 0; each follower runs the same call on its shard, so the collectives inside meet. Scheduling,
drafting, sampling, acceptance and rollback decisions happen once, on rank 0, and reach the followers
only as the inputs of the next calls: every rank commits the same state.

Messages travel on a gloo group of their own (the control plane), whatever the device.
"""

from __future__ import annotations

import io
import pickle
import sys
import weakref
from dataclasses import dataclass

import torch
import torch.distributed as dist

from ..errors import NextnError
from .comm import Comm, RankLost, lost

MODEL_CALLS = ("forward", "logits", "mtp_forward", "mtp_logits", "score")
CACHE_CALLS = ("reset_slot", "commit", "copy_slot")


@dataclass(frozen=True)
class Ref:
    """An object named in a message: each rank resolves it to its own (its model shard, its cache)."""
    name: str


class Channel:
    """Broadcasts from rank 0 on the control group (a message is pickled into one fixed buffer: one
    broadcast, a second only for a long one); collective status checks."""

    CAPACITY = 1 << 16

    def __init__(self, comm: Comm, group):
        self.comm, self.group = comm, group
        self.buf = torch.zeros(self.CAPACITY, dtype=torch.uint8)
        self.next_key = 0
        self.released: list[str] = []     # rank 0's objects gone since the last message: the followers drop theirs

    def new_name(self, prefix: str) -> str:
        """A name the followers' counterpart of one of rank 0's objects goes by."""
        self.next_key += 1
        return f"{prefix}{self.next_key}"

    def track(self, obj, name: str) -> str:
        """`name`, released (the followers drop theirs) when rank 0's `obj` is collected."""
        weakref.finalize(obj, self.released.append, name)
        return name

    def send(self, *msg) -> None:
        released, self.released = self.released, []
        data = self._dumps((released, msg))
        self.buf[:8] = torch.tensor([len(data)], dtype=torch.int64).view(torch.uint8)
        fits = len(data) <= self.CAPACITY - 8
        if fits:
            self.buf[8:8 + len(data)] = torch.frombuffer(bytearray(data), dtype=torch.uint8)
        self._bcast(self.buf)
        if not fits:
            self._bcast(torch.frombuffer(bytearray(data), dtype=torch.uint8))

    def receive(self) -> tuple:
        self._bcast(self.buf)
        n = int(self.buf[:8].view(torch.int64))
        if n <= self.CAPACITY - 8:
            return self._loads(self.buf[8:8 + n].numpy().tobytes())
        data = torch.empty(n, dtype=torch.uint8)
        self._bcast(data)
        return self._loads(data.numpy().tobytes())

    def _dumps(self, obj) -> bytes:
        if not torch.cuda.is_initialized():
            return pickle.dumps(obj, protocol=pickle.HIGHEST_PROTOCOL)
        out = io.BytesIO()          # CUDA tensors travel as torch.save writes them, to land on each rank's own GPU
        torch.save(obj, out)
        return b"T" + out.getvalue()

    @staticmethod
    def _loads(data: bytes):
        if data[:1] == b"T":
            return torch.load(io.BytesIO(data[1:]), map_location=torch.device("cuda", torch.cuda.current_device()),
                              weights_only=False)
        return pickle.loads(data)

    def agree(self, error: str | None) -> None:
        """Every rank reports its outcome of the last announced action; any failure raises everywhere."""
        errors = [None] * self.comm.size
        try:
            dist.all_gather_object(errors, error, group=self.group)
        except RuntimeError as e:
            raise lost(e) from None
        bad = [(r, e) for r, e in enumerate(errors) if e]
        if bad:
            r, e = bad[0]
            raise RankLost(e if r == self.comm.rank else f"tensor parallelism: rank {r}: {e}")

    def _bcast(self, t: torch.Tensor) -> None:
        try:
            dist.broadcast(t, src=0, group=self.group)
        except RuntimeError as e:
            raise lost(e, "rank 0" if self.comm.rank else "another rank") from None


class Mirrored:
    """A stand-in for `target` on rank 0: the methods in `calls` are announced, then run; the rest passes through."""

    def __init__(self, target, name: str, channel: Channel, calls: tuple[str, ...]):
        self._target, self._name, self._channel, self._calls = target, name, channel, calls

    def __getattr__(self, attr):
        value = getattr(self._target, attr)
        if attr not in self._calls:
            return value

        def call(*args, **kw):
            self._channel.send("call", self._name, attr, tuple(map(_ref, args)), {k: _ref(v) for k, v in kw.items()})
            return value(*args, **kw)
        return call


def _ref(a):
    return Ref(a._name) if isinstance(a, Mirrored) else a


GRAPH_INPUTS = {"trunk": ("tokens",), "rollback": (), "block": ("tokens", "mtp_in"), "head": ("hidden",)}


def announce_load(channel: Channel, request) -> str:
    """Tell the followers to load their shards (request: what their loader takes); returns the model's name."""
    name = channel.new_name("m")
    channel.send("load", name, request)
    return name


def lead(channel: Channel, runner, mtp_drafter, runner_args: dict) -> None:
    """Wire rank 0's runner (and MTP drafter) so that the followers build the same runner and run every call.
    An MTP drafter whose head runs apart on rank 0 (--tp-mtp rank0) is left alone: its drafts involve no other rank."""
    key = channel.track(runner, channel.new_name("r"))
    channel.send("runner", key, runner.model.tp_name, runner_args)
    channel.agree(None)
    model = Mirrored(runner.model, runner.model.tp_name, channel, MODEL_CALLS)
    runner.model = model
    runner.cache = Mirrored(runner.cache, f"{key}.cache", channel, CACHE_CALLS)
    graphs = {}
    if runner.native:
        graphs.update(trunk=runner.trunk, rollback=runner.rollback)
    if mtp_drafter is not None and mtp_drafter.out is runner:      # draft logits scored by every rank
        mtp_drafter.out_model = model
        if not mtp_drafter.apart:                                      # and the blocks split too
            mtp_drafter.model = model
        if runner.native:
            graphs.update({f"head{i}": g for i, g in enumerate(mtp_drafter.heads)})
            if not mtp_drafter.apart:
                graphs.update({f"block{i}": g for i, g in enumerate(mtp_drafter.blocks)})
    for name, graph in graphs.items():
        graph.run = _announced(graph.run, key, name, channel, runner.buf)


def _announced(run, key: str, name: str, channel: Channel, buf):
    inputs = GRAPH_INPUTS[name.rstrip("0123456789")]

    def announced():
        n = int(buf.rows.head[0])
        channel.send("graph", key, name, buf.rows.t.clone(), {k: getattr(buf, k)[:n].clone() for k in inputs})
        run()
    return announced


class Follower:
    """A rank other than 0: holds its shard and runs what rank 0 announces until told to stop."""

    def __init__(self, channel: Channel, load):
        self.channel, self.load = channel, load       # load(request) -> (cfg, model, tokenizer, file), sharded
        self.objects: dict = {}     # name -> model shard, runner, cache, {graph name: Graph}

    def run(self) -> None:
        while True:
            released, msg = self.channel.receive()
            for name in released:
                for k in [k for k in self.objects if k == name or k.startswith(name + ".")]:
                    del self.objects[k]
            kind = msg[0]
            if kind == "stop":
                return
            if kind in ("load", "runner"):
                error = None
                try:
                    self._load(*msg[1:]) if kind == "load" else self._build(*msg[1:])
                except Exception as e:      # reported to rank 0, which names it
                    error = str(e) if isinstance(e, NextnError) else f"{type(e).__name__}: {e}"
                try:
                    self.channel.agree(error)
                except RankLost:            # rank 0 reports the failure; it stops us (or its loss ends the wait)
                    pass
            elif kind == "call":
                _, name, method, args, kw = msg
                getattr(self.objects[name], method)(*map(self._obj, args), **{k: self._obj(v) for k, v in kw.items()})
            elif kind == "graph":
                self._graph(*msg[1:])

    def _load(self, name: str, request) -> None:
        self.objects[name] = self.load(request)[1]

    def _build(self, key: str, model_name: str, runner_args: dict) -> None:
        from ..engine.runner import ModelRunner
        from ..kernels.native import Graph

        model = self.objects[model_name]
        runner = ModelRunner(model, **runner_args)
        graphs = {}
        if runner.native:
            cache, buf = runner.cache, runner.buf
            compile_ = runner_args.get("compile", True)
            graphs = {"trunk": runner.trunk, "rollback": runner.rollback}
            if runner.use_mtp or model.draft_out is not None:     # draft_out: only the heads (blocks on rank 0)
                for i in range(max(1, model.cfg.n_mtp)):
                    if runner.use_mtp:
                        graphs[f"block{i}"] = Graph(lambda i=i: model.emit_mtp_block(cache, buf, i), compile_)
                    graphs[f"head{i}"] = Graph(lambda i=i: model.emit_mtp_head(buf, i), compile_)
        self.objects.update({key: runner, f"{key}.cache": runner.cache, f"{key}.graphs": graphs})

    def _obj(self, a):
        return self.objects[a.name] if isinstance(a, Ref) else a

    def _graph(self, key: str, name: str, rows: torch.Tensor, inputs: dict) -> None:
        buf = self.objects[key].buf
        buf.rows.t.copy_(rows)
        for k, v in inputs.items():
            getattr(buf, k)[:v.shape[0]] = v
        self.objects[f"{key}.graphs"][name].run()


def follow(channel: Channel, load) -> int:
    """A follower's whole life: exit status 0 when rank 0 stops it, 1 (with a message) when a rank is lost."""
    try:
        Follower(channel, load).run()
        return 0
    except RankLost as e:
        print(f"nextn rank {channel.comm.rank}: {e}", file=sys.stderr)
        return 1
    except Exception as e:          # a failure here strands rank 0 inside a collective: leave, so it sees us go
        print(f"nextn rank {channel.comm.rank}: {type(e).__name__}: {e}", file=sys.stderr)
        return 1
    finally:
        sys.stderr.flush()
        sys.stdout.flush()

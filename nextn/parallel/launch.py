"""Starting the ranks of a `--tp N` run.

On one host, rank 0 (the process the user started) spawns ranks 1..N-1 itself; across hosts, torchrun
starts every rank (`torchrun --nnodes 2 --nproc-per-node 8 ... -m nextn serve --tp 16`) and the
ranks other than 0 become followers. Ranks meet in a torch.distributed process group: gloo on CPU,
NCCL between GPUs for the tensors, and a gloo group for rank 0's messages either way. Each rank opens
the model file itself and memory-maps only its shard; rank 0 checks that every rank's file is the same.
"""

from __future__ import annotations

import atexit
import hashlib
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field, replace
from datetime import timedelta

import torch
import torch.distributed as dist

from ..errors import NextnError
from .comm import Comm
from .mirror import Channel, follow

IDLE = timedelta(days=365)     # followers wait for rank 0's next message as long as a server may sit idle


@dataclass
class Session:
    comm: Comm
    channel: Channel
    procs: list = field(default_factory=list)     # ranks this process spawned (one host)
    lost: str | None = None                       # set when a spawned rank exits on its own
    stopping: bool = False


_session: Session | None = None


def session() -> Session | None:
    return _session


def start(tp: int, device: str | None = None) -> Session | None:
    """Join (torchrun) or create (one host) the ranks of a `--tp tp` run. Rank 0 gets its Session; any
    other rank follows rank 0 until it is stopped and then exits the process."""
    global _session
    if tp <= 1 and int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return None
    if _session is not None:
        if _session.comm.size != tp:
            raise NextnError(f"--tp {tp}: this process already runs {_session.comm.size} ranks")
        return _session
    cuda = device != "cpu" and torch.cuda.is_available()
    if "WORLD_SIZE" in os.environ and "RANK" in os.environ:
        _session = _join_torchrun(tp, cuda)
    else:
        _session = _spawn(tp, cuda)
    return _session


def _join_torchrun(tp: int, cuda: bool) -> Session:
    world, rank = int(os.environ["WORLD_SIZE"]), int(os.environ["RANK"])
    if world != tp:
        raise NextnError(f"--tp {tp}, but torchrun started {world} ranks (--nnodes x --nproc-per-node must equal --tp)")
    local = int(os.environ.get("LOCAL_RANK", "0"))
    _per_rank_threads(int(os.environ.get("LOCAL_WORLD_SIZE", str(tp))))
    channel = _connect(rank, world, "env://", cuda, local)
    if rank != 0:
        sys.exit(_follow(channel))
    atexit.register(stop)
    return Session(channel.comm, channel)


def _spawn(tp: int, cuda: bool) -> Session:
    if cuda and torch.cuda.device_count() < tp:
        raise NextnError(f"--tp {tp}: this machine has {torch.cuda.device_count()} CUDA device(s); use --device cpu "
                         f"or torchrun across hosts")
    _per_rank_threads(tp)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    address = f"tcp://127.0.0.1:{port}"
    # followers as fresh interpreters running this module (not multiprocessing: no re-import of the caller's script)
    procs = [subprocess.Popen([sys.executable, "-m", "nextn.parallel", str(r), str(tp), address, str(int(cuda))])
             for r in range(1, tp)]
    channel = _connect(0, tp, address, cuda, 0)
    s = Session(channel.comm, channel, procs)
    threading.Thread(target=_watch, args=(s,), name="nextn-ranks", daemon=True).start()
    atexit.register(stop)
    return s


def follower_main(rank: int, size: int, address: str, cuda: bool) -> int:
    return _follow(_connect(rank, size, address, cuda, rank))


def _follow(channel: Channel) -> int:
    """A follower's life and exit: leave the process group cleanly when rank 0 said stop; after a lost rank,
    exit at once (tearing down a broken gloo group aborts the process)."""
    status = follow(channel, _loader(channel.comm))
    if status != 0:
        sys.stderr.flush()
        os._exit(status)
    try:
        dist.destroy_process_group()
    except Exception:
        pass
    return status


def _connect(rank: int, size: int, address: str, cuda: bool, local: int) -> Channel:
    if cuda:
        torch.cuda.set_device(local)
    try:
        dist.init_process_group("nccl" if cuda else "gloo", init_method=address, rank=rank, world_size=size,
                                timeout=IDLE)
        control = dist.new_group(backend="gloo", timeout=IDLE) if cuda else dist.group.WORLD
    except (RuntimeError, ValueError) as e:
        raise NextnError(f"--tp {size}: rank {rank} could not join the others ({str(e).splitlines()[0]})") from None
    return Channel(Comm(rank, size), control)


def _per_rank_threads(ranks_here: int) -> None:
    """Without -t, the ranks on one host share its cores (each rank's default is cores / ranks)."""
    if "NEXTN_THREADS" not in os.environ:
        from ..kernels.native import default_threads
        os.environ["NEXTN_THREADS"] = str(max(1, default_threads() // ranks_here))


def _loader(comm: Comm):
    def load(msg):
        from ..engine.engine import Engine
        from ..models.loader import open_trunk, default_model

        config, fingerprint = msg
        mine = file_fingerprint(open_trunk(config.model or default_model()))
        if mine != fingerprint:
            raise NextnError(f"rank {comm.rank}: the model file {config.model or 'demo'} differs from rank 0's "
                             f"(same path, other contents: copy the same file to every host)")
        return Engine.load(replace(config, progress=False), comm)
    return load


def file_fingerprint(gf) -> str:
    """A digest of a GGUF file's tensor table and the first bytes of every tensor: equal files agree,
    a different quantization, conversion or weights does not."""
    h = hashlib.sha256()
    for name, t in gf.tensors.items():
        h.update(f"{name}:{int(t.tensor_type)}:{t.shape.tolist()}:{t.n_bytes};".encode())
        h.update(bytes(t.data.view("uint8").reshape(-1)[:256]))
    return h.hexdigest()


def _watch(s: Session) -> None:
    """Report a spawned rank that exits while rank 0 still runs."""
    while not s.stopping:
        for r, p in enumerate(s.procs, 1):
            if p.poll() is not None and not s.stopping:
                s.lost = f"tensor-parallel rank {r} exited (code {p.returncode})"
                print(f"nextn: {s.lost}", file=sys.stderr)
                return
        time.sleep(0.2)


def stop() -> None:
    """Tell the followers to exit and leave the process group (rank 0; called at exit)."""
    global _session
    s, _session = _session, None
    if s is None:
        return
    s.stopping = True
    broken = s.lost is not None
    if not broken:
        try:
            s.channel.send("stop")
        except Exception:       # a follower is gone already
            broken = True
    for p in s.procs:
        try:
            p.wait(timeout=10)
        except subprocess.TimeoutExpired:
            p.kill()
    if broken:        # a group with a lost rank cannot be torn down cleanly (gloo aborts): leave it to the exit
        return
    try:
        dist.destroy_process_group()
    except Exception:
        pass

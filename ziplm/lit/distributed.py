"""Ranks of a multi-process run: started by ziplm itself, before any work, so every phase knows its rank.

Lightning's own script launcher starts the other ranks at the first ``Trainer.fit``/``validate`` and
re-runs the whole command in them; everything before that call (latency table, teacher cache, data)
would then run twice, unsynchronised. Instead, ``ziplm run trainer=ddp-cpu`` starts its other ranks at
once (`launch_ranks`), each one re-running the same command with the rank's environment, and opens the
process group; Lightning then sees processes created externally (as under torchrun or SLURM, which
ziplm leaves alone: their ranks are already set) and joins that group.

The pipeline is SPMD: every rank runs the recipe. Lightning phases (fit, validate, calibration) run on
all ranks; pruning decisions, timings and files are made on rank 0 and broadcast (`on_main`).
"""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.distributed as dist

T = TypeVar("T")

_RANK_ENV = ("LOCAL_RANK", "RANK", "SLURM_PROCID")  # set when someone else started the processes
_SPAWNING = ("ddp_spawn", "ddp_fork", "ddp_notebook")
_CHILDREN: list[subprocess.Popen[bytes]] = []


def _is_ddp(strategy: Any) -> bool:
    return isinstance(strategy, str) and strategy.startswith("ddp")


def planned_processes(trainer: Mapping[str, Any]) -> int:
    """How many processes the trainer settings ask for on this node (1 unless the strategy is DDP)."""
    strategy = trainer.get("strategy", "auto")
    if not _is_ddp(strategy):
        return 1
    if strategy in _SPAWNING:
        raise ValueError(
            f"trainer.strategy={strategy} starts processes from inside a fit, which a ziplm run (latency "
            "table, pruning, timing between fits) cannot follow; use trainer.strategy=ddp"
        )
    devices = trainer.get("devices", "auto")
    if isinstance(devices, int) and not isinstance(devices, bool):
        return max(1, devices)
    if isinstance(devices, (list, tuple)):
        return len(devices)
    if str(devices).isdigit():
        return max(1, int(str(devices)))
    if trainer.get("accelerator") in ("gpu", "cuda") or (
        trainer.get("accelerator") == "auto" and torch.cuda.is_available()
    ):
        return max(1, torch.cuda.device_count())
    return 1


def launched_externally() -> bool:
    return any(name in os.environ for name in _RANK_ENV)


def world_size() -> int:
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def rank() -> int:
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def is_main() -> bool:
    return rank() == 0


def barrier() -> None:
    if world_size() > 1:
        dist.barrier()


def broadcast(value: T | None) -> T:
    """Rank 0's `value` on every rank (picklable objects); the value itself in a 1-process run."""
    if world_size() == 1:
        return value  # type: ignore[return-value]
    box = [value if is_main() else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]  # type: ignore[return-value]


def on_main(fn: Callable[[], T]) -> T:
    """Run `fn` on rank 0 only and hand its result to every rank (timings, searches, file writes)."""
    return broadcast(fn() if is_main() else None)


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """Sum `tensor` over ranks in place (gloo needs CPU tensors, nccl device tensors: it goes where the group wants)."""
    if world_size() == 1:
        return tensor
    backend = dist.get_backend()
    work = tensor if backend != "gloo" else tensor.cpu()
    dist.all_reduce(work, op=dist.ReduceOp.SUM)
    if work is not tensor:
        tensor.copy_(work)
    return tensor


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _watch(children: Sequence[subprocess.Popen[bytes]], logs: Sequence[Path]) -> None:
    """If a rank dies, say so and end this one too: its peers would otherwise wait in a collective forever."""

    def watch() -> None:
        while True:
            for child, log in zip(children, logs, strict=True):
                code = child.poll()
                if code not in (None, 0):
                    tail = log.read_text(errors="replace")[-2000:] if log.is_file() else ""
                    print(
                        f"error: rank process {child.pid} exited with {code}; its log {log}:\n{tail}", file=sys.stderr
                    )
                    sys.stderr.flush()
                    os._exit(1)
            time.sleep(1.0)

    threading.Thread(target=watch, daemon=True, name="ziplm-rank-watch").start()


def launch_ranks(trainer: Mapping[str, Any], child_args: Sequence[str], log_dir: Path) -> None:
    """Become rank 0 of ``planned_processes(trainer)`` processes (or join the group someone else started).

    `child_args`: what each other rank runs after ``python`` (e.g. ``-m ziplm run ...`` into the same run
    folder); its output goes to ``<log_dir>/rank<N>.log``. A 1-process run returns at once.
    """
    if dist.is_available() and dist.is_initialized():
        return
    count = planned_processes(trainer)
    nodes = int(trainer.get("num_nodes") or 1)
    if count * nodes == 1:
        return
    if not launched_externally():
        if nodes > 1:
            raise ValueError(
                f"trainer.num_nodes={nodes}: start one ziplm per node with torchrun or SLURM (srun), which set "
                "each rank; ziplm starts processes itself only on one node"
            )
        _spawn_others(count, child_args, log_dir)
    backend = "nccl" if trainer.get("accelerator") in ("gpu", "cuda") and torch.cuda.is_available() else "gloo"
    world = int(os.environ.get("WORLD_SIZE", count * nodes))
    global_rank = int(
        os.environ.get("RANK", int(os.environ.get("NODE_RANK", 0)) * count + int(os.environ["LOCAL_RANK"]))
    )
    os.environ.setdefault("RANK", str(global_rank))
    os.environ.setdefault("WORLD_SIZE", str(world))
    if backend == "nccl":
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    dist.init_process_group(backend, rank=global_rank, world_size=world, timeout=timedelta(minutes=60))


def _spawn_others(count: int, child_args: Sequence[str], log_dir: Path) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), NODE_RANK="0", WORLD_SIZE=str(count), LOCAL_RANK="0"
    )
    log_dir.mkdir(parents=True, exist_ok=True)
    logs = []
    for local in range(1, count):
        env = {**os.environ, "LOCAL_RANK": str(local), "RANK": str(local)}
        log = log_dir / f"rank{local}.log"
        with log.open("wb") as sink:
            _CHILDREN.append(
                subprocess.Popen([sys.executable, *child_args], env=env, stdout=sink, stderr=subprocess.STDOUT)
            )
        logs.append(log)
    os.environ["RANK"] = "0"
    _watch(_CHILDREN, logs)
    atexit.register(_stop_children)


def _stop_children() -> None:
    """Rank 0 is leaving (done or failed): ranks still running would wait for it forever."""
    for child in _CHILDREN:
        if child.poll() is None:
            try:
                child.wait(timeout=10)
            except subprocess.TimeoutExpired:
                child.kill()


def finish_ranks() -> None:
    """End a multi-process run: every rank reaches here, the group closes, rank 0 waits for the others."""
    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()
    for child in _CHILDREN:
        child.wait()
    _CHILDREN.clear()

"""Data-parallel training: the processes of one run, as ``torchrun`` or SLURM start them.

Each process (rank) runs the whole program. Rank 0 owns the run folder: it alone writes the
checkpoints, metrics and logs. Every rank draws the same global batches from the task (the
tasks' generators are seeded alike) and trains on its own share of the rows (:func:`shard`);
DistributedDataParallel averages the gradients, so one update sees the configured global
batch, as a single process would. The data stream does not depend on the number of
processes, which is why a run started on N processes resumes on M.

Environments read (as fairseq does):

- ``torchrun``: ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``.
- SLURM (``srun`` with one task per process): ``SLURM_PROCID``, ``SLURM_NTASKS``,
  ``SLURM_LOCALID``; the master is the first host of ``SLURM_JOB_NODELIST`` (expanded with
  ``scontrol show hostnames``) unless ``MASTER_ADDR`` is set, and ``MASTER_PORT`` defaults
  to 29500.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
from dataclasses import dataclass
from typing import Any

import torch
import torch.distributed as dist
from torch import Tensor

DEFAULT_PORT = "29500"


@dataclass(frozen=True)
class DistributedEnv:
    """Where this process stands among the run's processes."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world_size > 1


def detect() -> DistributedEnv:
    """The torchrun or SLURM environment of this process (one process: the default)."""
    env = os.environ
    if "RANK" in env and "WORLD_SIZE" in env:
        return DistributedEnv(
            int(env["RANK"]), int(env["WORLD_SIZE"]), int(env.get("LOCAL_RANK", "0"))
        )
    if int(env.get("SLURM_NTASKS", "1")) > 1 and "SLURM_PROCID" in env:
        return DistributedEnv(
            int(env["SLURM_PROCID"]), int(env["SLURM_NTASKS"]), int(env.get("SLURM_LOCALID", "0"))
        )
    return DistributedEnv()


def _slurm_master() -> str:
    """The first host of the SLURM job (``scontrol show hostnames`` expands the node list)."""
    nodes = os.environ.get("SLURM_JOB_NODELIST") or os.environ.get("SLURM_NODELIST", "")
    try:
        hosts = subprocess.run(
            ["scontrol", "show", "hostnames", nodes], capture_output=True, text=True, check=True
        ).stdout.split()
    except (OSError, subprocess.CalledProcessError):
        hosts = []
    return hosts[0] if hosts else "127.0.0.1"


def initialise(env: DistributedEnv, device: torch.device) -> None:
    """Join the process group (``nccl`` for CUDA devices, ``gloo`` on the CPU)."""
    if not env.active or dist.is_initialized():
        return
    os.environ.setdefault("MASTER_ADDR", _slurm_master() if "SLURM_PROCID" in os.environ else "")
    if not os.environ["MASTER_ADDR"]:
        os.environ["MASTER_ADDR"] = "127.0.0.1"
    os.environ.setdefault("MASTER_PORT", DEFAULT_PORT)
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, rank=env.rank, world_size=env.world_size)


def finish() -> None:
    """Leave the process group (at the end of the run)."""
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def broadcast(value: Any, env: DistributedEnv) -> Any:
    """Rank 0's ``value`` (any picklable object), on every rank."""
    if not env.active:
        return value
    box = [value if env.rank == 0 else None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def barrier(env: DistributedEnv) -> None:
    if env.active:
        dist.barrier()


def shard_bounds(rows: int, rank: int, world_size: int) -> tuple[int, int]:
    """Rows [start, stop) of a global batch of ``rows`` that ``rank`` trains on: contiguous,
    sizes differing by at most one. A batch with fewer rows than processes is not split
    (each process takes all of it: the averaged gradient is still the batch's)."""
    if rows < world_size:
        return 0, rows
    return rows * rank // world_size, rows * (rank + 1) // world_size


def batch_rows(batch: Any) -> int:
    """The rows of a dataclass batch: the first dimension of its first tensor field (its
    ``len`` may count something else, e.g. a language model's tokens)."""
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, Tensor) and value.dim() > 0:
            return int(value.size(0))
    raise TypeError(f"{type(batch).__name__} has no tensor to split into rows")


def shard(batch: Any, rank: int, world_size: int, exact: bool = False) -> Any:
    """``rank``'s rows of ``batch`` (a dataclass batch): every tensor field whose first
    dimension is the batch's rows is sliced; the other fields are kept. ``exact`` (for
    evaluation, where no row may count twice): the rows are split even when there are fewer
    than processes, and a process without rows gets None."""
    rows = batch_rows(batch)
    if exact:
        start, stop = rows * rank // world_size, rows * (rank + 1) // world_size
        if start == stop:
            return None
    else:
        start, stop = shard_bounds(rows, rank, world_size)
    if (start, stop) == (0, rows):
        return batch
    changes = {}
    for field in dataclasses.fields(batch):
        value = getattr(batch, field.name)
        if isinstance(value, Tensor) and value.dim() > 0 and value.size(0) == rows:
            changes[field.name] = value[start:stop]
    return dataclasses.replace(batch, **changes)


def share_weight(local_count: int, global_count: int, world_size: int) -> float:
    """The factor that makes DistributedDataParallel's average of the processes' mean losses
    the mean over the global batch when the shares differ in size: local * W / global, with
    the counts of what the loss is a mean over (rows, words, target tokens:
    ``Task.loss_count``)."""
    if local_count == global_count:  # not split (see shard_bounds)
        return 1.0
    return local_count * world_size / global_count

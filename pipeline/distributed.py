"""Data-parallel training under ``torchrun`` (PyTorch DDP): process group, sharding, gathering.

A training stage with ``train.nproc`` > 1 relaunches itself as
``python -m torch.distributed.run --standalone --nproc_per_node <nproc> -m stages.<stage> ...``
(:func:`relaunch`); a stage started by ``torchrun`` itself (several nodes: ``--nnodes``,
``--rdzv-endpoint``) is recognised from the ``WORLD_SIZE`` it sets. Every rank runs the same
code: each epoch's order is the single-process order (a pure function of seed and epoch), which
``DistributedSampler`` shards across ranks; each rank takes ``train.batch_size / world`` images per
step, so one optimiser step sees the same global batch as one process; gradients are averaged by
DDP; eval-mode metrics are computed on row shards and gathered, so every rank takes the same
early-stopping decision; only rank 0 writes files. Backend: NCCL on CUDA, gloo on CPU.
BatchNorm statistics (``finetune.bn = adapt`` and scratch) are estimated per rank, as DDP does
without SyncBatchNorm.
"""

from __future__ import annotations

import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import numpy as np
import torch
import torch.distributed as dist


@dataclass(frozen=True)
class Context:
    """Where this process stands: ``world`` processes, this one ``rank``."""

    rank: int = 0
    world: int = 1
    local_rank: int = 0

    @property
    def active(self) -> bool:
        return self.world > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


SINGLE = Context()


def env_world_size() -> int:
    return int(os.environ.get("WORLD_SIZE", "1"))


def launched_by_torchrun() -> bool:
    return "LOCAL_RANK" in os.environ and env_world_size() > 1


def init(device_type: str) -> Context:
    """Join the process group torchrun set up (once per process); SINGLE when not under torchrun."""
    if not launched_by_torchrun():
        return SINGLE
    if not dist.is_initialized():
        backend = "nccl" if device_type == "cuda" else "gloo"
        dist.init_process_group(backend=backend, timeout=timedelta(minutes=30))
        logging.getLogger(__name__).info(
            "DDP: rank %d of %d (%s backend)", dist.get_rank(), dist.get_world_size(), backend
        )
    ctx = Context(dist.get_rank(), dist.get_world_size(), int(os.environ["LOCAL_RANK"]))
    if device_type == "cuda":
        torch.cuda.set_device(ctx.local_rank)
    return ctx


def shard(order: np.ndarray, ctx: Context) -> np.ndarray:
    """This rank's rows of an epoch's ``order`` (DistributedSampler: padded to equal length by
    repeating the first rows, rank r takes every world-th row from r)."""
    if not ctx.active:
        return np.asarray(order)
    from torch.utils.data import DistributedSampler

    indices: Any = range(len(order))  # any sized sequence serves as the sampler's data set
    sampler: DistributedSampler[int] = DistributedSampler(indices, num_replicas=ctx.world, rank=ctx.rank, shuffle=False)
    return np.asarray(order)[np.fromiter(iter(sampler), dtype=np.int64)]


def local_batch_size(batch_size: int, ctx: Context) -> int:
    if batch_size % ctx.world:
        raise ValueError(f"train.batch_size {batch_size} must be a multiple of train.nproc {ctx.world}")
    return batch_size // ctx.world


def gather_rows(local: np.ndarray, n_total: int, ctx: Context) -> np.ndarray:
    """Reassemble per-row results computed on ``rows[rank::world]`` into the original order."""
    if not ctx.active:
        return local
    parts: list[np.ndarray | None] = [None] * ctx.world
    dist.all_gather_object(parts, local)
    out = np.empty((n_total, *local.shape[1:]), dtype=local.dtype)
    for r, part in enumerate(parts):
        out[r :: ctx.world] = part
    return out


def all_reduce_sum(x: torch.Tensor, ctx: Context) -> torch.Tensor:
    if ctx.active:
        x = x.clone()
        dist.all_reduce(x, op=dist.ReduceOp.SUM)
    return x


def barrier(ctx: Context) -> None:
    if ctx.active:
        dist.barrier()


def finish(ctx: Context) -> None:
    if ctx.active and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def relaunch(stage: str, argv: list[str], nproc: int) -> int:
    """Run ``python -m stages.<stage> argv`` as ``nproc`` local processes under torchrun."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc_per_node={nproc}",
        "-m",
        f"stages.{stage}",
        *argv,
    ]
    return subprocess.call(cmd)

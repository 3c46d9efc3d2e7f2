"""Data-parallel training under ``torchrun``: one process per GPU (or CPU processes with gloo), gradients
all-reduced by PyTorch's DistributedDataParallel.

The contract that lets a run resume on a different number of processes:

- The data stream does not depend on the process count. Every rank draws the same *global* batch of
  sample indices from a generator seeded by ``(seed, iteration)`` and keeps its own contiguous shard of it
  (:func:`batch_indices`). DDP averages the shards' gradients, which for a loss that is a mean over the
  batch equals the gradient of the whole global batch on one process.
- A checkpoint holds only rank-independent state: the unwrapped model weights (identical on every rank
  after each step), the optimiser state (per parameter, so also identical), the iteration and the seed.
  Only rank 0 writes it; every rank reads the same file.
- Only rank 0 writes checkpoints, previews and logs (:attr:`DistEnv.is_main`).

Usage in a training loop::

    env = init_distributed()                      # reads torchrun's RANK / WORLD_SIZE / LOCAL_RANK
    model = wrap(model.to(env.device), env)       # DistributedDataParallel when world_size > 1
    for it in range(start, iterations):
        idx = batch_indices(len(dataset), global_batch, it, seed, env)
        loss = loss_fn(model(batch_from(idx)))   # a mean over this rank's shard
        loss.backward()                           # all-reduced and averaged across ranks by DDP
        ...
        if env.is_main: save checkpoint(unwrap(model).state_dict(), ...)
    shutdown(env)

``torchrun --nproc-per-node N -m doublure.models.train ...`` starts the processes; :func:`launch` does the
same from ``doublure train --gpus N``.
"""
from __future__ import annotations

import dataclasses
import datetime
import os
import subprocess
import sys
from typing import Sequence

import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from doublure.engine.errors import DoublureError


@dataclasses.dataclass(frozen=True)
class DistEnv:
    """Where this process sits in the job. A single-process run has ``world_size == 1`` and no group."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")
    backend: str | None = None

    @property
    def is_main(self) -> bool:
        """Rank 0: the only process that writes checkpoints, previews and logs."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1


def init_distributed(backend: str | None = None, device: torch.device | str | None = None,
                     timeout_s: float = 1800.0) -> DistEnv:
    """Join the process group described by torchrun's environment (``RANK``, ``WORLD_SIZE``,
    ``LOCAL_RANK``, ``MASTER_ADDR``, ``MASTER_PORT``); without it, a single-process :class:`DistEnv`.

    Args:
        backend: ``nccl`` (the default with CUDA) or ``gloo`` (the default on CPU).
        device: the device to train on; default ``cuda:LOCAL_RANK`` when CUDA is present, else CPU.
        timeout_s: how long a collective waits for the other ranks before failing.
    """
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if device is None:
        device = torch.device("cuda", local_rank) if torch.cuda.is_available() else torch.device("cpu")
    device = torch.device(device)
    if device.type == "cuda":
        torch.cuda.set_device(device)
    if world_size <= 1:
        return DistEnv(device=device)
    backend = backend or ("nccl" if device.type == "cuda" else "gloo")
    if not dist.is_initialized():
        dist.init_process_group(backend=backend, timeout=datetime.timedelta(seconds=timeout_s),
                                **({"device_id": device} if backend == "nccl" else {}))
    return DistEnv(rank=rank, world_size=world_size, local_rank=local_rank, device=device, backend=backend)


def shutdown(env: DistEnv) -> None:
    """Leave the process group (at the end of training, on every rank)."""
    if env.distributed and dist.is_initialized():
        dist.destroy_process_group()


def wrap(module: torch.nn.Module, env: DistEnv, **ddp_options) -> torch.nn.Module:
    """``module`` wrapped in DistributedDataParallel when the job has several processes, else unchanged.

    DDP broadcasts rank 0's parameters and buffers at construction, so every rank starts from the same
    weights (the ones rank 0 loaded from a checkpoint or initialised).
    """
    if not env.distributed:
        return module
    ids = [env.device.index] if env.device.type == "cuda" else None
    return DistributedDataParallel(module, device_ids=ids, **ddp_options)


def unwrap(module: torch.nn.Module) -> torch.nn.Module:
    """The plain module inside a DDP wrapper (its ``state_dict`` has no ``module.`` prefix)."""
    return module.module if isinstance(module, DistributedDataParallel) else module


def shard_bounds(global_batch: int, env: DistEnv) -> tuple[int, int]:
    """``[start, stop)`` of this rank's shard of a global batch. Raises unless the batch divides evenly:
    uneven shards would weight samples unequally in DDP's average."""
    if global_batch % env.world_size:
        raise DoublureError(f"batch size {global_batch} does not divide among {env.world_size} processes; "
                            f"use a multiple of {env.world_size}")
    per_rank = global_batch // env.world_size
    return env.rank * per_rank, (env.rank + 1) * per_rank


def batch_indices(dataset_size: int, global_batch: int, iteration: int, seed: int, env: DistEnv,
                  weights: torch.Tensor | None = None) -> torch.Tensor:
    """This rank's sample indices for ``iteration``: its shard of the global batch drawn with a generator
    seeded by ``(seed, iteration)``, so the stream is the same for any number of processes and a resumed
    run continues it exactly. ``weights`` ((dataset_size,), optional) draws samples in proportion to them
    instead of uniformly.

    Returns:
        int64 tensor of shape (global_batch // world_size,).
    """
    if dataset_size < 1:
        raise DoublureError("the training set is empty")
    generator = torch.Generator().manual_seed((seed * 1_000_003 + iteration) % (2**63))
    # Without replacement within a batch when the set is large enough, so a batch has no duplicate.
    if weights is not None:
        chosen = torch.multinomial(weights, global_batch, replacement=dataset_size < global_batch,
                                   generator=generator)
    elif dataset_size >= global_batch:
        chosen = torch.randperm(dataset_size, generator=generator)[:global_batch]
    else:
        chosen = torch.randint(dataset_size, (global_batch,), generator=generator)
    start, stop = shard_bounds(global_batch, env)
    return chosen[start:stop]


def all_reduce_mean(value: torch.Tensor | float, env: DistEnv) -> float:
    """The mean of a scalar across ranks (for logging the loss); the value itself on one process."""
    if not env.distributed:
        return float(value)
    tensor = torch.as_tensor(value, dtype=torch.float64, device=env.device if env.backend == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.SUM)
    return float(tensor) / env.world_size


def any_rank(flag: bool, env: DistEnv) -> bool:
    """True on every rank if ``flag`` is true on any rank.

    Decisions that change what a rank does next (stop now, skip a non-finite step and roll back) must be the
    same on every rank: a rank that leaves the loop alone leaves the others blocked in the next all-reduce,
    and a rank that rolls back alone no longer holds the weights the others hold.
    """
    if not env.distributed:
        return bool(flag)
    tensor = torch.tensor([1.0 if flag else 0.0], device=env.device if env.backend == "nccl" else "cpu")
    dist.all_reduce(tensor, op=dist.ReduceOp.MAX)
    return bool(tensor.item() > 0)


def barrier(env: DistEnv) -> None:
    """Wait for every rank (e.g. until rank 0 has written a checkpoint the others will read)."""
    if env.distributed:
        dist.barrier()


def launch(module: str, args: Sequence[str], nproc: int, *, standalone: bool = True) -> int:
    """Run ``python -m module args`` as ``nproc`` processes under torchrun on this machine and wait.

    This is ``doublure train --gpus N``: it re-enters the training entry point once per GPU.
    Returns the exit status (non-zero if any rank failed).
    """
    if nproc < 1:
        raise DoublureError(f"--gpus {nproc}: at least one process is needed")
    command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}"]
    if standalone:
        command.append("--standalone")  # a private rendezvous on a free local port
    command += ["-m", module, *args]
    return subprocess.call(command)

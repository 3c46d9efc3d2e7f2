"""A local Dask cluster for ``--workers N``: loopback only, TLS with credentials only this process holds,
one worker per GPU by default."""
from __future__ import annotations

import copy
import logging
import os
from typing import Any

import dask
from distributed import WorkerPlugin

from doublure.engine.cache import PROCESSES_PER_GPU_ENV
from doublure.engine.errors import DoublureError

from .chunk import import_node_library

LOOPBACK = "127.0.0.1"


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class ImportNodeLibrary(WorkerPlugin):
    """Dask worker plugin: import the node library when a worker starts (also on a restarted worker), so
    the first chunk does not pay for it."""

    name = "doublure-import-nodes"

    def setup(self, worker: Any) -> None:
        import_node_library()


def _restarting_local_cluster(**options: Any) -> Any:
    """A ``LocalCluster`` that keeps its workers: a dead worker's nanny starts it again, always.

    Dask's SpecCluster also closes a worker's nanny when no worker of that name is back within
    ``distributed.deploy.lost-worker-timeout`` of a worker's removal. A worker ended twice in a row (a frame
    stalling on each attempt, see ``FrameWatchdog``) is often between lives at that moment, and the
    cluster lost that worker for the rest of its life. Here a removal only updates what the cluster knows.

    This overrides SpecCluster's private ``_update_worker_status``: Dask has no public per-cluster setting for
    it. The one public knob, the ``lost-worker-timeout`` config, is process-wide and read at each removal on the
    cluster's event loop, so raising it for this cluster's life would change every other Dask cluster of the
    calling process (a pipeline's own). ``tests/test_farm.py`` checks that Dask still has the method and that
    a worker ended twice in a row comes back.
    """
    from distributed import LocalCluster
    from distributed.deploy.cluster import Cluster

    class RestartingLocalCluster(LocalCluster):
        def _update_worker_status(self, op: str, msg: Any) -> None:
            if op == "remove":
                Cluster._update_worker_status(self, op, msg)
            else:
                super()._update_worker_status(op, msg)

    return RestartingLocalCluster(**options)


def cluster_address(cluster: Any) -> dict[str, Any]:
    """``farm_render``'s ``scheduler`` and ``security`` arguments for a running cluster (a local one from
    :func:`start_local_cluster` takes its temporary credentials along)."""
    return {"scheduler": cluster.scheduler_address, "security": cluster.security}


def start_local_cluster(workers: int | None = None, gpus: int | None = None) -> Any:
    """A LocalCluster on loopback only, over TLS with temporary credentials only this process holds
    (``cluster.security``; ``Client(cluster)`` uses them): worker processes with one thread each.

    With GPUs (``gpus`` defaults to the count torch sees), one worker per GPU by default; worker i sees only
    GPU i mod the count (``CUDA_VISIBLE_DEVICES``) and carries the resource ``GPU=1``, so more workers than
    GPUs share them: on an H200 a 1080p frame keeps the GPU busy ~3 ms of the ~90 its host work takes, so
    several workers' frames fit on one GPU. Without GPUs, ``workers`` CPU workers (default: the CPU count).
    """
    gpus = gpu_count() if gpus is None else gpus
    if gpus:
        workers = gpus if workers is None else workers
    else:
        workers = workers if workers is not None else (os.cpu_count() or 1)
    if workers < 1:
        raise DoublureError(f"--workers {workers}: at least one worker is needed")
    # Dask sets MALLOC_TRIM_THRESHOLD_ in workers to return memory to the OS sooner; that also pins glibc's
    # mmap threshold, so every frame-sized buffer is mapped and unmapped anew: frames render ~2x slower.
    # TLS with a certificate made for this cluster alone, held in this process's memory and handed to its
    # workers: on a shared render node or workstation another user's client reaching the loopback port
    # cannot run code on the workers as this artist (Dask's scheduler runs what any client sends it).
    from distributed.security import Security

    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
        cluster = _restarting_local_cluster(n_workers=0 if gpus else workers, threads_per_worker=1,
                                            processes=True, host=LOOPBACK, scheduler_port=0, protocol="tls://",
                                            security=Security.temporary(), dashboard_address=None,
                                            worker_dashboard_address=None, silence_logs=logging.ERROR)
        if gpus:
            for i in range(workers):
                spec = copy.deepcopy(cluster.new_spec)
                sharers = len(range(i % gpus, workers, gpus))   # the workers on GPU i mod gpus
                spec["options"]["env"] = {**spec["options"].get("env", {}), "CUDA_VISIBLE_DEVICES": str(i % gpus),
                                          PROCESSES_PER_GPU_ENV: str(sharers)}
                spec["options"]["resources"] = {"GPU": 1}
                cluster.worker_spec[f"gpu{i}"] = spec
            cluster.scale(workers)
            cluster.wait_for_workers(workers, timeout=300)
    return cluster

"""Farm rendering: frame chunks of a project rendered as Dask distributed tasks.

``farm_render`` is ``doublure render`` spread over workers. Each task loads the project on its worker and
renders its chunk with ``engine.render``, the same code as a local render, so the frames are bit-identical.
Chunks are disjoint frame ranges, so no frame is written by two tasks at once; a worker that dies takes its
task with it and the scheduler runs it again elsewhere, and frames the dead worker had finished are skipped
because the Write skips complete frames (which is also what makes re-running an interrupted job render only
the missing frames). The hidden temporary a killed worker was writing is removed when a chunk over its frame
starts again (``engine.render`` sweeps the temporaries of its outputs that no live process holds). A movie
Write (one file for all frames) renders in the same chunks, each into a part beside the movie (a hidden file
named by its frames, kept by a re-run when complete); once every part is there the client joins them into the
movie without encoding again (``video.join_videos``), so a movie renders as fast as a sequence.
A frame stuck beyond ``frame_timeout`` (a hung file server, a decoder waiting forever inside a library;
a thread cannot be stopped from Python) ends its worker process: the worker's nanny starts a new one and the
scheduler runs the chunk again, like any dead worker's, so a stall that does not recur costs one timeout;
one that does fails the job naming the frame once Dask's allowed failures are spent.
When the job stops early (Ctrl-C, or a failure under ``halt_on_error``) the client sets a Dask Event that
every running chunk polls; each stops before its next frame, and ``farm_render`` returns only once none
runs, so a re-run never writes a frame that an old task is still writing.

Either an existing scheduler is named (``scheduler="tcp://host:8786"``) or a ``LocalCluster`` is started on
loopback only (``workers=N``); with GPUs, one worker per GPU by default, each seeing only its GPU and tagged
with the Dask resource ``GPU=1``. More workers than GPUs share them round-robin, each told how many processes
share its GPU (``DOUBLURE_PROCESSES_PER_GPU``, which sizes its frame cache's device tier); a pipeline that
starts several ``dask worker`` processes per GPU itself sets the same variable for them.

This module is the client's side (the plan, the task loop, the stop); the rest of the farm is one job per
module: ``paths`` (how workers see the storage), ``chunk`` (the task a worker runs), ``watchers`` (the threads
that stop a chunk or end a stuck worker), ``movies`` (movie parts and their join), ``report`` (what the client
assembles) and ``cluster`` (the local cluster for ``--workers``).
"""
from __future__ import annotations

import os
import queue
import sys
import time
import uuid
from typing import Any, Callable, Iterable, Sequence

from doublure.engine.errors import DoublureError

from .chunk import ChunkResult, ChunkTask, frames_label, import_node_library, render_chunk
from .cluster import ImportNodeLibrary, start_local_cluster
from .movies import join_movies
from .paths import PathMap, parse_path_map
from .report import FarmReport

# Task retries for exceptions other than DoublureError (an NFS hiccup). A dead worker is handled by the
# scheduler itself: it reschedules the task up to ``distributed.scheduler.allowed-failures`` times.
TASK_RETRIES = 2


def plan_chunks(graph: Any, writes: Any, frames: Any, chunk: int) -> list[tuple[tuple[str, ...], tuple[int, ...]]]:
    """Split the render into tasks: ``(write names, frames)`` each, frames disjoint.

    Every Write shares chunks of ``chunk`` frames (one evaluation of the upstream graph per frame); a movie
    Write's chunk renders a part of the movie (``movie_part_path``), joined when all are done.
    """
    from doublure.engine.render import executable_nodes, resolve_frames

    if chunk < 1:
        raise DoublureError(f"--chunk {chunk}: a chunk holds at least one frame")
    names = tuple(n.name for n in executable_nodes(graph, writes))
    frame_list = resolve_frames(graph, frames)
    return [(names, tuple(frame_list[i:i + chunk])) for i in range(0, len(frame_list), chunk)]


def farm_render(project_path: str, writes: Any = None, frames: Any = None, *, scheduler: str | None = None,
                workers: int | None = None, chunk: int = 10, path_map: Iterable[str] | PathMap = (),
                halt_on_error: bool = False, proxy: float = 1.0, frame_timeout: float | None = None,
                frame_workers: int = 1, progress: bool | Callable[[int, int], None] = False,
                security: Any = None, consent_override: Any = None) -> FarmReport:
    """Render a project's Writes over ``frames`` as Dask tasks of ``chunk`` frames.

    Args:
        project_path: the ``.dbl`` file, as this machine sees it (workers see it through ``path_map``).
        writes: Write names (list or "Write1,Write2"); every enabled Write by default.
        frames: Nuke frame-range syntax; the project's range by default.
        scheduler: an existing Dask scheduler's address (``tcp://host:8786``). Only used when named.
        workers: without ``scheduler``, start a loopback LocalCluster of this many workers (default: one per
            GPU, or one per CPU core on a machine without GPUs).
        chunk: frames per task.
        path_map: ``"FROM=TO"`` strings: how the workers see the paths in the project.
        halt_on_error: stop the job at the first failed frame; otherwise failures are reported per frame.
        proxy: render scale, as for a local render.
        frame_timeout: seconds a chunk may go without finishing a frame; then its worker process ends and
            the chunk runs again (see the module's notes). None: wait however long a frame takes.
        frame_workers: frames of a chunk computing at once on its worker (``engine.render``): more can pay
            on a GPU worker with cores to spare.
        progress: True prints a progress bar (frames, fps, ETA) and the per-worker summary to stderr; a
            callable gets ``(frames done, total)`` after each frame finishes.
        security: the TLS credentials for ``scheduler`` (a ``distributed.security.Security``); by default
            those of the Dask config (README: Farm security).
        consent_override: an ``engine.provenance.ConsentOverride``: render although a model's consent does not
            cover the project's declared use (checked here, on the client, before any task is sent), recorded
            in every frame.

    Returns:
        FarmReport: frames written, skipped as already complete, failures (node, frame, why), per chunk.

    Raises:
        DoublureError: bad arguments, an unreachable scheduler, a failed frame under ``halt_on_error``, or a
            chunk whose worker kept dying.
    """
    from distributed import Client

    from doublure import engine
    from doublure.engine.provenance import check_consent

    if scheduler and workers is not None:
        raise DoublureError("give either --scheduler (an existing cluster) or --workers (a local one), not both")
    if frame_timeout is not None and not frame_timeout > 0:
        raise DoublureError(f"--frame-timeout {frame_timeout}: give a number of seconds above 0")
    if frame_workers < 1:
        raise DoublureError(f"--frame-workers {frame_workers}: give 1 or more")
    import_node_library()
    project_path = os.path.abspath(project_path)
    pairs = parse_path_map(path_map)
    graph = engine.load(project_path)
    plan = plan_chunks(graph, writes, frames, chunk)
    check_consent(graph, [graph[name] for name in dict.fromkeys(n for names, _ in plan for n in names)],
                  min(f for _, chunk_frames in plan for f in chunk_frames), consent_override)
    total = len({f for _, chunk_frames in plan for f in chunk_frames})

    cluster = None
    try:
        if scheduler:
            try:
                client = Client(scheduler, timeout=30, set_as_default=False, security=security)
            except (OSError, TimeoutError) as exc:
                raise DoublureError(f"cannot reach the Dask scheduler at {scheduler}: {exc}") from None
            except TypeError as exc:  # a tls:// address without TLS settings in the Dask config
                raise DoublureError(f"the Dask scheduler at {scheduler} needs TLS settings (README, Farm "
                                    f"security): {exc}") from None
        else:
            cluster = start_local_cluster(workers)
            client = Client(cluster, set_as_default=False)
            client.register_plugin(ImportNodeLibrary())
        try:
            report = _run(client, project_path, plan, total, pairs, halt_on_error, proxy, frame_timeout,
                          frame_workers, progress, cluster, consent_override)
        finally:
            client.close()
        join_movies(graph, plan, report)
        if progress is True:
            print(report.summary(), file=sys.stderr)
        return report
    finally:
        if cluster is not None:
            cluster.close()


def _run(client: Any, project_path: str, plan: list, total: int, path_map: PathMap, halt_on_error: bool,
         proxy: float, frame_timeout: float | None, frame_workers: int, progress: Any, cluster: Any,
         consent_override: Any = None) -> FarmReport:
    from distributed import Event, as_completed

    from doublure.engine.progress import ProgressBar

    if cluster is not None:
        client.wait_for_workers(len(cluster.worker_spec), timeout=120)
    info = client.scheduler_info()
    has_gpus = any(w.get("resources", {}).get("GPU") for w in info.get("workers", {}).values())
    resources = {"GPU": 1} if has_gpus else None

    topic = f"doublure-render-{uuid.uuid4().hex}"
    stop = Event(f"{topic}-stop", client=client)
    finished_frames: queue.Queue[int] = queue.Queue()
    report = FarmReport(frames=total, scheduler=client.scheduler.address)

    def on_event(event: tuple[float, dict]) -> None:
        message = event[1]
        if "stalled" in message:
            report.stalls.append((message["stalled"], message["worker"], message["seconds"], message["where"]))
        else:
            finished_frames.put(message["frame"])

    client.subscribe_topic(topic, on_event)
    bar = ProgressBar(total, "frames") if progress is True else None
    start = time.perf_counter()
    futures = []
    for index, (names, chunk_frames) in enumerate(plan):
        task = ChunkTask(project_path, names, chunk_frames, path_map, halt_on_error, proxy, topic, stop.name,
                         frame_timeout, frame_workers, consent_override)
        futures.append(client.submit(render_chunk, task, key=f"{topic}-chunk-{index}", pure=False,
                                     retries=TASK_RETRIES, priority=-index, resources=resources))
    pending = as_completed(futures, with_results=False, loop=client.loop)
    done: set[int] = set()
    finished = False
    try:
        while not pending.is_empty():
            batch = pending.next_batch(block=False) if pending.has_ready() else []
            for future in batch:
                result = _chunk_result(future, plan[futures.index(future)][1], report.stalls)
                report.add(result)
                done.update(result.frames)
                if result.error is not None:
                    raise DoublureError(f"render stopped: {result.error}")
            while True:
                try:
                    done.add(finished_frames.get_nowait())
                except queue.Empty:
                    break
            if bar is not None:
                bar.update(len(done))
            elif callable(progress):
                progress(len(done), total)
            if not batch:
                time.sleep(0.1)
        finished = True
    finally:
        report.seconds = time.perf_counter() - start
        if not finished:  # interrupted, or a failure under halt_on_error: stop the chunks still running
            _stop_chunks(client, stop, futures)
        for future in futures:
            future.cancel()
        client.unsubscribe_topic(topic)
        if bar is not None:
            bar.close()
    return report


def _stop_chunks(client: Any, stop: Any, futures: list, grace_s: float = 60.0) -> None:
    """Ask every chunk to stop after its current frame and wait until none runs (queued chunks start,
    see the event and return at once), so nothing of this job writes after farm_render returns."""
    from distributed import wait

    try:
        stop.set()
        # distributed.wait finds its client through the default client, which ours is not (set_as_default
        # False, so a farm render never changes the caller's Dask setup): without as_current it raised
        # "No clients found" and returned at once, while chunks still wrote frames.
        with client.as_current():
            wait(futures, timeout=grace_s)
        stop.clear()  # frees the event on the scheduler
    except Exception as exc:  # the scheduler is unreachable, or a chunk outlived the grace period
        print(f"doublure: could not confirm that every chunk stopped: {exc!r}", file=sys.stderr)


def _chunk_result(future: Any, frames: tuple[int, ...], stalls: Sequence[tuple] = ()) -> ChunkResult:
    from distributed.scheduler import KilledWorker

    try:
        return future.result()
    except KilledWorker as exc:
        stalled = [(frame, seconds, where) for frame, _, seconds, where in stalls if frame in frames]
        if stalled:
            frame, seconds, where = stalled[-1]
            raise DoublureError(f"frame {frame} did not finish within {seconds:g} s, on every worker that tried "
                                f"it (frames {frames_label(frames)}; stuck in {where}: a hung file server or "
                                f"a decoder waiting forever?)") from None
        raise DoublureError(f"frames {frames_label(frames)}: the workers rendering them died repeatedly "
                            f"(out of memory? a crash in a node?): {exc}") from None

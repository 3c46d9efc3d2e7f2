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
"""
from __future__ import annotations

import copy
import dataclasses
import importlib
import logging
import os
import queue
import socket
import sys
import threading
import time
import uuid
from typing import Any, Callable, Iterable, Sequence

import dask
from distributed import WorkerPlugin

from doublure.engine.cache import PROCESSES_PER_GPU_ENV
from doublure.engine.errors import DoublureError
from doublure.engine.render import RenderReport

# Task retries for exceptions other than DoublureError (an NFS hiccup). A dead worker is handled by the
# scheduler itself: it reschedules the task up to ``distributed.scheduler.allowed-failures`` times.
TASK_RETRIES = 2
LOOPBACK = "127.0.0.1"

PathMap = tuple[tuple[str, str], ...]


# ------------------------------------------------------------------------------------------------------
# Path mapping: workers that see storage at another path

def parse_path_map(specs: Iterable[str] | str) -> PathMap:
    """``["/mnt/a=/net/b", ...]`` (or one such string) -> ``(("/mnt/a", "/net/b"), ...)``.

    Raises DoublureError for an entry that is not ``FROM=TO`` with both sides non-empty.
    """
    if isinstance(specs, str):
        specs = [specs]
    pairs = []
    for spec in specs:
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            src, dst = spec
        else:
            src, sep, dst = str(spec).partition("=")
            if not sep:
                raise DoublureError(f"--path-map {spec!r}: expected FROM=TO, e.g. /mnt/shows=/net/shows")
        src, dst = str(src).rstrip("/\\") or "/", str(dst).rstrip("/\\") or "/"
        if not src.strip() or not dst.strip():
            raise DoublureError(f"--path-map {spec!r}: both FROM and TO must be paths")
        pairs.append((src, dst))
    return tuple(pairs)


def map_path(path: str, path_map: PathMap) -> str:
    """``path`` with the longest matching ``FROM`` prefix replaced by its ``TO``.

    A prefix matches whole path components only: ``/mnt/a`` maps ``/mnt/a/x`` but not ``/mnt/ab``.
    """
    for src, dst in sorted(path_map, key=lambda pair: len(pair[0]), reverse=True):
        if path == src:
            return dst
        if src in ("/", "\\"):
            if path.startswith(src):
                return dst.rstrip("/\\") + path[len(src) - 1:]
        elif path.startswith(src) and path[len(src)] in "/\\":
            return dst + path[len(src):]
    return path


def apply_path_map(graph: Any, path_map: PathMap, project_dir: str | None = None) -> list[tuple[str, str, str, str]]:
    """Rewrite every File knob of ``graph`` to the path a worker sees: the absolute path the client sees
    (relative values resolved against ``project_dir``, the project's folder on the client; the graph's own
    folder by default) with ``path_map`` applied.

    Project files store paths relative to the project, so a plate on another mount is stored as
    ``../../mnt/a/...``; resolving on the client's side first is what lets ``/mnt/a=/net/b`` reach it.
    Returns ``(node, knob, old value, new value)`` for each knob changed.
    """
    from doublure.engine.knobs import File

    changes = []
    if not path_map:
        return changes
    project_dir = project_dir if project_dir is not None else graph.project_dir
    for node in graph.nodes:
        for name, knob in node.knobs.items():
            if not isinstance(knob.spec, File):
                continue
            value = knob.value_at(graph.settings["first"])
            if not value:
                continue
            absolute = os.path.expanduser(value)
            if not os.path.isabs(absolute):
                absolute = os.path.join(project_dir or os.getcwd(), absolute)
            mapped = map_path(os.path.normpath(absolute), path_map)
            if mapped != os.path.normpath(absolute):
                knob.restore(knob.state_with_value(mapped))
                changes.append((node.name, name, value, mapped))
    return changes


# ------------------------------------------------------------------------------------------------------
# The task: what runs on a worker

@dataclasses.dataclass(frozen=True)
class ChunkTask:
    """One task: render ``writes`` over ``frames`` of the project at ``project`` (a path the client sees)."""

    project: str
    writes: tuple[str, ...]
    frames: tuple[int, ...]
    path_map: PathMap = ()
    halt_on_error: bool = False
    proxy: float = 1.0
    topic: str | None = None  # the Dask event topic per-frame progress is logged under
    stop_event: str | None = None  # the Dask Event the client sets to stop every chunk of the job
    frame_timeout: float | None = None  # seconds without a finished frame before the worker ends itself
    frame_workers: int = 1  # frames of the chunk computing at once on the worker (engine.render)
    consent_override: Any = None  # engine.provenance.ConsentOverride, given on the client, recorded in every frame

    @property
    def label(self) -> str:
        return frames_label(self.frames)


@dataclasses.dataclass
class ChunkResult:
    """What one task did, and where it ran. ``error`` is set when the chunk stopped on a DoublureError
    (a failed frame under ``halt_on_error``, or a project the worker cannot load)."""

    frames: tuple[int, ...]
    written: list[tuple[str, int]]
    skipped: list[tuple[str, int]]
    failures: list[tuple[str, int, str]]
    stale_temps: list[str]
    seconds: float
    worker: str
    host: str
    pid: int
    error: str | None = None
    outdated: list[tuple[str, int]] = dataclasses.field(default_factory=list)  # see RenderReport.outdated
    stopped: bool = False  # the client asked the job to stop; frames after the last finished one were not done


def frames_label(frames: Sequence[int]) -> str:
    """``(1, 2, 3)`` -> ``"1-3"``; non-contiguous lists as ``"1-3,7"``."""
    parts: list[str] = []
    start = prev = None
    for frame in frames:
        if prev is not None and frame == prev + 1:
            prev = frame
            continue
        if start is not None:
            parts.append(str(start) if start == prev else f"{start}-{prev}")
        start = prev = frame
    if start is not None:
        parts.append(str(start) if start == prev else f"{start}-{prev}")
    return ",".join(parts)


def _point_movies_at_parts(graph: Any, task: ChunkTask) -> tuple[list[str], list[tuple[str, int]]]:
    """Point the task's movie Writes at their parts for its frames (``movie_part_path``); a part already
    complete and rendered from this same graph is kept and its Write left out. Returns (the Writes to render,
    (Write, frame) kept)."""
    writes, kept = [], []
    for name in task.writes:
        node = graph[name]
        if node.renders_as_one_file():
            part = movie_part_path(node.path("file"), task.frames)
            expected = node.movie_hash(graph.context(task.frames[0], task.proxy), list(task.frames))
            if is_complete_movie(part, len(task.frames), expected):
                kept += [(name, frame) for frame in task.frames]
                continue
            node["file"] = part
            node.sign_movies = False  # the joined movie is signed, once (join_movies)
        writes.append(name)
    return writes, kept


def _import_node_library() -> None:
    # Registration happens on import; a worker process starts without any node types.
    importlib.import_module("doublure.nodes")


def render_chunk(task: ChunkTask) -> ChunkResult:
    """Load the project and render one chunk with ``engine.render`` (runs on a Dask worker, or anywhere).

    A data failure (corrupt input) is recorded per frame and the chunk goes on, unless ``halt_on_error``:
    then the chunk stops and the result's ``error`` names the frame. Other exceptions propagate (Dask
    retries the task).
    """
    from doublure import engine

    _import_node_library()
    log_frame = _frame_logger(task.topic)
    start = time.perf_counter()
    done_frames: list[int] = []

    watchdog = _FrameWatchdog(task) if task.frame_timeout else None

    def on_frame(done: int, total: int, frame: int) -> None:
        done_frames.append(frame)
        log_frame(frame)
        if watchdog is not None:
            watchdog.finished(frame)

    report = engine.RenderReport()
    error = None
    rendering = False
    cancel = engine.CancelToken()
    watcher = _StopWatcher(task.stop_event, cancel) if task.stop_event else None
    try:
        if cancel.cancelled:
            raise engine.Cancelled()
        graph = engine.load(map_path(task.project, task.path_map))
        apply_path_map(graph, task.path_map, os.path.dirname(task.project))
        writes, kept = _point_movies_at_parts(graph, task)
        rendering = True
        if writes:
            report = engine.render(graph, writes, list(task.frames), proxy=task.proxy,
                                   halt_on_error=task.halt_on_error, progress=on_frame, cancel=cancel,
                                   starting=watchdog.started if watchdog is not None else None,
                                   frame_workers=task.frame_workers, consent_override=task.consent_override)
        report.skipped.extend(kept)
    except engine.Cancelled:
        pass
    except DoublureError as exc:
        # Returned, not raised: Dask would retry it, and a missing project or a corrupt frame fails the same
        # way every time. Under halt_on_error the frame after the last finished one is the one that failed.
        if rendering and len(done_frames) < len(task.frames):
            error = f"frame {task.frames[len(done_frames)]}: {exc}"
        else:
            error = f"frames {task.label}: {exc}"
    finally:
        if watcher is not None:
            watcher.done.set()
        if watchdog is not None:
            watchdog.done.set()
    worker_address, host = _where()
    return ChunkResult(frames=task.frames, written=report.written, skipped=report.skipped,
                       failures=report.failures, stale_temps=report.stale_temps,
                       seconds=time.perf_counter() - start, worker=worker_address, host=host, pid=os.getpid(),
                       error=error, outdated=report.outdated, stopped=cancel.cancelled)


class _StopWatcher(threading.Thread):
    """Polls the job's Dask Event while a chunk renders and cancels the render when the client sets it.

    The render stops at the next cancellation check (before the next frame is written), so when the
    client's stop returns no task of the job is still writing: a re-run cannot write a frame concurrently.
    Started in the task's thread (where the worker's client is reachable); ``done`` ends it.
    """

    POLL_S = 0.5

    def __init__(self, event_name: str, cancel: Any) -> None:
        from distributed import Event, get_client

        super().__init__(name="doublure-stop-watcher", daemon=True)
        self.event = Event(event_name, client=get_client())
        self.cancel = cancel
        self.done = threading.Event()
        if self.event.is_set():
            cancel.cancel()
        else:
            self.start()

    def run(self) -> None:
        while not self.done.is_set():
            try:
                if self.event.wait(timeout=self.POLL_S):
                    self.cancel.cancel()
                    return
            except Exception:  # the scheduler is gone: the worker is shutting down as well
                return


def _outward(stack):
    """A thread's stack frames from the innermost outward."""
    while stack is not None:
        yield stack
        stack = stack.f_back


class _FrameWatchdog(threading.Thread):
    """Ends the worker process when the chunk's render makes no progress (no frame starts or finishes) for
    ``task.frame_timeout`` seconds.

    A frame stuck inside a library call (a read from a hung file server, a decoder waiting forever) cannot
    be interrupted from Python, and it holds the worker's only thread, so the process goes: first the
    stall is logged to the job's topic (the client names the frame), then ``os._exit``. The worker's nanny
    starts a new process and the scheduler runs the chunk again; frames already written are skipped. Only
    armed in a worker process that has a nanny: elsewhere (a threaded worker in the client's process, a
    direct call) the stall is printed and the render waits.

    Made on the thread that renders, which it watches: while that thread waits for a Write's file work the
    stuck frame is the oldest one not finished (its writing); while it waits for frames computing on threads
    of their own (``frame_workers``), the one the busy thread computes; otherwise the last one started (its
    computation). The message names the innermost code of the stuck thread.
    """

    POLL_S = 0.25

    def __init__(self, task: ChunkTask) -> None:
        super().__init__(name="doublure-frame-watchdog", daemon=True)
        self.task = task
        self.render_thread = threading.get_ident()
        self.done = threading.Event()
        self.unfinished: list[int] = []
        self.since = time.monotonic()
        try:
            from distributed import get_worker

            self.worker = get_worker()
        except (ImportError, ValueError):
            self.worker = None
        self.start()

    def started(self, frame: int) -> None:
        self.unfinished.append(frame)
        self.since = time.monotonic()

    def finished(self, frame: int) -> None:
        if frame in self.unfinished:
            self.unfinished.remove(frame)
        self.since = time.monotonic()

    def _stuck(self) -> tuple[int | None, str]:
        """The stuck frame (None before the first starts: the project is loading) and where the code is."""
        stacks = sys._current_frames()
        chain = list(_outward(stacks.get(self.render_thread)))
        writing = any(f.f_code.co_name == "finish_oldest" for f in chain)
        where = chain[0] if chain else None
        frame = (self.unfinished[0] if writing else self.unfinished[-1]) if self.unfinished else None
        # the render waits for a Write's file work, or (frame_workers) for a frame computing on a thread of
        # its own: the stuck code is on such a thread, the only busy one (the render starts no more frames)
        prefix = "doublure-writer" if writing else "doublure-compute"
        for thread in threading.enumerate():
            top = stacks.get(thread.ident) if thread.name.startswith(prefix) else None
            if top is not None and top.f_code.co_name not in ("_worker", "wait"):
                where = top
                if not writing:   # the frame is the one that thread's engine.render compute() was given
                    frame = next((f.f_locals["frame"] for f in _outward(top) if f.f_code.co_name == "compute"
                                  and f.f_code.co_filename.endswith("render.py")), frame)
                break
        place = f"{os.path.basename(where.f_code.co_filename)}:{where.f_lineno} {where.f_code.co_name}" if where \
            else "unknown"
        return frame, place

    def run(self) -> None:
        timeout = float(self.task.frame_timeout)
        while not self.done.wait(self.POLL_S):
            if time.monotonic() - self.since < timeout:
                continue
            frame, place = self._stuck()
            armed = self.worker is not None and getattr(self.worker, "nanny", None) is not None
            what = f"frame {frame}" if frame is not None else f"loading the project for frames {self.task.label}"
            print(f"doublure: {what} did not finish within {timeout:g} s (in {place})"
                  f"{': ending this worker process so the chunk runs again' if armed else ''}",
                  file=sys.stderr, flush=True)
            if self.worker is not None and self.task.topic:
                self.worker.log_event(self.task.topic, {"stalled": frame, "seconds": timeout, "where": place,
                                                        "worker": self.worker.address})
            if not armed:
                return
            time.sleep(1.0)  # the event goes out with the worker's next batched message
            os._exit(3)


def _frame_logger(topic: str | None) -> Callable[[int], None]:
    """A function that logs a finished frame to the client's progress topic (a no-op outside a worker)."""
    if topic is None:
        return lambda frame: None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return lambda frame: None
    return lambda frame: worker.log_event(topic, {"frame": int(frame)})


def _where() -> tuple[str, str]:
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = "local"
    return address, socket.gethostname()


# ------------------------------------------------------------------------------------------------------
# The report the client assembles

@dataclasses.dataclass
class WorkerSummary:
    worker: str
    host: str
    pids: set[int] = dataclasses.field(default_factory=set)
    chunks: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return self.written + self.skipped + self.failed

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        pids = ",".join(str(p) for p in sorted(self.pids))
        return (f"{self.worker} ({self.host} pid {pids}): {self.chunks} chunks, {self.written} written, "
                f"{self.skipped} skipped, {self.failed} failed, busy {self.seconds:.1f} s, {rate:.2f} frames/s")


@dataclasses.dataclass
class FarmReport(RenderReport):
    """A farm render's outcome: a local render's report plus each chunk's result."""

    frames: int = 0
    chunks: list[ChunkResult] = dataclasses.field(default_factory=list)
    scheduler: str = ""
    # (frame, worker, timeout, code it was stuck in) of each chunk that ended its worker; frame None: loading
    stalls: list[tuple[int | None, str, float, str]] = dataclasses.field(default_factory=list)
    # (movie, parts) joined after the chunks; (movie, parts missing) left for a re-run to complete
    movies_joined: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    movies_waiting: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: ChunkResult) -> None:
        self.chunks.append(result)
        self.written.extend(result.written)
        self.skipped.extend(result.skipped)
        self.failures.extend(result.failures)
        self.stale_temps.extend(result.stale_temps)
        self.outdated.extend(result.outdated)

    def workers(self) -> list[WorkerSummary]:
        by_worker: dict[str, WorkerSummary] = {}
        for result in self.chunks:
            summary = by_worker.setdefault(result.worker, WorkerSummary(result.worker, result.host))
            summary.pids.add(result.pid)
            summary.chunks += 1
            summary.written += len(result.written)
            summary.skipped += len(result.skipped)
            summary.failed += len(result.failures)
            summary.seconds += result.seconds
        return sorted(by_worker.values(), key=lambda s: s.worker)

    def summary(self) -> str:
        """The end-of-job text: totals, per-worker lines, and every failed frame."""
        lines = [f"{len(self.written)} written, {len(self.skipped)} skipped (already complete), "
                 f"{len(self.failures)} failed; {self.frames} frames in {self.seconds:.1f} s "
                 f"({self.fps:.2f} frames/s) on {self.scheduler}"]
        if self.stale_temps:
            lines.append(f"  removed {len(self.stale_temps)} temporary file(s) that killed writers left")
        if self.outdated:
            lines.append(f"  {len(self.outdated)} existing frame(s) came from another version of the graph: "
                         f"rendered again")
        lines += ["  " + w.line() for w in self.workers()]
        lines += [f"  frame {frame} did not finish within {seconds:g} s on {worker} (in {where}): that worker "
                  f"process was ended and its chunk ran again" for frame, worker, seconds, where in self.stalls]
        lines += [f"  joined {path} from {parts} parts" for path, parts in self.movies_joined]
        lines += [f"  NOT JOINED {path}: {missing} part(s) missing or incomplete (a re-run renders only those)"
                  for path, missing in self.movies_waiting]
        lines += [f"  FAILED {node} frame {frame}: {why}" for node, frame, why in sorted(self.failures,
                                                                                        key=lambda f: f[1])]
        return "\n".join(lines)


# ------------------------------------------------------------------------------------------------------
# The client side

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


def movie_part_path(path: str, frames: Sequence[int]) -> str:
    """The part of the movie at ``path`` that the chunk over ``frames`` renders: a hidden file beside it, named
    by the chunk's first and last frames."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.part{frames[0]}-{frames[-1]}{os.path.splitext(name)[1]}")


def is_complete_movie(path: str, frames: int, graph_hash: str | None = None) -> bool:
    """True if the video at ``path`` opens and holds ``frames`` frames (a part a re-run can keep) and, when
    ``graph_hash`` is given, was rendered from that graph (``Write.movie_hash`` in its metadata)."""
    from doublure.engine.errors import MediaError
    from doublure.engine.video import VideoReader

    if not os.path.exists(path):
        return False
    try:
        with VideoReader(path) as reader:
            return reader.frame_count == frames and (
                graph_hash is None or reader.metadata.get("doublure/graph_hash") == graph_hash)
    except MediaError:
        return False


def join_movies(graph: Any, plan: list[tuple[tuple[str, ...], tuple[int, ...]]], report: "FarmReport") -> None:
    """Join each movie Write's parts into its movie once every part is complete, then remove them; a movie
    with a part missing (a failed frame) is listed in the report and its parts kept for a re-run."""
    import av

    from doublure.engine.provenance import is_synthetic, sign_file
    from doublure.engine.video import join_videos, metadata_from_tags

    for name in dict.fromkeys(n for names, _ in plan for n in names):
        node = graph[name]
        if not node.renders_as_one_file():
            continue
        movie = node.path("file")
        chunks = [frames for names, frames in plan if name in names]
        parts = [movie_part_path(movie, frames) for frames in chunks]
        missing = sum(not is_complete_movie(part, len(frames)) for part, frames in zip(parts, chunks))
        if missing:
            report.movies_waiting.append((movie, missing))
            continue
        join_videos(parts, movie, {"doublure/frames": f"{chunks[0][0]}-{chunks[-1][-1]}"})
        with av.open(movie) as joined:
            tags = metadata_from_tags(dict(joined.metadata))
        if is_synthetic(tags):
            sign_file(movie, tags)
        for part in parts:
            os.remove(part)
        report.movies_joined.append((movie, len(parts)))


def gpu_count() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


class ImportNodeLibrary(WorkerPlugin):
    """Dask worker plugin: import the node library when a worker starts (also on a restarted worker), so
    the first chunk does not pay for it."""

    name = "doublure-import-nodes"

    def setup(self, worker: Any) -> None:
        _import_node_library()


def _restarting_local_cluster(**options: Any) -> Any:
    """A ``LocalCluster`` that keeps its workers: a dead worker's nanny starts it again, always.

    Dask's SpecCluster also closes a worker's nanny when no worker of that name is back within
    ``distributed.deploy.lost-worker-timeout`` of a worker's removal. A worker ended twice in a row (a frame
    stalling on each attempt, see ``_FrameWatchdog``) is often between lives at that moment, and the
    cluster lost that worker for the rest of its life. Here a removal only updates what the cluster knows.
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
    _import_node_library()
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

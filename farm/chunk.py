"""The farm's task: one chunk of frames rendered on a worker with ``engine.render``, the same code as a local
render, so the frames are bit-identical."""
from __future__ import annotations

import dataclasses
import importlib
import os
import socket
import time
from typing import Any, Callable, Sequence

from doublure.engine.errors import DoublureError
from doublure.engine.in_flight import FramesInFlight

from .movies import is_complete_movie, movie_part_path
from .paths import PathMap, apply_path_map, map_path
from .watchers import FrameWatchdog, StopWatcher


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


def point_movies_at_parts(graph: Any, task: ChunkTask) -> tuple[list[str], list[tuple[str, int]]]:
    """Point the task's movie Writes at their parts for its frames (``movie_part_path``); a part already
    complete and rendered from this same graph is kept and its Write left out. Returns (the Writes to render,
    (Write, frame) kept)."""
    writes, kept = [], []
    for name in task.writes:
        node = graph[name]
        if node.renders_as_one_file():
            part = movie_part_path(node.one_file(), task.frames)
            expected = node.version_of(graph.context(task.frames[0], task.proxy), task.frames)
            if is_complete_movie(part, len(task.frames), expected):
                kept += [(name, frame) for frame in task.frames]
                continue
            node.render_into_part(part)
        writes.append(name)
    return writes, kept


def import_node_library() -> None:
    # Registration happens on import; a worker process starts without any node types.
    importlib.import_module("doublure.nodes")


def render_chunk(task: ChunkTask) -> ChunkResult:
    """Load the project and render one chunk with ``engine.render`` (runs on a Dask worker, or anywhere).

    A data failure (corrupt input) is recorded per frame and the chunk goes on, unless ``halt_on_error``:
    then the chunk stops and the result's ``error`` names the frame. Other exceptions propagate (Dask
    retries the task).
    """
    from doublure import engine
    from doublure.engine.memory import keep_freed_frames

    import_node_library()
    keep_freed_frames()  # the worker's process, as the doublure command does for its own
    log_frame = frame_logger(task.topic)
    start = time.perf_counter()
    done_frames: list[int] = []

    in_flight = FramesInFlight()
    watchdog = FrameWatchdog(task, in_flight) if task.frame_timeout else None

    def on_frame(done: int, total: int, frame: int) -> None:
        done_frames.append(frame)
        log_frame(frame)
        if watchdog is not None:
            watchdog.progressed()

    report = engine.RenderReport()
    error = None
    rendering = False
    cancel = engine.CancelToken()
    watcher = StopWatcher(task.stop_event, cancel) if task.stop_event else None
    try:
        if cancel.cancelled:
            raise engine.Cancelled()
        graph = engine.load(map_path(task.project, task.path_map))
        apply_path_map(graph, task.path_map, os.path.dirname(task.project))
        writes, kept = point_movies_at_parts(graph, task)
        rendering = True
        if writes:
            report = engine.render(graph, writes, list(task.frames), proxy=task.proxy,
                                   halt_on_error=task.halt_on_error, progress=on_frame, cancel=cancel,
                                   starting=watchdog.progressed if watchdog is not None else None,
                                   frame_workers=task.frame_workers, consent_override=task.consent_override,
                                   in_flight=in_flight)
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
    worker_address, host = where_running()
    return ChunkResult(frames=task.frames, written=report.written, skipped=report.skipped,
                       failures=report.failures, stale_temps=report.stale_temps,
                       seconds=time.perf_counter() - start, worker=worker_address, host=host, pid=os.getpid(),
                       error=error, outdated=report.outdated, stopped=cancel.cancelled)


def frame_logger(topic: str | None) -> Callable[[int], None]:
    """A function that logs a finished frame to the client's progress topic (a no-op outside a worker)."""
    if topic is None:
        return lambda frame: None
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return lambda frame: None
    return lambda frame: worker.log_event(topic, {"frame": int(frame)})


def where_running() -> tuple[str, str]:
    try:
        from distributed import get_worker

        address = get_worker().address
    except (ImportError, ValueError):
        address = "local"
    return address, socket.gethostname()

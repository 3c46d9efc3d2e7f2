"""Rendering: the nodes that write files (``engine.output.FileOutputNode``) over a frame list, the same code
locally and on the farm."""
from __future__ import annotations

import collections
import contextlib
import dataclasses
import logging
import os
import time
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Callable, Iterable, Iterator, Sequence

import torch

from .atomic import holds_temporaries, remove_stale_temps
from .context import CancelToken
from .errors import Cancelled, DoublureError
from .in_flight import FramesInFlight
from .knobs import _RANGE_RE, parse_frame_range
from .output import FileOutputNode, FrameJob
from .provenance.consent import ConsentOverride, check_consent

if TYPE_CHECKING:
    from .graph import Graph
    from .node import Node

log = logging.getLogger("doublure.render")


@dataclasses.dataclass
class RenderReport:
    """What a render did: frames written, skipped as already complete, and failures (frame, node, why)."""

    written: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    failures: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    stale_temps: list[str] = dataclasses.field(default_factory=list)  # removed: left by killed writers
    # written over a complete file that another version of the graph had rendered (also in ``written``)
    outdated: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def is_executable(node: "Node") -> bool:
    """True for a node a render executes: one that writes files (:class:`FileOutputNode`)."""
    return isinstance(node, FileOutputNode)


def executable_nodes(graph: "Graph", names: "Iterable[str | Node] | str | None" = None) -> list[FileOutputNode]:
    """The nodes to render: those named, or every enabled executable node (Writes) in graph order."""
    if names is None:
        nodes = [n for n in graph.nodes if is_executable(n) and not n.value("disable", graph.settings["first"])]
        if not nodes:
            raise DoublureError("the project has no enabled Write node to render")
        return nodes
    if isinstance(names, str):
        names = [part for part in names.split(",") if part]
    nodes = []
    for name in names:
        node = graph.node(name)
        if not is_executable(node):
            raise DoublureError(f"{node.name} is a {node.type_name}, not a node that writes files")
        nodes.append(node)
    return nodes


def clear_killed_temporaries(nodes: Sequence[FileOutputNode], frames: Sequence[int]) -> list[str]:
    """Remove what killed writers of these nodes' files over ``frames`` left (see
    :func:`doublure.engine.atomic.remove_stale_temps`: a temporary a live process still writes is kept).

    The outputs of every frame are named only when the folders of the first frame's outputs hold a temporary
    at all: a render of 10^7 frames would otherwise name 10^7 files before its first frame.

    Returns:
        The temporaries removed.
    """
    first = set().union(*(n.outputs(frames[:1]) for n in nodes))
    if not holds_temporaries({os.path.dirname(os.path.realpath(p)) for p in first}):
        return []
    return remove_stale_temps(set().union(*(n.outputs(frames) for n in nodes)))


def resolve_frames(graph: "Graph", frames: Any) -> Sequence[int]:
    """The frames to render: the project's range by default, else Nuke's syntax. A single range (``1-100``,
    ``1-100x2``, the project's) is a ``range``, not a list: a range of 10^9 frames costs nothing to hold."""
    if frames is None or frames == "":
        return range(graph.settings["first"], graph.settings["last"] + 1)
    if isinstance(frames, range):  # already resolved (the CLI resolves to size its progress bar)
        return frames
    single = _RANGE_RE.match(frames) if isinstance(frames, str) and "," not in frames else None
    if single and single.group(2) is not None:
        first, last, step = int(single.group(1)), int(single.group(2)), int(single.group(3) or 1)
        if first <= last and step >= 1:
            return range(first, last + 1, step)
    try:
        return parse_frame_range(frames)
    except ValueError as exc:
        raise DoublureError(f"frame range: {exc}") from None


@contextlib.contextmanager
def _cores_shared_with_writers(writers: int) -> Iterator[None]:
    """torch's CPU thread pool held to half the cores while ``writers`` file writers run beside the frames'
    computation (OpenEXR's compression and x264 keep threads of their own busy): on the 2-core VM the demo
    graph's 1080p render went from 4.9-5.1 to 5.45-5.55 fps with one torch thread instead of two, its CPU
    per frame from ~345 to ~320 ms (bench/RESULTS.md, session 10). The pool is process-wide (a viewer
    computing meanwhile shares the cap) and is given back as it was."""
    before = torch.get_num_threads()
    if writers:
        torch.set_num_threads(max(1, min(before, (os.cpu_count() or 2) // 2)))
    try:
        yield
    finally:
        torch.set_num_threads(before)


# Frames whose file work may wait behind the one being computed: one frame is written while the next one
# computes; a deeper queue would only hold more converted frames in memory (the writer is the slower side).
WRITE_QUEUE_FRAMES = 1


class _FrameCompute:
    """One frame's evaluation, before its file work is handed over: (node, staged job, None for a file kept,
    or the DoublureError staging raised)."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.results: list[tuple[FileOutputNode, "FrameJob | DoublureError | None"]] = []


class _FrameWrites:
    """One frame's file work on the render's writer thread: (node, job future, or False for a file kept)."""

    def __init__(self, frame: int) -> None:
        self.frame = frame
        self.results: list[tuple[FileOutputNode, "Future[None] | bool"]] = []


def render(graph: "Graph", writes: "Iterable[str | Node] | str | None" = None, frames: Any = None, *,
           proxy: float = 1.0, cancel: CancelToken | None = None, halt_on_error: bool = True,
           progress: Callable[[int, int, int], None] | None = None,
           starting: Callable[[int], None] | None = None, frame_workers: int = 1,
           consent_override: ConsentOverride | None = None, in_flight: FramesInFlight | None = None) -> RenderReport:
    """Render ``writes`` (names or nodes; every enabled Write by default) over ``frames`` (Nuke syntax).

    Frames go in order; for each frame every Write executes, so they share the upstream cache. A frame
    that fails for a data reason raises unless ``halt_on_error`` is false, then it is recorded and the
    render goes on. ``progress(done, total, frame)`` is called after each frame is written, ``starting(frame)``
    as each frame's computation begins. ``in_flight`` (an ``engine.in_flight.FramesInFlight``) is kept up to date
    with the frames begun and not finished, what each is doing and on which thread (a watchdog asks it).

    Each node (a ``FileOutputNode``: Write) stages a frame here, evaluating its input, and hands back its file
    work (colour conversion, encoding, compression), which a writer thread of its own runs in frame order while
    the next frame computes; at most ``WRITE_QUEUE_FRAMES`` frames wait for it. Its errors are reported for the
    frame they belong to, and the frames already handed over are finished before the render returns or raises
    (an error or a cancel in a later frame does not drop them).

    ``frame_workers`` frames compute at once, each on a thread of its own (the graph's cache and memos are
    shared and thread-safe): one frame's Python, decoding and colour work then overlaps another's, which
    pays where cores or a GPU wait on a single frame's chain. Their file work still reaches the writers in
    frame order, and their errors are reported in frame order.

    Consent gates it (``provenance.check_consent``): a face model without consent for the project's declared use
    refuses the render before anything is written, unless ``consent_override`` says who allowed it, when and
    why; that record then goes into every frame (``graph.render_record``) and its manifest.
    """
    if frame_workers < 1:
        raise DoublureError(f"frame_workers must be 1 or more, got {frame_workers}")
    nodes = executable_nodes(graph, writes)
    frame_list = resolve_frames(graph, frames)
    cancel = cancel or CancelToken()
    in_flight = in_flight if in_flight is not None else FramesInFlight()
    report = RenderReport()
    start = time.perf_counter()
    template = graph.context(frame_list[0], proxy, cancel)
    for node in nodes:
        node.validate_inputs()
    graph.render_record = check_consent(graph, nodes, frame_list[0], consent_override)
    report.stale_temps = clear_killed_temporaries(nodes, frame_list)
    if report.stale_temps:
        log.warning("removed %d temporary file(s) that killed renders left: %s", len(report.stale_temps),
                    ", ".join(report.stale_temps[:5]) + (" ..." if len(report.stale_temps) > 5 else ""))
    pending: collections.deque[_FrameWrites] = collections.deque()
    done = 0

    def failed(node: FileOutputNode, frame: int, exc: DoublureError) -> None:
        if halt_on_error:
            raise exc
        report.failures.append((node.name, frame, str(exc)))

    def finish_oldest(record_errors_only: bool = False) -> None:
        """Wait for the oldest handed-over frame's file work and account for it."""
        nonlocal done
        writes_of_frame = pending.popleft()
        for node, result in writes_of_frame.results:
            wrote = result
            if isinstance(result, Future):
                try:
                    result.result()
                    wrote = True
                except Exception as exc:
                    if record_errors_only:  # unwinding from another error: keep this one in the report
                        report.failures.append((node.name, writes_of_frame.frame, str(exc)))
                        continue
                    if not isinstance(exc, DoublureError):
                        raise
                    failed(node, writes_of_frame.frame, exc)
                    continue
            (report.written if wrote else report.skipped).append((node.name, writes_of_frame.frame))
        in_flight.done(writes_of_frame.frame)
        done += 1
        if progress is not None and not record_errors_only:
            progress(done, len(frame_list), writes_of_frame.frame)

    begun = []
    completed = False
    # One writer thread per Write: each file's frames go in order, and different files (an EXR sequence and
    # its preview movie) compress side by side instead of one after the other.
    writers = {node: ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"doublure-writer-{node.name}")
               for node in nodes}

    def compute(frame: int) -> _FrameCompute:
        """One frame's evaluation: each node's staged file job (not yet handed over)."""
        in_flight.computing(frame)
        ctx = template.at(frame)
        computed = _FrameCompute(frame)
        for node in nodes:
            try:
                computed.results.append((node, node.stage(ctx)))
            except Cancelled:
                raise
            except DoublureError as exc:
                computed.results.append((node, exc))
                if halt_on_error:
                    break
        in_flight.computed(frame)
        return computed

    def write(job: FrameJob, frame: int) -> None:
        """A frame's file job, on a writer thread, its progress published."""
        in_flight.job_started(frame)
        try:
            job()
        finally:
            in_flight.job_finished(frame)

    def hand_over(computed: _FrameCompute) -> None:
        """In frame order: report the frame's errors and queue its file jobs on the writers (none once the
        render is cancelled, though the frame computed before it was)."""
        cancel.check()
        writes_of_frame = _FrameWrites(computed.frame)
        pending.append(writes_of_frame)
        in_flight.writing(computed.frame, sum(isinstance(result, FrameJob) for _, result in computed.results))
        for node, result in computed.results:
            if isinstance(result, DoublureError):
                failed(node, computed.frame, result)
            elif result is None:
                writes_of_frame.results.append((node, False))
            else:
                writes_of_frame.results.append((node, writers[node].submit(write, result, computed.frame)))
                if result.outdated:
                    report.outdated.append((node.name, computed.frame))
        while len(pending) > WRITE_QUEUE_FRAMES:
            finish_oldest()

    computers = (ThreadPoolExecutor(max_workers=frame_workers, thread_name_prefix="doublure-compute")
                 if frame_workers > 1 else None)
    computing: collections.deque[Future[_FrameCompute]] = collections.deque()
    with _cores_shared_with_writers(len(writers)):
        try:
            for node in nodes:
                node.begin_render(template, frame_list)
                begun.append(node)
            for frame in frame_list:
                if starting is not None:
                    starting(frame)
                if computers is None:
                    hand_over(compute(frame))
                    continue
                computing.append(computers.submit(compute, frame))
                if len(computing) >= frame_workers:
                    hand_over(computing.popleft().result())
            while computing:
                hand_over(computing.popleft().result())
            while pending:
                finish_oldest()
            completed = True
        finally:
            if computers is not None:
                # frames already computing finish (their nodes hold no half-done state); those not begun do not
                computers.shutdown(wait=True, cancel_futures=True)
            if not completed:
                while pending:
                    finish_oldest(record_errors_only=True)
            for writer in writers.values():
                writer.shutdown(wait=True)
            ending: list[DoublureError] = []   # every node ends (closes its files) before one error is raised
            for node in begun:
                try:
                    node.end_render(completed)
                except DoublureError as exc:
                    ending.append(exc)
            graph.render_record = {}
            report.seconds = time.perf_counter() - start
    if ending:
        raise ending[0]
    if report.outdated:
        log.warning("%d existing frame(s) were rendered from another version of the graph and were rendered "
                    "again: %s", len(report.outdated), ", ".join(f"{n} {f}" for n, f in report.outdated[:10]))
    return report

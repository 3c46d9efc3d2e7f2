"""Rendering: executing Write-like nodes over a frame list, the same code locally and on the farm."""
from __future__ import annotations

import dataclasses
import time
from typing import TYPE_CHECKING, Any, Callable, Iterable

from .atomic import remove_stale_temps
from .context import CancelToken
from .errors import Cancelled, DoublureError
from .imageio import frame_path
from .knobs import File, parse_frame_range

if TYPE_CHECKING:
    from .graph import Graph
    from .node import Node


@dataclasses.dataclass
class RenderReport:
    """What a render did: frames written, skipped as already complete, and failures (frame, node, why)."""

    written: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    skipped: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    failures: list[tuple[str, int, str]] = dataclasses.field(default_factory=list)
    stale_temps: list[str] = dataclasses.field(default_factory=list)  # removed: left by killed writers
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.failures


def is_executable(node: "Node") -> bool:
    return callable(getattr(node, "execute", None))


def executable_nodes(graph: "Graph", names: "Iterable[str | Node] | str | None" = None) -> list["Node"]:
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


def output_paths(node: "Node", frames: Iterable[int]) -> set[str]:
    """The files ``node`` writes over ``frames``: its output File knobs (``save``), frame numbers filled in
    (a name without one, a movie, is the same file for every frame)."""
    names = [name for name, knob in node.knobs.items() if isinstance(knob.spec, File) and knob.spec.save]
    return {frame_path(path, frame) for frame in frames for name in names if (path := node.path(name, frame))}


def resolve_frames(graph: "Graph", frames: Any) -> list[int]:
    if frames is None or frames == "":
        return list(range(graph.settings["first"], graph.settings["last"] + 1))
    try:
        return parse_frame_range(frames)
    except ValueError as exc:
        raise DoublureError(f"frame range: {exc}") from None


def render(graph: "Graph", writes: "Iterable[str | Node] | str | None" = None, frames: Any = None, *,
           proxy: float = 1.0, cancel: CancelToken | None = None, halt_on_error: bool = True,
           progress: Callable[[int, int, int], None] | None = None) -> RenderReport:
    """Render ``writes`` (names or nodes; every enabled Write by default) over ``frames`` (Nuke syntax).

    Frames go in order; for each frame every Write executes, so they share the upstream cache. A frame
    that fails for a data reason raises unless ``halt_on_error`` is false, then it is recorded and the
    render goes on. ``progress(done, total, frame)`` is called after each frame.
    """
    nodes = executable_nodes(graph, writes)
    frame_list = resolve_frames(graph, frames)
    cancel = cancel or CancelToken()
    report = RenderReport()
    start = time.perf_counter()
    template = graph.context(frame_list[0], proxy, cancel)
    for node in nodes:
        node.validate_inputs()
    # A resumed or re-run render clears what killed writers of its own files left (see remove_stale_temps:
    # a temporary that a live process still writes is kept).
    report.stale_temps = remove_stale_temps(set().union(*(output_paths(n, frame_list) for n in nodes)))
    begun = []
    completed = False
    try:
        for node in nodes:
            node.begin_render(template, frame_list)
            begun.append(node)
        for done, frame in enumerate(frame_list, 1):
            ctx = template.at(frame)
            for node in nodes:
                try:
                    wrote = node.execute(ctx)
                except Cancelled:
                    raise
                except DoublureError as exc:
                    if halt_on_error:
                        raise
                    report.failures.append((node.name, frame, str(exc)))
                    continue
                (report.written if wrote else report.skipped).append((node.name, frame))
            if progress is not None:
                progress(done, len(frame_list), frame)
        completed = True
    finally:
        for node in begun:
            node.end_render(completed)
        report.seconds = time.perf_counter() - start
    return report

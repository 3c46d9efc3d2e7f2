"""The node graph: the source of truth the editor views, the undo history, and lazy pull evaluation."""
from __future__ import annotations

import contextlib
import dataclasses
import re
import threading
from time import perf_counter
import uuid as uuidlib
from typing import Any, Callable, Iterable, Iterator

import torch

from .cache import FrameCache
from .commands import Command, FunctionCommand, UndoStack
from .context import CancelToken, EvalContext
from .device import default_device
from .errors import ConnectionRefused, Deferred, DoublureError, KnobError, blame
from .hashing import Hasher
from .image import Image, is_unshared
from .node import Inputs, Node, node_type

_NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")

SETTINGS_DEFAULTS: dict[str, Any] = {
    "name": "untitled",
    "first": 1,
    "last": 100,
    "fps": 25.0,
    "working_space": "ACEScg",
    # what the project's renders are for (research, advertising, feature...): a model's consent must allow it
    "declared_use": "",
}


@dataclasses.dataclass(frozen=True)
class GraphEvent:
    """What changed, for views of the graph (the node editor, the properties panel, the viewer).

    kind: ``node_added``, ``node_removed``, ``connected``, ``knob_changed``, ``renamed``, ``moved``,
    ``settings``, ``history`` (the undo stack moved or its clean state changed).
    """

    kind: str
    node: Node | None = None
    name: str | None = None
    index: int | None = None


@dataclasses.dataclass
class NodeTiming:
    """Time spent in one node's own compute (inputs excluded), for the per-node report."""

    computes: int = 0
    seconds: float = 0.0


MAX_FPS = 1000.0
MAX_FRAME = 10**9
"""Frame numbers are within +-MAX_FRAME: one a second for 30 years; past that a number is a typo."""

MAX_NESTING = 64
"""Node levels one chain of nested Python calls may go through (a hash walk or a pull) before the engine
takes the work up again from a shallower call: about five Python frames a level (about 320 at this depth),
inside Python's recursion limit of 1000 whatever called the engine. Each take-up walks the
nested levels again: at 32 a 50-node chain was pulled as 83 nodes a frame, a third of the engine's own time."""


REMAKE_S = 0.1
"""A frame taken by its one consumer (``Graph.take_input``) is still kept when its node's own compute has taken
longer than this a frame (wall time, on average): dropped, a change to a knob below it would make it again (a
face detection, a model's swap on the CPU) where the viewer should answer at once; a gain's or a merge's 1080p
frame (2-20 ms, several times that on a loaded CPU) is cheaper to make again than the memory it holds. A node
not timed yet counts as cheap."""


class _Nesting:
    """Per thread: how deep the current hash walk and pull are, the outputs the outermost pull holds
    for the nodes it will take up again (digest -> (level in its pending list, Image)) and the (node, depth,
    seconds, whether it ended) of every compute as it returns, added to ``Graph.timings`` when the outermost
    pull ends (``Graph._add_timings``)."""

    __slots__ = ("hash_depth", "eval_depth", "held", "timed")

    def __init__(self) -> None:
        self.hash_depth = 0
        self.eval_depth = 0
        self.held: dict[str, tuple[int, Image]] = {}
        self.timed: list[tuple[Node, int, float, bool]] = []


class _DeferredHash(Deferred):
    """args: (node, ctx) whose hash the outermost walk computes first."""


class _DeferredPull(Deferred):
    """args: (node, ctx) whose output the outermost pull computes first."""


def _memo_key(node: Node, ctx: EvalContext) -> tuple:
    """The key of ``node``'s hash at ``ctx`` in ``Graph._hash_memo``: what of ``ctx`` a hash may read."""
    return node.uuid, ctx.frame, ctx.proxy, ctx.working_space


def _defer(node: Node, ctx: EvalContext) -> Image:
    raise _DeferredPull(node, ctx)


class _SetKnob(Command):
    def __init__(self, graph: "Graph", node: Node, name: str, new_state: tuple, text: str) -> None:
        self.graph, self.node, self.name, self.text = graph, node, name, text
        self.old_state = node.knob(name).state()
        self.new_state = new_state

    def _apply(self, state: tuple) -> None:
        self.node.knob(self.name).restore(state)
        self.graph._changed(GraphEvent("knob_changed", self.node, self.name))

    def redo(self) -> None:
        self._apply(self.new_state)

    def undo(self) -> None:
        self._apply(self.old_state)


class Graph:
    """Nodes with unique names, typed connections, project settings, one undo stack and a frame cache.

    Every edit goes through the undo stack. ``evaluate`` pulls one node's output at a frame, computing only
    what the cache lacks.
    """

    def __init__(self, cache: FrameCache | None = None, **settings: Any) -> None:
        self._nodes: dict[str, Node] = {}  # by uuid, in creation order
        self.settings: dict[str, Any] = dict(SETTINGS_DEFAULTS)
        for key, value in settings.items():
            self._check_setting(key, value)
            self.settings[key] = value
        self.ui: dict[str, Any] = {}
        self.project_path: str | None = None
        self.project_disk_state = None  # the project file as loaded or last saved (engine.project_guard)
        self.current_frame: int = self.settings["first"]
        self.cache = cache if cache is not None else FrameCache()
        self.undo_stack = UndoStack(on_change=lambda: self._notify(GraphEvent("history")))
        self.timings: dict[str, NodeTiming] = {}
        self._listeners: list[Callable[[GraphEvent], None]] = []
        self._revision = 0
        self._hash_memo: dict[tuple, str] = {}
        self._own_hashes: dict[str, Hasher | None] = {}  # node uuid -> ``_own_hash``, until the next edit
        self._consumers: dict[str, int] | None = None  # node uuid -> inputs it feeds, until the next edit
        # provenance every frame of the render under way carries (a consent override), set by engine.render
        self.render_record: dict[str, Any] = {}
        self._timing_lock = threading.Lock()
        self._nesting_local = threading.local()

    # -- lookup ---------------------------------------------------------------------------------------
    @property
    def nodes(self) -> list[Node]:
        return list(self._nodes.values())

    @property
    def project_dir(self) -> str | None:
        import os

        return os.path.dirname(os.path.abspath(self.project_path)) if self.project_path else None

    @property
    def revision(self) -> int:
        """Bumped on every change: views and the hash memo use it to know they are stale."""
        return self._revision

    def node(self, name_or_node: "str | Node") -> Node:
        if isinstance(name_or_node, Node):
            if self._nodes.get(name_or_node.uuid) is not name_or_node:
                raise DoublureError(f"{name_or_node.name} is not in this graph")
            return name_or_node
        for node in self._nodes.values():
            if node.name == name_or_node:
                return node
        raise DoublureError(f"no node named {name_or_node!r} (nodes: {', '.join(n.name for n in self.nodes)})")

    __getitem__ = node

    def by_uuid(self, uuid: str) -> Node:
        return self._nodes[uuid]

    def __contains__(self, name: str) -> bool:
        return any(n.name == name for n in self._nodes.values())

    def downstream(self, node: Node) -> list[tuple[Node, int]]:
        """(node, input index) of every connection fed by ``node``."""
        return [(n, i) for n in self._nodes.values() for i, src in enumerate(n.input_nodes) if src is node]

    def upstream(self, node: Node) -> set[Node]:
        """Every node ``node`` depends on, itself excluded."""
        seen: set[Node] = set()
        stack = [n for n in node.input_nodes if n is not None]
        while stack:
            n = stack.pop()
            if n not in seen:
                seen.add(n)
                stack.extend(i for i in n.input_nodes if i is not None)
        return seen

    # -- events ---------------------------------------------------------------------------------------
    def subscribe(self, callback: Callable[[GraphEvent], None]) -> Callable[[], None]:
        """Call ``callback(event)`` after every change; returns a function that unsubscribes."""
        self._listeners.append(callback)
        return lambda: self._listeners.remove(callback)

    def _notify(self, event: GraphEvent) -> None:
        for callback in list(self._listeners):
            callback(event)

    def _changed(self, event: GraphEvent) -> None:
        self._revision += 1
        self._hash_memo = {}
        self._own_hashes = {}
        self._consumers = None
        self._notify(event)

    def reload(self) -> None:
        """Forget memoised hashes so files changed on disk are seen again (the viewer's Reload).

        Hashes name files by path, size and mtime, but are memoised between edits for speed.
        """
        self._changed(GraphEvent("settings", name="reload"))

    # -- edits (all undoable) ---------------------------------------------------------------------------
    def unique_name(self, base: str) -> str:
        base = re.sub(r"\d+$", "", base) or "Node"
        taken = {n.name for n in self._nodes.values()}
        i = 1
        while f"{base}{i}" in taken:
            i += 1
        return f"{base}{i}"

    def create(self, type_name: str, name: str | None = None, *, inputs: Iterable[Node | None] = (),
               position: tuple[float, float] | None = None, uuid: str | None = None, **knob_values: Any) -> Node:
        """Add a node of a registered type with knob values; one undo step (connections included)."""
        cls = node_type(type_name)
        if name is not None:
            self._check_name(name)
        node = cls(self, name or self.unique_name(type_name), uuid or str(uuidlib.uuid4()))
        if position is not None:
            node.position = (float(position[0]), float(position[1]))
        for knob_name, value in knob_values.items():
            knob = node.knob(knob_name)
            knob.restore(knob.state_with_value(value))
        node.knobs_given(knob_values)

        def add() -> None:
            self._nodes[node.uuid] = node
            self._changed(GraphEvent("node_added", node))

        def remove() -> None:
            del self._nodes[node.uuid]
            self._changed(GraphEvent("node_removed", node))

        with self.undo_stack.group(f"Create {node.name}"):
            self.undo_stack.push(FunctionCommand(f"Create {node.name}", add, remove))
            for i, src in enumerate(inputs):
                if src is not None:
                    self._connect(src, node, i, dst_feeds_nothing=True)
        return node

    def delete(self, node: Node, heal: bool = True) -> None:
        """Remove a node. With ``heal``, what it fed is reconnected to its first input (as Nuke does)."""
        node = self.node(node)
        with self.undo_stack.group(f"Delete {node.name}"):
            feeder = node.input_nodes[0] if node.input_nodes else None
            for dst, index in self.downstream(node):
                if heal and feeder is not None and feeder.output_type == dst.inputs[index].type:
                    self.connect(feeder, dst, index)
                else:
                    self.disconnect(dst, index)
            for index, src in enumerate(node.input_nodes):
                if src is not None:
                    self.disconnect(node, index)

            def remove() -> None:
                del self._nodes[node.uuid]
                self._changed(GraphEvent("node_removed", node))

            def add() -> None:
                self._nodes[node.uuid] = node
                self._changed(GraphEvent("node_added", node))

            self.undo_stack.push(FunctionCommand(f"Delete {node.name}", remove, add))

    def connect(self, src: Node, dst: Node, input: int | str = 0) -> None:
        """Feed ``src``'s output into ``dst``'s input. Type mismatches and cycles are refused."""
        self._connect(src, dst, input, dst_feeds_nothing=False)

    def _connect(self, src: Node, dst: Node, input: int | str, dst_feeds_nothing: bool) -> None:
        """``dst_feeds_nothing``: ``dst`` is being created, so no connection can close a cycle through it and
        the walk over ``src``'s upstream (the whole graph, in a long chain) is skipped."""
        src, dst = self.node(src), self.node(dst)
        index = dst.input_index(input) if isinstance(input, str) else input
        if not 0 <= index < len(dst.inputs):
            raise ConnectionRefused(f"{dst.name} has no input {index} (it has {len(dst.inputs)})")
        port = dst.inputs[index]
        if src.output_type != port.type:
            raise ConnectionRefused(f"cannot connect {src.name} ({src.output_type}) to {dst.name}.{port.name} "
                                    f"({port.type})")
        if src is dst or (not dst_feeds_nothing and dst in self.upstream(src)):
            raise ConnectionRefused(f"connecting {src.name} to {dst.name} would make a cycle")
        self._set_input(dst, index, src, f"Connect {src.name} to {dst.name}.{port.name}")

    def disconnect(self, dst: Node, input: int | str = 0) -> None:
        dst = self.node(dst)
        index = dst.input_index(input) if isinstance(input, str) else input
        self._set_input(dst, index, None, f"Disconnect {dst.name}.{dst.inputs[index].name}")

    def _set_input(self, dst: Node, index: int, src: Node | None, text: str) -> None:
        old = dst.input_nodes[index]
        if old is src:
            return

        def apply(value: Node | None) -> Callable[[], None]:
            def run() -> None:
                dst.input_nodes[index] = value
                self._changed(GraphEvent("connected", dst, index=index))
            return run

        self.undo_stack.push(FunctionCommand(text, apply(src), apply(old)))

    def _check_name(self, name: str, node: Node | None = None) -> None:
        if not _NAME_RE.match(name):
            raise DoublureError(f"node name {name!r} must start with a letter and hold only letters, digits, _")
        for other in self._nodes.values():
            if other.name == name and other is not node:
                raise DoublureError(f"a node named {name!r} already exists")

    def rename(self, node: Node, name: str) -> None:
        node = self.node(node)
        self._check_name(name, node)
        old = node.name

        def apply(value: str) -> Callable[[], None]:
            def run() -> None:
                node.name = value
                self._changed(GraphEvent("renamed", node, name=value))
            return run

        self.undo_stack.push(FunctionCommand(f"Rename {old} to {name}", apply(name), apply(old)))

    def move(self, node: Node, x: float, y: float) -> None:
        node = self.node(node)
        old, new = node.position, (float(x), float(y))
        if old == new:
            return

        def apply(value: tuple[float, float]) -> Callable[[], None]:
            def run() -> None:
                node.position = value
                self._notify(GraphEvent("moved", node))
            return run

        self.undo_stack.push(FunctionCommand(f"Move {node.name}", apply(new), apply(old)))

    def set_knob(self, node: Node, name: str, value: Any) -> None:
        """Set a knob to a constant (dropping its animation); a bad value raises and changes nothing."""
        node = self.node(node)
        knob = node.knob(name)
        self.undo_stack.push(_SetKnob(self, node, name, knob.state_with_value(value), f"Set {node.name}.{name}"))

    def set_key(self, node: Node, name: str, frame: float, value: Any, interp: str = "smooth") -> None:
        node = self.node(node)
        knob = node.knob(name)
        self.undo_stack.push(_SetKnob(self, node, name, knob.state_with_key(frame, value, interp),
                                      f"Key {node.name}.{name} at {frame:g}"))

    def remove_key(self, node: Node, name: str, frame: float) -> None:
        node = self.node(node)
        knob = node.knob(name)
        self.undo_stack.push(_SetKnob(self, node, name, knob.state_without_key(frame),
                                      f"Delete key {node.name}.{name} at {frame:g}"))

    def set_knob_state(self, node: Node, name: str, state: tuple, text: str | None = None) -> None:
        """Restore a knob's whole state (value and keys) as one undo step (used by project loading/paste)."""
        node = self.node(node)
        self.undo_stack.push(_SetKnob(self, node, name, state, text or f"Set {node.name}.{name}"))

    def _check_setting(self, key: str, value: Any) -> None:
        if key not in SETTINGS_DEFAULTS:
            raise KnobError(f"project has no setting {key!r} (settings: {', '.join(SETTINGS_DEFAULTS)})")
        expected = type(SETTINGS_DEFAULTS[key])
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if not isinstance(value, expected) or isinstance(value, bool):
            raise KnobError(f"project setting {key}: bad value {value!r} (expected {expected.__name__})")
        if key == "fps" and not 0 < value <= MAX_FPS:  # NaN fails this too
            raise KnobError(f"project setting fps: bad value {value!r} (must be above 0 and at most {MAX_FPS})")
        if key in ("first", "last") and not -MAX_FRAME <= value <= MAX_FRAME:
            raise KnobError(f"project setting {key}: frame {value} is beyond +-{MAX_FRAME}")

    def set_setting(self, key: str, value: Any) -> None:
        """Change a project setting (first, last, fps, working_space, name) as one undo step."""
        self._check_setting(key, value)
        if key == "fps":
            value = float(value)
        old = self.settings[key]
        if key in ("first", "last"):
            first = value if key == "first" else self.settings["first"]
            last = value if key == "last" else self.settings["last"]
            if last < first:
                raise KnobError(f"project frame range {first}-{last} runs backwards")

        def apply(v: Any) -> Callable[[], None]:
            def run() -> None:
                self.settings[key] = v
                self._changed(GraphEvent("settings", name=key))
            return run

        self.undo_stack.push(FunctionCommand(f"Set project {key}", apply(value), apply(old)))

    def undo(self) -> bool:
        return self.undo_stack.undo()

    def redo(self) -> bool:
        return self.undo_stack.redo()

    @contextlib.contextmanager
    def undo_group(self, text: str) -> Iterator[None]:
        """Make every edit in the block one undo step."""
        with self.undo_stack.group(text):
            yield

    # -- evaluation -----------------------------------------------------------------------------------
    @property
    def _nesting(self) -> "_Nesting":
        local = self._nesting_local
        try:
            return local.nesting
        except AttributeError:
            local.nesting = _Nesting()
            return local.nesting

    def context(self, frame: int, proxy: float = 1.0, cancel: CancelToken | None = None,
                device: torch.device | None = None) -> EvalContext:
        return EvalContext(frame=int(frame), proxy=float(proxy), device=device or default_device(),
                           working_space=self.settings["working_space"], project_dir=self.project_dir,
                           cancel=cancel or CancelToken())

    def _resolve_pass_through(self, node: Node, ctx: EvalContext) -> Node:
        while (index := node.pass_through(ctx)) is not None:
            src = node.input_nodes[index]
            if src is None:
                exc = DoublureError(f"{node.name}: passes input {node.inputs[index].name!r} through at frame "
                                    f"{ctx.frame} but nothing is connected to it")
                blame(exc, node.name)
                raise exc
            node = src
        return node

    def hash_of(self, node: Node, ctx: EvalContext) -> str:
        """The cache key of ``node``'s output at ``ctx`` (memoised until the next edit).

        A node's hash asks for its inputs' hashes, so the walk nests one call per node upstream. Past
        ``MAX_NESTING`` levels the nested call is abandoned and the outermost call hashes the deepest node
        asked for first, then takes up again the one that asked: any depth of graph, no recursion limit.
        """
        node = self._resolve_pass_through(node, ctx)
        key = _memo_key(node, ctx)
        digest = self._hash_memo.get(key)
        if digest is not None:
            return digest
        nesting = self._nesting
        if nesting.hash_depth:
            if nesting.hash_depth >= MAX_NESTING:
                raise _DeferredHash(node, ctx)
            return self._hash_here(node, ctx, key, nesting)
        pending = [(node, ctx, key)]
        while True:
            try:
                digest = self._hash_here(*pending[-1], nesting)
            except _DeferredHash as deeper:
                deeper_node, deeper_ctx = deeper.args
                pending.append((deeper_node, deeper_ctx, _memo_key(deeper_node, deeper_ctx)))
                continue
            pending.pop()
            if not pending:
                return digest

    def _hash_here(self, node: Node, ctx: EvalContext, key: tuple, nesting: _Nesting) -> str:
        memo = self._hash_memo  # an edit during the walk replaces it: this digest then goes nowhere
        own = self._own_hash(node)
        nesting.hash_depth += 1
        try:
            if own is not None and len(node.input_nodes) == 1:
                return self._hash_run(node, own, ctx, key, memo)
            try:
                if own is None:
                    h = Hasher()
                    node.hash(ctx, h)
                else:
                    h = own.copy()
                    for i in range(len(node.input_nodes)):
                        h.update(node.input_hash(i, ctx))
            except DoublureError as exc:
                blame(exc, node.name)
                raise
        finally:
            nesting.hash_depth -= 1
        digest = memo[key] = h.hexdigest()
        return digest

    def _hash_run(self, node: Node, own: Hasher, ctx: EvalContext, key: tuple, memo: dict) -> str:
        """The hash of ``node``, one input and an own part the same at every frame (``_own_hash``), and of
        the run of such nodes above it down to the first whose hash is memoised or is not of that kind, in one
        loop: a chain of pointwise nodes is hashed at a new frame without a nested call per node."""
        run = [(key, own)]
        above = node.input_nodes[0]
        digest = None
        while above is not None:
            above_own = self._own_hash(above)
            above_key = _memo_key(above, ctx)  # it passes nothing through when it has an own part
            digest = memo.get(above_key)
            if digest is not None or above_own is None or len(above.input_nodes) != 1:
                break
            run.append((above_key, above_own))
            above = above.input_nodes[0]
        if digest is None and above is not None:
            digest = self.hash_of(above, ctx)
        for run_key, run_own in reversed(run):
            h = run_own.copy()
            h.update(digest)
            digest = memo[run_key] = h.hexdigest()
        return digest

    def _own_hash(self, node: Node) -> Hasher | None:
        """A Hasher fed ``node``'s own part of the default hash (``Node.hash_knobs``) when that part is the same at
        every frame and the node passes nothing through: its type keeps ``Node.hash`` and ``Node.pass_through``,
        no knob is animated and it is not disabled. None otherwise (its ``hash`` is asked each time). Kept until
        the next edit: what the part reads changes only by an edit (a knob, a key), as for the hash memo."""
        owns = self._own_hashes  # an edit meanwhile replaces it: this entry then goes nowhere
        try:
            return owns[node.uuid]
        except KeyError:
            pass
        own = None
        cls = type(node)
        if (cls.hash is Node.hash and cls.pass_through is Node.pass_through
                and not any(knob.is_animated for knob in node.knobs.values())
                and not (node.inputs and node.knobs["disable"].value_at(0))):
            own = Hasher()
            node.hash_knobs(0, own)
        owns[node.uuid] = own
        return own

    def evaluate(self, node: "Node | str", frame: int | None = None, *, proxy: float = 1.0,
                 cancel: CancelToken | None = None, device: torch.device | None = None) -> Image:
        """Pull ``node``'s output at ``frame`` (the current frame by default)."""
        node = self.node(node)
        ctx = self.context(self.current_frame if frame is None else frame, proxy, cancel, device)
        return self.evaluate_node(node, ctx)

    def evaluate_node(self, node: Node, ctx: EvalContext) -> Image:
        """``node``'s output at ``ctx``, from the cache or computed (its inputs pulled as it reads them).

        A node's compute pulls its inputs, so the evaluation nests one call per node upstream: past
        ``MAX_NESTING`` levels the nested pull is abandoned (the nodes waiting on it lose what they did before
        pulling: in a chain, nothing) and the outermost call computes the deepest node asked for first, holds
        its output and takes up again the one that asked, so a graph of any depth evaluates without a
        recursion limit.
        """
        node = self._resolve_pass_through(node, ctx)
        digest = self.hash_of(node, ctx)
        nesting = self._nesting
        if nesting.eval_depth:
            held = nesting.held.get(digest)
            if held is not None:
                return held[1].to(ctx.device)
            compute = _defer if nesting.eval_depth >= MAX_NESTING else self._compute
            return self.cache.obtain(digest, compute, (node, ctx), ctx.cancel, ctx.device)[0]
        pending = [(node, ctx, digest)]
        nesting.held = {}
        try:
            while True:
                node, ctx, digest = pending[-1]
                try:
                    image = self.cache.obtain(digest, self._compute, (node, ctx), ctx.cancel, ctx.device)[0]
                except _DeferredPull as deeper:
                    deeper_node, deeper_ctx = deeper.args
                    pending.append((deeper_node, deeper_ctx, self.hash_of(deeper_node, deeper_ctx)))
                    continue
                pending.pop()
                if not pending:
                    return image
                # Held until the node that asked for it is computed; what it held itself is no longer needed.
                level = len(pending)
                nesting.held = {d: entry for d, entry in nesting.held.items() if entry[0] <= level}
                nesting.held[digest] = (level, image)
        finally:
            nesting.held = {}
            self._add_timings(nesting)

    def _add_timings(self, nesting: _Nesting) -> None:
        """Add the computes this thread's pull timed to ``timings`` and forget them: each that ended, with its
        own time (the time of the computes it called, one level deeper, taken off; they come before it, as
        every compute is recorded when it returns)."""
        timed, nesting.timed = nesting.timed, []
        own = []
        returned: list[tuple[int, float]] = []  # (depth, seconds) of the computes whose caller is not yet seen
        for node, depth, seconds, ended in timed:
            inner = 0.0
            while returned and returned[-1][0] > depth:
                called_depth, called_seconds = returned.pop()
                if called_depth == depth + 1:
                    inner += called_seconds
            returned.append((depth, seconds))
            if ended:
                own.append((node, seconds - inner))
        with self._timing_lock:
            timings = self.timings
            for node, seconds in own:
                timing = timings.get(node.name)
                if timing is None:
                    timing = timings[node.name] = NodeTiming()
                timing.computes += 1
                timing.seconds += seconds

    def take_input(self, node: Node, ctx: EvalContext) -> tuple[Image, bool]:
        """``node``'s output at ``ctx`` for the one node it feeds, and whether that node may write over its
        tensor (``Inputs.take``).

        When ``node`` (and each node it passes through) feeds exactly one input in the graph, its output is
        computed for that consumer alone and not kept in the cache: a chain of pointwise nodes then works in
        place in memory still warm from the node before, as the same torch calls made directly do, instead of
        writing each node's frame into the coldest memory of the cache (the frame it evicts). The cache keeps
        what is asked for at the top (the viewed node, a Write's input), what several nodes read, what
        nodes that do not take their input read, frames slow to make again (:data:`REMAKE_S`) and frames
        that cannot be written over. The tensor is writable only if this call computed it and no one else
        holds it or shares its memory (:func:`is_unshared`): a frame found in the cache, held by a deep pull,
        waited on by another thread, kept by a memo, a view of another tensor, numpy's memory or an Image
        with pasted windows is read-only, is kept as a read's would be, and the consumer writes a new tensor
        as ``Inputs.get`` users do.
        """
        nesting = self._nesting
        source = self._sole_feeder(node, ctx)
        if source is None or nesting.eval_depth >= MAX_NESTING or not self._cheap_to_remake(source):
            return self.evaluate_node(node, ctx), False
        # ``source`` passes nothing through: its memoised hash is looked up without resolving that again
        digest = self._hash_memo.get(_memo_key(source, ctx)) or self.hash_of(source, ctx)
        held = nesting.held.get(digest)
        if held is not None:
            return held[1].to(ctx.device), False
        image, computed = self.cache.obtain(digest, self._compute, (source, ctx), ctx.cancel, ctx.device,
                                            keep=False)
        writable = computed and is_unshared(image, image_refs=1)  # ``image`` is referenced by this local only
        if computed and not writable:
            self.cache.put(digest, image)  # dropping it would save no memory: kept for the next change below
        return image, writable

    def _cheap_to_remake(self, node: Node) -> bool:
        """Whether ``node``'s own compute has taken at most :data:`REMAKE_S` a frame (or was never timed)."""
        timing = self.timings.get(node.name)
        return timing is None or not timing.computes or timing.seconds <= REMAKE_S * timing.computes

    def _sole_feeder(self, node: Node, ctx: EvalContext) -> Node | None:
        """The node whose output ``node`` gives at ``ctx`` (``node`` itself or the one it passes through to)
        when every node on the way feeds exactly one input in the graph; else None."""
        consumers = self._consumers
        if consumers is None:
            consumers = {}
            for n in self._nodes.values():
                for src in n.input_nodes:
                    if src is not None:
                        consumers[src.uuid] = consumers.get(src.uuid, 0) + 1
            self._consumers = consumers
        while consumers.get(node.uuid) == 1:
            index = node.pass_through(ctx)
            if index is None:
                return node
            node = node.input_nodes[index]
            if node is None:
                return None  # evaluate_node names the missing input
        return None

    def is_cached(self, node: "Node | str", frame: int, proxy: float = 1.0) -> bool:
        """Whether ``node``'s output at ``frame`` is in the cache (the timeline's cache line)."""
        node = self.node(node)
        return self.hash_of(node, self.context(frame, proxy)) in self.cache

    def _compute(self, node: Node, ctx: EvalContext) -> Image:
        """``node``'s compute, timed (called by ``FrameCache.obtain``, which checked for cancellation)."""
        nesting = self._nesting
        depth = nesting.eval_depth = nesting.eval_depth + 1
        ended = False
        start = perf_counter()
        try:
            node.validate_inputs()
            image = node.compute(ctx, Inputs(self, node, ctx))
            ended = True
        except DoublureError as exc:
            blame(exc, node.name)
            raise
        finally:
            # Own times are worked out and added when the outermost pull ends (``_add_timings``): after each node
            # of a chain over a frame the size of the CPU's cache, a stack of the inputs' times, the lock, the
            # dict and that node's NodeTiming would be read from cold memory.
            nesting.timed.append((node, depth, perf_counter() - start, ended))
            nesting.eval_depth = depth - 1
        if getattr(image, "_on", None) is ctx.device:  # an Image found on this device already (``Image.to``)
            return image
        if not isinstance(image, Image):
            raise TypeError(f"{node.type_name}.compute returned {type(image).__name__}, not an Image")
        return image.to(ctx.device)

    # -- files and rendering ---------------------------------------------------------------------------
    def save(self, path: str, overwrite: bool = False) -> None:
        """Save the project (``engine.project.save_graph``); refuses a file changed on disk meanwhile unless
        ``overwrite``."""
        from .project import save_graph

        save_graph(self, path, overwrite)

    def render(self, writes: "Iterable[str | Node] | str | None" = None, frames: Any = None, **kwargs: Any) -> Any:
        from .render import render

        return render(self, writes, frames, **kwargs)

"""The node contract (see docs/ENGINE_API.md): ports, knobs, ``hash(ctx, h)`` and ``compute(ctx, inputs)``.

Like Gaffer's ComputeNode: ``hash`` is cheap and names everything the output depends on; ``compute`` makes
the pixels and is only called when the cache has no entry for that hash. A node whose output is one of its
inputs unchanged (disabled, mix 0, a Dot) reports that input from ``pass_through``: it then shares the
input's hash, so the cache holds one entry for both.
"""
from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch

from . import knobs as K
from .context import EvalContext
from .errors import DoublureError, KnobError
from .hashing import Hasher
from .image import Image

if TYPE_CHECKING:
    from .graph import Graph

PORT_TYPES = ("Image", "Mask")


@dataclasses.dataclass(frozen=True)
class Port:
    """An input: its name, the type it accepts (``Image`` or ``Mask``) and whether it may stay empty."""

    name: str
    type: str = "Image"
    optional: bool = False

    def __post_init__(self) -> None:
        if self.type not in PORT_TYPES:
            raise ValueError(f"port type {self.type!r} is not one of {PORT_TYPES}")


_REGISTRY: dict[str, type["Node"]] = {}


def register_node(cls: type["Node"]) -> type["Node"]:
    """Class decorator: make a node type creatable by name (``graph.create("Read")``, project files)."""
    name = cls.type_name
    if not name or not name.isidentifier():
        raise ValueError(f"{cls.__name__}.type_name {name!r} must be an identifier")
    if name in _REGISTRY and _REGISTRY[name] is not cls:
        raise ValueError(f"node type {name!r} is registered twice ({_REGISTRY[name].__module__}, {cls.__module__})")
    names = [s.name for s in cls.all_knob_specs()]
    if len(set(names)) != len(names):
        raise ValueError(f"node type {name!r} declares a knob twice")
    _REGISTRY[name] = cls
    return cls


def node_types() -> dict[str, type["Node"]]:
    """Every registered node type by name (import ``doublure.nodes`` to register the library)."""
    return dict(_REGISTRY)


def node_type(name: str) -> type["Node"]:
    try:
        return _REGISTRY[name]
    except KeyError:
        raise DoublureError(f"unknown node type {name!r}") from None


def resolve_path(path: str, base: str | None) -> str:
    """A file path as the project means it: ``~`` expanded, an absolute path as it is, a relative one
    resolved against ``base`` (the project's folder; the working folder when None) and normalised.
    The one resolver of File knobs, stored analyses and project paths."""
    path = os.path.expanduser(path)
    if os.path.isabs(path):
        return path
    return os.path.normpath(os.path.join(base or os.getcwd(), path))


DISABLE = K.Bool("disable", False, tooltip="Pass the first input through unchanged.")


class Node:
    """Base of every node type. Subclasses set the class attributes and implement ``compute``."""

    type_name: ClassVar[str] = ""
    version: ClassVar[int] = 1
    category: ClassVar[str] = "Other"
    inputs: ClassVar[tuple[Port, ...]] = (Port("input"),)
    output_type: ClassVar[str] = "Image"
    knob_specs: ClassVar[tuple[K.KnobSpec, ...]] = ()
    actions: ClassVar[tuple[tuple[str, str], ...]] = ()
    # How a project saved with an older ``version`` of this node is read (OpenTimelineIO's habit): for a version
    # N whose saved form differs from N + 1's, ``upgrades[N]`` takes the node's saved entry of version N (its
    # "knobs" and "inputs") and returns it as version N + 1 saves it (a renamed knob moved to its new name).
    # A version bumped only because compute changed needs none. Loading applies each in turn.
    upgrades: ClassVar[dict[int, Callable[[dict], dict]]] = {}

    def __init__(self, graph: "Graph", name: str, uuid: str) -> None:
        self.graph = graph
        self.name = name
        self.uuid = uuid
        self.position: tuple[float, float] = (0.0, 0.0)
        self.knobs: dict[str, K.Knob] = {spec.name: K.Knob(spec, self) for spec in self.all_knob_specs()}
        self.input_nodes: list[Node | None] = [None] * len(self.inputs)

    @classmethod
    def all_knob_specs(cls) -> tuple[K.KnobSpec, ...]:
        return tuple(cls.knob_specs) + (DISABLE,)

    def __repr__(self) -> str:
        return f"<{self.type_name} {self.name}>"

    # -- knobs ----------------------------------------------------------------------------------------
    def knob(self, name: str) -> K.Knob:
        try:
            return self.knobs[name]
        except KeyError:
            raise KnobError(f"{self.name} has no knob {name!r} (knobs: {', '.join(self.knobs)})") from None

    def value(self, name: str, frame: float | None = None) -> Any:
        """A knob's value at a frame (animation evaluated); the graph's current frame by default."""
        knob = self.knobs.get(name) or self.knob(name)  # knob() names the node when it has no such knob
        return knob.value_at(self.graph.current_frame if frame is None else frame)

    def __getitem__(self, name: str) -> Any:
        return self.value(name)

    def __setitem__(self, name: str, value: Any) -> None:
        self.graph.set_knob(self, name, value)

    def path(self, name: str, frame: float | None = None) -> str:
        """A File knob's value as an absolute path, relative ones resolved against the project's folder."""
        value = self.value(name, frame)
        return resolve_path(value, self.graph.project_dir) if value else value

    def knobs_given(self, given: dict[str, Any]) -> None:
        """Called by ``Graph.create`` once the knob values it was given are set, before the node joins the
        graph: a node may derive the knobs left out from them (Read fills first/last from its file, as
        Nuke's Read does). Project loading restores knobs as saved and does not call it."""

    # -- connections ----------------------------------------------------------------------------------
    def input(self, index: int) -> "Node | None":
        return self.input_nodes[index]

    def set_input(self, index: int, node: "Node | None") -> None:
        if node is None:
            self.graph.disconnect(self, index)
        else:
            self.graph.connect(node, self, index)

    def input_index(self, name: str) -> int:
        for i, port in enumerate(self.inputs):
            if port.name == name:
                return i
        raise DoublureError(f"{self.name} has no input {name!r}")

    # -- evaluation -----------------------------------------------------------------------------------
    def pass_through(self, ctx: EvalContext) -> int | None:
        """The index of the input returned unchanged at this context, or None. Disabled nodes pass input 0."""
        if self.knobs["disable"].value_at(ctx.frame) and self.inputs:
            return 0
        return None

    def input_hash(self, index: int, ctx: EvalContext) -> str | None:
        """The hash of input ``index`` at ``ctx`` (None when unconnected)."""
        node = self.input_nodes[index]
        return None if node is None else self.graph.hash_of(node, ctx)

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        """Add to ``h`` everything ``compute`` reads at ``ctx``. The default covers type, version, every
        knob's value at ``ctx.frame`` and each input's hash at ``ctx``; it does not add the frame.

        A node type that keeps this default and ``pass_through``'s, with no knob animated, has the same own
        part at every frame: the graph hashes it once until the next edit and adds the inputs' hashes to a copy
        of it at each frame (``Graph.hash_of``), the same digest as this method's."""
        self.hash_knobs(ctx.frame, h)
        for i in range(len(self.inputs)):
            h.update(self.input_hash(i, ctx))

    def hash_knobs(self, frame: float, h: Hasher) -> None:
        """The default hash's own part: type, version and every knob's value at ``frame`` but ``disable``."""
        h.update(self.type_name).update(self.version)
        for name, knob in self.knobs.items():
            if name != "disable":
                h.update(name)
                h.update(knob.spec.to_json(knob.value_at(frame)))

    def compute(self, ctx: EvalContext, inputs: "Inputs") -> Image:
        raise NotImplementedError(f"{self.type_name}.compute")

    def validate_inputs(self) -> None:
        """Raise a DoublureError naming the node when a required input is missing."""
        for port, node in zip(self.inputs, self.input_nodes):
            if node is None and not port.optional:
                raise DoublureError(f"{self.name}: input {port.name!r} is not connected")


class Inputs:
    """What ``compute`` pulls its inputs through: evaluated lazily, cached, on the request's device."""

    __slots__ = ("_graph", "_node", "_ctx")  # one is made for every compute

    def __init__(self, graph: "Graph", node: Node, ctx: EvalContext) -> None:
        self._graph, self._node, self._ctx = graph, node, ctx

    def get(self, index: int, frame: int | None = None) -> Image | None:
        node = self._node.input_nodes[index]
        if node is None:
            return None
        ctx = self._ctx if frame is None else self._ctx.at(frame)
        return self._graph.evaluate_node(node, ctx)

    def take(self, index: int, frame: int | None = None) -> tuple[Image | None, bool]:
        """Input ``index`` (as :meth:`get`) and whether this compute may write over its tensor: True when the
        input was computed for this node alone and no one else can see its pixels (``Graph.take_input``), so a
        pointwise node can work in place (``t.mul_(g) if writable else t * g``). Such an input is not kept
        in the cache. False: the tensor is shared (a cached frame) and must not be changed."""
        node = self._node.input_nodes[index]
        if node is None:
            return None, False
        return self._graph.take_input(node, self._ctx if frame is None else self._ctx.at(frame))

    def new_tensor(self, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
        """An uninitialised tensor on the request's device for this node's output (write it whole, e.g.
        ``torch.full(shape, v, out=inputs.new_tensor(shape))``): on the CPU the memory of a frame of that
        shape the cache let go of when it has one (``FrameCache.new_tensor``), so a node making a new frame
        for each frame (a source) does not fault in new memory each time."""
        return self._graph.cache.new_tensor(shape, dtype, self._ctx.device)

    def connected(self, index: int) -> bool:
        return self._node.input_nodes[index] is not None

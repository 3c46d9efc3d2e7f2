"""The contract of a node that writes files (Write): what ``engine.render``, ``doublure info`` and the farm ask it.

A render calls, on the nodes it renders:

1. ``begin_render(ctx_template, frames)`` once, before any frame: check the knobs, open a movie;
2. ``stage(ctx)`` per frame, in frame order, on a thread that computes frames: evaluate the input and hand back
   the frame's file work (a :class:`FrameJob`, or None when an existing complete file is kept), which the render
   runs in frame order on a writer thread of the node's own while the next frame computes;
3. ``end_render(completed)`` once, also after an error or a cancel (``completed`` False: drop partial output
   such as a half-encoded movie).

``execute(ctx)`` is ``stage`` with its work run at once (a script writing one frame). ``outputs(frames)`` names
the files a render over ``frames`` writes (the render clears temporaries killed writers left among them),
``describe(frames)`` says it in a line (``doublure info``), and ``renders_as_one_file()`` says whether every
frame goes into one file (a movie), which a farm cannot split into frames and renders in parts instead.
"""
from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable, ClassVar, Iterable, Sequence

from . import knobs as K
from .imageio import frame_path
from .node import Node

if TYPE_CHECKING:
    from .context import EvalContext


@dataclasses.dataclass
class FrameJob:
    """A frame's file work that a node's ``stage(ctx)`` hands to the render's writer thread.

    Attributes:
        run: the work (conversion, encoding, the atomic write).
        outdated: it replaces a complete file that another version of the graph rendered.
    """

    run: Callable[[], None]
    outdated: bool = False

    def __call__(self) -> None:
        self.run()


class FileOutputNode(Node):
    """Base of the nodes that write files when rendered. Subclasses implement ``stage`` and usually
    ``begin_render``, ``end_render`` and ``describe``; ``outputs`` covers every File knob marked ``save``."""

    category: ClassVar[str] = "Output"

    def begin_render(self, ctx_template: "EvalContext", frames: Sequence[int]) -> None:
        """Called once before the first frame of a render over ``frames`` (``ctx_template`` at the first)."""

    def stage(self, ctx: "EvalContext") -> FrameJob | None:
        """Evaluate the input at ``ctx`` on the calling thread and return the frame's file work; None when an
        existing complete file is kept."""
        raise NotImplementedError(f"{self.type_name}.stage")

    def execute(self, ctx: "EvalContext") -> bool:
        """Write one frame now; False when an existing complete file was kept."""
        job = self.stage(ctx)
        if job is None:
            return False
        job()
        return True

    def end_render(self, completed: bool = True) -> None:
        """Called once after the last frame, or after an error or a cancel (``completed`` False)."""

    def outputs(self, frames: Iterable[int]) -> set[str]:
        """The files a render over ``frames`` writes: the output File knobs (``save``) as absolute paths, frame
        numbers filled in (a name without one, a movie, is the same file for every frame)."""
        names = [name for name, knob in self.knobs.items() if isinstance(knob.spec, K.File) and knob.spec.save]
        return {frame_path(path, frame) for frame in frames for name in names if (path := self.path(name, frame))}

    def describe(self, frames: Sequence[int]) -> str:
        """What a render over ``frames`` produces, in a line (``doublure info``)."""
        files = sorted(self.outputs(frames[:1]))
        return ", ".join(files) if files else "(no file)"

    def renders_as_one_file(self) -> bool:
        """True when every frame goes into one file (a movie): it cannot be split into frames rendered apart.
        A farm then renders it in parts (one a chunk of frames, :meth:`render_into_part`) and joins them."""
        return False

    # -- one file rendered in parts (a farm's movie) -------------------------------------------------------
    def one_file(self) -> str:
        """The file every frame goes into (absolute), for a node that :meth:`renders_as_one_file`."""
        raise NotImplementedError(f"{self.type_name}.one_file")

    def version_of(self, ctx_template: "EvalContext", frames: Sequence[int]) -> str | None:
        """A digest of what a render over ``frames`` writes, recorded in a part so that a re-run keeps only a part
        rendered from the same graph; None: parts are not marked."""
        return None

    def render_into_part(self, path: str) -> None:
        """Write the frames of this render into ``path``, a part of :meth:`one_file` joined later (the joined
        file gets what the whole would, e.g. its Content Credentials, once)."""
        raise NotImplementedError(f"{self.type_name}.render_into_part")

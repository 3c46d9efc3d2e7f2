"""The evaluation context of a request: frame, proxy scale, device, working space, cancellation."""
from __future__ import annotations

import dataclasses

import torch

from .errors import Cancelled


class CancelToken:
    """Set by whoever asked for a frame when the answer is no longer wanted (a newer scrub position).

    Nodes call ``ctx.check_cancelled()`` inside long loops; the engine checks before every compute.
    """

    # a flag rather than a threading.Event: nothing waits on it, and the engine checks it twice per node
    # (Event.is_set is a Python call, after every node of a chain over a frame the size of the CPU's cache)
    __slots__ = ("_cancelled",)

    def __init__(self) -> None:
        self._cancelled = False

    def cancel(self) -> None:
        self._cancelled = True

    @property
    def cancelled(self) -> bool:
        return self._cancelled

    def check(self) -> None:
        if self._cancelled:
            raise Cancelled()


@dataclasses.dataclass(frozen=True, slots=True)  # slots: read by every node, after each pass from cold memory
class EvalContext:
    """What one request is evaluated at.

    A node's hash may include only the items it reads: ``frame`` for a Read or a grain seed, ``proxy`` for a
    node that resamples from files. ``device``, ``cancel`` and ``project_dir`` never enter a hash.
    """

    frame: int
    proxy: float = 1.0
    device: torch.device = torch.device("cpu")
    working_space: str = "ACEScg"
    project_dir: str | None = None
    cancel: CancelToken = dataclasses.field(default_factory=CancelToken, compare=False)

    def at(self, frame: int) -> "EvalContext":
        """The same request at another frame (for temporal nodes)."""
        return dataclasses.replace(self, frame=int(frame))

    def check_cancelled(self) -> None:
        self.cancel.check()

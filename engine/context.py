"""The evaluation context of a request: frame, proxy scale, device, working space, cancellation."""
from __future__ import annotations

import dataclasses
import threading

import torch

from .errors import Cancelled


class CancelToken:
    """Set by whoever asked for a frame when the answer is no longer wanted (a newer scrub position).

    Nodes call ``ctx.check_cancelled()`` inside long loops; the engine checks before every compute.
    """

    __slots__ = ("_event",)

    def __init__(self) -> None:
        self._event = threading.Event()

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        if self._event.is_set():
            raise Cancelled()


@dataclasses.dataclass(frozen=True)
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

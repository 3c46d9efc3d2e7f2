"""The frames a render has in flight, published for whoever watches it (the farm's stall watchdog).

``engine.render(..., in_flight=FramesInFlight())`` keeps the object up to date as frames begin computing, are
handed to the writers and are done; a watcher on another thread asks :meth:`FramesInFlight.oldest` which frame
the render waits for and which threads work on it, instead of reading the render's stack.
"""
from __future__ import annotations

import dataclasses
import threading

COMPUTING = "computing"   # its graph is evaluating, on the thread named
COMPUTED = "computed"     # evaluated, waiting for the frames before it to be handed to the writers
WRITING = "writing"       # its file work is queued or running on the writers (the threads named are running it)


@dataclasses.dataclass(frozen=True)
class FrameInFlight:
    """One frame a render has begun and not finished.

    Attributes:
        frame: the frame number.
        stage: ``"computing"``, ``"computed"`` or ``"writing"``.
        threads: the ``threading.get_ident()`` of each thread working on it now (none while it waits).
    """

    frame: int
    stage: str
    threads: tuple[int, ...] = ()


class FramesInFlight:
    """The frames of one render between their computation's start and their file work's end. Thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._frames: dict[int, FrameInFlight] = {}   # in the order the frames began
        self._jobs_left: dict[int, int] = {}          # file jobs of a writing frame not finished yet

    def snapshot(self) -> list[FrameInFlight]:
        """Every frame in flight, the first begun first."""
        with self._lock:
            return list(self._frames.values())

    def oldest(self) -> FrameInFlight | None:
        """The first begun of the frames in flight (the one the render waits for when it stalls), or None."""
        with self._lock:
            return next(iter(self._frames.values()), None)

    # -- kept up to date by engine.render -------------------------------------------------------------
    def computing(self, frame: int) -> None:
        """``frame`` begins computing on the calling thread."""
        with self._lock:
            self._frames[frame] = FrameInFlight(frame, COMPUTING, (threading.get_ident(),))

    def computed(self, frame: int) -> None:
        with self._lock:
            if frame in self._frames:
                self._frames[frame] = FrameInFlight(frame, COMPUTED)

    def writing(self, frame: int, jobs: int) -> None:
        """``frame``'s ``jobs`` file jobs are queued on the writers; with none the frame is done."""
        with self._lock:
            if jobs:
                self._frames[frame] = FrameInFlight(frame, WRITING)
                self._jobs_left[frame] = jobs
            else:
                self._frames.pop(frame, None)

    def job_started(self, frame: int) -> None:
        """A file job of ``frame`` starts on the calling thread."""
        with self._lock:
            if frame in self._frames:
                entry = self._frames[frame]
                self._frames[frame] = dataclasses.replace(entry, threads=entry.threads + (threading.get_ident(),))

    def job_finished(self, frame: int) -> None:
        """A file job of ``frame`` ends on the calling thread (the frame is done with its last job)."""
        with self._lock:
            left = self._jobs_left.get(frame, 1) - 1
            if left <= 0:
                self._jobs_left.pop(frame, None)
                self._frames.pop(frame, None)
                return
            self._jobs_left[frame] = left
            entry = self._frames[frame]
            threads = list(entry.threads)
            threads.remove(threading.get_ident())
            self._frames[frame] = dataclasses.replace(entry, threads=tuple(threads))

    def done(self, frame: int) -> None:
        """``frame`` leaves: accounted for, failed or cancelled."""
        with self._lock:
            self._jobs_left.pop(frame, None)
            self._frames.pop(frame, None)

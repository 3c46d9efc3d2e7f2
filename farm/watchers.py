"""The two threads that watch a chunk while it renders on a worker: one stops it when the client stops the
job, the other ends the worker process when a frame is stuck."""
from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from doublure.engine.in_flight import FramesInFlight

    from .chunk import ChunkTask


class StopWatcher(threading.Thread):
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


class FrameWatchdog(threading.Thread):
    """Ends the worker process when the chunk's render makes no progress (no frame starts or finishes) for
    ``task.frame_timeout`` seconds.

    A frame stuck inside a library call (a read from a hung file server, a decoder waiting forever) cannot
    be interrupted from Python, and it holds the worker's only thread, so the process goes: first the
    stall is logged to the job's topic (the client names the frame), then ``os._exit``. The worker's nanny
    starts a new process and the scheduler runs the chunk again; frames already written are skipped. Only
    armed in a worker process that has a nanny: elsewhere (a threaded worker in the client's process, a
    direct call) the stall is printed and the render waits.

    The stuck frame is the one the render has had in flight longest (``in_flight``, which the render keeps up
    to date); the message names the innermost code of a thread working on it, or of the thread that renders
    (made on it) while no frame is in flight (the project is loading) or the oldest waits for its turn.
    """

    POLL_S = 0.25

    def __init__(self, task: "ChunkTask", in_flight: "FramesInFlight") -> None:
        super().__init__(name="doublure-frame-watchdog", daemon=True)
        self.task = task
        self.in_flight = in_flight
        self.render_thread = threading.get_ident()
        self.done = threading.Event()
        self.since = time.monotonic()
        try:
            from distributed import get_worker

            self.worker = get_worker()
        except (ImportError, ValueError):
            self.worker = None
        self.start()

    def progressed(self, *_: Any) -> None:
        """A frame started or finished: the clock starts again."""
        self.since = time.monotonic()

    def _stuck(self) -> tuple[int | None, str]:
        """The stuck frame (None before the first starts: the project is loading) and where the code is."""
        oldest = self.in_flight.oldest()
        threads = oldest.threads if oldest is not None and oldest.threads else (self.render_thread,)
        where = sys._current_frames().get(threads[0])
        place = f"{os.path.basename(where.f_code.co_filename)}:{where.f_lineno} {where.f_code.co_name}" if where \
            else "unknown"
        return (oldest.frame if oldest is not None else None), place

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

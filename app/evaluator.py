"""Frame evaluation off the UI thread, for the viewer.

Requests go into lanes (``A``, ``B``, ``prefetch``): each lane holds at most one wanted frame, and a new
request in a lane cancels the frame that lane was computing (its CancelToken), so scrubbing never queues a
backlog. The request's cache key (engine hash + display settings) is computed on the UI thread; a key the
display cache already holds is answered at once without touching the worker.
"""
from __future__ import annotations

import dataclasses
import threading
import traceback

from PySide6 import QtCore

from doublure.engine import CancelToken, Cancelled, DoublureError, Graph, Node

from .display import DisplayCache, DisplayFrame, DisplaySettings, display_key, display_pixels, qimage_of

LANES = ("A", "B", "prefetch")


@dataclasses.dataclass(eq=False)
class FrameJob:
    lane: str
    node: Node
    frame: int
    proxy: float
    settings: DisplaySettings
    key: tuple
    token: CancelToken = dataclasses.field(default_factory=CancelToken)
    also: set[str] = dataclasses.field(default_factory=set)  # other lanes that asked for the same frame meanwhile


class FrameEvaluator(QtCore.QObject):
    """One worker thread evaluating the newest request of each lane, A first.

    Signals (delivered on the UI thread): ``frame_ready(lane, DisplayFrame)``,
    ``frame_failed(lane, key, message, node)``: ``key`` the request's display key, ``node`` the name of the
    node that raised the error ("" when none did).
    """

    frame_ready = QtCore.Signal(str, object)
    frame_failed = QtCore.Signal(str, object, str, str)

    def __init__(self, graph: Graph, cache: DisplayCache | None = None, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.graph = graph
        self.cache = cache if cache is not None else DisplayCache()
        self._pending: dict[str, FrameJob] = {}
        self._running: FrameJob | None = None
        self._cond = threading.Condition()
        self._stopped = False
        self._thread = threading.Thread(target=self._run, name="doublure-viewer-eval", daemon=True)
        self._thread.start()

    # -- UI thread ------------------------------------------------------------------------------------
    def key_for(self, node: Node, frame: int, proxy: float, settings: DisplaySettings) -> tuple:
        digest = self.graph.hash_of(node, self.graph.context(frame, proxy))
        return display_key(digest, proxy, settings)

    def cached(self, node: Node, frame: int, proxy: float, settings: DisplaySettings) -> DisplayFrame | None:
        return self.cache.get(self.key_for(node, frame, proxy, settings))

    def request(self, lane: str, node: Node, frame: int, proxy: float,
                settings: DisplaySettings) -> DisplayFrame | None:
        """The frame now if the display cache has it; otherwise queue it in ``lane`` (cancelling the lane's
        stale frame) and return None: ``frame_ready`` follows."""
        key = self.key_for(node, frame, proxy, settings)
        hit = self.cache.get(key)
        with self._cond:
            running = self._running
            if running is not None:
                running.also.discard(lane)   # this lane now wants another frame (or has this one)
            if hit is not None:
                self._pending.pop(lane, None)
                self._cancel_running(lane)
                return hit
            if running is not None and running.key == key and (running.lane == lane or running.lane == "prefetch"):
                # the frame is being made (playback asks A for the frame prefetched): delivered to this lane
                # too when done, instead of evaluating and converting it a second time
                self._pending.pop(lane, None)
                if running.lane != lane:
                    running.also.add(lane)
                return None
            self._cancel_running(lane)
            self._pending[lane] = FrameJob(lane, node, int(frame), float(proxy), settings, key)
            self._cond.notify()
        return None

    def cancel(self, lane: str | None = None) -> None:
        """Drop the pending frame of ``lane`` (all lanes when None) and cancel its running frame."""
        with self._cond:
            for name in [lane] if lane else list(self._pending):
                self._pending.pop(name, None)
            if lane is None:
                if self._running is not None:
                    self._running.also.clear()
                    self._running.token.cancel()
            else:
                if self._running is not None:
                    self._running.also.discard(lane)
                self._cancel_running(lane)

    def _cancel_running(self, lane: str) -> None:
        """Cancel the running frame if ``lane`` asked for it and no other lane waits for it (under the lock)."""
        running = self._running
        if running is not None and running.lane == lane and not running.also:
            running.token.cancel()

    def set_graph(self, graph: Graph) -> None:
        self.cancel()
        self.graph = graph
        self.cache.clear()

    def busy(self) -> bool:
        with self._cond:
            return bool(self._pending) or self._running is not None

    def shutdown(self) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            if self._running is not None:
                self._running.token.cancel()
            self._cond.notify()
        self._thread.join(timeout=5)

    # -- worker thread ----------------------------------------------------------------------------------
    def _next_job(self) -> FrameJob | None:
        with self._cond:
            while not self._stopped and not self._pending:
                self._cond.wait()
            if self._stopped:
                return None
            lane = min(self._pending, key=lambda name: LANES.index(name) if name in LANES else len(LANES))
            job = self._pending.pop(lane)
            self._running = job
            return job

    def _run(self) -> None:
        while True:
            job = self._next_job()
            if job is None:
                return
            try:
                frame = self._evaluate(job)
            except Cancelled:
                frame = None
            except DoublureError as exc:
                frame = None
                self.frame_failed.emit(job.lane, job.key, str(exc), exc.node or "")
            except Exception as exc:  # a node's bug must not kill the viewer thread
                frame = None
                last = traceback.extract_tb(exc.__traceback__)[-1]
                self.frame_failed.emit(job.lane, job.key,
                                       f"{type(exc).__name__}: {exc} ({last.filename}:{last.lineno})", "")
            with self._cond:
                self._running = None
            if frame is not None:
                for lane in (job.lane, *sorted(job.also)):
                    self.frame_ready.emit(lane, frame)

    def _evaluate(self, job: FrameJob) -> DisplayFrame:
        graph = self.graph
        ctx = graph.context(job.frame, job.proxy, job.token)
        image = graph.evaluate_node(job.node, ctx)
        job.token.check()
        rgba = display_pixels(image, job.settings, job.proxy)
        frame = DisplayFrame(job.key, image, rgba, qimage_of(rgba), job.frame, job.proxy)
        self.cache.put(frame)
        return frame

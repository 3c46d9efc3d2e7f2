"""Frame evaluation off the UI thread, for the viewer.

Requests go into lanes (``A``, ``B``, ``prefetch``, ``ahead``): each lane holds at most one wanted frame, and a
new request in a lane cancels the frame that lane was computing (its CancelToken), so scrubbing never queues a
backlog. Playback asks ``prefetch`` for the next frame and ``ahead`` for the one after: with two workers they
compute at once (the graph's cache and memos are shared and thread-safe), so one frame's Python, decoding and
display conversion overlap the other's, as a render's frame workers do. The request's cache key (engine hash +
display settings) is computed on the UI thread; a key the display cache already holds is answered at once
without touching the workers.
"""
from __future__ import annotations

import dataclasses
import threading
import traceback

from PySide6 import QtCore

from doublure.engine import CancelToken, Cancelled, DoublureError, Graph, Node

from .display import DisplayCache, DisplayFrame, DisplaySettings, display_key, display_pixels, qimage_of

LANES = ("A", "B", "prefetch", "ahead")
LOOKAHEAD_LANES = ("prefetch", "ahead")  # frames wanted soon: a lane that asks for one joins its computation


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
    """``workers`` threads evaluating the newest request of each lane, A first.

    Signals (delivered on the UI thread): ``frame_ready(lane, DisplayFrame)``,
    ``frame_failed(lane, key, message, node)``: ``key`` the request's display key, ``node`` the name of the
    node that raised the error ("" when none did).
    """

    frame_ready = QtCore.Signal(str, object)
    frame_failed = QtCore.Signal(str, object, str, str)

    def __init__(self, graph: Graph, cache: DisplayCache | None = None, parent: QtCore.QObject | None = None,
                 workers: int = 1) -> None:
        super().__init__(parent)
        self.graph = graph
        self.cache = cache if cache is not None else DisplayCache()
        self._pending: dict[str, FrameJob] = {}
        self._running: list[FrameJob] = []
        self._cond = threading.Condition()
        self._stopped = False
        self._threads = [threading.Thread(target=self._run, name="doublure-viewer-eval", daemon=True)
                         for _ in range(workers)]
        for thread in self._threads:
            thread.start()

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
            for running in self._running:
                running.also.discard(lane)   # this lane now wants another frame (or has this one)
            if hit is not None:
                self._pending.pop(lane, None)
                self._cancel_running(lane)
                return hit
            joined = next((running for running in self._running if running.key == key and
                           (running.lane == lane or running.lane in LOOKAHEAD_LANES)), None)
            if joined is not None:
                # the frame is being made (playback asks A for the frame prefetched): delivered to this lane
                # too when done, instead of evaluating and converting it a second time
                self._pending.pop(lane, None)
                self._cancel_running(lane, keep=joined)
                if joined.lane != lane:
                    joined.also.add(lane)
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
                for running in self._running:
                    running.also.clear()
                    running.token.cancel()
            else:
                for running in self._running:
                    running.also.discard(lane)
                self._cancel_running(lane)

    def _cancel_running(self, lane: str, keep: FrameJob | None = None) -> None:
        """Cancel the running frames of ``lane`` (but ``keep``) that no other lane waits for (under the lock)."""
        for running in self._running:
            if running.lane == lane and running is not keep and not running.also:
                running.token.cancel()

    def set_graph(self, graph: Graph) -> None:
        self.cancel()
        self.graph = graph
        self.cache.clear()

    def busy(self) -> bool:
        with self._cond:
            return bool(self._pending) or bool(self._running)

    def shutdown(self) -> None:
        with self._cond:
            self._stopped = True
            self._pending.clear()
            for running in self._running:
                running.token.cancel()
            self._cond.notify_all()
        for thread in self._threads:
            thread.join(timeout=5)

    # -- worker thread ----------------------------------------------------------------------------------
    def _next_job(self) -> FrameJob | None:
        with self._cond:
            while True:
                while not self._stopped and not self._pending:
                    self._cond.wait()
                if self._stopped:
                    return None
                lane = min(self._pending, key=lambda name: LANES.index(name) if name in LANES else len(LANES))
                job = self._pending.pop(lane)
                same = next((running for running in self._running if running.key == job.key), None)
                if same is None:
                    self._running.append(job)
                    return job
                same.also.add(lane)   # another worker is making this very frame: delivered from there

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
                self._running.remove(job)
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

"""The report the client assembles from the chunks' results: totals, per-worker lines, stalls, movies."""
from __future__ import annotations

import dataclasses

from doublure.engine.render import RenderReport

from .chunk import ChunkResult


@dataclasses.dataclass
class WorkerSummary:
    worker: str
    host: str
    pids: set[int] = dataclasses.field(default_factory=set)
    chunks: int = 0
    written: int = 0
    skipped: int = 0
    failed: int = 0
    seconds: float = 0.0

    @property
    def frames(self) -> int:
        return self.written + self.skipped + self.failed

    def line(self) -> str:
        rate = self.frames / self.seconds if self.seconds > 0 else 0.0
        pids = ",".join(str(p) for p in sorted(self.pids))
        return (f"{self.worker} ({self.host} pid {pids}): {self.chunks} chunks, {self.written} written, "
                f"{self.skipped} skipped, {self.failed} failed, busy {self.seconds:.1f} s, {rate:.2f} frames/s")


@dataclasses.dataclass
class FarmReport(RenderReport):
    """A farm render's outcome: a local render's report plus each chunk's result."""

    frames: int = 0
    chunks: list[ChunkResult] = dataclasses.field(default_factory=list)
    scheduler: str = ""
    # (frame, worker, timeout, code it was stuck in) of each chunk that ended its worker; frame None: loading
    stalls: list[tuple[int | None, str, float, str]] = dataclasses.field(default_factory=list)
    # (movie, parts) joined after the chunks; (movie, parts missing) left for a re-run to complete
    movies_joined: list[tuple[str, int]] = dataclasses.field(default_factory=list)
    movies_waiting: list[tuple[str, int]] = dataclasses.field(default_factory=list)

    @property
    def fps(self) -> float:
        return self.frames / self.seconds if self.seconds > 0 else 0.0

    def add(self, result: ChunkResult) -> None:
        self.chunks.append(result)
        self.written.extend(result.written)
        self.skipped.extend(result.skipped)
        self.failures.extend(result.failures)
        self.stale_temps.extend(result.stale_temps)
        self.outdated.extend(result.outdated)

    def workers(self) -> list[WorkerSummary]:
        by_worker: dict[str, WorkerSummary] = {}
        for result in self.chunks:
            summary = by_worker.setdefault(result.worker, WorkerSummary(result.worker, result.host))
            summary.pids.add(result.pid)
            summary.chunks += 1
            summary.written += len(result.written)
            summary.skipped += len(result.skipped)
            summary.failed += len(result.failures)
            summary.seconds += result.seconds
        return sorted(by_worker.values(), key=lambda s: s.worker)

    def summary(self) -> str:
        """The end-of-job text: totals, per-worker lines, and every failed frame."""
        lines = [f"{len(self.written)} written, {len(self.skipped)} skipped (already complete), "
                 f"{len(self.failures)} failed; {self.frames} frames in {self.seconds:.1f} s "
                 f"({self.fps:.2f} frames/s) on {self.scheduler}"]
        if self.stale_temps:
            lines.append(f"  removed {len(self.stale_temps)} temporary file(s) that killed writers left")
        if self.outdated:
            lines.append(f"  {len(self.outdated)} existing frame(s) came from another version of the graph: "
                         f"rendered again")
        lines += ["  " + w.line() for w in self.workers()]
        lines += [f"  frame {frame} did not finish within {seconds:g} s on {worker} (in {where}): that worker "
                  f"process was ended and its chunk ran again" for frame, worker, seconds, where in self.stalls]
        lines += [f"  joined {path} from {parts} parts" for path, parts in self.movies_joined]
        lines += [f"  NOT JOINED {path}: {missing} part(s) missing or incomplete (a re-run renders only those)"
                  for path, missing in self.movies_waiting]
        lines += [f"  FAILED {node} frame {frame}: {why}" for node, frame, why in sorted(self.failures,
                                                                                        key=lambda f: f[1])]
        return "\n".join(lines)

"""A terminal progress bar for long headless jobs (render, track, extract, train): count, rate and ETA."""
from __future__ import annotations

import sys
import time
from typing import TextIO


def format_seconds(seconds: float) -> str:
    seconds = max(0, int(round(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}"


class ProgressBar:
    """``ProgressBar(total, "frames")``; ``update(done)``; ``close()``. Redraws in place on a terminal,
    prints a line every ``log_every_s`` otherwise (farm logs)."""

    def __init__(self, total: int, unit: str = "frames", stream: TextIO | None = None, width: int = 30,
                 log_every_s: float = 5.0) -> None:
        self.total, self.unit, self.width = total, unit, width
        self.stream = stream or sys.stderr
        self.start = time.perf_counter()
        self.done = 0
        self._tty = getattr(self.stream, "isatty", lambda: False)()
        self._log_every_s = log_every_s
        self._last_log = -1e9

    def rate(self) -> float:
        elapsed = time.perf_counter() - self.start
        return self.done / elapsed if elapsed > 0 else 0.0

    def line(self, extra: str = "") -> str:
        rate = self.rate()
        eta = (self.total - self.done) / rate if rate > 0 else 0.0
        filled = int(self.width * self.done / self.total) if self.total else self.width
        bar = "#" * filled + "-" * (self.width - filled)
        text = f"[{bar}] {self.done}/{self.total} {self.unit}  {rate:.2f} {self.unit}/s  ETA {format_seconds(eta)}"
        return f"{text}  {extra}" if extra else text

    def update(self, done: int, extra: str = "") -> None:
        self.done = done
        now = time.perf_counter()
        if self._tty:
            self.stream.write("\r" + self.line(extra))
            self.stream.flush()
        elif now - self._last_log >= self._log_every_s or done >= self.total:
            self._last_log = now
            self.stream.write(self.line(extra) + "\n")
            self.stream.flush()

    def close(self) -> None:
        if self._tty:
            self.stream.write("\n")
            self.stream.flush()

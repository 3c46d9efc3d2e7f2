"""Saving a project another process changed on disk: detected and refused, so no one's work is lost silently.

A graph remembers the state of its project file as it was loaded or last saved (:func:`disk_state`: the
file's identity and a digest of its bytes). Saving to that file again first compares it with what is on disk
now, under a lock on the project's folder that other Doublure processes take for their saves too; a file
that another user, a script or a second app replaced meanwhile is not overwritten (the app asks; scripts get
:class:`ProjectChangedError` and may save with ``overwrite=True``).
"""
from __future__ import annotations

import contextlib
import dataclasses
import datetime
import fcntl
import hashlib
import os
from typing import Iterator

from .errors import ProjectError


class ProjectChangedError(ProjectError):
    """The project file changed on disk since this graph loaded or saved it."""


@dataclasses.dataclass(frozen=True)
class DiskState:
    """A project file as a process saw it: (device, inode, size, mtime in ns) and the SHA-256 of its bytes."""

    identity: tuple[int, int, int, int]
    sha256: str
    mtime_ns: int

    def same_file(self, other: "DiskState") -> bool:
        """Unchanged: the same file, or another one (a copy, a touch) with the same bytes."""
        return self.identity == other.identity or self.sha256 == other.sha256


def disk_state(path: str) -> DiskState | None:
    """The state of the file at ``path`` (through links), or None when there is none."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            data = f.read()
    except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
        return None
    return DiskState((st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns), hashlib.sha256(data).hexdigest(),
                     st.st_mtime_ns)


@contextlib.contextmanager
def folder_lock(folder: str) -> Iterator[None]:
    """An exclusive lock on ``folder`` that Doublure's project saves into it share (check, write and rename
    happen under it). Where the file system offers no locks, saves go on unlocked."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        yield
        return
    try:
        with contextlib.suppress(OSError):
            fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # releases the lock


def check_unchanged(path: str, known: DiskState | None) -> None:
    """Raise ProjectChangedError when the file at ``path`` is no longer the one ``known`` describes. A file
    that is gone is not a conflict (the save writes it again); ``known`` None: nothing to compare with."""
    if known is None:
        return
    now = disk_state(path)
    if now is None or known.same_file(now):
        return
    when = datetime.datetime.fromtimestamp(now.mtime_ns / 1e9).strftime("%Y-%m-%d %H:%M:%S")
    raise ProjectChangedError(
        f"{path}: the project changed on disk since it was opened or last saved here (saved by another process "
        f"or user at {when}); not saved, so as not to lose their changes. Open it again and redo your edits, "
        f"save under another name, or overwrite it knowingly (the app asks; scripts: save(path, overwrite=True))")

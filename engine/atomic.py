"""Atomic file writes: write beside the target under a temporary name, then rename over it.

The temporary is ``.<target name>.<8 random characters>.tmp<suffix>`` in the target's folder, and its writer
holds an exclusive ``flock`` on it until the rename. A writer that is killed (SIGKILL, a lost farm node)
leaves its temporary behind but loses the lock with the process, which is how ``remove_stale_temps`` tells
an abandoned temporary from one that a live process is still writing.

What is renamed into place is readable by the studio: the temporary gets the mode a plain ``open`` would
give a new file (0666 less the umask: 0644 under umask 022), not mkstemp's private 0600. A target that is a
symbolic link is written through: the file it points at is replaced and the link stays.
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import re
import tempfile
from typing import Iterable, Iterator

# mkstemp's random part: 8 characters of [a-z0-9_].
_TEMP_NAME = re.compile(r"\.(?P<target>.+)\.[a-z0-9_]{8}\.tmp(?:\.[^.]*)?")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str | None = None) -> Iterator[str]:
    """Yield a temporary path in the target's folder; on success it replaces ``path`` in one rename.

    ``suffix`` keeps the extension writers use to pick a format (``.exr``); on error the temporary file
    is removed and ``path`` is untouched.
    """
    path = os.path.realpath(os.fspath(path))
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    if suffix is None:
        suffix = os.path.splitext(path)[1]
    fd, tmp = _locked_temp(folder, "." + os.path.basename(path) + ".", ".tmp" + suffix)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise
    finally:
        os.close(fd)


def _locked_temp(folder: str, prefix: str, suffix: str) -> tuple[int, str]:
    """A new temporary file, open and locked (the lock is held on this descriptor while the writer opens the
    path again). A sweep may unlink the file between its creation and the lock; then it is made again."""
    while True:
        fd, tmp = tempfile.mkstemp(prefix=prefix, suffix=suffix, dir=folder)
        os.fchmod(fd, 0o666 & ~current_umask())
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.path.samestat(os.fstat(fd), os.stat(tmp)):
                return fd, tmp
        except FileNotFoundError:
            pass
        os.close(fd)


def current_umask() -> int:
    """The process's umask, read without changing it (``os.umask`` can only be read by setting it, which
    would let another thread create a file under the wrong mask meanwhile)."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)  # no /proc (macOS): the classic read-and-restore
    os.umask(mask)
    return mask


def remove_stale_temps(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Delete the temporaries that killed writers of ``paths`` left behind; returns the paths removed.

    Only names of ``atomic_path``'s pattern for exactly these targets are considered, and a temporary is
    stale only when no process holds its lock: a temporary another live process (a farm worker of this
    job or of another one) is writing is kept, whatever its age. The lock is taken before the file is
    unlinked, so a writer cannot take it between the check and the removal. A temporary whose lock cannot
    be tested (it vanished, or is not ours to open) is left alone.
    """
    targets: dict[str, set[str]] = {}
    for path in paths:
        folder, name = os.path.split(os.path.realpath(os.fspath(path)))
        targets.setdefault(folder, set()).add(name)
    removed = []
    for folder, names in targets.items():
        try:
            entries = os.listdir(folder)
        except OSError:  # no folder yet: nothing was written there
            continue
        for entry in entries:
            match = _TEMP_NAME.fullmatch(entry)
            if match is None or match["target"] not in names:
                continue
            tmp = os.path.join(folder, entry)
            try:
                fd = os.open(tmp, os.O_RDONLY)
            except OSError:
                continue
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(tmp)
                removed.append(tmp)
            except OSError:  # BlockingIOError: a live writer holds it
                pass
            finally:
                os.close(fd)
    return removed


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    with atomic_path(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())

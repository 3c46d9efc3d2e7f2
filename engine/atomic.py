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
import ctypes
import errno
import fcntl
import logging
import os
import re
import shutil
import sys
import tempfile
import time
from typing import Iterable, Iterator

log = logging.getLogger("doublure.atomic")

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


@contextlib.contextmanager
def atomic_folder(path: str | os.PathLike) -> Iterator[str]:
    """Yield a new, empty temporary folder beside ``path`` (readable by the studio, locked like
    ``atomic_path``'s files); once the caller has filled it, it replaces ``path`` so that a reader or a process
    killed at any instant finds a complete folder: the old one or the new one.

    Where the system can (Linux ``renameat2`` with ``RENAME_EXCHANGE``, which local file systems support) the
    two folders are exchanged in one step, ``path`` never missing. Elsewhere the complete new folder is first
    renamed to ``.<name>.new``, the old one to ``.<name>.old``, then the new one into place: a process killed
    between those renames leaves a complete folder under one of those names, which :func:`resolve_folder`
    reads and :func:`recover_folder` (called here before each replacement) puts back. On error the temporary
    folder is removed and ``path`` is untouched.
    """
    path = os.path.realpath(os.fspath(path))
    folder, name = os.path.split(path)
    os.makedirs(folder, exist_ok=True)
    recover_folder(path)
    tmp = tempfile.mkdtemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    os.chmod(tmp, 0o777 & ~current_umask())
    fd = os.open(tmp, os.O_RDONLY)
    fcntl.flock(fd, fcntl.LOCK_EX)
    try:
        try:
            yield tmp
            _fsync_tree(tmp)
            pause_for_test("folder-written")
            if os.path.lexists(path) and _exchange(tmp, path):
                pause_for_test("folder-swapped")
                shutil.rmtree(tmp, ignore_errors=True)  # the old folder, now under the temporary's name
            else:
                new, old = _side_names(path)
                os.rename(tmp, new)
                if os.path.lexists(path):
                    os.rename(path, old)
                pause_for_test("folder-swapping")
                os.rename(new, path)
                pause_for_test("folder-swapped")
                shutil.rmtree(old, ignore_errors=True)
            _fsync_dir(folder)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    finally:
        os.close(fd)


def _side_names(path: str) -> tuple[str, str]:
    """The hidden names of a folder replacement without an atomic exchange: (complete new, old)."""
    folder, name = os.path.split(path)
    return os.path.join(folder, f".{name}.new"), os.path.join(folder, f".{name}.old")


def resolve_folder(path: str | os.PathLike) -> str:
    """``path``, or where a replacement killed between its renames left the complete folder (the new one
    first, else the old one); ``path`` when there is none (the caller reports it missing)."""
    path = os.fspath(path)
    if os.path.exists(path):
        return path
    for candidate in _side_names(os.path.realpath(path)):
        if os.path.isdir(candidate):
            return candidate
    return path


def recover_folder(path: str | os.PathLike) -> list[str]:
    """Repair what killed replacements of the folder ``path`` left: a complete folder under a side name is
    renamed back to ``path`` when ``path`` is missing; side folders no longer needed and temporary folders
    whose writer is gone are removed. Logs and returns what it did (one line per repair)."""
    path = os.path.realpath(os.fspath(path))
    done = []
    if not os.path.lexists(path):
        found = resolve_folder(path)
        if found != path:
            os.rename(found, path)
            done.append(f"restored {path} from {found}, left by an interrupted save")
    for side in _side_names(path):
        if os.path.isdir(side):
            shutil.rmtree(side, ignore_errors=True)
            done.append(f"removed {side}, left by an interrupted save")
    done += [f"removed {tmp}, left by a killed save" for tmp in remove_stale_temps([path])]
    for line in done:
        log.warning("%s", line)
    return done


def _exchange(a: str, b: str) -> bool:
    """Swap two existing paths in one step; False where the system or file system cannot."""
    if sys.platform != "linux" or os.environ.get("DOUBLURE_TEST_NO_EXCHANGE"):
        return False
    try:
        renameat2 = ctypes.CDLL(None, use_errno=True).renameat2
    except (OSError, AttributeError):  # a C library without it (glibc < 2.28, musl)
        return False
    renameat2.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    at_cwd, rename_exchange = -100, 2
    if renameat2(at_cwd, os.fsencode(a), at_cwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP):
        return False
    raise OSError(code, os.strerror(code), b)


def _fsync_tree(folder: str) -> None:
    for entry in os.scandir(folder):
        if entry.is_file(follow_symlinks=False):
            fd = os.open(entry.path, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: str) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    except OSError:  # some file systems do not sync folders
        pass
    finally:
        os.close(fd)


def pause_for_test(stage: str) -> None:
    """A test hook: when ``DOUBLURE_TEST_PAUSE`` names ``stage``, say so on stderr and wait there, so that a
    test can kill a real process at exactly that instant of a save."""
    if os.environ.get("DOUBLURE_TEST_PAUSE") == stage:
        print(f"paused at {stage}", file=sys.stderr, flush=True)
        time.sleep(600)


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


def holds_temporaries(folders: Iterable[str | os.PathLike]) -> bool:
    """Whether any of ``folders`` holds a name of ``atomic_path``'s (or ``atomic_folder``'s) temporary pattern:
    a cheap look before matching temporaries against every file of a long render."""
    for folder in folders:
        try:
            if any(_TEMP_NAME.fullmatch(entry) for entry in os.listdir(folder)):
                return True
        except OSError:  # no folder yet: nothing was written there
            continue
    return False


def remove_stale_temps(paths: Iterable[str | os.PathLike]) -> list[str]:
    """Delete the temporaries that killed writers of ``paths`` left behind; returns the paths removed.

    Only names of ``atomic_path``'s (and ``atomic_folder``'s) pattern for exactly these targets are
    considered, and a temporary is
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
                if os.path.isdir(tmp):
                    shutil.rmtree(tmp)
                else:
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

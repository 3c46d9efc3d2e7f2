"""How the C allocator treats frame-sized blocks: kept for the next frame instead of handed back to the system.

glibc's malloc serves a block of at least its mmap threshold with a mapping of its own, unmapped when freed,
and gives the heap's free top back to the system past its trim threshold. Both start small (128 kB) and grow
with what the process frees, so whether a new 1080p frame lands in memory the process already has or in fresh
pages (8,100 page faults for a 32 MB frame, written once more by the kernel before the node writes it) depends
on the order frames were freed in: a chain of nodes whose frames the cache keeps and evicts paid 8,100 faults
a frame (bench/RESULTS.md, #26 item 12). Raised once at the start, frames up to glibc's largest threshold
(32 MiB: 1080p RGBA float32 is 31.6 MiB) come from the heap, and up to :data:`TRIM_THRESHOLD` bytes freed at
its top are kept for the frames that follow.
"""
from __future__ import annotations

import ctypes
import os
import platform
import sys

# mallopt's parameters (malloc.h)
_M_TRIM_THRESHOLD = -1
_M_MMAP_THRESHOLD = -3

MMAP_THRESHOLD = 32 * 2**20
"""Blocks below this come from the heap: glibc refuses more (half its 64 MiB heap size), so a larger frame
(4K, 2K RGBA) is still mapped and unmapped; those frames are reused through ``FrameCache.new_tensor`` and
nodes working in place instead."""

TRIM_THRESHOLD = 256 * 2**20
"""Free memory at the heap's top kept for new frames (eight 1080p RGBA frames); beyond it goes back to the system."""

#: environment variables by which a user sets these thresholds themselves (glibc reads them at start)
USER_SETTINGS = ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_", "GLIBC_TUNABLES")


def keep_freed_frames() -> bool:
    """Raise glibc's mmap and trim thresholds (:data:`MMAP_THRESHOLD`, :data:`TRIM_THRESHOLD`) for this
    process, from now on. Does nothing where the C library is not glibc or where the user set the allocator's
    thresholds in the environment (:data:`USER_SETTINGS`: a studio's setting wins). Call it once at the start
    of a process that renders (the ``doublure`` command does); calling it again changes nothing.

    Returns:
        Whether the thresholds were set.
    """
    if not sys.platform.startswith("linux") or platform.libc_ver()[0] != "glibc":
        return False
    if any(os.environ.get(name) for name in USER_SETTINGS):
        return False
    libc = ctypes.CDLL(None)
    return bool(libc.mallopt(_M_MMAP_THRESHOLD, MMAP_THRESHOLD)) and bool(libc.mallopt(_M_TRIM_THRESHOLD,
                                                                                        TRIM_THRESHOLD))

"""Sizes that would take the machine, refused before the memory is asked for.

One frame may take at most half the host cache budget (``DOUBLURE_CACHE_HOST_MB``, 4 GiB by default:
2 GiB a frame with the copies its computation holds; an 8K RGBA float frame is 0.5 GiB), so that the cache
still holds the frames a node reads together. A node or reader that is about to build a frame estimates its bytes from the sizes it
knows (knobs, a file's header) and calls :func:`check_frame_size`, which names the node or file and the
figure the frame would need, instead of computing for minutes and failing in the allocator.
"""
from __future__ import annotations

from .cache import default_host_budget
from .errors import DoublureError


class FrameTooLarge(DoublureError):
    """A frame that would need more memory than one frame may take."""


def frame_budget() -> int:
    """Bytes one frame (with the copies its computation holds at once) may take."""
    return default_host_budget() // 2


def check_frame_size(what: str, channels: int, height: int, width: int, bytes_per_value: int = 4,
                     copies: float = 1.0) -> None:
    """Raise FrameTooLarge naming ``what`` when ``copies`` frames of (channels, height, width) values of
    ``bytes_per_value`` bytes exceed :func:`frame_budget`."""
    needed = int(channels) * int(height) * int(width) * int(bytes_per_value) * copies
    budget = frame_budget()
    if needed > budget:
        raise FrameTooLarge(
            f"{what}: a {width}x{height} image of {channels} channels needs {needed / 2**30:.1f} GiB, more than "
            f"the {budget / 2**30:.1f} GiB one frame may take (half the host cache budget; set "
            f"DOUBLURE_CACHE_HOST_MB to at least {int(needed * 2 / 2**20) + 1} to allow it)")

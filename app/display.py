"""What the viewer shows: engine Images turned into 8-bit display pixels, and a cache of those.

The conversion (exposure, the OCIO display/view transform, gamma, channel choice) runs on the evaluation
thread; the cache is keyed by the image's engine hash plus the display settings, so showing a frame that was
shown before with the same settings costs only a paint: an A/B flip never converts or recomputes anything.

A frame is converted at the size the viewer draws it (``DisplaySettings.resolution``), downscaled in
scene-linear light before the display transform, as Nuke's viewer does: a 1080x1920 plate fitted into the
viewer is drawn at about a quarter of its width, and OCIO's CPU processor (the ACES output transform, about
250 ns a pixel on one core) then converts 1/16 of the pixels. At 1:1 or closer every pixel is converted.
"""
from __future__ import annotations

import collections
import dataclasses
import math
import os
import threading
from typing import Any

import numpy as np
import torch
from PySide6 import QtGui

from doublure.engine import Image
from doublure.engine import colour

CHANNEL_MODES = ("rgb", "r", "g", "b", "alpha", "mask")
# The coarsest fraction of full resolution a frame is converted at (a thumbnail-sized view of 4K).
COARSEST_RESOLUTION = 1.0 / 16.0


def display_resolution(zoom: float) -> float:
    """The fraction of full resolution to convert a frame at for a viewer zoom (drawn device pixels per
    full-resolution pixel): the smallest power of two, from 1 down to ``COARSEST_RESOLUTION``, that is at least
    ``zoom``. Powers of two keep small zoom changes from converting again."""
    if zoom >= 1.0:
        return 1.0
    return max(COARSEST_RESOLUTION, 2.0 ** -math.floor(math.log2(1.0 / zoom)))


@dataclasses.dataclass(frozen=True)
class DisplaySettings:
    """How scene-linear pixels become display pixels.

    ``channels``: ``rgb``; ``r``/``g``/``b`` one plane as grey; ``alpha`` the alpha (or mask) plane as grey;
    ``mask`` the colour with the alpha/mask plane as a red overlay and its outline.
    """

    display: str = colour.DEFAULT_DISPLAY
    view: str = colour.DEFAULT_VIEW
    exposure: float = 0.0
    gamma: float = 1.0
    channels: str = "rgb"
    working_space: str = colour.DEFAULT_WORKING_SPACE
    resolution: float = 1.0  # the fraction of full resolution converted (``display_resolution``)


@dataclasses.dataclass(eq=False)
class DisplayFrame:
    """One converted frame: ``rgba`` (H', W', 4) uint8 owns the memory ``qimage`` points into; it may be
    smaller than ``image`` (converted at the size drawn: ``DisplaySettings.resolution``)."""

    key: tuple
    image: Image
    rgba: np.ndarray
    qimage: QtGui.QImage
    frame: int
    proxy: float

    @property
    def nbytes(self) -> int:
        return int(self.rgba.nbytes)

    def display_pixel(self, x: int, y: int) -> np.ndarray:
        """The display code values (3,) uint8 shown for pixel (x, y) of ``image``."""
        h, w = self.rgba.shape[:2]
        return self.rgba[min(h - 1, y * h // self.image.height), min(w - 1, x * w // self.image.width), :3]


def _plane_grey(plane: torch.Tensor) -> torch.Tensor:
    return plane.unsqueeze(0).expand(3, -1, -1)


def reduced_size(height: int, width: int, factor: float) -> tuple[int, int]:
    """(H', W'): ``height`` x ``width`` scaled by ``factor`` <= 1, rounded up (never below one pixel)."""
    return max(1, math.ceil(height * factor)), max(1, math.ceil(width * factor))


def downscale_linear(tensor: torch.Tensor, factor: float) -> torch.Tensor:
    """Box-filter (C, H, W) float32 pixels to ``reduced_size`` (each output pixel the mean of the input pixels
    it covers): done on scene-linear values, the average is that of the light, as a camera or Nuke's viewer
    sees it. ``factor`` >= 1 returns ``tensor`` itself."""
    if factor >= 1.0:
        return tensor
    size = reduced_size(tensor.shape[1], tensor.shape[2], factor)
    return torch.nn.functional.adaptive_avg_pool2d(tensor[None], size)[0]


def display_pixels(image: Image, settings: DisplaySettings, proxy: float = 1.0) -> np.ndarray:
    """The display code values of ``image`` as an (H', W', 4) uint8 array (alpha plane 255).

    Args:
        image: an engine Image; tensor (C, H, W) scene-linear in ``settings.working_space`` (or a Mask),
            evaluated at ``proxy`` (its pixels per full-resolution pixel).
        settings: exposure (stops, applied in scene-linear), display/view, gamma (applied to display values),
            channel mode, and ``resolution``: the pixels are box-filtered in scene-linear to
            ``resolution / proxy`` of their size (when below 1) before the display transform.

    Returns:
        (H', W', 4) uint8, C-contiguous: (H, W) scaled by ``min(1, resolution / proxy)``, rounded up.
    """
    tensor = downscale_linear(image.tensor.detach().to("cpu", torch.float32), settings.resolution / proxy)
    is_mask = image.channels == ("A",)
    alpha = tensor[image.channels.index("A")] if "A" in image.channels else None
    mode = settings.channels
    colour_managed = not is_mask and mode in ("rgb", "r", "g", "b", "mask")
    if is_mask or mode == "alpha":
        plane = tensor[0] if is_mask else (alpha if alpha is not None else torch.ones_like(tensor[0]))
        rgb = _plane_grey(plane).clone()
    elif mode in ("r", "g", "b"):
        index = "rgb".index(mode)
        rgb = _plane_grey(tensor[min(index, tensor.shape[0] - 1)]).contiguous()
    else:
        rgb = (tensor[:3] if image.channels[:3] == ("R", "G", "B") else _plane_grey(tensor[0])).contiguous()
    if colour_managed:
        if settings.exposure:
            rgb = rgb * float(2.0 ** settings.exposure)
        rgb = colour.display_transform(rgb.contiguous(), settings.display, settings.view,
                                       src=settings.working_space)
    rgb = rgb.clamp(0.0, 1.0)
    if settings.gamma != 1.0:
        rgb = rgb.pow(1.0 / settings.gamma)
    if mode == "mask" and not is_mask and alpha is not None:
        rgb = _mask_overlay(rgb, alpha)
    h, w = rgb.shape[1:]
    out = np.empty((h, w, 4), dtype=np.uint8)
    out[..., :3] = (rgb * 255.0 + 0.5).to(torch.uint8).permute(1, 2, 0).numpy()
    out[..., 3] = 255
    return out


def _mask_overlay(rgb: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Tint ``rgb`` (3, H, W) red where ``mask`` (H, W) is set, and draw the mask's 0.5 outline in yellow."""
    m = mask.clamp(0.0, 1.0)
    red = torch.tensor([1.0, 0.1, 0.1]).view(3, 1, 1)
    out = rgb * (1.0 - 0.45 * m) + red * (0.45 * m)
    inside = (m >= 0.5).float()[None, None]
    # A pixel is on the outline when its 3x3 neighbourhood holds both inside and outside pixels.
    grown = torch.nn.functional.max_pool2d(inside, 3, stride=1, padding=1)
    shrunk = -torch.nn.functional.max_pool2d(-inside, 3, stride=1, padding=1)
    edge = (grown - shrunk)[0, 0] > 0
    out[:, edge] = torch.tensor([1.0, 0.9, 0.1]).view(3, 1)
    return out


def qimage_of(rgba: np.ndarray) -> QtGui.QImage:
    """A QImage viewing ``rgba`` (H, W, 4) uint8 without a copy (keep the array alive with it)."""
    h, w = rgba.shape[:2]
    return QtGui.QImage(rgba.data, w, h, 4 * w, QtGui.QImage.Format.Format_RGBX8888)


def difference_pixels(a: np.ndarray, b: np.ndarray, gain: float = 4.0) -> np.ndarray:
    """|A - B| of two display frames, amplified by ``gain`` so small differences show (sizes may differ:
    the overlapping top-left region is compared, the rest is black)."""
    h, w = max(a.shape[0], b.shape[0]), max(a.shape[1], b.shape[1])
    out = np.zeros((h, w, 4), dtype=np.uint8)
    hh, ww = min(a.shape[0], b.shape[0]), min(a.shape[1], b.shape[1])
    diff = np.abs(a[:hh, :ww, :3].astype(np.int16) - b[:hh, :ww, :3].astype(np.int16))
    out[:hh, :ww, :3] = np.minimum(diff * gain, 255).astype(np.uint8)
    out[..., 3] = 255
    return out


class DisplayCache:
    """Thread-safe LRU of DisplayFrames by (engine hash, proxy, settings), bounded in bytes.

    ``DOUBLURE_VIEWER_CACHE_MB`` sets the budget (default 1536 MB: about 190 frames at 1080p).
    """

    def __init__(self, budget_bytes: int | None = None) -> None:
        env = os.environ.get("DOUBLURE_VIEWER_CACHE_MB")
        self.budget = budget_bytes if budget_bytes is not None else int(float(env or 1536) * 2**20)
        self._frames: collections.OrderedDict[tuple, DisplayFrame] = collections.OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()

    def get(self, key: tuple) -> DisplayFrame | None:
        with self._lock:
            frame = self._frames.get(key)
            if frame is not None:
                self._frames.move_to_end(key)
            return frame

    def __contains__(self, key: tuple) -> bool:
        with self._lock:
            return key in self._frames

    def put(self, frame: DisplayFrame) -> None:
        with self._lock:
            old = self._frames.pop(frame.key, None)
            if old is not None:
                self._bytes -= old.nbytes
            self._frames[frame.key] = frame
            self._bytes += frame.nbytes
            while self._bytes > self.budget and len(self._frames) > 1:
                _, dropped = self._frames.popitem(last=False)
                self._bytes -= dropped.nbytes

    def clear(self) -> None:
        with self._lock:
            self._frames.clear()
            self._bytes = 0

    def __len__(self) -> int:
        with self._lock:
            return len(self._frames)


def display_key(digest: str, proxy: float, settings: DisplaySettings) -> tuple[Any, ...]:
    return (digest, float(proxy), settings)

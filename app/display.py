"""What the viewer shows: engine Images turned into 8-bit display pixels, and a cache of those.

The conversion (exposure, the OCIO display/view transform, gamma, channel choice) runs on the evaluation
thread; the cache is keyed by the image's engine hash plus the display settings, so showing a frame that was
shown before with the same settings costs only a paint: an A/B flip never converts or recomputes anything.
"""
from __future__ import annotations

import collections
import dataclasses
import os
import threading
from typing import Any

import numpy as np
import torch
from PySide6 import QtGui

from doublure.engine import Image
from doublure.engine import colour

CHANNEL_MODES = ("rgb", "r", "g", "b", "alpha", "mask")


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


@dataclasses.dataclass(eq=False)
class DisplayFrame:
    """One converted frame: ``rgba`` (H, W, 4) uint8 owns the memory ``qimage`` points into."""

    key: tuple
    image: Image
    rgba: np.ndarray
    qimage: QtGui.QImage
    frame: int
    proxy: float

    @property
    def nbytes(self) -> int:
        return int(self.rgba.nbytes)


def _plane_grey(plane: torch.Tensor) -> torch.Tensor:
    return plane.unsqueeze(0).expand(3, -1, -1)


def display_pixels(image: Image, settings: DisplaySettings) -> np.ndarray:
    """The display code values of ``image`` as an (H, W, 4) uint8 array (alpha plane 255).

    Args:
        image: an engine Image; tensor (C, H, W) scene-linear in ``settings.working_space`` (or a Mask).
        settings: exposure (stops, applied in scene-linear), display/view, gamma (applied to display values),
            channel mode.

    Returns:
        (H, W, 4) uint8, C-contiguous.
    """
    tensor = image.tensor.detach().to("cpu", torch.float32)
    is_mask = image.channels == ("A",)
    alpha = image.alpha()
    alpha = alpha.detach().to("cpu", torch.float32)[0] if alpha is not None else None
    mode = settings.channels
    colour_managed = not is_mask and mode in ("rgb", "r", "g", "b", "mask")
    if is_mask or mode == "alpha":
        plane = tensor[0] if is_mask else (alpha if alpha is not None else torch.ones_like(tensor[0]))
        rgb = _plane_grey(plane).clone()
    elif mode in ("r", "g", "b"):
        index = "rgb".index(mode)
        rgb = _plane_grey(tensor[min(index, tensor.shape[0] - 1)]).contiguous()
    else:
        rgb = image.rgb().detach().to("cpu", torch.float32).contiguous()
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

"""Eye maths of the finishing library (the EyeFix node): where an iris sits in an eye opening, sliding the
eyeball's content under the lids, sharpening, and the plate eye's catchlights.

Windows are (y0, y1, x0, x1) plate rectangles; images are (C, H, W) tensors of a window.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine import ops
from doublure.faces.masks import LEFT_EYE, RIGHT_EYE, rasterize_shapes

# Row 0 of Face.iris is the subject's left eye, whose eyelid contour is mediapipe's LEFT_EYE.
EYE_CONTOURS = (LEFT_EYE, RIGHT_EYE)


def disc_kernel(radius: float, device=None, dtype=torch.float32) -> torch.Tensor:
    """Anti-aliased disc of the given radius, normalised to sum 1. Returns (2k+1, 2k+1)."""
    k = int(math.ceil(radius)) + 1
    c = torch.arange(-k, k + 1, device=device, dtype=dtype)
    d = torch.sqrt(c.view(-1, 1) ** 2 + c.view(1, -1) ** 2)
    disc = (radius + 0.5 - d).clamp(0, 1)
    return disc / disc.sum()


def find_iris_centre(lum: torch.Tensor, opening: torch.Tensor, radius: float) -> tuple[float, float] | None:
    """Where an iris of the given radius sits in an eye: the centre of the darkest disc inside the opening.

    The darkness (opening's brightest level minus the luminance, zero outside the opening) is correlated
    with a disc of the iris radius; the peak, refined to sub-pixel by a parabola through its neighbours,
    is the centre. Partly hidden irises pull the estimate toward their visible part the same way on the
    plate and on the swap, so comparing the two cancels that bias.

    Args:
        lum: (H, W) luminance of an eye window.
        opening: (H, W) eye-opening coverage in [0, 1] (between the eyelids).
        radius: iris radius in pixels.

    Returns:
        (x, y) in the window's pixel coordinates, or None when the opening is empty.
    """
    inside = opening > 0.5
    if inside.sum() < 4:
        return None
    bright = torch.quantile(lum[inside].float(), 0.95)
    darkness = ((bright - lum) * opening).clamp_min(0)
    kernel = disc_kernel(radius, lum.device, lum.dtype)
    k = kernel.shape[-1] // 2
    score = F.conv2d(F.pad(darkness[None, None], (k, k, k, k)), kernel[None, None])[0, 0]
    score = torch.where(inside, score, torch.full_like(score, -1.0))
    idx = int(torch.argmax(score))
    y, x = divmod(idx, score.shape[1])

    def vertex(a: float, b: float, c: float) -> float:
        denom = a - 2 * b + c
        return 0.0 if denom >= 0 else float(np.clip(0.5 * (a - c) / denom, -0.5, 0.5))

    h, w = score.shape
    dx = vertex(float(score[y, x - 1]), float(score[y, x]), float(score[y, x + 1])) if 0 < x < w - 1 else 0.0
    dy = vertex(float(score[y - 1, x]), float(score[y, x]), float(score[y + 1, x])) if 0 < y < h - 1 else 0.0
    return x + dx, y + dy


def shift_inside(img: torch.Tensor, weight: torch.Tensor, dx: float, dy: float) -> torch.Tensor:
    """Slide content by (dx, dy) px where ``weight`` is 1, fading to no shift where it is 0.

    Each output pixel x samples ``img`` at ``x - weight(x) * (dx, dy)`` (bilinear, border clamped).

    Args:
        img: (C, H, W) window.
        weight: (1, H, W) in [0, 1].
        dx, dy: shift in pixels.

    Returns:
        (C, H, W) warped window.
    """
    c, h, w = img.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=img.device, dtype=torch.float32),
                            torch.arange(w, device=img.device, dtype=torch.float32), indexing="ij")
    sx = xs - weight[0].float() * dx
    sy = ys - weight[0].float() * dy
    grid = torch.stack([(sx + 0.5) / w * 2 - 1, (sy + 0.5) / h * 2 - 1], dim=-1)[None]
    out = F.grid_sample(img[None].float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out[0].to(img.dtype)


def unsharp(img: torch.Tensor, sigma: float, amount: float) -> torch.Tensor:
    """Unsharp mask: ``img + amount * (img - blur(img, sigma))``. Shapes (C, H, W) -> (C, H, W)."""
    return img + amount * (img - ops.gaussian_blur(img, sigma))


def catchlight_layer(eye: torch.Tensor, lum: torch.Tensor, iris_mask: torch.Tensor, radius: float,
                     white_level: float) -> torch.Tensor:
    """The specular highlights of an eye: what stands above its surroundings and above the eye's white.

    Args:
        eye: (3, H, W) plate eye window.
        lum: (H, W) its luminance.
        iris_mask: (H, W) iris coverage (grown a little: catchlights sit on the iris and the pupil's edge).
        radius: iris radius in pixels (sets the size of "surroundings").
        white_level: luminance of the eye's white (sclera); highlights are brighter than it, which keeps
            the sclera beside a dark iris from counting.

    Returns:
        (3, H, W) non-negative highlight layer to add.
    """
    sigma = max(radius / 2.0, 1.0)
    above = (eye - ops.gaussian_blur(eye, sigma)).clamp_min(0)
    local = ops.gaussian_blur(lum[None], sigma)[0]
    contrast = ((lum / local.clamp_min(1e-6) - 1.5) / 0.5).clamp(0, 1)
    brighter = ((lum / max(white_level, 1e-6) - 1.1) / 0.2).clamp(0, 1)
    return above * (contrast * brighter * iris_mask)[None]


def eye_opening(face, eye: int, window, grow: float = 0.0) -> torch.Tensor:
    """(h, w) coverage of one eye's opening (between the eyelids) inside a window (y0, y1, x0, x1)."""
    y0, y1, x0, x1 = window
    poly = np.asarray(face.landmarks, dtype=np.float64)[list(EYE_CONTOURS[eye]), :2] - [x0, y0]
    return torch.from_numpy(rasterize_shapes([poly], [], (y1 - y0, x1 - x0), grow))


def window_around_eye(face, eye: int, hw: tuple[int, int], margin: float) -> tuple[int, int, int, int]:
    """The plate window (y0, y1, x0, x1) holding one eye's eyelid contour plus ``margin`` px, clipped to (H, W)."""
    poly = np.asarray(face.landmarks, dtype=np.float64)[list(EYE_CONTOURS[eye]), :2]
    x0, y0 = np.floor(poly.min(0) - margin).astype(int)
    x1, y1 = np.ceil(poly.max(0) + margin).astype(int) + 1
    return max(y0, 0), min(y1, hw[0]), max(x0, 0), min(x1, hw[1])


def circle_shapes(cx: float, cy: float, r: float):
    """A circle as the (add, cut) polygon lists :func:`doublure.faces.masks.rasterize_shapes` takes (48 sides)."""
    ang = np.linspace(0, 2 * np.pi, 48, endpoint=False)
    return [np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1)], []

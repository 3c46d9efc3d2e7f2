"""Putting a swapped face back onto the plate: the blend mask in crop space, the seamless correction along its
edge, the colour encoding the model's crops are in, and ``over`` in linear light inside the faces' window."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from doublure.engine import colour as engine_colour
from doublure.engine.image import Image, Window
from doublure.engine.ops import gaussian_blur, normalized_blur

MASK_SOURCES = ("predicted", "landmark hull", "both")


def crop_masks(pred: torch.Tensor, hull: torch.Tensor, source: str, erode: float, feather: float) -> torch.Tensor:
    """The blend mask of each face in crop space.

    Args:
        pred: (N, 1, R, R) the model's predicted mask.
        hull: (N, 1, R, R) the landmark face hull.
        source: one of :data:`MASK_SOURCES` (``both`` multiplies them).
        erode: shrink (positive) or grow (negative) in crop pixels (square structuring element).
        feather: Gaussian sigma in crop pixels.

    Returns:
        (N, 1, R, R) in [0, 1], fading to zero towards the crop's edge so nothing of the edge shows. The
        fade is wide (8% of the crop, or twice the feather if wider; smoothstep) because the landmark hull
        and the predicted mask of a ``whole_face`` crop run past its top: there the fade is the mask's only
        edge, and a narrow one drew a straight seam across the forehead.
    """
    m = {"predicted": pred, "landmark hull": hull, "both": pred * hull}[source]
    r = int(round(abs(erode)))
    if r > 0:
        pooled = F.max_pool2d(1.0 - m if erode > 0 else m, 2 * r + 1, stride=1, padding=r)
        m = 1.0 - pooled if erode > 0 else pooled
    if feather > 0:
        m = gaussian_blur(m, feather).clamp(0.0, 1.0)
    size = m.shape[-1]
    pos = torch.linspace(0, size - 1, size, device=m.device, dtype=m.dtype)
    t = (torch.minimum(pos, size - 1 - pos) / max(1.0, 0.08 * size, 2.0 * feather)).clamp(0.0, 1.0)
    fade = t * t * (3.0 - 2.0 * t)
    return m * (fade[None, :] * fade[:, None])


def seamless_correction(plate_crop: torch.Tensor, swap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Poisson-style blend: a smooth membrane that cancels the colour difference along the mask's edge.

    Seamless cloning (Pérez et al. 2003) keeps the swap's gradients and takes the plate's values on the
    boundary; the correction is the harmonic interpolation of the boundary difference. Here it is
    approximated by a normalised Gaussian interpolation (width R / 8) of the difference measured in a band
    just outside the mask, which is smooth, has no iterations and keeps the swap's detail.

    Args:
        plate_crop: (N, 3, R, R) the plate in crop space (linear).
        swap: (N, 3, R, R) the swapped face (linear).
        mask: (N, 1, R, R) the blend mask.

    Returns:
        (N, 3, R, R) the corrected swap.
    """
    size = swap.shape[-1]
    hard = (mask >= 0.5).to(swap.dtype)
    r = max(1, int(round(0.03 * size)))
    band = F.max_pool2d(hard, 2 * r + 1, stride=1, padding=r) - hard
    out = []
    for i in range(swap.shape[0]):
        if band[i].sum() < 1:
            out.append(swap[i])
            continue
        membrane = normalized_blur(plate_crop[i] - swap[i], band[i], size / 8.0)
        out.append(swap[i] + membrane)
    return torch.stack(out)

def to_encoding(crops: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Colour-convert a batch of crops through the engine's (C, H, W) conversion.

    Args:
        crops: (N, 3, R, R).
        src, dst: OCIO colour space names (``"srgb"`` for the model's display encoding).

    Returns:
        (N, 3, R, R) in ``dst``.
    """
    n, c, r, _ = crops.shape
    planes = crops.permute(1, 0, 2, 3).reshape(c, n * r, r).contiguous()
    out = engine_colour.convert(planes, src, dst)
    return out.reshape(c, n, r, r).permute(1, 0, 2, 3)


def over_alpha(plate: Image, placed: torch.Tensor, window: Window) -> torch.Tensor:
    """The coverage of the placed faces composited one over the other, on the whole frame.

    Args:
        plate: the frame (its size and device).
        placed: (N, 4, h, w) premultiplied colour and alpha of each face inside ``window``.
        window: (y0, y1, x0, x1).

    Returns:
        (1, H, W) alpha, 0 outside the window.
    """
    y0, y1, x0, x1 = window
    alpha = torch.zeros_like(plate.tensor[:1], dtype=placed.dtype)
    window_alpha = alpha[:, y0:y1, x0:x1]
    for i in range(placed.shape[0]):   # 'over' accumulation: a tiny alpha stays non-zero
        window_alpha.copy_(window_alpha + placed[i, 3:] * (1.0 - window_alpha))
    return alpha


def over_plate(plate: Image, placed: torch.Tensor, window: Window) -> Image:
    """The placed faces composited ``over`` the plate in linear light (its alpha too, where it has one).

    Only the window is composited, and inside it only where a face lands: elsewhere the plate's values are
    kept bit for bit and the rest of the frame is shared (``Image.paste``).

    Args:
        plate: the frame.
        placed: (N, 4, h, w) premultiplied colour and alpha of each face inside ``window``.
        window: (y0, y1, x0, x1).

    Returns:
        The composited Image (the plate's metadata and faces).
    """
    pixels = plate.window(window).to(torch.float32, copy=True)
    alpha_index = plate.channels.index("A") if "A" in plate.channels else None
    for i in range(placed.shape[0]):
        colour, alpha = placed[i, :3], placed[i, 3:]
        inside = alpha > 0
        pixels[:3] = torch.where(inside, pixels[:3] * (1.0 - alpha) + colour, pixels[:3])
        if alpha_index is not None:
            a = pixels[alpha_index:alpha_index + 1]
            a.copy_(torch.where(inside, a * (1.0 - alpha) + alpha, a))
    return plate.paste(window, pixels.to(plate.dtype))

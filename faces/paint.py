"""Painted masks: brush strokes stored in a face track's canonical crop space, rendered at plate resolution.

A stroke (the ``K.Strokes`` knob's items) is::

    {"track_id": int, "points": [[u, v], ...], "radius": float, "hardness": 0..1, "opacity": 0..1,
     "mode": "add" | "erase", "frames": None | {"from": N} | {"only": N}}

with points and radius in the track's crop UNIT coordinates ([0, 1]^2, ``Face.to_crop``). Because the stroke
lives in face-aligned space, a mask painted on one frame follows the face on every other frame: rendering
maps each plate pixel into the face's crop space of *that* frame and measures the distance to the stroke
there.

Brush profile: coverage 1 within ``radius * hardness`` of the stroke's centre line, falling smoothly
(smoothstep) to 0 at ``radius``; the edge is never narrower than one plate pixel, which anti-aliases hard
brushes. A stroke's coverage is the maximum over its segments (a stroke does not build up over itself),
times its opacity. Strokes composite in order: ``add`` is "over" (m + c (1 - m)), ``erase`` multiplies by
(1 - c).
"""
from __future__ import annotations

from typing import Sequence

import numpy as np
import torch

from .face import Face, affine_scale, apply_affine

# Pixels per chunk when measuring distances to many segments (bounds memory to a few tens of MB).
_CHUNK = 1 << 16


def stroke_active(stroke: dict, frame: int) -> bool:
    """Whether a stroke applies at ``frame`` (``frames``: None = always, ``from`` N onward, ``only`` N)."""
    frames = stroke.get("frames")
    if not frames:
        return True
    if "only" in frames:
        return int(frame) == int(frames["only"])
    return int(frame) >= int(frames["from"])


def crop_units_per_pixel(face: Face) -> float:
    """Size of one plate pixel in the face's crop unit coordinates (the crop transform is a similarity)."""
    return affine_scale(face.to_crop)


def plate_points_to_stroke(face: Face, points_px, radius_px: float, *, hardness: float = 0.5,
                           opacity: float = 1.0, mode: str = "add", frames: dict | None = None) -> dict:
    """Turn a brush drag on the plate into a stroke in ``face``'s crop space (what the app's brush calls).

    Args:
        face: the face the stroke belongs to, on the frame it was painted on.
        points_px: (N, 2) brush centre positions in plate pixels.
        radius_px: brush radius in plate pixels.
        hardness, opacity: in [0, 1].
        mode: ``"add"`` or ``"erase"``.
        frames: None (every frame), ``{"from": N}`` or ``{"only": N}``.

    Returns:
        A stroke dict for a ``K.Strokes`` knob.
    """
    pts = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    if pts.shape[0] == 0:
        raise ValueError("a stroke needs at least one point")
    if mode not in ("add", "erase"):
        raise ValueError(f"stroke mode {mode!r} is not add or erase")
    uv = apply_affine(face.to_crop, pts)
    return {
        "track_id": int(face.track_id),
        "points": [[float(u), float(v)] for u, v in uv],
        "radius": float(radius_px) * crop_units_per_pixel(face),
        "hardness": float(hardness),
        "opacity": float(opacity),
        "mode": mode,
        "frames": dict(frames) if frames else None,
    }


def stroke_to_plate_points(face: Face, stroke: dict) -> tuple[np.ndarray, float]:
    """Where a stroke lies on a frame's plate (for drawing it in the viewer).

    Returns:
        ((N, 2) plate pixel points, radius in plate pixels).
    """
    pts = apply_affine(face.from_crop, np.asarray(stroke["points"], dtype=np.float64).reshape(-1, 2))
    return pts, float(stroke["radius"]) / crop_units_per_pixel(face)


def _segment_distance(p: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Distance from points to the nearest of several segments.

    Args:
        p: (N, 2) points.
        a, b: (S, 2) segment end points (a == b is a dot).

    Returns:
        (N,) distance to the closest segment.
    """
    ab = b - a  # (S, 2)
    denom = (ab * ab).sum(1).clamp_min(1e-20)
    out = []
    for chunk in torch.split(p, max(1, _CHUNK // max(1, a.shape[0]))):
        ap = chunk[:, None, :] - a[None]  # (n, S, 2)
        t = ((ap * ab[None]).sum(-1) / denom).clamp(0, 1)
        d = (ap - t[..., None] * ab[None]).norm(dim=-1)
        out.append(d.min(dim=1).values)
    return torch.cat(out)


def stroke_window(stroke: dict, face: Face, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The plate rectangle (y0, y1, x0, x1) holding a stroke's coverage on a frame (its points grown by its
    radius and two pixels for the soft edge), clipped to the plate (H, W); empty when it lies outside."""
    pts_px, radius_px = stroke_to_plate_points(face, stroke)
    margin = radius_px + 2.0
    x0, y0 = max(int(np.floor(pts_px[:, 0].min() - margin)), 0), max(int(np.floor(pts_px[:, 1].min() - margin)), 0)
    x1 = min(int(np.ceil(pts_px[:, 0].max() + margin)) + 1, int(hw[1]))
    y1 = min(int(np.ceil(pts_px[:, 1].max() + margin)) + 1, int(hw[0]))
    return y0, y1, x0, x1


def render_stroke(stroke: dict, face: Face, hw: tuple[int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """Coverage of one stroke on a frame, at plate resolution, opacity included.

    Args:
        stroke: a stroke dict (crop unit coords of ``face``'s track).
        face: the stroke's track's face on the frame being rendered.
        hw: plate (H, W).

    Returns:
        (H, W) float32 coverage in [0, 1].
    """
    h, w = int(hw[0]), int(hw[1])
    out = torch.zeros(h, w, dtype=torch.float32, device=device)
    y0, y1, x0, x1 = stroke_window(stroke, face, (h, w))
    if x1 <= x0 or y1 <= y0:
        return out
    ys, xs = torch.meshgrid(torch.arange(y0, y1, dtype=torch.float64, device=device),
                            torch.arange(x0, x1, dtype=torch.float64, device=device), indexing="ij")
    m = torch.as_tensor(np.asarray(face.to_crop, dtype=np.float64), device=device)
    uv = torch.stack([xs.flatten(), ys.flatten()], 1) @ m[:, :2].T + m[:, 2]
    pts = torch.as_tensor(np.asarray(stroke["points"], dtype=np.float64).reshape(-1, 2), device=device)
    a, b = (pts[:-1], pts[1:]) if pts.shape[0] > 1 else (pts, pts)
    d = _segment_distance(uv, a, b).reshape(y1 - y0, x1 - x0)
    radius = float(stroke["radius"])
    pixel = crop_units_per_pixel(face)
    # falls from 1 at radius * hardness (less half a pixel) to 0 at radius (plus half a pixel)
    soft = radius * (1.0 - float(stroke["hardness"])) + pixel
    t = ((radius + 0.5 * pixel - d) / soft).clamp(0, 1)
    cov = t * t * (3.0 - 2.0 * t) * float(stroke["opacity"])
    out[y0:y1, x0:x1] = cov.float()
    return out


def render_strokes(strokes: Sequence[dict], faces: Sequence[Face], frame: int, hw: tuple[int, int],
                   base: torch.Tensor | None = None, device: torch.device | str = "cpu") -> torch.Tensor:
    """Composite a list of strokes into a mask for one frame.

    Strokes whose track has no face on this frame, or whose ``frames`` exclude it, are skipped.

    Args:
        strokes: stroke dicts, in painting order.
        faces: the frame's faces (``Image.faces``).
        frame: the frame number.
        hw: plate (H, W).
        base: optional (1, H, W) mask the strokes add to / erase from (e.g. an eye mask from landmarks).
        device: where the mask lives.

    Returns:
        (1, H, W) float32 mask in [0, 1].
    """
    h, w = int(hw[0]), int(hw[1])
    mask = torch.zeros(h, w, dtype=torch.float32, device=device) if base is None \
        else base.reshape(h, w).to(device=device, dtype=torch.float32).clone()
    by_track = {f.track_id: f for f in faces}
    for stroke in strokes:
        face = by_track.get(int(stroke["track_id"]))
        if face is None or not stroke_active(stroke, frame):
            continue
        cov = render_stroke(stroke, face, (h, w), device)
        if stroke.get("mode", "add") == "erase":
            mask = mask * (1.0 - cov)
        else:
            mask = mask + cov * (1.0 - mask)
    return mask.unsqueeze(0)

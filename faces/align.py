"""Canonical face alignment: the landmark template, the similarity fit, and batched anti-aliased warps.

Crop space is resolution independent: a face's ``to_crop`` maps plate pixels (x, y) to unit coords
(u, v) in [0, 1]^2; a crop rendered at S px has pixel (i, j) (row, column) centred at
((j + 0.5) / S, (i + 0.5) / S). Plate pixel (x, y) has its centre at integer coordinates, (0, 0) top-left.

The framing of each face type (where the template sits in the unit square) is fixed by the template, so
crops are consistent across frames and shots.
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine.device import upload

from .face import FACE_TYPES, affine_scale, invert_affine
from .template_data import CANONICAL_MESH

#: (478, 3) float64 canonical mesh (head frame, outer eye corners 1 apart; see template_data.py).
TEMPLATE_3D = np.asarray(CANONICAL_MESH, dtype=np.float64)
TEMPLATE_2D = TEMPLATE_3D[:, :2]

#: Landmarks that move little with expression, used to fit the crop transform: eye corners, nose bridge
#: and tip, forehead, temples and upper cheeks (no mouth, jaw or brows: they move with the expression).
STABLE_LANDMARKS = (33, 133, 362, 263,              # eye corners
                    168, 6, 197, 195, 5, 4, 1,      # nose bridge to tip
                    9, 151, 10,                     # forehead
                    234, 454, 93, 323, 127, 356,    # temples / cheeks at eye height
                    116, 345, 50, 280)              # upper cheeks

_STABLE_INDEX = np.array(STABLE_LANDMARKS)

_BROWS = (46, 53, 52, 65, 55, 70, 63, 105, 66, 107, 276, 283, 282, 295, 285, 300, 293, 334, 296, 336)
_MARGIN = 1.2   # crop side / face extent: room around the face for blending and augmentation


def _framing(face_type: str) -> tuple[np.ndarray, float]:
    """Centre (2,) and side of the square crop in template units for a face type."""
    t = TEMPLATE_2D
    x0, x1 = t[234, 0], t[454, 0]                     # cheek to cheek
    y1 = t[152, 1]                                    # chin
    y0 = t[list(_BROWS), 1].min() if face_type == "whole_face" else t[10, 1]   # brows / top of forehead
    centre = np.array([(x0 + x1) / 2, (y0 + y1) / 2])
    side = max(x1 - x0, y1 - y0) * _MARGIN
    return centre, side


FRAMING = {ft: _framing(ft) for ft in FACE_TYPES}


def template_in_crop(face_type: str = "whole_face") -> np.ndarray:
    """(478, 2) float64 canonical landmark positions in crop unit coords for a face type."""
    centre, side = FRAMING[_check_face_type(face_type)]
    return (TEMPLATE_2D - centre) / side + 0.5


def umeyama_2d(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) mapping src points onto dst.

    Umeyama (1991), "Least-squares estimation of transformation parameters between two point patterns".

    Args:
        src: (N, 2) points.
        dst: (N, 2) points.

    Returns:
        (2, 3) float64 affine M with dst ~ M @ [src, 1].
    """
    src = np.asarray(src, dtype=np.float64)
    dst = np.asarray(dst, dtype=np.float64)
    mu_s, mu_d = src.mean(0), dst.mean(0)
    s, d = src - mu_s, dst - mu_d
    cov = d.T @ s / len(src)
    u, sig, vt = np.linalg.svd(cov)
    e = np.eye(2)
    if np.linalg.det(u) * np.linalg.det(vt) < 0:
        e[1, 1] = -1
    r = u @ e @ vt
    var_s = (s ** 2).sum(1).mean()
    scale = np.trace(np.diag(sig) @ e) / var_s
    a = scale * r
    return np.concatenate([a, (mu_d - a @ mu_s)[:, None]], axis=1)


def _similarity_2d(src: np.ndarray, dst_centred: np.ndarray, dst_mean: np.ndarray) -> np.ndarray:
    """Least-squares similarity src -> dst in closed form with complex numbers (no reflection), the same
    optimum as :func:`umeyama_2d` for proper similarities, at a fraction of the cost."""
    zs = src[:, 0] + 1j * src[:, 1]
    zs_mean = zs.mean()
    zs = zs - zs_mean
    zd = dst_centred[:, 0] + 1j * dst_centred[:, 1]
    a = np.vdot(zs, zd) / np.vdot(zs, zs).real                  # scale * e^(i angle)
    t = complex(dst_mean[0], dst_mean[1]) - a * zs_mean
    return np.array([[a.real, -a.imag, t.real], [a.imag, a.real, t.imag]])


_FIT_TARGETS: dict[str, tuple[np.ndarray, np.ndarray]] = {}


def estimate_to_crop(landmarks: np.ndarray, face_type: str = "whole_face") -> tuple[np.ndarray, np.ndarray]:
    """Fit the canonical crop transform to a face's landmarks.

    Args:
        landmarks: (478, >=2) plate pixel coordinates.
        face_type: ``"whole_face"`` (brows to chin, cheek to cheek) or ``"full"`` (forehead included).

    Returns:
        to_crop: (2, 3) float64 plate pixel -> crop unit coords.
        from_crop: (2, 3) float64, its exact inverse.
    """
    target = _FIT_TARGETS.get(face_type)
    if target is None:
        pts = template_in_crop(face_type)[list(STABLE_LANDMARKS)]
        target = _FIT_TARGETS[face_type] = (pts - pts.mean(0), pts.mean(0))
    src = np.asarray(landmarks, dtype=np.float64)[_STABLE_INDEX, :2]
    to_crop = _similarity_2d(src, *target)
    return to_crop, invert_affine(to_crop)


def _check_face_type(face_type: str) -> str:
    if face_type not in FACE_TYPES:
        raise ValueError(f"face_type must be one of {FACE_TYPES}, got {face_type!r}")
    return face_type


def _as_affine_batch(m, device: torch.device) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(m) if not isinstance(m, torch.Tensor) else m)
    t = t.to(device=device, dtype=torch.float64)
    if t.ndim == 2:
        t = t[None]
    if t.shape[-2:] != (2, 3):
        raise ValueError(f"expected affine matrices shaped (B, 2, 3), got {tuple(t.shape)}")
    return t


def _mip_levels(image: torch.Tensor, max_level: int) -> list[torch.Tensor]:
    """Box-filtered pyramid; level L pixel i covers base pixels [i * 2^L, (i + 1) * 2^L)."""
    levels = [image]
    for _ in range(max_level):
        prev = levels[-1]
        if prev.shape[-1] < 2 and prev.shape[-2] < 2:
            break
        # ceil_mode with no padding averages only the pixels inside the image on odd-sized edges
        levels.append(F.avg_pool2d(prev, 2, stride=2, ceil_mode=True))
    return levels


def warp_affine(src: torch.Tensor, dst_to_src: torch.Tensor, out_hw: tuple[int, int],
                padding_mode: str = "zeros") -> torch.Tensor:
    """Resample images through affine maps with trilinear mip filtering (no aliasing when shrinking).

    For each output pixel the footprint in the source is |det A|^(1/2) source pixels wide; the source is
    sampled bilinearly from the two box-filtered pyramid levels bracketing that footprint and blended
    (trilinear mip mapping), so downscaling by any factor averages the covered pixels.

    Args:
        src: (C, H, W) or (B, C, H, W) source; a single image is shared by all B transforms.
        dst_to_src: (B, 2, 3) maps output pixel coords (x, y) to source pixel coords (pixel centres at
            integers on both sides); torch or numpy.
        out_hw: (H_out, W_out).
        padding_mode: ``"zeros"``, ``"border"`` or ``"reflection"`` outside the source.

    Returns:
        (B, C, H_out, W_out) tensor, src's dtype and device.
    """
    if src.ndim == 3:
        src = src[None]
    device, dtype = src.device, src.dtype
    m = _as_affine_batch(dst_to_src, torch.device("cpu"))   # float64 maths on the host (MPS has no f64)
    b = m.shape[0]
    if src.shape[0] not in (1, b):
        raise ValueError(f"source batch {src.shape[0]} does not match {b} transforms")
    h_out, w_out = int(out_hw[0]), int(out_hw[1])
    h_in, w_in = src.shape[-2:]

    footprint = torch.sqrt(torch.abs(torch.linalg.det(m[:, :, :2]))).cpu().numpy()
    lod = np.log2(np.maximum(footprint, 1e-12)).clip(0.0, None)
    max_level = int(math.ceil(lod.max())) if b else 0
    work_dtype = torch.float32 if dtype in (torch.float16, torch.bfloat16) else dtype
    levels = _mip_levels(src.to(work_dtype), max_level)

    out_from_norm = _pixel_to_normalised(w_out, h_out, 1.0).inverse()

    def sample(level: int, idx: list[int]) -> torch.Tensor:
        level = min(level, len(levels) - 1)
        lv = levels[level]
        hl, wl = lv.shape[-2:]
        # level pixel i covers base pixels [i k, (i + 1) k): base x is level (x + 0.5) / k - 0.5
        theta = _pixel_to_normalised(wl, hl, 2.0 ** level) @ _affine3(m[idx]) @ out_from_norm
        grid = F.affine_grid(upload(theta[:, :2].to(work_dtype), device), [len(idx), 1, h_out, w_out],
                             align_corners=False)
        inp = lv.expand(len(idx), -1, -1, -1) if lv.shape[0] == 1 else lv[idx]
        return F.grid_sample(inp, grid, mode="bilinear", padding_mode=padding_mode, align_corners=False)

    out = torch.empty((b, src.shape[1], h_out, w_out), device=device, dtype=work_dtype)
    lo = np.floor(lod).astype(int)
    frac = lod - lo
    for level in sorted(set(lo.tolist())):
        idx = [i for i in range(b) if lo[i] == level]
        res = sample(level, idx)
        # tested on the host array: on a GPU a test of the device tensor would wait for the stream
        if (frac[idx] > 0).any() and level + 1 < len(levels):
            f = upload(torch.as_tensor(frac[idx], dtype=work_dtype), device).view(-1, 1, 1, 1)
            res = res * (1 - f) + sample(level + 1, idx) * f
        out[idx] = res
    return out.to(dtype)


def crop_pixel_to_plate(from_crop, size: int) -> torch.Tensor:
    """(B, 2, 3) float64 map from crop pixel coords at ``size`` px to plate pixel coords."""
    m = _as_affine_batch(from_crop, torch.device("cpu"))
    a = m[:, :, :2] / size
    t = m[:, :, 2] + a.sum(-1) * 0.5                       # crop pixel (0, 0) centre is unit (0.5/S, 0.5/S)
    return torch.cat([a, t[..., None]], dim=-1)


def plate_to_crop_pixel(to_crop, size: int) -> torch.Tensor:
    """(B, 2, 3) float64 map from plate pixel coords to crop pixel coords at ``size`` px."""
    m = _as_affine_batch(to_crop, torch.device("cpu")) * size
    m[:, :, 2] -= 0.5
    return m


def warp_to_crop(image: torch.Tensor, to_crop, size: int, padding_mode: str = "zeros") -> torch.Tensor:
    """Aligned crops of faces, anti-aliased.

    Args:
        image: (C, H, W) plate shared by all faces, or (B, C, H, W) one plate per face.
        to_crop: (B, 2, 3) plate pixel -> crop unit affines (torch or numpy); (2, 3) for one face.
        size: crop side in pixels (64-1024 typical).
        padding_mode: what lies outside the plate: ``"zeros"``, ``"border"`` or ``"reflection"``.

    Returns:
        (B, C, size, size) crops, image's dtype and device.
    """
    from_crop = torch.linalg.inv(_affine3(_as_affine_batch(to_crop, torch.device("cpu"))))[:, :2]
    m = crop_pixel_to_plate(from_crop, size)
    return warp_affine(image, m, (size, size), padding_mode)


def warp_from_crop(crop: torch.Tensor, from_crop, out_hw: tuple[int, int]) -> tuple[torch.Tensor, torch.Tensor]:
    """Put crops back onto the plate (the exact inverse of :func:`warp_to_crop`'s geometry).

    Args:
        crop: (B, C, S, S) crops.
        from_crop: (B, 2, 3) crop unit -> plate pixel affines; (2, 3) for one face.
        out_hw: plate (H, W).

    Returns:
        plate: (B, C, H, W) the crops resampled in plate space, premultiplied by coverage (zero where no
            crop lands): composite as ``plate_out = plate + background * (1 - coverage)``.
        coverage: (B, 1, H, W) in [0, 1], where the crop lands (anti-aliased edge).
    """
    size = crop.shape[-1]
    h, w = int(out_hw[0]), int(out_hw[1])
    from_crop = _as_affine_batch(from_crop, torch.device("cpu"))
    to_crop_px = plate_to_crop_pixel(torch.linalg.inv(_affine3(from_crop))[:, :2], size)
    ones = torch.ones((crop.shape[0], 1) + tuple(crop.shape[-2:]), device=crop.device, dtype=crop.dtype)
    src = torch.cat([crop, ones], dim=1)
    out = torch.zeros((crop.shape[0], crop.shape[1] + 1, h, w), device=crop.device, dtype=crop.dtype)
    corners = torch.tensor([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]],
                           dtype=torch.float64)
    for i in range(crop.shape[0]):
        # resample only the plate window the crop covers (1 px margin for the bilinear edge)
        xy = corners @ from_crop[i].T
        x0 = max(int(math.floor(xy[:, 0].min().item())) - 1, 0)
        y0 = max(int(math.floor(xy[:, 1].min().item())) - 1, 0)
        x1 = min(int(math.ceil(xy[:, 0].max().item())) + 2, w)
        y1 = min(int(math.ceil(xy[:, 1].max().item())) + 2, h)
        if x1 <= x0 or y1 <= y0:
            continue
        shift = torch.tensor([[1.0, 0.0, x0], [0.0, 1.0, y0], [0.0, 0.0, 1.0]], dtype=torch.float64)
        m = (_affine3(to_crop_px[i:i + 1]) @ shift)[:, :2]
        out[i:i + 1, :, y0:y1, x0:x1] = warp_affine(src[i], m, (y1 - y0, x1 - x0), padding_mode="zeros")
    return out[:, :-1], out[:, -1:]


def plate_window(from_crop: np.ndarray, res: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The plate rectangle the faces' crops are read from and put back onto, so a 200 px face on a 1080p
    plate costs a 200 px window, not the frame.

    The crops' footprint grows by the mip filter's reach (two pixels of the coarsest pyramid level that
    :func:`warp_affine` samples), and the window's edges sit on that level's grid, so
    the window's pyramid is the plate's pyramid cut out and the crops come out as from the whole plate.

    Args:
        from_crop: (N, 2, 3) crop unit -> plate pixel affines.
        res: crop side in pixels.
        hw: plate (H, W).

    Returns:
        (y0, y1, x0, x1), clipped to the plate.
    """
    corners = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    xy = np.concatenate([corners @ m.T for m in from_crop])
    plate_px_per_crop_px = max(affine_scale(m) for m in from_crop) / res
    step = 2 ** max(0, math.ceil(math.log2(max(plate_px_per_crop_px, 1e-12))))
    margin = 2 * step + 2
    x0, y0 = ((np.floor((xy.min(0) - margin) / step)) * step).astype(int)
    x1, y1 = ((np.ceil((xy.max(0) + margin) / step)) * step).astype(int)
    return max(int(y0), 0), min(int(y1), hw[0]), max(int(x0), 0), min(int(x1), hw[1])


def plate_crops(plate: torch.Tensor, to_crop: np.ndarray, res: int) -> torch.Tensor:
    """Linear aligned crops of a plate, read from the window the faces cover (:func:`plate_window`).

    Args:
        plate: (C, H, W) the plate.
        to_crop: (N, 2, 3) plate pixel -> crop unit affines.
        res: crop side in pixels.

    Returns:
        (N, 3, R, R) float32, the border repeated beyond the plate.
    """
    from_crop = np.stack([invert_affine(m) for m in to_crop])
    y0, y1, x0, x1 = plate_window(from_crop, res, tuple(plate.shape[-2:]))
    to_crop = to_crop.copy()
    to_crop[:, :, 2] += to_crop[:, :, :2] @ np.array([x0, y0], dtype=np.float64)
    return warp_to_crop(plate[:3, y0:y1, x0:x1].float(), to_crop, res, padding_mode="border")


def _pixel_to_normalised(w: int, h: int, k: float) -> torch.Tensor:
    """(3, 3) float64: base pixel coords -> grid_sample normalised coords (align_corners=False) of a pyramid
    level that is (w, h) pixels, each covering k x k base pixels."""
    return torch.tensor([[2.0 / (k * w), 0.0, 1.0 / (k * w) - 1.0],
                         [0.0, 2.0 / (k * h), 1.0 / (k * h) - 1.0],
                         [0.0, 0.0, 1.0]], dtype=torch.float64)


def _affine3(m: torch.Tensor) -> torch.Tensor:
    bottom = torch.tensor([0.0, 0.0, 1.0], dtype=m.dtype, device=m.device).expand(m.shape[0], 1, 3)
    return torch.cat([m, bottom], dim=1)

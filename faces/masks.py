"""Face masks from the mesh topology (mediapipe's FACEMESH_* connection sets), rendered anti-aliased.

Regions: ``face_hull`` (convex hull of the face oval), ``skin`` (the face oval with eyes, brows and mouth cut
out), ``eyes``, ``irises`` (circles from the iris centres and radii), ``mouth`` (outer lip contour),
``mouth_inner`` (inner lip contour: the mouth's opening, empty when the lips are closed).
Masks render at plate resolution or in crop space (landmarks mapped through a face's crop transform), with
grow (dilate, positive px) / shrink (erode, negative px) and a Gaussian feather.

Anti-aliasing: polygons are filled at 4x supersampling inside the region's bounding box and box-averaged,
so a mask pixel's value is its covered area (to 1/16).
"""
from __future__ import annotations

from collections import defaultdict
from typing import Sequence

import cv2
import numpy as np
import torch
from mediapipe.python.solutions import face_mesh_connections as fmc

from doublure.engine.device import upload
from doublure.engine.ops import gaussian_blur

from .align import TEMPLATE_2D
from .face import Face, affine_scale, apply_affine, crop_matrix

REGIONS = ("face_hull", "skin", "eyes", "irises", "mouth", "mouth_inner")
_SUPERSAMPLE = 4
_CROSS = cv2.getStructuringElement(cv2.MORPH_CROSS, (3, 3))


def _chains(edges) -> list[list[int]]:
    """Ordered vertex chains (closed cycles or open paths) of an undirected edge set."""
    adj = defaultdict(list)
    for a, b in sorted(edges):
        adj[a].append(b)
        adj[b].append(a)
    seen: set[int] = set()
    chains = []
    # open paths start at degree-1 vertices; the rest are cycles
    starts = sorted(v for v in adj if len(adj[v]) == 1) + sorted(adj)
    for s in starts:
        if s in seen:
            continue
        chain, prev, cur = [s], None, s
        seen.add(s)
        while True:
            nxt = [n for n in sorted(adj[cur]) if n != prev and n not in seen]
            if not nxt:
                break
            prev, cur = cur, nxt[0]
            chain.append(cur)
            seen.add(cur)
        chains.append(chain)
    return chains


def _cycle(edges) -> tuple[int, ...]:
    (chain,) = _chains(edges)
    return tuple(chain)


def _brow_polygon(edges) -> tuple[int, ...]:
    """Brow sets are two open lines (upper and lower edge); join them into one outline."""
    a, b = _chains(edges)
    t = TEMPLATE_2D
    if np.linalg.norm(t[a[-1]] - t[b[-1]]) < np.linalg.norm(t[a[-1]] - t[b[0]]):
        b = b[::-1]
    return tuple(a + b)


def _lip_cycles() -> tuple[tuple[int, ...], tuple[int, ...]]:
    c1, c2 = (tuple(c) for c in _chains(fmc.FACEMESH_LIPS))
    area = [cv2.contourArea(TEMPLATE_2D[list(c)].astype(np.float32)) for c in (c1, c2)]
    return (c1, c2) if area[0] > area[1] else (c2, c1)


FACE_OVAL = _cycle(fmc.FACEMESH_FACE_OVAL)
LEFT_EYE = _cycle(fmc.FACEMESH_LEFT_EYE)
RIGHT_EYE = _cycle(fmc.FACEMESH_RIGHT_EYE)
LEFT_BROW = _brow_polygon(fmc.FACEMESH_LEFT_EYEBROW)
RIGHT_BROW = _brow_polygon(fmc.FACEMESH_RIGHT_EYEBROW)
LIPS_OUTER, LIPS_INNER = _lip_cycles()


def region_shapes(landmarks: np.ndarray, iris: np.ndarray, region: str):
    """The filled shapes that make up a region.

    Args:
        landmarks: (478, >=2) pixel coordinates (plate or crop).
        iris: (2, 3) rows (cx, cy, radius) in the same pixels.
        region: one of :data:`REGIONS`.

    Returns:
        (add, cut): lists of (N, 2) float64 polygons to fill, then to cut out; irises are polygons
        approximating circles.
    """
    p = np.asarray(landmarks, dtype=np.float64)[:, :2]
    if region == "face_hull":
        return [cv2.convexHull(p[list(FACE_OVAL)].astype(np.float32))[:, 0].astype(np.float64)], []
    if region == "skin":
        cut = [p[list(c)] for c in (LEFT_EYE, RIGHT_EYE, LEFT_BROW, RIGHT_BROW, LIPS_OUTER)]
        return [p[list(FACE_OVAL)]], cut
    if region == "eyes":
        return [p[list(LEFT_EYE)], p[list(RIGHT_EYE)]], []
    if region == "mouth":
        return [p[list(LIPS_OUTER)]], []
    if region == "mouth_inner":
        return [p[list(LIPS_INNER)]], []
    if region == "irises":
        ang = np.linspace(0, 2 * np.pi, 64, endpoint=False)
        circles = [np.stack([cx + r * np.cos(ang), cy + r * np.sin(ang)], 1) for cx, cy, r in np.asarray(iris)]
        return circles, []
    raise ValueError(f"mask region must be one of {REGIONS}, got {region!r}")


def rasterize_shapes(add: Sequence[np.ndarray], cut: Sequence[np.ndarray], hw: tuple[int, int],
                     grow: float = 0.0) -> np.ndarray:
    """Anti-aliased coverage of (union of ``add``) minus (union of ``cut``), then grown or shrunk.

    Args:
        add, cut: (N, 2) polygons in pixel coords (pixel centres at integers).
        hw: (H, W) output size.
        grow: dilate by this many pixels (negative erodes), exact Euclidean distance.

    Returns:
        (H, W) float32 coverage in [0, 1].
    """
    h, w = int(hw[0]), int(hw[1])
    out = np.zeros((h, w), dtype=np.float32)
    pts = [np.asarray(s, dtype=np.float64) for s in add]
    if not pts:
        return out
    allp = np.concatenate(pts)
    margin = max(grow, 0.0) + 2
    x0 = max(int(np.floor(allp[:, 0].min() - margin)), 0)
    y0 = max(int(np.floor(allp[:, 1].min() - margin)), 0)
    x1 = min(int(np.ceil(allp[:, 0].max() + margin)) + 1, w)
    y1 = min(int(np.ceil(allp[:, 1].max() + margin)) + 1, h)
    if x1 <= x0 or y1 <= y0:
        return out
    k = _SUPERSAMPLE
    hi = np.zeros(((y1 - y0) * k, (x1 - x0) * k), dtype=np.uint8)
    shift = 4   # cv2 sub-pixel bits

    def to_hi(poly: np.ndarray) -> np.ndarray:
        # plate pixel x covers [x - 0.5, x + 0.5): hi-res sample centre j sits at x0 - 0.5 + (j + 0.5) / k
        q = ((poly - [x0, y0]) + 0.5) * k - 0.5
        return np.round(q * (1 << shift)).astype(np.int32)

    add_hi = [to_hi(s) for s in pts]
    cut_hi = [to_hi(np.asarray(s, dtype=np.float64)) for s in cut]
    cv2.fillPoly(hi, add_hi, 1, lineType=cv2.LINE_8, shift=shift)
    holes = np.zeros_like(hi)
    if cut_hi:
        cv2.fillPoly(holes, cut_hi, 1, lineType=cv2.LINE_8, shift=shift)
    if grow < 0 or (grow > 0 and not cut):
        # Within |grow| of the shapes' outlines is the union of a capsule (a rectangle and two discs) per
        # edge. Growing the union of the shapes adds that band; shrinking (shapes minus holes) removes the
        # band of every outline, the holes' too: a sample inside keeps its place iff it is farther than
        # |grow| from each. Painting the band costs its area, not the box's distance transform (5x faster on
        # a face's hull). The filled samples reach half a sample past an edge, so the band is drawn half a
        # sample narrower (as the distance transform below measures from the true edge).
        band = np.zeros_like(hi)
        _paint_band(band, add_hi + (cut_hi if grow < 0 else []), (abs(grow) * k - 0.5) * (1 << shift), shift)
        hi = (hi | band) if grow > 0 else (hi & (1 - holes) & (1 - band))
        hi = hi.astype(np.float32)
    elif grow > 0:
        # grown shapes with holes: the distance from (shapes minus holes), measured from the true edge
        dist = cv2.distanceTransform(1 - (hi & (1 - holes)), cv2.DIST_L2, cv2.DIST_MASK_PRECISE)
        hi = (dist <= grow * k - 0.5).astype(np.float32)
    else:
        hi = _centre_edge(hi) * (1.0 - _centre_edge(holes))
    # the mean of each k x k block: OpenCV's area resize at an integer factor computes exactly that, ~10x
    # faster than numpy's strided mean (the samples are multiples of 1/4, so every sum is exact either way)
    cov = cv2.resize(hi, (x1 - x0, y1 - y0), interpolation=cv2.INTER_AREA)
    out[y0:y1, x0:x1] = cov
    return out


def _paint_band(canvas: np.ndarray, outlines: Sequence[np.ndarray], radius: float, shift: int) -> None:
    """Set every sample of ``canvas`` within ``radius`` of a closed outline's edges to 1.

    Args:
        canvas: (H, W) uint8, painted in place.
        outlines: (N, 2) int32 closed polygons in fixed point (``shift`` fractional bits).
        radius: the band's half width, in the same fixed point units.
        shift: fractional bits.
    """
    if radius <= 0:
        return
    r = int(round(radius))
    for poly in outlines:
        pts = poly.astype(np.float64)
        ends = np.roll(pts, -1, axis=0)
        edge = ends - pts
        length = np.hypot(edge[:, 0], edge[:, 1])
        keep = length > 0
        normal = np.stack([-edge[keep, 1], edge[keep, 0]], 1) / length[keep, None] * radius
        a, b = pts[keep], ends[keep]
        quads = np.round(np.stack([a + normal, b + normal, b - normal, a - normal], 1)).astype(np.int32)
        for quad in quads:
            cv2.fillConvexPoly(canvas, quad, 1, lineType=cv2.LINE_8, shift=shift)
        for x, y in poly:
            cv2.circle(canvas, (int(x), int(y)), r, 1, thickness=-1, lineType=cv2.LINE_8, shift=shift)


def _centre_edge(binary: np.ndarray) -> np.ndarray:
    """fillPoly includes the samples its outline touches, which puts an edge half a sample too far out;
    averaging with the one-sample erosion centres it, so coverage equals the polygon's area."""
    b = binary.astype(np.float32)
    return 0.5 * (b + cv2.erode(b, _CROSS, borderType=cv2.BORDER_CONSTANT, borderValue=0))


def render_mask(faces: Sequence[Face], region: str, hw: tuple[int, int], grow: float = 0.0,
                feather: float = 0.0, device: torch.device | str = "cpu") -> torch.Tensor:
    """Mask of a region of every face, at plate resolution.

    Args:
        faces: faces whose landmarks and irises are in plate pixels.
        region: one of :data:`REGIONS`.
        hw: plate (H, W).
        grow: dilate (positive) or erode (negative) in pixels.
        feather: Gaussian sigma of the edge softening in pixels (0: the anti-aliased edge only).
        device: where the returned tensor lives.

    Returns:
        (1, H, W) float32 mask in [0, 1] (the union of the faces).
    """
    acc = np.zeros((int(hw[0]), int(hw[1])), dtype=np.float32)
    for f in faces:
        add, cut = region_shapes(f.landmarks, f.iris, region)
        np.maximum(acc, rasterize_shapes(add, cut, hw, grow), out=acc)
    return _feathered(acc, feather, device)


def render_crop_mask(face: Face, region: str, size: int, grow: float = 0.0, feather: float = 0.0,
                     device: torch.device | str = "cpu") -> torch.Tensor:
    """Mask of a region of one face in its canonical crop at ``size`` px.

    ``grow`` and ``feather`` are in crop pixels.

    Returns:
        (1, size, size) float32 mask in [0, 1].
    """
    m = crop_matrix(face.to_crop, size)
    lm = apply_affine(m, face.landmarks)
    scale = affine_scale(m)
    iris = np.asarray(face.iris, dtype=np.float64).copy()
    iris[:, :2] = apply_affine(m, iris[:, :2])
    iris[:, 2] *= scale
    add, cut = region_shapes(lm, iris, region)
    return _feathered(rasterize_shapes(add, cut, (size, size), grow), feather, device)


def _feathered(mask: np.ndarray, feather: float, device) -> torch.Tensor:
    t = upload(torch.from_numpy(mask)[None], device)
    if feather > 0:
        t = gaussian_blur(t, float(feather)).clamp_(0.0, 1.0)
    return t

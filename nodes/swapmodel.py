"""SwapModel: render the faces of the plate as the model's target identity and composite them back.

Per frame, for each chosen face (``Image.faces`` from FaceDetect): warp the plate into the model's aligned
crop (anti-aliased), convert it from the scene-linear working space to the model's display encoding
(sRGB, like the faceset crops it learned from), decode it as the target identity (A->B), convert back to
linear, and warp colour and mask onto the plate with the exact inverse transform, composited with ``over``
in linear light. Outside the (feathered) mask the output is the plate, bit for bit; a frame without a chosen
face is the plate unchanged. ``plate_mouth`` also holds the new face out of the plate's mouth opening (inside
the inner lip line), so the plate's teeth and tongue stay: a compositor's fix for a model that draws the
opening smaller and softer than the plate actor's (bench/RESULTS.md, session 6: mouth r up, identity and
stability down a little, so it is off by default).

Temporal stability (bench/RESULTS.md, 2026-11-29): the tracker's smoothed landmark fit lags a fast-moving
head by several pixels and disagrees with the skin's own motion by about a pixel even on a still one, so a
swap placed by it swims on the skin; and the decoder's output changes a little from frame to frame on its
own. ``stabilise`` makes the crop transform follow the plate: the face fits of +-N frames are carried to
this frame by the plate's optical flow inside the face (a similarity per frame pair) and averaged, which
removes the fit's noise without the filter's lag. ``temporal`` blends the decoded faces of +-N frames in
the aligned crop (triangular weights), where, once the transform follows the skin, the same pixel is the
same point of the face; ``temporal_align`` (flow) first moves each neighbour's decoded face onto this
frame's by the plate's optical flow between the two crops, so what no similarity follows (head turn,
expression) is the same point too, and leaves out its pixels where that flow is not to be trusted. Footage
converted to another frame rate repeats frames (people/d6, d10, d12, d20: one in three to six); ``holds``
computes a repeated frame's swap at the frame it repeats (:func:`is_held`), so the face holds with the head
instead of moving on with a window that slid by a frame, and marks the faces it passes on
(``Face.repeats``) for the finishing nodes to hold too. The output at a frame therefore reads the plate
(and its faces) at the frames around it, and hashes them. The output carries each swapped face as it was
placed (landmarks moved with the stabilised crop, :func:`placed_face`) and with the alpha it was composited
with (``Face.coverage``), so the finishing nodes below act where the swap is and only on it: with the
tracker's landmarks their face regions trailed a fast head and recoloured off the swap, and with the face
hull they also recoloured and re-grained the plate wherever it showed through the mask.

The model is loaded once per process and device and shared (keyed by its content digest, which is also
what this node hashes). Every output frame carries provenance metadata: ``doublure/synthetic_face``, the
model's name and digest and its rights reference, which Write puts into every frame header. A model whose
rights record is missing or expired loads with a loud warning (log and ``doublure/rights_warning``).
"""
from __future__ import annotations

import dataclasses
import functools
import math

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, register_node
from doublure.engine import colour as engine_colour
from doublure.engine import knobs as K
from doublure.engine.cache import Memo
from doublure.engine.device import upload
from doublure.engine.ops import gaussian_blur, normalized_blur
from doublure.faces.align import umeyama_2d, warp_from_crop, warp_to_crop
from doublure.faces.detect import box_from_landmarks
from doublure.faces.face import MAX_REPEATS, Coverage, Face, affine_scale, apply_affine, invert_affine
from doublure.faces.masks import render_crop_mask
from doublure.faces.occlusion import occlusion_in_window
from doublure.faces.track import box_iou
from doublure.models.dbm import (ModelFileError, consent_problems, model_digest, read_meta, rights_problems,
                                 rights_reference)
from doublure.models.detail import enhance
from doublure.models.infer import shared_model, swap_faces

from ._finish import region_mask

MASK_SOURCES = ("predicted", "landmark hull", "both")
TEMPORAL_ALIGN = ("none", "flow")
BLEND_MODES = ("alpha", "seamless")
OUTPUTS = ("composite", "swapped crop", "mask")
DETAIL_MODES = ("auto", "off")
# The detail stage runs where a plate face spans more than this many times the model's crop side: below it the
# model's own rendering already holds about as many pixels as the plate shows.
DETAIL_FROM = 1.25
DIRECTIONS = ("A->B", "A->A")


def parse_tracks(text: str) -> set[int] | None:
    """``"all"`` (or empty) -> None; ``"0, 2"`` -> {0, 2}. Raises ValueError on anything else."""
    text = text.strip().lower()
    if text in ("", "all"):
        return None
    return {int(part) for part in text.replace(" ", "").split(",") if part}


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


def plate_window(from_crop: np.ndarray, res: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The plate rectangle the faces' crops are read from and put back onto, so a 200 px face on a 1080p
    plate costs a 200 px window, not the frame.

    The crops' footprint grows by the mip filter's reach (two pixels of the coarsest pyramid level that
    :func:`doublure.faces.align.warp_affine` samples), and the window's edges sit on that level's grid, so
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


# The plate's motion is measured in the face's box grown by this fraction of its size, at most this many
# pixels on a side (a 1080p close-up's face is resampled: the flow's precision in plate pixels barely drops).
MOTION_MARGIN = 0.2
MOTION_SIDE = 256
MOTION_POINTS = 4096   # flow vectors the similarity is fitted to, evenly spread over the face
FLOW_SIDE = 96          # crop side the residual flow of ``temporal_align`` is measured at (R if larger, <= 256)
FLOW_TRUST_PX = 0.5     # forward-backward disagreement (crop pixels at that side) still trusted fully ...
FLOW_TRUST_REL = 0.1    # ... plus this fraction of the motion; twice that and the neighbour's pixel counts 0
FLOW_TRUST_GREY = 8.0   # mean grey difference (8-bit, 5 px box) of the plate where the flow lands, the same way
MIN_LINK_IOU = 0.1     # box overlap of one frame's face with the next's for them to be one face (as Track)
# Held frames (a frame-rate conversion or pulldown repeats plate frames): a face crop whose mean grey change
# (8-bit, at FLOW_SIDE) from the frame before is under HOLD_GREY and under HOLD_RATIO of the larger change of
# the pairs on either side. Repeats measured on people/ clips (d6, d10, d12, d20): 0.01-0.4, at most 0.19 of
# the pairs around; the smallest changes of shots without repeats: 0.2-0.45 at 0.26-0.8 of their neighbours',
# or 0.68-0.83 at 0.18 (a moving head slowing down for a frame).
HOLD_GREY = 0.5
HOLD_RATIO = 0.2


def is_held(change: float, before: float | None, after: float | None) -> bool:
    """Whether a plate frame repeats the one before it (see HOLD_GREY).

    Args:
        change: mean |grey difference| (8-bit) of the face crop from the frame before to this one.
        before, after: the same for the pair before and the pair after (None where there is none).

    Returns:
        True when ``change`` is under HOLD_GREY and under HOLD_RATIO of the larger neighbouring change: a
        still shot, whose every pair changes little, holds nothing.
    """
    neighbours = [c for c in (before, after) if c is not None]
    return bool(neighbours) and change < HOLD_GREY and change < HOLD_RATIO * max(neighbours)


def _affine3(m: np.ndarray) -> np.ndarray:
    """(2, 3) affine -> (3, 3) homogeneous matrix. (Inverses go through faces.face.invert_affine: a LAPACK
    3x3 inverse cost milliseconds each on the loaded CPU, more than the node's own maths.)"""
    return np.vstack([m, [0.0, 0.0, 1.0]])


def _grey8(plane: torch.Tensor) -> np.ndarray:
    """(H, W) linear grey -> (H, W) uint8 with gamma 2.2: the optical flow needs the same grey in both frames,
    not exact colour. On the host: a crop's few thousand pixels cost less there than five kernel launches."""
    grey = np.clip(plane.float().cpu().numpy(), 0.0, 1.0)
    return (grey ** np.float32(1 / 2.2) * np.float32(255.0) + np.float32(0.5)).astype(np.uint8)


def skin_motion(prev8: np.ndarray, cur8: np.ndarray, region: np.ndarray) -> np.ndarray:
    """The similarity that best explains how the skin moved between two frames: optical flow (OpenCV DIS)
    from ``cur8`` back to ``prev8``, fitted by least squares (Umeyama) over the face region.

    Args:
        prev8: (H, W) uint8 grey, the earlier frame.
        cur8: (H, W) uint8 grey, the later frame.
        region: (H, W) bool, where the face is in ``cur8``.

    Returns:
        (3, 3) float64 map from pixel (x, y) of ``cur8`` to where that skin was in ``prev8``.
    """
    flow = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST).calc(cur8, prev8, None)
    ys, xs = np.nonzero(region)
    if len(xs) < 3:
        return np.eye(3)
    keep = slice(None, None, max(1, len(xs) // MOTION_POINTS))   # a least-squares fit of 4 numbers
    ys, xs = ys[keep], xs[keep]
    points = np.stack([xs, ys], 1).astype(np.float64)
    return _affine3(umeyama_2d(points, points + flow[ys, xs].astype(np.float64)))


def plate_face_motion(prev: torch.Tensor, cur: torch.Tensor, face) -> np.ndarray:
    """:func:`skin_motion` of one face between two plate frames, in plate pixels.

    Args:
        prev: (C, H, W) the plate at the earlier frame (scene-linear working space).
        cur: (C, H, W) the plate at the later frame.
        face: the face at the later frame.

    Returns:
        (3, 3) float64 map from plate pixel (x, y) at the later frame to the same skin at the earlier one.
    """
    h, w = cur.shape[-2:]
    bx0, by0, bx1, by1 = face.box
    grow = MOTION_MARGIN * max(bx1 - bx0, by1 - by0)
    x0, y0 = max(int(bx0 - grow), 0), max(int(by0 - grow), 0)
    x1, y1 = min(int(math.ceil(bx1 + grow)), w), min(int(math.ceil(by1 + grow)), h)
    if x1 - x0 < 8 or y1 - y0 < 8:
        return np.eye(3)
    scale = min(1.0, MOTION_SIDE / max(x1 - x0, y1 - y0))
    size = (max(8, int(round((x1 - x0) * scale))), max(8, int(round((y1 - y0) * scale))))

    def grey(plate: torch.Tensor) -> np.ndarray:
        plane = plate[:3, y0:y1, x0:x1].float().mean(0)[None, None]
        if scale < 1.0:
            plane = F.interpolate(plane, size=(size[1], size[0]), mode="area")
        return _grey8(plane[0, 0])

    sx, sy = size[0] / (x1 - x0), size[1] / (y1 - y0)
    to_window = np.array([[sx, 0.0, -sx * x0], [0.0, sy, -sy * y0], [0.0, 0.0, 1.0]])
    hull_points = (face.landmarks[:468, :2].astype(np.float64) - (x0, y0)) * (sx, sy)
    region = np.zeros((size[1], size[0]), np.uint8)
    cv2.fillConvexPoly(region, cv2.convexHull(np.round(hull_points).astype(np.int32)), 1)
    motion = skin_motion(grey(prev), grey(cur), region.astype(bool))
    return _affine3(invert_affine(to_window[:2])) @ motion @ to_window


def carried_to_crop(frame: int, to_crops: dict[int, np.ndarray], motions: dict[int, np.ndarray]) -> np.ndarray:
    """A face's crop transform at ``frame`` as the mean of its fits at neighbouring frames, each carried to
    ``frame`` by the plate's motion: noisy fits average out, and none lags, because every neighbour's fit
    is moved to where the skin is at ``frame``.

    Args:
        frame: the frame whose transform is wanted.
        to_crops: frame -> (2, 3) the face's fitted plate pixel -> crop unit transform there (frames
            contiguous around ``frame``, which is among them).
        motions: frame a -> (3, 3) map from plate pixels at a to the same skin at a - 1, for every a with
            a and a - 1 in ``to_crops``.

    Returns:
        (2, 3) float64 plate pixel -> crop unit transform at ``frame``.
    """
    to_other = {frame: np.eye(3)}       # plate pixels at frame -> the same skin at other, hop by hop outwards
    other = frame + 1
    while other in to_crops:
        to_other[other] = _affine3(invert_affine(motions[other][:2])) @ to_other[other - 1]
        other += 1
    other = frame - 1
    while other in to_crops:
        to_other[other] = motions[other + 1] @ to_other[other + 1]
        other -= 1
    return np.mean([_affine3(to_crops[f]) @ to_other[f] for f in to_crops], axis=0)[:2]


def crop_grey8(plate: torch.Tensor, to_crop: np.ndarray, side: int) -> np.ndarray:
    """A face's aligned crop of the plate in grey, for the optical flow between crops: the window the crop
    covers, box-filtered to about the crop's scale and sampled bilinearly (a third of the time of the
    anti-aliased :func:`doublure.faces.align.warp_to_crop`, and as good for the flow).

    Args:
        plate: (C, H, W) scene-linear.
        to_crop: (2, 3) plate pixel -> crop unit.
        side: crop side in pixels.

    Returns:
        (side, side) uint8, gamma 2.2 (:func:`_grey8`).
    """
    from_crop = invert_affine(to_crop)
    y0, y1, x0, x1 = plate_window(from_crop[None], side, tuple(plate.shape[-2:]))
    k = max(1, int(affine_scale(from_crop) / side))   # plate px per crop px
    h, w = (y1 - y0) // k, (x1 - x0) // k
    grey = plate[:3, y0:y0 + h * k, x0:x0 + w * k].float().mean(0)[None, None]
    if k > 1:
        grey = F.avg_pool2d(grey, k)
    # crop pixel centre (i + 0.5) / side -> plate pixel -> grid_sample's normalised coordinates of the pooled
    # window (plate pixel centres on integers, as faces.align has them)
    pos = (np.arange(side, dtype=np.float64) + 0.5) / side
    u, v = np.meshgrid(pos, pos)
    x = from_crop[0, 0] * u + from_crop[0, 1] * v + from_crop[0, 2] - x0
    y = from_crop[1, 0] * u + from_crop[1, 1] * v + from_crop[1, 2] - y0
    grid = torch.from_numpy(np.stack([(2 * x + 1) / (k * w) - 1, (2 * y + 1) / (k * h) - 1], -1).astype(np.float32))
    crop = F.grid_sample(grey, upload(grid[None], grey.device), mode="bilinear", padding_mode="border",
                         align_corners=False)
    return _grey8(crop[0, 0])


def crop_flow(a8: np.ndarray, b8: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The residual motion between two aligned crops of one face, both ways, and where it can be trusted.

    Optical flow (OpenCV DIS) from ``a8`` to ``b8`` and back; a pixel's flow is trusted where the two agree
    (forward-backward check: going there and back lands within :data:`FLOW_TRUST_PX` crop pixels, plus
    :data:`FLOW_TRUST_REL` of the motion), where the plate looks the same at both ends (:data:`FLOW_TRUST_GREY`)
    and where it lands inside the other crop. Where something covers the face in one frame only, or the flow
    fails, a check fails.

    Args:
        a8: (S, S) uint8 grey crop.
        b8: (S, S) uint8 grey crop of the same face at another frame.

    Returns:
        (flow a->b, trust a, flow b->a, trust b): flows (S, S, 2) float32 such that pixel x of ``a8`` shows
        the point at x + flow(x) in ``b8``; trusts (S, S) float32 in [0, 1] (1: reliable, 0: not).
    """
    # DIS "medium" with fewer iterations: half its time for 0.03 px more error on a real face at 128 px
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    dis.setGradientDescentIterations(12)
    dis.setVariationalRefinementIterations(2)
    ab, ba = dis.calc(a8, b8, None), dis.calc(b8, a8, None)
    side = a8.shape[0]
    grid = np.stack(np.meshgrid(np.arange(side, dtype=np.float32), np.arange(side, dtype=np.float32)), -1)

    def trust(src8: np.ndarray, dst8: np.ndarray, fw: np.ndarray, bw: np.ndarray) -> np.ndarray:
        to = grid + fw
        there = cv2.remap(np.dstack([bw, dst8.astype(np.float32)]), to[..., 0], to[..., 1], cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)       # the way back and the plate, where the flow lands
        loop = fw + there[..., :2]
        err = cv2.magnitude(loop[..., 0], loop[..., 1]) / (
            FLOW_TRUST_PX + FLOW_TRUST_REL * cv2.magnitude(fw[..., 0], fw[..., 1]))
        differs = cv2.blur(np.abs(src8.astype(np.float32) - there[..., 2]), (5, 5)) / FLOW_TRUST_GREY
        inside = cv2.inRange(to, (0.0, 0.0), (side - 1.0, side - 1.0)) > 0
        return (np.clip(2.0 - np.maximum(err, differs), 0.0, 1.0) * inside).astype(np.float32)

    return ab, trust(a8, b8, ab, ba), ba, trust(b8, a8, ba, ab)


def flow_warp(image: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """``image`` sampled at x + flow(x) (bilinear; the border repeated).

    Args:
        image: (C, R, R), or (N, C, R, R) with one flow each.
        flow: (R, R, 2), or (N, R, R, 2), in pixels of ``image``, same device.

    Returns:
        The image moved onto the flow's frame, shaped as ``image``.
    """
    batched = image.dim() == 4
    image, flow = (image, flow) if batched else (image[None], flow[None])
    r = image.shape[-1]
    # pixel x + flow(x) in grid_sample's normalised coordinates: (2 (x + flow) + 1) / r - 1
    grid = torch.add(_pixel_centres(r, flow.device, flow.dtype), flow, alpha=2.0 / r)
    out = F.grid_sample(image.float(), grid, mode="bilinear", padding_mode="border", align_corners=False)
    return out if batched else out[0]


@functools.lru_cache(maxsize=16)
def _pixel_centres(r: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(R, R, 2) grid_sample coordinates (x, y) of an R x R image's pixel centres, made once per size and
    device (five kernels a call on a GPU, and the shot graph warps about ten flows a frame)."""
    pos = (2.0 * torch.arange(r, dtype=torch.float64) + 1.0) / r - 1.0
    return upload(torch.stack(torch.meshgrid(pos, pos, indexing="xy"), -1).to(dtype), device)


def compose_flows(first: tuple[torch.Tensor, torch.Tensor], then: tuple[torch.Tensor, torch.Tensor]):
    """The flow (and trust) from crop a to crop c through crop b: a->b followed by b->c, each (flow (R, R, 2),
    trust (R, R)) as :func:`crop_flow` gives them. A pixel is trusted as much as both of its hops."""
    flow, trust = first
    hop = flow_warp(torch.cat([then[0].permute(2, 0, 1), then[1][None]]), flow)
    return flow + hop[:2].permute(1, 2, 0), trust * hop[2]


def aligned_blend(decoded, weights, flows) -> tuple[torch.Tensor, torch.Tensor]:
    """The temporal blend of decoded faces with each neighbour moved onto this frame's crop first.

    Args:
        decoded: [(rgb (3, R, R), mask (1, R, R))] per offset.
        weights: per offset, summing to 1 (:func:`temporal_weights`).
        flows: per offset, None for this frame, else (flow (R, R, 2), trust (R, R)) from this frame's crop to
            the neighbour's (:func:`crop_flow` at the model's resolution).

    Returns:
        rgb (3, R, R), mask (1, R, R): per pixel, the neighbours' weights scaled by their trust and
        renormalised (this frame always counts fully).
    """
    this = next(i for i, f in enumerate(flows) if f is None)
    others = [i for i, f in enumerate(flows) if f is not None]
    total = torch.cat(decoded[this]).float() * float(weights[this])
    weight = float(weights[this])
    if others:
        # whole stacks, not a cat and a multiply per neighbour: a dozen neighbours, two dozen kernels fewer
        neighbours = torch.cat([torch.stack([decoded[i][0] for i in others]),
                                torch.stack([decoded[i][1] for i in others])], 1)          # (N, 4, R, R)
        moved = flow_warp(neighbours, torch.stack([flows[i][0] for i in others]))
        scale = upload(torch.tensor([float(weights[i]) for i in others], dtype=torch.float32), moved.device)
        w = (torch.stack([flows[i][1] for i in others]) * scale.view(-1, 1, 1))[:, None]   # (N, 1, R, R)
        total = total + (w * moved).sum(0)
        weight = weight + w.sum(0)
    total = total / weight
    return total[:3], total[3:]


def placed_face(face: Face, to_crop: np.ndarray) -> Face:
    """``face`` moved with its crop: landmarks, irises and box carried by the similarity from its fitted crop
    transform to ``to_crop``. The landmarks lag a fast head as much as the fit they came with, so the
    placed face is where the stabilised swap is, and the nodes below (their face regions) find it there.

    Args:
        face: a face with its fitted ``to_crop``.
        to_crop: (2, 3) the plate pixel -> crop unit transform the face is placed by.

    Returns:
        The Face with ``to_crop``, its inverse, and every pixel quantity moved (depths and radii scaled).
    """
    from_crop = invert_affine(to_crop)
    move = _affine3(from_crop) @ _affine3(face.to_crop)        # fitted plate pixel -> placed plate pixel
    scale = affine_scale(move[:2])
    landmarks = face.landmarks.astype(np.float64)
    landmarks[:, :2] = apply_affine(move[:2], landmarks[:, :2])
    landmarks[:, 2] *= scale
    iris = face.iris.astype(np.float64)
    iris[:, :2] = apply_affine(move[:2], iris[:, :2])
    iris[:, 2] *= scale
    return dataclasses.replace(face, landmarks=landmarks, iris=iris, box=box_from_landmarks(landmarks),
                               to_crop=to_crop, from_crop=from_crop)


def temporal_weights(offsets, reach: int) -> np.ndarray:
    """Triangular weights (reach + 1 - |d|) of frame offsets d within +-reach, normalised to sum 1."""
    w = reach + 1.0 - np.abs(np.asarray(list(offsets), dtype=np.float64))
    return w / w.sum()


# (plate hash at a - 1, plate hash at a, track id) -> the face's motion (plate_face_motion);
# (model digest, plate hash, track id, to_crop, working space, device) -> the decoded face (sRGB rgb, mask);
# ((plate hash, track id, to_crop) at a, the same at b, R, device) -> flow and trust from a's crop to b's, and
# (plate hash, track id, to_crop, side) -> the grey plate crop it is measured on.
# Neighbouring frames' outputs read the same frame pairs and decode the same crops: each is done once. A
# sequential render needs 2 * temporal + 2 decoded faces and grey crops per face at a time (the window and the
# frame it slides to), and twice that many flows (each hop both ways): ``compute`` reserves that much, since
# an LRU smaller than the window misses on every frame. At 1024 px a decoded face is 16 MB.
_motion_memo, _decode_memo, _flow_memo, _grey_memo = Memo(256), Memo(24), Memo(64), Memo(64)
_change_memo = Memo(256)   # a float per frame pair and track (held-frame tests)
_stabilised_memo = Memo(32)   # a face per frame and track: each frame's neighbours ask for it again


def _to_encoding(crops: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Colour-convert a (N, 3, R, R) batch through the engine's (C, H, W) conversion."""
    n, c, r, _ = crops.shape
    planes = crops.permute(1, 0, 2, 3).reshape(c, n * r, r).contiguous()
    out = engine_colour.convert(planes, src, dst)
    return out.reshape(c, n, r, r).permute(1, 0, 2, 3)


@register_node
class SwapModel(Node):
    """Replace the plate's faces with an identity model's target actor."""

    type_name = "SwapModel"
    version = 4
    category = "Face"
    inputs = (Port("plate", "Image"),)
    knob_specs = (
        K.File("model", default="", pattern="*.dbm *.zip", label="model",
               tooltip="The identity model (.dbm) from `doublure train`."),
        K.String("tracks", default="all", tooltip="Face tracks to replace: 'all' or comma-separated track ids."),
        K.Enum("direction", DIRECTIONS, default="A->B",
               tooltip="A->B: render the plate actor (A) as the model's target actor (B). A->A: the plate "
                       "actor as the model draws her, to check what it learned of her expression and light "
                       "apart from the identity change (where A->A follows a blink or an open mouth and "
                       "A->B does not, the target's faceset lacks that expression)."),
        K.Enum("mask_source", MASK_SOURCES, default="both", label="mask source",
               tooltip="The model's predicted mask, the landmark face hull, or both multiplied."),
        K.Float("erode", default=0.0, min=-20.0, max=20.0, soft_min=-5.0, soft_max=5.0, label="erode (% of face)",
                tooltip="Shrink (positive) or grow (negative) the mask, in percent of the face crop."),
        K.Float("feather", default=1.5, min=0.0, max=20.0, soft_max=5.0, label="feather (% of face)",
                tooltip="Soften the mask edge (Gaussian sigma in percent of the face crop)."),
        K.Bool("plate_mouth", default=False, label="plate mouth",
               tooltip="Keep the plate's mouth opening (teeth, tongue, the dark inside): the new face is held "
                       "out inside the plate face's inner lip line. A model that never saw its actor's mouth "
                       "open that wide draws a smaller, softer opening."),
        K.Enum("blend", BLEND_MODES, default="alpha",
               tooltip="alpha: over in linear light; seamless: also cancel the colour step along the edge."),
        K.Int("stabilise", default=4, min=0, max=12, soft_max=8, animatable=False, label="stabilise (frames)",
              tooltip="Average the face fits of +- this many frames, carried along by the plate's optical flow, "
                      "into each frame's crop: the swap sticks to the moving skin. 0: the tracked fit alone."),
        K.Int("temporal", default=6, min=0, max=8, soft_max=8, animatable=False, label="temporal (frames)",
              tooltip="Blend the decoded faces of +- this many frames in the aligned crop (triangular weights): "
                      "less flicker. 0: this frame's face alone."),
        K.Bool("holds", default=True, label="follow held frames",
               tooltip="Where the plate repeats a frame (a frame-rate conversion, pulldown), repeat the swap: "
                       "the face holds with the head instead of drifting on through the repeated frames with "
                       "its neighbours' average. Only with stabilise or temporal above 0."),
        K.Enum("temporal_align", TEMPORAL_ALIGN, default="flow", label="temporal align",
               tooltip="none: blend the neighbours' faces as decoded in their crops; flow: first move each "
                       "onto this frame's face by the plate's optical flow (head turn, expression), leaving "
                       "out its pixels where the flow fails (occlusion): less ghosting."),
        K.Enum("detail", DETAIL_MODES, default="auto",
               tooltip="auto: where a plate face is larger than the model's crop and the model has a detail "
                       "stage (`doublure train --detail`), draw the face at the detail stage's size, with the "
                       "detail of the target's reference faces; off: the model's rendering alone, enlarged."),
        K.Float("detail_amount", default=1.0, min=0.0, max=1.0, label="detail amount",
                tooltip="How much of the detail stage's added detail to keep: 1 all of it, 0 the model's "
                        "rendering enlarged to the same size (skin, creases and lashes fade with it)."),
        K.Enum("output", OUTPUTS, default="composite",
               tooltip="composite: the plate with the new faces; swapped crop: the model's output crops side "
                       "by side; mask: where the new faces go."),
    )

    # -- hashing ------------------------------------------------------------------------------------
    def _model_identity(self) -> str:
        path = self.path("model")
        if not path:
            return "no model"
        try:
            return model_digest(path)
        except DoublureError as exc:   # compute raises it with the node's name
            return f"unreadable: {exc}"

    def _reach(self, frame: int) -> tuple[int, int]:
        """(stabilise, temporal) frames at ``frame``."""
        return int(self.value("stabilise", frame)), int(self.value("temporal", frame))

    def _follows_holds(self, frame: int) -> bool:
        return bool(self.value("holds", frame)) and sum(self._reach(frame)) > 0

    def _read_range(self, frame: int) -> tuple[int, int]:
        """(first, last) plate frame the output at ``frame`` reads: +-(stabilise + temporal) around the frame
        it is computed at, which a held frame moves back by up to MAX_REPEATS. Telling a held frame reads the
        pairs before and after each frame it steps back over, within that (holds need a reach of 1 or more)."""
        reach = sum(self._reach(frame))
        back = MAX_REPEATS if self._follows_holds(frame) else 0
        return frame - back - reach, frame + reach

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(self._model_identity())
        h.update(ctx.working_space).update(engine_colour.config_cache_id())
        first, last = self.graph.settings["first"], self.graph.settings["last"]
        lo, hi = self._read_range(ctx.frame)
        for f in range(max(lo, first), min(hi, last) + 1):
            if f != ctx.frame:
                h.update(f).update(self.input_hash(0, ctx.at(f)))   # plate pixels and faces around the frame

    # -- compute ------------------------------------------------------------------------------------
    def _model_path(self) -> str:
        path = self.path("model")
        if not path:
            raise DoublureError(f"{self.name}: no model file set (knob 'model')")
        return path

    def consent_problems(self, use: str) -> tuple[str, list[str]]:
        """(the model's name, what its rights record lacks for the project's declared ``use``): the render's
        consent check (``engine.provenance.consent``)."""
        path = self._model_path()
        meta = read_meta(path)
        return meta.get("name") or path, consent_problems(meta.get("rights"), use)

    def _provenance(self, meta: dict, digest: str, path: str, swapped: int, direction: str) -> dict:
        problems = rights_problems(meta.get("rights"))
        out = {"doublure/synthetic_face": swapped > 0, "doublure/synthetic_faces": swapped,
               "doublure/swap_direction": direction,
               "doublure/model": meta.get("name") or path, "doublure/model_digest": digest,
               "doublure/rights": rights_reference(meta.get("rights"))}
        if problems:
            out["doublure/rights_warning"] = "; ".join(problems)
        return out

    def _linked(self, inputs, frame: int, face):
        """The face of ``face``'s track at ``frame`` (next to ``face``'s frame), or None: none there, outside
        the frame range, or a face of that id whose box does not overlap ``face``'s (FaceDetect without its
        Track analysis numbers a frame's faces by size, so the id can pass to another face)."""
        first, last = self.graph.settings["first"], self.graph.settings["last"]
        if not first <= frame <= last:
            return None
        found = next((o for o in inputs.get(0, frame=frame).faces if o.track_id == face.track_id), None)
        return found if found is not None and box_iou(found.box, face.box) >= MIN_LINK_IOU else None

    def _track(self, inputs, frame: int, face, reach: int) -> dict:
        """frame -> the face of ``face``'s track, over the frames within ``reach`` of ``frame`` where the track
        runs unbroken through it (:meth:`_linked` ends the run on a side)."""
        near = {frame: face}
        for step in (-1, 1):
            previous = face
            for f in range(frame + step, frame + step * (reach + 1), step):
                previous = self._linked(inputs, f, previous)
                if previous is None:
                    break
                near[f] = previous
        return near

    def _change(self, ctx: EvalContext, inputs, frame: int, face) -> float:
        """Mean |grey difference| (8-bit) from the plate at ``frame`` - 1 to ``frame`` inside ``face``'s crop
        (``face`` at ``frame``; both frames through its transform, at FLOW_SIDE; remembered)."""
        key = (self.input_hash(0, ctx.at(frame - 1)), self.input_hash(0, ctx.at(frame)), face.track_id,
               face.to_crop.tobytes())
        hit = _change_memo.get(key)
        if hit is None:
            a, b = (crop_grey8(inputs.get(0, frame=f).tensor, face.to_crop, FLOW_SIDE) for f in (frame - 1, frame))
            hit = _change_memo.put(key, float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()))
        return hit

    def _held_from(self, ctx: EvalContext, inputs, face) -> tuple[int, Face]:
        """(frame, face there) the swap at ``ctx.frame`` is computed at: the frame this one repeats (up to
        MAX_REPEATS frames back, :func:`is_held`), else this frame and ``face``."""
        frame, here = ctx.frame, face
        for _ in range(MAX_REPEATS):
            before = self._linked(inputs, frame - 1, here)
            if before is None:
                break
            earlier = self._linked(inputs, frame - 2, before)
            later = self._linked(inputs, frame + 1, here)
            if not is_held(self._change(ctx, inputs, frame, here),
                           self._change(ctx, inputs, frame - 1, before) if earlier is not None else None,
                           self._change(ctx, inputs, frame + 1, later) if later is not None else None):
                break
            frame, here = frame - 1, before
        return frame, here

    def _motion(self, ctx: EvalContext, inputs, frame: int, face) -> np.ndarray:
        """plate_face_motion from frame - 1 to ``frame`` (remembered)."""
        key = (self.input_hash(0, ctx.at(frame - 1)), self.input_hash(0, ctx.at(frame)), face.track_id)
        hit = _motion_memo.get(key)
        if hit is not None:
            return hit
        prev, cur = inputs.get(0, frame=frame - 1), inputs.get(0, frame=frame)
        return _motion_memo.put(key, plate_face_motion(prev.tensor, cur.tensor, face))

    def _stabilised(self, ctx: EvalContext, inputs, frame: int, near: dict, stabilise: int):
        """The face at ``frame`` (one of ``near``) with its crop transform carried from the fits of +-stabilise
        frames (:func:`carried_to_crop`)."""
        face = near[frame]
        around = [f for f in range(frame - stabilise, frame + stabilise + 1) if f in near]
        if len(around) < 2:
            return face
        # The plate and its faces at every frame read (their input hashes) decide the result, whichever frame
        # asks: a frame's temporal blend asks for each neighbour's, so a shot computes each once, not ~13 times.
        key = (face.track_id, frame, tuple(self.input_hash(0, ctx.at(f)) for f in around))
        hit = _stabilised_memo.get(key)
        if hit is not None:
            return hit
        to_crops = {f: near[f].to_crop for f in around}
        motions = {f: self._motion(ctx, inputs, f, near[f]) for f in around if f - 1 in to_crops}
        return _stabilised_memo.put(key, placed_face(face, carried_to_crop(frame, to_crops, motions)))

    @staticmethod
    def _plate_crops(plate: torch.Tensor, to_crop: np.ndarray, res: int) -> torch.Tensor:
        """(N, 3, R, R) linear aligned crops of a (C, H, W) plate, read from the window the faces cover."""
        from_crop = np.stack([invert_affine(m) for m in to_crop])
        y0, y1, x0, x1 = plate_window(from_crop, res, tuple(plate.shape[-2:]))
        to_crop = to_crop.copy()
        to_crop[:, :, 2] += to_crop[:, :, :2] @ np.array([x0, y0], dtype=np.float64)
        return warp_to_crop(plate[:3, y0:y1, x0:x1].float(), to_crop, res, padding_mode="border")

    def _decoded(self, ctx: EvalContext, inputs, loaded, direction: str, frame: int,
                 face) -> tuple[torch.Tensor, torch.Tensor]:
        """The model's face (sRGB (3, R, R), mask (1, R, R)) decoded in ``direction`` from the plate at ``frame``
        through ``face``'s crop transform (remembered: neighbouring frames' outputs blend the same decoded
        faces)."""
        key = (loaded.digest, direction, self.input_hash(0, ctx.at(frame)), face.track_id, face.to_crop.tobytes(),
               ctx.working_space, str(ctx.device))
        hit = _decode_memo.get(key)
        if hit is not None:
            return hit
        plate = inputs.get(0, frame=frame)
        crop = self._plate_crops(plate.tensor, face.to_crop[None], loaded.model.cfg.res)
        model_in = _to_encoding(crop, ctx.working_space, "srgb").clamp(0.0, 1.0)
        rgb, mask = swap_faces(loaded, model_in.to(ctx.device), direction=direction)
        return _decode_memo.put(key, (rgb[0], mask[0]))

    def _crop_flow(self, ctx: EvalContext, inputs, res: int, a: int, face_a, b: int, face_b):
        """(flow (R, R, 2), trust (R, R)) on ``ctx.device`` from ``face_a``'s crop of the plate at frame ``a``
        to ``face_b``'s at ``b`` (:func:`crop_flow`, measured at :data:`FLOW_SIDE` or R up to 256 and
        resampled to R; remembered both ways)."""
        side = max(FLOW_SIDE, min(res, 256))
        ka = (self.input_hash(0, ctx.at(a)), face_a.track_id, face_a.to_crop.tobytes())
        kb = (self.input_hash(0, ctx.at(b)), face_b.track_id, face_b.to_crop.tobytes())
        hit = _flow_memo.get((ka, kb, res, str(ctx.device)))
        if hit is not None:
            return hit
        greys = []
        for f, face, k in ((a, face_a, ka), (b, face_b, kb)):
            grey = _grey_memo.get((k, side))
            if grey is None:
                grey = _grey_memo.put((k, side), crop_grey8(inputs.get(0, frame=f).tensor, face.to_crop, side))
            greys.append(grey)
        ab, trust_a, ba, trust_b = crop_flow(*greys)

        def at_res(flow: np.ndarray, trust: np.ndarray):
            both = torch.from_numpy(np.concatenate([flow * (res / side), trust[..., None]], -1)).permute(2, 0, 1)
            if side != res:
                both = F.interpolate(both[None], size=(res, res), mode="area" if side > res else "bilinear")[0]
            both = upload(both.permute(1, 2, 0).contiguous(), ctx.device)
            return both[..., :2], both[..., 2]

        _flow_memo.put((kb, ka, res, str(ctx.device)), at_res(ba, trust_b))
        return _flow_memo.put((ka, kb, res, str(ctx.device)), at_res(ab, trust_a))

    def _neighbour_flows(self, ctx: EvalContext, inputs, res: int, frame: int, around: dict) -> dict:
        """offset -> (flow, trust) from ``frame``'s crop to the neighbour's at that offset (None at 0), for
        the faces ``around`` it (offset -> placed face, contiguous offsets): hop by hop outwards, so a
        sequential render measures one new pair of crops per frame."""
        flows = {0: None}
        for step in (-1, 1):
            d = step
            while d in around:
                hop = self._crop_flow(ctx, inputs, res, frame + d - step, around[d - step], frame + d, around[d])
                flows[d] = hop if d == step else compose_flows(flows[d - step], hop)
                d += step
        return flows

    def _detail_wanted(self, loaded, faces, frame: int) -> bool:
        """Whether the model's detail stage draws these faces: it has one, the knob allows it and a face spans
        more plate pixels than :data:`DETAIL_FROM` times the model's crop."""
        if loaded.detail is None or self.value("detail", frame) == "off":
            return False
        res = loaded.model.cfg.res
        return any(1.0 / affine_scale(f.to_crop) > DETAIL_FROM * res for f in faces)

    def compute(self, ctx: EvalContext, inputs) -> Image:
        plate = inputs.get(0)
        path = self._model_path()
        output = self.value("output", ctx.frame)
        direction = self.value("direction", ctx.frame)
        try:
            tracks = parse_tracks(self.value("tracks", ctx.frame))
        except ValueError:
            raise DoublureError(f"{self.name}: knob 'tracks' must be 'all' or comma-separated track ids, "
                                f"got {self.value('tracks', ctx.frame)!r}") from None
        faces = [f for f in plate.faces if tracks is None or f.track_id in tracks]
        try:
            if not faces:
                meta, digest = read_meta(path), model_digest(path)
                metadata = dict(plate.metadata, **self._provenance(meta, digest, path, 0, direction))
                if output == "mask":
                    return plate.replace(tensor=torch.zeros_like(plate.tensor[:1]).expand(3, -1, -1).contiguous(),
                                         channels=("R", "G", "B"), metadata=metadata)
                return plate.replace(metadata=metadata)
            loaded = shared_model(path, ctx.device)
        except ModelFileError as exc:
            raise DoublureError(f"{self.name}: {exc}") from None
        face_type = loaded.meta.get("face_type", "whole_face")
        if any(f.face_type != face_type for f in faces):
            raise DoublureError(f"{self.name}: model {path} was trained on {face_type} crops but the faces are "
                                f"{faces[0].face_type}; set FaceDetect's face type to {face_type}")
        ctx.check_cancelled()
        res = loaded.model.cfg.res
        stabilise, temporal = self._reach(ctx.frame)
        align = self.value("temporal_align", ctx.frame)
        window = (2 * temporal + 2) * len(faces)
        _decode_memo.reserve(window)
        _grey_memo.reserve(window)
        _flow_memo.reserve(2 * window)
        _stabilised_memo.reserve(window)
        # each face is computed at the frame this one repeats, if it does: a held plate frame holds the swap
        keys = [self._held_from(ctx, inputs, f) if self._follows_holds(ctx.frame) else (ctx.frame, f)
                for f in faces]
        tracks_near = [self._track(inputs, frame, f, stabilise + temporal) for frame, f in keys]
        faces = [self._stabilised(ctx, inputs, frame, near, stabilise) for (frame, _), near in zip(keys, tracks_near)]
        to_crop = np.stack([f.to_crop for f in faces])
        from_crop = np.stack([f.from_crop for f in faces])
        # Work in the plate window the faces cover: the same affines with the window's origin moved to 0.
        y0, y1, x0, x1 = plate_window(from_crop, res, (plate.height, plate.width))
        from_crop[:, :, 2] -= np.array([x0, y0], dtype=np.float64)
        swaps, masks = [], []
        for face, near, (frame, _) in zip(faces, tracks_near, keys):
            offsets = [d for d in range(-temporal, temporal + 1) if frame + d in near]
            around = {d: face if d == 0 else self._stabilised(ctx, inputs, frame + d, near, stabilise)
                      for d in offsets}
            decoded = [self._decoded(ctx, inputs, loaded, direction, frame + d, around[d]) for d in offsets]
            weights = temporal_weights(offsets, temporal)
            if align == "flow" and len(offsets) > 1:
                flows = self._neighbour_flows(ctx, inputs, res, frame, around)
                rgb, m = aligned_blend(decoded, weights, [flows[d] for d in offsets])
            else:
                rgb = sum(float(w) * rgb for w, (rgb, _) in zip(weights, decoded))
                m = sum(float(w) * m for w, (_, m) in zip(weights, decoded))
            swaps.append(rgb)
            masks.append(m)
        ctx.check_cancelled()
        swap, pred_mask = torch.stack(swaps), torch.stack(masks)
        if self._detail_wanted(loaded, faces, ctx.frame):
            # after the temporal blend, so the added detail is drawn once per frame on the steadied face
            res = loaded.detail.cfg.out_res
            amount = float(self.value("detail_amount", ctx.frame))
            detailed = enhance(loaded.detail, swap)
            if amount < 1.0:   # the enlargement is made only to fade towards
                detailed = torch.lerp(F.interpolate(swap, size=(res, res), mode="bilinear", align_corners=False),
                                      detailed, amount)
            swap = detailed
            pred_mask = F.interpolate(pred_mask, size=(res, res), mode="bilinear", align_corners=False)
        swap = _to_encoding(swap, "srgb", ctx.working_space).to(plate.device)
        hull = torch.stack([render_crop_mask(f, "face_hull", res, device=swap.device) for f in faces])
        mask = crop_masks(pred_mask.to(swap.device), hull, self.value("mask_source", ctx.frame),
                          self.value("erode", ctx.frame) * res / 100.0, self.value("feather", ctx.frame) * res / 100.0)
        if self.value("blend", ctx.frame) == "seamless":
            swap = seamless_correction(self._plate_crops(plate.tensor, to_crop, res), swap, mask)
        metadata = dict(plate.metadata, **self._provenance(loaded.meta, loaded.digest, path, len(faces), direction))
        if output == "swapped crop":
            tiles = torch.cat(list(swap), dim=2)                                             # (3, R, N R)
            return Image(tiles.to(plate.dtype).contiguous(), metadata=metadata)

        placed, _ = warp_from_crop(torch.cat([swap * mask, mask], 1), from_crop, (y1 - y0, x1 - x0))
        if self.value("plate_mouth", ctx.frame):
            # drawn at the plate's resolution (the crop holds the opening in a few of its pixels), its edge
            # as soft as the new face's own detail there: half a crop pixel. The mask's feather would be
            # wider than a mouth's opening, and the plate's teeth would only show through half.
            for i, face in enumerate(faces):
                opening = region_mask(face, "mouth_inner", (y0, y1, x0, x1), placed.device,
                                      feather=0.5 * affine_scale(face.from_crop) / res)
                keep = 1.0 - opening
                # the blur's weights sum to 1 within float rounding: its core is the plate, bit for bit
                placed[i] *= torch.where(keep < 1e-6, 0.0, keep)
        # what stands in front of a face (the Occlusion node's matte on this frame's plate) keeps the plate
        in_front = {f.track_id: f for f in plate.faces}
        for i, face in enumerate(faces):
            placed[i] *= 1.0 - occlusion_in_window(in_front.get(face.track_id, face), (y0, y1, x0, x1), placed.device)
        swapped = {f.track_id: dataclasses.replace(f, repeats=ctx.frame - frame,
                                                   coverage=Coverage((y0, y1, x0, x1), placed[i, 3:].clone()))
                   for i, (f, (frame, _)) in enumerate(zip(faces, keys))}
        out_faces = [swapped.get(f.track_id, f) for f in plate.faces]
        if output == "mask":
            alpha = torch.zeros_like(plate.tensor[:1], dtype=placed.dtype)
            window_alpha = alpha[:, y0:y1, x0:x1]
            for i in range(placed.shape[0]):   # 'over' accumulation: a tiny alpha stays non-zero
                window_alpha.copy_(window_alpha + placed[i, 3:] * (1.0 - window_alpha))
            return plate.replace(tensor=alpha.expand(3, -1, -1).to(plate.dtype).contiguous(),
                                 channels=("R", "G", "B"), metadata=metadata, faces=out_faces)
        # only the faces' window is composited; the rest of the frame stays the plate's, shared (Image.paste)
        window = plate.window((y0, y1, x0, x1)).to(torch.float32, copy=True)
        alpha_index = plate.channels.index("A") if "A" in plate.channels else None
        for i in range(placed.shape[0]):
            colour, alpha = placed[i, :3], placed[i, 3:]
            inside = alpha > 0
            # only where the face lands: elsewhere the plate's values are kept bit for bit
            window[:3] = torch.where(inside, window[:3] * (1.0 - alpha) + colour, window[:3])
            if alpha_index is not None:
                a = window[alpha_index:alpha_index + 1]
                a.copy_(torch.where(inside, a * (1.0 - alpha) + alpha, a))
        return plate.replace(metadata=metadata, faces=out_faces).paste((y0, y1, x0, x1), window.to(plate.dtype))


__all__ = ["SwapModel", "aligned_blend", "carried_to_crop", "compose_flows", "crop_flow", "crop_grey8", "crop_masks",
           "flow_warp", "is_held", "parse_tracks", "placed_face", "plate_face_motion", "plate_window",
           "seamless_correction", "skin_motion", "temporal_weights"]

"""Face-space temporal work: how the skin moved between plate frames, the fitted crop transform carried along
it, the optical flow between two aligned crops of a face, held (repeated) plate frames, and the temporal
blend of decoded faces. SwapModel's ``stabilise``, ``temporal``, ``temporal_align`` and ``holds`` are made of
these (bench/RESULTS.md, 2026-11-29).

The tracker's smoothed landmark fit lags a fast-moving head by several pixels and disagrees with the skin's
own motion by about a pixel even on a still one, so a swap placed by it swims on the skin. The face fits of
+-N frames carried to a frame by the plate's optical flow inside the face (a similarity per frame pair) and
averaged (:func:`carried_to_crop`) remove the fit's noise without the filter's lag. Once the transform
follows the skin, the same crop pixel is the same point of the face, and the decoded faces of +-N frames
blend there (:func:`temporal_weights`); :func:`aligned_blend` first moves each neighbour's face onto this
frame's by the flow between the two crops (:func:`crop_flow`) and leaves out its pixels where that flow is
not to be trusted. Footage converted to another frame rate repeats frames; :func:`is_held` finds them.

:class:`PlateFaces` reads the plate and its faces at the frames around one (through the caller's functions,
so it needs no node) and remembers what neighbouring frames' outputs ask for again.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Callable

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine.cache import Memo
from doublure.engine.device import upload
from doublure.engine.image import Image

from .align import plate_window, umeyama_2d
from .face import MAX_REPEATS, Face, affine_scale, invert_affine
from .track import LINK_IOU, box_iou

# The plate's motion is measured in the face's box grown by this fraction of its size, at most this many
# pixels on a side (a 1080p close-up's face is resampled: the flow's precision in plate pixels barely drops).
MOTION_MARGIN = 0.2
MOTION_SIDE = 256
MOTION_POINTS = 4096   # flow vectors the similarity is fitted to, evenly spread over the face
FLOW_SIDE = 96          # crop side a face's change from frame to frame is measured at (held frames)
# crop sides the residual flow between two crops of a face (``temporal_align``, the references' layout) is measured
# at: the faces' size on the plate, rounded to 32, within these (and R if larger, up to 256). Landmarks carried
# over six hops of a 96 px flow landed off the skin they were on, and the references drawn on them swam against
# a 230-250 px plate face's skin: after flow 1.40 -> 1.29 of the plate's change at 192 (people/d10), 1.36 -> 1.25
# (d11), 1.31 -> 1.22 (d6); 256 gained nothing more. A pair costs 3 CPU-ms at 96, 11 at 192.
CROP_FLOW_SIDES = (96, 192)
FLOW_TRUST_PX = 0.5     # forward-backward disagreement (crop pixels at that side) still trusted fully ...
FLOW_TRUST_REL = 0.1    # ... plus this fraction of the motion; twice that and the neighbour's pixel counts 0
FLOW_TRUST_GREY = 8.0   # mean grey difference (8-bit, 5 px box) of the plate where the flow lands, the same way
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


def crop_flow_side(res: int, plate_side: float) -> int:
    """The side two crops of a face are compared at (:func:`crop_flow`): the crops' size on the plate
    (``plate_side`` pixels) rounded to 32, within :data:`CROP_FLOW_SIDES`, or ``res`` up to 256 where larger."""
    return max(int(np.clip(32 * round(plate_side / 32), *CROP_FLOW_SIDES)), min(res, 256))


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


_centres_memo = Memo(16)   # (R, device, dtype) -> the grid: 8 MB at 1024 px, so under the memo budgets


def _pixel_centres(r: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(R, R, 2) grid_sample coordinates (x, y) of an R x R image's pixel centres, made once per size and
    device (five kernels a call on a GPU, and the shot graph warps about ten flows a frame). Shared: read it,
    never write it."""
    key = (r, str(device), dtype)
    grid = _centres_memo.get(key)
    if grid is None:
        pos = (2.0 * torch.arange(r, dtype=torch.float64) + 1.0) / r - 1.0
        grid = _centres_memo.put(key, upload(torch.stack(torch.meshgrid(pos, pos, indexing="xy"), -1).to(dtype),
                                             device))
    return grid


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
    # the transforms as given, not composed through the fit (whose rounding would move the memo keys); the
    # plate's pixels do not move with the placement, so the mattes on them (coverage, occlusion) still hold
    return dataclasses.replace(face.moved(move[:2]), to_crop=to_crop, from_crop=from_crop,
                               coverage=face.coverage, occlusion=face.occlusion)


def temporal_weights(offsets, reach: int) -> np.ndarray:
    """Triangular weights (reach + 1 - |d|) of frame offsets d within +-reach, normalised to sum 1."""
    w = reach + 1.0 - np.abs(np.asarray(list(offsets), dtype=np.float64))
    return w / w.sum()


# Neighbouring frames' outputs read the same frame pairs and measure the same crops: each is done once.
# (plate hash at a - 1, plate hash at a, track id) -> the face's motion (plate_face_motion);
# ((plate hash, track id, to_crop) at a, the same at b, R, device) -> flow and trust from a's crop to b's, and
# (plate hash, track id, to_crop, side) -> the grey plate crop it is measured on. A sequential render needs
# 2 * temporal + 2 grey crops per face at a time (the window and the frame it slides to), and twice that many
# flows (each hop both ways): :meth:`PlateFaces.reserve` sizes them, since an LRU smaller than the window
# misses on every frame.
_motion_memo, _flow_memo, _grey_memo = Memo(256), Memo(64), Memo(64)
_change_memo = Memo(256)   # a float per frame pair and track (held-frame tests)
_stabilised_memo = Memo(32)   # a face per frame and track: each frame's neighbours ask for it again


class PlateFaces:
    """The plate and its faces at the frames around one, for the temporal work on a face: following its track,
    telling held frames, stabilising its crop transform and measuring the flow between its crops. What it
    measures is remembered by the plate hashes it was measured on, so neighbouring frames share it.

    Args:
        plate_at: frame -> the plate Image there (its ``faces`` included).
        hash_at: frame -> the plate's hash there (pixels and faces).
        frames: (first, last) frames of the shot; nothing outside is read.
    """

    def __init__(self, plate_at: Callable[[int], Image], hash_at: Callable[[int], str],
                 frames: tuple[int, int]) -> None:
        self.plate_at, self.hash_at, self.frames = plate_at, hash_at, frames

    @staticmethod
    def reserve(faces: int, temporal: int) -> None:
        """Size the memos to a sequential render's working set of ``faces`` faces blended over +-``temporal``."""
        window = (2 * temporal + 2) * faces
        _grey_memo.reserve(window)
        _flow_memo.reserve(2 * window)
        _stabilised_memo.reserve(window)

    def linked(self, frame: int, face: Face) -> Face | None:
        """The face of ``face``'s track at ``frame`` (next to ``face``'s frame), or None: none there, outside
        the frame range, or a face of that id whose box does not overlap ``face``'s (FaceDetect without its
        Track analysis numbers a frame's faces by size, so the id can pass to another face)."""
        first, last = self.frames
        if not first <= frame <= last:
            return None
        found = next((o for o in self.plate_at(frame).faces if o.track_id == face.track_id), None)
        return found if found is not None and box_iou(found.box, face.box) >= LINK_IOU else None

    def track(self, frame: int, face: Face, reach: int) -> dict[int, Face]:
        """frame -> the face of ``face``'s track, over the frames within ``reach`` of ``frame`` where the track
        runs unbroken through it (:meth:`linked` ends the run on a side)."""
        near = {frame: face}
        for step in (-1, 1):
            previous = face
            for f in range(frame + step, frame + step * (reach + 1), step):
                previous = self.linked(f, previous)
                if previous is None:
                    break
                near[f] = previous
        return near

    def change(self, frame: int, face: Face) -> float:
        """Mean |grey difference| (8-bit) from the plate at ``frame`` - 1 to ``frame`` inside ``face``'s crop
        (``face`` at ``frame``; both frames through its transform, at FLOW_SIDE; remembered)."""
        key = (self.hash_at(frame - 1), self.hash_at(frame), face.track_id, face.to_crop.tobytes())
        hit = _change_memo.get(key)
        if hit is None:
            a, b = (crop_grey8(self.plate_at(f).tensor, face.to_crop, FLOW_SIDE) for f in (frame - 1, frame))
            hit = _change_memo.put(key, float(np.abs(a.astype(np.float32) - b.astype(np.float32)).mean()))
        return hit

    def held_from(self, frame: int, face: Face) -> tuple[int, Face]:
        """(frame, face there) the swap at ``frame`` is computed at: the frame this one repeats (up to
        MAX_REPEATS frames back, :func:`is_held`), else ``frame`` and ``face``."""
        here = face
        for _ in range(MAX_REPEATS):
            before = self.linked(frame - 1, here)
            if before is None:
                break
            earlier = self.linked(frame - 2, before)
            later = self.linked(frame + 1, here)
            if not is_held(self.change(frame, here),
                           self.change(frame - 1, before) if earlier is not None else None,
                           self.change(frame + 1, later) if later is not None else None):
                break
            frame, here = frame - 1, before
        return frame, here

    def motion(self, frame: int, face: Face) -> np.ndarray:
        """plate_face_motion from frame - 1 to ``frame`` (remembered)."""
        key = (self.hash_at(frame - 1), self.hash_at(frame), face.track_id)
        hit = _motion_memo.get(key)
        if hit is not None:
            return hit
        prev, cur = self.plate_at(frame - 1), self.plate_at(frame)
        return _motion_memo.put(key, plate_face_motion(prev.tensor, cur.tensor, face))

    def stabilised(self, frame: int, near: dict[int, Face], stabilise: int) -> Face:
        """The face at ``frame`` (one of ``near``) with its crop transform carried from the fits of +-stabilise
        frames (:func:`carried_to_crop`)."""
        face = near[frame]
        around = [f for f in range(frame - stabilise, frame + stabilise + 1) if f in near]
        if len(around) < 2:
            return face
        # The plate and its faces at every frame read (their input hashes) decide the result, whichever frame
        # asks: a frame's temporal blend asks for each neighbour's, so a shot computes each once, not ~13 times.
        key = (face.track_id, frame, tuple(self.hash_at(f) for f in around))
        hit = _stabilised_memo.get(key)
        if hit is not None:
            return hit
        to_crops = {f: near[f].to_crop for f in around}
        motions = {f: self.motion(f, near[f]) for f in around if f - 1 in to_crops}
        return _stabilised_memo.put(key, placed_face(face, carried_to_crop(frame, to_crops, motions)))

    def crop_flow(self, res: int, a: int, face_a: Face, b: int, face_b: Face, device):
        """(flow (R, R, 2), trust (R, R)) on ``device`` from ``face_a``'s crop of the plate at frame ``a``
        to ``face_b``'s at ``b`` (:func:`crop_flow`, measured at the larger face's plate size within
        :data:`CROP_FLOW_SIDES`, or R up to 256, and resampled to R; remembered both ways)."""
        ka = (self.hash_at(a), face_a.track_id, face_a.to_crop.tobytes())
        kb = (self.hash_at(b), face_b.track_id, face_b.to_crop.tobytes())
        hit = _flow_memo.get((ka, kb, res, str(device)))
        if hit is not None:
            return hit
        side = crop_flow_side(res, max(1.0 / affine_scale(f.to_crop) for f in (face_a, face_b)))
        greys = []
        for f, face, k in ((a, face_a, ka), (b, face_b, kb)):
            grey = _grey_memo.get((k, side))
            if grey is None:
                grey = _grey_memo.put((k, side), crop_grey8(self.plate_at(f).tensor, face.to_crop, side))
            greys.append(grey)
        ab, trust_a, ba, trust_b = crop_flow(*greys)

        def at_res(flow: np.ndarray, trust: np.ndarray):
            both = torch.from_numpy(np.concatenate([flow * (res / side), trust[..., None]], -1)).permute(2, 0, 1)
            if side != res:
                both = F.interpolate(both[None], size=(res, res), mode="area" if side > res else "bilinear")[0]
            both = upload(both.permute(1, 2, 0).contiguous(), device)
            return both[..., :2], both[..., 2]

        _flow_memo.put((kb, ka, res, str(device)), at_res(ba, trust_b))
        return _flow_memo.put((ka, kb, res, str(device)), at_res(ab, trust_a))

    def neighbour_flows(self, res: int, frame: int, around: dict[int, Face], device) -> dict:
        """offset -> (flow, trust) from ``frame``'s crop to the neighbour's at that offset (None at 0), for
        the faces ``around`` it (offset -> placed face, contiguous offsets): hop by hop outwards, so a
        sequential render measures one new pair of crops per frame."""
        flows = {0: None}
        for step in (-1, 1):
            d = step
            while d in around:
                hop = self.crop_flow(res, frame + d - step, around[d - step], frame + d, around[d], device)
                flows[d] = hop if d == step else compose_flows(flows[d - step], hop)
                d += step
        return flows

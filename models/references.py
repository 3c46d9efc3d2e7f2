"""The target's reference faces, placed on the plate face by its landmark mesh (issue 21).

The identity model renders the target at its crop's 64 px, and on actors it never saw its rendering is a soft
average of faces (bench/RESULTS.md, issue 21). A model can also carry a *reference bank*: some of its target's
own faces, at their native size, with their landmarks. Per plate face, the references nearest in pose and
expression (over the frames around it, so the choice does not flicker) are warped onto the plate face's 478
landmarks triangle by triangle (piecewise affine over one fixed Delaunay triangulation of the bank's mean
layout), blended, and relit by the plate: multiplied, in linear light, by the ratio of the plate's skin light to
theirs at a low frequency (a blur of a sixteenth of the face, weighted by the skin so the plate's eyes and mouth
do not darken it). The face drawn has the target's skin, eyes, lips and brows at their native sharpness, the
plate's expression, pose and light; what no reference shows (an open mouth when every reference's is closed)
is the nearest one stretched.

Stored in the ``.dbm`` as ``references.safetensors`` (:func:`bank_to_bytes`): ``jpeg`` (uint8: the faces' JPEG
bytes, quality 95, one after another), ``offsets`` (int64 (N + 1,)), ``landmarks`` (float32 (N, 478, 2) in unit
crop coordinates), ``features`` (float32 (N, F), :func:`face_features`), ``triangles`` (int32 (T, 3)).
"""
from __future__ import annotations

import dataclasses
import functools
import json
import math
import os

import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine.errors import DoublureError
from doublure.engine.ops import fast_gaussian_blur, normalized_blur
from doublure.faces.extract import expression_measures
from doublure.faces.face import NUM_LANDMARKS

# pose (yaw, pitch in degrees) and the expression measures; each is scaled by the bank's spread of it
FEATURES = ("yaw", "pitch", "mouth_open", "eyes_open", "brow_raise", "mouth_width", "brow_gap")
# references blended per face: one alone jumps from frame to frame where two are about as near
BLEND = 3
# how fast a reference's weight falls with its distance beyond the nearest one's, in the bank's spreads
SOFTNESS = 0.25
# a reference weighing less than this in the blend is left out (its fade's last step)
MIN_WEIGHT = 0.02
# frames either side whose landmarks are averaged into the layout the references are drawn on
LAYOUT_REACH = 2
# a moving face's smear: the shutter open half the frame (180 degrees, film's usual), at most this many copies
MOTION_SHUTTER = 0.5
MOTION_TAPS = 24
# the relighting blur, as a fraction of the face crop
LIGHT_SIGMA = 1.0 / 16.0
JPEG_QUALITY = 95
# a reference triangle seen under this fraction as squarely as the plate face shows it (the cosines of their normals
# to the camera) shows nothing there; it counts more from here on, fully at FACING_FROM + FACING_RANGE
FACING_FROM = 0.5
FACING_RANGE = 0.3
# the finest detail, as a fraction of the face crop: where the references are blended, this band is the nearest one's
DETAIL_SIGMA = 1.0 / 96.0


class ReferenceError(DoublureError):
    """A reference bank or faceset that cannot be used; the message names the file."""


@dataclasses.dataclass
class ReferenceBank:
    """The target's reference faces.

    Attributes:
        images: (N, 3, S, S) uint8 aligned crops, sRGB (the faceset's encoding).
        landmarks: (N, 478, 2) float32 landmark positions in unit crop coordinates.
        features: (N, F) float32 :func:`face_features` of each face.
        triangles: (T, 3) int64 landmark indices of the mesh's triangles.
    """

    images: torch.Tensor
    landmarks: torch.Tensor
    features: torch.Tensor
    triangles: torch.Tensor

    @property
    def size(self) -> int:
        return int(self.images.shape[-1])

    @functools.cached_property
    def normals(self) -> np.ndarray:
        """(T, 3) unit normals of the mesh's triangles on the canonical face, toward the camera of a face looking
        at it: what :func:`triangle_facing` turns by each face's yaw."""
        from doublure.faces.template_data import CANONICAL_MESH

        tri = np.asarray(CANONICAL_MESH, dtype=np.float64)[self.triangles.numpy()]          # (T, 3, 3)
        normal = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
        normal /= np.linalg.norm(normal, axis=1, keepdims=True).clip(min=1e-12)
        return normal * -np.sign(normal[:, 2:3] + 1e-12)     # toward -z, the camera

    def __len__(self) -> int:
        return int(self.images.shape[0])


def triangle_facing(normals: np.ndarray, yaw: np.ndarray) -> np.ndarray:
    """How squarely each triangle of the mesh faces the camera on faces turned by ``yaw`` degrees.

    Args:
        normals: (T, 3) the triangles' normals on the canonical face (:attr:`ReferenceBank.normals`).
        yaw: (K,) degrees, positive when the face turns toward the image's right (``Face.pose``).

    Returns:
        (K, T) the cosine between each triangle's normal (turned by the yaw) and the direction to the camera: 1
        facing it, 0 edge-on, negative turned away.
    """
    turn = np.radians(-np.asarray(yaw, dtype=np.float64))[:, None]
    return -(-normals[None, :, 0] * np.sin(turn) + normals[None, :, 2] * np.cos(turn))


def face_features(landmarks: np.ndarray, pose) -> np.ndarray:
    """What picks a reference for a face: (F,) float64 of :data:`FEATURES`.

    Args:
        landmarks: (478, 2) in any pixel space (the measures are ratios).
        pose: (yaw, pitch, roll) in degrees.
    """
    lm = np.asarray(landmarks, dtype=np.float64)
    e = expression_measures(lm)
    eyes = max(np.linalg.norm(lm[33] - lm[263]), 1e-6)
    width = np.linalg.norm(lm[61] - lm[291]) / eyes
    # the brows' inner ends drawn together: a frown, which brow_raise (their height) hardly sees
    gap = np.linalg.norm(lm[55] - lm[285]) / eyes
    return np.array([float(pose[0]), float(pose[1]), e["mouth_open"], e["eyes_open"], e["brow_raise"], width, gap])


def delaunay_triangles(points: np.ndarray) -> np.ndarray:
    """(T, 3) int64 indices of the Delaunay triangles of (P, 2) points (unit coordinates)."""
    import cv2

    scaled = points * 1000.0                      # Subdiv2D's bounding rectangle is in whole numbers
    lo, hi = np.floor(scaled.min(0)) - 1000, np.ceil(scaled.max(0)) + 1000
    subdiv = cv2.Subdiv2D((int(lo[0]), int(lo[1]), int(hi[0] - lo[0]), int(hi[1] - lo[1])))
    for x, y in scaled:
        subdiv.insert((float(x), float(y)))
    tris = subdiv.getTriangleList().reshape(-1, 3, 2) / 1000.0
    # Subdiv2D returns coordinates; find the points they are (its bounding vertices match none)
    dist = np.linalg.norm(tris[:, :, None, :] - points[None, None, :, :], axis=-1)
    index = dist.argmin(-1)
    keep = (np.take_along_axis(dist, index[..., None], -1)[..., 0] < 1e-4).all(1)
    keep &= (index[:, 0] != index[:, 1]) & (index[:, 1] != index[:, 2]) & (index[:, 0] != index[:, 2])
    return index[keep].astype(np.int64)


def build_bank(faceset_dir: str, count: int = 48) -> tuple[ReferenceBank, dict]:
    """Choose ``count`` faces of a faceset that cover its poses and expressions (farthest-point sampling in
    :func:`face_features`' space, spreads normalised, from the sharpest face).

    Args:
        faceset_dir: a faceset folder (``doublure extract``) of the target.
        count: faces to keep (the faceset's whole, where it has fewer).

    Returns:
        (bank, its card: ``faceset`` (folder name), ``clips``, ``size``, ``count``).
    """
    import cv2

    index_path = os.path.join(faceset_dir, "index.json")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
        items, size = index["items"], int(index["size"])
        lms = np.array([it["landmarks"] for it in items], dtype=np.float64)
        feats = np.stack([face_features(lm, it["pose"]) for lm, it in zip(lms, items)])
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise ReferenceError(f"faceset {faceset_dir}: cannot read its faces ({exc})") from None
    if lms.ndim != 3 or lms.shape[1:] != (NUM_LANDMARKS, 2):
        raise ReferenceError(f"faceset {faceset_dir}: its faces carry no {NUM_LANDMARKS} landmarks")
    if len(items) < BLEND:
        raise ReferenceError(f"faceset {faceset_dir}: {len(items)} faces; a reference bank needs {BLEND} or more")
    spread = feats.std(0) + 1e-6
    unit = feats / spread
    blur = np.array([float(it.get("blur", 0.0) or 0.0) for it in items])
    chosen = [int(np.argmax(blur))]
    dist = np.linalg.norm(unit - unit[chosen[0]], axis=1)
    while len(chosen) < min(count, len(items)):
        nxt = int(np.argmax(dist))
        chosen.append(nxt)
        dist = np.minimum(dist, np.linalg.norm(unit - unit[nxt], axis=1))
    images = []
    for i in chosen:
        path = os.path.join(faceset_dir, items[i]["file"])
        bgr = cv2.imread(path, cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[:2] != (size, size):
            raise ReferenceError(f"faceset {faceset_dir}: {items[i]['file']} is not a {size} px face image")
        images.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1))
    unit_lm = (lms[chosen] + 0.5) / size           # crop pixel centres sit at integers
    bank = ReferenceBank(torch.stack(images), torch.from_numpy(unit_lm).float(),
                         torch.from_numpy(feats[chosen]).float(),
                         torch.from_numpy(delaunay_triangles(unit_lm.mean(0))))
    clips = sorted({os.path.basename(str(items[i].get("source", ""))) for i in chosen} - {""})
    return bank, {"faceset": os.path.basename(os.path.normpath(faceset_dir)), "clips": clips, "size": size,
                  "count": len(chosen)}


def bank_to_bytes(bank: ReferenceBank) -> bytes:
    """``references.safetensors`` bytes of a bank (see the module's note)."""
    import cv2
    from safetensors.torch import save

    blobs = []
    for img in bank.images:
        ok, data = cv2.imencode(".jpg", cv2.cvtColor(img.permute(1, 2, 0).numpy(), cv2.COLOR_RGB2BGR),
                                [cv2.IMWRITE_JPEG_QUALITY, JPEG_QUALITY])
        if not ok:
            raise ReferenceError("a reference face could not be encoded")
        blobs.append(np.frombuffer(data.tobytes(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    return save({"jpeg": torch.from_numpy(np.concatenate(blobs)), "offsets": torch.from_numpy(offsets),
                 "landmarks": bank.landmarks.float().contiguous(), "features": bank.features.float().contiguous(),
                 "triangles": bank.triangles.to(torch.int32).contiguous()})


def bank_from_bytes(data: bytes, where: str) -> ReferenceBank:
    """The bank in ``references.safetensors`` bytes, every field checked; ``where`` names the file in errors."""
    import cv2
    from safetensors import SafetensorError
    from safetensors.torch import load

    try:
        t = load(data)
        jpeg, offsets = t["jpeg"].numpy(), t["offsets"].tolist()
        landmarks, features, triangles = t["landmarks"], t["features"], t["triangles"].long()
    except (SafetensorError, KeyError, RuntimeError) as exc:
        raise ReferenceError(f"{where}: not a reference bank ({exc})") from None
    n = len(offsets) - 1
    if (n < 1 or landmarks.shape != (n, NUM_LANDMARKS, 2) or features.shape != (n, len(FEATURES))
            or triangles.ndim != 2 or triangles.shape[1] != 3 or int(triangles.min()) < 0
            or int(triangles.max()) >= NUM_LANDMARKS or offsets[0] != 0 or offsets[-1] != len(jpeg)
            or any(b <= a for a, b in zip(offsets, offsets[1:]))
            or not (torch.isfinite(landmarks).all() and torch.isfinite(features).all())):
        raise ReferenceError(f"{where}: its tensors do not describe {max(n, 0)} reference faces")
    images = []
    for a, b in zip(offsets, offsets[1:]):
        bgr = cv2.imdecode(jpeg[a:b], cv2.IMREAD_COLOR)
        if bgr is None or bgr.shape[0] != bgr.shape[1] or (images and bgr.shape[0] != images[0].shape[-1]):
            raise ReferenceError(f"{where}: reference face {len(images)} is not a square image of the bank's size")
        images.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1))
    return ReferenceBank(torch.stack(images), landmarks.float(), features.float(), triangles)


def choose_references(bank: ReferenceBank, window: list[tuple[float, np.ndarray]],
                      count: int = BLEND) -> tuple[np.ndarray, np.ndarray]:
    """The references for a face, from the faces of the frames around it.

    Args:
        bank: the reference bank.
        window: (weight, :func:`face_features`) of the face at each frame of its temporal window.
        count: references kept.

    Returns:
        (indices (count,) int64, weights (count,) float64 summing to 1).
    """
    spread = bank.features.double().std(0).numpy() + 1e-6 if len(bank) > 1 else np.ones(len(FEATURES))
    refs = bank.features.double().numpy() / spread
    score = np.zeros(len(bank))
    for weight, feats in window:
        dist = np.linalg.norm(refs - feats / spread, axis=1)
        score += weight * np.exp(-(dist - dist.min()) / SOFTNESS)
    order = np.argsort(-score, kind="stable")[:count + 1]
    # a smooth top-k: each kept reference weighs what its score exceeds the first one left out by, so a face
    # leaves the blend (and another enters it) by fading through zero, not by a jump from frame to frame
    floor = score[order[count]] if len(order) > count else 0.0
    order = order[:count]
    w = np.maximum(score[order] - floor, 0.0)
    if w.sum() <= 0.0:                        # ties: the nearest alone
        return order[:1], np.ones(1)
    w = w / w.sum()
    keep = w >= MIN_WEIGHT                    # a reference that adds next to nothing is not warped
    return order[keep], w[keep] / w[keep].sum()


def mesh_warp(images: torch.Tensor, src: torch.Tensor, dst: np.ndarray, triangles: torch.Tensor,
              size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Warp faces onto a landmark layout, triangle by triangle (piecewise affine).

    Args:
        images: (K, C, S, S) float faces.
        src: (K, 478, 2) their landmarks in unit crop coordinates.
        dst: (478, 2) the layout to warp onto, in unit coordinates of the output crop.
        triangles: (T, 3) landmark indices.
        size: output side in pixels.

    Returns:
        (warped (K, C, size, size), owner (size, size) int64: the triangle drawn at each pixel, -1 outside the
        mesh).
    """
    import cv2

    tri = triangles.numpy()
    d = dst[tri] * size - 0.5                                            # (T, 3, 2) output pixel centres
    area = (d[:, 1, 0] - d[:, 0, 0]) * (d[:, 2, 1] - d[:, 0, 1]) - (d[:, 2, 0] - d[:, 0, 0]) * (d[:, 1, 1] - d[:, 0, 1])
    good = np.abs(area) > 1e-6
    owner = np.full((size, size), -1, np.int32)
    for t in np.flatnonzero(good):                                       # a fold: the later triangle wins
        cv2.fillConvexPoly(owner, np.round(d[t] * 16).astype(np.int32), int(t), lineType=cv2.LINE_8, shift=4)
    # per triangle and face, the affine from output pixels to unit source coordinates: [x y 1] @ A (3, 2)
    dst_h = np.concatenate([d, np.ones((len(tri), 3, 1))], -1)           # (T, 3, 3)
    dst_h[~good] = np.eye(3)
    inv = torch.from_numpy(np.linalg.inv(dst_h))                         # (T, 3, 3)
    affine = (inv.unsqueeze(0) @ src[:, tri].double()).float()           # (K, T, 3, 2)
    a = affine[:, torch.from_numpy(owner).long().clamp(min=0).view(-1)]  # (K, size * size, 3, 2)
    ys, xs = torch.meshgrid(torch.arange(size, dtype=torch.float32), torch.arange(size, dtype=torch.float32),
                            indexing="ij")
    xs, ys = xs.reshape(1, -1, 1), ys.reshape(1, -1, 1)
    uv = (xs * a[:, :, 0] + ys * a[:, :, 1] + a[:, :, 2]).view(len(images), size, size, 2)   # unit coordinates
    grid = (uv * 2.0 - 1.0).to(images.dtype)                             # align_corners=False
    warped = F.grid_sample(images, grid, mode="bicubic", padding_mode="border", align_corners=False)
    return warped, torch.from_numpy(owner).long()


def reference_faces(bank: ReferenceBank, layouts: list[np.ndarray], windows: list[list[tuple[float, np.ndarray]]],
                    size: int, yaws: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's references drawn on each face's layout.

    Args:
        bank: the reference bank.
        layouts: per face, (478, 2) its landmarks in unit crop coordinates.
        windows: per face, :func:`choose_references`' window.
        size: crop side in pixels.
        yaws: per face, its yaw in degrees (``Face.pose``; None: 0): a reference counts where it shows the face's
            surface about as squarely as the plate face does.

    Returns:
        (faces (N, 3, size, size) float32 sRGB-encoded in [0, 1], coverage (N, 1, size, size)).
    """
    out, cover = [], []
    for layout, window, yaw in zip(layouts, windows, yaws or [0.0] * len(layouts)):
        idx, w = choose_references(bank, window)
        images = bank.images[torch.from_numpy(idx)].float() / 255.0
        if size < bank.size / 2:
            # both are crops of the same face type: shrink first, filtered, where the warp's bicubic taps would
            # skip pixels (under 2x it keeps more detail than a second resampling does: W009, 176 px from 256,
            # 0.60 -> 0.71 and 0.73 -> 0.87 of M030's own sharpness)
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        warped, owner = mesh_warp(images, bank.landmarks[torch.from_numpy(idx)], layout, bank.triangles, size)
        # per pixel each reference weighs as chosen and as squarely as it faced the camera there: the far side
        # of a turned reference is drawn from one that shows it, or not at all (the plate shows), not stretched
        # from a few pixels and the background beyond its edge
        facing = triangle_facing(bank.normals, bank.features[torch.from_numpy(idx), FEATURES.index("yaw")].numpy())
        wanted = triangle_facing(bank.normals, np.array([yaw]))
        squareness = np.where(facing > 0.1, facing / np.maximum(wanted, 0.1), 0.0)
        seen = torch.from_numpy(np.clip((squareness - FACING_FROM) / FACING_RANGE, 0.0, 1.0)).float()
        seen = seen[:, owner.clamp(min=0)]
        seen = fast_gaussian_blur(seen * (owner >= 0), max(1.0, size / 128.0))[:, None]       # (K, 1, S, S)
        weights = torch.from_numpy(w).float().view(-1, 1, 1, 1) * seen
        total = weights.sum(0)
        covered = (seen.amax(0) / 0.5).clamp(0.0, 1.0)
        weights = weights / total.clamp(min=1e-6)
        blend = (warped * weights).sum(0)
        if len(idx) > 1:
            # a blend of faces is softer than any of them: its fine detail is the nearest references', their
            # weights sharpened (the 4th power), so one face's pores and lashes dominate and a change of
            # nearest face is a short cross-fade
            sigma = size * DETAIL_SIGMA
            sharp = weights ** 4 / (weights ** 4).sum(0).clamp(min=1e-12)
            blend = fast_gaussian_blur(blend, sigma) + (sharp * (warped - fast_gaussian_blur(warped, sigma))).sum(0)
        out.append(blend.clamp(0.0, 1.0))
        cover.append(covered)
    return torch.stack(out), torch.stack(cover)


def reference_swap(bank: ReferenceBank, faces: list, windows: list[list[tuple[float, object]]], plate: torch.Tensor,
                   pred_mask: torch.Tensor, working_space: str,
                   max_size: int = 1024) -> tuple[torch.Tensor, torch.Tensor, int]:
    """SwapModel's faces drawn from the references, at the plate face's own size, lit like the plate.

    Args:
        bank: the model's reference bank.
        faces: the N plate faces (:class:`doublure.faces.face.Face`, as placed: stabilised).
        windows: per face, (its temporal window: (frame offset, weight, Face as placed) a frame, the faces of
            its track around it: {frame offset: Face}, the window's crop flows or None:
            :meth:`doublure.faces.temporal.PlateFaces.neighbour_flows`).
        plate: (C, H, W) the plate, linear working space.
        pred_mask: (N, 1, r, r) the identity model's mask for the faces.
        working_space: the plate's colour space.
        max_size: the largest crop drawn.

    Returns:
        (faces (N, 3, R, R) linear, masks (N, 1, R, R), R): R the largest face's plate size in pixels, rounded up
        to 8, within [the model's crop, ``max_size``].
    """
    from doublure.faces.align import plate_crops
    from doublure.faces.composite import to_encoding
    from doublure.faces.face import affine_scale
    from doublure.faces.masks import render_crop_mask

    side = max(1.0 / affine_scale(f.to_crop) for f in faces)
    size = int(min(max(8 * math.ceil(side / 8), pred_mask.shape[-1]), max_size))
    layouts = [carried_layout(window, flows) for window, _, flows in windows]
    # the choice reads the whole track around the frame, evenly: a face's references change over a second, not
    # from frame to frame with the detector's jitter (the mesh follows the expression in every frame)
    feats = [[(1.0, face_features(g.landmarks, g.pose)) for g in track.values()] for _, track, _ in windows]
    drawn, cover = reference_faces(bank, layouts, feats, size, [float(f.pose[0]) for f in faces])
    drawn = to_encoding(drawn.to(plate.device), "srgb", working_space)
    # the references are still photographs; a moving plate face is smeared over the shutter's time
    drawn = torch.stack([motion_blur(d, face_motion(track, f, size))
                         for d, (_, track, _), f in zip(drawn, windows, faces)])
    cover = cover.to(plate.device)
    under = plate_crops(plate, np.stack([f.to_crop for f in faces]), size)
    skin = torch.stack([render_crop_mask(f, "skin", size, device=plate.device) for f in faces]) * cover
    lit = relight(drawn, under, skin, size * LIGHT_SIGMA)
    mask = F.interpolate(pred_mask.to(plate.device, torch.float32), size=(size, size), mode="bilinear",
                         align_corners=False) * cover
    return lit, mask, size


def carried_layout(window: list[tuple[int, float, object]], flows: dict | None) -> np.ndarray:
    """Where a face's landmarks are, in unit coordinates of its crop: the landmarks of the frames around it
    carried onto it by the plate's optical flow (where the flow is trusted) and averaged with the window's
    weights. The detector's landmarks slide over the skin from frame to frame (most on the cheeks and brow,
    where the mesh is fitted, not seen); the references drawn on them swam against the plate's skin. Without
    flows: the frame's own landmarks, averaged with its neighbours' within :data:`LAYOUT_REACH`.

    Args:
        window: (frame offset, weight, Face as placed) per frame of the face's temporal window (offset 0 in it).
        flows: offset -> (flow (R, R, 2) from this frame's crop to the neighbour's, in pixels; trust (R, R)),
            None at offset 0; or None.

    Returns:
        (478, 2) float64.
    """
    from doublure.faces.face import apply_affine

    total, weight = np.zeros((NUM_LANDMARKS, 2)), 0.0
    for d, w, g in window:
        layout = apply_affine(g.to_crop, g.landmarks)
        if d != 0 and (flows is None or flows.get(d) is None):
            if flows is not None or abs(d) > LAYOUT_REACH:
                continue
            w = LAYOUT_REACH + 1 - abs(d)
        elif d != 0:
            flow, trust = flows[d]
            r = flow.shape[0]
            # this crop's pixel x sees the neighbour's x + flow(x): a neighbour's point q came from about
            # q - flow(q) (the flow varies slowly over a face)
            grid = torch.from_numpy(layout * 2.0 - 1.0).float().view(1, 1, -1, 2).to(flow.device)
            at = F.grid_sample(torch.cat([flow.permute(2, 0, 1), trust[None]]).float()[None], grid,
                               mode="bilinear", padding_mode="border", align_corners=False)[0, :, 0].T.cpu().numpy()
            layout = layout - at[:, :2] / r
            w = w * at[:, 2:]
        elif flows is None:
            w = LAYOUT_REACH + 1
        total = total + w * layout
        weight = weight + w
    return total / weight


def face_motion(track: dict[int, object], face, size: int) -> np.ndarray:
    """How far a face moves in a frame, in its crop's pixels at ``size``: (2,) from the landmarks' centre a frame
    before and after (``track``: frame offset -> Face; one side at the shot's ends; zero with no neighbour)."""
    centres = {d: g.landmarks[:, :2].mean(0) for d, g in track.items() if abs(d) <= 1}
    if 0 not in centres or len(centres) < 2:
        return np.zeros(2)
    after, before = centres.get(1, centres[0]), centres.get(-1, centres[0])
    steps = (1 in centres) + (-1 in centres)
    return np.asarray(face.to_crop)[:, :2] @ ((after - before) / steps) * size


def motion_blur(image: torch.Tensor, motion: np.ndarray, shutter: float = MOTION_SHUTTER) -> torch.Tensor:
    """Smear an image along a straight motion: the mean of copies shifted evenly over ``shutter`` of it.

    Args:
        image: (C, H, W).
        motion: (2,) x, y pixels the image moves in a frame.
        shutter: the fraction of the frame the shutter is open (180 degrees: 0.5).

    Returns:
        (C, H, W), the image itself where the smear is under half a pixel.
    """
    length = float(np.hypot(*motion)) * shutter
    if length < 0.5:
        return image
    taps = int(min(math.ceil(length) + 1, MOTION_TAPS))
    h, w = image.shape[-2:]
    shifts = torch.linspace(-0.5, 0.5, taps, dtype=torch.float32).view(-1, 1, 1, 1) * shutter
    offset = torch.tensor([motion[0] * 2.0 / w, motion[1] * 2.0 / h], dtype=torch.float32)
    ys, xs = torch.meshgrid(torch.linspace(-1 + 1.0 / h, 1 - 1.0 / h, h), torch.linspace(-1 + 1.0 / w, 1 - 1.0 / w, w),
                            indexing="ij")
    grid = torch.stack([xs, ys], -1).unsqueeze(0) + shifts * offset          # (taps, H, W, 2)
    copies = F.grid_sample(image.float().unsqueeze(0).expand(taps, -1, -1, -1), grid.to(image.device),
                           mode="bilinear", padding_mode="border", align_corners=False)
    return copies.mean(0).to(image.dtype)


def relight(faces: torch.Tensor, plate: torch.Tensor, skin: torch.Tensor, sigma: float) -> torch.Tensor:
    """Give faces the plate's light: multiply by the ratio of the plate's low frequencies to theirs over skin.

    Args:
        faces: (N, 3, R, R) linear light.
        plate: (N, 3, R, R) the plate's aligned crops, linear light.
        skin: (N, 1, R, R) in [0, 1]: where both are skin (the ratio's weight).
        sigma: blur sigma in pixels.

    Returns:
        (N, 3, R, R) the relit faces.
    """
    eps = 1e-3
    out = []
    for face, under, weight in zip(faces, plate, skin):
        lit = (normalized_blur(under.clamp(min=0.0), weight, sigma) + eps) / \
              (normalized_blur(face.clamp(min=0.0), weight, sigma) + eps)
        out.append(face * lit.clamp(0.25, 4.0))
    return torch.stack(out)


__all__ = ["FEATURES", "ReferenceBank", "ReferenceError", "bank_from_bytes", "bank_to_bytes", "build_bank",
           "carried_layout", "choose_references", "delaunay_triangles", "face_features", "face_motion", "mesh_warp",
           "motion_blur", "reference_faces", "reference_swap", "relight", "triangle_facing"]

"""The target's reference faces, placed on the plate face by its landmark mesh (issue 21).

The identity model renders the target at its crop's 64 px, and on actors it never saw its rendering is a soft
average of faces (bench/RESULTS.md, issue 21). A model can also carry a *reference bank*: some of its target's
own faces, at their native size, with their landmarks. Per plate face:

- the references nearest in pose and expression (over the frames around it, so the choice does not flicker)
  are chosen; a reference whose brow is furrowed counts as further away (:func:`frown_index`: the landmarks do
  not see a frown), so a calm plate face is never drawn frowning;
- the plate face's eyes, nose and mouth move to the target's proportions, its outline kept
  (:func:`identity_layout`): identity lives partly in the face's shape;
- the references are warped onto those landmarks triangle by triangle (piecewise affine over one fixed Delaunay
  triangulation of the bank's mean layout) and blended, each pixel from the references that see it about as
  squarely as the plate face does and show skin there, not hair hanging over it (:func:`unveiled_skin`);
- they give way to the plate along the face's outline and over the upper forehead, where a reference holds its
  silhouette's edge, its hairline and its fringe;
- they are relit by the plate: multiplied, in linear light, by the ratio of the plate's skin light to theirs at
  a low frequency (a blur of a sixteenth of the face, weighted by the skin so the plate's eyes and mouth do not
  darken it).

The face drawn has the target's skin, eyes, lips and brows at their native sharpness and the target's
proportions, the plate's expression, pose and light; what no reference shows (an open mouth when every
reference's is closed) is the nearest one stretched.

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
# a pose's spread is taken as at least this many degrees: a bank filmed from the front spreads over a few degrees,
# and in its spreads a plate turned 12 degrees was far from every reference, so the pose alone chose (the few turned
# ones, whatever their expression: frowns for a smile, an open mouth for a closed one; plates_1080). The mesh warp
# turns a reference a few degrees without harm; the far side's pixels are weighed by how squarely it shows them
POSE_SPREAD = 10.0
_POSE = [FEATURES.index("yaw"), FEATURES.index("pitch")]
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
# the eyes' openings keep their colour in the relighting, feathered by this fraction of the crop
OPENING_FEATHER = 0.004
# relight: a drawn pixel this dark against the skin around it (linear, a share of its light) is hair or shadow,
# not skin, and keeps its own colour; from DARK_FROM down to DARK_TO it goes over to that
DARK_FROM = 0.6
DARK_TO = 0.35
JPEG_QUALITY = 95
# a reference triangle seen under this fraction as squarely as the plate face shows it (the cosines of their normals
# to the camera) shows nothing there; it counts more from here on, fully at FACING_FROM + FACING_RANGE
FACING_FROM = 0.5
FACING_RANGE = 0.3
# the finest detail, as a fraction of the face crop: where the references are blended, this band is the nearest one's
# (blend_faces). At 1/48 a little sharper still, and the faces' change of detail flickered more (people/d10, d11:
# 1.40 -> 1.48, 1.36 -> 1.45 after flow)
DETAIL_SIGMA = 1.0 / 96.0
# the references fade into the plate over this fraction of the face crop inside the mesh's outline: the outline
# runs along the face's silhouette, where a reference's pixels hold its own edge, hair and background
EDGE_FADE = 0.05
# the forehead, from the brows' tops (0) to the top of the mesh (1): the references cover it up to FOREHEAD_FROM and
# give way to the plate by FOREHEAD_TO. Higher up a reference holds its hairline and fringe, a plate face its own,
# and neither says much of who the person is
FOREHEAD_FROM = 0.3
FOREHEAD_TO = 0.65
# how far the plate face's features move to the target's proportions by default (identity_layout; SwapModel's
# target_shape knob)
SHAPE_AMOUNT = 0.5
# the shape moves fully where the references like the face are posed within SHAPE_POSE[0] degrees (yaw and pitch) of
# it, not at all past SHAPE_POSE[1]: a 2-D layout of a turned face holds the turn (the nose shifted off the eyes'
# middle), which would be taken for the target's proportions
SHAPE_POSE = (5.0, 12.0)
# a part moves by at most this fraction of the eyes' spacing and is resized by at most this ratio
SHAPE_MAX_SHIFT = 0.12
SHAPE_MAX_SCALE = 1.15
# the target's shape is the mean of the references weighted by their likeness at this softness (SOFTNESS's units)
SHAPE_SOFTNESS = 1.0


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

    @functools.cached_property
    def frowns(self) -> np.ndarray:
        """(N,) :func:`frown_index` of each face (read from the pixels: no landmark sees a frown's furrows)."""
        return frown_index(self.images.float() / 255.0, self.landmarks.numpy())

    @functools.cached_property
    def furrowed(self) -> np.ndarray:
        """(N,) how much more furrowed each face's brow is than the bank's calm faces (its first quartile of
        :attr:`frowns`), in the bank's spreads of it times :data:`FURROW_WEIGHT`; 0 for calm faces."""
        return FURROW_WEIGHT * furrow_excess(self.frowns)

    @functools.cached_property
    def unveiled(self) -> torch.Tensor:
        """(N, 1, S, S) float32: 0 where hair falls over a face's skin, 1 elsewhere (:func:`unveiled_skin`)."""
        return unveiled_skin(self.images, self.landmarks.numpy())

    def __len__(self) -> int:
        return int(self.images.shape[0])


# skin darker than this fraction of a face's median skin lightness (CIE L*) is taken for hair over it
HAIR_DARKNESS = 0.72


def unveiled_skin(images: torch.Tensor, landmarks: np.ndarray) -> torch.Tensor:
    """Where a reference face shows its own skin, not hair hanging over it.

    A fringe over a reference's brow, warped onto a plate face with a taller forehead, lands on the plate's
    forehead as a dark blotch. Above the eyes, inside the face's outline less the eyes and brows (with a
    margin), pixels much darker than the face's median skin are hair; they and a margin around them weigh
    nothing in the blend.

    Args:
        images: (N, 3, S, S) uint8 sRGB aligned crops.
        landmarks: (N, 478, 2) in unit crop coordinates.

    Returns:
        (N, 1, S, S) float32 in [0, 1].
    """
    import cv2

    from doublure.faces.masks import FACE_OVAL, LEFT_BROW, LEFT_EYE, RIGHT_BROW, RIGHT_EYE, rasterize_shapes

    size = images.shape[-1]
    out = []
    for image, lm in zip(images.permute(0, 2, 3, 1).numpy(), np.asarray(landmarks, np.float64)):
        p = lm * size - 0.5
        # the brows are hair too: kept, with a margin for where the mesh puts their edge
        features = rasterize_shapes([p[list(c)] for c in (LEFT_EYE, RIGHT_EYE, LEFT_BROW, RIGHT_BROW)], [],
                                    (size, size), grow=0.015 * size)
        skin = (rasterize_shapes([p[list(FACE_OVAL)]], [], (size, size)) > 0.5) & (features < 0.5)
        lightness = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2LAB)[..., 0].astype(np.float32)
        if skin.sum() < 16:
            out.append(np.ones((size, size), np.float32))
            continue
        # hair hangs from above: only above the eyes' upper lids (the nostrils and the lips' corners are dark too)
        above = np.arange(size)[:, None] + 0.5 < lm[[159, 386], 1].mean() * size
        hair = (skin & above & (lightness < HAIR_DARKNESS * np.median(lightness[skin]))).astype(np.uint8)
        margin = max(1, int(round(0.02 * size)))
        hair = cv2.dilate(hair, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * margin + 1, 2 * margin + 1)))
        out.append(1.0 - cv2.GaussianBlur(hair.astype(np.float32), (0, 0), margin))
    return torch.from_numpy(np.stack(out))[:, None]


# the frown's furrows are measured on the crop at this side, in this band of sizes (pixels at that side)
FROWN_SIDE = 128
FROWN_BAND = (1.0, 3.0)
# sampling a bank, a face counts as this much nearer the faces already chosen (in the faceset's spreads of its
# features) per spread of the frown index it has above the faceset's calm quartile (:func:`furrow_excess`). Farthest-
# point sampling alone took the extremes first: 19 of M030's 48 were furrowed, where most plate faces are calm, and a
# calm face was drawn from the nearest of those few calm ones or with a frown's lines on its forehead. At 0.5 (7 of 48
# furrowed) people/ clips 89 -> 94% of frames nearer M030, distance 0.444 -> 0.432, flicker after flow down on 7 of 10;
# at 1 (2 of 48, none of his angry or disgusted clips left) 91%, 0.430, the demo pair 0.320 -> 0.340
SAMPLE_FURROW_COST = 0.5
# a furrowed reference's distance, in the bank's spreads of the frown index, counts this much: at 1, a calm plate face
# still got a frown wherever its landmarks were nearest a frowning reference's (people/d9, d20: 0% of frames nearer
# M030; at 2, 100%)
FURROW_WEIGHT = 2.0


def furrow_excess(frowns: np.ndarray) -> np.ndarray:
    """(N,) how much more furrowed each face is than the calm ones among them (their first quartile of
    :func:`frown_index`), in their spread of it; 0 for calm faces and where there are fewer than two."""
    frowns = np.asarray(frowns, np.float64)
    if len(frowns) < 2:
        return np.zeros(len(frowns))
    return np.maximum(frowns - np.percentile(frowns, 25), 0.0) / (frowns.std() + 1e-6)


def frown_index(faces: torch.Tensor, landmarks: np.ndarray) -> np.ndarray:
    """How furrowed the brow is: the fine detail between the brows' inner ends against the upper forehead's.

    A frown is a texture (the glabella's furrows), which the landmarks hardly move for: choosing references by
    landmarks alone gave a calm plate face a frowning target. The ratio to the same face's upper forehead (smooth
    in a frown; the cheeks crease in anger and disgust) makes it a measure of the expression, not of the camera,
    the compression or the skin.

    Args:
        faces: (N, 3, S, S) float aligned crops, sRGB-encoded.
        landmarks: (N, 478, 2) in unit crop coordinates.

    Returns:
        (N,) float64, the log of the ratio (about 0: as smooth as the forehead).
    """
    grey = F.interpolate(faces.float().mean(1, keepdim=True), size=(FROWN_SIDE, FROWN_SIDE), mode="area")
    band = (fast_gaussian_blur(grey, FROWN_BAND[0]) - fast_gaussian_blur(grey, FROWN_BAND[1])).abs()[:, 0].numpy()
    ys, xs = np.mgrid[0:FROWN_SIDE, 0:FROWN_SIDE] + 0.5
    out = []
    for energy, lm in zip(band, np.asarray(landmarks, np.float64) * FROWN_SIDE):
        # between the brows' inner ends (107, 336 their tops) and the nose's root (168), where the furrows are
        radius = 0.4 * np.linalg.norm(lm[107] - lm[336])
        glabella = ((lm[107] + lm[336]) / 2.0 + lm[168]) / 2.0

        def mean_in(centre):
            inside = (xs - centre[0]) ** 2 + (ys - centre[1]) ** 2 <= radius ** 2
            return float(energy[inside].mean()) if inside.any() else 0.0
        forehead = mean_in(lm[151])
        out.append(math.log((mean_in(glabella) + 1e-4) / (forehead + 1e-4)))
    return np.asarray(out)


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


def feature_spread(features: np.ndarray) -> np.ndarray:
    """The scale each of :data:`FEATURES` is measured in: (F,) the spread (standard deviation) of (N, F)
    ``features``, at least :data:`POSE_SPREAD` degrees for the pose's."""
    spread = features.std(0) + 1e-6 if len(features) > 1 else np.ones(features.shape[1])
    spread[_POSE] = np.maximum(spread[_POSE], POSE_SPREAD)
    return spread


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
    :func:`face_features`' space, spreads normalised, from the sharpest calm face), a furrowed brow counting
    against a face (:data:`SAMPLE_FURROW_COST`).

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
    # in the faces' own spreads, pose included (unlike the choice, feature_spread): the few turned faces are what
    # a turned plate face needs, and the bundled banks were sampled so
    unit = feats / (feats.std(0) + 1e-6)

    def faces(indices) -> torch.Tensor:
        images = []
        for i in indices:
            bgr = cv2.imread(os.path.join(faceset_dir, items[i]["file"]), cv2.IMREAD_COLOR)
            if bgr is None or bgr.shape[:2] != (size, size):
                raise ReferenceError(f"faceset {faceset_dir}: {items[i]['file']} is not a {size} px face image")
            images.append(torch.from_numpy(cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)).permute(2, 0, 1))
        return torch.stack(images)

    unit_lm = (lms + 0.5) / size                   # crop pixel centres sit at integers
    # every face's frown, a few at a time: a faceset of thousands of large faces does not fit in memory at once
    frowns = [frown_index(faces(range(i, min(i + 64, len(items)))).float() / 255.0, unit_lm[i:i + 64])
              for i in range(0, len(items), 64)]
    furrow = furrow_excess(np.concatenate(frowns))
    blur = np.array([float(it.get("blur", 0.0) or 0.0) for it in items])
    chosen = [int(np.argmax(np.where(furrow > 0.0, -np.inf, blur)))]
    taken = np.zeros(len(items), bool)
    taken[chosen[0]] = True
    dist = np.linalg.norm(unit - unit[chosen[0]], axis=1)
    while len(chosen) < min(count, len(items)):
        nxt = int(np.argmax(np.where(taken, -np.inf, dist - SAMPLE_FURROW_COST * furrow)))
        chosen.append(nxt)
        taken[nxt] = True
        dist = np.minimum(dist, np.linalg.norm(unit - unit[nxt], axis=1))
    bank = ReferenceBank(faces(chosen), torch.from_numpy(unit_lm[chosen]).float(),
                         torch.from_numpy(feats[chosen]).float(),
                         torch.from_numpy(delaunay_triangles(unit_lm[chosen].mean(0))))
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


def reference_likeness(bank: ReferenceBank, window: list[tuple[float, np.ndarray]],
                       softness: float = SOFTNESS) -> np.ndarray:
    """How like the faces of a window each reference is: (N,) float64, 1 at most per window frame's weight.

    The distance is over :data:`FEATURES`, each scaled by the bank's spread of it, and a reference's furrowed
    brow (:attr:`ReferenceBank.furrowed`) counts as one more such distance. The plate's own furrows are not read:
    glasses, a fringe or the plate's light read as furrows there, and a choice that follows them from frame
    to frame boils (d12: flicker after flow 1.26 -> 1.39). So a frowning plate face gets a calmer target, and
    a calm one never gets a frown.

    Args:
        bank: the reference bank.
        window: (weight, :func:`face_features`) of the face at each frame of its temporal window.
        softness: how fast the likeness falls with the distance beyond the nearest reference's, in the bank's
            spreads.
    """
    spread = feature_spread(bank.features.double().numpy())
    refs = bank.features.double().numpy() / spread
    score = np.zeros(len(bank))
    for weight, feats in window:
        dist = np.sqrt(((refs - feats / spread) ** 2).sum(1) + bank.furrowed ** 2)
        score += weight * np.exp(-(dist - dist.min()) / softness)
    return score


def choose_references(bank: ReferenceBank, window: list[tuple[float, np.ndarray]],
                      count: int = BLEND) -> tuple[np.ndarray, np.ndarray]:
    """The references for a face, from the faces of the frames around it (:func:`reference_likeness`).

    Args:
        bank: the reference bank.
        window: (weight, :func:`face_features`) of the face at each frame of its temporal window.
        count: references kept.

    Returns:
        (indices (count,) int64, weights (count,) float64 summing to 1).
    """
    score = reference_likeness(bank, window)
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
                    size: int, yaws: list[float] | None = None,
                    plate_shapes: list[np.ndarray] | None = None,
                    shape: float = SHAPE_AMOUNT) -> tuple[torch.Tensor, torch.Tensor]:
    """The target's references drawn on each face's layout.

    Args:
        bank: the reference bank.
        layouts: per face, (478, 2) its landmarks in unit crop coordinates.
        windows: per face, :func:`choose_references`' window.
        size: crop side in pixels.
        yaws: per face, its yaw in degrees (``Face.pose``; None: 0): a reference counts where it shows the face's
            surface about as squarely as the plate face does.
        plate_shapes: per face, (478, 2) the plate actor's mean layout over the window's frames: the face's
            features move to the target's proportions (:func:`identity_layout`); None: the plate's kept.
        shape: how far they move (0 the plate's proportions, 1 the target's), where the references' poses agree
            with the plate face's.

    Returns:
        (faces (N, 3, size, size) float32 sRGB-encoded in [0, 1], coverage (N, 1, size, size), the layouts drawn
        on (N, 478, 2) float64: ``layouts`` with the target's proportions).
    """
    out, cover, drawn_on = [], [], []
    for i, (layout, window, yaw) in enumerate(zip(layouts, windows, yaws or [0.0] * len(layouts))):
        idx, w = choose_references(bank, window)
        if plate_shapes is not None:
            # the target's shape from many references like the face, not from the few drawn: as the window moves,
            # a change of references drawn would move the face's features
            like = reference_likeness(bank, window, SHAPE_SOFTNESS)
            like = like / like.sum()
            target_shape = np.tensordot(like, bank.landmarks.double().numpy(), 1)
            plate_pose = np.average([f[_POSE] for _, f in window], axis=0, weights=[wt for wt, _ in window])
            gap = float(np.abs(like @ bank.features.double().numpy()[:, _POSE] - plate_pose).max())
            agree = np.clip((SHAPE_POSE[1] - gap) / (SHAPE_POSE[1] - SHAPE_POSE[0]), 0.0, 1.0)
            layout = identity_layout(layout, plate_shapes[i], target_shape, shape * agree)
        pick = torch.from_numpy(idx)
        # the faces and where they show skin (unveiled_skin), warped together
        images = torch.cat([bank.images[pick].float() / 255.0, bank.unveiled[pick]], 1)
        if size < bank.size / 2:
            # both are crops of the same face type: shrink first, filtered, where the warp's bicubic taps would
            # skip pixels (under 2x it keeps more detail than a second resampling does: W009, 176 px from 256,
            # 0.60 -> 0.71 and 0.73 -> 0.87 of M030's own sharpness)
            images = F.interpolate(images, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
        warped, owner = mesh_warp(images, bank.landmarks[pick], layout, bank.triangles, size)
        warped, unveiled = warped[:, :3], warped[:, 3:].clamp(0.0, 1.0)
        # per pixel each reference weighs as chosen and as squarely as it faced the camera there: the far side
        # of a turned reference is drawn from one that shows it, or not at all (the plate shows), not stretched
        # from a few pixels and the background beyond its edge
        facing = triangle_facing(bank.normals, bank.features[pick, FEATURES.index("yaw")].numpy())
        wanted = triangle_facing(bank.normals, np.array([yaw]))
        squareness = np.where(facing > 0.1, facing / np.maximum(wanted, 0.1), 0.0)
        seen = torch.from_numpy(np.clip((squareness - FACING_FROM) / FACING_RANGE, 0.0, 1.0)).float()
        seen = seen[:, owner.clamp(min=0)]
        seen = fast_gaussian_blur(seen * (owner >= 0), max(1.0, size / 128.0))[:, None]       # (K, 1, S, S)
        seen = seen * unveiled
        weights = torch.from_numpy(w).float().view(-1, 1, 1, 1) * seen
        total = weights.sum(0)
        covered = (seen.amax(0) / 0.5).clamp(0.0, 1.0) * inset_fade(owner >= 0, size * EDGE_FADE) * \
            forehead_fade(layout, size)
        weights = weights / total.clamp(min=1e-6)
        blend = blend_faces(warped, weights, size * DETAIL_SIGMA) if len(idx) > 1 else (warped * weights).sum(0)
        out.append(blend.clamp(0.0, 1.0))
        cover.append(covered)
        drawn_on.append(layout)
    return torch.stack(out), torch.stack(cover), np.stack(drawn_on)


def blend_faces(faces: torch.Tensor, weights: torch.Tensor, sigma: float) -> torch.Tensor:
    """Blend faces drawn on one layout without losing their fine detail.

    A weighted mean of faces is softer than any of them: their pores and lashes do not line up, so they average
    out. Below ``sigma`` the faces are averaged with ``weights``; above it the detail is the nearest faces' (the
    weights sharpened to their 4th power, so one face's detail dominates and a change of nearest face is a short
    cross-fade), divided by the root of the sum of those weights' squares. That keeps the detail's contrast where
    faces share it: the sum of uncorrelated textures weighted w_i has the variance sum(w_i^2) of one of them (the
    variance-preserving blend of Heitz and Neyret, "High-Performance By-Example Noise using a
    Histogram-Preserving Blending Operator", 2018). Without it, W009 angry's face was 0.57 as sharp as M030's
    own faces, 0.72 with a single reference.

    Args:
        faces: (K, C, H, W) the faces, warped onto one layout.
        weights: (K, 1, H, W) per pixel, summing to 1 over K.
        sigma: the detail's scale: the Gaussian sigma in pixels that splits the blend.

    Returns:
        (C, H, W) the blend.
    """
    sharp = weights ** 4 / (weights ** 4).sum(0).clamp(min=1e-12)
    detail = (sharp * (faces - fast_gaussian_blur(faces, sigma))).sum(0) / (sharp ** 2).sum(0).clamp(min=1e-12).sqrt()
    return fast_gaussian_blur((faces * weights).sum(0), sigma) + detail


def _smooth_ramp(t: np.ndarray) -> torch.Tensor:
    """0 below 0, 1 above 1, smoothstep between: float32."""
    t = np.clip(t, 0.0, 1.0)
    return torch.from_numpy(t * t * (3.0 - 2.0 * t)).float()


def inset_fade(inside: torch.Tensor, width: float) -> torch.Tensor:
    """0 on a region's edge rising smoothly to 1 at ``width`` pixels inside it.

    Args:
        inside: (H, W) bool.
        width: pixels.

    Returns:
        (H, W) float32 in [0, 1].
    """
    import cv2

    if width <= 0.0:
        return inside.float()
    return _smooth_ramp(cv2.distanceTransform(inside.numpy().astype(np.uint8), cv2.DIST_L2, 3) / width)


def forehead_fade(layout: np.ndarray, size: int) -> torch.Tensor:
    """1 below the forehead's :data:`FOREHEAD_FROM`, falling smoothly to 0 at :data:`FOREHEAD_TO` of the way from
    the brows' tops to the top of the face (landmark 10), along the face's own up.

    Args:
        layout: (478, 2) landmarks in unit crop coordinates.
        size: crop side in pixels.

    Returns:
        (size, size) float32 in [0, 1].
    """
    brows = layout[[105, 334, 66, 296, 107, 336]].mean(0)
    up = layout[10] - brows
    height = float(np.linalg.norm(up))
    if height < 1e-6:
        return torch.ones(size, size)
    ys, xs = np.mgrid[0:size, 0:size] + 0.5
    along = ((xs / size - brows[0]) * up[0] + (ys / size - brows[1]) * up[1]) / height ** 2
    return _smooth_ramp((FOREHEAD_TO - along) / (FOREHEAD_TO - FOREHEAD_FROM))


def reference_swap(bank: ReferenceBank, faces: list, windows: list[list[tuple[float, object]]], plate: torch.Tensor,
                   pred_mask: torch.Tensor, working_space: str, max_size: int = 1024,
                   shape: float = SHAPE_AMOUNT) -> tuple[torch.Tensor, torch.Tensor, int]:
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
        shape: how far the plate faces' features move to the target's proportions (:func:`reference_faces`).

    Returns:
        (faces (N, 3, R, R) linear, masks (N, 1, R, R), R): R the largest face's plate size in pixels, rounded up
        to 8, within [the model's crop, ``max_size``].
    """
    from doublure.faces.align import plate_crops
    from doublure.faces.composite import to_encoding
    from doublure.faces.face import affine_scale, apply_affine
    from doublure.faces.masks import render_crop_mask

    side = max(1.0 / affine_scale(f.to_crop) for f in faces)
    size = int(min(max(8 * math.ceil(side / 8), pred_mask.shape[-1]), max_size))
    layouts = [carried_layout(window, flows) for window, _, flows in windows]
    # the choice reads the whole track around the frame, evenly: a face's references change over a second, not
    # from frame to frame with the detector's jitter (the mesh follows the expression in every frame)
    feats = [[(1.0, face_features(g.landmarks, g.pose)) for g in track.values()] for _, track, _ in windows]
    # the plate actor's own proportions: the mean layout over the track, where the expressions mostly cancel
    shapes = [np.mean([apply_affine(g.to_crop, g.landmarks) for g in track.values()], 0)
              for _, track, _ in windows] if shape > 0.0 else None
    drawn, cover, drawn_on = reference_faces(bank, layouts, feats, size, [float(f.pose[0]) for f in faces], shapes,
                                             shape)
    drawn = to_encoding(drawn.to(plate.device), "srgb", working_space)
    # the references are still photographs; a moving plate face is smeared over the shutter's time
    drawn = torch.stack([motion_blur(d, face_motion(track, f, size))
                         for d, (_, track, _), f in zip(drawn, windows, faces)])
    cover = cover.to(plate.device)
    under = plate_crops(plate, np.stack([f.to_crop for f in faces]), size)
    skin = torch.stack([render_crop_mask(f, "skin", size, device=plate.device) for f in faces]) * cover
    # the irises keep their colour: the skins' difference in tone is not light (the inside of the mouth is left
    # to the light's colour: kept, M030's drew an orange band between a plate's pink lips)
    lit = relight(drawn, under, skin, size * LIGHT_SIGMA, eye_openings(drawn_on, size).to(plate.device))
    mask = F.interpolate(pred_mask.to(plate.device, torch.float32), size=(size, size), mode="bilinear",
                         align_corners=False) * cover
    return lit, mask, size


@functools.cache
def _feature_parts() -> tuple[tuple[tuple[int, ...], tuple[int, int]], ...]:
    """The parts whose place and size carry a person's proportions, each with the two landmarks its width and
    centre are read from (eye and mouth corners: an eye's or a mouth's opening is expression, not identity).
    The brows are left to follow the thin-plate spline: their height is mostly expression."""
    from doublure.faces.masks import LEFT_EYE, LIPS_OUTER, RIGHT_EYE
    nose = (1, 2, 4, 5, 6, 45, 48, 64, 97, 98, 115, 168, 195, 197, 220, 275, 278, 294, 326, 327, 344, 440)
    return ((LEFT_EYE, (362, 263)), (RIGHT_EYE, (33, 133)), (LIPS_OUTER, (61, 291)), (nose, (48, 278)))


def identity_layout(layout: np.ndarray, plate_shape: np.ndarray, target_shape: np.ndarray,
                    amount: float = SHAPE_AMOUNT) -> np.ndarray:
    """Move a plate face's eyes, nose and mouth to the target's proportions, keeping its outline.

    The mesh keeps the plate face's shape, and a person's identity lives partly in it: the eyes' spacing and
    size, the nose's length and width, where the mouth sits. Each part's centre and width move by
    what separates the target's mean shape from the plate actor's (both over the same frames and poses, so the
    expression mostly cancels); the part keeps the plate's shape within it (its opening, its curve). Every other
    landmark follows by a thin-plate spline pinned on the face's outline, which stays the plate's (the
    composite's edge is there).

    Args:
        layout: (478, 2) the plate face's landmarks in unit crop coordinates.
        plate_shape: (478, 2) the plate actor's mean layout over the frames around it.
        target_shape: (478, 2) the target's mean layout, from references like those faces.
        amount: 0 the plate's proportions, 1 the target's.

    Returns:
        (478, 2) float64.
    """
    from doublure.faces.masks import FACE_OVAL

    moved = np.asarray(layout, np.float64).copy()
    if amount <= 0.0:
        return moved
    reach = SHAPE_MAX_SHIFT * np.linalg.norm(layout[33] - layout[263])
    handles, shifts = [], []
    for part, (a, b) in _feature_parts():
        part = list(part)
        centre = lambda p: (p[a] + p[b]) / 2.0                                   # noqa: E731
        width = lambda p: np.linalg.norm(p[a] - p[b]) + 1e-9                     # noqa: E731
        ratio = np.clip(width(target_shape) / width(plate_shape), 1.0 / SHAPE_MAX_SCALE, SHAPE_MAX_SCALE)
        scale = 1.0 + amount * (ratio - 1.0)
        shift = centre(target_shape) - centre(plate_shape)
        shift *= min(1.0, reach / (np.linalg.norm(shift) + 1e-12))
        new = centre(layout) + amount * shift + \
            (layout[part] - centre(layout)) * scale
        handles.append(layout[part])
        shifts.append(new - layout[part])
    oval = list(FACE_OVAL)
    handles.append(layout[oval])
    shifts.append(np.zeros((len(oval), 2)))
    moved += thin_plate(np.concatenate(handles), np.concatenate(shifts), layout)
    return moved


def thin_plate(points: np.ndarray, values: np.ndarray, at: np.ndarray) -> np.ndarray:
    """A thin-plate spline through ``values`` (P, D) at ``points`` (P, 2), evaluated at ``at`` (Q, 2): (Q, D).
    Repeated points are averaged."""
    points, inverse = np.unique(np.round(points, 9), axis=0, return_inverse=True)
    values = np.stack([np.bincount(inverse.ravel(), values[:, d]) for d in range(values.shape[1])], 1) / \
        np.bincount(inverse.ravel())[:, None]

    def kernel(a, b):
        r2 = ((a[:, None] - b[None]) ** 2).sum(-1)
        return np.where(r2 > 0, r2 * np.log(np.maximum(r2, 1e-300)) / 2.0, 0.0)

    n = len(points)
    system = np.zeros((n + 3, n + 3))
    system[:n, :n] = kernel(points, points)
    system[:n, n] = system[n, :n] = 1.0
    system[:n, n + 1:] = points
    system[n + 1:, :n] = points.T
    coef = np.linalg.lstsq(system, np.concatenate([values, np.zeros((3, values.shape[1]))]), rcond=None)[0]
    return kernel(at, points) @ coef[:n] + coef[n] + at @ coef[n + 1:]


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


def eye_openings(layouts: np.ndarray, size: int) -> torch.Tensor:
    """Where the eyes are open on faces drawn on ``layouts`` ((N, 478, 2) unit crop coordinates): (N, 1, size,
    size) float32 in [0, 1], feathered by :data:`OPENING_FEATHER` of the crop."""
    from doublure.faces.masks import rasterize_shapes, region_shapes

    masks = [rasterize_shapes(region_shapes(layout * size - 0.5, np.zeros((2, 3)), "eyes")[0], [], (size, size))
             for layout in layouts]
    return fast_gaussian_blur(torch.from_numpy(np.stack(masks))[:, None], max(0.5, size * OPENING_FEATHER))


def relight(faces: torch.Tensor, plate: torch.Tensor, skin: torch.Tensor, sigma: float,
            neutral: torch.Tensor | None = None) -> torch.Tensor:
    """Give faces the plate's light: multiply by the ratio of the plate's low frequencies to theirs over skin.

    The ratio holds the skins' difference in colour as well as the light's: a pale plate over a tan reference is
    a blue gain, which turned the reference's brown irises and brows grey-blue (people/d14). Where ``neutral`` is
    set, and on what is much darker than the skin around it (brows, lashes, stubble, nostrils: not skin, so not
    the skin's tone), the ratio's colour is left out and only its level taken (the geometric mean of the
    channels' ratios).

    Args:
        faces: (N, 3, R, R) linear light.
        plate: (N, 3, R, R) the plate's aligned crops, linear light.
        skin: (N, 1, R, R) in [0, 1]: where both are skin (the ratio's weight).
        sigma: blur sigma in pixels.
        neutral: (N, 1, R, R) in [0, 1], or None: where the faces keep their own colour (the eyes).

    Returns:
        (N, 3, R, R) the relit faces.
    """
    eps = 1e-3
    out = []
    for i, (face, under, weight) in enumerate(zip(faces, plate, skin)):
        light = face.clamp(min=0.0)
        face_light = normalized_blur(light, weight, sigma)
        lit = ((normalized_blur(under.clamp(min=0.0), weight, sigma) + eps) / (face_light + eps)).clamp(0.25, 4.0)
        darkness = light.mean(0, keepdim=True) / (face_light.mean(0, keepdim=True) + eps)
        keep = ((DARK_FROM - darkness) / (DARK_FROM - DARK_TO)).clamp(0.0, 1.0)
        if neutral is not None:
            keep = torch.maximum(keep, neutral[i])
        level = lit.log().mean(0, keepdim=True).exp()
        out.append(face * (lit + keep * (level - lit)))
    return torch.stack(out)


__all__ = ["FEATURES", "ReferenceBank", "ReferenceError", "bank_from_bytes", "bank_to_bytes", "blend_faces",
           "build_bank", "carried_layout", "choose_references", "delaunay_triangles", "eye_openings",
           "face_features", "face_motion", "feature_spread", "forehead_fade", "frown_index", "furrow_excess",
           "identity_layout", "inset_fade", "mesh_warp", "motion_blur", "reference_faces", "reference_likeness",
           "reference_swap", "relight", "thin_plate", "triangle_facing", "unveiled_skin"]

"""The per-frame face record that travels down the node graph in ``Image.faces``.

Coordinates are plate pixels with pixel (0, 0) the top-left pixel and x to the right, y down; a pixel's
centre is at integer coordinates (mediapipe's normalised landmarks are converted with ``x * width``).
"""
from __future__ import annotations

import math
import dataclasses
from dataclasses import dataclass, field
from typing import Iterable, Sequence

import numpy as np

from doublure.engine.image import Box

FACE_TYPES = ("whole_face", "full")
NUM_LANDMARKS = 478
# Held plate frames a face can repeat (``Face.repeats``): a 2:3 pulldown repeats a frame once, a 25 -> 30 fps
# conversion once in six.
MAX_REPEATS = 2
FACE_SCHEMA = "doublure.faces/1"


def _identity_affine() -> np.ndarray:
    return np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]], dtype=np.float64)


def invert_affine(m: np.ndarray) -> np.ndarray:
    """Exact inverse of a (2, 3) affine matrix (float64).

    Args:
        m: (2, 3) affine mapping [x, y, 1] -> [u, v].

    Returns:
        (2, 3) affine mapping [u, v, 1] -> [x, y].
    """
    m = np.asarray(m, dtype=np.float64)
    (a, b, tx), (c, d, ty) = m
    det = a * d - b * c
    if det == 0.0:
        raise ValueError("affine matrix is singular")
    # closed form: a LAPACK call costs more than the whole rest of a face's bookkeeping
    ia, ib, ic, id_ = d / det, -b / det, -c / det, a / det
    return np.array([[ia, ib, -(ia * tx + ib * ty)], [ic, id_, -(ic * tx + id_ * ty)]])


def affine_scale(m: np.ndarray) -> float:
    """How much a (2, 3) affine (or its (2, 2) part) scales lengths: sqrt |det| of its linear part (a
    similarity's scale), in closed form for the same reason as :func:`invert_affine`."""
    (a, b), (c, d) = np.asarray(m, dtype=np.float64)[:, :2]
    return math.sqrt(abs(a * d - b * c))


def box_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """(x0, y0, x1, y1) bounding box of (N, >=2) landmarks."""
    lo = landmarks[:, :2].min(axis=0)
    hi = landmarks[:, :2].max(axis=0)
    return (float(lo[0]), float(lo[1]), float(hi[0]), float(hi[1]))


def apply_affine(m: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Apply a (2, 3) affine to points.

    Args:
        m: (2, 3) affine.
        points: (N, 2) or (N, >=2) array; only the first two columns are used.

    Returns:
        (N, 2) float64 transformed points.
    """
    p = np.asarray(points, dtype=np.float64)[:, :2]
    m = np.asarray(m, dtype=np.float64)
    return p @ m[:, :2].T + m[:, 2]


@dataclass(frozen=True)
class Coverage:
    """Where a swap replaced the plate for one face: the alpha it was composited with, inside a window.

    Attributes:
        window: (y0, y1, x0, x1) in plate pixels.
        alpha: (1, y1 - y0, x1 - x0) float32 torch tensor in [0, 1]; 0 beyond the window.
    """

    window: tuple[int, int, int, int]
    alpha: object


@dataclass
class Face:
    """One face in one frame.

    Attributes:
        track_id: stable id of the track this face belongs to (0, 1, ...); -1 when untracked.
        box: a :class:`~doublure.engine.image.Box` (x0, y0, x1, y1) in plate pixels, the landmarks' bounding box.
        landmarks: (478, 3) float32; x, y in plate pixels; z in the same scale (mediapipe's relative depth,
            scaled by the frame width), smaller is closer to the camera. Indices 468-477 are the irises
            (468 and 473 are the centres of the subject's right and left iris in mediapipe's numbering).
        iris: (2, 3) float32 rows (cx, cy, radius) in plate pixels for the subject's LEFT eye (row 0) and
            RIGHT eye (row 1). The subject's left eye appears on the image's right side.
        pose: (yaw, pitch, roll) in degrees; yaw > 0 when the face turns toward the image's right,
            pitch > 0 when the chin goes up, roll > 0 when the head tilts clockwise in the image.
        to_crop: (2, 3) float64 affine mapping plate pixel (x, y) to canonical crop UNIT coords (u, v) in
            [0, 1]^2. A crop at N px uses ``N * to_crop`` with pixel centres at (u * N - 0.5).
        from_crop: (2, 3) float64 exact inverse of ``to_crop``.
        confidence: detection confidence in [0, 1]; 0 for a gap filled by interpolation.
        face_type: framing of the canonical crop, ``"whole_face"`` or ``"full"``.
        interpolated: True when this face was filled in between detections (a short gap).
        repeats: > 0 when the plate frame repeats the one this many frames earlier (a held frame, found by
            SwapModel, which then repeats its swap, at most MAX_REPEATS); the nodes below that change from
            frame to frame (Grain's renewing noise, ColorMatch's window) take this frame as that one.
        coverage: where SwapModel put its new face (:class:`Coverage`), so the finishing nodes below change
            the new face and leave the plate around it alone; None before a swap. Not stored with tracks.
        occlusion: what stands in front of the face (glasses, a hand), a :class:`Coverage` whose alpha is 1 on
            the occluder (set by the Occlusion node); SwapModel puts the new face under it. Not stored with tracks.
    """

    track_id: int
    box: Box
    landmarks: np.ndarray
    iris: np.ndarray
    pose: tuple[float, float, float]
    to_crop: np.ndarray = field(default_factory=_identity_affine)
    from_crop: np.ndarray = field(default_factory=_identity_affine)
    confidence: float = 1.0
    face_type: str = "whole_face"
    interpolated: bool = False
    repeats: int = 0
    coverage: Coverage | None = field(default=None, compare=False, repr=False)
    occlusion: Coverage | None = field(default=None, compare=False, repr=False)

    def __post_init__(self) -> None:
        self.landmarks = np.asarray(self.landmarks, dtype=np.float32).reshape(NUM_LANDMARKS, 3)
        self.iris = np.asarray(self.iris, dtype=np.float32).reshape(2, 3)
        self.to_crop = np.asarray(self.to_crop, dtype=np.float64).reshape(2, 3)
        self.from_crop = np.asarray(self.from_crop, dtype=np.float64).reshape(2, 3)
        self.box = Box(*(float(v) for v in self.box))
        self.pose = tuple(float(v) for v in self.pose)
        if self.face_type not in FACE_TYPES:
            raise ValueError(f"face_type must be one of {FACE_TYPES}, got {self.face_type!r}")

    def moved(self, m: np.ndarray, depth_scale: float | None = None) -> "Face":
        """This face carried by a plate pixel affine (a resize, a shift, a stabilised placement).

        Args:
            m: (2, 3) affine from this face's plate pixels to the new ones.
            depth_scale: what the landmarks' depths and the iris radii are multiplied by; the affine's
                scale (:func:`affine_scale`) by default.

        Returns:
            The Face with landmarks and irises moved, the box their new bounding box, the crop transforms
            composed with ``m``; track, pose, ``repeats`` and the rest kept, but not ``coverage`` and
            ``occlusion``, whose alphas lie in the old pixels (the nodes below fall back to the face hull).
        """
        m = np.asarray(m, dtype=np.float64)
        scale = affine_scale(m) if depth_scale is None else depth_scale
        landmarks = self.landmarks.astype(np.float64)
        landmarks[:, :2] = apply_affine(m, landmarks[:, :2])
        landmarks[:, 2] *= scale
        iris = self.iris.astype(np.float64)
        iris[:, :2] = apply_affine(m, iris[:, :2])
        iris[:, 2] *= scale
        from_crop = m[:, :2] @ self.from_crop
        from_crop[:, 2] += m[:, 2]
        return dataclasses.replace(self, box=box_from_landmarks(landmarks), landmarks=landmarks, iris=iris,
                                   to_crop=invert_affine(from_crop), from_crop=from_crop, coverage=None,
                                   occlusion=None)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def height(self) -> float:
        return self.box[3] - self.box[1]

    @property
    def area(self) -> float:
        return max(0.0, self.width) * max(0.0, self.height)

    def crop_matrix(self, size: int) -> np.ndarray:
        """(2, 3) affine from plate pixels to crop pixel coordinates at ``size`` px (pixel-centre convention:
        crop pixel i covers unit interval [i/size, (i+1)/size], its centre at (i + 0.5)/size)."""
        return crop_matrix(self.to_crop, size)

    def landmarks_in_crop(self, size: int) -> np.ndarray:
        """(478, 2) float64 landmark x, y in crop pixel coordinates at ``size`` px."""
        return apply_affine(self.crop_matrix(size), self.landmarks)

    def to_dict(self) -> dict:
        """JSON-able dict (floats rounded to what the data carries: 1/1000 px)."""
        return {
            "track_id": int(self.track_id),
            "box": [round(v, 3) for v in self.box],
            "landmarks": np.round(self.landmarks.astype(np.float64), 3).tolist(),
            "iris": np.round(self.iris.astype(np.float64), 3).tolist(),
            "pose": [round(v, 3) for v in self.pose],
            "to_crop": self.to_crop.tolist(),
            "from_crop": self.from_crop.tolist(),
            "confidence": round(float(self.confidence), 4),
            "face_type": self.face_type,
            "interpolated": bool(self.interpolated),
            # only where set, so stored tracks (FaceDetect never sets it) keep their form
            **({"repeats": int(self.repeats)} if self.repeats else {}),
        }

    @classmethod
    def from_dict(cls, d: dict) -> "Face":
        return cls(
            track_id=int(d["track_id"]),
            box=tuple(d["box"]),
            landmarks=np.asarray(d["landmarks"], dtype=np.float32),
            iris=np.asarray(d["iris"], dtype=np.float32),
            pose=tuple(d["pose"]),
            to_crop=np.asarray(d["to_crop"], dtype=np.float64),
            from_crop=np.asarray(d["from_crop"], dtype=np.float64),
            confidence=float(d.get("confidence", 1.0)),
            face_type=d.get("face_type", "whole_face"),
            interpolated=bool(d.get("interpolated", False)),
            repeats=int(d.get("repeats", 0)),
        )


def crop_matrix(to_crop: np.ndarray, size: int) -> np.ndarray:
    """Plate pixel -> crop pixel (2, 3) affine at ``size`` px for a unit-space ``to_crop``.

    Unit coordinate u maps to crop pixel coordinate u * size - 0.5 (pixel centres at integers).
    """
    m = np.asarray(to_crop, dtype=np.float64) * float(size)
    m = m.copy()
    m[:, 2] -= 0.5
    return m


def faces_to_json(faces: Sequence[Face]) -> list[dict]:
    """List of faces -> JSON-able list of dicts."""
    return [f.to_dict() for f in faces]


def faces_from_json(data: Iterable[dict]) -> list[Face]:
    """Inverse of :func:`faces_to_json`."""
    return [Face.from_dict(d) for d in data]


def scale_faces(faces: Sequence[Face], s: float) -> list[Face]:
    """The faces of a plate resized by ``s`` (a proxy): every pixel quantity scaled, crop framing unchanged.

    Pixel centres stay at integers, so a plate pixel x maps to (x + 0.5) * s - 0.5.
    """
    if s == 1.0:
        return list(faces)
    off = 0.5 * s - 0.5
    return [f.moved(np.array([[s, 0.0, off], [0.0, s, off]])) for f in faces]

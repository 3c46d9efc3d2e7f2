"""Face tracks over a shot: association, gap filling, One Euro smoothing, head pose, track selection.

A shot is analysed once (sequentially), so the whole detection sequence is known: gaps are filled by
interpolating between the detections on either side, and smoothing runs the One Euro filter forward and
backward and averages the two, which cancels the filter's lag to first order (zero-phase smoothing).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from .align import STABLE_LANDMARKS, TEMPLATE_3D, estimate_to_crop
from .detect import RawFace, box_from_landmarks, iris_from_landmarks
from .face import Face

SELECTIONS = ("largest", "by_id", "all")


# --------------------------------------------------------------------------------------------- pose

def head_pose(landmarks: np.ndarray) -> tuple[float, float, float]:
    """Head pose from the 3D mesh by a rigid fit of the canonical template.

    The head's rotation is decomposed as R = R_yaw(about image y) . R_pitch(about x) . R_roll(about z): yaw
    and pitch give where the face points, roll the tilt about that direction.

    Args:
        landmarks: (478, 3) x, y plate pixels (y down), z in the same scale (away from the camera).

    Returns:
        (yaw, pitch, roll) degrees: yaw > 0 turning toward the image's right, pitch > 0 chin up,
        roll > 0 tilting clockwise in the image.
    """
    rot = _rotation_3d(np.asarray(landmarks, dtype=np.float64)[_STABLE_INDEX])
    fwd = rot @ np.array([0.0, 0.0, -1.0])          # the face looks along -z in the head frame
    yaw = math.atan2(fwd[0], -fwd[2])
    pitch = math.atan2(-fwd[1], math.hypot(fwd[0], fwd[2]))
    cy, sy, cp, sp = math.cos(yaw), math.sin(yaw), math.cos(pitch), math.sin(pitch)
    r_yaw = np.array([[cy, 0, -sy], [0, 1, 0], [sy, 0, cy]])
    r_pitch = np.array([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
    r_roll = (r_yaw @ r_pitch).T @ rot
    roll = math.atan2(r_roll[1, 0], r_roll[0, 0])
    return (math.degrees(yaw), math.degrees(pitch), math.degrees(roll))


_STABLE_INDEX = np.array(STABLE_LANDMARKS)
_TEMPLATE_STABLE = TEMPLATE_3D[_STABLE_INDEX] - TEMPLATE_3D[_STABLE_INDEX].mean(0)


def _rotation_3d(dst: np.ndarray) -> np.ndarray:
    """Rotation of the least-squares similarity from the template's stable points to ``dst`` (Umeyama), (3, 3)."""
    d = dst - dst.sum(0) / len(dst)
    u, _, vt = np.linalg.svd(d.T @ _TEMPLATE_STABLE)
    rot = u @ vt
    (a, b, c), (d_, e, f), (g, h, i) = rot.tolist()
    if a * (e * i - f * h) - b * (d_ * i - f * g) + c * (d_ * h - e * g) < 0:   # a reflection: flip the weakest axis
        u[:, 2] = -u[:, 2]
        rot = u @ vt
    return rot


# ---------------------------------------------------------------------------------------- One Euro

def one_euro(values: np.ndarray, fps: float, min_cutoff: float, beta: float, d_cutoff: float = 1.0) -> np.ndarray:
    """Causal One Euro filter (Casiez, Roussel, Vogel, CHI 2012) along axis 0.

    The cutoff of each point rises with its speed: ``cutoff = min_cutoff + beta * |dx/dt|``, so still
    points are smoothed hard (jitter) and fast ones follow with little lag.

    Args:
        values: (T, P, D) samples: T frames, P points, D coordinates. Speed is the norm over D per point.
        fps: sample rate (frames per second).
        min_cutoff: cutoff in Hz at zero speed.
        beta: cutoff increase per unit of speed (units of ``values`` per second).
        d_cutoff: cutoff in Hz of the speed estimate.

    Returns:
        (T, P, D) float64 filtered values.
    """
    x = np.asarray(values, dtype=np.float64)
    out = np.empty_like(x)
    if len(x) == 0:
        return out
    te = 1.0 / fps

    def alpha(cutoff):
        tau = 1.0 / (2 * math.pi * cutoff)
        return 1.0 / (1.0 + tau / te)

    a_d = alpha(d_cutoff)
    prev = x[0].copy()
    dprev = np.zeros(x.shape[1:-1] + (1,))
    out[0] = prev
    for t in range(1, len(x)):
        speed = np.linalg.norm(x[t] - prev, axis=-1, keepdims=True) / te
        dprev = a_d * speed + (1 - a_d) * dprev
        cutoff = min_cutoff + beta * dprev
        a = 1.0 / (1.0 + 1.0 / (2 * math.pi * cutoff * te))
        prev = a * x[t] + (1 - a) * prev
        out[t] = prev
    return out


def smooth_zero_phase(values: np.ndarray, fps: float, min_cutoff: float, beta: float) -> np.ndarray:
    """Average of the One Euro filter run forward and backward in time: no systematic lag.

    Shapes as :func:`one_euro`.
    """
    fwd = one_euro(values, fps, min_cutoff, beta)
    bwd = one_euro(values[::-1], fps, min_cutoff, beta)[::-1]
    return 0.5 * (fwd + bwd)


# ------------------------------------------------------------------------------------- association

def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _face_scale(landmarks: np.ndarray) -> float:
    """Outer eye corner distance in pixels (the unit of the template), at least 1."""
    return max(float(np.linalg.norm(landmarks[263, :2] - landmarks[33, :2])), 1.0)


@dataclass
class _TrackState:
    track_id: int
    frames: dict = field(default_factory=dict)     # frame index -> RawFace
    last_frame: int = -1


#: Box overlap (IoU) of a face in one frame with a face in the next for them to be one face: the tracker's
#: link test, and SwapModel's when it follows a track over the frames around one.
LINK_IOU = 0.1


def associate(detections: Sequence[Sequence[RawFace]], reacquire: int = 30, min_iou: float = LINK_IOU,
              max_landmark_dist: float = 0.5) -> list[_TrackState]:
    """Link per-frame detections into tracks.

    Cost of a (track, detection) pair: (1 - box IoU) + mean landmark distance / eye distance, against the
    track's last detection. A pair qualifies when IoU >= min_iou or the landmark distance is below
    max_landmark_dist eye distances; pairs are taken greedily by cost. A track unseen for more than
    ``reacquire`` frames ends; a later face starts a new track.

    Args:
        detections: per frame, the raw faces.

    Returns:
        Tracks with ids 0, 1, ... in order of first appearance (ties: larger face first).
    """
    tracks: list[_TrackState] = []
    active: list[_TrackState] = []
    for t, dets in enumerate(detections):
        active = [tr for tr in active if t - tr.last_frame <= reacquire + 1]
        pairs = []
        for ti, tr in enumerate(active):
            last = tr.frames[tr.last_frame]
            scale = _face_scale(last.landmarks)
            for di, d in enumerate(dets):
                iou = box_iou(last.box, d.box)
                dist = float(np.linalg.norm(d.landmarks[:, :2] - last.landmarks[:, :2], axis=1).mean()) / scale
                if iou >= min_iou or dist <= max_landmark_dist:
                    pairs.append(((1 - iou) + dist, ti, di))
        used_t, used_d = set(), set()
        for _, ti, di in sorted(pairs):
            if ti in used_t or di in used_d:
                continue
            used_t.add(ti)
            used_d.add(di)
            active[ti].frames[t] = dets[di]
            active[ti].last_frame = t
        new = sorted((di for di in range(len(dets)) if di not in used_d),
                     key=lambda di: -_area(dets[di].box))
        for di in new:
            tr = _TrackState(track_id=len(tracks), frames={t: dets[di]}, last_frame=t)
            tracks.append(tr)
            active.append(tr)
    return tracks


def _area(box) -> float:
    return max(0.0, box[2] - box[0]) * max(0.0, box[3] - box[1])


# ------------------------------------------------------------------------------------- tracks

@dataclass
class TrackParams:
    """Knobs of the shot analysis.

    Attributes:
        min_cutoff: One Euro cutoff at rest (Hz); lower is smoother.
        beta: One Euro speed coefficient (per eye-distance per second); higher follows fast motion closer.
        max_gap: longest run of missed frames filled by interpolation.
        selection: ``"largest"`` (the track with the largest median face), ``"by_id"``, ``"all"``.
        track_ids: the ids passed on with ``"by_id"``.
        face_type: framing of the crop transforms.
        fps: the shot's frame rate (the filter is specified in Hz).
        reacquire: frames a lost track may be picked up again under the same id.
    """

    min_cutoff: float = 1.0
    beta: float = 1.0
    max_gap: int = 5
    selection: str = "all"
    track_ids: tuple[int, ...] = ()
    face_type: str = "whole_face"
    fps: float = 25.0
    reacquire: int = 30


def make_face(track_id: int, landmarks: np.ndarray, confidence: float, face_type: str,
              interpolated: bool = False) -> Face:
    """A Face with box, irises, pose and crop transforms derived from (478, 3) plate-pixel landmarks."""
    lm = np.asarray(landmarks, dtype=np.float32)
    to_crop, from_crop = estimate_to_crop(lm, face_type)
    return Face(track_id=track_id, box=box_from_landmarks(lm), landmarks=lm, iris=iris_from_landmarks(lm),
                pose=head_pose(lm), to_crop=to_crop, from_crop=from_crop, confidence=float(confidence),
                face_type=face_type, interpolated=interpolated)


def faces_from_raw(raw: Sequence[RawFace], face_type: str = "whole_face") -> list[Face]:
    """Untracked faces of a single frame; ids by size (0 = largest)."""
    order = sorted(range(len(raw)), key=lambda i: -_area(raw[i].box))
    return [make_face(k, raw[i].landmarks, raw[i].confidence, face_type) for k, i in enumerate(order)]


def build_tracks(detections: Sequence[Sequence[RawFace]], params: TrackParams) -> list[list[Face]]:
    """Per-frame tracked, gap-filled, smoothed faces from per-frame raw detections.

    Args:
        detections: per frame (index 0..T-1 of the analysed range), the raw faces.
        params: the analysis knobs.

    Returns:
        Per frame, the faces of every track alive there (before selection; see :func:`select_tracks`),
        sorted by track id.
    """
    n = len(detections)
    per_frame: list[list[Face]] = [[] for _ in range(n)]
    for tr in associate(detections, reacquire=params.reacquire):
        observed = sorted(tr.frames)
        # split the track into segments wherever a gap is too long to interpolate across
        segments, seg = [], [observed[0]]
        for f in observed[1:]:
            if f - seg[-1] - 1 > params.max_gap:
                segments.append(seg)
                seg = []
            seg.append(f)
        segments.append(seg)
        for seg in segments:
            frames = np.arange(seg[0], seg[-1] + 1)
            obs = np.stack([tr.frames[f].landmarks for f in seg]).astype(np.float64)   # (K, 478, 3)
            conf = np.array([tr.frames[f].confidence for f in seg])
            if len(seg) == len(frames):
                lm = obs
            else:   # linear interpolation across the gaps, every coordinate at once
                pos = np.interp(frames, seg, np.arange(len(seg)))
                lo = np.minimum(np.floor(pos).astype(int), len(seg) - 2)     # a gap means len(seg) >= 2
                w = (pos - lo)[:, None, None]
                lm = obs[lo] * (1 - w) + obs[lo + 1] * w
            # filter in eye-distance units so beta does not depend on resolution
            scale = float(np.median([_face_scale(o) for o in obs]))
            lm = smooth_zero_phase(lm / scale, params.fps, params.min_cutoff, params.beta) * scale
            observed_set = set(seg)
            conf_full = np.interp(frames, seg, conf)
            for k, f in enumerate(frames):
                interp = int(f) not in observed_set
                per_frame[f].append(make_face(tr.track_id, lm[k], 0.0 if interp else conf_full[k],
                                              params.face_type, interpolated=interp))
    for faces in per_frame:
        faces.sort(key=lambda fc: fc.track_id)
    return per_frame


def select_tracks(per_frame: Sequence[Sequence[Face]], selection: str, track_ids: Sequence[int] = ()) -> list[list[Face]]:
    """Keep the chosen tracks.

    Args:
        per_frame: per frame, the faces of every track.
        selection: ``"all"``; ``"largest"``: the shot's main face, the one track with the largest box area
            summed over its frames (a shot-wide choice, so the selected face does not flip between frames; the
            sum, unlike a per-frame median, lets a brief false detection with a big box lose to the face that
            is there all shot long); ``"by_id"``: the ids in ``track_ids``.

    Returns:
        Per frame, the kept faces.
    """
    if selection == "all":
        return [list(f) for f in per_frame]
    if selection == "by_id":
        keep = {int(i) for i in track_ids}
    elif selection == "largest":
        presence: dict[int, float] = {}
        for faces in per_frame:
            for fc in faces:
                presence[fc.track_id] = presence.get(fc.track_id, 0.0) + fc.area
        keep = {max(presence, key=lambda k: (presence[k], -k))} if presence else set()
    else:
        raise ValueError(f"track selection must be one of {SELECTIONS}, got {selection!r}")
    return [[fc for fc in faces if fc.track_id in keep] for faces in per_frame]

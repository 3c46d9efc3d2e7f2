"""Stored shot analysis: the tracked faces of every frame of a range, in one ``.npz`` (no pickles).

Arrays (N = faces over all frames): ``frame`` (N,) int64, ``track_id`` (N,), ``box`` (N, 4),
``landmarks`` (N, 478, 3) float32, ``iris`` (N, 2, 3), ``pose`` (N, 3), ``to_crop`` / ``from_crop``
(N, 2, 3) float64, ``confidence`` (N,), ``interpolated`` (N,) bool, ``face_type`` (N,) str, and ``meta``:
a JSON string with ``schema`` ("doublure.tracks/1"), the validity ``key``, ``first``, ``last``, the plate
``width`` and ``height`` and the analysis parameters.
"""
from __future__ import annotations

import json
import os
import zipfile
import zlib
from typing import Sequence

import numpy as np

from doublure.engine import fields
from doublure.engine.atomic import atomic_path
from doublure.engine.errors import DoublureError

from .face import FACE_TYPES, Face

TRACKS_SCHEMA = "doublure.tracks/1"


def save_tracks(path: str, frames: Sequence[int], per_frame: Sequence[Sequence[Face]], meta: dict) -> None:
    """Write tracks atomically.

    Args:
        path: target ``.npz``.
        frames: the frame numbers of ``per_frame``'s entries.
        per_frame: per frame, its faces.
        meta: JSON-able description (``schema`` is added).
    """
    rows = [(fr, f) for fr, faces in zip(frames, per_frame) for f in faces]
    n = len(rows)
    arrays = {
        "frame": np.array([r[0] for r in rows], dtype=np.int64),
        "track_id": np.array([r[1].track_id for r in rows], dtype=np.int64),
        "box": np.array([r[1].box for r in rows], dtype=np.float64).reshape(n, 4),
        "landmarks": np.array([r[1].landmarks for r in rows], dtype=np.float32).reshape(n, 478, 3),
        "iris": np.array([r[1].iris for r in rows], dtype=np.float32).reshape(n, 2, 3),
        "pose": np.array([r[1].pose for r in rows], dtype=np.float64).reshape(n, 3),
        "to_crop": np.array([r[1].to_crop for r in rows], dtype=np.float64).reshape(n, 2, 3),
        "from_crop": np.array([r[1].from_crop for r in rows], dtype=np.float64).reshape(n, 2, 3),
        "confidence": np.array([r[1].confidence for r in rows], dtype=np.float64),
        "interpolated": np.array([r[1].interpolated for r in rows], dtype=bool),
        "face_type": np.array([r[1].face_type for r in rows], dtype="<U16"),
        "meta": np.array(json.dumps({**meta, "schema": TRACKS_SCHEMA})),
    }
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with atomic_path(path, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez_compressed(fh, **arrays)


# name -> (shape after N, the numpy kinds it may have: f float, i/u integer, b bool, U text)
_ARRAYS = {
    "frame": ((), "iu"), "track_id": ((), "iu"), "box": ((4,), "fiu"), "landmarks": ((478, 3), "fiu"),
    "iris": ((2, 3), "fiu"), "pose": ((3,), "fiu"), "to_crop": ((2, 3), "fiu"), "from_crop": ((2, 3), "fiu"),
    "confidence": ((), "fiu"), "interpolated": ((), "b"), "face_type": ((), "U"),
}


def load_tracks(path: str) -> tuple[dict, dict[int, list[Face]]]:
    """Read a track file. Every array is checked (present, its shape and kind, finite); a truncated or
    foreign file raises a DoublureError naming the file and what is wrong.

    Returns:
        meta: the stored description.
        faces: frame number -> faces of that frame (frames of the range without a face are absent).
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            if "meta" not in z.files:
                raise DoublureError(f"{path}: not a Doublure track file (no meta)")
            meta = json.loads(str(z["meta"]))
            if not isinstance(meta, dict) or meta.get("schema") != TRACKS_SCHEMA:
                schema = meta.get("schema") if isinstance(meta, dict) else None
                raise DoublureError(f"{path}: not a Doublure track file (schema {schema!r})")
            a = {k: z[k] for k in z.files if k != "meta"}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, zlib.error) as exc:
        raise DoublureError(f"{path}: cannot read track file: {exc}") from None
    fields.number(meta.get("width"), f"{path}: meta.width", 1, 1e6)
    n = None
    for name, (shape, kinds) in _ARRAYS.items():
        array = a.get(name)
        if array is None:
            raise DoublureError(f"{path}: track file lacks the {name!r} array")
        n = len(array) if n is None and array.ndim else n
        if array.ndim == 0 or array.shape != (n, *shape) or array.dtype.kind not in kinds:
            raise DoublureError(f"{path}: track array {name!r} is {array.dtype} {array.shape}, expected "
                                f"{(n, *shape)} of numpy kind {kinds}")
        if array.dtype.kind == "f" and not np.isfinite(array).all():
            raise DoublureError(f"{path}: track array {name!r} holds values that are not finite")
        if name == "face_type" and not set(array.tolist()) <= set(FACE_TYPES):
            raise DoublureError(f"{path}: track array 'face_type' holds an unknown face type")
    faces: dict[int, list[Face]] = {}
    for i in range(n):
        faces.setdefault(int(a["frame"][i]), []).append(Face(
            track_id=int(a["track_id"][i]), box=tuple(a["box"][i]), landmarks=a["landmarks"][i],
            iris=a["iris"][i], pose=tuple(a["pose"][i]), to_crop=a["to_crop"][i], from_crop=a["from_crop"][i],
            confidence=float(a["confidence"][i]), face_type=str(a["face_type"][i]),
            interpolated=bool(a["interpolated"][i])))
    return meta, faces

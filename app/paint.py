"""The viewer's brush: its settings, and turning a dragged path in plate pixels into a face-space stroke.

Strokes are stored in the aligned crop space of the face under the brush (``K.Strokes``), so a stroke
painted on one frame follows the face when the shot is scrubbed.
"""
from __future__ import annotations

import dataclasses
from typing import Sequence

import numpy as np

from doublure.engine import DoublureError, Node
from doublure.faces.paint import plate_points_to_stroke

FRAME_SCOPES = ("all", "from", "only")


@dataclasses.dataclass
class BrushSettings:
    """Diameter in plate pixels; hardness and opacity in [0, 1]; ``mode`` add or erase; ``scope`` which
    frames the stroke applies to: all of them, from the current frame on, or only the current frame."""

    size: float = 40.0
    hardness: float = 0.5
    opacity: float = 1.0
    mode: str = "add"
    scope: str = "all"


def strokes_knob(node: Node | None) -> str | None:
    """The name of ``node``'s strokes knob (the brush's target), or None."""
    if node is None:
        return None
    for name, knob in node.knobs.items():
        if knob.spec.kind == "strokes":
            return name
    return None


def face_under(faces: Sequence, x: float, y: float):
    """The face whose box holds (x, y), else the one whose box centre is nearest; None without faces."""
    if not faces:
        return None
    inside = [f for f in faces if f.box[0] <= x <= f.box[2] and f.box[1] <= y <= f.box[3]]
    if inside:
        return inside[0]
    return min(faces, key=lambda f: (0.5 * (f.box[0] + f.box[2]) - x) ** 2 + (0.5 * (f.box[1] + f.box[3]) - y) ** 2)


def stroke_from_plate_path(faces: Sequence, points_px: Sequence[tuple[float, float]], brush: BrushSettings,
                           frame: int, node_name: str = "") -> dict:
    """A ``K.Strokes`` entry for a brush path painted over the plate.

    Args:
        faces: the frame's faces (``Image.faces``); the stroke goes into the one under its first point.
        points_px: (x, y) plate pixels along the path, at least one.
        brush: size (diameter, plate px), hardness, opacity, mode and frame scope.
        frame: the frame painted on (for ``from`` / ``only`` scopes).

    Returns:
        {"track_id", "points" (crop unit coords), "radius" (crop units), "hardness", "opacity", "mode",
        "frames"}.

    Raises:
        DoublureError: no face in the frame to paint on.
    """
    points = np.asarray(points_px, dtype=np.float64).reshape(-1, 2)
    if not len(points):
        raise DoublureError(f"{node_name}: an empty brush stroke")
    face = face_under(faces, float(points[0, 0]), float(points[0, 1]))
    if face is None:
        raise DoublureError(f"{node_name}: no face at frame {frame} to paint on (strokes live in a face's "
                            "space: put a FaceDetect upstream)")
    frames = None if brush.scope == "all" else {brush.scope: int(frame)}
    return plate_points_to_stroke(face, points, brush.size / 2.0, hardness=brush.hardness,
                                  opacity=brush.opacity, mode=brush.mode, frames=frames)

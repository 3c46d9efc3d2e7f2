"""What the viewer draws over a frame besides the faces: the painted strokes of the node being painted, and
the occlusion matte the faces carry (``Face.occlusion``, from an Occlusion node upstream).

Both are drawn in image space (full-resolution pixels); the frame's faces are in its proxy pixels.
"""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
from PySide6 import QtCore, QtGui

from doublure.faces.paint import stroke_active, stroke_to_plate_points

# Strokes that add (an occluder, an eye to keep) in warm red, erasures (the face) in blue; see-through so the
# plate shows under them.
ADD_COLOUR = QtGui.QColor(255, 90, 60, 120)
ERASE_COLOUR = QtGui.QColor(70, 150, 255, 120)
MATTE_RGB = (255, 0, 200)
MATTE_OPACITY = 0.55


def stroke_pen(mode: str, width: float) -> QtGui.QPen:
    """The pen a stroke of ``mode`` is drawn with, ``width`` widget pixels wide (round caps and joins)."""
    return QtGui.QPen(ADD_COLOUR if mode == "add" else ERASE_COLOUR, max(width, 1.0), QtCore.Qt.PenStyle.SolidLine,
                      QtCore.Qt.PenCapStyle.RoundCap, QtCore.Qt.PenJoinStyle.RoundJoin)


def draw_strokes(p: QtGui.QPainter, strokes: Sequence[dict], faces: Sequence, frame: int, proxy: float, zoom: float,
                 to_widget: Callable[[QtCore.QPointF], QtCore.QPointF]) -> int:
    """Draw the strokes that apply at ``frame`` where they lie on it (they follow their face).

    Args:
        p: the painter.
        strokes: ``K.Strokes`` items.
        faces: the frame's faces (proxy pixels).
        frame: the frame number.
        proxy: the frame's proxy scale.
        zoom: widget pixels per image pixel.
        to_widget: image point -> widget point.

    Returns:
        How many strokes were drawn.
    """
    by_track = {f.track_id: f for f in faces}
    drawn = 0
    p.save()
    p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
    for stroke in strokes:
        face = by_track.get(int(stroke["track_id"]))
        if face is None or not stroke_active(stroke, frame):
            continue
        points, radius = stroke_to_plate_points(face, stroke)
        p.setPen(stroke_pen(stroke.get("mode", "add"), 2.0 * radius / proxy * zoom))
        widget = [to_widget(QtCore.QPointF(float(x) / proxy, float(y) / proxy)) for x, y in points]
        if len(widget) == 1:
            p.drawPoint(widget[0])
        else:
            p.drawPolyline(widget)
        drawn += 1
    p.restore()
    return drawn


def matte_image(alpha: np.ndarray) -> QtGui.QImage:
    """A matte (h, w) in [0, 1] as a premultiplied ARGB image in the matte colour, see-through by its value."""
    a = np.clip(alpha, 0.0, 1.0) * (255.0 * MATTE_OPACITY)
    rgba = np.empty(alpha.shape + (4,), dtype=np.uint8)
    for c, value in enumerate(MATTE_RGB):
        rgba[..., c] = np.round(a * value / 255.0)
    rgba[..., 3] = np.round(a)
    image = QtGui.QImage(rgba.data, rgba.shape[1], rgba.shape[0], 4 * rgba.shape[1],
                         QtGui.QImage.Format.Format_RGBA8888_Premultiplied)
    return image.copy()   # owns its pixels: rgba goes away


def draw_occlusion(p: QtGui.QPainter, faces: Sequence, proxy: float,
                   to_widget: Callable[[QtCore.QPointF], QtCore.QPointF]) -> int:
    """Draw each face's occlusion matte (``Face.occlusion``) over its window.

    Returns:
        How many faces had a non-empty matte.
    """
    drawn = 0
    for face in faces:
        occ = getattr(face, "occlusion", None)
        if occ is None:
            continue
        alpha = occ.alpha[0].float().cpu().numpy()
        if not alpha.any():
            continue
        y0, y1, x0, x1 = occ.window
        # the frame's pixel i covers image [i, i + 1) / proxy, as the frame itself is drawn
        tl = to_widget(QtCore.QPointF(x0 / proxy, y0 / proxy))
        br = to_widget(QtCore.QPointF(x1 / proxy, y1 / proxy))
        p.drawImage(QtCore.QRectF(tl, br), matte_image(alpha))
        drawn += 1
    return drawn

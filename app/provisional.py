"""The viewer's first picture of a frame not computed yet, as Nuke's viewer gives one while it works.

A cold frame of the demo graph costs seconds (SwapModel's temporal work reads +-10 plate frames and runs the
model on each); a compositor scrubbing needs to see where the playhead is at once. So when the playhead moves
to a frame whose picture is not cached, the viewer first shows the plate the graph starts from (the source
node up the main input) at the video readers' preview scale, which a background pass keeps for every frame
of a video, and computes the full picture once the playhead has rested ``REFINE_AFTER_MS``. The first
picture is drawn marked (a dashed amber frame and a banner naming what it is and what is still computing),
so nobody can take it for the result.
"""
from __future__ import annotations

from PySide6 import QtCore, QtGui

from doublure.engine import Node, video

# Scale the first picture is evaluated at: the video previews' (kept for every frame by the preview pass).
PROVISIONAL_PROXY = video.PREVIEW_SCALE
# How long the playhead must rest on a frame before its full picture is computed: scrubbing or stepping
# faster than that never starts a full evaluation that the next position would cancel.
REFINE_AFTER_MS = 150
PROVISIONAL_COLOUR = QtGui.QColor(255, 176, 32)


def provisional_source(node: Node) -> Node:
    """The node the first picture of ``node`` shows: the source (a node without inputs, the Read) at the top
    of its main input, or ``node`` itself when nothing is connected above it."""
    seen = set()
    while node.inputs and node.input_nodes[0] is not None and node.uuid not in seen:
        seen.add(node.uuid)
        node = node.input_nodes[0]
    return node


def start_previews(node: Node) -> None:
    """Start the background pass that keeps the previews of ``node``'s video (a Read of a video file;
    other nodes have none)."""
    start = getattr(node, "start_previews", None)
    if callable(start):
        start()


def provisional_text(source: Node, node: Node) -> str:
    scale = f"1/{round(1 / PROVISIONAL_PROXY)}"
    if source is node:
        return f"PROVISIONAL: {node.name} at {scale} size, full size computing…"
    return f"PROVISIONAL: {source.name} (plate) at {scale} size, {node.name} not computed yet…"


def draw_provisional(p: QtGui.QPainter, frame_rect: QtCore.QRectF, widget_rect: QtCore.QRectF, text: str) -> None:
    """Mark a provisional picture: a dashed amber frame around it and a banner over its top edge."""
    p.save()
    pen = QtGui.QPen(PROVISIONAL_COLOUR, 4, QtCore.Qt.PenStyle.DashLine)
    p.setPen(pen)
    p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
    p.drawRect(frame_rect.intersected(widget_rect.adjusted(2, 2, -2, -2)))
    font = QtGui.QFont(p.font())
    font.setBold(True)
    font.setPointSizeF(max(10.0, font.pointSizeF() * 1.15))
    p.setFont(font)
    box = QtCore.QRectF(widget_rect.left() + 8, widget_rect.top() + 8, widget_rect.width() - 16, 28)
    bounds = p.boundingRect(box, int(QtCore.Qt.AlignmentFlag.AlignCenter), text).adjusted(-12, -4, 12, 4)
    p.setPen(QtCore.Qt.PenStyle.NoPen)
    p.setBrush(QtGui.QColor(20, 14, 0, 225))
    p.drawRect(bounds)
    p.setPen(PROVISIONAL_COLOUR)
    p.drawText(box, int(QtCore.Qt.AlignmentFlag.AlignCenter), text)
    p.restore()

"""The viewer: any node's output through the OCIO display transform, A/B comparison, overlays, painting,
and the timeline with playback.

Viewer state saved in the project (``graph.ui["viewer"]``): ``inputs`` (slot "1".."9" -> node uuid), ``a``
and ``b`` (the slots compared), ``mode`` (``a``, ``b``, ``wipe``, ``side``, ``diff``) and ``wipe`` (the split
position, 0..1 of the width). The current frame and in/out points live in ``graph.ui["timeline"]``
(``frame``, ``in``, ``out``).
"""
from __future__ import annotations

import collections
import dataclasses
import time
from typing import Callable

import numpy as np
from PySide6 import QtCore, QtGui, QtWidgets

from doublure.engine import DoublureError, Graph, GraphEvent, Node, warnings_of
from doublure.engine import colour

from .display import (CHANNEL_MODES, DisplayCache, DisplayFrame, DisplaySettings, difference_pixels,
                      display_resolution, qimage_of)
from .evaluator import FrameEvaluator
from .events import subscribe_on_ui_thread
from .overlays import draw_occlusion, draw_strokes, stroke_pen
from .paint import BrushSettings, stroke_from_plate_path, strokes_knob
from .provisional import (PROVISIONAL_PROXY, REFINE_AFTER_MS, draw_provisional, provisional_source,
                          provisional_text, start_previews)
from .timeline import Timeline

MODES = ("a", "b", "wipe", "side", "diff")
MODE_LABELS = {"a": "A", "b": "B", "wipe": "Wipe", "side": "Side by side", "diff": "Difference"}


@dataclasses.dataclass
class ViewerState:
    inputs: dict[str, str] = dataclasses.field(default_factory=dict)
    a: str = "1"
    b: str = "2"
    mode: str = "a"
    wipe: float = 0.5

    @classmethod
    def from_ui(cls, data: dict | None) -> "ViewerState":
        data = data or {}
        state = cls()
        state.inputs = {str(k): str(v) for k, v in (data.get("inputs") or {}).items()}
        state.a, state.b = str(data.get("a", "1")), str(data.get("b", "2"))
        state.mode = data.get("mode", "a") if data.get("mode") in MODES else "a"
        state.wipe = float(data.get("wipe", 0.5))
        return state

    def to_ui(self) -> dict:
        return {"inputs": dict(self.inputs), "a": self.a, "b": self.b, "mode": self.mode, "wipe": self.wipe}


@dataclasses.dataclass(frozen=True)
class LaneError:
    """Why a viewer lane has no picture: the request that failed (None when its hash failed), the message
    and the node that raised it ("" when unknown)."""

    key: tuple | None
    message: str
    node: str


class ViewerCanvas(QtWidgets.QWidget):
    """Draws the A and B frames in image space with zoom and pan, the wipe line, overlays and the brush.

    Image space is the full-resolution format in pixels (a proxy frame is drawn scaled up to it).
    ``painted`` is emitted after every paint that showed at least one frame.
    """

    painted = QtCore.Signal()
    probe_moved = QtCore.Signal(float, float)
    wipe_moved = QtCore.Signal(float)
    stroke_finished = QtCore.Signal(list)  # [(x, y) in frame pixels]
    brush_resized = QtCore.Signal(float)
    zoom_changed = QtCore.Signal(float)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.frame_a: DisplayFrame | None = None
        self.frame_b: DisplayFrame | None = None
        self.mode = "a"
        self.wipe = 0.5
        self._zoom = 1.0  # drawn pixels per full-resolution pixel
        self.center = QtCore.QPointF(0, 0)  # image-space point at the widget's centre
        self.show_faces = True
        self.show_matte = True
        # the strokes of the node being painted at a frame (drawn where they lie), or None
        self.strokes_at: Callable[[int], list[dict]] | None = None
        self.message = ""  # an error: drawn instead of any picture
        self.provisional = ""  # what the picture shown is while the full one computes ("" when it is the full one)
        self.notice = ""  # a passing remark over the picture (a refused knob value)
        self.warning = ""  # what the nodes of the picture shown warn about (drawn while it is shown)
        self.stale = False
        self.paint_enabled = False
        self.brush = BrushSettings()
        self._stroke: list[tuple[float, float]] = []
        self._diff_cache: tuple[tuple, QtGui.QImage, np.ndarray] | None = None
        self._scaled_cache: collections.OrderedDict[tuple, tuple[QtGui.QImage, QtGui.QImage]] = \
            collections.OrderedDict()
        self._drag: str | None = None
        self._drag_origin = QtCore.QPointF()
        self._drag_value: object = None
        self._cursor = QtCore.QPointF(-1, -1)
        self._fitted_once = False
        self.setMouseTracking(True)
        self.setFocusPolicy(QtCore.Qt.FocusPolicy.StrongFocus)
        self.setMinimumSize(320, 200)
        self.setAttribute(QtCore.Qt.WidgetAttribute.WA_OpaquePaintEvent)

    # -- geometry -------------------------------------------------------------------------------------
    @property
    def zoom(self) -> float:
        return self._zoom

    @zoom.setter
    def zoom(self, value: float) -> None:
        if value != self._zoom:
            self._zoom = value
            self.zoom_changed.emit(value)   # the viewer converts frames at the size they are drawn

    def frame_size(self, frame: DisplayFrame | None) -> QtCore.QSizeF:
        """The frame's size in image space (full-resolution pixels), whatever size it was converted at."""
        if frame is None:
            return QtCore.QSizeF(0, 0)
        return QtCore.QSizeF(frame.image.width / frame.proxy, frame.image.height / frame.proxy)

    def content_rect(self) -> QtCore.QRectF:
        a = self.frame_size(self.frame_a or self.frame_b)
        rect = QtCore.QRectF(QtCore.QPointF(0, 0), a)
        if self.mode == "side" and self.frame_b is not None:
            b = self.frame_size(self.frame_b)
            rect = QtCore.QRectF(0, 0, a.width() + b.width(), max(a.height(), b.height()))
        return rect

    def to_widget(self, p: QtCore.QPointF) -> QtCore.QPointF:
        return QtCore.QPointF((p.x() - self.center.x()) * self.zoom + self.width() / 2,
                              (p.y() - self.center.y()) * self.zoom + self.height() / 2)

    def to_image(self, p: QtCore.QPointF) -> QtCore.QPointF:
        return QtCore.QPointF((p.x() - self.width() / 2) / self.zoom + self.center.x(),
                              (p.y() - self.height() / 2) / self.zoom + self.center.y())

    def fit(self) -> None:
        rect = self.content_rect()
        if rect.isEmpty():
            return
        self.zoom = min((self.width() - 8) / rect.width(), (self.height() - 8) / rect.height())
        self.center = rect.center()
        self.update()

    def one_to_one(self) -> None:
        self.zoom = 1.0
        self.update()

    # -- content --------------------------------------------------------------------------------------
    def set_frames(self, a: DisplayFrame | None, b: DisplayFrame | None) -> None:
        self.frame_a, self.frame_b = a, b
        if not self._fitted_once and (a or b):
            self._fitted_once = True
            self.fit()
        self.update()

    def _difference(self) -> QtGui.QImage | None:
        a, b = self.frame_a, self.frame_b
        if a is None or b is None:
            return None
        key = (a.key, b.key)
        if self._diff_cache is None or self._diff_cache[0] != key:
            rgba = difference_pixels(a.rgba, b.rgba)
            self._diff_cache = (key, qimage_of(rgba), rgba)
        return self._diff_cache[1]

    # -- painting -------------------------------------------------------------------------------------
    def _draw_frame(self, p: QtGui.QPainter, frame: DisplayFrame, origin: QtCore.QPointF,
                    image: QtGui.QImage | None = None) -> None:
        image = image if image is not None else frame.qimage
        size = self.frame_size(frame) * self.zoom
        target = QtCore.QRectF(self.to_widget(origin), size)
        w, h = max(1, round(size.width())), max(1, round(size.height()))
        if w < image.width():
            # Downscaled frames are filtered once and kept: a flip between two cached frames is then one
            # unscaled blit (about 1 ms at 1080p instead of ~10 ms of scaling on every paint).
            image = self._scaled(image, w, h)
            target.setSize(QtCore.QSizeF(w, h))
        p.drawImage(target, image)

    def _scaled(self, image: QtGui.QImage, w: int, h: int) -> QtGui.QImage:
        key = (image.cacheKey(), w, h)
        hit = self._scaled_cache.get(key)
        if hit is not None and hit[0] is image:
            self._scaled_cache.move_to_end(key)
            return hit[1]
        scaled = image.scaled(w, h, QtCore.Qt.AspectRatioMode.IgnoreAspectRatio,
                              QtCore.Qt.TransformationMode.SmoothTransformation)
        self._scaled_cache[key] = (image, scaled)
        while len(self._scaled_cache) > 8:
            self._scaled_cache.popitem(last=False)
        return scaled

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(30, 30, 30))
        a, b = self.frame_a, self.frame_b
        shown = False
        origin = QtCore.QPointF(0, 0)
        if self.mode == "b" and b is not None:
            self._draw_frame(p, b, origin)
            shown = True
        elif self.mode == "wipe" and a is not None and b is not None:
            split = self.to_widget(QtCore.QPointF(self.wipe * self.frame_size(a).width(), 0)).x()
            p.save()
            p.setClipRect(QtCore.QRectF(0, 0, split, self.height()))
            self._draw_frame(p, a, origin)
            p.setClipRect(QtCore.QRectF(split, 0, self.width() - split, self.height()))
            self._draw_frame(p, b, origin)
            p.restore()
            p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255, 200), 1.5))
            p.drawLine(QtCore.QPointF(split, 0), QtCore.QPointF(split, self.height()))
            p.drawText(QtCore.QPointF(split - 18, 14), "A")
            p.drawText(QtCore.QPointF(split + 8, 14), "B")
            shown = True
        elif self.mode == "side" and a is not None and b is not None:
            self._draw_frame(p, a, origin)
            self._draw_frame(p, b, QtCore.QPointF(self.frame_size(a).width(), 0))
            shown = True
        elif self.mode == "diff" and a is not None and b is not None:
            self._draw_frame(p, a, origin, self._difference())
            shown = True
        elif a is not None:
            self._draw_frame(p, a, origin)
            shown = True
        if shown:
            self._draw_overlays(p)
            if self.provisional:
                size = self.content_rect().size() * self.zoom
                draw_provisional(p, QtCore.QRectF(self.to_widget(QtCore.QPointF(0, 0)), size),
                                 QtCore.QRectF(self.rect()), self.provisional)
        self._draw_hud(p)
        if self.message:
            self._draw_error(p)
        p.end()
        if shown:
            self.painted.emit()

    def _overlay_frame(self) -> DisplayFrame | None:
        """The frame whose faces are drawn and painted on: the one shown, or in the two-image modes A,
        unless only B carries faces (A the plate, B the FaceDetect below it)."""
        if self.mode == "b":
            return self.frame_b
        a, b = self.frame_a, self.frame_b
        if self.mode != "a" and b is not None and (a is None or not a.image.faces) and b.image.faces:
            return b
        return a

    def _draw_overlays(self, p: QtGui.QPainter) -> None:
        frame = self._overlay_frame()
        if self.show_faces and frame is not None and frame.image.faces:
            scale = 1.0 / frame.proxy
            p.save()
            p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
            for face in frame.image.faces:
                x0, y0, x1, y1 = (v * scale for v in face.box)
                tl = self.to_widget(QtCore.QPointF(x0, y0))
                br = self.to_widget(QtCore.QPointF(x1, y1))
                p.setPen(QtGui.QPen(QtGui.QColor(80, 220, 120), 1.5))
                p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
                p.drawRect(QtCore.QRectF(tl, br))
                p.drawText(tl + QtCore.QPointF(2, -4), f"track {face.track_id}")
                p.setPen(QtGui.QPen(QtGui.QColor(120, 200, 255, 170), 1.6))
                landmarks = np.asarray(face.landmarks)[:, :2] * scale
                points = [self.to_widget(QtCore.QPointF(float(x), float(y))) for x, y in landmarks[:468]]
                p.drawPoints(points)
                p.setPen(QtGui.QPen(QtGui.QColor(255, 120, 200), 1.2))
                for cx, cy, r in np.asarray(face.iris)[:, :3] * scale:
                    c = self.to_widget(QtCore.QPointF(float(cx), float(cy)))
                    p.drawEllipse(c, float(r) * self.zoom, float(r) * self.zoom)
            p.restore()
        if frame is not None and self.show_matte:
            draw_occlusion(p, frame.image.faces, frame.proxy, self.to_widget)
        if frame is not None and self.strokes_at is not None:
            draw_strokes(p, self.strokes_at(frame.frame), frame.image.faces, frame.frame, frame.proxy, self.zoom,
                         self.to_widget)
        if self._stroke:
            proxy = frame.proxy if frame is not None else 1.0
            p.save()
            p.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
            p.setPen(stroke_pen(self.brush.mode, self.brush.size * self.zoom))
            points = [self.to_widget(QtCore.QPointF(x / proxy, y / proxy)) for x, y in self._stroke]
            if len(points) == 1:
                p.drawPoint(points[0])
            else:
                p.drawPolyline(points)
            p.restore()

    def _draw_hud(self, p: QtGui.QPainter) -> None:
        if self.paint_enabled and self._cursor.x() >= 0:
            radius = self.brush.size / 2 * self.zoom
            p.setPen(QtGui.QPen(QtGui.QColor(255, 255, 255, 220), 1))
            p.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            p.drawEllipse(self._cursor, radius, radius)
            p.drawEllipse(self._cursor, radius * self.brush.hardness, radius * self.brush.hardness)
        if self.notice:
            p.setPen(QtGui.QColor(255, 150, 110))
            p.drawText(QtCore.QRectF(10, 10, self.width() - 20, 60), int(QtCore.Qt.TextFlag.TextWordWrap),
                       self.notice)
        if self.warning and not self.message:
            p.save()
            flags = int(QtCore.Qt.AlignmentFlag.AlignLeft | QtCore.Qt.TextFlag.TextWordWrap)
            box = QtCore.QRectF(10, 0, self.width() - 20, 0)
            bounds = p.boundingRect(box, flags, "WARNING  " + self.warning)
            bounds.moveBottom(self.height() - 28)
            p.setPen(QtCore.Qt.PenStyle.NoPen)
            p.setBrush(QtGui.QColor(30, 20, 0, 220))
            p.drawRect(bounds.adjusted(-6, -4, 6, 4))
            p.setPen(QtGui.QColor(255, 176, 32))
            p.drawText(bounds, flags, "WARNING  " + self.warning)
            p.restore()
        if self.stale and not self.message:
            p.setPen(QtGui.QColor(240, 200, 80))
            p.drawText(QtCore.QPointF(10, self.height() - 10), "computing…")

    def _draw_error(self, p: QtGui.QPainter) -> None:
        """The error in place of the picture, as Nuke's viewer shows it: nothing of a stale frame remains."""
        box = QtCore.QRectF(self.rect()).adjusted(40, 40, -40, -40)
        font = QtGui.QFont(p.font())
        font.setPointSizeF(max(11.0, font.pointSizeF() * 1.3))
        p.setFont(font)
        flags = int(QtCore.Qt.AlignmentFlag.AlignCenter | QtCore.Qt.TextFlag.TextWordWrap)
        text = "ERROR\n\n" + self.message
        bounds = p.boundingRect(box, flags, text).adjusted(-16, -12, 16, 12)
        p.setPen(QtGui.QPen(QtGui.QColor(200, 50, 40), 2))
        p.setBrush(QtGui.QColor(40, 12, 10, 235))
        p.drawRect(bounds)
        p.setPen(QtGui.QColor(255, 120, 100))
        p.drawText(box, flags, text)

    # -- interaction ----------------------------------------------------------------------------------
    def _frame_pixel(self, widget_pos: QtCore.QPointF) -> tuple[float, float]:
        """Widget position -> pixel coordinates of the shown frame (proxy pixels)."""
        frame = self._overlay_frame()
        proxy = frame.proxy if frame is not None else 1.0
        p = self.to_image(widget_pos)
        return p.x() * proxy, p.y() * proxy

    def _near_wipe(self, x: float) -> bool:
        if self.mode != "wipe" or self.frame_a is None:
            return False
        split = self.to_widget(QtCore.QPointF(self.wipe * self.frame_size(self.frame_a).width(), 0)).x()
        return abs(x - split) < 6

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        buttons = event.button()
        mods = event.modifiers()
        if buttons == QtCore.Qt.MouseButton.MiddleButton or (
                buttons == QtCore.Qt.MouseButton.LeftButton and mods & QtCore.Qt.KeyboardModifier.AltModifier):
            self._drag, self._drag_origin, self._drag_value = "pan", pos, QtCore.QPointF(self.center)
        elif buttons == QtCore.Qt.MouseButton.LeftButton and self._near_wipe(pos.x()):
            self._drag = "wipe"
        elif buttons == QtCore.Qt.MouseButton.LeftButton and self.paint_enabled:
            if mods & QtCore.Qt.KeyboardModifier.ShiftModifier:
                self._drag, self._drag_origin, self._drag_value = "size", pos, self.brush.size
            else:
                self._drag = "paint"
                self._stroke = [self._frame_pixel(pos)]
                self.update()
        elif buttons == QtCore.Qt.MouseButton.RightButton:
            self._drag, self._drag_origin, self._drag_value = "zoom", pos, self.zoom
        event.accept()

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802
        pos = event.position()
        self._cursor = pos
        if self._drag == "pan":
            delta = (pos - self._drag_origin) / self.zoom
            self.center = self._drag_value - delta
        elif self._drag == "wipe" and self.frame_a is not None:
            x = self.to_image(pos).x() / max(1.0, self.frame_size(self.frame_a).width())
            self.wipe = min(1.0, max(0.0, x))
            self.wipe_moved.emit(self.wipe)
        elif self._drag == "size":
            self.brush.size = max(1.0, self._drag_value + (pos.x() - self._drag_origin.x()))
            self.brush_resized.emit(self.brush.size)
        elif self._drag == "paint":
            point = self._frame_pixel(pos)
            if not self._stroke or (point[0] - self._stroke[-1][0]) ** 2 + (point[1] - self._stroke[-1][1]) ** 2 >= 1:
                self._stroke.append(point)
        elif self._drag == "zoom":
            self.zoom = max(0.02, min(64.0, self._drag_value * 2 ** ((pos.x() - self._drag_origin.x()) / 150)))
        else:
            x, y = self._frame_pixel(pos)
            self.probe_moved.emit(x, y)
            if self._near_wipe(pos.x()):
                self.setCursor(QtCore.Qt.CursorShape.SplitHCursor)
            else:
                self.unsetCursor()
        self.update()

    def mouseReleaseEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802
        if self._drag == "paint" and self._stroke:
            stroke, self._stroke = self._stroke, []
            self.stroke_finished.emit(stroke)
        self._drag = None
        self.update()

    def leaveEvent(self, event: QtCore.QEvent) -> None:  # noqa: N802
        self._cursor = QtCore.QPointF(-1, -1)
        self.update()

    def wheelEvent(self, event: QtGui.QWheelEvent) -> None:  # noqa: N802
        factor = 2 ** (event.angleDelta().y() / 480)
        anchor = self.to_image(event.position())
        self.zoom = max(0.02, min(64.0, self.zoom * factor))
        # Keep the image point under the cursor where it was.
        after = self.to_image(event.position())
        self.center = self.center + (anchor - after)
        self.update()


class ViewerPanel(QtWidgets.QWidget):
    """The viewer with its toolbar and timeline, evaluating off the UI thread."""

    status_message = QtCore.Signal(str)
    frame_shown = QtCore.Signal()
    frame_changed = QtCore.Signal(int)
    errors_changed = QtCore.Signal(dict)  # node name -> message, for the nodes the shown frames fail in
    warnings_changed = QtCore.Signal(dict)  # node name -> message, for the nodes the shown frames warn from

    def __init__(self, graph: Graph, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.graph = graph
        self.state = ViewerState.from_ui(graph.ui.get("viewer"))
        self.cache = DisplayCache()
        # two workers: playing into frames not computed, the next two frames compute at once (A and B at once)
        self.evaluator = FrameEvaluator(graph, self.cache, self, workers=2)
        self.evaluator.frame_ready.connect(self._on_frame_ready)
        self.evaluator.frame_failed.connect(self._on_frame_failed)
        # first pictures of frames not computed yet, on a thread of their own (never behind a full frame)
        self.quick = FrameEvaluator(graph, self.cache, self)
        self.quick.frame_ready.connect(self._on_provisional_ready)
        self._provisional: dict[str, DisplayFrame | None] = {"A": None, "B": None}
        self._provisional_wanted: dict[str, tuple | None] = {"A": None, "B": None}
        self._provisional_for: dict[str, tuple | None] = {"A": None, "B": None}  # the full picture it stands for
        self._provisional_text: dict[str, str] = {}
        self._rested_frame: int | None = None  # the frame the playhead last rested on REFINE_AFTER_MS
        self._refine_timer = QtCore.QTimer(self)
        self._refine_timer.setSingleShot(True)
        self._refine_timer.setInterval(REFINE_AFTER_MS)
        self._refine_timer.timeout.connect(self._on_rested)
        self.canvas = ViewerCanvas(self)
        self.canvas.mode = self.state.mode
        self.canvas.wipe = self.state.wipe
        self.canvas.painted.connect(self._on_painted)
        self.canvas.probe_moved.connect(self._on_probe)
        self.canvas.wipe_moved.connect(self._on_wipe_moved)
        self.canvas.stroke_finished.connect(self._on_stroke)
        self._resolution = 1.0   # the fraction of full resolution frames are converted at (the zoom's)
        self.canvas.zoom_changed.connect(self._on_zoom_changed)
        self.timeline = Timeline(self)
        self.timeline.frame_requested.connect(self.set_frame)
        self.timeline.play_requested.connect(self.play)
        self.timeline.in_out_changed.connect(self._on_in_out)
        self.paint_target: Node | None = None
        self._wanted: dict[str, tuple | None] = {"A": None, "B": None}
        self._frames: dict[str, DisplayFrame | None] = {"A": None, "B": None}
        self._errors: dict[str, LaneError] = {}
        self._published_errors: dict[str, str] = {}
        self._published_warnings: dict[str, str] = {}
        self._notice_timer = QtCore.QTimer(self)
        self._notice_timer.setSingleShot(True)
        self._notice_timer.timeout.connect(lambda: self.show_notice(""))
        self._playing = 0
        self._play_times: list[float] = []
        self._refresh_pending = False
        self._play_timer = QtCore.QTimer(self)
        self._play_timer.setTimerType(QtCore.Qt.TimerType.PreciseTimer)
        self._play_timer.timeout.connect(self._play_tick)
        self._cache_line_timer = QtCore.QTimer(self)
        self._cache_line_timer.setInterval(400)
        self._cache_line_timer.timeout.connect(self.update_cache_line)
        self._cache_line_timer.start()
        self._build_toolbar()
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.setSpacing(0)
        layout.addWidget(self.toolbar)
        layout.addWidget(self.colour_bar)
        layout.addWidget(self.brush_bar)
        layout.addWidget(self.canvas, 1)
        layout.addWidget(self.probe_label)
        layout.addWidget(self.timeline)
        self._install_shortcuts()
        self._unsubscribe: Callable[[], None] | None = None
        self.set_graph(graph)

    # -- construction ---------------------------------------------------------------------------------
    def _build_toolbar(self) -> None:
        bar = self.toolbar = QtWidgets.QToolBar(self)
        bar.setIconSize(QtCore.QSize(16, 16))
        self.a_combo = QtWidgets.QComboBox(self)
        self.a_combo.setToolTip("Viewer input shown as A (keys 1-9 in the node graph set the inputs)")
        self.b_combo = QtWidgets.QComboBox(self)
        self.b_combo.setToolTip("Viewer input shown as B")
        for combo in (self.a_combo, self.b_combo):
            combo.setMinimumWidth(110)
            combo.activated.connect(self._on_ab_chosen)
        self.mode_combo = QtWidgets.QComboBox(self)
        for mode in MODES:
            self.mode_combo.addItem(MODE_LABELS[mode], mode)
        self.mode_combo.setToolTip("Compare A and B: wipe (W), flip (X), side by side, difference")
        self.mode_combo.activated.connect(lambda i: self.set_mode(self.mode_combo.itemData(i)))
        cfg = colour.config()
        self.display_combo = QtWidgets.QComboBox(self)
        self.display_combo.addItems(list(cfg.getDisplays()))
        self.display_combo.setCurrentText(colour.DEFAULT_DISPLAY)
        self.display_combo.setToolTip("OCIO display")
        self.view_combo = QtWidgets.QComboBox(self)
        self._fill_views()
        self.view_combo.setToolTip("OCIO view")
        self.display_combo.currentTextChanged.connect(lambda _: (self._fill_views(), self.refresh()))
        self.view_combo.currentTextChanged.connect(lambda _: self.refresh())
        self.exposure = QtWidgets.QDoubleSpinBox(self)
        self.exposure.setRange(-20, 20)
        self.exposure.setSingleStep(0.5)
        self.exposure.setPrefix("f/stop ")
        self.exposure.setToolTip("Exposure in stops, applied before the display transform")
        self.exposure.valueChanged.connect(lambda _: self.refresh())
        self.gamma = QtWidgets.QDoubleSpinBox(self)
        self.gamma.setRange(0.1, 5.0)
        self.gamma.setValue(1.0)
        self.gamma.setSingleStep(0.1)
        self.gamma.setPrefix("γ ")
        self.gamma.setToolTip("Gamma on display values")
        self.gamma.valueChanged.connect(lambda _: self.refresh())
        self.channels_combo = QtWidgets.QComboBox(self)
        for mode, label in zip(CHANNEL_MODES, ("RGB", "Red", "Green", "Blue", "Alpha", "Mask overlay")):
            self.channels_combo.addItem(label, mode)
        self.channels_combo.setToolTip("Channels shown")
        self.channels_combo.currentIndexChanged.connect(lambda _: self.refresh())
        self.proxy_combo = QtWidgets.QComboBox(self)
        for proxy in (1.0, 0.5, 0.25):
            self.proxy_combo.addItem(f"proxy {proxy:g}" if proxy != 1 else "full res", proxy)
        self.proxy_combo.setToolTip("Proxy scale of the evaluation")
        self.proxy_combo.currentIndexChanged.connect(lambda _: self.refresh())
        self.faces_check = QtWidgets.QCheckBox("Faces", self)
        self.faces_check.setChecked(True)
        self.faces_check.setToolTip("Overlay face boxes, landmarks, irises and track ids")
        self.faces_check.toggled.connect(self._on_faces_toggled)
        self.matte_check = QtWidgets.QCheckBox("Matte", self)
        self.matte_check.setChecked(True)
        self.matte_check.setToolTip("Overlay the occlusion matte the faces carry (an Occlusion node upstream), magenta")
        self.matte_check.toggled.connect(self._on_matte_toggled)
        self.paint_button = QtWidgets.QToolButton(self)
        self.paint_button.setText("Paint")
        self.paint_button.setCheckable(True)
        self.paint_button.setToolTip("Brush into the selected node's strokes (P); Shift-drag sets the size")
        self.paint_button.toggled.connect(self._on_paint_toggled)
        fit = QtGui.QAction("Fit", self)
        fit.setToolTip("Fit the image (F)")
        fit.triggered.connect(self.canvas.fit)
        one = QtGui.QAction("1:1", self)
        one.setToolTip("One image pixel per screen pixel")
        one.triggered.connect(self.canvas.one_to_one)
        for w in (QtWidgets.QLabel(" A "), self.a_combo, QtWidgets.QLabel(" B "), self.b_combo, self.mode_combo):
            bar.addWidget(w)
        bar.addSeparator()
        bar.addAction(fit)
        bar.addAction(one)
        bar.addWidget(self.proxy_combo)
        bar.addWidget(self.faces_check)
        bar.addWidget(self.matte_check)
        bar.addWidget(self.paint_button)
        # Colour controls on a second row, so neither row overflows a laptop-width viewer.
        self.colour_bar = QtWidgets.QToolBar(self)
        for w in (self.display_combo, self.view_combo, self.exposure, self.gamma, self.channels_combo):
            self.colour_bar.addWidget(w)
        # The brush options show while painting.
        self.brush_bar = QtWidgets.QToolBar(self)
        self.brush_size = QtWidgets.QDoubleSpinBox(self)
        self.brush_size.setRange(1, 2000)
        self.brush_size.setValue(self.canvas.brush.size)
        self.brush_size.setPrefix("size ")
        self.brush_size.valueChanged.connect(lambda v: setattr(self.canvas.brush, "size", v))
        self.canvas.brush_resized.connect(lambda v: (self.brush_size.blockSignals(True),
                                                     self.brush_size.setValue(v),
                                                     self.brush_size.blockSignals(False)))
        self.brush_hardness = QtWidgets.QDoubleSpinBox(self)
        self.brush_hardness.setRange(0, 1)
        self.brush_hardness.setSingleStep(0.1)
        self.brush_hardness.setValue(self.canvas.brush.hardness)
        self.brush_hardness.setPrefix("hardness ")
        self.brush_hardness.valueChanged.connect(lambda v: setattr(self.canvas.brush, "hardness", v))
        self.brush_opacity = QtWidgets.QDoubleSpinBox(self)
        self.brush_opacity.setRange(0, 1)
        self.brush_opacity.setSingleStep(0.1)
        self.brush_opacity.setValue(self.canvas.brush.opacity)
        self.brush_opacity.setPrefix("opacity ")
        self.brush_opacity.valueChanged.connect(lambda v: setattr(self.canvas.brush, "opacity", v))
        self.brush_mode = QtWidgets.QComboBox(self)
        self.brush_mode.addItems(["add", "erase"])
        self.brush_mode.setToolTip("Paint or erase (E toggles)")
        self.brush_mode.currentTextChanged.connect(lambda v: setattr(self.canvas.brush, "mode", v))
        self.brush_scope = QtWidgets.QComboBox(self)
        for scope, label in (("all", "all frames"), ("from", "from this frame"), ("only", "this frame only")):
            self.brush_scope.addItem(label, scope)
        self.brush_scope.currentIndexChanged.connect(
            lambda i: setattr(self.canvas.brush, "scope", self.brush_scope.itemData(i)))
        self.brush_target = QtWidgets.QLabel("", self)
        for w in (self.brush_size, self.brush_hardness, self.brush_opacity, self.brush_mode, self.brush_scope,
                  self.brush_target):
            self.brush_bar.addWidget(w)
        self.brush_bar.setVisible(False)
        self.probe_label = QtWidgets.QLabel(" ", self)
        self.probe_label.setStyleSheet("color: #aaa; padding: 1px 6px; font-family: monospace;")

    def _install_shortcuts(self) -> None:
        def shortcut(key: str, slot) -> None:
            s = QtGui.QShortcut(QtGui.QKeySequence(key), self)
            s.setContext(QtCore.Qt.ShortcutContext.WidgetWithChildrenShortcut)
            s.activated.connect(slot)

        shortcut("W", self.toggle_wipe)
        shortcut("X", self.flip)
        shortcut("F", self.canvas.fit)
        shortcut("P", lambda: self.paint_button.toggle())
        shortcut("E", lambda: self.brush_mode.setCurrentText(
            "erase" if self.brush_mode.currentText() == "add" else "add"))
        shortcut("Left", lambda: self.timeline.step(-1))
        shortcut("Right", lambda: self.timeline.step(1))
        shortcut("J", lambda: self.play(-1))
        shortcut("K", lambda: self.play(0))
        shortcut("L", lambda: self.play(1))
        shortcut("I", self.timeline.toggle_in)
        shortcut("O", self.timeline.toggle_out)
        shortcut("Home", lambda: self.timeline._jump("first"))
        shortcut("End", lambda: self.timeline._jump("last"))
        for slot in range(1, 10):  # as over Nuke's viewer: show what viewer input N holds
            shortcut(str(slot), lambda slot=slot: self.show_slot(slot))

    def _fill_views(self) -> None:
        current = self.view_combo.currentText() or colour.DEFAULT_VIEW
        self.view_combo.blockSignals(True)
        self.view_combo.clear()
        views = list(colour.config().getViews(self.display_combo.currentText()))
        self.view_combo.addItems(views)
        self.view_combo.setCurrentText(current if current in views else views[0])
        self.view_combo.blockSignals(False)

    # -- graph ----------------------------------------------------------------------------------------
    def set_graph(self, graph: Graph) -> None:
        """Show another graph (a project was opened): viewer state and timeline come from its ``ui``."""
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.play(0)
        self.graph = graph
        self.evaluator.set_graph(graph)
        self.quick.set_graph(graph)
        self._provisional = {"A": None, "B": None}
        self._provisional_wanted = {"A": None, "B": None}
        self._rested_frame = None
        self.state = ViewerState.from_ui(graph.ui.get("viewer"))
        if not self.state.inputs:
            default = self._default_node()
            if default is not None:
                self.state.inputs["1"] = default.uuid
        self.canvas.mode, self.canvas.wipe = self.state.mode, self.state.wipe
        self.canvas._fitted_once = False
        self._frames = {"A": None, "B": None}
        self._errors.clear()
        self.canvas.set_frames(None, None)
        timeline = graph.ui.get("timeline") or {}
        self.timeline.set_range(graph.settings["first"], graph.settings["last"])
        self.timeline.set_in_out(timeline.get("in"), timeline.get("out"))
        if isinstance(timeline.get("frame"), int):
            graph.current_frame = max(graph.settings["first"], min(graph.settings["last"], timeline["frame"]))
        self.timeline.set_frame(graph.current_frame)
        self._unsubscribe = subscribe_on_ui_thread(graph, self._on_graph_event, self)
        self._store_state()
        self._sync_controls()
        self.refresh()

    def _default_node(self) -> Node | None:
        """The last node of the graph's main chain: one that feeds nothing (a Write's input if it is one)."""
        candidates = [n for n in self.graph.nodes if not self.graph.downstream(n)]
        for node in reversed(candidates):
            if callable(getattr(node, "execute", None)) and node.input_nodes and node.input_nodes[0] is not None:
                return node.input_nodes[0]
            return node
        return None

    def _on_graph_event(self, event: GraphEvent) -> None:
        if event.kind == "moved":
            return
        if event.kind == "settings":
            self.timeline.set_range(self.graph.settings["first"], self.graph.settings["last"])
        if event.kind in ("node_added", "node_removed", "renamed"):
            self._sync_controls()
        self.schedule_refresh()

    def schedule_refresh(self) -> None:
        """Refresh once after the current burst of edits (a paste fires many events)."""
        if not self._refresh_pending:
            self._refresh_pending = True
            QtCore.QTimer.singleShot(0, self.refresh)

    def _store_state(self) -> None:
        self.graph.ui["viewer"] = self.state.to_ui()

    def node_in_slot(self, slot: str) -> Node | None:
        uuid = self.state.inputs.get(slot)
        if uuid is None:
            return None
        try:
            node = self.graph.by_uuid(uuid)
        except KeyError:
            return None
        return node

    def set_input(self, slot: int | str, node: Node | None) -> None:
        """Viewer input ``slot`` (1-9) shows ``node`` (None clears it); slot 1 becomes A if nothing is."""
        slot = str(slot)
        if node is None:
            self.state.inputs.pop(slot, None)
        else:
            self.state.inputs[slot] = node.uuid
            if self.state.mode == "b" and slot != self.state.b:
                self.state.a, self.state.mode = slot, "a"
            elif self.state.mode not in ("wipe", "side", "diff"):
                self.state.a = slot
        self._store_state()
        self._sync_controls()
        self.refresh()

    def view_result(self, node: Node) -> str:
        """Show a rendered node in a free viewer input (or the one already holding it), leaving the A/B
        set-up's inputs alone. Returns the slot."""
        slots = [str(n) for n in range(1, 10)]
        slot = next((k for k in slots if self.state.inputs.get(k) == node.uuid), None) or next(
            (k for k in slots if k not in self.state.inputs and k not in (self.state.a, self.state.b)), "9")
        self.state.inputs[slot] = node.uuid
        self.show_slot(slot)
        return slot

    def set_ab(self, a: int | str, b: int | str) -> None:
        self.state.a, self.state.b = str(a), str(b)
        self._store_state()
        self._sync_controls()
        self.refresh()

    def _sync_controls(self) -> None:
        for combo, current in ((self.a_combo, self.state.a), (self.b_combo, self.state.b)):
            combo.blockSignals(True)
            combo.clear()
            for slot in map(str, range(1, 10)):
                node = self.node_in_slot(slot)
                combo.addItem(f"{slot}: {node.name if node else '—'}", slot)
            combo.setCurrentIndex(int(current) - 1)
            combo.blockSignals(False)
        self.mode_combo.blockSignals(True)
        self.mode_combo.setCurrentIndex(MODES.index(self.state.mode))
        self.mode_combo.blockSignals(False)

    def _on_ab_chosen(self) -> None:
        self.set_ab(self.a_combo.currentData(), self.b_combo.currentData())

    # -- modes ----------------------------------------------------------------------------------------
    def set_mode(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"viewer mode {mode!r} is not one of {MODES}")
        self.state.mode = self.canvas.mode = mode
        self._store_state()
        self._sync_controls()
        self.refresh()

    def show_slot(self, slot: int | str) -> None:
        """Show viewer input ``slot``: it becomes A (B in mode B); a comparison keeps comparing."""
        slot = str(slot)
        if self.node_in_slot(slot) is None:
            self.status_message.emit(f"viewer input {slot} is empty: select a node and press {slot} over the "
                                     f"node graph")
            return
        if self.state.mode == "b":
            self.state.b = slot
        else:
            self.state.a = slot
        self._store_state()
        self._sync_controls()
        self.refresh()

    def toggle_wipe(self) -> None:
        self.set_mode("a" if self.state.mode == "wipe" else "wipe")

    def flip(self) -> None:
        """Show the other of A and B. In the two-image modes, swap which side each one is on."""
        if self.state.mode in ("a", "b"):
            self.set_mode("b" if self.state.mode == "a" else "a")
        else:
            self.set_ab(self.state.b, self.state.a)

    def _on_wipe_moved(self, value: float) -> None:
        self.state.wipe = value
        self._store_state()

    def _on_faces_toggled(self, on: bool) -> None:
        self.canvas.show_faces = on
        self.canvas.update()

    def _on_matte_toggled(self, on: bool) -> None:
        self.canvas.show_matte = on
        self.canvas.update()

    # -- display ----------------------------------------------------------------------------------------
    def display_settings(self) -> DisplaySettings:
        return DisplaySettings(display=self.display_combo.currentText(), view=self.view_combo.currentText(),
                               exposure=self.exposure.value(), gamma=self.gamma.value(),
                               channels=self.channels_combo.currentData(),
                               working_space=self.graph.settings["working_space"], resolution=self._resolution)

    def _on_zoom_changed(self, zoom: float) -> None:
        resolution = display_resolution(zoom * self.canvas.devicePixelRatioF())   # a HiDPI screen's pixels
        if resolution != self._resolution:
            # Zoomed past a power of two: the frames shown are converted again at the new size (the engine's
            # cache holds their images), the old ones stay drawn meanwhile. The playhead rests: no first picture.
            self._resolution = resolution
            self._rested_frame = self.graph.current_frame
            self.schedule_refresh()

    @property
    def proxy(self) -> float:
        return float(self.proxy_combo.currentData())

    def lanes_needed(self) -> dict[str, Node | None]:
        lanes = {"A": self.node_in_slot(self.state.a)}
        lanes["B"] = self.node_in_slot(self.state.b) if self.state.mode != "a" else None
        if self.state.mode == "b":
            lanes["A"] = None
        return lanes

    def set_frame(self, frame: int) -> None:
        frame = max(self.graph.settings["first"], min(self.graph.settings["last"], int(frame)))
        changed = frame != self.graph.current_frame
        self.graph.current_frame = frame
        self.graph.ui.setdefault("timeline", {})["frame"] = frame
        self.timeline.set_frame(frame)
        self.refresh()
        if changed:
            self.frame_changed.emit(frame)

    def refresh(self) -> None:
        """Ask for the frames the current mode shows; cached ones appear at once (no recompute)."""
        self._refresh_pending = False
        settings, proxy, frame = self.display_settings(), self.proxy, self.graph.current_frame
        for lane, node in self.lanes_needed().items():
            if node is None:
                self._wanted[lane] = None
                self._frames[lane] = None
                self._errors.pop(lane, None)
                self.evaluator.cancel(lane)
                continue
            try:
                key = self.evaluator.key_for(node, frame, proxy, settings)
            except DoublureError as exc:
                self._wanted[lane] = None
                self._frames[lane] = None
                self._errors[lane] = LaneError(None, str(exc), exc.node or "")
                self.evaluator.cancel(lane)
                continue
            self._wanted[lane] = key
            failed = self._errors.get(lane)
            if failed is not None and failed.key == key:
                continue  # this very request failed: keep showing why instead of computing it again
            self._errors.pop(lane, None)
            if (frame != self._rested_frame and not self._playing and key not in self.cache
                    and self._request_provisional(lane, node, frame, proxy, settings)):
                # the playhead moved onto a frame not computed: its first picture now, the full one once the
                # playhead rests (stepping or scrubbing on cancels nothing that was started in vain)
                self.evaluator.cancel(lane)
                self._refine_timer.start()
                continue
            ready = self.evaluator.request(lane, node, frame, proxy, settings)
            if ready is not None:
                self._frames[lane] = ready
        self._show()

    def _request_provisional(self, lane: str, node: Node, frame: int, proxy: float,
                             settings: DisplaySettings) -> bool:
        """Ask for the first picture of ``node`` at ``frame`` in ``lane`` (see ``app.provisional``); False when
        there is none cheaper than the full picture."""
        source = provisional_source(node)
        if source is node and proxy <= PROVISIONAL_PROXY:
            return False
        start_previews(source)
        try:
            key = self.quick.key_for(source, frame, PROVISIONAL_PROXY, settings)
        except DoublureError:
            return False   # the full request reports why
        self._provisional_wanted[lane] = key
        self._provisional_for[lane] = self._wanted[lane]
        self._provisional_text[lane] = provisional_text(source, node)
        shown = self._provisional[lane]
        if shown is None or shown.key != key:
            ready = self.quick.request(lane, source, frame, PROVISIONAL_PROXY, settings)
            if ready is not None:
                self._provisional[lane] = ready
        return True

    def _on_rested(self) -> None:
        self._rested_frame = self.graph.current_frame
        self.refresh()

    def _on_provisional_ready(self, lane: str, frame: DisplayFrame) -> None:
        if frame.key == self._provisional_wanted.get(lane):
            self._provisional[lane] = frame
            self._show()

    def _picture(self, lane: str) -> tuple[DisplayFrame | None, str]:
        """(the picture ``lane`` shows, its provisional text or ""): the full frame asked for, else the first
        picture of the frame asked for, else the last frame shown (marked stale)."""
        full, wanted = self._frames[lane], self._wanted[lane]
        if wanted is None or (full is not None and full.key == wanted):
            return full, ""
        first = self._provisional[lane]
        # (after an edit the full picture asked for is another: the old one stays shown, marked stale)
        if first is not None and first.key == self._provisional_wanted[lane] and self._provisional_for[lane] == wanted:
            return first, self._provisional_text.get(lane, "")
        return full, ""

    def picture_state(self) -> str:
        """What the viewer shows of the current frame: "full", "provisional" or "" (an older picture or
        none)."""
        lanes = [lane for lane in ("A", "B") if self._wanted[lane] is not None]
        if not lanes:
            return ""
        states = set()
        for lane in lanes:
            picture, text = self._picture(lane)
            if picture is None or picture.frame != self.graph.current_frame:
                return ""
            states.add("provisional" if text else "full")
        return "provisional" if "provisional" in states else "full"

    def _show(self) -> None:
        self.canvas.stale = any(self._wanted[lane] is not None and (self._frames[lane] is None or
                                self._frames[lane].key != self._wanted[lane]) for lane in ("A", "B"))
        messages = {error.message for error in self._errors.values()}
        self.canvas.message = "\n".join(
            (f"{lane}: " if len(messages) > 1 else "") + error.message
            for lane, error in sorted(self._errors.items()) if len(messages) > 1 or lane == min(self._errors))
        self._publish_errors()
        self.canvas.mode = self.state.mode
        self.canvas.wipe = self.state.wipe
        (a, a_text), (b, b_text) = self._picture("A"), self._picture("B")
        if self.state.mode == "b":
            a, a_text = None, ""
        if self._errors:
            # A comparison with a frame the graph cannot make would show the other side as if it were both.
            a = b = None
        self.canvas.provisional = "" if self._errors else "\n".join(dict.fromkeys(t for t in (a_text, b_text) if t))
        warnings = {}
        for frame, text in ((a, a_text), (b, b_text)):
            if frame is not None and not text:   # (a first picture is the plate's: it warns of nothing)
                warnings.update(warnings_of(frame.image))
        self.canvas.warning = "\n".join(warnings.values())
        if warnings != self._published_warnings:
            self._published_warnings = warnings
            self.warnings_changed.emit(warnings)
        self.canvas.set_frames(a, b)

    def errors(self) -> dict[str, str]:
        """Node name -> message for the nodes the frames on screen fail in ("" for an unknown node)."""
        return {error.node: error.message for error in self._errors.values()}

    def _publish_errors(self) -> None:
        errors = self.errors()
        if errors != self._published_errors:
            self._published_errors = errors
            self.errors_changed.emit(errors)

    def show_notice(self, text: str, seconds: float = 6.0) -> None:
        """A passing remark over the picture (a refused knob value), gone after ``seconds``."""
        self.canvas.notice = text
        if text:
            self._notice_timer.start(int(seconds * 1000))
        self.canvas.update()

    def is_current(self) -> bool:
        """Every frame the mode needs is on screen for the current frame, graph and settings."""
        return not self._refresh_pending and not any(self._wanted[lane] is not None and (self._frames[lane] is None or
                       self._frames[lane].key != self._wanted[lane]) for lane in ("A", "B"))

    def _on_frame_ready(self, lane: str, frame: DisplayFrame) -> None:
        if lane in self._wanted and frame.key == self._wanted[lane]:
            self._frames[lane] = frame
            self._errors.pop(lane, None)
            self._show()
            if self._playing:
                self._prefetch()

    def _on_frame_failed(self, lane: str, key: tuple, message: str, node: str) -> None:
        if lane in self._wanted and key == self._wanted[lane]:
            self._errors[lane] = LaneError(key, message, node)
            self._frames[lane] = None
            self._show()
            self.status_message.emit(message)

    def _on_painted(self) -> None:
        if self.is_current():
            self.frame_shown.emit()
            if self._playing:
                self._play_times.append(time.perf_counter())

    def _on_probe(self, x: float, y: float) -> None:
        frame = self.canvas._overlay_frame()
        if frame is None:
            return
        xi, yi = int(np.floor(x)), int(np.floor(y))
        if not (0 <= xi < frame.image.width and 0 <= yi < frame.image.height):
            self.probe_label.setText(f" x {xi} y {yi}")
            return
        tensor = frame.image.tensor
        working = " ".join(f"{float(v):.4f}" for v in tensor[:, yi, xi].float().cpu())
        disp = frame.display_pixel(xi, yi)
        full = f" (full res {x / frame.proxy:.0f}, {y / frame.proxy:.0f})" if frame.proxy != 1 else ""
        self.probe_label.setText(f" x {xi} y {yi}{full}   {'/'.join(frame.image.channels)} {working}   "
                                 f"display {disp[0]} {disp[1]} {disp[2]}")

    # -- timeline and playback ------------------------------------------------------------------------
    def _on_in_out(self, in_point: int | None, out_point: int | None) -> None:
        self.graph.ui.setdefault("timeline", {}).update({"in": in_point, "out": out_point})

    def update_cache_line(self) -> None:
        node = self.node_in_slot(self.state.b if self.state.mode == "b" else self.state.a)
        if node is None or not self.isVisible():
            return
        first, last = self.graph.settings["first"], self.graph.settings["last"]
        if last - first > 2000:
            return
        settings, proxy = self.display_settings(), self.proxy
        cached = set()
        try:
            for frame in range(first, last + 1):
                if self.graph.is_cached(node, frame, proxy) or \
                        self.evaluator.key_for(node, frame, proxy, settings) in self.cache:
                    cached.add(frame)
        except DoublureError:
            return
        self.timeline.set_cached(frozenset(cached))

    def play(self, direction: int) -> None:
        """Play forward (+1), backward (-1) or stop (0) at the project fps, looping over in/out; a frame
        that is not ready holds playback until it is (frames are cached as they render)."""
        self._playing = direction
        self._play_times.clear()
        if direction == 0:
            self._play_timer.stop()
            self.evaluator.cancel("prefetch")
            self.evaluator.cancel("ahead")
            self.timeline.fps_label.setText("")
            return
        self._play_timer.start(max(1, int(round(1000.0 / self.graph.settings["fps"]))))
        self._prefetch()

    def _next_play_frame(self, steps: int = 1) -> int:
        """The frame playback shows ``steps`` frames from now (looping over the play range)."""
        first, last = self.timeline.play_range()
        frame = self.graph.current_frame
        for _ in range(steps):
            frame += self._playing
            if frame > last:
                frame = first
            elif frame < first:
                frame = last
        return frame

    def _prefetch(self) -> None:
        """Ask for the next two frames playback shows (computed at once by the evaluator's two workers)."""
        node = self.lanes_needed()["A"] or self.lanes_needed()["B"]
        if node is not None and self._playing:
            try:
                for steps, lane in enumerate(("prefetch", "ahead"), start=1):
                    self.evaluator.request(lane, node, self._next_play_frame(steps), self.proxy,
                                           self.display_settings())
            except DoublureError:
                pass

    def _play_tick(self) -> None:
        if not self.is_current():
            return  # hold until the frame on screen is the one asked for
        self.set_frame(self._next_play_frame())
        times = self._play_times[-25:]
        if len(times) >= 2:
            self.timeline.fps_label.setText(f"{(len(times) - 1) / (times[-1] - times[0]):.1f} fps")
        self._prefetch()

    def played_fps(self) -> float:
        """Frames painted per second over the playback so far."""
        times = self._play_times
        return (len(times) - 1) / (times[-1] - times[0]) if len(times) >= 2 else 0.0

    # -- painting -------------------------------------------------------------------------------------
    def set_paint_target(self, node: Node | None) -> None:
        self.paint_target = node if strokes_knob(node) else None
        knob = strokes_knob(self.paint_target)
        target = self.paint_target
        self.canvas.strokes_at = None if target is None else lambda frame: target.knob(knob).value_at(frame)
        # a node whose painted frames mean something (Occlusion: its training frames) paints this frame only
        frame_only = bool(getattr(target, "paint_frame_only", False))
        if frame_only:
            self.brush_scope.setCurrentIndex(self.brush_scope.findData("only"))
        self.brush_scope.setEnabled(not frame_only)
        self.canvas.update()
        self.brush_target.setText(f"  painting into {self.paint_target.name}" if self.paint_target
                                  else "  select a node with strokes (EyeFix) to paint")

    def _on_paint_toggled(self, on: bool) -> None:
        self.canvas.paint_enabled = on
        self.brush_bar.setVisible(on)
        self.set_paint_target(self.paint_target)
        self.canvas.update()

    def _on_stroke(self, points: list) -> None:
        node = self.paint_target
        frame = self.canvas._overlay_frame()
        if node is None:
            self.status_message.emit("paint: select a node with a strokes knob (EyeFix) first")
            return
        if frame is None:
            return
        knob = strokes_knob(node)
        try:
            # The brush size is in full-resolution pixels; the path is in the shown frame's (proxy) pixels.
            brush = dataclasses.replace(self.canvas.brush, size=self.canvas.brush.size * frame.proxy)
            if getattr(node, "paint_frame_only", False):   # its strokes say which frames were painted
                brush = dataclasses.replace(brush, scope="only")
            stroke = stroke_from_plate_path(frame.image.faces, points, brush, frame.frame, node.name)
            self.graph.set_knob(node, knob, list(node.knob(knob).value_at(frame.frame)) + [stroke])
            self.canvas.update()   # drawn now, whether or not the image shown depends on the strokes
        except DoublureError as exc:
            self.status_message.emit(str(exc))

    def shutdown(self) -> None:
        self.play(0)
        self._cache_line_timer.stop()
        self._refine_timer.stop()
        self.evaluator.shutdown()
        self.quick.shutdown()

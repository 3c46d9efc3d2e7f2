"""The timeline under the viewer: frame range, scrub, a cache line, in/out points and transport buttons."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtWidgets


class TimeRuler(QtWidgets.QWidget):
    """The scrub bar: ticks, the current frame, in/out shading and a green line over cached frames."""

    scrubbed = QtCore.Signal(int)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.first, self.last, self.frame = 1, 100, 1
        self.in_point: int | None = None
        self.out_point: int | None = None
        self.cached: frozenset[int] = frozenset()
        self.setMinimumHeight(34)
        self.setSizePolicy(QtWidgets.QSizePolicy.Policy.Expanding, QtWidgets.QSizePolicy.Policy.Fixed)
        self.setToolTip("Drag to scrub; the green line marks frames in the cache")

    def _x_of(self, frame: float) -> float:
        span = max(1, self.last - self.first)
        return 8 + (frame - self.first) / span * (self.width() - 16)

    def frame_at(self, x: float) -> int:
        span = max(1, self.last - self.first)
        frame = self.first + round((x - 8) / max(1.0, self.width() - 16) * span)
        return max(self.first, min(self.last, frame))

    def paintEvent(self, event: QtGui.QPaintEvent) -> None:  # noqa: N802 (Qt naming)
        p = QtGui.QPainter(self)
        p.fillRect(self.rect(), QtGui.QColor(38, 38, 38))
        h = self.height()
        if self.in_point is not None or self.out_point is not None:
            x0 = self._x_of(self.in_point if self.in_point is not None else self.first)
            x1 = self._x_of(self.out_point if self.out_point is not None else self.last)
            p.fillRect(QtCore.QRectF(x0, 0, x1 - x0, h), QtGui.QColor(55, 55, 70))
        p.setPen(QtGui.QColor(120, 120, 120))
        span = max(1, self.last - self.first)
        max_ticks = max(4, self.width() // 60)
        step = next(s for s in (m * 10**e for e in range(7) for m in (1, 2, 5)) if span / s <= max_ticks)
        font = p.font()
        font.setPointSizeF(7.5)
        p.setFont(font)
        start = (self.first // step) * step
        for f in range(start, self.last + 1, step):
            if f < self.first:
                continue
            x = self._x_of(f)
            p.drawLine(QtCore.QPointF(x, h - 12), QtCore.QPointF(x, h - 4))
            p.drawText(QtCore.QPointF(x + 2, h - 14), str(f))
        if self.cached:
            pen = QtGui.QPen(QtGui.QColor(60, 200, 90), 3)
            p.setPen(pen)
            width = max(1.0, (self.width() - 16) / (span + 1))
            for f in self.cached:
                if self.first <= f <= self.last:
                    x = self._x_of(f)
                    p.drawLine(QtCore.QPointF(x - width / 2, h - 2), QtCore.QPointF(x + width / 2, h - 2))
        x = self._x_of(self.frame)
        p.setPen(QtGui.QPen(QtGui.QColor(240, 170, 40), 2))
        p.drawLine(QtCore.QPointF(x, 0), QtCore.QPointF(x, h))
        p.drawText(QtCore.QPointF(x + 3, 10), str(self.frame))
        p.end()

    def mousePressEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802
        self.scrubbed.emit(self.frame_at(event.position().x()))

    def mouseMoveEvent(self, event: QtGui.QMouseEvent) -> None:  # noqa: N802
        if event.buttons() & QtCore.Qt.MouseButton.LeftButton:
            self.scrubbed.emit(self.frame_at(event.position().x()))


class Timeline(QtWidgets.QWidget):
    """Transport controls around a TimeRuler. The viewer panel drives playback; this widget only asks."""

    frame_requested = QtCore.Signal(int)
    play_requested = QtCore.Signal(int)  # +1 forward, -1 backward, 0 stop
    in_out_changed = QtCore.Signal(object, object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.ruler = TimeRuler(self)
        self.ruler.scrubbed.connect(self.frame_requested)
        style = self.style()
        SP = QtWidgets.QStyle.StandardPixmap

        def button(icon: QtWidgets.QStyle.StandardPixmap, tip: str, slot) -> QtWidgets.QToolButton:
            b = QtWidgets.QToolButton(self)
            b.setIcon(style.standardIcon(icon))
            b.setToolTip(tip)
            b.setAutoRaise(True)
            b.clicked.connect(slot)
            return b

        self.first_button = button(SP.SP_MediaSkipBackward, "First frame (Home)", lambda: self._jump("first"))
        self.prev_button = button(SP.SP_MediaSeekBackward, "Previous frame (Left)", lambda: self.step(-1))
        self.back_button = button(SP.SP_ArrowLeft, "Play backward (J)", lambda: self.play_requested.emit(-1))
        self.stop_button = button(SP.SP_MediaStop, "Stop (K)", lambda: self.play_requested.emit(0))
        self.play_button = button(SP.SP_MediaPlay, "Play forward (L)", lambda: self.play_requested.emit(1))
        self.next_button = button(SP.SP_MediaSeekForward, "Next frame (Right)", lambda: self.step(1))
        self.last_button = button(SP.SP_MediaSkipForward, "Last frame (End)", lambda: self._jump("last"))
        self.frame_box = QtWidgets.QSpinBox(self)
        self.frame_box.setKeyboardTracking(False)
        self.frame_box.setToolTip("Current frame")
        self.frame_box.valueChanged.connect(self.frame_requested)
        self.in_button = QtWidgets.QPushButton("In", self)
        self.in_button.setToolTip("Set the in point at the current frame (I); again to clear")
        self.in_button.clicked.connect(self.toggle_in)
        self.out_button = QtWidgets.QPushButton("Out", self)
        self.out_button.setToolTip("Set the out point at the current frame (O); again to clear")
        self.out_button.clicked.connect(self.toggle_out)
        for b in (self.in_button, self.out_button):
            b.setFixedWidth(40)
        self.fps_label = QtWidgets.QLabel("", self)
        self.fps_label.setMinimumWidth(90)
        row = QtWidgets.QHBoxLayout()
        row.setContentsMargins(0, 0, 0, 0)
        row.setSpacing(2)
        for w in (self.first_button, self.prev_button, self.back_button, self.stop_button, self.play_button,
                  self.next_button, self.last_button, self.frame_box, self.in_button, self.out_button):
            row.addWidget(w)
        row.addStretch(1)
        row.addWidget(self.fps_label)
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(4, 2, 4, 2)
        layout.setSpacing(2)
        layout.addWidget(self.ruler)
        layout.addLayout(row)

    # -- state ----------------------------------------------------------------------------------------
    def set_range(self, first: int, last: int) -> None:
        self.ruler.first, self.ruler.last = int(first), int(last)
        self.frame_box.blockSignals(True)
        self.frame_box.setRange(int(first), int(last))
        self.frame_box.blockSignals(False)
        self.ruler.update()

    def set_frame(self, frame: int) -> None:
        self.ruler.frame = int(frame)
        self.frame_box.blockSignals(True)
        self.frame_box.setValue(int(frame))
        self.frame_box.blockSignals(False)
        self.ruler.update()

    def set_cached(self, frames: frozenset[int]) -> None:
        if frames != self.ruler.cached:
            self.ruler.cached = frames
            self.ruler.update()

    def set_in_out(self, in_point: int | None, out_point: int | None) -> None:
        self.ruler.in_point, self.ruler.out_point = in_point, out_point
        self.in_button.setText(f"In {in_point}" if in_point is not None else "In")
        self.out_button.setText(f"Out {out_point}" if out_point is not None else "Out")
        for b in (self.in_button, self.out_button):
            b.setFixedWidth(40 if b.text() in ("In", "Out") else 70)
        self.ruler.update()

    def play_range(self) -> tuple[int, int]:
        """The frames playback loops over: in to out, the whole range where they are unset."""
        first = self.ruler.in_point if self.ruler.in_point is not None else self.ruler.first
        last = self.ruler.out_point if self.ruler.out_point is not None else self.ruler.last
        return first, max(first, last)

    # -- actions --------------------------------------------------------------------------------------
    def step(self, delta: int) -> None:
        first, last = self.ruler.first, self.ruler.last
        self.frame_requested.emit(max(first, min(last, self.ruler.frame + delta)))

    def _jump(self, where: str) -> None:
        first, last = self.play_range()
        self.frame_requested.emit(first if where == "first" else last)

    def toggle_in(self) -> None:
        value = None if self.ruler.in_point == self.ruler.frame else self.ruler.frame
        self.set_in_out(value, self.ruler.out_point)
        self.in_out_changed.emit(self.ruler.in_point, self.ruler.out_point)

    def toggle_out(self) -> None:
        value = None if self.ruler.out_point == self.ruler.frame else self.ruler.frame
        self.set_in_out(self.ruler.in_point, value)
        self.in_out_changed.emit(self.ruler.in_point, self.ruler.out_point)

"""The project settings panel (Nuke's Project Settings): frame range, frame rate and working colour space.

Every change is one undo step through ``Graph.set_setting``; a refused value (a range that runs backwards)
keeps the old one and says why. The panel follows the graph: undo, redo or a project opened update it.
"""
from __future__ import annotations

from typing import Any, Callable

from PySide6 import QtCore, QtWidgets

from doublure.engine import DoublureError, Graph, GraphEvent
from doublure.engine import colour

from .events import subscribe_on_ui_thread


class ProjectSettingsPanel(QtWidgets.QWidget):
    """First and last frame, fps and working space of the open project."""

    status_message = QtCore.Signal(str)

    def __init__(self, graph: Graph, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.first = QtWidgets.QSpinBox(self)
        self.last = QtWidgets.QSpinBox(self)
        for field in (self.first, self.last):
            field.setRange(-1_000_000, 10_000_000)
            field.setKeyboardTracking(False)
        self.first.setToolTip("First frame of the project (the timeline and a render's default range)")
        self.last.setToolTip("Last frame of the project")
        self.fps = QtWidgets.QDoubleSpinBox(self)
        self.fps.setRange(0.001, 1000.0)
        self.fps.setDecimals(3)
        self.fps.setKeyboardTracking(False)
        self.fps.setToolTip("Frames per second: playback and the frame rate written to movies")
        self.working_space = QtWidgets.QComboBox(self)
        self.working_space.addItems(list(colour.colorspace_choices()))
        self.working_space.setToolTip("Scene-linear colour space images are processed in (OCIO)")
        self.error = QtWidgets.QLabel(self)
        self.error.setWordWrap(True)
        self.error.setStyleSheet("color: #ff7a64;")
        self.error.setVisible(False)
        form = QtWidgets.QFormLayout(self)
        form.addRow("First frame", self.first)
        form.addRow("Last frame", self.last)
        form.addRow("Frame rate", self.fps)
        form.addRow("Working space", self.working_space)
        form.addRow(self.error)
        self.first.valueChanged.connect(lambda v: self.apply("first", int(v)))
        self.last.valueChanged.connect(lambda v: self.apply("last", int(v)))
        self.fps.valueChanged.connect(lambda v: self.apply("fps", float(v)))
        self.working_space.activated.connect(lambda _: self.apply("working_space", self.working_space.currentText()))
        self._unsubscribe: Callable[[], None] | None = None
        self.set_graph(graph)

    def set_graph(self, graph: Graph) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.graph = graph
        self._unsubscribe = subscribe_on_ui_thread(graph, self._on_event, self)
        self.refresh()

    def _on_event(self, event: GraphEvent) -> None:
        if event.kind == "settings":
            self.refresh()

    def apply(self, key: str, value: Any) -> None:
        """Set one project setting as an undo step; a refusal keeps the old value and is shown."""
        if self.graph.settings[key] == value:
            return
        try:
            self.graph.set_setting(key, value)
        except DoublureError as exc:
            self.error.setText(str(exc))
            self.error.setVisible(True)
            self.status_message.emit(str(exc))
        else:
            self.error.setVisible(False)
        self.refresh()

    def refresh(self) -> None:
        s = self.graph.settings
        for widget, value in ((self.first, s["first"]), (self.last, s["last"]), (self.fps, s["fps"])):
            widget.blockSignals(True)
            widget.setValue(value)
            widget.blockSignals(False)
        self.working_space.blockSignals(True)
        if self.working_space.findText(s["working_space"]) < 0:
            self.working_space.addItem(s["working_space"])
        self.working_space.setCurrentText(s["working_space"])
        self.working_space.blockSignals(False)

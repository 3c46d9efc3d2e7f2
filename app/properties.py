"""The properties panel: a node's knobs as typed widgets, animation buttons, and its action buttons.

Every change goes through the graph's undo stack: a constant knob is set, an animated knob gets a key at
the current frame (as in Nuke). Animated knobs are tinted; at a key frame the tint is brighter.
"""
from __future__ import annotations

import html
import os
import threading
from typing import Any, Callable

from PySide6 import QtCore, QtGui, QtWidgets

from doublure.engine import CancelToken, Cancelled, DoublureError, Graph, GraphEvent, Node
from doublure.engine import knobs as K
from doublure.engine.render import is_executable

from .events import subscribe_on_ui_thread

ANIMATED_STYLE = "background-color: #2d4263;"
KEY_STYLE = "background-color: #3f6fb5;"
MAX_PANELS = 4


def wrapped_tooltip(text: str) -> str:
    """A tooltip Qt wraps at a readable width (it wraps rich text, never plain text)."""
    if not text:
        return ""
    return "<p style='white-space:pre-wrap; max-width: 28em'>" + html.escape(text) + "</p>"


class KnobEditor(QtWidgets.QWidget):
    """Base of the per-kind editors: reads the knob at the graph's current frame, commits edits."""

    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel)
        self.panel, self.name = panel, name
        self.layout_ = QtWidgets.QHBoxLayout(self)
        self.layout_.setContentsMargins(0, 0, 0, 0)
        self.layout_.setSpacing(3)
        self.setToolTip(wrapped_tooltip(self.spec.tooltip))

    @property
    def node(self) -> Node:
        return self.panel.node

    @property
    def graph(self) -> Graph:
        return self.panel.node.graph

    @property
    def knob(self) -> K.Knob:
        return self.node.knob(self.name)

    @property
    def spec(self) -> K.KnobSpec:
        return self.panel.node.knob(self.name).spec

    def value(self) -> Any:
        return self.knob.value_at(self.graph.current_frame)

    def commit(self, value: Any) -> None:
        """Set the knob (a key at the current frame when it is animated); a refusal says why. A value the node
        cannot make a frame with (its ``edit_problem``: a Reformat to a format beyond the memory budget) is
        refused, the old value kept."""
        try:
            if self.knob.is_animated:
                self.graph.set_key(self.node, self.name, self.graph.current_frame, value)
            elif value != self.knob.value_at(self.graph.current_frame):
                problem = getattr(self.node, "edit_problem", None)
                problem = problem(self.graph.current_frame, self.name, value) if callable(problem) else None
                if problem:
                    raise DoublureError(f"{problem}; {self.name} kept at {self.knob.value_at(self.graph.current_frame)}")
                self.graph.set_knob(self.node, self.name, value)
        except DoublureError as exc:
            self.panel.show_refusal(str(exc))
        else:
            self.panel.show_refusal("")
        self.refresh()

    def refresh(self) -> None:
        raise NotImplementedError

    def tint(self, widgets: list[QtWidgets.QWidget]) -> None:
        knob = self.knob
        style = ""
        if knob.is_animated:
            style = KEY_STYLE if float(self.graph.current_frame) in knob.key_frames() else ANIMATED_STYLE
        for w in widgets:
            w.setStyleSheet(style)


def _blocked(widget: QtWidgets.QWidget, fn: Callable[[], None]) -> None:
    widget.blockSignals(True)
    try:
        fn()
    finally:
        widget.blockSignals(False)


class NumberEditor(KnobEditor):
    """Float or Int: a typed field and, when the knob has a range, a slider over its soft range."""

    STEPS = 1000

    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        spec = self.spec
        self.is_int = spec.kind == "int"
        self.field = QtWidgets.QSpinBox(self) if self.is_int else QtWidgets.QDoubleSpinBox(self)
        if not self.is_int:
            self.field.setDecimals(4)
        lo = spec.min if spec.min is not None else -1e9
        hi = spec.max if spec.max is not None else 1e9
        self.field.setRange(int(max(lo, -2**31 + 1)) if self.is_int else lo, int(min(hi, 2**31 - 1)) if self.is_int else hi)
        self.field.setKeyboardTracking(False)
        self.field.setMinimumWidth(80)
        self.field.valueChanged.connect(lambda v: self.commit(int(v) if self.is_int else float(v)))
        self.layout_.addWidget(self.field)
        self.slider: QtWidgets.QSlider | None = None
        self.soft = (spec.soft_min, spec.soft_max)
        if spec.soft_min is not None and spec.soft_max is not None and spec.soft_max > spec.soft_min:
            self.slider = QtWidgets.QSlider(QtCore.Qt.Orientation.Horizontal, self)
            self.slider.setRange(0, self.STEPS)
            # One undo step per drag: the value is committed when the slider is released.
            self.slider.setTracking(False)
            self.slider.valueChanged.connect(self._slider_moved)
            self.layout_.addWidget(self.slider, 1)
        if spec.animatable:
            self.layout_.addWidget(AnimationButton(self))
        self.refresh()

    def _slider_moved(self, position: int) -> None:
        lo, hi = self.soft
        value = lo + (hi - lo) * position / self.STEPS
        self.commit(int(round(value)) if self.is_int else float(value))

    def refresh(self) -> None:
        value = self.value()
        _blocked(self.field, lambda: self.field.setValue(value))
        if self.slider is not None:
            lo, hi = self.soft
            _blocked(self.slider, lambda: self.slider.setValue(int(round((value - lo) / (hi - lo) * self.STEPS))))
        self.tint([self.field])


class ColorEditor(KnobEditor):
    """RGB(A) fields and a swatch that opens a colour picker."""

    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        self.fields = []
        for i in range(self.spec.size):
            f = QtWidgets.QDoubleSpinBox(self)
            f.setDecimals(4)
            f.setRange(self.spec.min if self.spec.min is not None else -1e6,
                       self.spec.max if self.spec.max is not None else 1e6)
            f.setSingleStep(0.01)
            f.setKeyboardTracking(False)
            f.setToolTip("RGBA"[i])
            f.valueChanged.connect(lambda _: self.commit(tuple(x.value() for x in self.fields)))
            self.fields.append(f)
            self.layout_.addWidget(f)
        self.swatch = QtWidgets.QToolButton(self)
        self.swatch.setToolTip("Pick a colour")
        self.swatch.clicked.connect(self._pick)
        self.layout_.addWidget(self.swatch)
        self.layout_.addWidget(AnimationButton(self))
        self.refresh()

    def _pick(self) -> None:
        value = self.value()
        start = QtGui.QColor.fromRgbF(*(min(1.0, max(0.0, c)) for c in value[:3]))
        chosen = QtWidgets.QColorDialog.getColor(start, self, f"{self.node.name}.{self.name}")
        if chosen.isValid():
            self.commit((chosen.redF(), chosen.greenF(), chosen.blueF(), *value[3:]))

    def refresh(self) -> None:
        value = self.value()
        for f, c in zip(self.fields, value):
            _blocked(f, lambda f=f, c=c: f.setValue(c))
        rgb = [int(255 * min(1.0, max(0.0, c)) ** (1 / 2.2)) for c in value[:3]]
        self.swatch.setStyleSheet(f"background-color: rgb({rgb[0]}, {rgb[1]}, {rgb[2]});")
        self.tint(self.fields)


class BoolEditor(KnobEditor):
    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        self.box = QtWidgets.QCheckBox(self)
        self.box.toggled.connect(self.commit)
        self.layout_.addWidget(self.box)
        self.layout_.addStretch(1)
        self.refresh()

    def refresh(self) -> None:
        _blocked(self.box, lambda: self.box.setChecked(bool(self.value())))


class EnumEditor(KnobEditor):
    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        self.combo = QtWidgets.QComboBox(self)
        self.combo.addItems(list(self.spec.choices))
        self.combo.activated.connect(lambda i: self.commit(self.spec.choices[i]))
        self.layout_.addWidget(self.combo, 1)
        self.refresh()

    def refresh(self) -> None:
        _blocked(self.combo, lambda: self.combo.setCurrentText(self.value()))


class TextEditor(KnobEditor):
    """String and FrameRange knobs: a line edit committed on Enter or leaving the field."""

    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        self.edit = QtWidgets.QLineEdit(self)
        if self.spec.kind == "framerange":
            self.edit.setPlaceholderText("project range (e.g. 1-100, 1-100x2, 1,5,10-20)")
        self.edit.editingFinished.connect(lambda: self.commit(self.edit.text()))
        self.layout_.addWidget(self.edit, 1)
        self.refresh()

    def refresh(self) -> None:
        if not self.edit.hasFocus() or self.edit.text() == self.value():
            _blocked(self.edit, lambda: self.edit.setText(self.value()))


def sequence_pattern_for(path: str) -> str:
    """The frame pattern (``plate.####.exr``) of the sequence holding ``path``, or ``path`` itself when
    the file is not part of a numbered sequence."""
    from doublure.engine.imageio import detect_sequences, frame_path

    folder = os.path.dirname(path) or "."
    try:
        sequences = detect_sequences(folder)
    except OSError:
        return path
    name = os.path.basename(path)
    for seq in sequences:
        if len(seq.frames) > 1 and any(os.path.basename(frame_path(seq.pattern, f)) == name for f in seq.frames):
            return os.path.join(folder, os.path.basename(seq.pattern))
    return path


class FileEditor(KnobEditor):
    """A path field with a picker; picking one frame of a numbered sequence gives the sequence's pattern."""

    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        self.edit = QtWidgets.QLineEdit(self)
        self.edit.editingFinished.connect(lambda: self.commit(self.edit.text()))
        self.button = QtWidgets.QToolButton(self)
        self.button.setText("…")
        self.button.setToolTip("Choose a file")
        self.button.clicked.connect(self._browse)
        self.layout_.addWidget(self.edit, 1)
        self.layout_.addWidget(self.button)
        self.refresh()

    def commit(self, value: Any) -> None:
        """Set the path; a node that can detect its files' frame range (Read) takes the new file's range in
        the same undo step, as a typed or picked path would in Nuke."""
        detect = getattr(self.node, "action_detect_range", None)
        if detect is None or self.name != "file" or self.knob.is_animated or value == self.value():
            super().commit(value)
            return
        try:
            with self.graph.undo_group(f"Set {self.node.name}.{self.name}"):
                self.graph.set_knob(self.node, self.name, value)
                try:
                    detect(self.graph)
                except DoublureError:
                    pass  # no files there yet: the range stays and the viewer shows what is missing
        except DoublureError as exc:
            self.panel.show_refusal(str(exc))
        else:
            self.panel.show_refusal("")
        self.refresh()

    def _browse(self) -> None:
        spec = self.spec
        start = self.node.path(self.name) or self.graph.project_dir or os.getcwd()
        filt = f"Files ({spec.pattern});;All files (*)"
        if spec.save:
            path, _ = QtWidgets.QFileDialog.getSaveFileName(self, f"{self.node.name}.{self.name}", start, filt)
        else:
            path, _ = QtWidgets.QFileDialog.getOpenFileName(self, f"{self.node.name}.{self.name}", start, filt)
        if path:
            self.commit(sequence_pattern_for(path) if spec.sequence else path)

    def refresh(self) -> None:
        _blocked(self.edit, lambda: self.edit.setText(self.value()))


class StrokesEditor(KnobEditor):
    """The number of painted strokes, with Clear (paint them in the viewer with the brush)."""

    def __init__(self, panel: "NodePanel", name: str) -> None:
        super().__init__(panel, name)
        self.label = QtWidgets.QLabel(self)
        self.clear = QtWidgets.QPushButton("Clear", self)
        self.clear.clicked.connect(lambda: self.commit([]))
        self.layout_.addWidget(self.label, 1)
        self.layout_.addWidget(self.clear)
        self.refresh()

    def refresh(self) -> None:
        n = len(self.value())
        self.label.setText(f"{n} stroke{'s' if n != 1 else ''} — paint in the viewer (P)")


EDITORS: dict[str, type[KnobEditor]] = {
    "float": NumberEditor, "int": NumberEditor, "color": ColorEditor, "bool": BoolEditor, "enum": EnumEditor,
    "string": TextEditor, "framerange": TextEditor, "file": FileEditor, "strokes": StrokesEditor,
}


class AnimationButton(QtWidgets.QToolButton):
    """Set key / delete key / previous key / next key / remove animation for one knob."""

    def __init__(self, editor: KnobEditor) -> None:
        super().__init__(editor)
        self.editor = editor
        self.setText("◆")
        self.setToolTip("Animation")
        self.setPopupMode(QtWidgets.QToolButton.ToolButtonPopupMode.InstantPopup)
        menu = QtWidgets.QMenu(self)
        self.set_key_action = menu.addAction("Set key", self.set_key)
        self.delete_key_action = menu.addAction("Delete key", self.delete_key)
        menu.addAction("Previous key", lambda: self.jump(-1))
        menu.addAction("Next key", lambda: self.jump(1))
        menu.addAction("No animation", self.clear_animation)
        self.setMenu(menu)

    def set_key(self) -> None:
        e = self.editor
        e.graph.set_key(e.node, e.name, e.graph.current_frame, e.value())

    def delete_key(self) -> None:
        e = self.editor
        try:
            e.graph.remove_key(e.node, e.name, e.graph.current_frame)
        except DoublureError as exc:
            e.panel.status_message.emit(str(exc))

    def jump(self, direction: int) -> None:
        e = self.editor
        frame = e.graph.current_frame
        keys = [k for k in e.knob.key_frames() if (k > frame if direction > 0 else k < frame)]
        if keys:
            e.panel.frame_requested.emit(int(min(keys) if direction > 0 else max(keys)))

    def clear_animation(self) -> None:
        e = self.editor
        if e.knob.is_animated:
            e.graph.set_knob(e.node, e.name, e.value())


class ActionRunner(QtCore.QObject):
    """Runs ``node.action_<name>(graph, progress=, cancel=)`` on a worker thread."""

    progressed = QtCore.Signal(float, str)
    finished = QtCore.Signal(str)  # "" on success, else the error

    def __init__(self, node: Node, action: str, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.node, self.action = node, action
        self.cancel = CancelToken()

    def start(self) -> None:
        threading.Thread(target=self._run, name=f"doublure-action-{self.action}", daemon=True).start()

    def _progress(self, *args: Any) -> None:
        # Actions report progress(done, total) or progress(fraction[, message]).
        if len(args) >= 2 and isinstance(args[1], (int, float)) and args[1]:
            self.progressed.emit(float(args[0]) / float(args[1]), "")
        elif args:
            self.progressed.emit(float(args[0]), str(args[1]) if len(args) > 1 else "")

    def _run(self) -> None:
        method = getattr(self.node, f"action_{self.action}")
        try:
            method(self.node.graph, progress=self._progress, cancel=self.cancel)
        except Cancelled:
            self.finished.emit("cancelled")
        except DoublureError as exc:
            self.finished.emit(str(exc))
        except Exception as exc:  # an action's bug is reported, not fatal to the app
            self.finished.emit(f"{type(exc).__name__}: {exc}")
        else:
            self.finished.emit("")


class NodePanel(QtWidgets.QFrame):
    """One node's knobs: name, type, editors in a form, and action buttons with a progress bar."""

    closed = QtCore.Signal(object)

    def __init__(self, node: Node, properties: "PropertiesPanel") -> None:
        super().__init__(properties)
        self.node = node
        self.status_message = properties.status_message
        self.frame_requested = properties.frame_requested
        self.knob_refused = properties.knob_refused
        self.refusal_changed = properties.refusal_changed
        self.setFrameShape(QtWidgets.QFrame.Shape.StyledPanel)
        header = QtWidgets.QHBoxLayout()
        self.name_edit = QtWidgets.QLineEdit(node.name, self)
        self.name_edit.setToolTip("Node name (Enter renames)")
        self.name_edit.editingFinished.connect(self._rename)
        title = QtWidgets.QLabel(f"<b>{node.type_name}</b>", self)
        close = QtWidgets.QToolButton(self)
        close.setText("✕")
        close.setToolTip("Close this node's panel")
        close.clicked.connect(lambda: self.closed.emit(self))
        header.addWidget(title)
        header.addWidget(self.name_edit, 1)
        header.addWidget(close)
        self.form = QtWidgets.QFormLayout()
        self.form.setFieldGrowthPolicy(QtWidgets.QFormLayout.FieldGrowthPolicy.AllNonFixedFieldsGrow)
        self.editors: dict[str, KnobEditor] = {}
        for name, knob in node.knobs.items():
            if knob.spec.hidden or knob.spec.kind not in EDITORS:
                continue
            editor = EDITORS[knob.spec.kind](self, name)
            self.editors[name] = editor
            label = QtWidgets.QLabel(knob.spec.label, self)
            label.setToolTip(wrapped_tooltip(knob.spec.tooltip))
            self.form.addRow(label, editor)
        # A refused value, in red under the header until the next accepted edit (the knob kept its value).
        self.error_label = QtWidgets.QLabel(self)
        self.error_label.setWordWrap(True)
        self.error_label.setStyleSheet("color: #ff7a64;")
        self.error_label.setVisible(False)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(header)
        layout.addWidget(self.error_label)
        layout.addLayout(self.form)
        self.action_buttons: dict[str, QtWidgets.QPushButton] = {}
        self.runner: ActionRunner | None = None
        if is_executable(node):  # a Write renders from its own panel, as in Nuke
            self.render_button = QtWidgets.QPushButton("Render…", self)
            self.render_button.setToolTip(f"Render {node.name} over the project range in the Render panel")
            self.render_button.clicked.connect(lambda: properties.render_requested.emit(node))
            layout.addWidget(self.render_button)
        if node.actions:
            row = QtWidgets.QHBoxLayout()
            for action, label in node.actions:
                button = QtWidgets.QPushButton(label, self)
                button.clicked.connect(lambda _=False, a=action: self.run_action(a))
                self.action_buttons[action] = button
                row.addWidget(button)
            self.cancel_button = QtWidgets.QPushButton("Cancel", self)
            self.cancel_button.setEnabled(False)
            self.cancel_button.clicked.connect(lambda: self.runner and self.runner.cancel.cancel())
            row.addWidget(self.cancel_button)
            layout.addLayout(row)
            self.progress = QtWidgets.QProgressBar(self)
            self.progress.setRange(0, 1000)
            self.progress.setVisible(False)
            layout.addWidget(self.progress)
        # a node with an analysis tells what it holds (what a matte was trained on, or why it is not applied)
        self.status_label: QtWidgets.QLabel | None = None
        if callable(getattr(node, "status", None)):
            self.status_label = QtWidgets.QLabel(self)
            self.status_label.setWordWrap(True)
            layout.addWidget(self.status_label)
            self._refresh_status()
        self.show_relevant_knobs()

    def show_refusal(self, message: str) -> None:
        """Say why an edit was refused ("" clears it): in the panel, the status bar and the viewer."""
        self.error_label.setText(message)
        self.error_label.setVisible(bool(message))
        self.refusal_changed.emit(self.node.name, message)
        if message:
            self.status_message.emit(message)
            self.knob_refused.emit(message)

    def _rename(self) -> None:
        name = self.name_edit.text().strip()
        if name and name != self.node.name:
            try:
                self.node.graph.rename(self.node, name)
            except DoublureError as exc:
                self.status_message.emit(str(exc))
                self.name_edit.setText(self.node.name)

    def refresh(self, knob: str | None = None) -> None:
        if not self.name_edit.hasFocus():
            self.name_edit.setText(self.node.name)
        self._refresh_status()
        for name, editor in self.editors.items():
            if knob is None or knob == name:
                editor.refresh()
        self.show_relevant_knobs()

    def show_relevant_knobs(self) -> None:
        """Hide the knobs that do not matter for the node's present settings (a Write's codec knobs while it
        writes EXR), for nodes that say which ones matter (``knobs_shown``)."""
        shown = getattr(self.node, "knobs_shown", None)
        names = shown(self.node.graph.current_frame) if shown is not None else None
        for name, editor in self.editors.items():
            self.form.setRowVisible(editor, names is None or name in names)

    def _refresh_status(self) -> None:
        if self.status_label is not None:
            try:
                self.status_label.setText(self.node.status())
            except DoublureError as exc:
                self.status_label.setText(str(exc))

    def run_action(self, action: str) -> ActionRunner:
        """Start a node action (Track, Analyse, Train) in the background."""
        self.runner = ActionRunner(self.node, action, self)
        self.runner.progressed.connect(self._on_progress)
        self.runner.finished.connect(self._on_finished)
        for b in self.action_buttons.values():
            b.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.progress.setValue(0)
        self.progress.setVisible(True)
        self.status_message.emit(f"{self.node.name}: {dict(self.node.actions)[action]}…")
        self.runner.start()
        return self.runner

    def _on_progress(self, fraction: float, message: str) -> None:
        self.progress.setValue(int(1000 * max(0.0, min(1.0, fraction))))
        if message:
            self.progress.setFormat(f"{message} %p%")

    def _on_finished(self, error: str) -> None:
        for b in self.action_buttons.values():
            b.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self.progress.setVisible(False)
        self.status_message.emit(f"{self.node.name}: {error or 'done'}")
        self._refresh_status()


class PropertiesPanel(QtWidgets.QWidget):
    """Open node panels, newest on top (at most four, as Nuke's properties bin)."""

    status_message = QtCore.Signal(str)
    frame_requested = QtCore.Signal(int)
    knob_refused = QtCore.Signal(str)
    refusal_changed = QtCore.Signal(str, str)  # node name, why its last edit was refused ("" once one is accepted)
    render_requested = QtCore.Signal(object)  # a Write node

    def __init__(self, graph: Graph, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.panels: list[NodePanel] = []
        scroll = QtWidgets.QScrollArea(self)
        scroll.setWidgetResizable(True)
        inner = QtWidgets.QWidget(scroll)
        self.stack = QtWidgets.QVBoxLayout(inner)
        self.stack.addStretch(1)
        scroll.setWidget(inner)
        self.hint = QtWidgets.QLabel("Double-click a node to edit its knobs.", self)
        self.hint.setStyleSheet("color: #888; padding: 8px;")
        layout = QtWidgets.QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        layout.addWidget(self.hint)
        layout.addWidget(scroll, 1)
        self._unsubscribe: Callable[[], None] | None = None
        self.set_graph(graph)

    def set_graph(self, graph: Graph) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        for panel in list(self.panels):
            self.close_panel(panel)
        self.graph = graph
        self._unsubscribe = subscribe_on_ui_thread(graph, self._on_event, self)

    def panel_for(self, node: Node) -> NodePanel | None:
        return next((p for p in self.panels if p.node is node), None)

    def open_node(self, node: Node) -> NodePanel:
        panel = self.panel_for(node)
        if panel is not None:
            self.stack.removeWidget(panel)
            self.panels.remove(panel)
        else:
            panel = NodePanel(node, self)
            panel.closed.connect(self.close_panel)
        self.stack.insertWidget(0, panel)
        self.panels.insert(0, panel)
        while len(self.panels) > MAX_PANELS:
            self.close_panel(self.panels[-1])
        self.hint.setVisible(False)
        return panel

    def close_panel(self, panel: NodePanel) -> None:
        if panel in self.panels:
            self.panels.remove(panel)
            self.stack.removeWidget(panel)
            panel.deleteLater()
        self.hint.setVisible(not self.panels)

    def refresh(self) -> None:
        for panel in self.panels:
            panel.refresh()

    def _on_event(self, event: GraphEvent) -> None:
        if event.kind == "node_removed":
            panel = self.panel_for(event.node)
            if panel is not None:
                self.close_panel(panel)
        elif event.kind == "knob_changed":
            panel = self.panel_for(event.node)
            if panel is not None:
                panel.refresh(event.name)
        elif event.kind == "renamed":
            panel = self.panel_for(event.node)
            if panel is not None:
                panel.refresh()

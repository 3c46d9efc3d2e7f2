"""The main window: node editor, viewer, properties, render and training panels, and the project's life
(new, open, save, recent files, modified marker, autosave with crash recovery, asking before losing work).

``run_app(project_path=None, screenshot=None)`` is the entry point the command line calls.
"""
from __future__ import annotations

import json
import os
import sys
import time
from typing import Callable

from PySide6 import QtCore, QtGui, QtWidgets

from doublure.engine import DoublureError, Graph, GraphEvent
from doublure.engine.atomic import write_text_atomic
from doublure.engine.project import dumps, graph_from_dict, graph_to_dict, load, save_graph
from doublure.engine.project_guard import ProjectChangedError

from .events import subscribe_on_ui_thread
from .graph_view import GraphView
from .key_routing import PointerKeyRouter
from .project_settings import ProjectSettingsPanel
from .properties import PropertiesPanel
from .render_panel import RenderPanel
from .training_panel import TrainingPanel
from .viewer import ViewerPanel

APP_NAME = "Doublure"
PROJECT_FILTER = "Doublure projects (*.dbl);;All files (*)"
AUTOSAVE_SUFFIX = ".autosave"
MAX_RECENT = 10
DEFAULT_AUTOSAVE_S = 60.0
LAYOUT_VERSION = 2  # of the saved dock arrangement: a layout saved by another version is not restored


def autosave_dir() -> str:
    """Where autosaves of never-saved projects go (``DOUBLURE_AUTOSAVE_DIR`` overrides)."""
    folder = os.environ.get("DOUBLURE_AUTOSAVE_DIR") or os.path.join(
        QtCore.QStandardPaths.writableLocation(QtCore.QStandardPaths.StandardLocation.AppDataLocation)
        or os.path.expanduser("~/.local/share/doublure"), "autosave")
    return folder


def autosave_path_for(project_path: str | None) -> str:
    """The side file autosaves go to: ``shot.dbl.autosave`` beside the project, or ``untitled.dbl.autosave``
    in ``autosave_dir()`` for a project never saved."""
    if project_path:
        return os.path.abspath(project_path) + AUTOSAVE_SUFFIX
    return os.path.join(autosave_dir(), "untitled.dbl" + AUTOSAVE_SUFFIX)


def recoverable_autosave(project_path: str | None) -> str | None:
    """The autosave left by a session that did not end cleanly, when it is newer than the project."""
    path = autosave_path_for(project_path)
    if not os.path.isfile(path):
        return None
    if project_path and os.path.isfile(project_path) and os.path.getmtime(path) < os.path.getmtime(project_path):
        return None
    return path


class MainWindow(QtWidgets.QMainWindow):
    """The Doublure desktop app over one engine graph at a time."""

    def __init__(self, graph: Graph | None = None, settings: QtCore.QSettings | None = None,
                 autosave_s: float | None = None) -> None:
        super().__init__()
        self.settings = settings or QtCore.QSettings(APP_NAME, APP_NAME)
        self.graph = graph or Graph()
        self._recovered = False
        self._shown_errors: set[str] = set()
        self._edits = 0
        self._autosaved_edits = 0
        self.recovery_box: QtWidgets.QMessageBox | None = None
        self.setWindowIcon(app_icon())
        self.resize(1500, 950)

        self.graph_view = GraphView(self.graph, self)
        self.viewer = ViewerPanel(self.graph, self)
        self.properties = PropertiesPanel(self.graph, self)
        self.render_panel = RenderPanel(self.graph, self)
        self.training_panel = TrainingPanel(self)
        self.training_panel.set_graph(self.graph)
        self.project_panel = ProjectSettingsPanel(self.graph, self)

        self._lay_out()

        self.graph_view.node_opened.connect(self.properties.open_node)
        self.graph_view.selection_changed.connect(self._on_selection)
        self.graph_view.viewer_input_requested.connect(self.viewer.set_input)
        self.viewer.errors_changed.connect(self.graph_view.set_errors)
        self.viewer.warnings_changed.connect(self.graph_view.set_warnings)
        self.properties.refusal_changed.connect(self.graph_view.set_refusal)
        self.viewer.errors_changed.connect(self._clear_fixed_error)
        self.properties.knob_refused.connect(self.viewer.show_notice)
        self.viewer.frame_changed.connect(lambda _: self.properties.refresh())
        self.properties.frame_requested.connect(self.viewer.set_frame)
        self.render_panel.view_requested.connect(self.viewer.view_result)
        self.graph_view.node_created.connect(self.properties.open_node)
        self.properties.render_requested.connect(self.render_node)
        for source in (self.graph_view, self.viewer, self.properties, self.render_panel, self.training_panel,
                       self.project_panel):
            source.status_message.connect(self.show_message)

        self._build_actions()
        self.key_router = PointerKeyRouter([(self.viewer, self.viewer.canvas),
                                            (self.graph_view.widget, self.graph_view.ng.viewer())], parent=self)
        QtWidgets.QApplication.instance().installEventFilter(self.key_router)
        self._unsubscribe: Callable[[], None] | None = None
        self._watch(self.graph)
        self.autosave_timer = QtCore.QTimer(self)
        interval = autosave_s if autosave_s is not None else float(os.environ.get("DOUBLURE_AUTOSAVE_S",
                                                                                DEFAULT_AUTOSAVE_S))
        self.autosave_timer.setInterval(max(100, int(interval * 1000)))
        self.autosave_timer.timeout.connect(self.autosave)
        self.autosave_timer.start()
        self.statusBar().showMessage("Tab: create a node · 1-9: view the selected node · W: wipe · X: flip A/B")

    def _dock(self, title: str, widget: QtWidgets.QWidget, area: QtCore.Qt.DockWidgetArea,
              scroll: bool = False) -> QtWidgets.QDockWidget:
        dock = QtWidgets.QDockWidget(title, self)
        dock.setObjectName(title.lower().replace(" ", "_"))
        if scroll:  # a tall form scrolls instead of forcing its height on the panels beside it
            area_widget = QtWidgets.QScrollArea(dock)
            area_widget.setWidgetResizable(True)
            area_widget.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
            area_widget.setWidget(widget)
            dock.setWidget(area_widget)
        else:
            dock.setWidget(widget)
        self.addDockWidget(area, dock)
        return dock

    def _lay_out(self) -> None:
        """Nuke's layout: the viewer takes the centre, the properties bin the full right side, the node
        graph below the viewer with Render and Training as closable tabs beside it. A layout the user
        arranged is restored from the settings."""
        Area = QtCore.Qt.DockWidgetArea
        self.setCentralWidget(self.viewer)
        self.setCorner(QtCore.Qt.Corner.TopRightCorner, Area.RightDockWidgetArea)
        self.setCorner(QtCore.Qt.Corner.BottomRightCorner, Area.RightDockWidgetArea)
        self.setDockOptions(self.dockOptions() | QtWidgets.QMainWindow.DockOption.GroupedDragging)
        self.properties_dock = self._dock("Properties", self.properties, Area.RightDockWidgetArea)
        self.project_dock = self._dock("Project", self.project_panel, Area.RightDockWidgetArea, scroll=True)
        self.tabifyDockWidget(self.properties_dock, self.project_dock)
        self.properties_dock.raise_()
        self.graph_dock = self._dock("Node Graph", self.graph_view.widget, Area.BottomDockWidgetArea)
        self.graph_dock.setFeatures(QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetMovable
                                    | QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetFloatable)
        self.render_dock = self._dock("Render", self.render_panel, Area.BottomDockWidgetArea, scroll=True)
        self.training_dock = self._dock("Training", self.training_panel, Area.BottomDockWidgetArea)
        self.tabifyDockWidget(self.graph_dock, self.render_dock)
        self.tabifyDockWidget(self.render_dock, self.training_dock)
        self.setTabPosition(Area.BottomDockWidgetArea, QtWidgets.QTabWidget.TabPosition.North)
        self.graph_dock.raise_()
        self._size_docks()
        # Dock sizes only hold once the window has its size: a first start sizes them again when shown.
        self._size_docks_when_shown = not self.restore_layout()

    def _size_docks(self) -> None:
        """The first-start sizes: the properties bin 440 px wide, the node graph a third of the height."""
        self.resizeDocks([self.properties_dock], [440], QtCore.Qt.Orientation.Horizontal)
        self.resizeDocks([self.graph_dock], [max(260, self.height() // 3)], QtCore.Qt.Orientation.Vertical)

    def showEvent(self, event: QtGui.QShowEvent) -> None:  # noqa: N802
        super().showEvent(event)
        if self._size_docks_when_shown:
            self._size_docks_when_shown = False
            QtCore.QTimer.singleShot(0, self._size_docks)

    def restore_layout(self) -> bool:
        """The window's size and panel arrangement from the settings, where a session saved one."""
        geometry, state = self.settings.value("window/geometry"), self.settings.value("window/state")
        restored = False
        if isinstance(geometry, QtCore.QByteArray) and not geometry.isEmpty():
            restored = self.restoreGeometry(geometry)
        if isinstance(state, QtCore.QByteArray) and not state.isEmpty():
            restored = self.restoreState(state, LAYOUT_VERSION) or restored
        return restored

    def save_layout(self) -> None:
        self.settings.setValue("window/geometry", self.saveGeometry())
        self.settings.setValue("window/state", self.saveState(LAYOUT_VERSION))
        self.settings.sync()

    def reset_layout(self) -> None:
        """Forget the saved arrangement and lay the panels out as on first start."""
        self.settings.remove("window")
        for dock in (self.properties_dock, self.project_dock, self.graph_dock, self.render_dock, self.training_dock):
            self.removeDockWidget(dock)
        for dock in (self.properties_dock, self.project_dock):
            self.addDockWidget(QtCore.Qt.DockWidgetArea.RightDockWidgetArea, dock)
            dock.setFloating(False)
            dock.show()
        self.tabifyDockWidget(self.properties_dock, self.project_dock)
        self.properties_dock.raise_()
        for dock in (self.graph_dock, self.render_dock, self.training_dock):
            self.addDockWidget(QtCore.Qt.DockWidgetArea.BottomDockWidgetArea, dock)
            dock.setFloating(False)
            dock.show()
        self.properties_dock.show()
        self.tabifyDockWidget(self.graph_dock, self.render_dock)
        self.tabifyDockWidget(self.render_dock, self.training_dock)
        self.graph_dock.raise_()
        self._size_docks()

    # -- menus ----------------------------------------------------------------------------------------
    def _action(self, menu: QtWidgets.QMenu, text: str, slot, shortcut=None) -> QtGui.QAction:
        action = menu.addAction(text)
        action.triggered.connect(lambda _=False: slot())
        if shortcut is not None:
            action.setShortcuts(shortcut if isinstance(shortcut, list) else [QtGui.QKeySequence(shortcut)])
        return action

    def _build_actions(self) -> None:
        bar = self.menuBar()
        SK = QtGui.QKeySequence.StandardKey
        file = bar.addMenu("&File")
        self._action(file, "&New", self.new_project, QtGui.QKeySequence(SK.New))
        self._action(file, "&Open…", self.open_dialog, QtGui.QKeySequence(SK.Open))
        self.recent_menu = file.addMenu("Open &Recent")
        self._fill_recent()
        file.addSeparator()
        self._action(file, "&Save", self.save, QtGui.QKeySequence(SK.Save))
        self._action(file, "Save &As…", self.save_as, QtGui.QKeySequence("Ctrl+Shift+S"))
        file.addSeparator()
        self._action(file, "&Quit", self.close, QtGui.QKeySequence("Ctrl+Q"))
        edit = bar.addMenu("&Edit")
        self.undo_action = self._action(edit, "&Undo", self.graph_undo, QtGui.QKeySequence("Ctrl+Z"))
        self.redo_action = self._action(edit, "&Redo", self.graph_redo,
                                        [QtGui.QKeySequence("Ctrl+Shift+Z"), QtGui.QKeySequence("Ctrl+Y")])
        edit.addSeparator()
        self._action(edit, "Copy nodes", self.graph_view.copy_selected)
        self._action(edit, "Paste nodes", self.graph_view.paste)
        self._action(edit, "Delete nodes", self.graph_view.delete_selected)
        self._action(edit, "Disable / enable nodes (D)", self.graph_view.toggle_disable_selected)
        self._action(edit, "Create node… (Tab)", self.graph_view.open_menu)
        self._action(edit, "Backdrop around selection (B)", self.graph_view.create_backdrop)
        edit.addSeparator()
        self._action(edit, "Project settings…", self.show_project_settings, QtGui.QKeySequence("Ctrl+Shift+P"))
        view = bar.addMenu("&View")
        self._action(view, "Fit node graph (F)", self.graph_view.fit)
        self._action(view, "Fit image", self.viewer.canvas.fit)
        self._action(view, "Wipe A/B (W)", self.viewer.toggle_wipe)
        self._action(view, "Flip A/B (X)", self.viewer.flip)
        self._action(view, "Side by side", lambda: self.viewer.set_mode("side"))
        self._action(view, "Difference", lambda: self.viewer.set_mode("diff"))
        view.addSeparator()
        for dock in (self.properties_dock, self.project_dock, self.graph_dock, self.render_dock, self.training_dock):
            view.addAction(dock.toggleViewAction())
        self._action(view, "Reset layout", self.reset_layout)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.recent_files():
            self._action(self.recent_menu, path, lambda p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(self.recent_files()))

    def recent_files(self) -> list[str]:
        value = self.settings.value("recent", [])
        if isinstance(value, str):
            value = [value]
        return [p for p in (value or []) if isinstance(p, str)]

    def _add_recent(self, path: str) -> None:
        path = os.path.abspath(path)
        recent = [path] + [p for p in self.recent_files() if p != path]
        self.settings.setValue("recent", recent[:MAX_RECENT])
        self.settings.sync()
        self._fill_recent()

    # -- graph ----------------------------------------------------------------------------------------
    def _watch(self, graph: Graph) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self._unsubscribe = subscribe_on_ui_thread(graph, self._on_event, self)
        self._update_title()

    def set_graph(self, graph: Graph) -> None:
        """Make ``graph`` the open project in every panel."""
        self.graph = graph
        self.graph_view.set_graph(graph)
        self.viewer.set_graph(graph)
        self.properties.set_graph(graph)
        self.project_panel.set_graph(graph)
        self.render_panel.set_graph(graph)
        self.training_panel.set_graph(graph)
        self._edits = self._autosaved_edits = 0
        self._watch(graph)

    def _on_event(self, event: GraphEvent) -> None:
        if event.kind == "history":
            self._edits += 1
            self._update_title()

    def render_node(self, node) -> None:
        """Render one Write over the project range, in the Render panel (brought to the front)."""
        self.render_dock.show()
        self.render_dock.raise_()
        self.render_panel.start([node], "")

    def show_project_settings(self) -> None:
        self.project_dock.show()
        self.project_dock.raise_()

    def _on_selection(self, nodes: list) -> None:
        self.viewer.set_paint_target(nodes[-1] if nodes else None)

    def graph_undo(self) -> None:
        text = self.graph.undo_stack.undo_text()
        if self.graph.undo():
            self.show_message(f"Undo {text}")

    def graph_redo(self) -> None:
        text = self.graph.undo_stack.redo_text()
        if self.graph.redo():
            self.show_message(f"Redo {text}")

    def is_modified(self) -> bool:
        return self._recovered or not self.graph.undo_stack.clean

    def _update_title(self) -> None:
        name = os.path.basename(self.graph.project_path) if self.graph.project_path else "untitled"
        self.setWindowTitle(f"{name}[*] — {APP_NAME}")
        self.setWindowModified(self.is_modified())
        stack = self.graph.undo_stack
        self.undo_action.setEnabled(stack.can_undo())
        self.redo_action.setEnabled(stack.can_redo())
        self.undo_action.setText(f"&Undo {stack.undo_text()}".rstrip())
        self.redo_action.setText(f"&Redo {stack.redo_text()}".rstrip())

    def show_message(self, text: str) -> None:
        self.statusBar().showMessage(text, 10000)

    def _clear_fixed_error(self, errors: dict) -> None:
        """An error the status bar still shows goes once the viewer's frames no longer fail with it."""
        current = self.statusBar().currentMessage()
        if current and current not in errors.values() and current in self._shown_errors:
            self.statusBar().clearMessage()
        self._shown_errors = set(errors.values())

    # -- project life ---------------------------------------------------------------------------------
    def new_project(self) -> None:
        if self.maybe_save():
            self._drop_autosave()
            self._recovered = False
            self.set_graph(Graph())

    def open_dialog(self) -> None:
        if not self.maybe_save():
            return
        start = os.path.dirname(self.graph.project_path) if self.graph.project_path else os.getcwd()
        path, _ = QtWidgets.QFileDialog.getOpenFileName(self, "Open project", start, PROJECT_FILTER)
        if path:
            self.open_project(path, ask_save=False)

    def open_project(self, path: str, ask_save: bool = True, offer_recovery: bool = True) -> bool:
        """Open a project; when an autosave newer than it is found, offer to recover it."""
        if ask_save and not self.maybe_save():
            return False
        try:
            graph = load(path)
        except DoublureError as exc:
            self.show_message(str(exc))
            QtWidgets.QMessageBox.warning(self, "Open project", str(exc))
            return False
        self._drop_autosave()
        self._recovered = False
        self.set_graph(graph)
        self._add_recent(path)
        self.show_message(f"Opened {path}")
        if offer_recovery:
            self.offer_recovery(graph.project_path)
        return True

    def save(self) -> bool:
        if not self.graph.project_path:
            return self.save_as()
        return self._save_to(self.graph.project_path)

    def save_as(self) -> bool:
        start = self.graph.project_path or os.path.join(os.getcwd(), "untitled.dbl")
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Save project as", start, PROJECT_FILTER)
        if not path:
            return False
        if not path.endswith(".dbl"):
            path += ".dbl"
        return self._save_to(path)

    def _save_to(self, path: str) -> bool:
        old_autosave = autosave_path_for(self.graph.project_path)
        try:
            try:
                save_graph(self.graph, path)
            except ProjectChangedError as exc:
                overwrite = QtWidgets.QMessageBox.question(
                    self, "Save project", f"{exc}\n\nOverwrite it with this version?",
                    QtWidgets.QMessageBox.StandardButton.Yes | QtWidgets.QMessageBox.StandardButton.No,
                    QtWidgets.QMessageBox.StandardButton.No)
                if overwrite != QtWidgets.QMessageBox.StandardButton.Yes:
                    self.show_message(f"Not saved: {path} changed on disk")
                    return False
                save_graph(self.graph, path, overwrite=True)
        except (OSError, DoublureError) as exc:
            QtWidgets.QMessageBox.warning(self, "Save project", f"{path}: {exc}")
            return False
        for stale in {old_autosave, autosave_path_for(path)}:
            if os.path.exists(stale):
                os.unlink(stale)
        self._recovered = False
        self._autosaved_edits = self._edits
        self._add_recent(path)
        self._update_title()
        self.show_message(f"Saved {path}")
        return True

    def maybe_save(self) -> bool:
        """Before the project goes away: True to go on (saved or discarded), False to stay."""
        if not self.is_modified():
            return True
        answer = QtWidgets.QMessageBox.question(
            self, APP_NAME, "The project has unsaved changes. Save them?",
            QtWidgets.QMessageBox.StandardButton.Save | QtWidgets.QMessageBox.StandardButton.Discard
            | QtWidgets.QMessageBox.StandardButton.Cancel, QtWidgets.QMessageBox.StandardButton.Save)
        if answer == QtWidgets.QMessageBox.StandardButton.Save:
            return self.save()
        return answer == QtWidgets.QMessageBox.StandardButton.Discard

    # -- autosave and recovery ------------------------------------------------------------------------
    def autosave(self) -> str | None:
        """Write the graph to its autosave side file if it changed since the last one; returns the path."""
        if self._edits == self._autosaved_edits or not self.is_modified():
            return None
        path = autosave_path_for(self.graph.project_path)
        data = graph_to_dict(self.graph, self.graph.project_dir)
        data["autosave_of"] = self.graph.project_path
        try:
            write_text_atomic(path, dumps(data))
        except OSError as exc:
            self.show_message(f"autosave failed: {path}: {exc}")
            return None
        self._autosaved_edits = self._edits
        return path

    def _drop_autosave(self) -> None:
        path = autosave_path_for(self.graph.project_path)
        if os.path.exists(path):
            os.unlink(path)

    def offer_recovery(self, project_path: str | None) -> QtWidgets.QMessageBox | None:
        """If a crashed session left an autosave for this project, ask (without blocking) to recover it."""
        path = recoverable_autosave(project_path)
        if path is None:
            return None
        when = time.strftime("%Y-%m-%d %H:%M", time.localtime(os.path.getmtime(path)))
        box = QtWidgets.QMessageBox(QtWidgets.QMessageBox.Icon.Question, "Recover autosave",
                                    f"Doublure did not close cleanly. Recover the autosave from {when}?\n{path}",
                                    QtWidgets.QMessageBox.StandardButton.Yes
                                    | QtWidgets.QMessageBox.StandardButton.No, self)
        box.setWindowModality(QtCore.Qt.WindowModality.WindowModal)
        box.finished.connect(lambda result: self.recover(path) if result ==
                             QtWidgets.QMessageBox.StandardButton.Yes else os.unlink(path))
        box.show()
        self.recovery_box = box
        return box

    def recover(self, autosave: str) -> bool:
        """Load an autosave in place of the open project; it stays marked modified until saved."""
        try:
            with open(autosave, encoding="utf-8") as f:
                data = json.load(f)
            original = data.pop("autosave_of", None)
            graph = Graph()
            graph.project_path = original
            graph_from_dict(data, autosave, graph)
        except (OSError, ValueError, DoublureError) as exc:
            self.show_message(f"cannot recover {autosave}: {exc}")
            return False
        self.set_graph(graph)
        self._recovered = True
        self._update_title()
        self.show_message(f"Recovered {autosave}")
        return True

    # -- closing --------------------------------------------------------------------------------------
    def closeEvent(self, event: QtGui.QCloseEvent) -> None:  # noqa: N802
        if not self.maybe_save():
            event.ignore()
            return
        self._drop_autosave()
        self.save_layout()
        self.shutdown()
        event.accept()

    def shutdown(self) -> None:
        """Stop background work owned by the window (viewer evaluation, a render, autosave)."""
        self.autosave_timer.stop()
        QtWidgets.QApplication.instance().removeEventFilter(self.key_router)
        self.viewer.shutdown()
        if self.render_panel.job is not None:
            self.render_panel.cancel()


def app_icon() -> QtGui.QIcon:
    import doublure.resources

    folder = os.path.join(os.path.dirname(os.path.abspath(doublure.resources.__file__)), "icons")
    icon = QtGui.QIcon()
    for name in ("doublure.svg", "doublure.png"):
        if os.path.exists(os.path.join(folder, name)):
            icon.addFile(os.path.join(folder, name))
    return icon


def apply_dark_theme(app: QtWidgets.QApplication) -> None:
    """Dark panels around the dark viewer, as compositing apps have them, so the eye adapts to the picture."""
    app.setStyle("Fusion")
    palette = QtGui.QPalette()
    Role = QtGui.QPalette.ColorRole
    for role, rgb in ((Role.Window, (50, 50, 50)), (Role.WindowText, (215, 215, 215)), (Role.Base, (36, 36, 36)),
                      (Role.AlternateBase, (45, 45, 45)), (Role.Text, (215, 215, 215)), (Role.Button, (58, 58, 58)),
                      (Role.ButtonText, (215, 215, 215)), (Role.Highlight, (230, 150, 40)),
                      (Role.HighlightedText, (20, 20, 20)), (Role.ToolTipBase, (40, 40, 40)),
                      (Role.ToolTipText, (225, 225, 225)), (Role.PlaceholderText, (130, 130, 130)),
                      (Role.BrightText, (255, 90, 70)), (Role.Link, (240, 170, 60))):
        palette.setColor(role, QtGui.QColor(*rgb))
    for role in (Role.WindowText, Role.Text, Role.ButtonText):
        palette.setColor(QtGui.QPalette.ColorGroup.Disabled, role, QtGui.QColor(115, 115, 115))
    app.setPalette(palette)


def _wait_for_viewer(window: MainWindow, timeout_s: float) -> bool:
    """Process events until the viewer shows the current frame (or has nothing to show)."""
    app = QtWidgets.QApplication.instance()
    deadline = time.monotonic() + timeout_s
    drawn = {"ok": False}
    window.viewer.frame_shown.connect(lambda: drawn.__setitem__("ok", True))
    window.viewer.canvas.update()
    while time.monotonic() < deadline:
        app.processEvents(QtCore.QEventLoop.ProcessEventsFlag.AllEvents, 50)
        viewer = window.viewer
        nothing_to_show = all(node is None for node in viewer.lanes_needed().values())
        if drawn["ok"] and viewer.is_current() or nothing_to_show or viewer.canvas.message:
            return True
        time.sleep(0.01)
    return False


def run_app(project_path: str | None = None, screenshot: str | None = None) -> int:
    """Open the main window, optionally with a project.

    With ``screenshot``, wait until the viewer has drawn the current frame, save a PNG of the main window
    there and return 0 (1 if the viewer did not finish within ``DOUBLURE_SCREENSHOT_TIMEOUT_S``, 300 s by
    default; the PNG is written anyway). Otherwise run the event loop and return its exit code.
    """
    import doublure.nodes  # noqa: F401  (registers the node library)

    app = QtWidgets.QApplication.instance() or QtWidgets.QApplication(sys.argv[:1])
    apply_dark_theme(app)
    app.setApplicationName(APP_NAME)
    app.setOrganizationName(APP_NAME)
    app.setWindowIcon(app_icon())
    window = MainWindow()
    window.show()
    if project_path:
        if not window.open_project(project_path, ask_save=False, offer_recovery=screenshot is None):
            if screenshot:
                return 1
    elif screenshot is None:
        window.offer_recovery(None)
    if screenshot is None:
        return app.exec()
    ok = _wait_for_viewer(window, float(os.environ.get("DOUBLURE_SCREENSHOT_TIMEOUT_S", 300)))
    app.processEvents()
    image = window.grab()
    os.makedirs(os.path.dirname(os.path.abspath(screenshot)), exist_ok=True)
    saved = image.save(screenshot, "PNG")
    window.shutdown()
    window.hide()
    window.deleteLater()
    if not saved:
        print(f"doublure: cannot write the screenshot {screenshot}", file=sys.stderr)
        return 1
    if not ok:
        print(f"doublure: the viewer did not finish drawing; saved what was on screen to {screenshot}",
              file=sys.stderr)
        return 1
    return 0

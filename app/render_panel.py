"""The render panel: pick Write nodes and frames, render on a background thread with progress, fps, ETA,
cancel and a log. The same ``engine.render`` the command line and the farm use."""
from __future__ import annotations

import threading
import time
from typing import Callable

from PySide6 import QtCore, QtWidgets

from doublure.engine import CancelToken, Cancelled, DoublureError, Graph, Node, render
from doublure.engine.provenance import ConsentOverride, consent_findings, make_override
from doublure.engine.progress import format_seconds
from doublure.engine.render import is_executable, resolve_frames

from .events import subscribe_on_ui_thread


class RenderJob(QtCore.QObject):
    """One render on a worker thread. Signals arrive on the UI thread."""

    progressed = QtCore.Signal(int, int, int)  # done, total, frame
    finished = QtCore.Signal(object, str)  # RenderReport | None, error ("" when fine, "cancelled")

    def __init__(self, graph: Graph, writes: list[Node], frames: str, parent: QtCore.QObject | None = None,
                 consent_override: ConsentOverride | None = None) -> None:
        super().__init__(parent)
        self.graph, self.writes, self.frames = graph, writes, frames
        self.consent_override = consent_override
        self.cancel = CancelToken()
        self.thread: threading.Thread | None = None

    def start(self) -> None:
        self.thread = threading.Thread(target=self._run, name="doublure-render", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            report = render(self.graph, self.writes, self.frames or None, cancel=self.cancel,
                            progress=lambda done, total, frame: self.progressed.emit(done, total, frame),
                            consent_override=self.consent_override)
        except Cancelled:
            self.finished.emit(None, "cancelled")
        except DoublureError as exc:
            self.finished.emit(None, str(exc))
        except Exception as exc:  # report a node's bug in the log instead of losing it on a thread
            self.finished.emit(None, f"{type(exc).__name__}: {exc}")
        else:
            self.finished.emit(report, "")


class RenderPanel(QtWidgets.QWidget):
    """Writes to render (checkable), frame range, Render / Cancel, progress with fps and ETA, the log."""

    status_message = QtCore.Signal(str)
    view_requested = QtCore.Signal(object)  # a Write node whose output to show

    def __init__(self, graph: Graph, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.writes = QtWidgets.QListWidget(self)
        self.writes.setMaximumHeight(90)
        self.writes.setToolTip("Write nodes to render")
        self.frames = QtWidgets.QLineEdit(self)
        self.frames.setPlaceholderText("project range (1-100, 1-100x2, 1,5,10-20)")
        self.render_button = QtWidgets.QPushButton("Render", self)
        self.render_button.clicked.connect(lambda: self.start())
        self.cancel_button = QtWidgets.QPushButton("Cancel", self)
        self.cancel_button.setEnabled(False)
        self.cancel_button.clicked.connect(self.cancel)
        self.view_button = QtWidgets.QPushButton("View result", self)
        self.view_button.setEnabled(False)
        self.view_button.setToolTip("Show the rendered Write in the viewer")
        self.view_button.clicked.connect(self._view)
        self.progress = QtWidgets.QProgressBar(self)
        self.rate = QtWidgets.QLabel("", self)
        self.log = QtWidgets.QPlainTextEdit(self)
        self.log.setReadOnly(True)
        self.log.setMaximumBlockCount(5000)
        form = QtWidgets.QFormLayout()
        form.addRow("Writes", self.writes)
        form.addRow("Frames", self.frames)
        buttons = QtWidgets.QHBoxLayout()
        for b in (self.render_button, self.cancel_button, self.view_button):
            buttons.addWidget(b)
        buttons.addStretch(1)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.progress)
        layout.addWidget(self.rate)
        layout.addWidget(self.log, 1)
        self.job: RenderJob | None = None
        self._started = 0.0
        self._unsubscribe: Callable[[], None] | None = None
        self.set_graph(graph)

    def set_graph(self, graph: Graph) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.graph = graph
        self._unsubscribe = subscribe_on_ui_thread(graph, lambda e: e.kind in (
            "node_added", "node_removed", "renamed") and self.refresh_writes(), self)
        self.refresh_writes()

    def refresh_writes(self) -> None:
        checked = {self.writes.item(i).data(QtCore.Qt.ItemDataRole.UserRole)
                   for i in range(self.writes.count())
                   if self.writes.item(i).checkState() == QtCore.Qt.CheckState.Checked}
        self.writes.clear()
        for node in self.graph.nodes:
            if is_executable(node):
                item = QtWidgets.QListWidgetItem(node.name)
                item.setData(QtCore.Qt.ItemDataRole.UserRole, node.uuid)
                on = node.uuid in checked or not checked
                item.setCheckState(QtCore.Qt.CheckState.Checked if on else QtCore.Qt.CheckState.Unchecked)
                self.writes.addItem(item)

    def chosen_writes(self) -> list[Node]:
        return [self.graph.by_uuid(self.writes.item(i).data(QtCore.Qt.ItemDataRole.UserRole))
                for i in range(self.writes.count())
                if self.writes.item(i).checkState() == QtCore.Qt.CheckState.Checked]

    def start(self, writes: list[Node] | None = None, frames: str | None = None) -> RenderJob | None:
        """Render ``writes`` (the checked ones) over ``frames`` (the field) in the background."""
        if self.job is not None:
            return None
        writes = writes if writes is not None else self.chosen_writes()
        frames = self.frames.text().strip() if frames is None else frames
        if not writes:
            self.append_log("nothing to render: check a Write node")
            return None
        try:
            frame_list = resolve_frames(self.graph, frames or None)
        except DoublureError as exc:
            self.append_log(str(exc))
            return None
        self.log.clear()  # one render's log at a time
        total = len(frame_list)
        override = None
        findings = consent_findings(self.graph, writes, frame_list[0])
        if findings:
            reason = self.ask_consent_override(findings)
            if not reason:
                self.append_log("render refused: consent does not cover it: " + " | ".join(findings))
                return None
            override = make_override(reason)
            self.append_log(f"consent overridden by {override.who}: {override.reason}")
        self.job = RenderJob(self.graph, writes, frames, self, consent_override=override)
        self.job.progressed.connect(self._on_progress)
        self.job.finished.connect(self._on_finished)
        self.progress.setRange(0, total)
        self.progress.setValue(0)
        self.render_button.setEnabled(False)
        self.cancel_button.setEnabled(True)
        self.view_button.setEnabled(False)
        self._started = time.perf_counter()
        self.append_log(f"render {', '.join(w.name for w in writes)} frames {frames or 'project range'} ({total})")
        self.job.start()
        return self.job

    def ask_consent_override(self, findings: list[str]) -> str | None:
        """Ask whether to render although consent does not cover it; the reason given, or None to refuse."""
        reason, ok = QtWidgets.QInputDialog.getText(
            self, "Consent does not cover this render",
            "\n".join(findings) + "\n\nRender anyway? Who approved it and why is recorded in every frame and "
            "its Content Credentials.\nReason:")
        return reason.strip() if ok and reason.strip() else None

    def cancel(self) -> None:
        if self.job is not None:
            self.job.cancel.cancel()
            self.append_log("cancelling…")

    def append_log(self, text: str) -> None:
        self.log.appendPlainText(f"{time.strftime('%H:%M:%S')}  {text}")
        self.log.verticalScrollBar().setValue(self.log.verticalScrollBar().maximum())

    def _on_progress(self, done: int, total: int, frame: int) -> None:
        self.progress.setValue(done)
        elapsed = time.perf_counter() - self._started
        fps = done / elapsed if elapsed > 0 else 0.0
        eta = (total - done) / fps if fps > 0 else 0.0
        self.rate.setText(f"frame {frame}   {done}/{total}   {fps:.2f} fps   ETA {format_seconds(eta)}")
        self.append_log(f"frame {frame} done")

    def _on_finished(self, report, error: str) -> None:
        elapsed = time.perf_counter() - self._started
        if error:
            self.append_log(f"render stopped: {error}")
            self.status_message.emit(f"Render stopped: {error}")
        else:
            self.append_log(f"finished: {len(report.written)} written, {len(report.skipped)} skipped, "
                            f"{len(report.failures)} failed in {format_seconds(elapsed)}")
            for name, frame, why in report.failures:
                self.append_log(f"  {name} frame {frame}: {why}")
            self.status_message.emit("Render finished")
            self.view_button.setEnabled(True)
        self.render_button.setEnabled(True)
        self.cancel_button.setEnabled(False)
        self._last_writes = self.job.writes if self.job else []
        self.job = None

    def _view(self) -> None:
        writes = getattr(self, "_last_writes", [])
        if writes:
            self.view_requested.emit(writes[0])

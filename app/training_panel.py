"""The training panel: start, stop and resume an identity-model training run, with a live loss plot, the
latest preview grid and iterations per second.

A thin layer over :class:`doublure.models.train.Trainer`: the form fills a ``TrainConfig``, including the
rights record every identity model carries (the fields of ``doublure train --rights-*``),
``Trainer.start()`` runs it on the trainer's own thread and ``Trainer.stop()`` asks it to finish the step,
checkpoint and end. Progress dicts arrive on the training thread and are re-emitted to the UI thread: ``step``
events carry ``losses`` (``a``/``b``: each identity's reconstruction loss, plotted) and ``its_per_s``;
``preview`` and ``done`` events mean ``latest_preview()`` has a new grid. The run outlives the panel's dock
being closed.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Callable

import numpy as np
from PySide6 import QtCharts, QtCore, QtGui, QtWidgets

from doublure.engine.context import CancelToken
from doublure.engine.errors import Cancelled, DoublureError
from doublure.models.dbm import ModelFileError, read_meta, rights_problems, rights_record
from doublure.models.train import MIN_FACESET_FACES, TrainConfig, Trainer

from .adapt import DEFAULT_MINUTES, AdaptPlan, adaptation_config, extract_shot, plan_adaptation, use_adapted

# The losses plotted, and their legend: each identity's masked reconstruction loss.
PLOTTED_LOSSES = {"a": "A (plate actor)", "b": "B (target actor)"}
# The rights form: record field (dbm.rights_record's argument), its label and its hint.
RIGHTS_FORM = (("subject", "Subject", "whose face the model renders"),
               ("consent_given_by", "Consent given by", "who gave consent"),
               ("consent_date", "Consent date", "YYYY-MM-DD"),
               ("agreement", "Agreement", "reference of the signed agreement"),
               ("allowed_uses", "Allowed uses", "comma separated, e.g. film,trailer"),
               ("expiry", "Expiry", "YYYY-MM-DD, after the consent date"))
# What a run needs before it starts, unless the user acknowledges training without a rights record.
REQUIRED_RIGHTS = ("subject", "consent_given_by", "agreement")
NO_RIGHTS_STYLE = "QCheckBox { color: #e04040; font-weight: bold; }"


def facesets(text: str) -> list[str]:
    """Faceset folders typed into a field, separated by the platform's path separator."""
    return [part.strip() for part in text.split(os.pathsep) if part.strip()]


def preview_qimage(preview: np.ndarray | None) -> QtGui.QImage | None:
    """``Trainer.latest_preview()``'s (H, W, 3) uint8 RGB grid as an owned QImage (None stays None)."""
    if preview is None:
        return None
    arr = np.ascontiguousarray(preview)
    h, w = arr.shape[:2]
    return QtGui.QImage(arr.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class FacesetExtraction(QtCore.QObject):
    """A faceset extraction on a worker thread; signals arrive on the UI thread.

    ``work(progress)`` extracts and returns ``extract_faceset``'s summary; ``progress(done, total, clip)``."""

    progressed = QtCore.Signal(int, int, str)  # frames done, frames expected, clip
    finished = QtCore.Signal(object, str)  # the summary dict (None on failure), the error ("" when fine)

    def __init__(self, work: Callable[[Callable[[int, int, str], None]], dict],
                 parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.work = work
        self.cancel = CancelToken()
        self.thread = threading.Thread(target=self._run, name="doublure-extract", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        try:
            summary = self.work(lambda done, total, clip: self.progressed.emit(done, total, clip))
        except Cancelled:
            self.finished.emit(None, "stopped")
        except DoublureError as exc:
            self.finished.emit(None, str(exc))
        except Exception as exc:  # a bug is shown, not lost on a thread
            self.finished.emit(None, f"{type(exc).__name__}: {exc}")
        else:
            self.finished.emit(summary, "")


class _NodeCombo(QtWidgets.QComboBox):
    """A combo box of node names that lists the graph's current ones each time it opens."""

    def __init__(self, names: Callable[[], list[str]], parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.names = names

    def refresh(self) -> None:
        current = self.currentText()
        self.clear()
        self.addItems(self.names())
        if current:
            self.setCurrentText(current)

    def showPopup(self) -> None:
        self.refresh()
        super().showPopup()


def _row(field: QtWidgets.QWidget, *buttons: tuple[str, str, Callable[[], None]]) -> QtWidgets.QWidget:
    """A form field with small buttons (text, tooltip, slot) beside it."""
    row = QtWidgets.QWidget()
    layout = QtWidgets.QHBoxLayout(row)
    layout.setContentsMargins(0, 0, 0, 0)
    layout.setSpacing(3)
    layout.addWidget(field, 1)
    for text, tip, slot in buttons:
        button = QtWidgets.QToolButton(row)
        button.setText(text)
        button.setToolTip(tip)
        button.clicked.connect(lambda _=False, slot=slot: slot())
        layout.addWidget(button)
    return row


class TrainingPanel(QtWidgets.QWidget):
    """Extract facesets, start/stop a run, its loss curves, previews while it trains, rate and saves."""

    status_message = QtCore.Signal(str)
    _progress = QtCore.Signal(object)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.graph = None   # the open project (``set_graph``): what "Adapt to this shot" adapts
        self.adapting: AdaptPlan | None = None   # the adaptation under way, applied to its SwapModel at the end
        self.trainer: Trainer | None = None
        self.iteration = 0
        self.series: dict[str, QtCharts.QLineSeries] = {}
        self.target = QtWidgets.QLineEdit(self)
        self.target.setPlaceholderText("faceset of the identity to put in (B)")
        self.source = QtWidgets.QLineEdit(self)
        self.source.setPlaceholderText("faceset of the plate actor (A)")
        for field in (self.target, self.source):
            field.setToolTip(f"faceset folders, separated by '{os.pathsep}'")
        self.out = QtWidgets.QLineEdit(self)
        self.out.setPlaceholderText("models/actor.dbm")
        self.res = QtWidgets.QComboBox(self)
        self.res.addItems(["64", "128", "256", "512"])
        self.res.setCurrentText("128")
        self.width_scale = QtWidgets.QDoubleSpinBox(self)
        self.width_scale.setRange(0.125, 4.0)
        self.width_scale.setSingleStep(0.125)
        self.width_scale.setDecimals(3)
        self.width_scale.setValue(1.0)
        self.width_scale.setToolTip("scale of the model's channel widths (smaller trains faster, holds less)")
        self.batch = QtWidgets.QSpinBox(self)
        self.batch.setRange(1, 256)
        self.batch.setValue(TrainConfig.batch)
        self.iterations = QtWidgets.QSpinBox(self)
        self.iterations.setRange(0, 10_000_000)
        self.iterations.setSpecialValueText("until stopped")
        self.preview_every = QtWidgets.QSpinBox(self)
        self.preview_every.setRange(0, 100_000)
        self.preview_every.setValue(50)
        self.preview_every.setSpecialValueText("at checkpoints only")
        self.preview_every.setSuffix(" iterations")
        self.preview_every.setToolTip("how often the preview grid below is redrawn while training")
        self.checkpoint_minutes = QtWidgets.QDoubleSpinBox(self)
        self.checkpoint_minutes.setRange(0.5, 24 * 60)
        self.checkpoint_minutes.setValue(TrainConfig.checkpoint_minutes)
        self.checkpoint_minutes.setSuffix(" min")
        self.checkpoint_minutes.setToolTip("how often the model is saved while training (and always on Stop)")
        self.resume = QtWidgets.QCheckBox("resume the run in the output model", self)
        self.resume.setToolTip("continue the checkpoint: its resolution and widths are kept")
        self.extract_size = QtWidgets.QSpinBox(self)
        self.extract_size.setRange(16, 2048)
        self.extract_size.setValue(256)
        self.extract_size.setSuffix(" px")
        self.extract_size.setToolTip("side of the aligned crops an extraction writes")
        self.extract_every = QtWidgets.QSpinBox(self)
        self.extract_every.setRange(1, 1000)
        self.extract_every.setPrefix("every ")
        self.extract_every.setSuffix(" frames")
        self.extract_every.setToolTip("an extraction keeps every N-th frame of the clips")
        self.extraction: FacesetExtraction | None = None
        extract_row = QtWidgets.QWidget(self)
        extract_layout = QtWidgets.QHBoxLayout(extract_row)
        extract_layout.setContentsMargins(0, 0, 0, 0)
        extract_layout.addWidget(self.extract_size)
        extract_layout.addWidget(self.extract_every)
        extract_layout.addStretch(1)
        self.adapt_swap = _NodeCombo(self._swap_names, self)
        self.adapt_swap.setToolTip("the SwapModel whose model is continued on the faces of the plate it swaps")
        self.adapt_swap.setMinimumContentsLength(12)
        self.adapt_minutes = QtWidgets.QDoubleSpinBox(self)
        self.adapt_minutes.setRange(0.1, 24 * 60)
        self.adapt_minutes.setValue(DEFAULT_MINUTES)
        self.adapt_minutes.setSuffix(" min")
        self.adapt_minutes.setToolTip("training time of the adaptation (its faces are extracted first)")
        self.adapt_button = QtWidgets.QPushButton("Adapt to this shot", self)
        self.adapt_button.setToolTip("extract the faces of the Read that feeds the SwapModel, continue its model on "
                                     "them (card, rights and detail stage kept) and make the SwapModel use the "
                                     "result; the Target field, when filled, replaces the card's target faces")
        self.adapt_button.clicked.connect(self.adapt_to_shot)
        form = QtWidgets.QFormLayout()
        for label, w in (
                ("Target", _row(self.target, ("Extract…", "extract a faceset from clips of this actor",
                                               lambda: self._extract_dialog(self.target)),
                                ("…", "add a faceset folder", lambda: self._browse_faceset(self.target)))),
                ("Source", _row(self.source, ("Extract…", "extract a faceset from clips of the plate actor",
                                               lambda: self._extract_dialog(self.source)),
                                ("…", "add a faceset folder", lambda: self._browse_faceset(self.source)))),
                ("Extraction", extract_row),
                ("Model", _row(self.out, ("…", "choose the model to write", self._browse_model))),
                ("Resolution", self.res), ("Width", self.width_scale), ("Batch", self.batch),
                ("Iterations", self.iterations), ("Preview every", self.preview_every),
                ("Save every", self.checkpoint_minutes), ("", self.resume)):
            form.addRow(label, w)
        rights_box = QtWidgets.QGroupBox("Rights and consent (stored in the model)", self)
        rights_form = QtWidgets.QFormLayout(rights_box)
        self.rights: dict[str, QtWidgets.QLineEdit] = {}
        for name, label, hint in RIGHTS_FORM:
            field = self.rights[name] = QtWidgets.QLineEdit(rights_box)
            field.setPlaceholderText(hint)
            rights_form.addRow(label + (" *" if name in REQUIRED_RIGHTS else ""), field)
        self.no_rights = QtWidgets.QCheckBox("Train WITHOUT a rights record", rights_box)
        self.no_rights.setStyleSheet(NO_RIGHTS_STYLE)
        self.no_rights.setToolTip("the model will not say whose face it is or who consented; every load and render "
                                  "of it warns (RIGHTS WARNING)")
        rights_form.addRow("", self.no_rights)
        self.start_button = QtWidgets.QPushButton("Start", self)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QtWidgets.QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.rate = QtWidgets.QLabel("", self)
        self.rate.setWordWrap(True)
        self.saved = QtWidgets.QLabel("", self)
        self.saved.setWordWrap(True)
        self.saved.setStyleSheet("color: #7fc97f;")
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.rate, 1)
        self.chart = QtCharts.QChart()
        self.chart.setTitle("loss by iteration")
        # the legend on the right and no axis title: in a low dock the plot keeps the height its tick labels
        # need (below about 200 px QtCharts elides them to "...")
        self.chart.legend().setAlignment(QtCore.Qt.AlignmentFlag.AlignRight)
        self.x_axis = QtCharts.QValueAxis()
        self.x_axis.setLabelFormat("%d")
        self.x_axis.setTickCount(5)
        self.y_axis = QtCharts.QValueAxis()
        self.y_axis.setLabelFormat("%.3g")
        self.y_axis.setTickCount(5)
        self.chart.setMargins(QtCore.QMargins(4, 4, 4, 4))
        self.chart.addAxis(self.x_axis, QtCore.Qt.AlignmentFlag.AlignBottom)
        self.chart.addAxis(self.y_axis, QtCore.Qt.AlignmentFlag.AlignLeft)
        self.chart_view = QtCharts.QChartView(self.chart, self)
        self.chart_view.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        self.chart_view.setMinimumSize(220, 110)
        self.preview = QtWidgets.QLabel("no preview yet", self)
        self.preview.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(100)
        self.preview.setToolTip("columns: A, A->A, B, B->B, A->B")
        # The form and the rights on the left, the run's curve and preview on the right: the panel sits in
        # a wide, low dock beside the node graph.
        # the one-click path first, in the form's scrolling column (a row beside Start would set the dock's, and
        # so the window's, minimum width): the project's shot, nothing else to fill in (the Target field, when
        # filled, replaces the model card's target faces)
        adapt_box = QtWidgets.QGroupBox("Adapt a model to this shot", self)
        adapt_form = QtWidgets.QFormLayout(adapt_box)
        adapt_form.addRow("SwapModel", self.adapt_swap)
        adapt_form.addRow("Train for", self.adapt_minutes)
        adapt_form.addRow(self.adapt_button)
        left = QtWidgets.QVBoxLayout()
        left.addWidget(adapt_box)
        left.addLayout(form)
        left.addWidget(rights_box)
        left.addStretch(1)
        form_area = QtWidgets.QScrollArea(self)  # the long form scrolls; the curve and preview stay in view
        form_area.setWidgetResizable(True)
        form_area.setFrameShape(QtWidgets.QFrame.Shape.NoFrame)
        form_widget = QtWidgets.QWidget(form_area)
        form_widget.setLayout(left)
        form_area.setWidget(form_widget)
        plots = QtWidgets.QHBoxLayout()
        plots.addWidget(self.chart_view, 3)
        plots.addWidget(self.preview, 2)
        right = QtWidgets.QVBoxLayout()
        right.addLayout(buttons)
        right.addWidget(self.saved)
        right.addLayout(plots, 1)
        layout = QtWidgets.QHBoxLayout(self)
        layout.addWidget(form_area, 2)
        layout.addLayout(right, 5)
        self._started_at = 0.0
        self._progress.connect(self.on_progress)
        # Trainer.start() gives no end signal when the run fails (the error is kept on the trainer), so the
        # panel watches the run's thread.
        self._watch = QtCore.QTimer(self)
        self._watch.setInterval(250)
        self._watch.timeout.connect(self._check_ended)

    def set_graph(self, graph) -> None:
        """Make ``graph`` the project "Adapt to this shot" works on."""
        self.graph = graph
        self.adapt_swap.refresh()

    def _swap_names(self) -> list[str]:
        return sorted(n.name for n in self.graph.nodes if n.type_name == "SwapModel") if self.graph else []

    # -- running --------------------------------------------------------------------------------------
    def rights_record(self) -> dict[str, Any]:
        """The rights record the form describes, ``{}`` when it is empty.

        Raises:
            DoublureError: a date that is not YYYY-MM-DD or an expiry not after the consent (naming the field),
                or a required field that is empty while training without a record is not acknowledged. A
                resumed run with an empty form keeps its checkpoint's record, if that one is complete.
        """
        values = {name: field.text().strip() for name, field in self.rights.items()}
        record = rights_record(**values) if any(values.values()) else {}  # checks the dates in any case
        if self.no_rights.isChecked():
            return record
        kept = record
        if not record and self.resume.isChecked():  # as with the CLI, the trainer keeps the checkpoint's record
            try:
                kept = read_meta(self.out.text().strip()).get("rights") or {}
            except ModelFileError:  # nothing to resume: the trainer says so
                return record
        missing = [label for name, label, _ in RIGHTS_FORM if name in REQUIRED_RIGHTS and not kept.get(name)]
        if missing:
            raise DoublureError(f"the rights record needs {', '.join(missing)} (or tick 'Train WITHOUT a rights "
                                f"record')")
        return record

    def config(self, **overrides: Any) -> TrainConfig:
        """The run the form describes (``overrides``: other ``TrainConfig`` fields).

        Raises:
            DoublureError: the rights form is incomplete or wrong (see ``rights_record``).
        """
        resume = self.resume.isChecked()
        fields = dict(out=self.out.text().strip(), source=facesets(self.source.text()),
                      target=facesets(self.target.text()), resume=resume,
                      # a resumed run keeps its checkpoint's shape; asking for another one is refused
                      res=None if resume else int(self.res.currentText()),
                      width=self.width_scale.value(), batch=self.batch.value(),
                      iters=self.iterations.value() or None, rights=self.rights_record(),
                      preview_every=self.preview_every.value(),
                      checkpoint_minutes=self.checkpoint_minutes.value())
        fields.update(overrides)
        return TrainConfig(**fields)

    def start(self) -> None:
        """Start the run the form describes; an incomplete or wrong rights form refuses, saying why."""
        if self.running():
            return
        if not self.out.text().strip():
            self.status_message.emit("training: choose the model file (.dbm) to write")
            return
        try:
            config = self.config()
        except DoublureError as exc:
            self.rate.setText(f"not started: {exc}")
            self.status_message.emit(f"training not started: {exc}")
            return
        problems = rights_problems(config.rights)
        if self.no_rights.isChecked() and problems:
            self.status_message.emit(f"RIGHTS WARNING: training {config.out}: {'; '.join(problems)}")
        self.start_run(config)

    def start_run(self, config: TrainConfig) -> Trainer:
        """Train ``config`` on the trainer's thread and show its progress. Returns the trainer."""
        self.trainer = Trainer(config, progress=self._progress.emit)
        self.iteration = 0
        for series in self.series.values():
            series.clear()
        self.rate.setText("starting: reading the facesets and building the model…")
        self.saved.setText("")
        self._started_at = time.monotonic()
        self.trainer.start()
        self._set_busy(True)
        self._watch.start()
        self.status_message.emit(f"training {config.out} started")
        return self.trainer

    def running(self) -> bool:
        return self.trainer is not None and self.trainer.running

    def _set_busy(self, busy: bool) -> None:
        """While an extraction for an adaptation or a run goes on, only Stop is offered."""
        self.start_button.setEnabled(not busy)
        self.adapt_button.setEnabled(not busy)
        self.stop_button.setEnabled(busy)

    def stop(self) -> None:
        if self.extraction is not None and self.adapting is not None:
            self.extraction.cancel.cancel()
            self.status_message.emit("stopping the shot's face extraction…")
        if self.running():
            self.trainer.stop()
            self.status_message.emit("stopping training (checkpointing)…")

    def adapt_to_shot(self) -> AdaptPlan | None:
        """Adapt the chosen SwapModel's model to its shot: extract the faces of the Read that feeds it, train
        from the model for the chosen minutes, then point the SwapModel at the result (one undoable edit).
        Returns the plan (None when it could not start: the reason is shown)."""
        if self.running() or self.extraction is not None:
            self.status_message.emit("adapt: a training run or an extraction is already under way")
            return None
        try:
            if self.graph is None:
                raise DoublureError("no project is open")
            plan = plan_adaptation(self.graph, self.adapt_swap.currentText() or None,
                                   target=facesets(self.target.text()) or None)
            config = adaptation_config(plan, self.adapt_minutes.value())
        except DoublureError as exc:
            self.rate.setText(f"not started: {exc}")
            self.status_message.emit(f"adapt not started: {exc}")
            return None
        self.adapting = plan
        graph = self.graph
        job = self.extraction = FacesetExtraction(
            lambda progress: extract_shot(graph, plan, progress, job.cancel, min_faces=MIN_FACESET_FACES), self)
        job.progressed.connect(lambda done, total, clip: self.rate.setText(
            f"adapt: reading the faces of {plan.read if clip == plan.plate else os.path.basename(clip)}: "
            f"frame {done}/{total}"))
        job.finished.connect(lambda summary, error: self._shot_extracted(config, summary, error))
        self.rate.setText(f"adapt: reading the faces of {plan.read} ({plan.frame_count} frames) into {plan.faceset}…")
        self.saved.setText("")
        self._set_busy(True)
        job.start()
        return plan

    def _shot_extracted(self, config: TrainConfig, summary: dict | None, error: str) -> None:
        self.extraction = None
        if error:
            self.adapting = None
            self._set_busy(False)
            self.rate.setText(f"adapt {'stopped' if error == 'stopped' else 'failed'}: {error}")
            self.status_message.emit(f"adapt: {error}")
            return
        self.status_message.emit(f"adapt: {summary['items']} faces of the shot; training {config.out}")
        self.start_run(config)

    def _check_ended(self) -> None:
        if self.running():
            if self.iteration == 0:  # the first report comes after the first iterations: show it is alive
                self.rate.setText(f"starting: reading the facesets, building the model and running the first "
                                  f"iterations… {time.monotonic() - self._started_at:.0f} s")
            return
        self._watch.stop()
        self._set_busy(False)
        plan, self.adapting = self.adapting, None
        error = self.trainer.error
        if error is not None:
            self.rate.setText(f"failed: {error}")
            self.status_message.emit(f"training failed: {error}")
            return
        self.update_preview()
        saved = (f"Model saved: {self.trainer.config.out} at iteration {self.trainer.iteration} "
                 f"({time.strftime('%H:%M:%S')})")
        if plan is not None and os.path.isfile(os.path.join(plan.out, "model.json")):
            try:
                use_adapted(self.graph, plan)
            except DoublureError as exc:
                saved += f"; {plan.swap} was not changed: {exc}"
            else:
                saved += f"; {plan.swap} now uses it (Edit > Undo goes back)"
        self.saved.setText(saved)
        self.status_message.emit(f"training stopped at iteration {self.trainer.iteration}; "
                                 f"model saved to {self.trainer.config.out}")

    # -- display --------------------------------------------------------------------------------------
    def on_progress(self, info: dict[str, Any]) -> None:
        """One ``Trainer`` progress report (UI thread): plot ``step`` losses, show new previews."""
        event = info["event"]
        if event in ("preview", "done"):
            self.update_preview()
        if event == "checkpoint":
            self.saved.setText(f"Model saved: {self.trainer.config.out if self.trainer else ''} at iteration "
                               f"{info['iteration']} ({time.strftime('%H:%M:%S')})")
        if event != "step":
            return
        iteration = int(info["iteration"])
        for name, label in PLOTTED_LOSSES.items():
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = QtCharts.QLineSeries()
                series.setName(label)
                self.chart.addSeries(series)
                series.attachAxis(self.x_axis)
                series.attachAxis(self.y_axis)
            series.append(float(iteration), float(info["losses"][name]))
        self.iteration = iteration
        total = info.get("iterations")
        self.rate.setText(f"iteration {iteration}{'/' + str(total) if total else ''}   "
                          f"{info['its_per_s']:.2f} it/s")
        self._rescale()

    def _rescale(self) -> None:
        points = [p for s in self.series.values() for p in s.points()]
        if not points:
            return
        xs, ys = [p.x() for p in points], [p.y() for p in points]
        self.x_axis.setRange(min(xs), max(max(xs), min(xs) + 1))
        lo, hi = min(ys), max(ys)
        pad = (hi - lo) * 0.05 or abs(hi) * 0.05 or 1.0
        self.y_axis.setRange(lo - pad, hi + pad)

    # -- files and facesets ------------------------------------------------------------------------------
    def _browse_faceset(self, field: QtWidgets.QLineEdit) -> None:
        folder = QtWidgets.QFileDialog.getExistingDirectory(self, "Faceset folder", os.getcwd())
        if folder:
            field.setText(os.pathsep.join(facesets(field.text()) + [folder]))

    def _browse_model(self) -> None:
        path, _ = QtWidgets.QFileDialog.getSaveFileName(self, "Identity model", self.out.text() or os.getcwd(),
                                                        "Identity models (*.dbm);;All files (*)")
        if path:
            self.out.setText(path if path.endswith(".dbm") else path + ".dbm")

    def _extract_dialog(self, field: QtWidgets.QLineEdit) -> None:
        clips, _ = QtWidgets.QFileDialog.getOpenFileNames(self, "Clips of the actor", os.getcwd(),
                                                          "Video (*.mp4 *.mov *.mkv *.avi);;All files (*)")
        if not clips:
            return
        default = os.path.splitext(clips[0])[0] + "_faceset"
        out_dir = QtWidgets.QFileDialog.getExistingDirectory(self, "Faceset folder to write",
                                                             os.path.dirname(default)) or default
        self.extract(field, clips, out_dir)

    def extract(self, field: QtWidgets.QLineEdit, clips: list[str], out_dir: str) -> FacesetExtraction | None:
        """Extract a faceset from ``clips`` into ``out_dir`` in the background; when it is done its folder
        joins ``field``'s facesets. Returns the extraction (None while another one runs)."""
        if self.extraction is not None:
            self.status_message.emit("an extraction is already running")
            return None
        from doublure.faces.extract import extract_faceset

        size, every = self.extract_size.value(), self.extract_every.value()
        job = self.extraction = FacesetExtraction(
            lambda progress: extract_faceset(clips, out_dir, size=size, every=every, progress=progress), self)
        job.progressed.connect(lambda done, total, clip: self.rate.setText(
            f"extracting {os.path.basename(clip)}: frame {done}/{total}"))
        job.finished.connect(lambda summary, error: self._extracted(field, out_dir, summary, error))
        self.rate.setText(f"extracting faces from {len(clips)} clip(s) into {out_dir}…")
        job.start()
        return job

    def _extracted(self, field: QtWidgets.QLineEdit, out_dir: str, summary: dict | None, error: str) -> None:
        self.extraction = None
        if error:
            self.rate.setText(f"extraction failed: {error}")
            self.status_message.emit(f"faceset extraction failed: {error}")
            return
        if out_dir not in facesets(field.text()):
            field.setText(os.pathsep.join(facesets(field.text()) + [out_dir]))
        missing = summary.get("missing") or []
        self.rate.setText(f"extracted {summary['items']} faces into {out_dir}"
                          + (f"; the coverage lacks: {', '.join(map(str, missing))}" if missing else ""))
        self.status_message.emit(f"faceset {out_dir}: {summary['items']} faces")

    def update_preview(self) -> None:
        """Show the trainer's latest preview grid, if it has one."""
        if self.trainer is None:
            return
        image = preview_qimage(self.trainer.latest_preview())
        if image is not None:
            pix = QtGui.QPixmap.fromImage(image)
            self.preview.setPixmap(pix.scaled(self.preview.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                              QtCore.Qt.TransformationMode.SmoothTransformation))

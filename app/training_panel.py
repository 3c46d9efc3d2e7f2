"""The training panel: start, stop and resume an identity-model training run, with a live loss plot, the
latest preview grid and iterations per second.

A thin layer over ``doublure.models.Trainer``. What the panel relies on:
- ``Trainer(target=, source=, out=, res=, resume=, progress=callback)``;
- ``start()`` (may block: the panel calls it on its own thread) and ``stop()`` (asks the run to checkpoint
  and end);
- ``callback(info)`` with ``info`` a mapping or object holding ``iteration`` and ``losses`` (name -> value)
  or ``loss``, and optionally ``its`` (iterations per second);
- ``latest_preview()`` -> an (H, W, 3) uint8 or float array in [0, 1], or None.
The run lives on its own thread, so closing the panel does not stop it.
"""
from __future__ import annotations

import threading
import time
from typing import Any

import numpy as np
from PySide6 import QtCharts, QtCore, QtGui, QtWidgets


def _field(info: Any, name: str, default: Any = None) -> Any:
    if isinstance(info, dict):
        return info.get(name, default)
    return getattr(info, name, default)


def trainer_class() -> type | None:
    """``doublure.models.Trainer`` when the identity-model package provides it."""
    try:
        from doublure import models
    except ImportError:
        return None
    return getattr(models, "Trainer", None)


def preview_qimage(preview: Any) -> QtGui.QImage | None:
    """An (H, W, 3) uint8 or [0, 1] float array (or a (3, H, W) tensor) as an owned QImage."""
    if preview is None:
        return None
    if hasattr(preview, "detach"):
        preview = preview.detach().cpu().numpy()
        if preview.ndim == 3 and preview.shape[0] in (1, 3):
            preview = np.moveaxis(preview, 0, -1)
    arr = np.asarray(preview)
    if arr.dtype != np.uint8:
        arr = (np.clip(arr, 0.0, 1.0) * 255 + 0.5).astype(np.uint8)
    if arr.ndim == 2:
        arr = np.repeat(arr[..., None], 3, axis=2)
    arr = np.ascontiguousarray(arr[..., :3])
    h, w = arr.shape[:2]
    return QtGui.QImage(arr.data, w, h, 3 * w, QtGui.QImage.Format.Format_RGB888).copy()


class TrainingPanel(QtWidgets.QWidget):
    """Start/Stop a run, its loss curves, preview and rate."""

    status_message = QtCore.Signal(str)
    _progress = QtCore.Signal(object)
    _ended = QtCore.Signal(str)

    def __init__(self, parent: QtWidgets.QWidget | None = None) -> None:
        super().__init__(parent)
        self.trainer: Any = None
        self.thread: threading.Thread | None = None
        self.iteration = 0
        self.series: dict[str, QtCharts.QLineSeries] = {}
        self._its_times: list[tuple[float, int]] = []
        self.target = QtWidgets.QLineEdit(self)
        self.target.setPlaceholderText("faceset of the identity to put in (B)")
        self.source = QtWidgets.QLineEdit(self)
        self.source.setPlaceholderText("faceset of the plate actor (A)")
        self.out = QtWidgets.QLineEdit(self)
        self.out.setPlaceholderText("models/actor.dbm")
        self.res = QtWidgets.QComboBox(self)
        self.res.addItems(["64", "128", "256", "512"])
        self.res.setCurrentText("128")
        self.resume = QtWidgets.QCheckBox("resume the run in the output model", self)
        form = QtWidgets.QFormLayout()
        for label, w in (("Target", self.target), ("Source", self.source), ("Model", self.out),
                         ("Resolution", self.res), ("", self.resume)):
            form.addRow(label, w)
        self.start_button = QtWidgets.QPushButton("Start", self)
        self.start_button.clicked.connect(self.start)
        self.stop_button = QtWidgets.QPushButton("Stop", self)
        self.stop_button.setEnabled(False)
        self.stop_button.clicked.connect(self.stop)
        self.rate = QtWidgets.QLabel("", self)
        buttons = QtWidgets.QHBoxLayout()
        buttons.addWidget(self.start_button)
        buttons.addWidget(self.stop_button)
        buttons.addWidget(self.rate, 1)
        self.chart = QtCharts.QChart()
        self.chart.setTitle("loss")
        self.chart.legend().setAlignment(QtCore.Qt.AlignmentFlag.AlignBottom)
        self.x_axis = QtCharts.QValueAxis()
        self.x_axis.setTitleText("iteration")
        self.y_axis = QtCharts.QValueAxis()
        self.chart.addAxis(self.x_axis, QtCore.Qt.AlignmentFlag.AlignBottom)
        self.chart.addAxis(self.y_axis, QtCore.Qt.AlignmentFlag.AlignLeft)
        self.chart_view = QtCharts.QChartView(self.chart, self)
        self.chart_view.setMinimumHeight(160)
        self.preview = QtWidgets.QLabel("no preview yet", self)
        self.preview.setAlignment(QtCore.Qt.AlignmentFlag.AlignCenter)
        self.preview.setMinimumHeight(120)
        layout = QtWidgets.QVBoxLayout(self)
        layout.addLayout(form)
        layout.addLayout(buttons)
        layout.addWidget(self.chart_view, 2)
        layout.addWidget(self.preview, 1)
        self._progress.connect(self.on_progress)
        self._ended.connect(self._on_ended)
        self._preview_timer = QtCore.QTimer(self)
        self._preview_timer.setInterval(2000)
        self._preview_timer.timeout.connect(self.update_preview)
        if trainer_class() is None:
            self.start_button.setEnabled(False)
            self.start_button.setToolTip("doublure.models has no Trainer yet")
            self.rate.setText("training needs doublure.models.Trainer")

    # -- running --------------------------------------------------------------------------------------
    def start(self) -> None:
        cls = trainer_class()
        if cls is None or self.running():
            return
        trainer = cls(target=self.target.text(), source=self.source.text(), out=self.out.text(),
                      res=int(self.res.currentText()), resume=self.resume.isChecked(), progress=self._progress.emit)
        self.attach(trainer)

    def attach(self, trainer: Any) -> None:
        """Run ``trainer`` (see the module docstring for what it must offer) and show its progress."""
        self.trainer = trainer
        self.iteration = 0
        self._its_times.clear()
        for series in self.series.values():
            series.clear()
        self.start_button.setEnabled(False)
        self.stop_button.setEnabled(True)
        self._preview_timer.start()
        self.thread = threading.Thread(target=self._run, name="doublure-train", daemon=True)
        self.thread.start()
        self.status_message.emit("training started")

    def _run(self) -> None:
        try:
            self.trainer.start()
        except Exception as exc:  # the run's error belongs in the panel, not on a dead thread
            self._ended.emit(f"{type(exc).__name__}: {exc}")
        else:
            self._ended.emit("")

    def running(self) -> bool:
        return self.thread is not None and self.thread.is_alive()

    def stop(self) -> None:
        if self.trainer is not None:
            self.trainer.stop()
            self.status_message.emit("stopping training (checkpointing)…")

    def _on_ended(self, error: str) -> None:
        self.start_button.setEnabled(trainer_class() is not None)
        self.stop_button.setEnabled(False)
        self._preview_timer.stop()
        self.update_preview()
        self.status_message.emit(f"training stopped: {error}" if error else "training stopped")

    # -- display --------------------------------------------------------------------------------------
    def on_progress(self, info: Any) -> None:
        """Add one progress report (UI thread) to the plot and the rate."""
        iteration = int(_field(info, "iteration", self.iteration + 1))
        losses = _field(info, "losses")
        if losses is None and _field(info, "loss") is not None:
            losses = {"loss": _field(info, "loss")}
        for name, value in (losses or {}).items():
            series = self.series.get(name)
            if series is None:
                series = self.series[name] = QtCharts.QLineSeries()
                series.setName(name)
                self.chart.addSeries(series)
                series.attachAxis(self.x_axis)
                series.attachAxis(self.y_axis)
            series.append(float(iteration), float(value))
        self.iteration = iteration
        now = time.perf_counter()
        self._its_times.append((now, iteration))
        self._its_times = self._its_times[-50:]
        its = _field(info, "its")
        if its is None and len(self._its_times) >= 2:
            (t0, i0), (t1, i1) = self._its_times[0], self._its_times[-1]
            its = (i1 - i0) / (t1 - t0) if t1 > t0 else None
        self.rate.setText(f"iteration {iteration}" + (f"   {its:.2f} it/s" if its else ""))
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

    def update_preview(self) -> None:
        if self.trainer is None or not hasattr(self.trainer, "latest_preview"):
            return
        image = preview_qimage(self.trainer.latest_preview())
        if image is not None:
            pix = QtGui.QPixmap.fromImage(image)
            self.preview.setPixmap(pix.scaled(self.preview.size(), QtCore.Qt.AspectRatioMode.KeepAspectRatio,
                                              QtCore.Qt.TransformationMode.SmoothTransformation))

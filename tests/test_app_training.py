"""The training panel end to end (issue 23, item 7): extract both facesets from the panel, train with a live
loss curve and previews while it trains, and say where and when the model was saved."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from PySide6 import QtCore

from test_app_support import window  # noqa: F401

MEDIA = Path(__file__).resolve().parents[1] / "resources" / "demo" / "media"


def test_training_panel_from_clips_to_saved_model(qtbot, window, tmp_path):
    window.resize(1600, 900)
    qtbot.waitUntil(lambda: window.width() == 1600, timeout=5000)
    window.training_dock.raise_()
    panel = window.training_panel
    panel.extract_size.setValue(64)
    panel.extract_every.setValue(8)
    for field, actor in ((panel.source, "W009"), (panel.target, "M030")):
        job = panel.extract(field, [str(MEDIA / f"{actor}_front_happy_level3_001.mp4")], str(tmp_path / actor))
        assert job is not None
        qtbot.waitUntil(lambda: panel.extraction is None, timeout=120000)
        assert field.text() == str(tmp_path / actor), panel.rate.text()
        assert "extracted" in panel.rate.text()
        assert (tmp_path / actor).is_dir() and any((tmp_path / actor).iterdir())
    panel.out.setText(str(tmp_path / "w009_to_m030.dbm"))
    panel.res.setCurrentText("64")
    panel.width_scale.setValue(0.125)
    panel.batch.setValue(4)
    panel.preview_every.setValue(10)
    panel.no_rights.setChecked(True)
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.running() and panel.trainer.config.preview_every == 10
    assert panel.rate.text().startswith("starting")
    # While it trains: a curve of several points and a preview grid, before anything is stopped.
    qtbot.waitUntil(lambda: panel.preview.pixmap() is not None and not panel.preview.pixmap().isNull()
                    and panel.series.get("a") is not None and panel.series["a"].count() >= 2, timeout=120000)
    assert panel.running()
    assert panel.x_axis.labelFormat() == "%d" and panel.y_axis.max() > panel.y_axis.min()
    chart = panel.chart_view.grab().toImage()
    assert chart.width() >= 320 and chart.height() >= 200
    qtbot.mouseClick(panel.stop_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running() and panel.start_button.isEnabled(), timeout=60000)
    assert panel.trainer.error is None
    assert "Model saved" in panel.saved.text() and "w009_to_m030.dbm" in panel.saved.text()
    assert (tmp_path / "w009_to_m030.dbm" / "model.json").is_file()
    grid = panel.trainer.latest_preview()
    assert grid is not None and np.asarray(grid).shape[1] == 5 * 64


def test_adapt_to_this_shot_from_the_training_panel(qtbot, window, tmp_path, identity_model, media_dir):
    """Issue 21 item 2: one click extracts the shot's faces through its Read, continues the SwapModel's model on
    them with progress, and the SwapModel then uses the adapted model (one undoable edit)."""
    from test_adapt import shot_project

    model, _ = identity_model
    graph, _ = shot_project(tmp_path, media_dir, model, last=24)
    window.set_graph(graph)
    window.training_dock.raise_()
    panel = window.training_panel
    panel.adapt_swap.showPopup()
    panel.adapt_swap.hidePopup()
    assert [panel.adapt_swap.itemText(i) for i in range(panel.adapt_swap.count())] == ["SwapModel1"]
    panel.adapt_minutes.setValue(0.1)
    qtbot.mouseClick(panel.adapt_button, QtCore.Qt.MouseButton.LeftButton)
    plan = panel.adapting
    assert plan is not None and panel.extraction is not None and not panel.adapt_button.isEnabled()
    assert panel.rate.text().startswith("adapt: reading the faces of Read1")
    qtbot.waitUntil(lambda: panel.running(), timeout=120000)
    assert panel.trainer.config.from_model == plan.model and panel.trainer.config.source == [plan.faceset]
    qtbot.waitUntil(lambda: not panel.running() and panel.adapt_button.isEnabled(), timeout=120000)
    assert panel.trainer.error is None, panel.trainer.error
    assert "SwapModel1 now uses it" in panel.saved.text()
    assert graph.node("SwapModel1").path("model") == plan.out
    graph.undo()
    assert graph.node("SwapModel1").path("model") == model


def test_adapt_to_this_shot_says_why_it_cannot_start(qtbot, window):
    panel = window.training_panel
    qtbot.mouseClick(panel.adapt_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.rate.text() == "not started: adapt: the project has no SwapModel node to adapt"
    assert panel.adapting is None and panel.adapt_button.isEnabled()

"""Render, training and properties panels through their widgets: a real render of real footage on a
background thread (progress, cancel, log, view the result), the training panel driving a real training run
on two small MEAD facesets (plot, rate, stop, preview), and typed knob editors with animation buttons,
keyed-knob colours and node actions."""
from __future__ import annotations

import json
import time
from pathlib import Path

from PySide6 import QtCore

import doublure.nodes  # noqa: F401
from doublure.app.properties import ANIMATED_STYLE, KEY_STYLE, sequence_pattern_for
from doublure.engine.imageio import read_image

from test_app_support import constant_chain, window  # noqa: F401

ROOT = Path(__file__).resolve().parents[1]


def test_render_panel_renders_real_footage_in_the_background(qtbot, window, tmp_path, media_dir):
    graph = window.graph
    read = graph.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=100)
    write = graph.create("Write", inputs=[read], file=str(tmp_path / "out" / "plate.####.png"))
    panel = window.render_panel
    assert [panel.writes.item(i).text() for i in range(panel.writes.count())] == [write.name]
    panel.frames.setText("1-3")
    ticks = []
    timer = QtCore.QTimer()
    timer.timeout.connect(lambda: ticks.append(time.perf_counter()))
    timer.start(5)
    qtbot.mouseClick(panel.render_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.job is not None and not panel.render_button.isEnabled()
    qtbot.waitUntil(lambda: panel.job is None, timeout=120000)
    timer.stop()
    log = panel.log.toPlainText()
    assert "finished: 3 written" in log, log
    assert panel.progress.value() == 3 and "fps" in panel.rate.text()
    for frame in (1, 2, 3):
        assert read_image(str(tmp_path / "out" / f"plate.{frame:04d}.png")).pixels.shape[:2] == (256, 256)
    assert len(ticks) > 3  # the event loop kept running while frames rendered
    qtbot.mouseClick(panel.view_button, QtCore.Qt.MouseButton.LeftButton)
    # Shown as A from a free viewer input: the inputs of an A/B set-up stay as they were.
    assert window.viewer.node_in_slot(window.viewer.state.a) is write

    # Cancel: a long range stops early and says so.
    panel.frames.setText("10-100")
    job = panel.start()
    qtbot.waitUntil(lambda: panel.progress.value() >= 1, timeout=60000)
    qtbot.mouseClick(panel.cancel_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.job is None, timeout=60000)
    assert job.cancel.cancelled and "render stopped: cancelled" in panel.log.toPlainText()
    written = sorted((tmp_path / "out").glob("plate.*.png"))
    assert 4 <= len(written) < 3 + 91


def test_training_panel_drives_a_real_training_run(qtbot, window, tmp_path):
    from doublure.faces.extract import extract_faceset

    media = ROOT / "resources" / "demo" / "media"
    for actor in ("W009", "M030"):
        extract_faceset([str(media / f"{actor}_front_happy_level3_001.mp4")], str(tmp_path / actor), size=64, every=8)
    panel = window.training_panel
    panel.out.setText(str(tmp_path / "w009_to_m030.dbm"))
    messages = []
    panel.status_message.connect(messages.append)
    # No run without the rights record (or the acknowledgement of training without one); each refusal names
    # the field.
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert not panel.running() and panel.trainer is None
    assert "needs Subject, Consent given by, Agreement" in panel.rate.text() and "not started" in messages[-1]
    rights = {"subject": "M030", "consent_given_by": "M030 (the actor)", "consent_date": "10/01/2024",
              "agreement": "AGR-0042", "allowed_uses": "film, trailer", "expiry": "2023-12-31"}
    for name, value in rights.items():
        qtbot.keyClicks(panel.rights[name], value)
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.trainer is None and "consent_date '10/01/2024' is not a date (YYYY-MM-DD)" in panel.rate.text()
    panel.rights["consent_date"].setText("2024-01-10")
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.trainer is None and "expiry 2023-12-31 is not after consent_date 2024-01-10" in panel.rate.text()
    panel.rights["expiry"].setText("2099-12-31")
    # Without facesets the run fails at once; the panel says why and can start again.
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: panel.start_button.isEnabled(), timeout=20000)
    assert "failed" in panel.rate.text() and "--source" in panel.rate.text()
    panel.source.setText(str(tmp_path / "W009"))
    panel.target.setText(str(tmp_path / "M030"))
    panel.res.setCurrentText("64")
    panel.width_scale.setValue(0.125)
    panel.batch.setValue(4)
    assert panel.iterations.value() == 0  # until stopped
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.running() and not panel.start_button.isEnabled() and panel.stop_button.isEnabled()
    config = panel.trainer.config
    assert (config.res, config.width, config.batch, config.iters) == (64, 0.125, 4, None)
    # The trainer reports every 10 iterations: two points per identity's curve.
    qtbot.waitUntil(lambda: panel.iteration >= 20, timeout=60000)
    assert set(panel.series) == {"a", "b"} and panel.series["a"].count() >= 2
    assert all(0 < p.y() < 10 for s in panel.series.values() for p in s.points())
    assert "it/s" in panel.rate.text()
    # Closing the panel's dock does not stop the run.
    window.training_dock.close()
    reached = panel.iteration
    qtbot.waitUntil(lambda: panel.iteration > reached, timeout=60000)
    qtbot.mouseClick(panel.stop_button, QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not panel.running() and panel.start_button.isEnabled(), timeout=60000)
    assert panel.trainer.error is None and not panel.stop_button.isEnabled()
    # Stopping checkpoints the model, with the form's rights record, and shows the final preview grid
    # (A, A->A, B, B->B, A->B).
    meta = json.loads((tmp_path / "w009_to_m030.dbm" / "model.json").read_text())
    assert meta["rights"] == {"subject": "M030", "consent_given_by": "M030 (the actor)", "consent_date": "2024-01-10",
                              "agreement": "AGR-0042", "allowed_uses": ["film", "trailer"], "expiry": "2099-12-31"}
    assert not any("RIGHTS WARNING" in m for m in messages)
    grid = panel.trainer.latest_preview()
    assert grid.shape[1] == 5 * 64
    assert panel.preview.pixmap() is not None and not panel.preview.pixmap().isNull()
    # Resuming with an empty form keeps the checkpoint's record (as the CLI does).
    for field in panel.rights.values():
        field.clear()
    panel.resume.setChecked(True)
    assert panel.config().rights == {}
    # A new model without a record only starts once that is acknowledged, and then loudly.
    panel.resume.setChecked(False)
    panel.out.setText(str(tmp_path / "no_rights.dbm"))
    panel.iterations.setValue(1)
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert not panel.running() and "needs Subject" in panel.rate.text()
    panel.no_rights.setChecked(True)
    qtbot.mouseClick(panel.start_button, QtCore.Qt.MouseButton.LeftButton)
    assert panel.trainer.config.rights == {} and "RIGHTS WARNING" in messages[-2] and "no rights record" in messages[-2]
    qtbot.waitUntil(lambda: not panel.running() and panel.start_button.isEnabled(), timeout=60000)
    assert panel.trainer.error is None
    assert json.loads((tmp_path / "no_rights.dbm" / "model.json").read_text())["rights"] == {}


def test_knob_editors_animation_and_actions(qtbot, window, tmp_path, media_dir):
    graph = window.graph
    const, gain = constant_chain(graph)
    panel = window.properties.open_node(const)
    # Typed editors: a colour's fields, an int field, a slider released at a position.
    colour = panel.editors["color"]
    colour.fields[1].setValue(0.5)
    assert const.value("color") == (0.18, 0.5, 0.18)
    panel.editors["width"].field.setValue(80)
    assert const.value("width") == 80
    gain_panel = window.properties.open_node(gain)
    slider = gain_panel.editors["gain"].slider
    slider.setValue(500)  # a released drag over soft range 0-4: one commit
    assert abs(gain.value("gain") - 2.0) < 1e-6
    steps = len(graph.undo_stack)
    # Animation: set a key at frame 1, another at frame 5 (editing an animated knob keys it).
    ramp = panel.editors["ramp"]
    anim = ramp.layout_.itemAt(ramp.layout_.count() - 1).widget()
    anim.set_key()
    window.viewer.set_frame(5)
    ramp.field.setValue(0.05)
    knob = const.knob("ramp")
    assert knob.key_frames() == [1.0, 5.0] and knob.value_at(5) == 0.05
    assert ramp.field.styleSheet() == KEY_STYLE
    window.viewer.set_frame(3)
    assert ramp.field.styleSheet() == ANIMATED_STYLE
    assert abs(ramp.field.value() - knob.value_at(3)) < 1e-4
    anim.jump(1)
    assert graph.current_frame == 5
    assert len(graph.undo_stack) == steps + 2
    # A bad value is refused with a message, the knob keeps its value.
    panel.editors["width"].commit(-3)
    assert const.value("width") == 80 and "width" in window.statusBar().currentMessage()
    # Renaming from the panel header.
    panel.name_edit.setText("Plate")
    panel.name_edit.editingFinished.emit()
    assert const.name == "Plate"
    # A node action runs in the background: Read's Detect range on real footage.
    read = graph.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"))
    read_panel = window.properties.open_node(read)
    assert set(read_panel.action_buttons) == {"detect_range"}
    qtbot.mouseClick(read_panel.action_buttons["detect_range"], QtCore.Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: read_panel.action_buttons["detect_range"].isEnabled(), timeout=60000)
    assert read.value("last") > 90
    assert read_panel.editors["last"].field.value() == read.value("last")
    # Sequence detection in the file picker: one frame of a numbered sequence gives its pattern.
    for frame in (1, 2, 3):
        (tmp_path / f"plate.{frame:04d}.exr").write_bytes(b"")
    assert sequence_pattern_for(str(tmp_path / "plate.0002.exr")) == str(tmp_path / "plate.####.exr")
    assert sequence_pattern_for(str(tmp_path / "other.exr")) == str(tmp_path / "other.exr")

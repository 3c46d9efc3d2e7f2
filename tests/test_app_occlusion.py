"""Painting an Occlusion node in the real window on real footage: strokes are drawn as they are painted and
stay drawn where they lie, tied to the frame painted; Train matte runs from the properties with progress and
cancel and its status shows there; the trained matte is drawn over the image (magenta). With a display
(Xvfb), ``DOUBLURE_SCREENSHOT_DIR`` keeps a screenshot of the window."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PySide6 import QtCore

import doublure.nodes  # noqa: F401

from test_app_support import window  # noqa: F401
from test_app_viewer import DEMO_MEDIA, drag, wait_current


def colour_at(canvas, point: QtCore.QPointF) -> tuple[int, int, int]:
    c = canvas.grab().toImage().pixelColor(int(point.x()), int(point.y()))
    return c.red(), c.green(), c.blue()


def test_strokes_drawn_as_painted_train_matte_and_its_overlay(qtbot, window):
    graph, viewer = window.graph, window.viewer
    read = graph.create("Read", file=str(DEMO_MEDIA / "W009_front_happy_level3_001.mp4"), first=1, last=108)
    detect = graph.create("FaceDetect", inputs=[read])
    node = graph.create("Occlusion", hands=False, far_side=False, steps=10, inputs=[detect])
    viewer.set_input(1, node)
    wait_current(qtbot, viewer, 120000)
    viewer.canvas.resize(512, 512)
    viewer.canvas.fit()
    canvas = viewer.canvas
    (face,) = canvas.frame_a.image.faces
    x0, y0, x1, y1 = face.box
    w, h = x1 - x0, y1 - y0
    window.graph_view.select([node])
    panel = window.properties.open_node(node)
    assert "not trained" in panel.status_label.text()
    viewer.paint_button.setChecked(True)   # what P does (key routing is tested with the viewer)
    assert canvas.paint_enabled and viewer.paint_target is node
    assert viewer.brush_scope.currentData() == "only" and not viewer.brush_scope.isEnabled()
    viewer.brush_size.setValue(12)
    to_widget = lambda x, y: canvas.to_widget(QtCore.QPointF(x, y))  # noqa: E731
    # an "occluder" across the chin, then (E) the face on the forehead and cheeks
    chin = [(x0 + w * (0.3 + 0.02 * i), y0 + 0.9 * h) for i in range(21)]
    mid = to_widget(*chin[10])
    before = colour_at(canvas, mid)
    drag(canvas, [to_widget(x, y).toPoint() for x, y in chin])
    canvas.repaint()
    after = colour_at(canvas, mid)
    assert after[0] - after[2] > before[0] - before[2] + 30, (before, after)   # drawn red over the chin
    cheek = to_widget(x0 + 0.5 * w, y0 + 0.55 * h)
    skin = colour_at(canvas, cheek)
    viewer.brush_mode.setCurrentText("erase")   # E
    for fy in (0.25, 0.55):
        drag(canvas, [to_widget(x0 + w * (0.25 + 0.05 * i), y0 + fy * h).toPoint() for i in range(11)])
    canvas.repaint()
    strokes = node.value("strokes")
    assert [s["mode"] for s in strokes] == ["add", "erase", "erase"]
    assert all(s["frames"] == {"only": graph.current_frame} for s in strokes)   # the painted frame is kept
    blue = colour_at(canvas, cheek)
    assert blue[2] - blue[0] > skin[2] - skin[0] + 30, (skin, blue)   # the face strokes drawn blue
    # Train matte from the properties: progress while it runs, then the status says what it was trained on
    runner = panel.run_action("train")
    assert not panel.progress.isHidden() and panel.cancel_button.isEnabled()
    finished = []
    runner.finished.connect(finished.append)
    qtbot.waitUntil(lambda: bool(finished), timeout=600000)
    assert finished == [""], finished
    assert "trained on frames" in panel.status_label.text()
    wait_current(qtbot, viewer, 120000)
    canvas.fit()   # the whole frame on screen, whatever size the window gave the viewer
    canvas.repaint()
    shots = os.environ.get("DOUBLURE_SCREENSHOT_DIR")
    if shots:
        window.grab().save(str(Path(shots) / "occlusion_paint.png"))
    occlusion = canvas.frame_a.image.faces[0].occlusion
    assert occlusion is not None and occlusion.alpha.max() > 0   # ten steps: a start of the chin as "occluder"
    # the matte is drawn: magenta over the chin where the matte is
    yy, xx = np.unravel_index(int(occlusion.alpha[0].argmax()), occlusion.alpha.shape[1:])
    point = to_widget(occlusion.window[2] + xx + 0.5, occlusion.window[0] + yy + 0.5)
    viewer.matte_check.setChecked(False)
    canvas.repaint()
    plain = colour_at(canvas, point)
    viewer.matte_check.setChecked(True)
    canvas.repaint()
    tinted = colour_at(canvas, point)
    assert tinted[0] + tinted[2] > plain[0] + plain[2] + 20 and tinted[1] <= plain[1], (plain, tinted)
    # changed strokes: the viewer shows why the matte is not applied
    drag(canvas, [to_widget(x0 + w * 0.5, y0 + 0.8 * h).toPoint(), to_widget(x0 + w * 0.55, y0 + 0.8 * h).toPoint()])
    qtbot.waitUntil(lambda: "strokes changed" in viewer.canvas.message, timeout=60000)
    assert "strokes changed" in panel.status_label.text()

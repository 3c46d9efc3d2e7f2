"""The viewer driven through its widgets: knob edits reach the image, A/B wipe and flip (without
recomputing cached frames), stale-frame cancellation while scrubbing real footage, painting into a strokes
knob, face overlays and the pixel probe on real footage, playback and the cache line."""
from __future__ import annotations

from pathlib import Path

import torch
from PySide6 import QtCore, QtGui, QtTest

import doublure.nodes  # noqa: F401  (registers Read, FaceDetect...)

from test_app_support import constant_chain, window  # noqa: F401

DEMO_MEDIA = Path(__file__).resolve().parents[1] / "resources" / "demo" / "media"


def wait_current(qtbot, viewer, timeout=60000):
    qtbot.waitUntil(viewer.is_current, timeout=timeout)
    viewer.canvas.repaint()


def shown_pixel(viewer, fx: float = 0.5, fy: float = 0.5) -> tuple[int, int, int]:
    """The colour on screen at a fraction of the shown content's width and height (grabbed from the widget,
    i.e. what was painted)."""
    canvas = viewer.canvas
    rect = canvas.content_rect()
    p = canvas.to_widget(QtCore.QPointF(rect.left() + rect.width() * fx, rect.top() + rect.height() * fy))
    image = canvas.grab().toImage()
    c = image.pixelColor(int(p.x()), int(p.y()))
    return c.red(), c.green(), c.blue()


def test_knob_edit_in_properties_changes_the_viewer_image(qtbot, window):
    graph, viewer = window.graph, window.viewer
    const, gain = constant_chain(graph, width=160, height=120)
    viewer.set_input(1, gain)
    wait_current(qtbot, viewer)
    before = shown_pixel(viewer)
    panel = window.properties.open_node(gain)
    field = panel.editors["gain"].field
    field.setValue(3.0)  # what typing a value and Enter does
    assert gain.value("gain") == 3.0
    wait_current(qtbot, viewer)
    after = shown_pixel(viewer)
    assert after[0] > before[0] + 20
    computes = graph.cache.stats.computes
    window.graph_undo()  # back to a cached value: shown again without computing
    wait_current(qtbot, viewer)
    assert shown_pixel(viewer) == before
    assert graph.cache.stats.computes == computes
    assert panel.editors["gain"].field.value() == 1.0
    # Proxy: the viewer evaluates at half resolution and still shows the full frame's size.
    viewer.proxy_combo.setCurrentIndex(viewer.proxy_combo.findData(0.5))
    wait_current(qtbot, viewer)
    frame = viewer.canvas.frame_a
    assert frame.rgba.shape[:2] == (60, 80) and viewer.canvas.frame_size(frame).width() == 160


def test_wipe_flip_side_and_difference(qtbot, window):
    graph, viewer = window.graph, window.viewer
    const, gain = constant_chain(graph, width=160, height=120)
    graph.set_knob(gain, "gain", 4.0)
    viewer.set_input(1, const)
    viewer.set_input(2, gain)
    viewer.set_ab(1, 2)
    viewer.set_mode("wipe")
    wait_current(qtbot, viewer)
    viewer.canvas.fit()
    viewer.canvas.repaint()
    # Wipe at the middle: A (dark) left of the line, B (bright) right of it.
    left, right = shown_pixel(viewer, 0.3), shown_pixel(viewer, 0.7)
    assert right[0] > left[0] + 40
    # Both frames are cached now: flipping must not compute or convert anything.
    computes = graph.cache.stats.computes
    viewer.set_mode("a")
    viewer.canvas.repaint()
    a_pixel = shown_pixel(viewer)
    viewer.canvas.setFocus()
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_X)
    assert viewer.state.mode == "b" and viewer.is_current() and not viewer.evaluator.busy()
    viewer.canvas.repaint()
    b_pixel = shown_pixel(viewer)
    assert b_pixel[0] > a_pixel[0] + 40
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_X)
    viewer.canvas.repaint()
    assert shown_pixel(viewer) == a_pixel
    assert graph.cache.stats.computes == computes
    # W toggles the wipe; flipping in wipe swaps the sides.
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_W)
    assert viewer.state.mode == "wipe"
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_X)
    viewer.canvas.repaint()
    assert shown_pixel(viewer, 0.3)[0] > shown_pixel(viewer, 0.7)[0] + 40
    assert graph.cache.stats.computes == computes
    # Side by side: both images next to each other; difference: |A - B| is not black.
    viewer.set_mode("side")
    viewer.canvas.fit()
    viewer.canvas.repaint()
    assert abs(shown_pixel(viewer, 0.25)[0] - shown_pixel(viewer, 0.75)[0]) > 40
    viewer.set_mode("diff")
    viewer.canvas.repaint()
    assert shown_pixel(viewer)[0] > 40
    assert graph.cache.stats.computes == computes


def test_scrubbing_real_footage_cancels_stale_frames(qtbot, window, media_dir, monkeypatch):
    graph, viewer = window.graph, window.viewer
    graph.set_setting("last", 40)
    read = graph.create("Read", file=str(media_dir / "plates_1080" / "demo1_video.mp4"), first=1, last=250)
    viewer.set_input(1, read)
    wait_current(qtbot, viewer)
    # Full pictures only: each scrub position may get its quick provisional picture (the plate at the previews'
    # quarter scale, on a thread of its own), and how many of those a fast scrub gets depends on timing.
    full_frames = []
    compute = type(read).compute

    def counted(node, ctx, inputs):
        if node is read and ctx.proxy == 1.0:
            full_frames.append(ctx.frame)
        return compute(node, ctx, inputs)

    monkeypatch.setattr(type(read), "compute", counted)
    # A fast scrub over 20 frames, the way dragging the timeline emits them.
    for frame in range(2, 22):
        viewer.timeline.ruler.scrubbed.emit(frame)
    assert graph.current_frame == 21
    wait_current(qtbot, viewer)
    assert viewer.canvas.frame_a.frame == 21
    assert len(full_frames) <= 4, f"scrubbing queued a backlog: {full_frames} decoded for 20 scrub positions"
    image = viewer.canvas.frame_a.image
    assert (image.width, image.height) == (1080, 1920)


def test_paint_stroke_changes_the_mask(qtbot, window):
    graph, viewer = window.graph, window.viewer
    const = graph.create("AppTestConstant", width=200, height=160)
    faces = graph.create("AppTestFaces", inputs=[const])
    mask = graph.create("AppTestStrokeMask", inputs=[faces])
    viewer.set_input(1, mask)
    wait_current(qtbot, viewer)
    viewer.canvas.resize(400, 320)
    viewer.canvas.fit()
    assert shown_pixel(viewer) == (0, 0, 0)
    window.graph_view.select([mask])
    viewer.canvas.setFocus()
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_P)
    assert viewer.canvas.paint_enabled and viewer.paint_target is mask
    viewer.brush_size.setValue(30)
    centre = viewer.canvas.rect().center()
    QtTest.QTest.mousePress(viewer.canvas, QtCore.Qt.MouseButton.LeftButton, pos=centre)
    for dx in range(0, 40, 4):
        QtTest.QTest.mouseMove(viewer.canvas, centre + QtCore.QPoint(dx, 0))
    QtTest.QTest.mouseRelease(viewer.canvas, QtCore.Qt.MouseButton.LeftButton, pos=centre + QtCore.QPoint(40, 0))
    strokes = mask.value("strokes")
    assert len(strokes) == 1 and strokes[0]["track_id"] == 0 and len(strokes[0]["points"]) > 3
    wait_current(qtbot, viewer)
    red, green, blue = shown_pixel(viewer)
    assert red == 255 and green < 255 and blue < 255     # while painting, the stroke is drawn over the mask
    window.graph_view.select([])                         # the node deselected: the mask alone
    viewer.canvas.repaint()
    assert shown_pixel(viewer) == (255, 255, 255)
    assert shown_pixel(viewer, 0.1, 0.1) == (0, 0, 0)
    window.graph_undo()  # one stroke, one undo step
    assert mask.value("strokes") == []
    wait_current(qtbot, viewer)
    assert shown_pixel(viewer) == (0, 0, 0)


def drag(canvas, points) -> None:
    """A left-button brush drag through widget ``points``."""
    QtTest.QTest.mousePress(canvas, QtCore.Qt.MouseButton.LeftButton, pos=points[0])
    for p in points[1:]:
        QtTest.QTest.mouseMove(canvas, p)
    QtTest.QTest.mouseRelease(canvas, QtCore.Qt.MouseButton.LeftButton, pos=points[-1])


def test_paint_stroke_on_a_real_eyefix_brings_back_the_plate_there(qtbot, window):
    graph, viewer = window.graph, window.viewer
    read = graph.create("Read", file=str(DEMO_MEDIA / "W009_front_happy_level3_001.mp4"), first=1, last=108)
    detect = graph.create("FaceDetect", inputs=[read])
    # Stands in for the swap: darker than the plate everywhere, so the plate coming back through EyeFix's
    # mask shows wherever the mask is.
    swap = graph.create("AppTestGain", inputs=[detect], gain=0.5)
    eyefix = graph.create("EyeFix", inputs=[swap, read])
    viewer.set_input(1, eyefix)
    wait_current(qtbot, viewer, 120000)
    viewer.canvas.resize(512, 512)
    viewer.canvas.fit()
    frame = viewer.canvas.frame_a
    before = frame.image.tensor[:3].clone()
    (face,) = frame.image.faces
    x0, y0, x1, y1 = face.box
    # Across the cheek, well below the eyes (EyeFix's own eye mask), in plate pixels.
    path = [(x0 + 0.25 * (x1 - x0) + t, y0 + 0.75 * (y1 - y0)) for t in range(0, 21, 2)]
    window.graph_view.select([eyefix])
    viewer.canvas.setFocus()
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_P)
    assert viewer.paint_target is eyefix
    viewer.brush_size.setValue(10)
    drag(viewer.canvas, [viewer.canvas.to_widget(QtCore.QPointF(x, y)).toPoint() for x, y in path])
    strokes = eyefix.value("strokes")
    assert len(strokes) == 1 and strokes[0]["track_id"] == face.track_id and len(strokes[0]["points"]) > 3
    wait_current(qtbot, viewer, 120000)
    after = viewer.canvas.frame_a.image.tensor[:3]
    plate = graph.evaluate(read, frame.frame).tensor[:3]
    # On the stroke the plate is back; before painting it was the darkened source there.
    cx, cy = (int(round(v)) for v in path[len(path) // 2])
    assert torch.allclose(after[:, cy, cx], plate[:, cy, cx], atol=1e-3)
    assert torch.allclose(before[:, cy, cx], 0.5 * plate[:, cy, cx], atol=1e-3)
    # Nothing changed away from the stroke (brush radius 5 px, plus EyeFix's one-rectangle blend).
    changed = torch.nonzero((after - before).abs().amax(0) > 1e-4)
    assert len(changed) > 20
    ys, xs = changed[:, 0], changed[:, 1]
    assert ys.min() >= path[0][1] - 8 and ys.max() <= path[0][1] + 8
    assert xs.min() >= path[0][0] - 8 and xs.max() <= path[-1][0] + 8
    window.graph_undo()  # one stroke, one undo step
    assert eyefix.value("strokes") == []
    wait_current(qtbot, viewer, 120000)
    assert torch.equal(viewer.canvas.frame_a.image.tensor[:3], before)


def test_real_faces_overlay_probe_playback_and_cache_line(qtbot, window, media_dir):
    graph, viewer = window.graph, window.viewer
    read = graph.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=100)
    detect = graph.create("FaceDetect", inputs=[read])
    viewer.set_input(1, detect)
    wait_current(qtbot, viewer, 120000)
    frame = viewer.canvas.frame_a
    assert len(frame.image.faces) == 1
    # The overlay draws over the face: the painted canvas differs from the bare image with faces off.
    with_faces = viewer.canvas.grab().toImage()
    viewer.faces_check.setChecked(False)
    without = viewer.canvas.grab().toImage()
    assert with_faces != without
    # The probe reads working-space values and display code values under the cursor.
    QtTest.QTest.mouseMove(viewer.canvas, viewer.canvas.rect().center())
    assert "R/G/B" in viewer.probe_label.text() and "display" in viewer.probe_label.text()
    # Play three frames from 1 (frames are computed as they play), then stop; the cache line shows them.
    viewer.timeline.toggle_in()
    viewer.set_frame(3)
    viewer.timeline.toggle_out()
    viewer.set_frame(1)
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_L)
    qtbot.waitUntil(lambda: graph.current_frame == 3 and viewer.is_current(), timeout=60000)
    qtbot.keyClick(viewer.canvas, QtCore.Qt.Key.Key_K)
    viewer.update_cache_line()
    assert {1, 2, 3} <= viewer.timeline.ruler.cached
    assert (graph.ui["timeline"]["in"], graph.ui["timeline"]["out"]) == (1, 3)
    assert graph.ui["timeline"]["frame"] == graph.current_frame

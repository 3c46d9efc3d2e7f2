"""Errors the user can see (issue 23, item 1 and "bad input"): a frame the graph can no longer make is shown
as its error instead of the old picture, in every viewer mode, the node it fails in is drawn in error, and
both clear when the cause is fixed. A knob typed wrong keeps its old value and says why."""
from __future__ import annotations

from pathlib import Path

import doublure.nodes  # noqa: F401  (registers Read)

from test_app_support import constant_chain, window  # noqa: F401
from test_app_viewer import wait_current


def viewer_settled(viewer) -> bool:
    return viewer.is_current() or bool(viewer.canvas.message)


def test_missing_file_shows_the_error_not_the_old_picture_and_clears_when_fixed(qtbot, window, media_dir, tmp_path):
    graph, viewer = window.graph, window.viewer
    still = str(media_dir / "stills" / "astronaut.png")
    read = graph.create("Read", file=still)
    _, gain = constant_chain(graph)
    graph.connect(read, gain, 0)
    viewer.set_input(1, read)
    viewer.set_input(2, gain)
    viewer.set_ab(1, 2)
    viewer.set_mode("side")
    wait_current(qtbot, viewer)
    assert viewer.canvas.frame_a is not None and viewer.canvas.frame_b is not None
    assert window.graph_view.node_error(read) == ""

    missing = str(tmp_path / "gone.png")
    graph.set_knob(read, "file", missing)
    qtbot.waitUntil(lambda: bool(viewer.canvas.message), timeout=20000)
    # Neither half shows a stale frame, the message names the node and the file, the node is drawn in error.
    assert viewer.canvas.frame_a is None and viewer.canvas.frame_b is None
    assert "Read1" in viewer.canvas.message and "gone.png" in viewer.canvas.message
    qtbot.waitUntil(lambda: window.graph_view.node_error(read) != "", timeout=5000)
    assert "gone.png" in window.graph_view.node_error(read)
    assert window.graph_view.node_error(gain) == ""
    # What is painted is the error box, not footage: the canvas holds few colours.
    viewer.canvas.repaint()
    image = viewer.canvas.grab().toImage()
    colours = {image.pixel(x, y) for x in range(0, image.width(), 4) for y in range(0, image.height(), 4)}
    assert len(colours) < 200

    window.graph_undo()  # the file is back
    wait_current(qtbot, viewer)
    assert viewer.canvas.message == "" and viewer.canvas.frame_a is not None and viewer.canvas.frame_b is not None
    assert window.graph_view.node_error(read) == ""


def test_a_file_that_is_not_an_image_is_an_error_on_the_node(qtbot, window, tmp_path):
    graph, viewer = window.graph, window.viewer
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    read = graph.create("Read", file=str(text), first=1, last=1)
    viewer.set_input(1, read)
    qtbot.waitUntil(lambda: bool(viewer.canvas.message), timeout=20000)
    assert "notes.png" in viewer.canvas.message
    qtbot.waitUntil(lambda: window.graph_view.node_error(read) != "", timeout=5000)


def test_a_knob_typed_wrong_keeps_its_value_and_says_why(qtbot, window):
    graph, viewer = window.graph, window.viewer
    const, gain = constant_chain(graph)
    panel = window.properties.open_node(const)
    editor = panel.editors["width"]
    editor.commit(-5)  # below the knob's minimum of 1
    assert const.value("width") == 64 and editor.field.value() == 64
    assert "width" in panel.error_label.text() and panel.error_label.isVisibleTo(panel)
    assert "width" in viewer.canvas.notice
    editor.commit(32)
    assert const.value("width") == 32 and not panel.error_label.isVisibleTo(panel)


def test_a_grain_without_its_analysis_passes_its_input_with_a_warning_on_the_node_and_in_the_viewer(
        qtbot, window, media_dir):
    graph, viewer = window.graph, window.viewer
    read = graph.create("Read", file=str(media_dir / "stills" / "astronaut.png"))
    grain = graph.create("Grain", inputs=[read])
    viewer.set_input(1, grain)
    wait_current(qtbot, viewer)
    assert viewer.canvas.message == "" and viewer.canvas.frame_a is not None
    assert "Grain1" in viewer.canvas.warning and "Analyse" in viewer.canvas.warning
    qtbot.waitUntil(lambda: "Analyse" in window.graph_view.node_warning(grain), timeout=5000)
    assert window.graph_view.node_error(grain) == "" and window.graph_view.node_warning(read) == ""
    # drawn: the warning's amber text over the picture
    viewer.canvas.repaint()
    image = viewer.canvas.grab().toImage()
    assert any(image.pixelColor(x, y).getRgb()[:3] == (255, 176, 32)
               for x in range(0, image.width(), 1) for y in range(image.height() - 60, image.height()))
    viewer.set_input(1, read)   # the plate itself warns of nothing
    wait_current(qtbot, viewer)
    assert viewer.canvas.warning == ""
    qtbot.waitUntil(lambda: window.graph_view.node_warning(grain) == "", timeout=5000)


def test_a_reformat_too_large_for_memory_is_refused_with_its_figure_the_old_value_kept(qtbot, window):
    graph, viewer = window.graph, window.viewer
    const, _ = constant_chain(graph)
    reformat = graph.create("Reformat", inputs=[const])
    viewer.set_input(1, reformat)
    wait_current(qtbot, viewer)
    panel = window.properties.open_node(reformat)
    panel.editors["width"].commit(9999)   # 9999x1080: fine
    assert reformat.value("width") == 9999
    panel.editors["height"].commit(9999)   # 9999x9999 RGB float and its resample copy: 2.2 GiB
    assert reformat.value("height") == 1080 and panel.editors["height"].field.value() == 1080
    for shown in (panel.error_label.text(), viewer.canvas.notice, window.graph_view.node_warning(reformat)):
        assert "Reformat1" in shown and "GiB" in shown and "kept at 1080" in shown, shown
    assert panel.error_label.isVisibleTo(panel) and not graph.undo_stack.can_redo()
    panel.editors["width"].commit(640)
    assert reformat.value("width") == 640 and window.graph_view.node_warning(reformat) == ""
    panel.editors["height"].commit(500)
    wait_current(qtbot, viewer, 120000)
    assert viewer.canvas.message == "" and viewer.canvas.frame_a.image.height == 500

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

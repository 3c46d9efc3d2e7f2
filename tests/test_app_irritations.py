"""Smaller irritations (issue 23, item 9): paste connects to the selected node, a Write shows the knobs its
file type uses and renders from its panel, tooltips wrap, a fixed error leaves the status bar."""
from __future__ import annotations

import doublure.nodes  # noqa: F401  (registers Write)

from test_app_support import constant_chain, window  # noqa: F401


def test_paste_connects_to_the_selected_node_in_one_undo_step(qtbot, window):
    graph, view = window.graph, window.graph_view
    const, gain = constant_chain(graph)
    view.select([gain])
    text = view.copy_selected()
    view.select([gain])
    pasted = view.paste(text)
    assert len(pasted) == 1 and pasted[0].input_nodes[0] is gain
    window.graph_undo()
    assert pasted[0] not in graph.nodes


def test_write_shows_the_knobs_of_its_file_type_and_has_a_render_button(qtbot, window, tmp_path):
    graph = window.graph
    const, _ = constant_chain(graph)
    write = graph.create("Write", inputs=[const], file=str(tmp_path / "out.####.exr"))
    panel = window.properties.open_node(write)
    visible = {name for name, editor in panel.editors.items() if not editor.isHidden()}
    assert "compression" in visible and "codec" not in visible and "crf" not in visible
    graph.set_knob(write, "file", str(tmp_path / "out.mp4"))
    visible = {name for name, editor in panel.editors.items() if not editor.isHidden()}
    assert {"codec", "crf", "preset"} <= visible and "compression" not in visible and "datatype" not in visible
    assert "<p" in panel.editors["crf"].toolTip()  # rich text: Qt wraps it
    graph.set_knob(write, "file", str(tmp_path / "out.####.png"))
    panel.render_button.click()
    qtbot.waitUntil(lambda: window.render_panel.job is None, timeout=60000)
    assert (tmp_path / "out.0001.png").is_file() and (tmp_path / "out.0005.png").is_file()
    assert not window.render_dock.isHidden()


def test_a_fixed_error_leaves_the_status_bar(qtbot, window, media_dir, tmp_path):
    graph, viewer = window.graph, window.viewer
    read = graph.create("Read", file=str(media_dir / "stills" / "astronaut.png"))
    viewer.set_input(1, read)
    qtbot.waitUntil(viewer.is_current, timeout=20000)
    graph.set_knob(read, "file", str(tmp_path / "gone.png"))
    qtbot.waitUntil(lambda: "gone.png" in window.statusBar().currentMessage(), timeout=20000)
    window.graph_undo()
    qtbot.waitUntil(lambda: window.statusBar().currentMessage() == "", timeout=20000)

"""Project settings panel and a Read following its file's range (issue 23, item 5)."""
from __future__ import annotations

from pathlib import Path

import doublure.nodes  # noqa: F401  (registers Read)

from test_app_support import window  # noqa: F401

DEMO_MEDIA = Path(__file__).resolve().parents[1] / "resources" / "demo" / "media"


def test_project_settings_panel_sets_range_fps_and_working_space_undoably(qtbot, window):
    graph, panel = window.graph, window.project_panel
    window.show_project_settings()
    assert not window.project_dock.isHidden()
    panel.last.setValue(48)
    panel.fps.setValue(24.0)
    assert graph.settings["last"] == 48 and graph.settings["fps"] == 24.0
    assert window.viewer.timeline.play_range()[1] == 48
    index = panel.working_space.findText("ACES2065-1")
    assert index >= 0
    panel.working_space.setCurrentIndex(index)
    panel.working_space.activated.emit(index)
    assert graph.settings["working_space"] == "ACES2065-1"
    window.graph_undo()
    assert graph.settings["working_space"] == "ACEScg" and panel.working_space.currentText() == "ACEScg"
    window.graph_undo()
    assert graph.settings["fps"] != 24.0 and panel.fps.value() == graph.settings["fps"]
    # A range that runs backwards is refused, says why, and keeps the old value.
    panel.first.setValue(100)
    assert graph.settings["first"] == 1 and panel.first.value() == 1
    assert "backwards" in panel.error.text() and panel.error.isVisibleTo(panel)


def test_read_takes_its_new_files_range_in_one_undo_step(qtbot, window, media_dir):
    graph = window.graph
    still = str(media_dir / "stills" / "astronaut.png")
    read = graph.create("Read", file=still)
    assert (read.value("first"), read.value("last")) == (1, 1)
    editor = window.properties.open_node(read).editors["file"]
    video = str(DEMO_MEDIA / "W009_front_happy_level3_001.mp4")
    editor.edit.setText(video)  # typed, then Enter
    editor.edit.editingFinished.emit()
    assert read.value("file") == video and (read.value("first"), read.value("last")) == (1, 108)
    window.graph_undo()
    assert read.value("file") == still and (read.value("first"), read.value("last")) == (1, 1)
    window.graph_redo()
    assert read.value("last") == 108
    # A path with no files yet keeps the range; the viewer says what is missing.
    editor.commit(str(media_dir / "nothing_here.mp4"))
    assert read.value("file").endswith("nothing_here.mp4") and read.value("last") == 108

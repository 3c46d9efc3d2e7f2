"""Project life in the app: save and re-open the same graph, the modified marker, recent files, asking
before closing with unsaved changes, and autosave recovery after a crash (a real process killed with
SIGKILL)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap

from PySide6 import QtCore, QtWidgets

import doublure.nodes  # noqa: F401
from doublure.app.main_window import MainWindow, autosave_path_for
from doublure.engine import Graph
from doublure.engine.project import graph_to_dict

from test_app_support import window  # noqa: F401


def build_shot(graph: Graph, media_dir) -> None:
    read = graph.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=100,
                        position=(0, 0))
    detect = graph.create("FaceDetect", inputs=[read], position=(0, 120))
    graph.create("Dot", inputs=[detect], position=(0, 240))
    graph.set_key(read, "frame_offset", 1, 0)
    graph.set_key(read, "frame_offset", 5, 2)


def test_save_reopen_gives_the_same_graph(qtbot, window, tmp_path, media_dir):
    graph = window.graph
    build_shot(graph, media_dir)
    read, detect = graph.nodes[0], graph.nodes[1]
    window.viewer.set_input(1, read)
    window.viewer.set_input(2, detect)
    window.viewer.set_mode("wipe")
    window.graph_view.select([read, detect])
    window.graph_view.create_backdrop("Plate")
    assert window.isWindowModified()
    path = str(tmp_path / "shot.dbl")
    assert window._save_to(path)
    assert not window.isWindowModified() and window.windowTitle().startswith("shot.dbl")
    assert window.recent_files()[0] == path
    saved = graph_to_dict(graph, str(tmp_path))

    other = MainWindow(settings=window.settings, autosave_s=3600)
    try:
        assert other.open_project(path)
        reopened = other.graph
        assert graph_to_dict(reopened, str(tmp_path)) == saved
        assert reopened.ui["viewer"]["mode"] == "wipe" and reopened.ui["backdrops"][0]["title"] == "Plate"
        assert other.viewer.state.inputs == window.viewer.state.inputs
        views = other.graph_view
        assert len(views._views) == 3 and len(views._backdrops) == 1
        dot = reopened.nodes[2]
        assert views.view_of(dot).input_ports()[0].connected_ports()[0].node() is views.view_of(reopened.nodes[1])
        assert reopened.nodes[0].knob("frame_offset").key_frames() == [1.0, 5.0]
        assert not other.isWindowModified()
    finally:
        other.shutdown()
        other.deleteLater()


def test_closing_with_unsaved_changes_asks(qtbot, window):
    window.graph.create("Dot")
    answers = []

    def answer(button) -> None:
        box = QtWidgets.QApplication.activeModalWidget()
        answers.append(box.text())
        box.button(button).click()

    QtCore.QTimer.singleShot(50, lambda: answer(QtWidgets.QMessageBox.StandardButton.Cancel))
    assert not window.close()
    assert window.isVisible() and "unsaved changes" in answers[0]
    QtCore.QTimer.singleShot(50, lambda: answer(QtWidgets.QMessageBox.StandardButton.Discard))
    assert window.close()
    assert len(answers) == 2


CRASHING_SESSION = textwrap.dedent("""
    import os, signal, sys, time
    from PySide6 import QtCore, QtWidgets
    app = QtWidgets.QApplication([])
    import doublure.nodes
    from doublure.app.main_window import MainWindow, autosave_path_for
    project = sys.argv[1]
    window = MainWindow(settings=QtCore.QSettings(sys.argv[2], QtCore.QSettings.Format.IniFormat), autosave_s=0.2)
    window.show()
    window.open_project(project, offer_recovery=False)
    graph = window.graph
    graph.create("Dot", "Recovered", inputs=[graph["FaceDetect1"]], position=(200, 240))
    graph.set_knob(graph["FaceDetect1"], "max_faces", 2)
    deadline = time.time() + 60
    while not os.path.exists(autosave_path_for(project)) and time.time() < deadline:
        app.processEvents()
        time.sleep(0.02)
    os.kill(os.getpid(), signal.SIGKILL)  # a crash: no clean shutdown, the autosave stays
""")


def test_autosave_recovery_after_a_crash(qtbot, window, tmp_path, media_dir):
    project = tmp_path / "shot.dbl"
    shot = Graph()
    build_shot(shot, media_dir)
    shot.save(str(project))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", DOUBLURE_AUTOSAVE_DIR=str(tmp_path / "autosave"))
    crashed = subprocess.run([sys.executable, "-c", CRASHING_SESSION, str(project), str(tmp_path / "s.ini")],
                             env=env, capture_output=True, text=True, timeout=180)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr[-2000:]
    autosave = autosave_path_for(str(project))
    assert os.path.exists(autosave)

    assert window.open_project(str(project))
    box = window.recovery_box
    assert box is not None and box.isVisible() and "Recover" in box.text()
    assert "Recovered" not in window.graph  # the project as saved, until the user says yes
    box.button(QtWidgets.QMessageBox.StandardButton.Yes).click()
    graph = window.graph
    assert graph["Recovered"].input_nodes == [graph["FaceDetect1"]]
    assert graph["FaceDetect1"].value("max_faces") == 2
    assert graph.project_path == str(project)
    assert window.isWindowModified()  # recovered work is unsaved work
    assert window.graph_view.view_of(graph["Recovered"]) is not None
    assert window.save()
    assert not os.path.exists(autosave) and not window.isWindowModified()

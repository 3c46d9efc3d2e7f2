"""Issue 26, projects: a save over a project another process changed meanwhile is refused (scripts) or asked
about (the app); saving through a symbolic link writes through it."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
from PySide6 import QtCore, QtWidgets

import doublure.nodes  # noqa: F401  (registers the node library)
from doublure import engine
from doublure.engine.project_guard import ProjectChangedError

from test_app_support import window  # noqa: F401

# Another process (a second artist's script): opens the project, adds a node, saves.
_OTHER_SAVE = textwrap.dedent("""
    import sys
    import doublure.nodes
    from doublure import engine
    g = engine.load(sys.argv[1])
    g.create("Dot", name="TheirDot")
    g.save(sys.argv[1])
""")


def node_names(path) -> set[str]:
    with open(path, encoding="utf-8") as f:
        return {n["name"] for n in json.load(f)["nodes"]}


def shot(tmp_path):
    g = engine.Graph()
    g.create("Dot", name="Base")
    path = str(tmp_path / "shot.dbl")
    g.save(path)
    return path


def test_a_save_over_another_process_save_is_refused_and_loses_nothing(tmp_path):
    path = shot(tmp_path)
    mine = engine.load(path)
    mine.create("Dot", name="MyDot")
    subprocess.run([sys.executable, "-c", _OTHER_SAVE, path], check=True, timeout=120)
    theirs = open(path, encoding="utf-8").read()
    with pytest.raises(ProjectChangedError, match=r"shot.dbl: the project changed on disk since it was opened"):
        mine.save(path)
    assert open(path, encoding="utf-8").read() == theirs   # their node is still there
    mine.save(str(tmp_path / "mine.dbl"))                   # Save As elsewhere works
    mine.save(str(tmp_path / "mine.dbl"))                   # and saving it again
    mine.save(path, overwrite=True)                         # overwriting knowingly
    assert node_names(path) == {"Base", "MyDot"}


def test_saving_again_and_an_unchanged_copy_are_not_conflicts(tmp_path):
    path = shot(tmp_path)
    g = engine.load(path)
    g.create("Dot", name="Second")
    g.save(path)
    g.save(path)
    data = open(path, "rb").read()
    os.remove(path)
    with open(path, "wb") as f:   # the same bytes, another file (a copy back from a backup)
        f.write(data)
    g.save(path)
    os.remove(path)               # gone: saved again
    g.save(path)
    assert node_names(path) == {"Base", "Second"}


def test_saving_through_a_symlink_writes_the_file_it_points_at(tmp_path):
    (tmp_path / "versions").mkdir()
    real = str(tmp_path / "versions" / "shot_v003.dbl")
    engine.Graph().save(real)
    link = tmp_path / "shot.dbl"
    link.symlink_to(real)
    g = engine.load(str(link))
    g.create("Dot", name="Edit")
    g.save(str(link))
    assert link.is_symlink() and os.readlink(link) == real
    assert node_names(real) == {"Edit"}
    assert sorted(os.listdir(tmp_path / "versions")) == ["shot_v003.dbl"]


def test_the_app_asks_before_overwriting_a_project_changed_on_disk(qtbot, window, tmp_path):  # noqa: F811
    path = shot(tmp_path)
    assert window.open_project(path, ask_save=False, offer_recovery=False)
    window.graph.create("Dot", name="MyDot")
    other = engine.load(path)   # a second session (a real second process: the test above)
    other.create("Dot", name="TheirDot")
    other.save(path)
    asked = []

    def answer(button) -> None:
        box = QtWidgets.QApplication.activeModalWidget()
        asked.append(box.text())
        box.button(button).click()

    QtCore.QTimer.singleShot(50, lambda: answer(QtWidgets.QMessageBox.StandardButton.No))
    assert not window.save()
    assert "changed on disk" in asked[0] and "Overwrite it" in asked[0]
    assert node_names(path) == {"Base", "TheirDot"}
    QtCore.QTimer.singleShot(50, lambda: answer(QtWidgets.QMessageBox.StandardButton.Yes))
    assert window.save()
    assert node_names(path) == {"Base", "MyDot"}

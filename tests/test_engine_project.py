"""The project file: byte-identical round trips, upgrades from v0, relative paths, atomic saves, and clear
errors that never damage the file."""
import json
import os
from pathlib import Path

import pytest

import engine_nodes  # noqa: F401
from doublure import engine
from doublure.engine import ProjectError, knobs as K
from doublure.engine.node import Node, register_node, node_types

FIXTURES = Path(__file__).parent / "fixtures"


class FileUserNode(Node):
    type_name = "TestFileUser"
    inputs = ()
    knob_specs = (K.File("file"), K.Strokes("strokes"), K.Data("analysis"), K.Enum("mode", ("a", "b")))


if "TestFileUser" not in node_types():
    register_node(FileUserNode)


def build(tmp_path):
    g = engine.Graph(first=1001, last=1100, fps=24.0, name="sh010")
    c = g.create("TestConstant", color=(0.5, 0.25, 1.0), position=(0, 10))
    gain = g.create("TestGain", inputs=[c], position=(0, 100))
    g.set_key(gain, "gain", 1001, 1.0, "linear")
    g.set_key(gain, "gain", 1050, 2.5, "smooth")
    f = g.create("TestFileUser", file=str(tmp_path / "plates" / "sh010.####.exr"), mode="b",
                 strokes=[{"track_id": 1, "points": [[0.4, 0.5], [0.45, 0.5]], "radius": 0.03}],
                 analysis={"bands": [0.1, 0.2]})
    g.ui["viewer"] = {"A": c.name, "B": gain.name}
    return g, gain, f


def test_save_load_save_is_byte_identical(tmp_path):
    g, _, _ = build(tmp_path)
    first = tmp_path / "sh010.dbl"
    g.save(str(first))
    g2 = engine.load(str(first))
    second = tmp_path / "again.dbl"
    g2.save(str(second))
    assert first.read_bytes() == second.read_bytes()
    data = json.loads(first.read_text())
    assert data["schema"] == "doublure.project/1"


def test_loaded_graph_matches_knobs_keys_connections_and_settings(tmp_path):
    g, gain, f = build(tmp_path)
    path = tmp_path / "sh010.dbl"
    g.save(str(path))
    g2 = engine.load(str(path))
    gain2 = g2["TestGain1"]
    assert gain2.input(0).name == "TestConstant1"
    assert [k.frame for k in gain2.knob("gain").keys] == [1001.0, 1050.0]
    assert gain2.value("gain", 1030) == pytest.approx(gain.value("gain", 1030))
    assert g2.settings == g.settings and g2.ui == g.ui
    assert g2["TestFileUser1"]["strokes"] == f["strokes"]
    assert g2.evaluate(gain2, 1020).tensor.equal(g.evaluate(gain, 1020).tensor)
    assert not g2.undo_stack.can_undo()  # opening a project is not an edit


def test_paths_are_stored_relative_and_resolve_against_the_project(tmp_path):
    g, _, f = build(tmp_path)
    path = tmp_path / "shots" / "sh010.dbl"
    g.save(str(path))
    stored = json.loads(path.read_text())["nodes"][2]["knobs"]["file"]
    assert stored == os.path.join("..", "plates", "sh010.####.exr")
    moved = tmp_path / "elsewhere" / "shots"
    moved.mkdir(parents=True)
    (moved / "sh010.dbl").write_text(path.read_text())
    g2 = engine.load(str(moved / "sh010.dbl"))
    assert g2["TestFileUser1"].path("file") == str(tmp_path / "elsewhere" / "plates" / "sh010.####.exr")


def test_relative_paths_of_an_unsaved_graph_still_name_the_same_file_after_save(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = engine.Graph()
    f = g.create("TestFileUser", file="plates/a.####.exr")
    assert f.path("file") == str(tmp_path / "plates" / "a.####.exr")
    g.save(str(tmp_path / "shots" / "sh010.dbl"))
    assert f["file"] == os.path.join("..", "plates", "a.####.exr")
    assert f.path("file") == str(tmp_path / "plates" / "a.####.exr")
    g.save(str(tmp_path / "sh010_v2.dbl"))  # Save As into another folder
    assert f["file"] == os.path.join("plates", "a.####.exr")
    assert engine.load(str(tmp_path / "sh010_v2.dbl"))["TestFileUser1"].path("file") == f.path("file")


def test_v0_project_is_upgraded(tmp_path):
    g = engine.load(str(FIXTURES / "project_v0.dbl"))
    assert (g.settings["first"], g.settings["last"], g.settings["fps"]) == (1001, 1010, 24.0)
    grade = g["Grade"]
    assert grade.input(0) is g["Source"]
    assert grade.value("gain", 1010) == 2.0 and g["Source"]["width"] == 16
    assert g["Source"].position == (10.0, 20.0)


def test_a_node_saved_by_an_older_version_is_upgraded_by_its_node_type(tmp_path):
    """TestOffset's knob was ``amount`` in version 1: the project opens with it as ``offset``, animation kept, and
    saves as the current version; a version that changed only compute needs no upgrade."""
    g = engine.load(str(FIXTURES / "project_node_v1.dbl"))
    lift = g["Lift"]
    assert lift.input(0) is g["Source"]
    assert (lift.value("offset", 1), lift.value("offset", 10)) == (0.0, 0.9)
    assert g.evaluate(lift, frame=10).tensor[0, 0, 0].item() == pytest.approx(1.4)
    g.save(str(tmp_path / "upgraded.dbl"))
    saved = {n["name"]: n for n in json.loads((tmp_path / "upgraded.dbl").read_text())["nodes"]}
    assert saved["Lift"]["version"] == 3 and set(saved["Lift"]["knobs"]) == {"offset"}
    assert engine.load(str(tmp_path / "upgraded.dbl"))["Lift"].value("offset", 10) == 0.9


@pytest.mark.parametrize("content, message", [
    ('{"schema": "doublure.project/1", "nodes": [{"name": "C1", "type": "TestConstant", "version": 2}]}',
     r"node C1: saved by a newer Doublure \(TestConstant version 2; this one knows version 1\)"),
    ('{"schema": "doublure.project/1", "nodes": [{"name": "C1", "type": "TestConstant", "version": "one"}]}',
     r"node C1.version: bad value 'one'"),
    ("{not json", r"not valid JSON \(line 1"),
    ('{"nodes": []}', "no \"schema\" field"),
    ('{"schema": "doublure.project/99", "nodes": []}', "newer than this Doublure"),
    ('{"schema": "other.thing/1"}', "is not doublure.project/N"),
    ('{"schema": "doublure.project/1", "nodes": [{"name": "X1", "type": "NoSuchNode"}]}',
     "node X1 has unknown type 'NoSuchNode'"),
    ('{"schema": "doublure.project/1", "nodes": [{"name": "C1", "type": "TestConstant", "knobs": {"width": "w"}}]}',
     r"C1.width: bad value 'w'"),
    ('{"schema": "doublure.project/1", "nodes": [{"name": "C1", "type": "TestConstant", "knobs": {"size": 1}}]}',
     "C1 has no knob 'size'"),
    ('{"schema": "doublure.project/1", "settings": {"fps": "fast"}, "nodes": []}', "fps: bad value"),
])
def test_bad_projects_get_one_clear_error_naming_the_file(tmp_path, content, message):
    path = tmp_path / "bad.dbl"
    path.write_text(content)
    with pytest.raises(ProjectError, match=message) as info:
        engine.load(str(path))
    assert str(path) in str(info.value)
    assert path.read_text() == content  # never damaged


def test_missing_project_names_the_file(tmp_path):
    with pytest.raises(ProjectError, match="no such project file"):
        engine.load(str(tmp_path / "nope.dbl"))


def test_save_is_atomic_a_failed_save_keeps_the_old_file(tmp_path, monkeypatch):
    g, _, f = build(tmp_path)
    path = tmp_path / "sh010.dbl"
    g.save(str(path))
    before = path.read_bytes()
    g.ui["bad"] = float("nan")  # not JSON: the save fails while serialising
    with pytest.raises(ValueError):
        g.save(str(path))
    assert path.read_bytes() == before
    del g.ui["bad"]

    def crash(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "fsync", crash)
    with pytest.raises(OSError, match="disk full"):
        g.save(str(path))
    assert path.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_saving_marks_the_history_clean(tmp_path):
    g, gain, _ = build(tmp_path)
    assert not g.undo_stack.clean
    g.save(str(tmp_path / "a.dbl"))
    assert g.undo_stack.clean
    gain["mix"] = 0.5
    assert not g.undo_stack.clean
    g.undo()
    assert g.undo_stack.clean

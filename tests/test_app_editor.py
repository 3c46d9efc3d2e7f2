"""The node editor driven through its real widgets: Tab menu, connections (with refusals), delete, disable,
rename, copy/paste, backdrops, dots, and undo/redo through the engine's stack."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

import doublure.nodes  # noqa: F401  (registers Dot, Read...)
from doublure.engine.project import graph_to_dict

from test_app_support import constant_chain, window  # noqa: F401  (registers the test nodes; the fixture)


def node_viewer(window):
    return window.graph_view.ng.viewer()


def tab_create(qtbot, window, query: str):
    viewer = node_viewer(window)
    viewer.setFocus()
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_Tab)
    menu = window.graph_view.menu
    assert menu.isVisible()
    qtbot.keyClicks(menu.search, query)
    qtbot.keyClick(menu.search, QtCore.Qt.Key.Key_Return)
    assert not menu.isVisible()


def test_tab_menu_creates_and_autoconnects_to_selection(qtbot, window):
    graph = window.graph
    tab_create(qtbot, window, "AppTestConst")
    assert [n.type_name for n in graph.nodes] == ["AppTestConstant"]
    const = graph.nodes[0]
    assert window.graph_view.selected_nodes() == [const]
    # Fuzzy search: letters in order find the type; the new node is fed by the selected one.
    tab_create(qtbot, window, "apptestgain")
    gain = graph.nodes[1]
    assert gain.type_name == "AppTestGain" and gain.input_nodes == [const]
    view = window.graph_view.view_of(gain)
    assert view.input_ports()[0].connected_ports()[0].node() is window.graph_view.view_of(const)
    # One undo step per creation, connection included.
    qtbot.keyClick(window, QtCore.Qt.Key.Key_Z, QtCore.Qt.KeyboardModifier.ControlModifier)
    assert len(graph.nodes) == 1 and len(window.graph_view.ng.all_nodes()) == 1
    window.redo_action.trigger()
    assert graph.nodes[1].input_nodes == [const]


def test_connections_are_type_checked_and_undoable(qtbot, window):
    graph = window.graph
    const, gain = constant_chain(graph)
    faces = graph.create("AppTestFaces", inputs=[const])
    mask = graph.create("AppTestStrokeMask", inputs=[faces])
    gv = window.graph_view
    viewer = node_viewer(window)

    def port(node, index=None):
        view = gv.view_of(node)
        return (view.output_ports()[0] if index is None else view.input_ports()[index]).view

    # A drag from a Mask output onto an Image input: the viewer reports it, the engine refuses.
    viewer.connection_changed.emit([], [(port(mask), port(gain, 0))])
    assert gain.input_nodes == [const]
    assert "Connection refused" in window.statusBar().currentMessage()
    assert "Mask" in window.statusBar().currentMessage()
    assert gv.view_of(gain).input_ports()[0].connected_ports()[0].node() is gv.view_of(const)
    # Re-wire gain to read from faces: disconnect + connect in one undo step.
    viewer.connection_changed.emit([(port(gain, 0), port(const))], [(port(faces), port(gain, 0))])
    assert gain.input_nodes == [faces]
    window.undo_action.trigger()
    assert gain.input_nodes == [const]
    assert gv.view_of(gain).input_ports()[0].connected_ports()[0].node() is gv.view_of(const)
    # A cycle is refused too.
    viewer.connection_changed.emit([], [(port(mask), port(faces, 0))])
    assert faces.input_nodes == [const]


def test_delete_disable_rename_copy_paste(qtbot, window):
    graph = window.graph
    const, gain = constant_chain(graph)
    gv = window.graph_view
    viewer = node_viewer(window)
    viewer.setFocus()
    gv.select([gain])
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_D)
    assert gain.value("disable") is True
    assert gv.view_of(gain).disabled()
    window.graph_undo()
    assert gain.value("disable") is False and not gv.view_of(gain).disabled()

    # Rename through the node's title editor (the viewer's signal) and a refused duplicate.
    viewer.node_name_changed.emit(gv.view_of(gain).id, "Brighten")
    assert gain.name == "Brighten" and gv.view_of(gain).name() == "Brighten"
    viewer.node_name_changed.emit(gv.view_of(gain).id, const.name)
    assert gain.name == "Brighten" and gv.view_of(gain).name() == "Brighten"
    assert "already exists" in window.statusBar().currentMessage()

    graph.set_knob(gain, "gain", 2.5)
    gv.select([const, gain])
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_C, QtCore.Qt.KeyboardModifier.ControlModifier)
    text = QtWidgets.QApplication.clipboard().text()
    assert '"doublure.project/' in text and "Brighten" in text
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_V, QtCore.Qt.KeyboardModifier.ControlModifier)
    assert len(graph.nodes) == 4
    pasted = gv.selected_nodes()
    assert sorted(n.type_name for n in pasted) == ["AppTestConstant", "AppTestGain"]
    new_gain = next(n for n in pasted if n.type_name == "AppTestGain")
    assert new_gain.name != "Brighten" and new_gain.value("gain") == 2.5
    assert new_gain.input_nodes[0] in pasted
    window.graph_undo()  # the paste is one step
    assert len(graph.nodes) == 2

    gv.select([gain])
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_Delete)
    assert [n.name for n in graph.nodes] == [const.name]
    assert len(gv.ng.all_nodes()) == 1
    window.graph_undo()
    assert gain in graph.nodes and gain.input_nodes == [const]
    assert gv.view_of(gain).input_ports()[0].connected_ports()[0].node() is gv.view_of(const)


def test_backdrops_and_dots_are_undoable(qtbot, window):
    graph = window.graph
    const, gain = constant_chain(graph)
    gv = window.graph_view
    viewer = node_viewer(window)
    viewer.setFocus()
    gv.select([const, gain])
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_B)
    assert len(graph.ui["backdrops"]) == 1 and len(gv._backdrops) == 1
    backdrop = graph.ui["backdrops"][0]
    assert backdrop["width"] > 0 and backdrop["height"] > 0
    assert not graph.undo_stack.clean  # a backdrop is an edit: the title shows it modified
    window.graph_undo()
    assert graph.ui["backdrops"] == [] and gv._backdrops == {}
    window.graph_redo()
    assert len(gv._backdrops) == 1

    gv.select([const])
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_Period)
    dot = graph.nodes[-1]
    assert dot.type_name == "Dot" and dot.input_nodes == [const]
    # Moving a node in the view becomes an engine move.
    gv.view_of(dot).view.setPos(300.0, 420.0)
    viewer.moved_nodes.emit({gv.view_of(dot).view: (0.0, 0.0)})
    assert dot.position == (300.0, 420.0)
    window.graph_undo()
    assert dot.position != (300.0, 420.0)
    assert tuple(gv.view_of(dot).pos()) == dot.position
    saved = graph_to_dict(graph)
    assert [n["type"] for n in saved["nodes"]] == ["AppTestConstant", "AppTestGain", "Dot"]


def test_double_click_opens_knobs_and_number_keys_set_viewer_inputs(qtbot, window):
    const, gain = constant_chain(window.graph)
    gv = window.graph_view
    viewer = node_viewer(window)
    viewer.node_double_clicked.emit(gv.view_of(gain).id)
    assert window.properties.panels[0].node is gain
    gv.select([gain])
    viewer.setFocus()
    # Keys go to the panel under the pointer: put it over the node graph.
    over_graph = viewer.mapToGlobal(viewer.rect().center())
    window.key_router.pointer = lambda: over_graph
    qtbot.keyClick(viewer, QtCore.Qt.Key.Key_2)
    assert window.viewer.node_in_slot("2") is gain
    assert window.graph.ui["viewer"]["inputs"]["2"] == gain.uuid


"""Keys go to the panel under the pointer, and the node graph's right-click menu (issue 23, item 4).

Keys are sent through the window (``QTest.keyClick`` on the QWindow), the path a real key press takes: Qt
first offers it as a shortcut in the context of the focus widget, then delivers it to the focus widget."""
from __future__ import annotations

from PySide6 import QtCore, QtGui, QtTest, QtWidgets

from test_app_support import constant_chain, window  # noqa: F401


def point_at(window, widget: QtWidgets.QWidget) -> None:
    """Put the pointer over ``widget`` (through the router's pointer: the offscreen platform has no cursor)."""
    where = widget.mapToGlobal(widget.rect().center())
    window.key_router.pointer = lambda: where
    assert QtWidgets.QApplication.widgetAt(where) is not None


def press(window, key, text: str = "") -> None:
    QtTest.QTest.keyClick(window.windowHandle(), key)
    QtWidgets.QApplication.processEvents()


def test_keys_reach_the_viewer_under_the_pointer_after_typing_a_knob(qtbot, window):
    graph, viewer = window.graph, window.viewer
    const, gain = constant_chain(graph)
    viewer.set_input(1, const)
    viewer.set_input(2, gain)
    window.resize(790, 590)  # on the offscreen platform's 800x600 screen, where widgetAt finds it
    window.move(0, 0)
    qtbot.waitUntil(lambda: window.width() == 790 and window.pos() == QtCore.QPoint(0, 0), timeout=5000)
    qtbot.wait(100)  # after the first-show sizing of the docks
    window.resizeDocks([window.properties_dock], [180], QtCore.Qt.Orientation.Horizontal)
    window.activateWindow()
    qtbot.waitUntil(lambda: QtWidgets.QApplication.activeWindow() is window, timeout=5000)
    field = window.properties.open_node(gain).editors["gain"].field
    field.setFocus()
    qtbot.waitUntil(field.hasFocus, timeout=5000)
    qtbot.waitUntil(lambda: field.mapTo(window, QtCore.QPoint(0, 0)).x() < 790, timeout=5000)
    # Over the properties, Right goes to the focused field (nothing changes in the viewer).
    point_at(window, field)
    press(window, QtCore.Qt.Key.Key_Right)
    assert graph.current_frame == 1 and field.hasFocus()
    # Over the viewer, without a click: Right steps the frame, 2 shows viewer input 2.
    point_at(window, viewer.canvas)
    press(window, QtCore.Qt.Key.Key_Right)
    assert graph.current_frame == 2
    assert viewer.canvas.hasFocus()
    press(window, QtCore.Qt.Key.Key_2)
    assert viewer.state.a == "2"
    press(window, QtCore.Qt.Key.Key_1)
    assert viewer.state.a == "1"
    # Over the node graph, D disables the selected node although the viewer had the focus.
    window.graph_view.select([gain])
    point_at(window, window.graph_view.ng.viewer())
    press(window, QtCore.Qt.Key.Key_D)
    assert gain.value("disable") is True


def test_graph_context_menu_creates_disables_deletes_and_connects_the_viewer(qtbot, window):
    graph, view = window.graph, window.graph_view
    const, gain = constant_chain(graph)
    ng_view = view.ng.viewer()
    QtWidgets.QApplication.processEvents()
    at = ng_view.mapFromScene(view.view_of(gain).view.sceneBoundingRect().center())
    menu = view.context_menu(at)
    assert view.selected_nodes() == [gain]  # right-clicking a node makes it the selection
    actions = {a.text().split("\t")[0]: a for a in menu.actions()}
    assert {"Create node…", "Disable AppTestGain1", "Delete AppTestGain1"} <= set(actions)
    slots = {a.text().split("\t")[0]: a for a in actions["Connect viewer input (AppTestGain1)"].menu().actions()}
    slots["3"].trigger()
    assert window.viewer.node_in_slot("3") is gain
    actions["Disable AppTestGain1"].trigger()
    assert gain.value("disable") is True
    assert "Enable AppTestGain1" in [a.text().split("\t")[0] for a in view.context_menu(at).actions()]
    actions["Delete AppTestGain1"].trigger()
    assert gain not in graph.nodes
    # On empty space with nothing selected: create, but no node actions.
    view.select([])
    corner = QtCore.QPoint(ng_view.width() - 3, ng_view.height() - 3)
    assert view.node_at(corner) is None
    empty = {a.text().split("\t")[0] for a in view.context_menu(corner).actions()}
    assert "Create node…" in empty and not any(t.startswith("Delete") for t in empty)


def test_tab_created_node_opens_its_properties_and_view_result_keeps_the_ab_inputs(qtbot, window, tmp_path):
    graph, viewer = window.graph, window.viewer
    const, gain = constant_chain(graph)
    viewer.set_input(1, const)
    viewer.set_input(2, gain)
    window.graph_view.select([gain])
    window.graph_view.menu.chosen.emit("AppTestGain")  # what choosing it in the Tab menu does
    created = window.graph_view.selected_nodes()[0]
    assert window.properties.panels[0].node is created
    slot = viewer.view_result(created)
    assert slot not in ("1", "2") and viewer.node_in_slot("1") is const and viewer.node_in_slot("2") is gain
    assert viewer.node_in_slot(viewer.state.a) is created


def test_a_key_the_focus_cannot_follow_reaches_the_target_once(qtbot):
    """When the key target cannot take the focus (an inactive window under a bare X server: the bench in
    Xvfb), the router's copy of the key, sent to the target and propagating to its parents unaccepted, is not
    routed again (it recursed until the process crashed)."""
    from doublure.app.key_routing import PointerKeyRouter

    top = QtWidgets.QWidget()
    layout = QtWidgets.QHBoxLayout(top)
    field, panel = QtWidgets.QLineEdit(top), QtWidgets.QWidget(top)
    target = QtWidgets.QWidget(panel)
    target.setEnabled(False)   # setFocus does nothing: the focus stays on the field
    layout.addWidget(field)
    layout.addWidget(panel)
    keys = []
    filtered = QtCore.QObject()
    filtered.eventFilter = lambda obj, event: (keys.append(event.key()) if obj is target and
                                               event.type() == QtCore.QEvent.Type.KeyPress else None) or False
    target.installEventFilter(filtered)
    top.resize(400, 100)
    top.show()
    qtbot.waitExposed(top)
    field.setFocus()
    router = PointerKeyRouter([(panel, target)])
    router.panel_under_pointer = lambda: (panel, target, panel)   # the pointer over the panel
    app = QtWidgets.QApplication.instance()
    app.installEventFilter(router)
    try:
        app.sendEvent(field, QtGui.QKeyEvent(QtCore.QEvent.Type.KeyPress, QtCore.Qt.Key.Key_Right,
                                             QtCore.Qt.KeyboardModifier.NoModifier))
    finally:
        app.removeEventFilter(router)
        top.close()
    assert set(keys) == {QtCore.Qt.Key.Key_Right}   # delivered to the target, and the process still runs

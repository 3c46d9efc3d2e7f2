"""The window's layout (issue 23, item 2): the viewer takes the centre, the properties bin the full right side,
Render and Training are closable tabs beside the node graph, and the arrangement is remembered."""
from __future__ import annotations

from PySide6 import QtCore, QtWidgets

from test_app_support import window  # noqa: F401


def test_viewer_is_large_and_properties_run_the_full_right_side(qtbot, window):
    window.resize(1920, 1080)
    qtbot.waitUntil(lambda: window.width() == 1920, timeout=5000)
    QtWidgets.QApplication.processEvents()
    canvas = window.viewer.canvas
    assert canvas.width() >= 1300 and canvas.height() >= 450, canvas.size()
    props = window.properties_dock.geometry()
    central = window.centralWidget().geometry()
    assert props.left() >= central.right() and props.height() >= 0.85 * window.height()
    # Render and Training are tabs beside the node graph, each closable; the graph is the tab on top.
    tabbed = window.tabifiedDockWidgets(window.graph_dock)
    assert window.render_dock in tabbed and window.training_dock in tabbed
    for dock in (window.render_dock, window.training_dock):
        assert dock.features() & QtWidgets.QDockWidget.DockWidgetFeature.DockWidgetClosable
    assert not window.graph_dock.visibleRegion().isEmpty()
    # A tall panel scrolls: its minimum height does not squeeze the viewer.
    assert window.training_dock.minimumSizeHint().height() < 200


def test_the_layout_is_remembered(qtbot, window, tmp_path):
    from doublure.app.main_window import MainWindow

    window.render_dock.close()
    window.resize(780, 560)  # within the offscreen platform's 800x600 screen, which clamps a restored geometry
    qtbot.waitUntil(lambda: window.width() == 780, timeout=5000)
    window.resizeDocks([window.properties_dock], [330], QtCore.Qt.Orientation.Horizontal)
    QtWidgets.QApplication.processEvents()
    width = window.properties_dock.width()
    window.close()  # saves the layout
    again = MainWindow(settings=window.settings, autosave_s=3600)
    qtbot.addWidget(again)
    again.show()
    QtWidgets.QApplication.processEvents()
    assert again.render_dock.isHidden() and not again.training_dock.isHidden()
    assert abs(again.properties_dock.width() - width) <= 4, (again.width(), again.properties_dock.width(), width)
    again.reset_layout()
    assert not again.render_dock.isHidden()
    again.close()

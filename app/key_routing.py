"""Keys go to the panel under the pointer, as in Nuke.

After typing a knob value the field keeps the keyboard focus; a compositor then moves the pointer over the
viewer and presses Left, F or 2 and expects the viewer to act, without clicking it first (a click in Paint
mode would paint). :class:`PointerKeyRouter` watches every key press of the application: when the pointer
is over one of the routed panels and the focus is elsewhere, it gives that panel's key target the focus
before Qt matches shortcuts and delivers the key, so the panel's own shortcuts and key handling see it.

"""
from __future__ import annotations

from typing import Callable

from PySide6 import QtCore, QtGui, QtWidgets

KEY_EVENTS = (QtCore.QEvent.Type.ShortcutOverride, QtCore.QEvent.Type.KeyPress)
TEXT_ENTRIES = (QtWidgets.QLineEdit, QtWidgets.QAbstractSpinBox, QtWidgets.QTextEdit, QtWidgets.QPlainTextEdit,
                QtWidgets.QComboBox)


def _inside(widget: QtWidgets.QWidget | None, panel: QtWidgets.QWidget) -> bool:
    return widget is not None and (widget is panel or panel.isAncestorOf(widget))


class PointerKeyRouter(QtCore.QObject):
    """An application event filter routing key presses to the panel under the pointer.

    ``routes``: (panel, key target) pairs; the key target is the widget inside the panel that takes the
    keyboard focus (the viewer's canvas, the node graph's view). ``pointer`` gives the pointer's global
    position (``QCursor.pos`` by default).
    """

    def __init__(self, routes: list[tuple[QtWidgets.QWidget, QtWidgets.QWidget]],
                 pointer: Callable[[], QtCore.QPoint] = QtGui.QCursor.pos,
                 parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.routes = routes
        self.pointer = pointer
        self._sending = False   # while this router's copy of a key is delivered (and propagates to parents)

    def panel_under_pointer(self) -> tuple[QtWidgets.QWidget, QtWidgets.QWidget, QtWidgets.QWidget] | None:
        """(panel, key target, widget under the pointer) for the routed panel under the pointer."""
        under = QtWidgets.QApplication.widgetAt(self.pointer())
        for panel, target in self.routes:
            if panel.isVisible() and _inside(under, panel):
                return panel, target, under
        return None

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if (event.type() not in KEY_EVENTS or not isinstance(watched, QtGui.QWindow | QtWidgets.QWidget)
                or self._sending):
            return False
        app = QtWidgets.QApplication
        if app.activePopupWidget() is not None or app.activeModalWidget() is not None:
            return False  # a menu or a dialog owns the keys
        route = self.panel_under_pointer()
        if route is None:
            return False
        panel, target, under = route
        focus = app.focusWidget()
        if focus is not None and focus.window() is not panel.window():
            return False
        # A text field keeps its keys only while the pointer is over it (the timeline's frame field is inside
        # the viewer, yet Left over the picture steps the frame).
        typing = isinstance(focus, TEXT_ENTRIES) and _inside(under, focus)
        if typing or (_inside(focus, panel) and not isinstance(focus, TEXT_ENTRIES)):
            return False
        target.setFocus(QtCore.Qt.FocusReason.MouseFocusReason)
        # The event was addressed to the old focus: the new one gets a copy instead. For ShortcutOverride its
        # answer decides whether Qt then runs a shortcut (in the context of the new focus) or sends the press.
        copy = QtGui.QKeyEvent(event.type(), event.key(), event.modifiers(), event.text(),
                               event.isAutoRepeat(), event.count())
        copy.setAccepted(False)
        # Not routed again: where the target could not take the focus (an inactive window) the copy would be
        # routed to it over and over until the stack overflowed.
        self._sending = True
        try:
            app.sendEvent(target, copy)
        finally:
            self._sending = False
        event.setAccepted(copy.isAccepted())
        return True

"""Graph events delivered on the UI thread.

Node actions (Track, Analyse) and renders run on worker threads and may edit the graph there; a widget
must only hear about it on the UI thread. ``subscribe_on_ui_thread`` relays each event through a Qt signal:
direct when the edit happened on the UI thread (so views update before the edit call returns), queued
otherwise.
"""
from __future__ import annotations

from typing import Callable

from PySide6 import QtCore

from doublure.engine import Graph, GraphEvent


class _Relay(QtCore.QObject):
    event = QtCore.Signal(object)


def subscribe_on_ui_thread(graph: Graph, callback: Callable[[GraphEvent], None],
                           owner: QtCore.QObject) -> Callable[[], None]:
    """Call ``callback(event)`` on ``owner``'s thread for every event of ``graph``; returns unsubscribe."""
    relay = _Relay(owner)
    relay.event.connect(callback)
    unsubscribe = graph.subscribe(relay.event.emit)

    def stop() -> None:
        unsubscribe()
        relay.event.disconnect()
        relay.deleteLater()

    return stop

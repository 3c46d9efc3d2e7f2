"""How an engine node is drawn in the node editor, the way a Nuke user reads a graph.

- The node's name sits inside its box.
- The first input (the main stream: ``source``, ``B``, ``plate``) enters at the top centre, straight above the
  output, so a chain of nodes is one straight pipe. The second input (a side input: ``reference``, ``A``) enters
  from the left edge and the third (``mask``) from the right edge, as Nuke's Merge takes B, A and mask.
- Every input is labelled with its port name beside the pipe's end, and hovering a port names it.
- A node the viewer's frame fails in is drawn in red, its tooltip the error; a node that warns about the
  frame shown (it passed its input on without doing its work) gets an amber border, its tooltip the warning.
"""
from __future__ import annotations

from NodeGraphQt.qgraphics.node_base import NodeItem
from PySide6 import QtCore, QtGui, QtWidgets

NAME_POINT_SIZE = 9.0
LABEL_POINT_SIZE = 7.0
LABEL_COLOUR = QtGui.QColor(200, 200, 200)
ERROR_FILL = QtGui.QColor(190, 30, 25, 170)
ERROR_BORDER = QtGui.QColor(255, 70, 50)
WARNING_BORDER = QtGui.QColor(255, 176, 32)
MIN_WIDTH = 110.0
MIN_HEIGHT = 34.0


class EngineNodeItem(NodeItem):
    """NodeGraphQt's node item with the name inside, Nuke-like input placement, port labels and an error
    state (``set_error``)."""

    def __init__(self, name: str = "node", parent: QtWidgets.QGraphicsItem | None = None) -> None:
        super().__init__(name, parent)
        self.error = ""
        self.warning = ""
        self._port_labels: dict[object, QtWidgets.QGraphicsSimpleTextItem] = {}

    # -- error state ----------------------------------------------------------------------------------
    def set_error(self, message: str) -> None:
        """Draw the node in error with ``message`` as its tooltip ("" clears it)."""
        if message == self.error:
            return
        self.error = message
        self._show_tooltip()
        self.update()

    def set_warning(self, message: str) -> None:
        """Draw the node warning with ``message`` as its tooltip ("" clears it); an error goes first."""
        if message == self.warning:
            return
        self.warning = message
        self._show_tooltip()
        self.update()

    def _show_tooltip(self) -> None:
        self.setToolTip(f"ERROR: {self.error}" if self.error else
                        f"WARNING: {self.warning}" if self.warning else self._plain_tooltip)

    @property
    def _plain_tooltip(self) -> str:
        return getattr(self, "_tooltip", "")

    def set_description(self, text: str) -> None:
        """The tooltip shown while the node is not in error."""
        self._tooltip = text
        self._show_tooltip()

    def paint(self, painter: QtGui.QPainter, option, widget) -> None:
        super().paint(painter, option, widget)
        if self.error:
            painter.save()
            rect = self.boundingRect().adjusted(1, 1, -1, -1)
            painter.setBrush(ERROR_FILL)
            painter.setPen(QtGui.QPen(ERROR_BORDER, 2.5))
            painter.drawRoundedRect(rect, 4.0, 4.0)
            painter.restore()
        elif self.warning:
            painter.save()
            painter.setBrush(QtCore.Qt.BrushStyle.NoBrush)
            painter.setPen(QtGui.QPen(WARNING_BORDER, 3.0, QtCore.Qt.PenStyle.DashLine))
            painter.drawRoundedRect(self.boundingRect().adjusted(1, 1, -1, -1), 4.0, 4.0)
            painter.restore()

    # -- layout ---------------------------------------------------------------------------------------
    def post_init(self, viewer=None, pos=None) -> None:
        super().post_init(viewer, pos)
        font = QtGui.QFont()
        font.setPointSizeF(NAME_POINT_SIZE)
        self.text_item.setFont(font)
        self.draw_node()

    def _calc_size_vertical(self) -> tuple[float, float]:
        width, height = super()._calc_size_vertical()
        text = self.text_item.boundingRect()
        return max(width, text.width() + 24, MIN_WIDTH), max(height, text.height() + 10, MIN_HEIGHT)

    def _align_label_vertical(self, h_offset: float, v_offset: float) -> None:
        rect = self.text_item.boundingRect()
        self.text_item.setPos(self._width / 2 - rect.width() / 2, self._height / 2 - rect.height() / 2)

    def _align_icon_vertical(self, h_offset: float, v_offset: float) -> None:
        self._icon_item.setVisible(False)

    def _align_ports_vertical(self, v_offset: float) -> None:
        inputs = [p for p in self.inputs if p.isVisible()]
        for index, port in enumerate(inputs):
            w, h = port.boundingRect().width(), port.boundingRect().height()
            if index == 0:
                port.setPos(self._width / 2 - w / 2, -h / 2)
            elif index == 1:
                port.setPos(-w / 2, self._height / 2 - h / 2)
            elif index == 2:
                port.setPos(self._width - w / 2, self._height / 2 - h / 2)
            else:  # a fourth input and beyond: spread along the top edge
                port.setPos(self._width * (index - 2) / (len(inputs) - 1) - w / 2, -h / 2)
            self._place_label(index, port)
        for port in [p for p in self.outputs if p.isVisible()]:
            w, h = port.boundingRect().width(), port.boundingRect().height()
            port.setPos(self._width / 2 - w / 2, self._height - h / 2)

    def _place_label(self, index: int, port) -> None:
        label = self._port_labels.get(port)
        if label is None:
            label = QtWidgets.QGraphicsSimpleTextItem(port.name, self)
            font = QtGui.QFont()
            font.setPointSizeF(LABEL_POINT_SIZE)
            label.setFont(font)
            label.setBrush(LABEL_COLOUR)
            label.setAcceptedMouseButtons(QtCore.Qt.MouseButton.NoButton)
            self._port_labels[port] = label
        rect = label.boundingRect()
        pos, size = port.pos(), port.boundingRect()
        if index == 1:  # left edge: the label above the pipe's end, outside the box
            label.setPos(pos.x() - rect.width() - 2, pos.y() - rect.height())
        elif index == 2:  # right edge
            label.setPos(pos.x() + size.width() + 2, pos.y() - rect.height())
        else:  # top: beside the pipe, just above the box
            label.setPos(pos.x() + size.width() + 2, pos.y() - rect.height() + size.height() / 2)

    def port_labels(self) -> dict[str, str]:
        """Port name -> the label drawn beside it (for tests and tools)."""
        return {port.name: label.text() for port, label in self._port_labels.items() if label.isVisible()}


class DotItem(NodeItem):
    """A Nuke Dot: a small disc that only routes a pipe; its pipes meet at its centre, its name is hidden."""

    SIZE = 16.0

    def _set_base_size(self, add_w: float = 0.0, add_h: float = 0.0) -> None:
        self._width = self._height = self.SIZE

    def _align_label_vertical(self, h_offset: float, v_offset: float) -> None:
        self.text_item.setVisible(False)

    def _align_icon_vertical(self, h_offset: float, v_offset: float) -> None:
        self._icon_item.setVisible(False)

    def _align_widgets_vertical(self, v_offset: float) -> None:
        pass

    def _align_ports_vertical(self, v_offset: float) -> None:
        for port in list(self.inputs) + list(self.outputs):
            w, h = port.boundingRect().width(), port.boundingRect().height()
            port.setPos(self.SIZE / 2 - w / 2, self.SIZE / 2 - h / 2)
            port.setOpacity(0.0)  # the disc is the handle; the ports only anchor the pipes at its centre

    def paint(self, painter: QtGui.QPainter, option, widget) -> None:
        painter.save()
        painter.setRenderHint(QtGui.QPainter.RenderHint.Antialiasing)
        painter.setBrush(QtGui.QColor(*self.color[:3]) if not self.selected else QtGui.QColor(230, 150, 40))
        painter.setPen(QtGui.QPen(QtGui.QColor(20, 20, 20), 1.0))
        painter.drawEllipse(QtCore.QRectF(1, 1, self.SIZE - 2, self.SIZE - 2))
        painter.restore()

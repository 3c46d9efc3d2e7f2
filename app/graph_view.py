"""The node editor: a NodeGraphQt view that mirrors the engine graph. The only module importing NodeGraphQt.

Two directions, never mixed:
- engine -> view: ``GraphEvent`` s (node added/removed, connected, renamed, moved, knob changed, history)
  update the NodeGraphQt items without touching NodeGraphQt's own undo stack;
- view -> engine: user gestures (drag a connection, move, rename, delete, disable, paste, Tab create)
  become engine edits inside one ``graph.undo_group`` each. The view is never edited directly for them: the
  engine's events redraw it, and a refused edit (a type mismatch, a cycle) resynchronises the view and
  says why through ``status_message``.
The engine owns undo; NodeGraphQt's undo stack is emptied after every change and its undo actions are
disarmed. Backdrops are not engine nodes: they live in ``graph.ui["backdrops"]`` and change through
undoable commands too.
"""
from __future__ import annotations

import copy
import uuid as uuidlib
from typing import Any, Callable

from NodeGraphQt import BackdropNode, BaseNode, NodeGraph
from NodeGraphQt.constants import LayoutDirectionEnum, PipeLayoutEnum, PortTypeEnum
from PySide6 import QtCore, QtGui, QtWidgets

from doublure.engine import ConnectionRefused, DoublureError, Graph, GraphEvent, Node
from doublure.engine.commands import FunctionCommand

from .clipboard import nodes_to_json, paste_json
from .events import subscribe_on_ui_thread
from .node_item import DotItem, EngineNodeItem
from .node_menu import NodeMenu

PORT_COLOURS = {"Image": (230, 190, 70), "Mask": (90, 160, 255)}
CATEGORY_COLOURS = {
    "Image": (70, 100, 140), "Face": (120, 80, 140), "Finish": (70, 120, 90), "Merge": (60, 90, 120),
    "Transform": (120, 100, 60), "Output": (95, 95, 110), "Other": (80, 80, 80),
}
BACKDROP_TYPE = "Backdrop"


class EngineNodeView(BaseNode):
    """The box drawn for an engine node (its ports are added per node type)."""

    __identifier__ = "doublure"
    NODE_NAME = "Node"

    def __init__(self) -> None:
        super().__init__(qgraphics_item=EngineNodeItem)


class DotNodeView(BaseNode):
    """A Dot: a small disc that only routes a connection."""

    __identifier__ = "doublure"
    NODE_NAME = "Dot"

    def __init__(self) -> None:
        super().__init__(qgraphics_item=DotItem)


class BackdropView(BackdropNode):
    __identifier__ = "doublure"
    NODE_NAME = "Backdrop"


class _Mirror(NodeGraph):
    """NodeGraph whose gesture slots forward to the adapter instead of editing NodeGraphQt's model."""

    def __init__(self, adapter: "GraphView") -> None:
        self._adapter = adapter
        super().__init__(layout_direction=LayoutDirectionEnum.VERTICAL.value)

    def _on_connection_changed(self, disconnected, connected) -> None:  # noqa: D102 (NodeGraphQt slot)
        self._adapter._user_rewired(disconnected, connected)

    def _on_connection_sliced(self, ports) -> None:
        self._adapter._user_rewired(ports, [])

    def _on_nodes_moved(self, node_data) -> None:
        self._adapter._user_moved()

    def _on_node_name_changed(self, node_id, name) -> None:
        self._adapter._user_renamed(node_id, name)

    def _on_insert_node(self, pipe, node_id, prev_node_pos) -> None:
        self._adapter._user_inserted(pipe, node_id)

    def _on_node_backdrop_updated(self, node_id, update_property, value) -> None:
        if update_property in ("sizer_mouse_release", "sizer_double_clicked"):
            self._adapter._user_resized_backdrop(node_id, value)

    def _on_search_triggered(self, node_type, pos) -> None:
        pass  # our own Tab menu creates nodes

    def _on_node_data_dropped(self, mimedata, pos) -> None:
        pass  # dropping NodeGraphQt sessions would bypass the engine


class GraphView(QtCore.QObject):
    """The node editor widget over an engine graph.

    Signals: ``node_opened(Node)`` on double-click, ``selection_changed(list[Node])``,
    ``viewer_input_requested(int, Node)`` for keys 1-9, ``status_message(str)`` for refusals.
    """

    node_opened = QtCore.Signal(object)
    selection_changed = QtCore.Signal(list)
    viewer_input_requested = QtCore.Signal(int, object)
    status_message = QtCore.Signal(str)
    node_created = QtCore.Signal(object)  # a node made from the Tab or right-click menu: its panel opens

    def __init__(self, graph: Graph, parent: QtCore.QObject | None = None) -> None:
        super().__init__(parent)
        self.ng = _Mirror(self)
        for cls in (EngineNodeView, DotNodeView, BackdropView):
            self.ng.register_node(cls)
        self.ng.disable_context_menu(True)
        # Straight pipes, as Nuke draws them: side inputs then read as arrows from the side.
        self.ng.set_pipe_style(PipeLayoutEnum.STRAIGHT.value)
        viewer = self.ng.viewer()
        for action in (viewer.qaction_for_undo(), viewer.qaction_for_redo()):
            if action is not None:
                action.setShortcuts([])
                action.setEnabled(False)
        self.ng.undo_stack().setUndoLimit(1)
        self.ng.node_double_clicked.connect(self._on_double_clicked)
        self.ng.node_selection_changed.connect(lambda *_: self.selection_changed.emit(self.selected_nodes()))
        self.ng.node_selected.connect(lambda *_: self.selection_changed.emit(self.selected_nodes()))
        self.widget: QtWidgets.QWidget = self.ng.widget
        self.menu = NodeMenu(viewer)
        self.menu.chosen.connect(self._create_from_menu)
        viewer.installEventFilter(self)
        self._views: dict[str, Any] = {}  # engine uuid -> NodeGraphQt node
        self._backdrops: dict[str, Any] = {}  # backdrop id -> NodeGraphQt backdrop
        self._menu_scene_pos = QtCore.QPointF()
        self._errors: dict[str, str] = {}  # node name -> the error the viewer's frame fails with there
        self._warnings: dict[str, str] = {}  # node name -> the warning the viewer's frame carries from there
        self._refusals: dict[str, str] = {}  # node name -> why its last edit was refused (the old value kept)
        self._unsubscribe: Callable[[], None] | None = None
        self.graph = graph
        self.set_graph(graph)

    # -- graph ----------------------------------------------------------------------------------------
    def set_graph(self, graph: Graph) -> None:
        if self._unsubscribe is not None:
            self._unsubscribe()
        self.graph = graph
        for view in list(self._views.values()) + list(self._backdrops.values()):
            self.ng.remove_node(view, push_undo=False)
        self._views.clear()
        self._backdrops.clear()
        for node in graph.nodes:
            self._add_view(node)
        for node in graph.nodes:
            self._sync_inputs(node)
        self._sync_backdrops()
        self._unsubscribe = subscribe_on_ui_thread(graph, self._on_event, self)
        self._forget_view_history()
        QtCore.QTimer.singleShot(0, self.fit)

    def view_of(self, node: Node) -> Any:
        return self._views[node.uuid]

    def node_of(self, view: Any) -> Node | None:
        for uuid, v in self._views.items():
            if v is view:
                return self.graph.by_uuid(uuid)
        return None

    def selected_nodes(self) -> list[Node]:
        nodes = []
        for view in self.ng.selected_nodes():
            node = self.node_of(view)
            if node is not None:
                nodes.append(node)
        return nodes

    def select(self, nodes: list[Node]) -> None:
        self.ng.clear_selection()
        for node in nodes:
            self._views[node.uuid].view.setSelected(True)
        self.selection_changed.emit(self.selected_nodes())

    def fit(self) -> None:
        self.ng.fit_to_selection()

    def _forget_view_history(self) -> None:
        self.ng.undo_stack().clear()

    # -- engine -> view -------------------------------------------------------------------------------
    def _add_view(self, node: Node) -> None:
        dot = node.type_name == "Dot"
        view = DotNodeView() if dot else EngineNodeView()
        for port in node.inputs:
            view.add_input(port.name, display_name=not dot, color=PORT_COLOURS[port.type])
        view.add_output("output", display_name=False, color=PORT_COLOURS[node.output_type])
        view.NODE_NAME = node.name
        view.model.name = node.name
        view.model.color = (170, 170, 170, 255) if dot else (
            *CATEGORY_COLOURS.get(node.category, CATEGORY_COLOURS["Other"]), 255)
        self.ng.add_node(view, pos=list(node.position), selected=False, push_undo=False)
        view.set_property("name", node.name, push_undo=False)
        description = f"{node.type_name} ({node.category})\n{(type(node).__doc__ or '').strip()}"
        if isinstance(view.view, EngineNodeItem):
            view.view.set_description(description)
            view.view.set_error(self._errors.get(node.name, ""))
            view.view.set_warning(self._warning(node.name))
        else:
            view.view.setToolTip(description)
        self._views[node.uuid] = view
        self._sync_disabled(node)

    def _sync_inputs(self, node: Node) -> None:
        view = self._views.get(node.uuid)
        if view is None:
            return
        for index, src in enumerate(node.input_nodes):
            port = view.input_ports()[index]
            spec = node.inputs[index]
            port.view.setToolTip(f"{node.name}.{spec.name} ({spec.type}{', optional' if spec.optional else ''})"
                                 f"\n{'from ' + src.name if src is not None else 'not connected'}")
            wanted = self._views[src.uuid].output_ports()[0] if src is not None and src.uuid in self._views else None
            current = port.connected_ports()
            if current == ([wanted] if wanted else []):
                continue
            for other in current:
                port.disconnect_from(other, push_undo=False, emit_signal=False)
            # A pipe the viewer removed during a refused drag leaves no item: clear leftovers.
            for pipe in list(port.view.connected_pipes):
                pipe.delete()
            if wanted is not None:
                port.connect_to(wanted, push_undo=False, emit_signal=False)

    def resync(self) -> None:
        """Make every view connection match the engine (after a refused gesture)."""
        for node in self.graph.nodes:
            self._sync_inputs(node)
        self._forget_view_history()

    def set_errors(self, errors: dict[str, str]) -> None:
        """Draw the nodes named in ``errors`` in error (their tooltip the message); the others normally."""
        self._errors = dict(errors)
        for uuid, view in self._views.items():
            if isinstance(view.view, EngineNodeItem):
                view.view.set_error(errors.get(self.graph.by_uuid(uuid).name, ""))

    def set_warnings(self, warnings: dict[str, str]) -> None:
        """Draw the nodes named in ``warnings`` warning (their tooltip the message); the others normally."""
        self._warnings = dict(warnings)
        self._show_warnings()

    def set_refusal(self, node: str, message: str) -> None:
        """Draw ``node`` warning with why its last edit was refused ("" once an edit is accepted)."""
        self._refusals[node] = message
        self._show_warnings()

    def _warning(self, name: str) -> str:
        return self._refusals.get(name) or self._warnings.get(name, "")

    def _show_warnings(self) -> None:
        for uuid, view in self._views.items():
            if isinstance(view.view, EngineNodeItem):
                view.view.set_warning(self._warning(self.graph.by_uuid(uuid).name))

    def node_warning(self, node: Node) -> str:
        """The warning ``node`` is drawn with ("" when none)."""
        view = self._views.get(node.uuid)
        return view.view.warning if view is not None and isinstance(view.view, EngineNodeItem) else ""

    def node_error(self, node: Node) -> str:
        """The error ``node`` is drawn with ("" when none)."""
        view = self._views.get(node.uuid)
        return view.view.error if view is not None and isinstance(view.view, EngineNodeItem) else ""

    def _sync_disabled(self, node: Node) -> None:
        view = self._views.get(node.uuid)
        if view is not None:
            view.set_property("disabled", bool(node.knob("disable").value_at(self.graph.current_frame)),
                              push_undo=False)

    def _on_event(self, event: GraphEvent) -> None:
        node = event.node
        if event.kind == "node_added" and node is not None and node.uuid not in self._views:
            self._add_view(node)
            self._sync_inputs(node)
            for dst, _ in self.graph.downstream(node):
                self._sync_inputs(dst)
        elif event.kind == "node_removed" and node is not None:
            view = self._views.pop(node.uuid, None)
            if view is not None:
                self.ng.remove_node(view, push_undo=False)
        elif event.kind == "connected" and node is not None:
            self._sync_inputs(node)
        elif event.kind == "renamed" and node is not None and node.uuid in self._views:
            self._views[node.uuid].set_property("name", node.name, push_undo=False)
        elif event.kind == "moved" and node is not None and node.uuid in self._views:
            view = self._views[node.uuid]
            if tuple(view.pos()) != tuple(node.position):
                view.set_property("pos", list(node.position), push_undo=False)
        elif event.kind == "knob_changed" and node is not None and event.name == "disable":
            self._sync_disabled(node)
        elif event.kind == "history":
            self._sync_backdrops()
        self._forget_view_history()

    # -- view -> engine -------------------------------------------------------------------------------
    def _port_target(self, port_view) -> tuple[Node, int] | None:
        """(engine node, input index) for an input port item, or (node, -1) for an output port."""
        for uuid, view in self._views.items():
            if view.view is port_view.node:
                node = self.graph.by_uuid(uuid)
                if port_view.port_type == PortTypeEnum.IN.value:
                    return node, [p.name for p in node.inputs].index(port_view.name)
                return node, -1
        return None

    def _edge(self, a, b) -> tuple[Node, Node, int] | None:
        """(src, dst, input index) of a pair of port items in either order."""
        ta, tb = self._port_target(a), self._port_target(b)
        if ta is None or tb is None:
            return None
        (na, ia), (nb, ib) = ta, tb
        if ia >= 0 and ib < 0:
            return nb, na, ia
        if ib >= 0 and ia < 0:
            return na, nb, ib
        return None

    def _user_rewired(self, disconnected, connected) -> None:
        try:
            with self.graph.undo_group("Connect" if connected else "Disconnect"):
                for a, b in disconnected:
                    edge = self._edge(a, b)
                    if edge is not None and edge[1].input_nodes[edge[2]] is edge[0]:
                        self.graph.disconnect(edge[1], edge[2])
                for a, b in connected:
                    edge = self._edge(a, b)
                    if edge is None:
                        raise ConnectionRefused("connect an output to an input")
                    self.graph.connect(*edge)
        except DoublureError as exc:
            self.status_message.emit(f"Connection refused: {exc}")
        self.resync()

    def _user_inserted(self, pipe, node_id: str) -> None:
        view = self.ng.get_node_by_id(node_id)
        node = self.node_of(view)
        edge = self._edge(pipe.input_port, pipe.output_port)
        self._user_moved()
        if node is None or edge is None or not node.inputs:
            return
        src, dst, index = edge
        try:
            with self.graph.undo_group(f"Insert {node.name}"):
                self.graph.connect(src, node, 0)
                self.graph.connect(node, dst, index)
        except DoublureError as exc:
            self.status_message.emit(f"Connection refused: {exc}")
        self.resync()

    def _user_moved(self) -> None:
        moves = [(self.graph.by_uuid(uuid), view.pos()) for uuid, view in self._views.items()
                 if tuple(view.pos()) != tuple(self.graph.by_uuid(uuid).position)]
        backdrops = self._backdrops_from_view()
        if not moves and backdrops == self.graph.ui.get("backdrops", []):
            return
        with self.graph.undo_group("Move nodes"):
            for node, (x, y) in moves:
                self.graph.move(node, x, y)
            if backdrops != self.graph.ui.get("backdrops", []):
                self._set_backdrops(backdrops, "Move backdrop")

    def _user_renamed(self, node_id: str, name: str) -> None:
        view = self.ng.get_node_by_id(node_id)
        if node_id in self._backdrops_by_view_id():
            backdrops = self._backdrops_from_view()
            for entry in backdrops:
                if entry["id"] == self._backdrops_by_view_id()[node_id]:
                    entry["title"] = name
            self._set_backdrops(backdrops, "Rename backdrop")
            return
        node = self.node_of(view)
        if node is None:
            return
        try:
            self.graph.rename(node, name)
        except DoublureError as exc:
            self.status_message.emit(f"Rename refused: {exc}")
            view.set_property("name", node.name, push_undo=False)

    def delete_selected(self) -> None:
        nodes = self.selected_nodes()
        chosen_backdrops = {bid for bid, view in self._backdrops.items() if view.view.isSelected()}
        if not nodes and not chosen_backdrops:
            return
        with self.graph.undo_group(f"Delete {len(nodes) + len(chosen_backdrops)} item(s)"):
            for node in nodes:
                self.graph.delete(node)
            if chosen_backdrops:
                self._set_backdrops([b for b in self.graph.ui.get("backdrops", []) if b["id"] not in chosen_backdrops],
                                    "Delete backdrop")

    def toggle_disable_selected(self) -> None:
        nodes = self.selected_nodes()
        if not nodes:
            return
        frame = self.graph.current_frame
        state = not all(n.knob("disable").value_at(frame) for n in nodes)
        with self.graph.undo_group(("Disable " if state else "Enable ") + ", ".join(n.name for n in nodes)):
            for node in nodes:
                self.graph.set_knob(node, "disable", state)

    def copy_selected(self) -> str | None:
        nodes = self.selected_nodes()
        if not nodes:
            return None
        text = nodes_to_json(self.graph, nodes)
        QtWidgets.QApplication.clipboard().setText(text)
        return text

    def paste(self, text: str | None = None) -> list[Node]:
        """Paste nodes at the cursor; as in Nuke, the pasted chain's top node is fed by the one selected node
        (all in one undo step)."""
        text = QtWidgets.QApplication.clipboard().text() if text is None else text
        pos = self.ng.viewer().scene_cursor_pos()
        selected = self.selected_nodes()
        feeder = selected[-1] if len(selected) == 1 else None
        try:
            with self.graph.undo_group("Paste"):
                nodes = paste_json(self.graph, text, (pos.x(), pos.y()))
                top = next((n for n in nodes if n.inputs and n.input_nodes[0] is None), None)
                if feeder is not None and top is not None and top.inputs[0].type == feeder.output_type:
                    self.graph.connect(feeder, top, 0)
        except DoublureError as exc:
            self.status_message.emit(str(exc))
            return []
        self.select(nodes)
        return nodes

    # -- creation -------------------------------------------------------------------------------------
    def open_menu(self, at: QtCore.QPoint | None = None) -> None:
        """Show the Tab menu at the cursor (or ``at``, in viewer widget coordinates)."""
        viewer = self.ng.viewer()
        local = at if at is not None else viewer.mapFromGlobal(QtGui.QCursor.pos())
        if not viewer.rect().contains(local):
            local = viewer.rect().center()
        self._menu_scene_pos = viewer.mapToScene(local)
        self.menu.popup_at(viewer.mapToGlobal(local))

    def create_node(self, type_name: str, position: tuple[float, float] | None = None) -> Node | None:
        """Create a node (at ``position`` in scene coordinates), fed by the selected node when the types
        allow, as one undo step; the new node becomes the selection."""
        if type_name == BACKDROP_TYPE:
            self.create_backdrop()
            return None
        selected = self.selected_nodes()
        feeder = selected[-1] if len(selected) >= 1 else None
        from doublure.engine import node_type

        cls = node_type(type_name)
        if position is None:
            position = (self._menu_scene_pos.x(), self._menu_scene_pos.y())
        inputs = []
        if feeder is not None and cls.inputs and cls.inputs[0].type == feeder.output_type:
            inputs = [feeder]
        try:
            node = self.graph.create(type_name, position=position, inputs=inputs)
        except DoublureError as exc:
            self.status_message.emit(str(exc))
            return None
        self.select([node])
        return node

    def _create_from_menu(self, type_name: str) -> None:
        node = self.create_node(type_name)
        if node is not None:
            self.node_created.emit(node)

    # -- backdrops ------------------------------------------------------------------------------------
    def create_backdrop(self, title: str = "Backdrop") -> None:
        """A backdrop around the selected nodes (or at the cursor)."""
        views = [self._views[n.uuid] for n in self.selected_nodes()]
        if views:
            rects = [v.view.sceneBoundingRect() for v in views]
            left = min(r.left() for r in rects) - 40
            top = min(r.top() for r in rects) - 60
            width = max(r.right() for r in rects) - left + 40
            height = max(r.bottom() for r in rects) - top + 40
        else:
            left, top, width, height = self._menu_scene_pos.x(), self._menu_scene_pos.y(), 300, 200
        entry = {"id": uuidlib.uuid4().hex[:12], "title": title, "x": left, "y": top, "width": width,
                 "height": height, "color": [90, 90, 110]}
        self._set_backdrops(self.graph.ui.get("backdrops", []) + [entry], "Create backdrop")

    def _set_backdrops(self, backdrops: list[dict], text: str) -> None:
        old = copy.deepcopy(self.graph.ui.get("backdrops", []))
        new = copy.deepcopy(backdrops)

        def apply(value: list[dict]) -> Callable[[], None]:
            def run() -> None:
                self.graph.ui["backdrops"] = copy.deepcopy(value)
            return run

        self.graph.undo_stack.push(FunctionCommand(text, apply(new), apply(old)))

    def _backdrops_by_view_id(self) -> dict[str, str]:
        return {view.id: bid for bid, view in self._backdrops.items()}

    def _backdrops_from_view(self) -> list[dict]:
        out = []
        for entry in self.graph.ui.get("backdrops", []):
            view = self._backdrops.get(entry["id"])
            entry = dict(entry)
            if view is not None:
                x, y = view.pos()
                width, height = view.size()
                entry.update(x=x, y=y, width=width, height=height)
            out.append(entry)
        return out

    def _user_resized_backdrop(self, node_id: str, value: dict) -> None:
        bid = self._backdrops_by_view_id().get(node_id)
        if bid is None:
            return
        backdrops = self._backdrops_from_view()
        for entry in backdrops:
            if entry["id"] == bid:
                entry.update(x=value["pos"][0], y=value["pos"][1], width=value["width"], height=value["height"])
        self._set_backdrops(backdrops, "Resize backdrop")

    def _sync_backdrops(self) -> None:
        wanted = {b["id"]: b for b in self.graph.ui.get("backdrops", [])}
        for bid in list(self._backdrops):
            if bid not in wanted:
                self.ng.remove_node(self._backdrops.pop(bid), push_undo=False)
        for bid, entry in wanted.items():
            view = self._backdrops.get(bid)
            if view is None:
                view = BackdropView()
                view.model.color = (*entry.get("color", [90, 90, 110]), 255)
                self.ng.add_node(view, pos=[entry["x"], entry["y"]], selected=False, push_undo=False)
                self._backdrops[bid] = view
            if view.name() != entry["title"]:
                view.set_property("name", entry["title"], push_undo=False)
            if tuple(view.pos()) != (entry["x"], entry["y"]):
                view.set_property("pos", [entry["x"], entry["y"]], push_undo=False)
            if tuple(view.size()) != (entry["width"], entry["height"]):
                view.set_property("width", entry["width"], push_undo=False)
                view.set_property("height", entry["height"], push_undo=False)

    # -- keys -----------------------------------------------------------------------------------------
    def _on_double_clicked(self, view: Any) -> None:
        node = self.node_of(view)
        if node is not None:
            self.node_opened.emit(node)

    def node_at(self, view_pos: QtCore.QPoint) -> Node | None:
        """The engine node drawn at a point of the node graph's view, if any."""
        viewer = self.ng.viewer()
        for item in viewer.items(view_pos):
            while item is not None:
                for uuid, view in self._views.items():
                    if view.view is item:
                        return self.graph.by_uuid(uuid)
                item = item.parentItem()
        return None

    def context_menu(self, view_pos: QtCore.QPoint) -> QtWidgets.QMenu:
        """The node graph's right-click menu at ``view_pos``: create, and for the node under the pointer (made
        the selection unless it is part of it) or the selection: disable, delete, connect a viewer input."""
        viewer = self.ng.viewer()
        node = self.node_at(view_pos)
        if node is not None and node not in self.selected_nodes():
            self.select([node])
        selected = self.selected_nodes()
        menu = QtWidgets.QMenu(viewer)
        menu.addAction("Create node…\tTab", lambda: self.open_menu(view_pos))
        menu.addAction("Dot\t.", lambda: self.create_node(
            "Dot", (viewer.mapToScene(view_pos).x(), viewer.mapToScene(view_pos).y())))
        menu.addAction("Backdrop\tB", self.create_backdrop)
        if self.graph.nodes:
            menu.addAction("Paste\tCtrl+V", self.paste)
        if selected:
            names = ", ".join(n.name for n in selected[:3]) + ("…" if len(selected) > 3 else "")
            menu.addSeparator()
            frame = self.graph.current_frame
            disabled = all(n.knob("disable").value_at(frame) for n in selected)
            menu.addAction(f"{'Enable' if disabled else 'Disable'} {names}\tD", self.toggle_disable_selected)
            menu.addAction(f"Delete {names}\tDel", self.delete_selected)
            menu.addAction("Copy\tCtrl+C", self.copy_selected)
            menu.addAction(f"Properties of {selected[-1].name}", lambda: self.node_opened.emit(selected[-1]))
            viewer_menu = menu.addMenu(f"Connect viewer input ({selected[-1].name})")
            for slot in range(1, 10):
                viewer_menu.addAction(f"{slot}\t{slot}", lambda slot=slot: self.viewer_input_requested.emit(
                    slot, selected[-1]))
        menu.addSeparator()
        menu.addAction("Fit\tF", self.fit)
        return menu

    def eventFilter(self, watched: QtCore.QObject, event: QtCore.QEvent) -> bool:  # noqa: N802
        if event.type() == QtCore.QEvent.Type.ContextMenu:
            self._menu_scene_pos = self.ng.viewer().mapToScene(event.pos())
            menu = self.context_menu(event.pos())
            menu.setAttribute(QtCore.Qt.WidgetAttribute.WA_DeleteOnClose)
            menu.popup(event.globalPos())
            return True
        if event.type() == QtCore.QEvent.Type.ShortcutOverride and self._handles(event):
            event.accept()
            return True
        if event.type() == QtCore.QEvent.Type.KeyPress and self._handles(event):
            self._key(event)
            return True
        return False

    def _handles(self, event: QtGui.QKeyEvent) -> bool:
        key, mods = event.key(), event.modifiers()
        plain = mods in (QtCore.Qt.KeyboardModifier.NoModifier, QtCore.Qt.KeyboardModifier.KeypadModifier)
        ctrl = mods == QtCore.Qt.KeyboardModifier.ControlModifier
        K = QtCore.Qt.Key
        if plain and (key in (K.Key_Tab, K.Key_D, K.Key_F, K.Key_Delete, K.Key_Backspace, K.Key_Period, K.Key_B)
                      or int(K.Key_1) <= key <= int(K.Key_9)):
            return True
        return ctrl and key in (K.Key_C, K.Key_V, K.Key_X)

    def _key(self, event: QtGui.QKeyEvent) -> None:
        K = QtCore.Qt.Key
        key, ctrl = event.key(), event.modifiers() == QtCore.Qt.KeyboardModifier.ControlModifier
        if ctrl:
            if key in (K.Key_C, K.Key_X):
                if self.copy_selected() and key == K.Key_X:
                    self.delete_selected()
            elif key == K.Key_V:
                self.paste()
            return
        if key == K.Key_Tab:
            self.open_menu()
        elif key == K.Key_D:
            self.toggle_disable_selected()
        elif key == K.Key_F:
            self.fit()
        elif key in (K.Key_Delete, K.Key_Backspace):
            self.delete_selected()
        elif key == K.Key_Period:
            self._menu_scene_pos = self.ng.viewer().scene_cursor_pos()
            if "Dot" in self.menu.type_names():
                self.create_node("Dot", (self._menu_scene_pos.x(), self._menu_scene_pos.y()))
        elif key == K.Key_B:
            self._menu_scene_pos = self.ng.viewer().scene_cursor_pos()
            self.create_backdrop()
        elif int(K.Key_1) <= key <= int(K.Key_9):
            selected = self.selected_nodes()
            self.viewer_input_requested.emit(key - int(K.Key_0), selected[-1] if selected else None)

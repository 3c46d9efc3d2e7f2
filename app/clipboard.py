"""Copy and paste of nodes as project JSON (the same text a ``.dbl`` file holds), so nodes can be pasted
between projects, into a text editor and back, or from a colleague's message."""
from __future__ import annotations

import json
from typing import Iterable

from doublure.engine import DoublureError, Graph, Node
from doublure.engine.errors import ProjectError
from doublure.engine.project import dumps, graph_from_dict, graph_to_dict


def nodes_to_json(graph: Graph, nodes: Iterable[Node]) -> str:
    """Project JSON holding ``nodes`` only; connections to nodes outside the selection are dropped."""
    chosen = {n.uuid for n in nodes}
    data = graph_to_dict(graph, graph.project_dir)
    data["nodes"] = [entry for entry in data["nodes"] if entry["uuid"] in chosen]
    for entry in data["nodes"]:
        entry["inputs"] = [src if src in chosen else None for src in entry["inputs"]]
    data["ui"] = {}
    return dumps(data)


def paste_json(graph: Graph, text: str, position: tuple[float, float] | None = None) -> list[Node]:
    """Create the nodes held in project JSON ``text`` in ``graph`` as one undo step.

    Names are kept when free (else numbered anew), every node gets a new UUID, connections among the
    pasted nodes are kept, and the pasted block's top-left corner goes to ``position`` when given.

    Raises:
        DoublureError: the text is not project JSON, or names an unknown node type or a bad knob value.
    """
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DoublureError(f"paste: the clipboard does not hold Doublure nodes ({exc.msg})") from None
    if not isinstance(data, dict) or not isinstance(data.get("nodes"), list):
        raise DoublureError("paste: the clipboard does not hold Doublure nodes")
    data = dict(data, settings={}, ui={})
    try:
        source = graph_from_dict(data, "<clipboard>")
    except ProjectError as exc:
        raise DoublureError(f"paste: {exc}") from None
    if not source.nodes:
        return []
    dx = dy = 0.0
    if position is not None:
        dx = position[0] - min(n.position[0] for n in source.nodes)
        dy = position[1] - min(n.position[1] for n in source.nodes)
    created: dict[str, Node] = {}
    with graph.undo_group(f"Paste {len(source.nodes)} node(s)"):
        for src in source.nodes:
            name = src.name if src.name not in graph else None
            node = graph.create(src.type_name, name, position=(src.position[0] + dx, src.position[1] + dy))
            for knob_name, knob in src.knobs.items():
                if not knob.is_default():
                    graph.set_knob_state(node, knob_name, knob.state())
            created[src.uuid] = node
        for src in source.nodes:
            for index, feeder in enumerate(src.input_nodes):
                if feeder is not None:
                    graph.connect(created[feeder.uuid], created[src.uuid], index)
    return list(created.values())

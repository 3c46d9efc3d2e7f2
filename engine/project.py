"""The project file (``.dbl``): JSON with a schema name and version, upgraded from every older version.

Loading runs no code: node types are looked up in the registry by name and knob values are validated.
File paths are stored relative to the project file. Saving is atomic, so a crash never damages a project.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from . import fields
from .atomic import write_text_atomic
from .errors import DoublureError, ProjectError
from .graph import SETTINGS_DEFAULTS, Graph
from .knobs import File
from .node import node_type, resolve_path
from .project_guard import check_unchanged, disk_state, folder_lock

SCHEMA = "doublure.project"
VERSION = 1


def _upgrade_0_to_1(data: dict, path: str = "<project>") -> dict:
    """v0 (the prototype's format): nodes in a dict by name with a ``class`` and input names; frame range
    as ``first_frame`` / ``last_frame``. v1 gives nodes UUIDs, connects by UUID and groups settings.
    The v1 fields are checked when the upgraded data is loaded; here only what the upgrade itself reads."""
    nodes_v0 = fields.mapping(data.get("nodes", {}), f"{path}: nodes")
    uuids = {name: f"00000000-0000-4000-8000-{i:012d}" for i, name in enumerate(nodes_v0)}
    nodes = []
    for name, n in nodes_v0.items():
        where = fields.at(f"{path}: nodes", name)
        n = fields.mapping(n, where)
        if "class" not in n:
            raise fields.FieldError(f"{where}: no \"class\" (the node's type)")
        inputs = fields.sequence(n.get("inputs", []), fields.at(where, "inputs"))
        nodes.append({
            "uuid": uuids[name],
            "type": n["class"],
            "name": name,
            "position": n.get("pos", [0, 0]),
            "knobs": n.get("knobs", {}),
            "inputs": [uuids.get(src) if isinstance(src, str) else src or None for src in inputs],
        })
    settings = {"first": data.get("first_frame", 1), "last": data.get("last_frame", 100)}
    if "fps" in data:
        settings["fps"] = data["fps"]
    return {"schema": f"{SCHEMA}/1", "settings": settings, "nodes": nodes, "ui": {}}


UPGRADES: dict[int, Callable[[dict, str], dict]] = {0: _upgrade_0_to_1}


def _schema_version(data: Any, path: str) -> int:
    if not isinstance(data, dict) or not isinstance(data.get("schema"), str):
        raise ProjectError(f"{path}: not a Doublure project (no \"schema\" field)")
    name, _, version = data["schema"].partition("/")
    if name != SCHEMA or not version.isdigit():
        raise ProjectError(f"{path}: schema {data['schema']!r} is not {SCHEMA}/N")
    if int(version) > VERSION:
        raise ProjectError(f"{path}: schema version {version} is newer than this Doublure understands "
                           f"({VERSION}); upgrade Doublure to open it")
    return int(version)


def upgrade(data: dict, path: str = "<project>") -> dict:
    """Bring project data of any older schema version to the current one."""
    version = _schema_version(data, path)
    while version < VERSION:
        data = UPGRADES[version](data, path)
        version += 1
    return data


def upgrade_node(entry: dict, cls: type, where: str) -> dict:
    """A node's saved ``entry`` brought from the version it was saved with (1 when it names none) to
    ``cls.version`` by the node type's ``upgrades``; an entry of a newer version than ``cls`` is refused."""
    saved = entry.get("version", 1)
    if isinstance(saved, bool) or not isinstance(saved, int) or saved < 1:
        raise fields.FieldError(f"{where}.version: bad value {saved!r} (a version number from 1)")
    if saved > cls.version:
        raise fields.FieldError(f"{where}: saved by a newer Doublure ({cls.type_name} version {saved}; this one "
                                f"knows version {cls.version}): upgrade Doublure to open it")
    for version in range(saved, cls.version):
        if version in cls.upgrades:
            entry = cls.upgrades[version](dict(entry))
    return {**entry, "version": cls.version}


def rebase_path(path: str, old_base: str, new_base: str) -> str:
    """``path`` (relative to ``old_base``, or absolute) made relative to ``new_base``; URLs stay as they are."""
    if not path or "://" in path:
        return path
    absolute = os.path.normpath(resolve_path(path, old_base))
    try:
        return os.path.relpath(absolute, new_base)
    except ValueError:  # another drive on Windows
        return absolute


def graph_to_dict(graph: Graph, project_dir: str | None = None) -> dict:
    """The project data of ``graph``; File knob paths made relative to ``project_dir`` when given (relative
    paths of the graph resolve against its own project folder, or the working folder when unsaved)."""
    base = graph.project_dir or os.getcwd()
    nodes = []
    for node in graph.nodes:
        knobs = {}
        for name, knob in node.knobs.items():
            if knob.is_default():
                continue
            value = knob.to_json()
            if isinstance(knob.spec, File) and project_dir and isinstance(value, str):
                value = rebase_path(value, base, project_dir)
            knobs[name] = value
        nodes.append({
            "uuid": node.uuid,
            "type": node.type_name,
            "name": node.name,
            "version": node.version,
            "position": [node.position[0], node.position[1]],
            "knobs": knobs,
            "inputs": [src.uuid if src is not None else None for src in node.input_nodes],
        })
    return {"schema": f"{SCHEMA}/{VERSION}", "settings": dict(graph.settings), "nodes": nodes, "ui": graph.ui}


def dumps(data: dict) -> str:
    return json.dumps(data, indent=1, ensure_ascii=False, allow_nan=False) + "\n"


def save_graph(graph: Graph, path: str, overwrite: bool = False) -> None:
    """Write the project atomically and make ``path`` the graph's project.

    File paths are stored relative to the new project's folder, and the graph's own values are rebased the
    same way, so every path still names the same file after a Save As to another folder. A project file that
    is a symbolic link is written through (the link stays).

    Saving to the graph's own project file refuses, with ProjectChangedError, when that file changed on disk
    since the graph loaded or last saved it (another process or user saved it meanwhile), unless
    ``overwrite``: see ``engine.project_guard``.
    """
    path = os.path.abspath(path)
    data = graph_to_dict(graph, os.path.dirname(path))
    with folder_lock(os.path.dirname(os.path.realpath(path))):
        if not overwrite and graph.project_path == path:
            check_unchanged(path, graph.project_disk_state)
        write_text_atomic(path, dumps(data))
        graph.project_disk_state = disk_state(path)
    for node, entry in zip(graph.nodes, data["nodes"]):
        for name, knob in node.knobs.items():
            if isinstance(knob.spec, File) and name in entry["knobs"]:
                knob.restore((entry["knobs"][name], []))
    graph.project_path = path
    graph.undo_stack.set_clean()


def graph_from_dict(data: dict, path: str = "<project>", graph: Graph | None = None) -> Graph:
    """Build a graph from project data (upgrading it first). Every field is checked: an error names the
    file, and the node, knob or field."""
    try:
        return _graph_from_dict(data, path, graph)
    except fields.FieldError as exc:
        raise ProjectError(str(exc)) from None


def _graph_from_dict(data: dict, path: str, graph: Graph | None) -> Graph:
    data = upgrade(data, path)
    graph = graph if graph is not None else Graph()
    settings = fields.mapping(data.get("settings", {}), f"{path}: settings")
    for key, value in settings.items():
        if key not in SETTINGS_DEFAULTS:
            raise ProjectError(f"{path}: unknown project setting {key!r}")
        try:
            graph._check_setting(key, value)
        except DoublureError as exc:
            raise ProjectError(f"{path}: {exc}") from None
        graph.settings[key] = float(value) if key == "fps" else value
    if graph.settings["last"] < graph.settings["first"]:
        raise ProjectError(f"{path}: settings: frame range {graph.settings['first']}-{graph.settings['last']} "
                           "runs backwards")
    graph.current_frame = graph.settings["first"]
    graph.ui = fields.mapping(data.get("ui", {}) or {}, f"{path}: ui")
    entries = fields.sequence(data.get("nodes", []), f"{path}: nodes")
    created: dict[str, tuple[Any, list, str]] = {}
    with graph.undo_stack.group("Load project"):
        for i, entry in enumerate(entries):
            where = fields.at(f"{path}: nodes", i)
            entry = fields.mapping(entry, where)
            if "name" not in entry or "type" not in entry:
                raise ProjectError(f"{where}: a node entry lacks its name or type: {entry!r:.200}")
            name = fields.text(entry["name"], fields.at(where, "name"))
            type_name = fields.text(entry["type"], fields.at(where, "type"))
            where = f"{path}: node {name}"
            try:
                cls = node_type(type_name)
            except DoublureError:
                raise ProjectError(f"{path}: node {name} has unknown type {type_name!r} (a plug-in that is "
                                   "not installed?)") from None
            entry = upgrade_node(entry, cls, where)
            uuid = entry.get("uuid")
            if uuid is not None:
                uuid = fields.text(uuid, fields.at(where, "uuid"))
                if uuid in created:
                    raise ProjectError(f"{where}: uuid {uuid} is also {created[uuid][0].name}'s")
            position = fields.numbers(entry.get("position", (0, 0)), fields.at(where, "position"), length=2)
            knob_values = fields.mapping(entry.get("knobs", {}), fields.at(where, "knobs"))
            inputs = fields.sequence(entry.get("inputs", []), fields.at(where, "inputs"))
            try:
                node = graph.create(type_name, name, uuid=uuid, position=(position[0], position[1]))
                for knob_name, value in knob_values.items():
                    knob = node.knob(knob_name)
                    knob.restore(knob.state_from_json(value))
            except DoublureError as exc:
                raise ProjectError(f"{path}: {exc}") from None
            if len(inputs) > len(node.inputs):
                raise ProjectError(f"{where}: {len(inputs)} inputs, but a {type_name} has {len(node.inputs)}")
            created[node.uuid] = (node, inputs, where)
        for node, inputs, where in created.values():
            for index, src_uuid in enumerate(inputs):
                if src_uuid is None:
                    continue
                if not isinstance(src_uuid, str) or src_uuid not in created:
                    raise ProjectError(f"{path}: {node.name} input {index} names a node that is not in the file")
                try:
                    graph.connect(created[src_uuid][0], node, index)
                except DoublureError as exc:
                    raise ProjectError(f"{path}: {exc}") from None
    graph.undo_stack.clear()
    return graph


def load(path: str) -> Graph:
    """Open a project file. Node modules must be imported (``import doublure.nodes``) first."""
    path = os.path.abspath(path)
    on_disk = disk_state(path)   # taken first: a change while reading is then seen as a change at save time
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise ProjectError(f"{path}: no such project file") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ProjectError(f"{path}: cannot read: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ProjectError(f"{path}: not valid JSON (line {exc.lineno}, column {exc.colno}): {exc.msg}") from None
    graph = Graph()
    graph.project_path = path
    graph.project_disk_state = on_disk
    return graph_from_dict(data, path, graph)


def run_node_action(path: str, node_name: str, node_class: type, action: Callable[[Graph, Any], Any]) -> Any:
    """A node's analysis run headless (``doublure track``, ``doublure occlusion``): open the project, run
    ``action(graph, node)`` on its node ``node_name``, which must be a ``node_class``, and save the project with
    what the action stored in the node.

    Returns:
        What ``action`` returns.
    """
    graph = load(path)
    node = graph.node(node_name)
    if not isinstance(node, node_class):
        raise DoublureError(f"{path}: {node_name} is a {node.type_name}, not a {node_class.type_name} node")
    result = action(graph, node)
    graph.save(path)
    return result

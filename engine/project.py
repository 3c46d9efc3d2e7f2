"""The project file (``.dbl``): JSON with a schema name and version, upgraded from every older version.

Loading runs no code: node types are looked up in the registry by name and knob values are validated.
File paths are stored relative to the project file. Saving is atomic, so a crash never damages a project.
"""
from __future__ import annotations

import json
import os
from typing import Any, Callable

from .atomic import write_text_atomic
from .errors import DoublureError, ProjectError
from .graph import SETTINGS_DEFAULTS, Graph
from .knobs import File
from .node import node_type
from .project_guard import check_unchanged, disk_state, folder_lock

SCHEMA = "doublure.project"
VERSION = 1


def _upgrade_0_to_1(data: dict) -> dict:
    """v0 (the prototype's format): nodes in a dict by name with a ``class`` and input names; frame range
    as ``first_frame`` / ``last_frame``. v1 gives nodes UUIDs, connects by UUID and groups settings."""
    nodes_v0 = data.get("nodes", {})
    uuids = {name: f"00000000-0000-4000-8000-{i:012d}" for i, name in enumerate(nodes_v0)}
    nodes = []
    for name, n in nodes_v0.items():
        nodes.append({
            "uuid": uuids[name],
            "type": n["class"],
            "name": name,
            "position": list(n.get("pos", [0, 0])),
            "knobs": dict(n.get("knobs", {})),
            "inputs": [uuids.get(src) if src else None for src in n.get("inputs", [])],
        })
    settings = {"first": data.get("first_frame", 1), "last": data.get("last_frame", 100)}
    if "fps" in data:
        settings["fps"] = data["fps"]
    return {"schema": f"{SCHEMA}/1", "settings": settings, "nodes": nodes, "ui": {}}


UPGRADES: dict[int, Callable[[dict], dict]] = {0: _upgrade_0_to_1}


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
        data = UPGRADES[version](data)
        version += 1
    return data


def rebase_path(path: str, old_base: str, new_base: str) -> str:
    """``path`` (relative to ``old_base``, or absolute) made relative to ``new_base``; URLs stay as they are."""
    if not path or "://" in path:
        return path
    absolute = os.path.normpath(os.path.join(old_base, os.path.expanduser(path)))
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
    """Build a graph from project data (upgrading it first). Errors name the file, node and knob."""
    data = upgrade(data, path)
    graph = graph if graph is not None else Graph()
    settings = data.get("settings", {})
    for key, value in settings.items():
        if key not in SETTINGS_DEFAULTS:
            raise ProjectError(f"{path}: unknown project setting {key!r}")
        try:
            graph._check_setting(key, value)
        except DoublureError as exc:
            raise ProjectError(f"{path}: {exc}") from None
        graph.settings[key] = float(value) if key == "fps" else value
    graph.current_frame = graph.settings["first"]
    graph.ui = data.get("ui", {}) or {}
    entries = data.get("nodes", [])
    if not isinstance(entries, list):
        raise ProjectError(f"{path}: \"nodes\" must be a list")
    created = {}
    with graph.undo_stack.group("Load project"):
        for entry in entries:
            try:
                name, type_name = entry["name"], entry["type"]
            except (KeyError, TypeError):
                raise ProjectError(f"{path}: a node entry lacks its name or type: {entry!r:.200}") from None
            try:
                node_type(type_name)
            except DoublureError:
                raise ProjectError(f"{path}: node {name} has unknown type {type_name!r} (a plug-in that is "
                                   "not installed?)") from None
            try:
                node = graph.create(type_name, name, uuid=entry.get("uuid"), position=tuple(entry.get("position",
                                                                                                  (0, 0))))
                for knob_name, value in entry.get("knobs", {}).items():
                    knob = node.knob(knob_name)
                    knob.restore(knob.state_from_json(value))
            except DoublureError as exc:
                raise ProjectError(f"{path}: {exc}") from None
            created[node.uuid] = (node, entry.get("inputs", []))
        for node, inputs in created.values():
            for index, src_uuid in enumerate(inputs):
                if src_uuid is None:
                    continue
                if src_uuid not in created:
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

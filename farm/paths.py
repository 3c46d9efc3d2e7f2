"""Path mapping: farm workers that see the project's storage at another path (``--path-map FROM=TO``)."""
from __future__ import annotations

from typing import Any, Iterable

from doublure.engine.errors import DoublureError
from doublure.engine.node import resolve_path

PathMap = tuple[tuple[str, str], ...]


def parse_path_map(specs: Iterable[str] | str) -> PathMap:
    """``["/mnt/a=/net/b", ...]`` (or one such string) -> ``(("/mnt/a", "/net/b"), ...)``.

    Raises DoublureError for an entry that is not ``FROM=TO`` with both sides non-empty.
    """
    if isinstance(specs, str):
        specs = [specs]
    pairs = []
    for spec in specs:
        if isinstance(spec, (tuple, list)) and len(spec) == 2:
            src, dst = spec
        else:
            src, sep, dst = str(spec).partition("=")
            if not sep:
                raise DoublureError(f"--path-map {spec!r}: expected FROM=TO, e.g. /mnt/shows=/net/shows")
        src, dst = str(src).rstrip("/\\") or "/", str(dst).rstrip("/\\") or "/"
        if not src.strip() or not dst.strip():
            raise DoublureError(f"--path-map {spec!r}: both FROM and TO must be paths")
        pairs.append((src, dst))
    return tuple(pairs)


def map_path(path: str, path_map: PathMap) -> str:
    """``path`` with the longest matching ``FROM`` prefix replaced by its ``TO``.

    A prefix matches whole path components only: ``/mnt/a`` maps ``/mnt/a/x`` but not ``/mnt/ab``.
    """
    for src, dst in sorted(path_map, key=lambda pair: len(pair[0]), reverse=True):
        if path == src:
            return dst
        if src in ("/", "\\"):
            if path.startswith(src):
                return dst.rstrip("/\\") + path[len(src) - 1:]
        elif path.startswith(src) and path[len(src)] in "/\\":
            return dst + path[len(src):]
    return path


def apply_path_map(graph: Any, path_map: PathMap, project_dir: str | None = None) -> list[tuple[str, str, str, str]]:
    """Rewrite every File knob of ``graph`` to the path a worker sees: the absolute path the client sees
    (relative values resolved against ``project_dir``, the project's folder on the client; the graph's own
    folder by default) with ``path_map`` applied.

    Project files store paths relative to the project, so a plate on another mount is stored as
    ``../../mnt/a/...``; resolving on the client's side first is what lets ``/mnt/a=/net/b`` reach it.
    Returns ``(node, knob, old value, new value)`` for each knob changed.
    """
    from doublure.engine.knobs import File

    changes = []
    if not path_map:
        return changes
    project_dir = project_dir if project_dir is not None else graph.project_dir
    for node in graph.nodes:
        for name, knob in node.knobs.items():
            if not isinstance(knob.spec, File):
                continue
            value = knob.value_at(graph.settings["first"])
            if not value:
                continue
            absolute = resolve_path(value, project_dir)
            mapped = map_path(absolute, path_map)
            if mapped != absolute:
                knob.restore(knob.state_with_value(mapped))
                changes.append((node.name, name, value, mapped))
    return changes

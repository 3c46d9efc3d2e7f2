"""What a node's inputs are by content, not by where they are mounted: the files behind a File knob and the
upstream graph as the project describes it. A stored analysis keyed on these stays current on a farm worker
that sees the plate through --path-map, or in a copy of the show at another root."""
from __future__ import annotations

import os
import re
from typing import TYPE_CHECKING

from . import imageio
from . import knobs as K

if TYPE_CHECKING:
    from .node import Node

# A frame placeholder (####, %04d) in a re.escape'd file name.
_ESCAPED_PLACEHOLDER = re.compile(r"(?:\\#)+|%0?\d*d")


def content_identity(path: str) -> list[tuple]:
    """The files behind a File knob's path as (name, size, mtime_ns), every frame file of a sequence pattern:
    what they hold, not where they are mounted (a farm worker sees the same files through --path-map; a
    copied project sees copies that kept their times). A path that is not there is (name, "missing")."""
    folder, name = os.path.split(path)
    names = [name]
    if imageio.is_sequence_pattern(name):
        frame_file = re.compile(_ESCAPED_PLACEHOLDER.sub(r"-?\\d+", re.escape(name), count=1))
        try:
            names = sorted(entry for entry in os.listdir(folder) if frame_file.fullmatch(entry))
        except OSError:
            pass
    identities = []
    for entry in names:
        try:
            st = os.stat(os.path.join(folder, entry))
            identities.append((entry, st.st_size, st.st_mtime_ns))
        except OSError:
            identities.append((entry, "missing"))
    return identities


def upstream_identity(node: Node, frame: int, memo: dict[int, tuple[str | None, list]]) -> list:
    """A node's input pixels at ``frame`` as the project describes them: every upstream node's type, version
    and knob values, with File knobs as their files' ``content_identity`` instead of their paths.

    The upstream hash would do, but it holds absolute paths: a farm worker that sees the plate through
    --path-map, or a copy of the show at another root, would find a stored analysis stale and redo it.
    Memoised in ``memo`` per frame on the upstream hash, which changes with any upstream edit or file.
    """
    upstream_hash = node.input_hash(0, node.graph.context(frame, 1.0))
    hit = memo.get(frame)
    if hit is not None and hit[0] == upstream_hash:
        return hit[1]
    identity, stack, seen = [], [node.input(0)], set()
    while stack:
        up = stack.pop()
        if up is None or up.uuid in seen:
            continue
        seen.add(up.uuid)
        knob_values = []
        for name, knob in up.knobs.items():
            value = knob.value_at(frame)
            if isinstance(knob.spec, K.File) and value:
                knob_values.append((name, content_identity(up.path(name, frame))))
            else:
                knob_values.append((name, knob.spec.to_json(value)))
        identity.append((up.type_name, up.version, knob_values))
        stack.extend(up.input_nodes)
    memo[frame] = (upstream_hash, identity)
    return identity

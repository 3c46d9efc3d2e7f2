"""Consent gates the render: every identity model feeding a Write must hold consent for the project's declared use.

The project declares its use in the ``declared_use`` setting (research, advertising, feature, ...). A node that
puts a person's face into the pixels (SwapModel) answers ``consent_problems(use)`` with its model's label and
what its rights record lacks for that use (missing, expired, the use not allowed). A render whose Writes draw
on such a node with a problem, or from a project that declares no use, refuses with one message, unless it is
given a :class:`ConsentOverride`: who, when and why, recorded in every frame's provenance and in the manifest.
"""
from __future__ import annotations

import dataclasses
import datetime
import getpass
import socket
from typing import TYPE_CHECKING, Any, Iterable

from ..errors import DoublureError

if TYPE_CHECKING:
    from ..graph import Graph
    from ..node import Node

USE_EXAMPLES = "research, advertising, feature, episodic, trailer"


class ConsentRefused(DoublureError):
    """A render that consent does not cover, with what is missing and how to proceed."""


@dataclasses.dataclass(frozen=True)
class ConsentOverride:
    """A render allowed without consent for its use: by whom, when (UTC, ISO 8601) and why."""

    reason: str
    who: str
    when: str

    def record(self) -> dict[str, str]:
        return {"reason": self.reason, "who": self.who, "when": self.when}


def make_override(reason: str, who: str | None = None) -> ConsentOverride:
    """An override by this user on this machine, now.

    Raises:
        DoublureError: an empty reason.
    """
    if not reason or not reason.strip():
        raise DoublureError("--override-consent needs a reason (who approved it, the agreement being signed...)")
    if who is None:
        try:
            user = getpass.getuser()
        except (KeyError, OSError):
            user = "unknown user"
        who = f"{user}@{socket.gethostname()}"
    when = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0).isoformat()
    return ConsentOverride(reason.strip(), who, when)


def _upstream(writes: Iterable["Node"]) -> list["Node"]:
    seen: dict[str, "Node"] = {}
    stack = list(writes)
    while stack:
        node = stack.pop()
        if node.uuid in seen:
            continue
        seen[node.uuid] = node
        stack.extend(n for n in node.input_nodes if n is not None)
    return list(seen.values())


def consent_findings(graph: "Graph", writes: Iterable["Node"], frame: int) -> list[str]:
    """What consent lacks for rendering ``writes``: one line per face-making node with a problem."""
    use = str(graph.settings.get("declared_use") or "").strip()
    lines = []
    for node in _upstream(writes):
        check = getattr(node, "consent_problems", None)
        if check is None or node.value("disable", frame):
            continue
        label, problems = check(use)
        if not use:
            problems = [f"the project declares no use (project setting declared_use: {USE_EXAMPLES})"] + problems
        if problems:
            lines.append(f"{node.name} ({label}): {'; '.join(problems)}")
    return sorted(lines)


def check_consent(graph: "Graph", writes: Iterable["Node"], frame: int,
                  override: ConsentOverride | None = None) -> dict[str, Any]:
    """Refuse a render that consent does not cover, or record its override.

    Args:
        graph: the project.
        writes: the nodes about to render.
        frame: a frame to read the nodes' disable knobs at (the render's first).
        override: renders anyway, recorded.

    Returns:
        the ``doublure/...`` metadata every frame of the render carries: the override and what it overrode
        (empty when consent covers the render).

    Raises:
        ConsentRefused: one message listing each node's problems and the ways on.
    """
    findings = consent_findings(graph, writes, frame)
    if not findings:
        return {}
    if override is None:
        raise ConsentRefused("consent does not cover this render: " + " | ".join(findings) +
                             ". Fix the model's rights record or the project's declared use, or render with "
                             "--override-consent \"reason\" (recorded in every frame)")
    return {"doublure/consent_override": {**override.record(), "overrides": findings}}

"""Dot: a pass-through that bends connections in the node editor."""
from __future__ import annotations

from doublure.engine import Node, Port, register_node


@register_node
class Dot(Node):
    """A connection elbow: its output is its input, sharing the input's cache entry."""

    type_name = "Dot"
    version = 1
    category = "Other"
    inputs = (Port("input"),)
    knob_specs = ()

    def pass_through(self, ctx) -> int:
        return 0

    def compute(self, ctx, inputs):
        return inputs.get(0)

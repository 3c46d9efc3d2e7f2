"""A node type for farm tests, and the worker plugin that makes Dask workers know it.

``TestStall`` makes a small flat frame, and at one frame blocks for minutes the way a read from a hung file
server does, unless its ``marker`` file exists (it creates the file as it starts to block, so the next
attempt at that frame goes through; with no marker, every attempt blocks).
"""
import os
import time

import torch
from distributed import WorkerPlugin

from doublure.engine import Image, Node, knobs as K, node_types, register_node


class TestStall(Node):
    type_name = "TestStall"
    inputs = ()
    knob_specs = (K.Int("stall_frame", 1), K.String("marker", ""))

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        marker = self.value("marker", ctx.frame)
        if ctx.frame == self.value("stall_frame", ctx.frame) and not (marker and os.path.exists(marker)):
            if marker:
                open(marker, "w").close()
            time.sleep(600)
        return Image(torch.full((3, 8, 12), float(ctx.frame) / 100.0, device=ctx.device))


if "TestStall" not in node_types():
    register_node(TestStall)


class FarmTestNodes(WorkerPlugin):
    """Importing this module (which unpickling the plugin does on each worker, restarted ones too)
    registers ``TestStall`` there."""

    name = "doublure-farm-test-nodes"

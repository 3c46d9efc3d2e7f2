"""Doublure's engine: the node graph, knobs, lazy hash/compute evaluation, the frame cache, undo, the project
file and rendering. Imports no Qt and no node library: node modules register themselves into it."""
from . import knobs
from .cache import FrameCache
from .context import CancelToken, EvalContext
from .device import default_device
from .errors import Cancelled, ConnectionRefused, DoublureError, KnobError, MediaError, ProjectError
from .graph import Graph, GraphEvent
from .hashing import Hasher, file_identity
from .image import Box, Format, Image, Window, mask_image, warnings_of, with_warning
from .knobs import parse_frame_range
from .node import Inputs, Node, Port, node_type, node_types, register_node
from .output import FileOutputNode, FrameJob
from .project import load
from .render import RenderReport, render
from .threads import single_threaded_numpy_blas

single_threaded_numpy_blas()   # numpy is loaded by now (engine/threads.py)

__all__ = [
    "Box", "Cancelled", "CancelToken", "ConnectionRefused", "DoublureError", "EvalContext", "FileOutputNode",
    "Format", "FrameCache", "FrameJob", "Graph", "GraphEvent", "Hasher", "Image", "Inputs", "KnobError",
    "MediaError", "Node", "Port", "ProjectError", "RenderReport", "Window", "default_device", "file_identity",
    "knobs", "load", "mask_image", "node_type", "node_types", "parse_frame_range", "register_node", "render",
    "warnings_of", "with_warning",
]

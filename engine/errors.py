"""Errors the user can cause and fix. The CLI and the app print these without a traceback."""


class DoublureError(Exception):
    """A user-facing error: the message names the file, node, knob or frame involved.

    ``node`` is the name of the node whose hash or compute raised it (set by the graph, innermost node
    first), so a viewer can draw that node in error; None when no node raised it.
    """

    node: str | None = None


def blame(exc: DoublureError, node_name: str) -> None:
    """Record ``node_name`` as the node an error came from, unless a node further up already is."""
    if exc.node is None:
        exc.node = node_name


class KnobError(DoublureError, ValueError):
    """A bad knob name or value; the knob keeps its old value."""


class ConnectionRefused(DoublureError):
    """A connection that would mismatch port types or make a cycle."""


class ProjectError(DoublureError):
    """A project file that cannot be read: bad JSON, unknown schema or node type."""


class MediaError(DoublureError):
    """A missing, corrupt or truncated image or video file, or a frame out of range."""


class Cancelled(Exception):
    """Raised inside an evaluation whose request was cancelled (not an error for the user)."""


class Deferred(BaseException):
    """Raised by the engine to abandon a computation it will take up again from a shallower call (a pull
    nested too deep to go on without a Python recursion limit). Not a failure: whoever waits on the
    abandoned result computes it itself. A BaseException so that a node's ``except Exception`` lets it by.
    """

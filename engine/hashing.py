"""The cache key: a cheap, stable digest of everything a node's output depends on.

Tensors are never hashed by content (DESIGN.md); external state enters as explicit identities:
a file by path, size and mtime, a model by its content digest, the OCIO config by its cache id.
"""
from __future__ import annotations

import hashlib
import os
import struct
from typing import Any


class Hasher:
    """Incremental blake2b over typed values, so ``1``, ``1.0`` and ``"1"`` hash differently."""

    __slots__ = ("_h",)

    def __init__(self) -> None:
        self._h = hashlib.blake2b(digest_size=16)

    def update(self, value: Any) -> "Hasher":
        h = self._h
        # the types a hash walk feeds most (names, knob values, versions), by exact type first: a 50-node chain
        # hashes about 250 values a frame; the same bytes as the checks below
        kind = type(value)
        if kind is str:
            data = value.encode()
            h.update(b"s" + struct.pack("<I", len(data)) + data)
            return self
        if kind is float:
            h.update(b"f" + struct.pack("<d", value))
            return self
        if kind is int:
            h.update(b"i" + str(value).encode())
            return self
        if value is None:
            h.update(b"N")
        elif isinstance(value, bool):
            h.update(b"T" if value else b"F")
        elif isinstance(value, int):
            h.update(b"i" + str(value).encode())
        elif isinstance(value, float):
            h.update(b"f" + struct.pack("<d", value))
        elif isinstance(value, str):
            data = value.encode()
            h.update(b"s" + struct.pack("<I", len(data)) + data)
        elif isinstance(value, bytes):
            h.update(b"b" + struct.pack("<I", len(value)) + value)
        elif isinstance(value, (list, tuple)):
            h.update(b"(" + struct.pack("<I", len(value)))
            for item in value:
                self.update(item)
            h.update(b")")
        elif isinstance(value, dict):
            h.update(b"{" + struct.pack("<I", len(value)))
            for key in sorted(value, key=str):
                self.update(str(key))
                self.update(value[key])
            h.update(b"}")
        elif hasattr(value, "tolist"):  # numpy scalars and small arrays in knob values
            self.update(value.tolist())
        else:
            raise TypeError(f"cannot hash a {type(value).__name__}; hash an explicit identity instead")
        return self

    def hexdigest(self) -> str:
        return self._h.hexdigest()

    def copy(self) -> "Hasher":
        """A Hasher fed what this one was fed so far; updating either leaves the other as it is."""
        twin = Hasher.__new__(Hasher)
        twin._h = self._h.copy()
        return twin


def file_identity(path: str | os.PathLike) -> tuple:
    """(path, size, mtime_ns) of a file, or (path, 'missing'): what a cache key needs of a file."""
    try:
        st = os.stat(path)
    except OSError:
        return (os.fspath(path), "missing")
    return (os.fspath(path), st.st_size, st.st_mtime_ns)

"""Checks for values read from files (projects, stored face analyses, faceset indexes, tracks, headers).

Everything a file says is checked against a type and a range before it is used, and a failure is one
:class:`~doublure.engine.errors.DoublureError` naming the file and the field (``shot.dbl: nodes[3].position:
expected a list of 2 numbers, got 'x'``), never a traceback from deep inside the code that used it.

A field is named by ``where``: the file and the path to the field in it, built with :func:`at`.
"""
from __future__ import annotations

import math
from typing import Any

from .errors import DoublureError


class FieldError(DoublureError):
    """A field of a file has the wrong type or is out of range; the message names the file and the field."""


def at(where: str, key: str | int) -> str:
    """The name of field ``key`` inside ``where``: ``at("a.dbl: nodes", 3)`` is ``a.dbl: nodes[3]``."""
    if isinstance(key, int):
        return f"{where}[{key}]"
    return f"{where}.{key}" if ": " in where else f"{where}: {key}"


def _shown(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def fail(where: str, expected: str, value: Any) -> FieldError:
    return FieldError(f"{where}: expected {expected}, got {_shown(value)}")


def mapping(value: Any, where: str) -> dict:
    """``value`` if it is a JSON object with string keys."""
    if not isinstance(value, dict) or not all(isinstance(k, str) for k in value):
        raise fail(where, "an object", value)
    return value


def sequence(value: Any, where: str, length: int | None = None, max_length: int | None = None) -> list:
    """``value`` as a list if it is a JSON array (a tuple too), of ``length`` items when given."""
    if not isinstance(value, (list, tuple)):
        raise fail(where, "a list" if length is None else f"a list of {length}", value)
    if length is not None and len(value) != length:
        raise fail(where, f"a list of {length}", value)
    if max_length is not None and len(value) > max_length:
        raise FieldError(f"{where}: {len(value)} items, more than the {max_length} allowed")
    return list(value)


def text(value: Any, where: str, choices: tuple[str, ...] | None = None) -> str:
    """``value`` if it is a string (one of ``choices`` when given)."""
    if not isinstance(value, str):
        raise fail(where, "a string", value)
    if choices is not None and value not in choices:
        raise fail(where, f"one of {', '.join(choices)}", value)
    return value


def number(value: Any, where: str, lo: float | None = None, hi: float | None = None) -> float:
    """``value`` as a float if it is a finite number within [``lo``, ``hi``] (booleans are not numbers)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise fail(where, "a finite number", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise fail(where, f"a number from {lo:g} to {hi:g}" if lo is not None and hi is not None else
                   f"a number {'>= ' + format(lo, 'g') if lo is not None else '<= ' + format(hi, 'g')}", value)
    return float(value)


def integer(value: Any, where: str, lo: int | None = None, hi: int | None = None) -> int:
    """``value`` as an int if it is a whole number within [``lo``, ``hi``] (a float like 3.0 is accepted)."""
    if isinstance(value, float) and math.isfinite(value) and value == int(value):
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int):
        raise fail(where, "a whole number", value)
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise fail(where, f"a whole number from {lo} to {hi}" if lo is not None and hi is not None else
                   f"a whole number {'>= ' + str(lo) if lo is not None else '<= ' + str(hi)}", value)
    return value


def numbers(value: Any, where: str, length: int | None = None, lo: float | None = None,
            hi: float | None = None) -> list[float]:
    """A list of finite numbers (of ``length`` when given), each within [``lo``, ``hi``]."""
    items = sequence(value, where, length)
    return [number(v, at(where, i), lo, hi) for i, v in enumerate(items)]

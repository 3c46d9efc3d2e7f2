"""Typed parameters of nodes (Nuke's knobs): specs declared on the node class, values held per node.

A spec validates and normalises values; a :class:`Knob` holds one node's value, or its animation curve
for numeric knobs. Values change only through the graph's undo stack (``node[name] = v``), so the app and
scripts share one history.
"""
from __future__ import annotations

import bisect
import copy
import dataclasses
import math
import re
from typing import Any, Callable, Sequence

from . import fields
from .errors import DoublureError, KnobError

INTERPOLATIONS = ("linear", "smooth", "constant")
MAX_KEY_FRAME = 1e9
"""Keys lie within +-MAX_KEY_FRAME (the project's frame limit): an infinite frame breaks interpolation."""


class KnobSpec:
    """Base of the knob kinds. ``validate`` returns the normalised value or raises ``ValueError``."""

    kind = "base"
    animatable = False

    def __init__(self, name: str, default: Any = None, *, label: str | None = None, tooltip: str = "",
                 hidden: bool = False) -> None:
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"knob name {name!r} must be lower_snake_case")
        self.name = name
        self.label = label or name.replace("_", " ")
        self.tooltip = tooltip
        self.hidden = hidden
        self.default = self.validate(default)

    def validate(self, value: Any) -> Any:
        return value

    def to_json(self, value: Any) -> Any:
        return value

    def from_json(self, data: Any) -> Any:
        """The value as stored in a project, before validation (``Knob.checked`` validates)."""
        return data

    def interpolate(self, a: Any, b: Any, t: float) -> Any:
        raise TypeError(f"knob {self.name} is not animatable")

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.name!r}, default={self.default!r})"


class _Numeric(KnobSpec):
    animatable = True

    def __init__(self, name: str, default: float = 0, *, min: float | None = None, max: float | None = None,
                 soft_min: float | None = None, soft_max: float | None = None, animatable: bool = True,
                 **kw: Any) -> None:
        self.min, self.max = min, max
        self.soft_min = soft_min if soft_min is not None else min
        self.soft_max = soft_max if soft_max is not None else max
        self.animatable = animatable
        super().__init__(name, default, **kw)

    def _check_range(self, value: float) -> None:
        if self.min is not None and value < self.min:
            raise ValueError(f"{value!r} is below the minimum {self.min}")
        if self.max is not None and value > self.max:
            raise ValueError(f"{value!r} is above the maximum {self.max}")


class Float(_Numeric):
    kind = "float"

    def validate(self, value: Any) -> float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{value!r} is not a number")
        value = float(value)
        if not math.isfinite(value):
            raise ValueError(f"{value!r} is not finite")
        self._check_range(value)
        return value

    def interpolate(self, a: float, b: float, t: float) -> float:
        return a + (b - a) * t


class Int(_Numeric):
    kind = "int"

    def validate(self, value: Any) -> int:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or (isinstance(value, float) and not (math.isfinite(value) and value == int(value)))):
            raise ValueError(f"{value!r} is not a whole number")
        value = int(value)
        self._check_range(value)
        return value

    def interpolate(self, a: int, b: int, t: float) -> int:
        return int(round(a + (b - a) * t))


class Bool(KnobSpec):
    kind = "bool"

    def __init__(self, name: str, default: bool = False, **kw: Any) -> None:
        super().__init__(name, default, **kw)

    def validate(self, value: Any) -> bool:
        if not isinstance(value, bool):
            raise ValueError(f"{value!r} is not true or false")
        return value


class Enum(KnobSpec):
    kind = "enum"

    def __init__(self, name: str, choices: Sequence[str], default: str | None = None, **kw: Any) -> None:
        self.choices = tuple(choices)
        super().__init__(name, default if default is not None else self.choices[0], **kw)

    def validate(self, value: Any) -> str:
        if value not in self.choices:
            raise ValueError(f"{value!r} is not one of {', '.join(self.choices)}")
        return value


class Color(_Numeric):
    """An RGB or RGBA colour in the working space, animatable per component."""

    kind = "color"

    def __init__(self, name: str, default: Sequence[float] = (0.0, 0.0, 0.0), **kw: Any) -> None:
        self.size = len(default)
        super().__init__(name, default, **kw)

    def validate(self, value: Any) -> tuple[float, ...]:
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            value = (float(value),) * self.size
        if not isinstance(value, (list, tuple)) or len(value) != self.size:
            raise ValueError(f"{value!r} is not a colour of {self.size} components")
        out = []
        for c in value:
            if isinstance(c, bool) or not isinstance(c, (int, float)) or not math.isfinite(c):
                raise ValueError(f"{value!r} has a component that is not a finite number")
            self._check_range(float(c))
            out.append(float(c))
        return tuple(out)

    def to_json(self, value: tuple) -> list:
        return list(value)

    def interpolate(self, a: tuple, b: tuple, t: float) -> tuple:
        return tuple(x + (y - x) * t for x, y in zip(a, b))


class String(KnobSpec):
    kind = "string"

    def __init__(self, name: str, default: str = "", **kw: Any) -> None:
        super().__init__(name, default, **kw)

    def validate(self, value: Any) -> str:
        if not isinstance(value, str):
            raise ValueError(f"{value!r} is not text")
        return value


class File(String):
    """A file path; relative paths resolve against the project's folder (``Node.path``).

    ``pattern`` filters the file picker (``"*.exr *.mp4"``); ``sequence`` says frame patterns
    (``####``, ``%04d``) are expected.
    """

    kind = "file"

    def __init__(self, name: str, default: str = "", *, pattern: str = "*", sequence: bool = False,
                 save: bool = False, **kw: Any) -> None:
        self.pattern, self.sequence, self.save = pattern, sequence, save
        super().__init__(name, default, **kw)


_RANGE_RE = re.compile(r"^\s*(-?\d+)\s*(?:-\s*(-?\d+)\s*(?:x\s*(\d+))?)?\s*$")


def parse_frame_range(spec: str | int | Sequence[int]) -> list[int]:
    """Nuke's frame-range syntax: ``"1-100"``, ``"1-100x2"``, ``"1,5,10-20"``, ``"7"`` -> frames in order.

    Raises ValueError naming the part that does not parse.
    """
    if isinstance(spec, int) and not isinstance(spec, bool):
        return [spec]
    if isinstance(spec, (list, tuple)):
        return [int(f) for f in spec]
    frames: list[int] = []
    for part in str(spec).replace(" ", ",").split(","):
        if not part:
            continue
        m = _RANGE_RE.match(part)
        if not m:
            raise ValueError(f"frame range part {part!r} is not N, A-B or A-BxS")
        first = int(m.group(1))
        last = int(m.group(2)) if m.group(2) is not None else first
        step = int(m.group(3) or 1)
        if last < first or step < 1:
            raise ValueError(f"frame range part {part!r} runs backwards or has a zero step")
        frames.extend(range(first, last + 1, step))
    if not frames:
        raise ValueError(f"frame range {spec!r} holds no frames")
    return frames


class FrameRange(String):
    """A frame range in Nuke's syntax, stored as text (``"1001-1100"``); empty means the project's range."""

    kind = "framerange"

    def validate(self, value: Any) -> str:
        value = super().validate(value)
        if value.strip():
            parse_frame_range(value)
        return value


class Strokes(KnobSpec):
    """Painted brush strokes, stored in a face track's aligned space so they follow the face.

    Each stroke: ``{"track_id": int, "points": [[u, v], ...] in crop unit coords, "radius": float,
    "hardness": 0..1, "opacity": 0..1, "mode": "add" | "erase", "frames": None | {"from": N} | {"only": N}}``.
    """

    kind = "strokes"

    def __init__(self, name: str, default: Sequence[dict] = (), **kw: Any) -> None:
        super().__init__(name, list(default), **kw)

    def validate(self, value: Any) -> list[dict]:
        if not isinstance(value, (list, tuple)):
            raise ValueError(f"strokes must be a list, got {type(value).__name__}")
        out = []
        for i, stroke in enumerate(value):
            if not isinstance(stroke, dict):
                raise ValueError(f"stroke {i} is not a mapping")
            pts = stroke.get("points")
            if not isinstance(pts, (list, tuple)) or not pts or any(len(p) != 2 for p in pts):
                raise ValueError(f"stroke {i} needs a non-empty list of [u, v] points")
            s = {
                "track_id": int(stroke.get("track_id", 0)),
                "points": [[float(p[0]), float(p[1])] for p in pts],
                "radius": float(stroke.get("radius", 0.02)),
                "hardness": float(stroke.get("hardness", 0.5)),
                "opacity": float(stroke.get("opacity", 1.0)),
                "mode": stroke.get("mode", "add"),
                "frames": stroke.get("frames"),
            }
            if s["mode"] not in ("add", "erase"):
                raise ValueError(f"stroke {i} mode {s['mode']!r} is not add or erase")
            if not (s["radius"] > 0 and 0 <= s["hardness"] <= 1 and 0 <= s["opacity"] <= 1):
                raise ValueError(f"stroke {i} needs radius > 0 and hardness, opacity in [0, 1]")
            frames = s["frames"]
            if frames is not None and not (isinstance(frames, dict) and len(frames) == 1
                                           and next(iter(frames)) in ("from", "only")):
                raise ValueError(f"stroke {i} frames must be None, {{'from': N}} or {{'only': N}}")
            if frames is not None:
                s["frames"] = {k: int(v) for k, v in frames.items()}
            out.append(s)
        return out


class Data(KnobSpec):
    """JSON-able data a node owns (an analysis result); no widget, saved with the project.

    ``check``, when given, is called with a value other than None and raises a ``DoublureError`` (see
    :mod:`doublure.engine.fields`) naming the field that is wrong: a project file holds what the node
    reads here, so it is checked like every other field read from a file.
    """

    kind = "data"

    def __init__(self, name: str, default: Any = None, *, check: Callable[[Any], None] | None = None,
                 **kw: Any) -> None:
        kw.setdefault("hidden", True)
        self.check = check
        super().__init__(name, default, **kw)

    def validate(self, value: Any) -> Any:
        import json

        try:
            value = json.loads(json.dumps(value, allow_nan=False))
        except (TypeError, ValueError) as exc:
            raise ValueError(f"data is not JSON-able: {exc}") from None
        if value is not None and self.check is not None:
            try:
                self.check(value)
            except DoublureError as exc:
                raise ValueError(str(exc)) from None
        return value


@dataclasses.dataclass
class Key:
    frame: float
    value: Any
    interp: str = "smooth"


class Knob:
    """One node's value of a knob: a constant, or keyframes interpolated per segment.

    A segment takes the interpolation of its left key: ``linear``, ``constant`` (step), or ``smooth``
    (cubic Hermite with Catmull-Rom tangents, flat at the first and last key, as Nuke's smooth keys).
    """

    # slots: a node's compute reads its knobs after the pass of the node before it, from cold memory
    __slots__ = ("spec", "node", "_value", "_keys")

    def __init__(self, spec: KnobSpec, node: Any) -> None:
        self.spec = spec
        self.node = node
        self._value = copy.deepcopy(spec.default)
        self._keys: list[Key] = []

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def is_animated(self) -> bool:
        return bool(self._keys)

    @property
    def keys(self) -> list[Key]:
        return list(self._keys)

    def key_frames(self) -> list[float]:
        return [k.frame for k in self._keys]

    def value_at(self, frame: float) -> Any:
        keys = self._keys
        if not keys:
            return self._value
        frames = [k.frame for k in keys]
        i = bisect.bisect_right(frames, frame)
        if i == 0:
            return keys[0].value
        if i == len(keys):
            return keys[-1].value
        k0, k1 = keys[i - 1], keys[i]
        t = (frame - k0.frame) / (k1.frame - k0.frame)
        if k0.interp == "constant":
            return k0.value
        if k0.interp == "linear":
            return self.spec.interpolate(k0.value, k1.value, t)
        return self._hermite(i - 1, t)

    def _tangent(self, i: int) -> Any:
        keys = self._keys
        if i == 0 or i == len(keys) - 1:
            return None  # flat
        a, b = keys[i - 1], keys[i + 1]
        span = b.frame - a.frame
        if isinstance(a.value, tuple):
            return tuple((y - x) / span for x, y in zip(a.value, b.value))
        return (b.value - a.value) / span

    def _hermite(self, i: int, t: float) -> Any:
        k0, k1 = self._keys[i], self._keys[i + 1]
        dt = k1.frame - k0.frame
        m0, m1 = self._tangent(i), self._tangent(i + 1)
        h00, h10 = 2 * t**3 - 3 * t**2 + 1, t**3 - 2 * t**2 + t
        h01, h11 = -2 * t**3 + 3 * t**2, t**3 - t**2

        def blend(p0: float, p1: float, d0: float | None, d1: float | None) -> float:
            return h00 * p0 + h10 * dt * (d0 or 0.0) + h01 * p1 + h11 * dt * (d1 or 0.0)

        if isinstance(k0.value, tuple):
            n = len(k0.value)
            d0 = m0 if m0 is not None else (None,) * n
            d1 = m1 if m1 is not None else (None,) * n
            return tuple(blend(a, b, c, d) for a, b, c, d in zip(k0.value, k1.value, d0, d1))
        value = blend(k0.value, k1.value, m0, m1)
        return int(round(value)) if isinstance(self.spec, Int) else value

    # -- state, used by the undo commands and the project file --------------------------------------
    def state(self) -> tuple[Any, list[Key]]:
        return copy.deepcopy(self._value), [dataclasses.replace(k) for k in self._keys]

    def restore(self, state: tuple[Any, list[Key]]) -> None:
        value, keys = state
        self._value = copy.deepcopy(value)
        self._keys = [dataclasses.replace(k) for k in keys]

    def checked(self, value: Any) -> Any:
        """The validated value, or a KnobError naming node, knob and value."""
        try:
            return self.spec.validate(value)
        except (ValueError, TypeError) as exc:
            raise KnobError(f"{self.node.name}.{self.name}: bad value {value!r}: {exc}") from None

    def state_with_value(self, value: Any) -> tuple[Any, list[Key]]:
        return self.checked(value), []

    def state_with_key(self, frame: float, value: Any, interp: str = "smooth") -> tuple[Any, list[Key]]:
        if not self.spec.animatable:
            raise KnobError(f"{self.node.name}.{self.name}: a {self.spec.kind} knob cannot be animated")
        if interp not in INTERPOLATIONS:
            raise KnobError(f"{self.node.name}.{self.name}: interpolation {interp!r} is not one of "
                            f"{', '.join(INTERPOLATIONS)}")
        if isinstance(frame, bool) or not isinstance(frame, (int, float)) or not abs(frame) <= MAX_KEY_FRAME:
            raise KnobError(f"{self.node.name}.{self.name}: a key at frame {frame!r} (keys lie within "
                            f"+-{MAX_KEY_FRAME:g})")
        value = self.checked(value)
        keys = [k for k in self._keys if k.frame != frame]
        bisect.insort(keys, Key(float(frame), value, interp), key=lambda k: k.frame)
        return self._value, keys

    def state_without_key(self, frame: float) -> tuple[Any, list[Key]]:
        keys = [k for k in self._keys if k.frame != frame]
        if len(keys) == len(self._keys):
            raise KnobError(f"{self.node.name}.{self.name}: no key at frame {frame}")
        # Removing the last key leaves the knob at the value it had there.
        value = self._keys[0].value if not keys else self._value
        return value, keys

    def is_default(self) -> bool:
        return not self._keys and self._value == self.spec.default

    def to_json(self) -> Any:
        if self._keys:
            return {"keys": [[k.frame if k.frame != int(k.frame) else int(k.frame),
                              self.spec.to_json(k.value), k.interp] for k in self._keys]}
        return self.spec.to_json(self._value)

    def state_from_json(self, data: Any) -> tuple[Any, list[Key]]:
        """The state a project stores (a value, or ``{"keys": [[frame, value, interp], ...]}``), checked:
        a bad value, frame (not finite, beyond the project frame limit, twice) or interpolation raises a
        KnobError naming node, knob and key."""
        if isinstance(data, dict) and set(data) == {"keys"} and self.spec.animatable:
            where = f"{self.node.name}.{self.name} keys"
            keys: dict[float, Key] = {}
            try:
                for i, entry in enumerate(fields.sequence(data["keys"], where)):
                    frame, value, interp = fields.sequence(entry, fields.at(where, i), length=3)
                    frame = fields.number(frame, fields.at(where, i), -MAX_KEY_FRAME, MAX_KEY_FRAME)
                    interp = fields.text(interp, fields.at(where, i), INTERPOLATIONS)
                    if frame in keys:
                        raise fields.FieldError(f"{where}: two keys at frame {frame:g}")
                    keys[frame] = Key(frame, self.checked(self.spec.from_json(value)), interp)
            except fields.FieldError as exc:
                raise KnobError(str(exc)) from None
            return self.spec.default, sorted(keys.values(), key=lambda k: k.frame)
        return self.checked(self.spec.from_json(data)), []

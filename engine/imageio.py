"""Image files through OpenImageIO: read, atomic write, frame-sequence patterns and detection.

Pixels cross this module as numpy float32 arrays shaped (H, W, C), channel order as in the file (R, G, B, A).
Metadata crosses as a dict with the engine's key style: ``doublure/...`` keys (provenance, graph, frame)
are stored as ``doublure:...`` header attributes (OIIO's namespace style) and, because DPX, TIFF and JPEG
drop unknown attributes, also as one JSON object in the ``ImageDescription`` header (DPX: its user data
block, since its description field holds 32 characters).
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import OpenImageIO as oiio
import torch

from .atomic import atomic_path
from .errors import MediaError
from .sizes import FrameTooLarge, check_frame_size

IMAGE_EXTENSIONS = {".exr", ".dpx", ".tif", ".tiff", ".png", ".jpg", ".jpeg", ".hdr", ".tga", ".bmp", ".cin"}
# file_type knob value -> (extension, OIIO format name)
FILE_TYPES = {"exr": ".exr", "dpx": ".dpx", "tiff": ".tif", "png": ".png", "jpeg": ".jpg"}
# datatype knob value -> OIIO pixel type and bits per sample stored in the file
DATATYPES = {"half": ("half", 16), "float": ("float", 32), "8 bit": ("uint8", 8), "10 bit": ("uint16", 10),
             "12 bit": ("uint16", 12), "16 bit": ("uint16", 16)}
SUPPORTED_DATATYPES = {
    "exr": ("half", "float"),
    "dpx": ("10 bit", "12 bit", "16 bit", "8 bit"),
    "tiff": ("16 bit", "8 bit", "float"),
    "png": ("8 bit", "16 bit"),
    "jpeg": ("8 bit",),
}
EXR_COMPRESSIONS = ("zip", "zips", "piz", "dwaa", "dwab", "pxr24", "b44", "rle", "none")
DOUBLURE_PREFIX = "doublure/"
_DESCRIPTION_KEY = "doublure"  # the ImageDescription JSON object holding the doublure/ metadata


@dataclasses.dataclass
class ImageFile:
    """A decoded image file.

    Attributes:
        pixels: (H, W, C) float32 of the display window (pixels outside the file's data window are 0).
        channels: channel names, e.g. ("R", "G", "B", "A").
        metadata: header attributes (str keys; ``doublure/...`` keys decoded from JSON where they were JSON).
        bits: bits per sample stored in the file (8, 10, 16, 32) and ``float_data`` whether it was float.
    """

    pixels: np.ndarray
    channels: tuple[str, ...]
    metadata: dict[str, Any]
    pixel_aspect: float
    bits: int
    float_data: bool


def _frame_label(frame: int | None) -> str:
    return "" if frame is None else f" (frame {frame})"


def read_image(path: str | os.PathLike, frame: int | None = None) -> ImageFile:
    """Read every channel of the first subimage as float32.

    Args:
        path: the image file.
        frame: only used to name the frame in error messages.

    Raises:
        MediaError: the file is missing, not an image OIIO can read, corrupt or truncated.
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise MediaError(f"missing image file {path}{_frame_label(frame)}")
    inp = oiio.ImageInput.open(path)
    if inp is None:
        raise MediaError(f"cannot read {path}{_frame_label(frame)}: {oiio.geterror().strip() or 'unknown format'}")
    try:
        spec = inp.spec()
        try:  # the header's sizes, before the pixels are asked for (a 22 kB file may declare 30000x30000)
            check_frame_size(f"{path}{_frame_label(frame)}", spec.nchannels, max(spec.height, spec.full_height),
                             max(spec.width, spec.full_width), copies=2 if spec.full_width != spec.width or
                             spec.full_height != spec.height else 1)
        except FrameTooLarge as exc:
            raise MediaError(str(exc)) from None
        pixels = inp.read_image(0, 0, 0, spec.nchannels, "float")
        if pixels is None or inp.has_error:
            raise MediaError(f"corrupt or truncated image {path}{_frame_label(frame)}: "
                             f"{inp.geterror().strip() or 'read failed'}")
    finally:
        inp.close()
    pixels = np.asarray(pixels, dtype=np.float32).reshape(spec.height, spec.width, spec.nchannels)
    pixels = _to_display_window(pixels, spec)
    bits = int(spec.get_int_attribute("oiio:BitsPerSample", 0)) or spec.format.size() * 8
    return ImageFile(
        pixels=pixels,
        channels=tuple(spec.channelnames),
        metadata=_metadata_from_spec(spec),
        pixel_aspect=float(spec.get_float_attribute("PixelAspectRatio", 1.0)) or 1.0,
        bits=bits,
        float_data=spec.format.basetype in (oiio.HALF, oiio.FLOAT, oiio.DOUBLE),
    )


def read_header(path: str | os.PathLike) -> dict[str, Any] | None:
    """The header metadata of an image file, pixels not read (as ``read_image`` gives it); None when the file
    is missing or does not open."""
    inp = oiio.ImageInput.open(os.fspath(path)) if os.path.exists(path) else None
    if inp is None:
        return None
    try:
        return _metadata_from_spec(inp.spec())
    finally:
        inp.close()


def _to_display_window(pixels: np.ndarray, spec: oiio.ImageSpec) -> np.ndarray:
    """Place the data window's pixels in the display window (EXR files may differ; others never do)."""
    if (spec.x, spec.y, spec.width, spec.height) == (spec.full_x, spec.full_y, spec.full_width, spec.full_height):
        return np.ascontiguousarray(pixels)
    full = np.zeros((spec.full_height, spec.full_width, spec.nchannels), np.float32)
    x0, y0 = spec.x - spec.full_x, spec.y - spec.full_y
    sx0, sy0 = max(0, -x0), max(0, -y0)
    dx0, dy0 = max(0, x0), max(0, y0)
    w = min(spec.width - sx0, spec.full_width - dx0)
    h = min(spec.height - sy0, spec.full_height - dy0)
    if w > 0 and h > 0:
        full[dy0:dy0 + h, dx0:dx0 + w] = pixels[sy0:sy0 + h, sx0:sx0 + w]
    return full


def _metadata_from_spec(spec: oiio.ImageSpec) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for attr in spec.extra_attribs:
        try:
            value = attr.value
        except UnicodeDecodeError:  # a header string that is not UTF-8: not ours to read; the pixels are
            continue
        if isinstance(value, (str, int, float)):
            meta[attr.name] = value
        elif isinstance(value, tuple) and all(isinstance(v, (int, float)) for v in value):
            meta[attr.name] = list(value)
    doublure: dict[str, Any] = {}
    user_data = spec.getattribute("dpx:UserData")
    for blob in (meta.get("ImageDescription"),
                 bytes(np.asarray(user_data, np.uint8)).decode("utf-8", "replace") if user_data is not None else None):
        if isinstance(blob, str) and blob.startswith("{"):
            try:
                doublure.update(json.loads(blob).get(_DESCRIPTION_KEY, {}))
            except (ValueError, AttributeError):
                pass
    for name in list(meta):
        if name.startswith("doublure:"):
            doublure[DOUBLURE_PREFIX + name[len("doublure:"):]] = _decode_json(meta.pop(name))
    meta.update(doublure)
    return meta


def _decode_json(value: Any) -> Any:
    """Undo ``_metadata_into_spec``'s JSON for values a header attribute cannot hold (bools, lists, dicts)."""
    if isinstance(value, str) and (value[:1] in "{[" or value in ("true", "false", "null")):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def write_image(path: str | os.PathLike, pixels: np.ndarray, channels: tuple[str, ...] | None = None,
                file_type: str | None = None, datatype: str | None = None, compression: str | None = None,
                metadata: dict[str, Any] | None = None) -> None:
    """Write pixels atomically: to a temporary name in the same folder, then renamed over ``path``.

    Args:
        pixels: (H, W, C) float32 (other dtypes are converted; float16 is kept for a half file). Integer
            file types clamp to [0, 1].
        channels: channel names; default R, G, B(, A).
        file_type: "exr", "dpx", "tiff", "png" or "jpeg"; default from the extension.
        datatype: "half", "float", "8 bit", "10 bit", "12 bit", "16 bit"; default the type's first choice.
        compression: EXR: one of EXR_COMPRESSIONS (optionally "dwaa:45" with a level); TIFF: "zip", "lzw",
            "none"; ignored elsewhere.
        metadata: written into the header: ``doublure/...`` keys as ``doublure:...`` attributes (dicts and
            lists as JSON) plus a JSON copy in ImageDescription; other str/int/float values as attributes.

    Raises:
        MediaError: the folder cannot be written or OIIO refuses the file (the target is left untouched).
    """
    path = os.fspath(path)
    file_type = file_type or file_type_for(path)
    if file_type not in SUPPORTED_DATATYPES:
        raise MediaError(f"cannot write {path}: unsupported file type {file_type!r}")
    datatype = datatype or SUPPORTED_DATATYPES[file_type][0]
    if datatype not in SUPPORTED_DATATYPES[file_type]:
        raise MediaError(f"cannot write {path}: {file_type} does not take datatype {datatype!r} "
                         f"(use {', '.join(SUPPORTED_DATATYPES[file_type])})")
    half_given = datatype == "half" and pixels.dtype == np.float16  # already rounded: written as it is
    pixels = np.ascontiguousarray(pixels, dtype=np.float16 if half_given else np.float32)
    if pixels.ndim == 2:
        pixels = pixels[:, :, None]
    height, width, nchannels = pixels.shape
    if file_type == "jpeg" and nchannels > 3:  # JPEG has no alpha
        pixels, nchannels = np.ascontiguousarray(pixels[:, :, :3]), 3
    pixel_type, bits = DATATYPES[datatype]
    spec = oiio.ImageSpec(width, height, nchannels, pixel_type)
    spec.channelnames = tuple(channels or ("R", "G", "B", "A", *(f"C{i}" for i in range(4, nchannels)))[:nchannels])
    if nchannels == 4 or (channels and "A" in channels):
        spec.alpha_channel = spec.channelnames.index("A") if "A" in spec.channelnames else -1
    if pixel_type == "uint16" and bits != 16:
        spec.attribute("oiio:BitsPerSample", bits)
        pixels = _quantise_uint16(pixels, bits)
    elif pixel_type == "half" and not half_given:
        # OIIO's float -> half conversion costs more than the zip compression of a 1080p frame; torch's
        # rounds the same way (to nearest even, bit for bit) several times faster.
        pixels = torch.from_numpy(pixels).half().numpy()
    if file_type == "exr":
        spec.attribute("compression", compression or "zip")
    elif file_type == "tiff" and compression:
        spec.attribute("compression", compression)
    _metadata_into_spec(spec, metadata or {}, file_type)

    try:
        with atomic_path(path, suffix=FILE_TYPES[file_type]) as tmp:  # OIIO picks the writer by suffix
            out = oiio.ImageOutput.create(tmp)
            if out is None or not out.open(tmp, spec):
                raise MediaError(f"cannot write {path}: {(out.geterror() if out else oiio.geterror()).strip()}")
            ok = out.write_image(pixels)
            ok = out.close() and ok
            if not ok:
                raise MediaError(f"cannot write {path}: {out.geterror().strip() or 'write failed'}")
    except OSError as exc:
        raise MediaError(f"cannot write {path}: {exc.strerror or exc}") from None


def _quantise_uint16(pixels: np.ndarray, bits: int) -> np.ndarray:
    """Round to ``bits`` (10 or 12) code values, stored in uint16 by bit replication.

    OIIO's writers narrow uint16 to 10/12 bits by dropping low bits, which would floor instead of round;
    replicating the top bits into the low ones makes any narrowing land on the rounded code value.
    """
    code = np.round(np.clip(pixels, 0.0, 1.0) * ((1 << bits) - 1)).astype(np.uint16)
    shift = 16 - bits
    return (code << shift) | (code >> (bits - shift))


def _metadata_into_spec(spec: oiio.ImageSpec, metadata: dict[str, Any], file_type: str) -> None:
    doublure = {k[len(DOUBLURE_PREFIX):]: v for k, v in metadata.items() if k.startswith(DOUBLURE_PREFIX)}
    for key, value in metadata.items():
        if key.startswith(DOUBLURE_PREFIX):
            name = "doublure:" + key[len(DOUBLURE_PREFIX):]
            spec.attribute(name, value if isinstance(value, (str, int, float)) and not isinstance(value, bool)
                           else json.dumps(value, sort_keys=True))
        elif isinstance(value, str) and key != "ImageDescription":
            spec.attribute(key, value)
    if doublure:
        blob = json.dumps({_DESCRIPTION_KEY: {DOUBLURE_PREFIX + k: v for k, v in doublure.items()}}, sort_keys=True)
        if file_type == "dpx":
            data = np.frombuffer(blob.encode(), np.uint8)
            spec.attribute("dpx:UserData", oiio.TypeDesc(f"uint8[{len(data)}]"), data)
        else:
            spec.attribute("ImageDescription", blob)


def file_type_for(path: str | os.PathLike) -> str:
    """The file_type knob value for a file name's extension ("exr", "tiff", ...)."""
    ext = os.path.splitext(os.fspath(path))[1].lower()
    for file_type, type_ext in FILE_TYPES.items():
        if ext == type_ext:
            return file_type
    return {".tiff": "tiff", ".jpeg": "jpeg"}.get(ext, ext.lstrip("."))


def is_complete_image(path: str | os.PathLike) -> bool:
    """True if the file opens and all its pixels decode (a resumed render can skip it)."""
    try:
        read_image(path)
    except MediaError:
        return False
    return True


# --------------------------------------------------------------------------------------------------------
# Frame sequences

_HASHES = re.compile(r"#+")
_PRINTF = re.compile(r"%(0?)(\d*)d")


def is_sequence_pattern(pattern: str | os.PathLike) -> bool:
    """True if the name holds a frame placeholder: ``####``, ``#`` or ``%04d``."""
    name = os.path.basename(os.fspath(pattern))
    return bool(_HASHES.search(name) or _PRINTF.search(name))


def frame_path(pattern: str | os.PathLike, frame: int) -> str:
    """The file of one frame: ``plate.####.exr`` and ``plate.%04d.exr`` -> ``plate.0012.exr``;
    ``plate.#.exr`` -> ``plate.12.exr`` (a single # means no padding). A name without a placeholder is
    returned unchanged (a still)."""
    pattern = os.fspath(pattern)
    folder, name = os.path.split(pattern)

    def hashes(m: re.Match) -> str:
        width = len(m.group(0))
        return _format_frame(frame, 0 if width == 1 else width)

    def printf(m: re.Match) -> str:
        return _format_frame(frame, int(m.group(2) or 0))

    if _HASHES.search(name):
        name = _HASHES.sub(hashes, name, count=1)
    else:
        name = _PRINTF.sub(printf, name, count=1)
    return os.path.join(folder, name) if folder else name


def _format_frame(frame: int, width: int) -> str:
    if frame < 0:
        return "-" + str(-frame).zfill(max(0, width - 1))
    return str(frame).zfill(width)


@dataclasses.dataclass(frozen=True)
class Sequence:
    """Frames found on disk for one pattern: ``pattern`` uses ``#`` (``####`` for 4-digit padding)."""

    pattern: str
    first: int
    last: int
    frames: tuple[int, ...]

    @property
    def missing(self) -> tuple[int, ...]:
        present = set(self.frames)
        return tuple(f for f in range(self.first, self.last + 1) if f not in present)


_NUMBERED = re.compile(r"^(?P<head>.*?)(?P<digits>\d+)(?P<tail>\.[A-Za-z0-9]+)$")


def detect_sequences(folder: str | os.PathLike, extensions=IMAGE_EXTENSIONS) -> list[Sequence]:
    """Group numbered image files in a folder into sequences (for the file picker).

    Zero-padded numbers (``0012``) give ``name.####.ext`` with the padding's width, and so do numbers that
    all have the same number of digits (``1001``-``1100``); unpadded numbers of varying length give
    ``name.#.ext``. Hidden files (temporaries of an unfinished write) are ignored.
    """
    numbered: dict[tuple[str, str], list[str]] = {}
    for entry in sorted(Path(folder).iterdir()):
        if not entry.is_file() or entry.suffix.lower() not in extensions or entry.name.startswith("."):
            continue
        m = _NUMBERED.match(entry.name)
        if m:
            numbered.setdefault((m.group("head"), m.group("tail")), []).append(m.group("digits"))
    result = []
    for (head, tail), all_digits in sorted(numbered.items()):
        by_width: dict[int, set[int]] = {}
        padded = {len(d) for d in all_digits if d.startswith("0") and len(d) > 1}
        lengths = {len(d) for d in all_digits}
        for d in all_digits:
            if d.startswith("0") and len(d) > 1:
                width = len(d)
            elif len(padded) == 1 and len(d) >= next(iter(padded)):
                width = next(iter(padded))  # 1000 in a #### sequence that starts at 0998
            elif not padded and len(lengths) == 1 and len(d) > 1:
                width = len(d)
            else:
                width = 0
            by_width.setdefault(width, set()).add(int(d))
        for width, frames in sorted(by_width.items()):
            ordered = tuple(sorted(frames))
            placeholder = "#" * width if width else "#"
            result.append(Sequence(os.path.join(os.fspath(folder), f"{head}{placeholder}{tail}"),
                                   ordered[0], ordered[-1], ordered))
    return result

"""Colour management: OpenColorIO with a built-in ACES config pinned by name.

The config is OCIO's built-in *studio* config (ACES 1.3, OCIO 2.4 profile): the CG config's colour spaces
plus the camera log encodings (ARRI LogC3/4, RED Log3G10, Sony S-Log3, V-Log...) that plates arrive in.
Pinning it by name means every machine on the farm converts identically without a config file to ship;
``config_cache_id()`` enters every hash that depends on a conversion.

Conversions:
- numpy arrays (H, W, C) and CPU tensors (C, H, W) go through OCIO's CPU processor on the buffer itself
  (no copy; 1080p RGB takes about 40 ms on one core).
- GPU tensors go through the same processor re-expressed as torch ops: OCIO's optimised processor is a short
  list of matrices and transfer curves for every scene-referred conversion in the config, and each of those
  has a closed form below. A processor holding anything else (the ACES output transforms' fixed functions,
  1D LUTs) is applied on the host by OCIO instead, so results never depend on a guessed approximation.
"""
from __future__ import annotations

import functools
import math
import threading
from typing import Callable

import cv2
import numpy as np
import PyOpenColorIO as OCIO
import torch

from . import knobs as K
from .device import upload
from .errors import DoublureError

CONFIG_NAME = "ocio://studio-config-v2.2.0_aces-v1.3_ocio-v2.4"
DEFAULT_WORKING_SPACE = "ACEScg"
DEFAULT_DISPLAY = "sRGB - Display"
DEFAULT_VIEW = "ACES 1.0 - SDR Video"

# Short names users type (Nuke habits) -> config colour space names. Config names and the config's own
# aliases ("lin_rec709", "srgb_tx", "ACES - ACEScg"...) are accepted as well.
USER_ALIASES = {
    "srgb": "sRGB Encoded Rec.709 (sRGB)",
    "linear": "Linear Rec.709 (sRGB)",
    "rec709": "Camera Rec.709",
    "gamma2.2": "Gamma 2.2 Encoded Rec.709",
    "gamma2.4": "Gamma 2.4 Encoded Rec.709",
    "raw": "Raw",
}


@functools.lru_cache(maxsize=1)
def config() -> OCIO.Config:
    """The pinned OCIO config (loaded once)."""
    return OCIO.Config.CreateFromFile(CONFIG_NAME)


def config_cache_id() -> str:
    """An identity of the colour config for cache keys: the pinned name plus OCIO's own cache id."""
    return f"{CONFIG_NAME}|{config().getCacheID()}"


def colorspace_choices() -> tuple[str, ...]:
    """Names offered in colourspace knobs: the short aliases first, then every scene/display space."""
    return tuple(USER_ALIASES) + tuple(cs.getName() for cs in config().getColorSpaces())


@functools.lru_cache(maxsize=256)
def resolve_colorspace(name: str) -> str:
    """The config's colour space name for a user-typed name or alias.

    Raises:
        DoublureError: the name is neither a short alias nor a colour space (or alias) of the config.
    """
    key = str(name).strip()
    canonical = USER_ALIASES.get(key.lower())
    if canonical is not None:
        return canonical
    cs = config().getColorSpace(key)
    if cs is None:
        raise DoublureError(
            f"unknown colourspace {name!r}; use one of {', '.join(USER_ALIASES)} or a name of {CONFIG_NAME}"
        )
    return cs.getName()


class ColorspaceKnob(K.Enum):
    """An Enum knob of colour spaces that also accepts what users type: any case of the short aliases
    ("sRGB", "Linear", "raw") and the config's own aliases, stored as the choice they name.

    ``extra`` choices come first (e.g. "default": by file type, decided by the node).
    """

    def __init__(self, name: str = "colorspace", default: str = "default", extra: tuple[str, ...] = ("default",),
                 **kw) -> None:
        super().__init__(name, tuple(extra) + colorspace_choices(), default=default, **kw)

    def validate(self, value):
        if isinstance(value, str) and value not in self.choices:
            lowered = value.strip().lower()
            if lowered in USER_ALIASES:
                return lowered
            try:
                value = resolve_colorspace(value)
            except DoublureError:
                pass
        return super().validate(value)


def is_scene_linear(name: str) -> bool:
    """True when the colour space holds scene-linear light (its OCIO encoding says so)."""
    if is_raw(name):
        return False
    return config().getColorSpace(resolve_colorspace(name)).getEncoding() == "scene-linear"


def is_raw(name: str) -> bool:
    """True for the data-only space: no conversion happens to or from it."""
    return resolve_colorspace(name) == "Raw"


# --------------------------------------------------------------------------------------------------------
# Processors


class _Conversion:
    """One cached OCIO conversion: the CPU processor and, when expressible, the same ops in torch."""

    def __init__(self, processor: OCIO.Processor) -> None:
        self.is_noop = processor.isNoOp()
        self.cpu = processor.getDefaultCPUProcessor()
        group = processor.getOptimizedProcessor(OCIO.OPTIMIZATION_DEFAULT).createGroupTransform()
        self.torch_ops = _torch_ops(group)
        # Only 3x3 matrices (no offsets): commutes with premultiplication.
        self.is_matrix = self.torch_ops is not None and all(
            isinstance(t, OCIO.MatrixTransform) and not any(t.getOffset()) for t in group)
        # A conversion of the form "curves per channel, then 3x3 matrices" (what an sRGB or gamma-encoded
        # plate into a linear working space is): the curves' part as its own processor, for code-value
        # tables (``codes_to_planes``), and the matrices composed into one.
        transforms = list(group)
        split = next((i for i, t in enumerate(transforms) if not isinstance(t, _PER_CHANNEL)), len(transforms))
        tail = [_matrix_and_offset(t) for t in transforms[split:]]
        if all(m is not None and not m[1].any() for m in tail):
            curves = OCIO.GroupTransform()
            for t in transforms[:split]:
                curves.appendTransform(t)
            self.curves_cpu = config().getProcessor(curves).getDefaultCPUProcessor()
            matrix = np.eye(3)
            for m, _ in tail:
                matrix = m @ matrix
            self.matrix = torch.tensor(matrix, dtype=torch.float32)  # rgb_out = matrix @ curves(rgb_in)
        else:
            self.curves_cpu = self.matrix = None


# OCIO transforms that act on each channel alone (a code-value table can stand for them).
_PER_CHANNEL = (OCIO.ExponentWithLinearTransform, OCIO.ExponentTransform, OCIO.LogTransform,
                OCIO.LogAffineTransform, OCIO.LogCameraTransform, OCIO.RangeTransform, OCIO.Lut1DTransform)


_conversions: dict[tuple, _Conversion] = {}
_conversions_lock = threading.Lock()


def _conversion(src: str, dst: str) -> _Conversion:
    key = ("cs", resolve_colorspace(src), resolve_colorspace(dst))
    return _cached(key, lambda: config().getProcessor(key[1], key[2]))


def _display_conversion(src: str, display: str, view: str) -> _Conversion:
    key = ("display", resolve_colorspace(src), display, view)

    def build() -> OCIO.Processor:
        cfg = config()
        if display not in cfg.getDisplays():
            raise DoublureError(f"unknown display {display!r}; the config has {', '.join(cfg.getDisplays())}")
        if view not in cfg.getViews(display):
            raise DoublureError(f"unknown view {view!r} for {display!r}; it has {', '.join(cfg.getViews(display))}")
        return cfg.getProcessor(key[1], display, view, OCIO.TRANSFORM_DIR_FORWARD)

    return _cached(key, build)


def _cached(key: tuple, build: Callable[[], OCIO.Processor]) -> _Conversion:
    conv = _conversions.get(key)
    if conv is None:
        conv = _Conversion(build())
        with _conversions_lock:
            conv = _conversions.setdefault(key, conv)
    return conv


# --------------------------------------------------------------------------------------------------------
# Public conversions


def convert(pixels, src: str, dst: str, inplace: bool = False):
    """Convert colour planes from colourspace ``src`` to ``dst``; alpha and extra planes are untouched.

    Args:
        pixels: numpy float32 array shaped (H, W, C), or torch tensor shaped (C, H, W), C >= 3 (only the
            first three planes are converted). Any device; float16 tensors are converted in float32.
        src, dst: colour space names or aliases (see ``resolve_colorspace``). "raw" on either side: no-op.
        inplace: write into ``pixels`` (it must then be float32 and, for numpy, C-contiguous).

    Returns:
        The converted pixels, same type, shape, dtype and device as the input.
    """
    if isinstance(pixels, torch.Tensor):
        return _convert_tensor(pixels, _conversion(src, dst), inplace)
    if is_raw(src) or is_raw(dst):
        return pixels
    return _convert_numpy(pixels, _conversion(src, dst), inplace)


def convert_premultiplied(pixels, src: str, dst: str, alpha_index: int | None, inplace: bool = False):
    """Convert premultiplied pixels: unpremultiply, convert the colour, premultiply again.

    A transfer curve applied to premultiplied values would darken semi-transparent edges; a conversion
    that is only a matrix commutes with the alpha multiply, so it is applied directly. Where alpha is 0 the
    colour is converted as it is (emission-only pixels).

    Args:
        pixels: numpy (H, W, C) or torch (C, H, W), colour in planes 0-2 (see ``convert``).
        alpha_index: the alpha plane's index, or None for opaque images.
        inplace: may write into ``pixels``.

    Returns:
        The converted pixels, same type and shape.
    """
    conv = _conversion(src, dst)
    if conv.is_noop:
        return pixels
    if alpha_index is None or conv.is_matrix:
        return convert(pixels, src, dst, inplace=inplace)
    if isinstance(pixels, torch.Tensor):
        out = pixels if inplace else pixels.clone()
        rgb, alpha = out[:3], out[alpha_index:alpha_index + 1]
        covered = alpha > 0
        rgb.copy_(torch.where(covered, rgb / torch.where(covered, alpha, 1.0), rgb))
        out = convert(out, src, dst, inplace=True)
        out[:3] = torch.where(covered, out[:3] * alpha, out[:3])
        return out
    out = pixels if inplace else pixels.astype(np.float32, copy=True)
    alpha = out[..., alpha_index:alpha_index + 1]
    covered = alpha > 0
    np.divide(out[..., :3], alpha, out=out[..., :3], where=covered)
    convert(out, src, dst, inplace=True)
    np.multiply(out[..., :3], alpha, out=out[..., :3], where=covered)
    return out


def codes_to_planes(codes: np.ndarray, scale: float, src: str, dst: str,
                    device: torch.device | None = None) -> torch.Tensor:
    """Integer code values of an opaque RGB image (decoded video) to converted float planes.

    Where the conversion is per-channel curves followed by a 3x3 matrix (an sRGB or Rec.709 plate into a
    linear working space), each code's curve value comes from a table OCIO fills once per code (256 or 65536
    entries), and the matrix is one ``torch.mm`` into the (3, H, W) result: the same values OCIO gives for
    the frame within float32 rounding of the matrix (the test holds it to 1e-6), at a fraction of the cost
    of converting every pixel. Other conversions (or curves that differ per channel) take the general path
    (``convert``).

    Args:
        codes: (H, W, 3) uint8 or uint16 code values.
        scale: the float32 factor taking codes to [0, 1] (1/255, 1/65535).
        src, dst: colour space names or aliases.
        device: where the planes are made (default the CPU). On a GPU the codes travel (a quarter or half of
            the float planes' bytes) and the table lookup and the matrix run there, where on the host they
            would cost more than decoding the frame.

    Returns:
        (3, H, W) float32 tensor in ``dst`` on ``device``.
    """
    h, w, _ = codes.shape
    conv = _conversion(src, dst)
    table = None
    if conv.matrix is not None and not (is_raw(src) or is_raw(dst)):
        table = _code_table(conv, np.iinfo(codes.dtype).max + 1, float(scale))
    device = device or torch.device("cpu")
    if table is None:
        planes = torch.empty((3, h, w), dtype=torch.float32)
        planes.copy_(torch.from_numpy(codes).permute(2, 0, 1)).mul_(float(scale))
        return upload(convert(planes, src, dst, inplace=True), device)
    if device.type != "cpu":
        return _table_planes_on(codes, conv, float(scale), device)
    if codes.dtype == np.uint8:
        # OpenCV's table lookup and 3x3 transform both keep the interleaved layout (their vectorised paths;
        # half the time at 1080p of torch.mm reading the pixels transposed), and one copy de-interleaves
        mixed = cv2.transform(cv2.LUT(codes, table), conv.matrix.numpy())
        return torch.empty((3, h, w), dtype=torch.float32).copy_(torch.from_numpy(mixed).permute(2, 0, 1))
    curved = torch.from_numpy(np.take(table, codes.transpose(2, 0, 1)))  # (3, H, W): the gather also de-interleaves
    return torch.mm(conv.matrix, curved.view(3, h * w)).view(3, h, w)


@functools.lru_cache(maxsize=32)
def _code_table(conv: _Conversion, size: int, scale: float) -> np.ndarray | None:
    """(size,) float32: the conversion's per-channel curves at code * scale, one table for R, G and B; None
    when the curves differ per channel (then the caller converts every pixel)."""
    ramp = (np.arange(size, dtype=np.float32) * np.float32(scale))[:, None].repeat(3, axis=1)[None].copy()
    conv.curves_cpu.apply(OCIO.PackedImageDesc(ramp, size, 1, 3))
    if not (np.array_equal(ramp[0, :, 0], ramp[0, :, 1]) and np.array_equal(ramp[0, :, 0], ramp[0, :, 2])):
        return None
    return np.ascontiguousarray(ramp[0, :, 0])


def _table_planes_on(codes: np.ndarray, conv: _Conversion, scale: float, device: torch.device) -> torch.Tensor:
    """``codes_to_planes`` on ``device``: the (H, W, 3) codes copied there, looked up in the conversion's
    code table and mixed by its matrix into (3, H, W) float32 planes."""
    table, matrix = _code_table_on(conv, np.iinfo(codes.dtype).max + 1, scale, device)
    there = upload(torch.from_numpy(codes), device).permute(2, 0, 1).long()
    return torch.einsum("ij,jhw->ihw", matrix, table[there])


@functools.lru_cache(maxsize=32)
def _code_table_on(conv: _Conversion, size: int, scale: float,
                   device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``_code_table`` (size,) and the conversion's (3, 3) matrix, copied once to ``device``."""
    return torch.from_numpy(_code_table(conv, size, scale)).to(device), conv.matrix.to(device)


def display_transform(tensor: torch.Tensor, display: str = DEFAULT_DISPLAY, view: str = DEFAULT_VIEW,
                      src: str = DEFAULT_WORKING_SPACE) -> torch.Tensor:
    """Scene-linear pixels to display code values for the viewer (e.g. sRGB display, ACES SDR view).

    Args:
        tensor: (C, H, W), C >= 3, in colourspace ``src``; any device.
        display, view: an OCIO display and one of its views.

    Returns:
        (C, H, W) display-referred values (nominally 0..1), same dtype and device; alpha untouched.
    """
    return _convert_tensor(tensor, _display_conversion(src, display, view), inplace=False)


def _convert_numpy(pixels: np.ndarray, conv: _Conversion, inplace: bool) -> np.ndarray:
    if conv.is_noop:
        return pixels
    if pixels.ndim != 3 or pixels.shape[2] < 3:
        raise ValueError(f"expected pixels shaped (H, W, C>=3), got {pixels.shape}")
    if inplace:
        if pixels.dtype != np.float32 or not pixels.flags.c_contiguous:
            raise ValueError("in-place conversion needs a C-contiguous float32 array")
        out = pixels
    else:
        out = np.array(pixels, dtype=np.float32, order="C", copy=True)
    h, w, c = out.shape
    conv.cpu.apply(OCIO.PackedImageDesc(out, w, h, c))
    return out


def _convert_tensor(tensor: torch.Tensor, conv: _Conversion, inplace: bool) -> torch.Tensor:
    if tensor.dim() != 3 or tensor.shape[0] < 3:
        raise ValueError(f"expected a tensor shaped (C>=3, H, W), got {tuple(tensor.shape)}")
    if conv.is_noop:
        return tensor
    if tensor.device.type == "cpu" and conv.is_matrix and not inplace:
        # One matrix product writes the result where OCIO would first need a copy to convert in place (the
        # same float32 values: the test compares them with OCIO's).
        out = torch.empty(tensor.shape, dtype=torch.float32)
        torch.mm(conv.matrix, tensor[:3].float().reshape(3, -1), out=out[:3].view(3, -1))
        out[3:] = tensor[3:]
        return out.to(tensor.dtype)
    if tensor.device.type != "cpu" and conv.torch_ops is not None:
        rgb = tensor[:3].float()
        for op in conv.torch_ops:
            rgb = op(rgb)
        if inplace:
            tensor[:3] = rgb.to(tensor.dtype)
            return tensor
        return torch.cat([rgb.to(tensor.dtype), tensor[3:]], dim=0)
    # OCIO's CPU processor works on planar float32 buffers in place.
    if tensor.device.type == "cpu" and tensor.dtype == torch.float32 and tensor.is_contiguous():
        host = tensor if inplace else tensor.clone()
    else:
        host = tensor.detach().to("cpu", torch.float32).contiguous()
    planes = host.numpy()
    _, h, w = planes.shape
    conv.cpu.apply(OCIO.PlanarImageDesc(planes[0], planes[1], planes[2], w, h))
    if host.device == tensor.device and host.dtype == tensor.dtype:
        return host
    result = host.to(tensor.device, tensor.dtype)
    if inplace:
        tensor.copy_(result)
        return tensor
    return result


# --------------------------------------------------------------------------------------------------------
# OCIO transforms as torch ops on (3, H, W) float32. Formulas from the OCIO 2 transform reference.

TorchOp = Callable[[torch.Tensor], torch.Tensor]


def _torch_ops(group: OCIO.GroupTransform) -> list[TorchOp] | None:
    """The group's transforms as torch ops, or None when one of them has no closed form here."""
    ops: list[TorchOp] = []
    for t in group:
        op = _torch_op(t)
        if op is None:
            return None
        ops.append(op)
    return ops


class _Constant:
    """A constant of a colour op, copied once to each device it meets. A copy per call would wait for the GPU
    each time (a copy from pageable host memory synchronises the stream), several times per conversion."""

    __slots__ = ("_copies",)

    def __init__(self, tensor: torch.Tensor) -> None:
        self._copies = {tensor.device: tensor}

    def to(self, device: torch.device) -> torch.Tensor:
        copy = self._copies.get(device)
        if copy is None:
            copy = self._copies.setdefault(device, next(iter(self._copies.values())).to(device))
        return copy


def _vec(values, n: int = 3) -> _Constant:
    return _Constant(torch.tensor([float(v) for v in list(values)[:n]], dtype=torch.float32).view(n, 1, 1))


def _forward(t) -> bool:
    return t.getDirection() == OCIO.TRANSFORM_DIR_FORWARD


def _torch_op(t) -> TorchOp | None:
    if isinstance(t, OCIO.MatrixTransform):
        return _matrix_op(t)
    if isinstance(t, OCIO.ExponentWithLinearTransform):
        return _moncurve_op(t)
    if isinstance(t, OCIO.ExponentTransform):
        return _exponent_op(t)
    if isinstance(t, OCIO.LogCameraTransform):
        return _log_camera_op(t)
    if isinstance(t, OCIO.LogAffineTransform):
        return _log_affine_op(t)
    if isinstance(t, OCIO.LogTransform):
        return _log_affine_op(t)
    if isinstance(t, OCIO.RangeTransform):
        return _range_op(t)
    return None


def _matrix_and_offset(t) -> tuple[np.ndarray, np.ndarray] | None:
    """A MatrixTransform as (3x3 matrix, 3 offsets) in float64, direction applied; None for anything else
    (another transform, or a matrix that touches alpha)."""
    if not isinstance(t, OCIO.MatrixTransform):
        return None
    m = np.array(t.getMatrix(), dtype=np.float64).reshape(4, 4)
    offset = np.array(t.getOffset(), dtype=np.float64)
    if not np.allclose(m[3], [0, 0, 0, 1]) or not np.allclose(m[:3, 3], 0) or offset[3] != 0:
        return None  # touches alpha: not a colour-plane matrix
    if not _forward(t):
        m3 = np.linalg.inv(m[:3, :3])
        return m3, -m3 @ offset[:3]
    return m[:3, :3], offset[:3]


def _matrix_op(t: OCIO.MatrixTransform) -> TorchOp | None:
    found = _matrix_and_offset(t)
    if found is None:
        return None
    m3, off = found
    mat = _Constant(torch.tensor(m3, dtype=torch.float32))
    off_t = _vec(off)

    def apply(x: torch.Tensor) -> torch.Tensor:
        y = torch.einsum("ij,jhw->ihw", mat.to(x.device), x)
        return y + off_t.to(x.device) if off.any() else y

    return apply


def _moncurve_op(t: OCIO.ExponentWithLinearTransform) -> TorchOp | None:
    if t.getNegativeStyle() != OCIO.NEGATIVE_LINEAR:
        return None
    gamma = np.array(t.getGamma()[:3], dtype=np.float64)
    offset = np.array(t.getOffset()[:3], dtype=np.float64)
    # Encoded value e, linear value l: l = ((e + o) / (1 + o))^g above the break e_b = o / (g - 1), and a
    # line through the origin below it with the slope that makes the curve continuous.
    e_break = offset / (gamma - 1.0)
    l_break = ((e_break + offset) / (1.0 + offset)) ** gamma
    slope = l_break / e_break  # l = e * slope below the break
    g, o, eb, lb, s = (_vec(v) for v in (gamma, offset, e_break, l_break, slope))

    if _forward(t):
        def apply(x: torch.Tensor) -> torch.Tensor:
            d = x.device
            curve = ((x.clamp_min(0) + o.to(d)) / (1 + o.to(d))) ** g.to(d)
            return torch.where(x > eb.to(d), curve, x * s.to(d))
    else:
        def apply(x: torch.Tensor) -> torch.Tensor:
            d = x.device
            curve = (1 + o.to(d)) * x.clamp_min(0) ** (1 / g.to(d)) - o.to(d)
            return torch.where(x > lb.to(d), curve, x / s.to(d))
    return apply


def _exponent_op(t: OCIO.ExponentTransform) -> TorchOp | None:
    style = t.getNegativeStyle()
    gamma = np.array(t.getValue()[:3], dtype=np.float64)
    if not _forward(t):
        gamma = 1.0 / gamma
    g = _vec(gamma)

    def apply(x: torch.Tensor) -> torch.Tensor:
        gd = g.to(x.device)
        if style == OCIO.NEGATIVE_CLAMP:
            return x.clamp_min(0) ** gd
        if style == OCIO.NEGATIVE_MIRROR:
            return torch.sign(x) * x.abs() ** gd
        if style == OCIO.NEGATIVE_PASS_THRU:
            return torch.where(x < 0, x, x.clamp_min(0) ** gd)
        raise AssertionError(style)

    if style not in (OCIO.NEGATIVE_CLAMP, OCIO.NEGATIVE_MIRROR, OCIO.NEGATIVE_PASS_THRU):
        return None
    return apply


def _log_affine_op(t) -> TorchOp:
    """LogAffine (and plain Log): log = logSlope * log_base(linSlope * lin + linOffset) + logOffset."""
    base = float(t.getBase())
    if isinstance(t, OCIO.LogAffineTransform):
        log_slope, log_offset = _vec(t.getLogSideSlopeValue()), _vec(t.getLogSideOffsetValue())
        lin_slope, lin_offset = _vec(t.getLinSideSlopeValue()), _vec(t.getLinSideOffsetValue())
    else:
        log_slope, log_offset, lin_slope, lin_offset = _vec([1] * 3), _vec([0] * 3), _vec([1] * 3), _vec([0] * 3)
    tiny = float(np.finfo(np.float32).tiny)  # OCIO clamps the log's argument to the smallest normal float
    ln_base = math.log(base)

    if _forward(t):
        def apply(x: torch.Tensor) -> torch.Tensor:
            d = x.device
            arg = (lin_slope.to(d) * x + lin_offset.to(d)).clamp_min(tiny)
            return log_slope.to(d) * (torch.log(arg) / ln_base) + log_offset.to(d)
    else:
        def apply(x: torch.Tensor) -> torch.Tensor:
            d = x.device
            lin = torch.exp((x - log_offset.to(d)) / log_slope.to(d) * ln_base)
            return (lin - lin_offset.to(d)) / lin_slope.to(d)
    return apply


def _log_camera_op(t: OCIO.LogCameraTransform) -> TorchOp:
    """LogAffine above ``linSideBreak`` and a line below it, continuous in value and (by default) slope."""
    base = float(t.getBase())
    ln_base = math.log(base)
    log_slope = np.array(t.getLogSideSlopeValue(), dtype=np.float64)
    log_offset = np.array(t.getLogSideOffsetValue(), dtype=np.float64)
    lin_slope = np.array(t.getLinSideSlopeValue(), dtype=np.float64)
    lin_offset = np.array(t.getLinSideOffsetValue(), dtype=np.float64)
    lin_break = np.array(t.getLinSideBreakValue(), dtype=np.float64)
    log_break = log_slope * np.log(lin_slope * lin_break + lin_offset) / ln_base + log_offset
    if t.isLinearSlopeValueSet():
        linear_slope = np.array(t.getLinearSlopeValue(), dtype=np.float64)
    else:  # the derivative of the log side at the break
        linear_slope = log_slope * lin_slope / ((lin_slope * lin_break + lin_offset) * ln_base)
    linear_offset = log_break - linear_slope * lin_break
    ls, lo, ns, no, nb, lb, ms, mo = (
        _vec(v) for v in (log_slope, log_offset, lin_slope, lin_offset, lin_break, log_break,
                          linear_slope, linear_offset))

    if _forward(t):
        def apply(x: torch.Tensor) -> torch.Tensor:
            d = x.device
            arg = (ns.to(d) * x + no.to(d)).clamp_min(float(np.finfo(np.float32).tiny))
            log_side = ls.to(d) * (torch.log(arg) / ln_base) + lo.to(d)
            return torch.where(x > nb.to(d), log_side, ms.to(d) * x + mo.to(d))
    else:
        def apply(x: torch.Tensor) -> torch.Tensor:
            d = x.device
            lin_side = (torch.exp((x - lo.to(d)) / ls.to(d) * ln_base) - no.to(d)) / ns.to(d)
            return torch.where(x > lb.to(d), lin_side, (x - mo.to(d)) / ms.to(d))
    return apply


def _range_op(t: OCIO.RangeTransform) -> TorchOp | None:
    if t.getStyle() != OCIO.RANGE_CLAMP:
        return None
    lo_in = t.getMinInValue() if t.hasMinInValue() else None
    hi_in = t.getMaxInValue() if t.hasMaxInValue() else None
    lo_out = t.getMinOutValue() if t.hasMinOutValue() else None
    hi_out = t.getMaxOutValue() if t.hasMaxOutValue() else None
    if not _forward(t):
        lo_in, hi_in, lo_out, hi_out = lo_out, hi_out, lo_in, hi_in
    if (lo_in is None) != (lo_out is None) or (hi_in is None) != (hi_out is None):
        return None
    if lo_in is not None and hi_in is not None:
        scale = (hi_out - lo_out) / (hi_in - lo_in)
        offset = lo_out - scale * lo_in
    elif lo_in is not None:
        scale, offset = 1.0, lo_out - lo_in
    elif hi_in is not None:
        scale, offset = 1.0, hi_out - hi_in
    else:
        return lambda x: x

    def apply(x: torch.Tensor) -> torch.Tensor:
        y = x * scale + offset
        if lo_out is not None:
            y = y.clamp_min(lo_out)
        if hi_out is not None:
            y = y.clamp_max(hi_out)
        return y

    return apply

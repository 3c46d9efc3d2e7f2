"""Colour spaces of the finishing maths: the working space's matrix to CIE XYZ (D65) and its luminance row,
CIE 1976 L*a*b* and Oklab (Ottosson 2020), checked against colour-science in the tests. The engine's colour
module converts between OCIO colour spaces; the OCIO config holds neither Lab nor Oklab, so they live here.

Every function takes colour-first tensors shaped (3, *): an image (3, H, W) or samples (3, N).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from doublure.engine import colour as engine_colour

SPACES = ("lab", "oklab", "rgb")
XYZ_D65_SPACE = "CIE XYZ-D65 - Scene-referred"

# CIE 1931 2 degree D65 white, Y = 1, from its chromaticity (0.3127, 0.3290) as colour-science defines it.
_D65_XY = (0.3127, 0.3290)
D65_WHITE_XYZ = (_D65_XY[0] / _D65_XY[1], 1.0, (1.0 - _D65_XY[0] - _D65_XY[1]) / _D65_XY[1])

# Oklab (Ottosson 2020): XYZ D65 -> LMS, then cube root, then LMS' -> Lab.
_OKLAB_M1 = (
    (0.8189330101, 0.3618667424, -0.1288597137),
    (0.0329845436, 0.9293118715, 0.0361456387),
    (0.0482003018, 0.2643662691, 0.6338517070),
)
_OKLAB_M2 = (
    (0.2104542553, 0.7936177850, -0.0040720468),
    (1.9779984951, -2.4285922050, 0.4505937099),
    (0.0259040371, 0.7827717662, -0.8086757660),
)
# their inverses, once: a 3x3 inverse per call is microseconds alone but waits on numpy's BLAS threads
# (milliseconds) while torch's own threads are busy
_OKLAB_M1_INV = np.linalg.inv(np.asarray(_OKLAB_M1))
_OKLAB_M2_INV = np.linalg.inv(np.asarray(_OKLAB_M2))

_LAB_EPSILON = (6.0 / 29.0) ** 3
_LAB_SLOPE = 1.0 / (3.0 * (6.0 / 29.0) ** 2)


@functools.lru_cache(maxsize=16)
def working_to_xyz_matrix(working_space: str) -> np.ndarray:
    """The 3x3 matrix from a scene-linear working space to CIE XYZ (D65 white), from the OCIO config.

    Args:
        working_space: an OCIO colour space name or alias (``ctx.working_space``), e.g. ``"ACEScg"``.

    Returns:
        (3, 3) float64 M with xyz = M @ rgb.
    """
    basis = np.eye(3, dtype=np.float32).reshape(3, 1, 3).copy()
    xyz = engine_colour.convert(basis, working_space, XYZ_D65_SPACE)
    return xyz.reshape(3, 3).T.astype(np.float64)


def luma_weights(working_space: str, device=None) -> torch.Tensor:
    """(3,) the luminance (Y) row of the working space's RGB -> XYZ matrix: one tensor per device, shared
    (read it, never write it), since a copy to a GPU from pageable memory waits for its stream each time."""
    return _luma_weights(working_space, torch.device(device or "cpu"))


@functools.lru_cache(maxsize=32)
def _luma_weights(working_space: str, device: torch.device) -> torch.Tensor:
    return torch.tensor(working_to_xyz_matrix(working_space)[1], dtype=torch.float32, device=device)


def _apply_matrix(m: torch.Tensor | np.ndarray | tuple, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, torch.Tensor):
        m = m.to(dtype=x.dtype, device=x.device)
    else:
        m = _matrix_on(np.asarray(m, dtype=np.float64).tobytes(), x.dtype, x.device)
    return (m @ x.reshape(3, -1)).reshape(x.shape)


@functools.lru_cache(maxsize=64)
def _matrix_on(matrix_bytes: bytes, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A constant (3, 3) float64 matrix (its bytes) as ``dtype`` on ``device``, copied there once: on a GPU
    a copy per call waited for the stream, about 13 times a frame in the demo graph."""
    return torch.from_numpy(np.frombuffer(matrix_bytes, dtype=np.float64).reshape(3, 3).copy()).to(device, dtype)


def xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65, Y of white = 1) to CIE 1976 L*a*b*.

    The CIE function's linear toe is used below (6/29)^3 and continued for negative values, so the map is
    defined and invertible for any scene-linear value (wide-gamut working spaces hold negatives).

    Args:
        xyz: (3, *) tensor.

    Returns:
        (3, *) L*, a*, b* (L* = 100 at Y = 1).
    """
    white = torch.tensor(D65_WHITE_XYZ, dtype=xyz.dtype, device=xyz.device).view(3, *([1] * (xyz.dim() - 1)))
    t = xyz / white
    f = torch.where(t > _LAB_EPSILON, t.clamp_min(_LAB_EPSILON).pow(1.0 / 3.0), t * _LAB_SLOPE + 4.0 / 29.0)
    return torch.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`xyz_to_lab`.

    Args:
        lab: (3, *) L*, a*, b*.

    Returns:
        (3, *) CIE XYZ, D65 white at Y = 1.
    """
    fy = (lab[0] + 16.0) / 116.0
    f = torch.stack([fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0])
    edge = 6.0 / 29.0
    t = torch.where(f > edge, f.pow(3), (f - 4.0 / 29.0) / _LAB_SLOPE)
    white = torch.tensor(D65_WHITE_XYZ, dtype=lab.dtype, device=lab.device).view(3, *([1] * (lab.dim() - 1)))
    return t * white


def xyz_to_oklab(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65) to Oklab (Ottosson 2020). Signed cube root, so negatives stay invertible.

    Args:
        xyz: (3, *) tensor.

    Returns:
        (3, *) L, a, b (L = 1 at Y = 1 white).
    """
    lms = _apply_matrix(_OKLAB_M1, xyz)
    return _apply_matrix(_OKLAB_M2, torch.sign(lms) * lms.abs().pow(1.0 / 3.0))


def oklab_to_xyz(oklab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`xyz_to_oklab`.

    Args:
        oklab: (3, *) tensor.

    Returns:
        (3, *) CIE XYZ, D65.
    """
    lms_ = _apply_matrix(_OKLAB_M2_INV, oklab)
    return _apply_matrix(_OKLAB_M1_INV, lms_.pow(3))


def to_match_space(rgb: torch.Tensor, space: str, rgb_to_xyz: np.ndarray) -> torch.Tensor:
    """Scene-linear working-space RGB to the space statistics are matched in.

    Args:
        rgb: (3, *) working-space values.
        space: one of ``SPACES``.
        rgb_to_xyz: (3, 3) from :func:`working_to_xyz_matrix`.

    Returns:
        (3, *) values in ``space``.
    """
    if space == "rgb":
        return rgb
    xyz = _apply_matrix(rgb_to_xyz, rgb)
    return xyz_to_lab(xyz) if space == "lab" else xyz_to_oklab(xyz)


def from_match_space(values: torch.Tensor, space: str, rgb_to_xyz: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`to_match_space`. Shapes (3, *) -> (3, *)."""
    if space == "rgb":
        return values
    xyz = lab_to_xyz(values) if space == "lab" else oklab_to_xyz(values)
    return _apply_matrix(_inverse(np.asarray(rgb_to_xyz, dtype=np.float64).tobytes()), xyz)


@functools.lru_cache(maxsize=8)
def _inverse(matrix_bytes: bytes) -> np.ndarray:
    """The inverse of a (3, 3) float64 matrix given as its bytes (a working space's RGB -> XYZ)."""
    return np.linalg.inv(np.frombuffer(matrix_bytes, dtype=np.float64).reshape(3, 3))


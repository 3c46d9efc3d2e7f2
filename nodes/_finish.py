"""Helpers shared by the finishing nodes (ColorMatch, ShadowMatch, EyeFix, Grain): the face region a node
acts in, the final limit-and-mix, luminance weights and face-space sampling. Not a node module (the leading
underscore keeps ``doublure.nodes`` from importing it as one)."""
from __future__ import annotations

import functools
import hashlib
from typing import Sequence

import numpy as np
import torch

from doublure.engine import DoublureError, Image
from doublure.engine import colour as engine_colour
from doublure.faces.face import Face
from doublure.faces.masks import render_mask


XYZ_D65_SPACE = "CIE XYZ-D65 - Scene-referred"

# The region a finishing node changes: the face hull grown a little, feathered, in face widths.
REGION_GROW = 0.02
REGION_FEATHER = 0.03


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
    """(3,) the luminance (Y) row of the working space's RGB -> XYZ matrix."""
    return torch.tensor(working_to_xyz_matrix(working_space)[1], dtype=torch.float32, device=device)


def face_width(face: Face) -> float:
    """A face's size in plate pixels: the landmarks' bounding-box width (never below 1)."""
    return max(1.0, float(face.width))


def swap_region(faces: Sequence[Face], hw: tuple[int, int], device) -> torch.Tensor:
    """Where the swap replaced the plate: each face's hull grown by REGION_GROW and feathered by
    REGION_FEATHER face widths (the union over faces).

    Returns:
        (1, H, W) float32 in [0, 1] on ``device``.
    """
    out = torch.zeros(1, *hw, device=device)
    for face in faces:
        w = face_width(face)
        m = render_mask([face], "face_hull", hw, grow=REGION_GROW * w, feather=REGION_FEATHER * w, device=device)
        out = torch.maximum(out, m)
    return out


def bbox_of(mask: torch.Tensor, margin: float, hw: tuple[int, int]) -> tuple[int, int, int, int] | None:
    """(y0, y1, x0, x1) of a (1, H, W) mask's non-zero pixels grown by ``margin`` px, clipped; None if empty."""
    nz = torch.nonzero(mask[0] > 0)
    if nz.numel() == 0:
        return None
    m = int(np.ceil(margin))
    y0, x0 = (nz.min(0).values - m).clamp_min(0).tolist()
    y1, x1 = (nz.max(0).values + m + 1).tolist()
    return y0, min(y1, hw[0]), x0, min(x1, hw[1])


def mask_input(img: Image | None, node_name: str, hw: tuple[int, int], device) -> torch.Tensor | None:
    """The optional Mask input as (1, H, W) on ``device``, checked to match the source's size."""
    if img is None:
        return None
    m = img.tensor[:1] if img.channels == ("A",) else (img.alpha() if img.alpha() is not None else img.tensor[:1])
    if tuple(m.shape[-2:]) != tuple(hw):
        raise DoublureError(f"{node_name}: mask input is {m.shape[-1]}x{m.shape[-2]} but the source is "
                            f"{hw[1]}x{hw[0]}")
    return m.to(device=device, dtype=torch.float32).clamp(0, 1)


def blend(src: torch.Tensor, result: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    """``src + (result - src) * weight`` computed in float32, returned in ``src``'s dtype.

    Args:
        src: (C, H, W) the untouched input.
        result: (3, H, W) the node's result for the colour planes.
        weight: (1, H, W) region x mask x mix.

    Returns:
        (C, H, W); planes beyond the first three (alpha) pass through.
    """
    out = src.clone()
    s = src[:3].float()
    out[:3] = (s + (result.float() - s) * weight).to(src.dtype)
    return out


def require_same_size(node_name: str, source: Image, other: Image, port: str) -> None:
    if (other.width, other.height) != (source.width, source.height):
        raise DoublureError(f"{node_name}: {port} input is {other.width}x{other.height} but the source is "
                            f"{source.width}x{source.height}")


def frame_seed(*parts) -> int:
    """A 63-bit seed from the frame number and whatever else must vary the noise (a node's seed knob)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF

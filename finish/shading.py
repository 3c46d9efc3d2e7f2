"""Shading maths of the finishing library (the ShadowMatch node): the swap's low-frequency shading replaced
by the plate's, in scene-linear light where shading multiplies albedo: ``out = swap * (plate_low / swap_low)
** strength``; optionally with hard shadow edges kept by a guided filter steered by the plate's log luminance
(He et al. 2010).
"""
from __future__ import annotations

import math

import torch

from doublure.engine import ops

# Ratios beyond these come from near-black pixels, not from light; clamping keeps noise from exploding.
MAX_GAIN = 16.0
# Guided-filter regularisation in squared log-luminance units: a window whose log contrast has a std well
# above sqrt(0.05) ~ 0.22 (a shadow edge, more than 1.5 stops) counts as an edge; skin detail does not.
SHADOW_EDGE_EPS = 0.05


def luminance(rgb: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
    """Relative luminance Y of scene-linear RGB.

    Args:
        rgb: (3, H, W) working-space values.
        weights: (3,) the Y row of the working space's RGB -> XYZ matrix.

    Returns:
        (1, H, W) luminance.
    """
    return torch.einsum("c,chw->hw", weights.to(rgb.dtype).to(rgb.device), rgb).unsqueeze(0)


def shading_gain(swap: torch.Tensor, plate: torch.Tensor, weight: torch.Tensor, sigma: float, *,
                 preserve_colour: bool, luma_weights: torch.Tensor, sharp_shadows: bool = False,
                 eps: float = 1e-4) -> torch.Tensor:
    """The multiplicative gain that turns the swap's low-frequency shading into the plate's.

    Args:
        swap: (3, H, W) swapped image, scene-linear.
        plate: (3, H, W) plate as it was, scene-linear, same geometry.
        weight: (1, H, W) where shading is measured (the face), in [0, 1].
        sigma: blur standard deviation in pixels.
        preserve_colour: one luminance gain for all channels instead of a per-channel gain.
        luma_weights: (3,) luminance weights of the working space.
        sharp_shadows: refine the gain's edges along the plate's strong luminance edges.
        eps: added to both low layers (scene-linear units) so black does not divide by zero.

    Returns:
        (1, H, W) gain when ``preserve_colour`` else (3, H, W).
    """
    if preserve_colour:
        swap_l, plate_l = luminance(swap, luma_weights), luminance(plate, luma_weights)
    else:
        swap_l, plate_l = swap, plate
    c = swap_l.shape[0]
    if sharp_shadows:
        # A Gaussian low layer smears a hard shadow over a few blur widths. Here both low layers are guided
        # filters of log values over a box of the same variance: the plate's is steered by its own log
        # luminance, so steps far above SHADOW_EDGE_EPS (shadow boundaries) stay sharp while weak features
        # (skin texture, the plate actor's wrinkles) are averaged; the swap's uses no edges at all.
        radius = max(1, int(round(sigma * math.sqrt(3.0))))
        guide = torch.log(luminance(plate, luma_weights).clamp_min(0) + eps)
        plate_low = ops.guided_filter(guide, torch.log(plate_l.clamp_min(0) + eps), radius, SHADOW_EDGE_EPS, weight)
        log_swap = torch.log(swap_l.clamp_min(0) + eps)
        swap_low = ops.guided_filter(log_swap[:1], log_swap, radius, float("inf"), weight)
        log_gain = plate_low - swap_low
    else:
        lows = ops.normalized_blur(torch.cat([swap_l, plate_l]), weight, sigma)
        swap_low, plate_low = lows[:c].clamp_min(0), lows[c:].clamp_min(0)
        log_gain = torch.log(plate_low + eps) - torch.log(swap_low + eps)
    return log_gain.clamp(-math.log(MAX_GAIN), math.log(MAX_GAIN)).exp()


def shadow_match(swap: torch.Tensor, plate: torch.Tensor, weight: torch.Tensor, sigma: float, strength: float,
                 *, preserve_colour: bool, luma_weights: torch.Tensor, sharp_shadows: bool = False) -> torch.Tensor:
    """Replace the swap's low-frequency shading by the plate's: ``swap * gain ** strength``.

    Args:
        swap: (3, H, W) swapped image.
        plate: (3, H, W) plate.
        weight: (1, H, W) face region where shading is measured.
        sigma: blur in pixels.
        strength: 0 returns ``swap`` unchanged, 1 transfers the shading fully; values between blend in the
            log domain (a fraction of an exposure change).
        preserve_colour, luma_weights, sharp_shadows: see :func:`shading_gain`.

    Returns:
        (3, H, W) reshaded swap.
    """
    if strength == 0:
        return swap
    gain = shading_gain(swap, plate, weight, sigma, preserve_colour=preserve_colour, luma_weights=luma_weights,
                        sharp_shadows=sharp_shadows)
    return swap * gain.pow(strength)

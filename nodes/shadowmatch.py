"""ShadowMatch: give the swapped face the plate's low-frequency shading, keep the swap's detail.

Both images are split into a low-frequency layer (a Gaussian average taken inside the face, so the
background does not leak in) and detail. In scene-linear light shading multiplies albedo, so the swap's
shading is replaced by the ratio of the plate's low layer to the swap's: ``out = swap * (plate_low /
swap_low) ** strength``. The blur radius is given in face widths so one setting suits close-ups and wide
shots alike. ``preserve colour`` takes the ratio on luminance only (the swap's hue and saturation stay);
otherwise the ratio is per channel and coloured light (a warm key, a blue fill) transfers too.

A hard shadow crossing the face is smeared by a wide blur; ``sharp_shadows`` refines the log ratio with a
guided filter (He et al. 2010) steered by the plate's log luminance, which restores edges of the plate that
the ratio itself follows (a shadow boundary) while the plate actor's own features, which the smooth ratio
does not follow, stay out.
"""
from __future__ import annotations

import math

import torch

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, register_node
from doublure.engine import knobs as K
from doublure.engine import ops
from doublure.finish.colour import luma_weights

from ._finish import (blend_into, face_width, mask_input, region_mask, require_same_size,
                      swap_region, swap_window)

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


@register_node
class ShadowMatch(Node):
    """Give the swapped face the plate's low-frequency shading (light, shadows), keeping the swap's detail."""

    type_name = "ShadowMatch"
    version = 2
    category = "Finish"
    inputs = (Port("source", "Image"), Port("reference", "Image"), Port("mask", "Mask", optional=True))
    knob_specs = (
        K.Float("radius", default=0.08, min=0.005, max=1.0, soft_max=0.3,
                tooltip="Blur of the shading layer, in face widths: smaller follows finer shading."),
        K.Float("strength", default=1.0, min=0.0, max=2.0, soft_max=1.0),
        K.Bool("preserve_colour", default=True, label="preserve colour",
               tooltip="Transfer brightness only; off also transfers the light's colour."),
        K.Bool("sharp_shadows", default=False, label="sharp shadows",
               tooltip="Keep hard shadow edges that cross the face sharp (edge-aware shading layer)."),
        K.Float("mix", default=1.0, min=0.0, max=1.0),
    )

    def pass_through(self, ctx: EvalContext) -> int | None:
        if self.value("mix", ctx.frame) == 0.0 or self.value("strength", ctx.frame) == 0.0:
            return 0
        return super().pass_through(ctx)

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.working_space)

    def compute(self, ctx: EvalContext, inputs) -> Image:
        src = inputs.get(0)
        if not src.faces:
            return src
        plate_img = inputs.get(1)
        if plate_img is None:
            raise DoublureError(f"{self.name}: connect the plate to the reference input")
        require_same_size(self.name, src, plate_img, "reference")
        hw = (src.height, src.width)
        dev = src.device
        weights = luma_weights(ctx.working_space, dev)
        radius, strength = self.value("radius", ctx.frame), self.value("strength", ctx.frame)
        preserve, sharp = self.value("preserve_colour", ctx.frame), self.value("sharp_shadows", ctx.frame)
        out = src
        mix = float(self.value("mix", ctx.frame))
        limit = mask_input(inputs.get(2), self.name, hw, dev)
        for face in src.faces:
            ctx.check_cancelled()
            sigma = radius * face_width(face)
            window = swap_window(face, hw, extra=3 * sigma)
            y0, y1, x0, x1 = window
            # shading is measured on skin only: the plate's and the swap's eyes, brows and mouth differ in
            # albedo, not in light, and the normalised blur fills them in from the skin around
            skin = region_mask(face, "skin", window, dev)
            # each face measures the swap as it came in (not with an overlapping face's result pasted in)
            swap, plate = src.window(window)[:3].float(), plate_img.window(window)[:3].float().to(dev)
            reshaded = shadow_match(swap, plate, skin, sigma, strength,
                                    preserve_colour=preserve, luma_weights=weights, sharp_shadows=sharp)
            weight = swap_region(face, window, dev) * mix
            if limit is not None:
                weight = weight * limit[:, y0:y1, x0:x1]
            out = blend_into(out, reshaded, weight, window)
        return out

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

from doublure.engine import DoublureError, EvalContext, Image, Port, register_node
from doublure.engine import knobs as K
from doublure.finish.colour import luma_weights
from doublure.finish.shading import shadow_match

from ._finish import (FinishNode, blend_into, face_width, mask_input, region_mask, require_same_size, swap_region,
                      swap_window)


@register_node
class ShadowMatch(FinishNode):
    """Give the swapped face the plate's low-frequency shading (light, shadows), keeping the swap's detail."""

    type_name = "ShadowMatch"
    version = 2
    inputs = (Port("source", "Image"), Port("reference", "Image"), Port("mask", "Mask", optional=True))
    knob_specs = (
        K.Float("radius", default=0.08, min=0.005, max=1.0, soft_max=0.3,
                tooltip="Blur of the shading layer, in face widths: smaller follows finer shading."),
        K.Float("strength", default=1.0, min=0.0, max=2.0, soft_max=1.0),
        K.Bool("preserve_colour", default=True, label="preserve colour",
               tooltip="Transfer brightness only; off also transfers the light's colour."),
        K.Bool("sharp_shadows", default=False, label="sharp shadows",
               tooltip="Keep hard shadow edges that cross the face sharp (edge-aware shading layer)."),
    )

    def changes_nothing(self, ctx: EvalContext) -> bool:
        return self.value("strength", ctx.frame) == 0.0

    def finish(self, ctx: EvalContext, inputs, src: Image) -> Image:
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

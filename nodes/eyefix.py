"""EyeFix: the fix for the swap's "empty gaze". Modes, combinable, applied in this order:

- **iris align**: find each swapped eye's iris (the darkest iris-sized disc inside the eye opening, the same
  estimator on the plate so its bias cancels) and slide the eyeball content so it sits where the plate's
  iris is; the eyelids stay put (the shift fades out across the lid line).
- **sharpen**: unsharp mask on the eye openings (iris texture and lashes go soft in a swap).
- **catchlight**: the plate eye's specular highlights (bright, small, above the iris's local level) are
  added onto the swapped eye, placed at the same offset from the iris centre.
- **plate eyes**: bring back the plate actor's real eyes (gaze, catchlights, wetness) through an eye mask
  built from the eyelid landmarks and the irises, grown and feathered in iris radii, plus the painted
  ``strokes`` (add / erase, stored in face space so they follow the face).
"""
from __future__ import annotations

import numpy as np
import torch

from doublure.engine import DoublureError, EvalContext, Hasher, Image, register_node
from doublure.engine import knobs as K
from doublure.engine import ops
from doublure.engine.device import upload
from doublure.faces.masks import rasterize_shapes
from doublure.faces.paint import render_strokes, stroke_active, stroke_window
from doublure.finish.colour import luma_weights
from doublure.finish.eyes import (catchlight_layer, circle_shapes, eye_opening, find_iris_centre, shift_inside,
                                  unsharp, window_around_eye)

from ._finish import FinishNode, blend_into, mask_input, region_mask, require_same_size


@register_node
class EyeFix(FinishNode):
    """Fix the swap's eyes: plate eyes through a painted eye mask, iris alignment, catchlights, sharpening."""

    type_name = "EyeFix"
    version = 1
    knob_specs = (
        K.Bool("plate_eyes", default=True, label="plate eyes",
               tooltip="Bring back the plate's real eyes through the eye mask (needs the reference input)."),
        K.Float("eye_grow", default=0.2, min=-1.0, max=3.0, soft_max=1.0, label="eye grow",
                tooltip="Grow the eye mask beyond the eyelid line, in iris radii."),
        K.Float("eye_feather", default=0.3, min=0.0, max=3.0, soft_max=1.0, label="eye feather",
                tooltip="Soften the eye mask's edge, in iris radii."),
        K.Strokes("strokes", tooltip="Painted additions to / erasures from the eye mask; they follow the face."),
        K.Bool("iris_align", default=False, label="iris align",
               tooltip="Move the swapped irises onto the plate's iris centres."),
        K.Float("catchlight", default=0.0, min=0.0, max=2.0, soft_max=1.0,
                tooltip="Add the plate eyes' specular highlights onto the swapped eyes."),
        K.Float("sharpen", default=0.0, min=0.0, max=3.0, soft_max=1.0, tooltip="Unsharp-mask the eyes."),
    )

    def changes_nothing(self, ctx: EvalContext) -> bool:
        v = lambda n: self.value(n, ctx.frame)  # noqa: E731
        return not (v("plate_eyes") or v("iris_align") or v("catchlight") > 0 or v("sharpen") > 0)

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.frame)  # strokes may be limited to frames ("only" / "from")

    def _mask_margin(self, face, frame: int) -> tuple[float, float, float]:
        """(grow, feather, window margin) of a face's plate-eyes mask, in pixels."""
        r = float(np.mean(face.iris[:, 2])) or 1.0
        grow, feather = self.value("eye_grow", frame) * r, self.value("eye_feather", frame) * r
        return grow, feather, max(grow, 0.0) + 3 * feather + 2 * r + 2

    def region(self, faces, frame: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
        """The plate rectangle (y0, y1, x0, x1) this node may change at a frame: the union of the eye
        windows and of the windows of the strokes painted onto the mask there (erasures only take away)."""
        windows = []
        for face in faces:
            margin = max(self._mask_margin(face, frame)[2], 2.0 * max(float(face.iris[:, 2].max()), 1.0) + 2)
            windows += [window_around_eye(face, eye, hw, margin) for eye in range(2)]
        by_track = {face.track_id: face for face in faces}
        for stroke in self.value("strokes", frame):
            face = by_track.get(int(stroke["track_id"]))
            if face is not None and stroke_active(stroke, frame) and stroke.get("mode", "add") != "erase":
                y0, y1, x0, x1 = stroke_window(stroke, face, hw)
                if y1 > y0 and x1 > x0:   # a stroke off the plate adds nothing
                    windows.append((y0, y1, x0, x1))
        return (min(w[0] for w in windows), max(w[1] for w in windows),
                min(w[2] for w in windows), max(w[3] for w in windows))

    def eye_mask(self, faces, frame: int, hw: tuple[int, int], device,
                 window: tuple[int, int, int, int] | None = None) -> torch.Tensor:
        """The plate-eyes mask at a frame: eye openings and irises, grown and feathered in iris radii, with
        the painted strokes composited on top.

        Returns:
            (1, H, W), or (1, y1 - y0, x1 - x0) of ``window`` (y0, y1, x0, x1) of the plate.
        """
        wy0, wy1, wx0, wx1 = window or (0, hw[0], 0, hw[1])
        base = torch.zeros(1, wy1 - wy0, wx1 - wx0, device=device)
        for face in faces:
            grow, feather, margin = self._mask_margin(face, frame)
            for eye in range(2):
                eye_window = window_around_eye(face, eye, hw, margin)
                y0, y1, x0, x1 = eye_window
                # the part of the eye's window inside the requested one, in both windows' coordinates
                iy0, iy1, ix0, ix1 = max(y0, wy0), min(y1, wy1), max(x0, wx0), min(x1, wx1)
                if iy1 <= iy0 or ix1 <= ix0:
                    continue
                dst = base[:, iy0 - wy0:iy1 - wy0, ix0 - wx0:ix1 - wx0]
                for region in ("eyes", "irises"):
                    m = region_mask(face, region, eye_window, device, grow=grow, feather=feather)
                    dst.copy_(torch.maximum(dst, m[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0]))
        strokes = self.value("strokes", frame)
        if not any(stroke_active(s, frame) for s in strokes):
            return base
        plate = torch.zeros(1, *hw, device=device)
        plate[:, wy0:wy1, wx0:wx1] = base
        return render_strokes(strokes, faces, frame, hw, base=plate, device=device)[:, wy0:wy1, wx0:wx1]

    def finish(self, ctx: EvalContext, inputs, src: Image) -> Image:
        v = lambda n: self.value(n, ctx.frame)  # noqa: E731
        plate_img = inputs.get(1)
        if plate_img is None and (v("plate_eyes") or v("iris_align") or v("catchlight") > 0):
            raise DoublureError(f"{self.name}: plate eyes, iris align and catchlight need the plate on the "
                                f"reference input (frame {ctx.frame})")
        if plate_img is not None:
            require_same_size(self.name, src, plate_img, "reference")
        hw = (src.height, src.width)
        dev = src.device
        weights = luma_weights(ctx.working_space, dev)
        # Everything happens inside the eyes' region; the rest of the frame stays the source's, shared.
        region = self.region(src.faces, ctx.frame, hw)
        ry0, ry1, rx0, rx1 = region
        result = src.window(region)[:3].float().clone()
        plate = plate_img.window(region)[:3].float().to(dev) if plate_img is not None else None
        changed = []  # windows (y0, y1, x0, x1) of the region where result differs from the source
        for face in src.faces:
            for eye in range(2):
                ctx.check_cancelled()
                changed += self._fix_eye(ctx, face, eye, result, plate, weights, hw, (ry0, rx0))
        if v("plate_eyes"):
            # over the whole region: where the mask is 0 the result keeps its values exactly (r * 1 + p * 0),
            # and no bounding box of the mask has to come back from the device (a wait for it on a GPU)
            w = self.eye_mask(src.faces, ctx.frame, hw, dev, region)
            result.mul_(1 - w).add_(plate * w)
            changed.append((0, ry1 - ry0, 0, rx1 - rx0))
        if not changed:
            return src
        # one blend over the rectangle holding every change
        y0, y1 = min(c[0] for c in changed), max(c[1] for c in changed)
        x0, x1 = min(c[2] for c in changed), max(c[3] for c in changed)
        window = (y0 + ry0, y1 + ry0, x0 + rx0, x1 + rx0)
        weight = torch.full((1, y1 - y0, x1 - x0), float(v("mix")), device=dev)
        limit = mask_input(inputs.get(2), self.name, hw, dev)
        if limit is not None:
            weight = weight * limit[:, window[0]:window[1], window[2]:window[3]]
        return blend_into(src, result[:, y0:y1, x0:x1], weight, window)

    def _fix_eye(self, ctx, face, eye: int, result: torch.Tensor, plate: torch.Tensor | None,
                 weights: torch.Tensor, hw: tuple[int, int], origin: tuple[int, int]) -> list:
        """Iris align, sharpen and catchlight one eye of ``result`` in place; returns the changed window
        as a one-item list (empty when nothing was done).

        ``result`` and ``plate`` hold the plate region whose top-left corner is ``origin`` (y, x); the
        returned window is in the region's coordinates.
        """
        v = lambda n: self.value(n, ctx.frame)  # noqa: E731
        radius = max(float(face.iris[eye, 2]), 1.0)
        y0, y1, x0, x1 = window_around_eye(face, eye, hw, 2.0 * radius + 2)
        if y1 - y0 < 3 or x1 - x0 < 3 or not (v("iris_align") or v("sharpen") > 0 or v("catchlight") > 0):
            return []
        eye_window = (y0, y1, x0, x1)  # on the plate; the landmarks are plate pixels
        opening = upload(eye_opening(face, eye, eye_window), result.device)
        y0, y1, x0, x1 = y0 - origin[0], y1 - origin[0], x0 - origin[1], x1 - origin[1]
        swap = result[:, y0:y1, x0:x1]
        lum = lambda t: torch.einsum("c,chw->hw", weights, t)  # noqa: E731
        shift = (0.0, 0.0)
        swap_centre = plate_centre = None
        if plate is not None and (v("iris_align") or v("catchlight") > 0):
            swap_centre = find_iris_centre(lum(swap), opening, radius)
            plate_centre = find_iris_centre(lum(plate[:, y0:y1, x0:x1]), opening, radius)
        if v("iris_align") and swap_centre and plate_centre:
            shift = (plate_centre[0] - swap_centre[0], plate_centre[1] - swap_centre[1])
            # the eyeball slides under the lids: full shift inside the opening, fading across the lid line
            fade = ops.gaussian_blur(opening[None], max(radius / 4.0, 0.7)).clamp(0, 1)
            swap = shift_inside(swap, fade, *shift)
        if v("sharpen") > 0:
            fade = ops.gaussian_blur(upload(eye_opening(face, eye, eye_window, grow=radius / 3), result.device)[None],
                                     max(radius / 6.0, 0.7))
            swap = swap + (unsharp(swap, max(radius / 8.0, 0.7), v("sharpen")) - swap) * fade
        if v("catchlight") > 0 and plate is not None and swap_centre and plate_centre:
            plate_eye = plate[:, y0:y1, x0:x1]
            iris = rasterize_shapes(*circle_shapes(plate_centre[0], plate_centre[1], radius * 1.2), (y1 - y0, x1 - x0))
            plate_lum = lum(plate_eye)
            white = float(torch.quantile(plate_lum[opening > 0.5], 0.9))
            layer = catchlight_layer(plate_eye, plate_lum, upload(torch.from_numpy(iris), result.device) * opening,
                                     radius, white)
            # place it at the same offset from the swapped iris (already on the plate's when aligned)
            target = plate_centre if v("iris_align") else swap_centre
            move = (target[0] - plate_centre[0], target[1] - plate_centre[1])
            if move != (0.0, 0.0):
                layer = shift_inside(layer, torch.ones_like(opening)[None], *move)
            swap = swap + v("catchlight") * layer
        result[:, y0:y1, x0:x1] = swap
        return [(y0, y1, x0, x1)]

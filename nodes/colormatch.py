"""ColorMatch: match the swapped face's colour to the plate face under it.

The statistics are measured on the skin of both faces (eyes, brows and mouth excluded) and the transfer is
applied to the whole swapped face region. Methods (:mod:`doublure.finish.colour_transfer`, from the papers):
``meanstd`` (Reinhard et al. 2001), ``mkl`` (the linear Monge-Kantorovich map, Pitie and Kokaram 2007), ``sot``
(sliced optimal transport, Rabin et al. 2011) and ``histogram`` (per-channel quantile matching).

Spaces: ``lab`` (CIE 1976 L*a*b*, D65: the working space goes to CIE XYZ D65 through the OCIO config, which
uses a Bradford adaptation; L* of scene-linear white Y=1 is 100), ``oklab`` (Ottosson 2020, from XYZ D65)
and ``rgb`` (the scene-linear working space itself).

Gain: the linear methods (meanstd, mkl) keep their gain along any colour direction within [1 / ``max_gain``,
``max_gain``] (1.5 by default). A plate's skin often varies more than the swap's for reasons that are not light
(glasses rims, stubble, make-up, hard shadows), and matched in full that stretch (up to 3.6 along yellow-blue on
people/d13) pushes the swap's dark features (brows, nostrils) toward purple; the means still match exactly
(bench/RESULTS.md, session 7).

Temporal stability: the statistics of both sides are pooled over +-``window`` frames of the same face track,
so the transfer moves smoothly from frame to frame: a change of the swap's skin in one frame (the mouth
opens, a shadow crosses) changes only those pixels, not the whole face's colour. With ``pool`` set to
``reference`` the swap's statistics are taken on the current frame alone, which also evens out a swap's
frame-to-frame colour flicker, at the price of that whole-face colour change (issue 8: ColorMatch added
~0.1 to the flow-compensated frame-to-frame change that way).
"""
from __future__ import annotations

import numpy as np
import torch

from doublure.engine import EvalContext, Hasher, Image, register_node
from doublure.engine import colour as engine_colour
from doublure.engine import knobs as K
from doublure.engine.cache import Memo
from doublure.engine.device import upload
from doublure.faces.face import MAX_REPEATS
from doublure.finish.colour import SPACES, from_match_space, to_match_space, working_to_xyz_matrix
from doublure.finish.colour_transfer import METHODS, transfer

from ._finish import (FinishNode, blend_into, face_width, face_window, mask_input, region_mask, require_same_size,
                      swap_region, swap_window)

SAMPLES_PER_FRAME = 20000
MAX_POOLED_SAMPLES = 40000
SKIN_ERODE = 0.02  # face widths: keep the skin samples off the mask's edge (hair, eyelids, background)

# (input index, its hash, the source's hash when the faces are borrowed from it, track id, space, working space)
# -> (3, N) samples; shared by neighbouring frames' windows so each frame's skin is sampled once, not 2N + 1
# times.
_sample_memo = Memo(256)


def skin_samples(image: Image, face, space: str, rgb_to_xyz: np.ndarray,
                 count: int = SAMPLES_PER_FRAME) -> torch.Tensor:
    """Colours of a face's skin (eyes, brows and mouth excluded, edge eroded) in the match space.

    Args:
        image: scene-linear working-space pixels (its face window is read, not the whole frame).
        face: the face whose skin is sampled.
        space: one of ``SPACES``.
        rgb_to_xyz: (3, 3) working space -> XYZ D65.
        count: at most this many samples, taken evenly (deterministic).

    Returns:
        (3, N) float32 samples (N may be 0 for a face with no visible skin).
    """
    window = face_window(face, (image.height, image.width), 2)
    # the mask (drawn on the host) and the indices stay on the host: found on a GPU, they would be waited for
    mask = region_mask(face, "skin", window, "cpu", grow=-SKIN_ERODE * face_width(face))[0]
    idx = torch.nonzero(mask.flatten() > 0.99).flatten()
    if idx.numel() > count:
        idx = idx[torch.linspace(0, idx.numel() - 1, count).long()]
    pixels = image.window(window)[:3].float().reshape(3, -1)[:, upload(idx, image.device)]
    return to_match_space(pixels, space, rgb_to_xyz)


@register_node
class ColorMatch(FinishNode):
    """Match the swapped face's colour to the plate face under it (skin statistics, temporally pooled)."""

    type_name = "ColorMatch"
    version = 3
    knob_specs = (
        K.Enum("method", METHODS, default="mkl",
               tooltip="meanstd: Reinhard mean/std; mkl: linear Monge-Kantorovich; sot: sliced optimal "
                       "transport; histogram: per-channel histogram matching."),
        K.Enum("space", SPACES, default="oklab", tooltip="Colour space the statistics are matched in."),
        K.Int("window", default=3, min=0, max=50, soft_max=12, animatable=False,
              tooltip="Pool the skin statistics over +- this many frames of the face track."),
        K.Enum("pool", ("both", "reference"), default="both",
               tooltip="both: pool the swap's skin statistics over the window too, so the colour transfer "
                       "moves smoothly; reference: the swap's are taken from each frame alone, which evens out "
                       "a swap's colour flicker but lets any change of its skin move the whole face's colour."),
        K.Float("max_gain", default=1.5, min=1.0, max=10.0, soft_max=4.0, label="max gain",
                tooltip="meanstd and mkl: the most the transfer may stretch (or 1 / this, shrink) the swap's skin "
                        "colours along any direction. The plate's skin often varies more than the swap's for "
                        "reasons that are not light (glasses, stubble, make-up): matched in full, such a gain "
                        "(up to 3.6 on people/d13) turns the swap's brows and shadows purple."),
    )

    def _window(self, ctx: EvalContext, repeats: int = 0) -> list[int]:
        """The frames pooled for a face that repeats the one ``repeats`` frames earlier (a held plate frame,
        ``Face.repeats``): those around that frame, so the repeated swap is recoloured as it was there."""
        w, centre = self.value("window", ctx.frame), ctx.frame - repeats
        first, last = self.graph.settings["first"], self.graph.settings["last"]
        frames = [f for f in range(centre - w, centre + w + 1) if first <= f <= last]
        return frames or [centre]

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(engine_colour.config_cache_id())
        reach = self._window(ctx, MAX_REPEATS) + self._window(ctx)
        for f in sorted(set(reach)):
            if f != ctx.frame:
                # reference and source pixels at f (the source's faces stand in when the reference has none)
                h.update(f).update(self.input_hash(1, ctx.at(f))).update(self.input_hash(0, ctx.at(f)))

    def _skin_samples(self, ctx: EvalContext, inputs, index: int, frame: int, track_id: int, space: str,
                      rgb_to_xyz: np.ndarray) -> torch.Tensor | None:
        """Skin samples of input ``index`` at ``frame`` for a track (memoised), None without that face there.
        A reference without faces is sampled with the source's faces of that frame."""
        borrowed = self.input_hash(0, ctx.at(frame)) if index == 1 else None
        key = (index, self.input_hash(index, ctx.at(frame)), borrowed, track_id, space, ctx.working_space)
        cached = _sample_memo.get(key)
        if cached is not None:
            return cached.to(ctx.device)
        image = inputs.get(index, frame=frame)
        faces = image.faces or (inputs.get(0, frame=frame).faces if index == 1 else [])
        face = next((f for f in faces if f.track_id == track_id), None)
        if face is None:
            return None
        return _sample_memo.put(key, skin_samples(image, face, space, rgb_to_xyz))

    def _pooled(self, ctx: EvalContext, inputs, index: int, frames: list[int], track_id: int, space: str,
                rgb_to_xyz: np.ndarray, device) -> torch.Tensor | None:
        """(3, N) skin samples of input ``index`` over ``frames`` of a track, evenly thinned to at most
        MAX_POOLED_SAMPLES; None when no frame shows that face's skin."""
        pooled = [s for f in frames if (s := self._skin_samples(ctx, inputs, index, f, track_id, space, rgb_to_xyz))
                  is not None and s.shape[1] > 0]
        if not pooled:
            return None
        samples = torch.cat([s.to(device) for s in pooled], dim=1)
        # evenly thinned: the transforms' cost grows with the sample count, their accuracy barely does
        return samples[:, :: max(1, -(-samples.shape[1] // MAX_POOLED_SAMPLES))]

    def finish(self, ctx: EvalContext, inputs, src: Image) -> Image:
        ref_img = inputs.get(1)
        if ref_img is not None:
            require_same_size(self.name, src, ref_img, "reference")
        hw = (src.height, src.width)
        method, space = self.value("method", ctx.frame), self.value("space", ctx.frame)
        rgb_to_xyz = working_to_xyz_matrix(ctx.working_space)
        out = src
        mix = float(self.value("mix", ctx.frame))
        limit = mask_input(inputs.get(2), self.name, hw, src.device)
        ref_index = 1 if inputs.connected(1) else 0
        for face in src.faces:
            ctx.check_cancelled()
            frames = self._window(ctx, face.repeats)
            ref_samples = self._pooled(ctx, inputs, ref_index, frames, face.track_id, space, rgb_to_xyz, src.device)
            if self.value("pool", ctx.frame) == "both":
                src_samples = self._pooled(ctx, inputs, 0, frames, face.track_id, space, rgb_to_xyz, src.device)
            else:
                src_samples = skin_samples(src, face, space, rgb_to_xyz)
            if src_samples is None or src_samples.shape[1] < 16 or ref_samples is None:
                continue  # no skin visible on one side: leave this face alone
            src_samples = src_samples.to(src.device)
            window = swap_window(face, hw)
            y0, y1, x0, x1 = window
            # each face matches the swap as it came in (not with an overlapping face's result pasted in)
            values = to_match_space(src.window(window)[:3].float(), space, rgb_to_xyz)
            matched = from_match_space(transfer(method, values, src_samples, ref_samples,
                                                max_gain=float(self.value("max_gain", ctx.frame))),
                                       space, rgb_to_xyz)
            weight = swap_region(face, window, src.device) * mix
            if limit is not None:
                weight = weight * limit[:, y0:y1, x0:x1]
            out = blend_into(out, matched, weight, window)
        return out

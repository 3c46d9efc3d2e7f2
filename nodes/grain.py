"""Grain: measure the plate's grain (Analyse), then grow the same grain on the swapped face.

The measurement and the synthesis are :mod:`doublure.finish.grain`: the plate's grain per luminance band, its
spectrum and channel correlation, and how much of it renews each frame; on the face, the renewing part is
seeded by the frame and the rest rides on the face with its track, the way the skin's texture does.
"""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch

from doublure.engine import DoublureError, EvalContext, Hasher, Image, register_node, with_warning
from doublure.engine import knobs as K
from doublure.engine import ops
from doublure.finish.grain import (ANALYSIS_SCHEMA, OLD_SCHEMAS, analyse_grain, check_grain_analysis,
                                   synthesise_face_grain)

from doublure.finish.colour import luma_weights
from ._finish import (FinishNode, blend_into, frame_seed, mask_input, require_same_size, swap_region,
                      swap_window)

# Light degrain: a Gaussian of this sigma (px) removes the finest noise of the swap before new grain goes on.
DEGRAIN_SIGMA = 1.0



@register_node
class Grain(FinishNode):
    """Measure the plate's grain (Analyse) and add matching grain where the swap replaced the plate."""

    type_name = "Grain"
    version = 3
    knob_specs = (
        K.Float("amount", default=1.0, min=0.0, max=4.0, soft_max=2.0, tooltip="Scales the measured grain."),
        K.Float("degrain", default=0.0, min=0.0, max=1.0,
                tooltip="Soften the swap's own fine noise before the new grain goes on."),
        K.Int("seed", default=0, animatable=False,
              tooltip="Varies the grain pattern; the frame always varies its renewing part."),
        K.Enum("renewal_mode", ("measured", "manual"), default="measured", label="renewal mode",
               tooltip="measured: renew as much of the grain each frame as the plate does (Analyse measures "
                       "it) and keep the rest on the face, moving with it; manual: the renewal knob below."),
        K.Float("renewal", default=1.0, min=0.0, max=1.0,
                tooltip="manual renewal mode: the share of the grain that is new each frame. 1: all of it "
                        "(film grain); 0: a fixed pattern that moves with the face."),
        K.FrameRange("analysis_frames", default="", label="analysis frames",
                     tooltip="Frames to measure the grain on (Nuke syntax); empty: the project range."),
        K.Int("analysis_samples", default=5, min=1, max=100, animatable=False, label="analysis samples",
              tooltip="How many frames, spread over the range, the analysis reads."),
        K.Enum("region", ("auto", "box"), default="auto",
               tooltip="auto: flat areas found automatically; box: only inside the box below."),
        K.Float("box_x0", default=0.0, min=0.0, max=1.0, animatable=False, tooltip="Box left, fraction of width."),
        K.Float("box_y0", default=0.0, min=0.0, max=1.0, animatable=False, tooltip="Box top, fraction of height."),
        K.Float("box_x1", default=1.0, min=0.0, max=1.0, animatable=False, tooltip="Box right."),
        K.Float("box_y1", default=1.0, min=0.0, max=1.0, animatable=False, tooltip="Box bottom."),
        K.Data("analysis", default=None, check=check_grain_analysis),
    )
    actions = (("analyse", "Analyse"),)

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.frame)  # the grain pattern is seeded by the frame

    # -- analysis ---------------------------------------------------------------------------------------
    def analysis_frame_list(self, graph) -> list[int]:
        """The frames Analyse reads: ``analysis_samples`` spread evenly over ``analysis_frames``."""
        spec = self.value("analysis_frames", graph.current_frame).strip()
        try:
            frames = K.parse_frame_range(spec) if spec else list(range(graph.settings["first"], graph.settings["last"] + 1))
        except ValueError as exc:
            raise DoublureError(f"{self.name}: knob analysis_frames: {exc}") from None
        n = min(self.value("analysis_samples", graph.current_frame), len(frames))
        return [frames[i] for i in np.linspace(0, len(frames) - 1, n).round().astype(int)]

    def _box_mask(self, hw: tuple[int, int], device) -> torch.Tensor | None:
        if self.value("region") != "box":
            return None
        h, w = hw
        x0, x1 = sorted((self.value("box_x0"), self.value("box_x1")))
        y0, y1 = sorted((self.value("box_y0"), self.value("box_y1")))
        m = torch.zeros(1, h, w, device=device)
        m[:, int(y0 * h): max(int(y0 * h) + 1, int(round(y1 * h))), int(x0 * w): max(int(x0 * w) + 1, int(round(x1 * w)))] = 1
        return m

    def action_analyse(self, graph=None, progress: Callable[[int, int, int], None] | None = None,
                       cancel=None) -> dict:
        """Measure the plate's grain on a few frames and store it in the ``analysis`` knob (one undo step).

        Reads the reference input (the plate) when connected, else the source outside its faces (where the
        source still is the plate).

        Args:
            graph: the node's graph (default: its own).
            progress: called as ``progress(done, total, frame)`` after each frame.
            cancel: a ``CancelToken``; cancelling stops the analysis and stores nothing.

        Returns:
            The analysis dict.
        """
        graph = graph or self.graph
        use_reference = self.input(1) is not None
        node = self.input(1) if use_reference else self.input(0)
        if node is None:
            raise DoublureError(f"{self.name}: input 'source' is not connected")
        frames = self.analysis_frame_list(graph)
        last = max(frames)
        images, regions, following = [], [], []
        for i, frame in enumerate(frames):
            ctx = graph.context(frame, 1.0, cancel)
            ctx.check_cancelled()
            img = graph.evaluate_node(node, ctx)
            # the neighbouring frame gives the temporal view of the grain (see candidate_tiles)
            other = frame + 1 if frame < last or frame == frames[0] else frame - 1
            following.append(graph.evaluate_node(node, ctx.at(other)).tensor[:3].float())
            hw = (img.height, img.width)
            region = self._box_mask(hw, img.tensor.device)
            if not use_reference and img.faces:
                outside = torch.ones(1, *hw, device=img.tensor.device)
                for face in img.faces:
                    y0, y1, x0, x1 = window = swap_window(face, hw)
                    outside[:, y0:y1, x0:x1] *= 1.0 - swap_region(face, window, img.tensor.device)
                region = outside if region is None else region * outside
            images.append(img.tensor[:3].float())
            regions.append(region)
            if progress is not None:
                progress(i + 1, len(frames), frame)
        weights = luma_weights(graph.settings["working_space"], images[0].device)
        try:
            result = analyse_grain(images, weights, regions=regions, next_frames=following)
        except ValueError as exc:
            raise DoublureError(f"{self.name}: {exc} (frames {frames[0]}-{frames[-1]})") from None
        result["frames"] = frames
        self["analysis"] = result
        return result

    # -- apply ------------------------------------------------------------------------------------------
    def compute(self, ctx: EvalContext, inputs) -> Image:
        if not self.value("analysis", ctx.frame):   # as Nuke's nodes missing their setup do: the input goes on,
            # the node warns
            return with_warning(inputs.get(0), self.name, f"{self.name}: no grain analysis yet, the input passes "
                                                          f"through without grain; press Analyse")
        return super().compute(ctx, inputs)

    def check_inputs(self, ctx: EvalContext, inputs, src: Image) -> None:
        analysis = self.value("analysis", ctx.frame)
        if analysis.get("schema") != ANALYSIS_SCHEMA and analysis.get("schema") not in OLD_SCHEMAS:
            raise DoublureError(f"{self.name}: grain analysis has schema {analysis.get('schema')!r}, "
                                f"expected {ANALYSIS_SCHEMA}; analyse again")
        ref = inputs.get(1)
        if ref is not None:
            require_same_size(self.name, src, ref, "reference")

    def finish(self, ctx: EvalContext, inputs, src: Image) -> Image:
        analysis = self.value("analysis", ctx.frame)
        hw = (src.height, src.width)
        dev = src.device
        out = src
        mix = float(self.value("mix", ctx.frame))
        limit = mask_input(inputs.get(2), self.name, hw, dev)
        degrain = self.value("degrain", ctx.frame)
        weights = luma_weights(ctx.working_space, dev)
        renewal = self.value("renewal", ctx.frame) if self.value("renewal_mode", ctx.frame) == "manual" else None
        for index, face in enumerate(src.faces):
            window = swap_window(face, hw)
            y0, y1, x0, x1 = window
            swap = out.window(window)[:3].float()
            if degrain > 0:
                swap = swap + (ops.gaussian_blur(swap, DEGRAIN_SIGMA) - swap) * degrain
            lum = torch.einsum("c,chw->hw", weights, swap)[None]
            # a held plate frame (the swap repeated) repeats its grain too: the plate's own does not renew there
            seed = frame_seed(ctx.frame - face.repeats, self.value("seed", ctx.frame), index)
            track_seed = frame_seed("attached", self.value("seed", ctx.frame), face.track_id)
            grain = synthesise_face_grain(lum, analysis, seed, track_seed, face.to_crop, window, renewal)
            grained = swap + grain * self.value("amount", ctx.frame)
            weight = swap_region(face, window, dev) * mix
            if limit is not None:
                weight = weight * limit[:, y0:y1, x0:x1]
            out = blend_into(out, grained, weight, window)
        return out

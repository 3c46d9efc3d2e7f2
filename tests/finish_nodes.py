"""A test-only node for the finishing-node tests: a known colour transform (per-channel gain, optional
per-frame flicker) and blur applied to a plate, standing in for a swap whose answer is known."""
import numpy as np
import torch

from doublure.engine import Node, Port, knobs as K, node_types, register_node
from doublure.engine import ops


class TestFinishRecolour(Node):
    """``blur(plate * gain * (1 + flicker * n_frame))``; faces pass through."""

    type_name = "TestFinishRecolour"
    inputs = (Port("input"),)
    knob_specs = (K.Color("gain", (1.3, 0.95, 0.7)), K.Float("blur", 1.0), K.Float("flicker", 0.0))

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)  # the flicker is drawn per frame

    def compute(self, ctx, inputs):
        img = inputs.get(0)
        gain = torch.tensor(self.value("gain", ctx.frame), device=img.tensor.device).view(3, 1, 1)
        jitter = np.random.default_rng(ctx.frame).normal(size=(3, 1, 1))
        gain = gain * (1 + self.value("flicker", ctx.frame) * torch.from_numpy(jitter).float().to(gain.device))
        out = img.tensor[:3] * gain
        if self.value("blur", ctx.frame) > 0:
            out = ops.gaussian_blur(out, self.value("blur", ctx.frame))
        return img.replace(tensor=out)


class TestFinishShade(Node):
    """Multiply by a known light: a horizontal ramp from ``left`` to ``right`` across the frame, optionally
    with a hard shadow (factor ``shadow``) left of column ``edge``; faces pass through."""

    type_name = "TestFinishShade"
    inputs = (Port("input"),)
    knob_specs = (K.Float("left", 0.4), K.Float("right", 1.4), K.Float("shadow", 1.0), K.Int("edge", 0))

    def compute(self, ctx, inputs):
        img = inputs.get(0)
        w = img.width
        light = torch.linspace(self.value("left"), self.value("right"), w, device=img.tensor.device)
        light[: self.value("edge")] *= self.value("shadow")
        return img.replace(tensor=img.tensor[:3] * light.view(1, 1, w))


class TestFinishGrain(Node):
    """Add known grain: Gaussian-blurred white noise (``size`` px), per-channel ``std`` at luminance 0.18,
    growing with the square root of luminance, channels partly shared; seeded by the frame."""

    type_name = "TestFinishGrain"
    inputs = (Port("input"),)
    knob_specs = (K.Color("std", (0.012, 0.010, 0.016)), K.Float("size", 0.8), K.Float("shared", 0.5))

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def known_grain(self, img, frame):
        g = torch.Generator().manual_seed(1000 + frame)
        c, h, w = img.tensor[:3].shape
        shared = self.value("shared")
        white = shared**0.5 * torch.randn(1, h, w, generator=g) + (1 - shared) ** 0.5 * torch.randn(3, h, w, generator=g)
        blurred = ops.gaussian_blur(white, self.value("size"))
        blurred = blurred / blurred.std(dim=(1, 2), keepdim=True)
        lum = img.tensor[:3].mean(0, keepdim=True).clamp_min(0)
        std = torch.tensor(self.value("std")).view(3, 1, 1)
        return blurred.to(img.tensor.device) * std.to(img.tensor.device) * (lum / 0.18).sqrt()

    def compute(self, ctx, inputs):
        img = inputs.get(0)
        return img.replace(tensor=img.tensor[:3] + self.known_grain(img, ctx.frame))


for _cls in (TestFinishRecolour, TestFinishShade, TestFinishGrain):
    if _cls.type_name not in node_types():
        register_node(_cls)

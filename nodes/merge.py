"""Merge: layer A onto B with the Porter-Duff / arithmetic operations of premultiplied compositing."""
from __future__ import annotations

import torch

from doublure.engine import Image, Node, Port, knobs as K, register_node
from doublure.engine.errors import DoublureError

OPERATIONS = ("over", "under", "plus", "multiply", "difference")


def merge(a: torch.Tensor, b: torch.Tensor, operation: str) -> torch.Tensor:
    """Combine premultiplied RGBA planes, colour and alpha alike (Porter and Duff 1984; Nuke's Merge).

    over: A + B (1 - a); under: B + A (1 - b); plus: A + B; multiply: A B; difference: |A - B|.

    Args:
        a, b: (4, H, W) premultiplied RGBA (an image without alpha is opaque: alpha 1).
        operation: one of OPERATIONS.

    Returns:
        (4, H, W) premultiplied RGBA.
    """
    if operation == "over":
        return a + b * (1.0 - a[3:4])
    if operation == "under":
        return b + a * (1.0 - b[3:4])
    if operation == "plus":
        return a + b
    if operation == "multiply":
        return a * b
    if operation == "difference":
        return (a - b).abs()
    raise ValueError(f"unknown merge operation {operation!r}")


def _rgba(image: Image, height: int, width: int) -> torch.Tensor:
    """(4, H, W) of an image placed at the top-left of a (height, width) frame; outside it is transparent."""
    t = image.tensor.float()
    if image.channels == ("A",):
        t = t.expand(4, -1, -1)
    else:
        alpha = image.alpha()
        rgb = image.rgb().float()
        t = torch.cat([rgb, alpha.float() if alpha is not None else torch.ones_like(rgb[:1])], dim=0)
    if t.shape[-2:] == (height, width):
        return t
    out = torch.zeros(4, height, width, dtype=t.dtype, device=t.device)
    h, w = min(height, t.shape[1]), min(width, t.shape[2])
    out[:, :h, :w] = t[:, :h, :w]
    return out


@register_node
class Merge(Node):
    """Layer A onto B: over, under, plus, multiply, difference; mixed back with B by mix and the mask."""

    type_name = "Merge"
    version = 1
    category = "Merge"
    # Nuke's order: B (the background, passed through when disabled) is input 0.
    inputs = (Port("B"), Port("A", optional=True), Port("mask", "Mask", optional=True))
    knob_specs = (
        K.Enum("operation", OPERATIONS, default="over"),
        K.Float("mix", 1.0, min=0.0, max=1.0, tooltip="0 shows B, 1 the full merge"),
    )

    def pass_through(self, ctx):
        if self.input_nodes[1] is None or self.value("mix", ctx.frame) == 0.0:
            return 0
        return super().pass_through(ctx)

    def compute(self, ctx, inputs) -> Image:
        b_img, a_img, mask_img = inputs.get(0), inputs.get(1), inputs.get(2)
        height, width = b_img.height, b_img.width
        b = _rgba(b_img, height, width)
        merged = merge(_rgba(a_img, height, width), b, self.value("operation", ctx.frame))
        amount = torch.tensor(self.value("mix", ctx.frame), device=b.device)
        if mask_img is not None:
            mask = mask_img.tensor[:1].float()
            if mask.shape[-2:] != (height, width):
                raise DoublureError(f"{self.name}: mask is {mask.shape[2]}x{mask.shape[1]} but B is "
                                    f"{width}x{height}")
            amount = amount * mask
        out = b + (merged - b) * amount
        has_alpha = a_img.alpha() is not None or b_img.alpha() is not None
        channels = ("R", "G", "B", "A") if has_alpha else ("R", "G", "B")
        # B's metadata and faces describe the plate; A's provenance keys (a synthetic face) must survive.
        metadata = dict(b_img.metadata)
        metadata.update({k: v for k, v in a_img.metadata.items() if k.startswith("doublure/")})
        return b_img.replace(tensor=out[: len(channels)].to(b_img.tensor.dtype), channels=channels,
                             metadata=metadata)

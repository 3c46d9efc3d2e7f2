"""Merge: layer A onto B with the Porter-Duff / arithmetic operations of premultiplied compositing."""
from __future__ import annotations

import torch

from doublure.engine import Image, Node, Port, knobs as K, register_node
from doublure.engine.errors import DoublureError

OPERATIONS = ("over", "under", "plus", "multiply", "difference")


def merge(a: torch.Tensor, b: torch.Tensor, operation: str, out: torch.Tensor | None = None) -> torch.Tensor:
    """Combine premultiplied planes, colour and alpha alike (Porter and Duff 1984; Nuke's Merge).

    over: A + B (1 - a); under: B + A (1 - b); plus: A + B; multiply: A B; difference: |A - B|.

    Args:
        a, b: (4, H, W) premultiplied RGBA, or (3, H, W) opaque RGB (alpha 1: over gives A, under B).
        operation: one of OPERATIONS.
        out: the tensor to write the result into, shaped as ``b``; it may be ``b`` itself (the merge in
            place: the same values). None: a new tensor.

    Returns:
        (4 or 3, H, W) premultiplied, ``out`` when given.
    """
    if operation == "over":
        return torch.mul(b, _transparency(a), out=out).add_(a)
    if operation == "under":
        return torch.add(b, a * _transparency(b), out=out)
    if operation == "plus":
        return torch.add(a, b, out=out)
    if operation == "multiply":
        return torch.mul(a, b, out=out)
    if operation == "difference":
        return torch.sub(a, b, out=out).abs_()
    raise ValueError(f"unknown merge operation {operation!r}")


def _transparency(planes: torch.Tensor) -> torch.Tensor | float:
    """1 - alpha of premultiplied planes: (1, H, W) for RGBA, 0 for opaque RGB."""
    return 1.0 - planes[3:4] if planes.shape[0] == 4 else 0.0


def mix_into(b: torch.Tensor, merged: torch.Tensor, amount: torch.Tensor, out: torch.Tensor | None = None
             ) -> torch.Tensor:
    """B moved toward the merge by ``amount``: ``b + (merged - b) * amount``. Writes over ``merged``.

    Args:
        b, merged: (C, H, W).
        amount: a scalar tensor (mix) or (1, H, W) (mix x mask).
        out: the tensor to write into (may be ``b``); None: a new tensor.

    Returns:
        (C, H, W), ``out`` when given.
    """
    return torch.add(b, merged.sub_(b).mul_(amount), out=out)


RGBA = ("R", "G", "B", "A")


def _planes(image: Image, planes: int, height: int, width: int) -> tuple[torch.Tensor, bool]:
    """An image as (planes, height, width) float premultiplied planes, placed at the top-left of the frame
    (transparent outside it), and whether that is a tensor made here (not the image's).

    ``planes`` 4: RGBA, an image without alpha opaque (alpha 1); 3: RGB. An R, G, B(, A) float32 image of
    that size is its own tensor, not a copy.
    """
    t = image.tensor
    if image.channels == RGBA[:planes] and t.dtype == torch.float32 and t.shape[-2:] == (height, width):
        return t, False
    if image.channels == ("A",):
        t = t.float().expand(planes, -1, -1)
    elif planes == 4:
        alpha = image.alpha()
        rgb = image.rgb().float()
        t = torch.cat([rgb, alpha.float() if alpha is not None else torch.ones_like(rgb[:1])], dim=0)
    else:
        t = image.rgb().float()
    if t.shape[-2:] == (height, width):
        return t, t.data_ptr() != image.tensor.data_ptr() and t.is_contiguous()
    out = torch.zeros(planes, height, width, dtype=t.dtype, device=t.device)
    h, w = min(height, t.shape[1]), min(width, t.shape[2])
    out[:, :h, :w] = t[:, :h, :w]
    return out, True


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
        # B is taken: a frame made for this Merge alone is merged into in place (a plate straight from Read,
        # the frame of the node above in a chain of merges); one the cache or another node keeps is not
        b_img, b_writable = inputs.take(0)
        a_img, mask_img = inputs.get(1), inputs.get(2)
        height, width = b_img.height, b_img.width
        has_alpha = a_img.alpha() is not None or b_img.alpha() is not None
        channels = RGBA if has_alpha else RGBA[:3]
        b, b_made_here = _planes(b_img, len(channels), height, width)
        a, _ = _planes(a_img, len(channels), height, width)
        operation, mix = self.value("operation", ctx.frame), self.value("mix", ctx.frame)
        out = b if b_made_here or (b_writable and b is b_img.tensor) else None
        if mask_img is None and mix == 1.0:
            merged = merge(a, b, operation, out=out)
        else:
            amount = torch.tensor(mix, device=b.device)
            if mask_img is not None:
                mask = mask_img.tensor[:1].float()
                if mask.shape[-2:] != (height, width):
                    raise DoublureError(f"{self.name}: mask is {mask.shape[2]}x{mask.shape[1]} but B is "
                                        f"{width}x{height}")
                amount = amount * mask
            merged = mix_into(b, merge(a, b, operation), amount, out=out)
        # B's metadata and faces describe the plate; A's provenance keys (a synthetic face) must survive.
        metadata = dict(b_img.metadata)
        metadata.update({k: v for k, v in a_img.metadata.items() if k.startswith("doublure/")})
        return b_img.replace(tensor=merged.to(b_img.tensor.dtype), channels=channels, metadata=metadata)

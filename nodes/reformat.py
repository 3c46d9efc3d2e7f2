"""Reformat: resize to a format (fit, fill, by width or height, distort) or by a scale, then crop or pad."""
from __future__ import annotations

import numpy as np
import torch

from doublure.engine import Image, Node, Port, knobs as K, ops, register_node
from doublure.engine.sizes import FrameTooLarge, check_frame_size

FILTERS = ("impulse", "bilinear", "bicubic", "lanczos")
RESIZE_TYPES = ("width", "height", "fit", "fill", "distort", "none")


def reformat_geometry(in_w: int, in_h: int, out_w: int, out_h: int, resize: str,
                      center: bool) -> tuple[tuple[int, int], tuple[int, int]]:
    """Where the input lands in a (out_w, out_h) frame.

    Args:
        resize: "width" / "height" (scale to match that side, keeping the aspect), "fit" (whole image
            inside, padded), "fill" (frame covered, cropped), "distort" (both sides match), "none" (no scale).
        center: centre the resized image in the frame; else it sits at the top-left.

    Returns:
        ((resized_w, resized_h), (x, y)): the resized size and its top-left corner in the frame
        (negative when it is cropped).
    """
    sx, sy = out_w / in_w, out_h / in_h
    scale = {"width": (sx, sx), "height": (sy, sy), "fit": (min(sx, sy),) * 2, "fill": (max(sx, sy),) * 2,
             "distort": (sx, sy), "none": (1.0, 1.0)}[resize]
    rw, rh = max(1, round(in_w * scale[0])), max(1, round(in_h * scale[1]))
    if resize == "distort":
        rw, rh = out_w, out_h
    x, y = ((out_w - rw) // 2, (out_h - rh) // 2) if center else (0, 0)
    return (rw, rh), (x, y)


def place(img: torch.Tensor, out_h: int, out_w: int, x: int, y: int) -> torch.Tensor:
    """Crop or pad (with zeros) planes (C, h, w) into a (C, out_h, out_w) frame with their corner at (x, y)."""
    out = img.new_zeros(img.shape[0], out_h, out_w)
    h, w = img.shape[-2:]
    x0, y0 = max(x, 0), max(y, 0)
    x1, y1 = min(x + w, out_w), min(y + h, out_h)
    if x1 > x0 and y1 > y0:
        out[:, y0:y1, x0:x1] = img[:, y0 - y:y1 - y, x0 - x:x1 - x]
    return out


def _affine_faces(faces: list, sx: float, sy: float, dx: float, dy: float) -> list:
    """Faces of a plate resized by (sx, sy) with pixel centres aligned, then shifted by (dx, dy)."""
    if not faces:
        return []
    ox, oy = 0.5 * sx - 0.5 + dx, 0.5 * sy - 0.5 + dy
    m = np.array([[sx, 0.0, ox], [0.0, sy, oy]])
    # a swap's coverage is left behind (its alpha is in the old pixels): the finishing nodes below a
    # Reformat fall back to the face hull
    return [f.moved(m, depth_scale=(sx + sy) / 2.0) for f in faces]


@register_node
class Reformat(Node):
    """Resize to a format or by a scale with a choice of filter, cropping or padding to the format."""

    type_name = "Reformat"
    version = 1
    category = "Transform"
    inputs = (Port("input"),)
    knob_specs = (
        K.Enum("type", ("to format", "scale"), default="to format"),
        K.Int("width", 1920, min=1, max=32768, animatable=False),
        K.Int("height", 1080, min=1, max=32768, animatable=False),
        K.Float("scale", 1.0, min=0.01, max=16.0, soft_max=4.0, animatable=False),
        K.Enum("resize", RESIZE_TYPES, default="width",
               tooltip="How the image maps into the format; the aspect is kept except for distort"),
        K.Bool("center", True, tooltip="Centre the image in the format (else top-left)"),
        K.Enum("filter", FILTERS, default="bicubic",
               tooltip="bicubic: Catmull-Rom; lanczos: 3 lobes; all area-antialiased when shrinking"),
    )

    def hash(self, ctx, h) -> None:
        super().hash(ctx, h)
        h.update(ctx.proxy)  # the format is scaled by the proxy

    def edit_problem(self, frame: int, name: str, value) -> str | None:
        """Why knob ``name`` set to ``value`` could not make a frame at ``frame``, or None: a format whose RGB
        frame (with the resample's copy) would need more memory than one frame may take. The properties panel
        refuses such an edit, the old value kept, instead of letting every frame fail (a 9999x9999 format took
        19 GB)."""
        knobs = {k: value if k == name else self.value(k, frame) for k in ("type", "width", "height")}
        if knobs["type"] != "to format":
            return None
        try:
            check_frame_size(self.name, 3, knobs["height"], knobs["width"], copies=2)
        except FrameTooLarge as exc:
            return str(exc)
        return None

    def compute(self, ctx, inputs) -> Image:
        src = inputs.get(0)
        in_w, in_h = src.width, src.height
        if self.value("type", ctx.frame) == "scale":
            s = self.value("scale", ctx.frame)
            out_w, out_h = max(1, round(in_w * s)), max(1, round(in_h * s))
            (rw, rh), (x, y) = (out_w, out_h), (0, 0)
        else:
            out_w = max(1, round(self.value("width", ctx.frame) * ctx.proxy))
            out_h = max(1, round(self.value("height", ctx.frame) * ctx.proxy))
            (rw, rh), (x, y) = reformat_geometry(in_w, in_h, out_w, out_h, self.value("resize", ctx.frame),
                                                 self.value("center", ctx.frame))
        # the output and the resample's intermediate (the width pass) at once, checked before they exist
        check_frame_size(self.name, len(src.channels), max(out_h, in_h), out_w, src.dtype.itemsize, copies=2)
        resized = ops.resample(src.tensor, (rh, rw), self.value("filter", ctx.frame))
        ctx.check_cancelled()
        out = resized if (rw, rh, x, y) == (out_w, out_h, 0, 0) else place(resized, out_h, out_w, x, y)
        faces = _affine_faces(list(src.faces), rw / in_w, rh / in_h, x, y)
        return src.replace(tensor=out, faces=faces)

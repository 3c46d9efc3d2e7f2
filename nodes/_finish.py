"""The base of the finishing nodes (ColorMatch, ShadowMatch, EyeFix, Grain) and the helpers they share: the
face region a node acts in, the final limit-and-mix and face-space sampling (the colour maths is :mod:`doublure.finish.colour`). Not a node module (the leading
underscore keeps ``doublure.nodes`` from importing it as one)."""
from __future__ import annotations

import hashlib

import numpy as np
import torch

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, ops
from doublure.engine import knobs as K
from doublure.engine.cache import Memo
from doublure.engine.device import upload
from doublure.engine.image import Window
from doublure.engine.node import DISABLE
from doublure.faces.face import Face
from doublure.faces.masks import rasterize_shapes, region_shapes

MIX = K.Float("mix", default=1.0, min=0.0, max=1.0)


class FinishNode(Node):
    """A node that finishes the swapped faces of its source: it changes the source only inside its faces'
    regions, reads the plate as it was on ``reference`` and is limited by the optional ``mask``.

    The contract every finishing node shares: a ``mix`` knob (after the node's own) fades the change, and at
    mix 0, or at knob values that change nothing (:meth:`changes_nothing`), the node passes its source through
    (its hash is the source's: one cache entry); the working space is hashed (the maths runs in it); a frame
    without faces is the source unchanged. Subclasses implement :meth:`finish`.
    """

    category = "Finish"
    inputs = (Port("source", "Image"), Port("reference", "Image", optional=True), Port("mask", "Mask", optional=True))

    @classmethod
    def all_knob_specs(cls) -> tuple[K.KnobSpec, ...]:
        return tuple(cls.knob_specs) + (MIX, DISABLE)

    def changes_nothing(self, ctx: EvalContext) -> bool:
        """Whether the knobs at ``ctx.frame`` leave every pixel as it is (besides mix 0)."""
        return False

    def pass_through(self, ctx: EvalContext) -> int | None:
        if self.value("mix", ctx.frame) == 0.0 or self.changes_nothing(ctx):
            return 0
        return super().pass_through(ctx)

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.working_space)

    def check_inputs(self, ctx: EvalContext, inputs, source: Image) -> None:
        """Raise on what is wrong whether or not the frame has faces (nothing by default)."""

    def compute(self, ctx: EvalContext, inputs) -> Image:
        source = inputs.get(0)
        self.check_inputs(ctx, inputs, source)
        if not source.faces:
            return source
        return self.finish(ctx, inputs, source)

    def finish(self, ctx: EvalContext, inputs, source: Image) -> Image:
        """The finished frame, for a ``source`` that carries faces."""
        raise NotImplementedError(f"{self.type_name}.finish")


# The region a finishing node changes: the face hull grown a little, feathered, in face widths.
REGION_GROW = 0.02
REGION_FEATHER = 0.03


def face_width(face: Face) -> float:
    """A face's size in plate pixels: the landmarks' bounding-box width (never below 1)."""
    return max(1.0, float(face.width))


def face_window(face: Face, hw: tuple[int, int], margin: float) -> Window:
    """The plate rectangle (y0, y1, x0, x1) holding a face's landmarks plus ``margin`` px, clipped."""
    x0, y0, x1, y1 = face.box
    m = int(np.ceil(margin))
    return Window(max(int(np.floor(y0)) - m, 0), min(int(np.ceil(y1)) + m + 1, hw[0]),
                  max(int(np.floor(x0)) - m, 0), min(int(np.ceil(x1)) + m + 1, hw[1]))


# (face geometry, region, window, grow, feather, device) -> mask: the finishing nodes of one graph render
# the same masks of the same face (ColorMatch's and Grain's swap region; ColorMatch's skin of a frame, as
# the swap's and, frames earlier, as the plate's pooled reference), and the anti-aliased, distance-grown
# rasterisation costs more than the node's own maths on a 200 px face.
_mask_memo = Memo(64)


def region_mask(face: Face, region: str, window: Window, device, grow: float = 0.0,
                feather: float = 0.0) -> torch.Tensor:
    """A faces/masks region of one face rendered inside a window only (a 1080p frame need not be filled
    for a 200 px face). Recently rendered masks are remembered (by the face's landmarks and irises, not
    by the Face object), and each call returns a tensor of its own.

    Args:
        face: the face (plate pixels).
        region: one of ``doublure.faces.masks.REGIONS``.
        window: (y0, y1, x0, x1).
        grow: dilate (> 0) / erode (< 0) in px.
        feather: Gaussian sigma in px.

    Returns:
        (1, y1 - y0, x1 - x0) float32 in [0, 1].
    """
    lm = np.ascontiguousarray(face.landmarks, dtype=np.float64)
    iris = np.ascontiguousarray(face.iris, dtype=np.float64)
    key = (lm.tobytes(), lm.shape, iris.tobytes(), iris.shape, region, tuple(window), float(grow), float(feather),
           str(device))
    mask = _mask_memo.get(key)
    if mask is None:
        mask = _mask_memo.put(key, _render_region_mask(lm, iris, region, window, device, grow, feather))
    return mask.clone()


def _render_region_mask(landmarks: np.ndarray, iris: np.ndarray, region: str, window: Window, device,
                        grow: float, feather: float) -> torch.Tensor:
    """:func:`region_mask` without the memo: (N, 2+) landmarks and (2, 3) irises in plate pixels."""
    y0, y1, x0, x1 = window
    lm = landmarks.copy()
    lm[:, 0] -= x0
    lm[:, 1] -= y0
    iris = iris.copy()
    iris[:, 0] -= x0
    iris[:, 1] -= y0
    add, cut = region_shapes(lm, iris, region)
    m = upload(torch.from_numpy(rasterize_shapes(add, cut, (y1 - y0, x1 - x0), grow))[None], device)
    if feather > 0:
        m = ops.gaussian_blur(m, float(feather)).clamp_(0.0, 1.0)
    return m


def swap_window(face: Face, hw: tuple[int, int], extra: float = 0.0) -> Window:
    """The window a finishing node works in for a face: the swap region plus ``extra`` px of context."""
    w = face_width(face)
    return face_window(face, hw, (REGION_GROW + 3 * REGION_FEATHER) * w + extra + 2)


def swap_region(face: Face, window: Window, device) -> torch.Tensor:
    """Where the swap replaced the plate, inside a window. Returns (1, h, w) float32 in [0, 1].

    A face SwapModel passed on carries the alpha it composited the new face with (``Face.coverage``): that
    is the region, so a finishing node changes the new face only, in proportion to how much of each pixel it
    is. Where the plate shows through, at the mask's feathered edge or where the model's mask leaves out
    forehead and hair inside the face hull, the plate stays as it is (bench/RESULTS.md, session 7:
    recolouring and re-graining the plate there moved its own detail with the swap's statistics).

    Without coverage (a plate face from FaceDetect), the face hull grown by REGION_GROW and feathered by
    REGION_FEATHER face widths, rendered in the face's swap window (the part inside ``window``) and placed
    into ``window``: beyond it the region is 0 (the swap window's margin holds the grow and the feather's
    ceil(3 sigma) kernel), so a node working in a wider window (ShadowMatch) gets the same values (to the
    float rounding of a blur over another size, < 1e-6) and shares the rendering, and its memo entry, with
    ColorMatch and Grain.
    """
    y0, y1, x0, x1 = window
    if face.coverage is not None:
        cy0, cy1, cx0, cx1 = face.coverage.window
        region, own = face.coverage.alpha, (max(cy0, y0), min(cy1, y1), max(cx0, x0), min(cx1, x1))
        # a tensor of its own, as region_mask's are: the face's stays as SwapModel made it
        region = region[:, own[0] - cy0:own[1] - cy0, own[2] - cx0:own[3] - cx0].to(device, torch.float32,
                                                                                      copy=True)
    else:
        w = face_width(face)
        sy0, sy1, sx0, sx1 = swap_window(face, (y1, x1))
        own = (max(sy0, y0), min(sy1, y1), max(sx0, x0), min(sx1, x1))
        region = region_mask(face, "face_hull", own, device, grow=REGION_GROW * w, feather=REGION_FEATHER * w)
    if own == tuple(window):
        return region
    placed = torch.zeros((1, y1 - y0, x1 - x0), dtype=region.dtype, device=region.device)
    if own[1] > own[0] and own[3] > own[2]:
        placed[:, own[0] - y0:own[1] - y0, own[2] - x0:own[3] - x0] = region
    return placed


def mask_input(img: Image | None, node_name: str, hw: tuple[int, int], device) -> torch.Tensor | None:
    """The optional Mask input as (1, H, W) on ``device``, checked to match the source's size."""
    if img is None:
        return None
    m = img.tensor[:1] if img.channels == ("A",) else (img.alpha() if img.alpha() is not None else img.tensor[:1])
    if tuple(m.shape[-2:]) != tuple(hw):
        raise DoublureError(f"{node_name}: mask input is {m.shape[-1]}x{m.shape[-2]} but the source is "
                            f"{hw[1]}x{hw[0]}")
    return m.to(device=device, dtype=torch.float32).clamp(0, 1)


def blend_into(image: Image, result: torch.Tensor, weight: torch.Tensor, window: Window) -> Image:
    """``image`` with its colour planes inside ``window`` moved toward ``result`` by ``weight`` (computed in
    float32); planes beyond 3 (alpha) are kept. The rest of the frame is shared, not copied (``Image.paste``).

    Args:
        image: the frame being built (the source, with the faces done so far pasted in).
        result: (3, h, w) the node's result inside the window.
        weight: (1, h, w) region x mask x mix.
        window: (y0, y1, x0, x1).
    """
    pixels = image.window(window).to(torch.float32, copy=True)
    pixels[:3].lerp_(result.float(), weight)   # one kernel where s + (result - s) * weight took four
    return image.paste(window, pixels.to(image.dtype))


def require_same_size(node_name: str, source: Image, other: Image, port: str) -> None:
    if (other.width, other.height) != (source.width, source.height):
        raise DoublureError(f"{node_name}: {port} input is {other.width}x{other.height} but the source is "
                            f"{source.width}x{source.height}")


def frame_seed(*parts) -> int:
    """A 63-bit seed from the frame number and whatever else must vary the noise (a node's seed knob)."""
    digest = hashlib.blake2b(repr(parts).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & 0x7FFF_FFFF_FFFF_FFFF

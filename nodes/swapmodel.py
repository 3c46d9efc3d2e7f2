"""SwapModel: render the faces of the plate as the model's target identity and composite them back.

Per frame, for each chosen face (``Image.faces`` from FaceDetect): warp the plate into the model's aligned
crop (anti-aliased), convert it from the scene-linear working space to the model's display encoding
(sRGB, like the faceset crops it learned from), decode it as the target identity (A->B; all faces of the
frame in one batch), convert back to linear, and warp colour and mask onto the plate with the exact inverse
transform, composited with ``over`` in linear light. Outside the (feathered) mask the output is the plate,
bit for bit; a frame without a chosen face is the plate unchanged.

The model is loaded once per process and device and shared (keyed by its content digest, which is also
what this node hashes). Every output frame carries provenance metadata: ``doublure/synthetic_face``, the
model's name and digest and its rights reference, which Write puts into every frame header. A model whose
rights record is missing or expired loads with a loud warning (log and ``doublure/rights_warning``).
"""
from __future__ import annotations

import math

import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, register_node
from doublure.engine import colour as engine_colour
from doublure.engine import knobs as K
from doublure.engine.ops import gaussian_blur, normalized_blur
from doublure.faces.align import warp_from_crop, warp_to_crop
from doublure.faces.masks import render_crop_mask
from doublure.models.dbm import ModelFileError, model_digest, read_meta, rights_problems, rights_reference
from doublure.models.infer import shared_model, swap_faces

MASK_SOURCES = ("predicted", "landmark hull", "both")
BLEND_MODES = ("alpha", "seamless")
OUTPUTS = ("composite", "swapped crop", "mask")
DIRECTIONS = ("A->B",)


def parse_tracks(text: str) -> set[int] | None:
    """``"all"`` (or empty) -> None; ``"0, 2"`` -> {0, 2}. Raises ValueError on anything else."""
    text = text.strip().lower()
    if text in ("", "all"):
        return None
    return {int(part) for part in text.replace(" ", "").split(",") if part}


def crop_masks(pred: torch.Tensor, hull: torch.Tensor, source: str, erode: float, feather: float) -> torch.Tensor:
    """The blend mask of each face in crop space.

    Args:
        pred: (N, 1, R, R) the model's predicted mask.
        hull: (N, 1, R, R) the landmark face hull.
        source: one of :data:`MASK_SOURCES` (``both`` multiplies them).
        erode: shrink (positive) or grow (negative) in crop pixels (square structuring element).
        feather: Gaussian sigma in crop pixels.

    Returns:
        (N, 1, R, R) in [0, 1], fading to zero towards the crop's edge so nothing of the edge shows. The
        fade is wide (8% of the crop, or twice the feather if wider; smoothstep) because the landmark hull
        and the predicted mask of a ``whole_face`` crop run past its top: there the fade is the mask's only
        edge, and a narrow one drew a straight seam across the forehead.
    """
    m = {"predicted": pred, "landmark hull": hull, "both": pred * hull}[source]
    r = int(round(abs(erode)))
    if r > 0:
        pooled = F.max_pool2d(1.0 - m if erode > 0 else m, 2 * r + 1, stride=1, padding=r)
        m = 1.0 - pooled if erode > 0 else pooled
    if feather > 0:
        m = gaussian_blur(m, feather).clamp(0.0, 1.0)
    size = m.shape[-1]
    pos = torch.linspace(0, size - 1, size, device=m.device, dtype=m.dtype)
    t = (torch.minimum(pos, size - 1 - pos) / max(1.0, 0.08 * size, 2.0 * feather)).clamp(0.0, 1.0)
    fade = t * t * (3.0 - 2.0 * t)
    return m * (fade[None, :] * fade[:, None])


def seamless_correction(plate_crop: torch.Tensor, swap: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Poisson-style blend: a smooth membrane that cancels the colour difference along the mask's edge.

    Seamless cloning (Pérez et al. 2003) keeps the swap's gradients and takes the plate's values on the
    boundary; the correction is the harmonic interpolation of the boundary difference. Here it is
    approximated by a normalised Gaussian interpolation (width R / 8) of the difference measured in a band
    just outside the mask, which is smooth, has no iterations and keeps the swap's detail.

    Args:
        plate_crop: (N, 3, R, R) the plate in crop space (linear).
        swap: (N, 3, R, R) the swapped face (linear).
        mask: (N, 1, R, R) the blend mask.

    Returns:
        (N, 3, R, R) the corrected swap.
    """
    size = swap.shape[-1]
    hard = (mask >= 0.5).to(swap.dtype)
    r = max(1, int(round(0.03 * size)))
    band = F.max_pool2d(hard, 2 * r + 1, stride=1, padding=r) - hard
    out = []
    for i in range(swap.shape[0]):
        if band[i].sum() < 1:
            out.append(swap[i])
            continue
        membrane = normalized_blur(plate_crop[i] - swap[i], band[i], size / 8.0)
        out.append(swap[i] + membrane)
    return torch.stack(out)


def plate_window(from_crop: np.ndarray, res: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The plate rectangle the faces' crops are read from and put back onto, so a 200 px face on a 1080p
    plate costs a 200 px window, not the frame.

    The crops' footprint grows by the mip filter's reach (two pixels of the coarsest pyramid level that
    :func:`doublure.faces.align.warp_affine` samples), and the window's edges sit on that level's grid, so
    the window's pyramid is the plate's pyramid cut out and the crops come out as from the whole plate.

    Args:
        from_crop: (N, 2, 3) crop unit -> plate pixel affines.
        res: crop side in pixels.
        hw: plate (H, W).

    Returns:
        (y0, y1, x0, x1), clipped to the plate.
    """
    corners = np.array([[0.0, 0.0, 1.0], [1.0, 0.0, 1.0], [0.0, 1.0, 1.0], [1.0, 1.0, 1.0]])
    xy = np.concatenate([corners @ m.T for m in from_crop])
    plate_px_per_crop_px = max(math.sqrt(abs(np.linalg.det(m[:, :2]))) for m in from_crop) / res
    step = 2 ** max(0, math.ceil(math.log2(max(plate_px_per_crop_px, 1e-12))))
    margin = 2 * step + 2
    x0, y0 = ((np.floor((xy.min(0) - margin) / step)) * step).astype(int)
    x1, y1 = ((np.ceil((xy.max(0) + margin) / step)) * step).astype(int)
    return max(int(y0), 0), min(int(y1), hw[0]), max(int(x0), 0), min(int(x1), hw[1])


def _to_encoding(crops: torch.Tensor, src: str, dst: str) -> torch.Tensor:
    """Colour-convert a (N, 3, R, R) batch through the engine's (C, H, W) conversion."""
    n, c, r, _ = crops.shape
    planes = crops.permute(1, 0, 2, 3).reshape(c, n * r, r).contiguous()
    out = engine_colour.convert(planes, src, dst)
    return out.reshape(c, n, r, r).permute(1, 0, 2, 3)


@register_node
class SwapModel(Node):
    """Replace the plate's faces with an identity model's target actor."""

    type_name = "SwapModel"
    version = 1
    category = "Face"
    inputs = (Port("plate", "Image"),)
    knob_specs = (
        K.File("model", default="", pattern="*.dbm *.zip", label="model",
               tooltip="The identity model (.dbm) from `doublure train`."),
        K.String("tracks", default="all", tooltip="Face tracks to replace: 'all' or comma-separated track ids."),
        K.Enum("direction", DIRECTIONS, default="A->B",
               tooltip="Render the plate actor (A) as the model's target actor (B)."),
        K.Enum("mask_source", MASK_SOURCES, default="both", label="mask source",
               tooltip="The model's predicted mask, the landmark face hull, or both multiplied."),
        K.Float("erode", default=0.0, min=-20.0, max=20.0, soft_min=-5.0, soft_max=5.0, label="erode (% of face)",
                tooltip="Shrink (positive) or grow (negative) the mask, in percent of the face crop."),
        K.Float("feather", default=1.5, min=0.0, max=20.0, soft_max=5.0, label="feather (% of face)",
                tooltip="Soften the mask edge (Gaussian sigma in percent of the face crop)."),
        K.Enum("blend", BLEND_MODES, default="alpha",
               tooltip="alpha: over in linear light; seamless: also cancel the colour step along the edge."),
        K.Enum("output", OUTPUTS, default="composite",
               tooltip="composite: the plate with the new faces; swapped crop: the model's output crops side "
                       "by side; mask: where the new faces go."),
    )

    # -- hashing ------------------------------------------------------------------------------------
    def _model_identity(self) -> str:
        path = self.path("model")
        if not path:
            return "no model"
        try:
            return model_digest(path)
        except DoublureError as exc:   # compute raises it with the node's name
            return f"unreadable: {exc}"

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(self._model_identity())
        h.update(ctx.working_space).update(engine_colour.config_cache_id())

    # -- compute ------------------------------------------------------------------------------------
    def _model_path(self) -> str:
        path = self.path("model")
        if not path:
            raise DoublureError(f"{self.name}: no model file set (knob 'model')")
        return path

    def _provenance(self, meta: dict, digest: str, path: str, swapped: int) -> dict:
        problems = rights_problems(meta.get("rights"))
        out = {"doublure/synthetic_face": swapped > 0, "doublure/synthetic_faces": swapped,
               "doublure/model": meta.get("name") or path, "doublure/model_digest": digest,
               "doublure/rights": rights_reference(meta.get("rights"))}
        if problems:
            out["doublure/rights_warning"] = "; ".join(problems)
        return out

    def compute(self, ctx: EvalContext, inputs) -> Image:
        plate = inputs.get(0)
        path = self._model_path()
        output = self.value("output", ctx.frame)
        try:
            tracks = parse_tracks(self.value("tracks", ctx.frame))
        except ValueError:
            raise DoublureError(f"{self.name}: knob 'tracks' must be 'all' or comma-separated track ids, "
                                f"got {self.value('tracks', ctx.frame)!r}") from None
        faces = [f for f in plate.faces if tracks is None or f.track_id in tracks]
        try:
            if not faces:
                meta, digest = read_meta(path), model_digest(path)
                metadata = dict(plate.metadata, **self._provenance(meta, digest, path, 0))
                if output == "mask":
                    return plate.replace(tensor=torch.zeros_like(plate.tensor[:1]).expand(3, -1, -1).contiguous(),
                                         channels=("R", "G", "B"), metadata=metadata)
                return plate.replace(metadata=metadata)
            loaded = shared_model(path, ctx.device)
        except ModelFileError as exc:
            raise DoublureError(f"{self.name}: {exc}") from None
        face_type = loaded.meta.get("face_type", "whole_face")
        if any(f.face_type != face_type for f in faces):
            raise DoublureError(f"{self.name}: model {path} was trained on {face_type} crops but the faces are "
                                f"{faces[0].face_type}; set FaceDetect's face type to {face_type}")
        ctx.check_cancelled()
        res = loaded.model.cfg.res
        device = ctx.device
        to_crop = np.stack([f.to_crop for f in faces])
        from_crop = np.stack([f.from_crop for f in faces])
        # Work in the plate window the faces cover: the same affines with the window's origin moved to 0.
        y0, y1, x0, x1 = plate_window(from_crop, res, (plate.height, plate.width))
        to_crop[:, :, 2] += to_crop[:, :, :2] @ np.array([x0, y0], dtype=np.float64)
        from_crop[:, :, 2] -= np.array([x0, y0], dtype=np.float64)
        rgb_plate = plate.tensor[:3, y0:y1, x0:x1].float()
        plate_crops = warp_to_crop(rgb_plate, to_crop, res, padding_mode="border")          # (N, 3, R, R) linear
        model_in = _to_encoding(plate_crops, ctx.working_space, "srgb").clamp(0.0, 1.0)
        swap_srgb, pred_mask = swap_faces(loaded, model_in.to(device))
        ctx.check_cancelled()
        swap = _to_encoding(swap_srgb, "srgb", ctx.working_space).to(plate_crops.device)
        hull = torch.stack([render_crop_mask(f, "face_hull", res, device=swap.device) for f in faces])
        mask = crop_masks(pred_mask.to(swap.device), hull, self.value("mask_source", ctx.frame),
                          self.value("erode", ctx.frame) * res / 100.0, self.value("feather", ctx.frame) * res / 100.0)
        if self.value("blend", ctx.frame) == "seamless":
            swap = seamless_correction(plate_crops, swap, mask)
        metadata = dict(plate.metadata, **self._provenance(loaded.meta, loaded.digest, path, len(faces)))

        if output == "swapped crop":
            tiles = torch.cat(list(swap), dim=2)                                             # (3, R, N R)
            return Image(tiles.to(plate.tensor.dtype).contiguous(), metadata=metadata)

        placed, _ = warp_from_crop(torch.cat([swap * mask, mask], 1), from_crop, (y1 - y0, x1 - x0))
        if output == "mask":
            alpha = torch.zeros_like(plate.tensor[:1], dtype=placed.dtype)
            window_alpha = alpha[:, y0:y1, x0:x1]
            for i in range(placed.shape[0]):   # 'over' accumulation: a tiny alpha stays non-zero
                window_alpha.copy_(window_alpha + placed[i, 3:] * (1.0 - window_alpha))
            return plate.replace(tensor=alpha.expand(3, -1, -1).to(plate.tensor.dtype).contiguous(),
                                 channels=("R", "G", "B"), metadata=metadata)
        out = plate.tensor.float().clone()
        window = out[:, y0:y1, x0:x1]   # a view: compositing into it fills out
        alpha_index = plate.channels.index("A") if "A" in plate.channels else None
        for i in range(placed.shape[0]):
            colour, alpha = placed[i, :3], placed[i, 3:]
            inside = alpha > 0
            # only where the face lands: elsewhere the plate's values are kept bit for bit
            window[:3] = torch.where(inside, window[:3] * (1.0 - alpha) + colour, window[:3])
            if alpha_index is not None:
                a = window[alpha_index:alpha_index + 1]
                a.copy_(torch.where(inside, a * (1.0 - alpha) + alpha, a))
        return plate.replace(tensor=out.to(plate.tensor.dtype), metadata=metadata)


__all__ = ["SwapModel", "crop_masks", "seamless_correction", "parse_tracks", "plate_window"]

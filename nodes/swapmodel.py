"""SwapModel: render the faces of the plate as the model's target identity and composite them back.

Per frame, for each chosen face (``Image.faces`` from FaceDetect): warp the plate into the model's aligned
crop (anti-aliased), convert it from the scene-linear working space to the model's display encoding
(sRGB, like the faceset crops it learned from), decode it as the target identity (A->B), convert back to
linear, and warp colour and mask onto the plate with the exact inverse transform, composited with ``over``
in linear light. Outside the (feathered) mask the output is the plate, bit for bit; a frame without a chosen
face is the plate unchanged. ``plate_mouth`` also holds the new face out of the plate's mouth opening (inside
the inner lip line), so the plate's teeth and tongue stay: a compositor's fix for a model that draws the
opening smaller and softer than the plate actor's (bench/RESULTS.md, session 6: mouth r up, identity and
stability down a little, so it is off by default).

Temporal stability (bench/RESULTS.md, 2026-11-29; the maths in :mod:`doublure.faces.temporal`): ``stabilise``
makes the crop transform follow the plate's skin (the face fits of +-N frames carried to this frame by the
plate's optical flow and averaged); ``temporal`` blends the decoded faces of +-N frames in the aligned crop,
``temporal_align`` (flow) first moving each neighbour's face onto this frame's; ``holds`` computes a repeated
plate frame's swap at the frame it repeats, so the face holds with the head, and marks the faces it passes on
(``Face.repeats``) for the finishing nodes to hold too. The output at a frame therefore reads the plate
(and its faces) at the frames around it, and hashes them. The output carries each swapped face as it was
placed (landmarks moved with the stabilised crop, :func:`doublure.faces.temporal.placed_face`) and with the alpha it was composited
with (``Face.coverage``), so the finishing nodes below act where the swap is and only on it: with the
tracker's landmarks their face regions trailed a fast head and recoloured off the swap, and with the face
hull they also recoloured and re-grained the plate wherever it showed through the mask.

The model is loaded once per process and device and shared (keyed by its content digest, which is also
what this node hashes). Every output frame carries provenance metadata: ``doublure/synthetic_face``, the
model's name and digest and its rights reference, which Write puts into every frame header. A model whose
rights record is missing or expired loads with a loud warning (log and ``doublure/rights_warning``).
"""
from __future__ import annotations

import dataclasses

import numpy as np
import torch

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, register_node, with_warning
from doublure.engine import colour as engine_colour
from doublure.engine import knobs as K
from doublure.faces.align import plate_crops, plate_window, warp_from_crop
from doublure.faces.composite import (MASK_SOURCES, crop_masks, over_alpha, over_plate, seamless_correction,
                                      to_encoding)
from doublure.faces.face import MAX_REPEATS, Coverage, affine_scale
from doublure.faces.masks import render_crop_mask
from doublure.faces.occlusion import occlusion_in_window
from doublure.faces.temporal import PlateFaces, aligned_blend, temporal_weights
from doublure.models.dbm import (ModelFileError, consent_problems, model_digest, read_meta, rights_problems,
                                 rights_reference)
from doublure.models.detail import enhance_faces
from doublure.models.face_fit import DETAIL_FROM, face_fit_warning, plate_side
from doublure.models.infer import decoded_face, reserve_decoded, shared_model
from doublure.models.references import SHAPE_AMOUNT, reference_swap

from ._finish import region_mask

TEMPORAL_ALIGN = ("none", "flow")
BLEND_MODES = ("alpha", "seamless")
OUTPUTS = ("composite", "swapped crop", "mask")
DETAIL_MODES = ("auto", "off")
DIRECTIONS = ("A->B", "A->A")


def parse_tracks(text: str) -> set[int] | None:
    """``"all"`` (or empty) -> None; ``"0, 2"`` -> {0, 2}. Raises ValueError on anything else."""
    text = text.strip().lower()
    if text in ("", "all"):
        return None
    return {int(part) for part in text.replace(" ", "").split(",") if part}


@register_node
class SwapModel(Node):
    """Replace the plate's faces with an identity model's target actor."""

    type_name = "SwapModel"
    version = 4
    category = "Face"
    inputs = (Port("plate", "Image"),)
    knob_specs = (
        K.File("model", default="", pattern="*.dbm *.zip", label="model",
               tooltip="The identity model (.dbm) from `doublure train`."),
        K.String("tracks", default="all", tooltip="Face tracks to replace: 'all' or comma-separated track ids."),
        K.Enum("direction", DIRECTIONS, default="A->B",
               tooltip="A->B: render the plate actor (A) as the model's target actor (B). A->A: the plate "
                       "actor as the model draws her, to check what it learned of her expression and light "
                       "apart from the identity change (where A->A follows a blink or an open mouth and "
                       "A->B does not, the target's faceset lacks that expression)."),
        K.Enum("mask_source", MASK_SOURCES, default="both", label="mask source",
               tooltip="The model's predicted mask, the landmark face hull, or both multiplied."),
        K.Float("erode", default=0.0, min=-20.0, max=20.0, soft_min=-5.0, soft_max=5.0, label="erode (% of face)",
                tooltip="Shrink (positive) or grow (negative) the mask, in percent of the face crop."),
        K.Float("feather", default=1.5, min=0.0, max=20.0, soft_max=5.0, label="feather (% of face)",
                tooltip="Soften the mask edge (Gaussian sigma in percent of the face crop)."),
        K.Bool("plate_mouth", default=False, label="plate mouth",
               tooltip="Keep the plate's mouth opening (teeth, tongue, the dark inside): the new face is held "
                       "out inside the plate face's inner lip line. A model that never saw its actor's mouth "
                       "open that wide draws a smaller, softer opening."),
        K.Enum("blend", BLEND_MODES, default="alpha",
               tooltip="alpha: over in linear light; seamless: also cancel the colour step along the edge."),
        K.Int("stabilise", default=4, min=0, max=12, soft_max=8, animatable=False, label="stabilise (frames)",
              tooltip="Average the face fits of +- this many frames, carried along by the plate's optical flow, "
                      "into each frame's crop: the swap sticks to the moving skin. 0: the tracked fit alone."),
        K.Int("temporal", default=6, min=0, max=8, soft_max=8, animatable=False, label="temporal (frames)",
              tooltip="Blend the decoded faces of +- this many frames in the aligned crop (triangular weights): "
                      "less flicker. 0: this frame's face alone."),
        K.Bool("holds", default=True, label="follow held frames",
               tooltip="Where the plate repeats a frame (a frame-rate conversion, pulldown), repeat the swap: "
                       "the face holds with the head instead of drifting on through the repeated frames with "
                       "its neighbours' average. Only with stabilise or temporal above 0."),
        K.Enum("temporal_align", TEMPORAL_ALIGN, default="flow", label="temporal align",
               tooltip="none: blend the neighbours' faces as decoded in their crops; flow: first move each "
                       "onto this frame's face by the plate's optical flow (head turn, expression), leaving "
                       "out its pixels where the flow fails (occlusion): less ghosting."),
        K.Enum("detail", DETAIL_MODES, default="auto",
               tooltip="auto: where a plate face is larger than the model's crop and the model has a detail "
                       "stage (`doublure train --detail`), draw the face at the detail stage's size, with the "
                       "detail of the target's reference faces; off: the model's rendering alone, enlarged."),
        K.Float("detail_amount", default=1.0, min=0.0, max=1.0, label="detail amount",
                tooltip="How much of the detail stage's added detail to keep: 1 all of it, 0 the model's "
                        "rendering enlarged to the same size (skin, creases and lashes fade with it)."),
        K.Enum("references", DETAIL_MODES, default="auto",
               tooltip="auto: where the model carries its target's reference faces (`doublure references`), draw "
                       "the face from them: the nearest in pose and expression warped onto the plate face's "
                       "landmarks, at the plate's size, lit like the plate; the model gives the mask (A->B only: "
                       "they are the target's faces). off: the model's rendering (on actors it never trained on, "
                       "a soft face)."),
        K.Float("target_shape", default=SHAPE_AMOUNT, min=0.0, max=1.0, label="target shape",
                tooltip="With the references: how far the plate face's eyes, nose and mouth move to the "
                        "target's proportions (its outline stays the plate's; the brows follow). 0: the plate actor's face shape, "
                        "1: the target's. Only where the references are posed like the plate face."),
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

    def _reach(self, frame: int) -> tuple[int, int]:
        """(stabilise, temporal) frames at ``frame``."""
        return int(self.value("stabilise", frame)), int(self.value("temporal", frame))

    def _follows_holds(self, frame: int) -> bool:
        return bool(self.value("holds", frame)) and sum(self._reach(frame)) > 0

    def _read_range(self, frame: int) -> tuple[int, int]:
        """(first, last) plate frame the output at ``frame`` reads: +-(stabilise + temporal) around the frame
        it is computed at, which a held frame moves back by up to MAX_REPEATS. Telling a held frame reads the
        pairs before and after each frame it steps back over, within that (holds need a reach of 1 or more)."""
        reach = sum(self._reach(frame))
        back = MAX_REPEATS if self._follows_holds(frame) else 0
        return frame - back - reach, frame + reach

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(self._model_identity())
        h.update(ctx.working_space).update(engine_colour.config_cache_id())
        first, last = self.graph.settings["first"], self.graph.settings["last"]
        lo, hi = self._read_range(ctx.frame)
        for f in range(max(lo, first), min(hi, last) + 1):
            if f != ctx.frame:
                h.update(f).update(self.input_hash(0, ctx.at(f)))   # plate pixels and faces around the frame

    # -- compute ------------------------------------------------------------------------------------
    def _model_path(self) -> str:
        path = self.path("model")
        if not path:
            raise DoublureError(f"{self.name}: no model file set (knob 'model')")
        return path

    def consent_problems(self, use: str) -> tuple[str, list[str]]:
        """(the model's name, what its rights record lacks for the project's declared ``use``): the render's
        consent check (``engine.provenance.consent``)."""
        path = self._model_path()
        meta = read_meta(path)
        return meta.get("name") or path, consent_problems(meta.get("rights"), use)

    def _provenance(self, meta: dict, digest: str, path: str, swapped: int, direction: str) -> dict:
        problems = rights_problems(meta.get("rights"))
        out = {"doublure/synthetic_face": swapped > 0, "doublure/synthetic_faces": swapped,
               "doublure/swap_direction": direction,
               "doublure/model": meta.get("name") or path, "doublure/model_digest": digest,
               "doublure/rights": rights_reference(meta.get("rights"))}
        if problems:
            out["doublure/rights_warning"] = "; ".join(problems)
        return out

    def _detail_wanted(self, loaded, faces, frame: int) -> bool:
        """Whether the model's detail stage draws these faces: it has one, the knob allows it and a face spans
        more plate pixels than :data:`DETAIL_FROM` times the model's crop."""
        if loaded.detail is None or self.value("detail", frame) == "off":
            return False
        return any(plate_side(f) > DETAIL_FROM * loaded.model.cfg.res for f in faces)

    def compute(self, ctx: EvalContext, inputs) -> Image:
        plate = inputs.get(0)
        path = self._model_path()
        output = self.value("output", ctx.frame)
        direction = self.value("direction", ctx.frame)
        try:
            tracks = parse_tracks(self.value("tracks", ctx.frame))
        except ValueError:
            raise DoublureError(f"{self.name}: knob 'tracks' must be 'all' or comma-separated track ids, "
                                f"got {self.value('tracks', ctx.frame)!r}") from None
        faces = [f for f in plate.faces if tracks is None or f.track_id in tracks]
        try:
            if not faces:
                meta, digest = read_meta(path), model_digest(path)
                metadata = dict(plate.metadata, **self._provenance(meta, digest, path, 0, direction))
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
        stabilise, temporal = self._reach(ctx.frame)
        align = self.value("temporal_align", ctx.frame)
        reserve_decoded((2 * temporal + 2) * len(faces))
        PlateFaces.reserve(len(faces), temporal)
        plate_faces = PlateFaces(lambda f: inputs.get(0, frame=f), lambda f: self.input_hash(0, ctx.at(f)),
                                 (self.graph.settings["first"], self.graph.settings["last"]))
        # each face is computed at the frame this one repeats, if it does: a held plate frame holds the swap
        keys = [plate_faces.held_from(ctx.frame, f) if self._follows_holds(ctx.frame) else (ctx.frame, f)
                for f in faces]
        tracks_near = [plate_faces.track(frame, f, stabilise + temporal) for frame, f in keys]
        faces = [plate_faces.stabilised(frame, near, stabilise) for (frame, _), near in zip(keys, tracks_near)]
        from_references = (loaded.references is not None and direction == "A->B"
                           and self.value("references", ctx.frame) == "auto")
        fit_warning = face_fit_warning(self.name, ctx.frame, faces, loaded, self.value("detail", ctx.frame) != "off",
                                       ctx.proxy, from_references)
        to_crop = np.stack([f.to_crop for f in faces])
        from_crop = np.stack([f.from_crop for f in faces])
        # Work in the plate window the faces cover: the same affines with the window's origin moved to 0.
        y0, y1, x0, x1 = plate_window(from_crop, res, (plate.height, plate.width))
        from_crop[:, :, 2] -= np.array([x0, y0], dtype=np.float64)
        swaps, masks, windows = [], [], []
        for face, near, (frame, _) in zip(faces, tracks_near, keys):
            offsets = [d for d in range(-temporal, temporal + 1) if frame + d in near]
            around = {d: face if d == 0 else plate_faces.stabilised(frame + d, near, stabilise)
                      for d in offsets}
            decoded = [decoded_face(loaded, direction, plate_faces.plate_at(frame + d), plate_faces.hash_at(frame + d),
                                    around[d], ctx.working_space, ctx.device) for d in offsets]
            weights, flows = temporal_weights(offsets, temporal), None
            if align == "flow" and len(offsets) > 1:
                flows = plate_faces.neighbour_flows(res, frame, around, ctx.device)
                rgb, m = aligned_blend(decoded, weights, [flows[d] for d in offsets])
            else:
                rgb = sum(float(w) * rgb for w, (rgb, _) in zip(weights, decoded))
                m = sum(float(w) * m for w, (_, m) in zip(weights, decoded))
            swaps.append(rgb)
            masks.append(m)
            windows.append(([(d, float(w), around[d]) for w, d in zip(weights, offsets)],
                            {f - frame: g for f, g in near.items()}, flows))
        ctx.check_cancelled()
        swap, pred_mask = torch.stack(swaps), torch.stack(masks)
        if not from_references and self._detail_wanted(loaded, faces, ctx.frame):
            # after the temporal blend, so the added detail is drawn once per frame on the steadied face
            swap, pred_mask = enhance_faces(loaded.detail, swap, pred_mask, float(self.value("detail_amount",
                                                                                              ctx.frame)))
            res = loaded.detail.cfg.out_res
        swap = to_encoding(swap, "srgb", ctx.working_space).to(plate.device)
        if from_references:   # the model's face is replaced (its mask is kept): its detail stage would be wasted
            swap, pred_mask, res = reference_swap(loaded.references, faces, windows, plate.tensor, pred_mask,
                                                  ctx.working_space,
                                                  shape=float(self.value("target_shape", ctx.frame)))
        hull = torch.stack([render_crop_mask(f, "face_hull", res, device=swap.device) for f in faces])
        mask = crop_masks(pred_mask.to(swap.device), hull, self.value("mask_source", ctx.frame),
                          self.value("erode", ctx.frame) * res / 100.0, self.value("feather", ctx.frame) * res / 100.0)
        if self.value("blend", ctx.frame) == "seamless":
            swap = seamless_correction(plate_crops(plate.tensor, to_crop, res), swap, mask)
        metadata = dict(plate.metadata, **self._provenance(loaded.meta, loaded.digest, path, len(faces), direction))
        if fit_warning:   # a face far smaller than the crop, or enlarged past what the model draws
            metadata = with_warning(plate.replace(metadata=metadata), self.name, fit_warning).metadata
        if output == "swapped crop":
            tiles = torch.cat(list(swap), dim=2)                                             # (3, R, N R)
            return Image(tiles.to(plate.dtype).contiguous(), metadata=metadata)

        placed, _ = warp_from_crop(torch.cat([swap * mask, mask], 1), from_crop, (y1 - y0, x1 - x0))
        if self.value("plate_mouth", ctx.frame):
            # drawn at the plate's resolution (the crop holds the opening in a few of its pixels), its edge
            # as soft as the new face's own detail there: half a crop pixel. The mask's feather would be
            # wider than a mouth's opening, and the plate's teeth would only show through half.
            for i, face in enumerate(faces):
                opening = region_mask(face, "mouth_inner", (y0, y1, x0, x1), placed.device,
                                      feather=0.5 * affine_scale(face.from_crop) / res)
                keep = 1.0 - opening
                # the blur's weights sum to 1 within float rounding: its core is the plate, bit for bit
                placed[i] *= torch.where(keep < 1e-6, 0.0, keep)
        # what stands in front of a face (the Occlusion node's matte on this frame's plate) keeps the plate
        in_front = {f.track_id: f for f in plate.faces}
        for i, face in enumerate(faces):
            placed[i] *= 1.0 - occlusion_in_window(in_front.get(face.track_id, face), (y0, y1, x0, x1), placed.device)
        swapped = {f.track_id: dataclasses.replace(f, repeats=ctx.frame - frame,
                                                   coverage=Coverage((y0, y1, x0, x1), placed[i, 3:].clone()))
                   for i, (f, (frame, _)) in enumerate(zip(faces, keys))}
        out_faces = [swapped.get(f.track_id, f) for f in plate.faces]
        if output == "mask":
            alpha = over_alpha(plate, placed, (y0, y1, x0, x1))
            return plate.replace(tensor=alpha.expand(3, -1, -1).to(plate.dtype).contiguous(),
                                 channels=("R", "G", "B"), metadata=metadata, faces=out_faces)
        return over_plate(plate.replace(metadata=metadata, faces=out_faces), placed, (y0, y1, x0, x1))


__all__ = ["SwapModel", "parse_tracks"]

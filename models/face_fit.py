"""How the plate's faces fit an identity model's crop, and what a swap tells when they fit badly.

A plate face spans ``side`` plate pixels across the model's aligned crop (``1 / affine_scale(to_crop)``). The
model reads it at its resolution R and draws it at R, or at its detail stage's output side S where that
stage runs. Two misfits are worth a warning on the node (and one log line), since neither shows as an error:

- a face far smaller than the crop (under :data:`SMALL_FACE` x R: a wide shot, a plate at a fraction of its
  size) is enlarged more than any face the model learned before it reads it (faceset extraction keeps faces
  at least half their crop, ``ExtractOptions.min_face_ratio``), so its expression and light come from a few
  plate pixels, and what the model draws from them is soft (a 1080p plate at 1/8: a face 30 px across a
  64 px crop lost its eyes and mouth; no resampling filter of the plate's pixels changed that, bicubic or
  bilinear, measured against the full-size plate's swap). The swap is still drawn, reduced to the plate's
  size by the anti-aliased warp: a wide shot needs its face replaced too;
- a face larger than the swap is drawn (over :data:`DETAIL_FROM` x the drawn side) comes out enlarged and
  softer than the plate: the model has no detail stage, its stage was left out (trained on other identity
  weights, ``LoadedModel.detail_note``), or the face is larger than even the stage's output. With the
  ``detail`` knob off the enlargement is the user's choice and goes unsaid.

Sizes are judged at full resolution (a proxy's faces divided by its scale), so the viewer at a proxy warns of
what the render will do.
"""
from __future__ import annotations

import logging
import threading
from typing import Sequence

from doublure.faces.face import Face, affine_scale

from .dbm import LoadedModel

log = logging.getLogger("doublure.models")

SMALL_FACE = 0.5
"""A plate face spanning less than this fraction of the model's crop side is read enlarged more than 2x."""
DETAIL_FROM = 1.25
"""The detail stage draws a face spanning more than this many times the model's crop side: below it the
model's own rendering already holds about as many pixels as the plate shows."""

_logged: set[tuple] = set()
_logged_lock = threading.Lock()


def plate_side(face: Face, proxy: float = 1.0) -> float:
    """Plate pixels across the face's aligned crop, at full resolution (``proxy``: the plate's scale)."""
    return 1.0 / affine_scale(face.to_crop) / proxy


def face_fit_warning(node: str, frame: int, faces: Sequence[Face], loaded: LoadedModel, detail_on: bool,
                     proxy: float = 1.0, references: bool = False) -> str:
    """The warning a swap of ``faces`` carries (see the module's note), or "" when they fit. Each kind of
    warning is also logged, once per node and model resolution in a process (a render would repeat it on
    every frame).

    Args:
        node: the node's name, for the message.
        frame: the frame, for the message.
        faces: the faces swapped (``to_crop``, ``track_id``).
        loaded: the model (its resolution, detail stage and why it has none).
        detail_on: whether the node lets the detail stage run (its ``detail`` knob is not "off").
        proxy: the plate's scale against full resolution.
        references: the faces are drawn from the model's reference faces (:mod:`doublure.models.references`):
            at the plate's size whatever the model's crop, as sharp as the references are large.

    Returns:
        The warning, one sentence per misfit, or "".
    """
    if not faces:
        return ""
    res = loaded.model.cfg.res
    sides = [(plate_side(f, proxy), f.track_id) for f in faces]
    notes = []
    small, track = min(sides)
    if small < SMALL_FACE * res and not references:
        notes.append(("small", f"face {track} spans only {small:.0f} px across the model's {res} px crop: the "
                               f"model reads it enlarged {res / small:.1f}x, from fewer pixels than the faces it "
                               f"learned, and may draw it soft and miss its expression; the swap is drawn reduced "
                               f"to the plate"))
    large, track = max(sides)
    drawn = loaded.detail.cfg.out_res if loaded.detail is not None else res
    if references:
        drawn = loaded.references.size
    if (detail_on or references) and large > DETAIL_FROM * drawn:
        if references:
            why = f"its reference faces are {drawn} px: `doublure references` with a faceset extracted larger"
        elif loaded.detail is not None:
            why = f"larger than the {drawn} px its detail stage draws"
        elif loaded.meta.get("detail"):
            why = loaded.detail_note
        else:
            why = "the model has no detail stage: `doublure train --detail` trains one on the target's faces"
        notes.append(("soft", f"face {track} spans {large:.0f} px but the swap is drawn at {drawn} px and "
                              f"enlarged {large / drawn:.1f}x, softer than the plate ({why})"))
    if not notes:
        return ""
    message = f"{node}: frame {frame}: " + "; ".join(text for _, text in notes)
    with _logged_lock:
        fresh = [kind for kind, _ in notes if (node, kind, res, drawn) not in _logged]
        _logged.update((node, kind, res, drawn) for kind in fresh)
    if fresh:
        log.warning("%s (said once per node)", message)
    return message


__all__ = ["DETAIL_FROM", "SMALL_FACE", "face_fit_warning", "plate_side"]

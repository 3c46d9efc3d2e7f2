"""The layers a Write puts beside the comp in one EXR for a compositor finishing in Nuke.

- ``R G B A``: the comp, as without the layers.
- ``face.R face.G face.B face.A``: the swapped face patch premultiplied by its matte: ``face.A`` is the
  alpha each face was composited with (``Face.coverage``, the faces of one frame combined 'over'), and
  ``face.RGB`` the comp's colour times it. In Nuke, ``face`` over the plate rebuilds the swap; the matte
  alone grades, softens or limits it.
- header attribute ``doublure:face_transforms``: per face, its track id, box, and the 2x3 affine
  transforms between plate pixels and the aligned crop (``to_crop``, ``from_crop``), the transform a
  compositor needs to track or warp something onto the face.
"""
from __future__ import annotations

import torch

FACE_LAYER = ("face.R", "face.G", "face.B", "face.A")
TRANSFORMS_KEY = "doublure/face_transforms"


def face_matte(faces: list, height: int, width: int, device: torch.device) -> torch.Tensor:
    """Where the swap replaced the plate: the faces' coverage alphas combined 'over'.

    Args:
        faces: the frame's faces (``doublure.faces.Face``); those without coverage (not swapped) add nothing.
        height, width: the frame's size.

    Returns:
        (1, height, width) float32 in [0, 1], 0 where no face was swapped.
    """
    matte = torch.zeros(1, height, width, dtype=torch.float32, device=device)
    for face in faces:
        coverage = getattr(face, "coverage", None)
        if coverage is None:
            continue
        y0, y1, x0, x1 = coverage.window
        region = matte[:, y0:y1, x0:x1]
        alpha = coverage.alpha.to(device=device, dtype=torch.float32)
        region.copy_(region + alpha * (1.0 - region))
    return matte


def face_layer(comp_rgb: torch.Tensor, matte: torch.Tensor) -> torch.Tensor:
    """The face patch premultiplied by its matte.

    Args:
        comp_rgb: (3, H, W) the comp's colour in the file's colour space.
        matte: (1, H, W) from :func:`face_matte`.

    Returns:
        (4, H, W): face.R, face.G, face.B (the comp times the matte) and face.A (the matte).
    """
    return torch.cat([comp_rgb * matte, matte])


def face_transforms(faces: list) -> list[dict]:
    """Per face: ``track_id``, ``box`` (x0, y0, x1, y1 plate pixels), ``to_crop`` and ``from_crop`` (2x3
    affines, plate pixels <-> aligned crop pixels) and ``swapped`` (whether the swap replaced it)."""
    return [{"track_id": int(face.track_id), "box": [float(v) for v in face.box],
             "to_crop": [[float(v) for v in row] for row in face.to_crop],
             "from_crop": [[float(v) for v in row] for row in face.from_crop],
             "swapped": getattr(face, "coverage", None) is not None} for face in faces]

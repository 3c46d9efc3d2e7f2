"""A watermark in the pixels of a swapped face, in the face's aligned space, so a copy stripped of every header
and manifest (a re-encode, a screenshot, a crop to the face) still tells a synthetic face and its payload.

Design (measured against ``invisible-watermark``'s dwtDct/dwtDctSvd, which lose their bits to a 50% downscale
or a crop and take 260-700 ms a 1080p frame: bench/RESULTS.md, issue 24):

* **Where.** The mark lives in the canonical aligned crop (``whole_face`` framing, fitted to the landmarks by
  :func:`faces.align.estimate_to_crop`), a ``GRID`` px square; inside the face oval of the template, feathered,
  and in the frame only where the swap replaced the plate (``Face.coverage``). A reader finds the face again
  with the landmark detector, so a crop to the face, a downscale or a shift keeps the mark's geometry.
* **What.** Spread spectrum: ``1 + PAYLOAD_BITS + CHECK_BITS`` orthonormal patterns, each a random +-1 field on
  ``CELLS`` x ``CELLS`` chips, smoothed to the grid (low and mid frequencies: what survives H.264, JPEG and a
  downscale) and orthogonalised inside the mask. Pattern 0 is the sync (always +1); the others carry the 32-bit
  payload (16 bits of the model's digest, 16 of the render's id) and its CRC-8.
* **How.** Multiplicative on R, G and B alike: ``x * (1 + strength * W)`` with ``W`` the signed sum of the
  patterns, scaled to unit RMS in the mask; a relative change, the same in any colour encoding (a linear file
  gets ``LINEAR_GAIN`` times the strength so that it reads the same once encoded for display).
* **Reading.** The aligned crop's luma divided by its local mean, minus one (the face's own shading gone, the
  mark left as it was added), correlated with the patterns. The noise of a correlation is measured on the same
  crop with ``DECOYS`` random patterns built the same way, so the sync's z-score means the same on any face.
  Found: sync z >= ``SYNC_Z`` and the CRC matches. Several frames of a movie add their correlations.
"""
from __future__ import annotations

import dataclasses
import functools
import hashlib
import math
from typing import Iterable, Sequence

import cv2
import numpy as np
import torch

from .align import estimate_to_crop, plate_to_crop_pixel, template_in_crop, warp_affine, warp_to_crop
from .face import Face
from .masks import FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS_OUTER, RIGHT_BROW, RIGHT_EYE

GRID = 64                 # aligned crop side, px, the mark is designed in
CELLS = 16                # random chips per side: 4 aligned px each (a 200 px face: ~15 plate px)
PAYLOAD_BITS = 32
CHECK_BITS = 8
DECOYS = 96
SEED = 0x5D0B1E24         # fixed: every Doublure build writes and reads the same patterns
STRENGTH = 0.02           # RMS relative change of the face's pixels (about 3 codes of 8-bit skin)
LINEAR_GAIN = 2.2         # a relative change in linear light shrinks by the display encoding's exponent
SYNC_Z = 5.0              # sync z-score that says "marked" (with the CRC): 3e-7 a face by chance, then 1/256
_HIGHPASS_SIGMA = 6.0     # aligned px: the local mean the reader divides by


@dataclasses.dataclass(frozen=True)
class Reading:
    """What :func:`read_crops` found.

    Attributes:
        found: the sync is there and the payload's CRC matches.
        sync_z: the sync pattern's correlation in units of the decoys' spread (unmarked faces: about N(0, 1)).
        payload: the 32-bit payload read (meaningful when ``found``).
        crc_ok: the payload's CRC-8 matches its check bits.
        faces: how many aligned crops were read together.
    """

    found: bool
    sync_z: float
    payload: int
    crc_ok: bool
    faces: int


def crc8(value: int, bits: int = PAYLOAD_BITS) -> int:
    """CRC-8 (polynomial 0x07) of the low ``bits`` bits of ``value``, most significant first."""
    crc = 0
    for i in range(bits - 1, -1, -1):
        crc ^= ((value >> i) & 1) << 7
        crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def make_payload(model_digest: str, render_id: str) -> int:
    """The 32-bit payload: the first 16 bits of the model's digest (hex) and of the render's id (any text).

    Args:
        model_digest: the model's content digest, hex (``doublure/model_digest``).
        render_id: what names the render (``render_id`` of :mod:`doublure.engine.provenance`).

    Returns:
        int in [0, 2**32).
    """
    model = int(hashlib.sha256(model_digest.encode()).hexdigest()[:4], 16) if model_digest else 0
    render = int(hashlib.sha256(render_id.encode()).hexdigest()[:4], 16)
    return (model << 16) | render


def payload_ids(payload: int) -> tuple[str, str]:
    """(model tag, render tag) of a payload as 4 hex digits each, as :func:`payload_tags` gives them."""
    return f"{payload >> 16:04x}", f"{payload & 0xFFFF:04x}"


def payload_tags(model_digest: str, render_id: str) -> tuple[str, str]:
    """The (model tag, render tag) a payload made from these carries, for matching a reading to a record."""
    return payload_ids(make_payload(model_digest, render_id))


# The lower nose (nostrils, alar creases): dark, sharp and the same on every face, like the eyes and lips.
_NOSE = (48, 64, 98, 97, 2, 326, 327, 294, 278, 344, 440, 275, 4, 45, 220, 115)


@functools.lru_cache(maxsize=1)
def _mask() -> np.ndarray:
    """(GRID, GRID) float32 in [0, 1]: the skin of the template's face (its oval shrunk to 88% about its
    centre, less the eyes with brows, the lips and the nostrils, each grown), feathered. Eyes, lips, nostrils and
    the face's edge hold most of a face's own contrast at the mark's scale, and every face has them in the same
    aligned place: outside them the host's share of a correlation drops several times."""
    points = template_in_crop("whole_face") * GRID * 4 - 1.5
    oval = points[list(FACE_OVAL)]
    centre = oval.mean(0)
    hard = np.zeros((GRID * 4, GRID * 4), np.uint8)
    cv2.fillPoly(hard, [np.round((oval - centre) * 0.88 + centre).astype(np.int32)], 255)
    features = np.zeros_like(hard)
    for part in (LEFT_EYE + LEFT_BROW, RIGHT_EYE + RIGHT_BROW, LIPS_OUTER, _NOSE):
        cv2.fillPoly(features, [cv2.convexHull(np.round(points[list(part)]).astype(np.int32))], 255)
    features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * 5, 4 * 5)))
    hard[features > 0] = 0
    mask = cv2.resize(hard.astype(np.float32) / 255.0, (GRID, GRID), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(mask, (0, 0), 1.0)


def _chip_fields(rng: np.random.Generator, count: int) -> np.ndarray:
    """(count, GRID*GRID) random +-1 chips on CELLS x CELLS, smoothed to the grid (bicubic)."""
    chips = rng.choice(np.array([-1.0, 1.0], np.float32), size=(count, CELLS, CELLS))
    return np.stack([cv2.resize(c, (GRID, GRID), interpolation=cv2.INTER_CUBIC) for c in chips]).reshape(count, -1)


@functools.lru_cache(maxsize=1)
def _patterns() -> tuple[np.ndarray, np.ndarray]:
    """(patterns (K, GRID*GRID) orthonormal inside the mask, decoys (DECOYS, GRID*GRID) of the same spectrum),
    float64, both already multiplied by the mask; K = 1 + PAYLOAD_BITS + CHECK_BITS."""
    rng = np.random.default_rng(SEED)
    mask = _mask().reshape(-1).astype(np.float64)
    fields = _chip_fields(rng, 1 + PAYLOAD_BITS + CHECK_BITS).astype(np.float64) * mask
    q, _ = np.linalg.qr(fields.T)                 # orthonormal columns spanning the masked fields, in order
    patterns = q.T * np.sign(np.sum(q.T * fields, axis=1, keepdims=True))
    decoys = _chip_fields(rng, DECOYS).astype(np.float64) * mask
    decoys /= np.linalg.norm(decoys, axis=1, keepdims=True)
    return patterns, decoys


def _bits(payload: int) -> np.ndarray:
    """(K,) +-1: the sync, the payload's bits (most significant first), then its CRC-8."""
    word = (payload << CHECK_BITS) | crc8(payload)
    total = PAYLOAD_BITS + CHECK_BITS
    return np.array([1.0] + [1.0 if (word >> (total - 1 - i)) & 1 else -1.0 for i in range(total)])


@functools.lru_cache(maxsize=16)
def mark_field(payload: int) -> torch.Tensor:
    """The mark for ``payload`` in aligned space.

    Args:
        payload: 32-bit int (:func:`make_payload`).

    Returns:
        (1, 1, GRID, GRID) float32 CPU tensor, unit RMS inside the mask, zero outside it.
    """
    if not 0 <= payload < 2 ** PAYLOAD_BITS:
        raise ValueError(f"watermark payload {payload} is not a 32-bit unsigned value")
    patterns, _ = _patterns()
    field = _bits(payload) @ patterns
    mask = _mask().reshape(-1)
    field /= math.sqrt(float(np.sum(field ** 2 * mask) / np.sum(mask)))
    return torch.from_numpy(field.astype(np.float32)).view(1, 1, GRID, GRID)


def embed(planes: torch.Tensor, faces: Sequence[Face], payload: int, strength: float = STRENGTH) -> torch.Tensor:
    """Mark every swapped face of a frame, in place.

    Args:
        planes: (C >= 3, H, W) float pixels of the frame (any colour encoding, any device); R, G, B change.
        faces: the frame's faces; only those with a ``coverage`` (SwapModel's new faces) are marked, by the
            alpha the swap was composited with.
        payload: 32-bit int (:func:`make_payload`).
        strength: RMS relative change inside the face (``STRENGTH``; times ``LINEAR_GAIN`` for linear light).

    Returns:
        ``planes``, marked.
    """
    field = mark_field(payload).to(planes.device)
    for face in faces:
        if face.coverage is None:
            continue
        y0, y1, x0, x1 = face.coverage.window
        if y1 <= y0 or x1 <= x0:
            continue
        to_crop, _ = estimate_to_crop(face.landmarks, "whole_face")
        # window pixel (x, y) -> plate (x + x0, y + y0) -> aligned pixel at GRID px
        window_to_grid = plate_to_crop_pixel(to_crop, GRID)[0].clone()
        window_to_grid[:, 2] += window_to_grid[:, 0] * x0 + window_to_grid[:, 1] * y0
        mark = warp_affine(field[0], window_to_grid[None], (y1 - y0, x1 - x0))[0]
        alpha = face.coverage.alpha.to(device=planes.device, dtype=planes.dtype)
        gain = 1.0 + (strength * mark.to(planes.dtype)) * alpha
        planes[:3, y0:y1, x0:x1] *= gain
    return planes


def aligned_luma(rgb8: np.ndarray, landmarks: Iterable[np.ndarray]) -> np.ndarray:
    """The faces of an 8-bit RGB frame, aligned for reading the mark.

    Args:
        rgb8: (H, W, 3) uint8 RGB (display encoded, as files and screens hold it).
        landmarks: each face's (478, >=2) landmarks in that frame's pixels.

    Returns:
        (N, GRID, GRID) float32 luma in [0, 1].
    """
    luma = cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    fits = [estimate_to_crop(lm, "whole_face")[0] for lm in landmarks]
    if not fits:
        return np.zeros((0, GRID, GRID), np.float32)
    crops = warp_to_crop(torch.from_numpy(luma)[None], np.stack(fits), GRID, padding_mode="border")
    return crops[:, 0].numpy()


def _residual(crop: np.ndarray) -> np.ndarray:
    """(GRID*GRID,) float64: luma over its local mean, minus one (the face's shading removed)."""
    local = cv2.GaussianBlur(crop, (0, 0), _HIGHPASS_SIGMA) + 1e-3
    return (crop / local - 1.0).astype(np.float64).reshape(-1)


def read_crops(crops: np.ndarray) -> Reading:
    """Read the mark from aligned crops of one marked source (the faces of one frame or a movie's frames).

    Args:
        crops: (N, GRID, GRID) float luma from :func:`aligned_luma`; N may be 0.

    Returns:
        a :class:`Reading`; correlations of the N crops are summed before deciding.
    """
    patterns, decoys = _patterns()
    if len(crops) == 0:
        return Reading(False, 0.0, 0, False, 0)
    residuals = np.stack([_residual(np.asarray(c, np.float32)) for c in crops])
    scores = (residuals @ patterns.T).sum(0)
    spread = float(np.std((residuals @ decoys.T).sum(0))) + 1e-12
    bits = scores[1:] > 0
    word = 0
    for bit in bits:
        word = (word << 1) | int(bit)
    payload, check = word >> CHECK_BITS, word & 0xFF
    sync_z = float(scores[0] / spread)
    crc_ok = crc8(payload) == check
    return Reading(found=bool(sync_z >= SYNC_Z and crc_ok), sync_z=sync_z, payload=int(payload), crc_ok=crc_ok,
                   faces=len(crops))

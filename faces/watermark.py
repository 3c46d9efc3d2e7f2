"""A watermark in the pixels of a swapped face, in the face's aligned space, so a copy stripped of every header
and manifest (a re-encode, a screenshot, a crop to the face) still tells a synthetic face and its payload.

Design (``invisible-watermark``, measured first, loses its bits to a 50% downscale and to a crop and takes
260-700 ms a 1080p frame; a plain spread-spectrum mark here drowned in the face's own structure, which every
face shares in aligned space: bench/RESULTS.md, issue 24):

* **Where.** In the canonical aligned crop (``whole_face`` framing fitted to the landmarks by
  :func:`faces.align.estimate_to_crop`), ``GRID`` px square, on the skin of the template (the face oval less eyes,
  brows, lips and nostrils, which hold most of a face's own contrast), and in the frame only where the swap
  replaced the plate (``Face.coverage``). The writer fits the crop to the landmarks the swap placed the face by
  (``Face.landmarks``: no mesh of the written pixels, which cost it 5 of its 9 ms); the reader to the landmarks
  its detector finds on the copy (the same mesh model as FaceDetect's). The two fits differ by up to ~10% of
  scale (the mesh's answer depends on the path a face is found by: a whole frame, a crop), 3 degrees and 3
  aligned px, where the mark reads within about 0.3 px: a second layer tells the reader where the mark lies.
* **Registration.** A fixed word of ``REG_BITS`` on a coarser grid (``REG_GRID`` px, its relative detail
  against a wider local mean), written by the same passes as the mark and orthogonal to it to first order.
  The reader searches it over ``REG_SCALES`` x ``REG_TURNS`` x +-``REG_SEARCH`` quarter-px shifts
  (:func:`_register`), then reads the mark at the ``REG_CANDIDATES`` best places it found, each +-1 aligned px
  and a little scale and turn around (``SEARCH``, ``SCALES``, ``TURNS``).
* **What.** ``K = SYNC_BITS + PAYLOAD_BITS + CHECK_BITS`` orthonormal patterns (random +-1 chips on ``CELLS`` x
  ``CELLS``, smoothed, orthogonalised on the skin). The luma's relative detail (luma over its local mean, minus
  one) projected on each pattern is moved onto a lattice of step ``STEP`` (dither modulation, QIM): the lattice
  point of a 0 bit, or the one half a step away for a 1. The face's own detail is not noise to this code: the
  projection is moved to the nearest right point whatever it was. Sync bits are a fixed word; the payload is 16
  bits (8 of the model's digest, 8 of the render id) and its CRC-8, written twice: a code of 48 bits with a
  distance of 8 (an H.264 re-encode of a small face flips a bit or two of the 24, a crop to the face one).
* **How.** The change is relative and the same on R, G and B, ``x * (1 + M)``, computed on the display-encoded
  luma; a linear file gets ``(1 + M) ** LINEAR_GAIN``. The mark is worked out on the GRID px crop only
  (``WRITER_PASSES`` passes, each correcting what the last left off the lattice) and enlarged into the frame
  once.
* **Reading.** For each shift of the search, each pattern's distance to the lattice as ``cos(2 pi (p - dither) /
  STEP)``: +1 on a 0 bit's point, -1 on a 1 bit's, uniform on an unmarked face. The sync word's agreement,
  ``z = sum(sync * cos) / sqrt(n / 2)``, is about N(0, 1) on unmarked faces; found: ``z >= SYNC_Z`` at the
  best shift and the payload decoded. The decoder is maximum likelihood over all 2**16 codewords (the one
  the soft cosines agree with most), which then may differ from the bits read in at most ``MAX_ERRORS``
  (a random word is that close to some codeword with a chance of 4e-6). Several frames of a movie add their
  cosines.
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

from .align import estimate_to_crop, template_in_crop, warp_affine
from .face import Face, invert_affine
from .masks import FACE_OVAL, LEFT_BROW, LEFT_EYE, LIPS_OUTER, RIGHT_BROW, RIGHT_EYE

GRID = 64                 # aligned crop side, px, the mark is designed in
CELLS = 24                # random chips per side (2.7 aligned px each: ~10 px of a 200 px face)
SYNC_BITS = 32
PAYLOAD_BITS = 16
CHECK_BITS = 8
COPIES = 2                # the payload and its CRC are written this many times (a code of 48 bits, distance 8)
MAX_ERRORS = 3            # hard bit errors the decoder corrects (the code's distance, 8, allows 3)
STEP = 0.5                # lattice step of a projection (relative detail x aligned px)
SEED = 0x5D0B1E24         # fixed: every Doublure build writes and reads the same patterns
LINEAR_GAIN = 2.2         # a relative change in linear light shrinks by the display encoding's exponent
SYNC_Z = 5.0              # sync agreement that says "marked" (with the CRC)
OVERSAMPLE = 4            # the reader's search grid: 1/OVERSAMPLE aligned px
SEARCH = 4                # ... out to +-SEARCH/OVERSAMPLE aligned px in x and y
SCALES = (0.985, 1.0, 1.015)   # ... and these scales and turns (degrees) of the fit about the crop's centre
TURNS = (-1.0, 0.0, 1.0)
WRITER_PASSES = 3         # the writer's passes over the GRID px crop, each nearer the lattice (two left 4-bit errors)
_HIGHPASS_SIGMA = 3.0     # aligned px: the local mean the relative detail is taken against
# The registration layer (the module's notes): where the writer's fit lies from the reader's.
REG_GRID = 32             # its aligned crop side, px (each px: 2 x 2 of the mark's)
REG_CELLS = 12            # random chips per side (5.3 of the mark's aligned px each)
REG_BITS = 64
REG_STEP = 0.2            # lattice step of its projections
REG_SIGMA = 3.0           # its local mean, REG_GRID px
REG_OVERSAMPLE = 8        # the reader's registration grid: 1/REG_OVERSAMPLE of its px (1/4 aligned px)
REG_SEARCH = 14           # ... out to +-REG_SEARCH/REG_OVERSAMPLE of its px (+-3.5 aligned px) in x and y
REG_SCALES = tuple(np.linspace(0.88, 1.12, 17))   # ... and these scales and turns (degrees) of the reader's fit
REG_TURNS = tuple(np.linspace(-3.15, 3.15, 8))
REG_CANDIDATES = 2        # the best places it finds (each at least an aligned px from the others) read for the mark
_LUMA = (0.299, 0.587, 0.114)   # as cv2's RGB2GRAY, the reader's luma
# The lower nose (nostrils, alar creases): dark, sharp and the same on every face, like the eyes and lips.
_NOSE = (48, 64, 98, 97, 2, 326, 327, 294, 278, 344, 440, 275, 4, 45, 220, 115)


@dataclasses.dataclass(frozen=True)
class Reading:
    """What :func:`read_crops` found.

    Attributes:
        found: the sync word is there (``sync_z >= SYNC_Z``) and the payload's CRC matches.
        sync_z: the sync word's agreement at the best shift (unmarked faces: about N(0, 1), a little more
            for the best of the search's shifts).
        payload: the 16-bit payload read (meaningful when ``found``).
        errors: how many of the coded bits read differ from the payload's codeword (found: at most
            ``MAX_ERRORS``).
        faces: how many faces were read together.
    """

    found: bool
    sync_z: float
    payload: int
    errors: int
    faces: int


def crc8(value: int, bits: int = PAYLOAD_BITS) -> int:
    """CRC-8 (polynomial 0x07) of the low ``bits`` bits of ``value``, most significant first."""
    crc = 0
    for i in range(bits - 1, -1, -1):
        crc ^= ((value >> i) & 1) << 7
        crc = ((crc << 1) ^ 0x07) & 0xFF if crc & 0x80 else (crc << 1) & 0xFF
    return crc


def make_payload(model_digest: str, render_id: str) -> int:
    """The 16-bit payload: 8 bits from the model's digest, 8 from the render's id.

    Args:
        model_digest: the model's content digest, hex (``doublure/model_digest``).
        render_id: what names the render (the project's name and the Write's file).

    Returns:
        int in [0, 2**16).
    """
    model = hashlib.sha256(model_digest.encode()).digest()[0]
    render = hashlib.sha256(render_id.encode()).digest()[0]
    return (model << 8) | render


def payload_ids(payload: int) -> tuple[str, str]:
    """(model tag, render tag) of a payload, 2 hex digits each."""
    return f"{payload >> 8:02x}", f"{payload & 0xFF:02x}"


@functools.lru_cache(maxsize=1)
def _mask() -> np.ndarray:
    """(GRID, GRID) float32 in [0, 1]: the template face's skin (see the module's notes), feathered."""
    points = template_in_crop("whole_face") * GRID * 4 - 1.5
    oval = points[list(FACE_OVAL)]
    centre = oval.mean(0)
    hard = np.zeros((GRID * 4, GRID * 4), np.uint8)
    cv2.fillPoly(hard, [np.round((oval - centre) * 0.88 + centre).astype(np.int32)], 255)
    features = np.zeros_like(hard)
    for part in (LEFT_EYE + LEFT_BROW, RIGHT_EYE + RIGHT_BROW, LIPS_OUTER, _NOSE):
        cv2.fillPoly(features, [cv2.convexHull(np.round(points[list(part)]).astype(np.int32))], 255)
    features = cv2.dilate(features, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (4 * 3, 4 * 3)))
    hard[features > 0] = 0
    mask = cv2.resize(hard.astype(np.float32) / 255.0, (GRID, GRID), interpolation=cv2.INTER_AREA)
    return cv2.GaussianBlur(mask, (0, 0), 1.0)


@functools.lru_cache(maxsize=1)
def _code() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(patterns (K, GRID*GRID) float64 orthonormal on the skin, dithers (K,), sync word (SYNC_BITS,) of 0/1,
    the residual's gain on a pattern)."""
    rng = np.random.default_rng(SEED)
    count = SYNC_BITS + _CODED_BITS
    chips = rng.choice(np.array([-1.0, 1.0], np.float32), size=(count, CELLS, CELLS))
    fields = np.stack([cv2.resize(c, (GRID, GRID), interpolation=cv2.INTER_CUBIC) for c in chips]).reshape(count, -1)
    fields = fields.astype(np.float64) * _mask().reshape(-1)
    # none of them seen by the registration layer, nor seeing its field (to first order): the writer's passes
    # then settle both layers at once
    unseen = np.linalg.qr((_reg_crosstalk() * (_mask() > 0).reshape(-1)).T)[0]
    fields -= (fields @ unseen) @ unseen.T
    q, _ = np.linalg.qr(fields.T)
    patterns = q.T * np.sign(np.sum(q.T * fields, axis=1, keepdims=True))
    dithers = rng.uniform(0.0, STEP, count)
    sync = rng.integers(0, 2, SYNC_BITS)
    # how much of a pattern the residual (detail over its local mean) keeps: the mark is scaled up by it
    kept = [float(_residual_of(1.0 + 0.01 * p.reshape(GRID, GRID)) @ p) / 0.01 for p in patterns[:8]]
    return patterns, dithers, sync, float(np.mean(kept))


@functools.lru_cache(maxsize=1)
def _patterns32() -> np.ndarray:
    """The patterns of :func:`_code` in float32 (the writer's projections: half the time, precision to spare)."""
    return _code()[0].astype(np.float32)


def _residual_of(crop: np.ndarray) -> np.ndarray:
    """(GRID*GRID,) float64: luma over its local mean, minus one."""
    crop = np.asarray(crop, np.float32)
    local = cv2.GaussianBlur(crop, (0, 0), _HIGHPASS_SIGMA) + 1e-3
    return (crop / local - 1.0).astype(np.float64).reshape(-1)


_CODED_BITS = COPIES * (PAYLOAD_BITS + CHECK_BITS)


@functools.lru_cache(maxsize=1)
def _reg_blur() -> np.ndarray:
    """(REG_GRID, REG_GRID) float32: cv2's Gaussian blur of sigma REG_SIGMA along one axis of a REG_GRID px crop
    (its border included) as a matrix, so that many crops are blurred by two matrix products."""
    blur = np.empty((REG_GRID, REG_GRID), np.float32)
    for j in range(REG_GRID):
        impulse = np.zeros((REG_GRID, REG_GRID), np.float32)
        impulse[j] = 1.0   # constant along x: the blur along x leaves it, along y gives column j of the matrix
        blur[:, j] = cv2.GaussianBlur(impulse, (0, 0), REG_SIGMA)[:, 0]
    return blur


def _reg_residuals(crops: np.ndarray) -> np.ndarray:
    """(N, REG_GRID * REG_GRID) float32: the registration layer's relative detail of (N, REG_GRID, REG_GRID)
    luma crops (luma over its local mean, minus one)."""
    blur = _reg_blur()
    local = blur @ crops @ blur.T + 1e-3
    return (crops / local - 1.0).reshape(len(crops), -1)


def _reg_enlarged(field: np.ndarray) -> np.ndarray:
    """(GRID, GRID) float32: a REG_GRID px field enlarged bilinearly to the mark's grid (pixel edges kept: a
    registration pixel is 2 x 2 of the mark's, as the reader's 2 x 2 means take them)."""
    return cv2.resize(field, (GRID, GRID), interpolation=cv2.INTER_LINEAR)


def _reg_crosstalk() -> np.ndarray:
    """(2 * REG_BITS, GRID * GRID) float64: to first order (on a flat face), the mark's fields each registration
    pattern reads (its residual's adjoint, through the 2 x 2 means and the field's enlargement into the frame),
    and what the mark's residual makes of each registration pattern's field."""
    patterns = _reg_code()[0].reshape(REG_BITS, REG_GRID, REG_GRID).astype(np.float64)
    blur, kernel = _reg_blur().astype(np.float64), _enlarged_and_sampled().astype(np.float64)
    out = []
    for p in patterns:
        spread = np.repeat(np.repeat(p - blur.T @ p @ blur, 2, axis=0), 2, axis=1) / 4.0
        out.append(cv2.sepFilter2D(spread, -1, kernel, kernel))
    for p in patterns:
        field = cv2.sepFilter2D(_reg_enlarged(p.astype(np.float32)), -1, kernel.astype(np.float32),
                                kernel.astype(np.float32)).astype(np.float64)
        out.append(field - cv2.GaussianBlur(field, (0, 0), _HIGHPASS_SIGMA))
    return np.stack(out).reshape(2 * REG_BITS, -1)


@functools.lru_cache(maxsize=1)
def _reg_code() -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
    """(patterns (REG_BITS, REG_GRID**2) float32 orthonormal on the skin, dithers (REG_BITS,), the fixed word
    (REG_BITS,) of 0/1, the gain of a pattern through the writer's enlargement and the reader's residual)."""
    rng = np.random.default_rng(SEED + 1)
    chips = rng.choice(np.array([-1.0, 1.0], np.float32), size=(REG_BITS, REG_CELLS, REG_CELLS))
    fields = np.stack([cv2.resize(c, (REG_GRID, REG_GRID), interpolation=cv2.INTER_CUBIC) for c in chips])
    skin = cv2.resize(_mask(), (REG_GRID, REG_GRID), interpolation=cv2.INTER_AREA)
    fields = fields.reshape(REG_BITS, -1).astype(np.float64) * skin.reshape(-1)
    q, _ = np.linalg.qr(fields.T)
    patterns = (q.T * np.sign(np.sum(q.T * fields, axis=1, keepdims=True))).astype(np.float32)
    dithers = rng.uniform(0.0, REG_STEP, REG_BITS)
    word = rng.integers(0, 2, REG_BITS)
    probes = np.stack([cv2.resize(1.0 + 0.01 * _reg_enlarged(p.reshape(REG_GRID, REG_GRID)), (REG_GRID, REG_GRID),
                                  interpolation=cv2.INTER_AREA) for p in patterns[:8]])
    kept = np.sum(_reg_residuals(probes) * patterns[:8], axis=1) / 0.01
    return patterns, dithers, word, float(np.mean(kept))


@functools.lru_cache(maxsize=1)
def _crc8_tables() -> tuple[np.ndarray, np.ndarray]:
    """(256,) int64 each: the CRC-8 of a 16-bit value's low byte and of its high byte. CRC-8 with a zero start
    is linear: a value's check is the two XORed."""
    return (np.array([crc8(v) for v in range(256)], np.int64), np.array([crc8(v << 8) for v in range(256)], np.int64))


def _codewords(payloads: np.ndarray) -> np.ndarray:
    """(N, _CODED_BITS) 0/1: each payload (most significant bit first) and its CRC-8, ``COPIES`` times.

    Args:
        payloads: (N,) int64 16-bit payloads.
    """
    low, high = _crc8_tables()
    word = (payloads << CHECK_BITS) | (high[payloads >> 8] ^ low[payloads & 0xFF])
    bits = (word[:, None] >> np.arange(PAYLOAD_BITS + CHECK_BITS - 1, -1, -1)) & 1
    return np.tile(bits, COPIES)


@functools.lru_cache(maxsize=1)
def _codebook() -> np.ndarray:
    """(2**PAYLOAD_BITS, _CODED_BITS) float32: every payload's codeword as the reader's cosines read it (+1 for
    a 0 bit, -1 for a 1), for maximum-likelihood decoding."""
    return (1.0 - 2.0 * _codewords(np.arange(2 ** PAYLOAD_BITS, dtype=np.int64))).astype(np.float32)


@functools.lru_cache(maxsize=8)
def _bits(payload: int) -> np.ndarray:
    """(K,) 0/1, read-only (cached: a render marks every face with one payload): the sync word, then the
    payload's codeword (:func:`_codewords`)."""
    _, _, sync, _ = _code()
    bits = np.concatenate([sync, _codewords(np.array([payload], np.int64))[0]])
    bits.flags.writeable = False
    return bits


def _to_lattice(projections: np.ndarray, bits: np.ndarray, dithers: np.ndarray | None = None,
                step: float = STEP) -> np.ndarray:
    """(K,) how far each projection is from its bit's nearest lattice point (the mark's dithers and step unless
    given: the registration layer's)."""
    offset = (_code()[1] if dithers is None else dithers) + bits * (step / 2)
    return np.round((projections - offset) / step) * step + offset - projections


def _frame_to_grid(landmarks: np.ndarray) -> np.ndarray:
    """(2, 3) float64: frame pixel -> aligned pixel at GRID px, the fit made from the landmarks."""
    to_crop, _ = estimate_to_crop(landmarks, "whole_face")
    m = to_crop * GRID
    m[:, 2] -= 0.5
    return m


def _shifted(m: np.ndarray, x0: float, y0: float) -> np.ndarray:
    """(2, 3) the map ``m`` (to frame pixels) made to give pixels of the part of the frame starting at (x0, y0)."""
    out = m.copy()
    out[:, 2] -= (x0, y0)
    return out


def _display_luma(rgb: torch.Tensor, linear: bool) -> np.ndarray:
    """(H, W) float32 display-encoded luma of (3, H, W) pixels (linear light: encoded first, as files are)."""
    planes = rgb.float().cpu().numpy()
    if linear:
        planes = [cv2.pow(cv2.max(plane, 0.0), 1.0 / LINEAR_GAIN) for plane in planes]
    red_green = cv2.addWeighted(planes[0], _LUMA[0], planes[1], _LUMA[1], 0.0)
    return cv2.addWeighted(red_green, 1.0, planes[2], _LUMA[2], 0.0)


@functools.lru_cache(maxsize=1)
def _enlarged_and_sampled() -> np.ndarray:
    """(3,) the 1-D kernel a GRID px field goes through when enlarged bilinearly into the frame and sampled back
    as the crop samples it (a Gaussian of an aligned pixel's area): the tent of bilinear interpolation blurred by
    that Gaussian, at -1, 0 and +1 aligned px."""
    u = np.linspace(-4.0, 4.0, 8001)
    gauss = np.exp(-0.5 * u ** 2 * 12.0)
    taps = np.array([np.sum(np.clip(1.0 - np.abs(d - u), 0.0, None) * gauss) for d in (-1.0, 0.0, 1.0)])
    return (taps / taps.sum()).astype(np.float32)


def embed(planes: torch.Tensor, faces: Sequence[Face], payload: int, linear: bool = False) -> torch.Tensor:
    """Mark every swapped face of a frame, in place.

    Each face's aligned GRID px luma is sampled from the frame (a Gaussian of an aligned pixel's area, then
    bilinear: the area average the reader's box means take), aligned on the face's own landmarks (the swap's),
    and its projections, and the registration layer's on its 2 x 2 means, moved onto their bits' lattice
    points by a GRID px field. Further passes (``WRITER_PASSES`` in all), worked out in the GRID px crop alone,
    correct what the field's enlargement into the frame (:func:`_enlarged_and_sampled`), the coverage's soft
    edge and the residual's local mean leave off the lattice; the field is then enlarged into the face's window
    once.

    Args:
        planes: (C >= 3, H, W) float pixels of the frame, display-encoded (``linear=False``) or linear light;
            R, G and B change.
        faces: the frame's faces; those with a ``coverage`` (SwapModel's new faces) are marked, through the
            alpha the swap was composited with.
        payload: 16-bit int (:func:`make_payload`).
        linear: the planes are linear light (the mark is worked out on their display encoding).

    Returns:
        ``planes``, marked.
    """
    if not 0 <= payload < 2 ** PAYLOAD_BITS:
        raise ValueError(f"watermark payload {payload} is not a {PAYLOAD_BITS}-bit unsigned value")
    _, _, _, gain = _code()
    reg_patterns, reg_dithers, reg_word, reg_gain = _reg_code()
    patterns = _patterns32()
    bits = _bits(payload)
    kernel = _enlarged_and_sampled()
    h, w = planes.shape[-2:]
    for face in faces:
        if face.coverage is None:
            continue
        y0, y1, x0, x1 = face.coverage.window
        if y1 <= y0 or x1 <= x0:
            continue
        to_grid = _frame_to_grid(face.landmarks)
        to_frame = invert_affine(to_grid)
        # what the reader's crop sees of this face: the grid's footprint in the frame
        corners = np.array([[-1.0, -1.0, 1.0], [GRID, -1.0, 1.0], [-1.0, GRID, 1.0], [GRID, GRID, 1.0]]) @ to_frame.T
        rx0, ry0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
        rx1, ry1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
        if rx1 <= rx0 or ry1 <= ry0:
            continue
        luma = _display_luma(planes[:3, ry0:ry1, rx0:rx1], linear)
        sigma = math.sqrt(abs(np.linalg.det(to_frame[:, :2])) / 12.0)   # a box of an aligned pixel's side
        smooth = cv2.GaussianBlur(luma, (0, 0), sigma) if sigma > 0.25 else luma
        crop = cv2.warpAffine(smooth, _shifted(to_frame, rx0, ry0), (GRID, GRID),
                              flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        alpha = face.coverage.alpha.reshape(y1 - y0, x1 - x0).float().cpu().numpy()
        alpha_in_grid = cv2.warpAffine(alpha, _shifted(to_frame, x0, y0), (GRID, GRID),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        mark = np.zeros((GRID, GRID), np.float32)
        reg_mark = np.zeros((REG_GRID, REG_GRID), np.float32)
        marked = crop
        for _ in range(WRITER_PASSES):
            projections = patterns @ _residual_of(marked).astype(np.float32)
            mark += ((_to_lattice(projections, bits).astype(np.float32) @ patterns) / gain).reshape(GRID, GRID)
            means = cv2.resize(marked, (REG_GRID, REG_GRID), interpolation=cv2.INTER_AREA)
            reg_projections = reg_patterns @ _reg_residuals(means[None])[0]
            reg_error = _to_lattice(reg_projections, reg_word, reg_dithers, REG_STEP).astype(np.float32)
            reg_mark += ((reg_error @ reg_patterns) / reg_gain).reshape(REG_GRID, REG_GRID)
            field = mark + _reg_enlarged(reg_mark)
            marked = crop * (1.0 + cv2.sepFilter2D(field, -1, kernel, kernel) * alpha_in_grid)
        # the field enlarged over the whole window (its sampling depends on where it starts: a window cut to the
        # grid's footprint moved pixels by half a level), applied only where it can be something: in the footprint
        field = cv2.warpAffine(field, invert_affine(_shifted(to_frame, x0, y0)), (x1 - x0, y1 - y0),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        fy0, fy1, fx0, fx1 = max(y0, ry0), min(y1, ry1), max(x0, rx0), min(x1, rx1)
        if fy1 <= fy0 or fx1 <= fx0:
            continue
        inside = np.s_[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]
        factor = torch.from_numpy(1.0 + field[inside] * alpha[inside]).to(planes.device)
        planes[:3, fy0:fy1, fx0:fx1] *= (factor.clamp(min=0.0) ** LINEAR_GAIN if linear else factor).to(planes.dtype)
    return planes


def _about(scale: float, turn: float) -> np.ndarray:
    """(3, 3) a scale and turn (degrees) of aligned GRID px coordinates about the crop's centre."""
    c, s_ = scale * math.cos(math.radians(turn)), scale * math.sin(math.radians(turn))
    centre = (GRID - 1) / 2
    return np.array([[c, -s_, centre - c * centre + s_ * centre], [s_, c, centre - s_ * centre - c * centre],
                     [0.0, 0.0, 1.0]])


def _to_search_grid(grid: int, oversample: int, search: int) -> np.ndarray:
    """(3, 3) aligned GRID px -> the pixels of a search crop: a ``grid`` px crop oversampled ``oversample`` times,
    ``search`` of those pixels more on every side (pixel edges kept)."""
    k = grid / GRID * oversample
    return np.array([[k, 0.0, 0.5 * k - 0.5 + search], [0.0, k, 0.5 * k - 0.5 + search], [0.0, 0.0, 1.0]])


def _search_crops(luma: torch.Tensor, fits: Sequence[np.ndarray], grid: int, oversample: int,
                  search: int) -> np.ndarray:
    """(len(fits), S, S) float32: the search crops (:func:`_to_search_grid`) of a frame's luma through each
    (3, 3) fit (frame pixel -> aligned GRID px), S = grid * oversample + 2 * search."""
    side = grid * oversample + 2 * search
    to_search = _to_search_grid(grid, oversample, search)
    maps = np.stack([np.linalg.inv(to_search @ fit)[:2] for fit in fits])
    return warp_affine(luma[None], maps, (side, side), padding_mode="border")[:, 0].numpy()


def _register(luma: np.ndarray, fit: np.ndarray) -> list[np.ndarray]:
    """Where the writer's fit may lie, from the reader's: the scales, turns and shifts of the registration
    layer's search (``REG_SCALES``, ``REG_TURNS``, +-``REG_SEARCH``) whose projections agree most with its word
    (the ``REG_CANDIDATES`` best, apart; after an attack a chance agreement elsewhere in the search sometimes
    beats the true place: the mark's own sync word decides between them).

    Args:
        luma: (H, W) float32 luma of the frame.
        fit: (3, 3) frame pixel -> aligned GRID px, from the reader's landmarks.

    Returns:
        up to REG_CANDIDATES (3, 3) corrected fits (frame pixel -> the writer's aligned GRID px, within about a
        quarter px), the best first.
    """
    patterns, dithers, word, _ = _reg_code()
    signs = 1.0 - 2.0 * word
    variants = [_about(scale, turn) for scale in REG_SCALES for turn in REG_TURNS]
    span, shifts = REG_GRID * REG_OVERSAMPLE, 2 * REG_SEARCH + 1
    side = span + 2 * REG_SEARCH
    to_search = [_to_search_grid(REG_GRID, REG_OVERSAMPLE, REG_SEARCH) @ v @ fit for v in variants]
    # the part of the frame all of them see, blurred once to a search pixel's area (cv2's warps: a mip-mapped
    # warp of a 1080p frame per variant cost 3 ms)
    corners = np.array([[0.0, 0.0, 1.0], [side, 0.0, 1.0], [0.0, side, 1.0], [side, side, 1.0]])
    seen = np.concatenate([corners @ np.linalg.inv(m).T for m in to_search])[:, :2]
    h, w = luma.shape
    x0, y0 = np.clip(np.floor(seen.min(0)).astype(int) - 2, 0, (w - 1, h - 1))
    x1, y1 = np.clip(np.ceil(seen.max(0)).astype(int) + 3, (x0 + 1, y0 + 1), (w, h))
    part = luma[y0:y1, x0:x1]
    footprint = 1.0 / math.sqrt(abs(np.linalg.det(to_search[0][:2, :2])))   # frame px a search pixel
    if footprint > 1.5:
        part = cv2.GaussianBlur(part, (0, 0), footprint / math.sqrt(12.0))
    lattice = 2 * np.pi / REG_STEP
    found = []   # each variant's best shift: (agreement, variant, dx, dy)
    for index, m in enumerate(to_search):
        big = cv2.warpAffine(part, _shifted(np.linalg.inv(m)[:2], x0, y0), (side, side),
                             flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)
        means = cv2.boxFilter(big, -1, (REG_OVERSAMPLE, REG_OVERSAMPLE), anchor=(0, 0), normalize=True,
                              borderType=cv2.BORDER_REPLICATE)
        # the relative detail once on the whole oversampled crop, its local mean (REG_SIGMA registration px) taken
        # at a quarter of the resolution; each shift's REG_GRID px residual is every REG_OVERSAMPLE-th pixel of it:
        # the writer's residual but for the crop's border, which the skin hardly reaches
        small = cv2.resize(means, (side // 4, side // 4), interpolation=cv2.INTER_AREA)
        local = cv2.resize(cv2.GaussianBlur(small, (0, 0), REG_SIGMA * REG_OVERSAMPLE / 4), (side, side),
                           interpolation=cv2.INTER_LINEAR)
        detail = means / (local + 1e-3) - 1.0
        step_y, step_x = detail.strides
        residuals = np.lib.stride_tricks.as_strided(
            detail, (shifts, shifts, REG_GRID, REG_GRID),
            (step_y, step_x, step_y * REG_OVERSAMPLE, step_x * REG_OVERSAMPLE)).reshape(shifts * shifts, -1)
        agreement = np.cos(lattice * (residuals @ patterns.T - dithers.astype(np.float32))) @ signs
        at = int(np.argmax(agreement))
        found.append((float(agreement[at]), index, at % shifts, at // shifts))
    to_grid = GRID / (REG_GRID * REG_OVERSAMPLE)   # a search pixel in aligned GRID px
    box = np.array([[0.0, 0.0, 1.0], [GRID, 0.0, 1.0], [0.0, GRID, 1.0], [GRID, GRID, 1.0]])
    fits: list[np.ndarray] = []
    for _, index, dx, dy in sorted(found, reverse=True):
        shift = np.array([[1.0, 0.0, -(dx - REG_SEARCH) * to_grid], [0.0, 1.0, -(dy - REG_SEARCH) * to_grid],
                          [0.0, 0.0, 1.0]])
        corrected = shift @ variants[index] @ fit
        # a neighbour of a place already taken (the same peak seen from the next scale or turn) adds nothing
        if all(np.abs(box @ (corrected @ np.linalg.inv(other)).T - box).max() > 1.0 for other in fits):
            fits.append(corrected)
        if len(fits) == REG_CANDIDATES:
            break
    return fits


def aligned_luma(rgb8: np.ndarray, landmarks: Iterable[np.ndarray]) -> np.ndarray:
    """The faces of an 8-bit RGB frame, aligned for reading, oversampled for the reader's search: each face's
    fit to its landmarks corrected by the registration layer (:func:`_register`), then its variants.

    Args:
        rgb8: (H, W, 3) uint8 RGB (display encoded, as files and screens hold it).
        landmarks: each face's (468 or 478, >=2) landmarks in that frame's pixels.

    Returns:
        (N, V, S, S) float32 luma in [0, 1]: for each face and each of the V = REG_CANDIDATES * len(SCALES) *
        len(TURNS) scale and rotation variants of its registered fits (about the crop's centre), the aligned crop
        at OVERSAMPLE times GRID with SEARCH pixels more on every side, S = GRID * OVERSAMPLE + 2 * SEARCH.
    """
    luma = cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    side = GRID * OVERSAMPLE + 2 * SEARCH
    crops = []
    for lm in landmarks:
        fits = _register(luma, np.vstack([_frame_to_grid(lm), [0.0, 0.0, 1.0]]))
        fits += fits[:1] * (REG_CANDIDATES - len(fits))   # as many for every face (they are read as one array)
        variants = [_about(scale, turn) @ fit for fit in fits for scale in SCALES for turn in TURNS]
        crops.append(_search_crops(torch.from_numpy(luma), variants, GRID, OVERSAMPLE, SEARCH))
    return np.stack(crops) if crops else np.zeros((0, REG_CANDIDATES * len(SCALES) * len(TURNS), side, side),
                                                  np.float32)


def _cosines(big: np.ndarray) -> np.ndarray:
    """((2 SEARCH + 1)^2, K) the lattice cosines of one oversampled crop at every shift of the search."""
    patterns, dithers, _, _ = _code()
    # the OVERSAMPLE-px box means at every offset at once; a shift's GRID px crop is every OVERSAMPLE-th of them
    means = cv2.boxFilter(big.astype(np.float32), -1, (OVERSAMPLE, OVERSAMPLE), anchor=(0, 0), normalize=True,
                          borderType=cv2.BORDER_REPLICATE)
    span = GRID * OVERSAMPLE
    residuals = np.stack([_residual_of(means[dy:dy + span:OVERSAMPLE, dx:dx + span:OVERSAMPLE])
                          for dy in range(2 * SEARCH + 1) for dx in range(2 * SEARCH + 1)])
    return np.cos(2 * np.pi * (residuals @ patterns.T - dithers) / STEP)


def decode_payload(cosines: np.ndarray) -> tuple[int, int]:
    """Maximum-likelihood decoding of the coded payload: the codeword the soft readings agree with most.

    Args:
        cosines: (COPIES * (PAYLOAD_BITS + CHECK_BITS),) the lattice cosines of the coded patterns (+1 on a 0
            bit's point, -1 on a 1 bit's), summed over the faces read.

    Returns:
        (payload, errors): the 16-bit payload, and in how many bits the hard readings (the cosines' signs)
        differ from its codeword.
    """
    coded = np.asarray(cosines, np.float32)
    if coded.shape != (_CODED_BITS,):
        raise ValueError(f"expected {_CODED_BITS} coded cosines, got shape {coded.shape}")
    book = _codebook()
    payload = int(np.argmax(book @ coded))
    return payload, int(np.sum((coded < 0) != (book[payload] < 0)))


def read_crops(crops: np.ndarray) -> Reading:
    """Read the mark from the faces of one marked source (the faces of a frame, or of a movie's frames).

    Args:
        crops: (N, V, S, S) from :func:`aligned_luma`; N may be 0.

    Returns:
        a :class:`Reading`: each face read at its best variant and shift, the faces' cosines added before
        deciding.
    """
    if len(crops) == 0:
        return Reading(False, 0.0, 0, _CODED_BITS, 0)
    _, _, sync, _ = _code()
    signs = 1.0 - 2.0 * sync
    total = np.zeros(SYNC_BITS + _CODED_BITS)
    for variants in crops:
        cosines = np.concatenate([_cosines(big) for big in variants])
        total += cosines[int(np.argmax(cosines[:, :SYNC_BITS] @ signs))]
    sync_z = float(total[:SYNC_BITS] @ signs / math.sqrt(SYNC_BITS * len(crops) / 2))
    payload, errors = decode_payload(total[SYNC_BITS:])
    return Reading(bool(sync_z >= SYNC_Z and errors <= MAX_ERRORS), sync_z, payload, errors, len(crops))


def reading_landmarks(detector, rgb8: np.ndarray) -> list[np.ndarray]:
    """The landmarks a reader aligns the mark on: the faces the detector finds, as FaceDetect finds the faces a
    swap is placed by (the same mesh model; what is left between the two fits, the registration layer finds).

    Args:
        detector: a ``MediapipeBackend`` (static, ``video=False``) that finds the faces.
        rgb8: (H, W, 3) uint8 display-encoded RGB.

    Returns:
        (478, 3) landmarks in ``rgb8``'s pixels, one per face found; may be empty.
    """
    return [face.landmarks for face in detector.detect(np.ascontiguousarray(rgb8))]


def mark_frame(planes: torch.Tensor, faces: Sequence[Face], payload: int, linear: bool = False) -> torch.Tensor:
    """Mark the swapped faces of a frame about to be written (Write calls it), in place (:func:`embed`), each
    aligned on the landmarks the swap placed it by: no mesh of the written pixels (the registration layer
    tells the reader where the mark lies).

    Args:
        planes: (C >= 3, H, W) float pixels in the file's encoding.
        faces: the frame's faces (those with a ``coverage`` are marked).
        payload: 16-bit int (:func:`make_payload`).
        linear: the planes are linear light.

    Returns:
        ``planes``, marked.
    """
    return embed(planes, [f for f in faces if f.coverage is not None], payload, linear)

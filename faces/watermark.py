"""A watermark in the pixels of a swapped face, in the face's aligned space, so a copy stripped of every header
and manifest (a re-encode, a screenshot, a crop to the face) still tells a synthetic face and its payload.

Design (``invisible-watermark``, measured first, loses its bits to a 50% downscale and to a crop and takes
260-700 ms a 1080p frame; a plain spread-spectrum mark here drowned in the face's own structure, which every
face shares in aligned space: bench/RESULTS.md, issue 24):

* **Where.** In the canonical aligned crop (``whole_face`` framing fitted to the landmarks by
  :func:`faces.align.estimate_to_crop`), ``GRID`` px square, on the skin of the template (the face oval less eyes,
  brows, lips and nostrils, which hold most of a face's own contrast), and in the frame only where the swap
  replaced the plate (``Face.coverage``). Writer and reader fit the crop to landmarks of the pixels they have,
  from mediapipe's face landmark model run directly (:func:`_landmarks_in`), each pass in the ROI of the last
  one's landmarks: the writer twice from the landmarks the swap hands down, the reader three times from its
  detector's; each pass moves the fit a third of the way it moved before, so the two end up within 2% of scale
  and a few tenths of an aligned pixel. A crop, a downscale or a shift keeps the mark's geometry; the reader searches +-1
  aligned px, +-3% scale and +-1 degree around its fit.
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
import os
import threading
from typing import Callable, Iterable, Sequence

import cv2
import numpy as np
import torch

from .align import estimate_to_crop, plate_to_crop_pixel, template_in_crop, warp_affine
from .face import Face, box_from_landmarks, invert_affine
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
# ... and these scales and turns (degrees) of the fit about the crop's centre (the writer's two landmark passes
# leave its fit up to 2% in scale off the reader's three on the 1080p plate)
SCALES = (0.97, 0.985, 1.0, 1.015, 1.03)
TURNS = (-1.0, 0.0, 1.0)
# the writer's passes over the GRID px crop, each nearer the lattice: with three the small demo face's H.264 CRF 23
# reads sat at the code's 3-error limit, and one frame of 30 went past it as the field's enlargement moved pixels
# by half a level; four: at most 2 errors (0.16 dB of PSNR)
WRITER_PASSES = 4
LANDMARK_PX = 192         # the side of the landmark model's input
ROI_SCALE = 1.5           # its ROI's side, times the long side of the face's landmarks' box (as mediapipe's)
WRITER_MESH_PASSES = 2    # the landmark model's passes over a face in the writer (from the swap's landmarks) ...
READER_MESH_PASSES = 3    # ... and in the reader (from the detector's): see _landmarks_in
_HIGHPASS_SIGMA = 3.0     # aligned px: the local mean the relative detail is taken against
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
    """(GRID*GRID,) float32: luma over its local mean, minus one (computed in float32: the reader's float64
    projections take it as it is)."""
    crop = np.asarray(crop, np.float32)
    local = cv2.GaussianBlur(crop, (0, 0), _HIGHPASS_SIGMA) + 1e-3
    return (crop / local - 1.0).reshape(-1)


_CODED_BITS = COPIES * (PAYLOAD_BITS + CHECK_BITS)


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


def _to_lattice(projections: np.ndarray, bits: np.ndarray) -> np.ndarray:
    """(K,) how far each projection is from its bit's nearest lattice point."""
    _, dithers, _, _ = _code()
    offset = dithers + bits * (STEP / 2)
    return np.round((projections - offset) / STEP) * STEP + offset - projections


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


def _display_encoded(plane: np.ndarray) -> np.ndarray:
    """A float32 plane of linear light display-encoded as files are (negatives clipped)."""
    return cv2.pow(cv2.max(plane, 0.0), 1.0 / LINEAR_GAIN)


def _display_luma(rgb: torch.Tensor, linear: bool) -> np.ndarray:
    """(H, W) float32 display-encoded luma of (3, H, W) pixels (linear light: encoded first, as files are)."""
    planes = rgb.float().cpu().numpy()
    if linear:
        planes = [_display_encoded(plane) for plane in planes]
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


def _grid_luma(planes: torch.Tensor, to_frame: np.ndarray, linear: bool = False,
               near: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray | None:
    """A face's display-encoded luma in the GRID px aligned crop, as the reader's crop samples it: a Gaussian of an
    aligned pixel's area, then bilinear.

    Args:
        planes: (C >= 3, H, W) float pixels of the frame, display-encoded or linear light (``linear``).
        to_frame: (2, 3) aligned pixel -> frame pixel.
        linear: the planes are linear light.
        near: the display-encoded part of the frame near the face, averaged k x k, and frame pixel -> part pixel
            (:func:`writing_landmarks`): sampled instead of the planes (the face's pixels read once), the Gaussian
            narrowed by what the k x k average and the bilinear pass over the part's coarser pixels blur,
            (k^2 - 1) / 12 + (k^2 - 1) / 6 frame px^2.

    Returns:
        (GRID, GRID) float32, or None where the grid misses the frame.
    """
    h, w = planes.shape[-2:]
    # what the reader's crop sees of this face: the grid's footprint in the frame
    corners = np.array([[-1.0, -1.0, 1.0], [GRID, -1.0, 1.0], [-1.0, GRID, 1.0], [GRID, GRID, 1.0]]) @ to_frame.T
    rx0, ry0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    rx1, ry1 = np.minimum(np.ceil(corners.max(0)).astype(int) + 1, (w, h))
    if rx1 <= rx0 or ry1 <= ry0:
        return None
    variance = abs(np.linalg.det(to_frame[:, :2])) / 12.0   # a box of an aligned pixel's side, frame px^2
    if near is None:
        luma, to_luma = _display_luma(planes[:3, ry0:ry1, rx0:rx1], linear), _shifted(to_frame, rx0, ry0)
    else:
        rgb, to_part = near
        whole = 1.0 / to_part[0, 0]
        luma = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        variance = max(variance - (whole ** 2 - 1.0) / 4.0, 0.0) / whole ** 2
        to_luma = to_part[:, :2] @ to_frame
        to_luma[:, 2] += to_part[:, 2]
    sigma = math.sqrt(variance)
    smooth = cv2.GaussianBlur(luma, (0, 0), sigma) if sigma > 0.25 else luma
    return cv2.warpAffine(smooth, to_luma, (GRID, GRID), flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
                          borderMode=cv2.BORDER_REPLICATE)


@functools.lru_cache(maxsize=1)
def _mark_box() -> np.ndarray:
    """(4, 3) homogeneous aligned px: the corners of the grid's part a mark can be non-zero in (the patterns are
    zero off the skin mask), an aligned pixel wider for the bilinear enlargement into the frame."""
    ys, xs = np.nonzero(_mask() > 0)
    x0, y0, x1, y1 = xs.min() - 1.0, ys.min() - 1.0, xs.max() + 1.0, ys.max() + 1.0
    return np.array([[x0, y0, 1.0], [x1, y0, 1.0], [x0, y1, 1.0], [x1, y1, 1.0]])


def embed(planes: torch.Tensor, faces: Sequence[Face], payload: int, linear: bool = False,
          landmarks: Sequence[np.ndarray | None] | None = None,
          near: Sequence[tuple[np.ndarray, np.ndarray] | None] | None = None) -> torch.Tensor:
    """Mark every swapped face of a frame, in place.

    Each face's aligned GRID px luma is sampled from the frame (a Gaussian of an aligned pixel's area, then
    bilinear: the area average the reader's box means take) and its projections moved onto their bits' lattice
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
        landmarks: per face, the landmarks to align the mark on (this very frame's, as the reader will find
            them: :func:`writing_landmarks`); None, or a None entry: the face's own.
        near: per face, the display-encoded part of the frame near it, averaged k x k, and frame pixel -> part
            pixel (:func:`writing_landmarks` read them for the mesh): the face's luma is sampled from it instead
            of from the planes (the face's pixels read once); None, or a None entry: from the planes.

    Returns:
        ``planes``, marked.
    """
    if not 0 <= payload < 2 ** PAYLOAD_BITS:
        raise ValueError(f"watermark payload {payload} is not a {PAYLOAD_BITS}-bit unsigned value")
    _, _, _, gain = _code()
    patterns = _patterns32()
    bits = _bits(payload)
    kernel = _enlarged_and_sampled()
    for index, face in enumerate(faces):
        if face.coverage is None:
            continue
        y0, y1, x0, x1 = face.coverage.window
        if y1 <= y0 or x1 <= x0:
            continue
        points = landmarks[index] if landmarks is not None else None
        to_grid = _frame_to_grid(face.landmarks if points is None else points)
        to_frame = invert_affine(to_grid)
        crop = _grid_luma(planes, to_frame, linear, near[index] if near is not None else None)
        if crop is None:
            continue
        alpha = face.coverage.alpha.reshape(y1 - y0, x1 - x0).float().cpu().numpy()
        alpha_in_grid = cv2.warpAffine(alpha, _shifted(to_frame, x0, y0), (GRID, GRID),
                                       flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        mark = np.zeros((GRID, GRID), np.float32)
        marked = crop
        for _ in range(WRITER_PASSES):
            projections = patterns @ _residual_of(marked)
            mark += ((_to_lattice(projections, bits).astype(np.float32) @ patterns) / gain).reshape(GRID, GRID)
            marked = crop * (1.0 + cv2.sepFilter2D(mark, -1, kernel, kernel) * alpha_in_grid)
        # the field enlarged only where it can be something: where the window meets the mark's footprint
        reach = _mark_box() @ to_frame.T
        fx0, fy0 = np.maximum(np.floor(reach.min(0)).astype(int), (x0, y0))
        fx1, fy1 = np.minimum(np.ceil(reach.max(0)).astype(int) + 1, (x1, y1))
        if fy1 <= fy0 or fx1 <= fx0:
            continue
        field = cv2.warpAffine(mark, invert_affine(_shifted(to_frame, fx0, fy0)), (fx1 - fx0, fy1 - fy0),
                               flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT)
        factor = torch.from_numpy(1.0 + field * alpha[fy0 - y0:fy1 - y0, fx0 - x0:fx1 - x0]).to(planes.device)
        planes[:3, fy0:fy1, fx0:fx1] *= (factor.clamp(min=0.0) ** LINEAR_GAIN if linear else factor).to(planes.dtype)
    return planes


def aligned_luma(rgb8: np.ndarray, landmarks: Iterable[np.ndarray]) -> np.ndarray:
    """The faces of an 8-bit RGB frame, aligned for reading, oversampled for the reader's search.

    Args:
        rgb8: (H, W, 3) uint8 RGB (display encoded, as files and screens hold it).
        landmarks: each face's (468 or 478, >=2) landmarks in that frame's pixels.

    Returns:
        (N, V, S, S) float32 luma in [0, 1]: for each face and each of the V = len(SCALES) * len(TURNS) scale
        and rotation variants of its fit (about the crop's centre), the aligned crop at OVERSAMPLE times GRID
        with SEARCH pixels more on every side, S = GRID * OVERSAMPLE + 2 * SEARCH.
    """
    luma = torch.from_numpy(cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0)
    side = GRID * OVERSAMPLE + 2 * SEARCH
    centre = side / 2 - 0.5
    crops = []
    for lm in landmarks:
        to_crop, _ = estimate_to_crop(lm, "whole_face")
        m = np.vstack([plate_to_crop_pixel(to_crop, GRID * OVERSAMPLE)[0].numpy(), [0.0, 0.0, 1.0]])
        m[:2, 2] += SEARCH
        variants = []
        for scale in SCALES:
            for turn in TURNS:
                c, s_ = scale * math.cos(math.radians(turn)), scale * math.sin(math.radians(turn))
                about = np.array([[c, -s_, centre - c * centre + s_ * centre],
                                  [s_, c, centre - s_ * centre - c * centre], [0.0, 0.0, 1.0]])
                variants.append(np.linalg.inv(about @ m)[:2])
        crops.append(warp_affine(luma[None], np.stack(variants), (side, side), padding_mode="border")[:, 0].numpy())
    return np.stack(crops) if crops else np.zeros((0, len(SCALES) * len(TURNS), side, side), np.float32)


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


_MODELS = threading.local()


def _landmark_model():
    """This thread's interpreter of mediapipe's face landmark model (the plain 468-point mesh, without the
    attention refinement: the fit needs no irises), the ``.tflite`` file mediapipe's package ships, run on one
    thread. Run directly it costs 1.2 ms a face, where mediapipe's face mesh graph around it (BlazeFace, the
    image-to-tensor and landmark calculators, the graph's scheduling) cost 4-5 ms. Interpreters are not shared
    between threads."""
    model = getattr(_MODELS, "model", None)
    if model is None:
        import mediapipe
        from ai_edge_litert.interpreter import Interpreter

        from .detect import _quiet_mediapipe

        _quiet_mediapipe()
        path = os.path.join(os.path.dirname(mediapipe.__file__), "modules", "face_landmark", "face_landmark.tflite")
        interpreter = Interpreter(model_path=path, num_threads=1)
        interpreter.allocate_tensors()
        (image,) = interpreter.get_input_details()
        outputs = {int(np.prod(o["shape"])): o["index"] for o in interpreter.get_output_details()}
        if tuple(image["shape"]) != (1, LANDMARK_PX, LANDMARK_PX, 3) or set(outputs) != {468 * 3, 1}:
            raise RuntimeError(f"{path}: not the 468-point face landmark model at {LANDMARK_PX} px the watermark "
                               f"is aligned with (input {image['shape']})")
        model = _MODELS.model = (interpreter, image["index"], outputs[468 * 3], outputs[1])
    return model


def _roi(landmarks: np.ndarray) -> np.ndarray:
    """(2, 3) float64: the landmark model's input pixel -> frame pixel, for a face's landmarks (as mediapipe
    tracks a face from one frame's mesh to the next): a square ``ROI_SCALE`` times the long side of their box,
    centred on it, turned so that the eyes' outer corners (33, 263) lie level."""
    x0, y0, x1, y1 = box_from_landmarks(landmarks)
    side = ROI_SCALE * max(x1 - x0, y1 - y0) / LANDMARK_PX
    dx, dy = landmarks[263, :2] - landmarks[33, :2]
    turn = math.atan2(dy, dx)
    c, s = side * math.cos(turn), side * math.sin(turn)
    half = LANDMARK_PX / 2 - 0.5
    return np.array([[c, -s, (x0 + x1) / 2 - c * half + s * half], [s, c, (y0 + y1) / 2 - s * half - c * half]])


def _near_face(planes: Sequence[np.ndarray], roi: np.ndarray,
               encode: Callable[[np.ndarray], np.ndarray] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The part of an image a face's passes sample (the ROI's square grown by a tenth of its side on every side,
    for the later passes' moves: a few hundredths), read once, row by row: averaged k x k where the ROI shrinks by
    k = 2 or more (k its shrink rounded; cv2's fast path), so that the bilinear passes that sample it shrink by
    less than 1.5 and every pixel still weighs in; float planes are then interleaved. A bilinear pass turned with
    the face over a 1080p frame's three planes cost 1.8 ms (caches cold after each model run); reading the part
    once costs 0.9, and a pass over it 0.3.

    Args:
        planes: three (H, W) float32 planes R, G, B in [0, 1], or one (H, W, 3) uint8 RGB image (display encoded).
        roi: (2, 3) model input pixel -> image pixel (:func:`_roi`).
        encode: applied to each float plane's part before it is averaged (a linear frame's display encoding).

    Returns:
        (part, to_part): the part, (h, w, 3) float32 or uint8 as ``planes`` (a view of a uint8 image where k is 1),
        and the (2, 3) image pixel -> part pixel.
    """
    h, w = planes[0].shape[:2]
    whole = max(int(round(math.sqrt(abs(np.linalg.det(roi[:, :2]))))), 1)
    margin = 0.1 * LANDMARK_PX
    corners = np.array([[-margin, -margin], [LANDMARK_PX + margin, -margin], [-margin, LANDMARK_PX + margin],
                        [LANDMARK_PX + margin, LANDMARK_PX + margin]]) @ roi[:, :2].T + roi[:, 2]
    x0, y0 = np.clip(np.floor(corners.min(0)).astype(int), 0, (w, h))
    x1, y1 = np.clip(np.ceil(corners.max(0)).astype(int) + 1, 0, (w, h))
    x1, y1 = x0 + (x1 - x0) // whole * whole, y0 + (y1 - y0) // whole * whole
    if x1 <= x0 or y1 <= y0:   # the ROI misses the image: its model input is all zeros
        return np.zeros((1, 1, 3), planes[0].dtype), np.array([[1.0, 0.0, -w], [0.0, 1.0, -h]])
    part = [p[y0:y1, x0:x1] if encode is None else encode(p[y0:y1, x0:x1]) for p in planes]
    if whole > 1:
        part = [cv2.resize(p, ((x1 - x0) // whole, (y1 - y0) // whole), interpolation=cv2.INTER_AREA) for p in part]
    part = cv2.merge(part) if len(part) == 3 else part[0]
    # an averaged pixel i covers image pixels x0 + whole * i .. x0 + whole * i + whole - 1
    return part, np.array([[1.0, 0.0, -x0 - (whole - 1) / 2], [0.0, 1.0, -y0 - (whole - 1) / 2]]) / whole


def _model_input(part: np.ndarray, roi_in_part: np.ndarray) -> np.ndarray:
    """The landmark model's input: its ROI of the part of the image near the face (:func:`_near_face`), bilinear,
    zeros where it leaves the part. Writer and reader sample through this one function (and the one before), so
    that the model sees the same pixels.

    Args:
        part: (h, w, 3) float32 RGB in [0, 1] or uint8 RGB.
        roi_in_part: (2, 3) model input pixel -> part pixel.

    Returns:
        (LANDMARK_PX, LANDMARK_PX, 3) float32 RGB in [0, 1].
    """
    image = cv2.warpAffine(part, roi_in_part, (LANDMARK_PX, LANDMARK_PX),
                           flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_CONSTANT, borderValue=0)
    return image.astype(np.float32) * (1.0 / 255.0) if image.dtype == np.uint8 else image


def _landmarks_in(part: np.ndarray, to_part: np.ndarray, landmarks: np.ndarray, passes: int) -> np.ndarray | None:
    """A face meshed ``passes`` times by the landmark model, each pass in the ROI of the last one's landmarks
    (:func:`_roi`), starting from ``landmarks``: each pass moves the fit about a third of the way it moved
    before, towards the one fit the model holds for these pixels, so a writer and a reader that start from
    different landmarks of one face end up within the reader's search.

    Args:
        part, to_part: the part of the image near the face (:func:`_near_face`, for the ROI of ``landmarks``).
        landmarks: (N >= 468, >= 2) the face's landmarks to start from, in the image's pixels.
        passes: how many times the face is meshed.

    Returns:
        (468, 3) float32 landmarks in the image's pixels (z on the x scale), or None where the model finds no face.
    """
    interpreter, image_index, points_index, score_index = _landmark_model()
    points = np.asarray(landmarks, np.float64)
    for _ in range(passes):
        roi = _roi(points)
        roi_in_part = to_part[:, :2] @ roi
        roi_in_part[:, 2] += to_part[:, 2]
        interpreter.set_tensor(image_index, _model_input(part, roi_in_part)[None])
        interpreter.invoke()
        if float(interpreter.get_tensor(score_index).reshape(())) <= 0.0:   # the face flag's logit
            return None
        raw = interpreter.get_tensor(points_index).reshape(468, 3).astype(np.float64)
        points = np.empty((468, 3))
        points[:, :2] = raw[:, :2] @ roi[:, :2].T + roi[:, 2]
        points[:, 2] = raw[:, 2] * math.hypot(roi[0, 0], roi[1, 0])
    return points.astype(np.float32)


def reading_landmarks(detector, rgb8: np.ndarray) -> list[np.ndarray]:
    """The landmarks a reader aligns the mark on: each face the detector finds, meshed ``READER_MESH_PASSES``
    times from the detector's landmarks (:func:`_landmarks_in`).

    Args:
        detector: a ``MediapipeBackend`` (static, ``video=False``) that finds the faces.
        rgb8: (H, W, 3) uint8 display-encoded RGB.

    Returns:
        (468, 3) landmarks in ``rgb8``'s pixels, one per face meshed; may be empty.
    """
    rgb8 = np.ascontiguousarray(rgb8)
    found = [_landmarks_in(*_near_face([rgb8], _roi(f.landmarks)), f.landmarks, READER_MESH_PASSES)
             for f in detector.detect(rgb8)]
    return [p for p in found if p is not None]


def writing_landmarks(planes: torch.Tensor, landmarks: np.ndarray,
                      linear: bool = False) -> tuple[np.ndarray | None, tuple[np.ndarray, np.ndarray]]:
    """The landmarks the writer aligns a face's mark on: the face meshed ``WRITER_MESH_PASSES`` times on the
    pixels it writes, starting from the landmarks the swap hands down (:func:`_landmarks_in`).

    Args:
        planes: (C >= 3, H, W) float pixels of the frame, display-encoded or linear light (``linear``).
        landmarks: (N >= 468, >= 2) the face's landmarks in frame pixels (a tracked face's: a few percent off).
        linear: the planes are linear light (encoded first, only where the model's input is sampled).

    Returns:
        ((468, 3) float32 landmarks in frame pixels, or None where no face is meshed; the display-encoded part of
        the frame near the face and frame pixel -> part pixel (:func:`_near_face`), which :func:`embed` samples
        the face's luma from).
    """
    near = _near_face([plane.float().cpu().numpy() for plane in planes[:3]], _roi(landmarks),
                      _display_encoded if linear else None)
    return _landmarks_in(*near, landmarks, WRITER_MESH_PASSES), near


def mark_frame(planes: torch.Tensor, faces: Sequence[Face], payload: int, linear: bool = False) -> torch.Tensor:
    """Mark the swapped faces of a frame about to be written (Write calls it), in place: each face meshed
    again on these very pixels (:func:`writing_landmarks`), then :func:`embed`.

    Args:
        planes: (C >= 3, H, W) float pixels in the file's encoding.
        faces: the frame's faces (those with a ``coverage`` are marked).
        payload: 16-bit int (:func:`make_payload`).
        linear: the planes are linear light.

    Returns:
        ``planes``, marked.
    """
    swapped = [f for f in faces if f.coverage is not None]
    if not swapped:
        return planes
    meshed, near = zip(*[writing_landmarks(planes, f.landmarks, linear) for f in swapped])
    return embed(planes, swapped, payload, linear, landmarks=meshed, near=near)

"""ColorMatch: match the swapped face's colour to the plate face under it.

The statistics are measured on the skin of both faces (eyes, brows and mouth excluded) and the transfer is
applied to the whole swapped face region. Methods, implemented from the papers:

- ``meanstd``: per-channel mean and standard deviation transfer in a perceptual space (Reinhard et al.
  2001, "Color transfer between images"), CIE L*a*b* by default.
- ``mkl``: the linear Monge-Kantorovich map between the two colour Gaussians (Pitie and Kokaram 2007,
  "The linear Monge-Kantorovitch linear colour mapping for example-based colour transfer").
- ``sot``: sliced optimal transport, matching 1D marginals along random orthonormal bases (Rabin, Peyre,
  Delon and Bernot 2011, "Wasserstein barycenter and its application to texture mixing"; Pitie et al.
  2007's iterative distribution transfer uses the same step).
- ``histogram``: per-channel histogram (quantile) matching.

Spaces: ``lab`` (CIE 1976 L*a*b*, D65: the working space goes to CIE XYZ D65 through the OCIO config, which
uses a Bradford adaptation; L* of scene-linear white Y=1 is 100), ``oklab`` (Ottosson 2020, from XYZ D65)
and ``rgb`` (the scene-linear working space itself).

Gain: the linear methods (meanstd, mkl) keep their gain along any colour direction within [1 / ``max_gain``,
``max_gain``] (1.5 by default). A plate's skin often varies more than the swap's for reasons that are not light
(glasses rims, stubble, make-up, hard shadows), and matched in full that stretch (up to 3.6 along yellow-blue on
people/d13) pushes the swap's dark features (brows, nostrils) toward purple; the means still match exactly
(bench/RESULTS.md, session 7).

Temporal stability: the statistics of both sides are pooled over +-``window`` frames of the same face track,
so the transfer moves smoothly from frame to frame: a change of the swap's skin in one frame (the mouth
opens, a shadow crosses) changes only those pixels, not the whole face's colour. With ``pool`` set to
``reference`` the swap's statistics are taken on the current frame alone, which also evens out a swap's
frame-to-frame colour flicker, at the price of that whole-face colour change (issue 8: ColorMatch added
~0.1 to the flow-compensated frame-to-frame change that way).
"""
from __future__ import annotations

import functools

import numpy as np
import torch

from doublure.engine import EvalContext, Hasher, Image, Node, Port, register_node
from doublure.engine import colour as engine_colour
from doublure.engine import knobs as K
from doublure.engine.cache import Memo
from doublure.engine.device import upload
from doublure.faces.face import MAX_REPEATS
from ._finish import (blend_into, face_width, face_window, mask_input, region_mask, require_same_size,
                      swap_region, swap_window, working_to_xyz_matrix)

SPACES = ("lab", "oklab", "rgb")
METHODS = ("meanstd", "mkl", "sot", "histogram")

# CIE 1931 2 degree D65 white, Y = 1, from its chromaticity (0.3127, 0.3290) as colour-science defines it.
_D65_XY = (0.3127, 0.3290)
D65_WHITE_XYZ = (_D65_XY[0] / _D65_XY[1], 1.0, (1.0 - _D65_XY[0] - _D65_XY[1]) / _D65_XY[1])

# Oklab (Ottosson 2020): XYZ D65 -> LMS, then cube root, then LMS' -> Lab.
_OKLAB_M1 = (
    (0.8189330101, 0.3618667424, -0.1288597137),
    (0.0329845436, 0.9293118715, 0.0361456387),
    (0.0482003018, 0.2643662691, 0.6338517070),
)
_OKLAB_M2 = (
    (0.2104542553, 0.7936177850, -0.0040720468),
    (1.9779984951, -2.4285922050, 0.4505937099),
    (0.0259040371, 0.7827717662, -0.8086757660),
)
# their inverses, once: a 3x3 inverse per call is microseconds alone but waits on numpy's BLAS threads
# (milliseconds) while torch's own threads are busy
_OKLAB_M1_INV = np.linalg.inv(np.asarray(_OKLAB_M1))
_OKLAB_M2_INV = np.linalg.inv(np.asarray(_OKLAB_M2))

_LAB_EPSILON = (6.0 / 29.0) ** 3
_LAB_SLOPE = 1.0 / (3.0 * (6.0 / 29.0) ** 2)


# ----------------------------------------------------------------------------------------------------------
# Colour spaces. Every function takes colour-first tensors shaped (3, *): an image (3, H, W) or samples (3, N).


def _apply_matrix(m: torch.Tensor | np.ndarray | tuple, x: torch.Tensor) -> torch.Tensor:
    if isinstance(m, torch.Tensor):
        m = m.to(dtype=x.dtype, device=x.device)
    else:
        m = _matrix_on(np.asarray(m, dtype=np.float64).tobytes(), x.dtype, x.device)
    return (m @ x.reshape(3, -1)).reshape(x.shape)


@functools.lru_cache(maxsize=64)
def _matrix_on(matrix_bytes: bytes, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A constant (3, 3) float64 matrix (its bytes) as ``dtype`` on ``device``, copied there once: on a GPU
    a copy per call waited for the stream, about 13 times a frame in the demo graph."""
    return torch.from_numpy(np.frombuffer(matrix_bytes, dtype=np.float64).reshape(3, 3).copy()).to(device, dtype)


def xyz_to_lab(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65, Y of white = 1) to CIE 1976 L*a*b*.

    The CIE function's linear toe is used below (6/29)^3 and continued for negative values, so the map is
    defined and invertible for any scene-linear value (wide-gamut working spaces hold negatives).

    Args:
        xyz: (3, *) tensor.

    Returns:
        (3, *) L*, a*, b* (L* = 100 at Y = 1).
    """
    white = torch.tensor(D65_WHITE_XYZ, dtype=xyz.dtype, device=xyz.device).view(3, *([1] * (xyz.dim() - 1)))
    t = xyz / white
    f = torch.where(t > _LAB_EPSILON, t.clamp_min(_LAB_EPSILON).pow(1.0 / 3.0), t * _LAB_SLOPE + 4.0 / 29.0)
    return torch.stack([116.0 * f[1] - 16.0, 500.0 * (f[0] - f[1]), 200.0 * (f[1] - f[2])])


def lab_to_xyz(lab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`xyz_to_lab`.

    Args:
        lab: (3, *) L*, a*, b*.

    Returns:
        (3, *) CIE XYZ, D65 white at Y = 1.
    """
    fy = (lab[0] + 16.0) / 116.0
    f = torch.stack([fy + lab[1] / 500.0, fy, fy - lab[2] / 200.0])
    edge = 6.0 / 29.0
    t = torch.where(f > edge, f.pow(3), (f - 4.0 / 29.0) / _LAB_SLOPE)
    white = torch.tensor(D65_WHITE_XYZ, dtype=lab.dtype, device=lab.device).view(3, *([1] * (lab.dim() - 1)))
    return t * white


def xyz_to_oklab(xyz: torch.Tensor) -> torch.Tensor:
    """CIE XYZ (D65) to Oklab (Ottosson 2020). Signed cube root, so negatives stay invertible.

    Args:
        xyz: (3, *) tensor.

    Returns:
        (3, *) L, a, b (L = 1 at Y = 1 white).
    """
    lms = _apply_matrix(_OKLAB_M1, xyz)
    return _apply_matrix(_OKLAB_M2, torch.sign(lms) * lms.abs().pow(1.0 / 3.0))


def oklab_to_xyz(oklab: torch.Tensor) -> torch.Tensor:
    """Inverse of :func:`xyz_to_oklab`.

    Args:
        oklab: (3, *) tensor.

    Returns:
        (3, *) CIE XYZ, D65.
    """
    lms_ = _apply_matrix(_OKLAB_M2_INV, oklab)
    return _apply_matrix(_OKLAB_M1_INV, lms_.pow(3))


def to_match_space(rgb: torch.Tensor, space: str, rgb_to_xyz: np.ndarray) -> torch.Tensor:
    """Scene-linear working-space RGB to the space statistics are matched in.

    Args:
        rgb: (3, *) working-space values.
        space: one of ``SPACES``.
        rgb_to_xyz: (3, 3) from :func:`working_to_xyz_matrix`.

    Returns:
        (3, *) values in ``space``.
    """
    if space == "rgb":
        return rgb
    xyz = _apply_matrix(rgb_to_xyz, rgb)
    return xyz_to_lab(xyz) if space == "lab" else xyz_to_oklab(xyz)


def from_match_space(values: torch.Tensor, space: str, rgb_to_xyz: np.ndarray) -> torch.Tensor:
    """Inverse of :func:`to_match_space`. Shapes (3, *) -> (3, *)."""
    if space == "rgb":
        return values
    xyz = lab_to_xyz(values) if space == "lab" else oklab_to_xyz(values)
    return _apply_matrix(_inverse(np.asarray(rgb_to_xyz, dtype=np.float64).tobytes()), xyz)


@functools.lru_cache(maxsize=8)
def _inverse(matrix_bytes: bytes) -> np.ndarray:
    """The inverse of a (3, 3) float64 matrix given as its bytes (a working space's RGB -> XYZ)."""
    return np.linalg.inv(np.frombuffer(matrix_bytes, dtype=np.float64).reshape(3, 3))


# ----------------------------------------------------------------------------------------------------------
# Transfers. ``x`` is what gets recoloured (3, *); ``src``/``ref`` are sample sets (3, N) measured on the swap's
# and the plate's skin in the same space.


def meanstd_transfer(x: torch.Tensor, src: torch.Tensor, ref: torch.Tensor, eps: float = 1e-6,
                     max_gain: float | None = None) -> torch.Tensor:
    """Reinhard et al. (2001): per channel, ``(x - mean_src) / std_src * std_ref + mean_ref``.

    Args:
        x: (3, *) values to recolour.
        src: (3, N) samples of the source distribution (swap skin).
        ref: (3, M) samples of the target distribution (plate skin).
        max_gain: each channel's gain is kept within [1 / max_gain, max_gain] (None: unlimited).

    Returns:
        (3, *) recoloured values.
    """
    shape = (3,) + (1,) * (x.dim() - 1)
    mu_s, sd_s = src.mean(1), src.std(1, unbiased=False)
    mu_r, sd_r = ref.mean(1), ref.std(1, unbiased=False)
    gain = sd_r / sd_s.clamp_min(eps)
    if max_gain is not None:
        gain = gain.clamp(1.0 / max_gain, max_gain)
    return (x - mu_s.view(shape)) * gain.view(shape) + mu_r.view(shape)


def _sym_sqrt(c: torch.Tensor) -> torch.Tensor:
    """Principal square root of a symmetric positive semi-definite matrix (eigen-decomposition)."""
    vals, vecs = torch.linalg.eigh(c)
    return (vecs * vals.clamp_min(0).sqrt()) @ vecs.T


def mkl_matrix(cov_src: torch.Tensor, cov_ref: torch.Tensor, eps: float = 1e-8) -> torch.Tensor:
    """Linear Monge-Kantorovich map between zero-mean Gaussians (Pitie and Kokaram 2007, eq. 9):

    ``T = S^-1/2 (S^1/2 R S^1/2)^1/2 S^-1/2`` with S = cov_src, R = cov_ref. T is symmetric positive
    definite and satisfies ``T S T = R``; among all such maps it moves colours the least (L2).

    Args:
        cov_src: (3, 3) source covariance.
        cov_ref: (3, 3) target covariance.
        eps: added to the source eigenvalues so a flat (degenerate) source stays invertible.

    Returns:
        (3, 3) T (float64).
    """
    s = cov_src.double()
    r = cov_ref.double()
    vals, vecs = torch.linalg.eigh(s)
    vals = vals.clamp_min(0) + eps
    s_half = (vecs * vals.sqrt()) @ vecs.T
    s_inv_half = (vecs * vals.rsqrt()) @ vecs.T
    middle = _sym_sqrt(s_half @ r @ s_half)
    return s_inv_half @ middle @ s_inv_half


def limit_gain(t: torch.Tensor, max_gain: float) -> torch.Tensor:
    """A symmetric linear colour map with its gains (eigenvalues) kept within [1 / max_gain, max_gain], its
    directions (eigenvectors) unchanged. Shapes (3, 3) -> (3, 3)."""
    vals, vecs = torch.linalg.eigh(t)
    return (vecs * vals.clamp(1.0 / max_gain, max_gain)) @ vecs.T


def mkl_transfer(x: torch.Tensor, src: torch.Tensor, ref: torch.Tensor, max_gain: float | None = None) -> torch.Tensor:
    """Apply the MKL map fitted on the sample sets: ``T (x - mean_src) + mean_ref``.

    Args:
        x: (3, *) values to recolour.
        src: (3, N) source samples.
        ref: (3, M) target samples.
        max_gain: T's gains are kept within [1 / max_gain, max_gain] (:func:`limit_gain`; None: unlimited).

    Returns:
        (3, *) recoloured values.
    """
    mu_s, mu_r = src.double().mean(1, keepdim=True), ref.double().mean(1, keepdim=True)
    centred_s, centred_r = src.double() - mu_s, ref.double() - mu_r
    # The covariances on the samples' device; the 3x3 maths (three eigendecompositions) on the host after one
    # copy there: torch.cov and eigh on a GPU each wait for the device (their checks read values back).
    covs = torch.stack([centred_s @ centred_s.T / src.shape[1], centred_r @ centred_r.T / ref.shape[1]]).cpu()
    t = mkl_matrix(covs[0], covs[1])
    if max_gain is not None:
        t = limit_gain(t, max_gain)
    t = upload(t.to(x.dtype), x.device)
    flat = x.reshape(3, -1)
    out = t @ (flat - mu_s.to(x.dtype)) + mu_r.to(x.dtype)
    return out.reshape(x.shape)


def quantile_map(values: torch.Tensor, q_src: torch.Tensor, q_ref: torch.Tensor) -> torch.Tensor:
    """Monotone piecewise-linear map sending source quantiles to target quantiles (1D transport).

    Outside the source range values are shifted with the end points instead of clipped, so a highlight
    brighter than any skin sample keeps its relation to the skin.

    Args:
        values: (K, *) values, one row per channel / direction.
        q_src: (K, Q) increasing source quantiles per row.
        q_ref: (K, Q) target quantiles at the same levels.

    Returns:
        (K, *) mapped values.
    """
    k = values.shape[0]
    flat = values.reshape(k, -1).contiguous()
    q_src = q_src.contiguous()
    idx = torch.searchsorted(q_src, flat).clamp(1, q_src.shape[1] - 1)
    x0, x1 = q_src.gather(1, idx - 1), q_src.gather(1, idx)
    y0, y1 = q_ref.gather(1, idx - 1), q_ref.gather(1, idx)
    # Tied source quantiles (clipped or posterised footage) take the middle of their target interval.
    span = x1 - x0
    t = torch.where(span > 0, (flat - x0) / span.where(span > 0, torch.ones_like(span)), torch.full_like(span, 0.5))
    inside = y0 + t.clamp(0, 1) * (y1 - y0)
    below = flat - q_src[:, :1] + q_ref[:, :1]
    above = flat - q_src[:, -1:] + q_ref[:, -1:]
    out = torch.where(flat < q_src[:, :1], below, torch.where(flat > q_src[:, -1:], above, inside))
    return out.reshape(values.shape)


def _quantiles(samples: torch.Tensor, levels: int) -> torch.Tensor:
    """(K, N) -> (K, levels) quantiles at evenly spaced levels including 0 and 1 (sorted interpolation)."""
    q = torch.linspace(0, 1, levels, device=samples.device, dtype=samples.dtype)
    return torch.quantile(samples, q, dim=1).T.contiguous()


def histogram_transfer(x: torch.Tensor, src: torch.Tensor, ref: torch.Tensor, levels: int = 256) -> torch.Tensor:
    """Per-channel histogram matching through the quantile functions of both sample sets.

    Args:
        x: (3, *) values to recolour.
        src: (3, N) source samples.
        ref: (3, M) target samples.
        levels: number of quantiles describing each marginal.

    Returns:
        (3, *) recoloured values.
    """
    return quantile_map(x, _quantiles(src, levels), _quantiles(ref, levels))


def random_rotation(generator: torch.Generator, dtype=torch.float64) -> torch.Tensor:
    """A random 3x3 orthonormal basis (QR of a Gaussian matrix, signs fixed so it is uniform).

    Returns:
        (3, 3) matrix with orthonormal columns.
    """
    a = torch.randn(3, 3, generator=generator, dtype=torch.float64)
    q, r = torch.linalg.qr(a)
    return (q * torch.sign(torch.diagonal(r))).to(dtype)


def sliced_wasserstein(a: torch.Tensor, b: torch.Tensor, directions: int = 64, levels: int = 128,
                       seed: int = 0) -> float:
    """Sliced 2-Wasserstein distance between two sample sets (Rabin et al. 2011), estimated on random
    directions with quantile functions.

    Args:
        a: (3, N) samples.
        b: (3, M) samples.

    Returns:
        sqrt of the mean over directions of the squared 1D W2 distance.
    """
    g = torch.Generator().manual_seed(seed)
    dirs = torch.randn(directions, 3, generator=g, dtype=torch.float64)
    dirs = (dirs / dirs.norm(dim=1, keepdim=True)).to(a.dtype).to(a.device)
    qa = _quantiles(dirs @ a, levels)
    qb = _quantiles(dirs @ b, levels)
    return float(((qa - qb) ** 2).mean().sqrt())


def apply_via_lut3d(fn, x: torch.Tensor, size: int = 33) -> torch.Tensor:
    """Evaluate a colour function on a size^3 lattice spanning ``x``'s range and interpolate it trilinearly.

    Makes an expensive per-colour map (sliced OT's many 1D maps) cost one lattice evaluation plus one
    trilinear lookup per pixel, independent of the frame size.

    Args:
        fn: maps (3, N) -> (3, N); must be continuous for the interpolation to be faithful.
        x: (3, *) values.
        size: lattice points per axis.

    Returns:
        (3, *) ``fn(x)`` interpolated.
    """
    flat = x.reshape(3, -1)
    lo, hi = flat.amin(1), flat.amax(1)
    hi = torch.where(hi > lo, hi, lo + 1e-6)
    axes = [torch.linspace(float(lo[c]), float(hi[c]), size, device=x.device, dtype=x.dtype) for c in range(3)]
    lattice = torch.stack(torch.meshgrid(*axes, indexing="ij")).reshape(3, -1)  # channel 0 slowest
    lut = fn(lattice).reshape(1, 3, size, size, size)
    # grid_sample reads (x, y, z) = (last, middle, first) lattice axis, normalised to [-1, 1].
    coords = ((flat - lo[:, None]) / (hi - lo)[:, None] * 2.0 - 1.0).flip(0).T.reshape(1, 1, 1, -1, 3)
    out = torch.nn.functional.grid_sample(lut, coords, mode="bilinear", padding_mode="border", align_corners=True)
    return out.reshape(x.shape)


def sot_transfer(x: torch.Tensor, src: torch.Tensor, ref: torch.Tensor, iterations: int = 20,
                 levels: int = 128, seed: int = 0, lut_size: int = 33) -> torch.Tensor:
    """Sliced optimal transport: repeatedly pick a random orthonormal basis, match the three 1D marginals
    of the (moving) source samples to the target's along it, and move ``x`` by the same 1D maps.

    The source samples converge to the target distribution (the sliced Wasserstein distance falls); ``x``
    follows the same sequence of monotone maps, so pixels that are not samples are carried consistently.
    The bases are seeded, so the result is deterministic. When ``x`` holds more values than the
    ``lut_size``^3 lattice, the composed map is evaluated on the lattice and interpolated.

    Args:
        x: (3, *) values to recolour.
        src: (3, N) source samples.
        ref: (3, M) target samples.
        iterations: number of random bases.
        levels: quantiles per 1D marginal.
        seed: seed of the random bases.
        lut_size: lattice points per axis for large ``x``.

    Returns:
        (3, *) recoloured values.
    """
    g = torch.Generator().manual_seed(seed)
    moving = src.clone()
    steps = []
    for _ in range(iterations):
        basis = random_rotation(g, src.dtype).to(src.device)  # columns are directions
        ps, pr = basis.T @ moving, basis.T @ ref
        qs, qr = _quantiles(ps, levels), _quantiles(pr, levels)
        moving = moving + basis @ (quantile_map(ps, qs, qr) - ps)
        steps.append((basis.to(x.dtype), qs.to(x.dtype), qr.to(x.dtype)))

    def carry(values: torch.Tensor) -> torch.Tensor:
        for basis, qs, qr in steps:
            proj = basis.T @ values
            values = values + basis @ (quantile_map(proj, qs, qr) - proj)
        return values

    flat = x.reshape(3, -1)
    if flat.shape[1] > lut_size**3:
        return apply_via_lut3d(carry, x, lut_size)
    return carry(flat).reshape(x.shape)


def transfer(method: str, x: torch.Tensor, src: torch.Tensor, ref: torch.Tensor,
             max_gain: float | None = None) -> torch.Tensor:
    """Dispatch to one of ``METHODS``; shapes as in :func:`meanstd_transfer`. ``max_gain`` limits the linear
    methods' gains (meanstd, mkl); the distribution-matching ones (sot, histogram) take none."""
    if method == "meanstd":
        return meanstd_transfer(x, src, ref, max_gain=max_gain)
    if method == "mkl":
        return mkl_transfer(x, src, ref, max_gain=max_gain)
    if method == "sot":
        return sot_transfer(x, src, ref)
    if method == "histogram":
        return histogram_transfer(x, src, ref)
    raise ValueError(f"unknown colour match method {method!r}; use one of {METHODS}")


# ----------------------------------------------------------------------------------------------------------
# The node

SAMPLES_PER_FRAME = 20000
MAX_POOLED_SAMPLES = 40000
SKIN_ERODE = 0.02  # face widths: keep the skin samples off the mask's edge (hair, eyelids, background)

# (input index, its hash, the source's hash when the faces are borrowed from it, track id, space, working space)
# -> (3, N) samples; shared by neighbouring frames' windows so each frame's skin is sampled once, not 2N + 1
# times.
_sample_memo = Memo(256)


def skin_samples(image: Image, face, space: str, rgb_to_xyz: np.ndarray,
                 count: int = SAMPLES_PER_FRAME) -> torch.Tensor:
    """Colours of a face's skin (eyes, brows and mouth excluded, edge eroded) in the match space.

    Args:
        image: scene-linear working-space pixels (its face window is read, not the whole frame).
        face: the face whose skin is sampled.
        space: one of ``SPACES``.
        rgb_to_xyz: (3, 3) working space -> XYZ D65.
        count: at most this many samples, taken evenly (deterministic).

    Returns:
        (3, N) float32 samples (N may be 0 for a face with no visible skin).
    """
    window = face_window(face, (image.height, image.width), 2)
    # the mask (drawn on the host) and the indices stay on the host: found on a GPU, they would be waited for
    mask = region_mask(face, "skin", window, "cpu", grow=-SKIN_ERODE * face_width(face))[0]
    idx = torch.nonzero(mask.flatten() > 0.99).flatten()
    if idx.numel() > count:
        idx = idx[torch.linspace(0, idx.numel() - 1, count).long()]
    pixels = image.window(window)[:3].float().reshape(3, -1)[:, upload(idx, image.device)]
    return to_match_space(pixels, space, rgb_to_xyz)


@register_node
class ColorMatch(Node):
    """Match the swapped face's colour to the plate face under it (skin statistics, temporally pooled)."""

    type_name = "ColorMatch"
    version = 3
    category = "Finish"
    inputs = (Port("source", "Image"), Port("reference", "Image", optional=True), Port("mask", "Mask", optional=True))
    knob_specs = (
        K.Enum("method", METHODS, default="mkl",
               tooltip="meanstd: Reinhard mean/std; mkl: linear Monge-Kantorovich; sot: sliced optimal "
                       "transport; histogram: per-channel histogram matching."),
        K.Enum("space", SPACES, default="oklab", tooltip="Colour space the statistics are matched in."),
        K.Int("window", default=3, min=0, max=50, soft_max=12, animatable=False,
              tooltip="Pool the skin statistics over +- this many frames of the face track."),
        K.Enum("pool", ("both", "reference"), default="both",
               tooltip="both: pool the swap's skin statistics over the window too, so the colour transfer "
                       "moves smoothly; reference: the swap's are taken from each frame alone, which evens out "
                       "a swap's colour flicker but lets any change of its skin move the whole face's colour."),
        K.Float("max_gain", default=1.5, min=1.0, max=10.0, soft_max=4.0, label="max gain",
                tooltip="meanstd and mkl: the most the transfer may stretch (or 1 / this, shrink) the swap's skin "
                        "colours along any direction. The plate's skin often varies more than the swap's for "
                        "reasons that are not light (glasses, stubble, make-up): matched in full, such a gain "
                        "(up to 3.6 on people/d13) turns the swap's brows and shadows purple."),
        K.Float("mix", default=1.0, min=0.0, max=1.0),
    )

    def pass_through(self, ctx: EvalContext) -> int | None:
        if self.value("mix", ctx.frame) == 0.0:
            return 0
        return super().pass_through(ctx)

    def _window(self, ctx: EvalContext, repeats: int = 0) -> list[int]:
        """The frames pooled for a face that repeats the one ``repeats`` frames earlier (a held plate frame,
        ``Face.repeats``): those around that frame, so the repeated swap is recoloured as it was there."""
        w, centre = self.value("window", ctx.frame), ctx.frame - repeats
        first, last = self.graph.settings["first"], self.graph.settings["last"]
        frames = [f for f in range(centre - w, centre + w + 1) if first <= f <= last]
        return frames or [centre]

    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.working_space).update(engine_colour.config_cache_id())
        reach = self._window(ctx, MAX_REPEATS) + self._window(ctx)
        for f in sorted(set(reach)):
            if f != ctx.frame:
                # reference and source pixels at f (the source's faces stand in when the reference has none)
                h.update(f).update(self.input_hash(1, ctx.at(f))).update(self.input_hash(0, ctx.at(f)))

    def _skin_samples(self, ctx: EvalContext, inputs, index: int, frame: int, track_id: int, space: str,
                      rgb_to_xyz: np.ndarray) -> torch.Tensor | None:
        """Skin samples of input ``index`` at ``frame`` for a track (memoised), None without that face there.
        A reference without faces is sampled with the source's faces of that frame."""
        borrowed = self.input_hash(0, ctx.at(frame)) if index == 1 else None
        key = (index, self.input_hash(index, ctx.at(frame)), borrowed, track_id, space, ctx.working_space)
        cached = _sample_memo.get(key)
        if cached is not None:
            return cached.to(ctx.device)
        image = inputs.get(index, frame=frame)
        faces = image.faces or (inputs.get(0, frame=frame).faces if index == 1 else [])
        face = next((f for f in faces if f.track_id == track_id), None)
        if face is None:
            return None
        return _sample_memo.put(key, skin_samples(image, face, space, rgb_to_xyz))

    def _pooled(self, ctx: EvalContext, inputs, index: int, frames: list[int], track_id: int, space: str,
                rgb_to_xyz: np.ndarray, device) -> torch.Tensor | None:
        """(3, N) skin samples of input ``index`` over ``frames`` of a track, evenly thinned to at most
        MAX_POOLED_SAMPLES; None when no frame shows that face's skin."""
        pooled = [s for f in frames if (s := self._skin_samples(ctx, inputs, index, f, track_id, space, rgb_to_xyz))
                  is not None and s.shape[1] > 0]
        if not pooled:
            return None
        samples = torch.cat([s.to(device) for s in pooled], dim=1)
        # evenly thinned: the transforms' cost grows with the sample count, their accuracy barely does
        return samples[:, :: max(1, -(-samples.shape[1] // MAX_POOLED_SAMPLES))]

    def compute(self, ctx: EvalContext, inputs) -> Image:
        src = inputs.get(0)
        if not src.faces:
            return src
        ref_img = inputs.get(1)
        if ref_img is not None:
            require_same_size(self.name, src, ref_img, "reference")
        hw = (src.height, src.width)
        method, space = self.value("method", ctx.frame), self.value("space", ctx.frame)
        rgb_to_xyz = working_to_xyz_matrix(ctx.working_space)
        out = src
        mix = float(self.value("mix", ctx.frame))
        limit = mask_input(inputs.get(2), self.name, hw, src.device)
        ref_index = 1 if inputs.connected(1) else 0
        for face in src.faces:
            ctx.check_cancelled()
            frames = self._window(ctx, face.repeats)
            ref_samples = self._pooled(ctx, inputs, ref_index, frames, face.track_id, space, rgb_to_xyz, src.device)
            if self.value("pool", ctx.frame) == "both":
                src_samples = self._pooled(ctx, inputs, 0, frames, face.track_id, space, rgb_to_xyz, src.device)
            else:
                src_samples = skin_samples(src, face, space, rgb_to_xyz)
            if src_samples is None or src_samples.shape[1] < 16 or ref_samples is None:
                continue  # no skin visible on one side: leave this face alone
            src_samples = src_samples.to(src.device)
            window = swap_window(face, hw)
            y0, y1, x0, x1 = window
            # each face matches the swap as it came in (not with an overlapping face's result pasted in)
            values = to_match_space(src.window(window)[:3].float(), space, rgb_to_xyz)
            matched = from_match_space(transfer(method, values, src_samples, ref_samples,
                                                max_gain=float(self.value("max_gain", ctx.frame))),
                                       space, rgb_to_xyz)
            weight = swap_region(face, window, src.device) * mix
            if limit is not None:
                weight = weight * limit[:, y0:y1, x0:x1]
            out = blend_into(out, matched, weight, window)
        return out

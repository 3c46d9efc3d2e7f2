"""Colour transfer between two sets of colour samples, implemented from the papers (the ColorMatch node):

- ``meanstd``: per-channel mean and standard deviation transfer in a perceptual space (Reinhard et al.
  2001, "Color transfer between images").
- ``mkl``: the linear Monge-Kantorovich map between the two colour Gaussians (Pitie and Kokaram 2007,
  "The linear Monge-Kantorovitch linear colour mapping for example-based colour transfer").
- ``sot``: sliced optimal transport, matching 1D marginals along random orthonormal bases (Rabin, Peyre,
  Delon and Bernot 2011, "Wasserstein barycenter and its application to texture mixing"; Pitie et al.
  2007's iterative distribution transfer uses the same step).
- ``histogram``: per-channel histogram (quantile) matching.

``x`` is what gets recoloured (3, *); ``src``/``ref`` are sample sets (3, N) measured on the swap's and the
plate's skin in the same space (:mod:`doublure.finish.colour`).
"""
from __future__ import annotations

import torch

from doublure.engine.device import upload

METHODS = ("meanstd", "mkl", "sot", "histogram")


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

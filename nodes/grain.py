"""Grain: measure the plate's grain, then grow the same grain on the swapped face.

Analysis (``analyse_grain``): the plate is cut into square tiles; tiles whose smoothed gradient is small
(flat: a wall, a cheek, a backdrop) and that are not clipped are kept. In each, a least-squares plane per
channel is removed and what is left is the grain. From those residuals:

- ``std``: per channel noise standard deviation in a few luminance bands (grain depends on exposure),
- ``spectrum``: per channel radial power spectrum (energy at each spatial frequency, normalised to unit
  variance), which is the grain's size and softness,
- ``correlation``: the 3x3 correlation between channels (film and sensor grain is partly shared).

Synthesis (``synthesise_grain``): seeded white noise is shaped in the Fourier domain by the measured
amplitude response, mixed across channels by the Cholesky factor of the correlation, and scaled per pixel by
the std interpolated at the pixel's luminance. The seed comes from the frame, so a frame always gets the
same grain and neighbouring frames different grain.
"""
from __future__ import annotations

import math

import numpy as np
import torch

from doublure.engine import ops

ANALYSIS_SCHEMA = "doublure.grain/1"
TILE = 32
RADIAL_BINS = 16


def _plane_residual(tiles: torch.Tensor) -> torch.Tensor:
    """Remove the least-squares plane a + b x + c y from each tile (orthogonal basis on a regular grid).

    Args:
        tiles: (N, C, T, T).

    Returns:
        (N, C, T, T) residuals.
    """
    t = tiles.shape[-1]
    coord = torch.arange(t, device=tiles.device, dtype=tiles.dtype) - (t - 1) / 2.0
    gx = coord.view(1, 1, 1, t)
    gy = coord.view(1, 1, t, 1)
    norm = t * float((coord**2).sum())
    mean = tiles.mean(dim=(-2, -1), keepdim=True)
    bx = (tiles * gx).sum(dim=(-2, -1), keepdim=True) / norm
    by = (tiles * gy).sum(dim=(-2, -1), keepdim=True) / norm
    return tiles - mean - bx * gx - by * gy


def _tiles(img: torch.Tensor, tile: int) -> torch.Tensor:
    """(C, H, W) -> (N, C, tile, tile) non-overlapping tiles, row-major; the ragged border is dropped."""
    c, h, w = img.shape
    ny, nx = h // tile, w // tile
    t = img[:, : ny * tile, : nx * tile].reshape(c, ny, tile, nx, tile)
    return t.permute(1, 3, 0, 2, 4).reshape(ny * nx, c, tile, tile)


def radial_frequency(tile: int, device=None, dtype=torch.float64) -> torch.Tensor:
    """(tile, tile) radius of each FFT bin in cycles per pixel (0 .. ~0.707)."""
    f = torch.fft.fftfreq(tile, device=device, dtype=dtype)
    return torch.sqrt(f.view(-1, 1) ** 2 + f.view(1, -1) ** 2)


def radial_profile(power: torch.Tensor, bins: int = RADIAL_BINS) -> torch.Tensor:
    """Average a (*, T, T) power spectrum over rings of equal frequency radius.

    Bins split [0, 0.5] cycles/pixel evenly; the corners beyond Nyquist join the last bin.

    Args:
        power: (*, T, T) unshifted power spectrum (``|fft2|^2``).

    Returns:
        (*, bins) mean power per ring (the DC bin's ring included; a plane-removed residual has ~0 there).
    """
    t = power.shape[-1]
    r = radial_frequency(t, power.device, torch.float64)
    idx = (r / 0.5 * bins).floor().clamp(max=bins - 1).long().flatten()
    flat = power.reshape(-1, t * t).double()
    sums = torch.zeros(flat.shape[0], bins, dtype=torch.float64, device=power.device).index_add_(1, idx, flat)
    counts = torch.bincount(idx, minlength=bins).to(torch.float64)
    return (sums / counts).reshape(*power.shape[:-2], bins).to(power.dtype)


def flat_tiles(img: torch.Tensor, luma_weights: torch.Tensor, tile: int = TILE, keep: float = 0.3,
               region: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Find flat, unclipped tiles of an image.

    Flatness is the mean gradient magnitude of the luminance after a blur that removes most grain, so it
    measures structure, not noise (ranking by raw variance would prefer the tiles with the least grain and
    bias the measure low). Tiles touching a channel's extreme value are dropped: clipped blacks and
    highlights hold no grain.

    Args:
        img: (3, H, W) scene-linear.
        luma_weights: (3,) luminance weights.
        tile: tile size in pixels.
        keep: fraction of candidate tiles kept (the flattest).
        region: optional (1, H, W) mask; only tiles entirely inside (min > 0.5) are candidates.

    Returns:
        (tiles (N, 3, T, T), tile mean luminance (N,)).
    """
    lum = torch.einsum("c,chw->hw", luma_weights.to(img.dtype).to(img.device), img)[None]
    gy, gx = torch.gradient(ops.gaussian_blur(lum, 2.0)[0])
    structure = _tiles(torch.sqrt(gx**2 + gy**2)[None], tile).mean(dim=(1, 2, 3))
    tiles = _tiles(img, tile)
    lo = img.amin(dim=(1, 2)).view(1, 3, 1, 1)
    hi = img.amax(dim=(1, 2)).view(1, 3, 1, 1)
    tol = 1e-6 * (hi - lo).clamp_min(1e-6)
    clipped = ((tiles <= lo + tol) | (tiles >= hi - tol)).flatten(1).any(dim=1)
    ok = ~clipped
    if region is not None:
        ok &= _tiles(region.to(img.dtype).reshape(1, *img.shape[-2:]), tile).amin(dim=(1, 2, 3)) > 0.5
    idx = torch.nonzero(ok).flatten()
    if idx.numel() == 0:
        return img.new_zeros(0, 3, tile, tile), img.new_zeros(0)
    n_keep = max(1, int(math.ceil(keep * idx.numel())))
    flattest = idx[torch.argsort(structure[idx])[:n_keep]]
    return tiles[flattest], _tiles(lum, tile)[flattest].mean(dim=(1, 2, 3))


def analyse_grain(frames, luma_weights: torch.Tensor, *, region: torch.Tensor | None = None, tile: int = TILE,
                  bands: int = 6, keep: float = 0.3) -> dict:
    """Measure grain from flat tiles of one or more frames.

    Args:
        frames: iterable of (3, H, W) scene-linear plates.
        luma_weights: (3,) luminance weights of the working space.
        region: optional (1, H, W) mask restricting where flat tiles are looked for.
        tile: tile size in pixels (sets the lowest frequency measured: 1 / tile cycles per pixel).
        bands: number of luminance bands (equal tile counts each; fewer when tiles are scarce).
        keep: fraction of each frame's candidate tiles kept as flat.

    Returns:
        JSON-able dict: ``schema``, ``tile``, ``tiles`` (count used), ``log2_lum`` (band centres, log2 of
        luminance), ``std`` ([band][channel]), ``spectrum`` ([channel][RADIAL_BINS] radial power, mean 1
        over the 2D frequency grid), ``correlation`` (3x3).

    Raises:
        ValueError: no flat unclipped tile was found.
    """
    picked, lums = [], []
    for frame in frames:
        t, l = flat_tiles(frame.float(), luma_weights, tile, keep, region)
        picked.append(t)
        lums.append(l)
    tiles = torch.cat(picked).double()
    lum = torch.cat(lums).double()
    if tiles.shape[0] == 0:
        raise ValueError("no flat, unclipped region found to measure grain in")
    n = tile * tile
    res = _plane_residual(tiles)
    # std of a residual with 3 fitted parameters removed, made unbiased
    std = res.pow(2).mean(dim=(-2, -1)).mul(n / (n - 3)).sqrt()  # (N, 3)
    log_lum = torch.log2(lum.clamp_min(1e-6))
    n_bands = max(1, min(bands, tiles.shape[0] // 8))
    order = torch.argsort(log_lum)
    centres, band_std = [], []
    for chunk in torch.tensor_split(order, n_bands):
        centres.append(float(log_lum[chunk].median()))
        band_std.append([float(v) for v in std[chunk].median(dim=0).values])
    # spectrum shape: each tile normalised to unit variance so bright and dark bands weigh the same
    unit = res / std.clamp_min(1e-12)[..., None, None]
    power = torch.fft.fft2(unit).abs().pow(2).mean(dim=0) / n  # (3, T, T), mean over the grid ~ 1
    profile = radial_profile(power)
    profile = profile / power.mean(dim=(-2, -1), keepdim=False)[:, None]
    flat = unit.permute(1, 0, 2, 3).reshape(3, -1)
    corr = torch.corrcoef(flat)
    return {
        "schema": ANALYSIS_SCHEMA,
        "tile": tile,
        "tiles": int(tiles.shape[0]),
        "log2_lum": centres,
        "std": band_std,
        "spectrum": [[float(v) for v in row] for row in profile],
        "correlation": [[float(v) for v in row] for row in corr],
    }


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for torch: piecewise linear through (xp, fp), constant beyond the ends. xp increasing."""
    if xp.numel() == 1:
        return fp.expand_as(x).clone() if fp.numel() == 1 else fp[0].expand_as(x).clone()
    idx = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp(0, 1)
    return fp[idx - 1] + t * (fp[idx] - fp[idx - 1])


def grain_amplitude(spectrum: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Fourier amplitude filter for an (H, W) noise field with the given radial power spectra.

    Args:
        spectrum: (3, B) radial power per channel, bins evenly over [0, 0.5] cycles per pixel.
        hw: (H, W) of the field.

    Returns:
        (3, H, W) amplitude, scaled so filtered unit white noise keeps unit variance.
    """
    h, w = hw
    bins = spectrum.shape[-1]
    centres = (torch.arange(bins, dtype=torch.float64, device=spectrum.device) + 0.5) * (0.5 / bins)
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=spectrum.device).view(-1, 1)
    fx = torch.fft.fftfreq(w, dtype=torch.float64, device=spectrum.device).view(1, -1)
    r = torch.sqrt(fy**2 + fx**2).clamp(max=0.5).flatten()
    amp = torch.stack([_interp(r, centres, spectrum[c].double().clamp_min(0)) for c in range(3)]).sqrt()
    amp = amp.reshape(3, h, w)
    return amp / amp.pow(2).mean(dim=(-2, -1), keepdim=True).sqrt().clamp_min(1e-12)


def synthesise_grain(lum: torch.Tensor, analysis: dict, seed: int) -> torch.Tensor:
    """Grain with the analysed character for an image of the given luminance.

    Args:
        lum: (1, H, W) luminance of the image the grain goes on (grain strength follows exposure).
        analysis: a dict from :func:`analyse_grain`.
        seed: random seed (derive it from the frame so renders repeat exactly).

    Returns:
        (3, H, W) zero-mean grain, same dtype and device as ``lum``.
    """
    h, w = lum.shape[-2:]
    dev = lum.device
    # White noise is drawn on the CPU so the same seed gives the same grain on every device.
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    white = torch.randn(3, h, w, generator=gen).to(dev)
    amp = grain_amplitude(torch.tensor(analysis["spectrum"], device=dev), (h, w)).float()
    shaped = torch.fft.ifft2(torch.fft.fft2(white) * amp).real
    corr = torch.tensor(analysis["correlation"], dtype=torch.float64)
    chol = torch.linalg.cholesky(corr + 1e-6 * torch.eye(3, dtype=torch.float64)).float().to(dev)
    shaped = torch.einsum("ij,jhw->ihw", chol, shaped)
    xp = torch.tensor(analysis["log2_lum"], dtype=torch.float32, device=dev)
    stds = torch.tensor(analysis["std"], dtype=torch.float32, device=dev)  # (bands, 3)
    log_lum = torch.log2(lum.float().clamp_min(1e-6)).flatten()
    scale = torch.stack([_interp(log_lum, xp, stds[:, c]) for c in range(3)]).reshape(3, h, w)
    return (shaped * scale).to(lum.dtype)

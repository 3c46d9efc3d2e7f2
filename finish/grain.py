"""Grain maths: measure a plate's grain, then grow the same grain on a swapped face (the Grain node).

Analysis (``analyse_grain``): the plate is cut into square tiles; tiles whose smoothed gradient is small
(flat: a wall, a cheek, a backdrop) and that are not clipped are kept. In each, a least-squares plane per
channel is removed and what is left is the grain. From those residuals:

- ``std``: per channel noise standard deviation in a few luminance bands (grain depends on exposure),
- ``spectrum``: per channel radial power spectrum (energy at each spatial frequency, normalised to unit
  variance), which is the grain's size and softness,
- ``correlation``: the 3x3 correlation between channels (film and sensor grain is partly shared),
- ``renewal``: per channel, the share of that variance which is new in the next frame (the same tiles'
  frame difference / sqrt(2), against the tile itself), and ``renewing_spectrum``, the renewing part's shape.

Film grain renews every frame (renewal ~1). Compressed video does not: most of what looks like grain in one
frame (pores, fine texture, the codec's texture) stays from frame to frame, and the encoder drops much of
the sensor's noise, so its temporal noise is far below its spatial one (the people/ and MEAD plates measure
renewal 0.01-0.04; bench/RESULTS.md, 2026-11-29 grain renewal).

Synthesis: seeded white noise is shaped in the Fourier domain by the measured amplitude response, mixed
across channels by the Cholesky factor of the correlation, and scaled per pixel by the std interpolated at
the pixel's luminance. ``synthesise_grain`` seeds it by the frame (every frame new grain).
``synthesise_face_grain`` splits the grain into that renewing part and an attached part: a stationary
random field fixed in the face's own frame (its crop transform's rotation and translation; a sum of plane
waves drawn from the spectrum, evaluated exactly at the plate's pixels, so it needs no resampling), seeded by
the face's track, so it rides on the face like the skin's texture does. The variances add up to the measured
spatial std; the frame-to-frame change is the renewing part's.
"""
from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
import torch

from doublure.engine import fields, ops
from doublure.engine.cache import Memo
from doublure.engine.device import cpu_has_native_bf16, upload
from doublure.faces.face import affine_scale

ANALYSIS_SCHEMA = "doublure.grain/2"
# Analyses of schema 1 measured no renewal; they are read as fully renewing grain, which is how they rendered.
OLD_SCHEMAS = ("doublure.grain/1",)
TILE = 32
RADIAL_BINS = TILE // 2


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


def detrend_gain(tile: int, dtype=torch.float64, device=None) -> torch.Tensor:
    """How much of each frequency's power survives :func:`_plane_residual` (for white noise, exactly).

    For unit white noise w, E|FFT(R w)_k|^2 = n - sum_j |FFT(b_j)_k|^2 with R the projection removing the
    orthonormal basis b_j (constant, x, y) and n = tile^2. Dividing a measured spectrum by this undoes the
    loss at the lowest frequencies (the DC term, gain 0, stays lost).

    Returns:
        (tile, tile) gain in [0, 1], unshifted FFT layout.
    """
    coord = torch.arange(tile, dtype=dtype, device=device) - (tile - 1) / 2.0
    ones = torch.ones(tile, tile, dtype=dtype, device=device)
    basis = torch.stack([ones, coord.view(1, -1) * ones, coord.view(-1, 1) * ones])
    basis = basis / basis.flatten(1).norm(dim=1).view(3, 1, 1)
    n = tile * tile
    return (1.0 - torch.fft.fft2(basis).abs().pow(2).sum(0) / n).clamp(0, 1)


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


def _structure(plane: torch.Tensor, tile: int) -> torch.Tensor:
    """Mean gradient magnitude per tile of a (1, H, W) plane after a blur that removes most grain."""
    gy, gx = torch.gradient(ops.gaussian_blur(plane, 2.0)[0])
    return _tiles(torch.sqrt(gx**2 + gy**2)[None], tile).mean(dim=(1, 2, 3))


class GrainTiles(NamedTuple):
    """Candidate tiles of one frame (see :func:`candidate_tiles`); N tiles, T px."""

    tiles: torch.Tensor             # (N, 3, T, T) each tile's cleaner view of the grain
    lum: torch.Tensor               # (N,) mean luminance
    structure: torch.Tensor         # (N,) the cleaner view's structure
    spatial: torch.Tensor           # (N, 3, T, T) the tile itself
    spatial_structure: torch.Tensor  # (N,)
    temporal: torch.Tensor | None   # (N, 3, T, T) (this - next) / sqrt(2); None without a usable next frame


def candidate_tiles(img: torch.Tensor, luma_weights: torch.Tensor, tile: int = TILE,
                    region: torch.Tensor | None = None, next_img: torch.Tensor | None = None) -> GrainTiles:
    """Cut an image into tiles that may hold measurable grain, with how much image content they hold.

    Two views of the grain per tile, each the grain plus something that only adds variance:
    - spatial: the tile itself (grain + texture); its "structure" is the mean gradient magnitude of the
      luminance after a blur that removes most grain, so it measures content, not noise (ranking by raw
      variance would prefer tiles with the least grain and bias the measure low);
    - temporal (with ``next_img``, the following frame): (this - next) / sqrt(2) (grain that renews + motion);
      its structure is the same measure on the difference.
    ``tiles`` keeps the view with less structure, so textured but static areas (a face holding still) and
    flat but moving areas both give clean grain. Both views are returned too: on flat tiles their variances
    tell how much of the grain renews from frame to frame (see :func:`analyse_grain`). A repeated frame
    (held, pulled down: the whole frame identical) has no temporal view. Tiles touching a channel's extreme
    value are dropped: clipped blacks and highlights hold no grain.

    Args:
        img: (3, H, W) scene-linear.
        luma_weights: (3,) luminance weights.
        tile: tile size in pixels.
        region: optional (1, H, W) mask; only tiles entirely inside (min > 0.5) are candidates.
        next_img: optional (3, H, W) following frame.

    Returns:
        :class:`GrainTiles` of the N candidate tiles.
    """
    weights = luma_weights.to(img.dtype).to(img.device)
    lum = torch.einsum("c,chw->hw", weights, img)[None]
    spatial_structure = structure = _structure(lum, tile)
    spatial = tiles = _tiles(img, tile)
    diff_tiles = None
    if next_img is not None:
        diff = (img - next_img.to(img.dtype)) / math.sqrt(2.0)
        if bool((diff != 0).any()):
            moving = _structure(torch.einsum("c,chw->hw", weights, diff)[None], tile)
            diff_tiles = _tiles(diff, tile)
            # a tile the codec repeated differs by nothing: no grain to see there
            use_diff = (moving < structure) & (diff_tiles.flatten(1).std(dim=1) > 1e-7)
            tiles = torch.where(use_diff.view(-1, 1, 1, 1), diff_tiles, tiles)
            structure = torch.where(use_diff, moving, structure)
    lo = img.amin(dim=(1, 2)).view(1, 3, 1, 1)
    hi = img.amax(dim=(1, 2)).view(1, 3, 1, 1)
    tol = 1e-6 * (hi - lo).clamp_min(1e-6)
    ok = ~((spatial <= lo + tol) | (spatial >= hi - tol)).flatten(1).any(dim=1)
    if region is not None:
        ok &= _tiles(region.to(img.dtype).reshape(1, *img.shape[-2:]), tile).amin(dim=(1, 2, 3)) > 0.5
    return GrainTiles(tiles[ok], _tiles(lum, tile)[ok].mean(dim=(1, 2, 3)), structure[ok], spatial[ok],
                      spatial_structure[ok], None if diff_tiles is None else diff_tiles[ok])


def tile_size_for(hw: tuple[int, int]) -> int:
    """Analysis tile size: TILE px, halved for small frames so enough tiles fit between features."""
    return TILE if min(hw) >= 512 else TILE // 2


def _residual_spectrum(res: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """Radial power profile of plane-removed residuals, each tile normalised to unit variance.

    Args:
        res: (N, 3, T, T) residuals of :func:`_plane_residual`.
        std: (N, 3) their std.

    Returns:
        (3, T / 2) radial power, mean 1 over the 2D frequency grid, the detrending's loss undone.
    """
    n = res.shape[-1] ** 2
    unit = res / std.clamp_min(1e-12)[..., None, None]
    power = torch.fft.fft2(unit).abs().pow(2).mean(dim=0) / n  # (3, T, T), mean over the grid ~ 1
    gain = detrend_gain(res.shape[-1], power.dtype, power.device)
    power = torch.where(gain > 0.05, power / gain.clamp_min(0.05), torch.zeros_like(power))
    # one ring per FFT bin step: tile / 2 rings up to Nyquist
    return radial_profile(power, bins=res.shape[-1] // 2) / power.mean(dim=(-2, -1))[:, None]


def analyse_grain(frames, luma_weights: torch.Tensor, *, regions=None, next_frames=None, tile: int | None = None,
                  bands: int = 6, keep: float = 0.3) -> dict:
    """Measure grain from flat tiles of one or more frames, and how much of it renews from frame to frame.

    Candidate tiles are split into ``bands`` luminance strata of equal count and the flattest ``keep``
    fraction of each stratum is measured, so bright and dark areas are both represented even when the
    flattest parts of the frame are all dark (a backdrop) or all bright (a sky).

    Renewal: on the flattest ``keep`` fraction of the tiles that have a temporal view (ranked by their
    spatial structure, so shading does not count as grain), per channel the median over tiles of
    (variance of the frame difference / 2) / (variance of the tile). Grain that is new every frame gives 1,
    a texture that stays gives 0. The median keeps a few moving tiles from raising it.

    Args:
        frames: iterable of (3, H, W) scene-linear plates.
        luma_weights: (3,) luminance weights of the working space.
        regions: optional list, one per frame, of (1, H, W) masks (or None) restricting where flat tiles
            are looked for.
        next_frames: optional list, one per frame, of the following frame (or None): enables the temporal
            view of :func:`candidate_tiles`, and the renewal.
        tile: tile size in pixels (sets the lowest frequency measured: 1 / tile cycles per pixel);
            :func:`tile_size_for` the first frame when None.
        bands: number of luminance bands (fewer when tiles are scarce).
        keep: fraction of each band's candidate tiles measured (the flattest).

    Returns:
        JSON-able dict: ``schema``, ``tile``, ``tiles`` (count used), ``log2_lum`` (band centres, log2 of
        luminance), ``std`` ([band][channel]), ``exponent`` ([channel] slope of log2 std over log2
        luminance, used beyond the measured bands), ``spectrum`` ([channel][tile / 2] radial power, mean 1
        over the 2D frequency grid), ``correlation`` (3x3), ``renewal`` ([channel] in [0, 1]; None without
        a temporal view, and then the grain is taken to renew fully), ``renewing_spectrum`` (like
        ``spectrum``, of the frame difference; None with ``renewal``), ``renewal_tiles`` (count).

    Raises:
        ValueError: no flat unclipped tile was found.
    """
    frames = list(frames)
    regions = list(regions) if regions is not None else [None] * len(frames)
    if tile is None:
        tile = tile_size_for(tuple(frames[0].shape[-2:]))
    next_frames = list(next_frames) if next_frames is not None else [None] * len(frames)
    found = [candidate_tiles(f.float(), luma_weights, tile, r, None if nf is None else nf.float())
             for f, r, nf in zip(frames, regions, next_frames)]
    tiles = torch.cat([c.tiles for c in found]).double()
    lum = torch.cat([c.lum for c in found]).double()
    structure = torch.cat([c.structure for c in found]).double()
    if tiles.shape[0] == 0:
        raise ValueError("no flat, unclipped region found to measure grain in")
    log_lum = torch.log2(lum.clamp_min(1e-6))
    n_bands = max(1, min(bands, tiles.shape[0] // 16))
    strata = torch.tensor_split(torch.argsort(log_lum), n_bands)
    kept = [chunk[torch.argsort(structure[chunk])[: max(1, int(math.ceil(keep * chunk.numel())))]] for chunk in strata]
    res = _plane_residual(tiles[torch.cat(kept)])
    std = _residual_std(res)  # (N, 3)
    centres, band_std, start = [], [], 0
    for chunk in kept:
        part = slice(start, start + chunk.numel())
        start += chunk.numel()
        centres.append(float(log_lum[chunk].median()))
        band_std.append([float(v) for v in std[part].median(dim=0).values])
    # spectrum shape: each tile normalised to unit variance so bright and dark bands weigh the same
    profile = _residual_spectrum(res, std)
    unit = res / std.clamp_min(1e-12)[..., None, None]
    corr = torch.corrcoef(unit.permute(1, 0, 2, 3).reshape(3, -1))
    renewal, renewing_profile, count = _renewal(found, keep)
    return {
        "schema": ANALYSIS_SCHEMA,
        "tile": tile,
        "tiles": int(res.shape[0]),
        "log2_lum": centres,
        "std": band_std,
        "exponent": _luminance_exponent(centres, band_std),
        "spectrum": [[float(v) for v in row] for row in profile],
        "correlation": [[float(v) for v in row] for row in corr],
        "renewal": None if renewal is None else [float(v) for v in renewal],
        "renewing_spectrum": None if renewing_profile is None else [[float(v) for v in row] for row in renewing_profile],
        "renewal_tiles": count,
    }


def _residual_std(res: torch.Tensor) -> torch.Tensor:
    """(N, C, T, T) plane residuals -> (N, C) std, made unbiased for the 3 fitted parameters."""
    n = res.shape[-1] * res.shape[-2]
    return res.pow(2).mean(dim=(-2, -1)).mul(n / (n - 3)).sqrt()


def _renewal(found: list[GrainTiles], keep: float) -> tuple[torch.Tensor | None, torch.Tensor | None, int]:
    """The renewal of :func:`analyse_grain`: (renewal (3,), renewing spectrum (3, T / 2), tile count), or
    (None, None, 0) when no frame has a temporal view."""
    with_next = [c for c in found if c.temporal is not None and c.spatial.shape[0] > 0]
    if not with_next:
        return None, None, 0
    spatial = torch.cat([c.spatial for c in with_next]).double()
    temporal = torch.cat([c.temporal for c in with_next]).double()
    flatness = torch.cat([c.spatial_structure for c in with_next]).double()
    flat = torch.argsort(flatness)[: max(1, int(math.ceil(keep * flatness.numel())))]
    res_s, res_t = _plane_residual(spatial[flat]), _plane_residual(temporal[flat])
    std_s, std_t = _residual_std(res_s), _residual_std(res_t)
    seen = std_s.amin(dim=1) > 0
    if not bool(seen.any()):
        return None, None, 0
    share = (std_t[seen] / std_s[seen]).pow(2).median(dim=0).values.clamp(0.0, 1.0)
    moving = seen & (std_t.amin(dim=1) > 0)
    spectrum = _residual_spectrum(res_t[moving], std_t[moving]) if bool(moving.any()) else _residual_spectrum(res_s, std_s)
    return share, spectrum, int(seen.sum())


# Grain std grows with exposure; where the bands span too little to tell how fast, assume photon shot noise.
DEFAULT_EXPONENT = 0.5


def _luminance_exponent(centres: list[float], band_std: list[list[float]]) -> list[float]:
    """Per channel least-squares slope of log2(std) against log2(luminance), clamped to [0, 1]."""
    x = np.asarray(centres)
    if x.size < 2 or x.max() - x.min() < 1.0:
        return [DEFAULT_EXPONENT] * 3
    y = np.log2(np.maximum(np.asarray(band_std), 1e-9))
    slopes = np.polyfit(x, y, 1)[0]
    return [float(np.clip(s, 0.0, 1.0)) for s in np.atleast_1d(slopes)]


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """np.interp for torch, for several curves through the same knots at once: piecewise linear through
    (xp, fp[..., k]), constant beyond the ends. xp increasing.

    The knot search is done once for all the curves (it is most of the cost: 3 colour channels share it).

    Args:
        x: (M,) points.
        xp: (K,) knots.
        fp: (..., K) values at the knots.

    Returns:
        (..., M).
    """
    if xp.numel() == 1:
        return fp[..., :1].expand(*fp.shape[:-1], x.numel()).clone()
    idx = torch.searchsorted(xp.contiguous(), x.contiguous()).clamp_(1, xp.numel() - 1)
    x0, x1 = xp[idx - 1], xp[idx]
    t = ((x - x0) / (x1 - x0).clamp_min(1e-12)).clamp_(0, 1)
    lo = fp[..., idx - 1]
    return lo + t * (fp[..., idx] - lo)


def _radial_power(spectrum: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """Power of radial spectra at frequency radii.

    Args:
        spectrum: (3, B) radial power per channel, bins evenly over [0, 0.5] cycles per pixel.
        r: (M,) radii in cycles per pixel (beyond 0.5: the last bin's power).

    Returns:
        (3, M) float64 power.
    """
    bins = spectrum.shape[-1]
    centres = (torch.arange(bins, dtype=torch.float64, device=spectrum.device) + 0.5) * (0.5 / bins)
    # The first ring holds only the tile's DC, which the analysis cannot see; below the first measured ring
    # the grain is taken to keep that ring's power rather than fade to nothing.
    spectrum = spectrum.double().clamp_min(0).clone()
    spectrum[:, 0] = spectrum[:, 1]
    r = r.to(torch.float64).clamp(max=0.5)
    return _interp(r, centres, spectrum)


def grain_amplitude(spectrum: torch.Tensor, hw: tuple[int, int]) -> torch.Tensor:
    """Fourier amplitude filter for an (H, W) noise field with the given radial power spectra, on the
    half-spectrum grid of ``torch.fft.rfft2`` (a radial filter is symmetric, so the other half is implied).

    Args:
        spectrum: (3, B) radial power per channel, bins evenly over [0, 0.5] cycles per pixel.
        hw: (H, W) of the field.

    Returns:
        (3, H, W // 2 + 1) amplitude, scaled so filtered unit white noise keeps unit variance.
    """
    h, w = hw
    fy = torch.fft.fftfreq(h, dtype=torch.float64, device=spectrum.device).view(-1, 1)
    fx = torch.fft.rfftfreq(w, dtype=torch.float64, device=spectrum.device).view(1, -1)
    r = torch.sqrt(fy**2 + fx**2).flatten()
    amp = _radial_power(spectrum, r).sqrt().reshape(3, h, w // 2 + 1)
    # the mean power over the full grid: every half-grid column but the first (and, for even W, the last)
    # stands for two columns of the full spectrum
    count = torch.full((w // 2 + 1,), 2.0, dtype=amp.dtype, device=amp.device)
    count[0] = 1.0
    if w % 2 == 0:
        count[-1] = 1.0
    power = (amp.pow(2).sum(dim=-2) * count).sum(dim=-1) / (h * w)
    return amp / power.sqrt().clamp_min(1e-12).view(3, 1, 1)


def renewing_noise(hw: tuple[int, int], spectrum: torch.Tensor, seed: int, device=None) -> torch.Tensor:
    """Unit-variance noise with the given radial spectra on the pixel grid, a new pattern per seed.

    Args:
        hw: (H, W).
        spectrum: (3, B) radial power per channel.
        seed: random seed (the frame's, for grain that renews every frame).

    Returns:
        (3, H, W) float32, channels independent.
    """
    h, w = hw
    # White noise is drawn on the CPU so the same seed gives the same grain on every device.
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    white = upload(torch.randn(3, h, w, generator=gen), device)
    amp = grain_amplitude(upload(spectrum, device), (h, w)).float()
    # real noise through a real, symmetric filter: the half spectrum does it in half the work of fft2
    return torch.fft.irfft2(torch.fft.rfft2(white) * amp, s=(h, w))


# The attached grain is a sum of this many plane waves per channel; their frequencies are drawn on a grid of
# _WAVE_CELLS^2 cells over [-0.5, 0.5)^2 cycles per pixel, jittered inside the cell.
ATTACHED_WAVES = 1024
_WAVE_CELLS = 64


# (spectrum, seed, waves) -> attached_waves(...): a track's waves are the same on every frame it is on.
_waves_memo = Memo(16)


def attached_waves(spectrum: torch.Tensor, seed: int, waves: int = ATTACHED_WAVES) -> tuple[torch.Tensor, torch.Tensor]:
    """The plane waves of an attached grain field: frequencies drawn in proportion to the channels' mean
    power, each channel weighting them by its own power over that mean (importance sampling), with complex
    Gaussian coefficients normalised so each channel's field has unit variance.

    The field at a point q (pixels, in the face's frame) is ``Re(sum_k coefs[c, k] exp(2 pi i freqs[k] . q))``.

    Args:
        spectrum: (3, B) radial power per channel.
        seed: random seed (the track's: the same pattern on every frame).
        waves: number of plane waves.

    Returns:
        (freqs (K, 2) float64 cycles per pixel (x, y), coefs (3, K) complex128).
    """
    gen = torch.Generator().manual_seed(int(seed) & 0x7FFF_FFFF_FFFF_FFFF)
    centre = (torch.arange(_WAVE_CELLS, dtype=torch.float64) + 0.5) / _WAVE_CELLS - 0.5
    fy, fx = torch.meshgrid(centre, centre, indexing="ij")
    power = _radial_power(spectrum.cpu(), torch.sqrt(fx**2 + fy**2).flatten())  # (3, cells^2)
    mean = power.mean(dim=0)
    cell = torch.multinomial(mean.float(), waves, replacement=True, generator=gen)
    jitter = (torch.rand(waves, 2, generator=gen, dtype=torch.float64) - 0.5) / _WAVE_CELLS
    freqs = torch.stack([fx.flatten()[cell], fy.flatten()[cell]], dim=1) + jitter
    weight = (power[:, cell] / mean[cell].clamp_min(1e-300)).sqrt()  # (3, K)
    coefs = torch.complex(torch.randn(3, waves, generator=gen, dtype=torch.float64),
                          torch.randn(3, waves, generator=gen, dtype=torch.float64)) * weight
    # a wave Re(c e^(i theta)) has spatial variance |c|^2 / 2; distinct waves add
    coefs = coefs / (coefs.abs().pow(2).sum(dim=1, keepdim=True) / 2).sqrt().clamp_min(1e-300)
    return freqs, coefs


def face_frame(to_crop: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The face's own frame in plate pixels: q = M p + t, the crop transform's rotation (and any shear)
    about the crop's centre at the plate's pixel scale, so a pattern fixed in q moves and turns with the
    face but keeps its size in plate pixels (grain size is the camera's, not the face's).

    Args:
        to_crop: (2, 3) plate pixel -> crop unit affine (``Face.to_crop``).

    Returns:
        (M (2, 2), t (2,)) float64.
    """
    to_crop = np.asarray(to_crop, dtype=np.float64)
    a, b = to_crop[:, :2], to_crop[:, 2]
    scale = 1.0 / max(affine_scale(a), 1e-150)  # plate px per crop unit
    return scale * a, scale * (b - 0.5)


def attached_noise(spectrum: torch.Tensor, to_crop: np.ndarray, window: tuple[int, int, int, int], seed: int,
                   waves: int = ATTACHED_WAVES, device=None) -> torch.Tensor:
    """A stationary random field with the given radial spectra, fixed in a face's frame (see
    :func:`face_frame`), evaluated exactly at the plate pixels of a window: moving the face moves the pattern
    with it, with no resampling (a plane wave stays a plane wave under an affine map).

    Each wave exp(2 pi i f . (M p + t)) over the window's pixel grid is the outer product of a column and a
    row factor, so the field is one (h, 2K) @ (2K, w) product per channel.

    Args:
        spectrum: (3, B) radial power per channel.
        to_crop: (2, 3) the face's plate pixel -> crop unit affine.
        window: (y0, y1, x0, x1) plate pixels.
        seed: random seed (per track).
        waves: number of plane waves (:func:`attached_waves`).

    Returns:
        (3, y1 - y0, x1 - x0) float32, unit variance per channel, channels independent.
    """
    key = (spectrum.cpu().numpy().tobytes(), int(seed), int(waves))
    freqs, coefs = _waves_memo.get(key) or _waves_memo.put(key, attached_waves(spectrum, seed, waves))
    m, t = face_frame(to_crop)
    y0, y1, x0, x1 = window
    f = freqs.numpy()
    plate_freq = torch.from_numpy(f @ m)                      # (K, 2): the wave's frequency in plate pixels
    phase0 = torch.from_numpy(f @ t) + plate_freq[:, 0] * x0 + plate_freq[:, 1] * y0
    xs = torch.arange(x1 - x0, dtype=torch.float64)
    ys = torch.arange(y1 - y0, dtype=torch.float64)
    two_pi = 2.0 * math.pi
    # phases in cycles, reduced to [0, 1) in float64 (they reach hundreds of cycles across a 1080p frame),
    # then cos and sin in float32: half the time of float64 complex exponentials, within 2e-6 of them
    row = (plate_freq[:, 0:1] * xs[None, :]).frac_().float().mul_(two_pi)                   # (K, w)
    col = (ys[:, None] * plate_freq[None, :, 1] + phase0[None, :]).frac_().float().mul_(two_pi)  # (h, K)
    row_cos, row_sin = torch.cos(row), torch.sin(row)
    c_re, c_im = coefs.real.float()[:, :, None], coefs.imag.float()[:, :, None]        # (3, K, 1)
    z = torch.cat([c_re * row_cos - c_im * row_sin, c_re * row_sin + c_im * row_cos], dim=1)  # (3, 2K, w)
    a = torch.cat([torch.cos(col), -torch.sin(col)], dim=1)                            # (h, 2K)
    a, z = upload(a, device), upload(z, device)
    if a.device.type == "cpu" and cpu_has_native_bf16():
        # 2.7x faster here; each pixel sums 2K terms of ~1/sqrt(K) with 8-bit mantissas and an fp32
        # accumulator: ~0.3% of the field's std, ~1e-5 of the plate's level at the grain's usual strength
        return torch.matmul(a.bfloat16(), z.bfloat16()).float()
    return torch.matmul(a, z)


def grain_std_map(lum: torch.Tensor, analysis: dict) -> torch.Tensor:
    """The grain's std at each pixel, per channel, from the analysis' luminance bands.

    Args:
        lum: (1, H, W) luminance of the image the grain goes on.
        analysis: a dict from :func:`analyse_grain`.

    Returns:
        (3, H, W) float32.
    """
    h, w = lum.shape[-2:]
    dev = lum.device
    xp = upload(torch.tensor(analysis["log2_lum"], dtype=torch.float32), dev)
    stds = upload(torch.tensor(analysis["std"], dtype=torch.float32), dev)  # (bands, 3)
    exponent = analysis.get("exponent", [DEFAULT_EXPONENT] * 3)
    log_lum = torch.log2(lum.float().clamp_min(1e-6)).flatten()
    # inside the measured bands: interpolate; beyond them: follow the luminance power law from the end band
    beyond = torch.where(log_lum < xp[0], log_lum - xp[0], torch.where(log_lum > xp[-1], log_lum - xp[-1], 0.0))
    slope = upload(torch.tensor(exponent, dtype=torch.float32), dev).view(3, 1)
    scale = _interp(log_lum, xp, stds.t()) * torch.exp2(slope * beyond)
    return scale.reshape(3, h, w)


def _mix_and_scale(field: torch.Tensor, lum: torch.Tensor, analysis: dict) -> torch.Tensor:
    """(3, H, W) unit-variance independent channels -> grain: mixed by the channel correlation's Cholesky
    factor and scaled by :func:`grain_std_map`; ``lum``'s dtype."""
    corr = torch.tensor(analysis["correlation"], dtype=torch.float64)
    chol = upload(torch.linalg.cholesky(corr + 1e-6 * torch.eye(3, dtype=torch.float64)).float(), lum.device)
    field = torch.einsum("ij,jhw->ihw", chol, field)
    return (field * grain_std_map(lum, analysis)).to(lum.dtype)


def synthesise_grain(lum: torch.Tensor, analysis: dict, seed: int) -> torch.Tensor:
    """Grain with the analysed character for an image of the given luminance, all of it new per seed.

    Args:
        lum: (1, H, W) luminance of the image the grain goes on (grain strength follows exposure).
        analysis: a dict from :func:`analyse_grain`.
        seed: random seed (derive it from the frame so renders repeat exactly).

    Returns:
        (3, H, W) zero-mean grain, same dtype and device as ``lum``.
    """
    field = renewing_noise(tuple(lum.shape[-2:]), torch.tensor(analysis["spectrum"]), seed, lum.device)
    return _mix_and_scale(field, lum, analysis)


def grain_parts(analysis: dict, renewal: float | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """How a face's grain splits into its renewing and attached parts.

    With the measured renewal, the renewing part takes the frame difference's spectrum and the attached part
    what the one-frame spectrum has beyond it, so the sum keeps the one-frame spectrum. With a given
    ``renewal`` (a compositor's choice), both take the one-frame spectrum: the grain looks the same in
    a still and only its motion changes. An analysis without a temporal view renews fully.

    Args:
        analysis: a dict from :func:`analyse_grain`.
        renewal: None for the measured renewal, else the share of the variance new each frame, in [0, 1].

    Returns:
        (renewal (3,) float64, renewing spectrum (3, B), attached spectrum (3, B)).
    """
    total = torch.tensor(analysis["spectrum"])  # float32, as the renewing synthesis always read it
    measured = analysis.get("renewal")
    if renewal is not None:
        return torch.full((3,), float(min(max(renewal, 0.0), 1.0)), dtype=torch.float64), total, total
    if measured is None:
        return torch.ones(3, dtype=torch.float64), total, total
    share = torch.tensor(measured, dtype=torch.float64).clamp(0.0, 1.0)
    renewing = torch.tensor(analysis["renewing_spectrum"])
    attached = (total.double() - share[:, None] * renewing.double()).clamp_min(0.0)
    # where the frame difference holds everything (renewal ~1) nothing is left to attach: keep the shape
    attached = torch.where(attached.sum(dim=1, keepdim=True) > 1e-9, attached, total)
    return share, renewing, attached


def synthesise_face_grain(lum: torch.Tensor, analysis: dict, seed: int, track_seed: int, to_crop: np.ndarray,
                          window: tuple[int, int, int, int], renewal: float | None = None) -> torch.Tensor:
    """Grain for a face's window: a renewing part seeded by ``seed`` (the frame) and a part attached to the
    face (seeded by ``track_seed``, fixed in the face's frame, see :func:`attached_noise`), with variances
    ``renewal`` and ``1 - renewal`` of the analysed std (see :func:`grain_parts`).

    Args:
        lum: (1, h, w) luminance of the window the grain goes on.
        analysis: a dict from :func:`analyse_grain`.
        seed: the renewing part's seed (per frame).
        track_seed: the attached part's seed (per face track: the same on every frame).
        to_crop: (2, 3) the face's plate pixel -> crop unit affine this frame.
        window: (y0, y1, x0, x1) the plate window ``lum`` covers.
        renewal: None for the measured renewal, else the share of the variance new each frame.

    Returns:
        (3, h, w) zero-mean grain, ``lum``'s dtype and device; the same as :func:`synthesise_grain` with
        ``seed`` when the renewal is 1.
    """
    share, renewing, attached = grain_parts(analysis, renewal)
    hw = tuple(lum.shape[-2:])
    dev = lum.device
    if bool((share >= 1.0).all()):
        field = renewing_noise(hw, renewing, seed, dev)
    elif bool((share <= 0.0).all()):
        field = attached_noise(attached, to_crop, window, track_seed, device=dev)
    else:
        w = upload(share.float(), dev).view(3, 1, 1)
        field = (renewing_noise(hw, renewing, seed, dev) * w.sqrt()
                 + attached_noise(attached, to_crop, window, track_seed, device=dev) * (1.0 - w).sqrt())
    return _mix_and_scale(field, lum, analysis)


def _number_rows(value: object, where: str, width: int | None = None) -> list[list[float]]:
    rows = fields.sequence(value, where, max_length=4096)
    if not rows:
        raise fields.FieldError(f"{where}: empty")
    width = width if width is not None else len(fields.sequence(rows[0], fields.at(where, 0)))
    return [fields.numbers(row, fields.at(where, i), length=width) for i, row in enumerate(rows)]


def check_grain_analysis(analysis: object) -> None:
    """The ``analysis`` knob's shape (what :func:`analyse_grain` returns): the per-band luminance centres and
    standard deviations (bands x 3), the spectrum rows, a 3x3 correlation, the optional renewal fields."""
    analysis = fields.mapping(analysis, "analysis")
    schema = fields.text(analysis.get("schema"), "analysis: schema")
    if schema != ANALYSIS_SCHEMA and schema not in OLD_SCHEMAS:
        return  # compute names the schema and asks for a new analysis
    for name in ("log2_lum", "std", "spectrum", "correlation"):
        if name not in analysis:
            raise fields.FieldError(f"analysis: no {name!r}")
    bands = len(fields.numbers(analysis["log2_lum"], "analysis: log2_lum"))
    if not bands or len(_number_rows(analysis["std"], "analysis: std", 3)) != bands:
        raise fields.FieldError(f"analysis: std must have one row of 3 per log2_lum band ({bands})")
    _number_rows(analysis["spectrum"], "analysis: spectrum")
    if len(_number_rows(analysis["correlation"], "analysis: correlation", 3)) != 3:
        raise fields.FieldError("analysis: correlation must be 3x3")
    if "exponent" in analysis:
        fields.numbers(analysis["exponent"], "analysis: exponent", length=3)
    if analysis.get("renewal") is not None:
        fields.numbers(analysis["renewal"], "analysis: renewal")
    if analysis.get("renewing_spectrum") is not None:
        _number_rows(analysis["renewing_spectrum"], "analysis: renewing_spectrum")

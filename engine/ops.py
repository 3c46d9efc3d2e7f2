"""Generic image operations on torch tensors, shared by the nodes.

Every function works on planes shaped (*, H, W) (any number of leading dimensions, e.g. (C, H, W)) and
keeps the input's device and dtype, so it runs on the GPU when the tensor lives there.
"""
from __future__ import annotations

import functools
import math

import numpy as np
import torch
import torch.nn.functional as F

from .device import upload


def _as_planes(img: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...]]:
    """(*, H, W) -> (N, 1, H, W) plus the leading shape to restore."""
    if img.dim() < 2:
        raise ValueError(f"expected an image shaped (*, H, W), got shape {tuple(img.shape)}")
    lead = tuple(img.shape[:-2])
    return img.reshape(-1, 1, img.shape[-2], img.shape[-1]), lead


def _pad_mode(size: int, pad: int) -> str:
    # reflect padding needs pad < size; tiny images fall back to edge replication.
    return "reflect" if pad < size else "replicate"


def gaussian_kernel1d(sigma: float, radius: int | None = None, *, device=None, dtype=torch.float32) -> torch.Tensor:
    """Normalised sampled 1D Gaussian.

    Args:
        sigma: standard deviation in pixels (> 0).
        radius: half width; ``ceil(3 * sigma)`` when None (OpenCV's size rule for float images).

    Returns:
        (2 * radius + 1,) kernel summing to 1.
    """
    if radius is None:
        radius = max(1, int(math.ceil(3.0 * sigma)))
    x = torch.arange(-radius, radius + 1, device=device, dtype=torch.float64)
    k = torch.exp(-0.5 * (x / sigma) ** 2)
    return (k / k.sum()).to(dtype)


def _separable(planes: torch.Tensor, kx: torch.Tensor, ky: torch.Tensor) -> torch.Tensor:
    rx, ry = kx.numel() // 2, ky.numel() // 2
    h, w = planes.shape[-2:]
    out = F.pad(planes, (rx, rx, 0, 0), mode=_pad_mode(w, rx)) if rx else planes
    out = F.conv2d(out, kx.view(1, 1, 1, -1))
    out = F.pad(out, (0, 0, ry, ry), mode=_pad_mode(h, ry)) if ry else out
    return F.conv2d(out, ky.view(1, 1, -1, 1))


def gaussian_blur(img: torch.Tensor, sigma: float | tuple[float, float]) -> torch.Tensor:
    """Separable Gaussian blur with mirrored borders (OpenCV's BORDER_REFLECT_101).

    Args:
        img: (*, H, W) float tensor.
        sigma: standard deviation in pixels, one value or (sigma_y, sigma_x); 0 leaves that axis alone.

    Returns:
        (*, H, W) blurred tensor, same dtype and device.
    """
    sy, sx = (sigma, sigma) if not isinstance(sigma, (tuple, list)) else sigma
    if sy <= 0 and sx <= 0:
        return img
    planes, lead = _as_planes(img)
    kx = upload(_host_gaussian(float(sx), img.dtype), img.device)
    ky = upload(_host_gaussian(float(sy), img.dtype), img.device)
    return _separable(planes, kx, ky).reshape(*lead, *img.shape[-2:])


@functools.lru_cache(maxsize=256)
def _host_gaussian(sigma: float, dtype: torch.dtype) -> torch.Tensor:
    """:func:`gaussian_kernel1d` made on the host and remembered; ``[1]`` for sigma <= 0. A blur then costs
    no kernel launches for its weights: built on a GPU they took eight tiny kernels each, and the demo graph
    blurs about a dozen times a frame."""
    return gaussian_kernel1d(sigma, dtype=dtype) if sigma > 0 else torch.ones(1, dtype=dtype)


def box_filter(img: torch.Tensor, radius: int) -> torch.Tensor:
    """Mean over a (2r+1) x (2r+1) window with mirrored borders (OpenCV ``blur``, BORDER_REFLECT_101).

    Args:
        img: (*, H, W) float tensor.
        radius: window half size in pixels (>= 0).

    Returns:
        (*, H, W) filtered tensor.
    """
    if radius <= 0:
        return img
    planes, lead = _as_planes(img)
    if planes.device.type == "cpu" and planes.dtype == torch.float32 and not planes.requires_grad \
            and radius < min(planes.shape[-2:]):
        # OpenCV's running sums: torch's one-channel convolutions are oneDNN's slowest case (about 10x here)
        import cv2

        size = (2 * radius + 1, 2 * radius + 1)
        out = np.stack([cv2.blur(p, size, borderType=cv2.BORDER_REFLECT_101) for p in planes[:, 0].numpy()])
        return torch.from_numpy(out).reshape(*lead, *img.shape[-2:])
    k = torch.full((2 * radius + 1,), 1.0 / (2 * radius + 1), device=img.device, dtype=img.dtype)
    return _separable(planes, k, k).reshape(*lead, *img.shape[-2:])


def resize(img: torch.Tensor, size: tuple[int, int], *, antialias: bool = True) -> torch.Tensor:
    """Bilinear resize with pixel-centre alignment (OpenCV ``INTER_LINEAR`` geometry); when shrinking and
    ``antialias`` is set, the bilinear filter is widened to the scale so no frequencies alias.

    Args:
        img: (*, H, W) float tensor.
        size: (out_h, out_w).

    Returns:
        (*, out_h, out_w) tensor.
    """
    out_h, out_w = int(size[0]), int(size[1])
    if (out_h, out_w) == tuple(img.shape[-2:]):
        return img
    planes, lead = _as_planes(img)
    out = F.interpolate(planes, size=(out_h, out_w), mode="bilinear", align_corners=False, antialias=antialias)
    return out.reshape(*lead, out_h, out_w)


def fast_gaussian_blur(img: torch.Tensor, sigma: float, *, max_sigma_per_level: float = 4.0) -> torch.Tensor:
    """Approximate wide Gaussian blur: shrink so the blur spans at most ``max_sigma_per_level`` pixels,
    blur there, and grow back. Exact (same as :func:`gaussian_blur`) when sigma is already small.

    Used for low-frequency layers (shading, colour) where a 50 px blur on a 1080p frame would otherwise cost
    a 300-tap convolution per pixel.

    Args:
        img: (*, H, W) float tensor.
        sigma: standard deviation in full-resolution pixels.

    Returns:
        (*, H, W) blurred tensor.
    """
    if sigma <= max_sigma_per_level:
        return gaussian_blur(img, sigma)
    h, w = img.shape[-2:]
    factor = sigma / max_sigma_per_level
    small_h, small_w = max(1, round(h / factor)), max(1, round(w / factor))
    small = resize(img, (small_h, small_w), antialias=True)
    # The antialiased shrink already blurs by about half a destination pixel; take that off the remaining blur.
    scale = 0.5 * (h / small_h + w / small_w)
    rest = math.sqrt(max(sigma**2 - (0.5 * scale) ** 2, 1e-6)) / scale
    return resize(gaussian_blur(small, rest), (h, w), antialias=False)


def normalized_blur(img: torch.Tensor, weight: torch.Tensor, sigma: float, eps: float = 1e-6) -> torch.Tensor:
    """Weighted Gaussian average (normalised convolution): blur(img * w) / blur(w).

    Lets a blur stay inside a region (the face) without pulling in the background's values.

    Args:
        img: (C, H, W) float tensor.
        weight: (1, H, W) or (H, W) non-negative weights.
        sigma: standard deviation in pixels (uses :func:`fast_gaussian_blur`).

    Returns:
        (C, H, W) weighted average; where the blurred weight is ~0 the result is 0.
    """
    w = weight.reshape(1, *img.shape[-2:]).to(img.dtype)
    both = fast_gaussian_blur(torch.cat([img * w, w], dim=0), sigma)
    return both[:-1] / both[-1:].clamp_min(eps)


def guided_filter(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                  weight: torch.Tensor | None = None) -> torch.Tensor:
    """Grey-guide guided filter (He, Sun and Tang 2010): the locally linear fit of ``src`` on ``guide``.

    With ``weight``, every window statistic is a weighted mean, so pixels of weight 0 (outside a face, an
    excluded eye) neither pull the fit nor receive more than their neighbours' fit.

    Args:
        guide: (1, H, W) or (H, W) guidance plane.
        src: (C, H, W) planes to filter.
        radius: box window half size in pixels.
        eps: regularisation; larger keeps only strong edges of the guide.
        weight: optional (1, H, W) or (H, W) non-negative weights.

    Returns:
        (C, H, W) filtered planes.
    """
    g = guide.reshape(1, *src.shape[-2:])
    if weight is None:
        mean = lambda t: box_filter(t, radius)  # noqa: E731
    else:
        w = weight.reshape(1, *src.shape[-2:]).to(src.dtype)
        norm = box_filter(w, radius).clamp_min(1e-6)
        mean = lambda t: box_filter(t * w, radius) / norm  # noqa: E731
    mean_g = mean(g)
    mean_s = mean(src)
    cov_gs = mean(g * src) - mean_g * mean_s
    var_g = mean(g * g) - mean_g * mean_g
    a = cov_gs / (var_g + eps)
    b = mean_s - a * mean_g
    return box_filter(a, radius) * g + box_filter(b, radius)


def guided_filter_color(guide: torch.Tensor, src: torch.Tensor, radius: int, eps: float,
                        subsample: int = 1) -> torch.Tensor:
    """Colour-guide guided filter (He, Sun and Tang 2010, eq. 19-21): per window, ``src`` fitted as a linear
    function of the guide's three channels. It tells apart edges of equal luminance but other hue (skin against
    a prop), which the grey guide of :func:`guided_filter` cannot.

    With ``subsample`` s > 1, the fast guided filter (He and Sun 2015): the windows' fits are computed on a grid
    s times coarser (the planes padded to a multiple of s by mirroring, averaged over s x s blocks; radius
    ``radius / s``, at least 1), their coefficients enlarged bilinearly and applied to the full-resolution
    guide, so the output still follows the guide's edges pixel for pixel.

    float32 CPU planes (not requiring grad) are filtered with OpenCV plane by plane: torch's stacked operations
    on a face-sized window cost several times more (``bench/RESULTS.md``, issue 22).

    Args:
        guide: (3, H, W) guidance image.
        src: (C, H, W) planes to filter.
        radius: box window half size in pixels.
        eps: regularisation, in squared guide units; larger keeps only strong edges of the guide.
        subsample: the coefficients' grid step in pixels (1: exact).

    Returns:
        (C, H, W) filtered planes.
    """
    h, w = guide.shape[-2:]
    step = max(1, int(subsample))
    ph, pw = -h % step, -w % step
    low_radius = max(1, round(radius / step)) if step > 1 else radius
    if guide.device.type == "cpu" and guide.dtype == src.dtype == torch.float32 \
            and not (guide.requires_grad or src.requires_grad):
        import cv2

        size = (2 * low_radius + 1, 2 * low_radius + 1)
        mean = lambda x: cv2.blur(x, size, borderType=cv2.BORDER_REFLECT_101)  # noqa: E731
        if step > 1:
            down = lambda x: cv2.resize(cv2.copyMakeBorder(x, 0, ph, 0, pw, cv2.BORDER_REFLECT_101),  # noqa: E731
                                        ((w + pw) // step, (h + ph) // step), interpolation=cv2.INTER_AREA)
            up = lambda x: cv2.resize(x, (w + pw, h + ph), interpolation=cv2.INTER_LINEAR)[:h, :w]  # noqa: E731
        g_full = list(guide.contiguous().numpy())
        planes = src.contiguous().numpy()
        stack = lambda ps: torch.from_numpy(np.stack(ps))  # noqa: E731
    else:
        mean = lambda x: box_filter(x, low_radius)  # noqa: E731
        if step > 1:
            down = lambda x: F.avg_pool2d(F.pad(x[None, None], (0, pw, 0, ph), mode="reflect"), step)[0, 0]  # noqa: E731
            up = lambda x: F.interpolate(x[None, None], scale_factor=step, mode="bilinear",  # noqa: E731
                                         align_corners=False)[0, 0, :h, :w]
        g_full, planes, stack = list(guide), list(src), torch.stack
    g = [down(c) for c in g_full] if step > 1 else g_full
    stats = _guide_statistics(g, eps, mean)      # the guide's: the same for every plane filtered
    out = []
    for plane in planes:
        a, b = _color_fit(g, stats, down(plane) if step > 1 else plane, mean)
        if step > 1:
            a, b = [up(c) for c in a], up(b)
        out.append(a[0] * g_full[0] + a[1] * g_full[1] + a[2] * g_full[2] + b)
    return stack(out)


def _guide_statistics(g: list, eps: float, mean) -> tuple[list, tuple, object]:
    """The colour guided filter's per-window statistics of the guide's planes ``g`` (numpy arrays or tensors
    alike; ``mean``: the box filter): (their means, the cofactors (i00, i01, i02, i11, i12, i22) of the symmetric
    3x3 Sigma + eps U, 1 / its determinant), every pixel at once."""
    mean_g = [mean(c) for c in g]
    var = {(i, j): mean(g[i] * g[j]) - mean_g[i] * mean_g[j] for i, j in ((0, 0), (0, 1), (0, 2), (1, 1), (1, 2), (2, 2))}
    rr, rg, rb = var[0, 0] + eps, var[0, 1], var[0, 2]
    gg, gb, bb = var[1, 1] + eps, var[1, 2], var[2, 2] + eps
    i00, i01, i02 = gg * bb - gb * gb, gb * rb - rg * bb, rg * gb - gg * rb
    i11, i12, i22 = rr * bb - rb * rb, rg * rb - rr * gb, rr * gg - rg * rg
    return mean_g, (i00, i01, i02, i11, i12, i22), 1.0 / (rr * i00 + rg * i01 + rb * i02)


def _color_fit(g: list, stats: tuple, p, mean) -> tuple[list, object]:
    """The colour guided filter's coefficients of one plane ``p`` on the guide's planes ``g`` with their
    :func:`_guide_statistics`, each averaged over the windows that hold it: ([a_r, a_g, a_b], b)."""
    mean_g, (i00, i01, i02, i11, i12, i22), inv_det = stats
    mean_p = mean(p)
    cov = [mean(c * p) - m * mean_p for c, m in zip(g, mean_g)]
    a = [(i00 * cov[0] + i01 * cov[1] + i02 * cov[2]) * inv_det,
         (i01 * cov[0] + i11 * cov[1] + i12 * cov[2]) * inv_det,
         (i02 * cov[0] + i12 * cov[1] + i22 * cov[2]) * inv_det]
    b = mean_p - a[0] * mean_g[0] - a[1] * mean_g[1] - a[2] * mean_g[2]
    return [mean(c) for c in a], mean(b)


# -- resampling with a choice of filter (Reformat) -----------------------------------------------------


def _triangle(x: torch.Tensor) -> torch.Tensor:
    return (1.0 - x.abs()).clamp_min(0.0)


def _catmull_rom(x: torch.Tensor) -> torch.Tensor:
    # Keys' cubic convolution with a = -0.5 (Keys 1981), exact for quadratics.
    x = x.abs()
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return torch.where(x < 1.0, near, torch.where(x < 2.0, far, torch.zeros_like(x)))


def _lanczos3(x: torch.Tensor) -> torch.Tensor:
    inside = x.abs() < 3.0
    return torch.where(inside, torch.sinc(x) * torch.sinc(x / 3.0), torch.zeros_like(x))


# filter name -> (kernel on unit-spaced samples, radius in kernel units); OIIO's names in comments.
RESAMPLE_FILTERS = {
    "bilinear": (_triangle, 1.0),      # "triangle", width 2
    "bicubic": (_catmull_rom, 2.0),    # "catmull-rom", width 4
    "lanczos": (_lanczos3, 3.0),       # "lanczos3", width 6
}


_GATHER_ELEMENTS = 2**24


def _resample_axis(x: torch.Tensor, out_size: int, dim: int, kernel, radius: float) -> torch.Tensor:
    in_size = x.shape[dim]
    scale = in_size / out_size
    support = max(scale, 1.0)  # shrinking widens the kernel over the source: area anti-aliasing
    centres = (torch.arange(out_size, device=x.device, dtype=torch.float64) + 0.5) * scale - 0.5
    taps = int(math.ceil(radius * support)) * 2 + 1
    first = torch.floor(centres - radius * support).long() + 1
    idx = first[:, None] + torch.arange(taps, device=x.device)[None, :]
    weights = kernel((idx.double() - centres[:, None]) / support)
    weights = (weights / weights.sum(dim=1, keepdim=True)).to(x.dtype)
    idx = idx.clamp(0, in_size - 1)  # edge pixels extend outwards, as in OIIO
    moved = x.movedim(dim, -1)
    lines = moved.reshape(-1, in_size)
    out = torch.empty(lines.shape[0], out_size, dtype=x.dtype, device=x.device)
    # the gathered taps are `taps` times the output: a few lines at a time keep that to about 64 MiB
    # instead of 5-7 output frames at once (a 9999x9999 Reformat peaked at 19 GB)
    step = max(1, _GATHER_ELEMENTS // (out_size * taps))
    for start in range(0, lines.shape[0], step):
        gathered = lines[start:start + step, idx]  # (lines, out_size, taps)
        torch.sum(gathered * weights, dim=-1, out=out[start:start + step])
    return out.reshape(*moved.shape[:-1], out_size).movedim(-1, dim)


def resample(img: torch.Tensor, size: tuple[int, int], filter: str = "bicubic") -> torch.Tensor:
    """Resize with a named filter, separably, area-antialiased when shrinking (OIIO ``resize`` semantics:
    the filter is scaled to the larger of the source and destination pixel sizes; pixel centres align).

    Args:
        img: (*, H, W) float tensor.
        size: (out_h, out_w).
        filter: "impulse" (nearest pixel centre), "bilinear", "bicubic" (Catmull-Rom) or "lanczos" (3 lobes).

    Returns:
        (*, out_h, out_w) tensor, same dtype and device.
    """
    out_h, out_w = int(size[0]), int(size[1])
    if out_h < 1 or out_w < 1:
        raise ValueError(f"resample size must be positive, got {size}")
    if (out_h, out_w) == tuple(img.shape[-2:]):
        return img
    if filter == "impulse":
        planes, lead = _as_planes(img)
        out = F.interpolate(planes, size=(out_h, out_w), mode="nearest-exact")
        return out.reshape(*lead, out_h, out_w)
    try:
        kernel, radius = RESAMPLE_FILTERS[filter]
    except KeyError:
        raise ValueError(f"unknown filter {filter!r}: use impulse, {', '.join(RESAMPLE_FILTERS)}") from None
    out = img
    if out_w != img.shape[-1]:
        out = _resample_axis(out, out_w, out.dim() - 1, kernel, radius)
    if out_h != img.shape[-2]:
        out = _resample_axis(out, out_h, out.dim() - 2, kernel, radius)
    return out

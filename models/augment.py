"""Training augmentation on batches of aligned faces: random similarity transform, random warp (input only)
and colour changes (input and target alike).

Each change is drawn on the host, face by face from the face's own generator (``random_*``: a few numbers a
face), and applied to a whole batch at once on any device (:func:`apply_colour`, :func:`colour_transfer`,
:func:`blink_warp`, :func:`augment_pair`), so a GPU trainer does the pixel work in a few dozen kernels.

The random warp (DeepFaceLab's): the network sees a smoothly, randomly distorted face and must output the
undistorted one, so it learns correspondences between faces rather than copying pixels. The target goes
through the same similarity transform but not the warp. A schedule ends training without the warp so the
final iterations sharpen the exact geometry.

Colour changes are applied to input and target alike, so the decoder learns to take colour and light from
its input instead of baking in the references' colour; a colour transfer between the two identities
(matching the face's per-channel mean and spread to a face of the other identity) adds realistic shifts.

The blink warp adds what a reference shoot often lacks: the target actor with the eyes shut. A decoder
cannot render an expression it never saw (the demo's 353 M030 faces never close the eyes, narrowest 0.11 of
the eye's width, while the W009 plates blink to 0.06), so the swap kept the eyes open through the plate's
blinks. It moves the face's own upper-lid landmarks down onto the lower lids and warps the face, input and
target alike, with the thin-plate spline through them (Bookstein 1989): the model sees the actor's own lids
closed. It is off by default: continuing the demo model (64 px) for 9 300 iterations with 15% of faces warped
left the swap's eyes open through W009's blinks (MediaPipe reads 0.25-0.30 there, as before) and moved eyes r
only from 0.80 to 0.82, no more than further training might.

Degradations of the input only (:func:`degrade_inputs`): a Gaussian blur and a JPEG-like block-DCT
quantisation, each on a fraction of the faces. Plates of other people come softer and more compressed than
the references (H.264 at a delivery bitrate, a focus pull, motion blur); an encoder that only ever saw clean
crops reads those as a different face. The target stays clean, so the decoder keeps drawing the detail.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F

from doublure.faces.masks import FACE_OVAL, LEFT_BROW, RIGHT_BROW


@dataclasses.dataclass(frozen=True)
class AugmentSettings:
    """Ranges of the random changes.

    Attributes:
        rotation: maximum rotation in degrees.
        scale: maximum relative scale change (0.05: 95%..105%).
        translation: maximum shift as a fraction of the crop side.
        flip: probability of a horizontal flip.
        warp_cells: the random warp's control grid is (cells + 1) x (cells + 1) points.
        warp_amount: standard deviation of each control point's shift, as a fraction of the crop side.
        colour: strength of the random colour matrix, gain, offset and gamma (0 disables).
        transfer: probability of matching a face's colour statistics to a face of the other identity.
        blink: probability that a face gets its eyes closed by :func:`blink_warp` (0 disables).
        blur: probability that a face's input is blurred (:func:`degrade_inputs`; 0 disables).
        blur_sigma: the largest blur, in pixels of a 128 px crop (scaled with the resolution).
        compression: probability that a face's input goes through a JPEG-like quantisation (0 disables).
        quality: the range of JPEG qualities drawn (IJG scale, 1-100).
    """

    rotation: float = 10.0
    scale: float = 0.05
    translation: float = 0.05
    flip: float = 0.0
    warp_cells: int = 5
    warp_amount: float = 0.02
    colour: float = 1.0
    transfer: float = 0.3
    blink: float = 0.0
    blur: float = 0.25
    blur_sigma: float = 1.2
    compression: float = 0.25
    quality: tuple[int, int] = (25, 85)


def random_similarity(n: int, s: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Random similarity transforms in grid_sample's normalised coords (output -> input).

    Returns:
        (n, 2, 3) float32 matrices for ``F.affine_grid``.
    """
    u = torch.rand(n, 5, generator=generator) * 2 - 1
    angle = u[:, 0] * math.radians(s.rotation)
    scale = 1.0 + u[:, 1] * s.scale
    tx, ty = u[:, 2] * 2 * s.translation, u[:, 3] * 2 * s.translation   # normalised coords span 2
    flip = torch.where(u[:, 4] * 0.5 + 0.5 < s.flip, -1.0, 1.0)
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    return torch.stack([torch.stack([cos * flip, -sin, tx], 1), torch.stack([sin * flip, cos, ty], 1)], 1)


def random_warp(n: int, s: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """Random shifts of the random warp's coarse control grid (:func:`warp_offsets` makes them a field).

    Returns:
        (n, 2, cells + 1, cells + 1) shifts in normalised coords.
    """
    g = s.warp_cells + 1
    return torch.randn(n, 2, g, g, generator=generator) * (2 * s.warp_amount)


def warp_offsets(coarse: torch.Tensor, size: int) -> torch.Tensor:
    """A smooth random displacement field: the control grid's shifts upsampled bicubically.

    Args:
        coarse: (n, 2, G, G) from :func:`random_warp`.

    Returns:
        (n, size, size, 2) offsets in normalised coords (add to a sampling grid).
    """
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return fine.permute(0, 2, 3, 1)


def random_colour(n: int, strength: float,
                  generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Random per-face colour changes for :func:`apply_colour`: a near-identity 3x3 colour matrix with
    gains, an offset and a gamma.

    Args:
        n: faces.
        strength: 0 leaves the faces unchanged (and draws nothing); 1 is the default range (gains about
            +-10%, offsets +-3%, gamma 0.85..1.18, channel crosstalk +-4%).

    Returns:
        (matrix (n, 3, 3) with the gains, offset (n, 3), gamma (n,)).
    """
    if strength <= 0:
        return torch.eye(3).repeat(n, 1, 1), torch.zeros(n, 3), torch.ones(n)
    matrix = torch.eye(3).expand(n, 3, 3) + torch.randn(n, 3, 3, generator=generator) * 0.02 * strength
    gain = torch.exp(torch.randn(n, 3, generator=generator) * 0.1 * strength)
    offset = torch.randn(n, 3, generator=generator) * 0.03 * strength
    gamma = torch.exp(torch.randn(n, 1, 1, 1, generator=generator) * 0.1 * strength)
    return matrix * gain[:, :, None], offset, gamma.view(n)


def apply_colour(images: torch.Tensor, matrix: torch.Tensor, offset: torch.Tensor, gamma: torch.Tensor) -> torch.Tensor:
    """Per-face colour changes drawn by :func:`random_colour`.

    Args:
        images: (N, 3, H, W) in [0, 1].
        matrix: (N, 3, 3); offset: (N, 3); gamma: (N,); on the images' device.

    Returns:
        (N, 3, H, W) in [0, 1].
    """
    x = torch.einsum("nij,njhw->nihw", matrix, images) + offset[:, :, None, None]
    return x.clamp(0.0, 1.0).pow(gamma.view(-1, 1, 1, 1))


def colour_transfer(images: torch.Tensor, references: torch.Tensor, mask: torch.Tensor,
                    ref_mask: torch.Tensor) -> torch.Tensor:
    """Match each face's per-channel mean and standard deviation inside its mask to a reference face's
    (Reinhard et al. 2001 in RGB).

    Args:
        images: (N, 3, H, W) in [0, 1]; references: (N, 3, H, W), one per image.
        mask, ref_mask: (N, 1, H, W) weights of the face regions.

    Returns:
        (N, 3, H, W) in [0, 1].
    """
    def stats(x: torch.Tensor, m: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        w = m / m.sum((2, 3), keepdim=True).clamp_min(1e-6)
        mean = (x * w).sum((2, 3), keepdim=True)
        std = ((x - mean).square() * w).sum((2, 3), keepdim=True).sqrt()
        return mean, std

    mean, std = stats(images, mask)
    rmean, rstd = stats(references, ref_mask)
    return ((images - mean) * (rstd / std.clamp_min(1e-3)) + rmean).clamp(0.0, 1.0)


def augment_pair(images: torch.Tensor, masks: torch.Tensor, theta: torch.Tensor,
                 warp: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network input and target for a batch of one identity.

    Args:
        images: (N, 3, S, S) faces in [0, 1], colour already changed as wanted.
        masks: (N, K, S, S) masks that follow the target's geometry (face hull, eyes and mouth).
        theta: (N, 2, 3) similarity transforms (:func:`random_similarity`), input and target alike.
        warp: (N, 2, G, G) the random warp's control shifts (:func:`random_warp`) for the input only; None:
            no warp.

    Returns:
        (input (N, 3, S, S), target (N, 3, S, S), target masks (N, K, S, S)).
    """
    n, _, size, _ = images.shape
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    both = torch.cat([images, masks], 1)
    moved = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    target, target_masks = moved[:, :3], moved[:, 3:]
    if warp is None:
        return target, target, target_masks
    warped_grid = grid + warp_offsets(warp, size)
    inp = F.grid_sample(images, warped_grid, mode="bilinear", padding_mode="border", align_corners=False)
    return inp, target, target_masks


# ------------------------------------------------------------------------------------- blink warp

# Landmark indices of the 478-point face mesh (MediaPipe's topology, see doublure.faces.masks).
#: upper-lid points and the lower-lid points below them, both eyes
_UPPER_LIDS = (246, 161, 160, 159, 158, 157, 173, 466, 388, 387, 386, 385, 384, 398)
_LOWER_LIDS = (7, 163, 144, 145, 153, 154, 155, 249, 390, 373, 374, 380, 381, 382)
#: points that stay while the lids close: eye corners, lips, cheeks, nose, brows and face oval (each once)
_STILL = tuple(dict.fromkeys((33, 133, 362, 263,
                              61, 291, 0, 17, 13, 14, 37, 267, 84, 314, 50, 280, 116, 345, 205, 425,
                              168, 6, 197, 195, 5, 4, 1, 2, 98, 327) + LEFT_BROW + RIGHT_BROW + FACE_OVAL))
_TPS_GRID = 64   # the spline is evaluated on this grid and the sampling grid upsampled: cost independent of res


def _tps_kernel(r2: torch.Tensor) -> torch.Tensor:
    """The thin-plate spline's radial function U = r^2 log r^2 (0 at r = 0), from squared distances."""
    return torch.where(r2 > 0, r2 * torch.log(r2.clamp_min(1e-12)), torch.zeros_like(r2))


def thin_plate_grid(dst: torch.Tensor, src: torch.Tensor, size: int, regularisation: float = 1e-3) -> torch.Tensor:
    """A ``grid_sample`` grid whose output moves the points ``src`` to ``dst``: the thin-plate spline
    (Bookstein 1989) mapping each output position to the input position it samples, through the control
    points (``dst[i] -> src[i]``).

    Args:
        dst, src: (P, 2) float64 control points in normalised coords (-1..1, x then y, align_corners=False).
        size: side of the square output.
        regularisation: smoothing of the interpolation, which keeps near-coincident control points with
            different targets (closed lids over open ones) from folding the warp.

    Returns:
        (1, size, size, 2) float32 sampling grid.
    """
    p = dst.shape[0]
    k = _tps_kernel(torch.cdist(dst, dst).square()) + regularisation * torch.eye(p, dtype=dst.dtype)
    affine = torch.cat([torch.ones(p, 1, dtype=dst.dtype), dst], 1)
    system = torch.zeros(p + 3, p + 3, dtype=dst.dtype)
    system[:p, :p], system[:p, p:], system[p:, :p] = k, affine, affine.T
    rhs = torch.cat([src, torch.zeros(3, 2, dtype=dst.dtype)])
    coeffs = torch.linalg.solve(system, rhs)
    n = min(size, _TPS_GRID)
    # n points from the first pixel centre to the last, interpolated with align_corners=True below: exact
    # for the spline's affine part right to the crop's edges
    axis = torch.linspace(1 / size - 1, 1 - 1 / size, n, dtype=dst.dtype)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    points = torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)
    basis = torch.cat([_tps_kernel(torch.cdist(points, dst).square()), torch.ones(n * n, 1, dtype=dst.dtype),
                       points], 1)
    grid = (basis @ coeffs).reshape(1, n, n, 2).float()
    if n != size:
        grid = F.interpolate(grid.permute(0, 3, 1, 2), size=(size, size), mode="bilinear",
                             align_corners=True).permute(0, 2, 3, 1)
    return grid


def blink_grid(landmarks: torch.Tensor, size: int, closure: float) -> torch.Tensor:
    """The ``grid_sample`` grid that closes both eyes: each upper-lid landmark moves ``closure`` of the way to
    the lower-lid landmark below it; eye corners, brows, nose, lips, cheeks, face oval and the crop's border stay.

    Args:
        landmarks: (478, 2) landmark positions in crop pixels at ``size`` (pixel centres at integers).
        size: side of the square crop.
        closure: fraction of the gap between the lids that closes (1: shut).

    Returns:
        (1, size, size, 2) float32 sampling grid.
    """
    lm = landmarks.to(torch.float64)
    upper, lower, still = list(_UPPER_LIDS), list(_LOWER_LIDS), list(_STILL)
    moved_upper = lm[upper] + closure * (lm[lower] - lm[upper])
    edge = torch.linspace(-1, 1, 9, dtype=torch.float64)
    ones = torch.ones_like(edge)
    border = torch.cat([torch.stack([edge, -ones], 1), torch.stack([edge, ones], 1),
                        torch.stack([-ones, edge], 1), torch.stack([ones, edge], 1)])
    to_grid = lambda p: (p + 0.5) / size * 2 - 1   # noqa: E731  (crop pixels -> grid_sample coords)
    fixed = to_grid(torch.cat([lm[lower], lm[still]]))
    return thin_plate_grid(torch.cat([to_grid(moved_upper), fixed, border]),
                           torch.cat([to_grid(lm[upper]), fixed, border]), size)


def random_blink(landmarks: torch.Tensor, size: int, s: AugmentSettings,
                 generator: torch.Generator) -> torch.Tensor | None:
    """With probability ``s.blink``, the grid that closes one face's eyes 55-80% of the way (:func:`blink_grid`):
    the lid skin above the eye stretches down over it and the iris and lashes squeeze into a lash line, as in a
    blink (MediaPipe reads the demo's M030 faces at 64 px closed 70% of the way at a mean eye opening of 0.12,
    from 0.32 unwarped). :func:`blink_warp` applies it.

    Args:
        landmarks: (478, 2) landmark positions in crop pixels at ``size`` (pixel centres at integers).
        size: the crop's side.
        s: settings (``blink`` is the probability).
        generator: the sample's random source; it is not drawn from when ``s.blink`` is 0, so runs without
            the warp see exactly the batches they saw before it existed.

    Returns:
        (1, size, size, 2) grid, or None: no blink for this face.
    """
    if s.blink <= 0:
        return None
    u = torch.rand(2, generator=generator, dtype=torch.float64)
    if u[0] >= s.blink:
        return None
    return blink_grid(landmarks, size, 0.55 + 0.25 * float(u[1]))


def blink_warp(images: torch.Tensor, masks: torch.Tensor, grids: torch.Tensor,
               blinking: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Faces and their masks with the eyes closed where :func:`random_blink` drew a blink.

    Args:
        images: (N, 3, S, S) faces; masks: (N, K, S, S) their masks (warped alike).
        grids: (N, S, S, 2) each face's blink grid (any grid where it does not blink).
        blinking: (N,) bool, the faces that blink.

    Returns:
        (images, masks), the blinking faces warped, the others as they were.
    """
    both = torch.cat([images, masks], 1)
    warped = F.grid_sample(both, grids, mode="bilinear", padding_mode="border", align_corners=False)
    both = torch.where(blinking.view(-1, 1, 1, 1), warped, both)
    return both[:, :3], both[:, 3:]


# ------------------------------------------------------------------------------------- input degradations

# The JPEG standard's quantisation tables (ITU-T T.81 annex K), luminance and chrominance, for quality 50.
_JPEG_LUMA = (16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
              14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
              49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99)
_JPEG_CHROMA = (17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
                47, 66, 99, 99, 99, 99, 99, 99) + (99,) * 32


def random_degradation(n: int, s: AugmentSettings, res: int,
                       generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Per face: the blur sigma in pixels of a ``res`` crop and the JPEG quality, 0 where a face is left alone.

    Returns:
        ((n,) float32 sigmas, (n,) float32 qualities).
    """
    u = torch.rand(n, 4, generator=generator)
    sigma = torch.where(u[:, 0] < s.blur, (0.3 + 0.7 * u[:, 1]) * s.blur_sigma * res / 128.0, 0.0)
    lo, hi = s.quality
    quality = torch.where(u[:, 2] < s.compression, torch.round(lo + (hi - lo) * u[:, 3]), 0.0)
    return sigma, quality


def jpeg_quantise(images: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """What a baseline JPEG at 4:4:4 does to the pixels: YCbCr (BT.601, full range), an 8x8 block DCT, each
    coefficient rounded to a multiple of the standard table scaled for the quality (IJG's scaling), back.

    Args:
        images: (N, 3, H, W) RGB in [0, 1], H and W multiples of 8.
        quality: (N,) quality per face, 1-100; 0 leaves that face as it is.

    Returns:
        (N, 3, H, W) in [0, 1], same dtype.
    """
    n, _, h, w = images.shape
    if h % 8 or w % 8:
        raise ValueError(f"jpeg_quantise needs sides that are multiples of 8, got {h}x{w}")
    dtype, device = images.dtype, images.device
    x = images.float() * 255.0
    to_ycc = torch.tensor([[0.299, 0.587, 0.114], [-0.168736, -0.331264, 0.5], [0.5, -0.418688, -0.081312]],
                          device=device)
    ycc = torch.einsum("ij,njhw->nihw", to_ycc, x) + torch.tensor([-128.0, 0.0, 0.0], device=device).view(1, 3, 1, 1)
    k = torch.arange(8, dtype=torch.float32, device=device)
    dct = torch.cos((2 * k[None, :] + 1) * k[:, None] * math.pi / 16) * torch.where(k == 0, math.sqrt(1 / 8),
                                                                                       math.sqrt(2 / 8))[:, None]
    blocks = ycc.reshape(n, 3, h // 8, 8, w // 8, 8).permute(0, 1, 2, 4, 3, 5)   # (N, 3, H/8, W/8, 8, 8)
    coef = dct @ blocks @ dct.T
    q = quality.float().clamp(1, 100).to(device)
    scale = torch.where(q < 50, 5000.0 / q, 200.0 - 2.0 * q)
    tables = torch.tensor([_JPEG_LUMA, _JPEG_CHROMA, _JPEG_CHROMA], dtype=torch.float32, device=device)
    steps = torch.floor((tables[None] * scale.view(n, 1, 1) + 50.0) / 100.0).clamp(1, 255).view(n, 3, 1, 1, 8, 8)
    back = dct.T @ (torch.round(coef / steps) * steps) @ dct
    ycc = back.permute(0, 1, 2, 4, 3, 5).reshape(n, 3, h, w) + torch.tensor([128.0, 0.0, 0.0], device=device).view(
        1, 3, 1, 1)
    rgb = torch.einsum("ij,njhw->nihw", torch.linalg.inv(to_ycc), ycc)
    out = (rgb / 255.0).clamp(0, 1)
    keep = (quality <= 0).to(device).view(n, 1, 1, 1)
    return torch.where(keep, images.float(), out).to(dtype)


def degrade_inputs(images: torch.Tensor, sigma: torch.Tensor, quality: torch.Tensor) -> torch.Tensor:
    """Blur then JPEG-quantise the faces a draw picked (:func:`random_degradation`), for the network's input.

    Args:
        images: (N, 3, R, R) in [0, 1].
        sigma: (N,) blur sigma in pixels; 0: no blur.
        quality: (N,) JPEG quality; 0: no quantisation.

    Returns:
        (N, 3, R, R).
    """
    from doublure.engine.ops import gaussian_blur

    if bool((sigma > 0).any()):
        images = torch.stack([gaussian_blur(face, float(s)) if s > 0 else face
                              for face, s in zip(images, sigma.tolist())])
    if bool((quality > 0).any()):
        images = jpeg_quantise(images, quality)
    return images

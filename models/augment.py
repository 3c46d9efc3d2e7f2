"""Training augmentation on batches of aligned faces: random similarity transform, random warp (input only)
and colour changes (input and target alike).

The random warp (DeepFaceLab's): the network sees a smoothly, randomly distorted face and must output the
undistorted one, so it learns correspondences between faces rather than copying pixels. The target goes
through the same similarity transform but not the warp. A schedule ends training without the warp so the
final iterations sharpen the exact geometry.

Colour changes are applied to input and target alike, so the decoder learns to take colour and light from
its input instead of baking in the references' colour; a colour transfer between the two identities
(matching the face's per-channel mean and spread to a face of the other identity) adds realistic shifts.
"""
from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F


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
    """

    rotation: float = 10.0
    scale: float = 0.05
    translation: float = 0.05
    flip: float = 0.0
    warp_cells: int = 5
    warp_amount: float = 0.02
    colour: float = 1.0
    transfer: float = 0.3


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


def random_warp_offsets(n: int, size: int, s: AugmentSettings, generator: torch.Generator) -> torch.Tensor:
    """A smooth random displacement field: random shifts of a coarse control grid, upsampled bicubically.

    Returns:
        (n, size, size, 2) offsets in normalised coords (add to a sampling grid).
    """
    g = s.warp_cells + 1
    coarse = torch.randn(n, 2, g, g, generator=generator) * (2 * s.warp_amount)
    fine = F.interpolate(coarse, size=(size, size), mode="bicubic", align_corners=True)
    return fine.permute(0, 2, 3, 1)


def random_colour(images: torch.Tensor, strength: float, generator: torch.Generator) -> torch.Tensor:
    """Random per-face colour change: a near-identity 3x3 colour matrix, gain, offset and gamma.

    Args:
        images: (N, 3, H, W) in [0, 1].
        strength: 0 leaves the images unchanged; 1 is the default range (gains about +-10%, offsets +-3%,
            gamma 0.85..1.18, channel crosstalk +-4%).

    Returns:
        (N, 3, H, W) in [0, 1].
    """
    if strength <= 0:
        return images
    n = images.shape[0]
    matrix = torch.eye(3).expand(n, 3, 3) + torch.randn(n, 3, 3, generator=generator) * 0.02 * strength
    gain = torch.exp(torch.randn(n, 3, generator=generator) * 0.1 * strength)
    offset = torch.randn(n, 3, generator=generator) * 0.03 * strength
    gamma = torch.exp(torch.randn(n, 1, 1, 1, generator=generator) * 0.1 * strength)
    x = torch.einsum("nij,njhw->nihw", matrix * gain[:, :, None], images) + offset[:, :, None, None]
    return x.clamp(0.0, 1.0).pow(gamma)


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


def augment_pair(images: torch.Tensor, masks: torch.Tensor, s: AugmentSettings, warp: bool,
                 generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Network input and target for a batch of one identity.

    Args:
        images: (N, 3, S, S) faces in [0, 1], colour already changed as wanted.
        masks: (N, K, S, S) masks that follow the target's geometry (face hull, eyes and mouth).
        s: ranges.
        warp: apply the random warp to the input.
        generator: the random source (seeded per iteration for exact resumes).

    Returns:
        (input (N, 3, S, S), target (N, 3, S, S), target masks (N, K, S, S)).
    """
    n, _, size, _ = images.shape
    theta = random_similarity(n, s, generator)
    grid = F.affine_grid(theta, [n, 1, size, size], align_corners=False)
    both = torch.cat([images, masks], 1)
    moved = F.grid_sample(both, grid, mode="bilinear", padding_mode="border", align_corners=False)
    target, target_masks = moved[:, :3], moved[:, 3:]
    if not warp:
        return target, target, target_masks
    warped_grid = grid + random_warp_offsets(n, size, s, generator)
    inp = F.grid_sample(images, warped_grid, mode="bilinear", padding_mode="border", align_corners=False)
    return inp, target, target_masks

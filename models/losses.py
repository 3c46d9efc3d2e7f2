"""Training losses: structural dissimilarity and L1 inside the face mask, extra weight on eyes and mouth,
and the mask loss (DeepFaceLab's SAEHD recipe, with L1 in place of its MSE)."""
from __future__ import annotations

import dataclasses

import torch
import torch.nn.functional as F

from doublure.engine.ops import gaussian_kernel1d


def ssim_window(res: int) -> int:
    """The SSIM window side for a crop side: about res / 11.6 (odd, at least 3), DeepFaceLab's rule that
    keeps the window on the scale of facial features at every resolution."""
    k = max(3, int(res / 11.6))
    return k if k % 2 else k + 1


def ssim(x: torch.Tensor, y: torch.Tensor, window: int = 11, sigma: float = 1.5,
         data_range: float = 1.0) -> torch.Tensor:
    """Per-pixel SSIM map with a Gaussian window (Wang et al. 2004), valid region only (no padding).

    Args:
        x, y: (N, C, H, W) images.
        window: odd window side.
        sigma: the window's Gaussian standard deviation.
        data_range: the span of valid values (1 for [0, 1] images).

    Returns:
        (N, C, H - window + 1, W - window + 1) SSIM map.
    """
    c = x.shape[1]
    g = gaussian_kernel1d(sigma, window // 2, device=x.device, dtype=x.dtype)
    kx = g.view(1, 1, 1, -1).expand(c, 1, 1, window)
    ky = g.view(1, 1, -1, 1).expand(c, 1, window, 1)

    def blur(t: torch.Tensor) -> torch.Tensor:
        return F.conv2d(F.conv2d(t, kx, groups=c), ky, groups=c)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    mu_x, mu_y = blur(x), blur(y)
    sxx = blur(x * x) - mu_x * mu_x
    syy = blur(y * y) - mu_y * mu_y
    sxy = blur(x * y) - mu_x * mu_y
    return ((2 * mu_x * mu_y + c1) * (2 * sxy + c2)) / ((mu_x * mu_x + mu_y * mu_y + c1) * (sxx + syy + c2))


def dssim(x: torch.Tensor, y: torch.Tensor, window: int = 11) -> torch.Tensor:
    """Structural dissimilarity (1 - mean SSIM) / 2, a scalar in [0, 1]."""
    return (1.0 - ssim(x, y, window).mean()) / 2.0


@dataclasses.dataclass(frozen=True)
class LossWeights:
    """Relative weights of the loss terms.

    Attributes:
        dssim: structural dissimilarity of the masked faces.
        l1: mean absolute error of the masked faces.
        eyes_mouth: mean absolute error inside the eyes and mouth (over the whole crop, so a small region
            weighs in proportion to its area times this weight; DeepFaceLab uses 300 on an MSE).
        mask: squared error of the predicted mask against the landmark hull.
    """

    dssim: float = 10.0
    l1: float = 10.0
    eyes_mouth: float = 100.0
    mask: float = 10.0


def identity_loss(pred_rgb: torch.Tensor, pred_mask: torch.Tensor, target: torch.Tensor,
                  face_mask: torch.Tensor, eyes_mouth: torch.Tensor, weights: LossWeights,
                  window: int) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The reconstruction loss of one identity.

    Args:
        pred_rgb: (N, 3, R, R) decoded colour.
        pred_mask: (N, 1, R, R) decoded mask.
        target: (N, 3, R, R) the face to reconstruct.
        face_mask: (N, 1, R, R) the (softened) landmark face hull in [0, 1]: colour counts only inside it.
        eyes_mouth: (N, 1, R, R) eyes and mouth region in [0, 1].
        weights: term weights.
        window: SSIM window side (see :func:`ssim_window`).

    Returns:
        (total scalar, {term name: scalar}) with every term in float32.
    """
    pred_rgb, pred_mask = pred_rgb.float(), pred_mask.float()
    masked_pred, masked_target = pred_rgb * face_mask, target * face_mask
    terms = {
        "dssim": dssim(masked_pred, masked_target, window),
        "l1": (masked_pred - masked_target).abs().mean(),
        "eyes_mouth": ((pred_rgb - target).abs() * eyes_mouth).mean(),
        "mask": (pred_mask - face_mask).square().mean(),
    }
    total = sum(getattr(weights, k) * v for k, v in terms.items())
    return total, terms

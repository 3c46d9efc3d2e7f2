"""The detail stage of an identity model: per-identity super-resolution in aligned face space.

An identity autoencoder trained at R px draws the target's face as a soft R px picture; on a plate whose face
covers more pixels than R, that picture is blown up and the mouth, eyes and skin come out smudged. Training the
whole autoencoder at 4R costs about 16 times the compute. The detail stage gets the detail for much less: a
small convolutional network that turns the identity model's R px rendering of the target into a ``scale`` x R
px face (``scale`` 2, 4 or 8), trained on the target's own reference faces at their native size.

Its training pairs are (the identity model's own B->B rendering of a reference face at R, that reference face
at scale x R): at inference the swap's A->B rendering is the same kind of picture (the same decoder drawing the
same person), so the network sees what it was trained on. Degradations (blur, noise, a colour gain shared by
input and target) keep it from leaning on the exact look of the training renderings. Most of its work runs at
R px: residual blocks at the input side, then pixel-shuffle upscales with fewer channels at each doubling; its
output is a correction added to a bilinear enlargement of the input, so an untrained or unsure network leaves
the enlargement.

Loss: L1 on the face region plus L1 on image gradients, which pulls edges (lips, lids, brows, pores) into
place, and a small patch discriminator (hinge loss, after a warm-up) for the texture that no regression to
the mean gives: skin that is not plastic.

A detail stage is bound to the identity weights whose renderings it learned from (``identity_sha256``); a model
whose identity part changed since loads without its detail stage, with a logged warning.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from doublure.engine.errors import DoublureError

SCALES = (2, 4, 8)
MAX_CHANNELS = 256
MAX_BLOCKS = 32


@dataclasses.dataclass(frozen=True)
class DetailConfig:
    """The detail network's shape: everything that fixes its weights' shapes.

    Attributes:
        res: input side, the identity model's resolution R.
        scale: output side over input side (2, 4 or 8).
        channels: width of the residual blocks at R; each doubling halves it (at least 16).
        blocks: residual blocks at R.
    """

    res: int
    scale: int = 4
    channels: int = 48
    blocks: int = 6

    def __post_init__(self) -> None:
        if self.scale not in SCALES:
            raise DoublureError(f"detail scale must be one of {SCALES}, got {self.scale}")
        if not 16 <= self.res <= 1024:
            raise DoublureError(f"detail input side must be 16..1024 px, got {self.res}")
        if not 8 <= self.channels <= MAX_CHANNELS:
            raise DoublureError(f"detail channels must be 8..{MAX_CHANNELS}, got {self.channels}")
        if not 0 <= self.blocks <= MAX_BLOCKS:
            raise DoublureError(f"detail blocks must be 0..{MAX_BLOCKS}, got {self.blocks}")

    @property
    def out_res(self) -> int:
        return self.res * self.scale

    def stage_channels(self) -> list[int]:
        """Channels at R and after each doubling."""
        return [max(16, self.channels >> i) for i in range(int(math.log2(self.scale)) + 1)]

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "DetailConfig":
        if not isinstance(data, dict):
            raise DoublureError(f"detail architecture must be an object, got {type(data).__name__}")
        fields = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - fields
        if unknown:
            raise DoublureError(f"detail architecture has unknown fields {sorted(unknown)}")
        for name, value in data.items():
            if not isinstance(value, int) or isinstance(value, bool):
                raise DoublureError(f"detail architecture field {name!r} must be an integer, got {value!r}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise DoublureError(f"detail architecture incomplete: {exc}") from None


def auto_scale(res: int, native_side: float) -> int:
    """The scale for references whose faces span ``native_side`` source pixels across the crop: the smallest in
    :data:`SCALES` whose output side ``res * scale`` holds that detail (to within 10%), at most the largest;
    0 when the references hold little more than ``res`` (under 1.25 x) and a detail stage has nothing to learn.

    A plate face smaller than the output is drawn by downsampling it, which keeps the detail; one larger
    is drawn by enlarging it, as any face larger than its references must be.
    """
    if native_side < 1.25 * res:
        return 0
    return next((s for s in SCALES if res * s >= 0.9 * native_side), SCALES[-1])


class _ResBlock(nn.Module):
    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(ch, ch, 3, padding=1)
        self.conv2 = nn.Conv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + 0.2 * self.conv2(F.leaky_relu(self.conv1(x), 0.2))


class DetailNet(nn.Module):
    """The detail network.

    Shape:
        input (N, 3, R, R) sRGB in [0, 1] (the identity model's rendering) -> (N, 3, sR, sR), unclamped (the
        caller clamps). Fully convolutional: training runs on patches of R.
    """

    def __init__(self, cfg: DetailConfig) -> None:
        super().__init__()
        self.cfg = cfg
        chans = cfg.stage_channels()
        self.head = nn.Conv2d(3, chans[0], 3, padding=1)
        self.body = nn.Sequential(*[_ResBlock(chans[0]) for _ in range(cfg.blocks)])
        self.body_out = nn.Conv2d(chans[0], chans[0], 3, padding=1)
        ups, refine = [], []
        for c_in, c_out in zip(chans[:-1], chans[1:]):
            ups.append(nn.Conv2d(c_in, 4 * c_out, 3, padding=1))
            refine.append(_ResBlock(c_out))
        self.ups = nn.ModuleList(ups)
        self.refine = nn.ModuleList(refine)
        self.tail = nn.Conv2d(chans[-1], 3, 3, padding=1)
        nn.init.zeros_(self.tail.weight)   # starts as the bilinear enlargement
        nn.init.zeros_(self.tail.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        base = F.interpolate(x, scale_factor=self.cfg.scale, mode="bilinear", align_corners=False)
        f = self.head(x)
        f = f + self.body_out(self.body(f))
        for up, refine in zip(self.ups, self.refine):
            f = refine(F.leaky_relu(F.pixel_shuffle(up(f), 2), 0.2))
        return base + self.tail(f)


class PatchCritic(nn.Module):
    """A small patch discriminator for the detail stage's adversarial term (training only, never saved).

    Shape: (N, 3, S, S) -> (N, 1, S / 8, S / 8) realness scores.
    """

    def __init__(self, ch: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, ch, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(ch, 2 * ch, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(2 * ch, 4 * ch, 4, 2, 1), nn.LeakyReLU(0.2),
            nn.Conv2d(4 * ch, 1, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x * 2.0 - 1.0)


def image_gradients(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Forward differences along x and y.

    Args:
        x: (N, C, H, W).

    Returns:
        (dx (N, C, H, W - 1), dy (N, C, H - 1, W)).
    """
    return x[..., :, 1:] - x[..., :, :-1], x[..., 1:, :] - x[..., :-1, :]


def detail_reconstruction_loss(pred: torch.Tensor, target: torch.Tensor, weight: torch.Tensor,
                               gradient_weight: float = 1.0) -> torch.Tensor:
    """Weighted L1 of the pixels plus weighted L1 of their gradients.

    Args:
        pred, target: (N, 3, S, S) images.
        weight: (N, 1, S, S) per-pixel weight (the face region, softened).
        gradient_weight: weight of the gradient term.

    Returns:
        scalar loss.
    """
    norm = weight.mean().clamp_min(1e-6)
    l1 = ((pred - target).abs() * weight).mean() / norm
    pdx, pdy = image_gradients(pred)
    tdx, tdy = image_gradients(target)
    grad = (((pdx - tdx).abs() * weight[..., :, 1:]).mean() + ((pdy - tdy).abs() * weight[..., 1:, :]).mean()) / norm
    return l1 + gradient_weight * grad


def degrade(x: torch.Tensor, generator: torch.Generator, max_sigma: float = 0.8, max_noise: float = 0.01) -> torch.Tensor:
    """Random per-face Gaussian blur and noise, so the network does not lean on the exact sharpness of the
    training renderings.

    Args:
        x: (N, 3, R, R) in [0, 1].
        generator: the random source (CPU).
        max_sigma: largest blur sigma in pixels.
        max_noise: largest noise standard deviation.

    Returns:
        (N, 3, R, R).
    """
    from doublure.engine.ops import gaussian_blur

    out = []
    sigmas = torch.rand(x.shape[0], generator=generator) * max_sigma
    noises = torch.rand(x.shape[0], generator=generator) * max_noise
    for face, sigma, noise in zip(x, sigmas.tolist(), noises.tolist()):
        if sigma > 0.25:
            face = gaussian_blur(face, sigma)
        noise_field = torch.randn(face.shape, generator=generator).to(face.device, face.dtype)
        out.append(face + noise * noise_field)
    return torch.stack(out)


def enhance_faces(net: DetailNet, faces: torch.Tensor, masks: torch.Tensor,
                  amount: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    """The detail stage on the swap's decoded faces, and their masks enlarged to match.

    Args:
        net: the detail network.
        faces: (N, 3, R, R) sRGB renderings in [0, 1], R = ``net.cfg.res``.
        masks: (N, 1, R, R) their masks.
        amount: 1 the stage's output; below, a fade towards the bilinear enlargement (made only then).

    Returns:
        ((N, 3, S, S) faces, (N, 1, S, S) masks), S = ``net.cfg.out_res``.
    """
    side = net.cfg.out_res
    detailed = enhance(net, faces)
    if amount < 1.0:
        detailed = torch.lerp(F.interpolate(faces, size=(side, side), mode="bilinear", align_corners=False)
                              .to(detailed.device), detailed, amount)
    return detailed, F.interpolate(masks, size=(side, side), mode="bilinear", align_corners=False)


def enhance(net: DetailNet, faces: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """Run a detail stage on rendered faces.

    Args:
        net: the detail network (its weights' dtype and device decide the computation's).
        faces: (N, 3, R, R) sRGB renderings in [0, 1], R = ``net.cfg.res``.
        chunk: faces per forward pass.

    Returns:
        (N, 3, sR, sR) float32 in [0, 1], on ``faces``' device.
    """
    if faces.shape[-1] != net.cfg.res or faces.shape[-2] != net.cfg.res:
        raise DoublureError(f"detail stage takes {net.cfg.res} px faces, got {tuple(faces.shape[-2:])}")
    weight = next(net.parameters())
    outs = []
    with torch.no_grad():
        for start in range(0, faces.shape[0], chunk):
            x = faces[start:start + chunk].to(weight.device, weight.dtype).contiguous(memory_format=torch.channels_last)
            outs.append(net(x).float().clamp_(0.0, 1.0).to(faces.device))
    return torch.cat(outs)


__all__ = ["DetailConfig", "DetailNet", "PatchCritic", "SCALES", "auto_scale", "degrade",
           "detail_reconstruction_loss", "enhance", "image_gradients"]

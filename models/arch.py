"""Identity autoencoders in the DeepFaceLab / faceswap tradition, written from their published descriptions.

Naming: identity **A** is the plate actor (whose expression, pose and light we keep), identity **B** is the
target actor (whose face we render). A swap encodes an A face and decodes it as B.

Two architectures:

- ``df``: one shared encoder and one shared bottleneck (``inter``), one decoder per identity. A->B is
  ``decoder_b(inter(encoder(a)))``.
- ``liae``: one shared encoder, two bottlenecks, one shared decoder. ``inter_ab`` sees both identities,
  ``inter_a`` only the plate actor. A face of A is decoded from ``cat(inter_a(x), inter_ab(x))``, a face of B
  from ``cat(inter_ab(x), inter_ab(x))``, and the swap A->B feeds an A face through the B path
  ``cat(inter_ab(x), inter_ab(x))``: the code that ``inter_ab`` shares between the two identities carries
  expression, pose and light, and the decoder renders it with B's appearance. (DeepFaceLab's ``inter_B``
  belongs to its "dst" face, our plate actor A.)

Shapes: every network takes and returns channels-last float tensors ``(N, 3, R, R)`` in [0, 1] (sRGB
display encoding, like the faceset crops). The decoders return ``(N, 3, R, R)`` colour and ``(N, 1, R, R)``
mask, both through a sigmoid.

Resolution R is 64..1024 in steps of 32. The encoder halves R ``depth`` times (4 below 256 px, 5 from 256
up), a dense bottleneck maps to ``ae_dims``, and the decoders grow back with pixel-shuffle upscales.
"""
from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from doublure.engine.errors import DoublureError

from .fast_conv import TunedConv2d

ARCHITECTURES = ("df", "liae")
MIN_RES, MAX_RES, RES_STEP = 64, 1024, 32
# Upper bounds of the other numbers, well above DeepFaceLab's largest settings (256 channels, a 1024-wide
# code): a model card is read before its weights, and a number past these is a damaged or crafted file.
MAX_BOUNDS = {"e_ch": 1024, "d_ch": 1024, "d_mask_ch": 1024, "ae_dims": 8192, "res_blocks": 16}


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Architecture hyper-parameters: everything that fixes the weights' shapes.

    Attributes:
        arch: ``"df"`` or ``"liae"``.
        res: crop side in pixels, 64..1024 in steps of 32.
        e_ch: encoder width (channels of the first stage; stage i has ``e_ch * 2**i``, capped at 8x).
        d_ch: decoder width (the last upscale has ``2 * d_ch`` channels, earlier ones more, capped at 8x).
        d_mask_ch: width of the mask branch of the decoder.
        ae_dims: size of the dense bottleneck code.
        depth: number of stride-2 encoder stages (4 or 5); 0 picks 4 below 256 px and 5 from 256 up.
        res_blocks: residual blocks after each decoder upscale (the decoder's depth knob).
    """

    arch: str = "df"
    res: int = 128
    e_ch: int = 64
    d_ch: int = 64
    d_mask_ch: int = 22
    ae_dims: int = 256
    depth: int = 0
    res_blocks: int = 1

    def __post_init__(self) -> None:
        if self.arch not in ARCHITECTURES:
            raise DoublureError(f"unknown model architecture {self.arch!r} (known: {', '.join(ARCHITECTURES)})")
        if not (MIN_RES <= self.res <= MAX_RES) or self.res % RES_STEP:
            raise DoublureError(f"model resolution {self.res} must be {MIN_RES}..{MAX_RES} in steps of {RES_STEP}")
        for name in ("e_ch", "d_ch", "d_mask_ch", "ae_dims", "res_blocks"):
            low = 0 if name == "res_blocks" else 1
            if not low <= getattr(self, name) <= MAX_BOUNDS[name]:
                raise DoublureError(f"model {name} must be {low}..{MAX_BOUNDS[name]}, got {getattr(self, name)}")
        if self.depth not in (0, 4, 5):
            raise DoublureError(f"model depth must be 4 or 5 (0: automatic), got {self.depth}")

    @property
    def stages(self) -> int:
        """Encoder stride-2 stages actually used."""
        return self.depth or (4 if self.res < 256 else 5)

    @property
    def lowest_res(self) -> int:
        """Side of the encoder's last feature map (the bottleneck reshapes to this)."""
        return self.res // (2 ** self.stages)

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_json(cls, data: Any) -> "ModelConfig":
        """A config from ``model.json["architecture"]``; raises DoublureError naming the field that is not
        of its type (``arch`` a string, the rest integers) or out of its range."""
        if not isinstance(data, dict):
            raise DoublureError(f"model architecture must be an object, got {type(data).__name__}")
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(data) - set(fields)
        if unknown:
            raise DoublureError(f"model architecture has unknown fields {sorted(map(str, unknown))}")
        for name, value in data.items():
            wanted = str if name == "arch" else int
            if not isinstance(value, wanted) or isinstance(value, bool):
                raise DoublureError(f"model architecture field {name} must be {'a string' if wanted is str else 'an integer'}"
                                    f", got {value!r:.40}")
        return cls(**data)


def _lrelu(x: torch.Tensor, slope: float = 0.1) -> torch.Tensor:
    return F.leaky_relu(x, slope)


class Downscale(nn.Module):
    """5x5 stride-2 convolution + leaky ReLU: halves the side."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = TunedConv2d(cin, cout, 5, stride=2, padding=2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _lrelu(self.conv(x))


class Upscale(nn.Module):
    """3x3 convolution to 4x channels + leaky ReLU + pixel shuffle: doubles the side."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        self.conv = TunedConv2d(cin, cout * 4, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pixel_shuffle(_lrelu(self.conv(x)), 2)


class ResidualBlock(nn.Module):
    """Two 3x3 convolutions with a skip connection (leaky ReLU 0.2), DeepFaceLab's decoder block."""

    def __init__(self, ch: int) -> None:
        super().__init__()
        self.conv1 = TunedConv2d(ch, ch, 3, padding=1)
        self.conv2 = TunedConv2d(ch, ch, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = _lrelu(self.conv1(x), 0.2)
        return _lrelu(x + self.conv2(y), 0.2)


class Encoder(nn.Module):
    """``stages`` downscales; (N, 3, R, R) -> (N, C_out, R / 2**stages, R / 2**stages)."""

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        chans = [3] + [cfg.e_ch * min(2 ** i, 8) for i in range(cfg.stages)]
        self.blocks = nn.Sequential(*[Downscale(a, b) for a, b in zip(chans[:-1], chans[1:])])
        self.out_ch = chans[-1]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.blocks(x)


class Inter(nn.Module):
    """The dense bottleneck: flatten -> ``ae_dims`` -> (out_ch, L, L) -> one upscale to (out_ch, 2L, 2L)."""

    def __init__(self, in_ch: int, cfg: ModelConfig, out_ch: int) -> None:
        super().__init__()
        self.side = cfg.lowest_res
        self.out_ch = out_ch
        self.dense1 = nn.Linear(in_ch * self.side * self.side, cfg.ae_dims)
        self.dense2 = nn.Linear(cfg.ae_dims, out_ch * self.side * self.side)
        self.upscale = Upscale(out_ch, out_ch)

    def forward(self, code: torch.Tensor) -> torch.Tensor:
        x = self.dense2(self.dense1(torch.flatten(code, 1)))
        x = x.view(-1, self.out_ch, self.side, self.side).contiguous(memory_format=torch.channels_last)
        return self.upscale(x)


class Decoder(nn.Module):
    """``stages - 1`` upscales (each followed by ``res_blocks`` residual blocks) to colour, and a narrower
    upscale branch to the mask. (N, C_in, 2L, 2L) -> (N, 3, R, R), (N, 1, R, R)."""

    def __init__(self, in_ch: int, cfg: ModelConfig) -> None:
        super().__init__()
        n = cfg.stages - 1
        chans = [in_ch] + [cfg.d_ch * min(2 ** (n - i), 8) for i in range(n)]
        layers: list[nn.Module] = []
        for a, b in zip(chans[:-1], chans[1:]):
            layers.append(Upscale(a, b))
            layers += [ResidualBlock(b) for _ in range(cfg.res_blocks)]
        self.colour = nn.Sequential(*layers)
        self.to_rgb = nn.Conv2d(chans[-1], 3, 1)
        mchans = [in_ch] + [cfg.d_mask_ch * min(2 ** (n - i), 8) for i in range(n)]
        self.mask = nn.Sequential(*[Upscale(a, b) for a, b in zip(mchans[:-1], mchans[1:])])
        self.to_mask = nn.Conv2d(mchans[-1], 1, 1)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        rgb = torch.sigmoid(self.to_rgb(self.colour(x)))
        mask = torch.sigmoid(self.to_mask(self.mask(x)))
        return rgb, mask


class IdentityModel(nn.Module):
    """A two-identity autoencoder (``df`` or ``liae``, see the module docstring).

    Methods take channels-last (N, 3, R, R) batches in [0, 1] and return ``(rgb (N, 3, R, R),
    mask (N, 1, R, R))``.
    """

    def __init__(self, cfg: ModelConfig) -> None:
        super().__init__()
        self.cfg = cfg
        self.encoder = Encoder(cfg)
        if cfg.arch == "df":
            self.inter = Inter(self.encoder.out_ch, cfg, cfg.ae_dims)
            self.decoder_a = Decoder(cfg.ae_dims, cfg)
            self.decoder_b = Decoder(cfg.ae_dims, cfg)
        else:
            self.inter_ab = Inter(self.encoder.out_ch, cfg, cfg.ae_dims)
            self.inter_a = Inter(self.encoder.out_ch, cfg, cfg.ae_dims)
            self.decoder = Decoder(2 * cfg.ae_dims, cfg)
        self.to(memory_format=torch.channels_last)

    def _check(self, x: torch.Tensor) -> None:
        r = self.cfg.res
        if x.dim() != 4 or x.shape[1] != 3 or x.shape[2] != r or x.shape[3] != r:
            raise ValueError(f"expected faces shaped (N, 3, {r}, {r}), got {tuple(x.shape)}")

    def reconstruct_both(self, a: torch.Tensor, b: torch.Tensor, shared_expression: bool = False):
        """One pass over both identities for training (the encoder runs once on the concatenated batch).

        ``shared_expression`` (liae): A's private half of the code is her batch's mean, the same for each of
        her faces, so what differs from face to face (a blink, the mouth) reaches the decoder only through the
        shared half, the one :meth:`swap` decodes. Trained without it, a model can keep part of A's
        expression in her private half, and the swap never shows it.

        Returns:
            ((rgb_aa, mask_aa), (rgb_bb, mask_bb)): A decoded as A and B decoded as B.
        """
        self._check(a)
        self._check(b)
        code = self.encoder(torch.cat([a, b]))
        n = a.shape[0]
        if self.cfg.arch == "df":
            z = self.inter(code)
            return self.decoder_a(z[:n]), self.decoder_b(z[n:])
        ab = self.inter_ab(code)
        private_a = self.inter_a(code[:n])
        if shared_expression:
            private_a = private_a.mean(0, keepdim=True).expand_as(private_a)
        za = torch.cat([private_a, ab[:n]], 1)
        zb = torch.cat([ab[n:], ab[n:]], 1)
        out = self.decoder(torch.cat([za, zb]))
        return (out[0][:n], out[1][:n]), (out[0][n:], out[1][n:])

    def forward(self, a: torch.Tensor, b: torch.Tensor, shared_expression: bool = False):
        """Training forward (what DDP wraps): :meth:`reconstruct_both`."""
        return self.reconstruct_both(a, b, shared_expression)

    def swap(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A faces rendered as identity B (A->B)."""
        self._check(a)
        code = self.encoder(a)
        if self.cfg.arch == "df":
            return self.decoder_b(self.inter(code))
        ab = self.inter_ab(code)
        return self.decoder(torch.cat([ab, ab], 1))

    def reconstruct_a(self, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """A faces decoded as A (A->A)."""
        self._check(a)
        code = self.encoder(a)
        if self.cfg.arch == "df":
            return self.decoder_a(self.inter(code))
        return self.decoder(torch.cat([self.inter_a(code), self.inter_ab(code)], 1))

    def reconstruct_b(self, b: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """B faces decoded as B (B->B)."""
        return self.swap(b)


def build_model(cfg: ModelConfig) -> IdentityModel:
    """A freshly initialised model (He-uniform convolutions, as torch's defaults)."""
    return IdentityModel(cfg)


def parameter_count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def config_for(res: int, arch: str = "df", width: float = 1.0, **overrides: Any) -> ModelConfig:
    """Default hyper-parameters for a resolution, scaled by ``width`` (1.0: DeepFaceLab's SAEHD defaults of
    64 encoder / 64 decoder channels and a 256-wide code, 0.25: a tiny model for tests)."""
    def scaled(v: int) -> int:
        return max(4, int(math.ceil(v * width / 2)) * 2)
    base = dict(arch=arch, res=res, e_ch=scaled(64), d_ch=scaled(64), d_mask_ch=scaled(22), ae_dims=scaled(256))
    base.update(overrides)
    return ModelConfig(**base)

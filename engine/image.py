"""The value that flows along Image and Mask ports."""
from __future__ import annotations

import dataclasses
from typing import Any

import torch


@dataclasses.dataclass(frozen=True)
class Format:
    """The full frame: width and height in pixels and the pixel aspect ratio."""

    width: int
    height: int
    pixel_aspect: float = 1.0


@dataclasses.dataclass(frozen=True, eq=False)
class Image:
    """Pixels with their description.

    Attributes:
        tensor: (C, H, W), scene-linear in the working space; float32 on CPU, float16 or float32 on GPU.
            Pixel (0, 0) is the top-left corner.
        channels: the name of each of the C planes, ("R", "G", "B"), ("R", "G", "B", "A") or ("A",) for a Mask.
        metadata: header-like information; ``doublure/...`` keys (provenance) are written into every frame.
        faces: the frame's faces (``doublure.faces.Face``) attached by FaceDetect, read by the nodes below.
        data_window: (x0, y0, x1, y1), the part of the format that holds pixels; the whole frame by default.
    """

    tensor: torch.Tensor
    channels: tuple[str, ...] = ("R", "G", "B")
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)
    faces: list = dataclasses.field(default_factory=list)
    pixel_aspect: float = 1.0
    data_window: tuple[int, int, int, int] | None = None

    def __post_init__(self) -> None:
        if self.tensor.dim() != 3:
            raise ValueError(f"Image tensor must be (C, H, W), got shape {tuple(self.tensor.shape)}")
        if self.tensor.shape[0] != len(self.channels):
            raise ValueError(f"Image has {self.tensor.shape[0]} planes but channels {self.channels}")
        if self.data_window is None:
            object.__setattr__(self, "data_window", (0, 0, self.width, self.height))

    @property
    def width(self) -> int:
        return int(self.tensor.shape[2])

    @property
    def height(self) -> int:
        return int(self.tensor.shape[1])

    @property
    def format(self) -> Format:
        return Format(self.width, self.height, self.pixel_aspect)

    @property
    def nbytes(self) -> int:
        return self.tensor.element_size() * self.tensor.nelement()

    @property
    def device(self) -> torch.device:
        return self.tensor.device

    def replace(self, **changes: Any) -> "Image":
        """A new Image with some attributes changed (the data window follows a new tensor's size)."""
        if "tensor" in changes and "data_window" not in changes:
            changes["data_window"] = None
        return dataclasses.replace(self, **changes)

    def to(self, device: torch.device) -> "Image":
        if self.tensor.device == device:
            return self
        return dataclasses.replace(self, tensor=self.tensor.to(device, non_blocking=True))

    def channel(self, name: str) -> torch.Tensor:
        """One plane, (H, W)."""
        return self.tensor[self.channels.index(name)]

    def rgb(self) -> torch.Tensor:
        """The colour planes, (3, H, W); a single-plane image is repeated."""
        if self.channels[:3] == ("R", "G", "B"):
            return self.tensor[:3]
        return self.tensor[:1].expand(3, -1, -1)

    def alpha(self) -> torch.Tensor | None:
        """The alpha plane (1, H, W), or None."""
        if "A" in self.channels:
            i = self.channels.index("A")
            return self.tensor[i : i + 1]
        return None


def mask_image(mask: torch.Tensor, **kwargs: Any) -> Image:
    """Wrap a (1, H, W) or (H, W) tensor in [0, 1] as a Mask-port Image."""
    if mask.dim() == 2:
        mask = mask.unsqueeze(0)
    return Image(mask, channels=("A",), **kwargs)

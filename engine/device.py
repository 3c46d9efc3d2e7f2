"""Which torch device evaluation runs on: CUDA when present, else CPU; ``DOUBLURE_DEVICE`` overrides."""
from __future__ import annotations

import functools
import os

import torch

from .errors import DoublureError


@functools.lru_cache(maxsize=None)
def _resolve(requested: str | None) -> torch.device:
    if requested:
        try:
            device = torch.device(requested)
        except RuntimeError as exc:
            raise DoublureError(f"DOUBLURE_DEVICE={requested!r} is not a torch device: {exc}") from None
        if device.type == "cuda" and not torch.cuda.is_available():
            raise DoublureError(f"DOUBLURE_DEVICE={requested!r} but CUDA is not available on this machine")
        return device
    return torch.device("cuda") if torch.cuda.is_available() else torch.device("cpu")


def default_device() -> torch.device:
    """The evaluation device: ``DOUBLURE_DEVICE`` if set (``cpu``, ``cuda``, ``cuda:1``), else CUDA if present."""
    return _resolve(os.environ.get("DOUBLURE_DEVICE") or None)

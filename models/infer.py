"""Inference: models loaded once per process and device (keyed by content digest), and the batched swap."""
from __future__ import annotations

import collections
import threading

import torch

from .dbm import LoadedModel, load_model, model_digest
from .train import flush_denormals, resolve_precision

_CACHE: "collections.OrderedDict[tuple[str, str], LoadedModel]" = collections.OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 3


def shared_model(path: str, device: torch.device | str = "cpu") -> LoadedModel:
    """The model at ``path`` on ``device``, loaded once and shared by every node and frame that uses it.

    Keyed by the model's content digest, so two paths to the same model share one copy, and a rewritten
    file (a newer checkpoint) loads afresh. Raises ``ModelFileError`` naming the file when it is missing,
    corrupt or of an unknown architecture.
    """
    device = torch.device(device)
    key = (model_digest(path), str(device))
    with _LOCK:
        hit = _CACHE.get(key)
        if hit is not None:
            _CACHE.move_to_end(key)
            return hit
        loaded = load_model(path, device)
        _CACHE[key] = loaded
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return loaded


def clear_cache() -> None:
    """Forget every shared model (frees their memory once no node holds them)."""
    with _LOCK:
        _CACHE.clear()


@torch.no_grad()
def swap_faces(loaded: LoadedModel, faces: torch.Tensor, chunk: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """Render plate-actor faces as the target identity (A->B).

    Args:
        loaded: from :func:`shared_model`.
        faces: (N, 3, R, R) aligned crops in the model's encoding (sRGB, [0, 1]), on the model's device.
        chunk: faces per forward pass (bounds memory at high resolution).

    Returns:
        (rgb (N, 3, R, R) float32 in [0, 1], mask (N, 1, R, R) float32 in [0, 1]).
    """
    model = loaded.model
    device = next(model.parameters()).device
    autocast = resolve_precision("auto", device)
    rgbs, masks = [], []
    with flush_denormals(device):
        for start in range(0, faces.shape[0], chunk):
            x = faces[start:start + chunk].to(device).float().contiguous(memory_format=torch.channels_last)
            with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
                rgb, mask = model.swap(x)
            rgbs.append(rgb.float())
            masks.append(mask.float())
    return torch.cat(rgbs), torch.cat(masks)

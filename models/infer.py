"""Inference: models loaded once per process and device (keyed by content digest), and the batched swap."""
from __future__ import annotations

import collections
import threading

import torch

from doublure.engine.cache import Memo
from doublure.faces.align import plate_crops
from doublure.faces.composite import to_encoding
from doublure.faces.face import Face

from .dbm import LoadedModel, load_model, model_digest
from .train import flush_denormals, resolve_precision

_CACHE: "collections.OrderedDict[tuple[str, str], LoadedModel]" = collections.OrderedDict()
_LOCK = threading.Lock()
CACHE_SIZE = 3


def shared_model(path: str, device: torch.device | str = "cpu") -> LoadedModel:
    """The model at ``path`` on ``device``, loaded once and shared by every node and frame that uses it, its
    weights in the device's inference precision (:func:`doublure.models.train.resolve_precision` "auto").

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
        precision = resolve_precision("auto", device)
        if precision is not None:
            # Weights cast once, here, where autocast would cast each of them on every call (on the demo graph
            # 66 casts a frame, each a kernel launch on a GPU); the convolutions and dense layers compute in
            # the same dtype either way, and the demo model's outputs match autocast's bit for bit.
            loaded.model.to(precision)
            if loaded.detail is not None:
                loaded.detail.to(precision)
        _CACHE[key] = loaded
        while len(_CACHE) > CACHE_SIZE:
            _CACHE.popitem(last=False)
        return loaded


def clear_cache() -> None:
    """Forget every shared model (frees their memory once no node holds them)."""
    with _LOCK:
        _CACHE.clear()


@torch.no_grad()
def swap_faces(loaded: LoadedModel, faces: torch.Tensor, chunk: int = 16,
               direction: str = "A->B") -> tuple[torch.Tensor, torch.Tensor]:
    """Render plate-actor faces as the target identity (``direction`` "A->B"), or as the model draws the plate
    actor herself ("A->A": what it learned of her expression and light, apart from the identity change).

    Args:
        loaded: from :func:`shared_model` (the model computes in its weights' dtype), or
            :func:`doublure.models.dbm.load_model` (fp32).
        faces: (N, 3, R, R) aligned crops in the model's encoding (sRGB, [0, 1]), on the model's device.
        chunk: faces per forward pass (bounds memory at high resolution).
        direction: "A->B" or "A->A".

    Returns:
        (rgb (N, 3, R, R) float32 in [0, 1], mask (N, 1, R, R) float32 in [0, 1]).
    """
    model = loaded.model
    decode = {"A->B": model.swap, "A->A": model.reconstruct_a}.get(direction)
    if decode is None:
        raise ValueError(f"direction must be 'A->B' or 'A->A', got {direction!r}")
    weight = next(model.parameters())
    rgbs, masks = [], []
    with flush_denormals(weight.device):
        for start in range(0, faces.shape[0], chunk):
            x = faces[start:start + chunk].to(weight.device, weight.dtype).contiguous(memory_format=torch.channels_last)
            rgb, mask = decode(x)
            rgbs.append(rgb.float())
            masks.append(mask.float())
    return torch.cat(rgbs), torch.cat(masks)


# (model digest, direction, plate hash, track id, to_crop, working space, device) -> the decoded face (sRGB rgb,
# mask): neighbouring frames' outputs blend the same decoded faces, and a sequential render needs 2 * temporal
# + 2 of them per face at a time (SwapModel reserves that much). At 1024 px a decoded face is 16 MB.
decode_memo = Memo(24)


def reserve_decoded(faces: int) -> None:
    """Let :data:`decode_memo` hold at least ``faces`` decoded faces (a temporal window of every face)."""
    decode_memo.reserve(faces)


def decoded_face(loaded: LoadedModel, direction: str, plate, plate_hash: str, face: Face, working_space: str,
                 device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """A plate face decoded by the model (:func:`swap_faces`), remembered by content in :data:`decode_memo`.

    Args:
        loaded: the model (:func:`shared_model`).
        direction: "A->B" or "A->A".
        plate: the plate frame (an ``engine.Image`` in ``working_space``).
        plate_hash: the plate frame's engine hash (the memo's key).
        face: the face, its ``to_crop`` the crop transform to decode through.
        working_space: the plate's colour space.
        device: where the model computes.

    Returns:
        (rgb (3, R, R) sRGB-encoded in [0, 1], mask (1, R, R)), R the model's resolution, on ``device``.
    """
    key = (loaded.digest, direction, plate_hash, face.track_id, face.to_crop.tobytes(), working_space, str(device))
    hit = decode_memo.get(key)
    if hit is not None:
        return hit
    crop = plate_crops(plate.tensor, face.to_crop[None], loaded.model.cfg.res)
    model_in = to_encoding(crop, working_space, "srgb").clamp(0.0, 1.0)
    rgb, mask = swap_faces(loaded, model_in.to(device), direction=direction)
    return decode_memo.put(key, (rgb[0], mask[0]))

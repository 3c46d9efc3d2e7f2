"""Training data: facesets (``doublure.faceset/1``, see ``doublure.faces.extract``) read at the model's
resolution, per-iteration batches, and a background loader with a bounded prefetch.

A batch for iteration ``i`` depends only on ``(seed, i)`` (sample choice through
``doublure.models.distributed.batch_indices``, the augmentation of each sample through a generator seeded by
``(seed, i, its index in the global batch)``), so a resumed run, or one on a different number of processes,
sees exactly the batches it would have seen. A batch is made in two parts: the faces and the augmentation's
random draws on the host (:func:`make_raw_batch`, in the loader's workers), then the augmentation's pixel
work for the whole batch at once (:func:`augment_batch`: on the GPU when training there).
"""
from __future__ import annotations

import collections
import hashlib
import json
import math
import os
import queue
import signal
import threading
import time
from typing import Any, Callable, Sequence

import cv2
import numpy as np
import torch

from doublure.engine import fields
from doublure.engine.errors import DoublureError
from doublure.engine.ops import gaussian_blur
from doublure.faces.extract import FACESET_SCHEMA
from doublure.faces.face import FACE_TYPES
from doublure.faces.masks import rasterize_shapes, region_shapes

from .augment import (AugmentSettings, apply_colour, augment_pair, blink_warp, colour_transfer, degrade_inputs,
                      random_blink, random_colour, random_degradation, random_similarity, random_warp)
from .distributed import DistEnv, batch_indices, shard_bounds

MASK_CHANNELS = ("hull", "loss", "eyes_mouth")
MAX_UPSCALE = 2.0
"""Crops are upscaled to the model's resolution at most this much: a model trained on 64 px crops blown up
to 1024 px learns the blur (and its decoded data takes 256 times the memory)."""
_NO_IRIS = np.zeros((2, 3))


def faceset_digest(path: str) -> str:
    """sha256 of a faceset's ``index.json`` (it names every crop and its landmarks)."""
    with open(os.path.join(path, "index.json"), "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


def read_index(path: str) -> dict[str, Any]:
    """A faceset's index, checked. Raises DoublureError naming the folder when it is not a faceset."""
    index_path = os.path.join(path, "index.json")
    if not os.path.isfile(index_path):
        raise DoublureError(f"faceset {path}: no index.json (extract one with `doublure extract`)")
    try:
        with open(index_path, encoding="utf-8") as f:
            index = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise DoublureError(f"faceset {index_path} is corrupt: {exc}") from None
    index = fields.mapping(index, index_path)
    if index.get("schema") != FACESET_SCHEMA:
        raise DoublureError(f"faceset {index_path}: unknown schema {index.get('schema')!r} (expected {FACESET_SCHEMA})")
    if not index.get("items"):
        raise DoublureError(f"faceset {path} has no faces")
    check_index(index, index_path)
    return index


def check_index(index: dict, where: str) -> None:
    """Every field of a faceset index that training and the coverage report read: types and ranges (a crop
    ``file`` is a plain name inside the faceset's folder). Raises a FieldError naming the index and field."""
    fields.integer(index.get("size"), fields.at(where, "size"), 16, 8192)
    fields.text(index.get("face_type", "whole_face"), fields.at(where, "face_type"), FACE_TYPES)
    for i, item in enumerate(fields.sequence(index["items"], fields.at(where, "items"))):
        at = fields.at(fields.at(where, "items"), i)
        item = fields.mapping(item, at)
        name = fields.text(item.get("file"), fields.at(at, "file"))
        if not name or os.path.isabs(name) or ".." in name.replace("\\", "/").split("/"):
            raise fields.fail(fields.at(at, "file"), "a file name inside the faceset", name)
        try:  # numpy checks the 478 points at once: a faceset holds thousands of items
            landmarks = np.asarray(item.get("landmarks"), dtype=np.float64)
        except (TypeError, ValueError):
            landmarks = np.zeros(0)
        if landmarks.ndim != 2 or landmarks.shape[0] != 478 or landmarks.shape[1] not in (2, 3) \
                or not np.isfinite(landmarks).all():
            raise fields.fail(fields.at(at, "landmarks"), "478 points of 2 or 3 finite numbers",
                              item.get("landmarks"))
        fields.numbers(item.get("pose"), fields.at(at, "pose"), length=3)
        fields.text(item.get("source", ""), fields.at(at, "source"))
        for key in ("luma", "blur"):
            if key in item:
                fields.number(item[key], fields.at(at, key))
        if "native_side" in item:
            fields.number(item["native_side"], fields.at(at, "native_side"), 1.0, 1e6)
        expression = fields.mapping(item.get("expression", {}), fields.at(at, "expression"))
        for key, value in expression.items():
            fields.number(value, fields.at(fields.at(at, "expression"), key))


def check_face_type(facesets: Sequence[dict[str, Any]], model_face_type: str | None = None, model: str = "") -> str:
    """The face type (crop framing) all ``facesets`` share: a model learns one framing, and its card names it
    for the SwapModel (a model continued on crops of another type was relabelled with it, its weights mixed).

    Args:
        facesets: ``FaceData.facesets`` entries (``path``, ``face_type``).
        model_face_type: the face type of the model being continued (``--from``, ``--resume``), or None.
        model: that model's path, for the message.

    Returns:
        The face type.

    Raises:
        DoublureError: naming the first faceset folder whose crops are of another face type than the model's,
            or than the first faceset's.
    """
    expected = model_face_type or facesets[0]["face_type"]
    for fs in facesets:
        if fs["face_type"] == expected:
            continue
        if model_face_type:
            raise DoublureError(f"faceset {fs['path']} holds {fs['face_type']} crops but model {model} was trained "
                                f"on {model_face_type} crops: extract it again with `doublure extract "
                                f"--face-type {model_face_type}`")
        raise DoublureError(f"faceset {fs['path']} holds {fs['face_type']} crops but {facesets[0]['path']} holds "
                            f"{expected} crops: a model learns one framing (extract them with the same --face-type)")
    return expected


def face_masks(landmarks: np.ndarray, res: int) -> np.ndarray:
    """The training masks of one face from its landmarks in crop pixels at ``res``.

    Returns:
        (3, res, res) float32: ``hull`` (the face oval's convex hull: the mask target), ``loss`` (the hull
        grown by 3% of the side and feathered: where colour counts, including the hull's edge), and
        ``eyes_mouth`` (eyes and mouth grown by 2% and feathered: the extra-weight region).
    """
    hull = rasterize_shapes(*region_shapes(landmarks, _NO_IRIS, "face_hull"), (res, res))
    loss = rasterize_shapes(*region_shapes(landmarks, _NO_IRIS, "face_hull"), (res, res), grow=0.03 * res)
    eyes = rasterize_shapes(*region_shapes(landmarks, _NO_IRIS, "eyes"), (res, res), grow=0.02 * res)
    mouth = rasterize_shapes(*region_shapes(landmarks, _NO_IRIS, "mouth"), (res, res), grow=0.02 * res)
    masks = torch.from_numpy(np.stack([hull, loss, np.maximum(eyes, mouth)]))
    soft = gaussian_blur(masks[1:], 0.015 * res).clamp_(0, 1)
    return torch.cat([masks[:1], soft]).numpy()


class FaceData:
    """The faces of one or more facesets at a model resolution, decoded on demand and kept in a bounded
    cache (crops as 16-bit, masks as 8-bit).

    Args:
        paths: faceset folders.
        res: model resolution; crops are resized with area averaging (or cubic when upscaling).
        cache_bytes: how much decoded data to keep.
        lower_res: how to train at a lower resolution, for the message refusing crops too small (default: a
            new model at a lower --res; the detail stage's output side follows from --detail-scale).
    """

    def __init__(self, paths: Sequence[str], res: int, cache_bytes: int = 2 << 30, lower_res: str = "") -> None:
        if not paths:
            raise DoublureError("no faceset given")
        self.res = res
        self.facesets: list[dict[str, Any]] = []
        self.items: list[tuple[str, dict[str, Any], float]] = []   # (crop path, item, crop px -> res px)
        faceset_of: list[int] = []                                    # item -> its faceset's position in paths
        for path in paths:
            index = read_index(path)
            scale = res / float(index["size"])
            if scale > MAX_UPSCALE:
                raise DoublureError(f"faceset {path} holds {index['size']} px crops: training at {res} px would "
                                    f"upscale them {scale:g}x (at most {MAX_UPSCALE:g}x); extract at --size "
                                    f"{math.ceil(res / MAX_UPSCALE)} or more, or " + (lower_res or f"train a new "
                                    f"model at --res {int(index['size'] * MAX_UPSCALE)} or less"))
            for item in index["items"]:
                self.items.append((os.path.join(path, item["file"]), item, scale))
                faceset_of.append(len(self.facesets))
            self.facesets.append({"path": os.path.abspath(path), "digest": faceset_digest(path),
                                  "items": len(index["items"]), "size": int(index["size"]),
                                  "face_type": index.get("face_type", "whole_face"),
                                  # the clips by file name (not this machine's paths), so the card says what
                                  # the faces came from and the faceset can be extracted again elsewhere
                                  "clips": sorted({os.path.basename(str(it.get("source", ""))) for it in
                                                   index["items"]} - {""}),
                                  "every": int(index.get("every", 1))})
        self.face_type = check_face_type(self.facesets)
        self._faceset_of = np.asarray(faceset_of, dtype=np.int64)
        self._expression_weights: torch.Tensor | None = None
        self._cache: collections.OrderedDict[int, tuple[np.ndarray, np.ndarray]] = collections.OrderedDict()
        self._cache_bytes = cache_bytes
        self._used = 0
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return len(self.items)

    @property
    def cache_bytes(self) -> int:
        """The most decoded data this keeps."""
        return self._cache_bytes

    def expression_weights(self, bins: int = 6) -> torch.Tensor:
        """Sampling weights that even out expressions, the way DeepFaceLab evens out head yaw.

        Each face is binned by mouth opening and eye opening (``bins`` equal steps over each measure's range in
        the set) and weighs ``1 / sqrt(n)`` for the ``n`` faces in its bin: the few wide-open mouths and closed
        eyes come up several times more often than in a uniform draw, while the square root keeps a
        handful of faces from being seen all the time. Faces without expression measures share one bin.

        Returns:
            (len(self),) float64 weights summing to 1.
        """
        if self._expression_weights is None:
            measures = np.array([[item.get("expression", {}).get(k, 0.0) for k in ("mouth_open", "eyes_open")]
                                 for _, item, _ in self.items], dtype=np.float64).reshape(-1, 2)
            low, span = measures.min(0), np.maximum(np.ptp(measures, 0), 1e-9)
            cells = np.minimum((bins * (measures - low) / span).astype(np.int64), bins - 1)
            keys = cells[:, 0] * bins + cells[:, 1]
            counts = np.bincount(keys, minlength=bins * bins)
            weights = 1.0 / np.sqrt(counts[keys])
            self._expression_weights = torch.from_numpy(weights / weights.sum())
        return self._expression_weights

    def sampling_weights(self, balance_expressions: bool = False) -> torch.Tensor | None:
        """How faces are drawn: None (uniformly) for one faceset without ``balance_expressions``; otherwise each
        faceset (one person, one shot) weighs the same in all, so a person with 2,000 faces does not drown one
        with 100 in a many-person set, and within a faceset the faces are drawn uniformly or, with
        ``balance_expressions``, by :meth:`expression_weights`.

        Returns:
            (len(self),) float64 weights summing to 1, or None.
        """
        if len(self.facesets) == 1 and not balance_expressions:
            return None
        base = (self.expression_weights().numpy() if balance_expressions
                else np.ones(len(self.items), dtype=np.float64))
        totals = np.bincount(self._faceset_of, weights=base, minlength=len(self.facesets))
        weights = base / totals[self._faceset_of] / len(self.facesets)
        return torch.from_numpy(weights / weights.sum())

    def _decode(self, i: int) -> tuple[np.ndarray, np.ndarray]:
        path, item, scale = self.items[i]
        img = cv2.imread(path, cv2.IMREAD_UNCHANGED)
        if img is None or img.ndim != 3 or img.shape[2] < 3:
            raise DoublureError(f"faceset crop {path} is missing or not an RGB image")
        img = cv2.cvtColor(img[:, :, :3], cv2.COLOR_BGR2RGB)
        if img.dtype == np.uint8:
            img = img.astype(np.uint16) * 257
        if img.shape[0] != self.res:
            interp = cv2.INTER_AREA if img.shape[0] > self.res else cv2.INTER_CUBIC
            img = cv2.resize(img, (self.res, self.res), interpolation=interp)
        # crop pixel centres sit at integers: x_res = (x + 0.5) * scale - 0.5
        lm = (np.asarray(item["landmarks"], dtype=np.float64)[:, :2] + 0.5) * scale - 0.5
        masks = (face_masks(lm, self.res) * 255 + 0.5).astype(np.uint8)
        return np.ascontiguousarray(img.transpose(2, 0, 1)), masks, lm.astype(np.float32)

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Face ``i``: ((3, R, R) uint16 sRGB-encoded crop, (3, R, R) uint8 masks, see :data:`MASK_CHANNELS`,
        (478, 2) float32 landmarks in crop pixels at R)."""
        with self._lock:
            hit = self._cache.get(i)
            if hit is not None:
                self._cache.move_to_end(i)
                return hit
        value = self._decode(i)
        with self._lock:
            self._cache[i] = value
            self._used += sum(part.nbytes for part in value)
            while self._used > self._cache_bytes and len(self._cache) > 1:
                _, old = self._cache.popitem(last=False)
                self._used -= sum(part.nbytes for part in old)
        return value

    def batch(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """((N, 3, R, R) float32 crops in [0, 1], (N, 3, R, R) float32 masks, (N, 478, 2) float32 landmarks)."""
        faces = [self.get(int(i)) for i in indices]
        rgb = torch.from_numpy(np.stack([f[0] for f in faces]).astype(np.float32) / 65535.0)
        masks = torch.from_numpy(np.stack([f[1] for f in faces]).astype(np.float32) / 255.0)
        return rgb, masks, torch.from_numpy(np.stack([f[2] for f in faces]))


def make_raw_batch(data_a: FaceData, data_b: FaceData, batch: int, iteration: int, seed: int, warp: bool,
                   settings: AugmentSettings, env: DistEnv | None = None,
                   balance_expressions: bool = False) -> dict[str, torch.Tensor]:
    """The faces of one iteration's batch (this rank's shard of it) and every random draw of their
    augmentation, on the host, for :func:`augment_batch` to apply on any device; faces are drawn by
    :meth:`FaceData.sampling_weights`: each of several facesets (people) equally, and with
    ``balance_expressions`` evened out by expression.

    The draws are small; the pixel work is left to :func:`augment_batch`, which does it for the whole batch at
    once: on a GPU a few dozen kernels a batch, where a producer process spent ~90 ms of CPU on a 128 px batch
    of 16 pairs (2-core EPYC), and ~7 cores would be needed to feed a step of ~75 it/s.

    Returns:
        dict of CPU tensors, N faces each: ``a_faces``, ``b_faces`` (N, 3, R, R) and ``a_masks``, ``b_masks``
        (N, 3, R, R) (channels :data:`MASK_CHANNELS`), float32 in [0, 1]; per identity ``X_colour`` (N, 3, 3),
        ``X_offset`` (N, 3), ``X_gamma`` (N,) (:func:`random_colour`), ``X_theta`` (N, 2, 3)
        (:func:`random_similarity`), with ``warp`` ``X_warp`` (N, 2, G, G) (:func:`random_warp`), with
        ``settings.blink`` ``X_blink`` (N, R, R, 2) and ``X_blinking`` (N,) bool (:func:`random_blink`); with
        ``settings.transfer`` ``transfer`` (N, 2) bool: B takes A's colour, then A takes B's; with
        ``settings.blur`` or ``settings.compression`` ``X_blur`` and ``X_quality`` (N,) (:func:`random_degradation`).
    """
    env = env or DistEnv()
    weights_a = data_a.sampling_weights(balance_expressions)
    weights_b = data_b.sampling_weights(balance_expressions)
    idx_a = batch_indices(len(data_a), batch, iteration, seed, env, weights_a)
    idx_b = batch_indices(len(data_b), batch, iteration, seed + 7919, env, weights_b)
    first, _ = shard_bounds(batch, env)
    a, a_masks, a_landmarks = data_a.batch(idx_a.tolist())
    b, b_masks, b_landmarks = data_b.batch(idx_b.tolist())
    res = a.shape[-1]
    draws: dict[str, list[torch.Tensor]] = collections.defaultdict(list)
    # Each sample draws with its own generator, keyed by its index in the global batch: its random draws are
    # then the same whichever rank holds it and however many ranks there are.
    for j in range(a.shape[0]):
        generator = torch.Generator().manual_seed(_sample_seed(seed, iteration, first + j))
        for name in ("a", "b"):
            for key, value in zip(("colour", "offset", "gamma"), random_colour(1, settings.colour, generator)):
                draws[f"{name}_{key}"].append(value)
        if settings.transfer > 0:
            # some B faces take the colour of an A face (the plate's light), some A faces that of a B face
            draws["transfer"].append(torch.rand(2, generator=generator) < settings.transfer)
        for name, landmarks in (("a", a_landmarks[j]), ("b", b_landmarks[j])):
            if settings.blink > 0:
                grid = random_blink(landmarks, res, settings, generator)
                draws[f"{name}_blinking"].append(torch.tensor([grid is not None]))
                draws[f"{name}_blink"].append(grid if grid is not None else torch.zeros(1, res, res, 2))
            draws[f"{name}_theta"].append(random_similarity(1, settings, generator))
            if warp:
                draws[f"{name}_warp"].append(random_warp(1, settings, generator))
        if settings.blur > 0 or settings.compression > 0:   # last: the draws above are the same without them
            for name in ("a", "b"):
                sigma, quality = random_degradation(1, settings, res, generator)
                draws[f"{name}_blur"].append(sigma)
                draws[f"{name}_quality"].append(quality)
    raw = {k: torch.cat(v) if k != "transfer" else torch.stack(v) for k, v in draws.items()}
    return {"a_faces": a, "a_masks": a_masks, "b_faces": b, "b_masks": b_masks, **raw}


def augment_batch(raw: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The training batch from :func:`make_raw_batch`'s faces and draws, on their device: colour changes,
    colour transfer, blinks, similarity transforms, the random warp and the input's blur and compression, each
    once for the whole batch.

    Returns:
        dict with ``a_in``, ``a_target``, ``b_in``, ``b_target`` (N, 3, R, R) and ``a_masks``, ``b_masks``
        (N, 3, R, R) (channels :data:`MASK_CHANNELS`), all float32, channels-last.
    """
    faces = {name: apply_colour(raw[f"{name}_faces"], raw[f"{name}_colour"], raw[f"{name}_offset"],
                                raw[f"{name}_gamma"]) for name in ("a", "b")}
    if "transfer" in raw:
        hull_a, hull_b = raw["a_masks"][:, :1], raw["b_masks"][:, :1]
        b_from_a, a_from_b = (raw["transfer"][:, i].view(-1, 1, 1, 1) for i in range(2))
        faces["b"] = torch.where(b_from_a, colour_transfer(faces["b"], faces["a"], hull_b, hull_a), faces["b"])
        faces["a"] = torch.where(a_from_b, colour_transfer(faces["a"], faces["b"], hull_a, hull_b), faces["a"])
    out = {}
    for name in ("a", "b"):
        images, masks = faces[name], raw[f"{name}_masks"]
        if f"{name}_blink" in raw:
            images, masks = blink_warp(images, masks, raw[f"{name}_blink"], raw[f"{name}_blinking"])
        out[f"{name}_in"], out[f"{name}_target"], out[f"{name}_masks"] = augment_pair(
            images, masks, raw[f"{name}_theta"], raw.get(f"{name}_warp"))
        if f"{name}_blur" in raw:
            out[f"{name}_in"] = degrade_inputs(out[f"{name}_in"], raw[f"{name}_blur"], raw[f"{name}_quality"])
    return {k: v.contiguous(memory_format=torch.channels_last) for k, v in out.items()}


def _sample_seed(seed: int, iteration: int, index: int) -> int:
    """The augmentation seed of sample ``index`` of the global batch of ``iteration``."""
    return int(np.random.SeedSequence([seed % 2 ** 64, iteration, index]).generate_state(1, np.uint64)[0]) >> 1


def default_workers(processes_here: int = 1) -> int:
    """Producer processes for a :class:`ProcessBatchLoader`: half this machine's cores, shared among the
    training processes on it (torchrun's LOCAL_WORLD_SIZE), 2 to 8."""
    return max(2, min(8, (os.cpu_count() or 2) // (2 * max(1, processes_here))))


class _Iterations(torch.utils.data.Dataset):
    """Iteration number -> that iteration's batch (``produce``), for torch's DataLoader."""

    def __init__(self, produce: Callable[[int], Any]) -> None:
        self.produce = produce

    def __getitem__(self, iteration: int) -> Any:
        return self.produce(iteration)


def _quiet_worker(_worker_id: int) -> None:
    # One torch thread each (the workers share the cores), and Ctrl-C left to the trainer: it stops at the
    # end of the step and saves a checkpoint, which a worker killed by the same SIGINT would pre-empt.
    torch.set_num_threads(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class ProcessBatchLoader:
    """:class:`BatchLoader`'s interface over worker processes (torch's DataLoader, forked), for a GPU.

    Producer threads hold the training loop's GIL for the Python between their small augmentation ops: on an
    H200 the Trainer stepped at 12-24 it/s at 64 px with two to eight of them while the step alone ran at 51.
    Processes share no GIL; the batches come back through shared memory, pinned by the DataLoader for an
    asynchronous copy to the GPU, in iteration order.

    Args:
        produce: ``produce(iteration) -> batch`` of CPU tensors; it runs in the forked workers, so it must not
            touch CUDA (the parent's CUDA context does not survive a fork).
        start: the first iteration.
        prefetch: batches made ahead (at least one a worker).
        workers: producer processes.
        pin_memory: hand out batches in page-locked memory.
    """

    def __init__(self, produce: Callable[[int], Any], start: int, prefetch: int = 4, workers: int = 2,
                 pin_memory: bool = False) -> None:
        workers = max(1, workers)
        loader = torch.utils.data.DataLoader(
            _Iterations(produce), batch_size=None, sampler=range(start, 1 << 62), num_workers=workers,
            prefetch_factor=max(1, prefetch // workers), pin_memory=pin_memory, worker_init_fn=_quiet_worker,
            multiprocessing_context="fork")
        self._batches = iter(loader)
        self.wait_s = 0.0

    def next(self) -> Any:
        """The next iteration's batch (blocks until it is ready; re-raises a producer's error)."""
        t0 = time.perf_counter()
        batch = next(self._batches)
        self.wait_s += time.perf_counter() - t0
        return batch

    def close(self) -> None:
        # the iterator's last reference: its finaliser stops and joins the workers
        self._batches = None


class BatchLoader:
    """Produces batches for consecutive iterations in background threads, at most ``prefetch`` ahead.

    ``next()`` returns the batch of the next iteration in order and accounts the time spent waiting for it
    (``wait_s``), so the trainer can report the fraction of step time spent waiting on data.

    Args:
        produce: ``produce(iteration) -> batch`` (thread-safe).
        start: the first iteration.
        prefetch: batches made ahead of the consumer (bounded memory).
        workers: producer threads (decoding and augmentation release the GIL in cv2 and torch).
    """

    def __init__(self, produce: Callable[[int], Any], start: int, prefetch: int = 4, workers: int = 2) -> None:
        self._produce = produce
        self._next = start
        self._taken = 0
        self._workers = max(1, workers)
        self._queues = [queue.Queue(maxsize=max(1, prefetch // self._workers)) for _ in range(self._workers)]
        self._stop = threading.Event()
        self.wait_s = 0.0
        self._threads = [threading.Thread(target=self._run, args=(w,), daemon=True, name=f"doublure-data-{w}")
                         for w in range(self._workers)]
        for t in self._threads:
            t.start()

    def _run(self, worker: int) -> None:
        # worker w makes iterations start + w, start + w + workers, ... into its own queue, so the
        # consumer reads them back in order by cycling through the queues
        it = self._next + worker
        q = self._queues[worker]
        while not self._stop.is_set():
            try:
                item = (it, self._produce(it), None)
            except BaseException as exc:   # handed to the consumer, raised there
                item = (it, None, exc)
            while not self._stop.is_set():
                try:
                    q.put(item, timeout=0.1)
                    break
                except queue.Full:
                    continue
            if item[2] is not None:
                return
            it += self._workers

    def next(self) -> Any:
        """The next iteration's batch (blocks until it is ready; re-raises a producer's error)."""
        q = self._queues[self._taken % self._workers]
        t0 = time.perf_counter()
        _, batch, exc = q.get()
        self.wait_s += time.perf_counter() - t0
        self._taken += 1
        if exc is not None:
            raise exc
        return batch

    def close(self) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(timeout=5)

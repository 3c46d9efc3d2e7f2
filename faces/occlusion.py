"""Occlusion mattes: what stands in front of a face (glasses, a hand, hair, a prop), so a swap goes under it.

Three sources, each a plate-resolution matte over a face's window (:class:`~doublure.faces.face.Coverage`,
1 = occluder, the plate's pixels are kept there):

- **learned**: a small segmentation network in the face's aligned crop (:data:`MATTE_RES` px), trained per
  shot from painted strokes on two or three frames (``add`` strokes mark the occluder, ``erase`` strokes mark
  the face; unpainted pixels carry no label), with augmentation. Because the crop follows the face, glasses
  painted on three frames are found on every frame. Its edge is refined at the plate's resolution, guided
  by the plate's pixels (:func:`refine_matte_edge`). A second head of the same kind sees the eye band (brows
  to below the lower rims, :data:`BAND_ROWS`) at about the plate's own resolution of a face
  (:data:`BAND_RES`): a glasses frame's wire is a fraction of a coarse crop pixel, and only strokes that fine
  teach it (:data:`COARSE_MIN_RADIUS_PX`).
- **hands**: mediapipe's legacy hand landmarker (its models ship in the mediapipe wheel), a hand drawn as its
  palm polygon and finger bones, taken to be in front of any face it overlaps.
- **far side**: on a turned head, the part of the face hull the mesh does not cover (background between the
  nose or the near cheek and the far jaw), where a crop-shaped swap would paint over the background.

A learned matte file is ``weights.safetensors``-style: one safetensors file whose metadata holds a JSON
description (``schema`` :data:`MATTE_SCHEMA`, the validity keys, the training frames); never unpickled.
"""
from __future__ import annotations

import dataclasses
import json
import math
import os
import threading
import time
from typing import Callable, Sequence

import cv2
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from doublure.engine import ops
from doublure.engine.atomic import atomic_path
from doublure.engine.device import cpu_has_native_bf16
from doublure.engine.errors import DoublureError

from .face import Coverage, Face, affine_scale, apply_affine, crop_matrix, invert_affine
from .masks import rasterize_shapes, region_shapes
from .paint import render_strokes

MATTE_RES = 128
MATTE_SCHEMA = "doublure.occlusion/2"   # 2: heads "coarse" and "band"; /1 files (the coarse head alone) load
# The eye band head: a crop of this side (about the plate's pixels on a face of 300 px), its rows BAND_ROWS
# (v 0.10-0.475 of the aligned crop: the brows, the rims, the temples' hinges; both ends divisible by 8).
BAND_RES = 320
BAND_ROWS = (32, 152)
# The heads' base widths (channels of the first scale). Applying both at 1080p is mostly their convolutions at a
# few channels, and training is mostly the coarse head: at widths 12 and 6 a face cost about 19-22 CPU-ms with
# an edge across it (the goal is 20) and both heads' training with a stall restart 237-256 CPU-s (the goal 300);
# at 8 and 4, 16-17 CPU-ms and 165 CPU-s, the synthetic occluder's IoU and the glasses' figures holding
# (bench/RESULTS.md, issue 22, session 16).
COARSE_WIDTH = 8
BAND_WIDTH = 4
# A stroke narrower than one MATTE_RES pixel (radius half a pixel) is below what the coarse head can draw: it labels
# the band head only (tracing a thin wire with a fine brush labels the coarse head with nothing it could learn).
COARSE_MIN_RADIUS_PX = 0.5
# A pixel counts as labelled where a stroke covers it this much.
LABEL_COVERAGE = 0.5
# The coarse head's unpainted pixels are taken for face with this weight (each painted class weighs 0.5): an
# occluder nobody painted is less likely than none. Without it the network was free to call anything away from
# the strokes occluder, and did so differently for each training seed (the synthetic occluder's errors were
# false positives far from the object). With it, seeds 0-4 (width 12): IoU 0.886, 0.943, 0.963, 0.964, 0.944
# (before, seeds 0-2: 0.93, 0.94, 0.85); seed 0 stayed near "face" (loss 0.18): bench/RESULTS.md, issue 22.
COARSE_UNLABELLED_WEIGHT = 0.1
# Even so, one coarse training in five or so stalls: the prior wins and the painted occluder is never learnt in
# full (seed 0 of the synthetic occluder: final loss 0.18, IoU 0.886; seeds 1-4 0.01-0.03, IoU 0.94-0.96). It
# shows in the painted occluder pixels' own smoothed loss: at step 160 of 400, 0.297 on seed 0, 0.06-0.15 on
# seeds 1-4; of seeds 5-9, 0.362 on seed 6, which stalled too (final loss 0.27), 0.03-0.15 on the others (at
# step 100 it does not tell yet: 0.33 on seed 0, 0.35 on seed 1), bench/RESULTS.md, issue 22. So
# at STALL_CHECK_AT of its steps a head whose occluder loss is above STALL_OCCLUDER_LOSS starts again with a
# seed derived from the given one (:func:`restart_seed`), at most STALL_RESTARTS times: each costs that fraction
# of the head's training (about 30 CPU-s of the width-8 coarse head's 75). Measured at width 12; at width 8 the
# check fires more often: seeds 1 and 4 of the synthetic occluder (0.531, 0.349), restarted, IoU 0.949 and 0.957
# (bench/RESULTS.md, issue 22, session 16).
STALL_CHECK_AT = 0.4
STALL_OCCLUDER_LOSS = 0.25
STALL_RESTARTS = 1
# The threshold holds for the node's default steps: in a shorter training the loss at that fraction is high
# anyway (and a short training is a quick look), so it is not checked.
STALL_CHECK_MIN_STEPS = 400


# ------------------------------------------------------------------------------------------- crops

def crop_window(face: Face, size: int, hw: tuple[int, int]) -> tuple[int, int, int, int]:
    """The plate rectangle (y0, y1, x0, x1) a face's aligned crop covers, one pixel of margin, clipped to (H, W)."""
    corners = apply_affine(face.from_crop, np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [1.0, 1.0]]))
    x0, y0 = np.floor(corners.min(0)).astype(int) - 1
    x1, y1 = np.ceil(corners.max(0)).astype(int) + 2
    return max(int(y0), 0), min(int(y1), int(hw[0])), max(int(x0), 0), min(int(x1), int(hw[1]))


def encode_for_matte(linear: np.ndarray) -> np.ndarray:
    """Scene-linear pixels to the network's input encoding: clipped to [0, 1], gamma 1/2.2 (perceptual steps)."""
    return np.power(np.clip(linear, 0.0, 1.0), 1.0 / 2.2, dtype=np.float32)


def sample_crop(plate: torch.Tensor, face: Face, size: int = MATTE_RES,
                rows: tuple[int, int] | None = None) -> torch.Tensor:
    """A face's aligned crop of the plate (or a band of its rows), in the matte network's encoding.

    Args:
        plate: (C >= 3, H, W) scene-linear plate, any device.
        face: the face (its ``to_crop``).
        size: crop side in pixels.
        rows: (r0, r1) the crop's rows to sample (default all).

    Returns:
        (3, r1 - r0, size) float32 CPU tensor in [0, 1].
    """
    r0, r1 = rows or (0, size)
    h, w = plate.shape[-2:]
    y0, y1, x0, x1 = crop_window(face, size, (h, w))
    if y1 <= y0 or x1 <= x0:
        return torch.zeros(3, r1 - r0, size)
    window = plate[:3, y0:y1, x0:x1].float().cpu().permute(1, 2, 0).contiguous().numpy()
    m = crop_matrix(face.to_crop, size)
    m[:, 2] += m[:, :2] @ np.array([x0, y0], dtype=np.float64)   # window pixel -> crop pixel
    m[1, 2] -= r0
    crop = cv2.warpAffine(window, m, (size, r1 - r0), flags=cv2.INTER_AREA if affine_shrinks(m) else cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)
    return torch.from_numpy(encode_for_matte(crop)).permute(2, 0, 1).contiguous()


def affine_shrinks(m: np.ndarray) -> bool:
    """Whether a (2, 3) affine maps the source to fewer pixels (area filtering then avoids aliasing)."""
    return abs(np.linalg.det(np.asarray(m)[:, :2])) < 1.0


def crop_grid_face(face: Face, size: int) -> Face:
    """``face`` re-expressed with its crop's pixel grid as the "plate": strokes render straight into the crop."""
    to_crop = np.array([[1.0 / size, 0.0, 0.5 / size], [0.0, 1.0 / size, 0.5 / size]])
    return dataclasses.replace(face, to_crop=to_crop, from_crop=invert_affine(to_crop), coverage=None, occlusion=None)


def stroke_labels(strokes: Sequence[dict], face: Face, frame: int, size: int = MATTE_RES,
                  min_radius_px: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """The labels a frame's strokes give one face's crop.

    Args:
        strokes: ``K.Strokes`` items; ``add`` marks the occluder, ``erase`` marks the face.
        face: the face on ``frame`` (only strokes of its track count).
        frame: the frame (strokes limited to other frames are left out).
        size: crop side.
        min_radius_px: strokes of a smaller radius (in pixels of this crop) are left out.

    Returns:
        (occluder, face) (size, size) bool arrays; a pixel both strokes cover goes to the later stroke.
    """
    grid = crop_grid_face(face, size)
    own = [s for s in strokes if int(s["track_id"]) == face.track_id and float(s["radius"]) * size >= min_radius_px]
    occluder = np.zeros((size, size), dtype=bool)
    skin = np.zeros((size, size), dtype=bool)
    for stroke in own:
        cov = render_strokes([dict(stroke, mode="add")], [grid], frame, (size, size))[0].numpy() >= LABEL_COVERAGE
        if stroke.get("mode", "add") == "erase":
            skin |= cov
            occluder &= ~cov
        else:
            occluder |= cov
            skin &= ~cov
    return occluder, skin


# ------------------------------------------------------------------------------------------ network

class OcclusionNet(nn.Module):
    """A small U-Net: (N, 3, S, S) crops in [0, 1] -> (N, 1, S, S) occluder logits (S divisible by 8).

    Three scales of two 3x3 convolutions, a dilated bottleneck for context (a lens rim knows it is one from
    the whole frame of the glasses), skip connections for thin structures (a frame, a strand of hair).
    ``centred``: the input is centred and scaled first (the band head; the coarse head was measured without).
    """

    def __init__(self, width: int = COARSE_WIDTH, centred: bool = False) -> None:
        super().__init__()
        self.width, self.centred = width, centred

        def block(cin: int, cout: int, dilation: int = 1) -> nn.Sequential:
            return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation), nn.ReLU(inplace=True),
                                 nn.Conv2d(cout, cout, 3, padding=1), nn.ReLU(inplace=True))

        w = width
        self.enc1, self.enc2, self.enc3 = block(3, w), block(w, 2 * w), block(2 * w, 4 * w)
        self.mid = block(4 * w, 4 * w, dilation=2)
        self.dec3, self.dec2, self.dec1 = block(8 * w, 2 * w), block(4 * w, w), block(2 * w, w)
        self.head = nn.Conv2d(w, 1, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.centred:   # about zero mean: uncentred, the band head stayed at chance on people/d9 (150 steps)
            x = (x - 0.5) * 4.0
        # applying, the pooling is done as maxima of strided views (the same values); training keeps max_pool2d's
        # gradient (one input per window, also where a window's values tie)
        pool = (lambda t: F.max_pool2d(t, 2)) if self.training else max_pool2  # noqa: E731
        e1 = self.enc1(x)
        e2 = self.enc2(pool(e1))
        e3 = self.enc3(pool(e2))
        m = self.mid(pool(e3))
        d3 = self.dec3(torch.cat([upsample2(m), e3], 1))
        d2 = self.dec2(torch.cat([upsample2(d3), e2], 1))
        d1 = self.dec1(torch.cat([upsample2(d2), e1], 1))
        return self.head(d1)


def max_pool2(x: torch.Tensor) -> torch.Tensor:
    """2 x 2 max pooling (stride 2) of a channels-last tensor as two maxima of strided views: the values of
    ``F.max_pool2d(x, 2)``, which for a few bf16 channels in this layout costs about ten times as much (1.2 against
    0.1 ms for the band head's first level on this CPU).

    Args:
        x: (N, C, H, W) with H and W even, best channels-last (another layout is copied first).

    Returns:
        (N, C, H / 2, W / 2) channels-last.
    """
    n, c, h, w = x.shape
    pairs = x.permute(0, 2, 3, 1).reshape(n, h // 2, 2, w // 2, 2 * c)   # a window's two columns side by side
    rows = torch.maximum(pairs[:, :, 0], pairs[:, :, 1])
    return torch.maximum(rows[..., :c], rows[..., c:]).permute(0, 3, 1, 2)


def upsample2(x: torch.Tensor) -> torch.Tensor:
    """Bilinear 2x upsampling (half-pixel centres), computed in float32: the same bf16 values as bf16's own
    kernel, which for a few channels channels-last takes about twice the time (0.8 against 0.35 ms for the band
    head's last level).

    Args:
        x: (N, C, H, W).

    Returns:
        (N, C, 2H, 2W) of ``x``'s dtype.
    """
    return F.interpolate(x.float(), scale_factor=2.0, mode="bilinear", align_corners=False).to(x.dtype)


@dataclasses.dataclass
class TrainingSample:
    """One face on one painted frame: its crop (3, S, S) with its (S, S) bool labels for the coarse head, and
    its eye band (3, Hb, Wb) with the band head's (Hb, Wb) labels."""

    frame: int
    track_id: int
    crop: torch.Tensor
    occluder: np.ndarray
    skin: np.ndarray
    band_crop: torch.Tensor
    band_occluder: np.ndarray
    band_skin: np.ndarray

    @property
    def labelled(self) -> bool:
        return bool(self.occluder.any() or self.skin.any() or self.band_occluder.any() or self.band_skin.any())


def training_sample(plate: torch.Tensor, face: Face, strokes: Sequence[dict], frame: int) -> TrainingSample:
    """A painted face's crops and labels for both heads: the coarse head learns the strokes it can draw (radius
    at least :data:`COARSE_MIN_RADIUS_PX` of its pixels), the band head every stroke, at its resolution.

    Args:
        plate: (C >= 3, H, W) scene-linear plate of ``frame``.
        face: the face.
        strokes: the strokes (all frames; those of other frames and tracks are left out).
        frame: the painted frame.
    """
    occluder, skin = stroke_labels(strokes, face, frame, MATTE_RES, COARSE_MIN_RADIUS_PX)
    band_occluder, band_skin = (labels[BAND_ROWS[0]:BAND_ROWS[1]] for labels in stroke_labels(strokes, face, frame,
                                                                                                BAND_RES))
    return TrainingSample(frame, face.track_id, sample_crop(plate, face), occluder, skin,
                          sample_crop(plate, face, BAND_RES, BAND_ROWS), band_occluder, band_skin)


def augment(crops: torch.Tensor, labels: torch.Tensor, gen: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random similarity warp (rotation +-12 deg, scale 0.85-1.15, shift +-8 %), mirror, gain, gamma and noise.

    Args:
        crops: (N, 3, H, W) in [0, 1] (a band need not be square: the warp is a similarity in pixels).
        labels: (N, 2, H, W) float {0, 1}: occluder, face.
        gen: the random generator (training is repeatable).

    Returns:
        (crops, labels) warped alike; labels stay nearest-neighbour sampled.
    """
    n, _, h, w = crops.shape
    rnd = lambda *shape: torch.rand(*shape, generator=gen)  # noqa: E731
    angle = (rnd(n) - 0.5) * math.radians(24)
    scale = 0.85 + 0.3 * rnd(n)
    mirror = torch.where(rnd(n) < 0.5, -1.0, 1.0)
    shift = (rnd(n, 2) - 0.5) * 0.16
    cos, sin = torch.cos(angle) / scale, torch.sin(angle) / scale
    # a rotation in pixels, in affine_grid's coordinates (each axis normalised by its own half size)
    theta = torch.stack([torch.stack([cos * mirror, -sin * (h / w), shift[:, 0]], 1),
                         torch.stack([sin * mirror * (w / h), cos, shift[:, 1]], 1)], 1)
    grid = F.affine_grid(theta, list(crops.shape), align_corners=False)
    crops = F.grid_sample(crops, grid, mode="bilinear", padding_mode="border", align_corners=False)
    labels = F.grid_sample(labels, grid, mode="nearest", padding_mode="zeros", align_corners=False)
    gain = 0.75 + 0.5 * rnd(n, 3, 1, 1)
    gamma = 0.7 + 0.6 * rnd(n, 1, 1, 1)
    crops = (crops * gain).clamp(0, 1) ** gamma
    crops = (crops + 0.02 * torch.randn(crops.shape, generator=gen)).clamp(0, 1)
    return crops, labels


class OcclusionMatte(nn.Module):
    """A trained matte: the ``coarse`` head on the whole aligned crop (:data:`MATTE_RES`) and the ``band`` head
    (centred) on the eye band (:data:`BAND_RES`, :data:`BAND_ROWS`); a head the strokes gave nothing to learn
    is None."""

    def __init__(self, coarse: OcclusionNet | None, band: OcclusionNet | None) -> None:
        super().__init__()
        self.coarse, self.band = coarse, band

    def widths(self) -> dict[str, int]:
        return {name: head.width for name, head in (("coarse", self.coarse), ("band", self.band)) if head is not None}


class TrainingStalled(Exception):
    """A head's training stalled: at ``step`` its painted occluder pixels' smoothed loss was ``occluder_loss``."""

    def __init__(self, step: int, occluder_loss: float) -> None:
        super().__init__(f"training stalled: occluder loss {occluder_loss:.3f} at step {step}")
        self.step, self.occluder_loss = step, occluder_loss


def restart_seed(seed: int, restart: int) -> int:
    """The seed of a training's ``restart``-th restart after a stall (0: ``seed`` itself): derived from ``seed``
    alone, so the same seed trains the same matte again."""
    return seed + 1000 * restart


def train_head(crops: torch.Tensor, labels: torch.Tensor, steps: int, batch: int, width: int, seed: int,
               centred: bool = False, progress: Callable[[float, float], None] | None = None,
               check_cancelled: Callable[[], None] | None = None,
               channels_last: bool = False, unlabelled_weight: float = 0.0,
               stall_check: tuple[float, float] | None = None) -> tuple[OcclusionNet, float]:
    """Train one :class:`OcclusionNet` head.

    The loss is binary cross-entropy over labelled pixels, each class weighted to half the total, so a thin
    occluder counts as much as the large face painted around it; plus, with ``unlabelled_weight``, the
    unlabelled pixels' mean cross-entropy against "face" with that weight (a weak prior).

    Args:
        crops: (N, 3, H, W) in [0, 1], H and W divisible by 8.
        labels: (N, 2, H, W) float {0, 1}: occluder, face.
        steps, batch, width, seed: optimisation steps, crops per step (drawn with replacement, augmented), the
            network's base width, the random seed.
        centred: the network centres its input (:class:`OcclusionNet`).
        progress: called as ``progress(fraction of this head, loss)`` every few steps.
        check_cancelled: called every step; raises to stop.
        channels_last: train in oneDNN's channels-last layout (about 0.7 of the plain layout's CPU time; the
            same sums in another order, so another network).
        unlabelled_weight: the weight of unlabelled pixels taken for face (0: they carry no label).
        stall_check: (fraction of the steps, loss): at that fraction, a smoothed loss of the painted occluder
            pixels above that loss is a stall (None: not checked).

    Returns:
        (the network in eval mode, its final smoothed loss).

    Raises:
        TrainingStalled: the stall check found one.
    """
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    layout = torch.channels_last if channels_last else torch.contiguous_format
    net = OcclusionNet(width, centred).to(memory_format=layout)
    opt = torch.optim.Adam(net.parameters(), lr=3e-3)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=4e-3, total_steps=steps, pct_start=0.15)
    loss_avg = occluder_avg = None
    check_step = max(1, round(steps * stall_check[0])) if stall_check is not None else None
    net.train()
    for step in range(steps):
        if check_cancelled is not None:
            check_cancelled()
        pick = torch.randint(len(crops), (batch,), generator=gen)
        x, y = augment(crops[pick], labels[pick], gen)
        logits = net(x.contiguous(memory_format=layout))[:, 0]
        occ, skin = y[:, 0], y[:, 1]
        bce = F.binary_cross_entropy_with_logits(logits, occ, reduction="none")
        occluder_loss = (bce * occ).sum() / occ.sum().clamp_min(1)
        loss = 0.5 * occluder_loss + 0.5 * (bce * skin).sum() / skin.sum().clamp_min(1)
        if unlabelled_weight:
            unlabelled = 1.0 - occ - skin
            loss = loss + unlabelled_weight * (bce * unlabelled).sum() / unlabelled.sum().clamp_min(1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        sched.step()
        value = float(loss.detach())
        loss_avg = value if loss_avg is None else 0.9 * loss_avg + 0.1 * value
        occluder_value = float(occluder_loss.detach())
        occluder_avg = occluder_value if occluder_avg is None else 0.9 * occluder_avg + 0.1 * occluder_value
        if step + 1 == check_step and occluder_avg > stall_check[1]:
            raise TrainingStalled(step + 1, occluder_avg)
        if progress is not None and (step % 10 == 0 or step == steps - 1):
            progress((step + 1) / steps, loss_avg)
    net.eval()
    return net, loss_avg or 0.0


def train_matte(samples: Sequence[TrainingSample], steps: int = 500, batch: int = 8, width: int = COARSE_WIDTH,
                seed: int = 0,
                progress: Callable[[float, str], None] | None = None,
                check_cancelled: Callable[[], None] | None = None,
                on_restart: Callable[[str, int, TrainingStalled, int], None] | None = None
                ) -> tuple[OcclusionMatte, dict]:
    """Train an :class:`OcclusionMatte` on painted samples: each head the strokes label with both classes.

    The coarse head's training of at least :data:`STALL_CHECK_MIN_STEPS` steps is checked for a stall
    (:data:`STALL_CHECK_AT`) and restarted with :func:`restart_seed` at most :data:`STALL_RESTARTS` times; the
    last try is kept whatever its loss.

    Args:
        samples: painted faces; together they must label both classes for at least one head.
        steps: optimisation steps of each head.
        batch: coarse crops per step (the band head takes half as many bands, each 2.3 times the pixels).
        width: the coarse head's base width (the band head's is :data:`BAND_WIDTH`).
        seed: random seed.
        progress: called as ``progress(fraction, message)`` every few steps.
        check_cancelled: called every step; raises to stop.
        on_restart: called as ``on_restart(head, seed, stall, next seed)`` when a head's training stalled.

    Returns:
        (the matte in eval mode, a summary: steps, final loss (the worse head's), each head's loss, seconds,
        and each head's seed where a restart changed it).

    Raises:
        DoublureError: no head has both classes labelled.
    """
    def stacked(images, occluders, skins):
        return {"crops": torch.stack(images),
                "labels": torch.stack([torch.from_numpy(np.stack([o, k]).astype(np.float32))
                                       for o, k in zip(occluders, skins)])}

    # per head, train_head's arguments other than the steps, the seed and the callbacks
    heads = {}
    coarse = [s for s in samples if s.occluder.any() or s.skin.any()]
    if any(s.occluder.any() for s in coarse) and any(s.skin.any() for s in coarse):
        # the plain layout: channels-last costs about 0.6 of its CPU time, but those are other networks (the same
        # sums in another order), and at width 8 one of seeds 0-4 of the synthetic occluder fell to IoU 0.88 and
        # three stalled and restarted (bench/RESULTS.md, issue 22, session 16)
        heads["coarse"] = dict(stacked([s.crop for s in coarse], [s.occluder for s in coarse],
                                       [s.skin for s in coarse]),
                               batch=batch, width=width, centred=False, channels_last=False,
                               unlabelled_weight=COARSE_UNLABELLED_WEIGHT,
                               stall_check=(STALL_CHECK_AT, STALL_OCCLUDER_LOSS)
                               if steps >= STALL_CHECK_MIN_STEPS else None)
    band = [s for s in samples if s.band_occluder.any() or s.band_skin.any()]
    if any(s.band_occluder.any() for s in band) and any(s.band_skin.any() for s in band):
        # no prior on the band head: its glasses figures (d9, d13) were measured without one, not with; nor a
        # stall check: none was seen there (its threshold was measured on the coarse head)
        heads["band"] = dict(stacked([s.band_crop for s in band], [s.band_occluder for s in band],
                                     [s.band_skin for s in band]),
                             batch=max(1, batch // 2), width=BAND_WIDTH, centred=True, channels_last=True,
                             unlabelled_weight=0.0, stall_check=None)
    if not heads:
        raise DoublureError("the strokes label no region with both an occluder and the face beside it")
    start, nets, losses, seeds = time.perf_counter(), {}, {}, {}
    for i, (name, head) in enumerate(heads.items()):
        def report(f: float, loss: float, i: int = i, name: str = name) -> None:
            progress((i + f) / len(heads), f"{name}: loss {loss:.3f}")

        stall_check = head.pop("stall_check")
        for restart in range(STALL_RESTARTS + 1):
            head_seed = restart_seed(seed, restart)
            try:
                nets[name], losses[name] = train_head(
                    **head, steps=steps, seed=head_seed, progress=report if progress is not None else None,
                    check_cancelled=check_cancelled, stall_check=stall_check if restart < STALL_RESTARTS else None)
                break
            except TrainingStalled as stall:
                if on_restart is not None:
                    on_restart(name, head_seed, stall, restart_seed(seed, restart + 1))
        if head_seed != seed:
            seeds[name] = head_seed
    matte = OcclusionMatte(nets.get("coarse"), nets.get("band"))
    return matte, {"steps": steps, "loss": round(max(losses.values()), 5),
                   "losses": {k: round(v, 5) for k, v in losses.items()},
                   "seconds": round(time.perf_counter() - start, 2), **({"seeds": seeds} if seeds else {})}


def predict_crops(net: OcclusionNet, crops: torch.Tensor) -> torch.Tensor:
    """Occluder probability of crops, in the network's own precision and layout (:func:`for_inference`).

    Args:
        net: a head, fp32 or bf16.
        crops: (N, 3, H, W) float32 in [0, 1].

    Returns:
        (N, 1, H, W) float32 in [0, 1].
    """
    dtype = next(net.parameters()).dtype
    with torch.inference_mode():
        return torch.sigmoid(net(crops.to(dtype).contiguous(memory_format=torch.channels_last)).float())


def for_inference(matte: OcclusionMatte, bf16: bool | None = None) -> OcclusionMatte:
    """``matte`` made ready for applying, in place: eval mode, channels-last, and bf16 weights where the CPU
    runs bf16 natively (:func:`~doublure.engine.device.cpu_has_native_bf16`). On this AVX-512 BF16 CPU the two
    heads then cost about half their fp32 time per face at 1080p; the probability moves by at most about 0.01,
    the ramped matte's edge by a fraction of a plate pixel (``bench/RESULTS.md``, issue 22).

    Args:
        matte: the trained heads.
        bf16: force bf16 on or off (default: the CPU decides).

    Returns:
        ``matte`` itself.
    """
    bf16 = cpu_has_native_bf16() if bf16 is None else bf16
    return matte.eval().to(torch.bfloat16 if bf16 else torch.float32, memory_format=torch.channels_last)


def save_matte(path: str, matte: OcclusionMatte, meta: dict) -> None:
    """Write a trained matte atomically: both heads' weights and ``meta`` (JSON) in one safetensors file."""
    from safetensors.torch import save_file

    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    description = json.dumps({**meta, "schema": MATTE_SCHEMA, "heads": matte.widths(), "res": MATTE_RES,
                              "band_res": BAND_RES, "band_rows": list(BAND_ROWS)})
    with atomic_path(path, suffix=".safetensors") as tmp:
        save_file({k: v.float().contiguous() for k, v in matte.state_dict().items()}, tmp,
                  metadata={"doublure": description})


def load_matte(path: str) -> tuple[OcclusionMatte, dict]:
    """Read a matte file written by :func:`save_matte` (or a ``doublure.occlusion/1`` file: a coarse head),
    ready for applying (:func:`for_inference`).

    Raises:
        DoublureError: the file is missing, not a matte, or of another schema.
    """
    from safetensors import safe_open
    from safetensors.torch import load_file

    try:
        with safe_open(path, framework="pt") as fh:
            meta = json.loads((fh.metadata() or {}).get("doublure", "null") or "null")
        weights = load_file(path)
    except (OSError, ValueError, json.JSONDecodeError) as exc:
        raise DoublureError(f"occlusion matte {path}: cannot be read ({exc})") from None
    schema = meta.get("schema") if isinstance(meta, dict) else None
    if schema == "doublure.occlusion/1":
        heads, weights = {"coarse": int(meta["width"])}, {f"coarse.{k}": v for k, v in weights.items()}
    elif schema == MATTE_SCHEMA and meta.get("band_res") == BAND_RES and meta.get("band_rows") == list(BAND_ROWS):
        heads = {name: int(width) for name, width in meta["heads"].items()}
    else:
        raise DoublureError(f"occlusion matte {path}: not a {MATTE_SCHEMA} file")
    matte = OcclusionMatte(*(OcclusionNet(heads[name], centred=name == "band") if name in heads else None
                             for name in ("coarse", "band")))
    matte.load_state_dict(weights)
    return for_inference(matte), meta


# --------------------------------------------------------------------------------- plate mattes

def crop_to_plate(matte: torch.Tensor, face: Face, window: tuple[int, int, int, int], row0: int = 0) -> torch.Tensor:
    """A crop-space matte (or a band of a crop's rows) warped onto a plate window (zero outside it).

    Args:
        matte: (R, S) float matte in the face's aligned crop of side S: its rows ``row0`` to ``row0 + R``.
        face: the face whose crop it is.
        window: (y0, y1, x0, x1) plate rectangle.
        row0: the crop row of the matte's first row.

    Returns:
        (y1 - y0, x1 - x0) float32 numpy matte.
    """
    rows, size = matte.shape[-2:]
    y0, y1, x0, x1 = window
    m = invert_affine(crop_matrix(face.to_crop, size))   # crop pixel -> plate pixel
    m[:, 2] += m[:, 1] * row0 - np.array([x0, y0], dtype=np.float64)
    src = np.ascontiguousarray(matte.reshape(rows, size).float().cpu().numpy())
    return cv2.warpAffine(src, m, (x1 - x0, y1 - y0), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                          borderValue=0.0)


# The edge refinement: the guided filter's window in crop pixels (one crop pixel is several plate pixels on a
# large face: the network's edge is that coarse), and its regularisation in the guide's encoding (gamma 1/2.2,
# [0, 1]): a plate edge of less contrast than about sqrt(eps) is smoothed over rather than followed.
REFINE_RADIUS_CROP_PX = 1.0
REFINE_EPS = 1e-3
# The filter's window fits are computed on a grid of about the network's own pixels and enlarged (the fast
# guided filter), then applied to the plate's pixels: with OpenCV's planes, a refinement over a whole 1080p
# face cost about a quarter of the exact filter's time, and the synthetic occluder's IoU rose for each of three
# networks (0.855, 0.930, 0.863 exact; 0.862, 0.935, 0.906: bench/RESULTS.md, issue 22).
REFINE_GRID_CROP_PX = 1.0
# The refinement works near the matte's edges only: pixels within two radii of one whose probability lies
# between these, beside occluder pixels (the network's edge, warped onto the plate, always passes through
# them: a crop pixel spans several plate pixels). A face with no occluder then costs nothing.
_UNDECIDED = (0.1, 0.9)


def refine_matte_edge(prob: np.ndarray, plate_window: torch.Tensor, radius: int, eps: float = REFINE_EPS,
                      subsample: int = 1) -> np.ndarray:
    """Snap an upsampled matte's edge to the plate's own edges, the way learned roto tools refine a coarse
    matte: the colour guided filter (He, Sun and Tang 2010, :func:`~doublure.engine.ops.guided_filter_color`)
    of the probability, guided by the plate's pixels in the network's encoding (:func:`encode_for_matte`).

    Only the band within two radii of the matte's edge (undecided pixels, probability 0.1-0.9, within two radii
    of one above 0.5) is filtered (in its bounding box), and only that box of the plate is encoded; elsewhere
    the probability is returned as it came.

    Args:
        prob: (h, w) float32 occluder probability warped onto the plate window.
        plate_window: (C >= 3, h, w) scene-linear plate window (a view of the plate will do), any device.
        radius: filter radius in plate pixels (0 returns ``prob``).
        eps: regularisation (squared units of the guide).
        subsample: the filter's fits computed on a grid this many plate pixels apart (1: exact; see
            :func:`~doublure.engine.ops.guided_filter_color`).

    Returns:
        (h, w) float32 refined probability in [0, 1].
    """
    if radius < 1:
        return prob
    reach = np.ones((4 * radius + 1, 4 * radius + 1), np.uint8)
    # an edge of the matte: undecided pixels beside occluder ones (specks of doubt with no occluder near them
    # are below the ramp whatever the filter does to them)
    occluder_near = cv2.dilate((prob > 0.5).astype(np.uint8), reach) > 0
    edge = (prob > _UNDECIDED[0]) & (prob < _UNDECIDED[1]) & occluder_near
    band = cv2.dilate(edge.astype(np.uint8), reach) > 0
    if not band.any():
        return prob
    rows, cols = np.nonzero(band.any(1))[0], np.nonzero(band.any(0))[0]
    margin = 2 * radius   # a pixel's result depends on the pixels two radii away
    y0, y1 = max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, prob.shape[0])
    x0, x1 = max(int(cols[0]) - margin, 0), min(int(cols[-1]) + margin + 1, prob.shape[1])
    box = torch.from_numpy(np.ascontiguousarray(prob[y0:y1, x0:x1]))[None]
    box_guide = torch.from_numpy(encode_for_matte(plate_window[:3, y0:y1, x0:x1].float().cpu().numpy()))
    refined = ops.guided_filter_color(box_guide, box, radius, eps, subsample)[0].clamp(0.0, 1.0).numpy()
    out = prob.copy()
    inside = band[y0:y1, x0:x1]
    out[y0:y1, x0:x1][inside] = refined[inside]
    return out


def learned_plate_matte(prob: torch.Tensor, face: Face, plate: torch.Tensor,
                        window: tuple[int, int, int, int]) -> np.ndarray:
    """The coarse head's crop-space probability as the face's matte on a plate window: warped onto the plate,
    its edge refined on the plate's own pixels (:func:`refine_matte_edge`, radius
    :data:`REFINE_RADIUS_CROP_PX` crop pixels, fits on a grid of :data:`REFINE_GRID_CROP_PX`), then ramped
    (:func:`matte_ramp`).

    Args:
        prob: (S, S) occluder probability in the face's aligned crop.
        face: the face.
        plate: (C >= 3, H, W) scene-linear plate.
        window: (y0, y1, x0, x1) plate rectangle.

    Returns:
        (y1 - y0, x1 - x0) float32 matte in [0, 1].
    """
    y0, y1, x0, x1 = window
    on_plate = crop_to_plate(prob, face, window)
    plate_px = affine_scale(face.from_crop) / prob.shape[-1]   # plate pixels per crop pixel
    radius = int(round(REFINE_RADIUS_CROP_PX * plate_px))
    refined = refine_matte_edge(on_plate, plate[:, y0:y1, x0:x1], radius,
                                subsample=max(1, int(round(REFINE_GRID_CROP_PX * plate_px))))
    return matte_ramp(torch.from_numpy(refined)).numpy()


def apply_matte(matte: OcclusionMatte, plate: torch.Tensor, faces: Sequence[Face],
                windows: Sequence[tuple[int, int, int, int]]) -> list[np.ndarray]:
    """A trained matte on a frame's faces: each head's probability on the plate window, the larger of the two.
    The band head's pixels are about the plate's: its probability is only ramped, not refined.

    Args:
        matte: the trained heads.
        plate: (C >= 3, H, W) scene-linear plate.
        faces: the frame's faces.
        windows: each face's (y0, y1, x0, x1) plate rectangle.

    Returns:
        One (y1 - y0, x1 - x0) float32 matte in [0, 1] per face.
    """
    out = [np.zeros((y1 - y0, x1 - x0), dtype=np.float32) for y0, y1, x0, x1 in windows]
    if not faces:
        return out
    if matte.coarse is not None:
        probs = predict_crops(matte.coarse, torch.stack([sample_crop(plate, f) for f in faces]))[:, 0]
        for i, (face, window) in enumerate(zip(faces, windows)):
            out[i] = np.maximum(out[i], learned_plate_matte(probs[i], face, plate, window))
    if matte.band is not None:
        probs = predict_crops(matte.band, torch.stack([sample_crop(plate, f, BAND_RES, BAND_ROWS) for f in faces]))
        for i, (face, window) in enumerate(zip(faces, windows)):
            on_plate = torch.from_numpy(crop_to_plate(probs[i, 0], face, window, BAND_ROWS[0]))
            out[i] = np.maximum(out[i], matte_ramp(on_plate).numpy())
    return out


def matte_ramp(prob: torch.Tensor, low: float = 0.35, high: float = 0.65) -> torch.Tensor:
    """The network's probability to a matte: 0 below ``low``, 1 above ``high``, linear between. A firm edge:
    the plate's glasses come back whole, not half mixed with the new face."""
    return ((prob - low) / (high - low)).clamp(0.0, 1.0)


# The mesh's triangles, from mediapipe's tessellation edges (each triangle is a 3-clique of edges).
def _mesh_triangles() -> np.ndarray:
    from mediapipe.python.solutions.face_mesh_connections import FACEMESH_TESSELATION

    neighbours: dict[int, set[int]] = {}
    for a, b in FACEMESH_TESSELATION:
        neighbours.setdefault(a, set()).add(b)
        neighbours.setdefault(b, set()).add(a)
    tris = {tuple(sorted((a, b, c))) for a, b in FACEMESH_TESSELATION for c in neighbours[a] & neighbours[b]}
    return np.array(sorted(tris), dtype=np.int32)


MESH_TRIANGLES = _mesh_triangles()
# Below this head turn the mesh's outline and the face hull agree to within rasterisation.
FAR_SIDE_MIN_YAW = 12.0


def far_side_matte(face: Face, window: tuple[int, int, int, int]) -> np.ndarray:
    """Where a turned head's face hull holds no face: the hull minus the union of the mesh's triangles.

    Args:
        face: the plate face (landmarks in plate pixels).
        window: (y0, y1, x0, x1) plate rectangle.

    Returns:
        (y1 - y0, x1 - x0) float32 matte, zero for a head turned less than :data:`FAR_SIDE_MIN_YAW`.
    """
    y0, y1, x0, x1 = window
    hw = (y1 - y0, x1 - x0)
    if abs(face.pose[0]) < FAR_SIDE_MIN_YAW:
        return np.zeros(hw, dtype=np.float32)
    lm = np.asarray(face.landmarks, dtype=np.float64)[:, :2] - [x0, y0]
    hull, _ = region_shapes(lm, face.iris, "face_hull")
    mesh = np.zeros(hw, dtype=np.uint8)
    cv2.fillPoly(mesh, [np.round(lm[t] * 16).astype(np.int32) for t in MESH_TRIANGLES], 255, cv2.LINE_8, shift=4)
    mesh = cv2.dilate(mesh, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (3, 3)))   # close rasterisation gaps
    return rasterize_shapes(hull, [], hw) * (1.0 - mesh.astype(np.float32) / 255.0)


# Hand landmarks (mediapipe): the palm polygon and the finger chains.
_PALM = (0, 1, 5, 9, 13, 17)
_FINGERS = ((0, 1, 2, 3, 4), (5, 6, 7, 8), (9, 10, 11, 12), (13, 14, 15, 16), (17, 18, 19, 20))


class HandFinder:
    """Hands in a frame from mediapipe's legacy hands solution (palm detector + 21 landmarks), thread-safe.

    The models (``palm_detection_*.tflite``, ``hand_landmark_*.tflite``) ship inside the mediapipe wheel:
    nothing is fetched at run time.
    """

    def __init__(self, max_hands: int = 2, min_confidence: float = 0.5) -> None:
        self._lock = threading.Lock()
        self._max_hands, self._min_confidence = max_hands, min_confidence
        self._solution = None

    def find(self, rgb8: np.ndarray) -> list[np.ndarray]:
        """Hands in an (H, W, 3) uint8 sRGB image: a list of (21, 2) landmark arrays in its pixels."""
        with self._lock:
            if self._solution is None:
                from mediapipe.python.solutions.hands import Hands

                self._solution = Hands(static_image_mode=True, max_num_hands=self._max_hands, model_complexity=1,
                                       min_detection_confidence=self._min_confidence)
            result = self._solution.process(rgb8)
        h, w = rgb8.shape[:2]
        return [np.array([[p.x * w, p.y * h] for p in hand.landmark]) for hand in (result.multi_hand_landmarks or [])]


def hand_matte(hands: Sequence[np.ndarray], window: tuple[int, int, int, int]) -> np.ndarray:
    """Hands drawn into a plate window: palm polygon filled, finger bones as thick strokes, edge softened.

    Args:
        hands: (21, 2) landmark arrays in plate pixels.
        window: (y0, y1, x0, x1).

    Returns:
        (y1 - y0, x1 - x0) float32 matte in [0, 1].
    """
    y0, y1, x0, x1 = window
    canvas = np.zeros((y1 - y0, x1 - x0), dtype=np.uint8)
    for hand in hands:
        p = np.asarray(hand, dtype=np.float64) - [x0, y0]
        palm = float(np.linalg.norm(p[5] - p[17]))     # knuckle span sets the finger thickness
        thickness = max(2, int(round(0.3 * palm)))
        cv2.fillConvexPoly(canvas, np.round(p[list(_PALM)] * 16).astype(np.int32), 255, cv2.LINE_AA, shift=4)
        for chain in _FINGERS:
            pts = np.round(p[list(chain)]).astype(np.int32)
            cv2.polylines(canvas, [pts], False, 255, thickness, cv2.LINE_AA)
    return canvas.astype(np.float32) / 255.0


def occlusion_in_window(face: Face, window: tuple[int, int, int, int], device: torch.device | str = "cpu") -> torch.Tensor:
    """A face's occlusion matte (``Face.occlusion``) cut to a plate window; zero where it has none.

    Args:
        face: a face that may carry ``occlusion``.
        window: (y0, y1, x0, x1).

    Returns:
        (1, y1 - y0, x1 - x0) float32 tensor in [0, 1].
    """
    y0, y1, x0, x1 = window
    out = torch.zeros(1, y1 - y0, x1 - x0, dtype=torch.float32, device=device)
    occ = face.occlusion
    if occ is None:
        return out
    oy0, oy1, ox0, ox1 = occ.window
    iy0, iy1, ix0, ix1 = max(oy0, y0), min(oy1, y1), max(ox0, x0), min(ox1, x1)
    if iy1 > iy0 and ix1 > ix0:
        out[:, iy0 - y0:iy1 - y0, ix0 - x0:ix1 - x0] = \
            occ.alpha[:, iy0 - oy0:iy1 - oy0, ix0 - ox0:ix1 - ox0].to(device=device, dtype=torch.float32)
    return out


def with_occlusion(face: Face, window: tuple[int, int, int, int], matte: np.ndarray) -> Face:
    """A copy of ``face`` carrying ``matte`` ((h, w) over ``window``) as its occlusion."""
    return dataclasses.replace(face, occlusion=Coverage(window, torch.from_numpy(np.ascontiguousarray(matte))[None]))

"""Faceset extraction (``doublure extract CLIPS --out faceset/ --size 256 --every N``) and its coverage report.

Faceset format (``doublure.faceset/1``), relied on by training:

- ``out_dir/index.json``: ``{"schema": "doublure.faceset/1", "size": S, "face_type": ..., "items": [...]}``,
  one item per crop: ``{"file": "000123.png", "source": clip path, "frame": n (0-based decode order; a
  ``FrameSource``'s own frame numbers),
  "landmarks": [[x, y] x 478] in crop pixel coords (pixel centres at integers), "pose": [yaw, pitch, roll],
  "blur": variance of the Laplacian, "track_id": k, "expression": {...}, "luma": mean face luminance,
  "native_side": source pixels across the crop (the detail a reference holds: a crop larger than this is
  an enlargement)}``.
- crops: 16-bit PNG RGB, sRGB-encoded (display-referred, like the source video), written atomically.
- ``out_dir/report.html`` (+ ``report_*.png`` plots): the coverage report.

Re-running on the same input writes the same files (sequential decoding, a fixed order, no randomness).
"""
from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import numpy as np
import torch

from doublure.engine.atomic import write_text_atomic
from doublure.engine.errors import DoublureError, MediaError

from .align import warp_to_crop
from .detect import MediapipeBackend
from .face import Face, affine_scale
from .masks import render_crop_mask
from .track import associate, make_face

FACESET_SCHEMA = "doublure.faceset/1"


@dataclass
class FrameSource:
    """Frames to extract faces from that are not a video file: a Read node's frames through the engine (an
    image sequence, or a plate after its colour conversion), as the app's "adapt to this shot" takes them.

    Attributes:
        name: what the faceset records as each face's ``source`` (the plate's file).
        count: how many frames ``frames()`` yields (the progress total).
        frames: yields (frame number, (H, W, 3) uint8 RGB, sRGB-encoded), in order.
    """

    name: str
    count: int
    frames: Callable[[], Iterator[tuple[int, np.ndarray]]]


def iter_video_frames(path: str, every: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Decode a video in order through the engine's frame-exact reader (the same pixels a Read node sees).

    Yields:
        (frame index from 0, (H, W, 3) uint8 RGB, sRGB-encoded) for every ``every``-th frame.
    """
    from doublure.engine.video import VideoReader

    with VideoReader(path) as reader:
        for i in range(reader.frame_count):
            # every frame is read: skipping would make each read seek back to a keyframe and decode forward
            pixels = reader.read(i)
            if i % every == 0:
                # the reader returns 8-bit video as code / 255 exactly, so this restores the code values
                yield i, (pixels * 255.0 + 0.5).astype(np.uint8)


# ------------------------------------------------------------------------------------- measurements

def expression_measures(lm: np.ndarray) -> dict[str, float]:
    """Scale-free expression measures from (478, >=2) landmarks (any pixel space).

    Returns:
        ``mouth_open``: inner-lip gap / mouth width; ``eyes_open``: mean eye opening / eye width (about 0.3
        open, under 0.12 closed); ``brow_raise``: brow-to-eye distance / eye-corner distance.
    """
    p = np.asarray(lm, dtype=np.float64)[:, :2]
    d = lambda a, b: float(np.linalg.norm(p[a] - p[b]))  # noqa: E731
    eye_dist = max(d(33, 263), 1e-6)
    mouth_open = d(13, 14) / max(d(78, 308), 1e-6)
    eyes_open = 0.5 * (d(159, 145) / max(d(33, 133), 1e-6) + d(386, 374) / max(d(362, 263), 1e-6))
    brow_raise = 0.5 * (d(105, 159) + d(334, 386)) / eye_dist
    return {"mouth_open": mouth_open, "eyes_open": eyes_open, "brow_raise": brow_raise}


def laplacian_variance(gray: np.ndarray, mask: np.ndarray | None = None) -> float:
    """Sharpness: variance of the 3x3 Laplacian of a (H, W) image in 0..255 units, inside ``mask`` (> 0.5)."""
    import cv2

    lap = cv2.Laplacian(gray.astype(np.float32), cv2.CV_32F, ksize=1)
    vals = lap[mask > 0.5] if mask is not None else lap.ravel()
    return float(vals.var()) if vals.size else 0.0


def _srgb_to_linear(x: np.ndarray) -> np.ndarray:
    return np.where(x <= 0.04045, x / 12.92, ((x + 0.055) / 1.055) ** 2.4)


@dataclass
class ExtractOptions:
    """Quality filters.

    Attributes:
        min_face_ratio: skip faces whose plate footprint is smaller than this times the crop size
            (upscaled more than 1/ratio).
        blur_ratio: skip crops whose sharpness (variance of the Laplacian on the skin) is below this
            fraction of the clip's median.
        duplicate_landmarks: landmark motion (mean, in crop units) below which a crop may be a duplicate of
            the last kept crop of its track...
        duplicate_pixels: ...when its 32 px thumbnail also differs by less than this mean (0..1).
    """

    min_face_ratio: float = 0.5
    blur_ratio: float = 0.35
    duplicate_landmarks: float = 0.004
    duplicate_pixels: float = 0.01


# ----------------------------------------------------------------------------------------- extract

def extract_faceset(clips: Sequence[str | FrameSource], out_dir: str, size: int = 256, every: int = 1,
                    face_type: str = "whole_face", progress: Callable[[int, int, str], None] | None = None,
                    options: ExtractOptions | None = None) -> dict:
    """Extract aligned face crops from clips into a faceset folder and write its coverage report.

    Args:
        clips: video files (decoded with PyAV), or ``FrameSource`` s (every one of their frames is used).
        out_dir: the faceset folder (created).
        size: crop side in pixels.
        every: keep every N-th frame.
        face_type: ``"whole_face"`` or ``"full"``.
        progress: ``progress(done_frames, total_frames_estimate, clip)`` after each analysed frame.
        options: quality filters.

    Returns:
        Summary dict: ``items`` (count), ``skipped`` (per reason), ``per_source`` counts, ``missing`` (what
        the coverage lacks) and ``report`` (path of report.html).
    """
    if size < 16:
        raise DoublureError(f"extract: --size {size} is too small")
    if every < 1:
        raise DoublureError(f"extract: --every {every} must be at least 1")
    opts = options or ExtractOptions()
    from doublure.engine.imageio import write_image

    os.makedirs(out_dir, exist_ok=True)
    pending = os.path.join(out_dir, ".pending")
    os.makedirs(pending, exist_ok=True)
    items: list[dict] = []
    skipped = {"no_face": 0, "too_small": 0, "blurry": 0, "duplicate": 0}
    for clip in clips:
        if not isinstance(clip, FrameSource) and not os.path.isfile(clip):
            raise MediaError(f"extract: no such clip {clip}")
    total = _count_frames(clips, every)
    done = 0
    for clip in clips:
        source = clip.name if isinstance(clip, FrameSource) else os.path.abspath(clip)
        frames = clip.frames() if isinstance(clip, FrameSource) else iter_video_frames(clip, every)
        # crops go to disk as they are made (a long clip's crops do not fit in memory); the filters need the
        # clip's median sharpness, so they run once the clip is done
        candidates: list[_Candidate] = []
        detections = []
        with MediapipeBackend("short+full", max_faces=4, video=True) as backend:
            for idx, rgb in frames:
                raw = backend.detect(rgb)
                detections.append(raw)
                if not raw:
                    skipped["no_face"] += 1
                for cand in _crops_of_frame(idx, rgb, raw, size, face_type, opts, skipped):
                    cand.pending = os.path.join(pending, f"{len(candidates):06d}.png")
                    write_image(cand.pending, cand.crop, file_type="png", datatype="16 bit")
                    cand.crop = None
                    candidates.append(cand)
                done += 1
                if progress is not None:
                    progress(done, total, source)
        track_of = {id(raw): tr.track_id for tr in associate(detections) for raw in tr.frames.values()}
        kept = set(id(c) for c in _filter(candidates, track_of, size, opts, skipped))
        for cand in candidates:
            if id(cand) not in kept:
                os.unlink(cand.pending)
                continue
            name = f"{len(items):06d}.png"
            os.replace(cand.pending, os.path.join(out_dir, name))
            lm = cand.face.landmarks_in_crop(size)
            items.append({"file": name, "source": source, "frame": int(cand.frame),
                          "landmarks": np.round(lm, 3).tolist(), "pose": [round(v, 3) for v in cand.face.pose],
                          "blur": round(cand.blur, 3), "track_id": int(track_of[cand.raw_id]),
                          "expression": {k: round(v, 4) for k, v in expression_measures(lm).items()},
                          "luma": round(cand.luma, 4),
                          "native_side": round(1.0 / affine_scale(cand.face.to_crop), 1)})
    os.rmdir(pending)
    names = {it["file"] for it in items}
    for stale in os.listdir(out_dir):   # crops of an earlier, larger run into the same folder
        if stale.endswith(".png") and stale[:6].isdigit() and len(stale) == 10 and stale not in names:
            os.unlink(os.path.join(out_dir, stale))
    index = {"schema": FACESET_SCHEMA, "size": int(size), "face_type": face_type, "every": int(every),
             "items": items}
    write_text_atomic(os.path.join(out_dir, "index.json"), json.dumps(index, indent=1) + "\n")
    summary = coverage_report(index, out_dir)
    summary["skipped"] = skipped
    return summary


@dataclass
class _Candidate:
    frame: int
    face: Face
    crop: np.ndarray | None      # (S, S, 3) float32 until written
    thumb: np.ndarray            # (32, 32, 3) for the duplicate test
    blur: float
    luma: float
    raw_id: int
    pending: str = ""


def _count_frames(clips: Sequence[str | FrameSource], every: int) -> int:
    from doublure.engine.video import VideoReader

    total = 0
    for clip in clips:
        if isinstance(clip, FrameSource):
            total += clip.count
            continue
        with VideoReader(clip) as reader:
            total += math.ceil(reader.frame_count / every)
    return total


def _crops_of_frame(idx: int, rgb: np.ndarray, raw, size: int, face_type: str, opts: ExtractOptions,
                    skipped: dict) -> list[_Candidate]:
    import cv2

    faces = []
    for r in raw:
        f = make_face(-1, r.landmarks, r.confidence, face_type)
        footprint = 1.0 / affine_scale(f.to_crop)   # plate px across the crop
        if footprint < opts.min_face_ratio * size:
            skipped["too_small"] += 1
        else:
            faces.append((f, r))
    if not faces:
        return []
    raw = [r for _, r in faces]
    faces = [f for f, _ in faces]
    plate = torch.from_numpy(rgb).permute(2, 0, 1).float().div_(255.0)
    crops = warp_to_crop(plate, np.stack([f.to_crop for f in faces]), size, padding_mode="border")
    out = []
    for f, r, crop in zip(faces, raw, crops):
        c = np.ascontiguousarray(crop.clamp(0, 1).permute(1, 2, 0).numpy())
        skin = render_crop_mask(f, "skin", size)[0].numpy()
        gray = (c @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) * 255.0
        lin = _srgb_to_linear(c.astype(np.float64)) @ np.array([0.2126, 0.7152, 0.0722])
        luma = float(lin[skin > 0.5].mean()) if (skin > 0.5).any() else 0.0
        thumb = cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA)
        out.append(_Candidate(idx, f, c, thumb, laplacian_variance(gray, skin), luma, id(r)))
    return out


def _filter(candidates: list[_Candidate], track_of: dict, size: int, opts: ExtractOptions,
            skipped: dict) -> list[_Candidate]:
    kept: list[_Candidate] = []
    if not candidates:
        return kept
    median_blur = float(np.median([c.blur for c in candidates]))
    last_by_track: dict[int, tuple[np.ndarray, np.ndarray]] = {}
    for cand in candidates:
        if cand.blur < opts.blur_ratio * median_blur:
            skipped["blurry"] += 1
            continue
        track = track_of[cand.raw_id]
        lm_unit = cand.face.landmarks_in_crop(size) / size
        prev = last_by_track.get(track)
        if prev is not None:
            moved = float(np.linalg.norm(lm_unit - prev[0], axis=1).mean())
            changed = float(np.abs(cand.thumb - prev[1]).mean())
            if moved < opts.duplicate_landmarks and changed < opts.duplicate_pixels:
                skipped["duplicate"] += 1
                continue
        last_by_track[track] = (lm_unit, cand.thumb)
        kept.append(cand)
    return kept


# ------------------------------------------------------------------------------------ coverage report

YAW_BINS = np.arange(-60, 61, 15)
PITCH_BINS = np.arange(-40, 41, 10)


def coverage_report(index: dict, out_dir: str) -> dict:
    """Write ``report.html`` with plots and return the terminal summary of a faceset's coverage.

    Returns:
        ``{"items": n, "per_source": {clip: n}, "missing": [str, ...], "report": path, "text": summary}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    items = index["items"]
    n = len(items)
    per_source: dict[str, int] = {}
    for it in items:
        per_source[os.path.basename(it["source"])] = per_source.get(os.path.basename(it["source"]), 0) + 1
    yaw = np.array([it["pose"][0] for it in items]) if n else np.zeros(0)
    pitch = np.array([it["pose"][1] for it in items]) if n else np.zeros(0)
    expr = {k: np.array([it["expression"][k] for it in items]) for k in ("mouth_open", "eyes_open", "brow_raise")}
    luma = np.array([it["luma"] for it in items]) if n else np.zeros(0)

    missing = []
    hist_yaw, _ = np.histogram(np.clip(yaw, -59.9, 59.9), bins=YAW_BINS)
    for lo, hi, c in zip(YAW_BINS[:-1], YAW_BINS[1:], hist_yaw):
        if c == 0:
            missing.append(f"no faces with yaw {lo:+d}..{hi:+d} deg")
    hist_pitch, _ = np.histogram(np.clip(pitch, -39.9, 39.9), bins=PITCH_BINS)
    for lo, hi, c in zip(PITCH_BINS[:-1], PITCH_BINS[1:], hist_pitch):
        if c == 0:
            missing.append(f"no faces with pitch {lo:+d}..{hi:+d} deg")
    if n == 0 or (expr["mouth_open"] > 0.3).sum() < max(1, n // 50):
        missing.append("few or no open mouths (mouth_open > 0.3)")
    if n == 0 or (expr["eyes_open"] < 0.12).sum() < max(1, n // 100):
        missing.append("few or no closed eyes (eyes_open < 0.12)")
    if n == 0 or np.ptp(expr["brow_raise"]) < 0.05:
        missing.append("little brow movement (brow_raise range < 0.05)")
    if n == 0 or np.ptp(np.log2(np.maximum(luma, 1e-4))) < 1.0:
        missing.append("little lighting variety (face luminance spans under one stop)")

    plots = {}
    fig, ax = plt.subplots(figsize=(5, 4))
    h2, _, _ = np.histogram2d(np.clip(yaw, -59.9, 59.9), np.clip(pitch, -39.9, 39.9), bins=[YAW_BINS, PITCH_BINS])
    im = ax.imshow(h2.T, origin="lower", extent=[YAW_BINS[0], YAW_BINS[-1], PITCH_BINS[0], PITCH_BINS[-1]],
                   aspect="auto", cmap="viridis")
    ax.set_xlabel("yaw (deg)")
    ax.set_ylabel("pitch (deg)")
    ax.set_title("head pose coverage")
    fig.colorbar(im, ax=ax, label="crops")
    plots["pose"] = _save_fig(fig, out_dir, "report_pose.png")
    fig, axes = plt.subplots(1, 3, figsize=(10, 3))
    for ax, (k, v) in zip(axes, expr.items()):
        ax.hist(v, bins=20, color="#4a7")
        ax.set_title(k)
    fig.tight_layout()
    plots["expression"] = _save_fig(fig, out_dir, "report_expression.png")
    fig, ax = plt.subplots(figsize=(5, 3))
    ax.hist(np.log2(np.maximum(luma, 1e-4)), bins=20, color="#c83")
    ax.set_xlabel("face luminance (stops, log2 linear)")
    ax.set_title("lighting")
    fig.tight_layout()
    plots["lighting"] = _save_fig(fig, out_dir, "report_lighting.png")
    fig, ax = plt.subplots(figsize=(5, max(2, 0.3 * len(per_source) + 1)))
    names = sorted(per_source)
    ax.barh(names, [per_source[k] for k in names], color="#57c")
    ax.set_xlabel("crops")
    ax.set_title("per source")
    fig.tight_layout()
    plots["sources"] = _save_fig(fig, out_dir, "report_sources.png")
    plt.close("all")

    lines = [f"faceset: {n} crops at {index['size']} px ({index['face_type']}) from {len(per_source)} source(s)"]
    if n:
        lines.append(f"  yaw {yaw.min():+.0f}..{yaw.max():+.0f} deg, pitch {pitch.min():+.0f}..{pitch.max():+.0f} deg")
        lines.append(f"  mouth open in {int((expr['mouth_open'] > 0.3).sum())}, eyes closed in "
                     f"{int((expr['eyes_open'] < 0.12).sum())}; face luminance "
                     f"{np.log2(max(luma.min(), 1e-4)):+.1f}..{np.log2(max(luma.max(), 1e-4)):+.1f} stops")
    for src in names:
        lines.append(f"  {src}: {per_source[src]}")
    lines += [f"  missing: {m}" for m in missing] or ["  nothing obviously missing"]
    text = "\n".join(lines)

    html = ["<!doctype html><meta charset='utf-8'><title>Faceset coverage</title>",
            "<h1>Faceset coverage</h1>", f"<pre>{_escape(text)}</pre>"]
    for title, fname in plots.items():
        html.append(f"<h2>{title}</h2><img src='{fname}'>")
    path = os.path.join(out_dir, "report.html")
    write_text_atomic(path, "\n".join(html) + "\n")
    return {"items": n, "per_source": per_source, "missing": missing, "report": path, "text": text}


def _save_fig(fig, out_dir: str, name: str) -> str:
    from doublure.engine.atomic import atomic_path

    with atomic_path(os.path.join(out_dir, name), suffix=".png") as tmp:
        # no timestamp in the PNG, so re-runs write identical files
        fig.savefig(tmp, dpi=80, metadata={"Software": None})
    return name


def _escape(s: str) -> str:
    return s.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")

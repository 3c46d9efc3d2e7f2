"""The swap at the plate's resolution: sharpness against the plate, identity and expression, with and without
the model's detail stage, on plates the model trained on and plates of people it never saw.

    python bench/swap_detail.py --model resources/demo/demo_model.dbm --every 8 \\
        --target-clip mead/M030_front_neutral_level1_001.mp4 --target-from 47 \\
        --plates mead/W009_front_angry_level3_001.mp4 people/d0.mp4 actors/s20.mp4 --sheet bench/out/detail.png

Each sampled frame of each plate (paths under ``../shared/media`` or absolute) is swapped by SwapModel's
single-frame output (stabilise, temporal and holds at 0: what the model and its detail stage draw, apart from
the shot's temporal work), once with ``detail`` auto and once off. Per plate:

- sharpness: variance of the Laplacian of the grey face inside the face hull (eroded by 5% of the crop, so the
  mask's feathered edge does not count), cropped at the plate's own pixel size of the face, result over plate
  on the same frame; and the result over the target's own faces (``--target-clip``, kept out of training)
  cropped at the same size: what "as sharp as the target's references" means on this plate;
- identity (dlib's descriptor, bench-only): the fraction of frames nearer the target's centroid (the target
  clip) than the plate actor's (the plate clip's own frames), and the distance to the target's centroid;
- expression: Pearson r of mouth, eye and brow measures between plate and result (mediapipe on both).

``--sheet`` writes a contact sheet: per plate, four frames as rows of plate | detail off | detail on, at the
plate's face size. Results: stdout and ``bench/out/swap_detail_<time>.json``.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metrics import Identity, centroid, detect_one, frames_of, pearson, sharpness
from quality_identity import model_swapper

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
OUT = ROOT / "bench" / "out"
EXPRESSIONS = ("mouth_open", "eyes_open", "brow_raise")


def media(path: str) -> str:
    p = Path(path)
    return str(p if p.is_absolute() or p.exists() else MEDIA / p)


def face_crop8(rgb8: np.ndarray, face, side: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(the face's aligned crop (S, S, 3) uint8, its hull eroded by 5% of S (S, S) bool), at ``side`` px or by
    default at the plate's own pixel size of the face."""
    import cv2

    from doublure.faces.align import warp_to_crop
    from doublure.faces.face import affine_scale
    from doublure.faces.masks import render_crop_mask

    side = side or int(round(1.0 / affine_scale(face.to_crop)))
    crop = warp_to_crop(torch.from_numpy(rgb8).permute(2, 0, 1).float(), face.to_crop, side)[0]
    hull = render_crop_mask(face, "face_hull", side)[0].numpy() > 0.5
    k = max(1, int(0.05 * side))
    hull = cv2.erode(hull.astype(np.uint8), np.ones((2 * k + 1, 2 * k + 1), np.uint8)) > 0
    return crop.clamp(0, 255).round().byte().permute(1, 2, 0).numpy(), hull


def target_sharpness_at(side: int, target_faces: list[tuple[np.ndarray, object]]) -> float:
    """Mean sharpness of the target's own faces cropped at ``side`` px (the hull eroded as for the plates)."""
    return float(np.mean([sharpness(*face_crop8(rgb8, face, side)) for rgb8, face in target_faces]))


def swapper(model_path: str, detail: str, references: str = "off"):
    """SwapModel's compute on one frame alone (see the module doc), as ``swap(rgb8, face) -> rgb8``."""
    swap = model_swapper(model_path, detail=detail, references=references)
    return lambda rgb8, face: swap(rgb8, face, "", 0)


def measure_plate(clip: str, every: int, swaps: dict, ident: Identity, c_target: np.ndarray,
                  target_faces: list, max_frames: int) -> tuple[dict, list]:
    from doublure.faces.detect import MediapipeBackend
    from doublure.faces.extract import expression_measures

    c_plate = centroid(ident, clip, every)
    rows: dict[str, dict[str, list]] = {k: {"sharp": [], "vs_target": [], "dist": [], "nearer": [],
                                            **{e: [] for e in EXPRESSIONS}} for k in swaps}
    plate_sharp, sheet, sides, ms = [], [], [], {k: [] for k in swaps}
    target_cache: dict[int, float] = {}
    with MediapipeBackend("short+full", max_faces=1) as det, MediapipeBackend("short+full", max_faces=1) as det2:
        n = 0
        for _, rgb in frames_of(clip, every):
            face = detect_one(det, rgb)
            if face is None:
                continue
            n += 1
            if n > max_frames:
                break
            plate_crop, hull = face_crop8(rgb, face)
            side = plate_crop.shape[0]
            sides.append(side)
            bucket = int(round(side / 8.0)) * 8
            if bucket not in target_cache:
                target_cache[bucket] = target_sharpness_at(bucket, target_faces)
            p_sharp = sharpness(plate_crop, hull)
            plate_sharp.append(p_sharp)
            pv = expression_measures(face.landmarks)
            row = [plate_crop]
            for name, fn in swaps.items():
                t0 = time.perf_counter()
                out = fn(rgb, face)
                ms[name].append(1000 * (time.perf_counter() - t0))
                crop, _ = face_crop8(out, face)
                r = rows[name]
                result_sharp = sharpness(crop, hull)
                r["sharp"].append(result_sharp / max(p_sharp, 1e-9))
                r["vs_target"].append(result_sharp / max(target_cache[bucket], 1e-9))
                d = ident.descriptor(out, face.box)
                r["dist"].append(float(np.linalg.norm(d - c_target)))
                r["nearer"].append(bool(np.linalg.norm(d - c_target) < np.linalg.norm(d - c_plate)))
                swapped = detect_one(det2, out)
                sv = expression_measures(swapped.landmarks) if swapped is not None else None
                for e in EXPRESSIONS:
                    r[e].append((pv[e], sv[e]) if sv is not None else None)
                row.append(crop)
            if len(sheet) < 4 and n % 3 == 1:
                sheet.append(row)
    result = {"frames": len(plate_sharp), "face_side_px": float(np.median(sides)) if sides else 0.0}
    for name, r in rows.items():
        pairs = {e: [p for p in r[e] if p is not None] for e in EXPRESSIONS}
        result[name] = {
            "sharpness_vs_plate": float(np.median(r["sharp"])),
            "sharpness_vs_target": float(np.median(r["vs_target"])),
            "nearer_fraction": float(np.mean(r["nearer"])), "target_distance": float(np.mean(r["dist"])),
            **{f"{e.split('_')[0]}_r": pearson([a for a, _ in pairs[e]], [b for _, b in pairs[e]]) for e in EXPRESSIONS},
            "ms_per_frame": float(np.median(ms[name]))}
    return result, sheet


def write_sheet(path: str, sheets: dict[str, list]) -> None:
    import cv2

    tile = 192
    rows = []
    for clip, sheet in sheets.items():
        for row in sheet:
            tiles = [cv2.resize(t, (tile, tile), interpolation=cv2.INTER_AREA if t.shape[0] > tile else cv2.INTER_CUBIC)
                     for t in row]
            rows.append(np.concatenate(tiles, axis=1))
    if rows:
        cv2.imwrite(path, cv2.cvtColor(np.concatenate(rows, axis=0), cv2.COLOR_RGB2BGR))


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True)
    p.add_argument("--plates", nargs="+", required=True)
    p.add_argument("--target-clip", required=True, help="a clip of the target kept out of training")
    p.add_argument("--target-from", type=int, default=0,
                   help="its first frame kept out of the model (47 for M030's neutral clip: bench/metrics.py)")
    p.add_argument("--every", type=int, default=8)
    p.add_argument("--max-frames", type=int, default=40, help="frames measured per plate at most")
    p.add_argument("--sheet", help="write a contact sheet PNG here")
    args = p.parse_args(argv)
    sys.path.insert(0, str(ROOT / "bench"))
    from doublure.faces.detect import MediapipeBackend

    ident = Identity()
    target_clip = media(args.target_clip)
    c_target = centroid(ident, target_clip, args.every, args.target_from)
    target_faces = []
    with MediapipeBackend("short+full", max_faces=1) as det:
        for _, rgb in frames_of(target_clip, max(args.every, 4), args.target_from):
            face = detect_one(det, rgb)
            if face is not None:
                target_faces.append((rgb, face))
    swaps = {"detail off": swapper(args.model, "off"), "detail auto": swapper(args.model, "auto")}
    from doublure.models.dbm import read_meta
    if read_meta(args.model).get("references"):
        swaps["references"] = swapper(args.model, "auto", "auto")
    results, sheets = {}, {}
    for plate in args.plates:
        clip = media(plate)
        results[plate], sheets[plate] = measure_plate(clip, args.every, swaps, ident, c_target, target_faces,
                                                      args.max_frames)
        r = results[plate]
        for name in swaps:
            m = r[name]
            print(f"{plate} [{r['frames']} frames, face {r['face_side_px']:.0f} px] {name}: sharpness "
                  f"{m['sharpness_vs_plate']:.2f} of the plate, {m['sharpness_vs_target']:.2f} of the target; "
                  f"nearer {100 * m['nearer_fraction']:.0f}%, distance {m['target_distance']:.3f}; r mouth/eyes/brow "
                  f"{m['mouth_r']:.2f}/{m['eyes_r']:.2f}/{m['brow_r']:.2f}; {m['ms_per_frame']:.0f} ms", flush=True)
    OUT.mkdir(parents=True, exist_ok=True)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    (OUT / f"swap_detail_{stamp}.json").write_text(json.dumps({"model": args.model, "results": results}, indent=1))
    if args.sheet:
        write_sheet(args.sheet, sheets)
        print(f"contact sheet: {args.sheet} (rows: plate | {' | '.join(swaps)})")
    return 0


if __name__ == "__main__":
    sys.exit(main())

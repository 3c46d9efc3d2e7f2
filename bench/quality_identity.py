"""Quality of an identity model, measured on MEAD: M030 (target actor B) swapped onto W009 (plate actor A).

    python bench/quality_identity.py --train-minutes 12 --res 64 --arch liae --width 0.25   # train, then measure
    python bench/quality_identity.py --model models/m030.dbm                                 # measure a model

Training data (``--train-minutes``): B = the seven expressive ``mead/M030_*`` clips (the neutral clip stays
unseen), A = the ``mead/W009_*`` clips (the plate actor's own faces, as in production). The swap runs the
product path: Read -> FaceDetect -> SwapModel on W009 clips, twice: each sampled frame swapped on its own
("model": the model's single-frame output) and the clips rendered through a shot graph with SwapModel's
defaults ("model, shot graph": each face stabilised and blended with its neighbours' decodes, what a render
gives), measured on the same frames. Metrics (goals from issue 4):

- identity: dlib's 128-d face descriptor (``dlib-bin`` + ``face-recognition-models``, bench-only) of each
  swapped frame; mean distance to M030's centroid (his unseen neutral clip) and the fraction of frames
  nearer to M030's centroid than to W009's (her neutral clip). Goal <= 0.40 and >= 95%.
- expression: Pearson r over frames between the plate and the swap (landmarks by FaceDetect's mediapipe
  backend on both) of mouth opening, eye opening and brow raise. Goal r >= 0.85 each. Also printed: r over
  the frames whose plate value lies inside the range of M030's training faceset (the swap cannot be taught
  a blink or a mouth wider than the target actor's faces show), and the same frames decoded A->A ("model,
  A->A": W009 as the model draws her), the expression the model's code carries apart from the identity.
- sharpness: variance of the Laplacian on the face's skin in the aligned crop at the model's resolution,
  swap over real M030 crops at the same size. Goal >= 0.6.
- reconstruction SSIM (B->B) on M030's unseen neutral clip inside the face hull. Goal >= 0.80.

A blurred average of M030's face, composited the same way, is measured too: it passes an identity-only test,
which is why all four metrics count. Results go to stdout and ``bench/out/quality_<time>.json``.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np
import torch

from metrics import Identity, centroid, detect_one, frames_of, knob_value, pearson

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
OUT = ROOT / "bench" / "out"
EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "sad", "surprised")
EVAL_CLIPS = ("angry", "happy", "surprised", "sad")
EXPRESSIONS = ("mouth_open", "eyes_open", "brow_raise")
GOALS = {"identity_distance": ("<=", 0.40), "nearer_fraction": (">=", 0.95), "mouth_r": (">=", 0.85),
         "eyes_r": (">=", 0.85), "brow_r": (">=", 0.85), "sharpness": (">=", 0.6), "ssim": (">=", 0.80)}


def clip(actor: str, emotion: str) -> str:
    level = 1 if emotion == "neutral" else 3
    return str(MEDIA / "mead" / f"{actor}_front_{emotion}_level{level}_001.mp4")


def faceset(name: str, clips: list[str], size: int, every: int) -> str:
    from doublure.faces.extract import extract_faceset

    folder = OUT / f"quality_{name}_{size}"
    if not (folder / "index.json").exists():
        print(f"extracting {name} ({len(clips)} clips) ...", flush=True)
        extract_faceset(clips, str(folder), size=size, every=every)
    return str(folder)


# ---------------------------------------------------------------------------------------- measurements

def skin_sharpness(crop_srgb: np.ndarray, face) -> float:
    """Laplacian variance on the skin of an aligned (R, R, 3) sRGB crop in [0, 1]."""
    from doublure.faces.extract import laplacian_variance
    from doublure.faces.masks import render_crop_mask

    res = crop_srgb.shape[0]
    skin = render_crop_mask(face, "skin", res)[0].numpy()
    gray = (crop_srgb @ np.array([0.299, 0.587, 0.114], dtype=np.float32)) * 255.0
    return laplacian_variance(gray, skin)


def evaluate_swaps(swap_fn, ident: Identity, c_m030: np.ndarray, c_w009: np.ndarray, res: int, every: int) -> dict:
    """Identity, expression and sharpness of ``swap_fn(plate_rgb8, face, clip_path, frame_index) -> swapped
    rgb8`` on W009 clips."""
    from doublure.faces.align import warp_to_crop
    from doublure.faces.detect import MediapipeBackend
    from doublure.faces.extract import expression_measures

    dist_m, nearer, sharp = [], [], []
    plate_expr, swap_expr = {k: [] for k in EXPRESSIONS}, {k: [] for k in EXPRESSIONS}
    expression_frames = []
    with MediapipeBackend("short+full", max_faces=1) as plate_det, MediapipeBackend("short+full", max_faces=1) as swap_det:
        for emotion in EVAL_CLIPS:
            for index, rgb in frames_of(clip("W009", emotion), every):
                face = detect_one(plate_det, rgb)
                if face is None:
                    continue
                out = swap_fn(rgb, face, clip("W009", emotion), index)
                d = ident.descriptor(out, face.box)
                dm, dw = np.linalg.norm(d - c_m030), np.linalg.norm(d - c_w009)
                dist_m.append(dm)
                nearer.append(dm < dw)
                crop = warp_to_crop(torch.from_numpy(out).permute(2, 0, 1).float() / 255.0, face.to_crop, res)[0]
                sharp.append(skin_sharpness(crop.permute(1, 2, 0).numpy(), face))
                swapped_face = detect_one(swap_det, out)
                if swapped_face is not None:
                    plate_values = expression_measures(face.landmarks)
                    swap_values = expression_measures(swapped_face.landmarks)
                    for k in EXPRESSIONS:
                        plate_expr[k].append(plate_values[k])
                        swap_expr[k].append(swap_values[k])
                    expression_frames.append({"clip": emotion, "frame": index, "plate": plate_values,
                                              "swap": swap_values})
    return {"frames": len(dist_m), "identity_distance": float(np.mean(dist_m)),
            "nearer_fraction": float(np.mean(nearer)),
            "mouth_r": pearson(plate_expr["mouth_open"], swap_expr["mouth_open"]),
            "eyes_r": pearson(plate_expr["eyes_open"], swap_expr["eyes_open"]),
            "brow_r": pearson(plate_expr["brow_raise"], swap_expr["brow_raise"]),
            "expression_frames": len(plate_expr["mouth_open"]), "_sharp": float(np.mean(sharp)),
            "per_frame_expression": expression_frames}


def expression_ranges(faceset_dir: str) -> dict[str, tuple[float, float]]:
    """expression -> (lowest, highest) value over a faceset's faces: the expressions its model has seen."""
    items = json.loads((Path(faceset_dir) / "index.json").read_text())["items"]
    return {k: (min(it["expression"][k] for it in items), max(it["expression"][k] for it in items))
            for k in EXPRESSIONS}


def r_inside(per_frame: list[dict], ranges: dict[str, tuple[float, float]]) -> dict:
    """expression -> {"r", "frames"} over the frames whose plate value lies inside the target faceset's
    range: the swap's fidelity where the target's faces show the expression, apart from the frames it never
    saw (W009's widest mouths, her blinks)."""
    out = {}
    for k in EXPRESSIONS:
        lo, hi = ranges[k]
        pairs = [(f["plate"][k], f["swap"][k]) for f in per_frame if lo <= f["plate"][k] <= hi]
        out[k] = {"r": pearson([p for p, _ in pairs], [s for _, s in pairs]), "frames": len(pairs)}
    return out


def real_sharpness(res: int, every: int) -> float:
    """Laplacian variance of real M030 aligned crops (his neutral clip) at the model resolution."""
    from doublure.faces.align import warp_to_crop
    from doublure.faces.detect import MediapipeBackend

    values = []
    with MediapipeBackend("short+full", max_faces=1) as det:
        for _, rgb in frames_of(clip("M030", "neutral"), every):
            face = detect_one(det, rgb)
            if face is not None:
                crop = warp_to_crop(torch.from_numpy(rgb).permute(2, 0, 1).float() / 255.0, face.to_crop, res)[0]
                values.append(skin_sharpness(crop.permute(1, 2, 0).numpy(), face))
    return float(np.mean(values))


def masked_ssim(recon: torch.Tensor, target: torch.Tensor, hull: torch.Tensor, res: int) -> float:
    from doublure.models.losses import ssim, ssim_window

    window = ssim_window(res)
    m = ssim(recon, target, window).mean(1, keepdim=True)
    r = window // 2
    w = hull[:, :, r:res - r, r:res - r]
    return float((m * w).sum() / w.sum())


# ---------------------------------------------------------------------------------------- swap functions

def model_swapper(model_path: str, direction: str = "A->B", **knobs):
    """The SwapModel node's compute on an Image carrying the detected face (what FaceDetect hands it in a
    shot graph; the frames here come from the bench's own decoding so plate and swap share one detection).
    Each frame alone: no stabilise, temporal blend or held frames, whose memos key a frame by its input's
    hash, which this bench's stand-in input does not change from frame to frame. ``direction`` "A->A": the
    plate actor decoded as herself, the expression her code carries whatever the identity. ``knobs``: other
    SwapModel knobs (``detail="off"``)."""
    import doublure.nodes  # noqa: F401
    from doublure import engine
    from doublure.engine import colour
    from doublure.faces.detect import working_to_srgb8

    graph = engine.Graph()
    node = graph.create("SwapModel", model=model_path, stabilise=0, temporal=0, holds=False, direction=direction,
                        **knobs)

    class _Inputs:
        def __init__(self, image):
            self.image = image

        def get(self, index, frame=None):
            return self.image

    def swap(rgb8: np.ndarray, face, clip_path: str, index: int) -> np.ndarray:
        lin = colour.convert(torch.from_numpy(rgb8).permute(2, 0, 1).float().div(255.0).contiguous(), "srgb", "ACEScg")
        image = engine.Image(lin, faces=[face])
        out = node.compute(engine.EvalContext(frame=1), _Inputs(image))
        return working_to_srgb8(out.tensor, "ACEScg")
    return swap


def shot_swapper(model_path: str, knobs: dict | None = None):
    """The clip rendered as a shot: Read -> FaceDetect -> SwapModel (the node's defaults, so each frame's face
    is stabilised and blended with its neighbours' decodes, and any ``knobs`` set), evaluated at the asked
    frame. One graph per clip, so SwapModel's neighbours are the clip's own frames."""
    import doublure.nodes  # noqa: F401
    from doublure import engine
    from doublure.faces.detect import working_to_srgb8

    graphs: dict[str, tuple] = {}

    def swap(rgb8: np.ndarray, face, clip_path: str, index: int) -> np.ndarray:
        if clip_path not in graphs:
            g = engine.Graph()
            read = g.create("Read", file=clip_path)
            g.settings.update(first=read.value("first"), last=read.value("last"))
            detect = g.create("FaceDetect", inputs=[read])
            detect.action_track(g)
            graphs.clear()  # one clip at a time: its frames and decodes are what the cache should hold
            graphs[clip_path] = (g, read, g.create("SwapModel", inputs=[detect], model=model_path, **(knobs or {})))
        g, read, node = graphs[clip_path]
        out = g.evaluate(node, read.value("first") + index)
        return working_to_srgb8(out.tensor, "ACEScg")
    return swap


def blurred_average_swapper(faceset_dir: str, res: int):
    """The baseline: M030's mean aligned face, blurred, composited inside the face hull."""
    import cv2

    from doublure.engine import colour
    from doublure.faces.align import warp_from_crop
    from doublure.faces.masks import render_crop_mask
    from doublure.models.data import FaceData
    from doublure.faces.detect import working_to_srgb8
    from doublure.faces.composite import crop_masks

    data = FaceData([faceset_dir], res)
    mean = data.batch(range(len(data)))[0].mean(0)                                   # (3, R, R) sRGB
    blurred = torch.from_numpy(cv2.GaussianBlur(mean.permute(1, 2, 0).numpy(), (0, 0), res / 32)).permute(2, 0, 1)
    mean_lin = colour.convert(blurred.contiguous(), "srgb", "ACEScg")

    def swap(rgb8: np.ndarray, face, clip_path: str, index: int) -> np.ndarray:
        plate = colour.convert(torch.from_numpy(rgb8).permute(2, 0, 1).float().div(255.0).contiguous(), "srgb", "ACEScg")
        hull = render_crop_mask(face, "face_hull", res)[None]
        mask = crop_masks(hull, hull, "landmark hull", 0.0, 0.015 * res)
        placed, _ = warp_from_crop(torch.cat([mean_lin[None] * mask, mask], 1), face.from_crop[None], plate.shape[-2:])
        out = plate * (1 - placed[0, 3:]) + placed[0, :3]
        return working_to_srgb8(out, "ACEScg")
    return swap, blurred


def reconstruction_ssim(model_path: str | None, neutral_dir: str, res: int, baseline: torch.Tensor | None = None) -> float:
    """B->B SSIM inside the hull on M030's unseen neutral crops (or the baseline's fixed face)."""
    from doublure.models.data import FaceData
    from doublure.models.dbm import load_model

    data = FaceData([neutral_dir], res)
    crops, masks, _ = data.batch(range(len(data)))
    hull = masks[:, :1]
    if baseline is not None:
        recon = baseline[None].expand_as(crops)
    else:
        model = load_model(model_path).model
        with torch.no_grad():
            recon = model.reconstruct_b(crops.contiguous(memory_format=torch.channels_last))[0].float()
    return masked_ssim(recon, crops, hull, res)


# ---------------------------------------------------------------------------------------- training

def add_training_arguments(p: argparse.ArgumentParser) -> None:
    """The model and training flags :func:`bench_train_config` reads (a tiny LIAE at 64 px by default)."""
    p.add_argument("--res", type=int, default=64)
    p.add_argument("--arch", default="liae")
    p.add_argument("--width", type=float, default=0.25)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--lr", type=float, default=3e-4)
    p.add_argument("--threads", type=int, default=2)


def bench_train_config(out: str, args, name: str, **fields):
    """The benches' training run: the architecture, batch, learning rate and threads of ``args``, a short
    warm-up, no previews or timed checkpoints (one at the end), a research-use rights record on the MEAD
    terms; ``fields`` adds the data (``source``/``target``/``pretrain``/``from_model``) and the budget."""
    from doublure.models.dbm import rights_record
    from doublure.models.train import TrainConfig

    return TrainConfig(out=out, res=args.res, arch=args.arch, width=args.width, batch=args.batch, lr=args.lr,
                       warmup=100, preview_every=0, checkpoint_minutes=1e9, threads=args.threads, name=name,
                       rights=rights_record("M030 (MEAD)", "MEAD dataset terms", "2020-08-23", "MEAD research use",
                                            "research", "2099-12-31"), **fields)


# ---------------------------------------------------------------------------------------- main

def save_result(kind: str, result: dict) -> Path:
    """Write a bench's results to ``bench/out/<kind>_<time>.json`` and say where."""
    path = OUT / f"{kind}_{time.strftime('%Y%m%d_%H%M%S')}.json"
    path.write_text(json.dumps(result, indent=1))
    print(f"written {path}")
    return path


def report(name: str, r: dict) -> None:
    marks = {k: ("ok" if (r[k] <= g if op == "<=" else r[k] >= g) else "--") for k, (op, g) in GOALS.items()}
    inside = "; ".join(f"{k} {v['r']:.2f} ({v['frames']})" for k, v in r["r_inside_coverage"].items())
    print(f"{name:>18}: identity {r['identity_distance']:.3f} [{marks['identity_distance']}], nearer M030 "
          f"{100 * r['nearer_fraction']:.0f}% [{marks['nearer_fraction']}], r mouth {r['mouth_r']:.2f} "
          f"[{marks['mouth_r']}] eyes {r['eyes_r']:.2f} [{marks['eyes_r']}] brow {r['brow_r']:.2f} [{marks['brow_r']}], "
          f"sharpness {r['sharpness']:.2f} [{marks['sharpness']}], SSIM {r['ssim']:.3f} [{marks['ssim']}] "
          f"({r['frames']} frames)\n{'':>20}r over the frames inside M030's faceset range: {inside}", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", help="an existing model (skips training)")
    p.add_argument("--train-minutes", type=float, default=10.0)
    add_training_arguments(p)
    p.add_argument("--extract-size", type=int, default=128)
    p.add_argument("--every", type=int, default=4, help="evaluate every N-th frame")
    p.add_argument("--shot-knob", action="append", default=[], metavar="KNOB=VALUE",
                   help="also measure the shot graph with this SwapModel knob set (repeatable; a JSON value or "
                        "a string), e.g. plate_mouth=true")
    args = p.parse_args(argv)
    shot_knobs = {key: knob_value(value) for key, _, value in (item.partition("=") for item in args.shot_knob)}
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    fs_b = faceset("M030_train", [clip("M030", e) for e in EMOTIONS], args.extract_size, 2)
    fs_a = faceset("W009_all", [clip("W009", e) for e in EMOTIONS + ("neutral",)], args.extract_size, 2)
    fs_neutral = faceset("M030_neutral", [clip("M030", "neutral")], args.extract_size, 2)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "machine": os.environ.get("BENCH_MACHINE", "")}
    model = args.model
    if model is None:
        from doublure.models.train import Trainer

        model = str(OUT / f"quality_{args.arch}_{args.res}.dbm")
        cfg = bench_train_config(model, args, "M030 quality run", source=[fs_a], target=[fs_b],
                                 minutes=args.train_minutes, log_every=50)
        t0 = time.monotonic()
        summary = Trainer(cfg, progress=lambda e: print(f"  it {e['iteration']} loss {e['losses']['loss']:.3f} "
                                                        f"{e['its_per_s']:.2f} it/s", flush=True)
                          if e["event"] == "step" and e["iteration"] % 500 == 0 else None).run()
        result["training"] = {"minutes": (time.monotonic() - t0) / 60, "iterations": summary["iteration"],
                              "res": args.res, "arch": args.arch, "width": args.width, "batch": args.batch,
                              "data_wait": summary["data_wait_fraction"]}
        print(f"trained {summary['iteration']} iterations in {result['training']['minutes']:.1f} min", flush=True)
    from doublure.models.dbm import read_meta

    res = read_meta(model)["resolution"]
    result["model"] = {"path": model, "res": res, "training": read_meta(model).get("training", {}).get("iterations")}
    ident = Identity()
    c_m030 = centroid(ident, clip("M030", "neutral"), 2)
    c_w009 = centroid(ident, clip("W009", "neutral"), 2)
    happy = centroid(ident, clip("M030", "happy"), 2)
    result["scale"] = {"M030_happy_to_M030_neutral": float(np.linalg.norm(happy - c_m030)),
                       "W009_neutral_to_M030_neutral": float(np.linalg.norm(c_w009 - c_m030))}
    print(f"scale: M030 happy centroid at {result['scale']['M030_happy_to_M030_neutral']:.2f} from his neutral "
          f"centroid, W009 at {result['scale']['W009_neutral_to_M030_neutral']:.2f}", flush=True)
    sharp_real = real_sharpness(res, 2)
    coverage = expression_ranges(fs_b)
    result["target_expression_ranges"] = coverage
    baseline_swap, baseline_face = blurred_average_swapper(fs_b, res)
    model_ssim = reconstruction_ssim(model, fs_neutral, res)
    lines = [("model", model_swapper(model), model_ssim), ("model, shot graph", shot_swapper(model), model_ssim),
             ("model, A->A", model_swapper(model, "A->A"), model_ssim)]
    if shot_knobs:
        label = ", ".join(f"{k}={v}" for k, v in shot_knobs.items())
        lines.append((f"model, shot graph, {label}", shot_swapper(model, shot_knobs), model_ssim))
    lines.append(("blurred average", baseline_swap, reconstruction_ssim(None, fs_neutral, res, baseline_face)))
    for name, fn, ssim_value in lines:
        r = evaluate_swaps(fn, ident, c_m030, c_w009, res, args.every)
        r["sharpness"] = r.pop("_sharp") / sharp_real
        r["r_inside_coverage"] = r_inside(r["per_frame_expression"], coverage)
        r["ssim"] = ssim_value
        result[name] = r
        report(name, r)
    save_result("quality", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Occlusion matte benchmarks (issue 22), each through the real nodes (Read -> FaceDetect -> Occlusion).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/occlusion_bench.py [--quick]

1. Synthetic occluder with known ground truth: a piece of a real photograph (the astronaut still's suit and
   flag, cut as a capsule, a microphone's shape) moved across the lower face of a real plate (people/d10). The
   artist's painting is simulated on 3 frames: one stroke down the object's middle (occluder) and dots on the
   face's landmarks away from it (face). Train matte, then on every frame the IoU of the matte (> 0.5) with
   the object's true mask, inside the face's crop.
2. Training time (wall and CPU seconds of this process) for that shot, and the time to apply the matte per
   face at 1080p (plates_1080; CPU and wall ms, one torch thread), against reading the same frames (Read
   alone) in the same run.
3. Real glasses (people/ d9, d12, d13): strokes painted along the glasses' frame and on the face beside it
   on 3 frames (``GLASSES_STROKES``, crop unit coordinates, drawn by looking at the frames); then SwapModel
   with the demo model, with and without the matte: the mean absolute difference to the plate (linear light)
   over the glasses' frame pixels on frames that were not painted, relative to the plate's mean there, and
   the swap's alpha inside the lenses (the face there must still be swapped).
"""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"

import doublure.nodes  # noqa: E402,F401
from doublure import engine  # noqa: E402
from doublure.engine import EvalContext, Image, Node, Port, register_node  # noqa: E402
from doublure.engine import knobs as K  # noqa: E402
from doublure.engine.imageio import read_image  # noqa: E402
from doublure.faces.occlusion import MATTE_RES, crop_to_plate, crop_window, occlusion_in_window  # noqa: E402
from doublure.faces.paint import plate_points_to_stroke  # noqa: E402


# ------------------------------------------------------------------------------------ synthetic occluder

def capsule_mask(hw: tuple[int, int], centre: tuple[float, float], width: float, height: float) -> np.ndarray:
    """Anti-aliased vertical capsule (a rectangle with round ends), (H, W) float32 in [0, 1]."""
    h, w = hw
    ys, xs = np.mgrid[0:h, 0:w].astype(np.float32)
    r = width / 2
    half = max(height / 2 - r, 0.0)
    dy = np.clip(ys - centre[1], -half, half)
    d = np.hypot(xs - centre[0], ys - centre[1] - dy)
    return np.clip(r + 0.5 - d, 0.0, 1.0)


@register_node
class BenchOccluder(Node):
    """The plate with a piece of a real photograph in front of the face, moving left to right over the shot.

    Geometry knobs are in plate pixels at frame ``first`` and ``last`` (linear in between)."""

    type_name = "BenchOccluder"
    inputs = (Port("input", "Image"),)
    knob_specs = (K.File("texture", default=""), K.Float("x0", 0.0), K.Float("x1", 0.0), K.Float("y", 0.0),
                  K.Float("width", 40.0), K.Float("height", 120.0), K.Int("first", 1), K.Int("last", 100))

    def hash(self, ctx: EvalContext, h) -> None:
        super().hash(ctx, h)
        h.update(ctx.frame)

    def geometry(self, frame: int) -> tuple[tuple[float, float], float, float]:
        t = (frame - self.value("first")) / max(1, self.value("last") - self.value("first"))
        x = self.value("x0") + t * (self.value("x1") - self.value("x0"))
        return (x, self.value("y")), self.value("width"), self.value("height")

    def truth(self, frame: int, hw: tuple[int, int]) -> np.ndarray:
        centre, width, height = self.geometry(frame)
        return capsule_mask(hw, centre, width, height)

    def compute(self, ctx: EvalContext, inputs) -> Image:
        src = inputs.get(0)
        hw = (src.height, src.width)
        # the PNG's sRGB code values to (about) linear light
        texture = torch.from_numpy(read_image(self.path("texture")).pixels[..., :3]).permute(2, 0, 1).float() ** 2.2
        centre, width, height = self.geometry(ctx.frame)
        # the photograph's suit and flag, scaled to the object and placed on it
        piece = torch.nn.functional.interpolate(texture[None, :, 280:500, 0:160], size=(int(height) + 4, int(width) + 4),
                                                mode="area")[0]
        layer = torch.zeros(3, *hw)
        y0, x0 = int(centre[1] - height / 2) - 2, int(centre[0] - width / 2) - 2
        ys, xs = slice(max(y0, 0), min(y0 + piece.shape[1], hw[0])), slice(max(x0, 0), min(x0 + piece.shape[2], hw[1]))
        layer[:, ys, xs] = piece[:, ys.start - y0:ys.stop - y0, xs.start - x0:xs.stop - x0]
        m = torch.from_numpy(self.truth(ctx.frame, hw))[None]
        return src.replace(tensor=(src.tensor[:3].float() * (1 - m) + layer * m).to(src.tensor.dtype))


def synthetic_shot(clip: Path, first: int, last: int, texture: Path):
    """Read -> BenchOccluder -> FaceDetect -> Occlusion, the object sized and moved from the first frame's face."""
    g = engine.Graph()
    read = g.create("Read", file=str(clip), first=first, last=last)
    occ = g.create("BenchOccluder", texture=str(texture), first=first, last=last)
    occ.set_input(0, read)
    detect = g.create("FaceDetect")
    detect.set_input(0, occ)
    matte = g.create("Occlusion", hands=False, far_side=False)
    matte.set_input(0, detect)
    probe = engine.Graph()   # the face without the object, to size the object
    r = probe.create("Read", file=str(clip), first=first, last=last)
    d = probe.create("FaceDetect")
    d.set_input(0, r)
    face = probe.evaluate(d, first).faces[0]
    x0, y0, x1, y1 = face.box
    fw, fh = x1 - x0, y1 - y0
    for name, value in {"x0": x0 + 0.2 * fw, "x1": x1 - 0.2 * fw, "y": y0 + 0.85 * fh, "width": 0.22 * fw,
                        "height": 0.45 * fh}.items():
        occ[name] = float(value)
    return g, occ, detect, matte


def paint_synthetic(occ, detect, frames: list[int]) -> list[dict]:
    """The strokes an artist would paint on ``frames``: down the object's middle, dots on the face beside it."""
    strokes = []
    for frame in frames:
        img = detect.graph.evaluate(detect, frame)
        face = img.faces[0]
        (cx, cy), width, height = occ.geometry(frame)
        half = height / 2 - width / 2
        strokes.append(plate_points_to_stroke(face, [[cx, cy - half], [cx, cy + half]], 0.45 * width,
                                              hardness=0.9, mode="add", frames={"only": frame}))
        truth = occ.truth(frame, (img.height, img.width))
        near = cv2.dilate((truth > 0).astype(np.uint8), np.ones((9, 9), np.uint8)) > 0
        r = 0.03 * face.width
        for x, y in face.landmarks[::9, :2]:
            xi, yi = int(round(x)), int(round(y))
            if 0 <= yi < img.height and 0 <= xi < img.width and not near[yi, xi]:
                dot = plate_points_to_stroke(face, [[x, y]], r, hardness=0.9, mode="erase", frames={"only": frame})
                if all(0.02 < c < 0.98 for c in dot["points"][0]):   # the artist paints inside the face's crop
                    strokes.append(dot)
    return strokes


def iou_inside_crop(matte_img: Image, face, truth: np.ndarray) -> float:
    """IoU of (matte > 0.5) and (truth > 0.5) within the face's aligned crop."""
    window = crop_window(face, MATTE_RES, (matte_img.height, matte_img.width))
    y0, y1, x0, x1 = window
    inside = crop_to_plate(torch.ones(MATTE_RES, MATTE_RES), face, window) > 0.5
    pred = occlusion_in_window(face, window)[0].numpy() > 0.5
    true = truth[y0:y1, x0:x1] > 0.5
    union = ((pred | true) & inside).sum()
    return float(((pred & true) & inside).sum() / max(union, 1))


def bench_synthetic(quick: bool) -> dict:
    first, last = 1, (40 if quick else 100)
    g, occ, detect, matte = synthetic_shot(MEDIA / "people" / "d10.mp4", first, last, MEDIA / "stills" / "astronaut.png")
    span = last - first
    painted = [first + span // 6, first + span // 2, first + 5 * span // 6]
    matte["strokes"] = paint_synthetic(occ, detect, painted)
    cpu0, wall0 = time.process_time(), time.perf_counter()
    matte.action_train(g)
    train_wall, train_cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    ious = []
    for frame in range(first, last + 1):
        img = g.evaluate(matte, frame)
        if img.faces:
            ious.append(iou_inside_crop(img, img.faces[0], occ.truth(frame, (img.height, img.width))))
    return {"frames": last - first + 1, "painted": painted, "strokes": len(matte["strokes"]),
            "train_wall_s": train_wall, "train_cpu_s": train_cpu, "summary": matte["matte"],
            "iou_mean": float(np.mean(ious)), "iou_min": float(np.min(ious)),
            "iou_p10": float(np.percentile(ious, 10)), "faces": len(ious)}


# ------------------------------------------------------------------------------------------ apply speed

def bench_apply_1080(matte_file_from) -> dict:
    """ms per face to apply a trained matte on the 1080p plate (hands and far side off), vs Read alone."""
    g = engine.Graph()
    read = g.create("Read", file=str(MEDIA / "plates_1080" / "demo1_video.mp4"), first=1, last=20)
    detect = g.create("FaceDetect")
    detect.set_input(0, read)
    node = g.create("Occlusion", hands=False, far_side=False)
    node.set_input(0, detect)
    node["matte"] = matte_file_from
    src = g.evaluate(detect, 5)
    net = node._learned_net(5)
    assert net is not None and src.faces
    from doublure.faces.occlusion import matte_ramp, predict_crops, sample_crop, with_occlusion

    def apply_once():
        t, c = time.perf_counter(), time.process_time()
        crops = torch.stack([sample_crop(src.tensor, f) for f in src.faces])
        learned = matte_ramp(predict_crops(net, crops))[:, 0]
        for i, face in enumerate(src.faces):
            window = crop_window(face, MATTE_RES, (src.height, src.width))
            with_occlusion(face, window, crop_to_plate(learned[i], face, window))
        return (time.perf_counter() - t) / len(src.faces), (time.process_time() - c) / len(src.faces)

    # one torch thread: a 128 px crop is too small to share between threads (two cost 13x the CPU time here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    apply_once()
    applies = [apply_once() for _ in range(15)]
    torch.set_num_threads(threads)
    reads = []
    for frame in range(6, 12):
        t, c = time.perf_counter(), time.process_time()
        g.evaluate(read, frame)
        reads.append((time.perf_counter() - t, time.process_time() - c))
    med = lambda values: 1000 * float(np.median(values))  # noqa: E731
    return {"apply_cpu_ms_per_face": med([a[1] for a in applies]), "apply_wall_ms_min": 1000 * min(a[0] for a in applies),
            "apply_wall_ms_median": med([a[0] for a in applies]), "read_cpu_ms": med([r[1] for r in reads]),
            "read_wall_ms": med([r[0] for r in reads]), "size": f"{src.width}x{src.height}", "faces": len(src.faces)}


# ---------------------------------------------------------------------------------------------- glasses

# Painted by looking at 256 px crops of the painted frames (crop unit coordinates: u right, v down). Each
# clip: the frames painted, the glasses' frame as polylines (occluder), dots on the face beside it (face).
def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 24) -> list[list[float]]:
    a = np.linspace(0, 2 * np.pi, n + 1)
    return np.stack([cu + ru * np.cos(a), cv + rv * np.sin(a)], 1).tolist()


GLASSES_STROKES = {
    "d9": {"frames": (1, 30, 60), "radius": 0.012,
           "rims": [_ellipse(0.29, 0.288, 0.162, 0.122), _ellipse(0.703, 0.28, 0.166, 0.122),
                    [[0.45, 0.232], [0.537, 0.225]], [[0.08, 0.222], [0.127, 0.225]], [[0.87, 0.215], [0.92, 0.218]]],
           "face": [[0.29, 0.47], [0.70, 0.47], [0.50, 0.36], [0.50, 0.10], [0.30, 0.07], [0.72, 0.07], [0.20, 0.55],
                    [0.80, 0.55], [0.50, 0.62], [0.06, 0.40], [0.94, 0.40], [0.50, 0.85], [0.29, 0.35], [0.70, 0.35]]},
}


def bench_glasses(clip: str, spec: dict, model: Path) -> dict:
    g = engine.Graph()
    read = g.create("Read", file=str(MEDIA / "people" / f"{clip}.mp4"), first=1, last=90)
    detect = g.create("FaceDetect")
    detect.set_input(0, read)
    node = g.create("Occlusion", hands=False, far_side=False)
    node.set_input(0, detect)
    swap = g.create("SwapModel", model=str(model), stabilise=0, temporal=0)
    swap.set_input(0, node)
    strokes = []
    for frame in spec["frames"]:
        for rim in spec["rims"]:
            strokes.append({"track_id": 0, "points": rim, "radius": spec["radius"], "hardness": 0.8, "opacity": 1.0,
                            "mode": "add", "frames": {"only": frame}})
        for dot in spec["face"]:
            strokes.append({"track_id": 0, "points": [dot], "radius": 0.03, "hardness": 0.8, "opacity": 1.0,
                            "mode": "erase", "frames": {"only": frame}})
    node["strokes"] = strokes
    node.action_train(g)
    rims = [{"track_id": 0, "points": rim, "radius": spec["radius"] * 0.5, "hardness": 1.0, "opacity": 1.0,
             "mode": "add", "frames": None} for rim in spec["rims"]]
    from doublure.faces.paint import render_strokes

    rel_with, rel_without, lens_alpha = [], [], []
    for frame in (15, 45, 75, 90):
        plate = g.evaluate(detect, frame)
        on = g.evaluate(swap, frame)
        node["learned"] = False
        off = g.evaluate(swap, frame)
        node["learned"] = True
        rim = render_strokes(rims, plate.faces, frame, (plate.height, plate.width))[0] > 0.5
        p = plate.tensor[:3].float()
        ref = p[:, rim].abs().mean()
        rel_with.append(float((on.tensor[:3].float() - p)[:, rim].abs().mean() / ref))
        rel_without.append(float((off.tensor[:3].float() - p)[:, rim].abs().mean() / ref))
        face = on.faces[0]
        y0, y1, x0, x1 = face.coverage.window
        for cu, cv in ((0.25, 0.36), (0.66, 0.36)):   # below the eye, inside each lens
            x, y = (face.from_crop @ np.array([cu, cv, 1.0]))
            lens_alpha.append(float(face.coverage.alpha[0, int(round(y)) - y0, int(round(x)) - x0]))
    return {"clip": clip, "rim_rel_mad_with": float(np.mean(rel_with)), "rim_rel_mad_without": float(np.mean(rel_without)),
            "lens_alpha_min": float(np.min(lens_alpha)), "train": node["matte"]}


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("synthetic", "apply", "glasses"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    synthetic = None
    if args.only in (None, "synthetic", "apply"):
        synthetic = bench_synthetic(args.quick)
        print("synthetic occluder:", synthetic, flush=True)
    if args.only in (None, "apply"):
        print("apply 1080p:", bench_apply_1080(synthetic["summary"]), flush=True)
    if args.only in (None, "glasses"):
        for clip, spec in GLASSES_STROKES.items():
            print("glasses:", bench_glasses(clip, spec, ROOT / "resources" / "demo" / "demo_model.dbm"), flush=True)


if __name__ == "__main__":
    sys.exit(main())

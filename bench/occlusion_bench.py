"""Occlusion matte benchmarks (issue 22), each through the real nodes (Read -> FaceDetect -> Occlusion).

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/occlusion_bench.py [--quick]

1. Synthetic occluder with known ground truth: a piece of a real photograph (the astronaut still's suit and
   flag, cut as a capsule, a microphone's shape) moved across the lower face of a real plate (people/d10). The
   artist's painting is simulated on 3 frames: one stroke down the object's middle (occluder), a thin stroke
   tracing the face around it and dots on the face's landmarks away from it (face). Train matte, then on
   every frame the IoU of the matte (> 0.5) with the object's true mask, inside the face's crop; for each
   training seed of ``--seeds``.
2. Training time (wall and CPU seconds of this process) for that shot, and the time to apply the mattes per
   face at 1080p (plates_1080; CPU and wall ms, one torch thread; the synthetic shot's coarse head, d9's eye
   band head, both, both with the coarse edge across the whole face, both in fp32), against reading the same
   frames (Read alone) in the same run, and against the code of ``--baseline REV`` in the same process; and
   both heads trained in one run (the synthetic shot's and d9's painted faces together, ``--only train``), as
   they train and with the coarse head's stall restart forced, also by ``--baseline REV``'s code.
3. Real glasses (people/ d9, d13): the wire traced with a fine brush on 3 frames (its pixels on those
   frames, ``glasses_frame_truth``) and the face just beside it, rings of face inside the lenses and dots on
   the face around them (``GLASSES_STROKES``: crop unit coordinates, drawn by looking at the frames); then
   SwapModel with the demo model, with and without the matte: the mean absolute difference to the plate
   (linear light) over the glasses' frame pixels (``glasses_frame_truth``) on frames that were not painted, relative to the plate's mean there, and the swap's alpha inside the lenses and around the
   glasses (the face there must still be swapped).
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


# The face stroke traced around the object: its brush radius and its gap to the object's edge, plate pixels.
OUTLINE_RADIUS_PX, OUTLINE_GAP_PX = 2.0, 2.0


def capsule_outline(centre: tuple[float, float], width: float, height: float, reach: float, n: int = 48) -> list:
    """Points around a vertical capsule at ``reach`` from its axis (closed), plate pixels."""
    half = max(height / 2 - width / 2, 0.0)
    a = np.linspace(0, 2 * np.pi, n + 1)
    x = centre[0] + reach * np.cos(a)
    y = centre[1] + reach * np.sin(a) + np.where(np.sin(a) >= 0, half, -half)
    return np.stack([x, y], 1).tolist()


def paint_synthetic(occ, detect, frames: list[int]) -> list[dict]:
    """The strokes an artist would paint on ``frames``: down the object's middle, the face traced around it
    (a thin stroke just outside its edge), dots on the face's landmarks away from it."""
    strokes = []
    for frame in frames:
        img = detect.graph.evaluate(detect, frame)
        face = img.faces[0]
        (cx, cy), width, height = occ.geometry(frame)
        half = height / 2 - width / 2
        strokes.append(plate_points_to_stroke(face, [[cx, cy - half], [cx, cy + half]], 0.45 * width,
                                              hardness=0.9, mode="add", frames={"only": frame}))
        reach = width / 2 + OUTLINE_GAP_PX + OUTLINE_RADIUS_PX
        strokes.append(plate_points_to_stroke(face, capsule_outline((cx, cy), width, height, reach), OUTLINE_RADIUS_PX,
                                              hardness=0.9, mode="erase", frames={"only": frame}))
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


def train_or_reuse(node, graph, record: Path | None, seed: int = 0) -> dict | None:
    """Train ``node``'s matte, or reuse the one whose record (the ``matte`` knob's value) a former run wrote to
    ``record``, when the node accepts it: trained on the same plate and strokes. Returns the training's CPU and
    wall seconds, None when reused."""
    import json

    if record is not None and record.exists():
        node["matte"] = json.loads(record.read_text())
        if node.matte_problem() is None:
            return None
        node["matte"] = None
    cpu0, wall0 = time.process_time(), time.perf_counter()
    node.action_train(graph, seed=seed)
    trained = {"cpu_s": time.process_time() - cpu0, "wall_s": time.perf_counter() - wall0}
    if record is not None:
        record.write_text(json.dumps(node.value("matte")))
    return trained


def bench_synthetic(quick: bool, record: Path | None = None, seed: int = 0) -> dict:
    """IoU of the learned matte (trained with ``seed``) on every frame, with the edge refined on the plate (as
    the node applies it) and, for comparison, without (the network's probability warped onto the plate and
    ramped)."""
    from doublure.faces import occlusion as occlusion_lib

    first, last = 1, (40 if quick else 100)
    g, occ, detect, matte = synthetic_shot(MEDIA / "people" / "d10.mp4", first, last, MEDIA / "stills" / "astronaut.png")
    span = last - first
    painted = [first + span // 6, first + span // 2, first + 5 * span // 6]
    matte["strokes"] = paint_synthetic(occ, detect, painted)
    trained = train_or_reuse(matte, g, record, seed)
    refined, unrefined = [], []
    net = matte._learned_net(first)
    for frame in range(first, last + 1):
        img = g.evaluate(matte, frame)
        if not img.faces:
            continue
        face, truth = img.faces[0], occ.truth(frame, (img.height, img.width))
        refined.append(iou_inside_crop(img, face, truth))
        # the network's probability warped onto the plate and ramped, without the refinement
        window = crop_window(face, MATTE_RES, (img.height, img.width))
        prob = occlusion_lib.predict_crops(net.coarse, occlusion_lib.sample_crop(img.tensor, face)[None])[0, 0]
        plain = occlusion_lib.matte_ramp(torch.from_numpy(crop_to_plate(prob, face, window))).numpy()
        unrefined.append(iou_inside_crop(img, occlusion_lib.with_occlusion(face, window, plain), truth))
    return {"seed": seed, "frames": last - first + 1, "painted": painted, "strokes": len(matte["strokes"]), "train": trained,
            "summary": matte["matte"], "faces": len(refined),
            "iou_mean": float(np.mean(refined)), "iou_min": float(np.min(refined)),
            "iou_p10": float(np.percentile(refined, 10)),
            "unrefined_iou_mean": float(np.mean(unrefined)), "unrefined_iou_min": float(np.min(unrefined))}


# ------------------------------------------------------------------------------------------ apply speed

class SpanningEdgeHead(torch.nn.Module):
    """A coarse head whose matte's edge runs across the whole face: the wrapped head is run (its cost is
    counted), its output replaced by four finger-like bars across the crop (a hand with spread fingers, strands
    of hair), so the edge refinement works over the whole face's window."""

    def __init__(self, head) -> None:
        super().__init__()
        self.head, self.width = head, head.width
        bars = np.zeros((MATTE_RES, MATTE_RES), np.float32)
        for x in (0.25, 0.42, 0.59, 0.76):
            x0, x1 = x * MATTE_RES, (x + 0.08) * MATTE_RES
            cv2.line(bars, (int(x0), 0), (int(x1), MATTE_RES - 1), 1.0, int(0.07 * MATTE_RES))
        self.register_buffer("logits", torch.from_numpy(8.0 * (cv2.GaussianBlur(bars, (0, 0), 1.5) - 0.5))[None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.head(x)
        return self.logits.to(out.dtype).expand_as(out)


def code_at(rev: str):
    """``faces/occlusion.py`` as committed at ``rev``, with that revision's ``engine/ops.py``: a module to time
    the former code beside the current in one process."""
    import importlib.util
    import subprocess
    import types

    def load(name: str, path: str, replace: tuple[str, str] | None = None) -> types.ModuleType:
        source = subprocess.run(["git", "-C", str(ROOT), "show", f"{rev}:{path}"], check=True, capture_output=True,
                                text=True).stdout
        if replace:
            source = source.replace(*replace)
        module = importlib.util.module_from_spec(importlib.util.spec_from_loader(name, loader=None))
        sys.modules[name] = module
        exec(compile(source, f"{rev}:{path}", "exec"), module.__dict__)
        return module

    load("doublure.engine._ops_at_rev", "engine/ops.py")
    return load("doublure.faces._occlusion_at_rev", "faces/occlusion.py",
                ("from doublure.engine import ops\n", "from doublure.engine import _ops_at_rev as ops\n"))


def bench_apply_1080(matte_files: dict[str, str], baseline: str | None = None,
                     baseline_files: dict[str, str] | None = None) -> dict:
    """ms per face to apply trained mattes on the 1080p plate (hands and far side off), vs Read alone: each
    matte file of ``matte_files`` (name -> file) alone, all their heads together, all heads with the coarse
    head's edge across the whole face (:class:`SpanningEdgeHead`), and all heads in fp32 (what a CPU without
    native bf16 runs). With ``baseline`` (a git revision), the code of that revision is timed beside the current
    code, alternately, on the same networks, or on ``baseline_files`` (the networks that revision trains) loaded
    by that revision's code."""
    import copy

    from doublure.faces import occlusion

    g = engine.Graph()
    read = g.create("Read", file=str(MEDIA / "plates_1080" / "demo1_video.mp4"), first=1, last=20)
    detect = g.create("FaceDetect")
    detect.set_input(0, read)
    src = g.evaluate(detect, 5)
    assert src.faces

    def variants(code, files: dict[str, str]) -> dict:
        """Each code's own networks: the node would refuse a matte trained on another plate."""
        mattes = {name: code.load_matte(path)[0] for name, path in files.items()}
        heads = {"coarse": None, "band": None}
        for matte in mattes.values():
            heads = {k: heads[k] or getattr(matte, k) for k in heads}
        mattes["all heads"] = code.OcclusionMatte(heads["coarse"], heads["band"])
        if heads["coarse"] is not None:
            mattes["all heads, edge across the face"] = code.OcclusionMatte(SpanningEdgeHead(heads["coarse"]),
                                                                            heads["band"])
        mattes["all heads fp32"] = code.for_inference(copy.deepcopy(mattes["all heads"]), bf16=False)
        return mattes

    windows = [crop_window(face, MATTE_RES, (src.height, src.width)) for face in src.faces]
    codes = {"": (occlusion, variants(occlusion, matte_files))}
    if baseline:
        old = code_at(baseline)
        codes[f"{baseline}: "] = (old, variants(old, baseline_files or matte_files))

    def apply_once(code, matte):
        t, c = time.perf_counter(), time.process_time()
        for face, window, m in zip(src.faces, windows, code.apply_matte(matte, src.tensor, src.faces, windows)):
            code.with_occlusion(face, window, m)
        return (time.perf_counter() - t) / len(src.faces), (time.process_time() - c) / len(src.faces)

    # one torch thread: a 128 px crop is too small to share between threads (two cost 13x the CPU time here)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    med = lambda values: 1000 * float(np.median(values))  # noqa: E731
    out = {"size": f"{src.width}x{src.height}", "faces": len(src.faces)}
    for name in codes[""][1]:
        applies = {label: [] for label in codes}
        for code, mattes in codes.values():
            apply_once(code, mattes[name])
        for _ in range(15):   # the codes alternately: the machine's load falls on both alike
            for label, (code, mattes) in codes.items():
                applies[label].append(apply_once(code, mattes[name]))
        for label, times in applies.items():
            out[label + name] = {"heads": codes[label][1][name].widths(),
                                 "cpu_ms_per_face": round(med([a[1] for a in times]), 1),
                                 "wall_ms_min": round(1000 * min(a[0] for a in times), 1),
                                 "wall_ms_median": round(med([a[0] for a in times]), 1)}
    torch.set_num_threads(threads)
    reads = []
    for frame in range(6, 12):
        t, c = time.perf_counter(), time.process_time()
        g.evaluate(read, frame)
        reads.append((time.perf_counter() - t, time.process_time() - c))
    out.update(read_cpu_ms=round(med([r[1] for r in reads]), 1), read_wall_ms=round(med([r[0] for r in reads]), 1))
    return out


# ---------------------------------------------------------------------------------------------- glasses

# Painted by looking at 256 px crops of the painted frames (crop unit coordinates: u right, v down). Each
# clip: the frames painted, the glasses' frame as polylines (occluder), dots on the face beside it (face).
def _ellipse(cu: float, cv: float, ru: float, rv: float, n: int = 24, power: float = 2.0) -> list[list[float]]:
    """A closed (super)ellipse: ``power`` 2 an ellipse, larger a rounded rectangle (a rectangular lens)."""
    a = np.linspace(0, 2 * np.pi, n + 1)
    c, s = np.cos(a), np.sin(a)
    c, s = np.sign(c) * np.abs(c) ** (2 / power), np.sign(s) * np.abs(s) ** (2 / power)
    return np.stack([cu + ru * c, cv + rv * s], 1).tolist()


GLASSES_STROKES = {
    "d9": {"frames": (1, 30, 60), "measure": (15, 45, 75, 90), "radius": 0.012, "brush": 0.02,
           "rings": (0.6, 0.3, 0.0), "grey": 0.16, "tophat": 0.02,
           "rims": [_ellipse(0.29, 0.288, 0.162, 0.122), _ellipse(0.703, 0.28, 0.166, 0.122),
                    [[0.45, 0.232], [0.537, 0.225]], [[0.08, 0.222], [0.127, 0.225]], [[0.87, 0.215], [0.92, 0.218]]],
           "face": [[0.29, 0.47], [0.70, 0.47], [0.50, 0.36], [0.50, 0.10], [0.30, 0.07], [0.72, 0.07], [0.20, 0.55],
                    [0.80, 0.55], [0.50, 0.62], [0.06, 0.40], [0.94, 0.40], [0.50, 0.85], [0.29, 0.35], [0.70, 0.35],
                    [0.10, 0.47], [0.90, 0.47], [0.50, 0.45], [0.50, 0.17], [0.36, 0.47], [0.64, 0.47]]},
    # half-rim glasses: a dark metal upper rim and temples, a clear nylon thread below the lenses
    "d13": {"frames": (1, 30, 60), "measure": (15, 45, 75, 90), "radius": 0.010, "band": 2.0,
            "rings": (0.55, 0.25, 0.0), "grey": 0.16, "tophat": 0.02, "lines": ("dark", "bright"),
            "rims": [_ellipse(0.28, 0.292, 0.155, 0.088, power=3.0), _ellipse(0.705, 0.275, 0.16, 0.088, power=3.0),
                     [[0.44, 0.228], [0.546, 0.226]], [[0.09, 0.245], [0.13, 0.24]], [[0.87, 0.22], [0.925, 0.215]]],
            "face": [[0.28, 0.44], [0.70, 0.43], [0.50, 0.34], [0.50, 0.10], [0.30, 0.10], [0.72, 0.09], [0.20, 0.55],
                     [0.80, 0.55], [0.50, 0.62], [0.50, 0.85], [0.28, 0.33], [0.70, 0.32], [0.12, 0.45], [0.88, 0.45],
                     [0.50, 0.45], [0.50, 0.17], [0.36, 0.44], [0.64, 0.44], [0.43, 0.445], [0.57, 0.445]]},
}


def crop_polygons_to_plate(polygons, face, window, size: int = 256) -> np.ndarray:
    """Closed polygons in a face's crop unit coordinates, filled and warped onto a plate window. (h, w) float32."""
    canvas = np.zeros((size, size), dtype=np.float32)
    cv2.fillPoly(canvas, [np.round((np.asarray(p) * size - 0.5) * 16).astype(np.int32) for p in polygons], 1.0,
                 cv2.LINE_AA, shift=4)
    return crop_to_plate(torch.from_numpy(canvas), face, window)


def glasses_frame_truth(plate: torch.Tensor, face, window, spec: dict) -> np.ndarray:
    """The glasses' frame on one plate frame, drawn from the plate's own pixels, not from any matte: the thin
    lines lighter (or, for a dark frame, darker: ``spec["lines"]``) than what lies on either side of them (a
    white or black top-hat of the encoded luminance over a window three times the wire's width) and grey
    (metal: low saturation), inside a band around the rims the strokes follow (``spec["band"]``, default 3,
    times the brush radius: the rims were drawn on other frames), outside the eyes' openings (a lash line is a
    dark line too), in connected pieces at least 3 wire widths long. Checked by eye on the contact sheet (``--sheet``).

    Returns:
        (h, w) bool over ``window``.
    """
    from doublure.faces.paint import render_strokes
    from doublure.faces.occlusion import encode_for_matte

    y0, y1, x0, x1 = window
    rgb = encode_for_matte(plate[:3, y0:y1, x0:x1].float().permute(1, 2, 0).numpy())
    luma = rgb.mean(2)
    wire = max(3, int(round(0.012 * face.width)) | 1)
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (wire, wire))
    # light lines (polished metal, a clear rim catching the light) and dark ones (a dark metal rim)
    tophat = np.max([cv2.morphologyEx(luma, cv2.MORPH_TOPHAT if kind == "bright" else cv2.MORPH_BLACKHAT, kernel)
                     for kind in spec.get("lines", ("bright",))], 0)
    grey = rgb.max(2) - rgb.min(2) < spec["grey"]
    bands = [{"track_id": face.track_id, "points": rim, "radius": spec.get("band", 3.0) * spec["radius"],
              "hardness": 1.0, "opacity": 1.0, "mode": "add", "frames": None} for rim in spec["rims"]]
    band = render_strokes(bands, [face], 0, plate.shape[-2:])[0, y0:y1, x0:x1].numpy() > 0.5
    # nor is an eyelid's lash line: the frame never crosses the eye's opening (grown by a third of a wire)
    from doublure.faces.masks import region_shapes

    eyes = np.zeros(luma.shape, np.uint8)
    shapes, _ = region_shapes(np.asarray(face.landmarks, dtype=np.float64)[:, :2] - [x0, y0], face.iris, "eyes")
    cv2.fillPoly(eyes, [np.round(poly).astype(np.int32) for poly in shapes], 1)
    eyes = cv2.dilate(eyes, cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (wire, wire)))
    lines = (band & grey & (tophat > spec["tophat"]) & (eyes == 0)).astype(np.uint8)
    # specks (skin between hairs of an eyebrow) are not the frame: it is drawn in long connected lines
    count, labels, stats, _ = cv2.connectedComponentsWithStats(lines, connectivity=8)
    long_enough = stats[:, cv2.CC_STAT_AREA] >= 3 * wire
    long_enough[0] = False
    return long_enough[labels]


# Face strokes inside each lens: the rim shrunk about its centre to these scales (rings) and the centre
# (a spec's "rings" for flatter lenses: the first ring stays clear of the rim).
LENS_FACE_RINGS = (0.7, 0.4, 0.0)
# The artist traces the wire zoomed in: a hard brush of this radius along its edges (plate pixels), and the
# face beside it with another, along the wire grown by a square of side WIRE_OUTLINE_GAP_PX.
WIRE_BRUSH_PX, WIRE_OUTLINE_BRUSH_PX, WIRE_OUTLINE_GAP_PX = 0.6, 0.8, 5


def mask_outline_strokes(mask: np.ndarray, face, window, radius_px: float, mode: str, frame: int) -> list[dict]:
    """Strokes along the outlines of a mask's pieces (a brush run along each piece's edge), plate pixels."""
    y0, _, x0, _ = window
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_LIST, cv2.CHAIN_APPROX_NONE)
    return [plate_points_to_stroke(face, c[:, 0].astype(np.float64) + [x0, y0], radius_px, hardness=1.0, mode=mode,
                                   frames={"only": frame}) for c in contours if len(c) >= 3]


def glasses_strokes(spec: dict, graph, detect) -> list[dict]:
    """The artist's strokes of ``spec`` on each painted frame, as traced in the viewer zoomed in: the glasses'
    wire with a fine brush (occluder: its pixels on that frame, ``glasses_frame_truth``), the face traced
    just outside it (erase), rings of face inside each lens clear of the rim (erase: what the lenses show is
    the face to be swapped) and dots on the face around the glasses (erase)."""
    def stroke(points, radius, mode, frame):
        return {"track_id": 0, "points": points, "radius": radius, "hardness": 0.8, "opacity": 1.0, "mode": mode,
                "frames": {"only": frame}}

    strokes = []
    for frame in spec["frames"]:
        img = graph.evaluate(detect, frame)
        face = img.faces[0]
        window = crop_window(face, MATTE_RES, (img.height, img.width))
        wire = glasses_frame_truth(img.tensor, face, window, spec)
        strokes += mask_outline_strokes(wire, face, window, WIRE_BRUSH_PX, "add", frame)
        beside = cv2.dilate(wire.astype(np.uint8), np.ones((WIRE_OUTLINE_GAP_PX, WIRE_OUTLINE_GAP_PX), np.uint8))
        strokes += mask_outline_strokes(beside, face, window, WIRE_OUTLINE_BRUSH_PX, "erase", frame)
        for lens in spec["rims"][:2]:
            centre = np.mean(lens, 0)
            for scale in spec.get("rings", LENS_FACE_RINGS):
                strokes.append(stroke((centre + scale * (np.asarray(lens) - centre)).tolist(), 0.02, "erase", frame))
        for dot in spec["face"]:
            strokes.append(stroke([dot], 0.03, "erase", frame))
    return strokes


def glasses_shot(clip: str, spec: dict, model: Path):
    """Read -> FaceDetect -> Occlusion (painted with ``spec``'s strokes) -> SwapModel: (graph, detect, occlusion,
    swap)."""
    g = engine.Graph()
    read = g.create("Read", file=str(MEDIA / "people" / f"{clip}.mp4"), first=1, last=max(spec["measure"]))
    detect = g.create("FaceDetect")
    detect.set_input(0, read)
    node = g.create("Occlusion", hands=False, far_side=False)
    node.set_input(0, detect)
    swap = g.create("SwapModel", model=str(model), stabilise=0, temporal=0)
    swap.set_input(0, node)
    node["strokes"] = glasses_strokes(spec, g, detect)
    return g, detect, node, swap


def bench_train_both(quick: bool, clip: str = "d9", baseline: str | None = None) -> list[dict]:
    """Both heads trained in one run, as a shot painted with a hand-sized occluder and glasses wires trains
    them: the synthetic shot's painted faces (the coarse head's strokes) and ``clip``'s (the band head's) in
    one :func:`train_matte` call with the node's default steps. CPU and wall seconds of this process. Each
    twice: as it trains, and with the coarse head's stall check finding a stall whatever its loss (threshold
    below any loss): the worst case, the check at :data:`STALL_CHECK_AT` of the steps, then the restarted
    training in full. With ``baseline`` (a git revision), that revision's code trains the same samples too."""
    from doublure.faces import occlusion

    first, last = 1, (40 if quick else 100)
    g, occ, detect, synthetic = synthetic_shot(MEDIA / "people" / "d10.mp4", first, last,
                                               MEDIA / "stills" / "astronaut.png")
    span = last - first
    synthetic["strokes"] = paint_synthetic(occ, detect, [first + span // 6, first + span // 2, first + 5 * span // 6])
    glasses_graph, _, glasses, _ = glasses_shot(clip, GLASSES_STROKES[clip],
                                                ROOT / "resources" / "demo" / "demo_model.dbm")
    samples = synthetic.training_samples(g, synthetic.value("strokes")) \
        + glasses.training_samples(glasses_graph, glasses.value("strokes"))
    results = []
    for label, code in (("current", occlusion), *(((baseline, code_at(baseline)),) if baseline else ())):
        for stall in (False, True):
            threshold = code.STALL_OCCLUDER_LOSS
            code.STALL_OCCLUDER_LOSS = -1.0 if stall else threshold
            cpu0, wall0 = time.process_time(), time.perf_counter()
            try:
                matte, summary = code.train_matte(samples, steps=int(synthetic.value("steps")))
            finally:
                code.STALL_OCCLUDER_LOSS = threshold
            results.append({"code": label, "stall forced": stall, "heads": matte.widths(), "samples": len(samples),
                            "steps": summary["steps"], "losses": summary["losses"],
                            "restarted_seeds": summary.get("seeds", {}),
                            "cpu_s": round(time.process_time() - cpu0, 1),
                            "wall_s": round(time.perf_counter() - wall0, 1)})
            print("training both heads in one run:", results[-1], flush=True)
    return results


def bench_glasses(clip: str, spec: dict, model: Path, record: Path | None = None, sheet: Path | None = None) -> dict:
    """Train on the painted frames (or reuse the matte ``record`` a former run wrote, if the node accepts it:
    the same plate and strokes), then on unpainted frames: the glasses' frame in the result against the plate,
    and the swap's alpha inside the lenses with the matte against without it."""
    from doublure.faces.occlusion import sample_crop

    g, detect, node, swap = glasses_shot(clip, spec, model)
    trained = train_or_reuse(node, g, record)
    rel_with, rel_without, lens_kept, around_kept, wire_px, tiles = [], [], [], [], [], []
    for frame in spec["measure"]:
        plate = g.evaluate(detect, frame)
        on = g.evaluate(swap, frame)
        node["learned"] = False
        off = g.evaluate(swap, frame)
        node["learned"] = True
        face = on.faces[0]
        window = face.coverage.window
        y0, y1, x0, x1 = window
        truth = glasses_frame_truth(plate.tensor, plate.faces[0], window, spec)
        p = plate.tensor[:3, y0:y1, x0:x1].float()
        ref = p[:, torch.from_numpy(truth)].mean()   # the plate's mean over the frame's pixels
        on_frame = torch.from_numpy(truth)
        diff = lambda img: float((img.tensor[:3, y0:y1, x0:x1].float() - p)[:, on_frame].abs().mean() / ref)  # noqa: E731
        rel_with.append(diff(on))
        rel_without.append(diff(off))
        wire_px.append(int(truth.sum()))
        # inside the lenses: the rims shrunk to 3/4 about their centres, less the frame and its neighbourhood
        lenses = [np.mean(r, 0) + 0.75 * (np.asarray(r) - np.mean(r, 0)) for r in spec["rims"][:2]]
        inside = crop_polygons_to_plate(lenses, face, window) > 0.5
        inside &= cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0
        a_on = face.coverage.alpha[0].numpy()
        a_off = off.faces[0].coverage.alpha[0].numpy()
        lens_kept.append(float(a_on[inside].mean() / max(a_off[inside].mean(), 1e-6)))
        # around the glasses (the rims grown to 1.5 less grown to 1.1, less the frame): swapped there too
        grown = lambda k: [np.mean(r, 0) + k * (np.asarray(r) - np.mean(r, 0)) for r in spec["rims"][:2]]  # noqa: E731
        around = (crop_polygons_to_plate(grown(1.5), face, window) > 0.5) \
            & (crop_polygons_to_plate(grown(1.1), face, window) < 0.5) \
            & (cv2.dilate(truth.astype(np.uint8), np.ones((7, 7), np.uint8)) == 0)
        around_kept.append(float(a_on[around].mean() / max(a_off[around].mean(), 1e-6)))
        if sheet is not None:
            occl = g.evaluate(node, frame).faces[0]
            tiles.append(glasses_tiles(plate, on, off, occl, truth, window, sample_crop))
    if sheet is not None:
        cv2.imwrite(str(sheet), np.concatenate(tiles, 0))
    return {"clip": clip, "frames": list(spec["measure"]), "wire_px": wire_px,
            "rim_rel_mad_with": [round(v, 4) for v in rel_with],
            "rim_rel_mad_without": [round(v, 4) for v in rel_without],
            "lens_alpha_kept": [round(v, 3) for v in lens_kept],
            "around_alpha_kept": [round(v, 3) for v in around_kept], "train": trained, "matte": node.value("matte")}


def glasses_tiles(plate, on, off, occl_face, truth, window, sample_crop) -> np.ndarray:
    """One contact sheet row (BGR uint8): the eye band of the face's 384 px crop, plate with the truth (red)
    and the matte (green), the swap with the matte, the swap without."""
    from doublure.faces.occlusion import occlusion_in_window

    face = plate.faces[0]
    y0, y1, x0, x1 = window
    pad = ((y0, plate.height - y1), (x0, plate.width - x1))
    full = lambda m: torch.from_numpy(np.pad(m.astype(np.float32), pad))  # noqa: E731
    overlay = plate.tensor[:3].float().clone()
    matte = occlusion_in_window(occl_face, (0, plate.height, 0, plate.width))[0]
    overlay[1] = torch.maximum(overlay[1], matte)
    overlay[0] = torch.where(full(truth) > 0, 1.0, overlay[0])
    rows = []
    for img in (overlay, on.tensor, off.tensor):
        crop = sample_crop(img, face, 384).permute(1, 2, 0).numpy()[40:200]
        rows.append((crop[..., ::-1] * 255).astype(np.uint8))
    return np.concatenate(rows, 1)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--only", choices=("synthetic", "apply", "glasses", "train"))
    ap.add_argument("--clips", default=",".join(GLASSES_STROKES), help="glasses clips, comma separated")
    ap.add_argument("--reuse", type=Path, help="a folder for the glasses mattes' records: a later run with the "
                                                "same plate and strokes measures again without training")
    ap.add_argument("--sheet", type=Path, help="a folder for the glasses contact sheets (PNG)")
    ap.add_argument("--seeds", default="0", help="training seeds of the synthetic shot, comma separated (the "
                                                  "first one's matte is the one applied in --only apply)")
    ap.add_argument("--threads", type=int, default=2, help="torch threads for training")
    ap.add_argument("--baseline", help="a git revision whose occlusion code --only apply and --only train time "
                                       "beside the current")
    ap.add_argument("--mattes", help="--only apply on these matte files (name=path, comma separated) instead of "
                                     "training")
    ap.add_argument("--baseline-mattes", help="with --mattes and --baseline: the baseline revision's own matte "
                                              "files (name=path, comma separated; default: --mattes)")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    synthetic, glasses = None, {}
    if args.mattes:
        files = dict(item.split("=", 1) for item in args.mattes.split(","))
        old_files = dict(item.split("=", 1) for item in args.baseline_mattes.split(",")) if args.baseline_mattes \
            else None
        print("apply 1080p:", bench_apply_1080(files, args.baseline, old_files), flush=True)
        return
    if args.only in (None, "synthetic", "apply"):
        for seed in reversed([int(s) for s in args.seeds.split(",")]):
            record = args.reuse / f"synthetic_{seed}.json" if args.reuse else None
            synthetic = bench_synthetic(args.quick, record, seed)
            print("synthetic occluder:", synthetic, flush=True)
    if args.only in (None, "glasses", "apply"):
        for clip in (["d9"] if args.only == "apply" else args.clips.split(",")):
            record = args.reuse / f"{clip}.json" if args.reuse else None
            sheet = args.sheet / f"glasses_{clip}.png" if args.sheet else None
            glasses[clip] = bench_glasses(clip, GLASSES_STROKES[clip], ROOT / "resources" / "demo" / "demo_model.dbm",
                                          record, sheet)
            print("glasses:", glasses[clip], flush=True)
    if args.only in (None, "apply"):
        files = {"synthetic": synthetic["summary"]["file"], **{c: r["matte"]["file"] for c, r in glasses.items()}}
        print("apply 1080p:", bench_apply_1080(files, args.baseline), flush=True)
    if args.only in (None, "train"):
        bench_train_both(args.quick, baseline=args.baseline)


if __name__ == "__main__":
    sys.exit(main())

"""End-to-end quality and speed report of the demo graph (issue 8): one command, a markdown report with plots.

    python bench/e2e.py                                      # full run: demo shot, people/, plates_1080 (~25 min*)
    python bench/e2e.py --frames 30 --every 3 --shots demo,d3,plates_1080   # a quick look (a few minutes)

Every shot goes through ``resources/demo/demo.dbl`` unchanged but for the plate: Read -> FaceDetect ->
SwapModel (the demo model, M030 trained against W009) -> ColorMatch -> ShadowMatch -> EyeFix -> Grain ->
Write EXR + Write H.264 (into a temporary folder). For a new plate the Read's file and range are retargeted,
the faces tracked (FaceDetect's Track action) and the grain analysed (Grain's Analyse action) first; those
one-time passes are timed apart. While the graph renders, the plate and the result are kept inside a
window around the face (the engine's cache hands both back without recomputing; that copying is timed and
taken out of the render time). Measures (plate = the Read, result = the Grain node, what the Writes write):

- identity: dlib's face descriptor of the result; mean distance to the target's centroid (M030's unseen
  neutral clip) and the fraction of frames nearer to it than to the plate actor's centroid (W009's neutral
  clip for the demo shot, the plate's own frames elsewhere). The plate itself is measured as "before".
- expression and pose: mediapipe's mesh on plate and result (still-image mode, same settings); mean
  landmark distance over the 468 mesh points / the plate's inter-ocular (iris) distance; mean |yaw|,
  |pitch|, |roll| differences of the rigid template fit (``faces.track.head_pose``); Pearson r of mouth
  opening, eye opening and brow raise over frames.
- temporal stability: mean |frame t - frame t-1| inside the plate's face hull, result over plate (goal
  <= 1.1x), raw and after warping frame t-1 onto t by the plate's optical flow (OpenCV DIS), which
  separates motion from flicker. Every consecutive pair of the shot's frames.
- colour and grain: CIEDE2000 between the result's and the plate's skin (mediapipe skin region of the
  plate's face): of the mean Lab colours, and per pixel after a blur of 2% of the face width; the std of a
  high-pass residual (sigma 1 px) per channel inside the skin, result over plate.
- seams: mean gradient magnitude in a band along the composite mask's edge (SwapModel's mask output),
  result over plate; the same for a hard paste (mask thresholded, no feather) of the same result as the
  reference a seam reads against.
- speed: on the 1080p plate, frames per second of the whole graph, Writes included, tracking excluded (and
  reported apart), time per node from the engine's own timings; references measured in the same run: a
  2048^2 fp32 matmul (GFLOP/s) and the Read node alone (decode + colour conversion, fps).

The per-frame measures (identity, mesh, colour, seams) run on every ``--every``-th frame; stability on every
frame. (*) On the project's 2-core CPU shared with a training job (load 6): a 512 px clip of 60 frames takes
about 75 s, the 250-frame 1080p shot 10 minutes. Output: ``--out`` (default ``build/e2e_report``): ``report.md``, ``results.json``, PNG plots, and
``contact_sheet.png`` (plate | result around the face, two frames per shot).
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import gc  # noqa: E402
import json  # noqa: E402
import platform  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import metrics as M  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
DEMO_PROJECT = ROOT / "resources" / "demo" / "demo.dbl"
TARGET_CLIP = MEDIA / "mead" / "M030_front_neutral_level1_001.mp4"
DEMO_ACTOR_CLIP = MEDIA / "mead" / "W009_front_neutral_level1_001.mp4"
PEOPLE = ("d0", "d3", "d6", "d9", "d10", "d11", "d12", "d13", "d14", "d20")
SPEED_SHOT = "plates_1080"
GOALS = {"stability": 1.1, "fps_cpu": 5.0, "fps_gpu": 48.0}
MASK_NODE = "E2EMask"


@dataclasses.dataclass
class Shot:
    name: str
    clip: Path | None                 # None: the demo project's own plate
    actor_clip: Path | None = None    # the plate actor's reference clip; None: the plate's own frames
    default_frames: int = 60


def all_shots() -> dict[str, Shot]:
    shots = [Shot("demo", None, DEMO_ACTOR_CLIP, 108)]
    shots += [Shot(p, MEDIA / "people" / f"{p}.mp4", None, 60) for p in PEOPLE]
    shots.append(Shot(SPEED_SHOT, MEDIA / "plates_1080" / "demo1_video.mp4", None, 250))
    return {s.name: s for s in shots}


@dataclasses.dataclass
class Capture:
    """What one shot's render kept: plate and result around the face, the faces in window coordinates."""

    window: tuple[int, int, int, int]
    frames: list[int]
    sampled: set[int]
    plates: list = dataclasses.field(default_factory=list)
    results: list = dataclasses.field(default_factory=list)
    faces: list = dataclasses.field(default_factory=list)
    masks: dict = dataclasses.field(default_factory=dict)
    overhead: float = 0.0
    cache_misses: int = 0


# ---------------------------------------------------------------------------------------- the graph

def snapshot_demo(work: Path) -> Path:
    """The demo project as it is now, saved into ``work`` (paths rebased): every shot starts from this copy,
    so an edit of ``demo.dbl`` while the report runs does not change the graph halfway."""
    import doublure.nodes  # noqa: F401
    from doublure import engine

    work.mkdir(parents=True, exist_ok=True)
    engine.load(str(DEMO_PROJECT)).save(str(work / "base.dbl"))
    return work / "base.dbl"


def prepare_shot(shot: Shot, base: Path, work: Path, frames: int | None, knobs: dict | None = None):
    """The demo project (``base``) saved into ``work``, its plate retargeted to the shot, Writes into ``work/render``,
    ``knobs`` ({(node, knob): value}) set, faces tracked and grain analysed. Returns (graph, frame list,
    {"track": s, "grain": s})."""
    import doublure.nodes  # noqa: F401
    from doublure import engine
    from doublure.engine.video import VideoReader

    g = engine.load(str(base))
    work.mkdir(parents=True, exist_ok=True)
    g.save(str(work / f"{shot.name}.dbl"))       # relative paths rebased; tracks are stored beside the copy
    read = g["Read1"]
    clip = Path(shot.clip or read.path("file"))
    with VideoReader(str(clip)) as reader:
        count, fps = reader.frame_count, float(reader.fps)
    last = min(count, frames or shot.default_frames)
    read["file"] = str(clip)
    read["first"] = 1
    read["last"] = last
    g.set_setting("first", 1)
    g.set_setting("last", last)
    g.set_setting("fps", fps)
    g["Write1"]["file"] = str(work / "render" / f"{shot.name}.####.exr")
    g["Write2"]["file"] = str(work / "render" / f"{shot.name}.mp4")
    for (node, knob), value in (knobs or {}).items():
        g[node][knob] = value
    swap = g["SwapModel1"]
    g.create("SwapModel", name=MASK_NODE, inputs=[g["FaceDetect1"]], model=swap.path("model"), output="mask",
             **{k: swap.value(k) for k in ("mask_source", "erode", "feather", "tracks", "stabilise", "temporal")})
    seconds = {}
    t0 = time.perf_counter()
    g["FaceDetect1"].action_track(g)
    seconds["track"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    g["Grain1"].action_analyse(g)
    seconds["grain"] = time.perf_counter() - t0
    g.save(str(work / f"{shot.name}.dbl"))
    return g, list(range(1, last + 1)), seconds


def tracked_faces(g, frames: list[int]) -> list:
    """The face FaceDetect passes on at each frame (its stored analysis), None where there is none."""
    from doublure.faces.trackfile import load_tracks

    node = g["FaceDetect1"]
    meta, per_frame = load_tracks(node.tracks_path())
    keep = meta.get("largest_track")
    return [next((f for f in per_frame.get(fr, []) if f.track_id == keep), None) for fr in frames]


def face_window(faces: list, hw: tuple[int, int], margin: float = 0.35) -> tuple[int, int, int, int]:
    """(x0, y0, x1, y1): the union of the shot's face boxes grown by ``margin`` of the median face size."""
    boxes = np.array([f.box for f in faces if f is not None])
    size = float(np.median(np.maximum(boxes[:, 2] - boxes[:, 0], boxes[:, 3] - boxes[:, 1])))
    grow = margin * size
    x0, y0 = (int(max(0, np.floor(boxes[:, i].min() - grow))) for i in (0, 1))
    x1 = int(min(hw[1], np.ceil(boxes[:, 2].max() + grow)))
    y1 = int(min(hw[0], np.ceil(boxes[:, 3].max() + grow)))
    return x0, y0, x1, y1


def render_and_capture(g, frames: list[int], faces: list, every: int, hw: tuple[int, int]):
    """Render every Write over ``frames``; after each frame keep plate, result and (sampled frames) the
    composite mask inside the face window. Returns (Capture, RenderReport)."""
    from doublure.faces.detect import working_to_srgb8

    ws = g.settings["working_space"]
    win = face_window(faces, hw)
    x0, y0, x1, y1 = win
    cap = Capture(win, frames, {fr for i, fr in enumerate(frames) if i % every == 0})
    cap.overhead_cpu = 0.0
    cap.faces = [M.shift_face(f, -x0, -y0) if f is not None else None for f in faces]
    read, result, mask_node = g["Read1"], g["Grain1"], g[MASK_NODE]

    def keep(done: int, total: int, frame: int) -> None:
        t0, c0 = time.perf_counter(), time.process_time()
        cap.cache_misses += (not g.is_cached(read, frame)) + (not g.is_cached(result, frame))
        cap.plates.append(working_to_srgb8(g.evaluate(read, frame).tensor[:3, y0:y1, x0:x1], ws))
        cap.results.append(working_to_srgb8(g.evaluate(result, frame).tensor[:3, y0:y1, x0:x1], ws))
        if frame in cap.sampled:
            cap.masks[frame] = g.evaluate(mask_node, frame).tensor[0, y0:y1, x0:x1].float().numpy().copy()
        cap.overhead += time.perf_counter() - t0
        cap.overhead_cpu += time.process_time() - c0
        if done % 25 == 0 or done == total:
            print(f"    rendered {done}/{total}", flush=True)

    g.timings.clear()
    c0 = time.process_time()
    report = g.render(None, frames, progress=keep)
    cap.render_cpu = time.process_time() - c0 - cap.overhead_cpu
    if not report.ok:
        raise SystemExit(f"render failed: {report.failures[:3]}")
    return cap, report


def node_ms(g) -> dict[str, float]:
    return {name: t.seconds / max(t.computes, 1) * 1e3 for name, t in g.timings.items() if name != MASK_NODE}


# ---------------------------------------------------------------------------------------- measuring a shot

def measure(cap: Capture, ident: M.Identity, target: np.ndarray, actor: np.ndarray | None, detectors) -> dict:
    """Every quality figure of one shot from its capture."""
    det_plate, det_result = detectors
    hw = cap.plates[0].shape[:2]
    hulls = [M.region_mask(f, "face_hull", hw) if f is not None else np.zeros(hw, np.float32) for f in cap.faces]
    fw = M.FlowWarp()
    flows = [None] + [fw.flow(cap.plates[t - 1], cap.plates[t]) for t in range(1, len(cap.plates))]
    stab = M.stability(cap.plates, cap.results, hulls, flows)
    self_check = M.stability(cap.plates, cap.plates, hulls, flows)
    rows, d_res, d_plate = [], [], []
    expr_p, expr_r = [], []
    from doublure.faces.extract import expression_measures

    for i, frame in enumerate(cap.frames):
        face = cap.faces[i]
        if frame not in cap.sampled or face is None:
            continue
        plate, result, mask = cap.plates[i], cap.results[i], cap.masks[frame]
        d_res.append(ident.descriptor(result, face.box))
        d_plate.append(ident.descriptor(plate, face.box))
        row = {"frame": frame}
        fp, fr = M.detect_one(det_plate, plate), M.detect_one(det_result, result)
        if fp is not None and fr is not None:
            row["landmark_error"] = M.landmark_error(fp.landmarks, fr.landmarks)
            row["pose_diff"] = M.pose_difference(fp.landmarks, fr.landmarks).tolist()
            expr_p.append(expression_measures(fp.landmarks))
            expr_r.append(expression_measures(fr.landmarks))
        skin = M.region_mask(face, "skin", hw, grow=-2.0)
        row.update({f"de_{k}": v for k, v in M.skin_delta_e(result, plate, skin, 0.02 * face.width).items()})
        row["grain_ratio"] = M.grain_ratio(result, plate, skin).tolist()
        # the face inside its hull, kept off the mask's feathered edge (as bench/swap_detail.py measures it)
        inner = M.region_mask(face, "face_hull", hw, grow=-0.05 * face.width)
        row["sharpness"] = M.sharpness(result, inner) / max(M.sharpness(plate, inner), 1e-9)
        radius = max(2, int(round(0.03 * face.width)))
        row["seam"] = M.seam_ratio(result, plate, mask, radius)
        hard = M.hard_paste(result, plate, mask)
        row["seam_hard"] = M.seam_ratio(hard, plate, mask, radius)
        row["seam_worst"] = float(np.nanmax(M.seam_sectors(result, plate, mask, radius)))
        row["seam_hard_worst"] = float(np.nanmax(M.seam_sectors(hard, plate, mask, radius)))
        rows.append(row)
    actor_centroid = actor if actor is not None else np.mean(d_plate, axis=0)
    with_mesh = [r for r in rows if "landmark_error" in r]
    out = {"frames": len(cap.frames), "sampled": len(rows), "mesh_frames": len(with_mesh),
           "window": cap.window,
           "identity": M.identity_scores(d_res, target, actor_centroid),
           "identity_plate": M.identity_scores(d_plate, target, actor_centroid),
           "landmark_error": float(np.mean([r["landmark_error"] for r in with_mesh])) if with_mesh else float("nan"),
           "pose_diff": np.mean([r["pose_diff"] for r in with_mesh], axis=0).tolist() if with_mesh else [float("nan")] * 3,
           "expression_r": {k: M.pearson([e[k] for e in expr_p], [e[k] for e in expr_r])
                            for k in ("mouth_open", "eyes_open", "brow_raise")} if expr_p else {},
           "stability": {k: v for k, v in stab.items() if k != "per_frame"},
           "stability_per_frame": stab["per_frame"],
           "stability_self": [self_check["ratio_raw"], self_check["ratio_flow"]],
           "de_mean_lab": float(np.nanmean([r["de_mean_lab"] for r in rows])),
           "de_per_pixel": float(np.nanmean([r["de_per_pixel"] for r in rows])),
           "grain_ratio": np.mean([r["grain_ratio"] for r in rows], axis=0).tolist(),
           "sharpness": float(np.mean([r["sharpness"] for r in rows])),
           "seam": float(np.nanmean([r["seam"] for r in rows])),
           "seam_hard": float(np.nanmean([r["seam_hard"] for r in rows])),
           "seam_worst": float(np.nanmean([r["seam_worst"] for r in rows])),
           "seam_hard_worst": float(np.nanmean([r["seam_hard_worst"] for r in rows])),
           "rows": rows}
    return out


# ---------------------------------------------------------------------------------------- speed references

def matmul_gflops(n: int = 2048, reps: int = 5) -> float:
    a, b = torch.randn(n, n), torch.randn(n, n)
    torch.mm(a, b)
    best = float("inf")
    for _ in range(reps):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = min(best, time.perf_counter() - t0)
    return 2 * n ** 3 / best / 1e9


def read_only_fps(clip: Path, frames: int) -> float:
    """The Read node alone over the same frames (decode + colour conversion into the working space)."""
    import doublure.nodes  # noqa: F401
    from doublure import engine

    g = engine.Graph()
    read = g.create("Read", file=str(clip), first=1, last=frames)
    t0 = time.perf_counter()
    for frame in range(1, frames + 1):
        g.evaluate(read, frame)
    return frames / (time.perf_counter() - t0)


# ---------------------------------------------------------------------------------------- report

def fmt(v, spec=".2f") -> str:
    return "-" if v is None or (isinstance(v, float) and not np.isfinite(v)) else format(v, spec)


def sheet_frames(cap: Capture) -> list[tuple[int, np.ndarray, np.ndarray]]:
    """(frame, plate, result) at a third and two thirds of the shot: what the contact sheet shows."""
    n = len(cap.frames)
    return [(cap.frames[i], cap.plates[i], cap.results[i]) for i in sorted({n // 3, (2 * n) // 3})]


def contact_sheet(picks: dict[str, list], path: Path, tile: int = 240) -> None:
    rows = []
    for name, shot_picks in picks.items():
        tiles = []
        for frame, plate, result in shot_picks:
            for img, label in ((plate, "plate"), (result, "result")):
                h, w = img.shape[:2]
                t = cv2.resize(img, (max(1, int(round(w * tile / h))), tile), interpolation=cv2.INTER_AREA)
                t = np.ascontiguousarray(t)
                cv2.putText(t, f"{name} f{frame} {label}", (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.45,
                            (255, 255, 0), 1, cv2.LINE_AA)
                tiles.append(t)
                tiles.append(np.zeros((tile, 4, 3), np.uint8))
        rows.append(np.concatenate(tiles, axis=1))
    width = max(r.shape[1] for r in rows)
    sheet = np.concatenate([np.pad(r, ((0, 4), (0, width - r.shape[1]), (0, 0))) for r in rows], axis=0)
    cv2.imwrite(str(path), cv2.cvtColor(sheet, cv2.COLOR_RGB2BGR))


def plots(results: dict, speed: dict | None, out: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results)
    x = np.arange(len(names))
    fig, axes = plt.subplots(2, 3, figsize=(16, 8.5))
    ax = axes[0, 0]
    ax.bar(x - 0.2, [results[n]["identity"]["distance_target"] for n in names], 0.4, label="result")
    ax.bar(x + 0.2, [results[n]["identity_plate"]["distance_target"] for n in names], 0.4, label="plate (before)")
    ax.axhline(0.4, color="k", ls=":", lw=1, label="goal 0.40 (issue 4)")
    ax.set_title("dlib distance to the target's centroid (M030)")
    ax.legend(fontsize=8)
    ax = axes[0, 1]
    ax.bar(x, [100 * results[n]["identity"]["nearer_target"] for n in names])
    ax.set_title("% of frames nearer the target than the plate actor")
    ax.set_ylim(0, 105)
    ax = axes[0, 2]
    ax.bar(x - 0.2, [results[n]["stability"]["ratio_raw"] for n in names], 0.4, label="raw")
    ax.bar(x + 0.2, [results[n]["stability"]["ratio_flow"] for n in names], 0.4, label="flow-compensated")
    ax.axhline(GOALS["stability"], color="k", ls=":", lw=1, label="goal 1.1")
    ax.set_title("frame-to-frame change in the face, result / plate")
    ax.legend(fontsize=8)
    ax = axes[1, 0]
    ax.bar(x - 0.2, [results[n]["landmark_error"] for n in names], 0.4, label="landmark error (x IOD)")
    ax.bar(x + 0.2, [np.mean(results[n]["pose_diff"]) / 10 for n in names], 0.4, label="mean |pose diff| / 10 deg")
    ax.set_title("expression and pose fidelity")
    ax.legend(fontsize=8)
    ax = axes[1, 1]
    ax.bar(x - 0.27, [results[n]["de_mean_lab"] for n in names], 0.27, label="CIEDE2000 mean Lab")
    ax.bar(x, [results[n]["de_per_pixel"] for n in names], 0.27, label="CIEDE2000 per pixel (blurred)")
    ax.bar(x + 0.27, [10 * np.mean(results[n]["grain_ratio"]) for n in names], 0.27, label="grain ratio x 10")
    ax.set_title("skin colour and grain")
    ax.legend(fontsize=8)
    ax = axes[1, 2]
    for k, (key, label) in enumerate((("seam", "demo graph, whole edge"), ("seam_hard", "hard paste, whole edge"),
                                      ("seam_worst", "demo graph, worst 1/8 of the edge"),
                                      ("seam_hard_worst", "hard paste, worst 1/8"))):
        ax.bar(x + (k - 1.5) * 0.2, [results[n][key] for n in names], 0.2, label=label)
    ax.axhline(1.0, color="k", ls=":", lw=1)
    ax.set_title("gradient along the mask edge, result / plate")
    ax.legend(fontsize=8)
    for ax in axes.flat:
        ax.set_xticks(x)
        ax.set_xticklabels(names, rotation=45, fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "quality.png", dpi=90)
    plt.close(fig)
    written = ["quality.png"]

    first = names[0]
    per = np.asarray(results[first]["stability_per_frame"])
    if len(per):
        fig, ax = plt.subplots(figsize=(10, 3.5))
        t = np.arange(2, len(per) + 2)
        for col, label in ((0, "plate raw"), (1, "result raw"), (2, "plate after flow"), (3, "result after flow")):
            ax.plot(t, per[:, col], label=label, lw=1)
        ax.set_xlabel("frame")
        ax.set_ylabel("mean |change| in the face (8-bit)")
        ax.set_title(f"{first}: frame-to-frame change inside the face hull")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(out / "temporal.png", dpi=90)
        plt.close(fig)
        written.append("temporal.png")

    if speed:
        items = sorted(speed["node_ms"].items(), key=lambda kv: -kv[1])
        fig, ax = plt.subplots(figsize=(8, 3.5))
        ax.barh([k for k, _ in items][::-1], [v for _, v in items][::-1])
        ax.set_xlabel("ms per frame (engine timings)")
        ax.set_title(f"1080p, {speed['fps']:.2f} fps whole graph ({speed['frames']} frames)")
        fig.tight_layout()
        fig.savefig(out / "speed.png", dpi=90)
        plt.close(fig)
        written.append("speed.png")
    return written


def write_report(out: Path, results: dict, speed: dict | None, meta: dict, images: list[str]) -> str:
    L = [f"# Doublure end-to-end report (`bench/e2e.py`)", "",
         f"{meta['date']}, {meta['machine']}, command: `{meta['command']}`", "",
         f"Graph: `resources/demo/demo.dbl` (model `{meta['model']}`), plate retargeted per shot. Per-frame measures "
         f"on every {meta['every']}-th frame, stability on every frame. Target centroid: M030's unseen neutral clip; "
         "plate actor: W009's neutral clip (demo), the plate's own frames elsewhere.", ""]
    L += ["## Identity, expression, pose", "",
          "| shot | frames (sampled / mesh) | dist. to target: result (plate) | dist. to plate actor: result (plate) | "
          "nearer target | landmark err. (x IOD) | pose diff. yaw / pitch / roll (deg) | r mouth / eyes / brow |",
          "|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        i, p, e = r["identity"], r["identity_plate"], r["expression_r"]
        L.append(f"| {n} | {r['frames']} ({r['sampled']} / {r['mesh_frames']}) | {i['distance_target']:.3f} "
                 f"({p['distance_target']:.3f}) | {i['distance_plate_actor']:.3f} ({p['distance_plate_actor']:.3f}) | "
                 f"{100 * i['nearer_target']:.0f}% | {fmt(r['landmark_error'], '.3f')} | "
                 f"{' / '.join(fmt(v, '.1f') for v in r['pose_diff'])} | "
                 f"{' / '.join(fmt(e.get(k), '.2f') for k in ('mouth_open', 'eyes_open', 'brow_raise'))} |")
    L += ["", "## Temporal stability, colour, grain, seams", "",
          "| shot | change raw: plate / result / ratio | after flow: plate / result / ratio | self-check ratio | "
          "CIEDE2000 mean Lab / per pixel | grain ratio R / G / B | sharpness | seam ratio (hard paste) | "
          "worst of 8 sectors (hard paste) |",
          "|---|---|---|---|---|---|---|---|---|"]
    for n, r in results.items():
        s = r["stability"]
        L.append(f"| {n} | {s['plate_raw']:.2f} / {s['result_raw']:.2f} / **{s['ratio_raw']:.2f}** | "
                 f"{s['plate_flow']:.2f} / {s['result_flow']:.2f} / **{s['ratio_flow']:.2f}** | "
                 f"{r['stability_self'][0]:.2f}, {r['stability_self'][1]:.2f} | {r['de_mean_lab']:.2f} / "
                 f"{r['de_per_pixel']:.2f} | {' / '.join(f'{v:.2f}' for v in r['grain_ratio'])} | "
                 f"{fmt(r.get('sharpness'), '.2f')} | "
                 f"{r['seam']:.2f} ({r['seam_hard']:.2f}) | {r['seam_worst']:.2f} ({r['seam_hard_worst']:.2f}) |")
    agg = aggregate(results)
    L += ["", "## Summary over shots", "", "| measure | demo | people/ (mean of clips) | plates_1080 | goal |",
          "|---|---|---|---|---|"]
    for key, label, goal in (("distance_target", "dlib distance to target", "<= 0.40"),
                             ("nearer_target", "fraction nearer target", ">= 0.95"),
                             ("landmark_error", "landmark error (x IOD)", "-"),
                             ("pose_mean", "mean pose diff. (deg)", "-"),
                             ("ratio_raw", "stability ratio raw", "<= 1.1"),
                             ("ratio_flow", "stability ratio after flow", "<= 1.1"),
                             ("de_mean_lab", "CIEDE2000 mean skin colour", "-"),
                             ("grain", "grain ratio (mean of R, G, B)", "~1"),
                             ("sharpness", "sharpness (result over plate)", ">= 0.8"),
                             ("seam", "seam ratio", "~1"), ("seam_hard", "seam ratio, hard paste", "ref."),
                             ("seam_worst", "seam ratio, worst sector", "~1"),
                             ("seam_hard_worst", "seam ratio, worst sector, hard paste", "ref.")):
        L.append(f"| {label} | " + " | ".join(fmt(agg.get(g, {}).get(key), ".3f") for g in ("demo", "people", SPEED_SHOT))
                 + f" | {goal} |")
    if speed:
        L += ["", "## Speed at 1080p", "",
              f"`{speed['clip']}` ({speed['size']}), {speed['frames']} frames, the whole graph with both Writes "
              f"(EXR as demo.dbl compresses it, piz + H.264) into a temporary folder, headless, {meta['threads']} torch threads.", "",
              "| measure | figure |", "|---|---|",
              f"| **whole graph** | **{speed['fps']:.2f} fps** ({speed['seconds']:.1f} s; goal >= {GOALS['fps_cpu']:.0f} "
              f"on CPU, >= {GOALS['fps_gpu']:.0f} on GPU) |",
              f"| one-time passes | tracking {speed['track_s']:.1f} s ({speed['frames'] / speed['track_s']:.1f} fps), "
              f"grain analysis {speed['grain_s']:.1f} s |",
              f"| reference: Read node alone (decode + colour) | {speed['read_fps']:.1f} fps; whole graph = "
              f"{speed['read_fps'] / speed['fps']:.1f}x a Read |",
              f"| reference: 2048^2 fp32 matmul | {speed['gflops']:.0f} GFLOP/s (before {speed['gflops_runs'][0]:.0f}, "
              f"after {speed['gflops_runs'][1]:.0f}) |",
              f"| CPU time of the render per frame (user + sys, all threads) | {speed['cpu_ms']:.0f} ms (load average "
              f"{speed['load']:.1f} at the end) |",
              f"| capture for the quality measures (taken out) | {speed['overhead_s']:.1f} s |", "",
              "| node | ms / frame |", "|---|---|"]
        for name, ms in sorted(speed["node_ms"].items(), key=lambda kv: -kv[1]):
            L.append(f"| {name} | {ms:.0f} |")
        L.append(f"| Writes (encode + files; frame time minus the nodes) | {speed['write_ms']:.0f} |")
    L += ["", "## Per-shot render speed", "", "| shot | size | frames | fps | tracking s | grain analysis s |",
          "|---|---|---|---|---|---|"]
    for n, r in results.items():
        L.append(f"| {n} | {r['size']} | {r['frames']} | {r['fps']:.2f} | {r['track_s']:.1f} | {r['grain_s']:.1f} |")
    L += [""] + [f"![{img}]({img})" for img in images + ["contact_sheet.png"]] + [""]
    text = "\n".join(L)
    (out / "report.md").write_text(text)
    return text


def aggregate(results: dict) -> dict:
    groups = {"demo": [n for n in results if n == "demo"], "people": [n for n in results if n in PEOPLE],
              SPEED_SHOT: [n for n in results if n == SPEED_SHOT]}
    out = {}
    for g, names in groups.items():
        if not names:
            continue
        rs = [results[n] for n in names]
        vals = {"distance_target": [r["identity"]["distance_target"] for r in rs],
                "nearer_target": [r["identity"]["nearer_target"] for r in rs],
                "landmark_error": [r["landmark_error"] for r in rs],
                "pose_mean": [float(np.mean(r["pose_diff"])) for r in rs],
                "ratio_raw": [r["stability"]["ratio_raw"] for r in rs],
                "ratio_flow": [r["stability"]["ratio_flow"] for r in rs],
                "de_mean_lab": [r["de_mean_lab"] for r in rs], "grain": [float(np.mean(r["grain_ratio"])) for r in rs],
                "sharpness": [r.get("sharpness", float("nan")) for r in rs],
                **{k: [r[k] for r in rs] for k in ("seam", "seam_hard", "seam_worst", "seam_hard_worst")}}
        out[g] = {k: float(np.nanmean(v)) for k, v in vals.items()}
    return out


# ---------------------------------------------------------------------------------------- main

def parse_knobs(items: list[str]) -> dict:
    """``["SwapModel1.temporal=0", "ColorMatch1.method=sot"]`` -> {(node, knob): value} (see
    ``metrics.knob_value``)."""
    knobs = {}
    for item in items:
        target, _, value = item.partition("=")
        node, _, knob = target.partition(".")
        if not (node and knob and value):
            raise SystemExit(f"--knob wants NODE.KNOB=VALUE, got {item!r}")
        knobs[(node, knob)] = M.knob_value(value)
    return knobs


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default=str(ROOT / "build" / "e2e_report"))
    p.add_argument("--frames", type=int, help="frames per shot, from its first (default: demo 108, people/ 60, "
                                                "plates_1080 250)")
    p.add_argument("--every", type=int, default=4, help="per-frame measures on every K-th frame")
    p.add_argument("--shots", default="all", help="comma-separated: demo, people, d0..d20, plates_1080 (default all)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--speed-frames", type=int, default=250, help="frames of the 1080p shot (default 250)")
    p.add_argument("--target-clip", default=str(TARGET_CLIP),
                   help="the target's unseen clip, for the identity centroid (default M030's neutral clip)")
    p.add_argument("--target-from", type=int, default=M.M030_UNSEEN_FROM,
                   help="its first unseen frame (default 47: the demo model's bank holds the neutral clip's first half)")
    p.add_argument("--reuse", action="store_true", help="take shots already measured in OUT/shots from there")
    p.add_argument("--keep", action="store_true", help="keep the rendered files (in OUT/render)")
    p.add_argument("--knob", action="append", default=[], metavar="NODE.KNOB=VALUE",
                   help="set a knob of the demo graph first (repeatable), e.g. SwapModel1.temporal=0")
    args = p.parse_args(argv)
    args.knobs = parse_knobs(args.knob)
    torch.set_num_threads(args.threads)
    shots = all_shots()
    wanted = []
    for part in (args.shots.split(",") if args.shots != "all" else ["demo", "people", SPEED_SHOT]):
        wanted += list(PEOPLE) if part == "people" else [part]
    unknown = [w for w in wanted if w not in shots]
    if unknown:
        raise SystemExit(f"unknown shots {unknown}; known: {', '.join(shots)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = out / "render" if args.keep else Path(tempfile.mkdtemp(prefix="doublure-e2e-"))
    started = time.perf_counter()
    meta = {"date": time.strftime("%Y-%m-%d %H:%M %Z"), "command": "python bench/e2e.py " + " ".join(argv or sys.argv[1:]),
            "machine": os.environ.get("BENCH_MACHINE", f"{platform.processor() or platform.machine()}, "
                                      f"{os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.1f} at start"),
            "every": args.every, "threads": args.threads, "model": "resources/demo/demo_model.dbm",
            "knobs": {f"{n}.{k}": v for (n, k), v in args.knobs.items()}}
    from doublure.faces.detect import MediapipeBackend

    ident = M.Identity()
    print("reference centroids (M030 neutral, W009 neutral) ...", flush=True)
    target = M.centroid(ident, args.target_clip, 2, args.target_from)
    demo_actor = M.centroid(ident, str(DEMO_ACTOR_CLIP), 2)
    meta["centroid_distance_W009_M030"] = float(np.linalg.norm(target - demo_actor))
    results, captures, speed = {}, {}, None
    saved = out / "shots"
    saved.mkdir(exist_ok=True)
    base = snapshot_demo(work)
    try:
        with MediapipeBackend("short+full", 1, video=False) as det_p, MediapipeBackend("short+full", 1, video=False) as det_r:
            for name in wanted:
                shot = shots[name]
                if args.reuse and (saved / f"{name}.json").exists():
                    done = json.loads((saved / f"{name}.json").read_text())
                    results[name], speed = done["result"], done["speed"] or speed
                    with np.load(saved / f"{name}.npz") as z:
                        captures[name] = [(int(f), z[f"p{i}"], z[f"r{i}"]) for i, f in enumerate(z["frames"])]
                    print(f"{name}: taken from {saved}", flush=True)
                    continue
                try:
                    r, picks, shot_speed = run_shot(shot, base, work, args, ident, target, demo_actor, (det_p, det_r))
                except Exception:   # one shot failing (a bad clip, an edit of the graph) keeps the others
                    import traceback

                    traceback.print_exc()
                    print(f"{name}: FAILED, left out of the report", flush=True)
                    continue
                results[name], captures[name], speed = r, picks, shot_speed or speed
                (saved / f"{name}.json").write_text(json.dumps({"result": r, "speed": shot_speed}, default=float))
                np.savez_compressed(saved / f"{name}.npz", frames=np.array([f for f, _, _ in picks]),
                                    **{f"p{i}": p_ for i, (_, p_, _) in enumerate(picks)},
                                    **{f"r{i}": r_ for i, (_, _, r_) in enumerate(picks)})
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    if not results:
        raise SystemExit("nothing measured")
    contact_sheet(captures, out / "contact_sheet.png")
    images = plots(results, speed, out)
    meta["minutes"] = (time.perf_counter() - started) / 60
    (out / "results.json").write_text(json.dumps({"meta": meta, "speed": speed, "shots": results}, indent=1, default=float))
    write_report(out, results, speed, meta, images)
    headline(results, speed)
    print(f"report: {out / 'report.md'} ({meta['minutes']:.1f} min)")
    return 0


def run_shot(shot: Shot, base: Path, work: Path, args, ident, target, demo_actor, detectors):
    """Prepare, render and measure one shot. Returns (result, contact sheet picks, speed figures or None)."""
    name = shot.name
    t_shot = time.perf_counter()
    print(f"{name}: prepare (track, grain) ...", flush=True)
    cap_frames = args.speed_frames if name == SPEED_SHOT else args.frames
    g, frames, passes = prepare_shot(shot, base, work / name, cap_frames, args.knobs)
    faces = tracked_faces(g, frames)
    if not any(f is not None for f in faces):
        raise RuntimeError(f"{name}: no face tracked")
    plate0 = g.evaluate(g["Read1"], frames[0])
    hw = (plate0.height, plate0.width)
    gflops_before = matmul_gflops() if name == SPEED_SHOT else None
    read_fps = read_only_fps(Path(g["Read1"].path("file")), len(frames)) if name == SPEED_SHOT else None
    g.cache.clear()   # the tracking pass left plate frames in the cache: the render decodes anew
    print(f"{name}: render {len(frames)} frames ({hw[1]}x{hw[0]}) ...", flush=True)
    cap, report = render_and_capture(g, frames, faces, args.every, hw)
    render_s = report.seconds - cap.overhead
    fps = len(frames) / render_s
    ms = node_ms(g)
    speed = None
    if name == SPEED_SHOT:
        gflops_after = matmul_gflops()
        speed = {"clip": str(shot.clip.relative_to(MEDIA.parent)), "size": f"{hw[1]}x{hw[0]}",
                 "frames": len(frames), "fps": fps, "seconds": render_s, "node_ms": ms,
                 "write_ms": render_s / len(frames) * 1e3 - sum(ms.values()),
                 "track_s": passes["track"], "grain_s": passes["grain"], "read_fps": read_fps,
                 "gflops": 0.5 * (gflops_before + gflops_after), "gflops_runs": [gflops_before, gflops_after],
                 "overhead_s": cap.overhead, "cache_misses": cap.cache_misses,
                 "cpu_ms": cap.render_cpu / len(frames) * 1e3, "load": os.getloadavg()[0]}
    print(f"{name}: {fps:.2f} fps; measuring ...", flush=True)
    r = measure(cap, ident, target, demo_actor if shot.actor_clip else None, detectors)
    r.update({"fps": fps, "size": f"{hw[1]}x{hw[0]}", "track_s": passes["track"], "grain_s": passes["grain"],
              "node_ms": ms, "cache_misses": cap.cache_misses})
    picks = sheet_frames(cap)
    s = r["stability"]
    print(f"{name}: identity {r['identity']['distance_target']:.3f} (plate {r['identity_plate']['distance_target']:.3f}), "
          f"nearer target {100 * r['identity']['nearer_target']:.0f}%, landmarks {r['landmark_error']:.3f} IOD, "
          f"pose {np.mean(r['pose_diff']):.1f} deg, stability {s['ratio_raw']:.2f} / {s['ratio_flow']:.2f} "
          f"(self {r['stability_self'][0]:.2f}), dE {r['de_mean_lab']:.2f}, grain "
          f"{np.mean(r['grain_ratio']):.2f}, sharpness {r['sharpness']:.2f}, seam {r['seam']:.2f} (hard {r['seam_hard']:.2f}; worst sector "
          f"{r['seam_worst']:.2f}, hard {r['seam_hard_worst']:.2f}) "
          f"[{time.perf_counter() - t_shot:.0f} s]", flush=True)
    g.cache.clear()
    del g, cap
    gc.collect()
    return r, picks, speed


def headline(results: dict, speed: dict | None) -> None:
    print("\n== headline ==")
    for group, a in aggregate(results).items():
        print(f"{group:>12}: dlib dist. to target {a['distance_target']:.3f}, nearer target {100 * a['nearer_target']:.0f}%, "
              f"landmarks {a['landmark_error']:.3f} IOD, pose {a['pose_mean']:.1f} deg, stability raw "
              f"{a['ratio_raw']:.2f} / flow {a['ratio_flow']:.2f} (goal <= 1.1), dE2000 {a['de_mean_lab']:.2f}, "
              f"grain {a['grain']:.2f}, seam {a['seam']:.2f} (hard paste {a['seam_hard']:.2f}), worst sector "
              f"{a['seam_worst']:.2f} (hard paste {a['seam_hard_worst']:.2f})")
    if speed:
        print(f"1080p: {speed['fps']:.2f} fps whole graph over {speed['frames']} frames (goal >= 5 on CPU); Read alone "
              f"{speed['read_fps']:.1f} fps; matmul {speed['gflops']:.0f} GFLOP/s; tracking {speed['track_s']:.1f} s")
        print("  per node ms: " + ", ".join(f"{k} {v:.0f}" for k, v in sorted(speed["node_ms"].items(), key=lambda kv: -kv[1]))
              + f", Writes {speed['write_ms']:.0f}")


if __name__ == "__main__":
    sys.exit(main())

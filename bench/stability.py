"""Where the swapped face's frame-to-frame change comes from (issue 8's temporal stability), per shot:

    python bench/stability.py --shots demo,d3,d11,d12,d14 --frames 40
    python bench/stability.py --shots d12 --knob SwapModel1.stabilise=0 --knob SwapModel1.temporal=0

The demo graph (``resources/demo/demo.dbl``, prepared per shot as ``bench/e2e.py`` does: Read retargeted,
faces tracked, grain analysed) is evaluated node by node inside a window around the face, and for every
node of the chain (SwapModel, ColorMatch, ShadowMatch, EyeFix, Grain) the e2e stability measure is taken
against the plate: mean |frame t - frame t-1| inside the plate's face hull, result over plate, raw and after
warping t-1 onto t by the plate's optical flow (``metrics.stability``). A node that raises the ratio over
the one above it adds the flicker or swim.

The crop transforms are checked against the skin's own motion: inside the face hull, the mean distance
(plate pixels) between the plate's DIS flow and the motion implied by consecutive crop transforms, for the
tracker's fit (FaceDetect) and for the faces SwapModel placed; the least-squares similarity fitted to the
flow itself is the floor any similarity transform can reach (what remains is expression and turn).
Where the change is: the same ratio after the whole chain inside parts of the face (eyes and mouth grown a little,
the skin of the inner face, the band along the hull's edge), the share of the ratio that comes from frames where
the plate repeats the frame before (its change under a quarter of the shot's median: frame-rate conversions),
and the ratio with each sequence compensated by its own DIS flow instead of the plate's (what is left of the
plate-flow ratio above it is the result moving unlike the plate's skin, not flicker). This breakdown found the
held frames and the finishing nodes' tinted plate (bench/RESULTS.md, session 7).
Output: the tables on stdout and ``--out``/stability.md.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import shutil  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import e2e  # noqa: E402
import metrics as M  # noqa: E402

CHAIN = ("SwapModel1", "ColorMatch1", "ShadowMatch1", "EyeFix1", "Grain1")
REGIONS = ("eyes", "mouth", "skin", "edge")
EDGE_BAND = 0.08     # face widths: the band inside the hull's edge
HELD_CHANGE = 0.25   # a frame whose plate change is under this fraction of the shot's median: a repeat


def region_masks(face, hull_mask: np.ndarray) -> dict[str, np.ndarray]:
    """Boolean (H, W) masks of the parts of a face the breakdown reports (see the module docstring), from its
    face hull mask ((H, W) float)."""
    import cv2

    hw = hull_mask.shape
    hull = hull_mask > 0.5
    eyes = M.region_mask(face, "eyes", hw, grow=0.5) > 0.5
    mouth = M.region_mask(face, "mouth", hw, grow=0.3) > 0.5
    r = max(3, int(EDGE_BAND * face.width))
    core = cv2.erode(hull.astype(np.uint8), cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * r + 1, 2 * r + 1))) > 0
    return {"eyes": hull & eyes, "mouth": hull & mouth & ~eyes, "skin": core & ~eyes & ~mouth,
            "edge": hull & ~core & ~eyes & ~mouth}


def own_flow_ratio(plates, results, masks, plate_flow: float) -> float:
    """Flow-compensated change of the result, compensated by its own DIS flow, over the plate's
    (``plate_flow``: the plate's mean change after its own flow, from :func:`metrics.stability`)."""
    fw = M.FlowWarp()
    own = [None] + [fw.flow(results[t - 1], results[t]) for t in range(1, len(results))]
    return float(M.stability(plates, results, masks, own)["result_flow"] / max(plate_flow, 1e-9))


def transform_motion(to_prev: np.ndarray, to_cur: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    """(H, W, 2) where each pixel of frame t was at t-1 by two crop transforms (plate px -> crop units),
    minus the pixel: the motion the transforms imply, in the convention of ``FlowWarp.flow``."""
    a = np.vstack([to_cur, [0, 0, 1]])
    b = np.vstack([to_prev, [0, 0, 1]])
    m = np.linalg.inv(b) @ a
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    return np.stack([m[0, 0] * xx + m[0, 1] * yy + m[0, 2] - xx, m[1, 0] * xx + m[1, 1] * yy + m[1, 2] - yy], -1)


def flow_disagreement(flows, hulls, to_crops, hw) -> tuple[float, float, float]:
    """(mean |flow| px, mean |flow - transform motion| px, mean |flow - best similarity| px) inside the hulls."""
    from doublure.faces.align import umeyama_2d

    mag, off, floor = [], [], []
    yy, xx = np.mgrid[0:hw[0], 0:hw[1]].astype(np.float64)
    for t in range(1, len(flows)):
        sel = hulls[t] > 0.5
        flow = flows[t][sel].astype(np.float64)
        implied = transform_motion(to_crops[t - 1], to_crops[t], hw)[sel]
        points = np.stack([xx[sel], yy[sel]], 1)
        fit = umeyama_2d(points, points + flow)
        mag.append(np.linalg.norm(flow, axis=1).mean())
        off.append(np.linalg.norm(flow - implied, axis=1).mean())
        floor.append(np.linalg.norm(points + flow - (points @ fit[:, :2].T + fit[:, 2]), axis=1).mean())
    return float(np.mean(mag)), float(np.mean(off)), float(np.mean(floor))


def measure_shot(shot, base: Path, work: Path, frames: int, knobs: dict) -> dict:
    from doublure.faces.detect import working_to_srgb8

    g, frame_list, _ = e2e.prepare_shot(shot, base, work / shot.name, frames, knobs)
    tracked = e2e.tracked_faces(g, frame_list)
    if any(f is None for f in tracked):
        raise RuntimeError(f"{shot.name}: frames without the tracked face")
    plate0 = g.evaluate(g["Read1"], frame_list[0])
    x0, y0, x1, y1 = e2e.face_window(tracked, (plate0.height, plate0.width))
    ws = g.settings["working_space"]
    seq = {name: [] for name in ("Read1",) + CHAIN}
    placed = []
    for frame in frame_list:
        for name in seq:
            img = g.evaluate(g[name], frame)
            seq[name].append(working_to_srgb8(img.tensor[:3, y0:y1, x0:x1], ws))
            if name == "SwapModel1":
                placed.append(next(f for f in img.faces if f.track_id == tracked[0].track_id))
    hw = seq["Read1"][0].shape[:2]
    in_window = [M.shift_face(f, -x0, -y0) for f in tracked]
    hulls = [M.region_mask(f, "face_hull", hw) for f in in_window]
    fw = M.FlowWarp()
    flows = [None] + [fw.flow(seq["Read1"][t - 1], seq["Read1"][t]) for t in range(1, len(frame_list))]
    nodes = {name: M.stability(seq["Read1"], seq[name], hulls, flows) for name in CHAIN}
    parts = [region_masks(f, hull) for f, hull in zip(in_window, hulls)]
    last = CHAIN[-1]
    regions = {region: M.stability(seq["Read1"], seq[last], [p[region] for p in parts], flows)["ratio_flow"]
               for region in REGIONS}
    rows = np.asarray(nodes[last]["per_frame"])      # (plate raw, result raw, plate flow, result flow) per pair
    held = rows[:, 2] < HELD_CHANGE * np.median(rows[:, 2])
    mag, off_tracked, floor = flow_disagreement(flows, hulls, [f.to_crop for f in in_window], hw)
    _, off_placed, _ = flow_disagreement(flows, hulls, [M.shift_face(f, -x0, -y0).to_crop for f in placed], hw)
    g.cache.clear()
    return {"frames": len(frame_list), "face_px": float(np.median([f.width for f in tracked])),
            "nodes": {n: (s["ratio_raw"], s["ratio_flow"]) for n, s in nodes.items()},
            "regions": regions, "held_pairs": int(held.sum()),
            "held_share": float(rows[held, 3].sum() / rows[:, 2].sum()),
            "own_flow": own_flow_ratio(seq["Read1"], seq[last], hulls, nodes[last]["plate_flow"]),
            "flow_px": mag, "tracked_off_px": off_tracked, "placed_off_px": off_placed, "similarity_floor_px": floor}


def report(results: dict, knobs: dict) -> str:
    lines = [f"knobs: {', '.join(f'{n}.{k}={v}' for (n, k), v in knobs.items()) or 'as in demo.dbl'}", "",
             "| shot | " + " | ".join(n.rstrip("1") for n in CHAIN) + " |", "|---" * (len(CHAIN) + 1) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['nodes'][n][0]:.2f} / **{r['nodes'][n][1]:.2f}**" for n in CHAIN)
                     + " |")
    lines += ["", "(raw / after flow, result over plate, goal <= 1.1)", "",
              "| shot | face px | plate flow px | tracked fit vs flow px | SwapModel's placed faces vs flow px | "
              "best similarity vs flow px |", "|---|---|---|---|---|---|"]
    for name, r in results.items():
        lines.append(f"| {name} | {r['face_px']:.0f} | {r['flow_px']:.2f} | {r['tracked_off_px']:.2f} | "
                     f"{r['placed_off_px']:.2f} | {r['similarity_floor_px']:.2f} |")
    lines += ["", f"After {CHAIN[-1].rstrip('1')}, the whole chain: the ratio after flow inside parts of the face, the "
              "share of the ratio from frames where the plate repeats the one before, and each sequence compensated "
              "by its own flow:", "",
              "| shot | " + " | ".join(REGIONS) + " | repeated frames: pairs, share of the ratio | own flow |",
              "|---" * (len(REGIONS) + 3) + "|"]
    for name, r in results.items():
        lines.append(f"| {name} | " + " | ".join(f"{r['regions'][g]:.2f}" for g in REGIONS)
                     + f" | {r['held_pairs']}, {r['held_share']:.3f} | {r['own_flow']:.2f} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--shots", default="demo,d3,d11,d12,d14", help="comma-separated: demo, d0..d20, plates_1080")
    p.add_argument("--frames", type=int, default=40, help="frames per shot, from its first")
    p.add_argument("--knob", action="append", default=[], metavar="NODE.KNOB=VALUE",
                   help="set a knob of the demo graph first (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", default=str(Path(__file__).resolve().parent / "out" / "stability"))
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    knobs = e2e.parse_knobs(args.knob)
    shots = e2e.all_shots()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="doublure-stability-"))
    results = {}
    try:
        base = e2e.snapshot_demo(work)
        for name in args.shots.split(","):
            t0 = time.perf_counter()
            results[name] = measure_shot(shots[name], base, work, args.frames, knobs)
            r = results[name]
            print(f"{name}: " + ", ".join(f"{n} {v[1]:.2f}" for n, v in r["nodes"].items())
                  + f"; flow {r['flow_px']:.2f} px, tracked fit off by {r['tracked_off_px']:.2f}, placed "
                  f"{r['placed_off_px']:.2f}, floor {r['similarity_floor_px']:.2f} [{time.perf_counter() - t0:.0f} s]",
                  flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = report(results, knobs)
    (out / "stability.md").write_text(text + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())

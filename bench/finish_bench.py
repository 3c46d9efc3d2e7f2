"""Finishing-node benchmarks (ColorMatch, ShadowMatch, Grain, EyeFix), each against a reference measured in
the same run.

    OMP_WAIT_POLICY=PASSIVE .venv/bin/python bench/finish_bench.py [--frames N] [--device cuda]

1. ms per 1080p frame (plates_1080/demo1_video.mp4, 1080x1920, one face of ~200 px) for each node's
   compute alone (its inputs already evaluated and cached), median over N frames, next to the reference:
   OpenCV's 1080p RGB float32 GaussianBlur (sigma 2), a cost every compositor knows.
2. ColorMatch quality and speed per method and space on a MEAD face recoloured by a known per-channel gain
   and blurred (the answer is known): mean CIEDE2000 (colour-science) between the swap's skin and the
   plate's before and after the match, and ms per frame at 256 px.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")

import colour  # noqa: E402
import cv2  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
sys.path.insert(0, str(ROOT / "tests"))

import doublure.nodes  # noqa: E402,F401
import finish_nodes  # noqa: E402,F401  (the known-transform test nodes)
from doublure import engine  # noqa: E402
from doublure.engine.node import Inputs  # noqa: E402
from doublure.faces.masks import render_mask  # noqa: E402
from doublure.finish import colour as match_colour  # noqa: E402
from doublure.finish import colour_transfer  # noqa: E402


def time_compute(g: engine.Graph, node, frames: list[int], device: torch.device) -> float:
    """Median ms of ``node.compute`` alone (inputs evaluated and cached first)."""
    times = []
    for f in frames:
        ctx = g.context(f, device=device)
        inputs = Inputs(g, node, ctx)
        for i in range(len(node.inputs)):
            inputs.get(i)
        node.compute(ctx, inputs)  # warm: first-call allocations, sample memo for this frame's window
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        node.compute(ctx, inputs)
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - t) * 1e3)
    return statistics.median(times)


def bench_nodes(n_frames: int, device: torch.device) -> None:
    g = engine.Graph()
    g.set_setting("last", 250)
    read = g.create("Read", file=str(MEDIA / "plates_1080" / "demo1_video.mp4"), first=1, last=250)
    plate = g.create("FaceDetect")
    plate.set_input(0, read)
    swap = g.create("TestFinishRecolour", gain=(1.2, 0.95, 0.8), blur=1.0)
    swap.set_input(0, plate)
    grainy = g.create("TestFinishGrain")
    grainy.set_input(0, plate)
    frames = list(range(40, 40 + n_frames))

    nodes = {}
    for name, kw in [("ColorMatch mkl/oklab w=3", dict(type="ColorMatch")),
                     ("ColorMatch sot/lab w=3", dict(type="ColorMatch", method="sot", space="lab")),
                     ("ShadowMatch", dict(type="ShadowMatch")),
                     ("ShadowMatch sharp shadows", dict(type="ShadowMatch", sharp_shadows=True)),
                     ("EyeFix plate eyes", dict(type="EyeFix")),
                     ("EyeFix all modes", dict(type="EyeFix", iris_align=True, catchlight=1.0, sharpen=0.5)),
                     ("Grain", dict(type="Grain", analysis_samples=3, analysis_frames="40-60"))]:
        kw = dict(kw)
        node = g.create(kw.pop("type"), **kw)
        node.set_input(0, swap)
        node.set_input(1, grainy if node.type_name == "Grain" else plate)
        nodes[name] = node
    t = time.perf_counter()
    nodes["Grain"].action_analyse()
    analyse_ms = (time.perf_counter() - t) * 1e3

    img = g.evaluate(plate, frames[0]).tensor.permute(1, 2, 0).contiguous().numpy()
    ref = []
    for _ in range(5):
        t = time.perf_counter()
        cv2.GaussianBlur(img, (13, 13), 2.0)
        ref.append((time.perf_counter() - t) * 1e3)
    ref_ms = statistics.median(ref)
    print(f"\n1080p ({img.shape[1]}x{img.shape[0]}), median of {n_frames} frames, device {device}")
    print(f"  reference: cv2.GaussianBlur sigma 2, RGB float32 full frame: {ref_ms:.1f} ms")
    print(f"  Grain analyse (3 frames + neighbours, including decode and detection): {analyse_ms:.0f} ms")
    print(f"  {'node':32s} {'ms/frame':>9s} {'x reference':>12s}")
    for name, node in nodes.items():
        ms = time_compute(g, node, frames, device)
        print(f"  {name:32s} {ms:9.1f} {ms / ref_ms:12.2f}")


def bench_colormatch_quality() -> None:
    g = engine.Graph()
    g.set_setting("last", 100)
    read = g.create("Read", file=str(MEDIA / "mead" / "W009_front_neutral_level1_001.mp4"), first=1, last=100)
    plate = g.create("FaceDetect")
    plate.set_input(0, read)
    swap = g.create("TestFinishRecolour")  # gain (1.3, 0.95, 0.7) in linear light, blur 1 px
    swap.set_input(0, plate)
    m = match_colour.working_to_xyz_matrix("ACEScg")
    frame = 20
    p = g.evaluate(plate, frame)
    skin = render_mask(p.faces, "skin", (p.height, p.width), grow=-3)[0].numpy() > 0.99
    lab = lambda t: match_colour.to_match_space(t[:3].float(), "lab", m).permute(1, 2, 0).numpy()[skin]  # noqa: E731
    de = lambda t: colour.delta_E(lab(t), lab(p.tensor), method="CIE 2000").mean()  # noqa: E731
    print(f"\nColorMatch on MEAD W009 neutral frame {frame} (256 px), swap = plate x gain (1.3, 0.95, 0.7), blur 1 px")
    print(f"  CIEDE2000 swap vs plate skin before: {de(g.evaluate(swap, frame).tensor):.2f}")
    blur_only = g.create("TestFinishRecolour", gain=(1.0, 1.0, 1.0))
    blur_only.set_input(0, plate)
    print(f"  floor (blur alone, no colour change): {de(g.evaluate(blur_only, frame).tensor):.2f}")
    print(f"  {'method/space':18s} {'CIEDE2000':>9s} {'ms/frame':>9s}")
    for method in colour_transfer.METHODS:
        for space in match_colour.SPACES:
            node = g.create("ColorMatch", method=method, space=space, window=3)
            node.set_input(0, swap)
            node.set_input(1, plate)
            ms = time_compute(g, node, [frame], torch.device("cpu"))
            print(f"  {method + '/' + space:18s} {de(g.evaluate(node, frame).tensor):9.2f} {ms:9.1f}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--frames", type=int, default=5)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = ap.parse_args()
    torch.set_num_threads(2)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, device {args.device}")
    bench_nodes(args.frames, torch.device(args.device))
    bench_colormatch_quality()


if __name__ == "__main__":
    main()

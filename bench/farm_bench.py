"""Farm rendering throughput: a 200-frame render with 1 and 2 local Dask workers, against a single-process
``engine.render`` of the same project in the same run, and the fixed cost of one chunk.

    .venv/bin/python bench/farm_bench.py [--frames 200] [--chunk 10]

Graph: Read (a 512x512 EXR sequence made first from people/d11.mp4) -> Dot -> Write (EXR half, zip): the
I/O-bound end of farm work. Cluster start-up is timed apart from the renders (each render writes a fresh
folder on an already running cluster). The same render with the H.264 clip itself as the source is timed
too: each chunk then seeks into the clip, and with one keyframe a seek decodes every frame before it.

Chunk overhead: a 1-frame chunk of a trivial graph (8x8 EXR in, 8x8 EXR out), so what is measured is the
scheduling round trip plus loading the project and begin/end of the render in the task; a no-op Dask task
is timed as the floor.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


def build_project(folder: Path, source: str, frames: int, out: Path, name: str = "bench.dbl") -> str:
    from doublure import engine

    graph = engine.Graph(first=1, last=frames)
    read = graph.create("Read", file=source, first=1, last=frames)
    dot = graph.create("Dot")
    dot.set_input(0, read)
    graph.create("Write", file=str(out / "f.####.exr")).set_input(0, dot)
    path = folder / name
    graph.save(str(path))
    return str(path)


def retarget(project: str, out: Path) -> None:
    from doublure import engine

    graph = engine.load(project)
    graph.node("Write1")["file"] = str(out / "f.####.exr")
    graph.save(project)


def noop(x: int) -> int:
    return x


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--chunk", type=int, default=10)
    parser.add_argument("--clip", default=str(MEDIA / "people" / "d11.mp4"))
    args = parser.parse_args()

    import torch
    from distributed import Client

    import doublure.nodes  # noqa: F401
    from doublure import engine
    from doublure.engine import imageio
    from doublure.farm.cluster import cluster_address, start_local_cluster
    from doublure.farm.render import farm_render

    torch.set_num_threads(1)  # the same as a Dask worker process (OMP_NUM_THREADS=1)
    tmp = Path(tempfile.mkdtemp(prefix="farm_bench_"))
    print(f"load average at start: {os.getloadavg()}; CPUs: {os.cpu_count()}")
    try:
        plate = tmp / "plate"
        start = time.perf_counter()
        engine.render(engine.load(build_project(tmp, args.clip, args.frames, plate, "make_plate.dbl")))
        print(f"made the plate: {args.frames} EXR frames from {Path(args.clip).name} in "
              f"{time.perf_counter() - start:.1f} s")
        project = build_project(tmp, str(plate / "f.####.exr"), args.frames, tmp / "local")
        video_project = build_project(tmp, args.clip, args.frames, tmp / "video", "video.dbl")
        start = time.perf_counter()
        report = engine.render(engine.load(project))
        local_s = time.perf_counter() - start
        assert len(report.written) == args.frames
        print(f"single process engine.render: {args.frames} frames in {local_s:.1f} s = "
              f"{args.frames / local_s:.2f} frames/s (reference)")

        results = {}
        for workers in (1, 2):
            start = time.perf_counter()
            cluster = start_local_cluster(workers, gpus=0)
            client = Client(cluster, set_as_default=False)
            client.wait_for_workers(workers, timeout=300)
            client.run(lambda: __import__("doublure.nodes"))
            startup_s = time.perf_counter() - start
            out = tmp / f"farm{workers}"
            retarget(project, out)
            farm = farm_render(project, **cluster_address(cluster), chunk=args.chunk)
            assert len(farm.written) == args.frames and farm.ok
            results[workers] = farm.seconds
            print(f"farm, {workers} worker(s), chunk {args.chunk}: {args.frames} frames in {farm.seconds:.1f} s = "
                  f"{args.frames / farm.seconds:.2f} frames/s (cluster start-up {startup_s:.1f} s, not counted)")
            if workers == 2:
                video = farm_render(video_project, **cluster_address(cluster), chunk=args.chunk)
                print(f"  the same from the H.264 clip (each chunk seeks): {args.frames / video.seconds:.2f} frames/s")
                identical = all(np.array_equal(imageio.read_image(out / f"f.{f:04d}.exr").pixels,
                                               imageio.read_image(tmp / "local" / f"f.{f:04d}.exr").pixels)
                                for f in range(1, args.frames + 1, 17))
                print(f"  farm frames identical to the single-process render (every 17th checked): {identical}")

                # Fixed cost of a chunk: a trivial 1-frame graph, chunks of one frame, on one busy worker.
                tiny = tmp / "tiny"
                tiny.mkdir()
                imageio.write_image(tiny / "in.exr", np.full((8, 8, 3), 0.5, np.float32))
                graph = engine.Graph(first=1, last=40)
                read = graph.create("Read", file=str(tiny / "in.exr"), first=1, last=1)
                graph.create("Write", file=str(tiny / "out" / "t.####.exr")).set_input(0, read)
                graph.save(str(tiny / "tiny.dbl"))
                trivial = farm_render(str(tiny / "tiny.dbl"), **cluster_address(cluster), chunk=1)
                in_task = statistics.median(c.seconds for c in trivial.chunks)
                per_chunk = trivial.seconds / len(trivial.chunks) * workers
                start = time.perf_counter()
                client.gather([client.submit(noop, i, pure=False) for i in range(200)])
                noop_s = (time.perf_counter() - start) / 200 * workers
                print(f"chunk overhead ({len(trivial.chunks)} one-frame chunks of a trivial graph, {workers} "
                      f"workers): {per_chunk * 1000:.0f} ms wall per chunk per worker, of which "
                      f"{in_task * 1000:.0f} ms inside the task (load project, render 8x8); "
                      f"a no-op Dask task: {noop_s * 1000:.1f} ms")
            client.close()
            cluster.close()
        print(f"scaling 1 -> 2 workers: x{results[1] / results[2]:.2f}; 1 worker vs single process: "
              f"x{local_s / results[1]:.2f}")
        print(f"load average at end: {os.getloadavg()}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

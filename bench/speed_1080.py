"""1080p speed of the demo graph (issue 8): wall fps and CPU time per frame, with same-run references.

    python bench/speed_1080.py                      # prepare (track, grain) into build/speed_1080, then measure
    python bench/speed_1080.py --reuse --frames 20  # measure again on the prepared project (no tracking)
    python bench/speed_1080.py --reuse --profile build/render.prof   # also a cProfile of the render
    python bench/speed_1080.py --reuse --frame-workers 1,4           # render once with each count of frames
                                                                     # computing at once
    python bench/speed_1080.py --reuse --op-table build/ops.txt      # torch.profiler's op table (GPU: kernels)
    python bench/speed_1080.py --reuse --farm-workers 2,4            # the render spread over a local cluster

The demo project (``resources/demo/demo.dbl``, snapshot as ``bench/e2e.py`` takes it) with Read retargeted at
``plates_1080/demo1_video.mp4`` (1080x1920, face ~200 px), faces tracked and grain analysed once (stored beside
the project copy in ``--work`` and reused with ``--reuse``). Measured after one untimed pass over the frames
(see ``measure``), each part from an empty frame cache and empty node memos (``cold_start``):

- reference: a 2048^2 fp32 matmul (GFLOP/s, before and after) and the Read node alone (decode + colour).
- view: the graph pulled up to Grain, frame by frame, its whole frame built as the viewer shows it (what a
  compositor's viewer gets; no files written); and the torch ops a frame of it by node (``op_counts``: on
  a GPU mostly kernel launches, counted on any machine).
- render: ``Graph.render`` of both Writes (the project's EXR, half piz, and the H.264 preview), as
  ``doublure render`` runs it.
- each Write alone: its own CPU per frame (conversion, encoding, file), its input computed beforehand.

For each: wall fps, CPU time of the process per frame (user + sys, all threads; the comparable figure on a
machine shared with other jobs), of it sys time and the calling thread's own, minor page faults, and for
view and render the engine's per-node ms (own compute, wall). The Writes' share is the render's frame time
minus its nodes'. One JSON line at the end (``--json``) lets a shell loop alternate two trees
(``PYTHONPATH`` pointing at another checkout's package) and compare.
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("GLOG_minloglevel", "2")

import argparse  # noqa: E402
import cProfile  # noqa: E402
import json  # noqa: E402
import resource  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import torch  # noqa: E402

import e2e  # noqa: E402  (the demo snapshot, the shot preparation and the speed references)
from doublure.engine.cache import clear_memos  # noqa: E402

SHOT = e2e.all_shots()[e2e.SPEED_SHOT]


def prepared_graph(work: Path, frames: int, reuse: bool):
    """The retargeted demo project in ``work`` (tracked and analysed), loaded; prepared unless ``reuse``."""
    import doublure.nodes  # noqa: F401
    from doublure import engine

    project = work / SHOT.name / f"{SHOT.name}.dbl"
    if reuse and project.exists():
        g = engine.load(str(project))
        # stored tracks go stale when the code upstream changes its hash (a new Read version): FaceDetect
        # then detects every frame live (~50 ms) and the figures would measure that instead
        if g["Read1"].value("last") >= frames and g["FaceDetect1"].current_analysis() is not None:
            return g
        print("the prepared project's tracks are stale or too short: preparing again", flush=True)
    base = e2e.snapshot_demo(work)
    g, _, seconds = e2e.prepare_shot(SHOT, base, work / SHOT.name, frames)
    print(f"prepared: tracking {seconds['track']:.1f} s, grain analysis {seconds['grain']:.1f} s", flush=True)
    return g


def timed(fn, frames: int) -> dict:
    """Run ``fn`` once; per frame over ``frames`` frames: wall fps, CPU ms of the process (user + sys, all
    threads), of it sys ms and the calling thread's own CPU ms (the pipeline's compute side; torch's
    intra-op helpers, the writer thread and the codecs' threads count in the process figure only)."""
    w0, t0, m0 = time.perf_counter(), os.times(), time.thread_time()
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    fn()
    wall, t1, main = time.perf_counter() - w0, os.times(), time.thread_time() - m0
    faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0
    user, system = t1.user - t0.user, t1.system - t0.system
    return {"fps": frames / wall, "cpu_ms": (user + system) / frames * 1e3, "sys_ms": system / frames * 1e3,
            "main_ms": main / frames * 1e3, "wall_ms": wall / frames * 1e3, "faults": faults / frames}


def node_ms(g, frames: int) -> dict[str, float]:
    return {name: t.seconds / frames * 1e3 for name, t in g.timings.items() if name != e2e.MASK_NODE}


def cold_start(g) -> None:
    """Empty the frame cache, the node modules' memos (decoded faces, flows, masks: otherwise the untimed
    pass would have left every frame's decode in them) and the engine's timings."""
    g.cache.clear()
    clear_memos()
    g.timings.clear()


def render_from_cold(g, folder: Path) -> None:
    """A cold start, and both Writes pointed into ``folder``: files of its own, so a render there keeps none
    of another's frames as complete."""
    cold_start(g)
    g["Write1"]["file"] = str(folder / "speed.####.exr")
    g["Write2"]["file"] = str(folder / "speed.mp4")


def measure(g, frames: list[int], out_dir: Path, profile: str | None, frame_workers: list[int],
            op_table: str | None = None) -> dict:
    result = {"frames": len(frames), "gflops_before": e2e.matmul_gflops()}
    # An untimed pass first: the memory the cache then gives back is reused by every timed part, as in a
    # long render whose cache is full and evicting (a first touch of fresh memory costs a page fault per
    # 4 KiB: on a cold process that alone is ~130 ms of sys time per 1080p frame of the graph).
    for f in frames:
        g.evaluate(g["Grain1"], f)
    read = g["Read1"]
    cold_start(g)
    result["read"] = timed(lambda: [g.evaluate(read, f) for f in frames], len(frames))

    cold_start(g)
    result["view"] = timed(lambda: [g.evaluate(g["Grain1"], f).tensor for f in frames], len(frames))
    result["view"]["node_ms"] = node_ms(g, len(frames))

    cold_start(g)
    result["ops"] = op_counts(g, frames[:10])

    profiler = cProfile.Profile() if profile else None

    def render(workers: int) -> None:
        if profiler:
            profiler.enable()
        report = g.render(None, frames, frame_workers=workers)
        if profiler:
            profiler.disable()
        if not report.ok or len(report.written) != 2 * len(frames):
            raise SystemExit(f"render failed: {report.failures[:3]} ({len(report.written)} written, "
                             f"{len(report.skipped)} kept)")

    # "render" with the first count of frames computing at once, "render xN" with each other count N
    for workers in frame_workers:
        render_from_cold(g, out_dir / f"x{workers}")
        part = "render" if workers == frame_workers[0] else f"render x{workers}"
        result[part] = timed(lambda: render(workers), len(frames))
        result[part]["frame_workers"] = workers
        nodes = node_ms(g, len(frames))
        result[part]["node_ms"] = nodes
        if workers == 1:   # with frames side by side the nodes' times add up over the threads, past the wall
            result[part]["writes_ms"] = result[part]["wall_ms"] - sum(nodes.values())
        if profiler:
            profiler.dump_stats(profile)
            profiler = None   # the first render's profile
    if op_table:
        write_op_table(g, frames[:10], out_dir, op_table)
    result["writes_alone"] = writes_alone(g, frames, out_dir)
    result["gflops_after"] = e2e.matmul_gflops()
    result["load"] = os.getloadavg()[0]
    return result


def op_counts(g, frames: list[int]) -> dict:
    """torch ops a frame, by node, of the view (up to Grain) pulled over ``frames`` from a cold start, view ops
    left out. On a GPU most are kernel launches (~1,100 a frame cost an H200's host 12 ms a frame); the rest
    are the nodes' host-side maths on small CPU tensors (affines, tables), counted here on every device. So
    the count tracks the launch overhead on a machine without a GPU, as an upper bound. Scalar reads
    (``.item()``, ``bool()`` of a tensor, ``nonzero``) are counted apart: on a GPU each of a tensor living
    there waits for the queue (reads of the host's own small tensors count here too; on CUDA ``--op-table``
    lists the real waits by line)."""
    import collections
    import sys

    from torch.utils._python_dispatch import TorchDispatchMode

    compute = type(g)._compute.__code__
    ops: collections.Counter = collections.Counter()
    reads: collections.Counter = collections.Counter()

    def node_computing() -> str:
        f = sys._getframe(2)
        while f is not None and f.f_code is not compute:
            f = f.f_back
        return f.f_locals["node"].name if f is not None else "engine"

    class Count(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            if not func.is_view:
                name = node_computing()
                ops[name] += 1
                if func.__name__.split(".")[0] in ("_local_scalar_dense", "nonzero", "is_nonzero", "equal"):
                    reads[name] += 1
            return func(*args, **(kwargs or {}))

    with Count():
        for f in frames:
            g.evaluate(g["Grain1"], f).tensor
    per_frame = lambda counts: {k: v / len(frames) for k, v in counts.most_common()}  # noqa: E731
    return {"total": sum(ops.values()) / len(frames), "by_node": per_frame(ops),
            "scalar_reads": sum(reads.values()) / len(frames), "reads_by_node": per_frame(reads)}


def write_op_table(g, frames: list[int], out_dir: Path, path: str) -> None:
    """torch.profiler's op table of a render of ``frames`` from a cold cache (one frame at a time), by
    device time and by CPU time: where a GPU render spends its kernels and its host-side waits (a stream
    sync shows as host time in the op that waits); on a GPU then the lines of ours whose ops waited for the
    device (:func:`sync_sites`)."""
    from torch.profiler import ProfilerActivity, profile

    render_from_cold(g, out_dir / "ops")
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if torch.cuda.is_available() else [])
    with profile(activities=activities) as prof:
        g.render(None, frames)
    table = prof.key_averages()
    with open(path, "w", encoding="utf-8") as f:
        for key in (["cuda_time_total"] if torch.cuda.is_available() else []) + ["cpu_time_total"]:
            f.write(f"{len(frames)} frames, sorted by {key}\n{table.table(sort_by=key, row_limit=40)}\n\n")
        if torch.cuda.is_available():
            render_from_cold(g, out_dir / "syncs")
            sites = sync_sites(lambda: g.render(None, frames))
            f.write(f"{len(frames)} frames: lines whose ops waited for the GPU (torch's sync debug mode), "
                    f"per frame\n")
            for (what, where), count in sites.most_common(60):
                f.write(f"{count / len(frames):7.1f}  {what:50s}  {where}\n")


def sync_sites(run) -> "collections.Counter":
    """(warning, our innermost calling lines) -> count of the synchronising CUDA calls ``run`` made
    (``torch.cuda.set_sync_debug_mode``): each one leaves the GPU idle until the host catches up."""
    import collections
    import traceback
    import warnings

    sites: collections.Counter = collections.Counter()
    ours = str(e2e.ROOT)

    def record(message, category, filename, lineno, file=None, line=None):
        stack = [s for s in traceback.extract_stack()[:-1] if s.filename.startswith(ours) or "/doublure/" in s.filename]
        where = " <- ".join(f"{Path(s.filename).parent.name}/{Path(s.filename).name}:{s.lineno}"
                            for s in reversed(stack[-3:]))
        sites[(str(message).splitlines()[0][:50], where)] += 1

    with warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = record
        torch.cuda.set_sync_debug_mode("warn")
        try:
            run()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    return sites


def farm_fps(g, frames: list[int], out_dir: Path, counts: list[int]) -> dict[str, float]:
    """Frames per second of the render spread over a local Dask cluster of N worker processes (sharing the
    GPUs round-robin), one chunk of the frames per worker. Each cluster is started and its workers warmed up
    first (imports, CUDA, the model, the tracks: a farm's fixed cost, not its rate); the movie Write's parts
    are joined within the time."""
    from distributed import Client

    from doublure.farm.cluster import cluster_address, start_local_cluster
    from doublure.farm.render import farm_render

    results = {}
    for count in counts:
        cluster = start_local_cluster(count)
        client = Client(cluster, set_as_default=False)
        try:
            client.wait_for_workers(count, timeout=300)
            for part, part_frames, chunk in (("warm", frames[:count], 1),
                                             ("timed", frames, -(-len(frames) // count))):
                folder = out_dir / f"farm{count}_{part}"
                g["Write1"]["file"] = str(folder / "speed.####.exr")
                g["Write2"]["file"] = str(folder / "speed.mp4")
                project = Path(g.project_path).with_name(f"speed_farm_{part}.dbl")  # the tracks stay beside
                g.save(str(project))
                t0 = time.perf_counter()
                report = farm_render(str(project), frames=f"{part_frames[0]}-{part_frames[-1]}",
                                     **cluster_address(cluster), chunk=chunk)
                if not report.ok or not report.movies_joined:
                    raise SystemExit(f"farm render failed: {report.summary()}")
            results[f"farm x{count}"] = len(frames) / (time.perf_counter() - t0)
        finally:
            client.close()
            cluster.close()
    return results


def writes_alone(g, frames: list[int], out_dir: Path) -> dict[str, float]:
    """CPU ms per frame of each Write's own work (conversion, encoding, file), run inline with its input
    already computed (evaluated before the timing; the render left most frames in the cache)."""
    writes = [g["Write1"], g["Write2"]]
    for w in writes:
        stem, ext = os.path.splitext(os.path.basename(w.value("file")))
        w["file"] = str(out_dir / f"alone_{stem}{ext}")
        w.begin_render(g.context(frames[0]), frames)
    cpu = {w.name: 0.0 for w in writes}
    try:
        for frame in frames:
            ctx = g.context(frame)
            g.evaluate_node(g["Grain1"], ctx)
            for w in writes:
                t0 = os.times()
                w.execute(ctx)
                t1 = os.times()
                cpu[w.name] += (t1.user - t0.user + t1.system - t0.system) / len(frames) * 1e3
    finally:
        for w in writes:
            w.end_render(True)
    return cpu


def report(r: dict) -> None:
    print(f"{r['frames']} frames of {SHOT.clip.name}, load average {r['load']:.1f}, matmul "
          f"{r['gflops_before']:.0f} / {r['gflops_after']:.0f} GFLOP/s (before / after)")
    renders = [part for part in r if part.startswith("render")]
    labels = {"read": "Read alone", "view": "view (up to Grain)"}
    for part in ("read", "view", *renders):
        m = r[part]
        label = labels.get(part) or f"render, {m['frame_workers']} at once"
        print(f"  {label:22s} {m['fps']:6.2f} fps wall  {m['cpu_ms']:5.0f} ms CPU / frame (sys {m['sys_ms']:.0f}, "
              f"main thread {m['main_ms']:.0f}; {m['faults']:.0f} page faults)  ({m['fps'] / r['read']['fps']:.2f}x Read)")
    for part in ("view", *renders):
        nodes = sorted(r[part]["node_ms"].items(), key=lambda kv: -kv[1])
        extra = (f", Writes + engine {r[part]['writes_ms']:.0f}" if "writes_ms" in r[part] else
                 " (summed over the frames computing at once)" if part != "view" else "")
        print(f"  {part} per node ms: " + ", ".join(f"{k} {v:.0f}" for k, v in nodes) + extra)
    ops = r["ops"]
    print(f"  view, torch ops / frame (mostly kernel launches on a GPU): {ops['total']:.0f}: "
          + ", ".join(f"{k} {v:.0f}" for k, v in ops["by_node"].items())
          + f"; of them scalar reads (a wait each on a GPU for a tensor there) {ops['scalar_reads']:.1f}: "
          + ", ".join(f"{k} {v:.1f}" for k, v in ops["reads_by_node"].items()))
    print("  each Write alone, CPU ms / frame: " + ", ".join(f"{k} {v:.0f}" for k, v in r["writes_alone"].items()))
    for label, fps in r.get("farm", {}).items():
        print(f"  render on a local cluster, {label[len('farm x'):]} workers: {fps:.2f} fps wall "
              f"({fps / r['read']['fps']:.2f}x Read)")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--frames", type=int, default=20, help="frames measured (default 20)")
    p.add_argument("--work", type=Path, default=e2e.ROOT / "build" / "speed_1080",
                   help="where the prepared project and its tracks live (default build/speed_1080)")
    p.add_argument("--reuse", action="store_true", help="reuse a prepared project in --work")
    p.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    p.add_argument("--profile", help="write a cProfile of the render to this file")
    p.add_argument("--op-table", help="write torch.profiler's op table of a 10-frame render to this file")
    p.add_argument("--json", action="store_true", help="print the figures as one JSON line too")
    p.add_argument("--exr-compression", help="what if: Write1's compression (e.g. piz), not the project's")
    p.add_argument("--farm-workers", default="",
                   help="also render over a local Dask cluster of each of these worker counts (2,4)")
    p.add_argument("--frame-workers", default="1",
                   help="frames computing at once in the render; several (1,4) render once with each")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    g = prepared_graph(args.work, args.frames, args.reuse)
    if args.exr_compression:
        g["Write1"]["compression"] = args.exr_compression
    frames = list(range(1, args.frames + 1))
    with tempfile.TemporaryDirectory(prefix="speed_1080_") as tmp:
        r = measure(g, frames, Path(tmp), args.profile, [int(n) for n in args.frame_workers.split(",")],
                    args.op_table)
        if args.farm_workers:
            r["farm"] = farm_fps(g, frames, Path(tmp), [int(n) for n in args.farm_workers.split(",")])
    report(r)
    if args.json:
        print(json.dumps(r))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

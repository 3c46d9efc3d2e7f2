"""Engine overhead and cached fetch.

1. A chain of 50 trivial nodes (a gain each) evaluated through the engine on fresh 1080p RGBA frames, against
   the same 50 torch calls made directly on the same frames in the same run. Goal: <= 1.05x. A third run
   makes the same direct calls into the memory the engine's full cache gives a new frame (the least recently
   used of 32 frames kept): what keeping frames costs, apart from the engine's own work.
   The gains take their input (``Inputs.take``): each multiplies in place the frame the node above computed
   for it alone (the cache keeps the chain's end), so the direct reference multiplies in place too. For the
   record, the same chain of gains that read their input (``Inputs.get``: every node's frame kept in the
   cache) against direct out-of-place multiplies (``t = t * gain``).
   Wall time, process CPU time (user + system, all threads; on a shared machine the steadier of the two)
   and page faults per frame. Measured once the cache is full, its steady state in the app: while it fills,
   each frame it keeps is memory the process never used (8,100 page faults per 32 MB frame); once full, a new
   frame takes the memory of one it evicts. Each pair is measured interleaved, each side first in turn.
   The library's Merge, which takes its B input likewise: a chain of 8 Merges (over) of one kept layer onto
   each frame, against the same ``merge`` calls made directly in place.
2. A cached frame fetched again at 1080p RGBA (hash of the chain + cache lookup): median of 100. Goal <= 2 ms.
3. Where the engine's time goes: the chain of gains taking their input again, each gain timing its own maths
   (process CPU time around ``mul_``), against the same calls timed alike: the CPU time a frame spends outside
   the maths on each side, at 1080p and on 8x8 frames (where the maths is nothing and the CPU's caches stay
   warm: the engine's own work alone). A 1080p frame is about the size of the CPU's last-level cache, so each
   gain's pass over it evicts whatever the engine's Python touched before: its own work costs more there.

The process's allocator is set as the ``doublure`` command sets it (``engine.memory.keep_freed_frames``), for
the direct calls as for the engine (one process); ``--allocator default`` leaves glibc's own thresholds.

Run: .venv/bin/python bench/engine_bench.py [--allocator default] [--threads N] [--only overhead]
(``--only overhead``: the first comparison and the CPU outside the maths, none of the rest).
"""
from __future__ import annotations

import argparse
import collections
import platform
import resource
import statistics
import time

import torch

from doublure import engine
from doublure.engine import Image, Node, knobs as K, register_node
from doublure.engine.memory import keep_freed_frames
from doublure.nodes.merge import merge

MERGES = 8

CHAIN = 50
H, W = 1080, 1920
FRAME_BYTES = 4 * H * W * 4
CACHE_BUDGET = 2**30
# frames evaluated before measuring, so that the cache (32 frames of 32 MB) is full: the chain of gains that
# take their input keeps one frame a frame, the one of gains that read it 51
WARM_UP_TAKEN = CACHE_BUDGET // FRAME_BYTES + 2
WARM_UP_KEPT = 2


@register_node
class BenchSource(Node):
    """A 1080p RGBA frame whose values depend on the frame (fresh work per frame)."""

    type_name = "BenchSource"
    inputs = ()

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        frame = torch.full((4, H, W), float(ctx.frame), out=inputs.new_tensor((4, H, W)))
        return Image(frame, channels=("R", "G", "B", "A"))


@register_node
class BenchGain(Node):
    """A gain that takes its input: in place when the engine hands the frame over (a chain's transient frame)."""

    type_name = "BenchGain"
    knob_specs = (K.Float("gain", 1.0),)

    def compute(self, ctx, inputs):
        image, writable = inputs.take(0)
        gain = self.value("gain", ctx.frame)
        return image.replace(tensor=image.tensor.mul_(gain) if writable else image.tensor * gain)


MATHS_CPU_S = [0.0]
"""CPU time spent in the timed gains' maths (``BenchGainTimed``, ``direct_timed``), summed."""


@register_node
class BenchGainTimed(BenchGain):
    """``BenchGain`` adding the CPU time of its maths to :data:`MATHS_CPU_S`."""

    type_name = "BenchGainTimed"

    def compute(self, ctx, inputs):
        image, writable = inputs.take(0)
        gain = self.value("gain", ctx.frame)
        start = time.process_time()
        tensor = image.tensor.mul_(gain) if writable else image.tensor * gain
        MATHS_CPU_S[0] += time.process_time() - start
        return image.replace(tensor=tensor)


def direct_timed(frame: int, gains: list[float]) -> torch.Tensor:
    """``direct_in_place``, each multiply timed as ``BenchGainTimed`` times its own."""
    t = torch.full((4, H, W), float(frame))
    for gain in gains:
        start = time.process_time()
        t.mul_(gain)
        MATHS_CPU_S[0] += time.process_time() - start
    return t


def outside_maths(runs: dict, frames) -> dict:
    """Median CPU time a frame of each run spends outside the timed maths (seconds), interleaved as in
    :func:`compare` (each run first in turn), once the cache is full."""
    for frame in range(-WARM_UP_TAKEN, 0):
        for run in runs.values():
            run(frame)
    outside: dict[str, list[float]] = {name: [] for name in runs}
    for frame in frames:
        for name in (list(runs) if frame % 2 else list(runs)[::-1]):
            MATHS_CPU_S[0] = 0.0
            start = time.process_time()
            runs[name](frame)
            outside[name].append(time.process_time() - start - MATHS_CPU_S[0])
    return {name: statistics.median(v) for name, v in outside.items()}


@register_node
class BenchGainKept(Node):
    """A gain that reads its input: its input's frame stays in the cache."""

    type_name = "BenchGainKept"
    knob_specs = (K.Float("gain", 1.0),)

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        return image.replace(tensor=image.tensor * self.value("gain", ctx.frame))


@register_node
class BenchLayer(Node):
    """A half-transparent grey 1080p RGBA layer, the same on every frame (kept in the cache)."""

    type_name = "BenchLayer"
    inputs = ()

    def compute(self, ctx, inputs):
        return Image(layer(), channels=("R", "G", "B", "A"))


def layer() -> torch.Tensor:
    return torch.full((4, H, W), 0.25)


def merge_chain() -> tuple[engine.Graph, Node]:
    g = engine.Graph(cache=engine.FrameCache(host_budget=CACHE_BUDGET))
    node, a = g.create("BenchSource"), g.create("BenchLayer")
    for _ in range(MERGES):
        node = g.create("Merge", operation="over", inputs=[node, a])
    return g, node


def direct_merges(frame: int, a: torch.Tensor) -> torch.Tensor:
    b = torch.full((4, H, W), float(frame))
    for _ in range(MERGES):
        merge(a, b, "over", out=b)
    return b


def direct_in_place(frame: int, gains: list[float]) -> torch.Tensor:
    t = torch.full((4, H, W), float(frame))
    for gain in gains:
        t.mul_(gain)
    return t


def direct_into_kept(frame: int, gains: list[float], kept: collections.deque) -> torch.Tensor:
    """``direct_in_place`` writing each frame into the least recently used of as many kept frames as the
    cache holds (and keeping it): the memory the engine's cache gives a new frame."""
    t = kept.popleft()
    torch.full((4, H, W), float(frame), out=t)
    for gain in gains:
        t.mul_(gain)
    kept.append(t)
    return t


def direct(frame: int, gains: list[float]) -> torch.Tensor:
    t = torch.full((4, H, W), float(frame))
    for gain in gains:
        t = t * gain
    return t


def timed(fn) -> tuple[float, float, int, object]:
    """(wall s, process CPU s, page faults, result) of ``fn()``."""
    f0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    w0, c0 = time.perf_counter(), time.process_time()
    result = fn()
    wall, cpu = time.perf_counter() - w0, time.process_time() - c0
    return wall, cpu, resource.getrusage(resource.RUSAGE_SELF).ru_minflt - f0, result


def chain(node_type: str, gains: list[float]) -> tuple[engine.Graph, Node]:
    g = engine.Graph(cache=engine.FrameCache(host_budget=CACHE_BUDGET))
    node = g.create("BenchSource")
    for gain in gains:
        node = g.create(node_type, gain=gain, inputs=[node])
    return g, node


def compare(runs: dict, frames, warm_up: int) -> tuple[dict, dict, dict, dict]:
    """Median (wall s, CPU s, page faults) a frame of each run ("engine" first in ``runs``), interleaved and
    in turn forwards and backwards (ABCCBA), so machine noise hits all alike; the results are checked equal.
    Fourth: the median over frames of the engine's CPU time over each other run's for the same frame (the two
    measured one after the other, so a burst of load on the shared machine weighs on both)."""
    for frame in range(-warm_up, 0):
        for run in runs.values():
            run(frame)
    times: dict[str, list[tuple[float, float, int]]] = {name: [] for name in runs}
    for frame in frames:
        results = {}
        for name in (list(runs) if frame % 2 else list(runs)[::-1]):
            *measured, results[name] = timed(lambda: runs[name](frame))
            times[name].append(measured)
        assert all(torch.equal(results["engine"], result) for result in results.values())
        del results
    wall, cpu, faults = ({k: statistics.median(m[i] for m in v) for k, v in times.items()} for i in range(3))
    paired = {k: statistics.median(e[1] / m[1] for e, m in zip(times["engine"], v)) for k, v in times.items()}
    return wall, cpu, faults, paired


def report(what: str, wall: dict, cpu: dict, faults: dict, paired: dict, goal: str = "") -> None:
    sides = "; ".join(f"{name} {wall[name] * 1e3:.1f} ms/frame wall, {cpu[name] * 1e3:.1f} ms CPU, "
                      f"{faults[name]:.0f} page faults" for name in wall)
    ratios = "; ".join(f"engine / {name}: wall {wall['engine'] / wall[name]:.3f}, CPU "
                       f"{cpu['engine'] / cpu[name]:.3f} (paired, CPU: median {paired[name]:.3f})"
                       for name in wall if name != "engine")
    print(f"{what}: {sides}. Ratio {ratios}{goal}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--allocator", choices=("frames", "default"), default="frames",
                        help="frames: glibc's thresholds as the doublure command sets them; default: glibc's own")
    parser.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    parser.add_argument("--only", choices=("overhead",),
                        help="overhead: the chain of gains taking their input and the CPU outside the maths alone")
    args = parser.parse_args()
    # "frames" only where it took (glibc, thresholds not set in the environment)
    allocator = "frames" if args.allocator == "frames" and keep_freed_frames() else "default"
    torch.set_num_threads(args.threads)
    gains = [1.0 + 1e-4 * i for i in range(CHAIN)]
    frames = list(range(1, 17))
    g, node = chain("BenchGain", gains)
    kept_frames = collections.deque(torch.zeros(4, H, W) for _ in range(CACHE_BUDGET // FRAME_BYTES))
    taken = compare({"engine": lambda frame: g.evaluate(node, frame).tensor,
                     "direct": lambda frame: direct_in_place(frame, gains),
                     "direct into kept memory": lambda frame: direct_into_kept(frame, gains, kept_frames)},
                    frames, WARM_UP_TAKEN)
    del kept_frames
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads, allocator {allocator}")
    report(f"chain of {CHAIN} gains taking their input, 1080p RGBA, against the same calls in place", *taken,
           " (goal <= 1.05 against direct)")
    if not args.only:
        others(g, node, gains, frames)
    del g, node
    outside_maths_report(gains)


def others(g: engine.Graph, node: Node, gains: list[float], frames: list[int]) -> None:
    """The merges, the chain reading its input and the cached fetch through ``g``'s chain ``node``."""
    g_merge, node_merge = merge_chain()
    a = layer()
    merges = compare({"engine": lambda frame: g_merge.evaluate(node_merge, frame).tensor,
                      "direct": lambda frame: direct_merges(frame, a)}, frames, WARM_UP_TAKEN)
    del g_merge, node_merge, a
    g_kept, node_kept = chain("BenchGainKept", gains)
    kept = compare({"engine": lambda frame: g_kept.evaluate(node_kept, frame).tensor,
                    "direct": lambda frame: direct(frame, gains)}, frames, WARM_UP_KEPT)
    del g_kept, node_kept

    fetch_ms = []
    for _ in range(100):
        g._hash_memo = {}  # a cold hash walk each time: what a scrub back to a cached frame costs
        t0 = time.perf_counter()
        g.evaluate(node, frames[-1])
        fetch_ms.append((time.perf_counter() - t0) * 1e3)
    report(f"chain of {MERGES} library Merges (over) taking B, against the same merge calls in place", *merges)
    report(f"chain of {CHAIN} gains reading their input (every frame kept), against t = t * gain", *kept)
    print(f"cached 1080p RGBA fetch through a {CHAIN}-node chain: median {statistics.median(fetch_ms):.3f} ms, "
          f"p95 {sorted(fetch_ms)[94]:.3f} ms (goal <= 2 ms)")


def outside_maths_report(gains: list[float]) -> None:
    """Where the engine's time goes (3. above), at 1080p and on 8x8 frames."""
    global H, W  # the last measure sets the frame size
    for size in ((H, W), (8, 8)):
        H, W = size
        g_timed, node_timed = chain("BenchGainTimed", gains)
        outside = outside_maths({"engine": lambda frame: g_timed.evaluate(node_timed, frame).tensor,
                                 "direct": lambda frame: direct_timed(frame, gains)},
                                range(1, 17) if size[0] > 8 else range(1, 201))
        print(f"CPU outside the maths, {CHAIN} gains taking their input, {W}x{H} RGBA: engine "
              f"{outside['engine'] * 1e3:.2f} ms/frame, direct {outside['direct'] * 1e3:.2f} ms/frame: the engine's "
              f"own work {(outside['engine'] - outside['direct']) * 1e3:.2f} ms/frame")
        del g_timed, node_timed


if __name__ == "__main__":
    main()

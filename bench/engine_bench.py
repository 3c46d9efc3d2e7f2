"""Engine overhead and cached fetch.

1. A chain of 50 trivial nodes (a gain each) evaluated through the engine on fresh 1080p RGBA frames, against
   the same 50 torch multiplies called directly on the same frames in the same run. Goal: <= 1.05x.
   Wall time, process CPU time (user + system, all threads; on a shared machine the steadier of the two)
   and page faults per frame (the engine keeps every node's frame in its cache). Measured once the cache is
   full, its steady state in the app: while it fills, each frame it keeps is memory the process never used
   (8,100 page faults per 32 MB frame); once full, a new frame takes the memory of one it evicts.
2. A cached frame fetched again at 1080p RGBA (hash of the chain + cache lookup): median of 100. Goal <= 2 ms.

Run: .venv/bin/python bench/engine_bench.py
"""
from __future__ import annotations

import platform
import resource
import statistics
import time

import torch

from doublure import engine
from doublure.engine import Image, Node, knobs as K, register_node

CHAIN = 50
H, W = 1080, 1920
CACHE_BUDGET = 3 * 2**30
WARM_UP_FRAMES = 4   # 51 frames of 32 MB each: the 3 GiB cache is full during the second


@register_node
class BenchSource(Node):
    """A 1080p RGBA frame whose values depend on the frame (fresh work per frame)."""

    type_name = "BenchSource"
    inputs = ()

    def hash(self, ctx, h):
        super().hash(ctx, h)
        h.update(ctx.frame)

    def compute(self, ctx, inputs):
        return Image(torch.full((4, H, W), float(ctx.frame), device=ctx.device), channels=("R", "G", "B", "A"))


@register_node
class BenchGain(Node):
    type_name = "BenchGain"
    knob_specs = (K.Float("gain", 1.0),)

    def compute(self, ctx, inputs):
        image = inputs.get(0)
        return image.replace(tensor=image.tensor * self.value("gain", ctx.frame))


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


def main() -> None:
    torch.set_num_threads(2)
    g = engine.Graph(cache=engine.FrameCache(host_budget=CACHE_BUDGET))
    node = g.create("BenchSource")
    gains = [1.0 + 1e-4 * i for i in range(CHAIN)]
    for gain in gains:
        node = g.create("BenchGain", gain=gain, inputs=[node])
    frames = list(range(1, 11))
    for frame in range(-WARM_UP_FRAMES, 0):
        direct(frame, gains)
        g.evaluate(node, frame)
    runs = {"direct": lambda frame: direct(frame, gains), "engine": lambda frame: g.evaluate(node, frame).tensor}
    times: dict[str, list[tuple[float, float, int]]] = {"direct": [], "engine": []}
    for frame in frames:  # interleaved, each first in turn (ABBA), so machine noise hits both alike
        results = {}
        for name in (("direct", "engine") if frame % 2 else ("engine", "direct")):
            *measured, results[name] = timed(lambda: runs[name](frame))
            times[name].append(measured)
        assert torch.equal(results["engine"], results["direct"])
        del results
    wall, cpu, faults = ({k: statistics.median(m[i] for m in v) for k, v in times.items()} for i in range(3))

    fetch_ms = []
    for _ in range(100):
        g._hash_memo = {}  # a cold hash walk each time: what a scrub back to a cached frame costs
        t0 = time.perf_counter()
        g.evaluate(node, frames[-1])
        fetch_ms.append((time.perf_counter() - t0) * 1e3)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"chain of {CHAIN} gains on 1080p RGBA: engine {wall['engine'] * 1e3:.1f} ms/frame wall, "
          f"{cpu['engine'] * 1e3:.1f} ms CPU, {faults['engine']:.0f} page faults; direct {wall['direct'] * 1e3:.1f} "
          f"ms wall, {cpu['direct'] * 1e3:.1f} ms CPU, {faults['direct']:.0f} page faults; ratio wall "
          f"{wall['engine'] / wall['direct']:.3f}, CPU {cpu['engine'] / cpu['direct']:.3f} (goal <= 1.05)")
    print(f"cached 1080p RGBA fetch through a {CHAIN}-node chain: median {statistics.median(fetch_ms):.3f} ms, "
          f"p95 {sorted(fetch_ms)[94]:.3f} ms (goal <= 2 ms)")


if __name__ == "__main__":
    main()

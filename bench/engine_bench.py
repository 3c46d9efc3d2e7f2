"""Engine overhead and cached fetch.

1. A chain of 50 trivial nodes (a gain each) evaluated through the engine on fresh 1080p RGBA frames, against
   the same 50 torch multiplies called directly on the same frames in the same run. Goal: <= 1.05x.
2. A cached frame fetched again at 1080p RGBA (hash of the chain + cache lookup): median of 100. Goal <= 2 ms.

Run: .venv/bin/python bench/engine_bench.py
"""
from __future__ import annotations

import platform
import statistics
import time

import torch

from doublure import engine
from doublure.engine import Image, Node, knobs as K, register_node

CHAIN = 50
H, W = 1080, 1920


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


def main() -> None:
    torch.set_num_threads(2)
    g = engine.Graph(cache=engine.FrameCache(host_budget=3 * 2**30))
    node = g.create("BenchSource")
    gains = [1.0 + 1e-4 * i for i in range(CHAIN)]
    for gain in gains:
        node = g.create("BenchGain", gain=gain, inputs=[node])
    frames = list(range(1, 11))
    direct(0, gains)
    g.evaluate(node, 0)
    engine_s, direct_s = [], []
    for frame in frames:  # interleaved so machine noise hits both alike
        t0 = time.perf_counter()
        ref = direct(frame, gains)
        t1 = time.perf_counter()
        out = g.evaluate(node, frame)
        t2 = time.perf_counter()
        direct_s.append(t1 - t0)
        engine_s.append(t2 - t1)
        assert torch.equal(out.tensor, ref)
    ratio = statistics.median(engine_s) / statistics.median(direct_s)

    fetch_ms = []
    for _ in range(100):
        g._hash_memo = {}  # a cold hash walk each time: what a scrub back to a cached frame costs
        t0 = time.perf_counter()
        g.evaluate(node, frames[-1])
        fetch_ms.append((time.perf_counter() - t0) * 1e3)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"{torch.get_num_threads()} threads")
    print(f"chain of {CHAIN} gains on 1080p RGBA: engine {statistics.median(engine_s) * 1e3:.1f} ms/frame, "
          f"direct {statistics.median(direct_s) * 1e3:.1f} ms/frame, ratio {ratio:.3f} (goal <= 1.05)")
    print(f"cached 1080p RGBA fetch through a {CHAIN}-node chain: median {statistics.median(fetch_ms):.3f} ms, "
          f"p95 {sorted(fetch_ms)[94]:.3f} ms (goal <= 2 ms)")


if __name__ == "__main__":
    main()

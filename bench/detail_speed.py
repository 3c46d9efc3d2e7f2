"""Speed of the detail stage: its training step's FLOP/s against a bf16 matmul measured in the same run, and
SwapModel's time per face on the 1080p plate with the detail stage and without.

    python bench/detail_speed.py --model build/detail/m030.dbm [--steps 20] [--frames 10]

Training: the step of ``doublure train --detail`` (patches of half the model's side, batch 16, bf16 autocast,
channels-last, without the adversarial term and with it), FLOPs counted by ``torch.utils.flop_counter`` on
one step, against 2048^3 bf16 matmuls timed between the steps. Inference: Read -> FaceDetect -> SwapModel on
``plates_1080/demo1_video.mp4`` (a face about 200 px wide), single frames (stabilise, temporal, holds 0),
SwapModel's own time per frame (its input cached), ``detail`` auto against off.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"


def matmul_flops(seconds: float = 2.0) -> float:
    a = torch.randn(2048, 2048, dtype=torch.bfloat16)
    b = torch.randn(2048, 2048, dtype=torch.bfloat16)
    a @ b
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < seconds:
        a @ b
        n += 1
    return n * 2 * 2048 ** 3 / (time.perf_counter() - t0)


def training_ratio(res: int, scale: int, steps: int, gan: bool) -> tuple[float, float, float]:
    """(step FLOP/s, matmul FLOP/s, seconds per step)."""
    import torch.nn.functional as F

    from doublure.models.detail import DetailConfig, DetailNet, PatchCritic, detail_reconstruction_loss

    torch.manual_seed(0)
    net = DetailNet(DetailConfig(res=res, scale=scale)).to(memory_format=torch.channels_last)
    critic = PatchCritic().to(memory_format=torch.channels_last)
    opt = torch.optim.Adam(net.parameters(), 2e-4)
    opt_d = torch.optim.Adam(critic.parameters(), 2e-4)
    patch = res // 2
    x = torch.rand(16, 3, patch, patch).contiguous(memory_format=torch.channels_last)
    y = torch.rand(16, 3, patch * scale, patch * scale).contiguous(memory_format=torch.channels_last)
    w = torch.ones(16, 1, patch * scale, patch * scale)

    def step() -> None:
        with torch.autocast("cpu", dtype=torch.bfloat16):
            pred = net(x)
            loss = detail_reconstruction_loss(pred.float(), y, w)
            if gan:
                loss = loss - 0.02 * critic(pred).float().mean()
        opt.zero_grad()
        loss.backward()
        opt.step()
        if gan:
            with torch.autocast("cpu", dtype=torch.bfloat16):
                d = F.relu(1 - critic(y)).float().mean() + F.relu(1 + critic(pred.detach())).float().mean()
            opt_d.zero_grad()
            d.backward()
            opt_d.step()

    step()
    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    times, refs = [], []
    for _ in range(3):
        refs.append(matmul_flops(1.0))
        t0 = time.perf_counter()
        for _ in range(max(1, steps // 3)):
            step()
        times.append((time.perf_counter() - t0) / max(1, steps // 3))
    per_step = min(times)
    return flops / per_step, max(refs), per_step


def inference_ms(model: str, frames: int) -> dict[str, float]:
    import doublure.nodes  # noqa: F401
    from doublure import engine

    g = engine.Graph()
    read = g.create("Read", file=str(MEDIA / "plates_1080" / "demo1_video.mp4"))
    g.settings.update(first=1, last=frames)
    fd = g.create("FaceDetect", inputs=[read])
    sw = g.create("SwapModel", inputs=[fd], model=model, stabilise=0, temporal=0, holds=False)
    out = {}
    for mode in ("off", "auto"):
        sw["detail"] = mode
        times = []
        for f in range(1, frames + 1):
            inputs = g.evaluate(fd, f)                      # the plate and its face, outside the timing
            ctx = engine.EvalContext(frame=f)

            class _Inputs:
                def get(self, index, frame=None):
                    return inputs

            t0 = time.perf_counter()
            sw.compute(ctx, _Inputs())
            times.append(1000 * (time.perf_counter() - t0))
        out[mode] = sorted(times)[len(times) // 2]
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", required=True, help="a model with a detail stage")
    p.add_argument("--steps", type=int, default=18)
    p.add_argument("--frames", type=int, default=10)
    args = p.parse_args(argv)
    from doublure.models.dbm import read_meta

    meta = read_meta(args.model)
    arch = (meta.get("detail") or {}).get("architecture")
    if not arch:
        raise SystemExit(f"{args.model} has no detail stage (doublure train --detail)")
    for gan in (False, True):
        rate, ref, per_step = training_ratio(arch["res"], arch["scale"], args.steps, gan)
        print(f"training step{' + critic' if gan else ''} ({arch['res']} -> {arch['res'] * arch['scale']} px, batch 16 "
              f"patches): {per_step * 1000:.0f} ms, {rate / 1e9:.0f} GFLOP/s = {rate / ref:.2f}x the same run's bf16 "
              f"matmul ({ref / 1e9:.0f} GFLOP/s)", flush=True)
    ms = inference_ms(args.model, args.frames)
    print(f"SwapModel on the 1080p plate, one face, single frame: detail off {ms['off']:.0f} ms, "
          f"detail auto {ms['auto']:.0f} ms (+{ms['auto'] - ms['off']:.0f} ms)")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training throughput of the identity model: iterations/s, samples/s, achieved FLOP/s over a plain matmul's
FLOP/s in the same dtype (measured in the same run), and the fraction of step time spent waiting on data.

    python bench/train_throughput.py                       # 64 px batch 16 and 128 px batch 8, full width
    python bench/train_throughput.py --cases 64:8 --iters 10 --width 0.5

FLOPs per step are counted with torch.utils.flop_counter on one real step (forward, backward; the optimiser's
elementwise work is not counted, so the ratio slightly understates the machine's useful work), with torch's own
convolution backward (the CPU's tuned weight gradients, ``doublure.models.fast_conv``, count the same). The
Trainer's first logged window holds the one-off tuning and is left out of the median. The data
comes from real facesets (two MEAD clips, extracted once into bench/out/) through the Trainer's background
loader, so the data-wait figure includes PNG decoding, masks and, on a CPU, augmentation (on a GPU the
loader's workers draw the augmentation and the training step applies it on the device). Each case also times the
training step alone (one batch already on the device, no loader or Trainer), the ceiling the Trainer's
rate is measured against.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

ROOT = Path(__file__).resolve().parents[1]
MEDIA = ROOT.parent / "shared" / "media"
OUT = ROOT / "bench" / "out"


def facesets() -> tuple[str, str]:
    from doublure.faces.extract import extract_faceset

    paths = []
    for clip in ("W009_front_happy_level3_001.mp4", "M030_front_happy_level3_001.mp4"):
        folder = OUT / f"faceset_{clip[:4]}_256"
        if not (folder / "index.json").exists():
            print(f"extracting {clip} ...", flush=True)
            extract_faceset([str(MEDIA / "mead" / clip)], str(folder), size=256, every=2)
        paths.append(str(folder))
    return paths[0], paths[1]


def matmul_flops(dtype: torch.dtype, device: torch.device, repeats: int = 5) -> float:
    """Best FLOP/s of an n x n matmul in ``dtype`` on ``device`` (n = 2048 on a CPU; 8192 on a GPU, where a
    2048^2 product is too short to keep it busy)."""
    n = 8192 if device.type == "cuda" else 2048
    a, b = (torch.randn(n, n, dtype=dtype, device=device) for _ in range(2))
    a @ b
    best = 0.0
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        t = time.perf_counter()
        a @ b
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = max(best, 2 * n ** 3 / (time.perf_counter() - t))
    return best


def synthetic_step(res: int, batch: int, width: float, arch: str, device: torch.device):
    """(model, optimiser, one random batch already on ``device``) for timing or counting a training step."""
    from doublure.models.arch import IdentityModel, config_for
    from doublure.models.train import make_optimizer

    model = IdentityModel(config_for(res, arch, width)).to(device)
    batch_ = {k: torch.rand(batch, 3, res, res, device=device).contiguous(memory_format=torch.channels_last)
              for k in ("a_in", "a_target", "b_in", "b_target", "a_masks", "b_masks")}
    return model, make_optimizer(model, 1e-5, (0.5, 0.999)), batch_


def step_flops(res: int, batch: int, width: float, arch: str, autocast, device: torch.device) -> int:
    from doublure.models.fast_conv import reference_convolutions
    from doublure.models.losses import LossWeights, ssim_window
    from doublure.models.train import train_step

    model, opt, batch_ = synthetic_step(res, batch, width, arch, device)
    counter = FlopCounterMode(display=False)
    # counted over torch's own convolution backward: the tuned weight gradients do the same sums, and the
    # first step's tuning runs both formulations
    with counter, reference_convolutions():
        train_step(model, batch_, opt, weights=LossWeights(), window=ssim_window(res), autocast=autocast)
    return counter.get_total_flops()


def step_rate(res: int, batch: int, width: float, arch: str, autocast, device: torch.device, steps: int,
              compile_mode: str = "default") -> float:
    """Iterations/s of ``train_step`` alone, on one batch already on the device, compiled as the Trainer
    compiles it on CUDA: the step's own ceiling, against which the Trainer's rate shows what its loader and
    bookkeeping cost."""
    from doublure.models.losses import LossWeights, identity_loss, ssim_window
    from doublure.models.train import compiled_step, train_step

    model, opt, batch_ = synthetic_step(res, batch, width, arch, device)
    step_model, loss_fn = compiled_step(model, compile_mode) if device.type == "cuda" else (model, identity_loss)

    def run(n: int) -> None:
        previous = None
        for _ in range(n):
            pending = train_step(step_model, batch_, opt, weights=LossWeights(), window=ssim_window(res),
                                 autocast=autocast, loss_fn=loss_fn)
            if previous is not None:   # each step's values read once the next is queued, as the Trainer does
                previous.result()
            previous = pending
        previous.result()

    run(3)   # compilation, tuning
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    t = time.perf_counter()
    run(steps)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return steps / (time.perf_counter() - t)


def run_case(res: int, batch: int, iters: int, width: float, arch: str, threads: int, precision: str,
             fs: tuple[str, str], compile_mode: str = "default") -> dict:
    from doublure.models.arch import config_for, parameter_count, IdentityModel
    from doublure.models.train import TrainConfig, Trainer, resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device.type == "cuda":
        # each case compiles afresh: a case after another would otherwise recompile the shared loss for
        # dynamic shapes (the H200's 128 px case did), which a training run at one resolution never does
        torch._dynamo.reset()
    autocast = resolve_precision(precision, device)
    flops = step_flops(res, batch, width, arch, autocast, device)
    params = parameter_count(IdentityModel(config_for(res, arch, width)))
    windows = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = TrainConfig(out=os.path.join(tmp, "bench.dbm"), source=[fs[0]], target=[fs[1]], res=res, arch=arch,
                          width=width, batch=batch, iters=iters, log_every=2, preview_every=0,
                          checkpoint_minutes=1e9, threads=threads, precision=precision, compile_mode=compile_mode)
        trainer = Trainer(cfg, progress=lambda e: windows.append(e) if e["event"] == "step" else None)
        summary = trainer.run()
    alone = step_rate(res, batch, width, arch, autocast, device, iters, compile_mode)
    steady = [w["its_per_s"] for w in windows[1:]] or [windows[-1]["its_per_s"]]
    waits = [w["data_wait_fraction"] for w in windows[1:]] or [summary["data_wait_fraction"]]
    its = statistics.median(steady)
    return {"res": res, "batch": batch, "params_m": params / 1e6, "gflop_per_step": flops / 1e9, "its_per_s": its,
            "samples_per_s": its * batch * 2, "achieved_gflops": flops * its / 1e9,
            "data_wait": statistics.mean(waits), "precision": trainer.precision_name,
            "windows": [w["its_per_s"] for w in windows], "step_alone_its": alone}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--cases", default="64:16,128:8", help="res:batch pairs")
    p.add_argument("--iters", type=int, default=12)
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--arch", default="df")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--precision", default="auto", help="auto, fp32, bf16 or fp16 (auto: bf16 where the CPU has it)")
    p.add_argument("--compile-mode", default="default", help="torch.compile's mode on CUDA (reduce-overhead: CUDA graphs)")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    fs = facesets()
    from doublure.models.train import resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    autocast = resolve_precision(args.precision, device)
    dtype = autocast or torch.float32
    print(f"device {device}, precision {dtype}, threads {args.threads}, arch {args.arch}, width {args.width}, "
          f"compile mode {args.compile_mode if device.type == 'cuda' else 'none (CPU)'}")
    ref = matmul_flops(dtype, device)
    print(f"reference: square matmul in {dtype} on {device}: {ref / 1e9:.1f} GFLOP/s")
    rows = []
    for case in args.cases.split(","):
        res, batch = (int(v) for v in case.split(":"))
        r = run_case(res, batch, args.iters, args.width, args.arch, args.threads, args.precision, fs, args.compile_mode)
        ref_after = matmul_flops(dtype, device)   # the machine is shared: bracket the case with two references
        r["ref_gflops"] = (ref + ref_after) / 2 / 1e9
        r["ratio"] = r["achieved_gflops"] / r["ref_gflops"]
        ref = ref_after
        rows.append(r)
        print(f"{res:5d} px batch {batch:3d}: {r['params_m']:.1f}M params, {r['gflop_per_step']:.1f} GFLOP/step, "
              f"{r['its_per_s']:.3f} it/s, {r['samples_per_s']:.1f} samples/s, {r['achieved_gflops']:.1f} GFLOP/s "
              f"= {r['ratio']:.2f} x matmul ({r['ref_gflops']:.1f}), data wait {100 * r['data_wait']:.1f}% "
              f"[{r['precision']}]; it/s by logged window: {', '.join(f'{w:.2f}' for w in r['windows'])}; "
              f"the step alone {r['step_alone_its']:.2f} it/s = "
              f"{r['step_alone_its'] * r['gflop_per_step'] / r['ref_gflops']:.2f} x matmul", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

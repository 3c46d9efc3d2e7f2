"""Inference time per face of the identity model (A->B decode) at 128, 256, 512 and 1024 px.

    python bench/infer_speed.py                    # full-width DF model, CPU here, CUDA when present
    python bench/infer_speed.py --sizes 128,256 --batch 4

Reports ms per face for the network alone (the SwapModel node adds the warps and the composite), and the
same run's matmul FLOP/s for scale. Goal on a GPU: 1024 px in <= 25 ms per face.
"""
from __future__ import annotations

import argparse
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from train_throughput import matmul_flops


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--sizes", default="128,256,512,1024")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--arch", default="df")
    p.add_argument("--width", type=float, default=1.0)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--threads", type=int, default=2)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    from doublure.models.arch import IdentityModel, config_for, parameter_count
    from doublure.models.dbm import LoadedModel
    from doublure.models.infer import swap_faces
    from doublure.models.train import resolve_precision

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    dtype = resolve_precision("auto", device) or torch.float32
    ref = matmul_flops(dtype, device)
    print(f"device {device}, {dtype}, threads {args.threads}; square matmul {ref / 1e9:.1f} GFLOP/s")
    for res in (int(s) for s in args.sizes.split(",")):
        # weights in the inference dtype, as doublure.models.infer.shared_model holds them for SwapModel
        model = IdentityModel(config_for(res, args.arch, args.width)).to(device=device, dtype=dtype).eval()
        loaded = LoadedModel(model, {}, "bench", "bench")
        x = torch.rand(args.batch, 3, res, res, device=device)
        counter = FlopCounterMode(display=False)
        with counter:
            swap_faces(loaded, x[:1])
        flops = counter.get_total_flops()
        swap_faces(loaded, x)   # warm-up
        best = float("inf")
        for _ in range(args.repeats):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t = time.perf_counter()
            swap_faces(loaded, x)
            if device.type == "cuda":
                torch.cuda.synchronize()
            best = min(best, (time.perf_counter() - t) / args.batch)
        print(f"{res:5d} px: {parameter_count(model) / 1e6:6.1f}M params, {flops / 1e9:8.1f} GFLOP/face, "
              f"{best * 1000:9.1f} ms/face (batch {args.batch}), {flops / best / 1e9:.1f} GFLOP/s "
              f"= {flops / best / ref:.2f} x matmul", flush=True)
        del model, loaded
    return 0


if __name__ == "__main__":
    sys.exit(main())

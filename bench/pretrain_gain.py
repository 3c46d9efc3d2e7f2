"""How many iterations a pretrained base saves (issue 4's ``--pretrain`` / ``--from`` measurement).

    python bench/pretrain_gain.py                       # base 1000 its, then scratch vs --from, 700 its each
    python bench/pretrain_gain.py --base-iters 3000 --iters 2000 --width 0.3

1. A generic base is pretrained (``TrainConfig(pretrain=...)``, DeepFaceLab's pretrain idea) on the ten
   ``people/`` clips: different people, none of them M030 or W009. The base stays in ``bench/out`` and a
   later run resumes it up to ``--base-iters`` (a base is trained once and reused, as in production).
2. The M030 (target) / W009 (plate) identity model is trained twice with the same seed, data stream and
   schedule: from scratch, and ``from_model`` the base (its weights, a fresh optimiser).
3. Reported: both loss curves (the mean of A's and B's loss, smoothed over a window of logged steps), the
   iteration at which the run from the base first reaches the loss the scratch run ends at (the iterations
   saved), and the reconstruction SSIM (B->B inside the face hull) on M030's unseen neutral clip at the end of
   each run, so the saving is checked on quality and not only on training loss.

Everything is counted in iterations, so a loaded machine changes the wall time, not the figures. Results go to
stdout and ``bench/out/pretrain_gain_<time>.json``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

from quality_identity import (EMOTIONS, OUT, add_training_arguments, bench_train_config, clip, faceset,
                              reconstruction_ssim, save_result)

MEDIA = Path(__file__).resolve().parents[2] / "shared" / "media"


def train(name: str, iters: int, args, keep: bool = False, **config) -> tuple[str, list[tuple[int, float]]]:
    """Train ``bench/out/pretrain_gain_<name>.dbm`` up to ``iters`` iterations and return the model path and the
    logged (iteration, loss) pairs. ``keep``: resume an earlier run of it (the base, which only has to exist)
    instead of starting afresh (the compared runs, whose curves must start at iteration 0)."""
    import shutil

    from doublure.models.dbm import read_training_state
    from doublure.models.train import Trainer

    out = OUT / f"pretrain_gain_{name}.dbm"
    resume = keep and (out / "train_state.json").exists()
    if resume and read_training_state(str(out))[0]["iteration"] >= iters:
        return str(out), []
    if not resume:
        shutil.rmtree(out, ignore_errors=True)
        shutil.rmtree(out.with_suffix(".training"), ignore_errors=True)
    curve: list[tuple[int, float]] = []

    def progress(event: dict) -> None:
        if event["event"] == "step":
            curve.append((event["iteration"], float(event["losses"]["loss"])))
            if event["iteration"] % 250 == 0:
                print(f"  {name}: it {event['iteration']} loss {event['losses']['loss']:.3f} "
                      f"{event['its_per_s']:.2f} it/s", flush=True)

    cfg = bench_train_config(str(out), args, f"pretrain gain: {name}", iters=iters, log_every=10, resume=resume,
                             **config)
    t0 = time.monotonic()
    Trainer(cfg, progress=progress).run()
    print(f"{name}: up to {iters} iterations in {(time.monotonic() - t0) / 60:.1f} min", flush=True)
    return str(out), curve


def smoothed(curve: list[tuple[int, float]], window: int) -> tuple[np.ndarray, np.ndarray]:
    """(iterations, trailing mean of the loss over ``window`` logged steps)."""
    its = np.array([i for i, _ in curve])
    loss = np.array([v for _, v in curve])
    kernel = np.ones(window) / window
    return its[window - 1:], np.convolve(loss, kernel, mode="valid")


def first_reaching(its: np.ndarray, loss: np.ndarray, level: float) -> int | None:
    hit = np.nonzero(loss <= level)[0]
    return int(its[hit[0]]) if hit.size else None


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--base-iters", type=int, default=1000)
    p.add_argument("--iters", type=int, default=700)
    add_training_arguments(p)
    p.add_argument("--window", type=int, default=10, help="logged steps in the smoothing window")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    OUT.mkdir(parents=True, exist_ok=True)
    people = [faceset(f"people_{c.stem}", [str(c)], 128, 3) for c in sorted((MEDIA / "people").glob("*.mp4"))]
    fs_b = faceset("M030_train", [clip("M030", e) for e in EMOTIONS], 128, 2)
    fs_a = faceset("W009_all", [clip("W009", e) for e in EMOTIONS + ("neutral",)], 128, 2)
    fs_neutral = faceset("M030_neutral", [clip("M030", "neutral")], 128, 2)

    base, _ = train("base", args.base_iters, args, keep=True, pretrain=people)
    scratch, scratch_curve = train("scratch", args.iters, args, source=[fs_a], target=[fs_b])
    from_base, base_curve = train("from_base", args.iters, args, source=[fs_a], target=[fs_b], from_model=base)

    its_s, loss_s = smoothed(scratch_curve, args.window)
    its_b, loss_b = smoothed(base_curve, args.window)
    result = {"date": time.strftime("%Y-%m-%d %H:%M"), "args": vars(args),
              "people_facesets": len(people), "scratch_final_loss": float(loss_s[-1]),
              "from_base_final_loss": float(loss_b[-1])}
    # Iterations each run needs to reach given loss levels: the scratch run's final loss, and levels on the way.
    levels = [float(loss_s[-1])] + [float(loss_s[int(len(loss_s) * f)]) for f in (0.25, 0.5)]
    result["reach"] = [{"loss": lv, "scratch_iteration": first_reaching(its_s, loss_s, lv),
                        "from_base_iteration": first_reaching(its_b, loss_b, lv)} for lv in levels]
    result["ssim_neutral"] = {"scratch": reconstruction_ssim(scratch, fs_neutral, args.res),
                              "from_base": reconstruction_ssim(from_base, fs_neutral, args.res)}
    print(f"final smoothed loss after {args.iters} iterations: scratch {loss_s[-1]:.3f}, from base {loss_b[-1]:.3f}")
    for r in result["reach"]:
        print(f"loss {r['loss']:.3f} first reached at iteration: scratch {r['scratch_iteration']}, "
              f"from base {r['from_base_iteration']}")
    print(f"SSIM on M030's unseen neutral clip: scratch {result['ssim_neutral']['scratch']:.3f}, "
          f"from base {result['ssim_neutral']['from_base']:.3f}")
    save_result("pretrain_gain", result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

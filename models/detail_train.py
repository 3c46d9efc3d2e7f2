"""Training a model's detail stage (``doublure train --detail --out model.dbm --target faceset_B/``).

    trainer = DetailTrainer(DetailTrainConfig(out="actorB.dbm", target=["actorB_faces_512/"], minutes=15))
    trainer.run()    # blocks; progress(...) gets {"event": "step" | "checkpoint" | "done", ...}

The identity part of ``out`` must be trained already: the detail stage learns to turn its renderings of the
target into the target's reference faces at their native size (see :mod:`doublure.models.detail`). The
reference facesets should be extracted at least as large as the detail stage's output (``--size``), and their
faces should hold that much detail in the source footage (``native_side`` in the faceset index); the scale is
picked from it unless ``scale`` is given.

Each step draws ``batch`` faces, a random patch of half the input side from each (the network is convolutional,
so patches train it as whole faces do at a quarter of the cost), a shared flip and colour gain for input and
target, and degrades the input (:func:`doublure.models.detail.degrade`). The adversarial term starts after
``gan_after`` of the budget. Checkpoints write the generator into the model (:func:`doublure.models.dbm.save_detail`)
every ``checkpoint_minutes`` and at the end; ``resume`` continues a stored detail stage (its iteration count
goes on; the optimiser and the critic start afresh).
"""
from __future__ import annotations

import dataclasses
import logging
import math
import os
import time
from typing import Any, Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F

from doublure.engine.device import cpu_has_native_bf16
from doublure.engine.errors import DoublureError

from .data import FaceData, check_face_type, read_index
from .dbm import load_detail, load_model, read_meta, save_detail
from .detail import DetailConfig, DetailNet, PatchCritic, auto_scale, degrade, detail_reconstruction_loss

log = logging.getLogger("doublure.models")

MIN_FACES = 20


@dataclasses.dataclass
class DetailTrainConfig:
    """What ``doublure train --detail`` does.

    Attributes:
        out: the model whose detail stage is trained (its identity part is read, never changed).
        target: facesets of the target actor at (at least) the detail stage's output size.
        scale: output over input side (2, 4, 8); 0 picks it from the facesets' native face size.
        channels, blocks: the network's width and depth (:class:`doublure.models.detail.DetailConfig`).
        batch: faces per step.
        lr: Adam learning rate of the network (the critic's too).
        gradient_weight: weight of the image-gradient L1 against the pixel L1.
        gan_weight: weight of the adversarial term (0: none).
        gan_after: fraction of the budget before the adversarial term starts.
        iters, minutes: the budget (total iterations, or minutes of this run); at least one is needed.
        resume: continue the model's stored detail stage.
        checkpoint_minutes: minutes between checkpoints.
        seed: random seed.
        threads: CPU threads for torch (0: torch's default).
    """

    out: str
    target: Sequence[str] = ()
    scale: int = 0
    channels: int = 48
    blocks: int = 6
    batch: int = 16
    lr: float = 2e-4
    gradient_weight: float = 1.0
    gan_weight: float = 0.02
    gan_after: float = 0.3
    iters: int | None = None
    minutes: float | None = None
    resume: bool = False
    checkpoint_minutes: float = 5.0
    seed: int = 0
    threads: int = 0


def native_side(facesets: Sequence[str]) -> float:
    """Median source pixels across a crop over the facesets' faces (``native_side`` in their index); raises
    DoublureError naming the folder for a faceset extracted before the index recorded it."""
    sides = []
    for path in facesets:
        for item in read_index(path)["items"]:
            if "native_side" not in item:
                raise DoublureError(f"faceset {path} does not record its faces' native size (extracted by an older "
                                    f"doublure): extract it again, or give --detail-scale")
            sides.append(float(item["native_side"]))
    return float(np.median(sides))


class DetailTrainer:
    """Trains the detail stage of ``config.out`` (see the module docstring)."""

    def __init__(self, config: DetailTrainConfig,
                 progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        if not config.target:
            raise DoublureError("training a detail stage needs the target's facesets (--target)")
        if config.iters is None and config.minutes is None:
            raise DoublureError("give a budget for the detail stage: --iters or --minutes")
        self.config = config
        self.progress = progress or (lambda info: None)
        self._stop = False

    def stop(self) -> None:
        """Finish the current step, write a checkpoint and return from :meth:`run`."""
        self._stop = True

    # -- set-up ---------------------------------------------------------------------------------------
    def _network(self, res: int, meta: dict[str, Any]) -> tuple[DetailNet, int]:
        cfg = self.config
        if cfg.resume:
            net, why = load_detail(cfg.out, meta)
            if net is None:
                raise DoublureError(f"cannot resume the detail stage of {cfg.out}: {why}")
            return net, int(((meta["detail"].get("training") or {}).get("iterations")) or 0)
        scale = cfg.scale
        if not scale:
            side = native_side(cfg.target)
            scale = auto_scale(res, side)
            if not scale:
                raise DoublureError(f"the target's reference faces are {side:.0f} px across the crop, no larger than "
                                    f"the model's {res} px: a detail stage has no detail to learn from them")
        return DetailNet(DetailConfig(res=res, scale=scale, channels=cfg.channels, blocks=cfg.blocks)), 0

    def _renderings(self, loaded, faces: FaceData, res: int) -> torch.Tensor:
        """(N, 3, R, R) float16: the identity model's B->B renderings of every reference face."""
        out = []
        model = loaded.model
        with torch.no_grad():
            for start in range(0, len(faces), 32):
                crops, _, _ = faces.batch(range(start, min(start + 32, len(faces))))
                small = F.interpolate(crops, size=(res, res), mode="area")
                rgb, _ = model.reconstruct_b(small.contiguous(memory_format=torch.channels_last))
                out.append(rgb.float().clamp(0, 1).half())
        return torch.cat(out)

    def run(self) -> dict[str, Any]:
        cfg = self.config
        if cfg.threads:
            torch.set_num_threads(cfg.threads)
        meta = read_meta(cfg.out)
        loaded = load_model(cfg.out)
        res = loaded.model.cfg.res
        net, start_iter = self._network(res, meta)
        out_res = net.cfg.out_res
        faces = FaceData(cfg.target, out_res, lower_res="a smaller --detail-scale")
        if len(faces) < MIN_FACES:
            raise DoublureError(f"facesets {list(cfg.target)} hold {len(faces)} faces; a detail stage needs at least "
                                f"{MIN_FACES} of the target")
        check_face_type(faces.facesets, meta.get("face_type", "whole_face"), cfg.out)
        sizes = {fs["size"] for fs in faces.facesets}
        if min(sizes) < out_res:
            log.warning("facesets %s are %s px, smaller than the detail stage's %d px output: their faces are "
                        "enlarged to it and hold less detail than the stage could draw", list(cfg.target),
                        sorted(sizes), out_res)
        # the card's record: what this run adds to an earlier run's time, the facesets by name and native size
        elapsed_before = float(((meta.get("detail") or {}).get("training") or {}).get("elapsed_s", 0.0)) \
            if cfg.resume else 0.0
        facesets = [dict(fs, path=os.path.basename(os.path.normpath(fs["path"]))) for fs in faces.facesets]
        try:
            side = round(native_side(cfg.target), 1)
        except DoublureError:   # an older faceset, trained with an explicit --detail-scale: no size to record
            side = None
        for fs in facesets:
            fs["native_side"] = side
        t0 = time.monotonic()
        self.progress({"event": "setup", "iteration": start_iter, "message": f"rendering {len(faces)} reference faces"})
        renders = self._renderings(loaded, faces, res)
        del loaded
        critic = PatchCritic() if cfg.gan_weight > 0 else None
        opt = torch.optim.Adam(net.parameters(), lr=cfg.lr, betas=(0.9, 0.99))
        opt_d = torch.optim.Adam(critic.parameters(), lr=cfg.lr, betas=(0.5, 0.99)) if critic is not None else None
        gen = torch.Generator().manual_seed(cfg.seed + start_iter)
        bf16 = cpu_has_native_bf16()
        patch = max(16, res // 2)
        s = net.cfg.scale
        deadline = t0 + 60.0 * cfg.minutes if cfg.minutes is not None else math.inf
        total = cfg.iters
        it = start_iter
        last_ckpt = time.monotonic()
        recent: list[float] = []
        net.train().to(memory_format=torch.channels_last)
        if critic is not None:
            critic.to(memory_format=torch.channels_last)
        try:
            while not self._stop and (total is None or it < total) and time.monotonic() < deadline:
                idx = torch.randint(len(faces), (cfg.batch,), generator=gen)
                crops, masks, _ = faces.batch(idx.tolist())
                x = renders[idx].float()
                oy, ox = torch.randint(res - patch + 1, (2,), generator=gen).tolist()
                x = x[..., oy:oy + patch, ox:ox + patch]
                y = crops[..., oy * s:(oy + patch) * s, ox * s:(ox + patch) * s]
                w = (0.1 + masks[:, 1:2] + masks[:, 2:3])[..., oy * s:(oy + patch) * s, ox * s:(ox + patch) * s]
                if torch.rand((), generator=gen) < 0.5:
                    x, y, w = x.flip(-1), y.flip(-1), w.flip(-1)
                gain = 0.85 + 0.3 * torch.rand(cfg.batch, 3, 1, 1, generator=gen)
                x, y = (x * gain).clamp(0, 1), (y * gain).clamp(0, 1)
                # channels-last: oneDNN's fast convolution layout on the CPU (about 3x on this model)
                x = degrade(x, gen).clamp(0, 1).contiguous(memory_format=torch.channels_last)
                y = y.contiguous(memory_format=torch.channels_last)
                use_gan = critic is not None and self._fraction(it, start_iter, t0, deadline, total) >= cfg.gan_after
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    pred = net(x)
                    rec = detail_reconstruction_loss(pred.float(), y, w, cfg.gradient_weight)
                    loss = rec
                    if use_gan:
                        loss = loss - cfg.gan_weight * critic(pred).float().mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                torch.nn.utils.clip_grad_norm_(net.parameters(), 1.0)
                opt.step()
                if use_gan:
                    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                        d_loss = (F.relu(1.0 - critic(y)).float().mean()
                                  + F.relu(1.0 + critic(pred.detach())).float().mean())
                    opt_d.zero_grad(set_to_none=True)
                    d_loss.backward()
                    opt_d.step()
                value = float(rec.detach())
                if not math.isfinite(value):
                    raise DoublureError(f"detail stage training of {cfg.out} diverged at iteration {it} (loss {value})")
                recent = (recent + [value])[-50:]
                it += 1
                self.progress({"event": "step", "iteration": it, "iterations": total, "loss": float(np.mean(recent)),
                               "adversarial": use_gan, "elapsed_s": time.monotonic() - t0})
                if time.monotonic() - last_ckpt > 60.0 * cfg.checkpoint_minutes:
                    self._save(net, it, elapsed_before + time.monotonic() - t0, recent, facesets)
                    last_ckpt = time.monotonic()
                    self.progress({"event": "checkpoint", "iteration": it})
        finally:
            if it > start_iter:
                self._save(net, it, elapsed_before + time.monotonic() - t0, recent, facesets)
        summary = {"event": "done", "iteration": it, "loss": float(np.mean(recent)) if recent else None,
                   "elapsed_s": time.monotonic() - t0, "out_res": out_res}
        self.progress(summary)
        return summary

    @staticmethod
    def _fraction(it: int, start: int, t0: float, deadline: float, total: int | None) -> float:
        """How far through the budget (0..1) this run is, by iterations or by time, whichever is further."""
        parts = []
        if total is not None and total > start:
            parts.append((it - start) / (total - start))
        if math.isfinite(deadline):
            parts.append((time.monotonic() - t0) / max(deadline - t0, 1e-9))
        return max(parts) if parts else 1.0

    def _save(self, net: DetailNet, it: int, elapsed: float, recent: list[float], facesets: list[dict]) -> None:
        """Write the network into the model, with ``elapsed`` seconds of training in all (earlier runs too)."""
        cfg = self.config
        training = {"iterations": it, "batch": cfg.batch, "lr": cfg.lr, "gradient_weight": cfg.gradient_weight,
                    "gan_weight": cfg.gan_weight, "device": "cpu", "elapsed_s": round(elapsed, 1),
                    "loss_last": float(np.mean(recent)) if recent else None}
        was_training = net.training
        net.eval()
        save_detail(cfg.out, net, {"training": training, "facesets": facesets})
        net.train(was_training)
        log.info("detail stage of %s saved at iteration %d", cfg.out, it)


__all__ = ["DetailTrainConfig", "DetailTrainer", "native_side"]

"""Training an identity model (``doublure train``): the Python API the app drives and the command line.

    trainer = Trainer(TrainConfig(out="actorB.dbm", source=["plate_faces/"], target=["actorB_faces/"],
                                  res=128, iters=100_000), progress=print)
    trainer.start()            # a background thread; or trainer.run() to block
    trainer.latest_preview()   # (rows * R, 5 * R, 3) uint8 RGB: A, A->A, B, B->B, A->B
    trainer.stop()             # finishes the step, writes a checkpoint, returns

Files beside the model ``X.dbm``: ``X.training/loss.jsonl`` (one JSON object per logged iteration, plus
``{"event": ...}`` lines for checkpoints and roll-backs) and ``X.training/preview.png``.

Exact resumes: a checkpoint holds the weights, the optimiser state (safetensors, no pickles) and the
iteration; every batch is a pure function of ``(seed, iteration)``
(:func:`doublure.models.data.make_raw_batch`), the learning-rate and random-warp schedules are functions of the
iteration, so a resumed run continues the same trajectory. Resuming into a different shape (architecture,
resolution, widths) is refused.

A loss or gradient that is NaN or infinite rolls the weights and optimiser state back to the last good
checkpoint (the last one written, or the starting weights) and training continues with the next batch. The
host reads each step's losses once the next step is queued, so a GPU never idles while the host waits for
them; a non-finite step's update is skipped on the device meanwhile (the fused optimiser's ``found_inf``), the
roll-back drops the step queued after it, and a checkpoint is written only once its last step has been read.

Multi-GPU: :func:`train_step` takes the (possibly DDP-wrapped) model, a batch and the optimiser; batches
are sharded per rank by ``doublure.models.distributed``; only rank 0 writes files.
"""
from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import json
import logging
import math
import os
import signal
import sys
import threading
import time
from typing import Any, Callable, Iterator, Sequence

import numpy as np
import torch

from doublure.engine.atomic import atomic_path
from doublure.engine.device import cpu_has_native_bf16
from doublure.engine.errors import DoublureError

from . import distributed as dist_helpers
from .arch import ARCHITECTURES, IdentityModel, ModelConfig, config_for, parameter_count
from .augment import AugmentSettings
from .data import (BatchLoader, FaceData, ProcessBatchLoader, augment_batch, check_face_type, default_workers,
                   make_raw_batch)
from .detail_train import DetailTrainConfig, DetailTrainer
from .dbm import (clean_leftovers, has_training_state, load_weights, read_meta, read_training_state,
                  resolve_model_path, rights_problems, save_model)
from .losses import LossWeights, identity_loss, ssim_window
from .memory import check_training_memory, resident_bytes, training_memory

log = logging.getLogger("doublure.models")

PRECISIONS = ("auto", "fp32", "bf16", "fp16")
COMPILE_MODES = ("default", "reduce-overhead", "max-autotune")
SHAPE_FIELDS = ("arch", "res", "e_ch", "d_ch", "d_mask_ch", "ae_dims", "depth", "res_blocks")


# A faceset smaller than this teaches nothing but a few frames by heart; one under the second figure is thin.
MIN_FACESET_FACES = 8
THIN_FACESET_FACES = 40


@dataclasses.dataclass
class TrainConfig:
    """Everything a training run needs.

    Attributes:
        out: the model path (``.dbm`` folder) written at every checkpoint.
        source: facesets of the plate actor (identity A).
        target: facesets of the target actor (identity B).
        pretrain: facesets of many people: train a generic base model instead (A and B both drawn from them).
        from_model: start from this model's weights, with a fresh optimiser: a pretrained base, or an identity
            model to adapt to a shot (``--from actorB.dbm --source shot_faces/``: its card, rights record and
            detail stage go with it, and its target facesets are used when no ``target`` is given).
        resume: continue the checkpoint at ``out`` (weights, optimiser, iteration).
        res, arch, width: model resolution, architecture and width scale (see ``arch.config_for``);
            ``res``/``arch`` None: 128 / df for a new model, the checkpoint's when resuming or starting from one.
        model_overrides: explicit architecture fields (``e_ch``, ``d_ch``, ``ae_dims``, ``depth``...).
        batch: faces of each identity per iteration (the global batch under DDP).
        iters: stop at this total iteration count (None: no limit).
        minutes: stop after this many minutes of this session (None: no limit).
        lr, betas, warmup: Adam's learning rate and betas; linear warm-up over ``warmup`` iterations.
        clip_grad: gradient norm clipping (0: off).
        warp_until: fraction of the budget (iterations, else minutes) trained with the random warp; the rest
            trains without it to sharpen the exact geometry. 1.0: always, 0: never.
        balance_expressions: draw faces evened out by mouth and eye opening (``FaceData.expression_weights``),
            so rare expressions (wide-open mouths, closed eyes) are learnt too; off: uniform draws.
        shared_expression: liae: the plate actor's private code averaged over each batch, so her expression
            travels in the shared code the swap decodes (``IdentityModel.reconstruct_both``; on the demo model
            it lifted the swap's expression r by 0.05-0.10, bench/RESULTS.md). None: on for a liae identity
            model, off for a pretrained base (its "A" is many people) and for df (no private code).
        loss, augment: loss weights and augmentation ranges.
        seed: the data stream's and initialisation's seed.
        checkpoint_minutes: write a checkpoint this often (and at the end, on stop, Ctrl-C and SIGTERM, and
            when the run fails with an error it survives, if its weights are finite).
        first_checkpoint_minutes: the first checkpoint comes this soon (or at ``checkpoint_minutes`` if that is
            sooner), so a run killed early leaves something to resume.
        preview_every: write the preview grid every this many iterations (0: only at checkpoints).
        log_every: log losses (file and progress callback) every this many iterations.
        device: torch device (None: CUDA when present, else CPU; torchrun's local rank under DDP).
        precision: ``auto`` (bf16 on CUDA with bf16 or on a CPU with native bf16, fp16 on older GPUs, else
            fp32), or a forced one.
        compile: ``torch.compile`` the model and the loss (None: on CUDA only).
        compile_mode: ``torch.compile``'s mode: "default", "reduce-overhead" (CUDA graphs: a step's hundreds
            of kernel launches replayed as one) or "max-autotune".
        rights: the rights record (see ``dbm.rights_record``).
        name: a display name for the model.
        max_rollbacks: give up after this many roll-backs in a row.
        prefetch, workers: background data loading: batches made ahead and producers (None: on CUDA
            :func:`doublure.models.data.default_workers` processes, else 2 threads).
        threads: torch CPU threads (0: leave torch's default).
        references: at the end, give the model this many of its target's own faces (from the first target
            faceset; :mod:`doublure.models.references`), where it has none yet (0: none).
        memory_gb: the memory the run may take, checked before anything is allocated (``models.memory``;
            None: 80% of the machine's, and of the GPU's on a GPU).
    """

    out: str
    source: Sequence[str] = ()
    target: Sequence[str] = ()
    pretrain: Sequence[str] = ()
    from_model: str | None = None
    resume: bool = False
    res: int | None = None
    arch: str | None = None
    width: float = 1.0
    model_overrides: dict[str, int] = dataclasses.field(default_factory=dict)
    batch: int = 8
    iters: int | None = None
    minutes: float | None = None
    lr: float = 1e-4
    betas: tuple[float, float] = (0.5, 0.999)
    warmup: int = 200
    clip_grad: float = 1.0
    warp_until: float = 0.8
    balance_expressions: bool = False
    shared_expression: bool | None = None
    loss: LossWeights = dataclasses.field(default_factory=LossWeights)
    augment: AugmentSettings = dataclasses.field(default_factory=AugmentSettings)
    seed: int = 0
    checkpoint_minutes: float = 10.0
    first_checkpoint_minutes: float = 1.0
    preview_every: int = 500
    log_every: int = 10
    device: str | None = None
    precision: str = "auto"
    compile: bool | None = None
    compile_mode: str = "default"
    rights: dict[str, Any] = dataclasses.field(default_factory=dict)
    name: str = ""
    max_rollbacks: int = 5
    prefetch: int = 4
    workers: int | None = None
    threads: int = 0
    memory_gb: float | None = None
    references: int = 48

    def hyper(self) -> dict[str, Any]:
        """The training hyper-parameters recorded in model.json."""
        return {"batch": self.batch, "lr": self.lr, "betas": list(self.betas), "warmup": self.warmup,
                "clip_grad": self.clip_grad, "warp_until": self.warp_until,
                "balance_expressions": self.balance_expressions, "seed": self.seed,
                "loss_weights": dataclasses.asdict(self.loss), "augment": dataclasses.asdict(self.augment)}


# ------------------------------------------------------------------------------------ precision

def resolve_precision(precision: str, device: torch.device) -> torch.dtype | None:
    """The autocast dtype for a precision setting on a device (None: plain fp32)."""
    if precision not in PRECISIONS:
        raise DoublureError(f"precision {precision!r} is not one of {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return None
    if precision == "bf16":
        return torch.bfloat16
    if precision == "fp16":
        return torch.float16
    if device.type == "cuda":
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    if device.type == "cpu" and cpu_has_native_bf16():
        return torch.bfloat16
    return None


@contextlib.contextmanager
def flush_denormals(device: torch.device) -> Iterator[None]:
    """Flush denormal floats to zero on the CPU while inside: tiny gradients, Adam's second moments and
    small activations turn denormal and make CPU maths 5-30x slower. Restores torch's default on exit."""
    if device.type != "cpu":
        yield
        return
    torch.set_flush_denormal(True)
    try:
        yield
    finally:
        torch.set_flush_denormal(False)


# ------------------------------------------------------------------------------------ the step

def make_optimizer(model: torch.nn.Module, lr: float, betas: Sequence[float]) -> torch.optim.Adam:
    """Adam, with torch's fused kernel where the parameters allow it: one pass over each tensor instead of
    about ten elementwise passes per parameter (0.7-1.5 s instead of 2.4-4.7 s per step of the 57.5M-parameter
    128 px model, on the shared 2-core CPU)."""
    params = list(model.parameters())
    fused = all(p.is_floating_point() and p.device.type in ("cpu", "cuda") for p in params)
    optimizer = torch.optim.Adam(params, lr=lr, betas=tuple(betas), fused=fused)
    optimizer.register_load_state_dict_post_hook(_moments_like_parameters)
    return optimizer


def _moments_like_parameters(optimizer: torch.optim.Optimizer) -> None:
    """Give each loaded moment its parameter's strides. The fused kernel walks a parameter, its gradient and
    its moments as flat memory, while checkpoints store the moments contiguous and the convolution weights
    are channels-last: without this, a resumed run paired the wrong elements (caught by the exact-resume
    test)."""
    for group in optimizer.param_groups:
        for param in group["params"]:
            state = optimizer.state.get(param, {})
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == param.shape and value.stride() != param.stride():
                    state[name] = torch.empty_like(param, dtype=value.dtype).copy_(value)


def _check_moment_shapes(optimizer: torch.optim.Optimizer) -> None:
    """Raise ValueError when a loaded moment's shape is not its parameter's (``load_state_dict`` checks only
    the number of parameters; a moment of another shape fails only at the first step, in the kernel)."""
    for group in optimizer.param_groups:
        for index, param in enumerate(group["params"]):
            for name, value in optimizer.state.get(param, {}).items():
                if isinstance(value, torch.Tensor) and value.dim() and value.shape != param.shape:
                    raise ValueError(f"parameter {index}: {name} is {tuple(value.shape)}, the weights "
                                     f"{tuple(param.shape)}")


@dataclasses.dataclass
class StepResult:
    """One optimisation step: the losses (floats) and whether everything stayed finite."""

    losses: dict[str, float]
    finite: bool
    grad_norm: float


class PendingStep:
    """A step's loss values and gradient norm on their way to the host.

    Reading a value computed on a GPU waits until the device has run everything queued before it. A trainer
    that reads each step's values only after queueing the next step (:meth:`result`) keeps the device busy
    while the host launches, instead of the two taking turns.

    Args:
        names: the loss names, in the order of ``values``.
        values: (len(names) + 1,) float32 on the step's device: the losses, then the gradient norm.
        scaled: a GradScaler stepped: an infinite gradient is then routine (the scaler skips the step and
            lowers its scale), and only the loss decides whether the step was finite.
    """

    def __init__(self, names: Sequence[str], values: torch.Tensor, scaled: bool) -> None:
        self.names, self.scaled = list(names), scaled
        self._ready: torch.cuda.Event | None = None
        if values.device.type == "cuda":
            self._host = torch.empty(values.shape, dtype=values.dtype, pin_memory=True)
            self._host.copy_(values, non_blocking=True)
            self._ready = torch.cuda.Event()
            self._ready.record()
        else:
            self._host = values

    def result(self) -> StepResult:
        """The step's values (waits for the device to reach them)."""
        if self._ready is not None:
            self._ready.synchronize()
        *host, norm_value = self._host.tolist()
        values = dict(zip(self.names, host))
        finite = math.isfinite(values["loss"]) and (self.scaled or math.isfinite(norm_value))
        return StepResult(values, finite, norm_value)


def compiled_step(model: torch.nn.Module, mode: str = "default") -> tuple[torch.nn.Module, Callable]:
    """``model`` and :func:`identity_loss` under ``torch.compile`` in ``mode``, for :func:`train_step`."""
    return torch.compile(model, mode=mode), torch.compile(identity_loss, mode=mode)


def train_step(model: torch.nn.Module, batch: dict[str, torch.Tensor], optimizer: torch.optim.Optimizer, *,
               weights: LossWeights, window: int, autocast: torch.dtype | None = None,
               scaler: torch.amp.GradScaler | None = None, clip_grad: float = 1.0,
               loss_fn: Callable[..., tuple[torch.Tensor, dict[str, torch.Tensor]]] = identity_loss,
               shared_expression: bool = False) -> PendingStep:
    """Forward both identities, backward, clip, step. The model may be DDP-wrapped (its ``forward`` is
    ``reconstruct_both``). When the loss or the gradient norm is not finite, the optimiser does not step:
    a fused optimiser (:func:`make_optimizer`'s) skips the update on the device, so the host does not wait
    for the step; another waits for the values and decides.

    Args:
        model: an :class:`IdentityModel` or a wrapper whose forward(a, b) calls it.
        batch: from :func:`doublure.models.data.augment_batch`, on the model's device.
        optimizer: its optimiser.
        weights, window: loss weights and SSIM window.
        autocast: the autocast dtype, or None for fp32.
        scaler: a GradScaler for fp16.
        clip_grad: maximum gradient norm (0: no clipping).
        loss_fn: :func:`identity_loss`, or the same compiled (one fused kernel where eager runs dozens).
        shared_expression: see :meth:`IdentityModel.reconstruct_both`.

    Returns:
        The step's values, read when needed (:meth:`PendingStep.result`).
    """
    optimizer.zero_grad(set_to_none=True)
    device_type = batch["a_in"].device.type
    with torch.autocast(device_type, dtype=autocast or torch.float32, enabled=autocast is not None):
        (rgb_aa, mask_aa), (rgb_bb, mask_bb) = model(batch["a_in"], batch["b_in"], shared_expression)
    losses = {}
    total = 0.0
    for name, rgb, mask in (("a", rgb_aa, mask_aa), ("b", rgb_bb, mask_bb)):
        masks = batch[f"{name}_masks"]
        loss, terms = loss_fn(rgb, mask, batch[f"{name}_target"], masks[:, 1:2], masks[:, 2:3],
                                    weights, window)
        total = total + loss
        losses[name] = loss
        for k, v in terms.items():
            losses[f"{name}_{k}"] = v
    losses["loss"] = total
    if scaler is not None:
        scaler.scale(total).backward()
        scaler.unscale_(optimizer)
    else:
        total.backward()
    params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
    if clip_grad > 0:
        # foreach: one fused norm and scale over all gradients (torch enables it by itself only on CUDA)
        norm = torch.nn.utils.clip_grad_norm_(params, clip_grad, foreach=True)
    else:
        norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(p.grad) for p in params]))
    values = torch.stack([v.detach().float() for v in losses.values()] + [norm.detach().float()])
    pending = PendingStep(list(losses), values, scaled=scaler is not None)
    if scaler is not None:   # skips a step with infinite gradients itself (on the device, for a fused optimiser)
        scaler.step(optimizer)
        scaler.update()
    elif getattr(optimizer, "_step_supports_amp_scaling", False):
        # the fused kernel reads this flag on the device and leaves the weights, moments and step count as
        # they were when it is set: GradScaler's own way of skipping a step
        optimizer.found_inf = (~torch.isfinite(values)).any().float()
        try:
            optimizer.step()
        finally:
            del optimizer.found_inf
    elif pending.result().finite:
        optimizer.step()
    return pending


# ------------------------------------------------------------------------------------ trainer

def recorded_target(model: str, meta: dict[str, Any] | None = None) -> list[str]:
    """The target facesets an identity model was trained on, as its card records them (relative to the card),
    for adapting it to a shot without naming them again.

    Args:
        model: the identity model (``.dbm``).
        meta: its card, when already read.

    Raises:
        DoublureError: the card names no target faceset, or they are not on this machine (naming them).
    """
    meta = read_meta(model) if meta is None else meta
    paths = [fs.get("path", "") for fs in (meta.get("facesets") or {}).get("b") or []]
    if not paths:
        raise DoublureError(f"{model}: its card names no target faceset; give the target's faces with --target "
                            f"(in the app: the Training panel's Target field)")
    card = os.path.dirname(os.path.abspath(resolve_model_path(model)))
    found = [os.path.normpath(p if os.path.isabs(p) else os.path.join(card, p)) for p in paths]
    missing = [p for p in found if not os.path.isfile(os.path.join(p, "index.json"))]
    if missing:
        raise DoublureError(f"{model}: its target facesets {missing} are not here; give the target's faces "
                            f"with --target (in the app: the Training panel's Target field)")
    return found


class Trainer:
    """Runs a training session (see the module docstring).

    Args:
        config: the run.
        progress: called from the training thread with a dict: ``event`` (``"step"``, ``"checkpoint"``,
            ``"preview"``, ``"rollback"``, ``"done"``), ``iteration``, ``iterations`` (target or None),
            ``its_per_s``, ``samples_per_s``, ``losses``, ``data_wait_fraction``, ``elapsed_s``, ``lr``,
            ``warp``. It may call :meth:`stop`.
    """

    def __init__(self, config: TrainConfig, progress: Callable[[dict[str, Any]], None] | None = None) -> None:
        self.config = config
        self.progress = progress
        self.iteration = 0
        self.last_losses: dict[str, float] = {}
        self.rollbacks = 0
        self.error: BaseException | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._preview: np.ndarray | None = None
        self._preview_lock = threading.Lock()
        self._session_start = 0.0

    # -- control ------------------------------------------------------------------------------------
    def start(self) -> threading.Thread:
        """Run in a background thread (for the app); returns the thread."""
        if self._thread is not None and self._thread.is_alive():
            raise DoublureError("training is already running")
        self._stop.clear()

        def target() -> None:
            try:
                self.run()
            except BaseException as exc:   # kept for the app to show
                self.error = exc
                log.exception("training failed")
        self._thread = threading.Thread(target=target, name="doublure-train", daemon=True)
        self._thread.start()
        return self._thread

    def stop(self) -> None:
        """Ask the run to finish its step, write a checkpoint and return."""
        self._stop.set()

    def wait(self, timeout: float | None = None) -> bool:
        """Wait for a background run; True when it has finished."""
        if self._thread is None:
            return True
        self._thread.join(timeout)
        return not self._thread.is_alive()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def latest_preview(self) -> np.ndarray | None:
        """The last preview grid: (rows * R, 5 * R, 3) uint8 RGB with columns A, A->A, B, B->B, A->B."""
        with self._preview_lock:
            return None if self._preview is None else self._preview.copy()

    @property
    def training_dir(self) -> str:
        base = os.path.normpath(self.config.out)
        return (base[:-4] if base.endswith(".dbm") else base) + ".training"

    @property
    def log_path(self) -> str:
        return os.path.join(self.training_dir, "loss.jsonl")

    # -- setup --------------------------------------------------------------------------------------
    def _state_of_shipped_model(self, out: str) -> dict[str, Any]:
        """The training state to resume a model that was shipped without its checkpoint files (weights and
        ``model.json`` only, like the bundled demo model): its recorded iterations and time, a fresh optimiser."""
        trained = self.start_meta.get("training") or {}
        state = {"iteration": int(trained.get("iterations", 0)), "elapsed_s": float(trained.get("elapsed_s", 0.0)),
                 "seed": self.config.seed, "loss_first": (trained.get("loss") or {}).get("first")}
        if self.env.is_main:
            log.warning("%s holds no optimiser state (a shipped model): continuing from its iteration %d with a "
                        "fresh optimiser, warmed up over %d iterations", out, state["iteration"], self.config.warmup)
        return state

    def _check_face_counts(self) -> None:
        """Refuse a faceset too small to learn a face from, warn about a thin one (each names the folder)."""
        for data in {id(self.data_a): self.data_a, id(self.data_b): self.data_b}.values():
            for fs in data.facesets:
                if fs["items"] < MIN_FACESET_FACES:
                    raise DoublureError(f"faceset {fs['path']} holds {fs['items']} faces: at least "
                                        f"{MIN_FACESET_FACES} are needed to learn a face (extract more frames or "
                                        f"clips of this person)")
                if fs["items"] < THIN_FACESET_FACES and self.env.is_main:
                    log.warning("faceset %s holds only %d faces: the model will see few poses and expressions of "
                                "this person (%d or more are advised)", fs["path"], fs["items"], THIN_FACESET_FACES)

    def _model_config(self, existing: ModelConfig | None, what: str) -> ModelConfig:
        c = self.config
        if existing is None:
            return config_for(c.res or 128, c.arch or "df", c.width, **c.model_overrides)
        asked = dict(c.model_overrides)
        if c.res is not None:
            asked["res"] = c.res
        if c.arch is not None:
            asked["arch"] = c.arch
        if c.width != 1.0:
            scaled = config_for(existing.res, existing.arch, c.width)
            asked.update({k: getattr(scaled, k) for k in ("e_ch", "d_ch", "d_mask_ch", "ae_dims")})
        diff = {k: (getattr(existing, k), v) for k, v in asked.items() if getattr(existing, k) != v}
        if diff:
            detail = ", ".join(f"{k} {a} in the model vs {b} asked" for k, (a, b) in diff.items())
            raise DoublureError(f"refusing to {what} into a model of a different shape: {detail}")
        return existing

    def _setup(self) -> None:
        c = self.config
        if c.threads:
            torch.set_num_threads(c.threads)
        if c.batch < 1:
            raise DoublureError(f"batch {c.batch} must be at least 1")
        if c.memory_gb is not None and not c.memory_gb > 0:
            raise DoublureError(f"--memory-gb {c.memory_gb} must be a positive number of GiB")
        if c.compile_mode not in COMPILE_MODES:
            raise DoublureError(f"compile mode {c.compile_mode!r} is not one of {', '.join(COMPILE_MODES)}")
        self.env = dist_helpers.init_distributed(device=c.device)
        self.device = self.env.device
        base_meta = read_meta(c.from_model) if c.from_model else {}
        adapting = bool((base_meta.get("facesets") or {}).get("b"))   # an identity model, not a pretrained base
        if adapting and not c.target and not c.pretrain:
            c.target = recorded_target(c.from_model, base_meta)
        if c.pretrain:
            if c.source or c.target:
                raise DoublureError("--pretrain trains on its own facesets: give no --source/--target")
        elif not (c.source and c.target):
            raise DoublureError("training needs --source (plate actor faces) and --target (target actor faces)")

        self.start_meta: dict[str, Any] = {}
        resume_state: dict[str, Any] | None = None
        opt_state = None
        state_dict = None
        if self.env.is_main:
            clean_leftovers(c.out)   # what killed checkpoints of this model left (logged)
        out = resolve_model_path(c.out)
        if c.resume:
            if not os.path.exists(out):
                raise DoublureError(f"--resume: no checkpoint at {c.out}")
            existing, state_dict, self.start_meta = load_weights(out)
            if has_training_state(out):
                resume_state, opt_state = read_training_state(out)
            else:
                resume_state = self._state_of_shipped_model(out)
            cfg = self._model_config(existing, "resume")
        elif c.from_model:
            existing, state_dict, base_meta = load_weights(c.from_model)
            cfg = self._model_config(existing, "start")
            start = f"{base_meta.get('name') or c.from_model} ({base_meta['weights_sha256'][:12]})"
            if adapting:
                # the same identity continued on a shot's faces: the same person, consent and detail stage
                self.start_meta = {k: v for k, v in copy.deepcopy(base_meta).items() if k != "schema"}
                self.start_meta["training"] = dict(self.start_meta.get("training") or {}, **{"from": start})
            else:
                self.start_meta = {"training": {"from": start}}
        else:
            if os.path.exists(out) and os.path.exists(os.path.join(out, "train_state.json")):
                raise DoublureError(f"{c.out} already holds a model: pass --resume to continue it, or another --out")
            cfg = self._model_config(None, "")
        self.cfg = cfg
        if c.shared_expression and cfg.arch != "liae":
            raise DoublureError(f"--shared-expression needs a liae model ({c.out} is {cfg.arch}): a df model has "
                                f"no private code")
        self.shared_expression = cfg.arch == "liae" and not c.pretrain if c.shared_expression is None \
            else c.shared_expression

        if c.pretrain:
            self.data_a = self.data_b = FaceData(c.pretrain, cfg.res)
        else:
            self.data_a = FaceData(c.source, cfg.res)
            self.data_b = FaceData(c.target, cfg.res)
        self._check_memory(cfg)

        torch.manual_seed(c.seed)
        model = IdentityModel(cfg)
        if state_dict is not None:
            try:
                model.load_state_dict(state_dict)
            except RuntimeError as exc:   # load_weights checks the shapes; this is the last guard
                raise DoublureError(f"{c.out if c.resume else c.from_model}: its weights do not fit its "
                                    f"architecture: {str(exc).splitlines()[0]}") from None
        self.model = model.to(self.device)
        # a model continued (--resume, --from) keeps the framing it learned: facesets of another are refused
        continued = self.start_meta if c.resume else base_meta
        check_face_type(self.data_a.facesets + self.data_b.facesets, continued.get("face_type"),
                        c.out if c.resume else c.from_model)
        self._check_face_counts()
        self.optimizer = make_optimizer(self.model, c.lr, c.betas)
        self.autocast = resolve_precision(c.precision, self.device)
        self.scaler = torch.amp.GradScaler("cuda") if self.autocast == torch.float16 else None
        if opt_state is not None:
            try:
                self.optimizer.load_state_dict(opt_state)
                _check_moment_shapes(self.optimizer)
            except (ValueError, RuntimeError, KeyError, TypeError) as exc:
                raise DoublureError(f"--resume: the optimiser state in {c.out} does not fit its weights "
                                    f"(another model's checkpoint files?): {exc}") from None
        self.iteration = int(resume_state["iteration"]) if resume_state else 0
        # a fresh optimiser (a new model, --from, or a shipped model resumed) warms up from where it starts:
        # Adam's first steps move every weight by about the learning rate, which would undo a trained model
        self.warmup_start = self.iteration if opt_state is None else 0
        self.elapsed_before = float(resume_state.get("elapsed_s", 0.0)) if resume_state else 0.0
        self.loss_first = (resume_state or {}).get("loss_first")
        if resume_state and resume_state.get("seed") != c.seed and self.env.is_main:
            log.warning("resuming with seed %s (checkpoint used %s): the data stream changes", c.seed,
                        resume_state.get("seed"))
        self.window = ssim_window(cfg.res)
        use_compile = c.compile if c.compile is not None else self.device.type == "cuda"
        self.step_model = dist_helpers.wrap(self.model, self.env)
        self.loss_fn = identity_loss
        if use_compile:
            self.step_model, self.loss_fn = compiled_step(self.step_model, c.compile_mode)
        # the roll-back target until the first checkpoint: the starting weights and optimiser state
        self._good = (copy.deepcopy(self.model.state_dict()), copy.deepcopy(self.optimizer.state_dict()),
                      self.iteration)
        if self.env.is_main:
            os.makedirs(self.training_dir, exist_ok=True)
            self._trim_log()
            problems = rights_problems(c.rights or self.start_meta.get("rights"))
            if problems:
                log.warning("RIGHTS WARNING: %s: %s", c.out, "; ".join(problems))
            log.info("model %s at %d px, %.1fM parameters, %s on %s, %d + %d faces", cfg.arch, cfg.res,
                     parameter_count(self.model) / 1e6, self.precision_name, self.device, len(self.data_a),
                     len(self.data_b))

    def _check_memory(self, cfg: ModelConfig) -> None:
        """Refuse a run that would not fit in memory, before its network is built; warn of upscaled crops."""
        c = self.config
        datas = [self.data_a] if self.data_a is self.data_b else [self.data_a, self.data_b]
        for data in datas:
            for faceset in data.facesets:
                if faceset["size"] < cfg.res and self.env.is_main:
                    log.warning("faceset %s holds %d px crops: training at %d px upscales them %.2gx (the model "
                                "learns their softness); extract at --size %d for full detail", faceset["path"],
                                faceset["size"], cfg.res, cfg.res / faceset["size"], cfg.res)
        data_copies = 1
        if self.device.type == "cuda":   # each batch-making process decodes faces of its own
            data_copies = c.workers or default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1")))
        estimate = training_memory(cfg, c.batch, [len(d) for d in datas], datas[0].cache_bytes, c.prefetch,
                                   data_copies, self.shared_expression, resident_bytes())
        check_training_memory(estimate, self.device,
                              f"training {cfg.arch} at {cfg.res} px (batch {c.batch}, width {c.width:g})",
                              c.memory_gb)

    @property
    def precision_name(self) -> str:
        return {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.autocast]

    def _trim_log(self) -> None:
        """Drop logged iterations after the checkpoint we start from: they are about to be redone."""
        if not os.path.exists(self.log_path):
            return
        with open(self.log_path, encoding="utf-8") as f:
            lines = [ln for ln in f if ln.strip()]
        kept = [ln for ln in lines if json.loads(ln).get("iteration", 0) <= self.iteration]
        if len(kept) != len(lines) or self.iteration == 0:
            with atomic_path(self.log_path) as tmp, open(tmp, "w", encoding="utf-8") as f:
                f.writelines(kept if self.iteration else [])

    # -- schedules ----------------------------------------------------------------------------------
    def _lr(self, iteration: int) -> float:
        c = self.config
        return c.lr * min(1.0, (iteration - self.warmup_start + 1) / c.warmup) if c.warmup > 0 else c.lr

    def _warp(self, iteration: int) -> bool:
        c = self.config
        if c.warp_until >= 1.0:
            return True
        if c.warp_until <= 0.0:
            return False
        if c.iters:
            return iteration < c.warp_until * c.iters
        if c.minutes:
            return (time.monotonic() - self._session_start) < c.warp_until * c.minutes * 60
        return True

    def _produce_raw(self, iteration: int) -> dict[str, torch.Tensor]:
        """The faces and augmentation draws of ``iteration``'s batch (:func:`make_raw_batch`)."""
        c = self.config
        return make_raw_batch(self.data_a, self.data_b, c.batch, iteration, c.seed, self._warp(iteration),
                              c.augment, self.env, c.balance_expressions)

    def _produce(self, iteration: int) -> dict[str, torch.Tensor]:
        """``iteration``'s training batch, augmented on the host."""
        return augment_batch(self._produce_raw(iteration))

    # -- files --------------------------------------------------------------------------------------
    def _meta(self, elapsed: float, recent: list[dict[str, float]]) -> dict[str, Any]:
        c = self.config
        meta = copy.deepcopy(self.start_meta)
        meta.pop("schema", None)
        training = dict(meta.get("training") or {})
        last = {k: float(np.mean([r[k] for r in recent])) for k in recent[0]} if recent else training.get("loss", {}).get("last", {})
        training.update({"iterations": self.iteration, "batch": c.batch, "elapsed_s": round(elapsed, 1),
                         "device": str(self.device), "precision": self.precision_name,
                         "hyper": dict(c.hyper(), shared_expression=self.shared_expression),
                         "loss": {"first": self.loss_first, "last": last}, "rollbacks": self.rollbacks,
                         "pretrain": bool(c.pretrain)})
        meta["training"] = training
        if c.pretrain:
            meta["facesets"] = {"pretrain": self.data_a.facesets}
        else:
            meta["facesets"] = {"a": self.data_a.facesets, "b": self.data_b.facesets}
        meta["face_type"] = self.data_a.face_type
        meta["encoding"] = "srgb"
        if c.rights:
            meta["rights"] = dict(c.rights)
        meta.setdefault("rights", {})
        meta["name"] = c.name or meta.get("name") or os.path.splitext(os.path.basename(os.path.normpath(c.out)))[0]
        return meta

    def _add_references(self) -> None:
        """The target's reference faces (``config.references`` of the first target faceset) into the model
        just written, unless it carries a bank of the same target's facesets (a model continued or adapted keeps
        the one it has; one continued on another target gets that target's)."""
        c = self.config
        if not self.env.is_main or c.references <= 0 or not c.target or c.pretrain:
            return
        digests = [fs.get("digest") for fs in self.data_b.facesets]
        started = [fs.get("digest") for fs in (self.start_meta.get("facesets") or {}).get("b") or []]
        if "references" in self.start_meta and digests == started:
            return    # the same target's faces: the bank it has is theirs
        from .dbm import save_references
        from .references import bank_to_bytes, build_bank

        bank, card = build_bank(c.target[0], c.references)
        save_references(c.out, bank_to_bytes(bank), card)
        log.info("%d reference faces of %s at %d px added to %s", card["count"], card["faceset"], card["size"], c.out)

    def save_checkpoint(self, elapsed: float, recent: list[dict[str, float]]) -> None:
        """Write the model, optimiser and training state to ``out`` atomically. Called on every rank: rank 0
        writes, then all ranks wait for the file and roll back to it from now on."""
        if self.env.is_main:
            c = self.config
            state = {"iteration": self.iteration, "seed": c.seed, "elapsed_s": round(elapsed, 1),
                     "loss_first": self.loss_first, "shape": self.cfg.to_json()}
            carried = c.from_model if {"detail", "references"} & set(self.start_meta) else None
            save_model(c.out, self.model, self._meta(elapsed, recent), optimizer_state=self.optimizer.state_dict(),
                       train_state=state, parts_from=carried)
            self._log_line({"event": "checkpoint", "iteration": self.iteration})
        dist_helpers.barrier(self.env)
        self._good = None   # from now on roll back to the file

    def _rescue_checkpoint(self, exc: Exception, settle: Callable[[], bool], recent: list[dict[str, float]]) -> None:
        """After an error the run survives (a faceset that went away, a full disk, a loader crash, divergence):
        write a checkpoint of the steps done since the last one, if their weights are sound, so that
        ``--resume`` continues from there. A multi-process run does not (its other ranks are not in step)."""
        if self.env.world_size > 1:
            return
        try:
            settled = settle()
        except Exception:   # the step in flight is the failure itself
            settled = False
        if not settled or not all(bool(torch.isfinite(p).all()) for p in self.model.parameters()):
            log.warning("training of %s failed at iteration %d (%s); its weights are not sound, so no checkpoint "
                        "was written: --resume continues from the last one", self.config.out, self.iteration, exc)
            return
        try:
            self.save_checkpoint(self.elapsed_before + time.monotonic() - self._session_start, recent)
        except Exception as save_exc:
            log.warning("training of %s failed at iteration %d (%s), and its checkpoint could not be written: %s",
                        self.config.out, self.iteration, exc, save_exc)
            return
        log.warning("training of %s failed at iteration %d (%s): checkpoint written, --resume continues from it",
                    self.config.out, self.iteration, exc)

    def _log_line(self, record: dict[str, Any]) -> None:
        if self.env.is_main:
            with open(self.log_path, "a", encoding="utf-8") as f:
                f.write(json.dumps(record) + "\n")

    def _rollback(self) -> int:
        """Restore the last good weights and optimiser state; returns the iteration they are from."""
        out = resolve_model_path(self.config.out)
        if self._good is None and os.path.exists(out):
            _, state_dict, _ = load_weights(out)
            train_state, opt_state = read_training_state(out)
            origin = int(train_state["iteration"])
        else:
            state_dict, opt_state, origin = self._good
        self.model.load_state_dict(state_dict)
        if opt_state is not None:
            self.optimizer.load_state_dict(opt_state)
        return origin

    # -- preview ------------------------------------------------------------------------------------
    @torch.no_grad()
    def make_preview(self, rows: int = 4) -> np.ndarray:
        """The preview grid of the first faces of each faceset (no augmentation)."""
        n = min(rows, len(self.data_a), len(self.data_b))
        step_a, step_b = max(1, len(self.data_a) // n), max(1, len(self.data_b) // n)
        a = self.data_a.batch([i * step_a for i in range(n)])[0].to(self.device)
        b = self.data_b.batch([i * step_b for i in range(n)])[0].to(self.device)
        a = a.contiguous(memory_format=torch.channels_last)
        b = b.contiguous(memory_format=torch.channels_last)
        self.model.eval()
        try:
            with torch.autocast(self.device.type, dtype=self.autocast or torch.float32,
                                enabled=self.autocast is not None):
                (aa, _), (bb, _) = self.model.reconstruct_both(a, b)
                ab, _ = self.model.swap(a)
        finally:
            self.model.train()
        cols = [a, aa.float(), b, bb.float(), ab.float()]
        grid = torch.cat([torch.cat(list(col), dim=1) for col in cols], dim=2)   # (3, n R, 5 R)
        return (grid.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy()

    def _write_preview(self) -> None:
        grid = self.make_preview()
        with self._preview_lock:
            self._preview = grid
        if self.env.is_main:
            import cv2

            with atomic_path(os.path.join(self.training_dir, "preview.png")) as tmp:
                cv2.imwrite(tmp, cv2.cvtColor(grid, cv2.COLOR_RGB2BGR))

    # -- the loop -----------------------------------------------------------------------------------
    def _notify(self, event: str, **info: Any) -> None:
        if self.progress is not None and self.env.is_main:
            self.progress(dict(info, event=event, iteration=self.iteration, iterations=self.config.iters))

    def run(self) -> dict[str, Any]:
        """Train until the budget is spent or :meth:`stop` is called; always ends with a checkpoint.

        Returns:
            Summary: ``iteration``, ``losses`` (mean of the last logged steps), ``its_per_s``,
            ``data_wait_fraction``, ``rollbacks``, ``elapsed_s``.
        """
        handlers = self._install_signal_handlers()
        try:
            self._setup()
            with flush_denormals(self.device):
                return self._loop()
        finally:
            for sig, old in handlers.items():
                signal.signal(sig, old)

    def _install_signal_handlers(self) -> dict[int, Any]:
        if threading.current_thread() is not threading.main_thread():
            return {}
        old = {}
        for sig in (signal.SIGINT, signal.SIGTERM):
            old[sig] = signal.getsignal(sig)
            signal.signal(sig, lambda *_: self.stop())
        return old

    def _loop(self) -> dict[str, Any]:
        c = self.config
        self._session_start = time.monotonic()
        last_checkpoint = time.monotonic()
        next_checkpoint_s = min(c.first_checkpoint_minutes, c.checkpoint_minutes) * 60
        checkpointed = self.iteration
        on_gpu = self.device.type == "cuda"
        if on_gpu:   # faces and draws from worker processes; the augmentation's pixel work on the GPU, batched
            loader = ProcessBatchLoader(
                self._produce_raw, self.iteration, prefetch=c.prefetch, pin_memory=True,
                workers=c.workers or default_workers(int(os.environ.get("LOCAL_WORLD_SIZE", "1"))))
        else:   # the CPU's cores step the model: two threads keep up with it (data wait 0.0% at 64-128 px)
            loader = BatchLoader(self._produce, self.iteration, prefetch=c.prefetch, workers=c.workers or 2)
        recent: list[dict[str, float]] = []
        window_start, window_iters, window_wait = time.monotonic(), 0, 0.0
        total_wait = 0.0
        consecutive_rollbacks = 0
        its = 0.0
        step_time = 0.0
        # (its iteration, its learning rate, its values): the step queued last, whose values are read only
        # once the next one is queued (PendingStep), or before anything that must not hold an unchecked step
        in_flight: tuple[int, float, PendingStep] | None = None

        def settle() -> bool:
            """Read the step in flight and act on it: a non-finite one rolls back (and the step queued after
            it, computed from the weights the roll-back replaces, is dropped); else it is counted, logged and
            reported. Returns False after a roll-back."""
            nonlocal in_flight, consecutive_rollbacks, window_start, window_iters, window_wait, its
            if in_flight is None:
                return True
            iteration, lr, pending = in_flight
            in_flight = None
            result = pending.result()
            if dist_helpers.any_rank(not result.finite, self.env):
                consecutive_rollbacks += 1
                self.rollbacks += 1
                if consecutive_rollbacks > c.max_rollbacks:
                    raise DoublureError(f"training of {c.out} diverged: {consecutive_rollbacks} non-finite "
                                        f"steps in a row at iteration {iteration}; lower --lr")
                origin = self._rollback()
                if self.env.is_main:
                    log.warning("non-finite loss at iteration %d: rolled back to iteration %d's weights",
                                iteration, origin)
                self._log_line({"event": "rollback", "iteration": iteration, "restored": origin})
                self._notify("rollback", restored=origin, losses=result.losses)
                return False
            consecutive_rollbacks = 0
            window_iters += 1
            losses = dict(result.losses)
            if self.loss_first is None:
                self.loss_first = {k: round(v, 6) for k, v in losses.items()}
            recent.append(losses)
            del recent[:-50]
            self.last_losses = losses
            if (iteration + 1) % c.log_every == 0:
                now = time.monotonic()
                span = max(now - window_start, 1e-9)
                its = window_iters / span
                wait_fraction = window_wait / span
                self._log_line({"iteration": iteration + 1, "time": round(self.elapsed_before + now -
                                                                          self._session_start, 2),
                                "lr": lr, **{k: round(v, 6) for k, v in losses.items()},
                                "its_per_s": round(its, 3), "data_wait": round(wait_fraction, 4)})
                self._notify("step", its_per_s=its, samples_per_s=its * c.batch * 2, losses=losses,
                             data_wait_fraction=wait_fraction, lr=lr, warp=self._warp(iteration + 1),
                             elapsed_s=self.elapsed_before + now - self._session_start)
                window_start, window_iters, window_wait = now, 0, 0.0
            return True

        try:
            while True:
                stop = (self._stop.is_set() or (c.iters is not None and self.iteration >= c.iters) or
                        (c.minutes is not None and time.monotonic() - self._session_start >= c.minutes * 60))
                # a rank that left alone would leave the others blocked in the next all-reduce
                if dist_helpers.any_rank(stop, self.env):
                    break
                wait_before = loader.wait_s
                t0 = time.monotonic()
                batch = {k: v.to(self.device, non_blocking=True) for k, v in loader.next().items()}
                if on_gpu:
                    batch = augment_batch(batch)
                lr = self._lr(self.iteration)
                for group in self.optimizer.param_groups:
                    group["lr"] = lr
                pending = train_step(self.step_model, batch, self.optimizer, weights=c.loss, window=self.window,
                                     autocast=self.autocast, scaler=self.scaler, clip_grad=c.clip_grad,
                                     loss_fn=self.loss_fn, shared_expression=self.shared_expression)
                queued = (self.iteration, lr, pending)
                self.iteration += 1
                step_time += time.monotonic() - t0
                waited = loader.wait_s - wait_before
                window_wait += waited
                total_wait += waited
                in_flight = queued if settle() else None
                if c.preview_every and self.iteration % c.preview_every == 0:
                    self._write_preview()
                    self._notify("preview")
                if dist_helpers.any_rank(time.monotonic() - last_checkpoint >= next_checkpoint_s, self.env):
                    if settle():   # a checkpoint holds no step whose values were not read
                        self.save_checkpoint(self.elapsed_before + time.monotonic() - self._session_start, recent)
                        self._notify("checkpoint")
                        last_checkpoint = time.monotonic()
                        next_checkpoint_s = c.checkpoint_minutes * 60
                        checkpointed = self.iteration
            settle()
        except Exception as exc:
            if self.iteration > checkpointed:
                self._rescue_checkpoint(exc, settle, recent)
            raise
        finally:
            loader.close()
        elapsed = self.elapsed_before + time.monotonic() - self._session_start
        self.save_checkpoint(elapsed, recent)
        self._add_references()
        self._write_preview()
        session = time.monotonic() - self._session_start
        summary = {"iteration": self.iteration, "losses": self._meta(elapsed, recent)["training"]["loss"]["last"],
                   "its_per_s": its, "data_wait_fraction": total_wait / max(step_time, 1e-9),
                   "rollbacks": self.rollbacks, "elapsed_s": elapsed, "session_s": session}
        self._notify("done", **summary)
        dist_helpers.shutdown(self.env)
        return summary


# ------------------------------------------------------------------------------------ command line

def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="doublure train", description="Train an identity model (.dbm).")
    p.add_argument("--target", nargs="+", default=[], metavar="FACESET", help="faceset(s) of the target actor (B)")
    p.add_argument("--source", nargs="+", default=[], metavar="FACESET", help="faceset(s) of the plate actor (A)")
    p.add_argument("--pretrain", nargs="+", default=[], metavar="FACESET",
                   help="train a generic base model on many people's facesets")
    p.add_argument("--from", dest="from_model", metavar="MODEL.dbm",
                   help="start from a pretrained base model, or adapt an identity model to a shot: --from "
                        "actorB.dbm --source shot_faces/ --out actorB_sh010.dbm --minutes 10 (its rights record "
                        "and detail stage go with it; --target defaults to the facesets it was trained on)")
    p.add_argument("--out", required=True, help="the model to write (.dbm folder)")
    p.add_argument("--res", type=int, help="crop resolution, 64..1024 in steps of 32 (default 128)")
    p.add_argument("--arch", choices=ARCHITECTURES, help="df (one decoder per identity) or liae (default df)")
    p.add_argument("--width", type=float, default=1.0, help="scale of the network widths (default 1.0)")
    p.add_argument("--iters", type=int, help="stop at this total iteration count")
    p.add_argument("--minutes", type=float, help="stop after this many minutes")
    p.add_argument("--batch", type=int, help="faces of each identity per iteration (default 8; with --detail 16)")
    p.add_argument("--resume", action="store_true", help="continue the checkpoint at --out")
    p.add_argument("--lr", type=float, default=1e-4)
    p.add_argument("--warmup", type=int, default=200, help="learning-rate warm-up iterations")
    p.add_argument("--warp-until", type=float, default=0.8, help="fraction of the budget with random warp")
    p.add_argument("--eyes-mouth-weight", type=float, default=LossWeights.eyes_mouth)
    p.add_argument("--blur", type=float, default=AugmentSettings.blur,
                   help="probability of blurring a face's input, so softer plates read as the same face "
                        f"(default {AugmentSettings.blur}; 0: off)")
    p.add_argument("--compression", type=float, default=AugmentSettings.compression,
                   help="probability of a JPEG-like quantisation of a face's input, so compressed plates read as "
                        f"the same face (default {AugmentSettings.compression}; 0: off)")
    p.add_argument("--blink", type=float, default=AugmentSettings.blink,
                   help="probability of closing a face's eyes by a warp, for facesets without blinks "
                        f"(default {AugmentSettings.blink}: off)")
    p.add_argument("--balance-expressions", action="store_true",
                   help="draw faces evened out by mouth and eye opening (rare expressions more often)")
    p.add_argument("--shared-expression", action=argparse.BooleanOptionalAction, default=None,
                   help="liae: average the plate actor's private code over each batch, so her expression "
                        "(blinks, the mouth) reaches the swap through the shared code (default: on for liae "
                        "identity models)")
    p.add_argument("--detail", action="store_true",
                   help="train the detail stage of the model at --out (its identity part trained already) on the "
                        "target's facesets (--target, extracted at least as large as the stage's output): the swap "
                        "then carries the references' detail on plate faces larger than the model's crop")
    p.add_argument("--detail-scale", type=int, default=0, choices=(0, 2, 4, 8),
                   help="the detail stage's output over the model's resolution (0: from the references' native "
                        "face size)")
    p.add_argument("--detail-channels", type=int, default=DetailTrainConfig.channels,
                   help=f"width of the detail stage (default {DetailTrainConfig.channels})")
    p.add_argument("--detail-blocks", type=int, default=DetailTrainConfig.blocks,
                   help=f"residual blocks of the detail stage (default {DetailTrainConfig.blocks})")
    p.add_argument("--references", type=int, default=48, metavar="N",
                   help="after training, give the model N of the target's own faces from the first --target "
                        "faceset, which SwapModel draws the face from at the plate's size (default 48; 0: none; "
                        "`doublure references` adds or replaces them later)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint-minutes", type=float, default=10.0)
    p.add_argument("--first-checkpoint-minutes", type=float, default=1.0,
                   help="the first checkpoint comes this soon, so a run killed early leaves something to resume")
    p.add_argument("--preview-every", type=int, default=500)
    p.add_argument("--log-every", type=int, default=10)
    p.add_argument("--gpus", type=int, default=1,
                   help="train on this many GPUs of this machine, one process each (torchrun)")
    p.add_argument("--device", help="torch device (default: CUDA when present, else CPU)")
    p.add_argument("--precision", choices=PRECISIONS, default="auto")
    p.add_argument("--compile-mode", choices=COMPILE_MODES, default="default",
                   help="torch.compile's mode on CUDA (reduce-overhead: CUDA graphs)")
    p.add_argument("--threads", type=int, default=0, help="CPU threads for torch (0: default)")
    p.add_argument("--memory-gb", type=float,
                   help="memory the run may take, GiB (default 80%% of the machine's; on a GPU, of each of host "
                        "and GPU memory): a run estimated past it is refused before it starts")
    p.add_argument("--name", default="", help="display name of the model")
    p.add_argument("--rights-subject", default="", help="whose face the model renders")
    p.add_argument("--rights-consent-by", default="", help="who gave consent")
    p.add_argument("--rights-consent-date", default="", help="when consent was given (YYYY-MM-DD)")
    p.add_argument("--rights-agreement", default="", help="reference of the agreement")
    p.add_argument("--rights-uses", default="", help="allowed uses, comma separated")
    p.add_argument("--rights-expiry", default="", help="expiry date of the rights (YYYY-MM-DD)")
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    from .dbm import rights_record

    rights_given = any([args.rights_subject, args.rights_consent_by, args.rights_consent_date,
                        args.rights_agreement, args.rights_uses, args.rights_expiry])
    rights = rights_record(args.rights_subject, args.rights_consent_by, args.rights_consent_date,
                           args.rights_agreement, args.rights_uses, args.rights_expiry) if rights_given else {}
    return TrainConfig(out=args.out, source=args.source, target=args.target, pretrain=args.pretrain,
                       from_model=args.from_model, resume=args.resume, res=args.res, arch=args.arch,
                       width=args.width, batch=args.batch or 8, iters=args.iters, minutes=args.minutes, lr=args.lr,
                       warmup=args.warmup, warp_until=args.warp_until, balance_expressions=args.balance_expressions,
                       shared_expression=args.shared_expression,
                       loss=dataclasses.replace(LossWeights(), eyes_mouth=args.eyes_mouth_weight),
                       augment=dataclasses.replace(AugmentSettings(), blink=args.blink, blur=args.blur,
                                                   compression=args.compression), seed=args.seed,
                       checkpoint_minutes=args.checkpoint_minutes,
                       first_checkpoint_minutes=args.first_checkpoint_minutes, preview_every=args.preview_every,
                       log_every=args.log_every, device=args.device, precision=args.precision,
                       compile_mode=args.compile_mode, threads=args.threads, name=args.name, rights=rights,
                       memory_gb=args.memory_gb, references=args.references)


class ProgressLine:
    """The terminal display of a training run (``doublure train``, ``doublure adapt``): one line, redrawn in place
    on a terminal, every log step."""

    def __init__(self, stream=sys.stderr) -> None:
        self.stream = stream
        self.tty = stream.isatty()

    def __call__(self, info: dict[str, Any]) -> None:
        event = info["event"]
        it, total = info["iteration"], info.get("iterations")
        if event == "step":
            losses = info["losses"]
            text = (f"it {it}{'/' + str(total) if total else ''}  {info['its_per_s']:.2f} it/s  "
                    f"{info['samples_per_s']:.1f} samples/s  loss A {losses['a']:.4f} B {losses['b']:.4f}  "
                    f"data wait {100 * info['data_wait_fraction']:.1f}%{'  warp' if info.get('warp') else ''}")
            self.stream.write(("\r" + text + "\x1b[K") if self.tty else text + "\n")
        elif event in ("checkpoint", "rollback"):
            extra = f" (restored iteration {info['restored']})" if event == "rollback" else ""
            self.stream.write(("\n" if self.tty else "") + f"{event} at iteration {it}{extra}\n")
        elif event == "done":
            self.stream.write(("\n" if self.tty else "") +
                              f"done: {it} iterations, data wait {100 * info['data_wait_fraction']:.1f}% of step time\n")
        self.stream.flush()


def _detail_progress(info: dict[str, Any]) -> None:
    """The terminal lines of ``doublure train --detail``."""
    if info["event"] == "step" and info["iteration"] % 100 == 0:
        print(f"detail it {info['iteration']}  loss {info['loss']:.4f}{'  adversarial' if info['adversarial'] else ''}"
              f"  {info['elapsed_s'] / 60:.1f} min", file=sys.stderr)
    elif info["event"] in ("setup", "checkpoint"):
        print(f"detail {info['event']} at iteration {info['iteration']} {info.get('message', '')}", file=sys.stderr)


def train_main(argv: Sequence[str] | None = None) -> int:
    """``doublure train ...`` (see :func:`build_parser`). Returns the exit status.

    Ctrl-C and SIGTERM finish the current step and write a checkpoint before exiting (status 0).
    """
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    if args.gpus > 1 and "WORLD_SIZE" not in os.environ:
        return dist_helpers.launch("doublure.models.train", _without_gpus_option(argv), args.gpus)
    main_rank = int(os.environ.get("RANK", "0")) == 0
    # the other ranks of a torchrun job only report problems
    logging.basicConfig(level=logging.INFO if main_rank else logging.WARNING,
                        format="%(levelname)s %(name)s: %(message)s")
    if args.detail:
        detail = DetailTrainConfig(out=args.out, target=args.target, scale=args.detail_scale,
                                   channels=args.detail_channels, blocks=args.detail_blocks,
                                   batch=args.batch or DetailTrainConfig.batch, iters=args.iters, minutes=args.minutes,
                                   resume=args.resume, checkpoint_minutes=args.checkpoint_minutes, seed=args.seed,
                                   threads=args.threads)
        DetailTrainer(detail, progress=_detail_progress).run()
        print(f"detail stage written into {args.out}", file=sys.stderr)
        return 0
    trainer = Trainer(config_from_args(args), progress=ProgressLine())
    trainer.run()
    if main_rank:
        print(f"model written to {args.out}", file=sys.stderr)
    return 0


def _without_gpus_option(argv: Sequence[str]) -> list[str]:
    """``argv`` less ``--gpus N`` / ``--gpus=N``: what each torchrun process gets."""
    kept: list[str] = []
    skip_value = False
    for arg in argv:
        if skip_value:
            skip_value = False
        elif arg == "--gpus":
            skip_value = True
        elif not arg.startswith("--gpus="):
            kept.append(arg)
    return kept


if __name__ == "__main__":   # torchrun -m doublure.models.train ... (one process per GPU)
    try:
        sys.exit(train_main(sys.argv[1:]))
    except DoublureError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)

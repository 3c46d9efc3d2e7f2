"""Adapting an identity model to one shot: the plate's own faces, read through the Read that feeds a SwapModel,
continue the model for a few minutes (``doublure train --from``), and the SwapModel then uses the result.

An identity model trained once draws the target on plates it never saw only roughly; a few minutes on the
shot's own faces move identity and expression there (bench/RESULTS.md, issue 21). This module is what the
Training panel's "Adapt to this shot" and ``doublure adapt shot.dbl`` run; it holds no Qt.

The steps, each its own call so the app can show progress and stop between them:

1. ``plan_adaptation``: which SwapModel, its model and the Read upstream of it, where the faces and the
   adapted model go; the model's target facesets are checked here, before minutes of extraction.
2. ``extract_shot``: the Read's frames through the engine (any file the Read reads, after its colour
   conversion) into a faceset.
3. ``adaptation_config``: the training run (``models.train.Trainer``) that continues the model on them; its
   card, rights record and detail stage go with it.
4. ``use_adapted``: point the SwapModel at the adapted model (one undoable step).
"""
from __future__ import annotations

import math
import os
from dataclasses import dataclass, field
from typing import Callable, Iterator

import numpy as np

from doublure.engine.context import CancelToken
from doublure.engine.errors import DoublureError
from doublure.faces.detect import working_to_srgb8
from doublure.faces.extract import FrameSource, extract_faceset
from doublure.models.dbm import read_meta
from doublure.models.train import TrainConfig, recorded_target

# Faces drawn from a shot at most: more frames of one shot add little (neighbouring frames are near copies)
# and cost extraction time.
MAX_SHOT_FACES = 400
# Default training budget of an adaptation, in minutes: the goal is met within 10 CPU-minutes.
DEFAULT_MINUTES = 10.0
# A shot's run is short: the learning-rate warm-up of a fresh optimiser is shortened to match.
ADAPT_WARMUP = 50
# The training settings an adaptation takes from the model's card (``training.hyper``).
ADAPT_KEEPS = ("lr", "betas", "batch", "clip_grad", "balance_expressions")


@dataclass
class TargetRebuild:
    """A target faceset extracted again from the clips its model card names (a model shipped without its
    facesets, like the bundled demo model: its clips ship beside it)."""

    path: str
    clips: list[str]
    size: int
    every: int
    face_type: str


# Where the clips a model card names are looked for: the folder holding the model, and its media/ folder.
CLIP_FOLDERS = (".", "media")


def _target_facesets(model: str, meta: dict, folder: str) -> tuple[list[str], list[TargetRebuild]]:
    """The model's target facesets as its card records them, or, where they are not on this machine, the
    plan to extract them again from their clips."""
    try:
        return recorded_target(model, meta), []
    except DoublureError as missing:
        base = os.path.dirname(os.path.abspath(os.path.normpath(model)))
        stem = os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
        rebuilds = []
        for entry in (meta.get("facesets") or {}).get("b") or []:
            clips = entry.get("clips") or []
            found = {name: next((p for p in (os.path.join(base, d, name) for d in CLIP_FOLDERS)
                                 if os.path.isfile(p)), None) for name in clips}
            lost = [name for name, path in found.items() if path is None]
            if not clips or lost:
                raise DoublureError(f"{missing}" + (f"; nor are its clips {lost} beside the model (in "
                                                    f"{', '.join(os.path.join(base, d) for d in CLIP_FOLDERS)})"
                                                    if lost else "")) from None
            name = os.path.basename(os.path.normpath(entry.get("path") or "faces"))
            rebuilds.append(TargetRebuild(os.path.join(folder, f"{stem}_{name}"), list(found.values()),
                                          int(entry.get("size", 128)), int(entry.get("every", 1)),
                                          str(entry.get("face_type", "whole_face"))))
        return [r.path for r in rebuilds], rebuilds


@dataclass
class AdaptPlan:
    """One adaptation: what is continued on what, and where it is written.

    Attributes:
        swap: the SwapModel node's name.
        read: the Read node upstream of it whose frames are the shot.
        model: the identity model being adapted (absolute path).
        plate: the Read's file, as the faceset records its faces' source.
        frames: the timeline frames read (first, last, step).
        faceset: the folder the shot's faces are extracted to.
        out: the adapted model written (``.dbm``).
        target: the target's facesets (the model card's, or given).
        crop: the side of the extracted crops.
        face_type: the framing of the extracted crops: the model's (it continues on what it learned).
        rebuild: target facesets the card names that are not on this machine, to extract again from their
            clips (found beside the model) into their ``target`` folder before training.
        hyper: the training settings the model's card records (its learning rate, batch...), which the
            adaptation continues with.
    """

    swap: str
    read: str
    model: str
    plate: str
    frames: tuple[int, int, int]
    faceset: str
    out: str
    target: list[str]
    crop: int
    face_type: str = "whole_face"
    rebuild: list[TargetRebuild] = field(default_factory=list)
    hyper: dict = field(default_factory=dict)

    @property
    def frame_count(self) -> int:
        first, last, step = self.frames
        return len(range(first, last + 1, step))


def _swap_node(graph, swap: str | None):
    if swap:
        node = graph.node(swap)
        if node.type_name != "SwapModel":
            raise DoublureError(f"adapt: {swap} is a {node.type_name}, not a SwapModel")
        return node
    swaps = [n for n in graph.nodes if n.type_name == "SwapModel"]
    if not swaps:
        raise DoublureError("adapt: the project has no SwapModel node to adapt")
    if len(swaps) > 1:
        raise DoublureError(f"adapt: the project has {len(swaps)} SwapModel nodes "
                            f"({', '.join(sorted(n.name for n in swaps))}): name one")
    return swaps[0]


def _upstream_read(swap):
    """The Read the SwapModel's main input comes from, following each node's first input."""
    node, seen = swap.input(0), set()
    while node is not None and id(node) not in seen:
        if node.type_name == "Read":
            return node
        seen.add(id(node))
        node = node.input(0)
    raise DoublureError(f"adapt: no Read upstream of {swap.name}'s input: the shot's faces come from its plate")


def plan_adaptation(graph, swap: str | None = None, out: str | None = None, faceset: str | None = None,
                    target: list[str] | None = None) -> AdaptPlan:
    """Work out an adaptation of a project's SwapModel to its plate.

    Args:
        graph: the project's ``engine.Graph``.
        swap: the SwapModel's name (None: the project's only one).
        out: the adapted model to write (default: ``<model>_<plate>.dbm`` in the project's folder, or the
            working folder for an unsaved project: never beside the model, which may be a shared library's).
        faceset: where the shot's faces go (default: ``<plate>_faces`` beside ``out``).
        target: the target's facesets (default: the ones the model's card records).

    Returns:
        The plan.

    Raises:
        DoublureError: no or several SwapModels, no model set, no Read upstream, the target's facesets not on
            this machine, or ``out`` the model itself; each message names the node, knob or file.
    """
    node = _swap_node(graph, swap)
    model = node.path("model")
    if not model:
        raise DoublureError(f"adapt: {node.name} has no model (knob 'model')")
    meta = read_meta(model)
    read = _upstream_read(node)
    plate = read.path("file")
    if not plate:
        raise DoublureError(f"adapt: {read.name} has no file (knob 'file')")
    offset = int(read.value("frame_offset"))
    first, last = int(read.value("first")) + offset, int(read.value("last")) + offset
    if last < first:
        raise DoublureError(f"adapt: {read.name}'s range {first}-{last} runs backwards")
    step = max(1, math.ceil((last - first + 1) / MAX_SHOT_FACES))
    folder = graph.project_dir or os.getcwd()
    model_stem = os.path.splitext(os.path.basename(os.path.normpath(model)))[0]
    plate_stem = os.path.splitext(os.path.basename(plate))[0].replace("#", "").replace("%", "").strip("._-") or read.name
    out = os.path.abspath(out or os.path.join(folder, f"{model_stem}_{plate_stem}.dbm"))
    if os.path.normpath(out) == os.path.normpath(os.path.abspath(model)):
        raise DoublureError(f"adapt: the adapted model would replace {model}; choose another output")
    faceset = os.path.abspath(faceset or os.path.join(os.path.dirname(out), f"{plate_stem}_faces"))
    rebuild: list[TargetRebuild] = []
    if target:
        target = [os.path.abspath(t) for t in target]
    else:
        target, rebuild = _target_facesets(model, meta, os.path.dirname(out))
    res = int((meta.get("architecture") or {}).get("res", 64))
    return AdaptPlan(swap=node.name, read=read.name, model=os.path.abspath(model), plate=plate,
                     frames=(first, last, step), faceset=faceset, out=out, target=target, crop=max(128, 2 * res),
                     face_type=str(meta.get("face_type") or "whole_face"), rebuild=rebuild,
                     hyper=dict((meta.get("training") or {}).get("hyper") or {}))


def shot_frames(graph, plan: AdaptPlan, cancel=None) -> FrameSource:
    """The plan's Read frames as the engine makes them (the Read's colour conversion, any file type), sRGB
    encoded for the face detector, as ``extract_faceset`` takes them."""
    read = graph.node(plan.read)
    first, last, step = plan.frames

    def frames() -> Iterator[tuple[int, np.ndarray]]:
        for frame in range(first, last + 1, step):
            ctx = graph.context(frame, 1.0, cancel)
            ctx.check_cancelled()
            img = graph.evaluate_node(read, ctx)
            yield frame, working_to_srgb8(img.tensor, ctx.working_space)

    return FrameSource(plan.plate, plan.frame_count, frames)


def extract_shot(graph, plan: AdaptPlan, progress: Callable[[int, int, str], None] | None = None,
                 cancel: CancelToken | None = None, min_faces: int = 1) -> dict:
    """Extract the shot's faces into ``plan.faceset`` (see ``faces.extract.extract_faceset``'s summary), after
    the target facesets the plan extracts again from their clips (once: a folder already extracted is kept).
    ``min_faces``: fewer usable faces are refused (``MIN_FACESET_FACES`` before a training run, which would
    refuse them naming only the faceset's folder).

    Raises:
        DoublureError: fewer than ``min_faces`` faces were found in the shot (naming the Read and its frames).
    """
    def report(done: int, total: int, clip: str) -> None:
        if cancel is not None:
            cancel.check()
        if progress is not None:
            progress(done, total, clip)

    for rebuild in plan.rebuild:
        if not os.path.isfile(os.path.join(rebuild.path, "index.json")):
            extract_faceset(rebuild.clips, rebuild.path, size=rebuild.size, every=rebuild.every,
                            face_type=rebuild.face_type, progress=report)
    summary = extract_faceset([shot_frames(graph, plan, cancel)], plan.faceset, size=plan.crop,
                              face_type=plan.face_type, progress=report)
    if summary["items"] < min_faces:
        first, last, _ = plan.frames
        found = f"only {summary['items']} usable faces" if summary["items"] else "no usable face"
        raise DoublureError(f"adapt: {found} in {plan.read}'s frames {first}-{last} ({plan.plate})"
                            + (f"; adapting needs at least {min_faces} (a longer frame range gives more)"
                               if min_faces > 1 else ""))
    return summary


def adaptation_config(plan: AdaptPlan, minutes: float = DEFAULT_MINUTES, **overrides) -> TrainConfig:
    """The training run that continues ``plan.model`` on the shot's faces for ``minutes``.

    The model's card, rights record and detail stage go with it (``TrainConfig.from_model``), and so do the
    learning rate, batch and draws it was trained with (on the demo model, continuing at its own 3e-4 instead
    of the default 1e-4 took an unseen plate from 0% to 50% of frames nearer the target in 1,125 iterations,
    bench/RESULTS.md); a fresh optimiser warms up over ``ADAPT_WARMUP`` iterations. ``overrides``: other
    ``TrainConfig`` fields.
    """
    if not minutes > 0:
        raise DoublureError(f"adapt: the training time must be positive minutes (got {minutes})")
    kept = {name: plan.hyper[name] for name in ADAPT_KEEPS if name in plan.hyper}
    if "betas" in kept:
        kept["betas"] = tuple(kept["betas"])
    fields = dict(kept, out=plan.out, from_model=plan.model, source=[plan.faceset], target=list(plan.target),
                  minutes=float(minutes), warmup=ADAPT_WARMUP, first_checkpoint_minutes=1.0,
                  checkpoint_minutes=min(TrainConfig.checkpoint_minutes, max(1.0, minutes / 2)))
    fields.update(overrides)
    return TrainConfig(**fields)


def use_adapted(graph, plan: AdaptPlan) -> None:
    """Point the SwapModel at the adapted model: one undoable edit, the path relative to a saved project."""
    path = plan.out
    if graph.project_dir:
        rel = os.path.relpath(path, graph.project_dir)
        path = path if rel.startswith("..") else rel
    graph.set_knob(plan.swap, "model", path)

"""Occlusion: what stands in front of each face (glasses, a hand, hair, a prop) rides along with the face, so
SwapModel puts the new face under it and the finishing nodes below leave it alone.

Place it between FaceDetect and SwapModel. Every face leaves with ``Face.occlusion``: a plate-resolution matte
over the face's crop window, 1 where the plate must be kept. It is the union of:

- **learned**: paint in the viewer on two or three frames, ``add`` strokes over the occluder (the glasses'
  frame, a hand, a strand of hair) and ``erase`` strokes over the face beside it, then Train matte
  (``action_train`` / ``doublure occlusion shot.dbl -n Occlusion1``): a small network learns the shot's
  occluders in the face's aligned crop and finds them on every frame; its coarse edge (a crop pixel is
  several plate pixels) is then refined on the plate's own pixels. A glasses frame's wire is finer than
  that: traced with a fine brush (the viewer zoomed in), it teaches a second head that sees the eye band at
  about the plate's resolution. The trained matte is stored beside the
  project (``<project_dir>/<project_stem>.occlusion/<NodeName>.safetensors``) with the keys of what it was
  trained on: the plate at the training frames (by content, as FaceDetect's tracks) and the strokes. A matte
  whose plate or strokes changed is not applied: the node errors until it is trained again (or ``learned``
  is switched off), rather than a wrong matte going under the swap.
- **hands**: mediapipe's hand landmarks, a hand taken to be in front of any face it overlaps.
- **far side**: the part of a turned head's face hull the mesh does not cover.
"""
from __future__ import annotations

import logging
import os
import threading
from typing import Callable

import numpy as np
import torch

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, register_node
from doublure.engine import fields
from doublure.engine import knobs as K
from doublure.engine.hashing import file_identity
from doublure.engine.identity import upstream_identity
from doublure.engine.node import resolve_path
from doublure.faces.detect import working_to_srgb8
from doublure.faces.occlusion import (BAND_RES, MATTE_RES, HandFinder, TrainingSample, TrainingStalled, apply_matte,
                                      crop_window, far_side_matte, hand_matte, load_matte, save_matte, stroke_labels,
                                      train_matte, training_sample, with_occlusion)

from .facedetect import _tracks_cache_dir

log = logging.getLogger("doublure.occlusion")

OUTPUTS = ("plate", "matte")
# Hands are looked for in the faces' surroundings at most this many pixels wide (mediapipe works at 224 px).
HAND_SEARCH_PX = 640


def training_frames(strokes: list[dict]) -> list[int]:
    """The frames strokes were painted on: those of strokes limited to one frame (the brush paints an
    Occlusion node's strokes that way), in order."""
    return sorted({int(s["frames"]["only"]) for s in strokes if s.get("frames") and "only" in s["frames"]})


def strokes_key(strokes: list[dict]) -> str:
    """Identity of a strokes knob's value."""
    return Hasher().update("Occlusion.strokes/1").update(strokes).hexdigest()



def check_matte_record(matte: object) -> None:
    """The ``matte`` knob's shape (what Train matte stores): the matte file, the keys that tell a stale matte
    and the training frames; a project file holds it, so it is checked like every other field read."""
    matte = fields.mapping(matte, "matte")
    path = fields.text(matte.get("file"), "matte: file")
    if not path:
        raise fields.FieldError("matte: file is empty")
    for key in ("strokes_key", "plate_key"):
        fields.text(matte.get(key), f"matte: {key}")
    fields.sequence(matte.get("frames"), "matte: frames")
    for i, frame in enumerate(matte["frames"]):
        fields.integer(frame, f"matte: frames[{i}]")


@register_node
class Occlusion(Node):
    """Find what stands in front of each face (painted and learned, hands, a turned head's far side)."""

    type_name = "Occlusion"
    # 2: the learned matte's edge refined on the plate; 3: the eye band head (compute changes: no upgrade needed)
    version = 3
    category = "Face"
    inputs = (Port("input", "Image"),)
    actions = (("train", "Train matte"),)
    # The viewer's brush paints this node's strokes on the frame shown only: the frames painted are the
    # training frames.
    paint_frame_only = True
    knob_specs = (
        K.Strokes("strokes", tooltip="Paint (add) over occluders and erase (E) over the face beside them, on two or "
                                     "three frames, then Train matte."),
        K.Bool("learned", default=True, tooltip="Apply the matte trained from the strokes (Train matte)."),
        K.Bool("hands", default=True, tooltip="Hands in front of a face, found by mediapipe's hand landmarks."),
        K.Bool("far_side", default=True, label="far side",
               tooltip="On a turned head, keep the background the face hull covers beyond the far cheek."),
        K.Int("steps", default=400, min=10, max=5000, soft_max=2000, animatable=False, label="training steps",
              tooltip="Optimisation steps of Train matte (about 0.1 s each on a CPU core)."),
        K.Enum("output", OUTPUTS, default="plate",
               tooltip="plate: the input with each face's occlusion attached; matte: the occlusion as an image."),
        K.Data("matte", default=None, check=check_matte_record),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._upstream_memo: dict[int, tuple[str | None, list]] = {}
        self._hands = HandFinder()
        self._net_lock = threading.Lock()
        self._net: tuple[tuple, torch.nn.Module] | None = None
        self.train_error: str | None = None   # why the last Train matte stopped, shown until the next one

    # -- the stored matte ----------------------------------------------------------------------------
    def matte_path(self) -> str:
        """Where Train matte writes: beside the project, or a cache folder for an unsaved graph."""
        if self.graph.project_path:
            stem = os.path.splitext(os.path.basename(self.graph.project_path))[0]
            return os.path.join(self.graph.project_dir, f"{stem}.occlusion", f"{self.name}.safetensors")
        return os.path.join(os.path.dirname(_tracks_cache_dir()), "occlusion", f"{self.uuid}.safetensors")

    def _stored_path(self, matte: dict) -> str:
        return resolve_path(matte["file"], self.graph.project_dir)

    def plate_key(self, frames: list[int]) -> str:
        """Identity of the plate (and faces) at the training frames, by content: a new or re-rendered plate
        or another track changes it; the same files at another path (the farm, a copied show) do not."""
        h = Hasher().update("Occlusion.plate/1").update(self.graph.settings["working_space"])
        for frame in frames:
            h.update(frame).update(upstream_identity(self, frame, self._upstream_memo))
        return h.hexdigest()

    def matte_problem(self, frame: int | None = None) -> str | None:
        """Why the stored matte cannot be applied (None when it can, or when none was trained)."""
        matte = self.value("matte", frame)
        if not matte:
            return None
        if matte.get("strokes_key") != strokes_key(self.value("strokes", frame)):
            return "the strokes changed since the matte was trained: Train matte again"
        if matte.get("plate_key") != self.plate_key(list(matte["frames"])):
            return "the matte was trained on another plate (or other face tracks): Train matte again"
        if not os.path.exists(self._stored_path(matte)):
            return f"the matte file {self._stored_path(matte)} is missing: Train matte again"
        return None

    def status(self) -> str:
        """One line for the properties panel: what the matte was trained on, or what to do."""
        if self.train_error:
            return f"matte: Train matte failed: {self.train_error}"
        matte = self.value("matte")
        if not matte:
            return "matte: not trained (paint occluder and face strokes on 2-3 frames, then Train matte)"
        problem = self.matte_problem()
        frames = ", ".join(str(f) for f in matte["frames"])
        if problem:
            return f"matte: {problem}"
        restarted = "".join(f", the {head} head restarted with seed {seed} after a stall"
                            for head, seed in matte.get("seeds", {}).items())
        return (f"matte: trained on frames {frames} ({matte['faces']} faces, {matte['steps']} steps, "
                f"loss {matte['loss']:.3f}, {matte['seconds']:.0f} s{restarted})")

    def _learned_net(self, frame: int):
        """The trained network to apply at ``frame``; None when ``learned`` is off or nothing was trained."""
        if not self.value("learned", frame):
            return None
        matte = self.value("matte", frame)
        if not matte:
            return None
        problem = self.matte_problem(frame)
        if problem:
            raise DoublureError(f"{self.name}: {problem} (or switch 'learned' off)")
        path = self._stored_path(matte)
        ident = file_identity(path)
        with self._net_lock:
            if self._net is None or self._net[0] != ident:
                net, meta = load_matte(path)
                if meta.get("strokes_key") != matte["strokes_key"] or meta.get("plate_key") != matte["plate_key"]:
                    raise DoublureError(f"{self.name}: the matte file {path} was trained for other strokes or "
                                        f"another plate: Train matte again")
                self._net = (ident, net)
            return self._net[1]

    # -- evaluation ----------------------------------------------------------------------------------
    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        super().hash(ctx, h)
        h.update(ctx.working_space)
        matte = self.value("matte", ctx.frame)
        if matte and self.value("learned", ctx.frame):
            h.update(file_identity(self._stored_path(matte)))

    def _find_hands(self, src: Image, ctx: EvalContext) -> list[np.ndarray]:
        """Hands near the faces, in plate pixels: searched in the faces' windows grown by half, downscaled."""
        windows = np.array([crop_window(f, MATTE_RES, (src.height, src.width)) for f in src.faces])
        y0, y1 = windows[:, 0].min(), windows[:, 1].max()
        x0, x1 = windows[:, 2].min(), windows[:, 3].max()
        gy, gx = (y1 - y0) // 2, (x1 - x0) // 2
        y0, y1, x0, x1 = max(y0 - gy, 0), min(y1 + gy, src.height), max(x0 - gx, 0), min(x1 + gx, src.width)
        scale = min(1.0, HAND_SEARCH_PX / max(y1 - y0, x1 - x0, 1))
        region = src.tensor[:3, y0:y1, x0:x1]
        if scale < 1.0:
            size = (max(1, round((y1 - y0) * scale)), max(1, round((x1 - x0) * scale)))
            region = torch.nn.functional.interpolate(region[None].float(), size=size, mode="area")[0]
        rgb = working_to_srgb8(region, ctx.working_space)
        sy, sx = (y1 - y0) / rgb.shape[0], (x1 - x0) / rgb.shape[1]
        return [(hand + 0.5) * [sx, sy] - 0.5 + [x0, y0] for hand in self._hands.find(rgb)]

    def compute(self, ctx: EvalContext, inputs) -> Image:
        src = inputs.get(0)
        faces, hw = list(src.faces), (src.height, src.width)
        net = self._learned_net(ctx.frame)
        hands = self._find_hands(src, ctx) if faces and self.value("hands", ctx.frame) else []
        far_side = self.value("far_side", ctx.frame)
        windows = [crop_window(face, MATTE_RES, hw) for face in faces]
        if net is not None:
            ctx.check_cancelled()
            mattes = apply_matte(net, src.tensor, faces, windows)
        else:
            mattes = [np.zeros((y1 - y0, x1 - x0), dtype=np.float32) for y0, y1, x0, x1 in windows]
        out = []
        for face, window, matte in zip(faces, windows, mattes):
            if hands:
                matte = np.maximum(matte, hand_matte(hands, window))
            if far_side:
                matte = np.maximum(matte, far_side_matte(face, window))
            out.append(with_occlusion(face, window, matte))
        if self.value("output", ctx.frame) == "matte":
            plane = torch.zeros(1, *hw, dtype=torch.float32)
            for face in out:
                y0, y1, x0, x1 = face.occlusion.window
                plane[:, y0:y1, x0:x1] = torch.maximum(plane[:, y0:y1, x0:x1], face.occlusion.alpha)
            return src.replace(tensor=plane.expand(3, -1, -1).to(src.tensor).contiguous(), channels=("R", "G", "B"),
                               faces=out)
        return src.replace(faces=out)

    # -- the Train matte action ----------------------------------------------------------------------
    def training_samples(self, graph, strokes: list[dict], cancel=None) -> list[TrainingSample]:
        """The painted faces of the training frames, with their labels.

        Raises:
            DoublureError: no strokes, none limited to a frame, a stroke outside any face, or a class unpainted.
        """
        if not strokes:
            raise DoublureError(f"{self.name}: no strokes painted: paint over the occluder (add) and over the face "
                                f"beside it (erase) on 2-3 frames, then Train matte")
        frames = training_frames(strokes)
        if not frames:
            raise DoublureError(f"{self.name}: the strokes are not tied to frames: paint them in the viewer (or give "
                                f"each stroke frames={{'only': N}}) so the painted frames are the training frames")
        src_node = self.input(0)
        if src_node is None:
            raise DoublureError(f"{self.name}: input 'input' is not connected")
        samples = []
        for frame in frames:
            img = graph.evaluate_node(src_node, graph.context(frame, 1.0, cancel))
            faces = {f.track_id: f for f in img.faces}
            for i, stroke in enumerate(strokes):
                frames_of = stroke.get("frames") or {}
                if frames_of.get("only") != frame:
                    continue
                face = faces.get(int(stroke["track_id"]))
                # at the finer head's pixels: a wire traced with a fine brush covers no coarse pixel
                labels = None if face is None else stroke_labels([dict(stroke, mode="add")], face, frame, BAND_RES)[0]
                if labels is None or not labels.any():
                    raise DoublureError(f"{self.name}: stroke {i + 1} (frame {frame}) lies outside any face: paint "
                                        f"over a face FaceDetect found (or delete the stroke)")
            for face in img.faces:
                sample = training_sample(img.tensor, face, strokes, frame)
                if sample.labelled:
                    samples.append(sample)
        if not any(s.occluder.any() or s.band_occluder.any() for s in samples):
            raise DoublureError(f"{self.name}: only face strokes: paint over the occluder too (add), then Train matte")
        if not any(s.skin.any() or s.band_skin.any() for s in samples):
            raise DoublureError(f"{self.name}: only occluder strokes: paint over the face beside it too (erase), "
                                f"then Train matte")
        coarse = any(s.occluder.any() for s in samples) and any(s.skin.any() for s in samples)
        band = any(s.band_occluder.any() for s in samples) and any(s.band_skin.any() for s in samples)
        if not coarse and not band:
            raise DoublureError(f"{self.name}: the occluder is traced with a fine brush, the face only away from the "
                                f"eyes: paint the face (erase) beside the occluder too, then Train matte")
        return samples

    def action_train(self, graph=None, progress: Callable[..., None] | None = None, cancel=None, seed: int = 0) -> str:
        """Train the matte on the painted frames and store it; sets the ``matte`` knob.

        Args:
            graph: the node's graph (default: its own).
            progress: called as ``progress(fraction, message)``.
            cancel: a ``CancelToken``; cancelling stops training and stores nothing.
            seed: the training's random seed (the benchmark trains with several).

        Returns:
            The path of the written matte file.
        """
        graph = graph or self.graph
        strokes = self.value("strokes")
        self.train_error = None
        try:
            samples = self.training_samples(graph, strokes, cancel)
        except DoublureError as exc:
            self.train_error = str(exc).removeprefix(f"{self.name}: ")
            raise
        frames = training_frames(strokes)

        def restarted(head: str, head_seed: int, stall: TrainingStalled, next_seed: int) -> None:
            message = (f"{self.name}: the {head} head's training stalled with seed {head_seed} (painted occluder "
                       f"loss {stall.occluder_loss:.3f} at step {stall.step}): restarted with seed {next_seed}")
            log.warning(message)
            if progress is not None:
                progress(0.0, message)

        net, summary = train_matte(samples, steps=int(self.value("steps")), seed=seed, progress=progress,
                                   check_cancelled=cancel.check if cancel is not None else None,
                                   on_restart=restarted)
        keys = {"strokes_key": strokes_key(strokes), "plate_key": self.plate_key(frames)}
        path = self.matte_path()
        save_matte(path, net, {**keys, "node": self.name, "frames": frames, **summary})
        stored = os.path.relpath(path, graph.project_dir) if graph.project_path else path
        self["matte"] = {"file": stored, **keys, "frames": frames, "faces": len(samples), **summary}
        return path


def train_occlusion(project_path: str, node_name: str, progress: Callable[..., None] | None = None) -> str:
    """``doublure occlusion shot.dbl -n Occlusion1``: train the node's matte, store it, save the project.

    Returns:
        The matte file's path.
    """
    from doublure.engine.project import run_node_action

    return run_node_action(project_path, node_name, Occlusion,
                           lambda graph, node: node.action_train(graph, progress=progress))

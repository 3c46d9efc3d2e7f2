"""FaceDetect: find every face, fit the 478-point mesh, track it over the shot and attach it to the image.

The output is the input image with ``.faces`` set (a list of ``doublure.faces.Face``; empty when the frame
has no face). The shot is analysed once with the Track action (``action_track`` / ``track_shot`` for
``doublure track shot.dbl -n FaceDetect1``): every frame of the range is detected in order, faces are
linked into tracks, short gaps are filled and the landmarks smoothed, and the result is stored beside the
project (``<project_dir>/<project_stem>.tracks/<NodeName>.npz``). The ``analysis`` knob records the file
and the validity key (the upstream at the range ends, its files by content identity rather than path, and the
analysis knobs); while the key matches, compute reads the stored faces; otherwise it detects on the frame
alone (untracked, unsmoothed).

Mediapipe sees display-referred sRGB 8-bit: the scene-linear working space is converted back to the sRGB
encoding the footage was read from.
"""
from __future__ import annotations

import os
import threading
from typing import Callable

import numpy as np

from doublure.engine import DoublureError, EvalContext, Hasher, Image, Node, Port, register_node
from doublure.engine import colour, fields, knobs as K
from doublure.engine.graph import MAX_FRAME
from doublure.engine.cache import Memo
from doublure.engine.hashing import file_identity
from doublure.engine.identity import upstream_identity
from doublure.engine.node import resolve_path
from doublure.faces.detect import DETECTION_RANGES, MediapipeBackend, working_to_srgb8
from doublure.faces.face import FACE_TYPES, Face, scale_faces
from doublure.faces.trackfile import load_tracks, save_tracks
from doublure.faces.track import SELECTIONS, TrackParams, build_tracks, faces_from_raw, select_tracks

# Knobs whose values change the analysis (selection is applied when reading, so it is not among them).
ANALYSIS_KNOBS = ("detection_range", "max_faces", "min_confidence", "min_cutoff", "beta", "max_gap", "face_type")


def check_analysis(analysis: object) -> None:
    """The ``analysis`` knob's shape: {"file": str, "key": str, "first": int, "last": int}, first <= last."""
    analysis = fields.mapping(analysis, "analysis")
    for name in ("file", "key", "first", "last"):
        if name not in analysis:
            raise fields.FieldError(f"analysis: no {name!r}")
    fields.text(analysis["file"], "analysis: file")
    fields.text(analysis["key"], "analysis: key")
    first = fields.integer(analysis["first"], "analysis: first", -MAX_FRAME, MAX_FRAME)
    fields.integer(analysis["last"], "analysis: last", first, MAX_FRAME)


# ---------------------------------------------------------------------------------------- the node

def _tracks_cache_dir() -> str:
    base = os.environ.get("DOUBLURE_CACHE_DIR") or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.expanduser("~/.cache"), "doublure")
    return os.path.join(base, "tracks")


_loaded_tracks = Memo(16)   # (path, size, mtime) -> the track file's (meta, faces)


def _load_tracks_cached(path: str) -> tuple[dict, dict[int, list[Face]]]:
    ident = file_identity(path)
    hit = _loaded_tracks.get(ident)
    return hit if hit is not None else _loaded_tracks.put(ident, load_tracks(path))


@register_node
class FaceDetect(Node):
    """Find, mesh and track faces; attach them to the image (run Track once per shot)."""

    type_name = "FaceDetect"
    version = 1
    category = "Face"
    inputs = (Port("input", "Image"),)
    actions = (("track", "Track"),)
    knob_specs = (
        K.Enum("detection_range", DETECTION_RANGES, default="short+full", label="detection range",
               tooltip="short: faces near the camera (fastest); full: small faces too; short+full: full range "
                       "only on frames where short range finds nothing."),
        K.Int("max_faces", default=4, min=1, max=16, label="max faces", animatable=False),
        K.Float("min_confidence", default=0.5, min=0.0, max=1.0, label="min confidence", animatable=False),
        K.Float("min_cutoff", default=1.0, min=0.001, max=100.0, soft_max=10.0, label="min cutoff",
                tooltip="One Euro filter cutoff at rest (Hz): lower is steadier.", animatable=False),
        K.Float("beta", default=1.0, min=0.0, max=1000.0, soft_max=20.0,
                tooltip="One Euro speed coefficient: higher follows fast motion more closely.", animatable=False),
        K.Int("max_gap", default=5, min=0, max=250, label="max gap",
              tooltip="Longest run of frames without a detection that is filled by interpolation.",
              animatable=False),
        K.Enum("selection", SELECTIONS, default="largest",
               tooltip="Which tracks to pass on: the largest face of the shot, the ids below, or all."),
        K.String("track_ids", default="0", label="track ids", tooltip="Comma-separated ids for 'by_id'."),
        K.Enum("face_type", FACE_TYPES, default="whole_face", label="face type",
               tooltip="Crop framing: whole_face (brows to chin) or full (forehead included)."),
        K.Data("analysis", default=None, check=check_analysis),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._backend_lock = threading.Lock()
        self._backend: MediapipeBackend | None = None
        self._backend_key: tuple | None = None
        self._upstream_memo: dict[int, tuple[str | None, list]] = {}

    # -- knobs ------------------------------------------------------------------------------------------
    def _track_ids(self, frame: int) -> tuple[int, ...]:
        text = self.value("track_ids", frame)
        try:
            return tuple(int(t) for t in text.replace(" ", "").split(",") if t)
        except ValueError:
            raise DoublureError(f"{self.name}: knob track_ids: {text!r} is not a comma-separated list of "
                                f"integers") from None

    def frame_range(self) -> tuple[int, int]:
        """The analysed range: the input node's first/last knobs when it has them, else the project's."""
        src = self.input(0)
        if src is not None and "first" in src.knobs and "last" in src.knobs:
            return int(src.value("first")), int(src.value("last"))
        return int(self.graph.settings["first"]), int(self.graph.settings["last"])

    def upstream_identity(self, frame: int) -> list:
        """The input's pixels at ``frame`` as the project describes them (:func:`upstream_identity`)."""
        return upstream_identity(self, frame, self._upstream_memo)

    def analysis_key(self, first: int, last: int) -> str:
        """Identity of what an analysis depends on: the upstream at both ends of the range (``upstream_identity``
        at full resolution, in the working space) and the analysis knobs; a new or rewritten Read file or a
        changed knob makes the stored tracks stale, the same files at another path do not."""
        h = Hasher().update("FaceDetect.analysis/2")
        h.update(self.upstream_identity(first)).update(self.upstream_identity(last))
        h.update(self.graph.settings["working_space"]).update(colour.config_cache_id())
        for name in ANALYSIS_KNOBS:
            h.update(name).update(self.knob(name).spec.to_json(self.value(name, first)))
        return h.update(first).update(last).update(float(self.graph.settings["fps"])).hexdigest()

    def current_analysis(self, frame: int | None = None) -> dict | None:
        """The stored Track analysis when it is still current (its key matches the upstream and the analysis
        knobs as they are now), else None: stale tracks are not used, the faces are detected live."""
        analysis = self.value("analysis", frame)
        if not analysis or analysis.get("key") != self.analysis_key(int(analysis["first"]), int(analysis["last"])):
            return None
        return analysis

    def tracks_path(self) -> str:
        """Where the Track action writes: beside the project, or a cache folder for an unsaved graph."""
        if self.graph.project_path:
            stem = os.path.splitext(os.path.basename(self.graph.project_path))[0]
            return os.path.join(self.graph.project_dir, f"{stem}.tracks", f"{self.name}.npz")
        return os.path.join(_tracks_cache_dir(), f"{self.uuid}.npz")

    def stored_tracks_file(self, analysis: dict) -> str:
        """The track file of a stored ``analysis``, as an absolute path (stored relative to the project)."""
        return resolve_path(analysis["file"], self.graph.project_dir)

    def _stored_faces(self, ctx: EvalContext, width: int) -> tuple[list[Face], dict] | None:
        """The analysed faces of ctx.frame (all tracks) and the analysis description, or None when no valid
        analysis covers the frame."""
        analysis = self.current_analysis(ctx.frame)
        if analysis is None or not int(analysis["first"]) <= ctx.frame <= int(analysis["last"]):
            return None
        path = self.stored_tracks_file(analysis)
        if not os.path.exists(path):
            return None
        meta, faces = _load_tracks_cached(path)
        if meta.get("key") != analysis["key"]:
            return None
        return scale_faces(faces.get(ctx.frame, []), width / float(meta["width"])), meta

    # -- evaluation -------------------------------------------------------------------------------------
    def hash(self, ctx: EvalContext, h: Hasher) -> None:
        """The default (knobs, the stored analysis among them, and the input) plus what compute reads besides
        when an analysis is stored: the project's fps (part of the analysis key it checks) and the track file
        (path, size, mtime: a re-track or a deleted file changes the faces)."""
        super().hash(ctx, h)
        analysis = self.value("analysis", ctx.frame)
        if analysis:
            h.update(float(self.graph.settings["fps"])).update(file_identity(self.stored_tracks_file(analysis)))

    def _detector(self, frame: int, video: bool) -> MediapipeBackend:
        key = (self.value("detection_range", frame), int(self.value("max_faces", frame)),
               float(self.value("min_confidence", frame)))
        if video:
            return MediapipeBackend(*key, video=True)
        if self._backend_key != key:
            if self._backend is not None:
                self._backend.close()
            self._backend = MediapipeBackend(*key, video=False)
            self._backend_key = key
        return self._backend

    def compute(self, ctx: EvalContext, inputs) -> Image:
        src = inputs.get(0)
        selection = self.value("selection", ctx.frame)
        stored = self._stored_faces(ctx, src.width)
        if stored is not None:
            faces, meta = stored
            if selection == "largest":
                # a shot-wide choice, so the passed-on face does not flip between frames
                faces = [f for f in faces if f.track_id == meta.get("largest_track")]
            elif selection == "by_id":
                faces = select_tracks([faces], "by_id", self._track_ids(ctx.frame))[0]
            return src.replace(faces=faces)
        # no valid analysis: detect on this frame alone (ids by size, 0 = largest)
        rgb = working_to_srgb8(src.tensor, ctx.working_space)
        ctx.check_cancelled()
        with self._backend_lock:   # one mediapipe graph per node, and it is not re-entrant
            raw = self._detector(ctx.frame, video=False).detect(rgb)
        faces = faces_from_raw(raw, self.value("face_type", ctx.frame))
        if selection == "largest":
            faces = faces[:1]
        elif selection == "by_id":
            faces = select_tracks([faces], "by_id", self._track_ids(ctx.frame))[0]
        return src.replace(faces=faces)

    # -- the Track action -------------------------------------------------------------------------------
    def action_track(self, graph=None, progress: Callable[[int, int, int], None] | None = None,
                     cancel=None) -> str:
        """Analyse the frame range in order and store the tracks; sets the ``analysis`` knob.

        Args:
            graph: the node's graph (default: its own).
            progress: called as ``progress(done, total, frame)`` after each frame.
            cancel: a ``CancelToken``; cancelling stops the analysis and stores nothing.

        Returns:
            The path of the written track file.
        """
        graph = graph or self.graph
        src_node = self.input(0)
        if src_node is None:
            raise DoublureError(f"{self.name}: input 'input' is not connected")
        first, last = self.frame_range()
        if last < first:
            raise DoublureError(f"{self.name}: frame range {first}-{last} runs backwards")
        frames = list(range(first, last + 1))
        detections, size = [], None
        backend = self._detector(first, video=True)
        try:
            for i, frame in enumerate(frames):
                ctx = graph.context(frame, 1.0, cancel)
                ctx.check_cancelled()
                img = graph.evaluate_node(src_node, ctx)
                if size is None:
                    size = (img.width, img.height)
                detections.append(backend.detect(working_to_srgb8(img.tensor, ctx.working_space)))
                if progress is not None:
                    progress(i + 1, len(frames), frame)
        finally:
            backend.close()
        params = TrackParams(min_cutoff=float(self.value("min_cutoff", first)), beta=float(self.value("beta", first)),
                             max_gap=int(self.value("max_gap", first)), face_type=self.value("face_type", first),
                             fps=float(graph.settings["fps"]))
        per_frame = build_tracks(detections, params)
        key = self.analysis_key(first, last)
        largest = select_tracks(per_frame, "largest")
        largest_track = next((f.track_id for faces in largest for f in faces), None)
        path = self.tracks_path()
        meta = {"key": key, "node": self.name, "first": first, "last": last, "width": size[0], "height": size[1],
                "params": {n: self.knob(n).spec.to_json(self.value(n, first)) for n in ANALYSIS_KNOBS},
                "fps": params.fps, "largest_track": largest_track}
        save_tracks(path, frames, per_frame, meta)
        stored = os.path.relpath(path, graph.project_dir) if graph.project_path else path
        self["analysis"] = {"file": stored, "key": key, "first": first, "last": last}
        return path


def overlay_for(faces) -> dict:
    """What the viewer draws over a frame: per face its box, landmarks, irises and track id.

    Returns:
        ``{"faces": [{"track_id": int, "box": [x0, y0, x1, y1], "landmarks": [[x, y], ...478],
        "irises": [[cx, cy, r], [cx, cy, r]], "pose": [yaw, pitch, roll], "interpolated": bool}]}``
        in plate pixels (pixel centres at integers).
    """
    return {"faces": [{
        "track_id": int(f.track_id),
        "box": [float(v) for v in f.box],
        "landmarks": np.round(f.landmarks[:, :2].astype(np.float64), 2).tolist(),
        "irises": np.round(f.iris.astype(np.float64), 2).tolist(),
        "pose": [round(float(v), 2) for v in f.pose],
        "interpolated": bool(f.interpolated),
    } for f in faces]}


def track_shot(project_path: str, node_name: str, progress: Callable[[int, int, int], None] | None = None) -> str:
    """``doublure track shot.dbl -n FaceDetect1``: analyse the node's range, store the tracks, save the project.

    Returns:
        The track file's path.
    """
    from doublure.engine.project import run_node_action

    return run_node_action(project_path, node_name, FaceDetect,
                           lambda graph, node: node.action_track(graph, progress=progress))

"""Write: render frames to image sequences (OpenImageIO) or a video file (PyAV), atomically."""
from __future__ import annotations

import functools
import os
from fractions import Fraction

import numpy as np
import torch

from doublure.engine import Port, colour, imageio, knobs as K, register_node, video
from doublure.engine.errors import DoublureError, MediaError
from doublure.engine.hashing import Hasher
from doublure.engine.provenance import is_synthetic, sign_file
from doublure.engine.output import FileOutputNode, FrameJob
from doublure.faces import watermark

from . import _handoff as handoff

IMAGE_TYPES = ("exr", "dpx", "tiff", "png", "jpeg")
VIDEO_TYPES = ("mov", "mp4")
# Default output colour space by file type, mirroring Read's defaults so a Read -> Write round-trips.
DEFAULT_COLORSPACE = {"exr": "linear", "dpx": "srgb", "tiff": "srgb", "png": "srgb", "jpeg": "srgb",
                      "mov": "srgb", "mp4": "srgb"}


@register_node
class Write(FileOutputNode):
    """Write frames to disk: EXR, DPX, TIFF, PNG, JPEG sequences or H.264 / ProRes video."""

    type_name = "Write"
    version = 1
    inputs = (Port("input"),)
    knob_specs = (
        K.File("file", "", pattern="*.exr *.dpx *.tif *.png *.jpg *.mov *.mp4", sequence=True, save=True,
               tooltip="out.####.exr for image sequences, out.mov / out.mp4 for video"),
        K.Enum("file_type", ("auto",) + IMAGE_TYPES + VIDEO_TYPES, default="auto",
               tooltip="auto: from the file's extension"),
        colour.ColorspaceKnob("colorspace", tooltip="The files' colour space; default: linear for EXR, "
                              "sRGB for integer images and video."),
        K.Enum("datatype", ("auto",) + tuple(imageio.DATATYPES), default="auto",
               tooltip="auto: half for EXR, 10 bit for DPX, 16 bit for TIFF, 8 bit for PNG and JPEG"),
        K.Enum("compression", imageio.EXR_COMPRESSIONS, default="zip", tooltip="EXR compression"),
        K.Enum("codec", tuple(video.CODECS), default="h264", tooltip="Video codec (mp4: h264 only)"),
        K.Int("crf", 18, min=0, max=51, animatable=False, tooltip="H.264 quality: lower is better, 18 is "
              "visually lossless"),
        K.Enum("preset", video.X264_PRESETS, default="medium",
               tooltip="H.264 encoding speed: faster presets take less CPU for a somewhat larger file at the "
                       "same crf; veryfast suits previews"),
        K.Bool("skip_existing", True, tooltip="On a resumed render, keep image files that are already "
               "complete (they open and decode) and were rendered from this same graph (the graph's hash in "
               "their header); a frame of another version is rendered again."),
        K.Bool("face_layers", False, label="face layers",
               tooltip="EXR: add the swapped face premultiplied by its matte (face.R/G/B/A) and the faces' "
                       "transforms (header doublure:face_transforms), for finishing in Nuke"),
    )
    # What a frame's pixels in the file depend on besides the input: its hash goes into every header.
    FILE_KNOBS = ("file_type", "colorspace", "datatype", "compression", "codec", "crf", "preset", "face_layers")
    GRAPH_HASH_KEY = "doublure/graph_hash"
    # A movie's hash is compared only for a farm's movie parts (a chunk of frames) before they are kept; a
    # movie longer than this is never such a part, and hashing every frame would delay its first one.
    MOVIE_HASH_MAX_FRAMES = 100_000

    # A movie with a synthetic face is signed when its writer closes; the farm renders movies in parts and
    # signs the joined movie instead, so its parts' Writes have this off.
    sign_movies = True

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._video_writer: video.VideoWriter | None = None
        self._frame_hashes: dict[str, str] = {}   # the frame files this render wrote or kept, and their hashes

    def compute(self, ctx, inputs):
        """In the viewer a Write shows its input; the file's colour space is applied at execute time."""
        return inputs.get(0)

    def resolved_file_type(self, frame: int | None = None) -> str:
        chosen = self.value("file_type", frame)
        if chosen != "auto":
            return chosen
        path = self.value("file", frame)
        ext = os.path.splitext(path)[1].lower()
        found = {".mov": "mov", ".mp4": "mp4"}.get(ext) or imageio.file_type_for(path)
        if found not in IMAGE_TYPES + VIDEO_TYPES:
            raise DoublureError(f"{self.name}: cannot tell the file type of {path!r}; set file_type")
        return found

    def knobs_shown(self, frame: int | None = None) -> set[str] | None:
        """The knobs that matter for the file type written (the properties panel hides the others); None
        when the type cannot be told yet (all shown)."""
        try:
            kind = self.resolved_file_type(frame)
        except DoublureError:
            return None
        hidden = {"codec", "crf", "preset"} if kind in IMAGE_TYPES else {"datatype", "compression", "skip_existing"}
        if kind != "exr":
            hidden.add("compression")
        if kind in VIDEO_TYPES and self.value("codec", frame) != "h264":
            hidden |= {"crf", "preset"}
        return set(self.knobs) - hidden

    def output_colorspace(self, frame: int | None = None) -> str:
        chosen = self.value("colorspace", frame)
        return DEFAULT_COLORSPACE[self.resolved_file_type(frame)] if chosen == "default" else chosen

    def renders_as_one_file(self) -> bool:
        """A movie: every frame goes into one file."""
        return self.resolved_file_type() in VIDEO_TYPES

    def one_file(self) -> str:
        return self.path("file")

    def version_of(self, ctx_template, frames) -> str:
        return self.movie_hash(ctx_template, list(frames))

    def render_into_part(self, path: str) -> None:
        self["file"] = path
        self.sign_movies = False   # the joined movie is signed, once

    def describe(self, frames: list[int]) -> str:
        """What a render over ``frames`` produces (for ``doublure info``)."""
        kind = self.resolved_file_type()
        target = self.path("file")
        if kind in VIDEO_TYPES:
            return f"{target} ({self.value('codec')}, {len(frames)} frames, {self.output_colorspace()})"
        return (f"{imageio.frame_path(target, frames[0])} .. {imageio.frame_path(target, frames[-1])} "
                f"({kind}, {self._datatype(kind)}, {self.output_colorspace()})")

    def frame_hash(self, ctx) -> str:
        """The hash of what this Write puts in the file at ``ctx``: its input's hash (the whole graph above it),
        the working space, the proxy scale and the knobs that change the file's pixels. Stored in each frame's
        header (``doublure/graph_hash``), so a resumed render keeps only frames of this same graph."""
        h = Hasher().update("Write.frame_hash/1").update(self.input_hash(0, ctx))
        h.update(ctx.working_space).update(ctx.proxy)
        for name in self.FILE_KNOBS:
            h.update(name).update(self.knobs[name].spec.to_json(self.knobs[name].value_at(ctx.frame)))
        return h.hexdigest()

    def movie_hash(self, ctx_template, frames: list[int]) -> str:
        """One hash for a movie (or a farm's movie part) over ``frames``: every frame's :meth:`frame_hash`."""
        h = Hasher().update("Write.movie_hash/1")
        for frame in frames:
            h.update(frame).update(self.frame_hash(ctx_template.at(frame)))
        return h.hexdigest()

    def _datatype(self, kind: str) -> str:
        chosen = self.value("datatype")
        return imageio.SUPPORTED_DATATYPES[kind][0] if chosen == "auto" else chosen

    # -- rendering ------------------------------------------------------------------------------------
    def begin_render(self, ctx_template, frames: list[int]) -> None:
        self._frame_hashes = {}
        path = self.path("file")
        if not path:
            raise DoublureError(f"{self.name}: the file knob is empty")
        kind = self.resolved_file_type()
        ext = os.path.splitext(path)[1].lower()
        if kind in VIDEO_TYPES:
            codec = self.value("codec")
            if kind == "mp4" and codec != "h264":
                raise DoublureError(f"{self.name}: {codec} goes in a .mov file, not mp4")
            if ext not in (".mov", ".mp4", ".mkv"):
                raise DoublureError(f"{self.name}: file_type {kind} but the file {path} is not a video file")
            if any(b - a != 1 for a, b in zip(frames, frames[1:])):
                raise DoublureError(f"{self.name}: a video needs consecutive frames in order, got a stepped range")
            self._video_writer = video.VideoWriter(path, codec=codec, fps=Fraction(self.graph.settings["fps"])
                                                   .limit_denominator(1001), crf=self.value("crf"),
                                                   preset=self.value("preset"),
                                                   metadata=self._metadata(ctx_template.frame, {}, frames))
            if len(frames) <= self.MOVIE_HASH_MAX_FRAMES:
                self._video_writer.metadata[self.GRAPH_HASH_KEY] = self.movie_hash(ctx_template, frames)
            return
        if ext != imageio.FILE_TYPES[kind] and not (kind == "tiff" and ext == ".tiff") and \
                not (kind == "jpeg" and ext == ".jpeg"):
            raise DoublureError(f"{self.name}: file_type is {kind} but {path} ends in {ext or 'no extension'}")
        if len(frames) > 1 and not imageio.is_sequence_pattern(path):
            raise DoublureError(f"{self.name}: {path} has no frame number (####) but {len(frames)} frames render")
        datatype = self._datatype(kind)
        if datatype not in imageio.SUPPORTED_DATATYPES[kind]:
            raise DoublureError(f"{self.name}: {kind} cannot store {datatype} "
                                f"(use {', '.join(imageio.SUPPORTED_DATATYPES[kind])})")

    def stage(self, ctx) -> "FrameJob | None":
        """Evaluate the input for one frame (on the calling thread) and return the rest of the frame's work:
        the conversion into the file's colour space and the encoded or atomically written file. ``engine.render``
        runs these jobs in frame order on its writer thread while the next frame computes. None when an
        existing complete file of this same graph is kept (``skip_existing``); a complete file rendered from
        another version of the graph is rendered again, its job marked ``outdated``."""
        kind = self.resolved_file_type(ctx.frame)
        path = imageio.frame_path(self.path("file", ctx.frame), ctx.frame) if kind in IMAGE_TYPES else None
        frame_hash = self.frame_hash(ctx)
        outdated = False
        if path is not None and self.value("skip_existing", ctx.frame) and os.path.exists(path):
            existing = self._existing_frame_hash(path)
            if existing == frame_hash:
                self._frame_hashes[path] = frame_hash
                return None
            outdated = existing is not None
        image = self.graph.evaluate_node(self.input_nodes[0], ctx)
        ctx.check_cancelled()
        colorspace = self.output_colorspace(ctx.frame)
        if kind in VIDEO_TYPES:
            writer = self._video_writer
            if writer is None:
                raise DoublureError(f"{self.name}: execute called outside begin_render/end_render")
            return FrameJob(functools.partial(self._encode_frame, writer, image, ctx.working_space, colorspace,
                                              ctx.frame))
        metadata = dict(self._metadata(ctx.frame, image.metadata), **{self.GRAPH_HASH_KEY: frame_hash})
        return FrameJob(functools.partial(self._write_file, path, image, ctx.working_space, colorspace, kind,
                                          self._datatype(kind), self.value("compression", ctx.frame), metadata,
                                          ctx.frame), outdated=outdated)

    def _existing_frame_hash(self, path: str) -> str | None:
        """The graph hash in the header of a complete file at ``path``: "" for a complete file without one (a
        file of another program, or of an older Doublure), None when the file does not decode (a partial
        frame: rendered again, which is not a version change)."""
        try:
            header = imageio.read_image(path).metadata
        except MediaError:
            return None
        value = header.get(self.GRAPH_HASH_KEY)
        return value if isinstance(value, str) else ""

    @staticmethod
    def _file_planes(image, working_space: str, colorspace: str) -> tuple[torch.Tensor, int | None]:
        """(C, H, W) float32 planes in the file's colour space, on the image's device (the callers bring
        them to the host once reduced to the file's codes or half floats: on a GPU a quarter or half of the
        bytes to copy, and the conversion's work done there), a tensor of their own (the cached image stays
        untouched), and the alpha plane's index (None: no alpha). A patched image (a face chain's output) is
        converted window by window, never copied whole first (``Image.map_pixels``)."""
        grey = image.channels[:3] != ("R", "G", "B")  # a Mask: write it as grey
        alpha = image.channels.index("A") if "A" in image.channels and not grey else None

        def convert(pixels: torch.Tensor) -> torch.Tensor:
            if grey:
                pixels = pixels[:1].expand(3, -1, -1)
            return colour.convert_premultiplied(pixels, working_space, colorspace, alpha)

        return image.map_pixels(convert).to(torch.float32), alpha

    def _marked(self, planes: torch.Tensor, image, colorspace: str) -> torch.Tensor:
        """The swapped faces of a synthetic frame watermarked in the file's encoding (``faces.watermark``): a
        copy stripped of its header and credentials still tells a synthetic face, its model and render."""
        if not is_synthetic(image.metadata) or not image.faces:
            return planes
        payload = watermark.make_payload(str(image.metadata.get("doublure/model_digest", "")),
                                         f"{self.graph.settings['name']}/{self.name}")
        return watermark.mark_frame(planes, image.faces, payload, colour.is_scene_linear(colorspace))

    def _encode_frame(self, writer: video.VideoWriter, image, working_space: str, colorspace: str,
                      frame: int) -> None:
        planes = self._marked(self._file_planes(image, working_space, colorspace)[0], image, colorspace)
        channels, code_dtype = writer.code_type
        if code_dtype == np.uint8 and planes.shape[0] >= channels:
            # 8-bit codes on the planes, VideoWriter.write's rounding op for op in float32 (the same codes),
            # before the interleave: a quarter of the bytes to reorder
            codes = planes[:channels].clamp_(0.0, 1.0).mul_(255.0).add_(0.5).to(torch.uint8)
            pixels = codes.permute(1, 2, 0).contiguous().cpu().numpy()
        else:
            pixels = planes.permute(1, 2, 0).contiguous().cpu().numpy()
        if writer.frames_written == 0:  # container tags are written with the first frame
            writer.metadata.update({k: v for k, v in image.metadata.items() if k.startswith("doublure/")
                                    and k != self.GRAPH_HASH_KEY})  # a read file's own hash is not ours
        try:
            writer.write(pixels)
        except MediaError as exc:
            raise MediaError(f"{self.name}: frame {frame}: {exc}") from None

    def _write_file(self, path: str, image, working_space: str, colorspace: str, kind: str, datatype: str,
                    compression: str, metadata: dict, frame: int) -> None:
        planes, alpha = self._file_planes(image, working_space, colorspace)
        planes = self._marked(planes, image, colorspace)
        channels = ("R", "G", "B", "A") if alpha is not None and planes.shape[0] == 4 else ("R", "G", "B")
        planes = planes[:len(channels)]
        if kind == "exr" and self.value("face_layers", frame):
            matte = handoff.face_matte(image.faces, image.height, image.width, planes.device)
            planes = torch.cat([planes, handoff.face_layer(planes[:3], matte)])
            channels += handoff.FACE_LAYER
            metadata = {**metadata, handoff.TRANSFORMS_KEY: handoff.face_transforms(image.faces)}
        # Half files get half pixels from the interleaving copy itself (torch rounds as write_image would).
        interleaved = torch.empty(planes.shape[1:] + planes.shape[:1],
                                  dtype=torch.float16 if datatype == "half" else torch.float32, device=planes.device)
        pixels = interleaved.copy_(planes.permute(1, 2, 0)).cpu().numpy()
        try:
            imageio.write_image(path, pixels, channels=channels, file_type=kind, datatype=datatype,
                                compression=compression, metadata=metadata)
            if is_synthetic(metadata):
                sign_file(path, metadata)
        except DoublureError as exc:
            raise type(exc)(f"{self.name}: frame {frame}: {exc}") from None
        self._frame_hashes[path] = metadata[self.GRAPH_HASH_KEY]

    def end_render(self, completed: bool = True) -> None:
        """Close or drop the movie; after a completed image render, check that every frame file still holds this
        graph's hash: a render of another version of the graph writing the same files at the same time would
        otherwise leave a mixed sequence behind two renders that both succeeded."""
        written, self._frame_hashes = self._frame_hashes, {}
        writer, self._video_writer = self._video_writer, None
        if writer is None:
            overwritten = [path for path, frame_hash in written.items() if completed and
                           (imageio.read_header(path) or {}).get(self.GRAPH_HASH_KEY) != frame_hash]
            if overwritten:
                raise DoublureError(
                    f"{self.name}: {len(overwritten)} frame file(s) were replaced during this render by another "
                    f"version of the graph rendering to the same files (a mixed sequence), e.g. {overwritten[0]}; "
                    f"render again when the other render is done, or give each version its own file name")
            return
        if completed and writer.frames_written:
            writer.close()
            if self.sign_movies and is_synthetic(writer.metadata):
                sign_file(writer.path, writer.metadata)
        else:
            writer.abort()

    def _metadata(self, frame: int, upstream: dict, frames: list[int] | None = None) -> dict:
        """Header metadata: every upstream ``doublure/`` key (provenance), the graph's name and the frame."""
        meta = {k: v for k, v in upstream.items() if k.startswith("doublure/")}
        meta.update(self.graph.render_record)
        meta["doublure/graph"] = self.graph.settings["name"]
        if frames is None:
            meta["doublure/frame"] = frame
        else:
            meta["doublure/frames"] = f"{frames[0]}-{frames[-1]}"
        return meta

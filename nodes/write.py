"""Write: render frames to image sequences (OpenImageIO) or a video file (PyAV), atomically."""
from __future__ import annotations

import os
from fractions import Fraction

import numpy as np
import torch

from doublure.engine import Node, Port, colour, imageio, knobs as K, register_node, video
from doublure.engine.errors import DoublureError, MediaError

IMAGE_TYPES = ("exr", "dpx", "tiff", "png", "jpeg")
VIDEO_TYPES = ("mov", "mp4")
# Default output colour space by file type, mirroring Read's defaults so a Read -> Write round-trips.
DEFAULT_COLORSPACE = {"exr": "linear", "dpx": "srgb", "tiff": "srgb", "png": "srgb", "jpeg": "srgb",
                      "mov": "srgb", "mp4": "srgb"}


@register_node
class Write(Node):
    """Write frames to disk: EXR, DPX, TIFF, PNG, JPEG sequences or H.264 / ProRes video."""

    type_name = "Write"
    version = 1
    category = "Output"
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
               "complete (they open and decode)."),
    )

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self._video_writer: video.VideoWriter | None = None

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

    def output_colorspace(self, frame: int | None = None) -> str:
        chosen = self.value("colorspace", frame)
        return DEFAULT_COLORSPACE[self.resolved_file_type(frame)] if chosen == "default" else chosen

    def describe(self, frames: list[int]) -> str:
        """What a render over ``frames`` produces (for ``doublure info``)."""
        kind = self.resolved_file_type()
        target = self.path("file")
        if kind in VIDEO_TYPES:
            return f"{target} ({self.value('codec')}, {len(frames)} frames, {self.output_colorspace()})"
        return (f"{imageio.frame_path(target, frames[0])} .. {imageio.frame_path(target, frames[-1])} "
                f"({kind}, {self._datatype(kind)}, {self.output_colorspace()})")

    def _datatype(self, kind: str) -> str:
        chosen = self.value("datatype")
        return imageio.SUPPORTED_DATATYPES[kind][0] if chosen == "auto" else chosen

    # -- rendering ------------------------------------------------------------------------------------
    def begin_render(self, ctx_template, frames: list[int]) -> None:
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

    def execute(self, ctx) -> bool:
        """Write one frame; False when an existing complete file was kept."""
        kind = self.resolved_file_type(ctx.frame)
        path = imageio.frame_path(self.path("file", ctx.frame), ctx.frame) if kind in IMAGE_TYPES else None
        if path is not None and self.value("skip_existing", ctx.frame) and os.path.exists(path) \
                and imageio.is_complete_image(path):
            return False
        image = self.graph.evaluate_node(self.input_nodes[0], ctx)
        ctx.check_cancelled()
        alpha = image.channels.index("A") if "A" in image.channels else None
        tensor = image.tensor
        if image.channels[:3] != ("R", "G", "B"):  # a Mask: write it as grey
            tensor = tensor[:1].expand(3, -1, -1)
            alpha = None
        # The (H, W, C) copy for the file is ours to convert in place (the cached image stays untouched).
        pixels = np.ascontiguousarray(tensor.detach().to("cpu", torch.float32).numpy().transpose(1, 2, 0))
        pixels = colour.convert_premultiplied(pixels, ctx.working_space, self.output_colorspace(ctx.frame),
                                              alpha, inplace=True)
        if kind in VIDEO_TYPES:
            writer = self._video_writer
            if writer is None:
                raise DoublureError(f"{self.name}: execute called outside begin_render/end_render")
            if writer.frames_written == 0:  # container tags are written with the first frame
                writer.metadata.update({k: v for k, v in image.metadata.items() if k.startswith("doublure/")})
            writer.write(pixels)
            return True
        channels = ("R", "G", "B", "A") if alpha is not None and pixels.shape[2] == 4 else ("R", "G", "B")
        pixels = pixels[:, :, :len(channels)]
        try:
            imageio.write_image(path, pixels, channels=channels, file_type=kind, datatype=self._datatype(kind),
                                compression=self.value("compression", ctx.frame),
                                metadata=self._metadata(ctx.frame, image.metadata))
        except MediaError as exc:
            raise MediaError(f"{self.name}: frame {ctx.frame}: {exc}") from None
        return True

    def end_render(self, completed: bool = True) -> None:
        writer, self._video_writer = self._video_writer, None
        if writer is None:
            return
        if completed and writer.frames_written:
            writer.close()
        else:
            writer.abort()

    def _metadata(self, frame: int, upstream: dict, frames: list[int] | None = None) -> dict:
        """Header metadata: every upstream ``doublure/`` key (provenance), the graph's name and the frame."""
        meta = {k: v for k, v in upstream.items() if k.startswith("doublure/")}
        meta["doublure/graph"] = self.graph.settings["name"]
        if frames is None:
            meta["doublure/frame"] = frame
        else:
            meta["doublure/frames"] = f"{frames[0]}-{frames[-1]}"
        return meta

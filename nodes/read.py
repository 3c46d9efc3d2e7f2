"""Read: image sequences (OpenImageIO) and video files (PyAV) into the working colour space."""
from __future__ import annotations

import bisect
import collections
import os
import threading

import numpy as np
import torch

from doublure.engine import Image, Node, colour, imageio, knobs as K, ops, register_node, video
from doublure.engine.device import upload
from doublure.engine.errors import DoublureError, MediaError
from doublure.engine.graph import MAX_FRAME
from doublure.engine.hashing import file_identity

# Default input colour space by kind of file (Nuke's habit): float files hold linear light; 8- to 16-bit
# integer images and video are display-encoded sRGB / Rec.709.
DEFAULT_COLORSPACE = {"float": "linear", "integer": "srgb", "video": "srgb"}
FLOAT_EXTENSIONS = {".exr", ".hdr"}


class _ReaderPool:
    """Open video readers kept between frames, so playing or rendering forward decodes sequentially.

    Keyed by (path, size, mtime): a file rewritten on disk gets a new reader. Least recently used readers
    are closed beyond ``size``; each reader serialises its own reads with a lock.
    """

    def __init__(self, size: int = 8) -> None:
        self._readers: collections.OrderedDict[tuple, video.VideoReader] = collections.OrderedDict()
        self._lock = threading.Lock()
        self._size = size

    def get(self, path: str) -> video.VideoReader:
        key = file_identity(path)
        with self._lock:
            reader = self._readers.get(key)
            if reader is not None:
                self._readers.move_to_end(key)
                return reader
        reader = video.VideoReader(path)
        with self._lock:
            self._readers[key] = reader
            while len(self._readers) > self._size:
                _, old = self._readers.popitem(last=False)
                old.close()
        return reader


VIDEO_READERS = _ReaderPool()


@register_node
class Read(Node):
    """Read an image sequence (plate.####.exr) or a video file, converted to the working space."""

    type_name = "Read"
    version = 1
    category = "Image"
    inputs = ()
    knob_specs = (
        K.File("file", "", pattern="*.exr *.dpx *.tif *.tiff *.png *.jpg *.jpeg *.mp4 *.mov *.mkv",
               sequence=True, tooltip="plate.####.exr, plate.%04d.exr or a video file (frames count from 1)"),
        K.Int("first", 1, min=-MAX_FRAME, max=MAX_FRAME,
              tooltip="First frame of the files (a video's first frame is 1)."),
        K.Int("last", 1, min=-MAX_FRAME, max=MAX_FRAME, tooltip="Last frame of the files."),
        K.Int("frame_offset", 0, min=-MAX_FRAME, max=MAX_FRAME,
              tooltip="Shift: timeline frame F shows file frame F - frame_offset."),
        K.Enum("out_of_range", ("hold", "black", "error"), default="hold",
               tooltip="Timeline frames before first or after last: hold the end frame, black, or an error."),
        K.Enum("on_missing", ("error", "black", "nearest"), default="error",
               tooltip="A frame inside first-last whose file is missing or unreadable."),
        colour.ColorspaceKnob("colorspace", tooltip="The files' colour space; default: linear for EXR, "
                              "sRGB for integer images and video."),
    )
    actions = (("detect_range", "Detect range"),)

    def knobs_given(self, given) -> None:
        """``graph.create("Read", file=...)`` covers the file's frames: first/last left out are detected
        from the files on disk (a file that cannot be read yet keeps the defaults; compute reports it)."""
        if "file" not in given or ("first" in given and "last" in given):
            return
        try:
            found = dict(zip(("first", "last"), detect_range(self.path("file"))))
        except DoublureError:
            return
        for name in ("first", "last"):
            if name not in given:
                knob = self.knob(name)
                knob.restore(knob.state_with_value(found[name]))

    # -- which file and frame a timeline frame reads ---------------------------------------------------
    def _source(self, frame: int) -> tuple[str, int | None, str | None]:
        """(file path, frame number in the file, error) for a timeline frame.

        A path of "" means black. ``error`` is the message ``compute`` raises (a missing file or an
        out-of-range frame); ``hash`` must not raise for them, it records the state instead.
        """
        pattern = self.path("file", frame)
        if not pattern:
            return "", None, f"{self.name}: the file knob is empty"
        first, last = self.value("first", frame), self.value("last", frame)
        if last < first:
            return "", None, f"{self.name}: last ({last}) is before first ({first})"
        file_frame = frame - self.value("frame_offset", frame)
        if not first <= file_frame <= last:
            policy = self.value("out_of_range", frame)
            if policy == "error":
                return "", file_frame, (f"{self.name}: frame {frame} is out of range: file frame {file_frame} "
                                        f"is outside {first}-{last} of {pattern}")
            if policy == "black":
                return "", None, None
            file_frame = min(max(file_frame, first), last)
        if video.is_video(pattern):
            return pattern, file_frame, None
        path = imageio.frame_path(pattern, file_frame)
        if os.path.exists(path):
            return path, file_frame, None
        policy = self.value("on_missing", frame)
        if policy == "black":
            return "", None, None
        if policy == "nearest" and imageio.is_sequence_pattern(pattern):
            # from the folder's listing, not a file test per frame number: a range may span 10^8 frames
            on_disk = [f for f in frames_on_disk(pattern) if first <= f <= last]
            if on_disk:
                i = bisect.bisect_left(on_disk, file_frame)
                candidate = min(on_disk[max(0, i - 1):i + 1], key=lambda f: (abs(f - file_frame), f))
                return imageio.frame_path(pattern, candidate), candidate, None
        return path, file_frame, f"{self.name}: missing frame {file_frame}: {path}"

    def hash(self, ctx, h) -> None:
        super().hash(ctx, h)
        path, file_frame, error = self._source(ctx.frame)
        h.update(file_identity(path) if path else "black").update(file_frame).update(error)
        h.update(ctx.proxy).update(ctx.working_space).update(colour.config_cache_id())

    def input_colorspace(self, path: str, frame: int) -> str:
        """The colour space the file is read as: the knob, or the default for the file's kind."""
        chosen = self.value("colorspace", frame)
        if chosen != "default":
            return chosen
        if video.is_video(path):
            return DEFAULT_COLORSPACE["video"]
        ext = os.path.splitext(path)[1].lower()
        return DEFAULT_COLORSPACE["float" if ext in FLOAT_EXTENSIONS else "integer"]

    # -- pixels ---------------------------------------------------------------------------------------
    def compute(self, ctx, inputs) -> Image:
        path, file_frame, error = self._source(ctx.frame)
        if error:
            raise MediaError(error)
        if not path:
            return self._black(ctx)
        src = self.input_colorspace(path, ctx.frame)
        try:
            if video.is_video(path):
                tensor, metadata = self._read_video(path, file_frame, src, ctx)
                channels, aspect = ("R", "G", "B"), 1.0
            else:
                image = imageio.read_image(path, frame=file_frame)
                tensor, channels = _planes(image.pixels, image.channels)
                metadata, aspect = image.metadata, image.pixel_aspect
                ctx.check_cancelled()
                alpha = channels.index("A") if "A" in channels else None
                tensor = colour.convert_premultiplied(tensor, src, ctx.working_space, alpha, inplace=True)  # ours
        except MediaError as exc:
            if self.value("on_missing", ctx.frame) == "black":
                return self._black(ctx)
            raise MediaError(f"{self.name}: {exc}") from None
        tensor = upload(tensor, ctx.device)
        if ctx.proxy != 1.0 and not (video.is_video(path) and ctx.proxy == video.PREVIEW_SCALE):
            h, w = tensor.shape[-2:]   # (a video's preview comes at its size from the decoder)
            tensor = ops.resize(tensor, (max(1, round(h * ctx.proxy)), max(1, round(w * ctx.proxy))))
        metadata = {k: v for k, v in metadata.items() if isinstance(v, (str, int, float, bool, list, dict))}
        metadata.update({"input/filename": path, "input/frame": file_frame, "input/colorspace": src})
        return Image(tensor.contiguous(), channels=channels, metadata=metadata, pixel_aspect=aspect)

    def _read_video(self, path: str, file_frame: int, src: str, ctx):
        """(3, H, W) float32 in the working space on ``ctx.device`` and the container's metadata of one video
        frame; at the readers' preview scale, the frame's preview (the decoder scales it: a viewer's first
        picture of a far frame of a long-GOP plate comes from the previews kept, not a decode)."""
        reader = VIDEO_READERS.get(path)
        preview = ctx.proxy == video.PREVIEW_SCALE
        try:   # file frames count from 1, like Nuke
            codes, scale = (reader.preview_codes if preview else reader.read_codes)(file_frame - 1)
        except MediaError as exc:
            raise MediaError(f"{exc} (file frame {file_frame})") from None
        # (H, W, 3) codes -> converted (3, H, W) float32 planes: a table per code value instead of the
        # transfer curve on every pixel (see colour.codes_to_planes)
        return colour.codes_to_planes(codes, scale, src, ctx.working_space, ctx.device), dict(reader.metadata)

    def _black(self, ctx) -> Image:
        """Black at the size of the nearest readable frame (a missing frame keeps the plate's format)."""
        first, last = self.value("first", ctx.frame), self.value("last", ctx.frame)
        pattern = self.path("file", ctx.frame)
        width = height = None
        if video.is_video(pattern) and os.path.exists(pattern):
            reader = VIDEO_READERS.get(pattern)
            width, height = reader.width, reader.height
        else:
            # the frames the folder lists, not a file test per frame number: a range may span 10^8 frames
            frames = ([f for f in frames_on_disk(pattern) if first <= f <= last]
                      if imageio.is_sequence_pattern(pattern) else [first])
            for f in frames:
                candidate = imageio.frame_path(pattern, f)
                if os.path.exists(candidate):
                    try:
                        pixels = imageio.read_image(candidate, frame=f).pixels
                    except MediaError:
                        continue
                    height, width = pixels.shape[:2]
                    break
        if width is None:
            raise MediaError(f"{self.name}: no readable frame of {pattern} in {first}-{last} to size black by")
        h, w = max(1, round(height * ctx.proxy)), max(1, round(width * ctx.proxy))
        return Image(torch.zeros(3, h, w, device=ctx.device), metadata={"input/filename": ""})

    def start_previews(self) -> None:
        """Keep the previews of every frame of the video the file knob names, decoded on a background thread
        (the viewer's first pictures, at proxy ``video.PREVIEW_SCALE``); nothing for image sequences or a
        file that cannot be opened (compute reports it)."""
        pattern = self.path("file")
        if video.is_video(pattern) and os.path.exists(pattern):
            try:
                VIDEO_READERS.get(pattern).start_preview_pass()
            except MediaError:
                pass

    # -- actions --------------------------------------------------------------------------------------
    def action_detect_range(self, graph, progress=None, cancel=None) -> tuple[int, int]:
        """Set first/last from the files on disk (a sequence's frames, or a video's frame count)."""
        first, last = detect_range(self.path("file"))
        with graph.undo_group(f"Detect range of {self.name}"):
            self["first"] = first
            self["last"] = last
        return first, last


def frames_on_disk(pattern: str) -> tuple[int, ...]:
    """The frame numbers of a sequence pattern's files in its folder, in order (none when the folder or the
    files do not exist), from one listing of the folder."""
    folder = os.path.dirname(pattern) or "."
    if not os.path.isdir(folder):
        return ()
    for seq in imageio.detect_sequences(folder):
        # Same naming (prefix, padding, extension): the sequence's first file is the pattern's.
        if os.path.abspath(imageio.frame_path(seq.pattern, seq.first)) == \
                os.path.abspath(imageio.frame_path(pattern, seq.first)):
            return seq.frames
    return ()


def detect_range(pattern: str) -> tuple[int, int]:
    """(first, last) frames available for a file knob value: a sequence on disk or a video (1..count)."""
    if video.is_video(pattern):
        return 1, VIDEO_READERS.get(pattern).frame_count
    if not imageio.is_sequence_pattern(pattern):
        return 1, 1
    folder = os.path.dirname(pattern) or "."
    if not os.path.isdir(folder):
        raise MediaError(f"folder {folder} of {pattern} does not exist")
    frames = frames_on_disk(pattern)
    if not frames:
        raise MediaError(f"no frames of {pattern} found in {folder}")
    return frames[0], frames[-1]


def _planes(pixels: np.ndarray, channels: tuple[str, ...]) -> tuple[torch.Tensor, tuple[str, ...]]:
    """(H, W, C) file pixels -> (C, H, W) tensor of R, G, B(, A); grey images become RGB."""
    names = tuple(c.upper() for c in channels)
    rgb_idx = [names.index(c) for c in ("R", "G", "B") if c in names]
    if len(rgb_idx) != 3:
        rgb_idx = [0, 0, 0] if pixels.shape[2] in (1, 2) else [0, 1, 2]
    order = rgb_idx + ([names.index("A")] if "A" in names else
                       ([1] if pixels.shape[2] == 2 else []))
    tensor = torch.from_numpy(np.ascontiguousarray(pixels.transpose(2, 0, 1)[order]))
    return tensor, ("R", "G", "B", "A")[:len(order)]

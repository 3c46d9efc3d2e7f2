"""Video files through PyAV: exact frame access for reading, H.264 and ProRes for writing.

Reading: a seek lands on a keyframe, not on the frame asked for, so ``VideoReader.read(n)`` seeks to the
keyframe at or before frame n and decodes forward until the frame whose timestamp is frame n's. Frame
timestamps come from one pass over the container's packets at open (demuxing only, no decoding: about
1 ms per 100 frames), so frame n is the n-th presentation timestamp whatever the GOP structure, B-frames
or frame-rate variations are. Reading frame n+1 after frame n continues decoding without a seek.

The reader keeps the code values of the frames it decoded last (``RECENT_FRAMES_BYTES`` of them), and a
read that has to seek also keeps the ``KEPT_BEFORE_SEEK`` frames before its target as the decoder passes them:
a node reading a window of frames around the current one (SwapModel's temporal work reads the frame, then
back to -10, then on to +10) decodes the whole window in one forward pass from the keyframe, instead of
seeking back to the keyframe and decoding forward again for every frame before the last one read.

Previews: ``preview_codes(n)`` gives frame n at ``PREVIEW_SCALE`` of its size (what a viewer shows first
while the full frame is computed). A background pass (``start_preview_pass``, at the lowest CPU priority)
decodes the whole file once on a decoder of its own and keeps every frame's preview (``PREVIEW_FRAMES_BYTES``
of them), so that on a long-GOP file (an H.264 plate with one keyframe) a jump to any frame has its preview
at once instead of after a decode from the keyframe; a preview not made yet is decoded on that decoder.

Pixels cross this module as numpy float32 (H, W, 3) in [0, 1], display-encoded (the file's own transfer
curve); colour management is the caller's (``colour.convert``).
"""
from __future__ import annotations

import bisect
import collections
import dataclasses
import json
import os
import threading
from fractions import Fraction
from typing import Any

import av
import numpy as np

from .atomic import atomic_path
from .errors import MediaError

VIDEO_EXTENSIONS = {".mp4", ".mov", ".mkv", ".avi", ".m4v", ".webm", ".mxf"}
# codec knob value -> (PyAV encoder, pixel format, encoder options, container extension it belongs in)
CODECS = {
    "h264": ("libx264", "yuv420p", {}, (".mp4", ".mov", ".mkv")),
    "prores_422hq": ("prores_ks", "yuv422p10le", {"profile": "3", "vendor": "apl0"}, (".mov",)),
    "prores_4444": ("prores_ks", "yuva444p10le", {"profile": "4", "vendor": "apl0"}, (".mov",)),
}
# libx264's speed presets, fastest first: a faster preset spends less CPU per frame for a larger file at the
# same crf (quality); "medium" is x264's own default.
X264_PRESETS = ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")
METADATA_TAG = "comment"  # container tag holding the doublure/ metadata as JSON (mp4 and mov keep it)


def is_video(path: str | os.PathLike) -> bool:
    return os.path.splitext(os.fspath(path))[1].lower() in VIDEO_EXTENSIONS


# Budget of decoded frames kept per reader: about 32 frames of 1080p 8-bit video.
RECENT_FRAMES_BYTES = int(os.environ.get("DOUBLURE_VIDEO_RECENT_MB", 200)) * 2**20
# Frames before a seek's target kept on the way: more than the widest temporal read (SwapModel's +-10).
KEPT_BEFORE_SEEK = 16
# Previews: a quarter of the size (270x480 for a 1080x1920 plate, 0.4 MB); about 650 such frames per reader.
PREVIEW_SCALE = 0.25
PREVIEW_FRAMES_BYTES = int(os.environ.get("DOUBLURE_VIDEO_PREVIEW_MB", 256)) * 2**20
PREVIEW_PASS_CHUNK = 8  # frames the background pass decodes per hold of the preview decoder


class _ForwardDecoder:
    """One demuxer and decoder over a video stream, at a position: frame n after frame n-1 decodes on without
    a seek; any other frame seeks to the keyframe at or before it and decodes forward."""

    def __init__(self, path: str, container, stream, pts: list[int], keyframe_pts: list[int]) -> None:
        self.path, self._container, self._stream = path, container, stream
        self._pts, self._keyframe_pts = pts, keyframe_pts
        self._decoded = None        # the decode iterator of the current position
        self._next_index = None     # the frame index the iterator yields next
        self.seeks = 0

    def close(self) -> None:
        self._decoded = None
        self._container.close()

    def forget_position(self) -> None:
        self._decoded = None
        self._next_index = None

    def seek_needed(self, index: int) -> bool:
        return self._next_index != index

    def decode_to(self, index: int, passed=None) -> av.VideoFrame:
        """Frame ``index``; ``passed(i, frame)`` is called for each frame decoded on the way to it."""
        target = self._pts[index]
        if self._next_index != index:
            self._seek(target)
        try:
            for frame in self._decoded:
                if frame.pts is None:
                    continue
                if frame.pts == target:
                    self._next_index = index + 1
                    return frame
                if frame.pts > target:
                    break
                if passed is not None:
                    passed(bisect.bisect_left(self._pts, frame.pts), frame)
        except av.error.FFmpegError as exc:
            self._next_index = None
            raise MediaError(f"cannot decode frame {index} of {self.path} (corrupt or truncated): {exc}") from None
        self._next_index = None
        raise MediaError(f"cannot decode frame {index} of {self.path}: the file is truncated or corrupt")

    def _seek(self, target_pts: int) -> None:
        # Seek to the keyframe at or before the target (by our own index, so the demuxer's own keyframe
        # search cannot land after it), then decode forward in decode_to.
        i = bisect.bisect_right(self._keyframe_pts, target_pts) - 1
        seek_pts = self._keyframe_pts[max(i, 0)] if self._keyframe_pts else self._pts[0]
        try:
            self._container.seek(seek_pts, backward=True, any_frame=False, stream=self._stream)
        except av.error.FFmpegError as exc:
            raise MediaError(f"cannot seek in {self.path}: {exc}") from None
        self.seeks += 1
        self._decoded = self._container.decode(self._stream)


class VideoReader:
    """Frame-exact random and sequential access to one video stream. Thread-safe (one lock per reader, one
    for its previews).

    Frames are numbered from 0. Attributes: ``frame_count``, ``fps`` (Fraction), ``width``, ``height``,
    ``metadata`` (container tags; ``doublure/...`` keys decoded from the JSON tag), ``preview_size``
    ((width, height) of a preview).
    """

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = os.fspath(path)
        if not os.path.exists(self.path):
            raise MediaError(f"missing video file {self.path}")
        self._lock = threading.Lock()
        container = self._open()
        try:
            if not container.streams.video:
                raise MediaError(f"{self.path} has no video stream")
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self._pts, self._keyframe_pts = self._index_packets(container, stream)
        except BaseException:
            container.close()
            raise
        if not self._pts:
            container.close()
            raise MediaError(f"video {self.path} holds no frames (empty or truncated file)")
        self._decoder = _ForwardDecoder(self.path, container, stream, self._pts, self._keyframe_pts)
        # A truncated file still demuxes the packets before the cut; its header still counts them all.
        self.frame_count = max(len(self._pts), stream.frames or 0)
        self.fps = Fraction(stream.average_rate or stream.guessed_rate or 25)
        self.width = stream.codec_context.width
        self.height = stream.codec_context.height
        self.preview_size = (max(1, round(self.width * PREVIEW_SCALE)), max(1, round(self.height * PREVIEW_SCALE)))
        self.metadata = metadata_from_tags(dict(container.metadata))
        self.decodes = 0            # how many frames were converted from the decoder (recent ones are kept)
        self._recent: collections.OrderedDict[int, tuple[np.ndarray, np.float32]] = collections.OrderedDict()
        self._recent_bytes = 0
        # previews: their own decoder and lock, so a preview never waits on a full-size decode
        self._preview_lock = threading.Lock()
        self._preview_decoder: _ForwardDecoder | None = None
        self._previews: dict[int, tuple[np.ndarray, np.float32]] = {}
        self._preview_bytes = 0
        self._preview_pass: threading.Thread | None = None
        self._closing = threading.Event()

    def _open(self):
        try:
            return av.open(self.path)
        except (av.error.FFmpegError, OSError) as exc:
            raise MediaError(f"cannot open video {self.path}: {exc}") from None

    def _index_packets(self, container, stream) -> tuple[list[int], list[int]]:
        pts, keys = [], []
        try:
            for packet in container.demux(stream):
                if packet.pts is None or packet.size == 0:
                    continue
                pts.append(packet.pts)
                if packet.is_keyframe:
                    keys.append(packet.pts)
        except av.error.FFmpegError as exc:
            raise MediaError(f"corrupt or truncated video {self.path}: {exc}") from None
        pts.sort()
        keys.sort()
        return pts, keys

    @property
    def seeks(self) -> int:
        """How many full-size reads needed a seek (sequential reads need none)."""
        return self._decoder.seeks

    def close(self) -> None:
        self._closing.set()
        if self._preview_pass is not None and self._preview_pass is not threading.current_thread():
            self._preview_pass.join(timeout=5)
        with self._lock:
            self._recent.clear()
            self._recent_bytes = 0
            self._decoder.close()
        with self._preview_lock:
            self._previews.clear()
            if self._preview_decoder is not None:
                self._preview_decoder.close()
                self._preview_decoder = None

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def read(self, index: int) -> np.ndarray:
        """Frame ``index`` (0-based) as float32 (H, W, 3) in [0, 1].

        Raises:
            MediaError: the index is outside 0..frame_count-1, or the frame cannot be decoded (truncated
                or corrupt file); the message names the file and the frame.
        """
        codes, scale = self.read_codes(index)
        pixels = codes.astype(np.float32)
        pixels *= scale
        return pixels

    def _check_index(self, index: int) -> None:
        if not 0 <= index < self.frame_count:
            raise MediaError(f"frame {index} is out of range for {self.path} (frames 0-{self.frame_count - 1})")
        if index >= len(self._pts):
            raise MediaError(f"truncated video {self.path}: frame {index} is missing "
                             f"(the file holds {len(self._pts)} of its {self.frame_count} frames)")

    def read_codes(self, index: int) -> tuple[np.ndarray, np.float32]:
        """Frame ``index`` (0-based) as decoded RGB code values: (H, W, 3) uint8 (or uint16 for deeper
        video) and the float32 factor that takes them to [0, 1] (what :meth:`read` applies).

        Lets a caller convert to float in the layout it needs with one full-frame pass. The array is the
        reader's kept copy of a recent frame: read it, never write into it. Raises as ``read``.
        """
        self._check_index(index)
        with self._lock:
            hit = self._recent.get(index)
            if hit is not None:
                self._recent.move_to_end(index)
                return hit
            passed = None
            if self._decoder.seek_needed(index):
                def passed(i: int, frame: av.VideoFrame) -> None:
                    if i >= index - KEPT_BEFORE_SEEK and i not in self._recent:
                        self._keep(i, frame)
            return self._keep(index, self._decoder.decode_to(index, passed))

    def _keep(self, index: int, frame: av.VideoFrame) -> tuple[np.ndarray, np.float32]:
        codes = _to_codes(frame)
        self.decodes += 1
        self._recent[index] = codes
        self._recent_bytes += codes[0].nbytes
        while self._recent_bytes > RECENT_FRAMES_BYTES and len(self._recent) > 1:
            _, (old, _) = self._recent.popitem(last=False)
            self._recent_bytes -= old.nbytes
        return codes

    def forget_decoded(self) -> None:
        """Drop the full-size frames kept and the decoder's position (previews stay): the next read decodes
        from its keyframe as on a reader just opened (a benchmark's cold start)."""
        with self._lock:
            self._recent.clear()
            self._recent_bytes = 0
            self._decoder.forget_position()

    # -- previews -------------------------------------------------------------------------------------
    def has_preview(self, index: int) -> bool:
        return index in self._previews

    def preview_codes(self, index: int) -> tuple[np.ndarray, np.float32]:
        """Frame ``index`` at ``preview_size``, as ``read_codes`` gives code values (scaled by the decoder's
        area filter): kept from the preview pass, else decoded on the preview decoder (which keeps every
        frame it passes on the way). Raises as ``read``."""
        self._check_index(index)
        hit = self._previews.get(index)
        if hit is not None:
            return hit
        with self._preview_lock:
            return self._preview_to(index)

    def _preview_to(self, index: int) -> tuple[np.ndarray, np.float32]:
        hit = self._previews.get(index)
        if hit is not None:
            return hit
        if self._closing.is_set():
            raise MediaError(f"{self.path} is closed")
        if self._preview_decoder is None:
            container = self._open()
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            self._preview_decoder = _ForwardDecoder(self.path, container, stream, self._pts, self._keyframe_pts)
        frame = self._preview_decoder.decode_to(index, lambda i, f: self._keep_preview(i, f))
        return self._keep_preview(index, frame)

    def _keep_preview(self, index: int, frame: av.VideoFrame) -> tuple[np.ndarray, np.float32]:
        hit = self._previews.get(index)
        if hit is not None:
            return hit
        codes = _to_codes(frame, self.preview_size)
        if self._preview_bytes + codes[0].nbytes <= PREVIEW_FRAMES_BYTES:
            self._previews[index] = codes
            self._preview_bytes += codes[0].nbytes
        return codes

    def start_preview_pass(self) -> None:
        """Decode every frame's preview on a background thread at the lowest CPU priority (once; a no-op
        while it runs or after it finished). Stops at ``close`` or when the preview budget is full."""
        with self._preview_lock:
            if self._preview_pass is not None or self._closing.is_set():
                return
            self._preview_pass = threading.Thread(target=self._run_preview_pass, daemon=True,
                                                  name=f"doublure-previews-{os.path.basename(self.path)}")
            self._preview_pass.start()

    def preview_pass_done(self) -> bool:
        return self._preview_pass is not None and not self._preview_pass.is_alive()

    def _run_preview_pass(self) -> None:
        try:  # this thread only (Linux schedules threads as tasks): the viewer's work goes first
            os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        except (AttributeError, OSError):
            pass
        index = 0
        while index < len(self._pts) and not self._closing.is_set():
            with self._preview_lock:   # released between chunks: a viewer's preview of a far frame goes first
                for index in range(index, min(index + PREVIEW_PASS_CHUNK, len(self._pts))):
                    if self._closing.is_set() or self._preview_bytes >= PREVIEW_FRAMES_BYTES:
                        return
                    try:
                        self._preview_to(index)
                    except MediaError:
                        return   # a truncated or corrupt file: a full read reports it
                index += 1


def _to_codes(frame: av.VideoFrame, size: tuple[int, int] | None = None) -> tuple[np.ndarray, np.float32]:
    """RGB code values of a decoded frame (at ``size`` (width, height), scaled by an area filter) and the
    factor that takes them to [0, 1]."""
    deep = frame.format.components and max(c.bits for c in frame.format.components) > 8
    colorspace = frame.colorspace if frame.colorspace in (1, 4, 5, 6, 7, 9) else (
        "ITU709" if frame.height >= 720 else "ITU601")  # ffmpeg's guess for untagged video
    color_range = frame.color_range if frame.color_range in (1, 2) else None
    scaled = {} if size is None else {"width": size[0], "height": size[1], "interpolation": "AREA"}
    codes = frame.to_ndarray(format="rgb48le" if deep else "rgb24", src_colorspace=colorspace,
                             src_color_range=color_range, dst_color_range="JPEG", **scaled)
    return codes, np.float32(1.0 / (65535.0 if deep else 255.0))


# --------------------------------------------------------------------------------------------------------


def metadata_from_tags(tags: dict[str, str]) -> dict[str, Any]:
    """Container tags, with the ``doublure/...`` keys unpacked from the JSON comment tag."""
    meta: dict[str, Any] = dict(tags)
    for key in (METADATA_TAG, "description"):
        blob = tags.get(key)
        if isinstance(blob, str) and blob.startswith("{"):
            try:
                meta.update(json.loads(blob).get("doublure", {}))
            except (ValueError, AttributeError):
                pass
    return meta


@dataclasses.dataclass
class VideoWriter:
    """Encode frames into a video file, atomically: the file appears under its name only at ``close()``.

    Args:
        path: .mp4 / .mov / .mkv.
        codec: "h264" (yuv420p; ``crf`` sets quality, ``preset`` one of X264_PRESETS the encoding speed),
            "prores_422hq" or "prores_4444" (mov, 10-bit).
        fps: frames per second (a Fraction for 23.976 = 24000/1001).
        metadata: ``doublure/...`` keys go into the container's comment tag as JSON; other str values
            become tags of their own.
    Frames are float32 (H, W, 3 or 4) in [0, 1], display-encoded.
    """

    path: str
    codec: str = "h264"
    fps: Fraction | float = 25
    crf: int = 18
    preset: str = "medium"
    metadata: dict[str, Any] = dataclasses.field(default_factory=dict)

    def __post_init__(self) -> None:
        self.path = os.fspath(self.path)
        if self.codec not in CODECS:
            raise MediaError(f"cannot write {self.path}: unknown codec {self.codec!r} (use {', '.join(CODECS)})")
        if self.preset not in X264_PRESETS:
            raise MediaError(f"cannot write {self.path}: unknown preset {self.preset!r} "
                             f"(use {', '.join(X264_PRESETS)})")
        encoder, self._pix_fmt, self._options, extensions = CODECS[self.codec]
        ext = os.path.splitext(self.path)[1].lower()
        if ext not in extensions:
            raise MediaError(f"cannot write {self.path}: {self.codec} goes in {' or '.join(extensions)} files")
        self._encoder = encoder
        self._atomic = atomic_path(self.path)
        self._tmp = self._atomic.__enter__()
        self._container = None
        self._stream = None
        self._finished = False
        self.frames_written = 0

    def _open(self, width: int, height: int) -> None:
        if self._pix_fmt == "yuv420p" and (width % 2 or height % 2):
            self.abort()
            raise MediaError(f"cannot write {self.path}: H.264 4:2:0 needs an even size, got {width}x{height}")
        try:
            # The temporary name keeps the extension; faststart puts the index first so players can stream.
            self._container = av.open(self._tmp, mode="w", options={"movflags": "+faststart"})
            for key, value in tags_from_metadata(self.metadata).items():
                self._container.metadata[key] = value
            rate = Fraction(self.fps).limit_denominator(1001)
            self._stream = self._container.add_stream(self._encoder, rate=rate)
            self._stream.width, self._stream.height = width, height
            self._stream.pix_fmt = self._pix_fmt
            options = dict(self._options)
            if self.codec == "h264":
                options["crf"] = str(int(self.crf))
                options["preset"] = self.preset
            self._stream.options = options
            cc = self._stream.codec_context
            cc.colorspace, cc.color_range = 1, 1  # tag as BT.709, limited range: what players assume
            cc.color_primaries, cc.color_trc = 1, 1
        except av.error.FFmpegError as exc:
            self.abort()
            raise MediaError(f"cannot write {self.path}: {exc}") from None

    @property
    def code_type(self) -> tuple[int, type]:
        """(channels, numpy dtype) of the code values ``write`` takes as they are: 3, or 4 for the alpha
        codecs, of uint8, or of uint16 for the 10-bit codecs (0..65535, narrowed by the encoder)."""
        return (4 if self._pix_fmt.startswith("yuva") else 3), (np.uint16 if self._pix_fmt.endswith("10le")
                                                                else np.uint8)

    def write(self, pixels: np.ndarray) -> None:
        """Append one frame: (H, W, 3 or 4) float in [0, 1], or code values as ``code_type`` says (what a
        float frame becomes here: clipped to [0, 1], times the largest code, plus 0.5, truncated)."""
        h, w = pixels.shape[:2]
        if self._container is None:
            self._open(w, h)
        elif (w, h) != (self._stream.width, self._stream.height):
            self.abort()
            raise MediaError(f"cannot write {self.path}: frame {self.frames_written} is {w}x{h}, "
                             f"the video is {self._stream.width}x{self._stream.height}")
        channels, code_dtype = self.code_type
        alpha, deep = channels == 4, code_dtype == np.uint16
        if pixels.dtype == code_dtype and pixels.shape[2] == channels:
            data = np.ascontiguousarray(pixels)
        else:
            if pixels.shape[2] < channels:  # no alpha given: opaque
                pixels = np.concatenate([pixels[..., :3], np.ones((h, w, 1), np.float32)], axis=2)
            code = np.clip(pixels[..., :channels], 0.0, 1.0) * (65535.0 if deep else 255.0) + 0.5
            data = np.ascontiguousarray(code.astype(code_dtype))
        fmt = {(False, False): "rgb24", (True, False): "rgb48le", (True, True): "rgba64le",
               (False, True): "rgba"}[(deep, alpha)]
        frame = av.VideoFrame.from_ndarray(data, format=fmt)
        frame = frame.reformat(format=self._pix_fmt, dst_colorspace="ITU709", dst_color_range="MPEG")
        frame.pts = self.frames_written
        try:
            for packet in self._stream.encode(frame):
                self._container.mux(packet)
        except av.error.FFmpegError as exc:
            self.abort()
            raise MediaError(f"cannot write frame {self.frames_written} of {self.path}: {exc}") from None
        self.frames_written += 1

    def close(self) -> None:
        """Flush the encoder and move the finished file to its name."""
        if self._container is None:
            self.abort()
            raise MediaError(f"cannot write {self.path}: no frames were written")
        try:
            for packet in self._stream.encode():
                self._container.mux(packet)
            self._container.close()
        except av.error.FFmpegError as exc:
            self.abort()
            raise MediaError(f"cannot finish {self.path}: {exc}") from None
        self._container = None
        self._finished = True
        self._atomic.__exit__(None, None, None)

    def abort(self) -> None:
        """Drop the partial file; the target path is left as it was."""
        if self._finished:
            return
        self._finished = True
        if self._container is not None:
            try:
                self._container.close()
            except av.error.FFmpegError:
                pass
            self._container = None
        err = MediaError("aborted")
        try:
            self._atomic.__exit__(MediaError, err, None)  # removes the temporary file
        except MediaError:
            pass


def join_videos(parts: list[str], path: str, metadata: dict[str, Any] | None = None) -> None:
    """Concatenate videos encoded alike into ``path``, atomically, without encoding again.

    The parts are what one Write's settings made of consecutive frame ranges (a farm renders a movie in
    chunks), each starting on a key frame and referring to no frame of another. Their packets are copied as
    they are, each part's timestamps moved on by the frames before it, so the joined file decodes to the
    parts' frames bit for bit. The container's tags (the provenance comment) are the first part's, with the
    ``doublure/...`` keys of ``metadata`` in place of its own (the whole movie's frame range).

    Raises:
        MediaError: no parts, a part that does not open, or parts whose codec, size or time base differ.
    """
    if not parts:
        raise MediaError(f"cannot join into {path}: no parts")
    try:
        with atomic_path(path) as tmp, av.open(parts[0]) as first, \
                av.open(tmp, mode="w", options={"movflags": "+faststart"}) as out:
            template = first.streams.video[0]
            stream = out.add_stream_from_template(template)
            tags = dict(first.metadata)
            if metadata:
                tags = tags_from_metadata({**metadata_from_tags(tags), **metadata})
            for key, value in tags.items():
                out.metadata[key] = value
            offset = 0
            for part in parts:
                with av.open(part) as source:
                    video_in = source.streams.video[0]
                    same = (video_in.codec_context.name, video_in.width, video_in.height, video_in.time_base)
                    if same != (template.codec_context.name, template.width, template.height, template.time_base):
                        raise MediaError(f"cannot join {part} into {path}: encoded unlike {parts[0]} "
                                         f"({same} against {template.codec_context.name}, {template.width}, "
                                         f"{template.height}, {template.time_base})")
                    ticks = round(1 / (video_in.average_rate * video_in.time_base))  # one frame's duration
                    end = offset
                    for packet in source.demux(video_in):
                        if packet.dts is None:   # the demuxer's end-of-stream marker
                            continue
                        packet.pts += offset
                        packet.dts += offset
                        end = max(end, packet.pts + ticks)
                        packet.stream = stream
                        out.mux(packet)
                    offset = end
    except (av.error.FFmpegError, OSError) as exc:
        raise MediaError(f"cannot join {len(parts)} parts into {path}: {exc}") from None


def tags_from_metadata(metadata: dict[str, Any]) -> dict[str, str]:
    doublure = {k: v for k, v in metadata.items() if k.startswith("doublure/")}
    tags = {k: v for k, v in metadata.items() if isinstance(v, str) and not k.startswith("doublure/")}
    if doublure:
        tags[METADATA_TAG] = json.dumps({"doublure": doublure}, sort_keys=True)
    return tags

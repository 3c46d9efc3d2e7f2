"""``doublure verify``: does a file hold a synthetic face? Three witnesses, one verdict per file.

1. Content Credentials (``engine.provenance``): embedded or sidecar; valid, trusted, or invalid (the file
   changed after signing); who signed, and whether that is a test identity.
2. The header record (``doublure/synthetic_face``, model, rights) of an image or a movie's tags.
3. The face watermark (:mod:`.watermark`), read from the pixels: what is left when a copy lost the other two.

A file is a synthetic face when any witness says so; an invalid manifest that claims one says so too (a
tampered file), and its verdict says it is invalid.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any

import numpy as np

from doublure.engine import colour, imageio, video
from doublure.engine.errors import DoublureError
from doublure.engine.provenance import ManifestReading, is_synthetic, read_credentials, trust_anchors

from . import watermark

MOVIE_FRAMES_READ = 12   # frames spread over a movie whose faces' marks are read together


@dataclasses.dataclass
class Verdict:
    """One file's verdict.

    Attributes:
        path: the file.
        credentials: what its Content Credentials say (None when the file could not be read).
        header: the ``doublure/...`` header record.
        mark: the watermark reading (None when no face was found to read).
        error: why the file could not be read ("" when it could).
    """

    path: str
    credentials: ManifestReading | None = None
    header: dict[str, Any] = dataclasses.field(default_factory=dict)
    mark: watermark.Reading | None = None
    error: str = ""

    @property
    def synthetic(self) -> bool:
        claims = self.credentials is not None and self.credentials.state != "none" and \
            bool(self.credentials.record.get("synthetic_face"))
        return claims or is_synthetic(self.header) or bool(self.mark and self.mark.found)

    def text(self) -> str:
        """One paragraph: the verdict, then a line per witness."""
        if self.error:
            return f"{self.path}: ERROR: {self.error}"
        head = "SYNTHETIC FACE" if self.synthetic else "no synthetic face found"
        lines = [f"{self.path}: {head}", f"  credentials: {self._credentials_text()}",
                 f"  header:      {self._header_text()}", f"  watermark:   {self._mark_text()}"]
        return "\n".join(lines)

    def _credentials_text(self) -> str:
        c = self.credentials
        if c is None or c.state == "none":
            return "none"
        parts = [c.state.upper() if c.state == "invalid" else c.state, f"({c.where})", f"signed by {c.signer}"]
        if c.test_identity:
            parts.append("- a TEST identity, not a studio's")
        if c.record:
            parts.append(f"- model {c.record.get('model', '?')}, rights {c.record.get('rights', '?')}")
            if c.record.get("consent_override"):
                o = c.record["consent_override"]
                parts.append(f"- consent OVERRIDDEN by {o.get('who')} at {o.get('when')}: {o.get('reason')}")
        if c.problems:
            parts.append("- " + "; ".join(c.problems))
        return " ".join(parts)

    def _header_text(self) -> str:
        if not any(k.startswith("doublure/") for k in self.header):
            return "none"
        if not is_synthetic(self.header):
            return "no synthetic face"
        h = self.header
        return (f"synthetic face, model {h.get('doublure/model', '?')} ({str(h.get('doublure/model_digest', '?'))[:12]}), "
                f"rights {h.get('doublure/rights', '?')}")

    def _mark_text(self) -> str:
        m = self.mark
        if m is None:
            return "no face to read"
        if not m.found:
            return f"not found ({m.faces} face(s) read, sync z {m.sync_z:.1f})"
        model, render = watermark.payload_ids(m.payload)
        return f"found (model tag {model}, render tag {render}; sync z {m.sync_z:.1f} over {m.faces} face(s))"


def _frames(path: str) -> tuple[list[np.ndarray], dict[str, Any]]:
    """(display-encoded 8-bit RGB frames to read the mark from, the header record)."""
    if video.is_video(path):
        reader = video.VideoReader(path)
        try:
            count = reader.frame_count
            picks = sorted({int(i) for i in np.linspace(0, count - 1, min(count, MOVIE_FRAMES_READ))})
            frames = [(np.clip(reader.read(i)[..., :3], 0, 1) * 255 + 0.5).astype(np.uint8) for i in picks]
            header = video.metadata_from_tags(reader.metadata)
        finally:
            reader.close()
        return frames, header
    image = imageio.read_image(path)
    rgb = image.pixels[..., :3] if image.pixels.shape[2] >= 3 else np.repeat(image.pixels[..., :1], 3, axis=2)
    if image.float_data:   # a linear EXR: encode it for display as the mark was read on screen
        rgb = colour.convert(np.ascontiguousarray(rgb, dtype=np.float32), "linear", "srgb")
    return [(np.clip(rgb, 0, 1) * 255 + 0.5).astype(np.uint8)], image.metadata


def read_mark(frames: list[np.ndarray]) -> watermark.Reading | None:
    """The watermark of the faces found in ``frames`` (read together); None when no face is found."""
    from .detect import MediapipeBackend

    crops = []
    with MediapipeBackend(detection_range="short+full", max_faces=4, video=False) as detector:
        for rgb in frames:
            found = watermark.reading_landmarks(detector, rgb)
            if found:
                crops.append(watermark.aligned_luma(rgb, found))
    if not crops:
        return None
    return watermark.read_crops(np.concatenate(crops))


def verify_file(path: str) -> Verdict:
    """The verdict on one file; never raises for a file that is missing or unreadable (the verdict says why)."""
    verdict = Verdict(path)
    if not os.path.isfile(path):
        verdict.error = "no such file"
        return verdict
    try:
        verdict.credentials = read_credentials(path, trust_anchors())
        frames, verdict.header = _frames(path)
        verdict.mark = read_mark(frames)
    except DoublureError as exc:
        verdict.error = str(exc)
    return verdict

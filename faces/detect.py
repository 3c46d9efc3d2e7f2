"""Face detection backends: boxes and the 478-point mesh per face, on display-referred 8-bit RGB.

The interface is deliberately small so a faster detector can replace mediapipe later:
``FaceBackend.detect(rgb) -> list[RawFace]`` for one frame. A backend built with ``video=True`` may use
the previous frames (mediapipe's landmark tracking) and must then be fed frames in order; ``reset()``
starts a new sequence. Mediapipe's graph objects are created once per backend and reused.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import cv2
import numpy as np
import torch

from doublure.engine import colour as engine_colour

from .face import NUM_LANDMARKS, box_from_landmarks  # noqa: F401  (detect's faces' boxes; also imported from here)

DETECTION_RANGES = ("short", "full", "short+full")

# mediapipe numbering: 468..472 is the subject's right iris (centre, then 4 contour points), 473..477 the left.
LEFT_IRIS_CENTRE, LEFT_IRIS_CONTOUR = 473, (474, 475, 476, 477)
RIGHT_IRIS_CENTRE, RIGHT_IRIS_CONTOUR = 468, (469, 470, 471, 472)


@dataclass
class RawFace:
    """One detected face before tracking.

    Attributes:
        box: (x0, y0, x1, y1) plate pixels (the landmarks' bounding box).
        landmarks: (478, 3) float32, x, y in plate pixels, z scaled like x (by the frame width).
        confidence: detector score in [0, 1] (1.0 when mediapipe's tracker gives no score).
    """

    box: tuple[float, float, float, float]
    landmarks: np.ndarray
    confidence: float


_IRIS_CENTRES = np.array([LEFT_IRIS_CENTRE, RIGHT_IRIS_CENTRE])
_IRIS_CONTOURS = np.array([LEFT_IRIS_CONTOUR, RIGHT_IRIS_CONTOUR])


def iris_from_landmarks(landmarks: np.ndarray) -> np.ndarray:
    """Iris centres and radii from the refined mesh.

    Args:
        landmarks: (478, >=2) plate pixels.

    Returns:
        (2, 3) float32 rows (cx, cy, radius): subject's left eye, then right eye.
    """
    lm = np.asarray(landmarks)
    centres = lm[_IRIS_CENTRES, :2].astype(np.float64)                                # (2, 2)
    offsets = lm[_IRIS_CONTOURS, :2] - centres[:, None, :]                           # (2, 4, 2)
    radii = np.sqrt((offsets ** 2).sum(-1)).mean(-1)
    return np.concatenate([centres, radii[:, None]], axis=1).astype(np.float32)


class FaceBackend:
    """Detects faces and fits the 478-point mesh.

    Subclasses implement :meth:`detect`. ``rgb`` is an (H, W, 3) uint8 C-contiguous array in display sRGB.
    """

    def detect(self, rgb: np.ndarray) -> list[RawFace]:
        raise NotImplementedError

    def reset(self) -> None:
        """Forget the previous frames (start of a new sequence)."""

    def close(self) -> None:
        """Release native resources."""

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _quiet_mediapipe() -> None:
    # glog/TFLite chatter on stderr is noise for a CLI; keep errors.
    os.environ.setdefault("GLOG_minloglevel", "2")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")


class MediapipeBackend(FaceBackend):
    """mediapipe 0.10.21 legacy solutions: face_detection (short / full range) and face_mesh (478 points).

    Args:
        detection_range: ``"short"``: face mesh on the whole frame with its built-in short-range detector
            (fastest; faces within about 2 m, i.e. larger than ~1/8 of the frame). ``"full"``: full-range
            detection of every face on the whole frame, then the mesh on a square crop around each face (finds
            small faces). ``"short+full"``: short first; full range only on frames where short finds none.
        max_faces: most faces meshed per frame.
        min_confidence: detection confidence threshold in [0, 1].
        video: frames arrive in order; mediapipe tracks landmarks between frames instead of re-detecting
            (faster, and steadier). With ``video=False`` every frame is independent (random access).
    """

    # The mesh input is a crop this many times the detector box, resized so the mesh model sees the face at
    # a size comparable to a short-range detection on a face-filled frame.
    CROP_SCALE = 2.2
    CROP_PX = 256

    def __init__(self, detection_range: str = "short+full", max_faces: int = 1, min_confidence: float = 0.5,
                 video: bool = True) -> None:
        if detection_range not in DETECTION_RANGES:
            raise ValueError(f"detection_range must be one of {DETECTION_RANGES}, got {detection_range!r}")
        _quiet_mediapipe()
        from mediapipe.python.solutions import face_detection, face_mesh

        self.detection_range = detection_range
        self.max_faces = int(max_faces)
        self.min_confidence = float(min_confidence)
        self.video = bool(video)
        self._fm_module = face_mesh
        self._mesh = face_mesh.FaceMesh(static_image_mode=not video, max_num_faces=self.max_faces,
                                        refine_landmarks=True, min_detection_confidence=self.min_confidence,
                                        min_tracking_confidence=0.5)
        # Crop meshes: static, one face each; created lazily (full range is the slow path anyway).
        self._crop_mesh = None
        self._full_detector = None
        if detection_range != "short":
            self._full_detector = face_detection.FaceDetection(model_selection=1,
                                                               min_detection_confidence=self.min_confidence)

    def reset(self) -> None:
        if self.video:
            self._mesh.close()
            self._mesh = self._fm_module.FaceMesh(static_image_mode=False, max_num_faces=self.max_faces,
                                                  refine_landmarks=True,
                                                  min_detection_confidence=self.min_confidence,
                                                  min_tracking_confidence=0.5)

    def close(self) -> None:
        for g in (self._mesh, self._crop_mesh, self._full_detector):
            if g is not None:
                g.close()
        self._mesh = self._crop_mesh = self._full_detector = None

    def detect(self, rgb: np.ndarray) -> list[RawFace]:
        rgb = _check_rgb(rgb)
        faces: list[RawFace] = []
        if self.detection_range in ("short", "short+full"):
            faces = self._mesh_frame(rgb)
        if self.detection_range == "full" or (self.detection_range == "short+full" and not faces):
            faces = self._detect_full_range(rgb)
        return faces

    def _mesh_frame(self, rgb: np.ndarray) -> list[RawFace]:
        h, w = rgb.shape[:2]
        result = self._mesh.process(rgb)
        if not result.multi_face_landmarks:
            return []
        out = []
        for lms in result.multi_face_landmarks:
            pts = _landmarks_to_pixels(lms, w, h)
            out.append(RawFace(box_from_landmarks(pts), pts, 1.0))
        return out

    def _detect_full_range(self, rgb: np.ndarray) -> list[RawFace]:
        h, w = rgb.shape[:2]
        result = self._full_detector.process(rgb)
        if not result.detections:
            return []
        dets = sorted(result.detections, key=lambda d: -d.score[0])[: self.max_faces]
        out = []
        for det in dets:
            bb = det.location_data.relative_bounding_box
            cx = (bb.xmin + bb.width / 2) * w
            cy = (bb.ymin + bb.height / 2) * h
            pts = self._mesh_crop(rgb, cx, cy, max(bb.width * w, bb.height * h) * self.CROP_SCALE)
            if pts is not None:
                out.append(RawFace(box_from_landmarks(pts), pts, float(det.score[0])))
        return out

    def _mesh_crop(self, rgb: np.ndarray, cx: float, cy: float, side: float) -> np.ndarray | None:
        """(478, 3) landmarks in frame pixels of the one face meshed in a square crop (static), or None."""
        if self._crop_mesh is None:
            self._crop_mesh = self._fm_module.FaceMesh(static_image_mode=True, max_num_faces=1,
                                                       refine_landmarks=True,
                                                       min_detection_confidence=self.min_confidence)
        crop, m = _square_crop(rgb, cx, cy, side, self.CROP_PX)
        r = self._crop_mesh.process(crop)
        if not r.multi_face_landmarks:
            return None
        pts = _landmarks_to_pixels(r.multi_face_landmarks[0], self.CROP_PX, self.CROP_PX)
        pts[:, :2] = (pts[:, :2] - m[:, 2]) / m[0, 0]
        pts[:, 2] /= m[0, 0]
        return pts

    def mesh_around(self, rgb: np.ndarray, box: tuple[float, float, float, float], passes: int = 2) -> np.ndarray | None:
        """The landmarks of the face in ``box`` (x0, y0, x1, y1), meshed in a square crop of ``CROP_SCALE``
        times the box and again around the box of the landmarks found, so that two boxes a few pixels apart
        give the same landmarks (a watermark's writer and reader align on them).

        Returns:
            (478, 3) float32 landmarks in frame pixels, or None where no face is meshed.
        """
        rgb = _check_rgb(rgb)
        pts = None
        for _ in range(passes):
            x0, y0, x1, y1 = box
            pts = self._mesh_crop(rgb, (x0 + x1) / 2, (y0 + y1) / 2, max(x1 - x0, y1 - y0) * self.CROP_SCALE)
            if pts is None:
                return None
            box = box_from_landmarks(pts)
        return pts


def _square_crop(rgb: np.ndarray, cx: float, cy: float, side: float, out_px: int):
    """Square crop of about ``side`` px centred on (cx, cy), resampled to ``out_px`` (zero padded outside).

    Returns:
        crop: (out_px, out_px, 3) uint8, C-contiguous.
        m: (2, 3) float64 plate pixel -> crop pixel affine (pixel centres at integers on both sides).
    """
    h, w = rgb.shape[:2]
    s = max(int(round(side)), 1)
    x0 = int(np.floor(cx - s / 2 + 0.5))
    y0 = int(np.floor(cy - s / 2 + 0.5))
    pad = np.zeros((s, s, 3), dtype=np.uint8)
    sx0, sy0 = max(x0, 0), max(y0, 0)
    sx1, sy1 = min(x0 + s, w), min(y0 + s, h)
    if sx1 > sx0 and sy1 > sy0:
        pad[sy0 - y0:sy1 - y0, sx0 - x0:sx1 - x0] = rgb[sy0:sy1, sx0:sx1]
    interp = cv2.INTER_AREA if s > out_px else cv2.INTER_LINEAR
    crop = np.ascontiguousarray(cv2.resize(pad, (out_px, out_px), interpolation=interp))
    k = out_px / s
    # cv2.resize maps dst centre d to src (d + 0.5) / k - 0.5
    m = np.array([[k, 0.0, (0.5 - x0) * k - 0.5], [0.0, k, (0.5 - y0) * k - 0.5]], dtype=np.float64)
    return crop, m


# Serialized NormalizedLandmarkList with x, y, z set on every landmark: 17 bytes per landmark,
# 0x0a 0x0f (field 1, length 15) then 0x0d x, 0x15 y, 0x1d z as little-endian float32.
_LANDMARK_RECORD = np.dtype([("head", "u1", 2), ("tx", "u1"), ("x", "<f4"), ("ty", "u1"), ("y", "<f4"),
                             ("tz", "u1"), ("z", "<f4")])


def _landmark_array(lms) -> np.ndarray:
    """(N, 3) float32 normalised landmarks; reads the serialized message in one go when it has the plain
    x/y/z layout (reading 478 x 3 protobuf attributes one by one costs most of a millisecond)."""
    raw = lms.SerializeToString()
    n = len(lms.landmark)
    if len(raw) == n * _LANDMARK_RECORD.itemsize:
        rec = np.frombuffer(raw, dtype=_LANDMARK_RECORD)
        if ((rec["head"][:, 0] == 0x0A).all() and (rec["head"][:, 1] == 0x0F).all() and (rec["tx"] == 0x0D).all()
                and (rec["ty"] == 0x15).all() and (rec["tz"] == 0x1D).all()):
            return np.stack([rec["x"], rec["y"], rec["z"]], axis=1)
    return np.array([(p.x, p.y, p.z) for p in lms.landmark], dtype=np.float32)


def _landmarks_to_pixels(lms, w: int, h: int) -> np.ndarray:
    pts = _landmark_array(lms)
    if pts.shape[0] != NUM_LANDMARKS:
        raise RuntimeError(f"face mesh returned {pts.shape[0]} landmarks, expected {NUM_LANDMARKS}")
    # mediapipe: x, y normalised by width/height with 0 at the left edge of the image (pixel edge), so pixel
    # coordinates with centres at integers are x * w - 0.5; z uses the x scale.
    pts[:, 0] = pts[:, 0] * w - 0.5
    pts[:, 1] = pts[:, 1] * h - 0.5
    pts[:, 2] = pts[:, 2] * w
    return pts


def working_to_srgb8(tensor: torch.Tensor, working_space: str) -> np.ndarray:
    """Scene-linear working-space pixels to display-referred sRGB 8-bit, for the detector.

    The sRGB encoding is the inverse of reading sRGB-encoded footage into the working space, so a video
    read and converted back gives the original code values (no view transform, no tone mapping).
    TODO(lead): a generic ``engine.colour.to_uint8(tensor, dst)`` would belong in engine/colour.py.

    Args:
        tensor: (C >= 3, H, W) in ``working_space``, any device.

    Returns:
        (H, W, 3) uint8 C-contiguous numpy array.
    """
    if tensor.device.type != "cpu":   # convert and quantise on the device, move a quarter of the bytes
        rgb = engine_colour.convert(tensor[:3].float(), working_space, "srgb")
        return np.ascontiguousarray((rgb.clamp(0, 1) * 255 + 0.5).to(torch.uint8).permute(1, 2, 0).cpu().numpy())
    # a copy (never convert the cached image's own pixels in place), interleaved for OCIO
    hwc = np.array(tensor[:3].float().permute(1, 2, 0).numpy(), dtype=np.float32, order="C", copy=True)
    engine_colour.convert(hwc, working_space, "srgb", inplace=True)
    np.clip(hwc, 0.0, 1.0, out=hwc)
    return cv2.convertScaleAbs(hwc, alpha=255.0)   # rounds and saturates to uint8


def _check_rgb(rgb: np.ndarray) -> np.ndarray:
    if not (isinstance(rgb, np.ndarray) and rgb.ndim == 3 and rgb.shape[2] == 3 and rgb.dtype == np.uint8):
        raise ValueError(f"expected an (H, W, 3) uint8 RGB array, got {getattr(rgb, 'shape', None)} "
                         f"{getattr(rgb, 'dtype', type(rgb))}")
    return np.ascontiguousarray(rgb)

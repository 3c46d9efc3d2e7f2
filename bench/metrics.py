"""Measurements shared by the quality benchmarks (``quality_identity.py``, ``e2e.py``).

Identity: dlib's 128-d face descriptor (``dlib-bin`` + ``face-recognition-models``, bench-only).
The image measures work on (H, W, 3) uint8 sRGB frames (what the footage holds and what a viewer shows) and
(H, W) masks in [0, 1]; they are pure numpy / OpenCV / colour-science functions so that a test can check each
one on inputs whose answer is known.
"""
from __future__ import annotations

import dataclasses
import json

import cv2
import numpy as np

# mediapipe's iris centres (subject's right and left eye): the inter-ocular distance
IRIS_CENTRES = (468, 473)
MESH_POINTS = 468            # landmarks 0-467 are the face mesh, 468-477 the irises


# ---------------------------------------------------------------------------------------- dlib identity

class Identity:
    """dlib's ResNet face descriptor on a face box (5-point alignment)."""

    def __init__(self) -> None:
        try:
            import dlib
            import face_recognition_models as frm
        except ImportError as exc:
            raise SystemExit(f"bench-only dependencies missing ({exc}): pip install dlib-bin face-recognition-models")
        self.dlib = dlib
        self.shape = dlib.shape_predictor(frm.pose_predictor_five_point_model_location())
        self.net = dlib.face_recognition_model_v1(frm.face_recognition_model_location())

    def descriptor(self, rgb8: np.ndarray, box) -> np.ndarray:
        x0, y0, x1, y1 = (int(round(v)) for v in box)
        rect = self.dlib.rectangle(x0, y0, x1, y1)
        return np.asarray(self.net.compute_face_descriptor(np.ascontiguousarray(rgb8), self.shape(rgb8, rect)))


def knob_value(text: str):
    """A knob value given on a bench's command line: JSON (numbers, true/false, lists) or else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


# M030's neutral clip: the demo model's reference bank holds its first half (resources/demo/build_references.sh cuts it
# at frame 47 of 94), so the benches take his unseen identity centroid from frame 47 on
M030_UNSEEN_FROM = 47


def frames_of(path: str, every: int, first: int = 0):
    """(index, RGB uint8) of every ``every``-th frame of a clip from frame ``first`` on."""
    from doublure.faces.extract import iter_video_frames

    for i, rgb in iter_video_frames(path, every):
        if i >= first:
            yield i, rgb


def detect_one(backend, rgb8: np.ndarray):
    """The first face ``backend`` (a ``MediapipeBackend``) finds, as a ``Face``; None without one."""
    from doublure.faces.track import make_face

    raw = backend.detect(rgb8)
    if not raw:
        return None
    return make_face(0, raw[0].landmarks, raw[0].confidence, "whole_face")


def centroid(ident: Identity, path: str, every: int, first: int = 0) -> np.ndarray:
    """Mean descriptor of a clip's faces (every ``every``-th frame from frame ``first`` on)."""
    from doublure.faces.detect import MediapipeBackend

    descs = []
    with MediapipeBackend("short+full", max_faces=1) as backend:
        for _, rgb in frames_of(path, every, first):
            face = detect_one(backend, rgb)
            if face is not None:
                descs.append(ident.descriptor(rgb, face.box))
    return np.mean(descs, axis=0)


def identity_scores(descriptors, target: np.ndarray, plate_actor: np.ndarray) -> dict:
    """Mean distance to the target's centroid and the fraction of descriptors nearer to it than to the
    plate actor's."""
    d = np.asarray(descriptors, dtype=np.float64).reshape(-1, len(target))
    to_target = np.linalg.norm(d - target, axis=1)
    to_actor = np.linalg.norm(d - plate_actor, axis=1)
    return {"distance_target": float(to_target.mean()), "distance_plate_actor": float(to_actor.mean()),
            "nearer_target": float((to_target < to_actor).mean()), "per_frame_target": to_target.tolist()}


def pearson(a, b) -> float:
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.std() < 1e-12 or b.std() < 1e-12:
        return 0.0
    return float(np.corrcoef(a, b)[0, 1])


# ---------------------------------------------------------------------------------------- faces in a window

def shift_face(face, dx: float, dy: float):
    """``face`` with its pixel quantities moved by (dx, dy): the face in a window cut out of the plate."""
    from doublure.faces.face import invert_affine

    lm = face.landmarks.copy()
    lm[:, 0] += dx
    lm[:, 1] += dy
    iris = face.iris.copy()
    iris[:, 0] += dx
    iris[:, 1] += dy
    from_crop = face.from_crop.copy()
    from_crop[:, 2] += (dx, dy)
    x0, y0, x1, y1 = face.box
    return dataclasses.replace(face, landmarks=lm, iris=iris, box=(x0 + dx, y0 + dy, x1 + dx, y1 + dy),
                               from_crop=from_crop, to_crop=invert_affine(from_crop))


def region_mask(face, region: str, hw: tuple[int, int], grow: float = 0.0) -> np.ndarray:
    """(H, W) float32 mask of a region of ``face`` (see ``faces.masks.REGIONS``)."""
    from doublure.faces.masks import render_mask

    return render_mask([face], region, hw, grow=grow)[0].numpy()


# ---------------------------------------------------------------------------------------- expression and pose

def inter_ocular(landmarks: np.ndarray) -> float:
    lm = np.asarray(landmarks, dtype=np.float64)
    return float(np.linalg.norm(lm[IRIS_CENTRES[0], :2] - lm[IRIS_CENTRES[1], :2]))


def landmark_error(plate_lm: np.ndarray, result_lm: np.ndarray) -> float:
    """Mean 2D distance over the 468 mesh points, in units of the plate's inter-ocular (iris) distance."""
    a = np.asarray(plate_lm, dtype=np.float64)[:MESH_POINTS, :2]
    b = np.asarray(result_lm, dtype=np.float64)[:MESH_POINTS, :2]
    return float(np.linalg.norm(a - b, axis=1).mean() / max(inter_ocular(plate_lm), 1e-6))


def pose_difference(plate_lm: np.ndarray, result_lm: np.ndarray) -> np.ndarray:
    """|yaw|, |pitch|, |roll| differences in degrees, each pose a rigid fit of the 3D template to the mesh
    (``faces.track.head_pose``)."""
    from doublure.faces.track import head_pose

    return np.abs(np.subtract(head_pose(plate_lm), head_pose(result_lm)))


# ---------------------------------------------------------------------------------------- temporal stability

def gray(rgb8: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.ascontiguousarray(rgb8), cv2.COLOR_RGB2GRAY)


class FlowWarp:
    """Optical flow (OpenCV DIS) between consecutive plate frames, and the warp of frame t-1 onto t."""

    def __init__(self, preset: int = cv2.DISOPTICAL_FLOW_PRESET_MEDIUM) -> None:
        self.dis = cv2.DISOpticalFlow_create(preset)

    def flow(self, prev8: np.ndarray, cur8: np.ndarray) -> np.ndarray:
        """(H, W, 2) flow such that cur(x) ~ prev(x + flow(x))."""
        return self.dis.calc(gray(cur8), gray(prev8), None)

    @staticmethod
    def warp(prev: np.ndarray, flow: np.ndarray) -> np.ndarray:
        """``prev`` sampled at x + flow(x): frame t-1 moved onto frame t."""
        h, w = flow.shape[:2]
        gx, gy = np.meshgrid(np.arange(w, dtype=np.float32), np.arange(h, dtype=np.float32))
        return cv2.remap(prev, gx + flow[..., 0], gy + flow[..., 1], cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


def masked_mean(values: np.ndarray, mask: np.ndarray) -> float:
    """Mean of ``values`` ((H, W) or (H, W, C), channels averaged) weighted by ``mask`` (H, W)."""
    v = values.astype(np.float64)
    if v.ndim == 3:
        v = v.mean(axis=2)
    w = mask.astype(np.float64)
    return float((v * w).sum() / max(w.sum(), 1e-9))


def frame_changes(prev8: np.ndarray, cur8: np.ndarray, mask: np.ndarray, flow: np.ndarray | None) -> tuple[float, float]:
    """(raw, flow-compensated) mean absolute change from frame t-1 to t inside ``mask``, in 8-bit code values.
    ``flow`` is the plate's (see :class:`FlowWarp`), so plate and result are compensated for the same motion."""
    prev, cur = prev8.astype(np.float32), cur8.astype(np.float32)
    raw = masked_mean(np.abs(cur - prev), mask)
    if flow is None:
        return raw, float("nan")
    return raw, masked_mean(np.abs(cur - FlowWarp.warp(prev, flow)), mask)


def stability(plates, results, masks, flows=None) -> dict:
    """Temporal stability of a result sequence against its plate.

    Args:
        plates, results: sequences of (H, W, 3) uint8 frames (consecutive).
        masks: (H, W) face region per frame (the change t-1 -> t is measured inside masks[t]).
        flows: the plate's flow per frame t (index 0 unused); computed with DIS when None.

    Returns:
        raw and flow-compensated mean change of plate and result, their ratios result / plate, and the
        per-frame values.
    """
    fw = FlowWarp() if flows is None else None
    rows = []
    for t in range(1, len(plates)):
        flow = fw.flow(plates[t - 1], plates[t]) if fw is not None else flows[t]
        p_raw, p_flow = frame_changes(plates[t - 1], plates[t], masks[t], flow)
        r_raw, r_flow = frame_changes(results[t - 1], results[t], masks[t], flow)
        rows.append((p_raw, r_raw, p_flow, r_flow))
    a = np.asarray(rows, dtype=np.float64).reshape(-1, 4)
    m = a.mean(axis=0) if len(a) else np.full(4, np.nan)
    return {"plate_raw": m[0], "result_raw": m[1], "plate_flow": m[2], "result_flow": m[3],
            "ratio_raw": m[1] / max(m[0], 1e-9), "ratio_flow": m[3] / max(m[2], 1e-9), "pairs": len(a),
            "per_frame": a.tolist()}


# ---------------------------------------------------------------------------------------- colour and grain

def srgb8_to_lab(rgb8: np.ndarray) -> np.ndarray:
    import colour

    return colour.XYZ_to_Lab(colour.sRGB_to_XYZ(np.asarray(rgb8, dtype=np.float64) / 255.0))


def skin_delta_e(result8: np.ndarray, plate8: np.ndarray, skin: np.ndarray, blur_sigma: float = 0.0) -> dict:
    """CIEDE2000 between the result's and the plate's skin (``skin`` > 0.5).

    ``mean_lab``: the difference of the mean Lab colours (the colour match); ``per_pixel``: the mean of the
    per-pixel differences, after a Gaussian blur of ``blur_sigma`` px so that the two faces' different
    texture counts less than their colour.
    """
    import colour

    sel = skin > 0.5
    if sel.sum() < 16:
        return {"mean_lab": float("nan"), "per_pixel": float("nan")}
    if blur_sigma > 0:
        result8 = cv2.GaussianBlur(result8, (0, 0), blur_sigma)
        plate8 = cv2.GaussianBlur(plate8, (0, 0), blur_sigma)
    lab_r, lab_p = srgb8_to_lab(result8[sel]), srgb8_to_lab(plate8[sel])
    return {"mean_lab": float(colour.delta_E(lab_r.mean(0), lab_p.mean(0), method="CIE 2000")),
            "per_pixel": float(np.mean(colour.delta_E(lab_r, lab_p, method="CIE 2000")))}


def highpass(rgb8: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    f = rgb8.astype(np.float32)
    return f - cv2.GaussianBlur(f, (0, 0), sigma)


def grain_ratio(result8: np.ndarray, plate8: np.ndarray, skin: np.ndarray, sigma: float = 1.0) -> np.ndarray:
    """Per channel (R, G, B): std of the high-pass residual (image minus its Gaussian blur of ``sigma`` px)
    inside the skin, result over plate."""
    sel = skin > 0.5
    hr, hp = highpass(result8, sigma)[sel], highpass(plate8, sigma)[sel]
    return hr.std(axis=0) / np.maximum(hp.std(axis=0), 1e-6)


def sharpness(rgb8: np.ndarray, mask: np.ndarray) -> float:
    """Variance of the Laplacian of the grey image (Rec. 601 weights) inside ``mask`` (issue 21's sharpness):
    ``rgb8`` (H, W, 3) uint8, ``mask`` (H, W), counted where it is above 0.5."""
    from doublure.faces.extract import laplacian_variance

    grey = rgb8.astype(np.float32) @ np.array([0.299, 0.587, 0.114], dtype=np.float32)
    return laplacian_variance(grey, (np.asarray(mask) > 0.5).astype(np.float32))


# ---------------------------------------------------------------------------------------- seams

def boundary_band(mask: np.ndarray, radius: int) -> np.ndarray:
    """Pixels within ``radius`` of the edge of ``mask`` >= 0.5 (bool)."""
    hard = (mask >= 0.5).astype(np.uint8)
    k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(hard, k).astype(bool) & ~cv2.erode(hard, k).astype(bool)


def gradient_magnitude(rgb8: np.ndarray) -> np.ndarray:
    g = gray(rgb8).astype(np.float32)
    return cv2.magnitude(cv2.Sobel(g, cv2.CV_32F, 1, 0, ksize=3), cv2.Sobel(g, cv2.CV_32F, 0, 1, ksize=3))


def seam_ratio(result8: np.ndarray, plate8: np.ndarray, mask: np.ndarray, radius: int) -> float:
    """Mean gradient magnitude of the result in a band along the composite mask's edge, over the plate's
    in the same band (1: the edge is as busy as the plate itself there; a visible seam is higher)."""
    band = boundary_band(mask, radius)
    if band.sum() == 0:
        return float("nan")
    return float(gradient_magnitude(result8)[band].mean() / max(gradient_magnitude(plate8)[band].mean(), 1e-6))


def seam_sectors(result8: np.ndarray, plate8: np.ndarray, mask: np.ndarray, radius: int, sectors: int = 8) -> np.ndarray:
    """:func:`seam_ratio` in ``sectors`` angular sectors of the band around the mask's centroid (a seam along
    one side, e.g. a straight cut across the forehead, is diluted in the whole edge's mean)."""
    band = boundary_band(mask, radius)
    hard = mask >= 0.5
    if band.sum() == 0 or hard.sum() == 0:
        return np.full(sectors, np.nan)
    yy, xx = np.nonzero(hard)
    by, bx = np.nonzero(band)
    angle = np.arctan2(by - yy.mean(), bx - xx.mean())
    sector = np.minimum(((angle + np.pi) / (2 * np.pi) * sectors).astype(int), sectors - 1)
    gr, gp = gradient_magnitude(result8)[by, bx], gradient_magnitude(plate8)[by, bx]
    out = np.full(sectors, np.nan)
    for k in range(sectors):
        sel = sector == k
        if sel.sum() >= 8:
            out[k] = gr[sel].mean() / max(gp[sel].mean(), 1e-6)
    return out


def hard_paste(result8: np.ndarray, plate8: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """The result's face pasted onto the plate with the mask thresholded at 0.5 (no feather): the reference
    a seam figure is read against."""
    return np.where((mask >= 0.5)[..., None], result8, plate8)

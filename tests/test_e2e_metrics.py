"""The measures of bench/e2e.py (bench/metrics.py) on inputs whose answer is known: real MEAD frames,
changed in ways the measures must see (flicker, translation, a hard paste, a colour cast, noise, a turn)."""
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "bench"))
import metrics as M  # noqa: E402


@pytest.fixture(scope="module")
def frames(media_dir):
    """Eight consecutive 256x256 sRGB frames of a real plate (W009, happy: the face moves and talks)."""
    from doublure.faces.extract import iter_video_frames

    out = []
    for i, rgb in iter_video_frames(str(media_dir / "mead" / "W009_front_happy_level3_001.mp4")):
        if i >= 30:
            out.append(rgb)
        if len(out) == 8:
            break
    return out


@pytest.fixture(scope="module")
def other(media_dir):
    """A frame of another person from the same studio (M030)."""
    from doublure.faces.extract import iter_video_frames

    return next(iter_video_frames(str(media_dir / "mead" / "M030_front_neutral_level1_001.mp4")))[1]


def face_box(hw=(256, 256)):
    m = np.zeros(hw, np.float32)
    cv2.ellipse(m, (128, 120), (55, 70), 0, 0, 360, 1.0, -1)
    return m


def test_stability_of_a_sequence_against_itself_is_one(frames):
    masks = [face_box()] * len(frames)
    s = M.stability(frames, [f.copy() for f in frames], masks)
    assert s["pairs"] == len(frames) - 1
    assert s["ratio_raw"] == pytest.approx(1.0, abs=1e-9)
    assert s["ratio_flow"] == pytest.approx(1.0, abs=1e-9)
    assert s["plate_raw"] > 0.5       # the real plate moves: the measure is not trivially 0 / 0


def test_flicker_raises_the_stability_ratio_and_flow_separates_it_from_motion(frames):
    rng = np.random.default_rng(0)
    mask = face_box()
    flick = [np.clip(f.astype(np.int16) + (mask[..., None] * rng.choice([-8, 8])).astype(np.int16), 0, 255).astype(np.uint8)
             for f in frames]
    s = M.stability(frames, flick, [mask] * len(frames))
    assert s["ratio_raw"] > 1.3
    # after the motion is taken out, the flicker dominates: the ratio grows further
    assert s["ratio_flow"] > s["ratio_raw"]
    assert s["ratio_flow"] > 1.5


def test_flow_compensation_removes_a_pure_translation(frames):
    prev = frames[0]
    shift = np.float32([[1, 0, 3], [0, 1, 2]])
    cur = cv2.warpAffine(prev, shift, (256, 256), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
    mask = face_box()
    flow = M.FlowWarp().flow(prev, cur)
    inner = mask > 0.5
    assert np.median(flow[..., 0][inner]) == pytest.approx(-3.0, abs=0.3)
    assert np.median(flow[..., 1][inner]) == pytest.approx(-2.0, abs=0.3)
    raw, compensated = M.frame_changes(prev, cur, mask, flow)
    assert raw > 3.0
    assert compensated < 0.2 * raw


def test_hard_paste_has_a_larger_seam_ratio_than_a_feathered_composite(frames, other):
    plate = frames[0]
    face = np.clip(other.astype(np.int16) + 25, 0, 255).astype(np.uint8)     # another face, a little brighter
    mask = face_box()
    feathered = cv2.GaussianBlur(mask, (0, 0), 4.0)
    soft = (plate * (1 - feathered[..., None]) + face * feathered[..., None] + 0.5).astype(np.uint8)
    hard = M.hard_paste(face, plate, mask)
    r_soft, r_hard = M.seam_ratio(soft, plate, mask, 4), M.seam_ratio(hard, plate, mask, 4)
    assert r_hard > 1.2 * r_soft
    assert M.seam_ratio(plate, plate, mask, 4) == pytest.approx(1.0)
    sectors = M.seam_sectors(hard, plate, mask, 4)
    assert np.nanmax(sectors) >= r_hard >= np.nanmin(sectors)
    # a seam along one side only shows in that side's sector, not much in the whole edge's mean
    half = hard.copy()
    half[:120] = plate[:120]
    one_side = M.seam_sectors(half, plate, mask, 4)
    assert np.nanmax(one_side) > 1.5 * np.nanmin(one_side)


def test_skin_colour_and_grain(frames):
    plate = frames[0]
    skin = face_box()
    same = M.skin_delta_e(plate, plate, skin)
    assert same["mean_lab"] == pytest.approx(0.0, abs=1e-9) and same["per_pixel"] == pytest.approx(0.0, abs=1e-9)
    cast = np.clip(plate * np.array([1.15, 1.0, 0.85]), 0, 255).astype(np.uint8)
    d = M.skin_delta_e(cast, plate, skin, blur_sigma=2.0)
    assert 2.0 < d["mean_lab"] < 20.0 and d["per_pixel"] >= d["mean_lab"] - 0.5
    assert M.grain_ratio(plate, plate, skin) == pytest.approx([1.0, 1.0, 1.0])
    noisy = np.clip(plate + np.random.default_rng(1).normal(0, 6, plate.shape), 0, 255).astype(np.uint8)
    assert np.all(M.grain_ratio(noisy, plate, skin) > 1.3)
    smooth = cv2.GaussianBlur(plate, (0, 0), 2.0)
    assert np.all(M.grain_ratio(smooth, plate, skin) < 0.7)


def test_landmark_error_and_pose_difference():
    from doublure.faces.align import TEMPLATE_3D

    lm = TEMPLATE_3D * np.array([100.0, 100.0, 100.0]) + np.array([128.0, 128.0, 0.0])
    assert M.landmark_error(lm, lm) == 0.0
    moved = lm.copy()
    moved[:, 0] += 0.1 * M.inter_ocular(lm)
    assert M.landmark_error(lm, moved) == pytest.approx(0.1, rel=1e-6)
    assert np.allclose(M.pose_difference(lm, moved), 0.0, atol=1e-6)
    a = np.radians(10.0)
    rot = np.array([[np.cos(a), -np.sin(a), 0], [np.sin(a), np.cos(a), 0], [0, 0, 1]])
    centre = lm.mean(0)
    rolled = (lm - centre) @ rot.T + centre
    yaw, pitch, roll = M.pose_difference(lm, rolled)
    assert roll == pytest.approx(10.0, abs=0.5) and yaw < 0.5 and pitch < 0.5


def test_identity_scores():
    target, actor = np.zeros(128), np.zeros(128)
    actor[0] = 1.0
    d = np.zeros((4, 128))
    d[:, 0] = [0.1, 0.2, 0.6, 0.9]
    s = M.identity_scores(d, target, actor)
    assert s["nearer_target"] == pytest.approx(0.5)
    assert s["distance_target"] == pytest.approx(0.45)
    assert s["distance_plate_actor"] == pytest.approx(0.55)


def test_shift_face_moves_every_pixel_quantity(frames):
    from doublure.faces.align import TEMPLATE_3D
    from doublure.faces.track import make_face

    face = make_face(0, (TEMPLATE_3D * 60 + [128, 110, 0]).astype(np.float32), 1.0, "whole_face")
    moved = M.shift_face(face, -20.0, -10.0)
    assert np.allclose(moved.landmarks[:, :2], face.landmarks[:, :2] - [20, 10])
    assert np.allclose(moved.box, np.subtract(face.box, (20, 10, 20, 10)))
    # the same crop pixel lands 20, 10 px up-left
    assert np.allclose(moved.from_crop @ [0.5, 0.5, 1], face.from_crop @ [0.5, 0.5, 1] - [20, 10])
    full = M.region_mask(face, "skin", (256, 256))
    win = M.region_mask(moved, "skin", (236, 246))
    assert win.sum() == pytest.approx(full[10:, 20:].sum(), rel=1e-3)

"""Painted strokes: brush profile, anti-aliasing, per-frame rules, and following a real face (MEAD)."""
import math

import numpy as np
import pytest
import torch

from doublure import engine
from doublure.faces.face import Face, invert_affine
from doublure.faces.paint import (crop_units_per_pixel, plate_points_to_stroke, render_stroke, render_strokes,
                                  stroke_active, stroke_to_plate_points)


def _face(scale=1 / 200.0, angle=0.0, tx=100.0, ty=80.0, track_id=0):
    """A face whose crop maps plate -> unit coords by a similarity (scale, rotation, crop origin at tx, ty)."""
    c, s = math.cos(angle), math.sin(angle)
    to_crop = np.array([[c * scale, s * scale, 0.0], [-s * scale, c * scale, 0.0]])
    to_crop[:, 2] = -to_crop[:, :2] @ np.array([tx, ty])
    return Face(track_id=track_id, box=(tx, ty, tx + 1 / scale, ty + 1 / scale), landmarks=np.zeros((478, 3)),
                iris=np.zeros((2, 3)), pose=(0, 0, 0), to_crop=to_crop, from_crop=invert_affine(to_crop))


def test_hard_dot_is_antialiased_disc_of_the_right_area():
    face = _face()
    stroke = plate_points_to_stroke(face, [[150.3, 140.7]], 12.0, hardness=1.0)
    cov = render_stroke(stroke, face, (300, 300))
    assert cov.sum().item() == pytest.approx(math.pi * 12.0**2, rel=0.01)
    assert cov[141, 150] == 1.0 and cov[141, 170] == 0.0
    edge = cov[(cov > 0) & (cov < 1)]
    assert edge.numel() > 40  # partial pixels along the rim


def test_soft_brush_falls_off_monotonically_and_opacity_scales():
    face = _face()
    stroke = plate_points_to_stroke(face, [[150, 150]], 20.0, hardness=0.0, opacity=0.5)
    row = render_stroke(stroke, face, (300, 300))[150, 150:175]
    assert row[0] == pytest.approx(0.5, abs=0.02)
    assert torch.all(row[1:] <= row[:-1]) and row[21:].max() == 0


def test_line_stroke_covers_its_path():
    face = _face()
    stroke = plate_points_to_stroke(face, [[50, 150], [250, 150], [250, 250]], 5.0, hardness=1.0)
    cov = render_stroke(stroke, face, (300, 300))
    assert cov[150, 50:251].min() == 1.0 and cov[150:251, 250].min() == 1.0
    assert cov[200, 150] == 0.0


def test_plate_points_round_trip_and_radius_in_crop_units():
    face = _face(scale=1 / 250.0, angle=0.3)
    pts = np.array([[120.0, 90.0], [180.0, 210.0]])
    stroke = plate_points_to_stroke(face, pts, 10.0)
    back, radius_px = stroke_to_plate_points(face, stroke)
    np.testing.assert_allclose(back, pts, atol=1e-9)
    assert radius_px == pytest.approx(10.0)
    assert stroke["radius"] == pytest.approx(10.0 / 250.0)
    assert crop_units_per_pixel(face) == pytest.approx(1 / 250.0)


def test_stroke_follows_the_face_when_it_moves_turns_and_scales():
    a = _face(scale=1 / 200.0, angle=0.0, tx=60, ty=50)
    b = _face(scale=1 / 260.0, angle=0.25, tx=110, ty=40)
    stroke = plate_points_to_stroke(a, [[120, 130], [170, 140]], 6.0, hardness=1.0)
    cov_b = render_stroke(stroke, b, (400, 400))
    pts_b, radius_b = stroke_to_plate_points(b, stroke)
    for x, y in np.linspace(pts_b[0], pts_b[1], 8):
        assert cov_b[int(round(y)), int(round(x))] == 1.0
    assert radius_b == pytest.approx(6.0 * 260 / 200)
    # area scales with the face
    assert cov_b.sum() / render_stroke(stroke, a, (400, 400)).sum() == pytest.approx((260 / 200) ** 2, rel=0.03)


def test_frames_rules_erase_and_missing_track():
    face = _face()
    add = plate_points_to_stroke(face, [[150, 150]], 20.0, hardness=1.0)
    hole = plate_points_to_stroke(face, [[150, 150]], 8.0, hardness=1.0, mode="erase", frames={"from": 5})
    once = plate_points_to_stroke(face, [[60, 60]], 8.0, hardness=1.0, frames={"only": 3})
    assert stroke_active(hole, 5) and not stroke_active(hole, 4)
    assert stroke_active(once, 3) and not stroke_active(once, 4) and stroke_active(add, -100)
    strokes = [add, hole, once]
    m3 = render_strokes(strokes, [face], 3, (300, 300))
    m7 = render_strokes(strokes, [face], 7, (300, 300))
    assert m3.shape == (1, 300, 300)
    assert m3[0, 150, 150] == 1.0 and m3[0, 60, 60] == 1.0
    assert m7[0, 150, 150] == 0.0 and m7[0, 150, 165] == 1.0 and m7[0, 60, 60] == 0.0
    other = _face(track_id=5)
    assert render_strokes(strokes, [other], 3, (300, 300)).max() == 0.0
    base = torch.full((1, 300, 300), 0.5)
    over = render_strokes([add], [face], 1, (300, 300), base=base)
    assert over[0, 150, 150] == 1.0 and over[0, 10, 10] == 0.5


@pytest.fixture(scope="module")
def mead_faces(media_dir):
    import doublure.nodes  # noqa: F401  (registers Read and FaceDetect)

    g = engine.Graph()
    read = g.create("Read", file=str(media_dir / "mead" / "W009_front_happy_level3_001.mp4"), first=1, last=100)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    return {f: g.evaluate(fd, f) for f in (10, 60)}


def test_stroke_painted_on_frame_10_covers_the_same_landmarks_on_frame_60(mead_faces):
    f10, f60 = mead_faces[10].faces[0], mead_faces[60].faces[0]
    hw = tuple(mead_faces[60].tensor.shape[-2:])
    targets = [33, 133, 1, 168]  # eye corners, nose tip, nose bridge: points that move rigidly with the head
    strokes = [plate_points_to_stroke(f10, [f10.landmarks[i, :2]], 3.0, hardness=0.8) for i in targets]
    moved = np.linalg.norm(f60.landmarks[targets, :2] - f10.landmarks[targets, :2], axis=1)
    assert moved.min() > 3.0  # the face really moved: a mask fixed to the plate would miss
    on_60 = render_strokes(strokes, [f60], 60, hw)[0]
    on_10_fixed = render_strokes(strokes, [f10], 10, hw)[0]
    for i in targets:
        x, y = np.round(f60.landmarks[i, :2]).astype(int)
        assert on_60[y, x] > 0.9, f"landmark {i} not covered on frame 60"
        assert on_10_fixed[y, x] < 0.5, f"landmark {i} would be covered without following"
    far = [263, 152]  # the other eye's corner, the chin
    for i in far:
        x, y = np.round(f60.landmarks[i, :2]).astype(int)
        assert on_60[y, x] == 0.0

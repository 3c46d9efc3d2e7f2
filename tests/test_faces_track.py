"""Tracking: One Euro smoothing against closed forms, association and gap filling, head pose, and one track
id over the whole of pexels/WolfgangLanger_Pexels.mp4 (every frame)."""
import math

import numpy as np

from doublure.faces.align import TEMPLATE_3D
from doublure.faces.detect import MediapipeBackend, RawFace, box_from_landmarks
from doublure.faces.extract import iter_video_frames
from doublure.faces.track import (TrackParams, build_tracks, head_pose, one_euro, select_tracks,
                                  smooth_zero_phase)


def test_one_euro_at_beta_zero_is_a_first_order_low_pass():
    fps, fc = 30.0, 2.0
    x = np.zeros((200, 1, 1))
    x[100:] = 1.0
    y = one_euro(x, fps, min_cutoff=fc, beta=0.0)[:, 0, 0]
    # exponential smoothing with alpha = 1 / (1 + tau / Te): y[n] = 1 - (1 - alpha)^(n - 99)
    alpha = 1.0 / (1.0 + fps / (2 * math.pi * fc))
    n = np.arange(100, 120)
    np.testing.assert_allclose(y[100:120], 1 - (1 - alpha) ** (n - 99), atol=1e-12)


def test_smoothing_cuts_jitter_and_zero_phase_has_no_lag():
    rng = np.random.default_rng(0)
    t = np.arange(300) / 25.0
    ramp = np.where(t < 6, 0.0, (t - 6) * 2.0)              # still, then moving at 2 units/s
    x = (ramp + rng.normal(0, 0.01, t.shape))[:, None, None]
    smooth = smooth_zero_phase(x, 25.0, min_cutoff=1.0, beta=1.0)[:, 0, 0]
    causal = one_euro(x, 25.0, min_cutoff=1.0, beta=1.0)[:, 0, 0]
    still = slice(20, 140)
    assert np.std(np.diff(smooth[still])) < 0.5 * np.std(np.diff(x[still, 0, 0]))
    moving = slice(200, 280)
    lag_frames = lambda y: np.mean(ramp[moving] - y[moving]) / (2.0 / 25.0)  # noqa: E731
    assert lag_frames(causal) > 0.3                          # the causal filter trails the motion
    assert abs(lag_frames(smooth)) < 0.2                     # forward + backward cancels it


def _raw(offset, scale=1.0):
    lm = TEMPLATE_3D.astype(np.float32) * 60 * scale
    lm[:, 0] += offset[0]
    lm[:, 1] += offset[1]
    return RawFace(box_from_landmarks(lm), lm, 0.9)


def test_association_gap_filling_and_selection():
    dets = []
    for t in range(20):
        frame = [_raw((100 + t, 100))]                       # a face drifting right
        if t % 10 != 5:
            frame.append(_raw((400, 300 + t), scale=1.5))    # a bigger face, missed on frames 5 and 15
        dets.append(frame[::-1] if t % 2 else frame)         # detection order must not matter
    dets[8] = [d for d in dets[8] if d.box[0] < 300]         # ... and on frame 8
    per_frame = build_tracks(dets, TrackParams(max_gap=1, min_cutoff=50.0, beta=0.0))
    ids = [sorted(f.track_id for f in faces) for faces in per_frame]
    assert ids[0] == [0, 1] and all(i == [0, 1] for i in ids)           # gaps of one frame are filled
    # ids follow first appearance, the larger face first on a tie
    big = [f for faces in per_frame for f in faces if f.track_id == 0]
    assert all(f.area > 1.5 * g.area for faces in per_frame for f in faces for g in faces if g.track_id == 1
               and f.track_id == 0)
    assert [f.interpolated for f in big].count(True) == 3
    filled = per_frame[5][0]
    assert filled.interpolated and filled.confidence == 0.0
    np.testing.assert_allclose(filled.box[1], 0.5 * (per_frame[4][0].box[1] + per_frame[6][0].box[1]), atol=0.05)
    largest = select_tracks(per_frame, "largest")
    assert all(len(f) == 1 and f[0].track_id == 0 for f in largest)
    assert all([fc.track_id for fc in f] == [1] for f in select_tracks(per_frame, "by_id", [1]))
    # a brief false detection with a bigger box does not become the shot's main face
    flash = [frame + [_raw((600, 500), scale=3.0)] if t in (3, 4, 5) else frame for t, frame in enumerate(dets)]
    per_frame_flash = build_tracks(flash, TrackParams(max_gap=1, min_cutoff=50.0, beta=0.0))
    flash_ids = {f.track_id for f in per_frame_flash[4] if f.box[0] > 500}
    main = select_tracks(per_frame_flash, "largest")
    assert all(len(f) == 1 and f[0].track_id not in flash_ids and f[0].area > 1.5 * 60 * 60 for f in main[6:])
    # a gap longer than max_gap is not filled
    per_frame = build_tracks(dets, TrackParams(max_gap=0))
    assert len(per_frame[5]) == 1


def test_head_pose_of_a_rotated_template():
    for yaw, pitch, roll in ((20, 0, 0), (0, 15, 0), (0, 0, -10), (25, -10, 5)):
        y, p, r = np.radians([yaw, pitch, roll])
        # camera frame: x right, y down, z away. Yaw toward image right turns the face's forward (-z) to +x.
        ry = np.array([[math.cos(y), 0, -math.sin(y)], [0, 1, 0], [math.sin(y), 0, math.cos(y)]])
        rx = np.array([[1, 0, 0], [0, math.cos(p), math.sin(p)], [0, -math.sin(p), math.cos(p)]])
        rz = np.array([[math.cos(r), -math.sin(r), 0], [math.sin(r), math.cos(r), 0], [0, 0, 1]])
        lm = TEMPLATE_3D @ (ry @ rx @ rz).T * 80 + [300, 200, 0]
        got = head_pose(lm)
        np.testing.assert_allclose(got, (yaw, pitch, roll), atol=0.5)


def test_one_track_id_over_the_whole_wolfganglanger_clip(media_dir):
    dets = []
    with MediapipeBackend("short+full", max_faces=4, video=True) as backend:
        for _, rgb in iter_video_frames(str(media_dir / "pexels" / "WolfgangLanger_Pexels.mp4")):
            dets.append(backend.detect(rgb))
    assert len(dets) == 472
    per_frame = build_tracks(dets, TrackParams(fps=23.976))
    ids = {f.track_id for faces in per_frame for f in faces}
    assert ids == {0}, ids
    assert all(len(faces) == 1 for faces in per_frame)
    assert sum(f.interpolated for faces in per_frame for f in faces) <= 5

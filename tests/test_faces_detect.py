"""Detection recall on real footage: a face on every mead/ and people/ frame, none on the animated part of
pexels/face_noface.mov.

mead/ and people/ run the backend in video mode, as the Track action does (mediapipe re-checks the face's
presence score on every frame, so a lost face is still reported as missing). people/: the clips over 200
frames are sampled every 5th frame to keep the test near a minute on 2 cores; every mead/ frame is checked.
The no-face test detects every frame on its own (no tracking to carry a face across the cut).
"""
import numpy as np
import pytest

from doublure.faces.detect import MediapipeBackend, iris_from_landmarks
from doublure.faces.extract import iter_video_frames


def _misses(path, every=1):
    misses, frames = [], 0
    with MediapipeBackend("short+full", video=True) as backend:
        for i, rgb in iter_video_frames(str(path), every):
            faces = backend.detect(rgb)
            frames += 1
            if len(faces) != 1:
                misses.append((i, len(faces)))
            else:
                h, w = rgb.shape[:2]
                lm = faces[0].landmarks
                assert lm.shape == (478, 3) and lm.dtype == np.float32
                assert (lm[:, 0] > -0.1 * w).all() and (lm[:, 0] < 1.1 * w).all()
    return misses, frames


def test_every_mead_frame_has_one_face(media_dir):
    clips = sorted((media_dir / "mead").glob("*.mp4"))
    assert len(clips) == 16
    total = 0
    for clip in clips:
        misses, n = _misses(clip)
        total += n
        assert not misses, f"{clip.name}: frames without exactly one face: {misses}"
    assert total > 1400


def test_every_people_clip_has_one_face(media_dir):
    from doublure.engine.video import VideoReader

    clips = sorted((media_dir / "people").glob("*.mp4"))
    assert len(clips) == 10
    for clip in clips:
        with VideoReader(clip) as r:
            every = 1 if r.frame_count <= 200 else 5
        misses, n = _misses(clip, every)
        assert not misses, f"{clip.name} (every {every}): frames without exactly one face: {misses}"


def test_no_face_on_the_animated_part(media_dir):
    frames = list(iter_video_frames(str(media_dir / "pexels" / "face_noface.mov")))
    # the cut: the first frame differing from its predecessor by 10x the clip's median frame difference
    small = [rgb[::8, ::8].astype(np.float32) for _, rgb in frames]
    diffs = np.array([np.abs(a - b).mean() for a, b in zip(small[1:], small[:-1])])
    cut = int(np.argmax(diffs > 10 * np.median(diffs))) + 1
    assert 10 < cut < len(frames) - 10
    with MediapipeBackend("short+full", video=False) as backend:
        found = [len(backend.detect(rgb)) for _, rgb in frames]
    assert all(n == 0 for n in found[cut:]), f"faces found after the cut at {cut}: {found[cut:]}"
    assert all(n == 1 for n in found[:cut]), f"missed faces before the cut at {cut}: {found[:cut]}"


def test_full_range_finds_the_small_face_and_agrees_with_short_range(media_dir):
    _, rgb = next(iter_video_frames(str(media_dir / "plates_1080" / "demo1_video.mp4")))
    with MediapipeBackend("short", video=False) as short, MediapipeBackend("full", video=False) as full:
        (a,), (b,) = short.detect(rgb), full.detect(rgb)
    eye = np.linalg.norm(a.landmarks[263, :2] - a.landmarks[33, :2])
    # two independent fits of the mesh (whole frame vs a crop around the full-range box) agree within 8%
    # of the eye distance on average
    assert np.linalg.norm(a.landmarks[:, :2] - b.landmarks[:, :2], axis=1).mean() < 0.08 * eye
    iris = iris_from_landmarks(a.landmarks)
    # row 0 is the subject's left eye: on the image's right
    assert iris[0, 0] > iris[1, 0] and 2 < iris[0, 2] < 0.2 * eye


def test_backend_rejects_bad_input():
    with MediapipeBackend("short", video=False) as backend:
        with pytest.raises(ValueError, match="uint8"):
            backend.detect(np.zeros((10, 10, 3), np.float32))

"""The FaceDetect node in a real graph: Read (video) -> FaceDetect; on-the-fly detection, the Track action,
stored tracks beside the project, invalidation, proxy, the CLI entry point and the overlay description."""
import os
import shutil

import numpy as np
import pytest
import torch

import doublure.nodes  # noqa: F401  (registers the node types)
from doublure import engine
from doublure.engine import colour
from doublure.faces.face import Face
from doublure.engine.identity import content_identity
from doublure.faces.detect import working_to_srgb8
from doublure.nodes.facedetect import FaceDetect, overlay_for, track_shot

CLIP = "mead/M030_front_surprised_level3_001.mp4"


def _graph(media_dir, last=30):
    g = engine.Graph(first=1, last=last, fps=25.0)
    read = g.create("Read", file=str(media_dir / CLIP), first=1, last=last)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    return g, read, fd


def test_working_space_back_to_the_source_code_values(media_dir):
    from doublure.engine.video import VideoReader

    with VideoReader(media_dir / CLIP) as reader:
        srgb = reader.read(0)
    linear = colour.convert(torch.from_numpy(srgb).permute(2, 0, 1).contiguous(), "srgb", "ACEScg")
    rgb8 = working_to_srgb8(linear, "ACEScg")
    code = (srgb * 255 + 0.5).astype(np.uint8)
    # the detector sees the footage's own code values (float round-trip noise aside)
    assert rgb8.dtype == np.uint8 and rgb8.shape == code.shape and rgb8.flags.c_contiguous
    assert np.abs(rgb8.astype(int) - code.astype(int)).max() <= 1
    assert (rgb8 == code).mean() > 0.99
    # the image's own pixels are untouched
    assert torch.equal(linear, colour.convert(torch.from_numpy(srgb).permute(2, 0, 1).contiguous(), "srgb", "ACEScg"))


def test_on_the_fly_detection_and_track_action(media_dir, tmp_path):
    g, read, fd = _graph(media_dir)
    img = g.evaluate(fd, frame=5)
    (face,) = img.faces
    assert isinstance(face, Face) and face.landmarks.shape == (478, 3) and face.track_id == 0
    assert not face.interpolated and 0 < face.box[0] < face.box[2] < img.width
    # the pixels pass through untouched
    torch.testing.assert_close(img.tensor, g.evaluate(read, frame=5).tensor)

    project = tmp_path / "shot.dbl"
    g.save(str(project))
    calls = []
    path = fd.action_track(g, progress=lambda done, total, frame: calls.append((done, total, frame)))
    assert path == str(tmp_path / "shot.tracks" / "FaceDetect1.npz") and os.path.exists(path)
    assert calls[-1] == (30, 30, 30)
    analysis = fd.value("analysis")
    assert analysis["file"] == os.path.join("shot.tracks", "FaceDetect1.npz")

    tracked = g.evaluate(fd, frame=5).faces
    assert len(tracked) == 1 and tracked[0].track_id == 0
    # smoothed, so close to but not the raw detection
    d = np.abs(tracked[0].landmarks[:, :2] - face.landmarks[:, :2]).mean()
    assert 0 < d < 3.0
    assert isinstance(fd, FaceDetect)

    # re-opening the project reads the stored tracks (no detection: the backend is never built)
    g.save(str(project))
    g2 = engine.load(str(project))
    fd2 = g2.node("FaceDetect1")
    again = g2.evaluate(fd2, frame=5).faces
    assert fd2._backend is None
    np.testing.assert_array_equal(again[0].landmarks, tracked[0].landmarks)

    # a knob that changes the analysis makes the stored tracks stale: back to on-the-fly detection
    fd2["min_cutoff"] = 0.5
    stale = g2.evaluate(fd2, frame=5).faces
    assert fd2._backend is not None
    np.testing.assert_allclose(stale[0].landmarks, face.landmarks, atol=1e-3)
    # selection is read at compute time and does not invalidate
    fd2["min_cutoff"] = 1.0
    fd2["selection"] = "all"
    assert g2.evaluate(fd2, frame=5).faces[0].track_id == 0
    assert fd2.analysis_key(1, 30) == analysis["key"]


def test_proxy_scales_the_stored_faces(media_dir, tmp_path):
    g, read, fd = _graph(media_dir, last=8)
    g.save(str(tmp_path / "p.dbl"))
    fd.action_track(g)
    full = g.evaluate(fd, frame=3).faces[0]
    half_img = g.evaluate(fd, frame=3, proxy=0.5)
    if half_img.width == g.evaluate(read, frame=3).width:
        pytest.fail("the Read node ignores proxy; the scaling path is untested")
    half = half_img.faces[0]
    np.testing.assert_allclose((half.landmarks[:, :2] + 0.5) * 2 - 0.5, full.landmarks[:, :2], atol=1e-3)


def test_the_hash_covers_the_projects_fps_and_the_stored_track_file(media_dir, tmp_path):
    """Compute reads the project's fps (the stored analysis's key holds it) and the track file: changing either
    changes the hash, so the cache never serves faces of another fps or of a track file since rewritten."""
    g, read, fd = _graph(media_dir, last=6)
    g.save(str(tmp_path / "shot.dbl"))
    before_track = g.hash_of(fd, g.context(3))
    path = fd.action_track(g)
    tracked = g.hash_of(fd, g.context(3))
    assert tracked != before_track
    g.set_setting("fps", 24.0)
    assert g.hash_of(fd, g.context(3)) != tracked
    g.set_setting("fps", 25.0)
    assert g.hash_of(fd, g.context(3)) == tracked
    stat = os.stat(path)
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))  # the file rewritten, same knobs
    g.reload()   # hashes are memoised between edits; Reload sees files changed on disk
    rewritten = g.hash_of(fd, g.context(3))
    assert rewritten != tracked
    os.remove(path)   # gone: compute detects live, so the hash moves again
    g.reload()
    assert g.hash_of(fd, g.context(3)) not in (tracked, rewritten)


def test_no_face_gives_an_empty_list(media_dir, tmp_path):
    g = engine.Graph(first=1, last=169)
    read = g.create("Read", file=str(media_dir / "pexels" / "face_noface.mov"), first=1, last=169)
    fd = g.create("FaceDetect")
    fd.set_input(0, read)
    assert g.evaluate(fd, frame=150).faces == []
    assert len(g.evaluate(fd, frame=10).faces) == 1


def test_track_shot_for_the_cli_and_overlay(media_dir, tmp_path):
    g, read, fd = _graph(media_dir, last=10)
    project = tmp_path / "cli.dbl"
    g.save(str(project))
    path = track_shot(str(project), "FaceDetect1")
    assert os.path.exists(path)
    g2 = engine.load(str(project))
    assert g2.node("FaceDetect1").value("analysis")["first"] == 1
    faces = g2.evaluate("FaceDetect1", frame=10).faces
    ov = overlay_for(faces)
    (f,) = ov["faces"]
    assert f["track_id"] == 0 and len(f["landmarks"]) == 478 and len(f["irises"]) == 2 and len(f["box"]) == 4
    with pytest.raises(engine.DoublureError, match="Read1 is a Read"):
        track_shot(str(project), "Read1")


def test_content_identity_is_the_files_not_their_folder(tmp_path):
    """What the stored tracks' key holds of a file: a copy elsewhere that kept its times is the same, a
    rewritten frame or another file is not; a sequence pattern stands for each of its frames."""
    (tmp_path / "a").mkdir()
    for name in ("plate.0001.exr", "plate.0002.exr", "plate.v2.0001.exr", "notes.txt"):
        (tmp_path / "a" / name).write_bytes(name.encode())
    shutil.copytree(tmp_path / "a", tmp_path / "b", copy_function=shutil.copy2)
    seq = content_identity(str(tmp_path / "a" / "plate.####.exr"))
    assert [entry[0] for entry in seq] == ["plate.0001.exr", "plate.0002.exr"]
    assert content_identity(str(tmp_path / "b" / "plate.%04d.exr")) == seq
    assert content_identity(str(tmp_path / "b" / "notes.txt")) == content_identity(str(tmp_path / "a" / "notes.txt"))
    (tmp_path / "b" / "plate.0002.exr").write_bytes(b"a re-rendered frame")
    assert content_identity(str(tmp_path / "b" / "plate.####.exr")) != seq
    assert content_identity(str(tmp_path / "nowhere" / "plate.mp4")) == [("plate.mp4", "missing")]
